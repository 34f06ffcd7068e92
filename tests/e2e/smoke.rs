//! The basic loop: a signed inbound webhook appears in the conversation list and on the feed.

use reqwest::Method;
use serde_json::json;

use crate::harness::Server;

const TOKEN: &str = "12345abcdef67890fedcba0987654321";

#[tokio::test]
async fn inbound_twilio_message_reaches_the_conversation_and_the_feed() {
    let server = Server::start(&[]).await;
    let key = server.twilio_tenant("north", TOKEN, "+15555550100").await;
    let mut feed = server.ws(&key).await;

    let (status, body) = server
        .twilio_webhook(
            "/webhooks/twilio",
            &[
                ("MessageSid", "SM0001"),
                ("From", "+15555550123"),
                ("To", "+15555550100"),
                ("Body", "Smoke on 5th street"),
                ("NumMedia", "0"),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Response/>"), "{body}");

    let pushed = feed
        .next_of("message.received", 10)
        .await
        .expect("message.received pushed");
    assert_eq!(pushed["message"]["body"], "Smoke on 5th street");
    assert_eq!(pushed["tenant_id"], "north");

    let (s, list) = server
        .api(&key, Method::GET, "/v1/conversations", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["items"][0]["contact"], "+15555550123");
    assert_eq!(list["items"][0]["unread_count"], 1);
    assert_eq!(
        list["items"][0]["last_message"]["body"],
        "Smoke on 5th street"
    );

    let (s, err) = server
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": "not a number", "body": "x"})),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(err["code"], "invalid_phone_number");
    assert!(err["request_id"].as_str().is_some_and(|r| !r.is_empty()));
}
