//! Vonage Messages end to end: inbound callbacks carrying a JWT signed with the signature
//! secret routed to the tenant (refused, with nothing stored, when forged, unsigned, replayed
//! or moved onto another body), a reply through a Vonage API fake with an RS256 application
//! JWT, and the status callbacks that move it to delivered.

use omni_core::providers::vonage;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header_regex, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const APP_ID: &str = "aaaaaaaa-0000-4000-8000-0000000000a1";
const SIGNATURE_SECRET: &str = "vonage-signature-secret-0001";
const PRIVATE_KEY: &str = include_str!("../fixtures/keys/vonage-test-private.pem");
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";
const UUID: &str = "aaaaaaaa-bbbb-4ccc-8ddd-00000000e2e1";

fn bare(n: &str) -> &str {
    n.trim_start_matches('+')
}

fn inbound(id: &str, text: &str) -> String {
    json!({"channel": "sms", "message_uuid": id, "to": bare(NUMBER), "from": bare(CONTACT),
        "timestamp": "2026-11-30T10:00:00Z", "message_type": "text", "text": text})
    .to_string()
}

/// Posts `body` to `path` with `authorization` as given.
async fn post(s: &Server, path: &str, authorization: Option<String>, body: &str) -> (u16, Value) {
    let mut req = s
        .http
        .post(s.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn token(secret: &str, body: &str, iat: i64) -> Option<String> {
    vonage::callback_authorization(secret, body.as_bytes(), iat)
}

#[tokio::test]
async fn vonage_signed_inbound_reply_and_status() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header_regex(
            "authorization",
            "^Bearer [^.]+\\.[^.]+\\.[^.]+$",
        ))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"message_uuid": UUID})))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_VONAGE_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    let config = json!({"application_id": APP_ID, "private_key": PRIVATE_KEY,
        "signature_secret": SIGNATURE_SECRET});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/vonage",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, listed) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    let shown = listed.to_string();
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains(SIGNATURE_SECRET),
        "{listed}"
    );
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "vonage", "channels": ["sms", "mms", "whatsapp"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // Forged, replayed (six minutes old), future-dated, moved onto another body and unsigned
    // callbacks: a 401 JSON error, nothing stored.
    let now = chrono::Utc::now().timestamp();
    let body = inbound(
        "aaaaaaaa-bbbb-4ccc-8ddd-0000000e2e01",
        "Smoke on 5th street",
    );
    let other = inbound("aaaaaaaa-bbbb-4ccc-8ddd-0000000e2e01", "Another text");
    for authorization in [
        token("not-the-signature-secret", &body, now),
        token(SIGNATURE_SECRET, &body, now - 360),
        token(SIGNATURE_SECRET, &body, now + 360),
        token(SIGNATURE_SECRET, &other, now),
        None,
    ] {
        let (st, err) = post(&s, "/webhooks/vonage", authorization, &body).await;
        assert_eq!(st, 401, "{err}");
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{err}");
    }
    let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(l["items"], json!([]), "a refused callback stored something");

    assert_eq!(
        post(
            &s,
            "/webhooks/vonage",
            token(SIGNATURE_SECRET, &body, now),
            &body
        )
        .await,
        (200, Value::String("ok".into()))
    );
    s.sole_sms_conversation(&key, CONTACT, NUMBER, "Smoke on 5th street")
        .await;

    // The CLI signs the same way with the signature secret.
    s.cli_webhook_send(
        &key,
        ("vonage", "north", SIGNATURE_SECRET),
        (CONTACT, NUMBER, "Second message"),
    )
    .await;

    // The reply goes out with the documented request shape.
    let id = s.send_sms(&key, CONTACT, "Units are on the way").await;
    let sent = s.message_reaching(&key, &id, "sent").await;
    assert_eq!(sent["provider"], "vonage");
    assert_eq!(sent["provider_message_id"], UUID);
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent_body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        sent_body,
        json!({"channel": "sms", "message_type": "text", "to": bare(CONTACT),
            "from": bare(NUMBER), "text": "Units are on the way", "client_ref": id,
            "webhook_url": format!("{}/webhooks/vonage/status", s.base),
            "webhook_version": "v1"})
    );

    // Vonage reports at the message's webhook_url, naming our number as `from`.
    let status = |word: &str| {
        json!({"message_uuid": UUID, "to": bare(CONTACT), "from": bare(NUMBER),
            "timestamp": "2026-11-30T10:01:00Z", "status": word, "channel": "sms",
            "client_ref": id})
        .to_string()
    };
    let now = chrono::Utc::now().timestamp();
    for word in ["submitted", "delivered"] {
        let body = status(word);
        assert_eq!(
            post(
                &s,
                "/webhooks/vonage/status",
                token(SIGNATURE_SECRET, &body, now),
                &body
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
    assert_eq!(last["source"], "vonage");
}
