//! Sinch SMS end to end: HMAC-signed inbound callbacks routed to the tenant (refused, with
//! nothing stored, when forged, unsigned or replayed), a reply through a Sinch API fake as a
//! one-recipient batch, and the recipient delivery report that moves it to delivered.

use omni_core::providers::sinch;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const PLAN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const API_TOKEN: &str = "sinch-api-token-0001-secret";
const APP_SECRET: &str = "sinch-app-secret-0001-secret";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";

fn mo_text(id: &str, text: &str) -> String {
    json!({"id": id, "type": "mo_text", "from": CONTACT.trim_start_matches('+'),
        "to": NUMBER.trim_start_matches('+'), "body": text, "operator_id": "310260",
        "received_at": "2026-11-30T10:00:00.000Z"})
    .to_string()
}

/// Posts `body` to `path` signed with `secret` at `timestamp` (Unix seconds).
async fn post_signed(
    s: &Server,
    path: &str,
    secret: &str,
    timestamp: i64,
    body: &str,
) -> (u16, Value) {
    let ts = timestamp.to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let resp = s
        .http
        .post(s.url(path))
        .header("content-type", "application/json")
        .header(sinch::NONCE_HEADER, &nonce)
        .header(sinch::TIMESTAMP_HEADER, &ts)
        .header(
            sinch::SIGNATURE_HEADER,
            sinch::signature(secret, body.as_bytes(), &nonce, &ts),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn sinch_signed_inbound_reply_and_delivery_report() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/xms/v1/{PLAN}/batches")))
        .and(header(
            "authorization",
            format!("Bearer {API_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "01JDSINCHE2E00000000000001", "to": [CONTACT.trim_start_matches('+')],
            "from": NUMBER.trim_start_matches('+'), "canceled": false, "type": "mt_text",
            "body": "Units are on the way", "delivery_report": "per_recipient"})))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_SINCH_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    let config = json!({"service_plan_id": PLAN, "api_token": API_TOKEN, "app_secret": APP_SECRET});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/sinch",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, listed) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    let shown = listed.to_string();
    assert!(
        !shown.contains(API_TOKEN) && !shown.contains(APP_SECRET),
        "{listed}"
    );
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "sinch", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // Forged, replayed (six minutes old), future-dated and unsigned callbacks: a 401 JSON
    // error, nothing stored.
    let now = chrono::Utc::now().timestamp();
    let body = mo_text("01JDSINCHE2EIN000000000001", "Smoke on 5th street");
    for (secret, at) in [
        ("not-the-app-secret", now),
        (APP_SECRET, now - 360),
        (APP_SECRET, now + 360),
    ] {
        let (st, err) = post_signed(&s, "/webhooks/sinch", secret, at, &body).await;
        assert_eq!(st, 401, "{err}");
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{err}");
    }
    let unsigned = s
        .http
        .post(s.url("/webhooks/sinch"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(l["items"], json!([]), "a refused callback stored something");

    assert_eq!(
        post_signed(&s, "/webhooks/sinch", APP_SECRET, now, &body).await,
        (200, Value::String("ok".into()))
    );
    s.sole_sms_conversation(&key, CONTACT, NUMBER, "Smoke on 5th street")
        .await;

    // The CLI signs the same way with the app secret.
    s.cli_webhook_send(
        &key,
        ("sinch", "north", APP_SECRET),
        (CONTACT, NUMBER, "Second message"),
    )
    .await;

    // The reply goes out as a one-recipient batch with the documented request shape.
    let id = s.send_sms(&key, CONTACT, "Units are on the way").await;
    let sent = s.message_reaching(&key, &id, "sent").await;
    assert_eq!(sent["provider"], "sinch");
    assert_eq!(sent["provider_message_id"], "01JDSINCHE2E00000000000001");
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent_body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        sent_body,
        json!({"to": [CONTACT], "from": NUMBER, "body": "Units are on the way",
            "delivery_report": "per_recipient", "client_reference": NUMBER,
            "callback_url": format!("{}/webhooks/sinch/status", s.base)})
    );

    // Sinch reports per recipient at the batch's callback URL (status words in any case).
    let report = |status: &str, code: u16| {
        json!({"type": "recipient_delivery_report_sms", "batch_id": "01JDSINCHE2E00000000000001",
            "recipient": CONTACT.trim_start_matches('+'), "status": status, "code": code,
            "at": "2026-11-30T10:01:00.000Z", "client_reference": NUMBER})
        .to_string()
    };
    let now = chrono::Utc::now().timestamp();
    for (status, code) in [("Dispatched", 401), ("DELIVERED", 0)] {
        assert_eq!(
            post_signed(
                &s,
                "/webhooks/sinch/status",
                APP_SECRET,
                now,
                &report(status, code)
            )
            .await,
            (200, Value::String("ok".into()))
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
    assert_eq!(last["source"], "sinch");
}
