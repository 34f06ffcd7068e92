//! A dispatch centre's team over HTTP and the WebSocket: invites, sign-in and lockout, roles,
//! assignment, notes in the timeline, presence, `sent_by`, the audit log, sign-out and
//! disabling.

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Server, ACCOUNT_SID};

const TOKEN: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";
const PASSWORD: &str = "correct horse battery staple";

fn inbound<'a>(sid: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("From", CONTACT),
        ("To", NUMBER),
        ("Body", body),
        ("NumMedia", "0"),
        ("AccountSid", ACCOUNT_SID),
    ]
}

/// Invites a user with `by` (an admin's token, or the platform's through the admin route),
/// accepts the invite and signs in; the session token.
pub(crate) async fn member(
    s: &Server,
    by: &str,
    email: &str,
    name: &str,
    role: &str,
) -> (String, Value) {
    let (st, invited) = s
        .api(
            by,
            Method::POST,
            "/v1/users",
            Some(json!({"email": email, "name": name, "role": role})),
        )
        .await;
    assert_eq!(st, 201, "{invited}");
    let token = invited["invite_token"].as_str().unwrap();
    let (st, b) = s
        .api(
            "",
            Method::POST,
            "/v1/auth/invite",
            Some(json!({"token": token, "password": PASSWORD})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    login(s, email).await
}

async fn login(s: &Server, email: &str) -> (String, Value) {
    let (st, b) = s
        .api(
            "",
            Method::POST,
            "/v1/auth/login",
            Some(json!({"tenant": "north", "email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    (b["token"].as_str().unwrap().to_owned(), b["user"].clone())
}

#[tokio::test]
async fn a_team_signs_in_assigns_notes_sees_each_other_and_is_audited() {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"sid": "SM00000000000000000000000000000099", "status": "queued"}),
        ))
        .mount(&fake)
        .await;
    let s = Server::start(&[("OMNI_TWILIO_API_URL", &fake.uri())]).await;
    let key = s.twilio_tenant("north", TOKEN, NUMBER).await;

    // The platform invites the first admin; the invite opens the console's form.
    let (st, invited) = s
        .admin(
            Method::POST,
            "/v1/admin/tenants/north/users",
            Some(json!({"email": "Sam@North.example", "name": "Sam", "role": "admin"})),
        )
        .await;
    assert_eq!(st, 201, "{invited}");
    let invite = invited["invite_token"].as_str().unwrap();
    assert_eq!(
        invited["invite_url"],
        format!("{}/#invite={invite}", s.base)
    );
    assert_eq!(invited["user"]["email"], "sam@north.example");
    assert_eq!(invited["user"]["active"], false);
    for (password, why) in [("short", "at least 12"), ("password1234", "common")] {
        let (st, b) = s
            .api(
                "",
                Method::POST,
                "/v1/auth/invite",
                Some(json!({"token": invite, "password": password})),
            )
            .await;
        assert_eq!(st, 400, "{b}");
        assert!(b["error"].as_str().unwrap().contains(why), "{b}");
    }
    let accept = json!({"token": invite, "password": PASSWORD});
    let (st, _) = s
        .api("", Method::POST, "/v1/auth/invite", Some(accept.clone()))
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .api("", Method::POST, "/v1/auth/invite", Some(accept))
        .await;
    assert_eq!(st, 400, "an invite is used once");

    // Unknown e-mail and wrong password: the same answer.
    let mut refusals = Vec::new();
    for (email, password) in [
        ("nobody@north.example", PASSWORD),
        ("sam@north.example", "wrong password here"),
    ] {
        let (st, b) = s
            .api(
                "",
                Method::POST,
                "/v1/auth/login",
                Some(json!({"tenant": "north", "email": email, "password": password})),
            )
            .await;
        assert_eq!(st, 401);
        refusals.push((b["code"].clone(), b["error"].clone()));
    }
    assert_eq!(refusals[0], refusals[1]);
    assert_eq!(refusals[0].0, "invalid_credentials");

    let (admin, _) = login(&s, "sam@north.example").await;
    let (st, me) = s.api(&admin, Method::GET, "/v1/me", None).await;
    assert_eq!(st, 200);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["user"]["name"], "Sam");
    assert_eq!(me["actor"]["type"], "user");

    // Inviting again someone who never set a password gives a new invite; once they have,
    // the address is taken.
    let lee = json!({"email": "lee@north.example", "name": "Lee", "role": "dispatcher"});
    let (_, first) = s
        .api(&admin, Method::POST, "/v1/users", Some(lee.clone()))
        .await;
    let (st, again) = s
        .api(&admin, Method::POST, "/v1/users", Some(lee.clone()))
        .await;
    assert_eq!(st, 201, "{again}");
    assert_eq!(again["user"]["id"], first["user"]["id"]);
    assert_ne!(again["invite_token"], first["invite_token"]);
    let (alex, alex_user) = member(&s, &admin, "alex@north.example", "Alex", "dispatcher").await;
    let (kim, kim_user) = member(&s, &admin, "kim@north.example", "Kim", "dispatcher").await;
    let (st, _) = s
        .api(
            &admin,
            Method::POST,
            "/v1/users",
            Some(json!({"email": "alex@north.example", "name": "A", "role": "admin"})),
        )
        .await;
    assert_eq!(st, 409, "an address in use");
    let (st, b) = s.api(&alex, Method::GET, "/v1/users", None).await;
    assert_eq!(st, 403);
    assert_eq!(b["code"], "forbidden");
    assert!(b["error"]
        .as_str()
        .unwrap()
        .contains("conversations.assign_others"));
    let invite = json!({"email": "x@north.example", "name": "X", "role": "admin"});
    let (st, b) = s.api(&alex, Method::POST, "/v1/users", Some(invite)).await;
    assert_eq!(st, 403);
    assert!(b["error"].as_str().unwrap().contains("users.manage"), "{b}");

    let mut alex_feed = s.ws(&alex).await;
    let mut kim_feed = s.ws(&kim).await;
    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &inbound("SMteam1", "Smoke on 5th"),
            TOKEN,
        )
        .await;
    assert_eq!(st, 200);
    let conversation = s
        .eventually(10, "the conversation", || async {
            let (_, l) = s.api(&alex, Method::GET, "/v1/conversations", None).await;
            l["items"].as_array()?.first().cloned()
        })
        .await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    assert_eq!(conversation["status"], "open");
    assert_eq!(conversation["assignee"], Value::Null);

    // Alex takes it; Kim's dashboard sees it move. Kim may not give it to someone else.
    let (st, c) = s
        .api(
            &alex,
            Method::POST,
            &format!("/v1/conversations/{id}/assign"),
            Some(json!({"user_id": alex_user["id"]})),
        )
        .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["assignee"]["name"], "Alex");
    let pushed = kim_feed.next_of("conversation.assigned", 5).await.unwrap();
    assert_eq!(pushed["conversation"]["assignee"]["id"], alex_user["id"]);
    let (st, b) = s
        .api(
            &kim,
            Method::POST,
            &format!("/v1/conversations/{id}/assign"),
            Some(json!({"user_id": kim_user["id"]})),
        )
        .await;
    assert_eq!(st, 403, "taking it from Alex");
    assert!(b["error"]
        .as_str()
        .unwrap()
        .contains("conversations.assign_others"));
    let listed = |token: &str, query: &str| {
        let (s, token, query) = (&s, token.to_owned(), query.to_owned());
        async move {
            let (st, l) = s
                .api(
                    &token,
                    Method::GET,
                    &format!("/v1/conversations?{query}"),
                    None,
                )
                .await;
            assert_eq!(st, 200, "{l}");
            l["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(listed(&alex, "assignee=me").await, 1);
    assert_eq!(listed(&kim, "assignee=me").await, 0);
    assert_eq!(listed(&kim, "assignee=none").await, 0);
    assert_eq!(listed(&kim, "q=5TH").await, 1);
    assert_eq!(listed(&kim, "q=nothing-like-it").await, 0);

    // Presence: both open the conversation and each sees the other, never themselves.
    alex_feed
        .say(json!({"type": "conversation.viewing", "conversation_id": id}))
        .await;
    let seen = kim_feed.next_of("conversation.viewing", 5).await.unwrap();
    assert_eq!(seen["user"]["name"], "Alex");
    assert_eq!(seen["conversation_id"], id.as_str());
    assert!(seen["at"].is_string());
    kim_feed
        .say(json!({"type": "conversation.typing", "conversation_id": id}))
        .await;
    let typing = alex_feed.next_of("conversation.typing", 5).await.unwrap();
    assert_eq!(typing["user"]["name"], "Kim");
    assert!(alex_feed.next_of("conversation.viewing", 1).await.is_none());

    // A note, in the timeline among the messages, never sent; a reply records who sent it.
    let (st, note) = s
        .api(
            &kim,
            Method::POST,
            &format!("/v1/conversations/{id}/notes"),
            Some(json!({"body": "caller sounded confused"})),
        )
        .await;
    assert_eq!(st, 201, "{note}");
    assert_eq!(note["kind"], "note");
    assert_eq!(note["author"]["name"], "Kim");
    assert_eq!(
        alex_feed.next_of("note.created", 5).await.unwrap()["note"]["body"],
        "caller sounded confused"
    );
    let sent = s.send_sms(&alex, CONTACT, "Units are on the way").await;
    let (_, message) = s
        .api(&alex, Method::GET, &format!("/v1/messages/{sent}"), None)
        .await;
    assert_eq!(message["sent_by"]["type"], "user");
    assert_eq!(message["sent_by"]["name"], "Alex");
    let (_, timeline) = s
        .api(
            &kim,
            Method::GET,
            &format!("/v1/conversations/{id}/messages"),
            None,
        )
        .await;
    let kinds: Vec<_> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["message", "note", "message"], "{timeline}");

    // Resolve, and a new inbound message opens it again.
    let (st, c) = s
        .api(
            &alex,
            Method::POST,
            &format!("/v1/conversations/{id}/resolve"),
            None,
        )
        .await;
    assert_eq!((st, c["status"].as_str()), (200, Some("resolved")));
    assert_eq!(
        kim_feed.next_of("conversation.status", 5).await.unwrap()["conversation"]["status"],
        "resolved"
    );
    assert_eq!(listed(&kim, "status=open").await, 0);
    s.twilio_webhook("/webhooks/twilio", &inbound("SMteam2", "still here"), TOKEN)
        .await;
    s.eventually(10, "the conversation to reopen", || async {
        (listed(&kim, "status=open").await == 1).then_some(())
    })
    .await;

    // The audit log: supervisors and admins only, without message or note text.
    let (st, _) = s.api(&alex, Method::GET, "/v1/audit", None).await;
    assert_eq!(st, 403);
    let (st, audit) = s
        .api(&admin, Method::GET, "/v1/audit?limit=200", None)
        .await;
    assert_eq!(st, 200, "{audit}");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "auth.login",
        "auth.login_failed",
        "user.invite",
        "user.invite_accepted",
        "conversation.assign",
        "note.create",
        "message.send",
        "conversation.resolve",
        "provider.put",
        "number.put",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let text = audit.to_string();
    for secret in [
        "caller sounded confused",
        "Units are on the way",
        PASSWORD,
        TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    let (_, alexs) = s
        .api(
            &admin,
            Method::GET,
            &format!(
                "/v1/audit?actor={}&action=message.send",
                alex_user["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(alexs["items"].as_array().unwrap().len(), 1, "{alexs}");
    assert_eq!(alexs["items"][0]["actor"]["name"], "Alex");

    // A sender key sends and reads what it sent, nothing else.
    let (st, sender) = s
        .api(
            &admin,
            Method::POST,
            "/v1/admin/tenants/north/api-keys",
            Some(json!({"name": "CAD", "role": "sender"})),
        )
        .await;
    assert_eq!(st, 201, "{sender}");
    let sender = sender["key"].as_str().unwrap();
    let own = s.send_sms(sender, CONTACT, "Dispatch: unit 12").await;
    let (st, m) = s
        .api(sender, Method::GET, &format!("/v1/messages/{own}"), None)
        .await;
    assert_eq!((st, m["sent_by"]["name"].as_str()), (200, Some("CAD")));
    let (st, _) = s
        .api(sender, Method::GET, &format!("/v1/messages/{sent}"), None)
        .await;
    assert_eq!(st, 404, "Alex's message is not the sender's");
    let (st, _) = s.api(sender, Method::GET, "/v1/conversations", None).await;
    assert_eq!(st, 403);
    let (st, _) = s.api(&key, Method::GET, "/v1/audit", None).await;
    assert_eq!(st, 200, "keys issued before roles are admins");

    // Disabling ends Kim's session; signing out ends Alex's.
    let (st, _) = s
        .api(
            &admin,
            Method::PATCH,
            &format!("/v1/users/{}", kim_user["id"].as_str().unwrap()),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s.api(&kim, Method::GET, "/v1/me", None).await;
    assert_eq!(st, 401);
    let (st, b) = s
        .api(
            "",
            Method::POST,
            "/v1/auth/login",
            Some(json!({"tenant": "north", "email": "kim@north.example", "password": PASSWORD})),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (401, Some("invalid_credentials")));
    let (_, users) = s.api(&admin, Method::GET, "/v1/users", None).await;
    assert!(users["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == "Kim" && u["disabled"] == true));
    let (st, _) = s.api(&alex, Method::POST, "/v1/auth/logout", None).await;
    assert_eq!(st, 204);
    let (st, _) = s.api(&alex, Method::GET, "/v1/me", None).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn five_failed_sign_ins_lock_the_account_out_with_retry_after() {
    let s = Server::start(&[]).await;
    s.tenant("north").await;
    let (st, invited) = s
        .admin(
            Method::POST,
            "/v1/admin/tenants/north/users",
            Some(json!({"email": "sam@north.example", "name": "Sam", "role": "admin"})),
        )
        .await;
    assert_eq!(st, 201);
    let accept = json!({"token": invited["invite_token"], "password": PASSWORD});
    s.api("", Method::POST, "/v1/auth/invite", Some(accept))
        .await;
    let attempt = |password: &'static str| {
        let s = &s;
        async move {
            let resp = s
                .http
                .post(s.url("/v1/auth/login"))
                .json(
                    &json!({"tenant": "north", "email": "sam@north.example", "password": password}),
                )
                .send()
                .await
                .unwrap();
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        }
    };
    for _ in 0..5 {
        assert_eq!(attempt("not the password!").await.0, 401);
    }
    let (st, retry_after) = attempt(PASSWORD).await;
    assert_eq!(st, 429, "locked out, even with the right password");
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(secs > 0 && secs <= 15 * 60, "{secs}");
}

#[tokio::test]
async fn changing_a_password_ends_every_session_and_needs_the_current_one() {
    let s = Server::start(&[]).await;
    let key = s.tenant("north").await;
    let (first, _) = member(&s, &key, "ana@north.example", "Ana", "dispatcher").await;
    let (second, _) = login(&s, "ana@north.example").await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});

    let (st, b) = s
        .api(
            &first,
            Method::POST,
            "/v1/me/password",
            Some(change("wrong password!!", "a brand new passphrase")),
        )
        .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (401, Some("invalid_credentials")),
        "{b}"
    );
    let (st, b) = s
        .api(
            &first,
            Method::POST,
            "/v1/me/password",
            Some(change(PASSWORD, "short")),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, _) = s.api(&first, Method::GET, "/v1/me", None).await;
    assert_eq!(st, 200, "refused changes leave the session alone");
    let (st, b) = s
        .api(
            &key,
            Method::POST,
            "/v1/me/password",
            Some(change(PASSWORD, "a brand new passphrase")),
        )
        .await;
    assert_eq!(st, 400, "an API key has no password: {b}");

    let (st, _) = s
        .api(
            &first,
            Method::POST,
            "/v1/me/password",
            Some(change(PASSWORD, "a brand new passphrase")),
        )
        .await;
    assert_eq!(st, 204);
    for token in [&first, &second] {
        let (st, _) = s.api(token, Method::GET, "/v1/me", None).await;
        assert_eq!(st, 401, "every session ended");
    }
    let (st, _) = s
        .api(
            "",
            Method::POST,
            "/v1/auth/login",
            Some(json!({"tenant": "north", "email": "ana@north.example", "password": PASSWORD})),
        )
        .await;
    assert_eq!(st, 401, "the old password no longer signs in");
    let (st, b) = s
        .api(
            "",
            Method::POST,
            "/v1/auth/login",
            Some(json!({"tenant": "north", "email": "ana@north.example", "password": "a brand new passphrase"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, audit) = s
        .api(
            &key,
            Method::GET,
            "/v1/audit?action=user.password_changed",
            None,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
}
