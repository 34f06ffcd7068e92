//! Duplicates and order: every webhook of a realistic exchange delivered three times in a
//! shuffled order ends in the same state as one in-order delivery.
//!
//! Each webhook goes through the real router (signature verification, raw payload, dedupe,
//! queue) and the queue is drained through the conversation updater at random points, so
//! processing interleaves with delivery as it does under `omni serve`.
//!
//! Twilio's inbound webhooks carry no timestamp, so Omni orders a conversation's inbound
//! messages by their first arrival: when a shuffle lets a later message's first copy overtake
//! an earlier one's, the order (and so the last message) follows the arrival. Two schedules
//! therefore: the carrier's first attempts in order with every retry and status callback
//! shuffled anywhere (the whole state must equal the in-order run's), and a free shuffle of
//! all 3N deliveries (everything but the arrival order must equal it, and the order must be
//! the first arrivals').

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Method, Request};
use omni_core::providers::twilio;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

use crate::world::{World, PUBLIC_URL};

const TOKEN: &str = "12345abcdef67890fedcba0987654321";
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const NUMBER: &str = "+15555550100";
const CALLER: &str = "+15555550123";
const NEIGHBOUR: &str = "+15555550177";

/// Twilio's Messages endpoint: the SID of a send is derived from its body ("Reply N"), so
/// every world gets the same SIDs.
struct SidFromBody;

impl Respond for SidFromBody {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let body: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
        let text = &body.iter().find(|(k, _)| k == "Body").unwrap().1;
        let n: u32 = text.trim_start_matches("Reply ").parse().unwrap();
        ResponseTemplate::new(201).set_body_json(
            json!({"sid": reply_sid(n), "status": "queued", "account_sid": ACCOUNT_SID}),
        )
    }
}

fn reply_sid(n: u32) -> String {
    format!("SM{n:032}")
}

/// One webhook: its path and form.
#[derive(Debug, Clone)]
struct Webhook {
    path: &'static str,
    params: Vec<(&'static str, String)>,
    /// An inbound message (rather than a status callback): its conversation key.
    inbound: Option<(&'static str, &'static str)>,
}

fn inbound(sid: &str, from: &'static str, channel: &'static str, body: &str) -> Webhook {
    let (from_param, to_param) = if channel == "whatsapp" {
        (format!("whatsapp:{from}"), format!("whatsapp:{NUMBER}"))
    } else {
        (from.to_string(), NUMBER.to_string())
    };
    Webhook {
        path: "/webhooks/twilio",
        params: vec![
            ("MessageSid", sid.into()),
            ("SmsMessageSid", sid.into()),
            ("AccountSid", ACCOUNT_SID.into()),
            ("From", from_param),
            ("To", to_param),
            ("Body", body.into()),
            ("NumMedia", "0".into()),
        ],
        inbound: Some((channel, from)),
    }
}

fn status(n: u32, to: &str, channel: &str, status: &str, error: Option<&str>) -> Webhook {
    let (from_param, to_param) = if channel == "whatsapp" {
        (format!("whatsapp:{NUMBER}"), format!("whatsapp:{to}"))
    } else {
        (NUMBER.to_string(), to.to_string())
    };
    let mut params = vec![
        ("MessageSid", reply_sid(n)),
        ("SmsSid", reply_sid(n)),
        ("AccountSid", ACCOUNT_SID.into()),
        ("MessageStatus", status.into()),
        ("SmsStatus", status.into()),
        ("From", from_param),
        ("To", to_param),
        ("ApiVersion", "2010-04-01".into()),
    ];
    if let Some(code) = error {
        params.push(("ErrorCode", code.into()));
    }
    Webhook {
        path: "/webhooks/twilio/status",
        params,
        inbound: None,
    }
}

/// A 911 text exchange with two contacts, in the order the carrier sends it: the caller's
/// messages (SMS, then WhatsApp), a neighbour's MMS, and the status callbacks of the three
/// replies the dispatcher sent before (delivered, undelivered with an error, read).
fn exchange() -> Vec<Webhook> {
    let mut mms = inbound(
        "MMin0000000000000000000000000003",
        NEIGHBOUR,
        "mms",
        "photo of the smoke",
    );
    // MMS and SMS with one contact are one conversation.
    mms.inbound = Some(("sms", NEIGHBOUR));
    mms.params.retain(|(k, _)| *k != "NumMedia");
    mms.params.extend([
        ("NumMedia", "2".to_string()),
        ("MediaUrl0", "https://api.twilio.com/media/ME01".to_string()),
        ("MediaContentType0", "image/jpeg".to_string()),
        ("MediaUrl1", "https://api.twilio.com/media/ME02".to_string()),
        ("MediaContentType1", "video/mp4".to_string()),
    ]);
    vec![
        inbound(
            "SMin0000000000000000000000000001",
            CALLER,
            "sms",
            "There is smoke on 5th street",
        ),
        inbound(
            "SMin0000000000000000000000000002",
            CALLER,
            "sms",
            "Second floor, two people inside",
        ),
        status(1, CALLER, "sms", "sent", None),
        status(1, CALLER, "sms", "delivered", None),
        mms,
        status(2, NEIGHBOUR, "sms", "sent", None),
        status(2, NEIGHBOUR, "sms", "undelivered", Some("30003")),
        inbound(
            "SMin0000000000000000000000000004",
            CALLER,
            "whatsapp",
            "I can see the trucks",
        ),
        status(3, CALLER, "whatsapp", "sent", None),
        status(3, CALLER, "whatsapp", "delivered", None),
        status(3, CALLER, "whatsapp", "read", None),
        inbound(
            "SMin0000000000000000000000000005",
            NEIGHBOUR,
            "sms",
            "Thank you",
        ),
        inbound(
            "SMin0000000000000000000000000006",
            CALLER,
            "sms",
            "They are out, everyone is safe",
        ),
    ]
}

/// A world with the tenant, its carrier fake, and the three replies already sent.
async fn world(fake: &MockServer) -> (World, String) {
    let world = World::new(&fake.uri());
    let key = world.tenant("north").await;
    world
        .provider(
            "north",
            "twilio",
            json!({"account_sid": ACCOUNT_SID, "auth_token": TOKEN}),
            NUMBER,
            &["sms", "mms", "whatsapp"],
        )
        .await;
    for (n, to, channel) in [
        (1, CALLER, "sms"),
        (2, NEIGHBOUR, "sms"),
        (3, CALLER, "whatsapp"),
    ] {
        let (status, body) = world
            .api(
                &key,
                Method::POST,
                "/v1/messages",
                Some(json!({"channel": channel, "to": to, "body": format!("Reply {n}")})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    world.drain(true).await;
    (world, key)
}

/// Posts one signed webhook; it must be acknowledged.
async fn post(world: &World, webhook: &Webhook) {
    let signature = twilio::signature(
        &format!("{PUBLIC_URL}{}", webhook.path),
        &webhook.params,
        TOKEN,
    );
    let request = Request::post(webhook.path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Body::from(
            serde_urlencoded::to_string(&webhook.params).unwrap(),
        ))
        .unwrap();
    let reply = world.call(request).await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
}

/// The tenant's state, without ids and arrival timestamps: conversations keyed by
/// (channel, contact) in list order, each with its counts, last message and messages (newest
/// first) with their status history.
async fn snapshot(world: &World, key: &str) -> Vec<(String, Value)> {
    let (status, list) = world
        .api(key, Method::GET, "/v1/conversations?limit=200", None)
        .await;
    assert_eq!(status, 200);
    let mut out = Vec::new();
    for c in list["items"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let (_, page) = world
            .api(
                key,
                Method::GET,
                &format!("/v1/conversations/{id}/messages?limit=200"),
                None,
            )
            .await;
        let mut messages = Vec::new();
        for m in page["items"].as_array().unwrap() {
            let mid = m["id"].as_str().unwrap();
            let (_, full) = world
                .api(key, Method::GET, &format!("/v1/messages/{mid}"), None)
                .await;
            let events: Vec<Value> = full["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| json!([e["status"], e["source"]]))
                .collect();
            messages.push(json!({
                "direction": full["direction"], "channel": full["channel"],
                "from": full["from"], "to": full["to"], "body": full["body"],
                "media": full["media"], "status": full["status"],
                "provider": full["provider"], "provider_message_id": full["provider_message_id"],
                "error_code": full["error_code"], "error_message": full["error_message"],
                "starred": full["starred"], "events": events,
            }));
        }
        let conversation_key = format!(
            "{} {}",
            c["channel"].as_str().unwrap(),
            c["contact"].as_str().unwrap()
        );
        out.push((
            conversation_key,
            json!({
                "tenant_number": c["tenant_number"],
                "unread_count": c["unread_count"],
                "starred_count": c["starred_count"],
                "last_message": [c["last_message"]["body"], c["last_message"]["direction"]],
                "messages": messages,
            }),
        ));
    }
    out
}

/// The parts of a snapshot that do not depend on arrival order: conversations by key,
/// messages by carrier id, no last message.
fn order_free(snapshot: &[(String, Value)]) -> BTreeMap<String, Value> {
    snapshot
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            let mut messages = v["messages"].as_array().unwrap().clone();
            messages.sort_by_key(|m| m["provider_message_id"].as_str().unwrap_or("").to_string());
            v["messages"] = Value::Array(messages);
            v.as_object_mut().unwrap().remove("last_message");
            (k.clone(), v)
        })
        .collect()
}

/// Delivers `schedule` (indexes into `webhooks`), draining the queue at random points.
async fn run(world: &World, webhooks: &[Webhook], schedule: &[usize], rng: &mut StdRng) {
    for &i in schedule {
        post(world, &webhooks[i]).await;
        if rng.gen_bool(0.3) {
            world.drain(false).await;
        }
    }
    world.drain(false).await;
}

/// Three copies of each webhook, the first copies of inbound messages in the carrier's
/// order, every other copy anywhere after its own first copy, status callbacks anywhere.
fn carrier_order_schedule(webhooks: &[Webhook], rng: &mut StdRng) -> Vec<usize> {
    let mut schedule: Vec<usize> = (0..webhooks.len())
        .filter(|&i| webhooks[i].inbound.is_some())
        .collect();
    let mut rest: Vec<usize> = Vec::new();
    for (i, w) in webhooks.iter().enumerate() {
        let copies = if w.inbound.is_some() { 2 } else { 3 };
        rest.extend(std::iter::repeat_n(i, copies));
    }
    rest.shuffle(rng);
    for i in rest {
        let earliest = match webhooks[i].inbound {
            Some(_) => schedule.iter().position(|&j| j == i).unwrap() + 1,
            None => 0,
        };
        let at = rng.gen_range(earliest..=schedule.len());
        schedule.insert(at, i);
    }
    schedule
}

async fn reference(fake: &MockServer, webhooks: &[Webhook]) -> Vec<(String, Value)> {
    let (world, key) = world(fake).await;
    for w in webhooks {
        post(&world, w).await;
        world.drain(false).await;
    }
    snapshot(&world, &key).await
}

async fn carrier_fake() -> MockServer {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("/Messages.json$"))
        .respond_with(SidFromBody)
        .mount(&fake)
        .await;
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shuffled_copies_with_first_attempts_in_order_end_in_the_in_order_state() {
    let fake = carrier_fake().await;
    let webhooks = exchange();
    let expected = reference(&fake, &webhooks).await;
    // The in-order run is what the story says.
    let caller = &expected
        .iter()
        .find(|(k, _)| k == "sms +15555550123")
        .unwrap()
        .1;
    assert_eq!(caller["unread_count"], 3);
    assert_eq!(
        caller["last_message"],
        json!(["They are out, everyone is safe", "inbound"])
    );
    // SMS and MMS share a conversation: the caller on SMS and on WhatsApp, the neighbour.
    assert_eq!(expected.len(), 3, "{expected:#?}");

    for seed in 1..=4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let schedule = carrier_order_schedule(&webhooks, &mut rng);
        assert_eq!(schedule.len(), webhooks.len() * 3);
        let (world, key) = world(&fake).await;
        run(&world, &webhooks, &schedule, &mut rng).await;
        let got = snapshot(&world, &key).await;
        assert_eq!(got, expected, "seed {seed}: schedule {schedule:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_freely_shuffled_copies_end_in_the_same_state_ordered_by_first_arrival() {
    let fake = carrier_fake().await;
    let webhooks = exchange();
    let expected = reference(&fake, &webhooks).await;

    for seed in 1..=4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut schedule: Vec<usize> = (0..webhooks.len()).flat_map(|i| [i; 3]).collect();
        schedule.shuffle(&mut rng);
        let (world, key) = world(&fake).await;
        run(&world, &webhooks, &schedule, &mut rng).await;
        let got = snapshot(&world, &key).await;
        assert_eq!(
            order_free(&got),
            order_free(&expected),
            "seed {seed}: schedule {schedule:?}"
        );
        // Each conversation's last message is the inbound message whose first copy came
        // last (the replies were sent before any webhook).
        let mut first_seen = Vec::new();
        for &i in &schedule {
            if webhooks[i].inbound.is_some() && !first_seen.contains(&i) {
                first_seen.push(i);
            }
        }
        for (key, conversation) in &got {
            let last = first_seen
                .iter()
                .rev()
                .map(|&i| &webhooks[i])
                .find(|w| {
                    let (channel, contact) = w.inbound.unwrap();
                    *key == format!("{channel} {contact}")
                })
                .map(|w| {
                    w.params
                        .iter()
                        .find(|(k, _)| *k == "Body")
                        .unwrap()
                        .1
                        .clone()
                });
            let want = match last {
                Some(body) => json!([body, "inbound"]),
                None => conversation["last_message"].clone(),
            };
            assert_eq!(conversation["last_message"], want, "seed {seed}: {key}");
        }
    }
}
