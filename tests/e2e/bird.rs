//! Bird Channels API end to end: signed `sms.inbound` notifications routed to the tenant
//! (refused, with nothing stored, when forged, unsigned or replayed), a reply through a Bird
//! API fake on the tenant's SMS channel, and the `sms.outbound` status events that move it to
//! delivered.

use omni_core::providers::bird;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const WORKSPACE: &str = "5f3e9a1c-0000-4000-8000-00000000b1d0";
const CHANNEL: &str = "614208aa-b153-4d5d-9989-2fddfc0ce4c3";
const ACCESS_KEY: &str = "bird-access-key-0001-secret";
const SIGNING_KEY: &str = "bird-signing-key-0001-secret";
const NUMBER: &str = "+15555550107";
const CONTACT: &str = "+15555550123";
const MESSAGE_ID: &str = "0192b7c2-1f0e-7000-8000-0000000e2e01";

fn inbound(id: &str, text: &str) -> String {
    json!({"service": "channels", "event": "sms.inbound", "payload": {
        "id": id, "channelId": CHANNEL,
        "sender": {"contact": {"identifierKey": "phonenumber", "identifierValue": CONTACT}},
        "receiver": {"connector": {"id": "86cc4dc0-3dc0-41b7-ac43-8ec829ead56f",
            "identifierValue": NUMBER}},
        "body": {"type": "text", "text": {"text": text}},
        "status": "delivered", "direction": "incoming"}})
    .to_string()
}

/// Posts `body` to `/webhooks/bird` signed with `key` at `timestamp` (Unix seconds).
async fn post_signed(s: &Server, key: &str, timestamp: i64, body: &str) -> (u16, Value) {
    let ts = timestamp.to_string();
    let url = s.url("/webhooks/bird");
    let resp = s
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header(bird::TIMESTAMP_HEADER, &ts)
        .header(
            bird::SIGNATURE_HEADER,
            bird::signature(key, &ts, &url, body.as_bytes()),
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
async fn bird_signed_inbound_reply_and_status_events() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/workspaces/{WORKSPACE}/channels/{CHANNEL}/messages"
        )))
        .and(header(
            "authorization",
            format!("AccessKey {ACCESS_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({
            "id": MESSAGE_ID, "channelId": CHANNEL, "reference": NUMBER,
            "status": "accepted", "direction": "outgoing"})))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_BIRD_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    let config = json!({"workspace_id": WORKSPACE, "channel_id": CHANNEL,
        "access_key": ACCESS_KEY, "signing_key": SIGNING_KEY});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/bird",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, listed) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    let shown = listed.to_string();
    assert!(
        !shown.contains(ACCESS_KEY) && !shown.contains(SIGNING_KEY),
        "{listed}"
    );
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "bird", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // Forged, replayed (six minutes old), future-dated and unsigned notifications: a 401 JSON
    // error, nothing stored.
    let now = chrono::Utc::now().timestamp();
    let body = inbound(
        "96a0b5fa-a986-453d-be5c-3117f989f025",
        "Smoke on 5th street",
    );
    for (signing_key, at) in [
        ("not-the-signing-key", now),
        (SIGNING_KEY, now - 360),
        (SIGNING_KEY, now + 360),
    ] {
        let (st, err) = post_signed(&s, signing_key, at, &body).await;
        assert_eq!(st, 401, "{err}");
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{err}");
    }
    let unsigned = s
        .http
        .post(s.url("/webhooks/bird"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(
        l["items"],
        json!([]),
        "a refused notification stored something"
    );

    assert_eq!(
        post_signed(&s, SIGNING_KEY, now, &body).await,
        (200, Value::String("ok".into()))
    );
    s.sole_sms_conversation(&key, CONTACT, NUMBER, "Smoke on 5th street")
        .await;

    // The CLI signs the same way with the signing key.
    s.cli_webhook_send(
        &key,
        ("bird", "north", SIGNING_KEY),
        (CONTACT, NUMBER, "Second message"),
    )
    .await;

    // The reply goes out on the tenant's channel with the documented request shape.
    let id = s.send_sms(&key, CONTACT, "Units are on the way").await;
    let sent = s.message_reaching(&key, &id, "sent").await;
    assert_eq!(sent["provider"], "bird");
    assert_eq!(sent["provider_message_id"], MESSAGE_ID);
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent_body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        sent_body,
        json!({"receiver": {"contacts": [{"identifierKey": "phonenumber",
                "identifierValue": CONTACT}]},
            "body": {"type": "text", "text": {"text": "Units are on the way"}},
            "reference": NUMBER})
    );

    // Bird reports the message's life cycle as sms.outbound events, routed by our number.
    let outbound = |status: &str| {
        json!({"service": "channels", "event": "sms.outbound", "payload": {
            "id": MESSAGE_ID, "channelId": CHANNEL,
            "sender": {"connector": {"identifierValue": NUMBER}},
            "receiver": {"contacts": [{"identifierValue": CONTACT}]},
            "reference": NUMBER, "status": status, "direction": "outgoing"}})
        .to_string()
    };
    let now = chrono::Utc::now().timestamp();
    for status in ["sent", "delivered"] {
        assert_eq!(
            post_signed(&s, SIGNING_KEY, now, &outbound(status)).await,
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
    assert_eq!(last["source"], "bird");
}
