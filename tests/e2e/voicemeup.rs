//! VoiceMeUp end to end: the split MMS (text half with an `.mms.html` wrapper, media half)
//! merged into one message in either order and under redelivery, a text half whose media
//! never comes delivered alone after the wait, a wrong callback secret refused with nothing
//! stored, and a reply through a VoiceMeUp API fake with the documented form.

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const TOKEN: &str = "vmu-auth-token-0001-secret";
const SECRET: &str = "vmu-callback-secret-0001";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";

fn half(hash: &str, at: &str, text: &str, attachment: (&str, &str)) -> Value {
    json!({"sms_hash": hash, "source_number": "15555550123", "destination_number": "15555550100",
        "datetime_transmission": at, "direction": "inbound", "message": text,
        "attachment": attachment.0, "attachment_mime_type": attachment.1})
}

fn text_half(hash: &str, at: &str, text: &str) -> Value {
    half(
        hash,
        at,
        text,
        (
            "https://clients.voicemeup.com/files/0001.mms.html",
            "text/html",
        ),
    )
}

fn media_half(hash: &str, at: &str) -> Value {
    half(
        hash,
        at,
        "",
        ("https://clients.voicemeup.com/files/0001.jpg", "image/jpeg"),
    )
}

async fn post(s: &Server, secret: &str, body: &Value) -> (u16, String) {
    let resp = s
        .http
        .post(s.url(&format!("/webhooks/voicemeup?secret={secret}")))
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Tenant `east` with VoiceMeUp credentials and [`NUMBER`]; returns its API key.
async fn east(s: &Server) -> String {
    let key = s.tenant("east").await;
    let config =
        json!({"username": "east-dispatch", "auth_token": TOKEN, "webhook_secret": SECRET});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/east/providers/voicemeup",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/east/numbers/{NUMBER}"),
            Some(json!({"provider": "voicemeup", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    key
}

#[tokio::test]
async fn voicemeup_split_mms_merges_once_lone_text_waits_and_reply_has_the_form_shape() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1.1/json/queue_sms"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"response_details": {
            "response_status": "success",
            "response_messages": {"message": [{"code": "queued_sms_hash", "_content": "vmu-out-1"}]}}})))
        .expect(1)
        .mount(&api)
        .await;
    let api_url = format!("{}/api/v1.1/json", api.uri());
    let s = Server::start(&[
        ("OMNI_VOICEMEUP_API_URL", api_url.as_str()),
        ("OMNI_VOICEMEUP_MMS_WAIT_SECS", "2"),
    ])
    .await;
    let key = east(&s).await;

    // A wrong or missing secret: a 401 JSON error, nothing stored.
    let forged = text_half("h-forged", "2025-01-01 11:00:00", "forged");
    let (st, body) = post(&s, "not-the-secret", &forged).await;
    assert_eq!(st, 401, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "invalid_signature", "{body}");
    let resp = s
        .http
        .post(s.url("/webhooks/voicemeup"))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Text half first, each half delivered twice: one message, text and media.
    let first = "2025-01-01 12:00:00";
    for body in [
        text_half("h1", first, "see attached"),
        text_half("h1", first, "see attached"),
        media_half("h2", first),
        media_half("h2", first),
    ] {
        assert_eq!(post(&s, SECRET, &body).await, (200, "ok".to_string()));
    }
    let merged = s
        .eventually(10, "the merged MMS", || async {
            let m = s.conversation_messages(&key).await;
            (!m.is_empty()).then_some(m)
        })
        .await;
    assert_eq!(merged.len(), 1, "{merged:?}");
    assert_eq!(merged[0]["provider_message_id"], "h1+h2");
    assert_eq!(merged[0]["body"], "see attached");
    assert_eq!(merged[0]["channel"], "mms");
    assert_eq!(
        merged[0]["media"],
        json!([{"url": "https://clients.voicemeup.com/files/0001.jpg", "content_type": "image/jpeg"}])
    );
    assert!(
        !merged[0].to_string().contains(".mms.html"),
        "the wrapper is not media"
    );

    // Media half first, through the CLI (`--split --media-first`): one more message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omni"))
        .args(["webhook", "send", "voicemeup", "--tenant", "east"])
        .args(["--from", CONTACT, "--to", NUMBER, "--body", "second look"])
        .args(["--media", "https://files.example/b.png", "--id", "cli1"])
        .args(["--split", "--media-first"])
        .args(["--url", &s.base, "--secret", SECRET])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("200 ok")
            .count(),
        2
    );
    let both = s
        .eventually(10, "the CLI's split MMS", || async {
            let m = s.conversation_messages(&key).await;
            (m.len() == 2).then_some(m)
        })
        .await;
    assert_eq!(both[1]["provider_message_id"], "cli1+cli1-media");
    assert_eq!(both[1]["body"], "second look");
    assert_eq!(both[1]["media"][0]["url"], "https://files.example/b.png");

    // A text half whose media never comes: nothing at once, the text alone after the wait.
    let lone = text_half("h3", "2025-01-01 12:05:00", "only words");
    assert_eq!(post(&s, SECRET, &lone).await, (200, "ok".to_string()));
    assert_eq!(
        s.conversation_messages(&key).await.len(),
        2,
        "the text half waits"
    );
    let all = s
        .eventually(15, "the lone text half", || async {
            let m = s.conversation_messages(&key).await;
            (m.len() == 3).then_some(m)
        })
        .await;
    assert_eq!(all[2]["provider_message_id"], "h3");
    assert_eq!(all[2]["body"], "only words");
    assert_eq!(all[2]["channel"], "sms");
    assert_eq!(all[2]["media"], json!([]));

    // The reply goes out as the queue_sms form, one attachment.
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(
                json!({"channel": "mms", "to": CONTACT, "body": "Units are on the way",
                "media_urls": ["https://cdn.example/map.png"]}),
            ),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let sent = s
        .eventually(10, "the VoiceMeUp send", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "sent").then_some(m)
        })
        .await;
    assert_eq!(sent["provider"], "voicemeup");
    assert_eq!(sent["provider_message_id"], "vmu-out-1");
    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.query(), None, "the token stays out of URLs");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect();
    let expected: Vec<(String, String)> = [
        ("username", "east-dispatch"),
        ("auth_token", TOKEN),
        ("source_number", "15555550100"),
        ("destination_number", "15555550123"),
        ("message", "Units are on the way"),
        ("attachment", "https://cdn.example/map.png"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(form, expected);
}

/// The halves wait in the database, not in memory: a half received before a crash is merged
/// with its partner received after it, and a lone one is still delivered after the wait.
#[tokio::test]
async fn voicemeup_halves_survive_a_crash() {
    let s = Server::start(&[("OMNI_VOICEMEUP_MMS_WAIT_SECS", "5")]).await;
    let key = east(&s).await;
    let (paired, lone) = ("2025-01-01 13:00:00", "2025-01-01 13:01:00");
    for body in [
        text_half("r1", paired, "before the crash"),
        text_half("r3", lone, "alone"),
    ] {
        assert_eq!(post(&s, SECRET, &body).await, (200, "ok".to_string()));
    }
    let s = s.restart().await;
    assert_eq!(
        post(&s, SECRET, &media_half("r2", paired)).await,
        (200, "ok".to_string())
    );
    let all = s
        .eventually(15, "the merged and the lone half", || async {
            let m = s.conversation_messages(&key).await;
            (m.len() == 2).then_some(m)
        })
        .await;
    let ids: Vec<&str> = all
        .iter()
        .map(|m| m["provider_message_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"r1+r2") && ids.contains(&"r3"), "{ids:?}");
}
