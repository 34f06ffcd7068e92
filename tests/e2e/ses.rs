//! Amazon SES over Amazon SNS end to end (`POST /webhooks/ses` on the real `omni serve`): an AWS
//! fake serves the test signing certificate (`OMNI_SNS_CERT_URL_PREFIX`), SES's send API and
//! the subscription URL. A subscription to the tenant's topic is confirmed (another topic's is
//! refused without a fetch), received email lands in the conversation once however often SNS
//! redelivers it, an SES event moves an email sent through SES, and a bad signature or another
//! tenant's topic is refused with nothing stored. `omni webhook send ses` explains why it
//! cannot sign as AWS.

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{self, Server};
use crate::sns_signer;

const NORTH_TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:north-ses";
const SOUTH_TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:south-ses";
const ADDRESS: &str = "dispatch@north.example";
const CONTACT: &str = "jane@example.org";
const SES_ID: &str = "0100019a-e2e-ses-message-id-000000";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// An SNS message as SNS posts it, signed with the test key whose certificate the AWS fake
/// serves.
fn sns(aws: &MockServer, kind: &str, topic: &str, message: &str, extra: Value) -> String {
    let mut m = json!({
        "Type": kind,
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": topic,
        "Message": message,
        "Timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "SigningCertURL": format!("{}/SimpleNotificationService-test.pem", aws.uri()),
    });
    m.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    sns_signer::sign(&mut m);
    m.to_string()
}

/// The SES receipt notification fixture (an email from Jane to `dispatch@north.example`).
fn receipt() -> String {
    fixture("ses_sns_received.json")
}

async fn post(s: &Server, body: String) -> (u16, Value) {
    let request = s
        .http
        .post(s.url("/webhooks/ses"))
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body);
    harness::send(request).await
}

async fn ses_tenant(s: &Server, id: &str, topic: &str, address: &str) -> String {
    let config = json!({"access_key_id": "AKIAE2ESNSTESTING", "secret_access_key":
        format!("e2e-{id}-ses-secret-access-key"), "region": "eu-west-1",
        "sns_topic_arns": [topic]});
    s.carrier_tenant(id, "ses", config, address, &["email"])
        .await
}

#[tokio::test]
async fn ses_over_sns_confirms_receives_and_moves_statuses() {
    let aws = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/SimpleNotificationService-test.pem"))
        .respond_with(ResponseTemplate::new(200).set_body_string(sns_signer::CERT_PEM))
        .mount(&aws)
        .await;
    Mock::given(method("GET"))
        .and(path("/confirm"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<ConfirmSubscriptionResponse/>"))
        .expect(1)
        .mount(&aws)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/email/outbound-emails"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"MessageId": SES_ID})))
        .mount(&aws)
        .await;
    let s = Server::start(&[
        ("OMNI_SES_API_URL", &aws.uri()),
        ("OMNI_SNS_CERT_URL_PREFIX", &aws.uri()),
    ])
    .await;
    let key = ses_tenant(&s, "north", NORTH_TOPIC, ADDRESS).await;
    let south = ses_tenant(&s, "south", SOUTH_TOPIC, "alerts@south.example").await;

    // A topic no tenant lists: refused, its SubscribeURL never called (the fake expects one
    // call, the one below).
    let confirm = |topic: &str| {
        sns(
            &aws,
            "SubscriptionConfirmation",
            topic,
            "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
            json!({"SubscribeURL": format!("{}/confirm", aws.uri()), "Token": "2336412f37fb"}),
        )
    };
    let (st, b) = post(&s, confirm("arn:aws:sns:eu-west-1:123456789012:nobody")).await;
    assert_eq!((st, b["code"].as_str()), (404, Some("not_found")), "{b}");
    let (st, b) = post(&s, confirm(NORTH_TOPIC)).await;
    assert_eq!(st, 200, "{b}");

    // Received email, redelivered: one message in the conversation.
    let subject = json!({"Subject": "Amazon SES Email Receipt Notification"});
    let email = sns(
        &aws,
        "Notification",
        NORTH_TOPIC,
        &receipt(),
        subject.clone(),
    );
    for _ in 0..2 {
        let (st, b) = post(&s, email.clone()).await;
        assert_eq!(st, 200, "{b}");
    }
    let messages = s
        .eventually(10, "the received email", || async {
            let m = s.conversation_messages(&key).await;
            (!m.is_empty()).then_some(m)
        })
        .await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        messages[0]["body"],
        "There is smoke coming from 12 Elm Street."
    );
    assert_eq!(messages[0]["direction"], "inbound");
    assert_eq!(messages[0]["from"], CONTACT);

    // A bad signature, and north's address on south's (validly signed) topic: refused,
    // nothing stored.
    let mut forged: Value = serde_json::from_str(&email).unwrap();
    forged["Message"] = receipt().replace("smoke", "fire").into();
    let (st, b) = post(&s, forged.to_string()).await;
    assert_eq!(
        (st, b["code"].as_str()),
        (401, Some("invalid_signature")),
        "{b}"
    );
    let foreign = receipt().replace("o3vrnil0e2ic", "other0e2ic");
    let (st, b) = post(
        &s,
        sns(&aws, "Notification", SOUTH_TOPIC, &foreign, subject),
    )
    .await;
    assert_eq!((st, b["code"].as_str()), (404, Some("not_found")), "{b}");
    let (st, b) = post(&s, "{not sns".into()).await;
    assert_eq!(st, 400, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.conversation_messages(&key).await.len(), 1);
    assert!(s.conversation_messages(&south).await.is_empty());

    // An email sent through SES, then SES's Delivery event over SNS (a configuration set's
    // SNS destination publishes the EventBridge detail as is).
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "email", "from": ADDRESS, "to": CONTACT,
                "body": "Units are on the way"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap();
    s.message_reaching(&key, id, "sent").await;
    let event = json!({
        "eventType": "Delivery",
        "mail": {"timestamp": "2026-11-30T12:00:00.000Z", "source": ADDRESS, "messageId": SES_ID,
            "destination": [CONTACT], "tags": {"omni_message_id": [id]}},
        "delivery": {"timestamp": "2026-11-30T12:00:01.000Z", "recipients": [CONTACT],
            "smtpResponse": "250 2.6.0 Message received"},
    });
    let (st, b) = post(
        &s,
        sns(
            &aws,
            "Notification",
            NORTH_TOPIC,
            &event.to_string(),
            json!({}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let delivered = s.message_reaching(&key, id, "delivered").await;
    assert_eq!(delivered["provider"], "ses");

    // The CLI cannot sign as AWS and says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omni"))
        .args(["webhook", "send", "ses", "--tenant", "north"])
        .args(["--from", CONTACT, "--to", ADDRESS, "--body", "hi"])
        .args(["--url", &s.url("")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot sign as AWS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
