//! Every contract endpoint's happy path and its listed errors, through real HTTP.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Server, ADMIN};

const TOKEN: &str = "12345abcdef67890fedcba0987654321";

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn admin_api_happy_paths_and_errors() {
    let s = Server::start(&[]).await;
    // No or wrong admin token.
    let (st, b) = crate::harness::send(
        s.http
            .put(s.url("/v1/admin/tenants/north"))
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_error(st, &b, 401, "unauthorized");
    let (st, b) = crate::harness::send(
        s.http
            .put(s.url("/v1/admin/tenants/north"))
            .bearer_auth("nope")
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_error(st, &b, 401, "unauthorized");

    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north",
            Some(json!({"name": "North County PSAP", "default_region": "US"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["id"], "north");
    assert_eq!(b["default_region"], "US");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/North_1",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north",
            Some(json!({"name": "x", "default_region": "ZZ"})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/ghost/providers/twilio",
            Some(json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": TOKEN})),
        )
        .await;
    assert_error(st, &b, 404, "not_found");

    // Providers: configured, never echoed, redacted on read.
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/twilio",
            Some(json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": TOKEN})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b, json!({"provider": "twilio", "configured": true}));
    let (st, b) = s.admin(Method::PUT, "/v1/admin/tenants/north/providers/voipms", Some(json!({"api_username": "ops@example.org", "api_password": "pw-secret-1", "webhook_secret": "hook-secret-0000001"}))).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/twilio",
            Some(json!({"account_sid": "bad"})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/fax",
            Some(json!({})),
        )
        .await;
    assert_error(st, &b, 404, "not_found");
    let (st, b) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    assert_eq!(st, 200);
    let text = b.to_string();
    assert!(
        !text.contains(TOKEN)
            && !text.contains("pw-secret-1")
            && !text.contains("hook-secret-0000001"),
        "{text}"
    );
    assert_eq!(b["items"].as_array().unwrap().len(), 2, "{b}");
    let (st, _) = s
        .admin(
            Method::DELETE,
            "/v1/admin/tenants/north/providers/voipms",
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, b) = s
        .admin(
            Method::DELETE,
            "/v1/admin/tenants/north/providers/voipms",
            None,
        )
        .await;
    assert_error(st, &b, 404, "not_found");

    // Numbers: normalised to E.164, one tenant per number.
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/numbers/(555) 555-0100",
            Some(json!({"provider": "twilio", "channels": ["sms", "mms"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["number"], "+15555550100");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/south",
            Some(json!({"name": "South"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/south/numbers/+15555550100",
            Some(json!({"provider": "twilio", "channels": ["sms"]})),
        )
        .await;
    assert_error(st, &b, 409, "conflict");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/numbers/12",
            Some(json!({"provider": "twilio", "channels": ["sms"]})),
        )
        .await;
    assert_error(st, &b, 422, "invalid_phone_number");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/numbers/+15555550101",
            Some(json!({"provider": "twilio", "channels": ["signal"]})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, _) = s
        .admin(
            Method::DELETE,
            "/v1/admin/tenants/south/numbers/+15555550100",
            None,
        )
        .await;
    assert_eq!(st, 404, "south cannot release north's number");

    // API keys: shown once, work, stored hashed.
    let (st, b) = s
        .admin(Method::POST, "/v1/admin/tenants/north/api-keys", None)
        .await;
    assert_eq!(st, 201, "{b}");
    let key = b["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("omk_"));
    let (st, _) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(st, 200);
    let raw = std::fs::read(s.db()).unwrap();
    assert!(
        !raw.windows(key.len()).any(|w| w == key.as_bytes()),
        "the API key itself is not stored"
    );
    let _ = ADMIN;
}

#[tokio::test]
async fn dispatch_api_errors_are_json_and_never_500() {
    let s = Server::start(&[]).await;
    let key = s.twilio_tenant("north", TOKEN, "+15555550100").await;
    let (st, b) = s
        .api("omk_wrong", Method::GET, "/v1/conversations", None)
        .await;
    assert_error(st, &b, 401, "unauthorized");
    let (st, b) = crate::harness::send(s.http.get(s.url("/v1/conversations"))).await;
    assert_error(st, &b, 401, "unauthorized");

    let bad_json = s
        .http
        .post(s.url("/v1/messages"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json");
    let (st, b) = crate::harness::send(bad_json).await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "fax", "to": "+15555550123", "body": "x"})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": "+15555550123"})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "signal", "to": "+15555550123", "body": "x"})),
        )
        .await;
    assert_error(st, &b, 422, "channel_not_configured");
    let (st, b) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "sms", "to": "+15555550123", "body": "x".repeat(1601)})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let huge = s
        .http
        .post(s.url("/v1/messages"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024 + 10]);
    let (st, b) = crate::harness::send(huge).await;
    assert_error(st, &b, 413, "payload_too_large");
    let (st, b) = s
        .api(&key, Method::GET, "/v1/messages/not-a-uuid", None)
        .await;
    assert_error(st, &b, 404, "not_found");
    let (st, b) = s
        .api(&key, Method::GET, "/v1/conversations?limit=0", None)
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s
        .api(&key, Method::GET, "/v1/conversations?cursor=garbage", None)
        .await;
    assert_error(st, &b, 400, "invalid_request");
    let (st, b) = s.api(&key, Method::GET, "/v1/nowhere", None).await;
    assert_error(st, &b, 404, "not_found");
    let (st, b) = s.api(&key, Method::DELETE, "/v1/conversations", None).await;
    assert_error(st, &b, 405, "invalid_request");
    let (st, b) = crate::harness::send(s.http.get(s.url("/healthz"))).await;
    assert_eq!((st, b), (200, json!({"status": "ok"})));

    // Bad webhooks: 401 for a bad signature, 4xx JSON for garbage, nothing stored.
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &[
                ("MessageSid", "SM1"),
                ("From", "+15555550123"),
                ("To", "+15555550100"),
                ("Body", "hi"),
            ],
            "wrong-token",
        )
        .await;
    assert_eq!(st, 401);
    let garbage = s
        .http
        .post(s.url("/webhooks/twilio"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', b'&']);
    let (st, b) = crate::harness::send(garbage).await;
    assert!((400..500).contains(&st), "{st} {b}");
    let (st, b) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(st, 200);
    assert_eq!(
        b["items"],
        json!([]),
        "nothing stored from rejected webhooks"
    );
}

#[tokio::test]
async fn conversations_paging_read_and_stars() {
    let s = Server::start(&[]).await;
    let key = s.twilio_tenant("north", TOKEN, "+15555550100").await;
    for i in 0..5 {
        let from = format!("+1555555013{i}");
        let sid = format!("SMpage{i}");
        let (st, _) = s
            .twilio_webhook(
                "/webhooks/twilio",
                &[
                    ("MessageSid", &sid),
                    ("From", &from),
                    ("To", "+15555550100"),
                    ("Body", "hello"),
                    ("NumMedia", "0"),
                ],
                TOKEN,
            )
            .await;
        assert_eq!(st, 200);
    }
    let all = s
        .eventually(10, "five conversations", || async {
            let (_, b) = s
                .api(&key, Method::GET, "/v1/conversations?limit=50", None)
                .await;
            (b["items"].as_array().map_or(0, Vec::len) == 5).then_some(b)
        })
        .await;
    // Newest activity first.
    assert_eq!(all["items"][0]["contact"], "+15555550134");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/conversations?limit=2&cursor={c}"),
            None => "/v1/conversations?limit=2".into(),
        };
        let (st, page) = s.api(&key, Method::GET, &path, None).await;
        assert_eq!(st, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(
        seen, expected,
        "cursor paging returns every conversation once, in order"
    );

    let conv = all["items"][0]["id"].as_str().unwrap().to_string();
    let (st, msgs) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/conversations/{conv}/messages"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let msg_id = msgs["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(msgs["items"][0]["direction"], "inbound");
    assert_eq!(msgs["items"][0]["status"], "received");

    let (st, c) = s
        .api(
            &key,
            Method::POST,
            &format!("/v1/conversations/{conv}/read"),
            None,
        )
        .await;
    assert_eq!((st, c["unread_count"].clone()), (200, json!(0)));
    let (st, m) = s
        .api(
            &key,
            Method::PUT,
            &format!("/v1/messages/{msg_id}/star"),
            None,
        )
        .await;
    assert_eq!((st, m["starred"].clone()), (200, json!(true)));
    let (_, _) = s
        .api(
            &key,
            Method::PUT,
            &format!("/v1/messages/{msg_id}/star"),
            None,
        )
        .await;
    let (_, list) = s
        .api(&key, Method::GET, "/v1/conversations?limit=1", None)
        .await;
    assert_eq!(
        list["items"][0]["starred_count"], 1,
        "starring twice counts once"
    );
    let (st, m) = s
        .api(
            &key,
            Method::DELETE,
            &format!("/v1/messages/{msg_id}/star"),
            None,
        )
        .await;
    assert_eq!((st, m["starred"].clone()), (200, json!(false)));
    let (_, list) = s
        .api(&key, Method::GET, "/v1/conversations?limit=1", None)
        .await;
    assert_eq!(list["items"][0]["starred_count"], 0);
}

#[tokio::test]
async fn sms_messages_show_their_segments_and_encoding_as_carriers_count_them() {
    let s = Server::start(&[]).await;
    let key = s.twilio_tenant("north", TOKEN, "+15555550100").await;
    let send = |body: String| {
        let (s, key) = (&s, &key);
        async move {
            let (st, m) = s
                .api(
                    key,
                    Method::POST,
                    "/v1/messages",
                    Some(json!({"channel": "sms", "to": "+15555550123", "body": body})),
                )
                .await;
            assert_eq!(st, 202, "{m}");
            m
        }
    };
    let m = send("Unit 12 is on its way {ETA 4 min}".into()).await;
    assert_eq!(
        (m["segments"].as_u64(), m["encoding"].as_str()),
        (Some(1), Some("GSM-7")),
        "{m}"
    );
    // 71 characters outside the GSM alphabet: two UCS-2 segments of at most 67.
    let m = send("ê".repeat(71)).await;
    assert_eq!(
        (m["segments"].as_u64(), m["encoding"].as_str()),
        (Some(2), Some("UCS-2")),
        "{m}"
    );
    let (_, read) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/messages/{}", m["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (read["segments"].as_u64(), read["encoding"].as_str()),
        (Some(2), Some("UCS-2")),
        "{read}"
    );
    // 161 GSM-7 septets (the braces count two each): two segments of at most 153.
    let m = send(format!("{{{}", "a".repeat(159))).await;
    assert_eq!(
        (m["segments"].as_u64(), m["encoding"].as_str()),
        (Some(2), Some("GSM-7")),
        "{m}"
    );
}
