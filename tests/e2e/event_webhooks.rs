//! Signed event webhooks end to end: a tenant's admin registers its CRM, which then receives
//! an inbound message, a send and its status as Standard Webhooks deliveries, each checked
//! here with an HMAC computed independently of Omni's signer; a failing receiver is retried,
//! deliveries are listed with their attempts, and secrets appear only when issued.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{Server, ACCOUNT_SID};

const TOKEN: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeee0005";
const NUMBER: &str = "+15555550500";
const CONTACT: &str = "+15555550123";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

/// Checks a delivery as a receiver following the Standard Webhooks specification would:
/// HMAC-SHA256 of `id.timestamp.body` under the base64-decoded secret (after `whsec_`),
/// compared with the `v1,` signature; a recent timestamp. The parsed body.
fn verified(request: &Request, secret: &str) -> Value {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    assert!(
        signature.split(' ').any(|s| s == expected),
        "signature {signature} is not {expected}"
    );
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp {timestamp} is recent");
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    serde_json::from_slice(&request.body).unwrap()
}

/// The requests `receiver` got whose body's `type` is `kind`.
async fn of_type(receiver: &MockServer, kind: &str) -> Vec<Request> {
    receiver
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["type"] == kind))
        .collect()
}

async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/omni"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_crm_receives_signed_events_and_a_failing_one_is_retried() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"sid": "SM000000000000000000000000000000e1", "status": "queued"}),
        ))
        .mount(&twilio)
        .await;
    let s = Server::start(&[
        ("OMNI_TWILIO_API_URL", &twilio.uri()),
        ("OMNI_ALLOW_HTTP_WEBHOOKS", "true"),
    ])
    .await;
    let key = s.twilio_tenant("crm", TOKEN, NUMBER).await;
    let crm = receiver(204).await;
    let crm_url = format!("{}/omni", crm.uri());

    // Bad input is a 400 naming what is wrong; nothing private, link-local or not HTTP(S).
    for (body, why) in [
        (
            json!({"url": "http://10.0.0.7/omni", "events": ["message.received"]}),
            "private",
        ),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data/", "events": ["message.received"]}),
            "metadata",
        ),
        (
            json!({"url": "ftp://crm.example.org/", "events": ["message.received"]}),
            "https",
        ),
        (json!({"url": crm_url, "events": []}), "at least one"),
        (
            json!({"url": crm_url, "events": ["message.deleted"]}),
            "message.deleted",
        ),
        (json!({"url": crm_url}), "events"),
    ] {
        let (st, b) = s.api(&key, Method::POST, "/v1/webhooks", Some(body)).await;
        assert_eq!(
            (st, b["code"].as_str()),
            (400, Some("invalid_request")),
            "{why}: {b}"
        );
        assert!(b["error"].as_str().unwrap().contains(why), "{why}: {b}");
    }

    let (st, created) = s
        .api(
            &key,
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": crm_url, "events": ["message.received", "message.sent", "message.status"], "description": "CRM"})),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["enabled"], true);
    assert_eq!(created["description"], "CRM");
    let (st, listed) = s.api(&key, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(st, 200);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let (st, shown) = s
        .api(&key, Method::GET, &format!("/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(st, 200);
    for answer in [&listed, &shown] {
        assert!(
            !answer.to_string().contains(&secret),
            "secret shown again: {answer}"
        );
    }

    // An inbound message reaches the CRM, signed, as the dashboards' frame under `data`.
    let mut feed = s.ws(&key).await;
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &[
                ("MessageSid", "SM000000000000000000000000000000a1"),
                ("From", CONTACT),
                ("To", NUMBER),
                ("Body", "Smoke on Elm Street"),
                ("NumMedia", "0"),
                ("AccountSid", ACCOUNT_SID),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(st, 200);
    let frame = feed.next_of("message.received", 10).await.expect("frame");
    let received = s
        .eventually(10, "message.received at the CRM", || async {
            of_type(&crm, "message.received").await.into_iter().next()
        })
        .await;
    let body = verified(&received, &secret);
    assert_eq!(body["data"]["message"]["body"], "Smoke on Elm Street");
    assert_eq!(body["data"]["message"], frame["message"]);
    assert_eq!(body["data"]["conversation_id"], frame["conversation_id"]);
    assert_eq!(body["data"]["tenant_id"], "crm");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(
        of_type(&crm, "conversation.updated").await.is_empty(),
        "only what the endpoint subscribes to"
    );

    // A send: `message.sent` once the carrier took it.
    let message = s.send_sms(&key, CONTACT, "Crew en route").await;
    let sent = s
        .eventually(10, "message.sent at the CRM", || async {
            of_type(&crm, "message.sent").await.into_iter().next()
        })
        .await;
    let body = verified(&sent, &secret);
    assert_eq!(body["data"]["message"]["id"], message.as_str());
    assert_eq!(body["data"]["message"]["status"], "sent");

    // Every delivery is listed with its attempt; each has its own webhook-id.
    let (st, log) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/webhooks/{id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{log}");
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!(items[0]["event_type"], "message.sent");
    assert_eq!(items[1]["event_type"], "message.received");
    for item in items {
        assert_eq!(item["status"], "succeeded");
        assert_eq!(item["attempts"][0]["status_code"], 204);
        assert!(item["attempts"][0]["duration_ms"].is_u64());
        assert!(item.get("payload").is_none());
    }
    assert_ne!(
        received.headers.get("webhook-id"),
        sent.headers.get("webhook-id")
    );

    // A rotated secret signs from then on; the test event shows its attempt.
    let (st, rotated) = s
        .api(
            &key,
            Method::POST,
            &format!("/v1/webhooks/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let (st, test) = s
        .api(&key, Method::POST, &format!("/v1/webhooks/{id}/test"), None)
        .await;
    assert_eq!(st, 200, "{test}");
    assert_eq!(test["status"], "succeeded");
    assert_eq!(test["attempts"][0]["status_code"], 204);
    let tested = of_type(&crm, "webhook.test").await;
    assert_eq!(tested.len(), 1);
    assert_eq!(
        verified(&tested[0], &new_secret)["data"]["webhook_id"],
        id.as_str()
    );

    // A receiver answering 500 is retried about 5 s later; its second answer is a 200.
    let flaky = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&flaky)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&flaky)
        .await;
    let (st, second) = s
        .api(
            &key,
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": format!("{}/hook", flaky.uri()), "events": ["message.status"]})),
        )
        .await;
    assert_eq!(st, 201, "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio/status",
            &[
                ("MessageSid", "SM000000000000000000000000000000e1"),
                ("MessageStatus", "delivered"),
                ("From", NUMBER),
                ("To", CONTACT),
                ("AccountSid", ACCOUNT_SID),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(st, 200);
    let retried = s
        .eventually(
            20,
            "the failed delivery to succeed on its retry",
            || async {
                let (_, log) = s
                    .api(
                        &key,
                        Method::GET,
                        &format!("/v1/webhooks/{second_id}/deliveries"),
                        None,
                    )
                    .await;
                let item = log["items"][0].clone();
                (item["status"] == "succeeded").then_some(item)
            },
        )
        .await;
    let attempts = retried["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{retried}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["error"], "endpoint answered HTTP 500");
    assert_eq!(attempts[1]["status_code"], 200);
    let gap = chrono::DateTime::parse_from_rfc3339(attempts[1]["at"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(attempts[0]["at"].as_str().unwrap()).unwrap();
    assert!(
        gap >= chrono::TimeDelta::seconds(5),
        "retried after about 5 s: {gap}"
    );
    let flaky_requests = flaky.received_requests().await.unwrap();
    assert_eq!(
        flaky_requests[0].headers.get("webhook-id"),
        flaky_requests[1].headers.get("webhook-id"),
        "a retry keeps its webhook-id"
    );
    let body = verified(&flaky_requests[1], second["secret"].as_str().unwrap());
    assert_eq!(body["data"]["message"]["status"], "delivered");
    // The CRM subscribed to message.status too.
    assert_eq!(of_type(&crm, "message.status").await.len(), 1);

    // A delivery is sent again on request.
    let delivery = retried["id"].as_str().unwrap();
    let (st, again) = s
        .api(
            &key,
            Method::POST,
            &format!("/v1/webhooks/{second_id}/deliveries/{delivery}/retry"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["status"], "succeeded");
    assert_eq!(
        again["attempts"].as_array().unwrap().len(),
        3,
        "the history is kept"
    );
    assert_eq!(flaky.received_requests().await.unwrap().len(), 3);
    let (st, missing) = s
        .api(
            &key,
            Method::POST,
            &format!("/v1/webhooks/{second_id}/deliveries/{id}/retry"),
            None,
        )
        .await;
    assert_eq!((st, missing["code"].as_str()), (404, Some("not_found")));

    // Changes are checked like new endpoints; removal ends deliveries.
    let (st, b) = s
        .api(
            &key,
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({"url": "http://192.168.1.10/omni"})),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, patched) = s
        .api(
            &key,
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({"description": null, "enabled": false})),
        )
        .await;
    assert_eq!(st, 200, "{patched}");
    assert_eq!(
        (patched["description"].clone(), patched["enabled"].clone()),
        (Value::Null, json!(false))
    );
    let (st, _) = s
        .api(
            &key,
            Method::DELETE,
            &format!("/v1/webhooks/{second_id}"),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, gone) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/webhooks/{second_id}"),
            None,
        )
        .await;
    assert_eq!((st, gone["code"].as_str()), (404, Some("not_found")));
    let (st, _) = s
        .api(
            &key,
            Method::GET,
            "/v1/webhooks/not-a-uuid/deliveries",
            None,
        )
        .await;
    assert_eq!(st, 404);

    // Who did what is audited, without secrets; no secret reaches the log.
    let (_, audit) = s
        .api(
            &key,
            Method::GET,
            "/v1/audit?action=webhook.rotate_secret",
            None,
        )
        .await;
    assert_eq!(audit["items"][0]["target"], format!("webhook:{id}"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = s.log_text();
    for secret in [&secret, &new_secret] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the log");
        assert!(!audit.to_string().contains(secret.as_str()));
    }
}
