//! DynamoDB requests per inbound message, per send and per LiveChat visitor message, counted on the wire: the functions talk
//! to the emulator through a recording proxy. Bounds keep a regression from slipping in; the
//! figures are reported in BENCHMARKS.md (`--nocapture` prints them).

mod seed;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use lambda_runtime::{Context, LambdaEvent};
use omni_lambda::{LambdaConfig, Omni};
use seed::*;
use tower::ServiceExt;

type Calls = Arc<Mutex<Vec<String>>>;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    calls: Calls,
}

async fn forward(
    State(p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        if let Some(op) = target.strip_prefix("DynamoDB_20120810.") {
            let items = if op == "TransactWriteItems" {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                v["TransactItems"].as_array().map_or(0, Vec::len)
            } else {
                1
            };
            p.calls.lock().unwrap().push(format!("{op}:{items}"));
        }
    }
    let mut request = p
        .client
        .request(method, format!("{}{}", p.upstream, uri))
        .body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            request = request.header(k, v);
        }
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let mut out = HeaderMap::new();
    for (k, v) in response.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            out.insert(k.clone(), v.clone());
        }
    }
    (status, out, response.bytes().await.unwrap())
}

/// (reads, writes, requests) since the last call, by DynamoDB's billing: a transaction item is
/// a write.
fn take(calls: &Calls) -> (usize, usize, Vec<String>) {
    let ops: Vec<String> = std::mem::take(&mut *calls.lock().unwrap());
    let (mut reads, mut writes) = (0, 0);
    for op in &ops {
        let (name, items) = op.split_once(':').unwrap();
        let items: usize = items.parse().unwrap();
        match name {
            "GetItem" | "Query" | "BatchGetItem" => reads += items,
            _ => writes += items,
        }
    }
    (reads, writes, ops)
}

fn event(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn sqs_batch(config: &omni_aws::SdkConfig, queue: &str) -> SqsEvent {
    let out = aws_sdk_sqs::Client::new(config)
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let mut batch = SqsEvent::default();
    for m in out.messages.unwrap_or_default() {
        let mut record = SqsMessage::default();
        record.message_id = m.message_id;
        record.receipt_handle = m.receipt_handle;
        record.body = m.body;
        batch.records.push(record);
    }
    batch
}

#[tokio::test]
async fn dynamodb_requests_per_inbound_message_and_per_send() {
    let (config, backend, _) = seeded().await;
    let calls: Calls = Arc::default();
    let proxy = Proxy {
        upstream: std::env::var("AWS_ENDPOINT_URL").unwrap(),
        client: reqwest::Client::new(),
        calls: calls.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move { axum::serve(listener, app).await });
    // The SDK prefers AWS_ENDPOINT_URL from the environment over a configured endpoint, so
    // point the environment at the proxy (this test runs in its own process).
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://{addr}"));
    let proxied = omni_aws::sdk_config().await;
    let management = wiremock::MockServer::start().await;
    let carrier = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(201).set_body_json(
            serde_json::json!({"sid": "SMcounted000000000000000000000000", "status": "queued"}),
        ))
        .mount(&carrier)
        .await;
    let settings = LambdaConfig::from_args([
        "--ws-endpoint",
        &management.uri(),
        "--twilio-api-url",
        &carrier.uri(),
    ]);
    let omni = Omni::new(&settings, &proxied, backend.resources().clone())
        .await
        .unwrap();
    // A dashboard is connected, as in production: pushes read the connection list.
    backend
        .add_connection(
            &tenant(),
            "key_events",
            &omni_core::ports::PresenceUser {
                id: "key_events".into(),
                name: "Dashboard".into(),
            },
            "dash1",
        )
        .await
        .unwrap();
    let res = backend.resources().clone();

    let http = |name: &'static str, router: axum::Router| async move {
        let request = lambda_http::request::from_str(&event(name)).unwrap();
        router.oneshot(request).await.unwrap().status()
    };
    // Warm: credentials and auto-replies cached, as on every invocation but the first of an
    // instance, and the API key's last use recorded (written at most once a minute per key
    // and instance).
    omni.services
        .credentials_for(&tenant(), omni_core::domain::ProviderKind::Twilio)
        .await
        .unwrap();
    omni.services.authenticate(API_KEY, None).await.unwrap();
    // The tenant's auto-replies, read at most every 30 s per instance.
    omni.services.auto_replies(&tenant()).await.unwrap();
    // A LiveChat widget and a visitor's session (no store access: the token is signed).
    let origin = "https://north.example.org";
    let update = omni_core::service::LivechatUpdate {
        allowed_origins: vec![origin.into()],
        title: None,
        greeting: None,
        offline_message: None,
        identity_required: false,
    };
    let (widget, _) = omni
        .services
        .put_livechat(&tenant(), update, &omni_core::team::Actor::platform())
        .await
        .unwrap();
    let visitor = omni
        .services
        .start_visitor_session(
            &widget,
            omni_core::service::SessionRequest {
                widget_key: widget.widget_key.to_string(),
                visitor: Some(omni_core::service::VisitorProfile {
                    name: Some("Ana".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    take(&calls);

    let mut report = BTreeMap::new();
    assert_eq!(
        http("webhook-twilio", omni_api::webhooks::app(omni.app_state())).await,
        200
    );
    report.insert("1 inbound: webhook-twilio", take(&calls));
    let batch = sqs_batch(&config, &res.inbound_queue_url).await;
    assert_eq!(batch.records.len(), 1);
    let r = omni_lambda::conversation_updater(&omni, LambdaEvent::new(batch, Context::default()))
        .await
        .unwrap();
    assert!(r.batch_item_failures.is_empty());
    report.insert("2 inbound: conversation-updater", take(&calls));

    assert_eq!(
        http("send", omni_api::dispatch::send_app(omni.app_state())).await,
        202
    );
    report.insert("3 send: send", take(&calls));
    let batch = sqs_batch(&config, &res.delivery_queue_url).await;
    assert_eq!(batch.records.len(), 1);
    let r = omni_lambda::delivery_worker(&omni, LambdaEvent::new(batch, Context::default()))
        .await
        .unwrap();
    assert!(r.batch_item_failures.is_empty());
    report.insert("4 send: delivery-worker", take(&calls));

    let visitor_message = |body: &'static str| {
        let request = axum::http::Request::post("/livechat/v1/messages")
            .header("origin", origin)
            .header("authorization", format!("Bearer {}", visitor.token))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(format!(r#"{{"body":"{body}"}}"#)))
            .unwrap();
        let app = omni_api::livechat::app(omni.app_state());
        async move { app.oneshot(request).await.unwrap().status() }
    };
    // The session's first message starts its rate window and its conversation; the next
    // one is the usual case.
    assert_eq!(visitor_message("Is the road open?").await, 202);
    report.insert("5 first visitor message: livechat", take(&calls));
    assert_eq!(visitor_message("Hello?").await, 202);
    report.insert("6 visitor message: livechat", take(&calls));

    for (step, (reads, writes, ops)) in &report {
        println!("{step}: {reads} reads, {writes} writes  {ops:?}");
    }
    let total = |prefix: &str| {
        report
            .iter()
            .filter(|(k, _)| k.contains(prefix))
            .fold((0, 0), |(r, w), (_, v)| (r + v.0, w + v.1))
    };
    let (inbound_reads, inbound_writes) = total("inbound");
    let (send_reads, send_writes) = total("send");
    println!("per inbound message: {inbound_reads} reads, {inbound_writes} writes");
    println!("per send (API + delivery): {send_reads} reads, {send_writes} writes");
    assert!(
        inbound_reads > 0 && inbound_writes > 0,
        "the proxy saw the traffic"
    );
    // Today's figures: a change that adds a request fails here and must update BENCHMARKS.md.
    // The fourth read is the tenant's event webhook endpoints (issue 20), read before the
    // write that adds their deliveries to its own transaction; the fifth write the webhook
    // log entry (issue 20: every webhook is logged).
    assert!(inbound_reads <= 4 && inbound_writes <= 5, "{report:?}");
    // The seventh write is the send's audit entry (issue 18); the seventh and eighth reads
    // the endpoints read before the send's `conversation.updated` and its `message.sent` are
    // written (issue 20).
    assert!(send_reads <= 8 && send_writes <= 7, "{report:?}");
    // A visitor's message (issue 17): the widget, the rate count (one UpdateItem, and a
    // second, refused, when it starts the session's window), the raw payload, the endpoints,
    // the conversation and the thread's write, and the dashboards to push to.
    let (first_reads, first_writes) = total("5 first visitor");
    let (visitor_reads, visitor_writes) = total("6 visitor");
    println!("first visitor message: {first_reads} reads, {first_writes} writes");
    println!("per visitor message: {visitor_reads} reads, {visitor_writes} writes");
    assert!(first_reads <= 4 && first_writes <= 7, "{report:?}");
    assert!(visitor_reads <= 4 && visitor_writes <= 5, "{report:?}");
}
