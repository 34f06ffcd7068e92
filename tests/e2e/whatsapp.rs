//! WhatsApp Cloud API end to end: Meta's subscription handshake, signed inbound messages
//! routed to the tenant, and sends through a Graph API fake.

use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{body_json, body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

pub(crate) const APP_SECRET: &str = "whatsapp-app-secret-0001";
const PHONE_ID: &str = "200000000000002";
/// The tenant's WhatsApp Business Account (its templates, their status webhooks).
pub(crate) const WABA_ID: &str = "100000000000001";
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

pub(crate) async fn post_signed(s: &Server, body: &str) -> u16 {
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
    let (s, key) = whatsapp_tenant(&graph).await;

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

#[tokio::test]
async fn whatsapp_media_is_fetched_for_the_owning_tenant_only() {
    let graph = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v21.0/300000000000003"))
        .and(header("authorization", "Bearer wa-access-token-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp", "id": "300000000000003", "mime_type": "image/jpeg",
            "url": format!("{}/lookaside/300000000000003", graph.uri())})))
        .mount(&graph)
        .await;
    Mock::given(method("GET"))
        .and(path("/lookaside/300000000000003"))
        .and(header("authorization", "Bearer wa-access-token-0001"))
        .respond_with(
            ResponseTemplate::new(200).set_body_bytes(b"\xff\xd8 a photo of the scene".to_vec()),
        )
        .expect(1)
        .mount(&graph)
        .await;
    let (s, key) = whatsapp_tenant(&graph).await;
    let other = s.tenant("south").await;
    let photo = json!({"object": "whatsapp_business_account", "entry": [{"id": "100", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15555550100", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": "Jane Example"}, "wa_id": "15555550123"}],
        "messages": [{"from": "15555550123", "id": "wamid.PHOTO", "timestamp": "1700000000", "type": "image",
            "image": {"id": "300000000000003", "mime_type": "image/jpeg", "sha256": "x", "caption": "the car"}}]
    }}]}]})
    .to_string();
    assert_eq!(post_signed(&s, &photo).await, 200);
    let message = s
        .eventually(10, "the WhatsApp photo", || async {
            let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
            let conversation = l["items"].as_array()?.first()?["id"].as_str()?.to_string();
            let (_, m) = s
                .api(
                    &key,
                    Method::GET,
                    &format!("/v1/conversations/{conversation}/messages"),
                    None,
                )
                .await;
            m["items"].as_array()?.first().cloned()
        })
        .await;
    assert_eq!(message["media"][0]["url"], "whatsapp-media:300000000000003");
    let id = message["id"].as_str().unwrap();
    let get = |key: &str, path: String| s.http.get(s.url(&path)).bearer_auth(key).send();

    let photo = get(&key, format!("/v1/messages/{id}/media/0"))
        .await
        .unwrap();
    assert_eq!(photo.status().as_u16(), 200);
    assert_eq!(photo.headers()["content-type"], "image/jpeg");
    assert_eq!(photo.headers()["x-content-type-options"], "nosniff");
    assert_eq!(photo.headers()["content-disposition"], "inline");
    assert_eq!(
        &photo.bytes().await.unwrap()[..],
        b"\xff\xd8 a photo of the scene"
    );

    // Another tenant's key, an index past the end, no key: nothing reaches the carrier
    // again (the download mock expects exactly one call).
    for (key, path, status) in [
        (other.as_str(), format!("/v1/messages/{id}/media/0"), 404),
        (key.as_str(), format!("/v1/messages/{id}/media/1"), 404),
        (key.as_str(), format!("/v1/messages/{id}/media/x"), 404),
        ("omk_nope", format!("/v1/messages/{id}/media/0"), 401),
    ] {
        let response = get(key, path.clone()).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }

    // Media a carrier does not keep is a plain link: a redirect, without fetching it.
    let (st, sent) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "whatsapp", "to": CONTACT, "body": "map",
                "media_urls": ["https://cdn.example.org/map.jpg"]})),
        )
        .await;
    assert_eq!(st, 202, "{sent}");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let link = no_redirects
        .get(s.url(&format!(
            "/v1/messages/{}/media/0",
            sent["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(link.status().as_u16(), 307);
    assert_eq!(
        link.headers()["location"],
        "https://cdn.example.org/map.jpg"
    );
}

/// The tenant `north` with a WhatsApp number on the Graph API fake.
pub(crate) async fn whatsapp_tenant(graph: &MockServer) -> (Server, String) {
    let graph_url = format!("{}/v21.0", graph.uri());
    let s = Server::start(&[("OMNI_WHATSAPP_API_URL", &graph_url)]).await;
    let key = s.tenant("north").await;
    configure_whatsapp(&s).await;
    (s, key)
}

/// Configures the WhatsApp Cloud API for `north` and routes [`NUMBER`] to it.
pub(crate) async fn configure_whatsapp(s: &Server) {
    let config = json!({"phone_number_id": PHONE_ID, "access_token": "wa-access-token-0001", "app_secret": APP_SECRET, "verify_token": "verify-token-0001", "waba_id": WABA_ID});
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
}

#[tokio::test]
async fn whatsapp_template_reaches_the_graph_api_and_bad_templates_are_refused() {
    let graph = MockServer::start().await;
    let template = json!({
    "name": "unit_dispatched", "language": "en_US",
    "components": [
        {"type": "body", "parameters": [
            {"type": "text", "text": "Unit 12"},
            {"type": "date_time", "date_time": {"fallback_value": "in 5 minutes"}}]},
        {"type": "button", "sub_type": "quick_reply", "index": 0,
            "parameters": [{"type": "payload", "payload": "ACK"}]}
    ]});
    // On Meta's wire: the language as {"code"}, the button index as a string.
    let mut on_the_wire = template.clone();
    on_the_wire["language"] = json!({"code": "en_US"});
    on_the_wire["components"][1]["index"] = json!("0");
    Mock::given(method("POST"))
        .and(path(format!("/v21.0/{PHONE_ID}/messages")))
        .and(header("authorization", "Bearer wa-access-token-0001"))
        .and(body_json(json!({
            "messaging_product": "whatsapp", "recipient_type": "individual",
            "to": "15555550123", "type": "template", "template": on_the_wire})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.TPL1"}]}),
        ))
        .expect(1)
        .mount(&graph)
        .await;
    // Free text outside the 24-hour window.
    Mock::given(method("POST"))
        .and(path(format!("/v21.0/{PHONE_ID}/messages")))
        .and(body_partial_json(json!({"type": "text"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047,
            "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."},
            "fbtrace_id": "AbCdEf"}})))
        .mount(&graph)
        .await;
    let (s, key) = whatsapp_tenant(&graph).await;

    // Each refused before anything is stored or sent, naming the field.
    let refused = [
        (
            json!({"channel": "sms", "to": CONTACT, "template": template}),
            "template",
        ),
        (
            json!({"channel": "whatsapp", "to": CONTACT, "body": "hi", "template": template}),
            "template",
        ),
        (
            json!({"channel": "whatsapp", "to": CONTACT, "template": {"name": "Unit-Dispatched", "language": "en_US"}}),
            "template.name",
        ),
        (
            json!({"channel": "whatsapp", "to": CONTACT, "template": {"name": "a", "language": "english"}}),
            "template.language",
        ),
        (
            json!({"channel": "whatsapp", "to": CONTACT, "template": {"name": "a", "language": "en", "components": [{"type": "footer", "parameters": []}]}}),
            "template.components[0]",
        ),
        (
            json!({"channel": "whatsapp", "to": CONTACT, "template": {"name": "a", "language": "en", "components": [{"type": "button", "index": 0, "parameters": [{"type": "payload", "payload": "x"}]}]}}),
            "template.components[0]",
        ),
        (
            json!({"channel": "whatsapp", "to": CONTACT, "template": {"name": "a", "language": "en", "components": [{"type": "header", "parameters": [{"type": "text", "text": "x".repeat(61)}]}]}}),
            "template.components[0].parameters[0].text",
        ),
    ];
    for (request, field) in refused {
        let (st, b) = s
            .api(&key, Method::POST, "/v1/messages", Some(request.clone()))
            .await;
        assert_eq!(st, 400, "{request}: {b}");
        assert_eq!(b["code"], "invalid_request", "{b}");
        let said = b["error"].as_str().unwrap();
        assert!(said.contains(field), "{field} not in {said}");
    }
    let (_, list) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(list["items"], json!([]), "nothing stored");

    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "whatsapp", "to": CONTACT, "template": template})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["template"]["name"], "unit_dispatched");
    assert_eq!(m["body"], serde_json::Value::Null);
    let id = m["id"].as_str().unwrap().to_string();
    let sent = s
        .eventually(10, "the template send", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "sent").then_some(m)
        })
        .await;
    assert_eq!(sent["provider_message_id"], "wamid.TPL1");
    assert_eq!(sent["template"]["components"][1]["index"], "0");

    // Free text to a contact who has not written for 24 hours fails for good, saying why.
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "whatsapp", "to": CONTACT, "body": "Are you safe?"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let failed = s
        .eventually(10, "the refused text", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "failed").then_some(m)
        })
        .await;
    assert_eq!(failed["error_code"], "131047");
    let reason = failed["error_message"].as_str().unwrap();
    assert!(reason.contains("template"), "{reason}");
    assert_eq!(graph.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_template_is_never_handed_to_a_carrier_without_templates() {
    const TWILIO_NUMBER: &str = "+15555550199";
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&graph)
        .await;
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&twilio)
        .await;
    let graph_url = format!("{}/v21.0", graph.uri());
    let s = Server::start(&[
        ("OMNI_WHATSAPP_API_URL", &graph_url),
        ("OMNI_TWILIO_API_URL", &twilio.uri()),
        ("OMNI_RETRY_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let key = s
        .twilio_tenant("north", "12345abcdef67890fedcba0987654321", TWILIO_NUMBER)
        .await;
    configure_whatsapp(&s).await;
    let routing = json!({"whatsapp": ["whatsapp", "twilio"]});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/routing",
            Some(routing),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let template = json!({"name": "hello_world", "language": "en_US"});

    // From the Twilio number: refused before queueing.
    let (st, b) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "whatsapp", "to": CONTACT, "from": TWILIO_NUMBER, "template": template})),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(
        b["error"].as_str().unwrap().starts_with("template: "),
        "{b}"
    );

    // From the WhatsApp number, Meta down: the fallback carrier cannot take it, so it fails
    // for good rather than going out as something else.
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(
                json!({"channel": "whatsapp", "to": CONTACT, "from": NUMBER, "template": template}),
            ),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let failed = s
        .eventually(30, "the template to fail", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "failed").then_some(m)
        })
        .await;
    let reason = failed["error_message"].as_str().unwrap();
    assert!(
        reason.contains("twilio cannot send a WhatsApp template"),
        "{reason}"
    );
}
