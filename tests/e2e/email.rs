//! Email through SendGrid end to end: a contact with only an email address gets a message
//! from the tenant's registered address through a SendGrid API fake (bad addresses refused
//! with a 400 and nothing stored), the contact's reply through Inbound Parse lands in the same
//! conversation (a wrong URL secret is a 401 and stores nothing; `omni webhook send sendgrid`
//! posts one too), and a signed `delivered`
//! event moves the message on (a bad signature is a 401 and moves nothing).

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const API_KEY: &str = "SG.e2e-sendgrid-api-key";
const PARSE_SECRET: &str = "e2e-sendgrid-parse-secret";
const ADDRESS: &str = "dispatch@north.example";
const CONTACT: &str = "jane@example.org";
/// The X-Message-Id the fake answers with; the signed event below names it.
const MESSAGE_ID: &str = "W4Qx1yLkTgyd5rM2bGQx8w";
/// A `delivered` event for that message from that address, signed with OpenSSL under the
/// test key (tests/fixtures/keys/sendgrid-test-private.pem; the recipe is in the SendGrid
/// module's tests).
const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEH3+aj/qEATycUbqgPpiYP3Ggxs/jlarOe27T5pQiIlTlQgO+TD80efjJxCQVyJzR0ULDAngVQzMjpm13KYcTkQ==";
const TIMESTAMP: &str = "1764500000";
const EVENTS: &str = r#"[{"email":"jane@example.org","timestamp":1764500000,"event":"delivered","sg_event_id":"ZGVsaXZlcmVkLTAtMTIzNDU2","sg_message_id":"W4Qx1yLkTgyd5rM2bGQx8w.filterdrecv-5645d9c87f-7mz4q-1-69A1B2C3-4.0","response":"250 OK","omni_message_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","omni_from":"dispatch@north.example"}]"#;
const SIGNATURE: &str = "MEUCICEC+Xjoxq9hbSRu0zO9BASzScjAlIJW+GYKn4F5/iPcAiEAzw0r4tUbRSObVIBuLLi7Yncb4fJJwD814DA+SLLlAcA=";

/// An Inbound Parse post as SendGrid makes it (multipart/form-data).
fn parse_body(text: &str) -> (String, Vec<u8>) {
    let boundary = "xYzZY";
    let fields = [
        (
            "headers",
            "Message-ID: <reply-0001@example.org>\nSubject: Re: Your call\n",
        ),
        ("from", "Jane Doe <jane@example.org>"),
        ("to", "North County Dispatch <dispatch@north.example>"),
        ("subject", "Re: Your call"),
        ("text", text),
        (
            "envelope",
            r#"{"to":["dispatch@north.example"],"from":"jane@example.org"}"#,
        ),
        ("attachments", "0"),
    ];
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

async fn post(s: &Server, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = s.http.post(s.url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn conversations(s: &Server, key: &str) -> Vec<Value> {
    let (_, l) = s.api(key, Method::GET, "/v1/conversations", None).await;
    l["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn email_contact_send_reply_and_signed_delivery_event() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(202).insert_header("x-message-id", MESSAGE_ID))
        .expect(1)
        .mount(&api)
        .await;
    let s = Server::start(&[("OMNI_SENDGRID_API_URL", &api.uri())]).await;
    let key = s.tenant("north").await;
    let config = json!({"api_key": API_KEY, "webhook_secret": PARSE_SECRET,
        "event_public_key": PUBLIC_KEY});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/sendgrid",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, listed) = s
        .admin(Method::GET, "/v1/admin/tenants/north/providers", None)
        .await;
    let shown = listed.to_string();
    assert!(
        !shown.contains(API_KEY) && !shown.contains(PARSE_SECRET),
        "{listed}"
    );

    // The tenant's address is registered like a number, for email only.
    let numbers = "/v1/admin/tenants/north/numbers";
    for (address, channels) in [
        ("Dispatch@North.example", json!(["sms"])),
        ("not-an-address@", json!(["email"])),
    ] {
        let (st, err) = s
            .admin(
                Method::PUT,
                &format!("{numbers}/{address}"),
                Some(json!({"provider": "sendgrid", "channels": channels})),
            )
            .await;
        assert_eq!(st, 400, "{err}");
    }
    let (st, route) = s
        .admin(
            Method::PUT,
            &format!("{numbers}/dispatch@North.Example"),
            Some(json!({"provider": "sendgrid", "channels": ["email"]})),
        )
        .await;
    assert_eq!(st, 200, "{route}");
    assert_eq!(route["number"], ADDRESS);

    // Bad recipients and misplaced subjects: a 400 naming the field, nothing stored.
    for (request, field) in [
        (
            json!({"channel": "email", "to": "jane@", "body": "x"}),
            "to",
        ),
        (
            json!({"channel": "email", "to": "+15555550123", "body": "x"}),
            "to",
        ),
        (
            json!({"channel": "email", "to": CONTACT, "body": "x", "subject": "a\r\nBcc: x@y.org"}),
            "subject",
        ),
        (
            json!({"channel": "sms", "to": "+15555550123", "body": "x", "subject": "Hi"}),
            "subject",
        ),
    ] {
        let (st, err) = s
            .api(&key, Method::POST, "/v1/messages", Some(request))
            .await;
        assert_eq!(st, 400, "{err}");
        assert_eq!(err["code"], "invalid_request");
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{err}"
        );
    }
    assert!(conversations(&s, &key).await.is_empty());

    // The send goes to SendGrid with the documented shape.
    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "email",
            "to": "jane@Example.ORG", "body": "Units are on the way", "subject": "Your call"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(
        (m["from"].as_str(), m["to"].as_str()),
        (Some(ADDRESS), Some(CONTACT))
    );
    let id = m["id"].as_str().unwrap().to_string();
    let sent = s.message_reaching(&key, &id, "sent").await;
    assert_eq!(sent["provider"], "sendgrid");
    assert_eq!(sent["provider_message_id"], MESSAGE_ID);
    assert_eq!(sent["subject"], "Your call");
    let requests = api.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        json!({"personalizations": [{"to": [{"email": CONTACT}]}], "from": {"email": ADDRESS},
            "subject": "Your call", "content": [{"type": "text/plain", "value": "Units are on the way"}],
            "custom_args": {"omni_message_id": id, "omni_from": ADDRESS}})
    );
    let listed = conversations(&s, &key).await;
    assert_eq!(listed.len(), 1);
    let conversation = listed[0].clone();
    assert_eq!(conversation["channel"], "email");
    assert_eq!(conversation["contact"], CONTACT);
    assert_eq!(conversation["tenant_number"], ADDRESS);

    // The reply: a wrong or missing URL secret is refused and stores nothing.
    let (content_type, reply) = parse_body("Thank you, I am outside.");
    for query in ["?secret=not-the-secret", ""] {
        let (st, err) = post(
            &s,
            &format!("/webhooks/sendgrid{query}"),
            &[("content-type", &content_type)],
            reply.clone(),
        )
        .await;
        assert_eq!(st, 401, "{err}");
        assert_eq!(err["code"], "invalid_signature");
    }
    let (st, ok) = post(
        &s,
        &format!("/webhooks/sendgrid?secret={PARSE_SECRET}"),
        &[("content-type", &content_type)],
        reply,
    )
    .await;
    assert_eq!((st, ok), (200, Value::String("ok".into())));
    let updated = s
        .eventually(10, "the reply in the conversation", || async {
            let listed = conversations(&s, &key).await;
            (listed.len() == 1 && listed[0]["unread_count"] == 1).then(|| listed[0].clone())
        })
        .await;
    assert_eq!(updated["id"], conversation["id"]);
    assert_eq!(updated["last_message"]["body"], "Thank you, I am outside.");

    // The CLI posts an email the same way, with the tenant's Parse secret.
    s.cli_webhook_send(
        &key,
        ("sendgrid", "north", PARSE_SECRET),
        (CONTACT, ADDRESS, "Second email"),
    )
    .await;
    assert_eq!(conversations(&s, &key).await.len(), 1);

    // Events: a bad signature (or a body it does not cover) moves nothing.
    let tampered = EVENTS.replace("delivered", "bounce");
    for (signature, body) in [("MEUCIQ==", EVENTS), (SIGNATURE, tampered.as_str())] {
        let (st, err) = post(
            &s,
            "/webhooks/sendgrid/events",
            &[
                ("content-type", "application/json"),
                ("x-twilio-email-event-webhook-signature", signature),
                ("x-twilio-email-event-webhook-timestamp", TIMESTAMP),
            ],
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(st, 401, "{err}");
        assert_eq!(err["code"], "invalid_signature");
    }
    let (_, still) = s
        .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
        .await;
    assert_eq!(still["status"], "sent");
    let (st, ok) = post(
        &s,
        "/webhooks/sendgrid/events",
        &[
            ("content-type", "application/json"),
            ("x-twilio-email-event-webhook-signature", SIGNATURE),
            ("x-twilio-email-event-webhook-timestamp", TIMESTAMP),
        ],
        EVENTS.as_bytes().to_vec(),
    )
    .await;
    assert_eq!((st, ok), (200, Value::String("ok".into())));
    let delivered = s.message_reaching(&key, &id, "delivered").await;
    let last = delivered["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "sendgrid");
}

/// The emulator's endpoint (moto, `AWS_ENDPOINT_URL`), with `address` verified as an SES
/// sender identity there (CreateEmailIdentity, SigV4-signed as SES requires).
async fn ses_with_verified(address: &str) -> String {
    use omni_core::providers::ses::sigv4;
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("the SES tests run against moto: eval \"$(scripts/aws-emulator start)\"");
    let url = url::Url::parse(&format!("{endpoint}/v2/email/identities")).unwrap();
    let body = json!({"EmailIdentity": address}).to_string();
    let mut request = reqwest::Client::new()
        .post(url.clone())
        .header("content-type", "application/json")
        .body(body.clone());
    let signed = sigv4::sign(
        &sigv4::Request {
            method: "POST",
            url: &url,
            headers: &[("content-type", "application/json")],
            payload: body.as_bytes(),
        },
        &sigv4::Scope {
            access_key_id: "AKIAE2ETESTING",
            secret_access_key: "testing",
            region: "us-east-1",
            service: "ses",
        },
        chrono::Utc::now(),
    );
    for (k, v) in signed {
        request = request.header(k, v);
    }
    let created = request.send().await.unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    endpoint
}

/// Gives the tenant `north` SES credentials for the emulator. moto checks no signature: a long
/// secret lets the harness scan logs and answers for it.
async fn configure_ses(s: &Server) {
    let config = json!({"access_key_id": "AKIAE2ETESTING", "secret_access_key": "e2e-ses-secret-access-key",
        "region": "us-east-1"});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/ses",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

/// Amazon SES v2 against the emulator (moto, `AWS_ENDPOINT_URL`): a verified sender's email
/// goes out SigV4-signed and is `sent` with SES's MessageId; an unverified sender's is failed
/// for good with SES's reason; email routing may list SES and SendGrid for failover.
#[tokio::test]
async fn ses_sends_through_the_emulator() {
    let endpoint = ses_with_verified(ADDRESS).await;
    let s = Server::start(&[("OMNI_SES_API_URL", &endpoint)]).await;
    let key = s.tenant("north").await;
    configure_ses(&s).await;
    for address in [ADDRESS, "unverified@north.example"] {
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("/v1/admin/tenants/north/numbers/{address}"),
                Some(json!({"provider": "ses", "channels": ["email"]})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    // Email fails over between the email carriers like SMS between phone carriers.
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/routing",
            Some(json!({"email": ["ses", "sendgrid"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let send = |from: &str| {
        json!({"channel": "email", "from": from, "to": CONTACT,
            "body": "Units are on the way"})
    };
    let (st, m) = s
        .api(&key, Method::POST, "/v1/messages", Some(send(ADDRESS)))
        .await;
    assert_eq!(st, 202, "{m}");
    let sent = s
        .message_reaching(&key, m["id"].as_str().unwrap(), "sent")
        .await;
    assert_eq!(sent["provider"], "ses");
    assert!(
        sent["provider_message_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{sent}"
    );
    assert_eq!(sent["subject"], "Message from Tenant north");

    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(send("unverified@north.example")),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let failed = s
        .message_reaching(&key, m["id"].as_str().unwrap(), "failed")
        .await;
    assert_eq!(failed["error_code"], "MessageRejected", "{failed}");
}

/// A SendGrid outage moves email to SES from the same address, registered at SendGrid only (an
/// address is not leased from one carrier as a number is): sent once, by SES (moto), with the
/// reason SendGrid was passed over in the `sent` event.
#[tokio::test]
async fn a_sendgrid_outage_moves_email_to_ses_from_the_same_address() {
    let endpoint = ses_with_verified(ADDRESS).await;
    let sendgrid = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(
                json!({"errors": [{"message": "service unavailable", "field": null}]}),
            ),
        )
        .expect(2)
        .mount(&sendgrid)
        .await;
    let s = Server::start(&[
        ("OMNI_SENDGRID_API_URL", &sendgrid.uri()),
        ("OMNI_SES_API_URL", &endpoint),
        ("OMNI_RETRY_MAX_ATTEMPTS", "2"),
    ])
    .await;
    let key = s.tenant("north").await;
    let config = json!({"api_key": API_KEY, "webhook_secret": PARSE_SECRET,
        "event_public_key": PUBLIC_KEY});
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/sendgrid",
            Some(config),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    configure_ses(&s).await;
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{ADDRESS}"),
            Some(json!({"provider": "sendgrid", "channels": ["email"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/routing",
            Some(json!({"email": ["sendgrid", "ses"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "email", "to": CONTACT, "body": "Units are on the way"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["from"], ADDRESS, "{m}");
    let sent = s
        .message_reaching(&key, m["id"].as_str().unwrap(), "sent")
        .await;
    assert_eq!(sent["provider"], "ses", "{sent}");
    assert_eq!(
        sent["from"], ADDRESS,
        "the same address, through SES: {sent}"
    );
    let last = sent["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "ses", "{sent}");
    let note = last["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!("failover to ses from {ADDRESS}: sendgrid: ")),
        "{note}"
    );
    let conversation = sent["conversation_id"].as_str().unwrap().to_string();
    let (_, listed) = s
        .api(
            &key,
            Method::GET,
            &format!("/v1/conversations/{conversation}/messages"),
            None,
        )
        .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    // SendGrid was called exactly its budget: the mock's `expect(2)`, checked on drop.
}
