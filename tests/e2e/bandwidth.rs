//! Bandwidth Messaging v2 end to end: inbound callbacks authenticated by the application's
//! Basic credentials and routed to the tenant (refused, with nothing stored, when the
//! credentials are missing or wrong), a reply through a Bandwidth API fake, and one status
//! callback POST carrying two events that moves it to delivered.

use omni_core::providers::bandwidth;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const ACCOUNT: &str = "9900001";
const APPLICATION: &str = "93de2206-9669-4e07-948d-329f4b722ee2";
const API_USER: &str = "omni-e2e-api";
const API_PASSWORD: &str = "bandwidth-api-password-0001-secret";
const HOOK_USER: &str = "omni-callbacks";
const HOOK_PASSWORD: &str = "bandwidth-callback-password-0001-secret";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";

/// A `message-received` event from the contact to `number`.
fn received(id: &str, number: &str, text: &str) -> Value {
    json!({"type": "message-received", "time": "2026-11-30T10:00:00.000Z",
        "description": "Incoming message received", "to": number,
        "message": {"id": id, "owner": number, "applicationId": APPLICATION,
            "time": "2026-11-30T10:00:00.000Z", "segmentCount": 1, "direction": "in",
            "to": [number], "from": CONTACT, "text": text, "media": []}})
}

fn inbound(id: &str, text: &str) -> String {
    json!([received(id, NUMBER, text)]).to_string()
}

/// Configures Bandwidth for `tenant` (callback password `hook_password`) and routes `numbers`
/// to it.
async fn configure(s: &Server, tenant: &str, hook_password: &str, numbers: &[&str]) {
    let config = json!({"account_id": ACCOUNT, "application_id": APPLICATION,
        "api_username": API_USER, "api_password": API_PASSWORD,
        "webhook_username": HOOK_USER, "webhook_password": hook_password});
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/{tenant}/providers/bandwidth"),
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    for number in numbers {
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("/v1/admin/tenants/{tenant}/numbers/{number}"),
                Some(json!({"provider": "bandwidth", "channels": ["sms", "mms"]})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
}

/// Posts `body` to `path` with `authorization` (none when `None`).
async fn post(s: &Server, path: &str, authorization: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = s
        .http
        .post(s.url(path))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn bandwidth_authenticated_inbound_reply_and_batched_status() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/api/v2/users/{ACCOUNT}/messages")))
        .and(header(
            "authorization",
            bandwidth::authorization(API_USER, API_PASSWORD).as_str(),
        ))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({
            "id": "bw-out-0001", "owner": NUMBER, "applicationId": APPLICATION,
            "time": "2026-11-30T10:00:00.000Z", "segmentCount": 1, "direction": "out",
            "to": [CONTACT], "from": NUMBER, "text": "Units are on the way"})))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_BANDWIDTH_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    configure(&s, "north", HOOK_PASSWORD, &[NUMBER]).await;
    let (_, listed) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    let shown = listed.to_string();
    assert!(
        !shown.contains(API_PASSWORD) && !shown.contains(HOOK_PASSWORD),
        "{listed}"
    );

    // Missing, wrong and foreign-scheme credentials: a 401 JSON error, nothing stored.
    let body = inbound("bw-in-0001", "Smoke on 5th street");
    for authorization in [
        None,
        Some(bandwidth::authorization(HOOK_USER, "not-the-password")),
        Some(bandwidth::authorization("someone-else", HOOK_PASSWORD)),
        Some(format!("Bearer {HOOK_PASSWORD}")),
    ] {
        let (st, err) = post(&s, "/webhooks/bandwidth", authorization.as_deref(), &body).await;
        assert_eq!(st, 401, "{err}");
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{err}");
    }
    let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(l["items"], json!([]), "a refused callback stored something");

    let good = bandwidth::authorization(HOOK_USER, HOOK_PASSWORD);
    assert_eq!(
        post(&s, "/webhooks/bandwidth", Some(&good), &body).await,
        (200, Value::String("ok".into()))
    );
    s.sole_sms_conversation(&key, CONTACT, NUMBER, "Smoke on 5th street")
        .await;

    // The CLI authenticates the same way, with the stored credentials given as --secret.
    s.cli_webhook_send(
        &key,
        (
            "bandwidth",
            "north",
            &format!("{HOOK_USER}:{HOOK_PASSWORD}"),
        ),
        (CONTACT, NUMBER, "Second message"),
    )
    .await;

    // The reply goes out through Bandwidth with the documented request shape.
    let id = s.send_sms(&key, CONTACT, "Units are on the way").await;
    let sent = s.message_reaching(&key, &id, "sent").await;
    assert_eq!(sent["provider"], "bandwidth");
    assert_eq!(sent["provider_message_id"], "bw-out-0001");
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get("content-type").unwrap(),
        "application/json"
    );
    let sent_body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        sent_body,
        json!({"applicationId": APPLICATION, "to": [CONTACT], "from": NUMBER,
            "text": "Units are on the way", "tag": id})
    );

    // Bandwidth reports sent and delivered in one callback POST, at the status URL.
    let event = |kind: &str| {
        json!({"type": kind, "time": "2026-11-30T10:01:00.000Z", "description": "ok",
            "to": CONTACT, "message": {"id": "bw-out-0001", "owner": NUMBER,
                "applicationId": APPLICATION, "time": "2026-11-30T10:00:00.000Z",
                "segmentCount": 1, "direction": "out", "to": [CONTACT], "from": NUMBER,
                "text": "", "media": [], "tag": id}})
    };
    let statuses = json!([event("message-sent"), event("message-delivered")]).to_string();
    assert_eq!(
        post(&s, "/webhooks/bandwidth/status", None, &statuses)
            .await
            .0,
        401
    );
    assert_eq!(
        post(&s, "/webhooks/bandwidth/status", Some(&good), &statuses).await,
        (200, Value::String("ok".into()))
    );
    let delivered = s.message_reaching(&key, &id, "delivered").await;
    let last = delivered["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "delivered");
    assert_eq!(last["source"], "bandwidth");
}

/// One callback may carry events for several of a tenant's numbers, never another tenant's.
#[tokio::test]
async fn bandwidth_batches_stay_within_one_tenant() {
    const SECOND: &str = "+15555550101";
    const SOUTH: &str = "+15555550102";
    const SOUTH_PASSWORD: &str = "bandwidth-callback-password-south-secret";
    let s = Server::start(&[]).await;
    let north = s.tenant("north").await;
    let south = s.tenant("south").await;
    configure(&s, "north", HOOK_PASSWORD, &[NUMBER, SECOND]).await;
    configure(&s, "south", SOUTH_PASSWORD, &[SOUTH]).await;
    let north_auth = bandwidth::authorization(HOOK_USER, HOOK_PASSWORD);
    let south_auth = bandwidth::authorization(HOOK_USER, SOUTH_PASSWORD);

    let both = json!([
        received("bw-a", NUMBER, "to the first"),
        received("bw-b", SECOND, "to the second")
    ]);
    assert_eq!(
        post(
            &s,
            "/webhooks/bandwidth",
            Some(&north_auth),
            &both.to_string()
        )
        .await,
        (200, Value::String("ok".into()))
    );
    // The contact's conversation holds both (one conversation per contact and channel).
    let unread = || async {
        let (_, l) = s.api(&north, Method::GET, "/v1/conversations", None).await;
        l["items"][0]["unread_count"].as_u64()
    };
    s.eventually(10, "both messages", || async {
        (unread().await == Some(2)).then_some(())
    })
    .await;

    // A batch reaching into another tenant is refused whole, whichever tenant it starts with.
    for (batch, auth) in [
        (
            json!([
                received("bw-c", NUMBER, "mine"),
                received("bw-d", SOUTH, "theirs")
            ]),
            &north_auth,
        ),
        (
            json!([
                received("bw-e", SOUTH, "mine"),
                received("bw-f", SECOND, "theirs")
            ]),
            &south_auth,
        ),
    ] {
        let (st, err) = post(&s, "/webhooks/bandwidth", Some(auth), &batch.to_string()).await;
        assert_eq!(st, 400, "{err}");
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{err}");
    }
    let (_, l) = s.api(&south, Method::GET, "/v1/conversations", None).await;
    assert_eq!(l["items"], json!([]));
    assert_eq!(unread().await, Some(2));
}
