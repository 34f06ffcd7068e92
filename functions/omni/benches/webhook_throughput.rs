//! End-to-end inbound throughput of `omni serve`: signed Twilio webhooks over HTTP, through
//! signature check, SQLite commit, queue, conversation updater and WebSocket push.
//!
//! `cargo bench -p omni --bench webhook_throughput` (release build). Settings by
//! environment: `BENCH_REQUESTS` (default 20000), `BENCH_CONCURRENCY` (default 64).
//! Requests are signed before the clock starts; the load generator shares the machine.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use omni_core::providers::twilio;
use serde_json::{json, Value};

const TOKEN: &str = "12345abcdef67890fedcba0987654321";
const ADMIN: &str = "bench-admin-token";
const NUMBER: &str = "+15555550100";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Peak resident memory of a process, from /proc (Linux).
fn max_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let requests = env_or("BENCH_REQUESTS", 20_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 64);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_omni"))
        .args(["serve"])
        .env("OMNI_ADDR", "127.0.0.1:0")
        .env("OMNI_DB", dir.path().join("omni.db"))
        .env("OMNI_ADMIN_TOKEN", ADMIN)
        .env(
            "OMNI_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("OMNI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn omni");
    let stdout = child.stdout.take().expect("stdout");
    let base = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("omni listening on ").map(str::to_owned))
        .expect("omni started");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();

    let admin = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    admin(
        reqwest::Method::PUT,
        "/v1/admin/tenants/bench",
        Some(json!({"name": "Bench"})),
    )
    .await
    .unwrap();
    admin(
        reqwest::Method::PUT,
        "/v1/admin/tenants/bench/providers/twilio",
        Some(json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": TOKEN})),
    )
    .await
    .unwrap();
    admin(
        reqwest::Method::PUT,
        &format!("/v1/admin/tenants/bench/numbers/{NUMBER}"),
        Some(json!({"provider": "twilio", "channels": ["sms"]})),
    )
    .await
    .unwrap();
    let key: Value = admin(
        reqwest::Method::POST,
        "/v1/admin/tenants/bench/api-keys",
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = key["key"].as_str().unwrap().to_string();

    // A dashboard receives every push during the run.
    let ws_url = format!("{}/v1/ws?token={key}", base.replacen("http", "ws", 1));
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("ws");
    let pushes = tokio::spawn(async move { ws.fold(0usize, |n, _| async move { n + 1 }).await });

    // 1,000 contacts, each message distinct (carriers never repeat a MessageSid).
    let url = format!("{base}/webhooks/twilio");
    let signed: Vec<(String, String)> = (0..requests)
        .map(|i| {
            let params: Vec<(String, String)> = vec![
                ("MessageSid".into(), format!("SM{i:032}")),
                (
                    "AccountSid".into(),
                    "AC0123456789abcdef0123456789abcdef".into(),
                ),
                ("From".into(), format!("+1555555{:04}", 1000 + i % 1000)),
                ("To".into(), NUMBER.into()),
                (
                    "Body".into(),
                    format!("Incident report number {i}: smoke seen near 5th street"),
                ),
                ("NumMedia".into(), "0".into()),
                ("NumSegments".into(), "1".into()),
                ("SmsStatus".into(), "received".into()),
                ("ApiVersion".into(), "2010-04-01".into()),
            ];
            let sig = twilio::signature(&url, &params, TOKEN);
            (serde_urlencoded::to_string(&params).unwrap(), sig)
        })
        .collect();

    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(signed)
        .map(|(body, sig)| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await;
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let acked_in = started.elapsed();

    // Applied = every message is in a conversation (unread counts sum to the total).
    loop {
        let mut total = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("{base}/v1/conversations?limit=200&cursor={c}"),
                None => format!("{base}/v1/conversations?limit=200"),
            };
            let page: Value = http
                .get(path)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            total += page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["unread_count"].as_u64().unwrap())
                .sum::<u64>();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        if total as usize >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied_in = started.elapsed();
    let rss = max_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let pushed = pushes.await.unwrap_or(0);

    latencies.sort();
    println!("webhook_throughput: {requests} signed Twilio webhooks, concurrency {concurrency}");
    println!(
        "  acknowledged: {:.0}/s ({:.2} s)",
        requests as f64 / acked_in.as_secs_f64(),
        acked_in.as_secs_f64()
    );
    println!(
        "  applied (conversation updated, pushed): {:.0}/s ({:.2} s)",
        requests as f64 / applied_in.as_secs_f64(),
        applied_in.as_secs_f64()
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    println!("  WebSocket frames received: {pushed}");
    println!(
        "  omni serve max RSS: {} MiB",
        rss.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
