//! Failover between carriers: a Twilio outage moves sends to the tenant's VoIP.ms number with
//! no message lost or sent twice, the circuit breaker then keeps calls away from Twilio, and
//! after its cooldown a trial call finds Twilio back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::{Server, ACCOUNT_SID};

const TOKEN: &str = "12345abcdef67890fedcba0987654321";
const NUMBER: &str = "+15555550100";
const FALLBACK: &str = "+15555550199";
const CONTACT: &str = "+15555550123";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const THRESHOLD: usize = 3;
const COOLDOWN_SECS: u64 = 15;

/// VoIP.ms accepting every message under a new id.
struct Numbered(AtomicU64);

impl Respond for Numbered {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let id = 70_000 + self.0.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(200).set_body_json(json!({"status": "success", "sms": id}))
    }
}

fn form(req: &Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&req.body).unwrap()
}

fn param(req: &Request, name: &str) -> String {
    form(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

async fn send(s: &Server, key: &str, body: &str) -> String {
    let (st, m) = s
        .api(
            key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": body})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["from"], NUMBER, "queued from the tenant's Twilio number");
    m["id"].as_str().unwrap().to_string()
}

async fn sent(s: &Server, key: &str, id: &str) -> Value {
    s.eventually(30, &format!("message {id} to be sent"), || async {
        let (_, m) = s
            .api(key, Method::GET, &format!("/v1/messages/{id}"), None)
            .await;
        (m["status"] == "sent").then_some(m)
    })
    .await
}

/// Checks a message went out through VoIP.ms from the fallback number, noting why.
fn assert_failed_over(m: &Value, why: &str) {
    assert_eq!(m["provider"], "voipms", "{m}");
    assert_eq!(m["from"], FALLBACK, "{m}");
    let last = m["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["status"], "sent");
    assert_eq!(last["source"], "voipms");
    let note = last["note"].as_str().unwrap();
    assert!(
        note.starts_with(&format!("failover to voipms from {FALLBACK}: twilio: ")),
        "{note}"
    );
    assert!(note.contains(why), "{note}");
}

#[tokio::test]
async fn a_twilio_outage_moves_sends_to_voipms_and_the_breaker_spares_twilio() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(
                json!({"code": 20500, "message": "Service unavailable", "status": 503}),
            ),
        )
        .mount(&twilio)
        .await;
    let voipms = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/rest.php"))
        .respond_with(Numbered(AtomicU64::new(0)))
        .mount(&voipms)
        .await;
    let voipms_url = format!("{}/api/v1/rest.php", voipms.uri());
    let cooldown = COOLDOWN_SECS.to_string();
    let threshold = THRESHOLD.to_string();
    let s = Server::start(&[
        ("OMNI_TWILIO_API_URL", &twilio.uri()),
        ("OMNI_VOIPMS_API_URL", &voipms_url),
        ("OMNI_RETRY_MAX_ATTEMPTS", "2"),
        ("OMNI_BREAKER_THRESHOLD", &threshold),
        ("OMNI_BREAKER_COOLDOWN_SECS", &cooldown),
    ])
    .await;
    let key = s.twilio_tenant("north", TOKEN, NUMBER).await;
    let (st, b) = s.admin(Method::PUT, "/v1/admin/tenants/north/providers/voipms", Some(json!({"api_username": "ops@example.org", "api_password": "voipms-pw-secret-9", "webhook_secret": "voipms-hook-secret-9"}))).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{FALLBACK}"),
            Some(json!({"provider": "voipms", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // The routing is validated, stored and read back.
    for bad in [
        json!({"sms": ["twilio", "twilio"]}),
        json!({"whatsapp": ["voipms"]}),
        json!({"sms": []}),
        json!({"fax": ["twilio"]}),
        json!({"sms": ["pigeon"]}),
    ] {
        let (st, b) = s
            .admin(Method::PUT, "/v1/admin/tenants/north/routing", Some(bad))
            .await;
        assert_eq!(
            (st, b["code"].as_str()),
            (400, Some("invalid_request")),
            "{b}"
        );
    }
    let routing = json!({"sms": ["twilio", "voipms"]});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/routing",
            Some(routing.clone()),
        )
        .await;
    assert_eq!((st, &b), (200, &routing));
    let (st, b) = s
        .admin(Method::GET, "/v1/admin/tenants/north/routing", None)
        .await;
    assert_eq!((st, &b), (200, &routing));
    let (st, _) = s
        .admin(Method::GET, "/v1/admin/tenants/nobody/routing", None)
        .await;
    assert_eq!(st, 404);

    // Twilio is down: 20 messages, every one delivered through VoIP.ms, exactly once.
    let bodies: Vec<String> = (0..20).map(|i| format!("outage message {i}")).collect();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(send(&s, &key, body).await);
    }
    let mut carrier_ids = BTreeSet::new();
    for id in &ids {
        let m = sent(&s, &key, id).await;
        assert_failed_over(&m, "");
        carrier_ids.insert(m["provider_message_id"].as_str().unwrap().to_string());
    }
    assert_eq!(carrier_ids.len(), 20, "one VoIP.ms message each");
    let requests = voipms.received_requests().await.unwrap();
    assert_eq!(requests.len(), 20, "no message sent twice");
    let delivered: BTreeSet<String> = requests.iter().map(|r| param(r, "message")).collect();
    assert_eq!(
        delivered,
        bodies.iter().cloned().collect(),
        "no message lost"
    );
    for r in &requests {
        assert_eq!(param(r, "method"), "sendSMS");
        assert_eq!(
            param(r, "did"),
            "5555550199",
            "sent from the VoIP.ms number"
        );
        assert_eq!(param(r, "dst"), "5555550123");
    }
    // Twilio was tried until the breaker opened, never more than the budget allows.
    let tried = twilio.received_requests().await.unwrap().len();
    assert!(
        (THRESHOLD..ids.len() * 2).contains(&tried),
        "Twilio calls: {tried}"
    );

    // The breaker is open: the next messages go straight to VoIP.ms, Twilio hears nothing.
    for i in 0..10 {
        let id = send(&s, &key, &format!("breaker message {i}")).await;
        let m = sent(&s, &key, &id).await;
        assert_failed_over(&m, "twilio: circuit open");
    }
    assert_eq!(twilio.received_requests().await.unwrap().len(), tried);
    assert_eq!(voipms.received_requests().await.unwrap().len(), 30);

    // Twilio recovers; after the cooldown one trial call finds it, and it is the primary again.
    twilio.reset().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"sid": "SM000000000000000000000000000000f1", "status": "queued", "account_sid": ACCOUNT_SID}),
        ))
        .mount(&twilio)
        .await;
    tokio::time::sleep(Duration::from_millis(COOLDOWN_SECS * 1000 + 500)).await;
    let id = send(&s, &key, "after the outage").await;
    let m = sent(&s, &key, &id).await;
    assert_eq!(m["provider"], "twilio", "{m}");
    assert_eq!(m["from"], NUMBER);
    assert!(m["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["note"].is_null()));
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1);
    assert_eq!(voipms.received_requests().await.unwrap().len(), 30);
}
