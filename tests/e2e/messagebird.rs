//! MessageBird legacy REST API end to end: an inbound SMS forwarded as a GET and signed with a
//! `MessageBird-Signature-JWT` (refused, with nothing stored, when the token is forged,
//! expired, for another URL or missing), routed by `recipient`; a reply through a REST API
//! fake (`POST /messages` with the access key, our id as `reference` and a `reportUrl` naming
//! the tenant's number); and the status report on that `reportUrl` that moves it to delivered.

use omni_core::providers::messagebird;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const ACCESS_KEY: &str = "live_mb-e2e-access-key-0001";
const SIGNING_KEY: &str = "mb-e2e-signing-key-0001";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";
const CARRIER_ID: &str = "e8077d803532c0b5937c639b6021e2e1";

/// GETs `path_and_query` with a token signed by `key` at `at` over the URL `signed_url`
/// (the URL called, unless a test forges it); no token when `key` is `None`.
async fn get(
    s: &Server,
    path_and_query: &str,
    key: Option<&str>,
    at: i64,
    signed_url: Option<&str>,
) -> (u16, Value) {
    let url = s.url(path_and_query);
    let mut req = s.http.get(&url);
    if let Some(key) = key {
        let token = messagebird::signature_jwt(key, signed_url.unwrap_or(&url), b"", at);
        req = req.header("MessageBird-Signature-JWT", token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn messagebird_inbound_reply_and_status_report() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/messages"))
        .and(header(
            "authorization",
            format!("AccessKey {ACCESS_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": CARRIER_ID, "direction": "mt", "type": "sms", "originator": NUMBER,
            "recipients": {"totalCount": 1, "items": [
                {"recipient": 15555550123_u64, "status": "sent",
                 "statusDatetime": "2026-11-30T14:00:00+00:00"}]}})))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_MESSAGEBIRD_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/messagebird",
            Some(json!({"access_key": ACCESS_KEY, "signing_key": SIGNING_KEY})),
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
            Some(json!({"provider": "messagebird", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let now = chrono::Utc::now().timestamp();
    let inbound = "/webhooks/messagebird?id=mb-in-1&recipient=15555550100\
        &originator=15555550123&body=Smoke+on+5th+street\
        &createdDatetime=2026-11-30T14%3A00%3A00%2B00%3A00";
    // Another key, an expired token, a token for another URL, and none: a 401 JSON error,
    // nothing stored.
    let elsewhere = s.url("/webhooks/messagebird?id=mb-in-1");
    for (key, at, url) in [
        (Some("not-the-signing-key"), now, None),
        (Some(SIGNING_KEY), now - 600, None),
        (Some(SIGNING_KEY), now, Some(elsewhere.as_str())),
        (None, now, None),
    ] {
        let (st, err) = get(&s, inbound, key, at, url).await;
        assert_eq!(st, 401, "{err}");
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{err}");
    }
    let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(l["items"], json!([]), "a refused webhook stored something");

    // Signed, routed by `recipient`; a redelivery is one message.
    for _ in 0..2 {
        assert_eq!(
            get(&s, inbound, Some(SIGNING_KEY), now, None).await,
            (200, Value::String("ok".into()))
        );
    }
    s.sole_sms_conversation(&key, CONTACT, NUMBER, "Smoke on 5th street")
        .await;

    // The CLI signs the same way with the signing key.
    s.cli_webhook_send(
        &key,
        ("messagebird", "north", SIGNING_KEY),
        (CONTACT, NUMBER, "Second message"),
    )
    .await;

    // The reply: POST /messages with our id as reference and the report URL.
    let out = s.send_sms(&key, CONTACT, "Units are on the way").await;
    let sent = s.message_reaching(&key, &out, "sent").await;
    assert_eq!(sent["provider"], "messagebird");
    assert_eq!(sent["provider_message_id"], CARRIER_ID);
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    let report_url = format!(
        "{}?omni_from=%2B15555550100",
        s.url("/webhooks/messagebird/status")
    );
    assert_eq!(
        body,
        json!({"originator": NUMBER, "recipients": CONTACT, "body": "Units are on the way",
            "reference": out, "reportUrl": report_url})
    );

    // MessageBird calls the reportUrl with its fields appended, signed over all of it.
    let report = format!(
        "/webhooks/messagebird/status?omni_from=%2B15555550100&id={CARRIER_ID}\
        &reference={out}&recipient=15555550123&status=delivered\
        &statusDatetime=2026-11-30T14%3A00%3A05%2B00%3A00"
    );
    let (st, b) = get(&s, &report, Some("not-the-signing-key"), now, None).await;
    assert_eq!(st, 401, "{b}");
    assert_eq!(get(&s, &report, Some(SIGNING_KEY), now, None).await.0, 200);
    let delivered = s.message_reaching(&key, &out, "delivered").await;
    let last = delivered["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "delivered");
    assert_eq!(last["source"], "messagebird");
}
