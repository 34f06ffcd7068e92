//! The function's JSON log lines carry the invocation's request id (lambda_runtime's
//! "Lambda runtime invoke" span), so CloudWatch Logs Insights can gather one invocation's
//! lines. The real binary runs against a minimal Lambda Runtime API.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

const REQUEST_ID: &str = "8f5c1e3a-0b1d-4c6e-9a2f-request-id-01";

#[derive(Default)]
struct Runtime {
    handed_out: Mutex<bool>,
    answered: Notify,
    answer: Mutex<Option<String>>,
}

async fn next(State(rt): State<Arc<Runtime>>) -> (HeaderMap, String) {
    let first = !std::mem::replace(&mut *rt.handed_out.lock().unwrap(), true);
    if !first {
        // One invocation only: the process waits here until the test ends it.
        std::future::pending::<()>().await;
    }
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000;
    headers.insert("lambda-runtime-aws-request-id", REQUEST_ID.parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:ses-events"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
            .parse()
            .unwrap(),
    );
    // An SES event no retry can place (no mail): logged with a warning and acknowledged.
    let event = serde_json::json!({
        "version": "0", "id": "e1", "detail-type": "Email Bounced", "source": "aws.ses",
        "account": "123456789012", "time": "2026-11-30T14:20:03Z", "region": "us-east-1",
        "resources": [], "detail": {"eventType": "Bounce"}
    });
    (headers, event.to_string())
}

async fn respond(State(rt): State<Arc<Runtime>>, Path(_id): Path<String>, body: String) {
    *rt.answer.lock().unwrap() = Some(body);
    rt.answered.notify_one();
}

#[tokio::test]
async fn log_lines_carry_the_request_id() {
    let rt = Arc::new(Runtime::default());
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(respond),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(respond))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ses-events"))
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", address.to_string().as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "ses-events"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "stream"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/ses-events"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("OMNI_TABLE", "table"),
            ("OMNI_INBOUND_QUEUE_URL", "http://127.0.0.1:9/inbound"),
            ("OMNI_DELIVERY_QUEUE_URL", "http://127.0.0.1:9/delivery"),
            ("OMNI_INBOUND_DLQ_URL", "http://127.0.0.1:9/inbound-dlq"),
            ("OMNI_DELIVERY_DLQ_URL", "http://127.0.0.1:9/delivery-dlq"),
            ("OMNI_WS_ENDPOINT", "http://127.0.0.1:9/prod"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), rt.answered.notified())
        .await
        .expect("the function answered its invocation");
    // The answer is written after the handler's lines: give stdout a moment, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().await.unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();

    let answer = rt.answer.lock().unwrap().clone().unwrap();
    assert!(answer.contains(r#""queued":false"#), "{answer}");
    let dropped = out
        .lines()
        .find(|l| l.contains("SES event dropped"))
        .unwrap_or_else(|| panic!("no log line for the event: {out}"));
    let line: serde_json::Value = serde_json::from_str(dropped).expect("a JSON line");
    assert_eq!(line["span"]["requestId"], REQUEST_ID, "{line}");
}
