//! Inteliquent end to end: inbound SMS and a several-photo MMS authenticated with the
//! `messageID` / `verificationToken` pair and routed by the called number (refused, with
//! nothing stored, when the token is wrong or missing), a reply MMS with every attachment
//! through a Message Broker fake, and the delivery receipt that moves it to delivered.

use omni_core::providers::inteliquent;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const API_KEY: &str = "iq-e2e-api-key-0001";
const WEBHOOK_KEY: &str = "iq-e2e-webhook-key-0001";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";
const REFERENCE: &str = "d88231b5-13b3-4fb2-8528-bc71643e2e01";

/// Posts `body` to the webhook with `messageID` and `verificationToken` as given.
async fn post(s: &Server, token: Option<(&str, String)>, body: &Value) -> (u16, Value) {
    let mut req = s
        .http
        .post(s.url("/webhooks/inteliquent"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some((id, token)) = token {
        req = req
            .header("messageID", id)
            .header("verificationToken", token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn signed(key: &str) -> Option<(&'static str, String)> {
    let id = "5f0c6a1e-7d2b-4c3a-9e8f-0a1b2c3d4e01";
    Some((id, inteliquent::verification_token(key, id)))
}

#[tokio::test]
async fn inteliquent_inbound_mms_reply_with_every_attachment_and_receipt() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/publishMessages"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "reason": "SUCCESS", "detail": "SUCCESS",
            "result": {"referenceId": REFERENCE, "from": "15555550100", "messageType": "MMS",
                "resultResponses": [{"to": "15555550123", "status": "SUCCESS"}]}})))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_INTELIQUENT_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/inteliquent",
            Some(json!({"api_key": API_KEY, "webhook_key": WEBHOOK_KEY})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, listed) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    let shown = listed.to_string();
    assert!(
        !shown.contains(API_KEY) && !shown.contains(WEBHOOK_KEY),
        "{listed}"
    );
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "inteliquent", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // Wrong key, token for another id, and no token: a 401 JSON error, nothing stored.
    let sms = json!({"referenceId": "iq-in-1", "from": "5555550123", "to": ["5555550100"],
        "text": "Smoke on 5th street"});
    let (_, token) = signed(WEBHOOK_KEY).unwrap();
    for token in [
        signed("not-the-webhook-key"),
        Some(("another-message-id", token)),
        None,
    ] {
        let (st, err) = post(&s, token, &sms).await;
        assert_eq!(st, 401, "{err}");
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{err}");
    }
    let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(l["items"], json!([]), "a refused webhook stored something");

    // 10 national digits in, routed by the called number; a redelivery is one message.
    for _ in 0..2 {
        assert_eq!(
            post(&s, signed(WEBHOOK_KEY), &sms).await,
            (200, Value::String("ok".into()))
        );
    }
    s.sole_sms_conversation(&key, CONTACT, NUMBER, "Smoke on 5th street")
        .await;

    // An MMS with three attachments is one message with all three.
    let mms = json!({"referenceId": "iq-in-2", "from": "15555550123",
        "to": ["15555550100"], "text": "Photos of the roof", "deliveryReceipt": false,
        "mediaUrls": ["https://mms.example/1.jpg", "https://mms.example/2.jpg",
            "https://mms.example/3.mp4"]});
    assert_eq!(post(&s, signed(WEBHOOK_KEY), &mms).await.0, 200);
    let latest = s
        .eventually(10, "the MMS", || async {
            let m = s.conversation_messages(&key).await;
            m.iter()
                .find(|m| m["provider_message_id"] == "iq-in-2")
                .cloned()
        })
        .await;
    assert_eq!(latest["channel"], "mms");
    assert_eq!(latest["body"], "Photos of the roof");
    let urls: Vec<_> = latest["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["url"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        urls,
        [
            "https://mms.example/1.jpg",
            "https://mms.example/2.jpg",
            "https://mms.example/3.mp4"
        ]
    );

    // The CLI authenticates the same way with the webhook key.
    s.cli_webhook_send(
        &key,
        ("inteliquent", "north", WEBHOOK_KEY),
        (CONTACT, NUMBER, "Second message"),
    )
    .await;

    // The reply: one publishMessages call with every attachment, bare digits.
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(
                json!({"channel": "mms", "to": CONTACT, "body": "Units are on the way",
                "media_urls": ["https://cdn.example/map.png", "https://cdn.example/route.png"]}),
            ),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let out = m["id"].as_str().unwrap().to_string();
    let sent = s.message_reaching(&key, &out, "sent").await;
    assert_eq!(sent["provider"], "inteliquent");
    assert_eq!(sent["provider_message_id"], REFERENCE);
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        json!({"from": "15555550100", "to": ["15555550123"], "text": "Units are on the way",
            "mediaUrls": ["https://cdn.example/map.png", "https://cdn.example/route.png"]})
    );

    // The delivery receipt, matched by referenceId, routed by the called number.
    let receipt = json!({"referenceId": REFERENCE, "from": "15555550123",
        "to": ["15555550100"], "deliveryReceipt": true, "text": "stat:DELIVRD err:000"});
    assert_eq!(post(&s, signed(WEBHOOK_KEY), &receipt).await.0, 200);
    let delivered = s.message_reaching(&key, &out, "delivered").await;
    let last = delivered["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "delivered");
    assert_eq!(last["source"], "inteliquent");
}
