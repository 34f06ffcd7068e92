//! Cold start of every function binary on a stand-in for the Lambda runtime API: the time from
//! exec to the first `next` request (init) and to the first response (first invocation), peak
//! RSS, and binary size. Runs against the emulator (`AWS_ENDPOINT_URL`) with the events/ seed.
//!
//!     cargo build --release -p webhook-twilio … (every function)
//!     eval "$(scripts/aws-emulator start)"
//!     cargo run --release -p omni-lambda --example cold_start -- target/release 7 [send,admin]
//!
//! The optional third argument names the functions to measure (default: all).

#[path = "../tests/seed.rs"]
mod seed;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;

/// The functions of template.yaml other than the carriers' webhooks (each has an events
/// file of its own name).
const OTHER_FUNCTIONS: &[&str] = &[
    "send",
    "conversations",
    "admin",
    "conversation-updater",
    "delivery-worker",
    "outbox-sweeper",
    "signal-poller",
    "ses-events",
    "ws-connect",
    "ws-disconnect",
];

/// Every function of template.yaml: a `webhook-<carrier>` per carrier with webhooks, then
/// the others.
fn functions() -> Vec<String> {
    omni_core::providers::CARRIERS
        .iter()
        .filter(|c| !c.webhooks.is_empty())
        .map(|c| format!("webhook-{}", c.name()))
        .chain(OTHER_FUNCTIONS.iter().map(|f| f.to_string()))
        .collect()
}

#[derive(Default)]
struct Timeline {
    first_next: Option<Instant>,
    response: Option<Instant>,
    /// The HTTP status an API Gateway function answered (none for the others).
    http_status: Option<u64>,
    error: Option<String>,
}

#[derive(Clone)]
struct Runtime {
    event: Arc<String>,
    served: Arc<Mutex<bool>>,
    timeline: Arc<Mutex<Timeline>>,
    done: Arc<Notify>,
}

async fn next(State(rt): State<Runtime>) -> (HeaderMap, String) {
    let first = {
        let mut served = rt.served.lock().unwrap();
        let first = !*served;
        *served = true;
        first
    };
    if !first {
        // One invocation per process: the second `next` waits until the process is killed.
        std::future::pending::<()>().await;
    }
    rt.timeline
        .lock()
        .unwrap()
        .first_next
        .get_or_insert(Instant::now());
    let mut headers = HeaderMap::new();
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    headers.insert("lambda-runtime-aws-request-id", "req-1".parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:omni"
            .parse()
            .unwrap(),
    );
    headers.insert("content-type", "application/json".parse().unwrap());
    (headers, rt.event.as_str().to_owned())
}

async fn response(State(rt): State<Runtime>, body: String) -> &'static str {
    let mut timeline = rt.timeline.lock().unwrap();
    timeline.response = Some(Instant::now());
    timeline.http_status = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["statusCode"].as_u64());
    drop(timeline);
    rt.done.notify_one();
    "{}"
}

async fn error(State(rt): State<Runtime>, body: String) -> &'static str {
    rt.timeline.lock().unwrap().error = Some(body);
    rt.done.notify_one();
    "{}"
}

/// A Twilio stand-in, so the delivery worker's send succeeds.
async fn twilio() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::CREATED,
        r#"{"sid":"SMcoldstart000000000000000000000","status":"queued"}"#,
    )
}

struct Sample {
    init: Duration,
    first: Duration,
    rss_kib: u64,
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn run_once(
    binary: &PathBuf,
    event: &str,
    env: &[(String, String)],
) -> Result<Sample, String> {
    let rt = Runtime {
        event: Arc::new(event.to_owned()),
        served: Arc::default(),
        timeline: Arc::default(),
        done: Arc::new(Notify::new()),
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .route("/2010-04-01/Accounts/{sid}/Messages.json", post(twilio))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let start = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("OMNI_TWILIO_API_URL", format!("http://{addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let pid = child.id().unwrap_or(0);
    let finished = tokio::time::timeout(Duration::from_secs(30), rt.done.notified()).await;
    let rss_kib = peak_rss_kib(pid);
    let _ = child.kill().await;
    server.abort();
    if finished.is_err() {
        return Err("no response within 30 s".into());
    }
    let t = rt.timeline.lock().unwrap();
    if let Some(e) = &t.error {
        return Err(format!("the function reported an error: {e}"));
    }
    // A refused event would time a shortcut, not the function's work.
    if let Some(status) = t.http_status.filter(|s| *s >= 300) {
        return Err(format!("the function answered HTTP {status}"));
    }
    Ok(Sample {
        init: t.first_next.ok_or("no next request")? - start,
        first: t.response.ok_or("no response")? - start,
        rss_kib,
    })
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "target/release".into()));
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);
    let only: Option<Vec<String>> = args
        .next()
        .map(|list| list.split(',').map(str::to_owned).collect());
    let (_config, backend, admin_secret) = seed::seeded().await;
    let res = backend.resources().clone();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let mut env: Vec<(String, String)> = [
        ("OMNI_TABLE", res.table.as_str()),
        ("OMNI_INBOUND_QUEUE_URL", &res.inbound_queue_url),
        ("OMNI_DELIVERY_QUEUE_URL", &res.delivery_queue_url),
        ("OMNI_INBOUND_DLQ_URL", &res.inbound_dlq_url),
        ("OMNI_DELIVERY_DLQ_URL", &res.delivery_dlq_url),
        ("OMNI_SECRET_PREFIX", &res.secret_prefix),
        ("OMNI_PUBLIC_URL", seed::PUBLIC_URL),
        ("OMNI_WS_ENDPOINT", &endpoint),
        ("OMNI_LOG", "warn"),
        ("AWS_LAMBDA_FUNCTION_NAME", "omni"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/omni"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "cold-start"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        env.push((k.to_owned(), std::env::var(k).unwrap_or_default()));
    }

    // webhook-ses fetches the SNS signing certificate: the test one, from a local fake.
    let sns_certs = wiremock::MockServer::start().await;
    seed::serve_sns_cert(&sns_certs).await;

    println!(
        "| function | binary | init (median) | first invocation (median) | peak RSS (median) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for function in functions() {
        let (function, event_name) = (function.as_str(), function.as_str());
        if only
            .as_ref()
            .is_some_and(|names| !names.iter().any(|n| n == function))
        {
            continue;
        }
        let binary = dir.join(function);
        let size = std::fs::metadata(&binary)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (build it with cargo build --release)",
                    binary.display()
                )
            })
            .len();
        let event = std::fs::read_to_string(format!("events/{event_name}.json"))
            .unwrap_or_else(|e| panic!("events/{event_name}.json: {e}"));
        // Signed now, as the carrier would: a sample signed long ago is refused as a replay.
        let mut event = seed::signed_now(event_name, &event);
        let mut env = env.clone();
        if function == "admin" {
            env.push(("OMNI_ADMIN_TOKEN_SECRET".into(), admin_secret.clone()));
        }
        if function == "webhook-ses" {
            event = seed::sns_cert_on(&event, &sns_certs).to_string();
            env.push(("OMNI_SNS_CERT_URL_PREFIX".into(), sns_certs.uri()));
        }
        let mut samples = Vec::new();
        for _ in 0..runs {
            match run_once(&binary, &event, &env).await {
                Ok(s) => samples.push(s),
                Err(e) => panic!("{function}: {e}"),
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {function} | {:.2} MB | {:.1} ms | {:.1} ms | {:.1} MiB |",
            size as f64 / 1_000_000.0,
            ms(median(samples.iter().map(|s| s.init).collect())),
            ms(median(samples.iter().map(|s| s.first).collect())),
            median(samples.iter().map(|s| s.rss_kib).collect()) as f64 / 1024.0,
        );
    }
}
