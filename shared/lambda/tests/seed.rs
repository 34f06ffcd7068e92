//! The world events/*.json describe (events/README.md): tenant `acme-dispatch` with a Twilio,
//! a VoIP.ms, a WhatsApp, a Telnyx, a Bandwidth, a Sinch, a VoiceMeUp, a Vonage, a Bird, an
//! Inteliquent and a MessageBird number, a SendGrid and an SES address, their credentials, an API key, a queued
//! message, a sent one and two emails sent through SES, in fresh emulator resources.
//! Shared by the events test and the cold-start bench.

// Shared by two targets, each using part of it.
#![allow(dead_code)]

use chrono::{TimeDelta, Utc};
use omni_aws::provision::{create_resources, emulator_config};
use omni_aws::{AwsBackend, AwsResources, SdkConfig};
use omni_core::domain::{
    Address, Channel, DeliveryStatus, ProviderKind, Region, SendResult, TenantId,
};
use omni_core::model::{ApiKeyInfo, NewOutbound, NumberRoute, Tenant};
use omni_core::ports::{MessageStore, SecretStore, TenantStore};
use omni_core::providers::BirdCredentials;
use omni_core::providers::MessageBirdCredentials;
use omni_core::providers::{
    BandwidthCredentials, Credentials, InteliquentCredentials, Secret, SendgridCredentials,
    SesCredentials, SinchCredentials, TelnyxCredentials, TwilioCredentials, VoicemeupCredentials,
    VoipmsCredentials, VonageCredentials, WhatsappCredentials,
};
use omni_core::service::hash_api_key;
use uuid::Uuid;

pub const TENANT: &str = "acme-dispatch";
pub const TWILIO_NUMBER: &str = "+15555550100";
pub const VOIPMS_NUMBER: &str = "+15555550101";
pub const WHATSAPP_NUMBER: &str = "+15555550102";
pub const TELNYX_NUMBER: &str = "+15555550103";
pub const BANDWIDTH_NUMBER: &str = "+15555550104";
pub const SINCH_NUMBER: &str = "+15555550105";
pub const VOICEMEUP_NUMBER: &str = "+15555550109";
pub const VONAGE_NUMBER: &str = "+15555550106";
pub const BIRD_NUMBER: &str = "+15555550107";
pub const INTELIQUENT_NUMBER: &str = "+15555550108";
pub const MESSAGEBIRD_NUMBER: &str = "+15555550110";
pub const CONTACT: &str = "+15555550123";
pub const SENDGRID_ADDRESS: &str = "dispatch@acme-dispatch.example";
pub const EMAIL_CONTACT: &str = "jane@example.org";
pub const SES_ADDRESS: &str = "alerts@acme-dispatch.example";
/// SES's `MessageId`s of the two emails sent through SES (events/ses-events.json reports the
/// first delivered).
pub const SES_DELIVERED_ID: &str = "0100019a8c1d2e3f-5a6b7c8d-0e1f-4a2b-9c3d-4e5f6a7b8c9d-000000";
pub const SES_BOUNCED_ID: &str = "0100019a8c1d2e40-6b7c8d9e-1f2a-4b3c-8d4e-5f6a7b8c9d0e-000000";
/// The SNS topic the SES tenant lists (events/webhook-ses.json is published to it).
pub const SES_SNS_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:omni-events-ses";
pub const SENDGRID_PARSE_SECRET: &str = "events-sendgrid-parse-secret";
/// The public half of tests/fixtures/keys/sendgrid-test-private.pem (base64 DER).
pub const SENDGRID_EVENT_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEH3+aj/qEATycUbqgPpiYP3Ggxs/jlarOe27T5pQiIlTlQgO+TD80efjJxCQVyJzR0ULDAngVQzMjpm13KYcTkQ==";
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "events0twilio0auth0token00000000";
pub const VOIPMS_SECRET: &str = "events-voipms-secret";
pub const VOICEMEUP_SECRET: &str = "events-voicemeup-secret";
pub const WHATSAPP_APP_SECRET: &str = "events-whatsapp-app-secret";
pub const WHATSAPP_PHONE_NUMBER_ID: &str = "106540352242922";
/// The Ed25519 seed events/webhook-telnyx.json is signed with (made up, for these samples).
pub const TELNYX_SIGNING_SEED: &str = "ZXZlbnRzMHRlbG55eDBzaWduaW5nMHNlZWQwMDAwMDA=";
/// The public half of [`TELNYX_SIGNING_SEED`], as the Telnyx portal would show it.
pub const TELNYX_PUBLIC_KEY: &str = "dUh/w0zIaNsovO3fDpUU15r31e0IQ9ML46CNZC2sDLw=";
pub const BANDWIDTH_WEBHOOK_USER: &str = "events-bandwidth";
pub const BANDWIDTH_WEBHOOK_PASSWORD: &str = "events-bandwidth-callback-password";
pub const SINCH_APP_SECRET: &str = "events-sinch-app-secret";
pub const VONAGE_SIGNATURE_SECRET: &str = "events-vonage-signature-secret";
pub const BIRD_SIGNING_KEY: &str = "events-bird-signing-key";
pub const INTELIQUENT_WEBHOOK_KEY: &str = "events-inteliquent-webhook-key";
pub const MESSAGEBIRD_SIGNING_KEY: &str = "events-messagebird-signing-key";
pub const API_KEY: &str = "omk_events0demo0key000000000000000000";
pub const ADMIN_TOKEN: &str = "oat_events0admin0token0for0the0tests";
pub const PUBLIC_URL: &str = "https://omni.example.test";
pub const QUEUED_MESSAGE: &str = "0193c9a0-0000-7000-8000-000000000001";
pub const SENT_CARRIER_ID: &str = "SMfedcba9876543210fedcba9876543210";
pub const CONNECTION: &str = "Ab1Cd2Ef3Gh4=";

pub fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

pub fn number(n: &str) -> Address {
    Address::from_stored(n).unwrap()
}

/// Fresh resources in the emulator, seeded; also the admin token's secret id.
pub async fn seeded() -> (SdkConfig, AwsBackend, String) {
    let config = emulator_config().await;
    let prefix = format!("omni-events-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let resources: AwsResources = create_resources(&config, &prefix).await.unwrap();
    let b = AwsBackend::new(&config, resources);
    let now = Utc::now();
    let t = tenant();
    b.put_tenant(&Tenant {
        id: t.clone(),
        name: "ACME Dispatch".into(),
        default_region: "US".parse::<Region>().unwrap(),
        help_text: None,
        created_at: now,
        updated_at: now,
        fallback: Default::default(),
    })
    .await
    .unwrap();
    for (n, provider, channels) in [
        (
            TWILIO_NUMBER,
            ProviderKind::Twilio,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            VOIPMS_NUMBER,
            ProviderKind::Voipms,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            WHATSAPP_NUMBER,
            ProviderKind::Whatsapp,
            vec![Channel::Whatsapp],
        ),
        (
            TELNYX_NUMBER,
            ProviderKind::Telnyx,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            BANDWIDTH_NUMBER,
            ProviderKind::Bandwidth,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            SINCH_NUMBER,
            ProviderKind::Sinch,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            VOICEMEUP_NUMBER,
            ProviderKind::Voicemeup,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            VONAGE_NUMBER,
            ProviderKind::Vonage,
            vec![Channel::Sms, Channel::Mms, Channel::Whatsapp],
        ),
        (
            SENDGRID_ADDRESS,
            ProviderKind::Sendgrid,
            vec![Channel::Email],
        ),
        (SES_ADDRESS, ProviderKind::Ses, vec![Channel::Email]),
        (
            BIRD_NUMBER,
            ProviderKind::Bird,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            INTELIQUENT_NUMBER,
            ProviderKind::Inteliquent,
            vec![Channel::Sms, Channel::Mms],
        ),
        (
            MESSAGEBIRD_NUMBER,
            ProviderKind::MessageBird,
            vec![Channel::Sms, Channel::Mms],
        ),
    ] {
        b.put_number(&NumberRoute {
            number: number(n),
            tenant_id: t.clone(),
            provider,
            channels,
            updated_at: now,
            max_per_second: None,
        })
        .await
        .unwrap();
    }
    for credentials in [
        Credentials::Twilio(TwilioCredentials {
            account_sid: TWILIO_SID.into(),
            auth_token: Secret::new(TWILIO_TOKEN),
            webhook_keys: Default::default(),
        }),
        Credentials::Voipms(VoipmsCredentials {
            api_username: "events@example.test".into(),
            api_password: Secret::new("events-voipms-api-password"),
            webhook_secret: Secret::new(VOIPMS_SECRET),
        }),
        Credentials::Whatsapp(WhatsappCredentials {
            phone_number_id: WHATSAPP_PHONE_NUMBER_ID.into(),
            access_token: Secret::new("events-whatsapp-access-token"),
            app_secret: Secret::new(WHATSAPP_APP_SECRET),
            verify_token: Secret::new("events-whatsapp-verify-token"),
            waba_id: None,
        }),
        Credentials::Telnyx(TelnyxCredentials {
            api_key: Secret::new("events-telnyx-api-key"),
            public_key: TELNYX_PUBLIC_KEY.into(),
        }),
        Credentials::Bandwidth(BandwidthCredentials {
            account_id: "9900000".into(),
            application_id: "93de2206-9669-4e07-948d-329f4b722ee2".into(),
            api_username: "events-bandwidth-api".into(),
            api_password: Secret::new("events-bandwidth-api-password"),
            webhook_username: BANDWIDTH_WEBHOOK_USER.into(),
            webhook_password: Secret::new(BANDWIDTH_WEBHOOK_PASSWORD),
        }),
        Credentials::Sinch(SinchCredentials {
            service_plan_id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
            api_token: Secret::new("events-sinch-api-token"),
            app_secret: Secret::new(SINCH_APP_SECRET),
        }),
        Credentials::Voicemeup(VoicemeupCredentials {
            username: "events".into(),
            auth_token: Secret::new("events-voicemeup-auth-token"),
            webhook_secret: Secret::new(VOICEMEUP_SECRET),
        }),
        Credentials::Vonage(VonageCredentials {
            application_id: "aaaaaaaa-0000-4000-8000-0000000000a1".into(),
            // A test-only key (tests/fixtures/keys); the webhook never uses it.
            private_key: Secret::new(include_str!(
                "../../../tests/fixtures/keys/vonage-test-private.pem"
            )),
            signature_secret: Secret::new(VONAGE_SIGNATURE_SECRET),
        }),
        Credentials::Sendgrid(SendgridCredentials {
            api_key: Secret::new("events-sendgrid-api-key"),
            webhook_secret: Secret::new(SENDGRID_PARSE_SECRET),
            event_public_key: SENDGRID_EVENT_PUBLIC_KEY.into(),
        }),
        Credentials::Bird(BirdCredentials {
            workspace_id: "5f3e9a1c-0000-4000-8000-00000000b1d0".into(),
            channel_id: "614208aa-b153-4d5d-9989-2fddfc0ce4c3".into(),
            access_key: Secret::new("events-bird-access-key"),
            signing_key: Secret::new(BIRD_SIGNING_KEY),
        }),
        Credentials::Ses(SesCredentials {
            access_key_id: "AKIAEVENTS0SES000000".into(),
            secret_access_key: Secret::new("events-ses-secret-access-key"),
            region: "us-east-1".into(),
            sns_topic_arns: vec![SES_SNS_TOPIC.into()],
        }),
        Credentials::Inteliquent(InteliquentCredentials {
            api_key: Secret::new("events-inteliquent-api-key"),
            webhook_key: Secret::new(INTELIQUENT_WEBHOOK_KEY),
        }),
        Credentials::MessageBird(MessageBirdCredentials {
            access_key: Secret::new("events-messagebird-access-key"),
            signing_key: Secret::new(MESSAGEBIRD_SIGNING_KEY),
        }),
    ] {
        b.put_credentials(&t, &credentials).await.unwrap();
    }
    let key = ApiKeyInfo {
        id: "key_events".into(),
        name: Some("events".into()),
        prefix: Some(API_KEY[..12].into()),
        created_at: Some(Utc::now()),
        last_used_at: None,
        role: omni_core::team::Role::Admin,
    };
    b.put_api_key(&t, &key, &hash_api_key(API_KEY))
        .await
        .unwrap();
    // One queued for the delivery worker, one stranded for the sweeper, one sent (its
    // delivery receipt is in the updater's event).
    let outbound = |id: Uuid, at| NewOutbound {
        id,
        channel: Channel::Sms,
        from: number(TWILIO_NUMBER),
        to: number(CONTACT),
        body: Some("Units are on their way.".into()),
        media: vec![],
        template: None,
        subject: None,
        idempotency_key: None,
        at,
        sent_by: None,
        priority: Default::default(),
        send_at: None,
        fallback: Vec::new(),
    };
    b.create_outbound(&t, &outbound(Uuid::parse_str(QUEUED_MESSAGE).unwrap(), now))
        .await
        .unwrap();
    b.create_outbound(&t, &outbound(Uuid::now_v7(), now - TimeDelta::minutes(10)))
        .await
        .unwrap();
    sent(
        &b,
        &outbound(Uuid::now_v7(), now),
        ProviderKind::Twilio,
        SENT_CARRIER_ID,
    )
    .await;
    // Two emails SES accepted, an hour ago (the updater's event keeps the SMS conversation the
    // latest); SES events report on them.
    for ses_id in [SES_DELIVERED_ID, SES_BOUNCED_ID] {
        let email = NewOutbound {
            channel: Channel::Email,
            from: number(SES_ADDRESS),
            to: number(EMAIL_CONTACT),
            subject: Some("Units are on their way".into()),
            ..outbound(Uuid::now_v7(), now - TimeDelta::hours(1))
        };
        sent(&b, &email, ProviderKind::Ses, ses_id).await;
    }
    let admin_secret = format!("{prefix}/admin-token");
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(&admin_secret)
        .secret_string(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (config, b, admin_secret)
}

/// Creates an outbound message and records its carrier's acceptance under `carrier_id`.
async fn sent(b: &AwsBackend, message: &NewOutbound, provider: ProviderKind, carrier_id: &str) {
    let t = tenant();
    let (stored, _) = b.create_outbound(&t, message).await.unwrap();
    b.claim_delivery(&t, stored.id, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let result = SendResult {
        provider,
        provider_message_id: carrier_id.into(),
        status: DeliveryStatus::Sent,
        raw_status: "accepted".into(),
    };
    b.record_sent(&t, stored.id, &result, None).await.unwrap();
}

/// An `events/` sample as its carrier would send it now: the samples whose signature covers a
/// time (Telnyx, Sinch, Bird, Vonage: refused five minutes on; MessageBird: a minute) re-signed
/// with the seed's keys at the current time; every other sample as it is.
pub fn signed_now(name: &str, event: &str) -> String {
    use omni_core::providers::{bird, messagebird, sinch, telnyx, vonage};
    let mut event: serde_json::Value = serde_json::from_str(event).expect("event JSON");
    let body = event["body"].as_str().unwrap_or_default().to_owned();
    let query = event["rawQueryString"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let now = Utc::now().timestamp();
    let stamp = now.to_string();
    let headers = &mut event["headers"];
    match name {
        "webhook-telnyx" => {
            let key = telnyx::signing_key(TELNYX_SIGNING_SEED).expect("seed key");
            headers[telnyx::SIGNATURE_HEADER] =
                telnyx::signature(&key, &stamp, body.as_bytes()).into();
            headers[telnyx::TIMESTAMP_HEADER] = stamp.into();
        }
        "webhook-sinch" => {
            let nonce = headers[sinch::NONCE_HEADER]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            headers[sinch::SIGNATURE_HEADER] =
                sinch::signature(SINCH_APP_SECRET, body.as_bytes(), &nonce, &stamp).into();
            headers[sinch::TIMESTAMP_HEADER] = stamp.into();
        }
        "webhook-bird" => {
            let url = format!("{PUBLIC_URL}/webhooks/bird");
            headers[bird::SIGNATURE_HEADER] =
                bird::signature(BIRD_SIGNING_KEY, &stamp, &url, body.as_bytes()).into();
            headers[bird::TIMESTAMP_HEADER] = stamp.into();
        }
        "webhook-messagebird" => {
            let url = format!("{PUBLIC_URL}/webhooks/messagebird?{query}");
            headers[messagebird::SIGNATURE_HEADER] =
                messagebird::signature_jwt(MESSAGEBIRD_SIGNING_KEY, &url, body.as_bytes(), now)
                    .into();
        }
        "webhook-vonage" => {
            headers["authorization"] =
                vonage::callback_authorization(VONAGE_SIGNATURE_SECRET, body.as_bytes(), now)
                    .expect("Vonage token")
                    .into();
        }
        _ => {}
    }
    event.to_string()
}

/// Where the fake serving the SNS test certificate serves it.
pub const SNS_CERT_PATH: &str = "/SimpleNotificationService-test-only.pem";

/// Serves the SNS test certificate (tests/fixtures/keys) at [`SNS_CERT_PATH`] on `server`.
pub async fn serve_sns_cert(server: &wiremock::MockServer) {
    let cert = std::fs::read_to_string(format!(
        "{}/../../tests/fixtures/keys/sns-test-cert.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the SNS test certificate");
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(SNS_CERT_PATH))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string(cert))
        .mount(server)
        .await;
}

/// The SNS sample `events/webhook-ses.json` with its certificate URL on `server` (the URL is
/// not signed, so pointing it at the fake keeps the signature good).
pub fn sns_cert_on(event: &str, server: &wiremock::MockServer) -> serde_json::Value {
    let mut event: serde_json::Value = serde_json::from_str(event).expect("event JSON");
    let mut sns: serde_json::Value =
        serde_json::from_str(event["body"].as_str().unwrap_or_default()).expect("SNS JSON");
    sns["SigningCertURL"] = format!("{}{SNS_CERT_PATH}", server.uri()).into();
    event["body"] = sns.to_string().into();
    if let Some(headers) = event["headers"].as_object_mut() {
        headers.remove("content-length");
    }
    event
}
