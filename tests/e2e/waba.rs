//! WhatsApp routing by business account, end to end with two servers: production receives
//! Meta's webhooks for every environment and forwards the staging account's to staging,
//! which is down for a while; nothing is lost, nothing forged goes through.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::Server;
use crate::whatsapp::APP_SECRET;

const STAGING_WABA: &str = "100";

fn inbound(wamid: &str, body: &str) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": STAGING_WABA, "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15555550100", "phone_number_id": "200000000000002"},
        "contacts": [{"profile": {"name": "Jane Example"}, "wa_id": "15555550123"}],
        "messages": [{"from": "15555550123", "id": wamid, "timestamp": "1700000000", "type": "text", "text": {"body": body}}]
    }}]}]})
    .to_string()
}

async fn post(s: &Server, body: &str, signature: &str, forwarded: bool) -> u16 {
    let mut req = s
        .http
        .post(s.url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature);
    if forwarded {
        req = req.header("x-omni-forwarded", "1");
    }
    req.body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn route(s: &Server) -> Value {
    let (st, list) = s
        .admin(Method::GET, "/v1/admin/whatsapp/waba-routes", None)
        .await;
    assert_eq!(st, 200, "{list}");
    assert!(!list.to_string().contains(APP_SECRET), "no secret listed");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["waba_id"] == STAGING_WABA)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A loopback port nothing listens on (yet): where staging will come up.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn production_forwards_a_staging_account_to_staging_which_was_down_and_loses_nothing() {
    let port = free_port();
    let staging_url = format!("http://127.0.0.1:{port}/webhooks/whatsapp");
    let production = Server::start(&[("OMNI_ALLOW_HTTP_FORWARD", "true")]).await;

    // Targets that are not public HTTPS are refused when saved, whatever the test switch.
    for url in [
        "http://10.0.0.7/webhooks/whatsapp",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://staging.example.org/",
    ] {
        let (st, b) = production
            .admin(
                Method::PUT,
                &format!("/v1/admin/whatsapp/waba-routes/{STAGING_WABA}"),
                Some(json!({"url": url, "app_secret": APP_SECRET})),
            )
            .await;
        assert_eq!(st, 400, "{url}: {b}");
        assert_eq!(b["code"], "invalid_request");
    }
    let (st, b) = production
        .admin(
            Method::PUT,
            "/v1/admin/whatsapp/waba-routes/not-digits",
            Some(json!({"url": staging_url, "app_secret": APP_SECRET})),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    // Only the platform admin manages routes.
    let key = production.tenant("north").await;
    let (st, _) = production
        .api(&key, Method::GET, "/v1/admin/whatsapp/waba-routes", None)
        .await;
    assert_eq!(st, 403);

    let (st, saved) = production
        .admin(
            Method::PUT,
            &format!("/v1/admin/whatsapp/waba-routes/{STAGING_WABA}"),
            Some(json!({"url": staging_url, "app_secret": APP_SECRET, "note": "staging"})),
        )
        .await;
    assert_eq!(st, 200, "{saved}");
    assert_eq!(saved["url"], staging_url);
    assert_eq!(saved["note"], "staging");
    assert_eq!(saved["pending"], 0);
    assert!(saved.get("app_secret").is_none());

    // Staging is down: production acknowledges each webhook once it is queued.
    let bodies: Vec<String> = (1..=3)
        .map(|i| inbound(&format!("wamid.STAGING{i}"), &format!("message {i} — ñ")))
        .collect();
    for body in &bodies {
        let sig = omni_core::providers::whatsapp::signature(body.as_bytes(), APP_SECRET);
        assert_eq!(post(&production, body, &sig, false).await, 200);
    }
    // A forged one (wrong secret) is refused and queued for nobody.
    let forged = inbound("wamid.FORGED", "forged");
    let bad_sig =
        omni_core::providers::whatsapp::signature(forged.as_bytes(), "another-secret-0000001");
    assert_eq!(post(&production, &forged, &bad_sig, false).await, 401);
    // One that was forwarded to us already is never forwarded again: handled here as
    // before routes existed (production holds no number for it).
    let looped = inbound("wamid.LOOP", "loop");
    let sig = omni_core::providers::whatsapp::signature(looped.as_bytes(), APP_SECRET);
    assert_eq!(post(&production, &looped, &sig, true).await, 404);

    let down = route(&production).await;
    assert_eq!(down["pending"], 3, "{down}");
    assert_eq!(down["forwarded"], 0, "{down}");
    // Let production fail a few times against the closed port.
    production
        .eventually(10, "failed forwarding attempts", || async {
            (production
                .log_text()
                .matches("whatsapp webhook forwarding failed")
                .count()
                >= 3)
                .then_some(())
        })
        .await;

    // Staging comes up where the route points, with the account's tenant.
    let port_text = format!("127.0.0.1:{port}");
    let staging = Server::start(&[("OMNI_ADDR", port_text.as_str())]).await;
    let staging_key = staging.tenant("north").await;
    crate::whatsapp::configure_whatsapp(&staging).await;

    // Every queued webhook reaches staging, verified there with the same app secret.
    let messages = staging
        .eventually(20, "the three forwarded messages at staging", || async {
            let (_, l) = staging
                .api(&staging_key, Method::GET, "/v1/conversations", None)
                .await;
            let id = l["items"].as_array()?.first()?["id"].as_str()?.to_string();
            let (_, m) = staging
                .api(
                    &staging_key,
                    Method::GET,
                    &format!("/v1/conversations/{id}/messages"),
                    None,
                )
                .await;
            let items = m["items"].as_array()?.clone();
            (items.len() == 3).then_some(items)
        })
        .await;
    let mut texts: Vec<&str> = messages.iter().filter_map(|m| m["body"].as_str()).collect();
    texts.sort();
    assert_eq!(texts, ["message 1 — ñ", "message 2 — ñ", "message 3 — ñ"]);
    let up = production
        .eventually(10, "the counts", || async {
            let r = route(&production).await;
            (r["forwarded"] == 3 && r["pending"] == 0).then_some(r)
        })
        .await;
    assert_eq!(up["failed"], 0);
    assert!(up["last_forwarded_at"].is_string(), "{up}");
    // Production kept nothing of staging's account for itself.
    let (_, l) = production
        .api(&key, Method::GET, "/v1/conversations", None)
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 0);

    let path = format!("/v1/admin/whatsapp/waba-routes/{STAGING_WABA}");
    let (st, _) = production.admin(Method::DELETE, &path, None).await;
    assert_eq!(st, 204);
    let (st, b) = production.admin(Method::DELETE, &path, None).await;
    assert_eq!(st, 404, "{b}");
    assert!(route(&production).await.is_null());

    // Route changes belong to no tenant: the platform's audit log has them, newest first,
    // without the app secret (refused saves and the second delete are not changes); the
    // platform admin alone reads it.
    let (st, audit) = production.admin(Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(st, 200, "{audit}");
    assert!(!audit.to_string().contains(APP_SECRET), "no secret audited");
    let steps: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("waba_route.delete", STAGING_WABA),
            ("waba_route.put", STAGING_WABA)
        ]
    );
    assert_eq!(audit["items"][1]["details"]["url"], staging_url);
    assert_eq!(audit["items"][1]["actor"]["type"], "system");
    let (st, _) = production
        .api(&key, Method::GET, "/v1/admin/audit", None)
        .await;
    assert_eq!(st, 403);
    let (_, tenant_audit) = production.api(&key, Method::GET, "/v1/audit", None).await;
    assert!(
        !tenant_audit.to_string().contains("waba_route"),
        "{tenant_audit}"
    );
}
