//! Outbound delivery against carrier fakes: what the carrier receives, retries, Retry-After,
//! permanent failures, dead letters, idempotency, status callbacks, carrier migration.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{Server, ACCOUNT_SID};

const TOKEN: &str = "12345abcdef67890fedcba0987654321";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

fn form(req: &Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&req.body).unwrap()
}

fn field(req: &Request, name: &str) -> Vec<String> {
    form(req)
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

async fn twilio_fake() -> MockServer {
    MockServer::start().await
}

fn accepted(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_json(json!({"sid": sid, "status": "queued", "account_sid": ACCOUNT_SID}))
}

async fn server_with(fake: &MockServer, extra: &[(&str, &str)]) -> (Server, String) {
    let mut env = vec![("OMNI_TWILIO_API_URL", fake.uri())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start(&env).await;
    let key = s.twilio_tenant("north", TOKEN, NUMBER).await;
    (s, key)
}

async fn wait_status(s: &Server, key: &str, id: &str, want: &str) -> Value {
    s.eventually(15, &format!("message {id} to become {want}"), || async {
        let (_, m) = s
            .api(key, Method::GET, &format!("/v1/messages/{id}"), None)
            .await;
        (m["status"] == want).then_some(m)
    })
    .await
}

#[tokio::test]
async fn the_carrier_receives_exactly_what_the_contract_promises() {
    let fake = twilio_fake().await;
    Mock::given(method("POST")).and(path(MESSAGES_PATH)).and(header("authorization", "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjoxMjM0NWFiY2RlZjY3ODkwZmVkY2JhMDk4NzY1NDMyMQ=="))
        .respond_with(accepted("SM00000000000000000000000000000001"))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let mut feed = s.ws(&key).await;
    let (st, m) = s
        .api(&key, Method::POST, "/v1/messages", Some(json!({"channel": "mms", "to": "(555) 555-0123", "body": "Photo of the scene", "media_urls": ["https://example.org/a.jpg", "https://example.org/b.png"]})))
        .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["to"], CONTACT, "normalised with the tenant's region");
    let id = m["id"].as_str().unwrap().to_string();
    let sent = wait_status(&s, &key, &id, "sent").await;
    assert_eq!(sent["provider"], "twilio");
    assert_eq!(
        sent["provider_message_id"],
        "SM00000000000000000000000000000001"
    );
    let statuses: Vec<&str> = sent["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "sent"]);

    let requests = fake.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(field(r, "To"), [CONTACT]);
    assert_eq!(field(r, "From"), [NUMBER]);
    assert_eq!(field(r, "Body"), ["Photo of the scene"]);
    assert_eq!(
        field(r, "MediaUrl"),
        ["https://example.org/a.jpg", "https://example.org/b.png"]
    );
    assert_eq!(
        field(r, "StatusCallback"),
        [format!("{}/webhooks/twilio/status", s.base)]
    );

    let pushed = feed
        .next_of("message.status", 10)
        .await
        .expect("status pushed");
    assert_eq!(pushed["message"]["id"], id.as_str());
}

#[tokio::test]
async fn whatsapp_sends_carry_the_channel_prefix() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted("SM00000000000000000000000000000002"))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "whatsapp", "to": CONTACT, "body": "hola"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    wait_status(&s, &key, m["id"].as_str().unwrap(), "sent").await;
    let r = &fake.received_requests().await.unwrap()[0];
    assert_eq!(field(r, "To"), [format!("whatsapp:{CONTACT}")]);
    assert_eq!(field(r, "From"), [format!("whatsapp:{NUMBER}")]);
}

#[tokio::test]
async fn transient_errors_are_retried_honouring_retry_after() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(
                    json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
                ),
        )
        .up_to_n_times(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted("SM00000000000000000000000000000003"))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let (_, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "retry me"})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    wait_status(&s, &key, &id, "sent").await;
    let requests = fake.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3, "500, 429, then success");
    // Retry-After: 1 was honoured between the 429 and the next attempt (backoff alone is <= 400 ms here).
    let log = s.log_text();
    assert!(
        log.contains("transient carrier error, retrying"),
        "retries are logged"
    );
    let gaps: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("transient carrier error, retrying"))
        .filter_map(|l| l.split("delay_ms=").nth(1))
        .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert!(
        gaps[1] >= 1000,
        "the 429's Retry-After of 1 s sets the delay: {gaps:?}"
    );
}

#[tokio::test]
async fn permanent_errors_fail_at_once_with_the_carrier_code() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400})))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let (_, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "x"})),
        )
        .await;
    let failed = wait_status(&s, &key, m["id"].as_str().unwrap(), "failed").await;
    assert_eq!(failed["error_code"], "21211");
    assert!(failed["error_message"]
        .as_str()
        .unwrap()
        .contains("not a valid phone number"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.received_requests().await.unwrap().len(),
        1,
        "a permanent error is not retried"
    );
}

#[tokio::test]
async fn the_retry_budget_ends_in_a_dead_letter_with_the_reason() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[("OMNI_RETRY_MAX_ATTEMPTS", "3")]).await;
    let (_, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "x"})),
        )
        .await;
    let failed = wait_status(&s, &key, m["id"].as_str().unwrap(), "failed").await;
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .contains("retry budget of 3 attempts exhausted"),
        "{failed}"
    );
    assert_eq!(fake.received_requests().await.unwrap().len(), 3);
    // The dead letter is kept in the database with its reason, for an operator.
    let db = omni_local::SqliteBackend::open(
        &s.db(),
        omni_local::MasterKey::from_base64(crate::harness::MASTER_KEY).unwrap(),
    )
    .unwrap();
    // The message is marked failed first, then its job moves to the dead letters.
    let mut dead = db.dead_letters().await.unwrap();
    for _ in 0..100 {
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        dead = db.dead_letters().await.unwrap();
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].1.contains("retry budget of 3 attempts exhausted"),
        "{dead:?}"
    );
}

#[tokio::test]
async fn an_idempotency_key_never_sends_twice() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted("SM00000000000000000000000000000004"))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let body = json!({"channel": "sms", "to": CONTACT, "body": "once"});
    let first = s
        .http
        .post(s.url("/v1/messages"))
        .bearer_auth(&key)
        .header("idempotency-key", "abc-1")
        .json(&body);
    let (st1, m1) = crate::harness::send(first).await;
    let second = s
        .http
        .post(s.url("/v1/messages"))
        .bearer_auth(&key)
        .header("idempotency-key", "abc-1")
        .json(&body);
    let (st2, m2) = crate::harness::send(second).await;
    assert_eq!((st1, st2), (202, 202));
    assert_eq!(m1["id"], m2["id"]);
    let mut with_body_key = body.clone();
    with_body_key["idempotency_key"] = json!("abc-1");
    let (_, m3) = s
        .api(&key, Method::POST, "/v1/messages", Some(with_body_key))
        .await;
    assert_eq!(m3["id"], m1["id"]);
    wait_status(&s, &key, m1["id"].as_str().unwrap(), "sent").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn status_callbacks_apply_monotonically_whatever_their_order() {
    let fake = twilio_fake().await;
    let sid = "SM00000000000000000000000000000005";
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted(sid))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let mut feed = s.ws(&key).await;
    let (_, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "x"})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    wait_status(&s, &key, &id, "sent").await;
    for status in ["delivered", "sent", "delivered", "sending"] {
        let (st, _) = s
            .twilio_webhook(
                "/webhooks/twilio/status",
                &[
                    ("MessageSid", sid),
                    ("MessageStatus", status),
                    ("From", NUMBER),
                    ("To", CONTACT),
                    ("AccountSid", ACCOUNT_SID),
                ],
                TOKEN,
            )
            .await;
        assert_eq!(st, 200);
    }
    let delivered = wait_status(&s, &key, &id, "delivered").await;
    let pushed = feed.next_of("message.status", 10).await.expect("pushed");
    assert!(pushed["message"]["id"] == id.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, after) = s
        .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
        .await;
    assert_eq!(
        after["status"], "delivered",
        "late 'sent'/'sending' never move it back"
    );
    let statuses: Vec<&str> = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["queued", "sent", "delivered"],
        "each transition recorded once"
    );
    assert_eq!(
        delivered["events"].as_array().unwrap().last().unwrap()["source"],
        "twilio"
    );
    // A failure after delivery is ignored; undelivered before delivery is terminal.
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio/status",
            &[
                ("MessageSid", sid),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30003"),
                ("From", NUMBER),
                ("To", CONTACT),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, after) = s
        .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
        .await;
    assert_eq!(after["status"], "delivered");
}

#[tokio::test]
async fn moving_a_number_to_voipms_sends_the_next_message_through_voipms() {
    let twilio = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted("SM00000000000000000000000000000006"))
        .mount(&twilio)
        .await;
    let voipms = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/rest.php"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "success", "sms": 23456})),
        )
        .mount(&voipms)
        .await;
    let voipms_url = format!("{}/api/v1/rest.php", voipms.uri());
    let (s, key) = server_with(&twilio, &[("OMNI_VOIPMS_API_URL", &voipms_url)]).await;

    let (_, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "via twilio"})),
        )
        .await;
    wait_status(&s, &key, m["id"].as_str().unwrap(), "sent").await;

    let (st, b) = s.admin(Method::PUT, "/v1/admin/tenants/north/providers/voipms", Some(json!({"api_username": "ops@example.org", "api_password": "pw-secret-2", "webhook_secret": "hook-secret-0000002"}))).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "voipms", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let (_, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "via voipms"})),
        )
        .await;
    let sent = wait_status(&s, &key, m["id"].as_str().unwrap(), "sent").await;
    assert_eq!(sent["provider"], "voipms");
    assert_eq!(sent["provider_message_id"], "23456");
    assert_eq!(
        twilio.received_requests().await.unwrap().len(),
        1,
        "Twilio got only the first"
    );
    let v = voipms.received_requests().await.unwrap();
    assert_eq!(v.len(), 1);
    let params = form(&v[0]);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("method"), Some("sendSMS"));
    assert_eq!(get("did"), Some("5555550100"));
    assert_eq!(get("dst"), Some("5555550123"));
    assert_eq!(get("message"), Some("via voipms"));
}

#[tokio::test]
async fn platform_credentials_serve_only_tenants_without_their_own() {
    let fake = twilio_fake().await;
    let platform_path = "/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Messages.json";
    Mock::given(method("POST"))
        .and(path(platform_path))
        .respond_with(accepted("SM000000000000000000000000000000a1"))
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted("SM000000000000000000000000000000a2"))
        .mount(&fake)
        .await;
    let platform_token = "platform-token-0000000000000000";
    let s = Server::start(&[
        ("OMNI_TWILIO_API_URL", &fake.uri()),
        ("TWILIO_ACCOUNT_SID", "ACffffffffffffffffffffffffffffffff"),
        ("TWILIO_AUTH_TOKEN", platform_token),
    ])
    .await;

    // "west" has no Twilio configuration of its own: the platform's is used.
    let west = s.tenant("west").await;
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/west/numbers/+15555550300",
            Some(json!({"provider": "twilio", "channels": ["sms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, m) = s
        .api(
            &west,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "via platform"})),
        )
        .await;
    wait_status(&s, &west, m["id"].as_str().unwrap(), "sent").await;
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &[
                ("MessageSid", "SMpf1"),
                ("From", CONTACT),
                ("To", "+15555550300"),
                ("Body", "hi"),
            ],
            platform_token,
        )
        .await;
    assert_eq!(
        st, 200,
        "a webhook signed with the platform token is accepted for west"
    );

    // "north" has its own: the platform's never masks it.
    let north = s.twilio_tenant("north", TOKEN, NUMBER).await;
    let (_, m) = s
        .api(
            &north,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": CONTACT, "body": "via own"})),
        )
        .await;
    wait_status(&s, &north, m["id"].as_str().unwrap(), "sent").await;
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &[
                ("MessageSid", "SMpf2"),
                ("From", CONTACT),
                ("To", NUMBER),
                ("Body", "hi"),
            ],
            platform_token,
        )
        .await;
    assert_eq!(
        st, 401,
        "the platform token does not open a tenant with its own"
    );

    let paths: Vec<String> = fake
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(paths, [platform_path, MESSAGES_PATH]);
}

#[tokio::test]
async fn the_sweeper_sends_a_message_that_was_stored_but_never_queued() {
    use omni_core::ports::MessageStore;
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted("SM000000000000000000000000000000b1"))
        .mount(&fake)
        .await;
    let mut s = Server::start(&[
        ("OMNI_TWILIO_API_URL", &fake.uri()),
        ("OMNI_SWEEP_AFTER_SECS", "1"),
    ])
    .await;
    let key = s.twilio_tenant("north", TOKEN, NUMBER).await;
    s.kill9();

    // What a crash between "persisted as queued" and "handed to the worker" leaves behind.
    let db = omni_local::SqliteBackend::open(
        &s.db(),
        omni_local::MasterKey::from_base64(crate::harness::MASTER_KEY).unwrap(),
    )
    .unwrap();
    let tenant = omni_core::domain::TenantId::parse("north").unwrap();
    let new = omni_core::model::NewOutbound {
        id: uuid::Uuid::now_v7(),
        channel: omni_core::domain::Channel::Sms,
        from: omni_core::domain::Address::from_stored(NUMBER).unwrap(),
        to: omni_core::domain::Address::from_stored(CONTACT).unwrap(),
        body: Some("stranded".into()),
        media: vec![],
        template: None,
        subject: None,
        idempotency_key: None,
        at: chrono::Utc::now(),
        sent_by: None,
        priority: Default::default(),
        send_at: None,
        fallback: Vec::new(),
    };
    let (stored, created) = db.create_outbound(&tenant, &new).await.unwrap();
    assert!(created);
    drop(db);

    let s = s.restart().await;
    let sent = wait_status(&s, &key, &stored.id.to_string(), "sent").await;
    assert_eq!(
        sent["provider_message_id"],
        "SM000000000000000000000000000000b1"
    );
    let bodies: Vec<String> = fake
        .received_requests()
        .await
        .unwrap()
        .iter()
        .flat_map(|r| field(r, "Body"))
        .collect();
    assert_eq!(bodies, ["stranded"]);
}

#[tokio::test]
async fn a_batch_answers_each_item_in_order_and_an_idempotency_key_covers_it() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(|req: &Request| accepted(&format!("SM{}", field(req, "Body")[0])))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let batch = json!({"messages": [
        {"channel": "sms", "to": CONTACT, "body": "first"},
        {"channel": "sms", "to": "not a number", "body": "refused"},
        {"to": CONTACT, "body": "no channel"},
        {"channel": "sms", "to": "+15555550124", "body": "second"},
    ]});
    let post = |body: Value, idempotency_key: Option<&str>| {
        let mut req = s
            .http
            .post(s.url("/v1/messages/batch"))
            .bearer_auth(&key)
            .json(&body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        crate::harness::send(req)
    };
    let (st, first) = post(batch.clone(), Some("batch-1")).await;
    assert_eq!(st, 200, "{first}");
    let results = first["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{first}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "{first}");
    }
    assert_eq!(
        results[1]["error"]["code"], "invalid_phone_number",
        "{first}"
    );
    assert_eq!(results[2]["error"]["code"], "invalid_request", "{first}");
    assert!(
        results[2]["error"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("messages[2]") && e.contains("channel")),
        "{first}"
    );
    let ids: Vec<&str> = [0, 3]
        .iter()
        .map(|&i| results[i]["id"].as_str().unwrap())
        .collect();
    // The good items go out to the carrier like any send.
    for id in &ids {
        wait_status(&s, &key, id, "sent").await;
    }
    let sent: Vec<String> = fake
        .received_requests()
        .await
        .unwrap()
        .iter()
        .flat_map(|r| field(r, "Body"))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.contains(&"first".to_string()) && sent.contains(&"second".to_string()));

    // The same batch under the same key: the same messages, nothing sent twice.
    let (st, again) = post(batch.clone(), Some("batch-1")).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["results"][0]["id"], results[0]["id"], "{again}");
    assert_eq!(again["results"][3]["id"], results[3]["id"], "{again}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received_requests().await.unwrap().len(), 2);
    // Without a key, a new batch is new messages.
    let (_, fresh) = post(json!({"messages": [batch["messages"][0]]}), None).await;
    assert_ne!(fresh["results"][0]["id"], results[0]["id"], "{fresh}");

    // The batch as a whole: 1 to 1,000 messages, and JSON with a messages array.
    for body in [
        json!({"messages": []}),
        json!({"messages": vec![json!({"channel": "sms", "to": CONTACT, "body": "x"}); 1001]}),
        json!({"message": []}),
    ] {
        let (st, b) = post(body, None).await;
        assert_eq!(st, 400, "{b}");
        assert_eq!(b["code"], "invalid_request", "{b}");
    }
    let (st, b) = crate::harness::send(
        s.http
            .post(s.url("/v1/messages/batch"))
            .json(&json!({"messages": [batch["messages"][0]]})),
    )
    .await;
    assert_eq!(st, 401, "{b}");
}

#[tokio::test]
async fn supervisors_search_export_and_retry_in_the_delivery_log() {
    let fake = twilio_fake().await;
    // The first send is refused for good, the retry accepted.
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400})))
        .up_to_n_times(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(accepted("SMretried"))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let id = s.send_sms(&key, CONTACT, "=Unit 12, on the way").await;
    let failed = wait_status(&s, &key, &id, "failed").await;
    assert_eq!(failed["error_code"], "21610");
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &[
                ("MessageSid", "SMlog1"),
                ("From", "+15555550199"),
                ("To", NUMBER),
                ("Body", "Fire at 12 Main St"),
                ("NumMedia", "0"),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(st, 200);
    let search = |query: &'static str| {
        let (s, key) = (&s, &key);
        async move {
            let (st, b) = s
                .api(key, Method::GET, &format!("/v1/messages{query}"), None)
                .await;
            assert_eq!(st, 200, "{query}: {b}");
            b["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    s.eventually(10, "the inbound message in the log", || async {
        (search("").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        search("?status=failed&channel=sms&direction=outbound").await,
        ["=Unit 12, on the way"]
    );
    assert_eq!(search("?direction=inbound").await, ["Fire at 12 Main St"]);
    assert_eq!(search("?carrier=twilio").await, ["Fire at 12 Main St"]);
    assert!(search("?carrier=telnyx").await.is_empty());
    assert_eq!(search("?q=MAIN%20st").await, ["Fire at 12 Main St"]);
    // `+` unescaped in a query string reads as a space: the number still matches.
    assert_eq!(search("?from=+15555550199").await, ["Fire at 12 Main St"]);
    assert_eq!(search("?to=%2B15555550123").await, ["=Unit 12, on the way"]);
    assert!(search("?since=2099-01-01T00:00:00Z").await.is_empty());
    assert_eq!(search("?until=2099-01-01T00:00:00Z&limit=1").await.len(), 1);
    for bad in [
        "?status=lost",
        "?since=yesterday",
        "?limit=0",
        "?cursor=nope",
        "?to=not-a-number",
        "?colour=red",
    ] {
        let (st, b) = s
            .api(&key, Method::GET, &format!("/v1/messages{bad}"), None)
            .await;
        assert_eq!(st, 400, "{bad}: {b}");
        assert_eq!(b["code"], "invalid_request", "{bad}: {b}");
    }

    // The same search as CSV: a header, one row per message, formulas defused.
    let csv = s
        .http
        .get(s.url("/v1/messages?direction=outbound"))
        .bearer_auth(&key)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("id,created_at,updated_at,direction,channel,status,carrier"));
    assert!(lines[1].starts_with(&id), "{text}");
    assert!(
        lines[1].contains(",outbound,sms,failed,")
            && lines[1].contains("\"'=Unit 12, on the way\""),
        "{text}"
    );

    // A dispatcher neither searches nor retries.
    let (_, dispatcher) = s
        .admin(
            Method::POST,
            "/v1/admin/tenants/north/api-keys",
            Some(json!({"name": "console", "role": "dispatcher"})),
        )
        .await;
    let dispatcher = dispatcher["key"].as_str().unwrap();
    let (st, b) = s.api(dispatcher, Method::GET, "/v1/messages", None).await;
    assert_eq!((st, b["code"].as_str()), (403, Some("forbidden")), "{b}");
    let retry_path = format!("/v1/messages/{id}/retry");
    let (st, _) = s.api(dispatcher, Method::POST, &retry_path, None).await;
    assert_eq!(st, 403);

    // Retry: the same message goes out again and is sent this time.
    let (st, m) = s.api(&key, Method::POST, &retry_path, None).await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(
        (m["id"].as_str(), m["status"].as_str()),
        (Some(id.as_str()), Some("queued"))
    );
    let sent = wait_status(&s, &key, &id, "sent").await;
    assert_eq!(sent["provider_message_id"], "SMretried");
    assert_eq!(sent["error_code"], Value::Null);
    let history: Vec<&str> = sent["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["queued", "failed", "queued", "sent"]);
    assert_eq!(fake.received_requests().await.unwrap().len(), 2);
    // Only failed or undelivered messages are retried; unknown ids are 404.
    let (st, b) = s.api(&key, Method::POST, &retry_path, None).await;
    assert_eq!((st, b["code"].as_str()), (409, Some("conflict")), "{b}");
    let (st, _) = s
        .api(
            &key,
            Method::POST,
            &format!("/v1/messages/{}/retry", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (_, audit) = s
        .api(&key, Method::GET, "/v1/audit?action=message.retry", None)
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
}

#[tokio::test]
async fn the_csv_export_has_no_row_limit() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(|req: &Request| accepted(&format!("SM{}", field(req, "Body")[0])))
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    // More rows than one page of the export reads from the store (500).
    let messages: Vec<Value> = (0..1_000)
        .map(|i| json!({"channel": "sms", "to": CONTACT, "body": format!("n{i}")}))
        .collect();
    let (st, b) = crate::harness::send(
        s.http
            .post(s.url("/v1/messages/batch"))
            .bearer_auth(&key)
            .json(&json!({ "messages": messages })),
    )
    .await;
    assert_eq!(st, 200);
    assert!(b["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["id"].is_string()));
    let text = s
        .http
        .get(s.url("/v1/messages"))
        .bearer_auth(&key)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bodies: std::collections::BTreeSet<&str> = text
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(10).unwrap())
        .collect();
    assert_eq!(text.lines().count(), 1_001);
    assert_eq!(bodies.len(), 1_000, "every message once");
}

#[tokio::test]
async fn the_webhook_log_says_what_was_accepted_and_why_the_rest_was_refused() {
    let fake = twilio_fake().await;
    let (s, key) = server_with(&fake, &[]).await;
    let inbound = |sid: &'static str, to: &'static str| {
        [
            ("MessageSid", sid),
            ("From", CONTACT),
            ("To", to),
            ("Body", "Fire at 12 Main St"),
            ("NumMedia", "0"),
        ]
    };
    let (st, _) = s
        .twilio_webhook("/webhooks/twilio", &inbound("SMok", NUMBER), TOKEN)
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMforged", NUMBER),
            "00000000000000000000000000000000",
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMlost", "+15555550999"),
            TOKEN,
        )
        .await;
    assert_eq!(st, 404);

    let (st, log) = s.api(&key, Method::GET, "/v1/webhook-events", None).await;
    assert_eq!(st, 200, "{log}");
    let items = log["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "only the webhooks that named the tenant's number: {log}"
    );
    assert_eq!(
        (items[0]["result"].as_str(), items[0]["reason"].as_str()),
        (Some("rejected"), Some("bad_signature")),
        "{log}"
    );
    assert_eq!(
        (items[1]["result"].as_str(), items[1]["carrier"].as_str()),
        (Some("accepted"), Some("twilio")),
        "{log}"
    );
    assert!(
        items[1]["body"]
            .as_str()
            .unwrap()
            .contains("MessageSid=SMok"),
        "admins see bodies: {log}"
    );
    let (_, rejected) = s
        .api(
            &key,
            Method::GET,
            "/v1/webhook-events?result=rejected&carrier=twilio",
            None,
        )
        .await;
    assert_eq!(rejected["items"].as_array().unwrap().len(), 1, "{rejected}");
    let (_, none) = s
        .api(&key, Method::GET, "/v1/webhook-events?carrier=telnyx", None)
        .await;
    assert_eq!(none["items"], json!([]));
    let (st, b) = s
        .api(&key, Method::GET, "/v1/webhook-events?result=maybe", None)
        .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );

    // A supervisor reads the log without the bodies; a dispatcher not at all.
    let role_key = |role: &'static str| {
        let s = &s;
        async move {
            let (_, k) = s
                .admin(
                    Method::POST,
                    "/v1/admin/tenants/north/api-keys",
                    Some(json!({"name": role, "role": role})),
                )
                .await;
            k["key"].as_str().unwrap().to_owned()
        }
    };
    let (st, log) = s
        .api(
            &role_key("supervisor").await,
            Method::GET,
            "/v1/webhook-events",
            None,
        )
        .await;
    assert_eq!(st, 200, "{log}");
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("body").is_some_and(Value::is_null)),
        "{log}"
    );
    let (st, _) = s
        .api(
            &role_key("dispatcher").await,
            Method::GET,
            "/v1/webhook-events",
            None,
        )
        .await;
    assert_eq!(st, 403);

    // The webhook to a number nobody holds is the platform's to see.
    let (st, unattributed) = s
        .admin(
            Method::GET,
            "/v1/admin/webhook-events?result=rejected",
            None,
        )
        .await;
    assert_eq!(st, 200, "{unattributed}");
    let lost = &unattributed["items"][0];
    assert_eq!(lost["reason"], "unknown_number", "{unattributed}");
    assert!(
        lost["body"].as_str().unwrap().contains("SMlost"),
        "{unattributed}"
    );
    let (st, _) = s
        .api(&key, Method::GET, "/v1/admin/webhook-events", None)
        .await;
    assert_eq!(st, 403, "a tenant key is not the platform's");
}

#[tokio::test]
async fn auto_replies_greet_answer_keywords_and_say_when_closed_once_per_cooldown() {
    let fake = twilio_fake().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(|req: &Request| {
            let to = field(req, "To")[0].clone();
            let n = field(req, "Body")[0].len();
            accepted(&format!("SM{}{n}", to.trim_start_matches('+')))
        })
        .mount(&fake)
        .await;
    let (s, key) = server_with(&fake, &[]).await;
    let all_week: serde_json::Map<String, Value> =
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .map(|d| (d.to_string(), json!([["00:00", "24:00"]])))
            .collect();
    let settings = |holidays: Value| {
        json!({
            "business_hours": {"timezone": "America/Toronto", "hours": all_week, "holidays": holidays},
            "outside_hours_reply": "We are closed. In an emergency call 911.",
            "greeting": "Welcome to North County dispatch.",
            "keyword_rules": [{"match": "exact", "keyword": "address", "reply": "12 Main St"}],
        })
    };
    let (st, saved) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/auto-replies",
            Some(settings(json!([]))),
        )
        .await;
    assert_eq!(st, 200, "{saved}");
    assert_eq!(saved["cooldown_minutes"], 60, "the default: {saved}");
    let (_, read) = s
        .admin(Method::GET, "/v1/admin/tenants/north/auto-replies", None)
        .await;
    assert_eq!(read, saved);

    let mut sid = 0;
    let mut text = |from: &str, body: &str| {
        sid += 1;
        let (s, sid, from, body) = (&s, format!("SMauto{sid}"), from.to_owned(), body.to_owned());
        async move {
            let (st, _) = s
                .twilio_webhook(
                    "/webhooks/twilio",
                    &[
                        ("MessageSid", sid.as_str()),
                        ("From", from.as_str()),
                        ("To", NUMBER),
                        ("Body", body.as_str()),
                        ("NumMedia", "0"),
                    ],
                    TOKEN,
                )
                .await;
            assert_eq!(st, 200);
        }
    };
    let replies_to = |contact: &'static str| {
        let fake = &fake;
        async move {
            fake.received_requests()
                .await
                .unwrap()
                .iter()
                .filter(|r| field(r, "To")[0] == contact)
                .map(|r| field(r, "Body")[0].clone())
                .collect::<Vec<_>>()
        }
    };
    let wait_replies = |contact: &'static str, n: usize| {
        let s = &s;
        async move {
            s.eventually(10, &format!("{n} auto-replies to {contact}"), || async {
                let got = replies_to(contact).await;
                (got.len() >= n).then_some(got)
            })
            .await
        }
    };

    // A new conversation is greeted, once: the next message is within the cooldown.
    text("+15555550141", "hello").await;
    assert_eq!(
        wait_replies("+15555550141", 1).await,
        ["Welcome to North County dispatch."]
    );
    text("+15555550141", "are you there?").await;
    // A keyword rule beats the greeting (case and blanks ignored).
    text("+15555550142", "  Address ").await;
    assert_eq!(wait_replies("+15555550142", 1).await, ["12 Main St"]);
    // STOP keeps its meaning, and an opted-out contact gets no auto-reply.
    text("+15555550143", "STOP").await;
    // Closed today (a holiday in Toronto): the outside-hours reply.
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap())
        .date_naive();
    let holidays = json!([
        today - chrono::Days::new(1),
        today,
        today + chrono::Days::new(1)
    ]);
    let (st, _) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/auto-replies",
            Some(settings(holidays)),
        )
        .await;
    assert_eq!(st, 200);
    text("+15555550144", "hello").await;
    text("+15555550143", "hello").await;
    assert_eq!(
        wait_replies("+15555550144", 1).await,
        ["We are closed. In an emergency call 911."]
    );
    // Whatever was going to happen has: nothing more went out.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        replies_to("+15555550141").await.len(),
        1,
        "one per cooldown"
    );
    assert!(
        replies_to("+15555550143").await.is_empty(),
        "never to an opted-out contact"
    );

    // Marked as auto-replies in the conversation and the audit log.
    let (_, log) = s
        .api(
            &key,
            Method::GET,
            "/v1/messages?direction=outbound&to=%2B15555550142",
            None,
        )
        .await;
    assert_eq!(log["items"][0]["sent_by"]["type"], "auto_reply", "{log}");
    let (_, audit) = s
        .api(
            &key,
            Method::GET,
            "/v1/audit?action=message.auto_reply",
            None,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(3), "{audit}");

    // Settings that do not hold are refused, naming the field.
    for (body, names) in [
        (
            json!({"business_hours": {"timezone": "Mars/Base", "hours": {}}}),
            "timezone",
        ),
        (
            json!({"keyword_rules": [{"match": "exact", "keyword": " ", "reply": "x"}]}),
            "keyword_rules[0]",
        ),
        (
            json!({"greeting": {"template": {"name": "welcome"}}}),
            "template",
        ),
        (json!({"greetings": "hi"}), "greetings"),
    ] {
        let (st, b) = s
            .admin(
                Method::PUT,
                "/v1/admin/tenants/north/auto-replies",
                Some(body),
            )
            .await;
        assert_eq!(st, 400, "{b}");
        assert!(b["error"].as_str().unwrap().contains(names), "{b}");
    }
    let (st, _) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/nobody/auto-replies",
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404);
}
