//! Scheduled sends (`send_at`, `DELETE /v1/messages/{id}`), priorities and paced numbers
//! through `omni serve`, against a Twilio fake that notes when each request arrives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::{Server, ACCOUNT_SID};

const TOKEN: &str = "12345abcdef67890fedcba0987654321";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

/// Accepts every message after `delay`, noting each one's body and arrival time.
#[derive(Clone, Default)]
struct Carrier {
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
    delay: Duration,
}

impl Respond for Carrier {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
        let body = form
            .into_iter()
            .find(|(k, _)| k == "Body")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push((body, Instant::now()));
        let sid = format!("SM{:032}", arrivals.len());
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": sid, "status": "queued", "account_sid": ACCOUNT_SID}))
            .set_delay(self.delay)
    }
}

impl Carrier {
    fn bodies(&self) -> Vec<String> {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| b.clone())
            .collect()
    }
}

/// `omni serve` with tenant `north` on Twilio, whose API is `carrier`.
async fn serve(carrier: &(impl Respond + Clone + 'static)) -> (MockServer, Server, String) {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(carrier.clone())
        .mount(&fake)
        .await;
    let s = Server::start(&[("OMNI_TWILIO_API_URL", &fake.uri())]).await;
    let key = s.twilio_tenant("north", TOKEN, NUMBER).await;
    (fake, s, key)
}

async fn send(s: &Server, key: &str, body: Value) -> (u16, Value) {
    s.api(key, Method::POST, "/v1/messages", Some(body)).await
}

fn statuses(m: &Value) -> Vec<String> {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_scheduled_message_waits_survives_a_restart_and_goes_out_when_due() {
    let carrier = Carrier::default();
    let (_fake, s, key) = serve(&carrier).await;
    let send_at = Utc::now() + TimeDelta::seconds(4);
    let (st, m) = send(
        &s,
        &key,
        json!({"channel": "sms", "to": CONTACT, "body": "Shift starts now", "send_at": send_at.to_rfc3339()}),
    )
    .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["priority"], "normal");
    let id = m["id"].as_str().unwrap().to_owned();
    assert_eq!(
        m["send_at"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()),
        Some(send_at)
    );

    // Stopped and started again before it is due: the schedule is in the database.
    let s = s.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        carrier.bodies().is_empty(),
        "nothing goes out before send_at"
    );
    let sent = s.message_reaching(&key, &id, "sent").await;
    assert_eq!(statuses(&sent), ["scheduled", "queued", "sent"]);
    assert_eq!(carrier.bodies().len(), 1);
    // Released from the schedule at or after its time, not before.
    let released: chrono::DateTime<Utc> =
        sent["events"][1]["at"].as_str().unwrap().parse().unwrap();
    assert!(
        released >= send_at,
        "queued at {released}, due at {send_at}"
    );
}

#[tokio::test]
async fn a_canceled_message_is_never_sent_and_sending_cannot_be_undone() {
    let carrier = Carrier::default();
    let (_fake, s, key) = serve(&carrier).await;
    let at = |secs| (Utc::now() + TimeDelta::seconds(secs)).to_rfc3339();
    let (st, m) = send(
        &s,
        &key,
        json!({"channel": "sms", "to": CONTACT, "body": "Never", "send_at": at(2)}),
    )
    .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/messages/{id}");
    let (st, canceled) = s.api(&key, Method::DELETE, &path, None).await;
    assert_eq!(st, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(statuses(&canceled), ["scheduled", "canceled"]);
    let (st, again) = s.api(&key, Method::DELETE, &path, None).await;
    assert_eq!(st, 409, "{again}");
    assert_eq!(again["code"], "conflict");

    // Past its time: still canceled, nothing sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, read) = s.api(&key, Method::GET, &path, None).await;
    assert_eq!(read["status"], "canceled");
    assert!(carrier.bodies().is_empty());

    // Once sent, a message cannot be canceled.
    let sent = s.send_sms(&key, CONTACT, "Now").await;
    s.message_reaching(&key, &sent, "sent").await;
    let (st, body) = s
        .api(&key, Method::DELETE, &format!("/v1/messages/{sent}"), None)
        .await;
    assert_eq!(st, 409, "{body}");
    let (st, _) = s
        .api(
            &key,
            Method::DELETE,
            &format!("/v1/messages/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // Out of range: refused before anything is stored.
    for (send_at, why) in [(at(-3600), "in the past"), (at(36 * 86_400), "35 days")] {
        let (st, body) = send(
            &s,
            &key,
            json!({"channel": "sms", "to": CONTACT, "body": "x", "send_at": send_at}),
        )
        .await;
        assert_eq!(st, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }
    let (st, body) = send(
        &s,
        &key,
        json!({"channel": "sms", "to": CONTACT, "body": "x", "priority": "urgent"}),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let (_, log) = s
        .api(&key, Method::GET, "/v1/messages?limit=50", None)
        .await;
    assert_eq!(
        log["items"].as_array().unwrap().len(),
        2,
        "only the canceled and the sent message are stored: {log}"
    );
}

#[tokio::test]
async fn a_high_priority_message_overtakes_queued_bulk_ones() {
    // A slow carrier (about 300 sends a second at the runner's 64 in flight), so a batch of
    // a thousand bulk messages piles up in the queue.
    let carrier = Carrier {
        delay: Duration::from_millis(200),
        ..Carrier::default()
    };
    let (_fake, s, key) = serve(&carrier).await;
    let bulk: Vec<Value> = (0..1000)
        .map(|i| json!({"channel": "sms", "to": CONTACT, "body": format!("bulk {i}"), "priority": "bulk"}))
        .collect();
    let (st, body) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages/batch",
            Some(json!({"messages": bulk})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, m) = send(
        &s,
        &key,
        json!({"channel": "sms", "to": CONTACT, "body": "URGENT", "priority": "high"}),
    )
    .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["priority"], "high");
    s.message_reaching(&key, m["id"].as_str().unwrap(), "sent")
        .await;
    let bodies = carrier.bodies();
    let position = bodies.iter().position(|b| b == "URGENT").unwrap();
    // Only the bulk messages sent while the batch was being accepted, and those in flight,
    // go before it: hundreds still wait behind it.
    assert!(
        position < 800,
        "the urgent message was carrier request {position} of 1001"
    );
}

#[tokio::test]
async fn a_paced_number_sends_no_faster_than_its_max_per_second() {
    let carrier = Carrier::default();
    let (_fake, s, key) = serve(&carrier).await;
    let (st, body) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "twilio", "channels": ["sms"], "max_per_second": 2})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["max_per_second"], 2);
    let (st, body) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{NUMBER}"),
            Some(json!({"provider": "twilio", "channels": ["sms"], "max_per_second": 0})),
        )
        .await;
    assert_eq!(st, 400, "{body}");

    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(s.send_sms(&key, CONTACT, &format!("paced {i}")).await);
    }
    for id in &ids {
        let sent = s.message_reaching(&key, id, "sent").await;
        // A paced wait is no failed attempt: nothing in the history but the send.
        assert_eq!(statuses(&sent), ["queued", "sent"], "{sent}");
    }
    let mut times: Vec<Instant> = carrier
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t)
        .collect();
    times.sort();
    assert_eq!(times.len(), 6);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        // 500 ms apart, less the scheduling jitter of a busy test machine.
        assert!(gap >= Duration::from_millis(450), "sends {gap:?} apart");
    }
}

/// A Twilio fake refusing WhatsApp for good (63016: outside the 24-hour window) when asked,
/// accepting everything else; notes each request's `To`.
#[derive(Clone, Default)]
struct Channels {
    refuse_whatsapp: bool,
    to: Arc<Mutex<Vec<String>>>,
}

impl Respond for Channels {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
        let to = form
            .into_iter()
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let mut seen = self.to.lock().unwrap();
        seen.push(to.clone());
        if self.refuse_whatsapp && to.starts_with("whatsapp:") {
            return ResponseTemplate::new(400).set_body_json(json!({"code": 63016, "message": "Failed to send freeform message because you are outside the allowed window", "status": 400}));
        }
        let sid = format!("SM{:032}", seen.len());
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": sid, "status": "queued", "account_sid": ACCOUNT_SID}))
    }
}

async fn twilio_status(s: &Server, sid: &str, status: &str) {
    let (st, body) = s
        .twilio_webhook(
            "/webhooks/twilio/status",
            &[
                ("MessageSid", sid),
                ("MessageStatus", status),
                ("From", &format!("whatsapp:{NUMBER}")),
                ("To", &format!("whatsapp:{CONTACT}")),
                ("AccountSid", ACCOUNT_SID),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test]
async fn a_whatsapp_message_refused_for_good_falls_back_to_sms_as_the_same_message() {
    let carrier = Channels {
        refuse_whatsapp: true,
        ..Channels::default()
    };
    let (_fake, s, key) = serve(&carrier).await;
    let (st, m) = send(
        &s,
        &key,
        json!({"channel": "whatsapp", "to": CONTACT, "body": "Unit 12 is on its way",
               "fallback": [{"channel": "sms", "after_secs": 300}]}),
    )
    .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(
        m["fallback"],
        json!([{"channel": "sms", "after_secs": 300}])
    );
    let sent = s
        .message_reaching(&key, m["id"].as_str().unwrap(), "sent")
        .await;
    assert_eq!(sent["channel"], "sms");
    assert!(sent.get("fallback").is_none(), "{sent}");
    assert_eq!(statuses(&sent), ["queued", "queued", "sent"]);
    let note = sent["events"][1]["note"].as_str().unwrap();
    assert!(
        note.starts_with("fallback from whatsapp to sms") && note.contains("63016"),
        "{note}"
    );
    assert_eq!(
        *carrier.to.lock().unwrap(),
        [format!("whatsapp:{CONTACT}"), CONTACT.to_owned()]
    );
}

#[tokio::test]
async fn an_undelivered_message_falls_back_after_its_wait_and_a_late_receipt_sends_nothing_more() {
    let carrier = Channels::default();
    let (_fake, s, key) = serve(&carrier).await;
    // The tenant's default for WhatsApp sends, checked as a send's would be.
    let (st, body) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/fallback",
            Some(json!({"whatsapp": [{"channel": "email", "after_secs": 2}]})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/fallback",
            Some(json!({"whatsapp": [{"channel": "sms", "after_secs": 2}]})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (_, read) = s
        .admin(Method::GET, "/v1/admin/tenants/north/fallback", None)
        .await;
    assert_eq!(
        read,
        json!({"whatsapp": [{"channel": "sms", "after_secs": 2}]})
    );

    // Delivered in time: nothing more is sent.
    let (_, on_time) = send(
        &s,
        &key,
        json!({"channel": "whatsapp", "to": CONTACT, "body": "On time"}),
    )
    .await;
    assert_eq!(on_time["fallback"][0]["channel"], "sms", "{on_time}");
    let first = s
        .message_reaching(&key, on_time["id"].as_str().unwrap(), "sent")
        .await;
    twilio_status(
        &s,
        first["provider_message_id"].as_str().unwrap(),
        "delivered",
    )
    .await;

    // Not delivered within 2 s: the same message goes by SMS.
    let (_, late) = send(
        &s,
        &key,
        json!({"channel": "whatsapp", "to": CONTACT, "body": "Are you safe?"}),
    )
    .await;
    let id = late["id"].as_str().unwrap().to_owned();
    let whatsapp = s.message_reaching(&key, &id, "sent").await;
    let whatsapp_sid = whatsapp["provider_message_id"].as_str().unwrap().to_owned();
    let by_sms = s
        .eventually(15, "the fallback to SMS", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["channel"] == "sms" && m["status"] == "sent").then_some(m)
        })
        .await;
    let note = by_sms["events"][2]["note"].as_str().unwrap();
    assert!(note.contains("not delivered within 2 s"), "{note}");
    // The WhatsApp message arrives after all: recorded, and nothing else is sent.
    twilio_status(&s, &whatsapp_sid, "delivered").await;
    s.message_reaching(&key, &id, "delivered").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to = carrier.to.lock().unwrap().clone();
    assert_eq!(
        to,
        [
            format!("whatsapp:{CONTACT}"),
            format!("whatsapp:{CONTACT}"),
            CONTACT.to_owned()
        ],
        "one WhatsApp send each and one SMS for the late one"
    );
    let (_, on_time) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/messages/{}", on_time["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(on_time["status"], "delivered");
    assert_eq!(on_time["channel"], "whatsapp");

    // A fallback to the channel itself, or to one no number carries, is refused.
    for (fallback, code) in [
        (json!([{"channel": "whatsapp", "after_secs": 5}]), 400),
        (json!([{"channel": "rcs", "after_secs": 5}]), 422),
    ] {
        let (st, body) = send(
            &s,
            &key,
            json!({"channel": "whatsapp", "to": CONTACT, "body": "x", "fallback": fallback}),
        )
        .await;
        assert_eq!(st, code, "{body}");
    }
}
