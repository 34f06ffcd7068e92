//! Abuse: the per-tenant send rate limit, slow clients (headers and bodies), oversized URLs,
//! headers and bodies, against the real binary over raw sockets where a client library would
//! hide the behaviour. And the response recorder behind the harness's secret scan.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::{leaked_secrets, Server, ACCOUNT_SID};

const TOKEN_A: &str = "12345abcdef67890fedcba0987654321";
const TOKEN_B: &str = "fedcba09876543211234567890abcdef";
const CONTACT: &str = "+15555550123";

/// Twilio's Messages endpoint, answering each send with a fresh SID.
struct FreshSid(AtomicUsize);

impl Respond for FreshSid {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(201).set_body_json(
            json!({"sid": format!("SM{n:032x}"), "status": "queued", "account_sid": ACCOUNT_SID}),
        )
    }
}

fn form_field(req: &Request, name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&req.body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

async fn send(s: &Server, key: &str, body: &str) -> reqwest::Response {
    s.http
        .post(s.url("/v1/messages"))
        .bearer_auth(key)
        .json(&json!({"channel": "sms", "to": CONTACT, "body": body}))
        .send()
        .await
        .expect("send request")
}

#[tokio::test]
async fn the_send_rate_limit_refuses_burst_plus_one_per_tenant_and_stores_nothing() {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("/Messages.json$"))
        .respond_with(FreshSid(AtomicUsize::new(1)))
        .mount(&fake)
        .await;
    // One token every 10 s: the burst is all a tenant has for the length of the test.
    let s = Server::start(&[
        ("OMNI_TWILIO_API_URL", &fake.uri()),
        ("OMNI_SEND_RATE_PER_SEC", "0.1"),
        ("OMNI_SEND_BURST", "3"),
    ])
    .await;
    let north = s.twilio_tenant("north", TOKEN_A, "+15555550100").await;
    let south = s.twilio_tenant("south", TOKEN_B, "+15555550200").await;

    for i in 0..3 {
        let r = send(&s, &north, &format!("north {i}")).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    let refused = send(&s, &north, "north refused").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));

    // Another tenant has its own bucket.
    for i in 0..3 {
        let r = send(&s, &south, &format!("south {i}")).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    // The carrier gets the six accepted sends and never the refused one.
    s.eventually(15, "six sends at the carrier", || async {
        let n = fake.received_requests().await.unwrap().len();
        (n >= 6).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies: Vec<String> = fake
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| form_field(r, "Body"))
        .collect();
    assert_eq!(bodies.len(), 6, "{bodies:?}");
    assert!(!bodies.iter().any(|b| b.contains("refused")), "{bodies:?}");

    // Nor is it stored: north's conversation holds exactly its three accepted sends.
    let (st, list) = s.api(&north, Method::GET, "/v1/conversations", None).await;
    assert_eq!(st, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let conversation = items[0]["id"].as_str().unwrap();
    let (_, messages) = s
        .api(
            &north,
            Method::GET,
            &format!("/v1/conversations/{conversation}/messages"),
            None,
        )
        .await;
    let mut stored: Vec<&str> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    stored.sort();
    assert_eq!(stored, ["north 0", "north 1", "north 2"]);
}

/// Reads a response until the server closes the connection, a whole response (head and
/// `Content-Length` body) is in, or `limit` passes. Returns the bytes and whether the
/// connection was closed.
async fn read_response(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if complete(&buf) {
            return (buf, false);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (buf, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    buf.len() >= end + 4 + length
}

/// (status, JSON body) of a raw response.
fn parse(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected_in_time() {
    let s = Server::start(&[("OMNI_HEADER_READ_TIMEOUT_MS", "500")]).await;
    let mut stream = TcpStream::connect(s.direct).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: omni\r\n")
        .await
        .unwrap();
    // One header line every 200 ms, never the blank line that ends the head.
    let mut closed_after = None;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stream
            .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            // Whatever hyper says on the way out (a 408), the connection must then close.
            Ok(Ok(_)) => {
                let (_, closed) = read_response(&mut stream, Duration::from_secs(2)).await;
                assert!(closed, "the connection stays open after the timeout");
                closed_after = Some(started.elapsed());
                break;
            }
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("a slowloris client was never disconnected");
    assert!(
        closed_after < Duration::from_secs(3),
        "disconnected only after {closed_after:?}"
    );

    // A client that sends its head at once is served as usual.
    let (st, body) = crate::harness::send(s.http.get(s.url("/healthz"))).await;
    assert_eq!((st, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn a_slow_body_gets_408_in_json_and_the_connection_closed() {
    let s = Server::start(&[("OMNI_BODY_READ_TIMEOUT_MS", "500")]).await;
    let key = s.tenant("north").await;
    let mut stream = TcpStream::connect(s.direct).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: omni\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"ch"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut read_half, mut write_half) = stream.into_split();
    // A byte every 200 ms: the 200 announced would take 40 s.
    let trickle = async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write_half.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let read = async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, read_half.read(&mut chunk)).await {
                Err(_) => return (buf, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (raw, closed) = tokio::select! {
        r = read => r,
        _ = trickle => panic!("the server read the whole slow body"),
    };
    let elapsed = started.elapsed();
    let (status, body) = parse(&raw);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(body["code"], "request_timeout");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(closed, "the connection stays open after a 408");
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn oversized_urls_headers_and_bodies_are_refused_in_json() {
    let s = Server::start(&[]).await;
    let key = s.tenant("north").await;

    // URL over 8 KiB: 414.
    let long_url = format!("/healthz?pad={}", "a".repeat(9 * 1024));
    let (st, body) = crate::harness::send(s.http.get(s.url(&long_url))).await;
    assert_eq!(st, 414, "{body}");
    assert_eq!(body["code"], "uri_too_long");
    // Just under it: served.
    let ok_url = format!("/healthz?pad={}", "a".repeat(7 * 1024));
    let (st, _) = crate::harness::send(s.http.get(s.url(&ok_url))).await;
    assert_eq!(st, 200);

    // Header section over 16 KiB: 431.
    let (st, body) = crate::harness::send(
        s.http
            .get(s.url("/v1/conversations"))
            .bearer_auth(&key)
            .header("x-pad", "b".repeat(17 * 1024)),
    )
    .await;
    assert_eq!(st, 431, "{body}");
    assert_eq!(body["code"], "headers_too_large");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));

    // A head far past the read buffer: refused by the HTTP server itself (431, or closed).
    let mut stream = TcpStream::connect(s.direct).await.unwrap();
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: omni\r\n".to_vec();
    for i in 0..200 {
        huge.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "c".repeat(1000)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let _ = stream.write_all(&huge).await;
    let (raw, closed) = read_response(&mut stream, Duration::from_secs(5)).await;
    if !raw.is_empty() {
        assert_eq!(parse(&raw).0, 431, "{}", String::from_utf8_lossy(&raw));
    } else {
        assert!(closed, "neither answered nor closed");
    }

    // Body over 1 MiB: 413, and nothing stored.
    let big = "x".repeat(1024 * 1024 + 1);
    let (st, body) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": big})),
        )
        .await;
    assert_eq!(st, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    let (_, list) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn every_response_the_tests_receive_is_recorded_for_the_secret_scan() {
    let s = Server::start(&[]).await;
    let key = s.twilio_tenant("north", TOKEN_A, "+15555550100").await;
    let mut feed = s.ws(&key).await;
    let inbound = [
        ("MessageSid", "SMrecorded0001"),
        ("From", CONTACT),
        ("To", "+15555550100"),
        ("Body", "pushed through the recorder"),
    ];
    let (st, twiml) = s
        .twilio_webhook("/webhooks/twilio", &inbound, TOKEN_A)
        .await;
    assert_eq!(st, 200, "{twiml}");
    feed.next_of("message.received", 10)
        .await
        .expect("message.received pushed");

    let recorded = s.response_bytes();
    let text = String::from_utf8_lossy(&recorded);
    assert!(text.contains("HTTP/1.1 201 Created"), "status lines");
    assert!(text.contains("x-request-id: "), "headers");
    assert!(text.contains("<Response/>"), "bodies");
    assert!(
        text.contains("HTTP/1.1 101 Switching Protocols"),
        "the upgrade"
    );
    assert!(
        text.contains("\"type\":\"message.received\""),
        "WebSocket frames"
    );
    // The key is in its creation body once, which the scan allows; once more would be a leak.
    assert!(leaked_secrets(&recorded, std::slice::from_ref(&key)).is_empty());
    let doubled = [&recorded[..], key.as_bytes()].concat();
    assert_eq!(leaked_secrets(&doubled, std::slice::from_ref(&key)), [key]);
}
