//! End-to-end inbound throughput of `omni serve`: signed Twilio webhooks over HTTP, through
//! signature check, SQLite commit, queue, conversation updater and WebSocket push.
//!
//! `cargo bench -p omni --bench webhook_throughput` (release build). Settings by
//! environment: `BENCH_REQUESTS` (default 20000), `BENCH_CONCURRENCY` (default 64).
//! Requests are signed before the clock starts; the load generator shares the machine.
//!
//! Side by side: `BENCH_PEERS=python,node,node-durable` then drives the same stream (same
//! contacts, bodies and auth token, signed for each server's URL) through the peers of
//! `bench/peers/` in turn, one process each as `omni serve` is, and prints a table with
//! Omni's ratio to each, by acknowledged webhooks/s and by the server's CPU time per webhook
//! (user + system, from `/proc/<pid>/stat`). `BENCH_PYTHON` is the interpreter with the Python peer's packages
//! (default `bench/peers/.venv/bin/python`), `BENCH_NODE` the Node.js binary (default
//! `node`, with `bench/peers/node/node_modules` installed); `scripts/bench peers` sets all
//! of it up. `BENCH_OMNI` runs another `omni` binary than this build's (a profiling build,
//! or another commit's for an A/B comparison). A peer that cannot start is reported and skipped; the others still run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use omni_core::providers::twilio;
use serde_json::Value;
use support::{bench_tenant, omni_serve, Server};

mod support;

const TOKEN: &str = "12345abcdef67890fedcba0987654321";
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

/// CPU time (user + system, all threads) a process has used so far, from `/proc/<pid>/stat`
/// (Linux); `None` once it is gone.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // state is field 3, utime and stime are fields 14 and 15, in clock ticks.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_s()))
}

/// `sysconf(_SC_CLK_TCK)`, as `getconf` reports it (100 on Linux nearly everywhere).
fn clock_ticks_per_s() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// One server's figures for the stream.
struct Figures {
    server: String,
    acked_per_s: f64,
    p50: Duration,
    p99: Duration,
    rss_kib: Option<u64>,
    /// The server's CPU time per webhook, from the first request until all its work for the
    /// stream was done (for Omni: applied and pushed; for a peer: acknowledged).
    cpu_per_webhook: Option<Duration>,
    /// Omni only: webhooks per second until the last was applied to its conversation and pushed.
    applied_per_s: Option<f64>,
    /// For a peer, the targets: Omni's acknowledged/s divided by the peer's, and the
    /// peer's CPU time per webhook divided by Omni's.
    targets: Targets,
}

/// The targets against one peer (none for a reference row).
#[derive(Clone, Copy, Default)]
struct Targets {
    acked_ratio: Option<f64>,
    cpu_ratio: Option<f64>,
}

/// The stream every server gets: `requests` distinct inbound SMS webhooks from 1,000
/// contacts (carriers never repeat a MessageSid), signed for `url` before the clock starts.
fn signed_stream(url: &str, requests: usize) -> Vec<(String, String)> {
    (0..requests)
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
            let sig = twilio::signature(url, &params, TOKEN);
            (serde_urlencoded::to_string(&params).unwrap(), sig)
        })
        .collect()
}

/// Each request of a run: when it started (from the run's start) and how long it took.
struct Timed {
    started: Duration,
    latency: Duration,
}

/// Posts the stream over `concurrency` keep-alive connections; every answer must be a 2xx.
/// Returns the wall time to the last acknowledgement, each request's latency (sorted) and
/// the requests in the order they started.
async fn drive(
    http: &reqwest::Client,
    url: &str,
    signed: Vec<(String, String)>,
    concurrency: usize,
) -> (Duration, Vec<Duration>, Vec<Timed>) {
    let started = Instant::now();
    let mut timeline: Vec<Timed> = futures::stream::iter(signed)
        .map(|(body, sig)| async move {
            let t = Instant::now();
            let r = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", sig)
                .body(body)
                .send()
                .await
                .expect("request");
            assert!(r.status().is_success(), "{url}: {}", r.status());
            let _ = r.bytes().await;
            Timed {
                started: t - started,
                latency: t.elapsed(),
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    timeline.sort_by_key(|t| t.started);
    let mut latencies: Vec<Duration> = timeline.iter().map(|t| t.latency).collect();
    latencies.sort();
    (elapsed, latencies, timeline)
}

/// The p99 of each tenth of a run, by start time: where in the run the slow requests are
/// (a warm-up at the start, a stall in the middle, or spread evenly).
fn p99_by_tenth(timeline: &[Timed]) -> String {
    let tenth = timeline.len().div_ceil(10).max(1);
    timeline
        .chunks(tenth)
        .map(|chunk| {
            let mut l: Vec<Duration> = chunk.iter().map(|t| t.latency).collect();
            l.sort();
            format!("{:.1}", ms(percentile(&l, 0.99)))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Figures {
    fn new(server: &str, requests: usize, acked_in: Duration, latencies: &[Duration]) -> Self {
        Figures {
            server: server.to_owned(),
            acked_per_s: requests as f64 / acked_in.as_secs_f64(),
            p50: percentile(latencies, 0.50),
            p99: percentile(latencies, 0.99),
            rss_kib: None,
            cpu_per_webhook: None,
            applied_per_s: None,
            targets: Targets::default(),
        }
    }
}

impl Server {
    /// CPU time used so far (user + system, every thread).
    fn cpu_time(&self) -> Option<Duration> {
        cpu_time(self.pid())
    }
}

#[tokio::main]
async fn main() {
    let requests = env_or("BENCH_REQUESTS", 20_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 64);
    let omni = bench_omni(requests, concurrency).await;
    let peers: Vec<String> = std::env::var("BENCH_PEERS")
        .unwrap_or_default()
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if peers.is_empty() {
        return;
    }
    let mut table = vec![omni];
    let mut skipped = Vec::new();
    for name in &peers {
        match bench_peer(name, requests, concurrency).await {
            Ok(f) => table.push(f),
            Err(why) => {
                eprintln!("\n!!! PEER SKIPPED: {name}: {why}\n");
                skipped.push(name);
            }
        }
    }
    print_table(&table, requests, concurrency);
    for name in skipped {
        println!("!!! {name}: SKIPPED, not measured (the reason is above)");
    }
}

/// Omni's own run: the release `omni serve` on a fresh database, a dashboard on the
/// WebSocket, acknowledged and applied rates.
async fn bench_omni(requests: usize, concurrency: usize) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    // Another build of `omni` (a profiling build, or the main branch's for an A/B) may be
    // named by BENCH_OMNI.
    let command = omni_serve(
        std::env::var_os("BENCH_OMNI").unwrap_or_else(|| env!("CARGO_BIN_EXE_omni").into()),
        dir.path(),
    );
    let (server, base) = Server::start(command, "omni listening on ").expect("omni started");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let key = bench_tenant(&http, &base, TOKEN, NUMBER).await;

    // A dashboard receives every push during the run. Each `message.received` is pushed once
    // its message and conversation are committed, so the last one marks the run applied.
    let ws_url = format!("{}/v1/ws?token={key}", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("ws");
    let (applied_tx, applied_rx) = tokio::sync::oneshot::channel();
    let pushes = tokio::spawn(async move {
        let (mut frames, mut received, mut applied_tx) = (0usize, 0usize, Some(applied_tx));
        while let Some(Ok(frame)) = ws.next().await {
            frames += 1;
            if frame
                .to_text()
                .is_ok_and(|t| t.contains("\"message.received\""))
            {
                received += 1;
                if received == requests {
                    if let Some(tx) = applied_tx.take() {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
        }
        frames
    });

    let url = format!("{base}/webhooks/twilio");
    let signed = signed_stream(&url, requests);
    let cpu_before = server.cpu_time();
    let started = Instant::now();
    let (acked_in, latencies, timeline) = drive(&http, &url, signed, concurrency).await;
    let cpu_acked = server.cpu_time();

    let applied_at = tokio::time::timeout(Duration::from_secs(300), applied_rx)
        .await
        .expect("every message applied within 5 minutes")
        .expect("the dashboard saw every message");
    let applied_in = applied_at - started;
    let cpu_applied = server.cpu_time();
    // Checked once, off the clock: every message is in a conversation, unread.
    assert_eq!(unread_total(&http, &base, &key).await, requests as u64);
    let rss = server.max_rss_kib();
    drop(server);
    let pushed = pushes.await.unwrap_or(0);

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
    println!(
        "  p99 by tenth of the run (ms): {}",
        p99_by_tenth(&timeline)
    );
    println!("  WebSocket frames received: {pushed}");
    let per_webhook = |until: Option<Duration>| Some((until? - cpu_before?) / requests as u32);
    let (cpu_acked, cpu_applied) = (per_webhook(cpu_acked), per_webhook(cpu_applied));
    println!(
        "  omni serve CPU per webhook: {} until acknowledged, {} until applied",
        micros(cpu_acked),
        micros(cpu_applied)
    );
    println!("  omni serve max RSS: {}", mib(rss));
    Figures {
        rss_kib: rss,
        cpu_per_webhook: cpu_applied,
        applied_per_s: Some(requests as f64 / applied_in.as_secs_f64()),
        ..Figures::new("omni serve", requests, acked_in, &latencies)
    }
}

/// The sum of every conversation's unread count, page by page.
async fn unread_total(http: &reqwest::Client, base: &str, key: &str) -> u64 {
    let mut total = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}/v1/conversations?limit=200&cursor={c}"),
            None => format!("{base}/v1/conversations?limit=200"),
        };
        let page: Value = http
            .get(path)
            .bearer_auth(key)
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
            None => return total,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn micros(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| format!("{:.1} µs", d.as_secs_f64() * 1e6))
}

/// A peer of `bench/peers/`: its label, how to start it, and the targets against it.
fn peer(name: &str, dir: &Path) -> Result<(&'static str, Command, Targets), String> {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers");
    let program =
        |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
    let node = || program("BENCH_NODE", "node".into());
    let (label, program, script, targets) = match name {
        "python" => (
            "python: twilio RequestValidator + RoomKit (in memory)",
            program("BENCH_PYTHON", peers.join(".venv/bin/python")),
            "python/server.py",
            Targets {
                acked_ratio: Some(20.0),
                cpu_ratio: Some(10.0),
            },
        ),
        "node" => (
            "node: twilio validateRequest + Map (in memory, reference)",
            node(),
            "node/server.js",
            Targets::default(),
        ),
        "node-durable" => (
            "node-durable: twilio validateRequest + better-sqlite3 commit (synchronous=FULL)",
            node(),
            "node/durable.js",
            Targets {
                acked_ratio: Some(5.0),
                cpu_ratio: Some(3.0),
            },
        ),
        other => {
            return Err(format!(
                "unknown peer {other:?} (known: python, node, node-durable)"
            ))
        }
    };
    let mut command = Command::new(program);
    command
        .arg(peers.join(script))
        .env("BENCH_TWILIO_AUTH_TOKEN", TOKEN)
        .env("BENCH_PEER_DB", dir.join("peer.db"));
    Ok((label, command, targets))
}

/// A peer's run: the same stream, signed for its URL, then a check through its `/stats`
/// that every message landed in a conversation.
async fn bench_peer(name: &str, requests: usize, concurrency: usize) -> Result<Figures, String> {
    // On the same disk as Omni's database (a durable peer commits there).
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let (label, command, targets) = peer(name, dir.path())?;
    let (server, base) = Server::start(command, "peer listening on ")?;
    println!("{label} at {base}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let url = format!("{base}/webhooks/twilio");
    let signed = signed_stream(&url, requests);
    let cpu_before = server.cpu_time();
    let (acked_in, latencies, timeline) = drive(&http, &url, signed, concurrency).await;
    let cpu_after = server.cpu_time();
    let rss = server.max_rss_kib();
    let stats: Value = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .map_err(|e| format!("/stats: {e}"))?
        .json()
        .await
        .map_err(|e| format!("/stats: {e}"))?;
    drop(server);
    if stats["messages"].as_u64() != Some(requests as u64) {
        return Err(format!("stored {stats} for {requests} webhooks"));
    }
    let f = Figures {
        rss_kib: rss,
        cpu_per_webhook: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| (after - before) / requests as u32),
        targets,
        ..Figures::new(label, requests, acked_in, &latencies)
    };
    println!("  stored: {stats}");
    println!(
        "  acknowledged (verified, stored): {:.0}/s ({:.2} s)",
        f.acked_per_s,
        acked_in.as_secs_f64()
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(f.p50),
        ms(f.p99),
        ms(*latencies.last().unwrap())
    );
    println!(
        "  p99 by tenth of the run (ms): {}",
        p99_by_tenth(&timeline)
    );
    println!("  CPU per webhook: {}", micros(f.cpu_per_webhook));
    println!("  max RSS: {}", mib(f.rss_kib));
    Ok(f)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// The side-by-side table; `table[0]` is Omni.
fn print_table(table: &[Figures], requests: usize, concurrency: usize) {
    let omni = &table[0];
    println!(
        "\nside by side: the same {requests} signed Twilio webhooks (1,000 contacts), \
         concurrency {concurrency}, one process per server\n"
    );
    println!(
        "| server | acknowledged/s | p50 | p99 | CPU per webhook | peak RSS | \
         Omni's acknowledged/s ratio | peer's CPU per webhook ÷ Omni's |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|");
    for f in table {
        let verdict = |ratio: f64, target: Option<f64>| match target {
            Some(t) if ratio >= t => format!("{ratio:.1}x (target >= {t:.0}x: met)"),
            Some(t) => format!("{ratio:.1}x (target >= {t:.0}x: NOT met)"),
            None => format!("{ratio:.1}x"),
        };
        let (acked, cpu) = if std::ptr::eq(f, omni) {
            (String::new(), String::new())
        } else {
            let cpu =
                f.cpu_per_webhook
                    .zip(omni.cpu_per_webhook)
                    .map_or("n/a".into(), |(peer, omni)| {
                        verdict(peer.as_secs_f64() / omni.as_secs_f64(), f.targets.cpu_ratio)
                    });
            (
                verdict(omni.acked_per_s / f.acked_per_s, f.targets.acked_ratio),
                cpu,
            )
        };
        println!(
            "| {} | {:.0}/s | {:.2} ms | {:.2} ms | {} | {} | {acked} | {cpu} |",
            f.server,
            f.acked_per_s,
            ms(f.p50),
            ms(f.p99),
            micros(f.cpu_per_webhook),
            mib(f.rss_kib)
        );
    }
    let p99_target = Duration::from_millis(10);
    if let Some(applied) = omni.applied_per_s {
        let verdict = if applied >= 10_000.0 {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "\nOmni applied (committed and pushed): {applied:.0}/s (target >= 10,000/s: {verdict})"
        );
    }
    println!(
        "Omni p99 at concurrency {concurrency}: {:.2} ms (target < 10 ms at concurrency 32: {})",
        ms(omni.p99),
        match (concurrency, omni.p99 < p99_target) {
            (32, true) => "met",
            (32, false) => "NOT met",
            _ => "measured at concurrency 32 only",
        }
    );
}
