//! A tenant's message templates on `omni serve`: a supervisor writes and submits a version,
//! another approves it (four eyes), messages are sent from it with variables and language
//! fallback, each refusal answers its code before anything is stored, a newer version takes
//! over only once approved, and every step is in the audit log.

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;
use crate::team::member;
use crate::whatsapp::{post_signed, whatsapp_tenant, WABA_ID};

const TOKEN: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa0019";
const NUMBER: &str = "+15555550100";
const CONTACT: &str = "+15555550123";

fn definition(en: &str) -> Value {
    json!({
        "channels": ["sms", "email"],
        "variables": {"unit": {"type": "text", "max_length": 8}, "eta": {"type": "number"}},
        "languages": {
            "en": {"body": en, "subject": "Unit {{unit}}"},
            "es": {"body": "La unidad {{unit}} llega en {{eta}} min"}
        },
        "default_language": "en"
    })
}

/// A definition declaring `eta` and using it nowhere.
fn unused_eta() -> Value {
    let mut d = definition("Unit {{unit}}");
    d["languages"]["es"]["body"] = json!("La unidad {{unit}}");
    d
}

fn send(template: Value) -> Value {
    json!({"channel": "sms", "to": CONTACT, "template": template})
}

/// Sends template `unit-dispatched` by SMS in `language` with `variables`.
async fn send_unit(s: &Server, key: &str, language: &str, variables: &Value) -> (u16, Value) {
    let template = json!({"name": "unit-dispatched", "language": language, "variables": variables});
    s.api(key, Method::POST, "/v1/messages", Some(send(template)))
        .await
}

/// The answer is an error of `status` and `code`.
fn refused(st: u16, b: &Value, status: u16, code: &str) {
    assert_eq!((st, b["code"].as_str()), (status, Some(code)), "{b}");
}

async fn step(
    s: &Server,
    token: &str,
    name: &str,
    step: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.api(
        token,
        Method::POST,
        &format!("/v1/templates/{name}/{step}"),
        body,
    )
    .await
}

#[tokio::test]
async fn templates_are_approved_by_a_second_person_and_sent_with_variables_and_language_fallback() {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"sid": "SM00000000000000000000000000000019", "status": "queued"}),
        ))
        .mount(&fake)
        .await;
    let s = Server::start(&[("OMNI_TWILIO_API_URL", &fake.uri())]).await;
    let key = s.twilio_tenant("north", TOKEN, NUMBER).await;
    let (ana, _) = member(&s, &key, "ana@north.example", "Ana", "supervisor").await;
    let (ben, _) = member(&s, &key, "ben@north.example", "Ben", "supervisor").await;
    let (dan, _) = member(&s, &key, "dan@north.example", "Dan", "dispatcher").await;
    let path = "/v1/templates/unit-dispatched";

    // Only supervisors and admins write templates; a bad definition is a 400 naming the
    // variable.
    let (st, b) = s
        .api(
            &dan,
            Method::PUT,
            path,
            Some(definition("Unit {{unit}} in {{eta}}")),
        )
        .await;
    refused(st, &b, 403, "forbidden");
    for (bad, named) in [
        (
            definition("Unit {{unit}} in {{eta}} with {{crew}}"),
            "{{crew}}",
        ),
        (unused_eta(), "variables.eta"),
    ] {
        let (st, b) = s.api(&ana, Method::PUT, path, Some(bad)).await;
        refused(st, &b, 400, "invalid_request");
        assert!(b["error"].as_str().unwrap().contains(named), "{named}: {b}");
    }

    // Every version is kept in one stored document, which has a size limit.
    let languages: serde_json::Map<String, Value> = (b'a'..=b'z')
        .flat_map(|a| (b'a'..=b'h').map(move |b| format!("{}{}", a as char, b as char)))
        .map(|tag| (tag, json!({"body": "x".repeat(1600)})))
        .collect();
    let huge = json!({"channels": ["sms"], "languages": languages, "default_language": "aa"});
    let (st, b) = s
        .api(&ana, Method::PUT, "/v1/templates/huge", Some(huge))
        .await;
    refused(st, &b, 400, "invalid_request");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("another template name"),
        "{b}"
    );

    // Nothing to send before it exists and is approved.
    let variables = json!({"unit": "M12", "eta": 7});
    let (st, b) = send_unit(&s, &key, "en", &variables).await;
    refused(st, &b, 404, "template_not_found");

    let (st, t) = s
        .api(
            &ana,
            Method::PUT,
            path,
            Some(definition("Unit {{unit}} arrives in {{eta}} min")),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["versions"][0]["status"], "draft");
    assert_eq!(t["versions"][0]["author"]["name"], "Ana");
    let (st, b) = send_unit(&s, &key, "es-MX", &variables).await;
    refused(st, &b, 409, "template_not_approved");

    // Draft -> pending -> approved, the approver another supervisor than the author.
    let (st, b) = step(&s, &ben, "unit-dispatched", "approve", None).await;
    refused(st, &b, 409, "conflict");
    let (st, t) = step(&s, &ana, "unit-dispatched", "submit", None).await;
    assert_eq!(
        (st, t["versions"][0]["status"].as_str()),
        (200, Some("pending")),
        "{t}"
    );
    let (st, b) = step(&s, &ana, "unit-dispatched", "approve", None).await;
    refused(st, &b, 403, "forbidden");
    assert!(
        b["error"].as_str().unwrap().contains("another supervisor"),
        "{b}"
    );
    let (st, b) = step(&s, &dan, "unit-dispatched", "approve", None).await;
    assert_eq!(st, 403, "{b}");
    let (st, t) = step(&s, &ben, "unit-dispatched", "approve", None).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["versions"][0]["status"], "approved");
    assert_eq!(t["versions"][0]["approver"]["name"], "Ben");
    assert!(t["versions"][0]["decided_at"].is_string());
    assert_eq!(t["approved_version"], 1);

    // es-MX falls back to es; the message keeps the rendering and which template it was.
    let (st, m) = send_unit(&s, &key, "es-MX", &variables).await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["body"], "La unidad M12 llega en 7 min");
    assert_eq!(
        m["template"],
        json!({"name": "unit-dispatched", "version": 1, "language": "es"})
    );
    let id = m["id"].as_str().unwrap();
    s.message_reaching(&key, id, "sent").await;
    let sent = fake.received_requests().await.unwrap();
    let form = String::from_utf8_lossy(&sent.last().unwrap().body).into_owned();
    assert!(form.contains("Body=La+unidad+M12+llega+en+7+min"), "{form}");
    // A language the template lacks falls back to its default.
    let (st, m) = send_unit(&s, &key, "fr-CA", &variables).await;
    assert_eq!(
        (st, m["body"].as_str()),
        (202, Some("Unit M12 arrives in 7 min")),
        "{m}"
    );
    assert_eq!(m["template"]["language"], "en");

    // Each refusal before anything is stored, naming the variable.
    let (_, before) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    let bad_variables = [
        (
            json!({"unit": "M12"}),
            400,
            "invalid_request",
            "variables.eta",
        ),
        (
            json!({"unit": "M12", "eta": 7, "crew": "A"}),
            400,
            "invalid_request",
            "variables.crew",
        ),
        (
            json!({"unit": 12, "eta": 7}),
            400,
            "invalid_request",
            "variables.unit",
        ),
        (
            json!({"unit": "M12", "eta": "7"}),
            400,
            "invalid_request",
            "variables.eta",
        ),
        (
            json!({"unit": "M12-ALPHA-9", "eta": 7}),
            400,
            "invalid_request",
            "variables.unit",
        ),
    ];
    for (variables, status, code, named) in bad_variables {
        let request = send(json!({"name": "unit-dispatched", "variables": variables}));
        let (st, b) = s
            .api(&key, Method::POST, "/v1/messages", Some(request))
            .await;
        assert_eq!((st, b["code"].as_str()), (status, Some(code)), "{b}");
        assert!(b["error"].as_str().unwrap().contains(named), "{named}: {b}");
    }
    let whatsapp = json!({"channel": "whatsapp", "to": CONTACT, "template":
        {"name": "unit-dispatched", "variables": {"unit": "M12", "eta": 7}}});
    let (st, b) = s
        .api(&key, Method::POST, "/v1/messages", Some(whatsapp))
        .await;
    refused(st, &b, 400, "invalid_request");
    assert!(
        b["error"].as_str().unwrap().contains("not for whatsapp"),
        "{b}"
    );
    let with_body = json!({"channel": "sms", "to": CONTACT, "body": "hi", "template":
        {"name": "unit-dispatched", "variables": {"unit": "M12", "eta": 7}}});
    let (st, _) = s
        .api(&key, Method::POST, "/v1/messages", Some(with_body))
        .await;
    assert_eq!(st, 400);
    let (_, after) = s.api(&key, Method::GET, "/v1/conversations", None).await;
    assert_eq!(
        after["items"][0]["last_message"], before["items"][0]["last_message"],
        "nothing stored"
    );

    // Version 2, without a default language: version 1 stays in use until 2 is approved,
    // and a rejected version 3 changes nothing.
    let mut second = definition("Unit {{unit}}: {{eta}} min away");
    second["default_language"] = Value::Null;
    let (st, t) = s.api(&ben, Method::PUT, path, Some(second.clone())).await;
    assert_eq!(
        (st, t["versions"][1]["status"].as_str()),
        (201, Some("draft")),
        "{t}"
    );
    step(&s, &ben, "unit-dispatched", "submit", None).await;
    let (_, m) = send_unit(&s, &key, "en-GB", &variables).await;
    assert_eq!(
        (m["body"].as_str(), &m["template"]["version"]),
        (Some("Unit M12 arrives in 7 min"), &json!(1))
    );
    let (st, _) = step(&s, &ana, "unit-dispatched", "approve", None).await;
    assert_eq!(st, 200);
    let (_, m) = send_unit(&s, &key, "en-GB", &variables).await;
    assert_eq!(
        (m["body"].as_str(), &m["template"]["version"]),
        (Some("Unit M12: 7 min away"), &json!(2))
    );
    let (st, b) = send_unit(&s, &key, "fr", &variables).await;
    refused(st, &b, 400, "template_language_unavailable");

    s.api(
        &ana,
        Method::PUT,
        path,
        Some(definition("Unit {{unit}} ({{eta}})")),
    )
    .await;
    step(&s, &ana, "unit-dispatched", "submit", None).await;
    let (st, b) = step(&s, &ben, "unit-dispatched", "reject", Some(json!({}))).await;
    assert_eq!(st, 400, "{b}");
    let (st, t) = step(
        &s,
        &ben,
        "unit-dispatched",
        "reject",
        Some(json!({"reason": "Too terse"})),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    let (st, t) = s.api(&dan, Method::GET, path, None).await;
    assert_eq!(st, 200, "{t}");
    let statuses: Vec<_> = t["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!("approved"), json!("approved"), json!("rejected")]
    );
    assert_eq!(t["approved_version"], 2);
    assert_eq!(t["default_language"], Value::Null);
    assert_eq!(t["versions"][2]["reason"], "Too terse");
    assert_eq!(t["versions"][2]["approver"]["name"], "Ben");
    let (_, listed) = s.api(&dan, Method::GET, "/v1/templates", None).await;
    assert_eq!(listed["items"][0]["name"], "unit-dispatched");
    let (st, b) = s
        .api(&dan, Method::GET, "/v1/templates/nothing", None)
        .await;
    refused(st, &b, 404, "template_not_found");

    // Every step is in the audit log, by whom it was taken.
    let (_, audit) = s.api(&key, Method::GET, "/v1/audit?limit=100", None).await;
    let steps: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("template."))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .rev()
        .collect();
    let expected = [
        ("template.put", "Ana"),
        ("template.submit", "Ana"),
        ("template.approve", "Ben"),
        ("template.put", "Ben"),
        ("template.submit", "Ben"),
        ("template.approve", "Ana"),
        ("template.put", "Ana"),
        ("template.submit", "Ana"),
        ("template.reject", "Ben"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, n)| (a.to_string(), n.to_string()))
        .collect();
    assert_eq!(steps, expected);
}

/// Meta's `message_template_status_update` for one language of `unit_dispatched`.
fn status_webhook(language: &str, event: &str) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "time": 1700000000,
        "changes": [{"field": "message_template_status_update", "value": {
            "event": event, "message_template_id": 594425479261596_i64,
            "message_template_name": "unit_dispatched", "message_template_language": language,
            "reason": "NONE"}}]}]})
    .to_string()
}

#[tokio::test]
async fn a_whatsapp_template_needs_meta_approval_in_its_language_from_sync_or_webhook() {
    let graph = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v21.0/{WABA_ID}/message_templates")))
        .and(header("authorization", "Bearer wa-access-token-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"name": "unit_dispatched", "language": "en", "status": "APPROVED", "id": "1"},
            {"name": "unit_dispatched", "language": "es", "status": "PAUSED", "id": "2"}],
            "paging": {"cursors": {"before": "MAZDZD", "after": "MjQZD"}}})))
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"type": "template"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"messaging_product": "whatsapp",
            "contacts": [{"input": "15555550123", "wa_id": "15555550123"}],
            "messages": [{"id": "wamid.TPL19"}]}),
        ))
        .mount(&graph)
        .await;
    let (s, key) = whatsapp_tenant(&graph).await;
    let (ana, _) = member(&s, &key, "ana@north.example", "Ana", "supervisor").await;
    let (ben, _) = member(&s, &key, "ben@north.example", "Ben", "supervisor").await;
    let (dan, _) = member(&s, &key, "dan@north.example", "Dan", "dispatcher").await;
    let mut definition = definition("Unit {{unit}} arrives in {{eta}} min");
    definition["channels"] = json!(["whatsapp", "sms"]);
    definition["whatsapp"] = json!({"name": "unit_dispatched", "parameters": ["unit", "eta"]});
    let (st, b) = s
        .api(
            &ana,
            Method::PUT,
            "/v1/templates/unit-dispatched",
            Some(definition),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    step(&s, &ana, "unit-dispatched", "submit", None).await;
    let (st, _) = step(&s, &ben, "unit-dispatched", "approve", None).await;
    assert_eq!(st, 200);

    let send = |language: &str| {
        json!({"channel": "whatsapp", "to": CONTACT, "template": {"name": "unit-dispatched",
            "language": language, "variables": {"unit": "M12", "eta": 7}}})
    };
    // Approved by the tenant, but Meta's verdict is not known yet.
    let (st, b) = s
        .api(&key, Method::POST, "/v1/messages", Some(send("en")))
        .await;
    refused(st, &b, 409, "template_not_approved");
    assert!(b["error"].as_str().unwrap().contains("sync"), "{b}");

    let (st, b) = s
        .api(&dan, Method::POST, "/v1/templates/sync/whatsapp", None)
        .await;
    refused(st, &b, 403, "forbidden");
    let (st, synced) = s
        .api(&ana, Method::POST, "/v1/templates/sync/whatsapp", None)
        .await;
    assert_eq!(st, 200, "{synced}");
    assert_eq!(synced["items"].as_array().unwrap().len(), 2, "{synced}");
    let (_, t) = s
        .api(&dan, Method::GET, "/v1/templates/unit-dispatched", None)
        .await;
    assert_eq!(
        t["whatsapp_status"],
        json!({"en": "APPROVED", "es": "PAUSED"})
    );

    // es-MX resolves to es, which Meta paused; en goes out as Meta's template message.
    let (st, b) = s
        .api(&key, Method::POST, "/v1/messages", Some(send("es-MX")))
        .await;
    refused(st, &b, 409, "template_not_approved");
    assert!(b["error"].as_str().unwrap().contains("PAUSED"), "{b}");
    let (st, m) = s
        .api(&key, Method::POST, "/v1/messages", Some(send("en")))
        .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["body"], "Unit M12 arrives in 7 min");
    assert_eq!(
        (
            &m["template"]["name"],
            &m["template"]["version"],
            &m["template"]["language"]
        ),
        (&json!("unit-dispatched"), &json!(1), &json!("en"))
    );
    s.message_reaching(&key, m["id"].as_str().unwrap(), "sent")
        .await;
    let requests = graph.received_requests().await.unwrap();
    let sent: Value = requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .next_back()
        .unwrap();
    assert_eq!(
        sent["template"],
        json!({"name": "unit_dispatched", "language": {"code": "en"}, "components": [
            {"type": "body", "parameters": [
                {"type": "text", "text": "M12"}, {"type": "text", "text": "7"}]}]})
    );

    // Meta's webhook approves es; a forged one cannot disable it.
    assert_eq!(
        post_signed(&s, &status_webhook("es", "APPROVED")).await,
        200
    );
    let forged = s
        .http
        .post(s.url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            omni_core::providers::whatsapp::signature(
                status_webhook("es", "DISABLED").as_bytes(),
                "not-the-app-secret-0000000000",
            ),
        )
        .body(status_webhook("es", "DISABLED"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let (st, m) = s
        .api(&key, Method::POST, "/v1/messages", Some(send("es-MX")))
        .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["body"], "La unidad M12 llega en 7 min");
    assert_eq!(m["template"]["language"], "es");
    let (_, t) = s
        .api(&dan, Method::GET, "/v1/templates/unit-dispatched", None)
        .await;
    assert_eq!(t["whatsapp_status"]["es"], "APPROVED");
}

#[tokio::test]
async fn an_auto_reply_can_be_an_approved_template_rendered_for_the_channel() {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"sid": "SM00000000000000000000000000000020", "status": "queued"}),
        ))
        .mount(&fake)
        .await;
    let s = Server::start(&[("OMNI_TWILIO_API_URL", &fake.uri())]).await;
    let key = s.twilio_tenant("north", TOKEN, NUMBER).await;
    let (ana, _) = member(&s, &key, "ana@north.example", "Ana", "supervisor").await;
    let (ben, _) = member(&s, &key, "ben@north.example", "Ben", "supervisor").await;
    let reply = json!({"greeting": {"template": {"name": "welcome", "language": "es-MX", "variables": {"unit": "M12", "eta": 4}}}});
    // Only a template the tenant has.
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/auto-replies",
            Some(reply.clone()),
        )
        .await;
    refused(st, &b, 400, "invalid_request");
    assert!(b["error"].as_str().unwrap().contains("welcome"), "{b}");
    let (st, b) = s
        .api(
            &ana,
            Method::PUT,
            "/v1/templates/welcome",
            Some(definition("Unit {{unit}} in {{eta}} min")),
        )
        .await;
    assert!(st == 200 || st == 201, "{b}");
    assert_eq!(step(&s, &ana, "welcome", "submit", None).await.0, 200);
    assert_eq!(step(&s, &ben, "welcome", "approve", None).await.0, 200);
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/auto-replies",
            Some(reply),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let (st, _) = s
        .twilio_webhook(
            "/webhooks/twilio",
            &[
                ("MessageSid", "SMgreet1"),
                ("From", CONTACT),
                ("To", NUMBER),
                ("Body", "hola"),
                ("NumMedia", "0"),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(st, 200);
    // The greeting goes out in the base language of es-MX, with its variables.
    let body = s
        .eventually(10, "the greeting at the carrier", || async {
            fake.received_requests()
                .await
                .unwrap()
                .iter()
                .find_map(|r| {
                    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body).ok()?;
                    form.into_iter().find(|(k, _)| k == "Body").map(|(_, v)| v)
                })
        })
        .await;
    assert_eq!(body, "La unidad M12 llega en 4 min");
    let (_, log) = s
        .api(&key, Method::GET, "/v1/messages?direction=outbound", None)
        .await;
    let sent = &log["items"][0];
    assert_eq!(sent["sent_by"]["type"], "auto_reply", "{log}");
    assert_eq!(
        (
            sent["template"]["name"].as_str(),
            sent["template"]["language"].as_str()
        ),
        (Some("welcome"), Some("es")),
        "{log}"
    );
}
