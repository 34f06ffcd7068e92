//! Hardening found by an outside probe (issue 22): start-up refusals, file modes, secrets,
//! throttled authentication, API key revocation, WebSocket limits.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use omni_core::providers::twilio;

use crate::harness::{signed_twilio_post, Server, ACCOUNT_SID, ADMIN, MASTER_KEY};

/// Runs `omni serve` with `env` and expects it to refuse to start; its stderr.
fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omni"));
    cmd.arg("serve")
        .env_clear()
        .env("OMNI_ADDR", "127.0.0.1:0")
        .env("OMNI_DB", dir.path().join("omni.db"))
        .env("OMNI_ADMIN_TOKEN", ADMIN)
        .env("OMNI_MASTER_KEY", MASTER_KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A server that starts anyway would run until killed: bound the wait.
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("omni started with {env:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "omni exited 0 with {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `OMNI_PUBLIC_URL=` set but empty made webhook signature checks trust the client's `Host`
/// header; the server now refuses to start with it.
#[test]
fn an_empty_public_url_is_refused_at_start() {
    let stderr = refused_start(&[("OMNI_PUBLIC_URL", "")]);
    assert!(stderr.contains("OMNI_PUBLIC_URL"), "{stderr}");
}

/// The server used to start with `OMNI_ADMIN_TOKEN=qz`, and with a platform VoIP.ms URL
/// secret of any length: both are refused, naming what is wrong.
#[test]
fn a_weak_admin_token_or_platform_webhook_secret_is_refused_at_start() {
    let stderr = refused_start(&[("OMNI_ADMIN_TOKEN", "qz")]);
    assert!(
        stderr.contains("OMNI_ADMIN_TOKEN") && stderr.contains("32"),
        "{stderr}"
    );
    let stderr = refused_start(&[
        ("VOIPMS_API_USERNAME", "ops@example.org"),
        ("VOIPMS_API_PASSWORD", "voipms-api-password"),
        ("VOIPMS_WEBHOOK_SECRET", "x"),
    ]);
    assert!(
        stderr.contains("webhook_secret") && stderr.contains("16"),
        "{stderr}"
    );
}

/// With a public URL configured, a Twilio webhook signed for the URL named by its own `Host`
/// header is refused: signature checks never take the base URL from the client.
#[tokio::test]
async fn a_webhook_signed_for_its_own_host_header_is_refused() {
    let s = Server::start(&[]).await;
    let token = "twilio-auth-token-host-0001";
    s.twilio_tenant("north", token, "+15555550100").await;
    let params = [
        ("MessageSid", "SMhost0000000000000000000000000001"),
        ("AccountSid", ACCOUNT_SID),
        ("From", "+15555550123"),
        ("To", "+15555550100"),
        ("Body", "forged"),
    ];
    let evil = "https://evil.example/webhooks/twilio";
    let response = s
        .http
        .post(s.url("/webhooks/twilio"))
        .header("host", "evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            twilio::signature(evil, &params, token),
        )
        .body(serde_urlencoded::to_string(params).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Repeated failed authentications from one address were never slowed (442 admin-token
/// guesses in 0.3 s; a VoiceMeUp URL secret guessed in 34 tries). Now each failure after the
/// first is answered later, and the address is then refused (429, whatever it presents) for
/// a while: per scope, and per tenant for webhooks, so other tenants' carriers keep working.
#[tokio::test]
async fn repeated_authentication_failures_are_slowed_then_locked_out() {
    let s = Server::start(&[
        ("OMNI_AUTH_FAILURE_LIMIT", "4"),
        ("OMNI_AUTH_FAILURE_DELAY_MS", "150"),
        ("OMNI_AUTH_LOCKOUT_SECS", "120"),
    ])
    .await;
    let key = s.tenant("north").await;
    let vmu = |tenant: &str, number: &str| {
        (
            tenant.to_string(),
            json!({"username": format!("{tenant}-dispatch"), "auth_token": "vmu-auth-token-0001",
                "webhook_secret": format!("{tenant}-vmu-callback-secret")}),
            number.to_string(),
        )
    };
    for (tenant, config, number) in [vmu("east", "+15555550100"), vmu("west", "+15555550200")] {
        s.carrier_tenant(&tenant, "voicemeup", config, &number, &["sms"])
            .await;
    }

    // Admin token: three failures, slower each time (0, 150, 300 ms held), then the fourth
    // locks the address out and even the right token is refused.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let r = s
            .http
            .get(s.url("/v1/admin/tenants/north/routing"))
            .bearer_auth("wrong-admin-token-guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    let r = s
        .http
        .get(s.url("/v1/admin/tenants/north/routing"))
        .bearer_auth("wrong-admin-token-guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, body) = s
        .admin(Method::GET, "/v1/admin/tenants/north/routing", None)
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
    // API keys are another scope: the tenant's own key still works from here.
    let (status, _) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(status, 200);

    // A forger guessing east's VoiceMeUp URL secret is locked out of east's webhooks only.
    let body = |to: &str, hash: &str| {
        json!({"sms_hash": hash, "source_number": "15555550123", "destination_number": to,
            "datetime_transmission": "2026-01-01 10:00:00", "direction": "inbound",
            "message": "forged"})
    };
    let post = |secret: String, body: serde_json::Value| {
        let request = s
            .http
            .post(s.url(&format!("/webhooks/voicemeup?secret={secret}")))
            .json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for guess in 0..4 {
        let status = post(format!("guess-{guess}"), body("15555550100", "h0")).await;
        assert_eq!(status, 401);
    }
    let status = post("east-vmu-callback-secret".into(), body("15555550100", "h1")).await;
    assert_eq!(
        status, 429,
        "east's webhooks from the guessing address are refused"
    );
    let status = post("west-vmu-callback-secret".into(), body("15555550200", "h2")).await;
    assert_eq!(
        status, 200,
        "west's webhooks from the same address still pass"
    );
}

/// A leaked key used to live until someone edited the database. The admin API lists a
/// tenant's keys (never the key) and revokes one: it stops working at once, and the
/// dashboards it opened are closed (1008); the tenant's other keys are untouched.
#[tokio::test]
async fn an_api_key_is_listed_and_revoked_closing_its_dashboards() {
    use tokio_tungstenite::tungstenite::Message as Ws;

    let s = Server::start(&[]).await;
    let kept = s.tenant("north").await;
    let (status, issued) = s
        .admin(
            Method::POST,
            "/v1/admin/tenants/north/api-keys",
            Some(json!({"name": "night shift console"})),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let (leaked, leaked_id) = (
        issued["key"].as_str().unwrap().to_string(),
        issued["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(issued["prefix"], leaked[..12]);
    // The key is used once, so its last use is known.
    let (status, _) = s.api(&leaked, Method::GET, "/v1/conversations", None).await;
    assert_eq!(status, 200);

    let (status, list) = s
        .admin(Method::GET, "/v1/admin/tenants/north/api-keys", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let listed = items
        .iter()
        .find(|k| k["id"] == leaked_id.as_str())
        .unwrap();
    assert_eq!(listed["name"], "night shift console");
    assert_eq!(listed["role"], "admin");
    assert_eq!(listed["prefix"], leaked[..12]);
    assert!(listed["created_at"].is_string() && listed["last_used_at"].is_string());
    let mut fields: Vec<_> = listed.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["created_at", "id", "last_used_at", "name", "prefix", "role"]
    );
    assert!(!list.to_string().contains(&leaked) && !list.to_string().contains(&kept));

    let ws = |key: &str| format!("{}/v1/ws?token={key}", s.base.replacen("http", "ws", 1));
    let (mut dashboard, _) = tokio_tungstenite::connect_async(ws(&leaked)).await.unwrap();
    let (mut other, _) = tokio_tungstenite::connect_async(ws(&kept)).await.unwrap();

    let path = format!("/v1/admin/tenants/north/api-keys/{leaked_id}");
    let (status, body) = s.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, 204, "{body}");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match dashboard.next().await {
                Some(Ok(Ws::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the revoked key's dashboard is closed");
    assert_eq!(closed, Some(1008));
    let (status, _) = s.api(&leaked, Method::GET, "/v1/conversations", None).await;
    assert_eq!(status, 401);
    assert!(tokio_tungstenite::connect_async(ws(&leaked)).await.is_err());
    let (status, _) = s.api(&kept, Method::GET, "/v1/conversations", None).await;
    assert_eq!(status, 200);
    other.send(Ws::Ping(vec![1].into())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match other.next().await {
                // The server's own pings may come first.
                Some(Ok(Ws::Ping(_))) => continue,
                frame => return frame,
            }
        }
    })
    .await;
    assert!(matches!(pong, Ok(Some(Ok(Ws::Pong(_))))), "{pong:?}");

    let (status, list) = s
        .admin(Method::GET, "/v1/admin/tenants/north/api-keys", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (status, body) = s.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = s
        .admin(Method::GET, "/v1/admin/tenants/nobody/api-keys", None)
        .await;
    assert_eq!(status, 404);
}

/// Opens a WebSocket to `addr` by hand (so a test can then send what no client library
/// would); the stream after the handshake, or the HTTP status that refused it.
async fn raw_upgrade(addr: std::net::SocketAddr, key: &str) -> Result<TcpStream, u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/ws?token={key} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return Err(0);
        }
        head.push(byte[0]);
    }
    let status: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
    if status == 101 {
        Ok(stream)
    } else {
        Err(status)
    }
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One tenant key used to take the server down through WebSockets: 1,001 upgrades ran it
/// out of file descriptors, and unfinished 8 MiB fragments grew it from 21 to 405 MiB. Now
/// a key, a tenant and the server each have a cap (`429` past it), a frame larger than the
/// protocol needs ends its socket at the header, silent sockets are closed, and a carrier's
/// webhooks keep getting their 2xx in their usual time throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_flooding_sockets_and_fragments_leave_webhooks_answering() {
    let s = Server::start(&[
        ("OMNI_WS_MAX_PER_KEY", "20"),
        ("OMNI_WS_MAX_PER_TENANT", "30"),
        ("OMNI_WS_MAX_CONNECTIONS", "1000"),
        ("OMNI_WS_PING_SECS", "1"),
        ("OMNI_WS_IDLE_SECS", "3"),
        ("OMNI_LOG", "info"),
    ])
    .await;
    let token = "twilio-auth-token-flood-0001";
    let key = s.twilio_tenant("north", token, "+15555550100").await;
    let (_, second) = s
        .admin(Method::POST, "/v1/admin/tenants/north/api-keys", None)
        .await;
    let second = second["key"].as_str().unwrap().to_string();

    // Caps: 20 for the first key, the tenant's remaining 10 for the second, then 429.
    let mut held = Vec::new();
    let (mut refused_key, mut refused_tenant) = (0, 0);
    for _ in 0..30 {
        match raw_upgrade(s.direct, &key).await {
            Ok(stream) => held.push(stream),
            Err(429) => refused_key += 1,
            Err(other) => panic!("upgrade answered {other}"),
        }
    }
    assert_eq!((held.len(), refused_key), (20, 10));
    for _ in 0..15 {
        match raw_upgrade(s.direct, &second).await {
            Ok(stream) => held.push(stream),
            Err(429) => refused_tenant += 1,
            Err(other) => panic!("upgrade answered {other}"),
        }
    }
    assert_eq!((held.len(), refused_tenant), (30, 5));

    // The usual time of a webhook, before the flood.
    let webhook = |n: usize| {
        let params = [
            ("MessageSid", format!("SMflood{n:027}")),
            ("AccountSid", ACCOUNT_SID.to_string()),
            ("From", "+15555550123".to_string()),
            ("To", "+15555550100".to_string()),
            ("Body", format!("flood {n}")),
        ];
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request = signed_twilio_post(&s.http, &s.url("/webhooks/twilio"), &params, token);
        async move {
            let started = std::time::Instant::now();
            let status = request.send().await.unwrap().status().as_u16();
            (status, started.elapsed())
        }
    };
    let mut usual = Duration::ZERO;
    for n in 0..5 {
        let (status, took) = webhook(n).await;
        assert_eq!(status, 200);
        usual = usual.max(took);
    }
    let rss_before = rss_kib(s.pid());

    // The flood: every held socket, and attackers reconnecting as fast as they are let in,
    // send unfinished frames announcing 8 MiB.
    let stop = Arc::new(AtomicBool::new(false));
    // A text frame, not final, masked, announcing 8 MiB, and the first bytes of it.
    let fragment = |sent: usize| {
        let mut frame = vec![0x01, 0x80 | 127];
        frame.extend_from_slice(&(8u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend(std::iter::repeat_n(0x61, sent));
        frame
    };
    let mut attackers = Vec::new();
    for mut stream in held.drain(..) {
        let frame = fragment(64 * 1024);
        attackers.push(tokio::spawn(async move {
            let _ = stream.write_all(&frame).await;
            let mut sink = [0u8; 1024];
            // The server ends the socket; read until it does.
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            })
            .await;
            closed.is_ok()
        }));
    }
    let mut reconnecting = Vec::new();
    for _ in 0..8 {
        let (stop, key, addr) = (stop.clone(), key.clone(), s.direct);
        reconnecting.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut stream) = raw_upgrade(addr, &key).await {
                    if stream.write_all(&fragment(256 * 1024)).await.is_ok() {
                        sent += 1;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            sent
        }));
    }

    let mut slowest = Duration::ZERO;
    for n in 5..45 {
        let (status, took) = webhook(n).await;
        assert_eq!(status, 200, "webhook {n} during the flood");
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut fragments = 0;
    for task in reconnecting {
        fragments += task.await.unwrap();
    }
    for task in attackers {
        assert!(
            task.await.unwrap(),
            "a socket sending an 8 MiB frame was not closed"
        );
    }
    let rss_after = rss_kib(s.pid());
    println!(
        "usual webhook {usual:?}, slowest during the flood {slowest:?}; \
         {fragments} oversized fragments sent; RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        slowest <= Duration::from_secs(1).max(usual * 10),
        "slowest webhook {slowest:?} (usual {usual:?})"
    );
    assert!(fragments > 100, "the flood ran: {fragments}");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    // A dashboard that never answers the server's pings is closed once silent too long.
    let mut silent = raw_upgrade(s.direct, &key).await.unwrap();
    let started = std::time::Instant::now();
    let mut sink = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while silent.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "a silent dashboard stays open");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
