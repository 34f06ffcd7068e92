//! LiveChat end to end: a tenant's widget, a visitor's session, messages both ways through
//! the real binary, CORS by the widget's origins, identities, refusals and uploads.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{send, Server};

const ORIGIN: &str = "https://north.example.org";
const EVIL: &str = "https://evil.example";
/// The smallest PNG: its signature is what the upload check reads.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89";

/// A visitor API request from a page of `origin`, with the visitor's token if any.
async fn visitor(
    server: &Server,
    origin: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut req = server
        .http
        .request(method, server.url(path))
        .header("origin", origin);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let cors = resp
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        cors,
    )
}

fn user_hash(secret: &str, user_id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, user_id.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn upload(server: &Server, token: &str, bytes: Vec<u8>) -> (u16, Value) {
    let boundary = "omni-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    send(
        server
            .http
            .post(server.url("/livechat/v1/media"))
            .header("origin", ORIGIN)
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body),
    )
    .await
}

#[tokio::test]
async fn a_visitor_and_a_dispatcher_chat_both_ways_from_an_allowed_origin_only() {
    let server = Server::start(&[]).await;
    let key = server.tenant("north").await;

    // The widget: created with its identity secret, shown once.
    let (s, widget) = server
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/livechat",
            Some(json!({"allowed_origins": [ORIGIN], "title": "North County",
                        "greeting": "How can we help?", "identity_required": false})),
        )
        .await;
    assert_eq!(s, 200, "{widget}");
    let widget_key = widget["widget_key"].as_str().unwrap().to_string();
    assert!(widget_key.starts_with("lcw_"), "{widget}");
    let first_secret = widget["identity_secret"].as_str().unwrap().to_string();
    let (s, shown) = server
        .admin(Method::GET, "/v1/admin/tenants/north/livechat", None)
        .await;
    assert_eq!(s, 200);
    assert!(shown.get("identity_secret").is_none(), "{shown}");
    assert!(shown.get("signing_key").is_none(), "{shown}");
    assert_eq!(shown["widget_key"], widget_key.as_str());
    let (s, rotated) = server
        .admin(
            Method::POST,
            "/v1/admin/tenants/north/livechat/rotate-secret",
            None,
        )
        .await;
    assert_eq!(s, 200);
    let secret = rotated["identity_secret"].as_str().unwrap().to_string();
    assert_ne!(secret, first_secret);
    // A bad origin in the settings is refused, nothing changed.
    let (s, err) = server
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/livechat",
            Some(json!({"allowed_origins": ["https://north.example.org/path"]})),
        )
        .await;
    assert_eq!((s, err["code"].as_str()), (400, Some("invalid_request")));

    // The preflight is answered; a request from another origin is refused without CORS.
    let preflight = server
        .http
        .request(Method::OPTIONS, server.url("/livechat/v1/messages"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], ORIGIN);
    let start = json!({"widget_key": widget_key, "visitor": {"name": "Ana Visitor"}});
    let (s, err, cors) = visitor(
        &server,
        EVIL,
        None,
        Method::POST,
        "/livechat/v1/sessions",
        Some(start.clone()),
    )
    .await;
    assert_eq!(
        (s, err["code"].as_str(), cors),
        (403, Some("origin_not_allowed"), None)
    );
    let unknown = json!({"widget_key": format!("lcw_{}", "0".repeat(32))});
    let (s, _, _) = visitor(
        &server,
        ORIGIN,
        None,
        Method::POST,
        "/livechat/v1/sessions",
        Some(unknown),
    )
    .await;
    assert_eq!(s, 404);

    // A session.
    let (s, session, cors) = visitor(
        &server,
        ORIGIN,
        None,
        Method::POST,
        "/livechat/v1/sessions",
        Some(start),
    )
    .await;
    assert_eq!(s, 201, "{session}");
    assert_eq!(cors.as_deref(), Some(ORIGIN));
    let token = session["token"].as_str().unwrap().to_string();
    let visitor_id = session["visitor_id"].as_str().unwrap().to_string();
    let conversation_id = session["conversation_id"].as_str().unwrap().to_string();
    assert!(visitor_id.starts_with("lcv_"));

    // The token is unforgeable, and bound to the widget's origins.
    // The signature altered: the widget is known, so the 401 is readable by its page.
    let (payload, tag) = token.split_once('.').unwrap();
    let forged = format!("{payload}.{}", tag.chars().rev().collect::<String>());
    let (s, err, cors) = visitor(
        &server,
        ORIGIN,
        Some(&forged),
        Method::GET,
        "/livechat/v1/messages",
        None,
    )
    .await;
    assert_eq!((s, cors.as_deref()), (401, Some(ORIGIN)), "{err}");
    let (s, _, cors) = visitor(
        &server,
        EVIL,
        Some(&token),
        Method::GET,
        "/livechat/v1/messages",
        None,
    )
    .await;
    assert_eq!((s, cors), (403, None));

    // Identities: the same user resumes the same conversation; a wrong hash is refused.
    let user = json!({"widget_key": widget_key, "user_id": "user-42",
                      "user_hash": user_hash(&secret, "user-42")});
    let (s, a, _) = visitor(
        &server,
        ORIGIN,
        None,
        Method::POST,
        "/livechat/v1/sessions",
        Some(user.clone()),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    let (_, b, _) = visitor(
        &server,
        ORIGIN,
        None,
        Method::POST,
        "/livechat/v1/sessions",
        Some(user),
    )
    .await;
    assert_eq!(a["visitor_id"], b["visitor_id"]);
    assert_eq!(a["conversation_id"], b["conversation_id"]);
    assert_ne!(a["token"], b["token"]);
    let stale = json!({"widget_key": widget_key, "user_id": "user-42",
                       "user_hash": user_hash(&first_secret, "user-42")});
    let (s, err, _) = visitor(
        &server,
        ORIGIN,
        None,
        Method::POST,
        "/livechat/v1/sessions",
        Some(stale),
    )
    .await;
    assert_eq!((s, err["code"].as_str()), (401, Some("identity_invalid")));

    // The visitor writes; dispatchers see it live; a retry is the same message.
    let mut feed = server.ws(&key).await;
    let hello = json!({"body": "Is the road to the lake open?", "client_message_id": "c-1"});
    let (s, first, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::POST,
        "/livechat/v1/messages",
        Some(hello.clone()),
    )
    .await;
    assert_eq!(s, 202, "{first}");
    let (s, again, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::POST,
        "/livechat/v1/messages",
        Some(hello),
    )
    .await;
    assert_eq!((s, &again["id"]), (202, &first["id"]));
    let pushed = feed
        .next_of("message.received", 10)
        .await
        .expect("pushed to dashboards");
    assert_eq!(pushed["message"]["channel"], "livechat");
    assert_eq!(pushed["message"]["from"], visitor_id.as_str());
    assert_eq!(pushed["conversation_id"], conversation_id.as_str());
    let (_, list) = server
        .api(&key, Method::GET, "/v1/conversations", None)
        .await;
    let chats: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["channel"] == "livechat")
        .collect();
    assert_eq!(chats.len(), 1, "{list}");
    assert_eq!(chats[0]["contact"], visitor_id.as_str());
    assert_eq!(chats[0]["id"], conversation_id.as_str());
    // The list shows the name the visitor gave when the session started.
    assert_eq!(chats[0]["contact_name"], "Ana Visitor");

    // Refused, nothing stored.
    for (body, why) in [
        (json!({"body": "  "}), "empty"),
        (json!({"body": "x".repeat(4097)}), "too long"),
        (
            json!({"body": "x", "media": vec![uuid_like(); 11]}),
            "too many media",
        ),
    ] {
        let (s, err, _) = visitor(
            &server,
            ORIGIN,
            Some(&token),
            Method::POST,
            "/livechat/v1/messages",
            Some(body),
        )
        .await;
        assert_eq!(
            (s, err["code"].as_str()),
            (400, Some("invalid_request")),
            "{why}: {err}"
        );
    }

    // A reply while the visitor has no socket open stays sent ...
    let reply =
        json!({"channel": "livechat", "to": visitor_id, "body": "Yes, it reopened this morning."});
    let (s, sent) = server
        .api(&key, Method::POST, "/v1/messages", Some(reply))
        .await;
    assert_eq!(s, 202, "{sent}");
    let sent_id = sent["id"].as_str().unwrap().to_string();
    server.message_reaching(&key, &sent_id, "sent").await;
    // ... until the visitor comes back.
    let mut chat = server.visitor_ws(&token, ORIGIN).await;
    server.message_reaching(&key, &sent_id, "delivered").await;
    // With the socket open, a reply is pushed to it and delivered.
    let reply = json!({"channel": "livechat", "to": visitor_id, "body": "Drive safely."});
    let (s, live) = server
        .api(&key, Method::POST, "/v1/messages", Some(reply))
        .await;
    assert_eq!(s, 202, "{live}");
    let created = chat
        .next_of("message.created", 10)
        .await
        .expect("reply pushed to the visitor");
    assert_eq!(created["message"]["body"], "Drive safely.");
    assert_eq!(created["message"]["direction"], "outbound");
    let live_id = live["id"].as_str().unwrap().to_string();
    server.message_reaching(&key, &live_id, "delivered").await;
    // A reply to an unknown visitor is refused.
    let stranger =
        json!({"channel": "livechat", "to": format!("lcv_{}", "1".repeat(32)), "body": "x"});
    let (s, _) = server
        .api(&key, Method::POST, "/v1/messages", Some(stranger))
        .await;
    assert_eq!(s, 404);

    // The visitor's history: this conversation only, both directions, oldest first.
    let (s, page, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::GET,
        "/livechat/v1/messages?limit=50",
        None,
    )
    .await;
    assert_eq!(s, 200, "{page}");
    let bodies: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "Is the road to the lake open?",
            "Yes, it reopened this morning.",
            "Drive safely."
        ]
    );
    assert_eq!(page["items"][0]["sender_name"], "Ana Visitor");
    assert_eq!(page["items"][1]["direction"], "outbound");
    let (_, paged, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::GET,
        "/livechat/v1/messages?limit=2",
        None,
    )
    .await;
    let cursor = paged["next_cursor"].as_str().expect("more").to_string();
    let (_, rest, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::GET,
        &format!("/livechat/v1/messages?after={cursor}"),
        None,
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["body"], "Drive safely.");

    // Read receipts reach the dispatchers.
    let (s, _, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::POST,
        "/livechat/v1/read",
        Some(json!({"up_to": live_id})),
    )
    .await;
    assert_eq!(s, 204);
    server.message_reaching(&key, &sent_id, "read").await;
    server.message_reaching(&key, &live_id, "read").await;

    // Uploads: typed by their bytes, capped, fetched through a signed link, shown to dispatchers.
    let (s, up) = upload(&server, &token, PNG.to_vec()).await;
    assert_eq!(s, 201, "{up}");
    assert_eq!(
        (up["content_type"].as_str(), up["size"].as_u64()),
        (Some("image/png"), Some(PNG.len() as u64))
    );
    let fetched = server
        .http
        .get(up["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), PNG);
    let tampered = up["url"]
        .as_str()
        .unwrap()
        .replace("signature=", "signature=x");
    assert_eq!(
        server
            .http
            .get(tampered)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let (s, err) = upload(
        &server,
        &token,
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
    )
    .await;
    assert_eq!(
        (s, err["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let mut huge = PNG.to_vec();
    huge.resize(10 * 1024 * 1024 + 1, 0);
    let (s, err) = upload(&server, &token, huge).await;
    assert_eq!((s, err["code"].as_str()), (413, Some("payload_too_large")));
    let photo = json!({"body": "the bridge", "media": [up["id"]]});
    let (s, with_media, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::POST,
        "/livechat/v1/messages",
        Some(photo),
    )
    .await;
    assert_eq!(s, 202, "{with_media}");
    let media = server
        .http
        .get(server.url(&format!(
            "/v1/messages/{}/media/0",
            with_media["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(media.status().as_u16(), 200);
    assert_eq!(media.bytes().await.unwrap().as_ref(), PNG);

    // A refreshed token works.
    let (s, renewed, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::POST,
        "/livechat/v1/sessions/refresh",
        None,
    )
    .await;
    assert_eq!(s, 200, "{renewed}");
    assert_eq!(renewed["visitor_id"], visitor_id.as_str());
    let fresh = renewed["token"].as_str().unwrap();
    let (s, _, _) = visitor(
        &server,
        ORIGIN,
        Some(fresh),
        Method::GET,
        "/livechat/v1/messages",
        None,
    )
    .await;
    assert_eq!(s, 200);

    // More than 20 messages a minute per session: 429 with Retry-After, nothing stored.
    let (_, before, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::GET,
        "/livechat/v1/messages?limit=100",
        None,
    )
    .await;
    let stored_before = before["items"].as_array().unwrap().len();
    let mut accepted = 0;
    let mut limited = None;
    for i in 0..25 {
        let resp = server
            .http
            .post(server.url("/livechat/v1/messages"))
            .header("origin", ORIGIN)
            .bearer_auth(&token)
            .json(&json!({"body": format!("burst {i}")}))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            202 => accepted += 1,
            429 => {
                limited = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        accepted < 20,
        "the session's earlier messages count: {accepted}"
    );
    assert!(limited.is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    let (_, after, _) = visitor(
        &server,
        ORIGIN,
        Some(&token),
        Method::GET,
        "/livechat/v1/messages?limit=100",
        None,
    )
    .await;
    assert_eq!(
        after["items"].as_array().unwrap().len(),
        stored_before + accepted
    );
}

fn uuid_like() -> String {
    "0190a0a0-0000-7000-8000-000000000000".into()
}
