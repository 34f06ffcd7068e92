//! WhatsApp Cloud API end to end: Meta's subscription handshake, signed inbound messages
//! routed to the tenant, and sends through a Graph API fake.

use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const APP_SECRET: &str = "whatsapp-app-secret-0001";
const PHONE_ID: &str = "200000000000002";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";

fn inbound(phone_number_id: &str, wamid: &str) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "100", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15555550100", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": "Jane Example"}, "wa_id": "15555550123"}],
        "messages": [{"from": "15555550123", "id": wamid, "timestamp": "1700000000", "type": "text", "text": {"body": "hola — ñ"}}]
    }}]}]})
    .to_string()
}

async fn post_signed(s: &Server, body: &str) -> u16 {
    let sig = omni_core::providers::whatsapp::signature(body.as_bytes(), APP_SECRET);
    let req = s
        .http
        .post(s.url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body.to_string());
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn whatsapp_handshake_inbound_and_send() {
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v21.0/{PHONE_ID}/messages")))
        .and(header("authorization", "Bearer wa-access-token-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"messaging_product": "whatsapp", "contacts": [{"input": "15555550123", "wa_id": "15555550123"}], "messages": [{"id": "wamid.OUT1"}]})))
        .mount(&graph)
        .await;
    let graph_url = format!("{}/v21.0", graph.uri());
    let s = Server::start(&[("OMNI_WHATSAPP_API_URL", &graph_url)]).await;
    let key = s.tenant("north").await;
    let config = json!({"phone_number_id": PHONE_ID, "access_token": "wa-access-token-0001", "app_secret": APP_SECRET, "verify_token": "verify-token-0001"});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/whatsapp",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "whatsapp", "channels": ["whatsapp"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // Meta's handshake echoes the challenge only for a tenant's verify token.
    let ok = s.http.get(s.url("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-token-0001&hub.challenge=1158201444")).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let bad = s
        .http
        .get(s.url("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);

    // Signed for another business's phone number id: refused, nothing stored.
    assert_eq!(post_signed(&s, &inbound("999999", "wamid.X")).await, 401);
    assert_eq!(post_signed(&s, &inbound(PHONE_ID, "wamid.IN1")).await, 200);
    let list = s
        .eventually(10, "the WhatsApp message", || async {
            let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
            (l["items"].as_array()?.len() == 1).then_some(l)
        })
        .await;
    assert_eq!(list["items"][0]["channel"], "whatsapp");
    assert_eq!(list["items"][0]["contact"], CONTACT);
    assert_eq!(list["items"][0]["last_message"]["body"], "hola — ñ");

    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "whatsapp", "to": CONTACT, "body": "Help is on the way"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let sent = s
        .eventually(10, "the WhatsApp send", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "sent").then_some(m)
        })
        .await;
    assert_eq!(sent["provider_message_id"], "wamid.OUT1");
    let sent_body: serde_json::Value =
        serde_json::from_slice(&graph.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent_body["to"], "15555550123");
    assert_eq!(sent_body["text"]["body"], "Help is on the way");
    assert_eq!(sent_body["messaging_product"], "whatsapp");
}
