//! Keywords, tenant isolation, durability under kill -9, concurrency, the CLI and demo mode,
//! and secrets kept out of logs.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Server, ACCOUNT_SID};

const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001";
const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbb0002";
const NUMBER_A: &str = "+15555550100";
const NUMBER_B: &str = "+15555550200";
const CONTACT: &str = "+15555550123";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

fn inbound<'a>(sid: &'a str, from: &'a str, to: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("From", from),
        ("To", to),
        ("Body", body),
        ("NumMedia", "0"),
        ("AccountSid", ACCOUNT_SID),
    ]
}

/// A Twilio fake that gives every message its own SID, as Twilio does.
#[derive(Default)]
struct UniqueSids(std::sync::atomic::AtomicUsize);

impl wiremock::Respond for UniqueSids {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": format!("SM{n:032}"), "status": "queued"}))
    }
}

async fn accepting_twilio() -> MockServer {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"sid": "SM00000000000000000000000000000099", "status": "queued"}),
        ))
        .mount(&fake)
        .await;
    fake
}

#[tokio::test]
async fn stop_start_and_help_keywords() {
    let fake = accepting_twilio().await;
    let s = Server::start(&[("OMNI_TWILIO_API_URL", &fake.uri())]).await;
    let key = s.twilio_tenant("north", TOKEN_A, NUMBER_A).await;
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMkw1", CONTACT, NUMBER_A, "Stop"),
            TOKEN_A,
        )
        .await;
    assert_eq!(st, 200);
    let refused = s
        .eventually(10, "opt-out to apply", || async {
            let (st, b) = s
                .api(
                    &key,
                    Method::POST,
                    "/v1/messages",
                    Some(json!({"channel": "sms", "to": CONTACT, "body": "are you there?"})),
                )
                .await;
            (st == 422).then_some(b)
        })
        .await;
    assert_eq!(refused["code"], "recipient_opted_out");
    let (_, list) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(list["items"][0]["opted_out"], true);

    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMkw2", CONTACT, NUMBER_A, "START"),
            TOKEN_A,
        )
        .await;
    assert_eq!(st, 200);
    s.eventually(10, "opt-in to apply", || async {
        let (st, _) = s
            .api(
                &key,
                Method::POST,
                "/v1/messages",
                Some(json!({"channel": "sms", "to": CONTACT, "body": "welcome back"})),
            )
            .await;
        (st == 202).then_some(())
    })
    .await;

    let help_text = "North County text line: reply STOP to opt out. Emergencies: call 911.";
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north",
            Some(json!({"name": "North", "help_text": help_text})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMkw3", "+15555550177", NUMBER_A, "HELP"),
            TOKEN_A,
        )
        .await;
    assert_eq!(st, 200);
    let help = s
        .eventually(10, "help reply at the carrier", || async {
            let reqs = fake.received_requests().await.unwrap_or_default();
            reqs.into_iter().find(|r| {
                let f: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(&r.body).unwrap_or_default();
                f.iter().any(|(k, v)| k == "To" && v == "+15555550177")
            })
        })
        .await;
    let f: Vec<(String, String)> = serde_urlencoded::from_bytes(&help.body).unwrap();
    let body = f
        .iter()
        .find(|(k, _)| k == "Body")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(body, help_text, "the tenant's own help text");
}

#[tokio::test]
async fn tenants_never_see_or_touch_each_others_data() {
    let s = Server::start(&[]).await;
    let key_a = s.twilio_tenant("north", TOKEN_A, NUMBER_A).await;
    let key_b = s.twilio_tenant("south", TOKEN_B, NUMBER_B).await;
    let mut feed_b = s.ws(&key_b).await;
    let mut feed_a = s.ws(&key_a).await;

    // Signed with B's token but sent to A's number: rejected, lands nowhere.
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMiso0", CONTACT, NUMBER_A, "forged"),
            TOKEN_B,
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMiso1", CONTACT, NUMBER_A, "for north"),
            TOKEN_A,
        )
        .await;
    assert_eq!(st, 200);
    let got = feed_a
        .next_of("message.received", 10)
        .await
        .expect("north is told");
    assert_eq!(got["message"]["body"], "for north");
    assert!(
        feed_b.next_of("message.received", 1).await.is_none(),
        "south is told nothing"
    );

    let conv = got["conversation_id"].as_str().unwrap().to_string();
    let msg = got["message"]["id"].as_str().unwrap().to_string();
    let (_, list_b) = s.api(&key_b, Method::GET, "/v1/conversations", None).await;
    assert_eq!(list_b["items"], json!([]));
    for (m, p) in [
        (Method::GET, format!("/v1/messages/{msg}")),
        (Method::GET, format!("/v1/conversations/{conv}/messages")),
        (Method::POST, format!("/v1/conversations/{conv}/read")),
        (Method::PUT, format!("/v1/messages/{msg}/star")),
        (Method::DELETE, format!("/v1/messages/{msg}/star")),
        (Method::GET, format!("/v1/messages/{msg}/media/0")),
    ] {
        let (st, b) = s.api(&key_b, m.clone(), &p, None).await;
        assert_eq!(st, 404, "{m} {p}: {b}");
    }
    let (_, list_a) = s.api(&key_a, Method::GET, "/v1/conversations", None).await;
    assert_eq!(
        list_a["items"][0]["unread_count"], 1,
        "B's read did not touch A"
    );
    assert_eq!(
        list_a["items"][0]["starred_count"], 0,
        "B's star did not touch A"
    );
    // B cannot send from A's number.
    let (st, b) = s
        .api(
            &key_b,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "from": NUMBER_A, "body": "x"})),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    // The feed refuses a bad token.
    let url = format!("{}/v1/ws?token=omk_nope", s.base.replacen("http", "ws", 1));
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn two_hundred_concurrent_messages_count_exactly_two_hundred_unread() {
    let s = Server::start(&[]).await;
    let key = s.twilio_tenant("north", TOKEN_A, NUMBER_A).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = s.url("/webhooks/twilio");
        let http = s.http.clone();
        tasks.push(tokio::spawn(async move {
            let sid = format!("SMconc{i:04}");
            let params = inbound(&sid, CONTACT, NUMBER_A, "burst");
            crate::harness::signed_twilio_post(&http, &url, &params, TOKEN_A)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let count = s
        .eventually(30, "200 unread", || async {
            let (_, list) = s.api(&key, Method::GET, "/v1/conversations", None).await;
            let n = list["items"][0]["unread_count"].as_i64().unwrap_or(0);
            (n == 200).then_some(n)
        })
        .await;
    assert_eq!(count, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, list) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "one conversation"
    );
    assert_eq!(
        list["items"][0]["unread_count"], 200,
        "and it stays exactly 200"
    );
}

#[tokio::test]
async fn redelivered_webhooks_are_acknowledged_and_stored_once() {
    let s = Server::start(&[]).await;
    let key = s.twilio_tenant("north", TOKEN_A, NUMBER_A).await;
    for _ in 0..3 {
        let (st, _) = s
            .twilio_webhook(
                "/webhooks/twilio",
                &inbound("SMdup1", CONTACT, NUMBER_A, "once"),
                TOKEN_A,
            )
            .await;
        assert_eq!(st, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, list) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(list["items"][0]["unread_count"], 1);
    let conv = list["items"][0]["id"].as_str().unwrap();
    let (_, msgs) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/conversations/{conv}/messages"),
            None,
        )
        .await;
    assert_eq!(msgs["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn kill_9_under_a_webhook_burst_loses_nothing_acknowledged() {
    let s = Server::start(&[]).await;
    let key = s.twilio_tenant("north", TOKEN_A, NUMBER_A).await;
    let url = s.url("/webhooks/twilio");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (url, http) = (url.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i as u64 * 2)).await;
            let sid = format!("SMkill{i:04}");
            let from = format!("+1555555{:04}", 1000 + i % 50);
            let params = inbound(&sid, &from, NUMBER_A, "burst");
            let ok = crate::harness::signed_twilio_post(&http, &url, &params, TOKEN_A)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (sid, ok)
        }));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The restart uses the same port only by chance, so acknowledged = what got a 2xx before the kill.
    let s = s.restart().await;
    let mut acked = Vec::new();
    for t in tasks {
        let (sid, ok) = t.await.unwrap();
        if ok {
            acked.push(sid);
        }
    }
    assert!(
        !acked.is_empty(),
        "some webhooks were acknowledged before the kill"
    );
    let total = s
        .eventually(30, "every acknowledged webhook applied", || async {
            let mut total = 0;
            let mut cursor: Option<String> = None;
            loop {
                let p = cursor
                    .as_ref()
                    .map_or("/v1/conversations?limit=200".to_string(), |c| {
                        format!("/v1/conversations?limit=200&cursor={c}")
                    });
                let (_, page) = s.api(&key, Method::GET, &p, None).await;
                total += page["items"]
                    .as_array()?
                    .iter()
                    .map(|c| c["unread_count"].as_i64().unwrap_or(0))
                    .sum::<i64>();
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            (total >= acked.len() as i64).then_some(total)
        })
        .await;
    assert!(
        total >= acked.len() as i64,
        "acknowledged {} but stored {total}",
        acked.len()
    );
    assert!(total <= 300);
}

#[tokio::test]
async fn a_restart_resumes_queued_sends_and_delivers_each_once() {
    // The carrier is down while messages are accepted; the server dies; it comes back with the
    // carrier up and every accepted message goes out exactly once.
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake)
        .await;
    let s = Server::start(&[
        ("OMNI_TWILIO_API_URL", &fake.uri()),
        ("OMNI_RETRY_BASE_MS", "1500"),
        ("OMNI_RETRY_MAX_MS", "1500"),
    ])
    .await;
    let key = s.twilio_tenant("north", TOKEN_A, NUMBER_A).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (st, m) = s
            .api(
                &key,
                Method::POST,
                "/v1/messages",
                Some(json!({"channel": "sms", "to": CONTACT, "body": format!("m{i}")})),
            )
            .await;
        assert_eq!(st, 202);
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.reset().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(UniqueSids::default())
        .mount(&fake)
        .await;
    let s = s.restart().await;
    for id in &ids {
        s.eventually(30, "message sent after restart", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "sent").then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies: Vec<String> = fake
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(&r.body)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v)
        })
        .collect();
    let mut sorted = bodies.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10, "every message delivered: {bodies:?}");
    assert_eq!(bodies.len(), 10, "none twice after the restart: {bodies:?}");
}

#[tokio::test]
async fn voipms_webhooks_with_the_cli_and_secrets_stay_out_of_logs() {
    let s = Server::start(&[]).await;
    let key = s.tenant("north").await;
    let (st, b) = s
        .admin(Method::PUT, "/v1/admin/tenants/north/providers/voipms", Some(json!({"api_username": "ops@example.org", "api_password": "voipms-api-password-xyz", "webhook_secret": "voipms-hook-secret-xyz"})))
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/numbers/+15555550100",
            Some(json!({"provider": "voipms", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omni"))
        .args([
            "webhook",
            "send",
            "voipms",
            "--tenant",
            "north",
            "--from",
            CONTACT,
            "--to",
            "+15555550100",
            "--body",
            "Need an ambulance",
            "--media",
            "https://example.org/x.jpg",
        ])
        .args(["--url", &s.base, "--db"])
        .arg(s.db())
        .env("OMNI_MASTER_KEY", crate::harness::MASTER_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("200 ok"));

    let list = s
        .eventually(10, "the VoIP.ms message", || async {
            let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
            (l["items"].as_array()?.len() == 1).then_some(l)
        })
        .await;
    assert_eq!(
        list["items"][0]["last_message"]["body"],
        "Need an ambulance"
    );
    assert_eq!(list["items"][0]["channel"], "sms", "MMS threads with SMS");
    let conv = list["items"][0]["id"].as_str().unwrap();
    let (_, msgs) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/conversations/{conv}/messages"),
            None,
        )
        .await;
    assert_eq!(msgs["items"][0]["channel"], "mms");
    assert_eq!(
        msgs["items"][0]["media"][0]["url"],
        "https://example.org/x.jpg"
    );

    // A wrong secret is refused.
    let bad = s
        .http
        .get(s.url("/webhooks/voipms?secret=wrong&id=1&from=5555550123&to=5555550100&message=x"));
    let (st, _) = crate::harness::send(bad).await;
    assert_eq!(st, 401);

    let logs = s.log_text();
    for secret in [
        "voipms-api-password-xyz",
        "voipms-hook-secret-xyz",
        crate::harness::MASTER_KEY,
        crate::harness::ADMIN,
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret} leaked into the logs"
        );
    }
    assert!(logs.contains("webhook accepted"), "the logs were captured");
}

#[tokio::test]
async fn demo_mode_seeds_a_working_tenant() {
    let s = Server::start_with_args(&[], &["--demo"]).await;
    let logs = s.log_text();
    let key = logs
        .lines()
        .find_map(|l| l.strip_prefix("demo API key (shown once): "))
        .expect("the demo key is printed")
        .trim()
        .to_string();
    assert!(logs.contains("curl"), "ready-to-paste commands are printed");
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "demo"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let done = s
        .eventually(10, "the simulator to deliver", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "delivered").then_some(m)
        })
        .await;
    assert_eq!(done["provider"], "simulator");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omni"))
        .args([
            "webhook",
            "send",
            "twilio",
            "--tenant",
            "demo",
            "--from",
            CONTACT,
            "--to",
            "+15555550100",
            "--body",
            "hello demo",
            "--url",
            &s.base,
            "--db",
        ])
        .arg(s.db())
        .env("OMNI_MASTER_KEY", crate::harness::MASTER_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.eventually(10, "the demo inbound message", || async {
        let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
        (l["items"][0]["last_message"]["body"] == "hello demo").then_some(())
    })
    .await;
}
