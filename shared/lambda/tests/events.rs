//! Every file in events/ fed to its function's handler, against the emulator with the seed
//! data events/README.md describes, so the samples can never rot.

mod seed;

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use omni_aws::{AwsBackend, SdkConfig};
use omni_core::domain::{DeliveryStatus, WebhookEvent};
use omni_core::ports::{Job, MessageStore};
use omni_core::providers::{bird, BirdCredentials};
use omni_core::providers::{
    inteliquent, sinch, telnyx, vonage, Credentials, Secret, SinchCredentials, TelnyxCredentials,
    VonageCredentials, WebhookRequest,
};
use omni_core::providers::{messagebird, MessageBirdCredentials};
use omni_lambda::{LambdaConfig, Omni};
use seed::*;
use tower::ServiceExt;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct World {
    config: SdkConfig,
    backend: AwsBackend,
    omni: Omni,
    carrier: MockServer,
    _management: MockServer,
}

async fn world() -> World {
    let (config, backend, admin_secret) = seeded().await;
    let carrier = MockServer::start().await;
    let management = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&management)
        .await;
    // No public URL: as deployed behind API Gateway's own domain, webhooks are checked
    // against https://<Host>.
    let settings = LambdaConfig::from_args([
        "--ws-endpoint",
        &management.uri(),
        "--admin-token-secret",
        &admin_secret,
        "--twilio-api-url",
        &carrier.uri(),
        "--sns-cert-url-prefix",
        &carrier.uri(),
        "--auth-failure-limit",
        "3",
        "--auth-failure-delay-ms",
        "0",
        "--ws-max-per-key",
        "2",
        "--ws-max-per-tenant",
        "3",
    ]);
    let omni = Omni::new(&settings, &config, backend.resources().clone())
        .await
        .unwrap();
    World {
        config,
        backend,
        omni,
        carrier,
        _management: management,
    }
}

fn event_file(name: &str) -> String {
    let path = format!("{}/../../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn payload<T: serde::de::DeserializeOwned>(name: &str) -> LambdaEvent<T> {
    let event = serde_json::from_str(&event_file(name))
        .unwrap_or_else(|e| panic!("events/{name}.json does not parse: {e}"));
    LambdaEvent::new(event, Context::default())
}

/// Runs an API Gateway HTTP event through a router; the status and the JSON body (if any).
async fn http(router: axum::Router, name: &str) -> (u16, serde_json::Value) {
    http_event(router, &event_file(name)).await
}

async fn http_event(router: axum::Router, event: &str) -> (u16, serde_json::Value) {
    let request = lambda_http::request::from_str(event)
        .unwrap_or_else(|e| panic!("not an HTTP API event: {e}"));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, body)
}

async fn queued_jobs(w: &World, queue_url: &str) -> Vec<Job> {
    let out = aws_sdk_sqs::Client::new(&w.config)
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    out.messages
        .unwrap_or_default()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

async fn inbound_jobs(w: &World) -> Vec<Job> {
    queued_jobs(w, &w.backend.resources().inbound_queue_url).await
}

fn assert_one_inbound_for_acme(jobs: &[Job]) {
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let Job::Inbound { tenant_id, .. } = &jobs[0] else {
        panic!("not an inbound job: {jobs:?}");
    };
    assert_eq!(tenant_id.as_str(), TENANT);
}

/// The one inbound message queued, for the seed's tenant.
async fn one_inbound_email_for_acme(w: &World) -> omni_core::domain::InboundMessage {
    let jobs = inbound_jobs(w).await;
    assert_one_inbound_for_acme(&jobs);
    match &jobs[0] {
        Job::Inbound {
            event: WebhookEvent::Message(m),
            ..
        } => m.clone(),
        other => panic!("not a message: {other:?}"),
    }
}

#[tokio::test]
async fn webhook_twilio() {
    let w = world().await;
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-twilio",
    )
    .await;
    assert_eq!(status, 200);
    assert_one_inbound_for_acme(&inbound_jobs(&w).await);
}

#[tokio::test]
async fn webhook_twilio_status() {
    let w = world().await;
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-twilio-status",
    )
    .await;
    assert_eq!(status, 200);
    assert_one_inbound_for_acme(&inbound_jobs(&w).await);
}

#[tokio::test]
async fn webhook_voipms() {
    let w = world().await;
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-voipms",
    )
    .await;
    assert_eq!(status, 200);
    assert_one_inbound_for_acme(&inbound_jobs(&w).await);
}

/// The event is the text half of a split MMS: it waits; the media half (the same event with
/// part 2's body) completes it into one inbound message with text and media.
/// SendGrid Inbound Parse (multipart, URL secret): one message from the contact's email
/// address to the tenant's.
#[tokio::test]
async fn webhook_sendgrid() {
    let w = world().await;
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-sendgrid",
    )
    .await;
    assert_eq!(status, 200);
    let m = one_inbound_email_for_acme(&w).await;
    assert_eq!(
        (m.from.as_str(), m.to.as_str()),
        (EMAIL_CONTACT, SENDGRID_ADDRESS)
    );
    assert_eq!(
        m.body.as_deref(),
        Some("Events test over SendGrid Inbound Parse")
    );
}

/// SES over SNS: an OpenSSL-signed (SignatureVersion 1) receipt notification for the tenant's
/// `alerts@` address on its topic. The signing certificate URL is not signed: the test points it
/// at the carrier fake, which serves the test certificate.
#[tokio::test]
async fn webhook_ses() {
    let w = world().await;
    seed::serve_sns_cert(&w.carrier).await;
    let mut event = seed::sns_cert_on(&event_file("webhook-ses"), &w.carrier);
    let mut sns: serde_json::Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    let router = omni_api::webhooks::app(w.omni.app_state());
    let (status, body) = http_event(router.clone(), &event.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let m = one_inbound_email_for_acme(&w).await;
    assert_eq!(
        (m.from.as_str(), m.to.as_str()),
        (EMAIL_CONTACT, SES_ADDRESS)
    );
    assert_eq!(m.body.as_deref(), Some("Events test over SES receiving"));

    // Tampered: refused, nothing queued.
    sns["Message"] = sns["Message"]
        .as_str()
        .unwrap()
        .replace("Events", "Forged")
        .into();
    event["body"] = sns.to_string().into();
    let (status, body) = http_event(router, &event.to_string()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_signature"))
    );
}

#[tokio::test]
async fn webhook_voicemeup() {
    let w = world().await;
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-voicemeup",
    )
    .await;
    assert_eq!(status, 200);
    assert!(inbound_jobs(&w).await.is_empty(), "the text half waits");

    let mut event: serde_json::Value =
        serde_json::from_str(&event_file("webhook-voicemeup")).unwrap();
    let mut body: serde_json::Value =
        serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    body["sms_hash"] = "ev0mms0part2".into();
    body["message"] = "".into();
    body["attachment"] = "https://clients.voicemeup.com/files/events-0001.jpg".into();
    body["attachment_mime_type"] = "image/jpeg".into();
    event["body"] = body.to_string().into();
    event["headers"]["content-length"] = body.to_string().len().to_string().into();
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let response = omni_api::webhooks::app(w.omni.app_state())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let jobs = inbound_jobs(&w).await;
    assert_one_inbound_for_acme(&jobs);
    let Job::Inbound {
        event: WebhookEvent::Message(m),
        ..
    } = &jobs[0]
    else {
        panic!("not a message: {jobs:?}");
    };
    assert_eq!(m.provider_message_id, "ev0mms0part1+ev0mms0part2");
    assert_eq!(
        m.body.as_deref(),
        Some("Events test over VoiceMeUp: see attached")
    );
    assert_eq!(m.media.len(), 1);
}

#[tokio::test]
async fn webhook_whatsapp() {
    let w = world().await;
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-whatsapp",
    )
    .await;
    assert_eq!(status, 200);
    assert!(!inbound_jobs(&w).await.is_empty());
}

/// Posts an HTTP API webhook event to the webhook functions' router: accepted, one inbound
/// job for the seeded tenant queued.
async fn accepted_webhook(w: &World, event: &str) {
    let (status, body) = http_event(omni_api::webhooks::app(w.omni.app_state()), event).await;
    assert_eq!(status, 200, "{body}");
    assert_one_inbound_for_acme(&inbound_jobs(w).await);
}

/// The request an HTTP event sample stands for, with its `headers` (for checking a signature
/// as of the sample's own time).
fn sample_request(event: &serde_json::Value, path: &str, headers: &[&str]) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        url: format!("{PUBLIC_URL}{path}"),
        headers: headers
            .iter()
            .map(|name| {
                let value = event["headers"][name].as_str().unwrap_or_default();
                (name.to_string(), value.to_owned())
            })
            .collect(),
        body: event["body"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
    }
}

/// Telnyx refuses a webhook signed more than five minutes ago, so the sample is checked
/// genuine as of its own time, then posted re-signed now with the same key, as Telnyx would.
#[tokio::test]
async fn webhook_telnyx() {
    let w = world().await;
    let event: serde_json::Value = serde_json::from_str(&event_file("webhook-telnyx")).unwrap();
    let header =
        |event: &serde_json::Value, name: &str| event["headers"][name].as_str().unwrap().to_owned();
    let signed_at = header(&event, telnyx::TIMESTAMP_HEADER);
    let sample = sample_request(
        &event,
        "/webhooks/telnyx",
        &[telnyx::TIMESTAMP_HEADER, telnyx::SIGNATURE_HEADER],
    );
    let credentials = Credentials::Telnyx(TelnyxCredentials {
        api_key: Secret::new("unused"),
        public_key: TELNYX_PUBLIC_KEY.into(),
    });
    assert_eq!(
        telnyx::verify_at(&sample, &credentials, signed_at.parse().unwrap()),
        Ok(()),
        "events/webhook-telnyx.json is not signed with the seed's key"
    );

    accepted_webhook(&w, &signed_now("webhook-telnyx", &event.to_string())).await;
}

/// Sinch callbacks carry a signed timestamp with a five-minute replay window too: the sample
/// is checked genuine as of its own time (and refused as it is now), then posted re-signed now.
#[tokio::test]
async fn webhook_sinch() {
    let w = world().await;
    let event: serde_json::Value = serde_json::from_str(&event_file("webhook-sinch")).unwrap();
    let header =
        |event: &serde_json::Value, name: &str| event["headers"][name].as_str().unwrap().to_owned();
    let signed_at = header(&event, sinch::TIMESTAMP_HEADER);
    let sample = sample_request(
        &event,
        "/webhooks/sinch",
        &[
            sinch::SIGNATURE_HEADER,
            sinch::NONCE_HEADER,
            sinch::TIMESTAMP_HEADER,
        ],
    );
    let credentials = Credentials::Sinch(SinchCredentials {
        service_plan_id: "unused".into(),
        api_token: Secret::new("unused"),
        app_secret: Secret::new(SINCH_APP_SECRET),
    });
    assert_eq!(
        sinch::verify_at(&sample, &credentials, signed_at.parse().unwrap()),
        Ok(()),
        "events/webhook-sinch.json is not signed with the seed's app secret"
    );
    let (status, _) = http(omni_api::webhooks::app(w.omni.app_state()), "webhook-sinch").await;
    assert_eq!(status, 401, "the sample as it is: a replay");

    accepted_webhook(&w, &signed_now("webhook-sinch", &event.to_string())).await;
}

/// Bird signs its timestamp with a five-minute replay window (ours): the sample is checked
/// genuine as of its own time (and refused as it is now), then posted re-signed now.
#[tokio::test]
async fn webhook_bird() {
    let w = world().await;
    let event: serde_json::Value = serde_json::from_str(&event_file("webhook-bird")).unwrap();
    let signed_at = event["headers"][bird::TIMESTAMP_HEADER]
        .as_str()
        .unwrap()
        .to_owned();
    let sample = sample_request(
        &event,
        "/webhooks/bird",
        &[bird::SIGNATURE_HEADER, bird::TIMESTAMP_HEADER],
    );
    let credentials = Credentials::Bird(BirdCredentials {
        workspace_id: "unused".into(),
        channel_id: "unused".into(),
        access_key: Secret::new("unused"),
        signing_key: Secret::new(BIRD_SIGNING_KEY),
    });
    assert_eq!(
        bird::verify_at(&sample, &credentials, signed_at.parse().unwrap()),
        Ok(()),
        "events/webhook-bird.json is not signed with the seed's signing key"
    );
    let (status, _) = http(omni_api::webhooks::app(w.omni.app_state()), "webhook-bird").await;
    assert_eq!(status, 401, "the sample as it is: a replay");

    accepted_webhook(&w, &signed_now("webhook-bird", &event.to_string())).await;
}

/// Vonage's callback JWT carries its `iat`, refused five minutes on: the sample is checked
/// genuine as of its own time (and refused as it is now), then posted with a token made now.
#[tokio::test]
async fn webhook_vonage() {
    let w = world().await;
    let event: serde_json::Value = serde_json::from_str(&event_file("webhook-vonage")).unwrap();
    let sample = sample_request(&event, "/webhooks/vonage", &["authorization"]);
    let credentials = Credentials::Vonage(VonageCredentials {
        application_id: "unused".into(),
        private_key: Secret::new("unused"),
        signature_secret: Secret::new(VONAGE_SIGNATURE_SECRET),
    });
    let signed_at = event["requestContext"]["timeEpoch"].as_i64().unwrap() / 1000;
    assert_eq!(
        vonage::verify_at(&sample, &credentials, signed_at),
        Ok(()),
        "events/webhook-vonage.json is not signed with the seed's signature secret"
    );
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-vonage",
    )
    .await;
    assert_eq!(status, 401, "the sample as it is: a replay");

    accepted_webhook(&w, &signed_now("webhook-vonage", &event.to_string())).await;
}

/// An MMS with two photos, authenticated as Inteliquent does (a `verificationToken` HMAC of
/// the `messageID` under the webhook key, no time in it): queued as one message with both.
#[tokio::test]
async fn webhook_inteliquent() {
    let w = world().await;
    let event: serde_json::Value =
        serde_json::from_str(&event_file("webhook-inteliquent")).unwrap();
    assert_eq!(
        event["headers"]["verificationtoken"],
        inteliquent::verification_token(
            INTELIQUENT_WEBHOOK_KEY,
            event["headers"]["messageid"].as_str().unwrap()
        ),
        "events/webhook-inteliquent.json is not signed with the seed's webhook key"
    );
    let (status, body) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-inteliquent",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let jobs = inbound_jobs(&w).await;
    assert_one_inbound_for_acme(&jobs);
    let Job::Inbound {
        event: WebhookEvent::Message(m),
        ..
    } = &jobs[0]
    else {
        panic!("not an inbound message");
    };
    assert_eq!(m.to.as_str(), INTELIQUENT_NUMBER);
    assert_eq!(m.media.len(), 2);
}

/// A forwarded SMS (a GET, fields in the query) whose `MessageBird-Signature-JWT` lives a
/// minute: the sample is checked genuine as of its own time (and refused as it is now), then
/// sent with a token made now.
#[tokio::test]
async fn webhook_messagebird() {
    let w = world().await;
    let event: serde_json::Value =
        serde_json::from_str(&event_file("webhook-messagebird")).unwrap();
    let query = event["rawQueryString"].as_str().unwrap();
    let mut sample = sample_request(
        &event,
        &format!("/webhooks/messagebird?{query}"),
        &[messagebird::SIGNATURE_HEADER],
    );
    sample.method = "GET".into();
    let credentials = Credentials::MessageBird(MessageBirdCredentials {
        access_key: Secret::new("unused"),
        signing_key: Secret::new(MESSAGEBIRD_SIGNING_KEY),
    });
    let signed_at = event["requestContext"]["timeEpoch"].as_i64().unwrap() / 1000;
    assert_eq!(
        messagebird::verify_at(&sample, &credentials, signed_at),
        Ok(()),
        "events/webhook-messagebird.json is not signed with the seed's signing key"
    );
    let (status, _) = http(
        omni_api::webhooks::app(w.omni.app_state()),
        "webhook-messagebird",
    )
    .await;
    assert_eq!(status, 401, "the sample as it is: expired");

    let (status, body) = http_event(
        omni_api::webhooks::app(w.omni.app_state()),
        &signed_now("webhook-messagebird", &event.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let jobs = inbound_jobs(&w).await;
    assert_one_inbound_for_acme(&jobs);
    let Job::Inbound {
        event: WebhookEvent::Message(m),
        ..
    } = &jobs[0]
    else {
        panic!("not an inbound message");
    };
    assert_eq!(m.to.as_str(), MESSAGEBIRD_NUMBER);
    assert_eq!(m.body.as_deref(), Some("Events test over MessageBird"));
}

#[tokio::test]
async fn webhook_bandwidth() {
    let w = world().await;
    accepted_webhook(&w, &event_file("webhook-bandwidth")).await;
}

#[tokio::test]
async fn send() {
    let w = world().await;
    let (status, body) = http(omni_api::dispatch::send_app(w.omni.app_state()), "send").await;
    assert_eq!(status, 202, "{body}");
    let id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    let stored = w.backend.get_message(&tenant(), id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::Queued);
    let jobs = queued_jobs(&w, &w.backend.resources().delivery_queue_url).await;
    assert!(jobs
        .iter()
        .any(|j| matches!(j, Job::Deliver { message_id, .. } if *message_id == id)));
}

#[tokio::test]
async fn conversations() {
    let w = world().await;
    let (status, body) = http(
        omni_api::dispatch::conversations_app(w.omni.app_state()),
        "conversations",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    let contacts: Vec<_> = items.iter().map(|c| &c["contact"]).collect();
    assert_eq!(
        contacts,
        [CONTACT, EMAIL_CONTACT],
        "the seeded SMS thread, then the older email thread"
    );
}

/// API Gateway also routes `/healthz` and `/openapi.json` to the conversations function:
/// the contract's paths answer on both deployments.
#[tokio::test]
async fn conversations_function_answers_health_and_openapi() {
    let w = world().await;
    for path in ["/healthz", "/openapi.json"] {
        let event = event_file("conversations")
            .replace("/v1/conversations", path)
            .replace("limit=20", "");
        let (status, body) = http_event(
            omni_api::dispatch::conversations_app(w.omni.app_state()),
            &event,
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
        match path {
            "/healthz" => assert_eq!(body, serde_json::json!({"status": "ok"})),
            _ => assert!(body["paths"]["/healthz"].is_object(), "{body}"),
        }
    }
}

#[tokio::test]
async fn admin() {
    let w = world().await;
    let (status, body) = http(omni_api::admin::app(w.omni.app_state()), "admin").await;
    assert!(status == 200 || status == 201, "{status} {body}");
    assert_eq!(body["id"], TENANT);
}

/// Guesses at the admin token from one address lock that address out on Lambda too (the
/// function counts them against API Gateway's `sourceIp`); another address is not affected.
#[tokio::test]
async fn admin_token_guesses_lock_the_source_address_out() {
    let w = world().await;
    let app = omni_lambda::http_app(omni_api::admin::app(w.omni.app_state()));
    let event = event_file("admin");
    let guess = event.replace("oat_events0admin0token0for0the0tests", "oat_guess");
    for _ in 0..3 {
        assert_eq!(http_event(app.clone(), &guess).await.0, 401);
    }
    let (status, body) = http_event(app.clone(), &event).await;
    assert_eq!(status, 429, "{body}");
    let elsewhere = event.replace("54.172.60.1", "54.172.60.2");
    let (status, body) = http_event(app, &elsewhere).await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

/// Revoking a key through the admin function deletes it from the table (every function
/// looks keys up there on every request: no cache to outlive it) and closes the dashboards
/// recorded for it with the management API's `DeleteConnection`.
#[tokio::test]
async fn revoking_a_key_stops_it_and_deletes_its_connections() {
    use omni_core::ports::TenantStore;
    let w = world().await;
    Mock::given(method("DELETE"))
        .and(path("/@connections/dash-revoked"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&w._management)
        .await;
    w.backend
        .add_connection(
            &tenant(),
            "key_events",
            &omni_core::ports::PresenceUser {
                id: "key_events".into(),
                name: "Dashboard".into(),
            },
            "dash-revoked",
        )
        .await
        .unwrap();
    w.backend
        .add_connection(
            &tenant(),
            "key_other",
            &omni_core::ports::PresenceUser {
                id: "key_other".into(),
                name: "Dashboard".into(),
            },
            "dash-kept",
        )
        .await
        .unwrap();
    let hash = omni_core::service::hash_api_key(API_KEY);
    assert!(w.backend.tenant_for_api_key(&hash).await.unwrap().is_some());

    let revoke = event_file("admin")
        .replace(
            "\"PUT /v1/admin/tenants/{tenant_id}\"",
            "\"DELETE /v1/admin/tenants/{tenant_id}/api-keys/{id}\"",
        )
        .replace(
            "\"/v1/admin/tenants/acme-dispatch\"",
            "\"/v1/admin/tenants/acme-dispatch/api-keys/key_events\"",
        )
        .replace("\"method\": \"PUT\"", "\"method\": \"DELETE\"");
    let app = omni_lambda::http_app(omni_api::admin::app(w.omni.app_state()));
    let (status, body) = http_event(app, &revoke).await;
    assert_eq!(status, 204, "{body}");

    assert_eq!(w.backend.tenant_for_api_key(&hash).await.unwrap(), None);
    let deleted: Vec<_> = w
        ._management
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(deleted, ["/@connections/dash-revoked"]);
    assert_eq!(
        w.backend.connections(&tenant()).await.unwrap(),
        ["dash-kept"]
    );
}

#[tokio::test]
async fn conversation_updater() {
    let w = world().await;
    let response =
        omni_lambda::conversation_updater(&w.omni, payload::<SqsEvent>("conversation-updater"))
            .await
            .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let page = w
        .backend
        .list_conversations(&tenant(), 10, None)
        .await
        .unwrap();
    assert!(
        page.items.iter().any(|c| c.unread_count >= 1),
        "the inbound message was applied: {page:?}"
    );
    let messages = w
        .backend
        .list_messages(&tenant(), page.items[0].id, 50, None)
        .await
        .unwrap();
    let receipt = messages
        .items
        .iter()
        .find(|m| m.provider_message_id.as_deref() == Some(SENT_CARRIER_ID))
        .unwrap();
    assert_eq!(receipt.status, DeliveryStatus::Delivered);
}

#[tokio::test]
async fn delivery_worker() {
    let w = world().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "SMevents0delivered000000000000000",
            "status": "queued"
        })))
        .expect(1)
        .mount(&w.carrier)
        .await;
    let response = omni_lambda::delivery_worker(&w.omni, payload::<SqsEvent>("delivery-worker"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let id = Uuid::parse_str(QUEUED_MESSAGE).unwrap();
    let sent = w.backend.get_message(&tenant(), id).await.unwrap().unwrap();
    assert_eq!(sent.status, DeliveryStatus::Sent);
    assert_eq!(
        sent.provider_message_id.as_deref(),
        Some("SMevents0delivered000000000000000")
    );
}

/// A routed WhatsApp webhook that arrived long ago and whose environment refuses it (a
/// loopback target, refused at send time): past the 24 hours it is dead-lettered with its
/// exact body and counted failed, and the batch reports no failure.
#[tokio::test]
async fn whatsapp_forwarder() {
    use omni_core::ports::WabaRouteStore;
    use omni_core::waba::{WabaId, WabaRoute};
    let w = world().await;
    let id = WabaId::parse("102290129340398").unwrap();
    let route = WabaRoute::new(
        id.clone(),
        "https://127.0.0.1/hook".into(),
        None,
        chrono::Utc::now(),
    );
    w.backend
        .put_waba_route(&route, &Secret::new("example-meta-app-secret"))
        .await
        .unwrap();
    let response =
        omni_lambda::whatsapp_forwarder(&w.omni, payload::<SqsEvent>("whatsapp-forwarder"))
            .await
            .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let resources = w.backend.resources();
    let dead = queued_jobs(&w, resources.forward_dlq_url.as_deref().unwrap()).await;
    assert!(
        matches!(&dead[..], [Job::Forward { waba_id, attempts: 0, .. }] if *waba_id == id),
        "{dead:?}"
    );
    assert!(
        queued_jobs(&w, resources.forward_queue_url.as_deref().unwrap())
            .await
            .is_empty()
    );
    let (route, _) = w.backend.get_waba_route(&id).await.unwrap().unwrap();
    assert_eq!(route.failed, 1);
}

/// A queued event webhook delivery whose endpoint refuses it (a loopback URL, refused at
/// send time): the attempt is recorded with why, and the delivery queued again for its retry
/// about 5 s later; the batch reports no failure.
#[tokio::test]
async fn event_dispatcher() {
    use omni_core::ports::WebhookStore;
    use omni_core::webhook::{
        generate_secret, DeliveryState, EventType, WebhookDelivery, WebhookEndpoint,
    };
    let w = world().await;
    let now = chrono::Utc::now();
    let endpoint = WebhookEndpoint {
        id: Uuid::parse_str("019aa5e0-0000-7000-8000-00000000e001").unwrap(),
        url: "https://127.0.0.1/omni".into(),
        events: vec![EventType::MessageReceived],
        description: None,
        enabled: true,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    w.backend
        .create_webhook(&tenant(), &endpoint, &generate_secret())
        .await
        .unwrap();
    let delivery = WebhookDelivery {
        id: Uuid::parse_str("019aa5e0-0000-7000-8000-00000000d001").unwrap(),
        ..WebhookDelivery::new(&tenant(), endpoint.id, "message.received", "{}".into(), now)
    };
    w.backend
        .add_deliveries(std::slice::from_ref(&delivery))
        .await
        .unwrap();
    let response = omni_lambda::event_dispatcher(&w.omni, payload::<SqsEvent>("event-dispatcher"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let stored = w
        .backend
        .get_delivery(&tenant(), endpoint.id, delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, DeliveryState::Pending);
    assert_eq!(stored.attempts.len(), 1);
    assert!(
        stored.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("loopback"),
        "{stored:?}"
    );
    let next = stored.next_attempt_at.unwrap() - stored.attempts[0].at;
    assert!((5..=6).contains(&next.num_seconds()), "{next}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let queued = queued_jobs(
        &w,
        w.backend.resources().events_queue_url.as_deref().unwrap(),
    )
    .await;
    assert!(
        matches!(&queued[..], [Job::Webhook { delivery_id, .. }] if *delivery_id == delivery.id),
        "{queued:?}"
    );
}

#[tokio::test]
async fn outbox_sweeper() {
    let w = world().await;
    let report =
        omni_lambda::outbox_sweeper(&w.omni, payload::<serde_json::Value>("outbox-sweeper"))
            .await
            .unwrap();
    // The stranded message (and the queued one: no job exists for it in the seed).
    assert!(report.requeued >= 1, "{report:?}");
    let jobs = queued_jobs(&w, &w.backend.resources().delivery_queue_url).await;
    assert_eq!(jobs.len(), report.requeued);
}

/// An SES event: the delivery moves the email SES accepted to `delivered`; a permanent bounce
/// of the other one makes it `undelivered` with the bounce type and the diagnostic; events no
/// retry can place (a stranger's sender, mail Omni did not send) are acknowledged, not failed.
#[tokio::test]
async fn ses_events() {
    let w = world().await;
    let delivered = omni_lambda::ses_events(&w.omni, payload::<EventBridgeEvent>("ses-events"))
        .await
        .unwrap();
    assert!(delivered.queued, "{delivered:?}");

    let mut bounce: EventBridgeEvent = payload::<EventBridgeEvent>("ses-events").payload;
    let fixture = format!(
        "{}/../../tests/fixtures/ses_eventbridge_bounce.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let sample: EventBridgeEvent =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    bounce.detail_type = sample.detail_type;
    bounce.detail["eventType"] = sample.detail["eventType"].clone();
    bounce.detail["bounce"] = sample.detail["bounce"].clone();
    bounce.detail["mail"]["messageId"] = SES_BOUNCED_ID.into();
    let ses = |event: &EventBridgeEvent| {
        omni_lambda::ses_events(&w.omni, LambdaEvent::new(event.clone(), Context::default()))
    };
    assert!(ses(&bounce).await.unwrap().queued);

    let mut stranger = bounce.clone();
    stranger.detail["mail"]["source"] = "someone@elsewhere.example".into();
    let mut untagged = bounce.clone();
    untagged.detail["mail"]["tags"] = serde_json::json!({});
    let mut malformed = bounce.clone();
    malformed.detail = serde_json::json!({"eventType": "Bounce"});
    for dropped in [stranger, untagged, malformed] {
        assert!(!ses(&dropped).await.unwrap().queued, "{dropped:?}");
    }

    let jobs = inbound_jobs(&w).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for job in &jobs {
        w.omni.services.handle_job(job).await.unwrap();
    }
    let page = w
        .backend
        .list_conversations(&tenant(), 10, None)
        .await
        .unwrap();
    let email = page
        .items
        .iter()
        .find(|c| c.tenant_number.as_str() == SES_ADDRESS)
        .unwrap();
    let messages = w
        .backend
        .list_messages(&tenant(), email.id, 50, None)
        .await
        .unwrap();
    let by_ses_id = |id: &str| {
        messages
            .items
            .iter()
            .find(|m| m.provider_message_id.as_deref() == Some(id))
            .unwrap()
    };
    assert_eq!(
        by_ses_id(SES_DELIVERED_ID).status,
        DeliveryStatus::Delivered
    );
    let bounced = by_ses_id(SES_BOUNCED_ID);
    assert_eq!(bounced.status, DeliveryStatus::Undelivered);
    assert_eq!(bounced.error_code.as_deref(), Some("Permanent/General"));
    assert_eq!(
        bounced.error_message.as_deref(),
        Some("SES: smtp; 550 5.1.1 user unknown")
    );
}

#[tokio::test]
async fn signal_poller() {
    let w = world().await;
    let report = omni_lambda::signal_poller(&w.omni, payload::<serde_json::Value>("signal-poller"))
        .await
        .unwrap();
    assert_eq!(report.received, 0, "the seeded tenant has no Signal number");
}

/// One key could open dashboards without end; `$connect` now counts the key's and the
/// tenant's recorded connections and refuses past the caps (2 per key, 3 per tenant here).
#[tokio::test]
async fn ws_connect_refuses_past_the_key_and_tenant_caps() {
    let w = world().await;
    let attempt = |id: &str| {
        let mut connect = payload::<ApiGatewayWebsocketProxyRequest>("ws-connect");
        connect.payload.request_context.connection_id = Some(id.into());
        omni_lambda::ws_connect(&w.omni, connect)
    };
    assert_eq!(attempt("Dash1=").await.unwrap().status_code, 200);
    assert_eq!(attempt("Dash2=").await.unwrap().status_code, 200);
    let refused = attempt("Dash3=").await.unwrap();
    assert_eq!(refused.status_code, 429);
    assert_eq!(w.backend.connections(&tenant()).await.unwrap().len(), 2);
    // Another key of the tenant's gets the tenant's last place, and no more.
    w.backend
        .add_connection(
            &tenant(),
            "key_other",
            &omni_core::ports::PresenceUser {
                id: "key_other".into(),
                name: "Dashboard".into(),
            },
            "Other1=",
        )
        .await
        .unwrap();
    w.backend.remove_connection("Dash2=").await.unwrap();
    assert_eq!(attempt("Dash4=").await.unwrap().status_code, 200);
    assert_eq!(attempt("Dash5=").await.unwrap().status_code, 429);
}

#[tokio::test]
async fn ws_connect_default_and_disconnect() {
    let w = world().await;
    let connect = payload::<ApiGatewayWebsocketProxyRequest>("ws-connect");
    let mut stranger = connect.payload.clone();
    let response = omni_lambda::ws_connect(&w.omni, connect).await.unwrap();
    assert_eq!(response.status_code, 200);
    assert_eq!(
        w.backend.connections(&tenant()).await.unwrap(),
        [CONNECTION]
    );

    stranger.query_string_parameters = [("token".to_owned(), "omk_nobody".to_owned())]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
        .into();
    stranger.request_context.connection_id = Some("Stranger1=".into());
    let refused = omni_lambda::ws_connect(&w.omni, LambdaEvent::new(stranger, Context::default()))
        .await
        .unwrap();
    assert_eq!(refused.status_code, 401);

    let ping = omni_lambda::ws_connect(&w.omni, payload("ws-default"))
        .await
        .unwrap();
    assert_eq!(ping.status_code, 200);

    let bye = omni_lambda::ws_disconnect(&w.omni, payload("ws-disconnect"))
        .await
        .unwrap();
    assert_eq!(bye.status_code, 200);
    assert!(w.backend.connections(&tenant()).await.unwrap().is_empty());
    tokio::time::sleep(Duration::ZERO).await;
}

/// Every file in events/ has a test above: a new sample cannot be added untested.
#[test]
fn every_event_file_is_exercised() {
    let tested = [
        "admin",
        "conversation-updater",
        "conversations",
        "delivery-worker",
        "event-dispatcher",
        "outbox-sweeper",
        "send",
        "ses-events",
        "signal-poller",
        "webhook-bandwidth",
        "webhook-bird",
        "webhook-inteliquent",
        "webhook-messagebird",
        "webhook-sendgrid",
        "webhook-ses",
        "webhook-sinch",
        "webhook-telnyx",
        "webhook-twilio",
        "webhook-twilio-status",
        "webhook-voicemeup",
        "webhook-voipms",
        "webhook-vonage",
        "webhook-whatsapp",
        "whatsapp-forwarder",
        "ws-connect",
        "ws-default",
        "ws-disconnect",
    ];
    let dir = format!("{}/../../events", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    files.sort();
    assert_eq!(files, tested);
}

/// The send sample's HTTP API event, turned into `method path` with `body`, signed by `key`.
fn api_event(method: &str, path: &str, body: Option<serde_json::Value>, key: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(&event_file("send")).unwrap();
    event["routeKey"] = format!("{method} {path}").into();
    event["requestContext"]["routeKey"] = event["routeKey"].clone();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["method"] = method.into();
    event["requestContext"]["http"]["path"] = path.into();
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("idempotency-key");
    headers.remove("content-length");
    headers.insert("authorization".into(), format!("Bearer {key}").into());
    event["body"] = body.map_or(serde_json::Value::Null, |b| b.to_string().into());
    event.to_string()
}

/// A template written, submitted and approved (by a second key) through the conversations
/// function, kept in DynamoDB, and rendered by the send function in the base language.
#[tokio::test]
async fn templates_through_the_conversations_and_send_functions() {
    use omni_core::model::ApiKeyInfo;
    use omni_core::ports::TenantStore;
    use serde_json::json;
    let w = world().await;
    let second = "omk_events0second0key00000000000000";
    let info = ApiKeyInfo {
        id: "key_second".into(),
        name: Some("supervisor".into()),
        prefix: Some(second[..12].into()),
        created_at: None,
        last_used_at: None,
        role: omni_core::team::Role::Supervisor,
    };
    w.backend
        .put_api_key(&tenant(), &info, &omni_core::service::hash_api_key(second))
        .await
        .unwrap();
    let conversations = || omni_api::dispatch::conversations_app(w.omni.app_state());
    let definition = json!({
        "channels": ["sms"],
        "variables": {"unit": {"type": "text", "max_length": 10}},
        "languages": {"en": {"body": "Unit {{unit}} is on its way"},
                      "es": {"body": "La unidad {{unit}} va en camino"}},
        "default_language": "en"});
    let path = "/v1/templates/unit-dispatched";
    let (st, b) = http_event(
        conversations(),
        &api_event("PUT", path, Some(definition), API_KEY),
    )
    .await;
    assert_eq!(
        (st, &b["versions"][0]["status"]),
        (201, &json!("draft")),
        "{b}"
    );
    let (st, b) = http_event(
        conversations(),
        &api_event("POST", &format!("{path}/submit"), None, API_KEY),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = http_event(
        conversations(),
        &api_event("POST", &format!("{path}/approve"), None, API_KEY),
    )
    .await;
    assert_eq!((st, &b["code"]), (403, &json!("forbidden")), "{b}");
    let (st, b) = http_event(
        conversations(),
        &api_event("POST", &format!("{path}/approve"), None, second),
    )
    .await;
    assert_eq!((st, &b["approved_version"]), (200, &json!(1)), "{b}");
    let (st, b) = http_event(
        conversations(),
        &api_event("GET", "/v1/templates", None, API_KEY),
    )
    .await;
    assert_eq!(
        (st, &b["items"][0]["versions"][0]["approver"]["name"]),
        (200, &json!("supervisor")),
        "{b}"
    );

    let send = json!({"channel": "sms", "from": TWILIO_NUMBER, "to": CONTACT, "template":
        {"name": "unit-dispatched", "language": "es-MX", "variables": {"unit": "M12"}}});
    let send_app = omni_api::dispatch::send_app(w.omni.app_state());
    let (st, m) = http_event(
        send_app,
        &api_event("POST", "/v1/messages", Some(send), API_KEY),
    )
    .await;
    assert_eq!(st, 202, "{m}");
    assert_eq!(m["body"], "La unidad M12 va en camino");
    assert_eq!(
        m["template"],
        json!({"name": "unit-dispatched", "version": 1, "language": "es"})
    );
    let id = Uuid::parse_str(m["id"].as_str().unwrap()).unwrap();
    let stored = w.backend.get_message(&tenant(), id).await.unwrap().unwrap();
    assert_eq!(stored.body.as_deref(), Some("La unidad M12 va en camino"));
}
