//! Bandwidth Messaging (API v2).
//!
//! Sends go to `POST {base}/api/v2/users/{accountId}/messages` with the API user's Basic
//! credentials and a JSON body (`applicationId`, `to[]`, `from`, `text`, `media[]`, `tag`);
//! Bandwidth answers 202 with the message and its `id`. There is no per-message callback
//! URL: the Bandwidth application's inbound and status callback URLs point at
//! `/webhooks/bandwidth` (and `/status`), both of which take either kind of event.
//!
//! Every callback POST is a JSON array of events, possibly several at once.
//! `message-received` is an inbound message (MMS when it has media); `message-sending`,
//! `-sent`, `-delivered`, `-failed` (with `errorCode`) and `-read` report on one of ours.
//! Bandwidth signs nothing: authenticity is the HTTP Basic credentials the tenant set on its
//! Bandwidth application, compared in constant time. Omni routes events by the called number
//! (`to` of an inbound event) or our sending number (`message.from` of a status event).

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::carrier::{
    random_digits, require, strong, ApiUrlSetting, Carrier, CarrierConfig, Receives, SigningKey,
    TestInbound, TestWebhook, WebhookRoute,
};
use super::Secret;
use super::{
    carries, code_text, ct_eq, named_failure, network_error, retry_after, Credentials,
    MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent, E164,
};
use std::sync::Arc;

/// Bandwidth Messaging v2 adapter.
#[derive(Clone)]
pub struct BandwidthAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl BandwidthAdapter {
    /// An adapter calling the Messaging API at `base_url` (`https://messaging.bandwidth.com`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        BandwidthAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// The `Authorization` value Bandwidth sends with the application's callback credentials
/// (for tests and `omni webhook send bandwidth`).
pub fn authorization(username: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{username}:{password}")))
}

/// Checks a callback's Basic credentials against the ones the tenant configured on its
/// Bandwidth application.
fn verify(request: &WebhookRequest, credentials: &Credentials) -> Result<(), VerifyError> {
    let Credentials::Bandwidth(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let given = request
        .header("authorization")
        .ok_or(VerifyError::Missing)?
        .trim();
    let (scheme, encoded) = given.split_once(' ').ok_or(VerifyError::Mismatch)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(VerifyError::Unsupported(
            "only HTTP Basic credentials are accepted".into(),
        ));
    }
    let decoded = B64
        .decode(encoded.trim())
        .map_err(|_| VerifyError::Mismatch)?;
    let expected = format!(
        "{}:{}",
        creds.webhook_username,
        creds.webhook_password.expose()
    );
    // One comparison over `user:password`: which half differs is not revealed either.
    if ct_eq(&decoded, expected.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    /// The number this event is for: the receiving number of an inbound message.
    to: Option<String>,
    description: Option<String>,
    #[serde(rename = "errorCode")]
    error_code: Option<serde_json::Value>,
    message: EventMessage,
}

#[derive(Deserialize)]
struct EventMessage {
    id: String,
    owner: Option<String>,
    from: Option<String>,
    text: Option<String>,
    #[serde(default)]
    media: Vec<String>,
}

/// Maps a status callback type to ours; None for event types that are no status.
fn map_status(kind: &str) -> Option<DeliveryStatus> {
    Some(match kind {
        "message-sending" => DeliveryStatus::Sending,
        "message-sent" => DeliveryStatus::Sent,
        "message-delivered" => DeliveryStatus::Delivered,
        "message-failed" => DeliveryStatus::Failed,
        "message-read" => DeliveryStatus::Read,
        _ => return None,
    })
}

fn number(raw: &str, what: &str) -> Result<Address, ParseError> {
    E164::from_carrier(raw)
        .map(Address::Phone)
        .map_err(|_| ParseError::new(format!("{what} is not a valid phone number")))
}

fn event(event: Event) -> Result<Option<WebhookEvent>, ParseError> {
    let message = event.message;
    if event.kind == "message-received" {
        let to = event
            .to
            .as_deref()
            .or(message.owner.as_deref())
            .ok_or_else(|| ParseError::new("to is missing"))?;
        let from = message
            .from
            .as_deref()
            .ok_or_else(|| ParseError::new("message.from is missing"))?;
        // Bandwidth gives bare URLs (downloadable with the API credentials), no types.
        let media: Vec<Media> = message
            .media
            .into_iter()
            .map(|url| Media {
                url,
                content_type: None,
            })
            .collect();
        return Ok(Some(WebhookEvent::Message(InboundMessage {
            id: Uuid::now_v7(),
            provider: ProviderKind::Bandwidth,
            provider_message_id: message.id,
            channel: if media.is_empty() {
                Channel::Sms
            } else {
                Channel::Mms
            },
            from: number(from, "message.from")?,
            to: number(to, "to")?,
            body: message.text.filter(|t| !t.is_empty()),
            media,
            profile_name: None,
            received_at: Utc::now(),
            auto_submitted: false,
        })));
    }
    // Suggestion and location responses (RBM) and unknown types carry nothing we track.
    let Some(status) = map_status(&event.kind) else {
        return Ok(None);
    };
    let ours = message
        .from
        .as_deref()
        .or(message.owner.as_deref())
        .ok_or_else(|| ParseError::new("message.from is missing"))?;
    let failed = status == DeliveryStatus::Failed;
    Ok(Some(WebhookEvent::Status(StatusUpdate {
        provider: ProviderKind::Bandwidth,
        provider_message_id: message.id,
        status,
        raw_status: event.kind,
        error_code: event.error_code.as_ref().and_then(code_text),
        // Other events' descriptions are only "ok" or the like.
        error_message: event.description.filter(|_| failed),
        tenant_number: Some(number(ours, "message.from")?),
        at: Utc::now(),
    })))
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let events: Vec<Event> = serde_json::from_slice(&request.body)
        .map_err(|_| ParseError::new("the body is not a Bandwidth callback (a JSON array)"))?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.extend(event(e)?);
    }
    Ok(out)
}

/// The JSON body of a send.
fn message_body(
    application_id: &str,
    message: &OutboundMessage,
) -> Result<serde_json::Value, SendError> {
    if message.body.is_none() && message.media.is_empty() {
        return Err(SendError::permanent(
            None,
            "a message needs a body or media",
        ));
    }
    let mut body = json!({
        "applicationId": application_id,
        "to": [message.to.as_str()],
        "from": message.from.as_str(),
        // Echoed in every callback: ties Bandwidth's events to our message in its logs too.
        "tag": message.id.to_string(),
    });
    if let Some(text) = &message.body {
        body["text"] = text.as_str().into();
    }
    if !message.media.is_empty() {
        body["media"] = message.media.iter().map(|m| m.url.as_str()).collect();
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Accepted {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    description: Option<String>,
}

#[async_trait]
impl MessagingProviderAdapter for BandwidthAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Bandwidth
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Bandwidth(creds) = credentials else {
            return Err(SendError::permanent(
                None,
                "credentials are not Bandwidth's",
            ));
        };
        carries("Bandwidth", self.channels(), message)?;
        let body = message_body(&creds.application_id, message)?;
        let response = self
            .http
            .post(format!(
                "{}/api/v2/users/{}/messages",
                self.base_url, creds.account_id
            ))
            .basic_auth(&creds.api_username, Some(creds.api_password.expose()))
            .json(&body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            let accepted = serde_json::from_slice::<Accepted>(&bytes).map_err(|_| {
                SendError::transient("Bandwidth answered without a message id", None)
            })?;
            return Ok(SendResult {
                provider: ProviderKind::Bandwidth,
                provider_message_id: accepted.id,
                status: DeliveryStatus::Queued,
                raw_status: "accepted".into(),
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        let code = error.as_ref().and_then(|e| e.kind.clone());
        let message = error
            .and_then(|e| e.description)
            .unwrap_or_else(|| format!("Bandwidth answered HTTP {}", status.as_u16()));
        Err(named_failure(status, code, message, wait))
    }

    fn verify_inbound(
        &self,
        request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        verify(request, credentials)
    }

    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        normalize(request)
    }
}

/// Bandwidth Messaging v2 credentials: the API user sends, the callback credentials set on
/// the Bandwidth application authenticate its webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthCredentials {
    /// Account id (digits, not secret); it goes into the send path.
    pub account_id: String,
    /// The messaging application's id (not secret), sent as `applicationId`.
    pub application_id: String,
    /// API user name (Basic auth user of sends).
    pub api_username: String,
    /// API user password.
    pub api_password: Secret,
    /// Callback user name configured on the Bandwidth application.
    pub webhook_username: String,
    /// Callback password configured on the Bandwidth application.
    pub webhook_password: Secret,
}

impl CarrierConfig for BandwidthCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["api_password", "webhook_password"];

    fn validate(&self) -> Result<(), String> {
        // The account id goes into the API path: digits keep it one path segment.
        let id_ok =
            !self.account_id.is_empty() && self.account_id.bytes().all(|b| b.is_ascii_digit());
        require(id_ok, "account_id (digits)")?;
        require(!self.application_id.is_empty(), "application_id")?;
        require(!self.api_username.is_empty(), "api_username")?;
        require(!self.api_password.expose().is_empty(), "api_password")?;
        // Basic auth: a colon in the user name would make the pair ambiguous.
        require(
            !self.webhook_username.is_empty() && !self.webhook_username.contains(':'),
            "webhook_username (no colon)",
        )?;
        strong(&self.webhook_password, "webhook_password")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.api_password.expose(), self.webhook_password.expose()]
    }

    fn example() -> Self {
        BandwidthCredentials {
            account_id: "9900000".into(),
            application_id: "93de2206-9669-4e07-948d-329f4b722ee2".into(),
            api_username: "bw-api-user".into(),
            api_password: Secret::new("bw-api-password-secret"),
            webhook_username: "bw-callbacks".into(),
            webhook_password: Secret::new("bw-webhook-password-secret"),
        }
    }
}

/// The Omni declaration of Bandwidth.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Bandwidth,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_BANDWIDTH_API_URL",
        default: "https://messaging.bandwidth.com",
        help:
            "Bandwidth Messaging API base URL (`/api/v2/users/{accountId}/messages` is appended).",
    }),
    webhooks: &[
        WebhookRoute::post("/webhooks/bandwidth", Receives::Both),
        WebhookRoute::post("/webhooks/bandwidth/status", Receives::Status),
    ],
    adapter: |http, base_url| Arc::new(BandwidthAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "JSON array POST with the application's HTTP Basic callback credentials; \
               --secret: the callback user:password",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// A `message-received` callback as Bandwidth posts it (an array of one event), with the
/// application's Basic callback credentials.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("Bandwidth")?;
    let (from, to) = message.numbers()?;
    let (user, password) = match key {
        SigningKey::Given(pair) => pair
            .split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .ok_or("for Bandwidth, --secret is the callback user:password")?,
        SigningKey::Stored(Credentials::Bandwidth(c)) => (
            c.webhook_username.clone(),
            c.webhook_password.expose().to_string(),
        ),
        SigningKey::Stored(_) => return Err("stored configuration is not Bandwidth's".into()),
    };
    let id = message.id_or(|| format!("{}{}", random_digits(), Uuid::new_v4().simple()));
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = serde_json::json!([{
    "type": "message-received",
    "time": now,
    "description": "Incoming message received",
    "to": to.as_str(),
    "message": {
        "id": id,
        "owner": to.as_str(),
        "time": now,
        "segmentCount": 1,
        "direction": "in",
        "to": [to.as_str()],
        "from": from.as_str(),
        "text": message.body,
        "media": message.media,
    }}]);
    Ok(vec![message.post(
        "/webhooks/bandwidth",
        "application/json",
        vec![("authorization".into(), authorization(&user, &password))],
        body.to_string().into_bytes(),
    )])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/bandwidth": {"post": {"summary": "Bandwidth Messaging v2 callbacks (message-received; message-sending, -sent, -delivered, -failed, -read), authenticated by the application's HTTP Basic callback credentials; routed by the called number (inbound) or our sending number (statuses)", "parameters": [{"name": "Authorization", "in": "header", "required": true, "schema": {"type": "string"}, "description": "HTTP Basic with the callback user name and password set on the tenant's Bandwidth application (webhook_username, webhook_password); missing or wrong is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object", "required": ["type", "message"], "properties": {"type": {"type": "string", "description": "message-received, or message-sending | message-sent | message-delivered | message-failed | message-read"}, "to": {"type": "string"}, "description": {"type": "string"}, "errorCode": {"type": "integer"}, "message": {"type": "object"}}}, "description": "Bandwidth posts a JSON array of one or more events; one callback may name several of the tenant's numbers, never another tenant's"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}},
"/webhooks/bandwidth/status": {"post": {"summary": "Bandwidth status callbacks (the application's status callback URL); same handling as /webhooks/bandwidth", "parameters": [{"name": "Authorization", "in": "header", "required": true, "schema": {"type": "string"}, "description": "HTTP Basic with the callback user name and password set on the tenant's Bandwidth application (webhook_username, webhook_password); missing or wrong is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object", "required": ["type", "message"], "properties": {"type": {"type": "string", "description": "message-received, or message-sending | message-sent | message-delivered | message-failed | message-read"}, "to": {"type": "string"}, "description": {"type": "string"}, "errorCode": {"type": "integer"}, "message": {"type": "object"}}}, "description": "Bandwidth posts a JSON array of one or more events; one callback may name several of the tenant's numbers, never another tenant's"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::providers::test_support::{e164, one};
    use crate::providers::{BandwidthCredentials, Secret};
    use proptest::prelude::*;
    use std::time::Duration;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const ACCOUNT: &str = "9900000";
    const APPLICATION: &str = "93de2206-9669-4e07-948d-329f4b722ee2";
    const API_USER: &str = "omni-api-user";
    const API_PASSWORD: &str = "bw-api-password-secret";
    const HOOK_USER: &str = "bw-callbacks";
    const HOOK_PASSWORD: &str = "bw-callback-password-secret";

    fn creds() -> Credentials {
        Credentials::Bandwidth(BandwidthCredentials {
            account_id: ACCOUNT.into(),
            application_id: APPLICATION.into(),
            api_username: API_USER.into(),
            api_password: Secret::new(API_PASSWORD),
            webhook_username: HOOK_USER.into(),
            webhook_password: Secret::new(HOOK_PASSWORD),
        })
    }

    fn request(body: &[u8], authorization: Option<&str>) -> WebhookRequest {
        let mut headers = vec![("content-type".into(), "application/json".into())];
        if let Some(a) = authorization {
            headers.push(("authorization".into(), a.into()));
        }
        WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/webhooks/bandwidth".into(),
            headers,
            body: body.to_vec(),
        }
    }

    fn fixture(name: &str) -> WebhookRequest {
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        request(
            &std::fs::read(path).unwrap(),
            Some(&authorization(HOOK_USER, HOOK_PASSWORD)),
        )
    }

    #[test]
    fn basic_credentials_are_checked() {
        let adapter = BandwidthAdapter::new(reqwest::Client::new(), "http://unused");
        let body = b"[]";
        let ok = request(body, Some(&authorization(HOOK_USER, HOOK_PASSWORD)));
        assert_eq!(adapter.verify_inbound(&ok, &creds()), Ok(()));
        // The scheme is case-insensitive, as HTTP says.
        let lower = authorization(HOOK_USER, HOOK_PASSWORD).replacen("Basic", "basic", 1);
        assert_eq!(
            adapter.verify_inbound(&request(body, Some(&lower)), &creds()),
            Ok(())
        );
        for (given, expected) in [
            (None, VerifyError::Missing),
            (
                Some(authorization(HOOK_USER, "wrong")),
                VerifyError::Mismatch,
            ),
            (
                Some(authorization("someone", HOOK_PASSWORD)),
                VerifyError::Mismatch,
            ),
            (Some("Basic !!!".to_string()), VerifyError::Mismatch),
            (Some("Basic".to_string()), VerifyError::Mismatch),
            (
                Some(format!("Bearer {HOOK_PASSWORD}")),
                VerifyError::Unsupported("only HTTP Basic credentials are accepted".into()),
            ),
        ] {
            let r = request(body, given.as_deref());
            assert_eq!(adapter.verify_inbound(&r, &creds()), Err(expected));
        }
        assert_eq!(
            adapter.verify_inbound(&ok, &Credentials::Simulator),
            Err(VerifyError::WrongCredentials)
        );
    }

    #[test]
    fn inbound_mms_fixture() {
        let WebhookEvent::Message(m) =
            one(normalize(&fixture("bandwidth_message_received.json")).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Bandwidth);
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(m.provider_message_id, "16377009342722ktrc5jchyq3vjnv");
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(
            m.body.as_deref(),
            Some("Smoke from the roof, photo attached")
        );
        assert_eq!(
            m.media,
            vec![Media {
                url: "https://messaging.bandwidth.com/api/v2/users/9900000/media/16377009342722ktrc5jchyq3vjnv/0/roof.jpg".into(),
                content_type: None,
            }]
        );
        assert!((Utc::now() - m.received_at).num_seconds() < 60);
    }

    #[test]
    fn status_callbacks_in_one_post_fixture() {
        let events = normalize(&fixture("bandwidth_message_status.json")).unwrap();
        let statuses: Vec<StatusUpdate> = events
            .into_iter()
            .map(|e| match e {
                WebhookEvent::Status(s) => s,
                other => panic!("not a status: {other:?}"),
            })
            .collect();
        assert_eq!(statuses.len(), 2);
        let (delivered, failed) = (&statuses[0], &statuses[1]);
        assert_eq!(delivered.provider, ProviderKind::Bandwidth);
        assert_eq!(delivered.provider_message_id, "1637700934272bwout0001");
        assert_eq!(delivered.status, DeliveryStatus::Delivered);
        assert_eq!(delivered.raw_status, "message-delivered");
        assert_eq!(
            (&delivered.error_code, &delivered.error_message),
            (&None, &None)
        );
        assert_eq!(delivered.tenant_number, Some(e164("+15555550100")));
        assert_eq!(failed.provider_message_id, "1637700934272bwout0002");
        assert_eq!(failed.status, DeliveryStatus::Failed);
        assert_eq!(failed.raw_status, "message-failed");
        assert_eq!(failed.error_code.as_deref(), Some("4432"));
        assert_eq!(
            failed.error_message.as_deref(),
            Some("forbidden to country")
        );
        assert_eq!(failed.tenant_number, Some(e164("+15555550100")));
    }

    fn callback(kind: &str, message: serde_json::Value) -> Vec<u8> {
        json!([{"type": kind, "time": "2026-11-30T10:00:00.000Z", "description": "x",
            "to": "+15555550123", "message": message}])
        .to_string()
        .into_bytes()
    }

    #[test]
    fn status_types_other_events_and_bad_bodies() {
        for (kind, expected) in [
            ("message-sending", DeliveryStatus::Sending),
            ("message-sent", DeliveryStatus::Sent),
            ("message-delivered", DeliveryStatus::Delivered),
            ("message-failed", DeliveryStatus::Failed),
            ("message-read", DeliveryStatus::Read),
        ] {
            let body = callback(
                kind,
                json!({"id": "m1", "owner": "+15555550100",
                "from": "+15555550100", "to": ["+15555550123"], "direction": "out"}),
            );
            let WebhookEvent::Status(s) = one(normalize(&request(&body, None)).unwrap()) else {
                panic!("not a status");
            };
            assert_eq!((s.status, s.raw_status.as_str()), (expected, kind));
        }
        // Only `owner` (ours) present: still routed.
        let body = callback("message-sent", json!({"id": "m1", "owner": "+15555550100"}));
        let WebhookEvent::Status(s) = one(normalize(&request(&body, None)).unwrap()) else {
            panic!("not a status");
        };
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
        // Suggestion responses, unknown types and an empty batch carry nothing.
        let body = callback("suggestion-response", json!({"id": "m2"}));
        assert_eq!(normalize(&request(&body, None)).unwrap(), vec![]);
        assert_eq!(normalize(&request(b"[]", None)).unwrap(), vec![]);
        // An SMS: no media, empty text is no body; the receiving number from `owner`.
        let sms = json!([{"type": "message-received", "message": {"id": "m3",
            "from": "+15555550123", "owner": "+15555550100", "text": ""}}]);
        let WebhookEvent::Message(m) =
            one(normalize(&request(sms.to_string().as_bytes(), None)).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(
            (m.channel, m.body, m.to),
            (Channel::Sms, None, e164("+15555550100"))
        );
        for bad in [
            &b"not json"[..],
            br#"{"type":"message-received"}"#,
            br#"[{"type":"message-received","message":{"id":"x"}}]"#,
            br#"[{"type":"message-received","to":"nope","message":{"id":"x","from":"+15555550123"}}]"#,
            br#"[{"type":"message-delivered","message":{"id":"x"}}]"#,
            br#"[{"type":"message-delivered"}]"#,
        ] {
            assert!(normalize(&request(bad, None)).is_err());
        }
    }

    fn outbound(media: Vec<Media>) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("north").unwrap(),
            channel: Channel::Sms,
            from: e164("+15555550100"),
            to: e164("+15555550123"),
            body: Some("Units are on the way".into()),
            media,
            template: None,
            subject: None,
            status_callback: Some("https://omni.example.org/webhooks/bandwidth/status".into()),
        }
    }

    fn accepted() -> ResponseTemplate {
        ResponseTemplate::new(202).set_body_json(json!({
            "id": "1589228074636lm4k2je7j7jklbn2", "owner": "+15555550100",
            "applicationId": APPLICATION, "time": "2026-11-30T10:00:00.000Z", "segmentCount": 1,
            "direction": "out", "to": ["+15555550123"], "from": "+15555550100",
            "text": "Units are on the way", "tag": "x"}))
    }

    async fn server() -> (MockServer, BandwidthAdapter) {
        let server = MockServer::start().await;
        let adapter = BandwidthAdapter::new(reqwest::Client::new(), &format!("{}/", server.uri()));
        (server, adapter)
    }

    fn messages_path() -> String {
        format!("/api/v2/users/{ACCOUNT}/messages")
    }

    #[tokio::test]
    async fn sends_text_with_basic_auth_and_exact_body() {
        let (server, adapter) = server().await;
        let message = outbound(vec![]);
        Mock::given(method("POST"))
            .and(path(messages_path()))
            .and(header(
                "authorization",
                authorization(API_USER, API_PASSWORD).as_str(),
            ))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "applicationId": APPLICATION, "to": ["+15555550123"], "from": "+15555550100",
                "text": "Units are on the way", "tag": message.id.to_string()})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let result = adapter.send(&creds(), &message).await.unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Bandwidth,
                provider_message_id: "1589228074636lm4k2je7j7jklbn2".into(),
                status: DeliveryStatus::Queued,
                raw_status: "accepted".into(),
            }
        );
    }

    #[tokio::test]
    async fn sends_media_and_refuses_empty_messages() {
        let (server, adapter) = server().await;
        let media = |url: &str| Media {
            url: url.into(),
            content_type: None,
        };
        let mut mms = outbound(vec![
            media("https://cdn.example.org/a.jpg"),
            media("https://cdn.example.org/b.png"),
        ]);
        mms.channel = Channel::Mms;
        mms.body = None;
        Mock::given(method("POST"))
            .and(path(messages_path()))
            .and(body_json(json!({
                "applicationId": APPLICATION, "to": ["+15555550123"], "from": "+15555550100",
                "tag": mms.id.to_string(),
                "media": ["https://cdn.example.org/a.jpg", "https://cdn.example.org/b.png"]})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let sent = adapter.send(&creds(), &mms).await.unwrap();
        assert_eq!(sent.provider_message_id, "1589228074636lm4k2je7j7jklbn2");
        let mut empty = outbound(vec![]);
        empty.body = None;
        assert!(!adapter
            .send(&creds(), &empty)
            .await
            .unwrap_err()
            .is_transient());
    }

    async fn failing(response: ResponseTemplate) -> SendError {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(messages_path()))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter.send(&creds(), &outbound(vec![])).await.unwrap_err();
        assert!(!err.to_string().contains(API_PASSWORD), "{err}");
        err
    }

    fn bandwidth_error(status: u16, kind: &str, description: &str) -> ResponseTemplate {
        ResponseTemplate::new(status)
            .set_body_json(json!({"type": kind, "description": description}))
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let err = failing(bandwidth_error(
            400,
            "request-validation",
            "Your request could not be accepted",
        ))
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("request-validation".into()),
                message: "Your request could not be accepted".into(),
            }
        );
        let err = failing(bandwidth_error(
            401,
            "unauthorized",
            "Authentication Failed",
        ))
        .await;
        assert!(!err.is_transient());
        assert_eq!(err.code(), Some("unauthorized"));
        assert!(!failing(ResponseTemplate::new(403)).await.is_transient());
        assert!(failing(ResponseTemplate::new(503)).await.is_transient());
        let err = failing(
            bandwidth_error(429, "too-many-requests", "Too many requests")
                .insert_header("retry-after", "7"),
        )
        .await;
        assert!(matches!(
            err,
            SendError::Transient { retry_after: Some(d), ref code, .. }
                if d == Duration::from_secs(7) && code.as_deref() == Some("too-many-requests")
        ));
        // A 2xx without a message id may or may not have been sent: retried, not lost.
        assert!(failing(ResponseTemplate::new(202).set_body_string("{}"))
            .await
            .is_transient());
    }

    #[tokio::test]
    async fn wrong_credentials_and_channels_are_refused() {
        let adapter = BandwidthAdapter::new(reqwest::Client::new(), "http://127.0.0.1:9");
        let err = adapter
            .send(&Credentials::Simulator, &outbound(vec![]))
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        let mut whatsapp = outbound(vec![]);
        whatsapp.channel = Channel::Whatsapp;
        assert!(!adapter
            .send(&creds(), &whatsapp)
            .await
            .unwrap_err()
            .is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..512),
            auth in ".{0,80}",
        ) {
            let r = request(&body, Some(&auth));
            let _ = verify(&r, &creds());
            let _ = normalize(&r);
        }

        #[test]
        fn arbitrary_events_never_panic(
            kind in "[a-z-]{0,20}",
            number in ".{0,20}",
            text in ".{0,40}",
        ) {
            for kind in [kind.as_str(), "message-received", "message-failed"] {
                let body = json!([{"type": kind, "to": number, "errorCode": text,
                    "message": {"id": "m", "from": number, "owner": number, "text": text,
                        "media": [text]}}]);
                let _ = normalize(&request(body.to_string().as_bytes(), None));
            }
        }
    }

    #[test]
    fn bandwidth_admin_json_is_validated_and_redacted() {
        let ok = serde_json::json!({"account_id": "9900000", "application_id": "app-1",
            "api_username": "api-user", "api_password": "bw-api-very-secret",
            "webhook_username": "hooks", "webhook_password": "bw-hook-very-secret"});
        let creds = Credentials::from_admin_json(ProviderKind::Bandwidth, ok.clone()).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Bandwidth);
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in ["bw-api-very-secret", "bw-hook-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("9900000") && shown.contains("hooks"),
            "{shown}"
        );
        assert_eq!(creds.redacted()["provider"], "bandwidth");
        assert_eq!(
            creds.secrets(),
            vec!["bw-api-very-secret", "bw-hook-very-secret"]
        );
        for (field, bad) in [
            ("account_id", "99/00"),
            ("account_id", ""),
            ("application_id", ""),
            ("api_username", ""),
            ("api_password", ""),
            ("webhook_username", "a:b"),
            ("webhook_password", "short"),
        ] {
            let mut body = ok.clone();
            body[field] = bad.into();
            assert!(Credentials::from_admin_json(ProviderKind::Bandwidth, body).is_err());
        }
    }
}
