//! Telnyx Messaging v2 end to end: Ed25519-signed inbound webhooks routed to the tenant (and
//! refused when forged or replayed), a reply through a Telnyx API fake, and the status
//! webhook that moves it to delivered.

use base64::Engine;
use omni_core::providers::telnyx;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const API_KEY: &str = "telnyx-api-key-0001-secret";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";

/// A fresh key pair: (base64 seed for the CLI, signing key).
fn key_pair() -> (String, telnyx::SigningKey) {
    let seed: [u8; 32] = *uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .copied()
        .collect::<Vec<u8>>()
        .first_chunk()
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(seed);
    let key = telnyx::signing_key(&b64).unwrap();
    (b64, key)
}

fn event(event_type: &str, payload: Value) -> String {
    json!({"data": {"event_type": event_type, "id": uuid::Uuid::new_v4().to_string(),
        "occurred_at": "2025-01-01T12:00:00.000+00:00", "record_type": "event", "payload": payload},
        "meta": {"attempt": 1, "delivered_to": "https://hooks.example.com/telnyx"}})
    .to_string()
}

fn inbound(id: &str, text: &str) -> String {
    event(
        "message.received",
        json!({"direction": "inbound", "id": id, "record_type": "message", "type": "SMS",
            "from": {"phone_number": CONTACT, "carrier": "Example Wireless", "line_type": "Wireless"},
            "to": [{"phone_number": NUMBER, "status": "webhook_delivered"}],
            "text": text, "media": [], "received_at": "2025-01-01T12:00:00.000+00:00"}),
    )
}

/// Posts `body` to `path` signed with `key` at `timestamp` (Unix seconds).
async fn post_signed(
    s: &Server,
    path: &str,
    key: &telnyx::SigningKey,
    timestamp: i64,
    body: &str,
) -> (u16, String) {
    let ts = timestamp.to_string();
    let resp = s
        .http
        .post(s.url(path))
        .header("content-type", "application/json")
        .header(telnyx::TIMESTAMP_HEADER, &ts)
        .header(
            telnyx::SIGNATURE_HEADER,
            telnyx::signature(key, &ts, body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn telnyx_signed_inbound_reply_and_delivery_status() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/messages"))
        .and(header("authorization", format!("Bearer {API_KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "record_type": "message", "direction": "outbound", "id": "tx-out-0001", "type": "SMS",
            "from": {"phone_number": NUMBER}, "to": [{"phone_number": CONTACT, "status": "queued"}]}})))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_TELNYX_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    let (seed, signing) = key_pair();
    let config = json!({"api_key": API_KEY, "public_key": telnyx::public_key_base64(&signing)});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/telnyx",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, listed) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    assert!(!listed.to_string().contains(API_KEY), "{listed}");
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "telnyx", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // Forged (another key), replayed (six minutes old) and future-dated webhooks: refused.
    let now = chrono::Utc::now().timestamp();
    let body = inbound("tx-in-0001", "Smoke on 5th street");
    let (_, stranger) = key_pair();
    assert_eq!(
        post_signed(&s, "/webhooks/telnyx", &stranger, now, &body)
            .await
            .0,
        401
    );
    assert_eq!(
        post_signed(&s, "/webhooks/telnyx", &signing, now - 360, &body)
            .await
            .0,
        401
    );
    assert_eq!(
        post_signed(&s, "/webhooks/telnyx", &signing, now + 360, &body)
            .await
            .0,
        401
    );
    let unsigned = s
        .http
        .post(s.url("/webhooks/telnyx"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    assert_eq!(
        post_signed(&s, "/webhooks/telnyx", &signing, now, &body).await,
        (200, "ok".to_string())
    );
    s.sole_sms_conversation(&key, CONTACT, NUMBER, "Smoke on 5th street")
        .await;

    // The CLI signs the same way with a private key seed.
    s.cli_webhook_send(
        &key,
        ("telnyx", "north", &seed),
        (CONTACT, NUMBER, "Second message"),
    )
    .await;

    // The reply goes out through Telnyx with the documented request shape.
    let id = s.send_sms(&key, CONTACT, "Units are on the way").await;
    let sent = s.message_reaching(&key, &id, "sent").await;
    assert_eq!(sent["provider"], "telnyx");
    assert_eq!(sent["provider_message_id"], "tx-out-0001");
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get("content-type").unwrap(),
        "application/json"
    );
    let sent_body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        sent_body,
        json!({"from": NUMBER, "to": CONTACT, "text": "Units are on the way",
            "webhook_url": format!("{}/webhooks/telnyx/status", s.base)})
    );

    // Telnyx reports it sent, then delivered, at the per-message webhook URL.
    let status = |word: &str, event_type: &str| {
        event(
            event_type,
            json!({"direction": "outbound", "id": "tx-out-0001", "type": "SMS",
                "from": {"phone_number": NUMBER}, "to": [{"phone_number": CONTACT, "status": word}],
                "text": "Units are on the way", "errors": []}),
        )
    };
    let now = chrono::Utc::now().timestamp();
    for (word, event_type) in [("sent", "message.sent"), ("delivered", "message.finalized")] {
        let body = status(word, event_type);
        assert_eq!(
            post_signed(&s, "/webhooks/telnyx/status", &signing, now, &body).await,
            (200, "ok".to_string())
        );
    }
    let delivered = s.message_reaching(&key, &id, "delivered").await;
    let last = delivered["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "delivered");
    assert_eq!(last["source"], "telnyx");
}
