//! How long an urgent message waits behind a campaign on `omni serve`: queues
//! `BENCH_BULK` (default 10,000) bulk messages through `POST /v1/messages/batch`, then one
//! `"priority": "high"` message, and times the high one from its `POST` to its arrival at the
//! carrier fake (a local Twilio API answering after `BENCH_CARRIER_MS`, default 100, as a
//! carrier's API takes about that: the bulk messages then pile up in the queue). Repeated `BENCH_RUNS` (default 3)
//! times, each on a fresh server and database.
//!
//! `cargo bench -p omni --bench priority_latency` (release build; the fake, the client and
//! the server share the machine).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{bench_tenant, omni_serve, Server};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

mod support;

const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";
const URGENT: &str = "URGENT: unit 12 to 5th and Main";
/// The API's batch limit.
const BATCH: usize = 1_000;

/// Counts the messages the carrier receives and notes when the urgent one arrives; answers
/// each after `latency`, as a carrier's API does.
#[derive(Clone, Default)]
struct Carrier {
    received: Arc<Mutex<Received>>,
    latency: Duration,
}

/// Messages received so far, and when the urgent one came with how many before it.
type Received = (usize, Option<(Instant, usize)>);

impl Respond for Carrier {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let urgent = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&request.body)
            .is_ok_and(|form| form.iter().any(|(k, v)| k == "Body" && v == URGENT));
        let mut received = self.received.lock().unwrap();
        received.0 += 1;
        if urgent {
            received.1 = Some((Instant::now(), received.0 - 1));
        }
        ResponseTemplate::new(201)
            .set_body_json(json!({
                "sid": format!("SM{:032}", received.0),
                "status": "queued",
                "account_sid": "AC0123456789abcdef0123456789abcdef"
            }))
            .set_delay(self.latency)
    }
}

/// One run's figures.
struct Run {
    /// From the urgent message's POST to its arrival at the carrier.
    latency: Duration,
    /// Bulk messages the carrier received before it.
    bulk_before: usize,
    /// Bulk messages still waiting when it arrived.
    bulk_after: usize,
    /// How long accepting the bulk batches took.
    accept: Duration,
    /// The server's peak resident memory.
    rss_kib: Option<u64>,
}

async fn run(bulk: usize, latency: Duration) -> Run {
    let carrier = Carrier {
        latency,
        ..Carrier::default()
    };
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(carrier.clone())
        .mount(&fake)
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = omni_serve(env!("CARGO_BIN_EXE_omni"), dir.path());
    command
        .env("OMNI_TWILIO_API_URL", fake.uri())
        // The bench measures the queue, not the API's per-tenant send limit.
        .env("OMNI_SEND_RATE_PER_SEC", "0");
    let (server, base) = Server::start(command, "omni listening on ").expect("omni started");
    let http = reqwest::Client::new();
    let key = bench_tenant(&http, &base, "12345abcdef67890fedcba0987654321", NUMBER).await;
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };

    let started = Instant::now();
    for first in (0..bulk).step_by(BATCH) {
        let messages: Vec<Value> = (first..(first + BATCH).min(bulk))
            .map(|i| json!({"channel": "sms", "to": CONTACT, "body": format!("Campaign {i}"), "priority": "bulk"}))
            .collect();
        let response = post("/v1/messages/batch", json!({"messages": messages}))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let accept = started.elapsed();

    let sent = Instant::now();
    let response = post(
        "/v1/messages",
        json!({"channel": "sms", "to": CONTACT, "body": URGENT, "priority": "high"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    let deadline = sent + Duration::from_secs(120);
    loop {
        if let Some((at, before)) = carrier.received.lock().unwrap().1 {
            return Run {
                latency: at - sent,
                bulk_before: before,
                bulk_after: bulk.saturating_sub(before),
                accept,
                rss_kib: server.max_rss_kib(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the urgent message never arrived"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (bulk, runs) = (env("BENCH_BULK", 10_000), env("BENCH_RUNS", 3));
    let latency = Duration::from_millis(env("BENCH_CARRIER_MS", 100) as u64);
    println!(
        "{bulk} bulk messages queued, then one high-priority message; the carrier answers in \
         {latency:?}; {runs} runs"
    );
    println!(
        "run  accept bulk   high: POST -> carrier   bulk sent before   bulk still queued   peak RSS"
    );
    let mut latencies = Vec::new();
    for i in 1..=runs {
        let r = run(bulk, latency).await;
        println!(
            "{i:>3}  {:>9.2?}   {:>20.2?}   {:>16}   {:>17}   {:>5} MiB",
            r.accept,
            r.latency,
            r.bulk_before,
            r.bulk_after,
            r.rss_kib.map_or(0, |k| k / 1024)
        );
        latencies.push(r.latency);
    }
    latencies.sort();
    println!(
        "median high-priority latency: {:.2?}",
        latencies[latencies.len() / 2]
    );
}
