//! Telnyx Messaging (API v2).
//!
//! Sends go to `POST {base}/v2/messages` with the API key as a Bearer token and a JSON body
//! (`from`, `to`, `text`, `media_urls`, `webhook_url`). Webhooks are JSON posts
//! (`{"data": {"event_type", "id", "payload": …}}`) signed with Ed25519: the
//! `telnyx-signature-ed25519` header is the base64 signature of `{telnyx-timestamp}|{raw
//! body}` under the account's public key, and a timestamp more than five minutes away from
//! now is refused, so a captured webhook cannot be replayed later. `message.received` is an
//! inbound message; `message.sent`, `message.finalized` and `message.read` report on one of
//! ours. Omni routes them by the called number (inbound) or the sender (status).

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::Utc;
pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::carrier::{
    guess_content_type, require, ApiUrlSetting, Carrier, CarrierConfig, Receives,
    SigningKey as TestKey, TestInbound, TestWebhook, WebhookRoute,
};
use super::Secret;
use super::{
    carries, code_text, coded_failure, network_error, retry_after, Credentials,
    MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent, E164,
};
use std::sync::Arc;

/// The signature header: base64 of a 64-byte Ed25519 signature.
pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
/// The timestamp header: Unix seconds, part of what is signed.
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";
/// How far a webhook's timestamp may be from now, either way (Telnyx's SDKs use 300 s).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);

/// Telnyx error codes worth retrying besides HTTP 408/429/5xx: 10011 (too many requests).
const TRANSIENT_CODES: [i64; 1] = [10011];

/// Telnyx Messaging v2 adapter.
#[derive(Clone)]
pub struct TelnyxAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl TelnyxAdapter {
    /// An adapter calling the Telnyx API at `base_url` (`https://api.telnyx.com`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        TelnyxAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// Reads a base64 Ed25519 public key (32 bytes, as the Telnyx portal shows it).
pub fn public_key(base64: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = B64.decode(base64.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// The signing key of a base64 32-byte Ed25519 seed (Telnyx keeps its own; this is for
/// tests and `omni webhook send telnyx`).
pub fn signing_key(seed_base64: &str) -> Option<SigningKey> {
    let seed: [u8; 32] = B64.decode(seed_base64.trim()).ok()?.try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// The base64 public key of a signing key, as a tenant configures it.
pub fn public_key_base64(key: &SigningKey) -> String {
    B64.encode(key.verifying_key().as_bytes())
}

/// The `telnyx-signature-ed25519` value for a body sent at `timestamp` (Unix seconds).
pub fn signature(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    B64.encode(key.sign(&signed_bytes(timestamp, body)).to_bytes())
}

fn signed_bytes(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'|');
    signed.extend_from_slice(body);
    signed
}

/// Checks a webhook's signature and freshness against the tenant's public key, as of `now`
/// (Unix seconds).
pub fn verify_at(
    request: &WebhookRequest,
    credentials: &Credentials,
    now: i64,
) -> Result<(), VerifyError> {
    let Credentials::Telnyx(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let given = request
        .header(SIGNATURE_HEADER)
        .ok_or(VerifyError::Missing)?;
    let timestamp = request
        .header(TIMESTAMP_HEADER)
        .ok_or(VerifyError::Missing)?;
    let key = public_key(&creds.public_key)
        .ok_or_else(|| VerifyError::Unsupported("the configured public key is invalid".into()))?;
    let signature: [u8; 64] = B64
        .decode(given.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(VerifyError::Mismatch)?;
    key.verify_strict(
        &signed_bytes(timestamp, &request.body),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| VerifyError::Mismatch)?;
    // Checked after the signature, which covers the timestamp: only a genuine but old (or
    // future-dated) webhook gets here, and it is a replay as far as we can tell.
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Mismatch)?;
    if sent.abs_diff(now) > REPLAY_WINDOW.as_secs() {
        return Err(VerifyError::Stale);
    }
    Ok(())
}

#[derive(Deserialize)]
struct Envelope {
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    event_type: String,
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    from: Option<Endpoint>,
    #[serde(default)]
    to: Recipients,
    text: Option<String>,
    #[serde(default)]
    media: Vec<PayloadMedia>,
    #[serde(default)]
    errors: Vec<PayloadError>,
}

#[derive(Deserialize)]
struct Endpoint {
    phone_number: String,
    status: Option<String>,
}

/// `to` is an array of recipients for SMS/MMS/RCS and a plain number for WhatsApp.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Recipients {
    Many(Vec<Endpoint>),
    One(String),
    #[default]
    None,
}

impl Recipients {
    fn first(&self) -> Option<(&str, Option<&str>)> {
        match self {
            Recipients::Many(list) => list
                .first()
                .map(|e| (e.phone_number.as_str(), e.status.as_deref())),
            Recipients::One(number) => Some((number.as_str(), None)),
            Recipients::None => None,
        }
    }
}

#[derive(Deserialize)]
struct PayloadMedia {
    url: String,
    content_type: Option<String>,
}

#[derive(Deserialize)]
struct PayloadError {
    code: Option<serde_json::Value>,
    title: Option<String>,
    detail: Option<String>,
}

/// Maps Telnyx's per-recipient status words to ours; None for words we do not track.
fn map_status(raw: &str) -> Option<DeliveryStatus> {
    Some(match raw {
        "queued" => DeliveryStatus::Queued,
        "sending" => DeliveryStatus::Sending,
        // Finalized without a handset receipt: the carrier took it, nothing more is known.
        "sent" | "delivery_unconfirmed" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "sending_failed" => DeliveryStatus::Failed,
        "delivery_failed" | "expired" => DeliveryStatus::Undelivered,
        _ => return None,
    })
}

fn number(raw: &str, what: &str) -> Result<Address, ParseError> {
    E164::from_carrier(raw)
        .map(Address::Phone)
        .map_err(|_| ParseError::new(format!("{what} is not a valid phone number")))
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let envelope: Envelope = serde_json::from_slice(&request.body)
        .map_err(|_| ParseError::new("the body is not a Telnyx webhook"))?;
    let event = envelope.data;
    let payload = event.payload;
    match event.event_type.as_str() {
        "message.received" => {
            let from = payload
                .from
                .as_ref()
                .ok_or_else(|| ParseError::new("payload.from is missing"))?;
            let (to, _) = payload
                .to
                .first()
                .ok_or_else(|| ParseError::new("payload.to is missing"))?;
            let media: Vec<Media> = payload
                .media
                .into_iter()
                .map(|m| Media {
                    url: m.url,
                    content_type: m.content_type,
                })
                .collect();
            let channel = match payload.kind.as_deref() {
                Some("WHATSAPP") => Channel::Whatsapp,
                Some("RCS") => Channel::Rcs,
                _ if media.is_empty() => Channel::Sms,
                _ => Channel::Mms,
            };
            Ok(vec![WebhookEvent::Message(InboundMessage {
                id: Uuid::now_v7(),
                provider: ProviderKind::Telnyx,
                provider_message_id: payload.id,
                channel,
                from: number(&from.phone_number, "payload.from")?,
                to: number(to, "payload.to")?,
                body: payload.text.filter(|t| !t.is_empty()),
                media,
                profile_name: None,
                received_at: Utc::now(),
                auto_submitted: false,
            })])
        }
        "message.sent" | "message.finalized" | "message.read" => {
            let Some((_, Some(raw))) = payload.to.first() else {
                return Err(ParseError::new("payload.to[].status is missing"));
            };
            // Words we do not track are acknowledged and skipped.
            let Some(status) = map_status(raw) else {
                return Ok(vec![]);
            };
            let raw_status = raw.to_owned();
            let from = payload
                .from
                .as_ref()
                .ok_or_else(|| ParseError::new("payload.from is missing"))?;
            let error = payload.errors.into_iter().next();
            Ok(vec![WebhookEvent::Status(StatusUpdate {
                provider: ProviderKind::Telnyx,
                provider_message_id: payload.id,
                status,
                raw_status,
                error_code: error
                    .as_ref()
                    .and_then(|e| e.code.as_ref())
                    .and_then(code_text),
                error_message: error.and_then(|e| e.title.or(e.detail)),
                tenant_number: Some(number(&from.phone_number, "payload.from")?),
                at: Utc::now(),
            })])
        }
        // Other events (number orders, profile changes, …) carry no message.
        _ => Ok(vec![]),
    }
}

/// The JSON body of a send.
fn message_body(message: &OutboundMessage) -> Result<serde_json::Value, SendError> {
    if message.body.is_none() && message.media.is_empty() {
        return Err(SendError::permanent(
            None,
            "a message needs a body or media",
        ));
    }
    let mut body = json!({
        "from": message.from.as_str(),
        "to": message.to.as_str(),
    });
    if let Some(text) = &message.body {
        body["text"] = text.as_str().into();
    }
    if !message.media.is_empty() {
        body["media_urls"] = message.media.iter().map(|m| m.url.as_str()).collect();
    }
    if let Some(callback) = &message.status_callback {
        body["webhook_url"] = callback.as_str().into();
    }
    Ok(body)
}

#[derive(Deserialize)]
struct SendResponse {
    data: SentMessage,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
    #[serde(default)]
    to: Recipients,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<PayloadError>,
}

#[async_trait]
impl MessagingProviderAdapter for TelnyxAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Telnyx
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Telnyx(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not Telnyx's"));
        };
        carries("Telnyx", self.channels(), message)?;
        let body = message_body(message)?;
        let response = self
            .http
            .post(format!("{}/v2/messages", self.base_url))
            .bearer_auth(creds.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            let sent = serde_json::from_slice::<SendResponse>(&bytes)
                .map_err(|_| SendError::transient("Telnyx answered without a message id", None))?
                .data;
            let raw = sent
                .to
                .first()
                .and_then(|(_, s)| s)
                .unwrap_or("queued")
                .to_owned();
            return Ok(SendResult {
                provider: ProviderKind::Telnyx,
                provider_message_id: sent.id,
                status: map_status(&raw).unwrap_or(DeliveryStatus::Queued),
                raw_status: raw,
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .and_then(|b| b.errors.into_iter().next());
        let code = error
            .as_ref()
            .and_then(|e| e.code.as_ref())
            .and_then(code_text)
            .and_then(|c| c.parse::<i64>().ok());
        let message = error
            .and_then(|e| match (e.title, e.detail) {
                (Some(t), Some(d)) => Some(format!("{t}: {d}")),
                (t, d) => t.or(d),
            })
            .unwrap_or_else(|| format!("Telnyx answered HTTP {}", status.as_u16()));
        // A request timeout is Telnyx's way of saying "try again" too.
        if status == reqwest::StatusCode::REQUEST_TIMEOUT {
            return Err(SendError::Transient {
                code: code.map(|c| c.to_string()),
                message,
                retry_after: wait,
            });
        }
        Err(coded_failure(status, code, message, &TRANSIENT_CODES, wait))
    }

    fn verify_inbound(
        &self,
        request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        verify_at(request, credentials, Utc::now().timestamp())
    }

    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        normalize(request)
    }
}

/// Telnyx Messaging v2 credentials: the API key sends, the account's public key checks
/// webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelnyxCredentials {
    /// API key (`KEY…`), sent as a Bearer token.
    pub api_key: Secret,
    /// The account's Ed25519 public key, base64 (32 bytes), as the Telnyx portal shows it
    /// (not secret): webhooks are signed with its private half.
    pub public_key: String,
}

impl CarrierConfig for TelnyxCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["api_key"];

    fn validate(&self) -> Result<(), String> {
        require(!self.api_key.expose().is_empty(), "api_key")?;
        require(
            public_key(&self.public_key).is_some(),
            "public_key (base64 Ed25519 public key, 32 bytes)",
        )
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.api_key.expose()]
    }

    fn example() -> Self {
        TelnyxCredentials {
            api_key: Secret::new("telnyx-api-key-secret"),
            public_key: "H1DCBogd1myv/s9jVKJLikB0GpWKvr2y6bZiwSGrJ0M=".into(),
        }
    }
}

/// The Omni declaration of Telnyx.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Telnyx,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_TELNYX_API_URL",
        default: "https://api.telnyx.com",
        help: "Telnyx API base URL (`/v2/messages` is appended).",
    }),
    webhooks: &[
        WebhookRoute::post("/webhooks/telnyx", Receives::Both),
        WebhookRoute::post("/webhooks/telnyx/status", Receives::Status),
    ],
    adapter: |http, base_url| Arc::new(TelnyxAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help:
            "JSON POST, Ed25519-signed; --secret (required): the base64 32-byte seed of the \
               private key whose public half the tenant configured (Telnyx never hands its own out)",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// A `message.received` event as Telnyx posts it, signed with the seed given as `--secret`.
fn sign_test_webhook(
    message: &TestInbound,
    key: TestKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("Telnyx")?;
    let (from, to) = message.numbers()?;
    let TestKey::Given(seed) = key else {
        return Err(
            "Telnyx webhooks are signed with a private key: pass --secret <base64 Ed25519 seed>"
                .into(),
        );
    };
    let key = signing_key(seed).ok_or("--secret must be a base64 32-byte Ed25519 seed")?;
    let id = message.id_or(|| Uuid::new_v4().to_string());
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = serde_json::json!({"data": {
        "event_type": "message.received",
        "id": Uuid::new_v4().to_string(),
        "occurred_at": now,
        "record_type": "event",
        "payload": {
            "direction": "inbound",
            "id": id,
            "record_type": "message",
            "type": if message.media.is_empty() { "SMS" } else { "MMS" },
            "from": {"phone_number": from.as_str()},
            "to": [{"phone_number": to.as_str(), "status": "webhook_delivered"}],
            "text": message.body,
            "media": message.media.iter().map(|url| serde_json::json!({
                "url": url, "content_type": guess_content_type(url)})).collect::<Vec<_>>(),
            "received_at": now,
        }},
        "meta": {"attempt": 1}})
    .to_string();
    let timestamp = Utc::now().timestamp().to_string();
    let signature = signature(&key, &timestamp, body.as_bytes());
    Ok(vec![message.post(
        "/webhooks/telnyx",
        "application/json",
        vec![
            (TIMESTAMP_HEADER.into(), timestamp),
            (SIGNATURE_HEADER.into(), signature),
        ],
        body.into_bytes(),
    )])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/telnyx": {"post": {"summary": "Telnyx Messaging v2 webhooks (message.received, message.sent, message.finalized, message.read), Ed25519-signed; routed by the called number (inbound) or the sender (statuses)", "parameters": [{"name": "telnyx-signature-ed25519", "in": "header", "required": true, "schema": {"type": "string"}, "description": "base64 Ed25519 signature of `{telnyx-timestamp}|{raw body}` under the tenant's Telnyx public key"}, {"name": "telnyx-timestamp", "in": "header", "required": true, "schema": {"type": "string"}, "description": "Unix seconds; more than 300 s from the server's clock, either way, is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}},
"/webhooks/telnyx/status": {"post": {"summary": "Telnyx status webhooks requested per message (webhook_url); same handling as /webhooks/telnyx", "parameters": [{"name": "telnyx-signature-ed25519", "in": "header", "required": true, "schema": {"type": "string"}, "description": "base64 Ed25519 signature of `{telnyx-timestamp}|{raw body}` under the tenant's Telnyx public key"}, {"name": "telnyx-timestamp", "in": "header", "required": true, "schema": {"type": "string"}, "description": "Unix seconds; more than 300 s from the server's clock, either way, is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::providers::test_support::{e164, one};
    use crate::providers::{Secret, TelnyxCredentials, TwilioCredentials};
    use proptest::prelude::*;
    use serde_json::Value;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/vectors/telnyx_signature.json"
    ));
    const INDEX: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/index.json"
    ));
    /// The fixtures' public key (tests/fixtures/index.json `test_secrets`).
    const FIXTURE_KEY: &str = "H1DCBogd1myv/s9jVKJLikB0GpWKvr2y6bZiwSGrJ0M=";
    const API_KEY: &str = "KEY0123456789ABCDEF_secret";

    fn creds(public_key: &str) -> Credentials {
        Credentials::Telnyx(TelnyxCredentials {
            api_key: Secret::new(API_KEY),
            public_key: public_key.into(),
        })
    }

    fn signed(body: &[u8], timestamp: Option<&str>, sig: Option<&str>) -> WebhookRequest {
        let mut headers = vec![("content-type".into(), "application/json".into())];
        if let Some(ts) = timestamp {
            headers.push((TIMESTAMP_HEADER.into(), ts.into()));
        }
        if let Some(sig) = sig {
            headers.push((SIGNATURE_HEADER.into(), sig.into()));
        }
        WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/webhooks/telnyx".into(),
            headers,
            body: body.to_vec(),
        }
    }

    fn test_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn every_signature_vector_is_judged_as_generated() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let key = vectors["public_key"].as_str().unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        assert_eq!(cases.iter().filter(|c| c["valid"] == true).count(), 1);
        for case in cases {
            let ts = case["timestamp"].as_str().unwrap();
            let body = case["raw_body"].as_str().unwrap().as_bytes();
            let sig = case["signature"].as_str().unwrap();
            let now: i64 = ts.parse().unwrap();
            let request = signed(body, Some(ts), Some(sig));
            let verdict = verify_at(&request, &creds(key), now + 5);
            if case["valid"] == true {
                assert_eq!(verdict, Ok(()));
                // The same genuine webhook, replayed after the window (or dated ahead of it).
                assert_eq!(
                    verify_at(&request, &creds(key), now + 301),
                    Err(VerifyError::Stale)
                );
                assert_eq!(
                    verify_at(&request, &creds(key), now - 301),
                    Err(VerifyError::Stale)
                );
                assert_eq!(verify_at(&request, &creds(key), now + 300), Ok(()));
                assert_eq!(verify_at(&request, &creds(key), now - 300), Ok(()));
                // Under another account's key, or with the signature altered.
                assert_eq!(
                    verify_at(&request, &creds(FIXTURE_KEY), now),
                    Err(VerifyError::Mismatch)
                );
                let mut raw = B64.decode(sig).unwrap();
                raw[10] ^= 1;
                let flipped = B64.encode(&raw);
                for bad in [flipped.as_str(), &sig[..sig.len() - 4], "", "not base64!"] {
                    assert_eq!(
                        verify_at(&signed(body, Some(ts), Some(bad)), &creds(key), now),
                        Err(VerifyError::Mismatch),
                        "{bad}"
                    );
                }
                assert_eq!(
                    verify_at(&signed(body, Some(ts), None), &creds(key), now),
                    Err(VerifyError::Missing)
                );
                assert_eq!(
                    verify_at(&signed(body, None, Some(sig)), &creds(key), now),
                    Err(VerifyError::Missing)
                );
            } else {
                assert_eq!(verdict, Err(VerifyError::Mismatch), "{}", case["timestamp"]);
            }
        }
    }

    #[test]
    fn signing_round_trips_and_foreign_credentials_are_refused() {
        let key = test_key();
        let body = br#"{"data":{}}"#;
        let sig = signature(&key, "1700000000", body);
        let tenant = creds(&public_key_base64(&key));
        let request = signed(body, Some("1700000000"), Some(&sig));
        assert_eq!(verify_at(&request, &tenant, 1_700_000_000), Ok(()));
        let seed = B64.encode([7u8; 32]);
        assert_eq!(
            signing_key(&seed).map(|k| k.to_bytes()),
            Some(key.to_bytes())
        );
        assert!(signing_key("c2hvcnQ=").is_none());
        let twilio = Credentials::Twilio(TwilioCredentials {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: Secret::new("t"),
            webhook_keys: Default::default(),
        });
        assert_eq!(
            verify_at(&request, &twilio, 1_700_000_000),
            Err(VerifyError::WrongCredentials)
        );
        assert!(matches!(
            verify_at(&request, &creds("bad key"), 1_700_000_000),
            Err(VerifyError::Unsupported(_))
        ));
    }

    fn fixture(name: &str) -> (WebhookRequest, i64) {
        let index: Value = serde_json::from_str(INDEX).unwrap();
        assert_eq!(
            index["test_secrets"]["telnyx_public_key_base64"],
            FIXTURE_KEY
        );
        let entry = index["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == name)
            .unwrap()
            .clone();
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let headers: Vec<(String, String)> = entry["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_string()))
            .collect();
        let ts = headers
            .iter()
            .find(|(k, _)| k == TIMESTAMP_HEADER)
            .unwrap()
            .1
            .parse()
            .unwrap();
        let request = WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/webhooks/telnyx".into(),
            headers,
            body: std::fs::read(path).unwrap(),
        };
        (request, ts)
    }

    /// A fixture, checked genuine at its own time and refused as a replay now.
    fn checked(name: &str) -> WebhookEvent {
        let (request, ts) = fixture(name);
        let adapter = TelnyxAdapter::new(reqwest::Client::new(), "http://unused");
        assert_eq!(verify_at(&request, &creds(FIXTURE_KEY), ts + 2), Ok(()));
        assert_eq!(
            adapter.verify_inbound(&request, &creds(FIXTURE_KEY)),
            Err(VerifyError::Stale)
        );
        let other = public_key_base64(&test_key());
        assert_eq!(
            verify_at(&request, &creds(&other), ts),
            Err(VerifyError::Mismatch)
        );
        one(adapter.normalize_inbound(&request).unwrap())
    }

    #[test]
    fn inbound_mms_fixture() {
        let WebhookEvent::Message(m) = checked("telnyx_message_received.json") else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Telnyx);
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(
            m.provider_message_id,
            "7ee4241c-f127-47e5-9c34-000000000004"
        );
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(m.body.as_deref(), Some("Hi! photo attached"));
        assert_eq!(
            m.media,
            vec![Media {
                url: "https://media.example.com/telnyx/0001.jpg".into(),
                content_type: Some("image/jpeg".into()),
            }]
        );
        assert_eq!(m.profile_name, None);
        assert!((Utc::now() - m.received_at).num_seconds() < 60);
    }

    #[test]
    fn status_sent_fixture() {
        let WebhookEvent::Status(s) = checked("telnyx_message_sent.json") else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::Telnyx);
        assert_eq!(
            s.provider_message_id,
            "40385f64-5717-4562-b3fc-000000000006"
        );
        assert_eq!(s.status, DeliveryStatus::Sent);
        assert_eq!(s.raw_status, "sent");
        assert_eq!((s.error_code, s.error_message), (None, None));
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
    }

    #[test]
    fn status_finalized_fixture() {
        let WebhookEvent::Status(s) = checked("telnyx_message_finalized.json") else {
            panic!("not a status");
        };
        assert_eq!(
            s.provider_message_id,
            "40385f64-5717-4562-b3fc-000000000006"
        );
        assert_eq!(s.status, DeliveryStatus::Delivered);
        assert_eq!(s.raw_status, "delivered");
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
        // Distinct dedupe keys: `sent` then `delivered` for one message are two events.
        let WebhookEvent::Status(sent) = checked("telnyx_message_sent.json") else {
            panic!("not a status");
        };
        assert_ne!(
            WebhookEvent::Status(sent).dedupe_key(),
            WebhookEvent::Status(s).dedupe_key()
        );
    }

    fn event(event_type: &str, payload: Value) -> Vec<u8> {
        json!({"data": {"event_type": event_type, "id": "e1", "record_type": "event",
            "payload": payload}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn status_words_failures_and_other_events() {
        for (word, expected) in [
            ("queued", DeliveryStatus::Queued),
            ("sending", DeliveryStatus::Sending),
            ("delivery_unconfirmed", DeliveryStatus::Sent),
            ("read", DeliveryStatus::Read),
            ("sending_failed", DeliveryStatus::Failed),
            ("delivery_failed", DeliveryStatus::Undelivered),
            ("expired", DeliveryStatus::Undelivered),
        ] {
            let body = event(
                "message.finalized",
                json!({"id": "m1", "from": {"phone_number": "+15555550100"},
                    "to": [{"phone_number": "+15555550123", "status": word}],
                    "errors": [{"code": "40008", "title": "Undeliverable", "detail": "x"}]}),
            );
            let WebhookEvent::Status(s) = one(normalize(&signed(&body, None, None)).unwrap())
            else {
                panic!("not a status");
            };
            assert_eq!((s.status, s.raw_status.as_str()), (expected, word));
            assert_eq!(s.error_code.as_deref(), Some("40008"));
            assert_eq!(s.error_message.as_deref(), Some("Undeliverable"));
        }
        let unknown = event(
            "message.finalized",
            json!({"id": "m1", "from": {"phone_number": "+15555550100"},
                "to": [{"phone_number": "+15555550123", "status": "gone_fishing"}]}),
        );
        assert_eq!(normalize(&signed(&unknown, None, None)).unwrap(), vec![]);
        let other = event("number_order.complete", json!({"id": "o1"}));
        assert_eq!(normalize(&signed(&other, None, None)).unwrap(), vec![]);
        // An SMS with no media and a WhatsApp message whose `to` is a plain number.
        let sms = event(
            "message.received",
            json!({"id": "m2", "type": "SMS", "text": "", "from": {"phone_number": "+15555550123"},
                "to": "+15555550100"}),
        );
        let WebhookEvent::Message(m) = one(normalize(&signed(&sms, None, None)).unwrap()) else {
            panic!("not a message");
        };
        assert_eq!((m.channel, m.body), (Channel::Sms, None));
        assert_eq!(m.to, e164("+15555550100"));
        for bad in [
            &b"not json"[..],
            br#"{"data":{"event_type":"message.received","payload":{"id":"x"}}}"#,
            br#"{"data":{"event_type":"message.received","payload":{"id":"x","from":{"phone_number":"nope"},"to":[{"phone_number":"+15555550100"}]}}}"#,
            br#"{"data":{"event_type":"message.sent","payload":{"id":"x","to":[]}}}"#,
        ] {
            assert!(normalize(&signed(bad, None, None)).is_err());
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
            status_callback: Some("https://omni.example.org/webhooks/telnyx/status".into()),
        }
    }

    fn accepted() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"data": {
            "record_type": "message", "direction": "outbound",
            "id": "40385f64-5717-4562-b3fc-2c963f66afa6", "type": "SMS",
            "from": {"phone_number": "+15555550100", "carrier": "Telnyx", "line_type": "Wireless"},
            "to": [{"phone_number": "+15555550123", "status": "queued", "carrier": "T-Mobile USA", "line_type": "Wireless"}],
            "text": "Units are on the way", "parts": 1, "encoding": "GSM-7"}}))
    }

    async fn server() -> (MockServer, TelnyxAdapter) {
        let server = MockServer::start().await;
        let adapter = TelnyxAdapter::new(reqwest::Client::new(), &format!("{}/", server.uri()));
        (server, adapter)
    }

    #[tokio::test]
    async fn sends_text_with_bearer_and_exact_body() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/v2/messages"))
            .and(header(
                "authorization",
                format!("Bearer {API_KEY}").as_str(),
            ))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "from": "+15555550100", "to": "+15555550123", "text": "Units are on the way",
                "webhook_url": "https://omni.example.org/webhooks/telnyx/status"})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let result = adapter
            .send(&creds(FIXTURE_KEY), &outbound(vec![]))
            .await
            .unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Telnyx,
                provider_message_id: "40385f64-5717-4562-b3fc-2c963f66afa6".into(),
                status: DeliveryStatus::Queued,
                raw_status: "queued".into(),
            }
        );
    }

    #[tokio::test]
    async fn sends_media_urls_and_no_callback_when_none() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/v2/messages"))
            .and(header(
                "authorization",
                format!("Bearer {API_KEY}").as_str(),
            ))
            .and(body_json(json!({
                "from": "+15555550100", "to": "+15555550123",
                "media_urls": ["https://cdn.example.org/a.jpg", "https://cdn.example.org/b.png"]})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
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
        mms.status_callback = None;
        let sent = adapter.send(&creds(FIXTURE_KEY), &mms).await.unwrap();
        assert_eq!(
            sent.provider_message_id,
            "40385f64-5717-4562-b3fc-2c963f66afa6"
        );
        // Nothing to send: refused before any request.
        let mut empty = outbound(vec![]);
        empty.body = None;
        let err = adapter.send(&creds(FIXTURE_KEY), &empty).await.unwrap_err();
        assert!(!err.is_transient());
    }

    async fn failing(response: ResponseTemplate) -> SendError {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/v2/messages"))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter
            .send(&creds(FIXTURE_KEY), &outbound(vec![]))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains(API_KEY), "{err}");
        err
    }

    fn telnyx_error(status: u16, code: &str, title: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({"errors": [{
            "code": code, "title": title, "detail": "see the docs",
            "source": {"pointer": "/to"}, "meta": {"url": "https://developers.telnyx.com/docs/overview/errors/40310"}}]}))
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let err = failing(telnyx_error(422, "40310", "Invalid 'to' address")).await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("40310".into()),
                message: "Invalid 'to' address: see the docs".into(),
            }
        );
        let err = failing(telnyx_error(401, "10009", "Authentication failed")).await;
        assert!(!err.is_transient());
        let err = failing(telnyx_error(400, "10011", "Too many requests")).await;
        assert!(err.is_transient());
        assert_eq!(err.code(), Some("10011"));
        assert!(failing(ResponseTemplate::new(503)).await.is_transient());
        assert!(failing(ResponseTemplate::new(408)).await.is_transient());
        let err = failing(ResponseTemplate::new(429).insert_header("retry-after", "7")).await;
        assert!(matches!(
            err,
            SendError::Transient {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(7)
        ));
        // A 2xx without a message id may or may not have been sent: retried, not lost.
        assert!(failing(ResponseTemplate::new(200).set_body_string("{}"))
            .await
            .is_transient());
    }

    #[tokio::test]
    async fn wrong_credentials_and_channels_are_refused() {
        let adapter = TelnyxAdapter::new(reqwest::Client::new(), "http://127.0.0.1:9");
        let err = adapter
            .send(&Credentials::Simulator, &outbound(vec![]))
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        let mut whatsapp = outbound(vec![]);
        whatsapp.channel = Channel::Whatsapp;
        let err = adapter
            .send(&creds(FIXTURE_KEY), &whatsapp)
            .await
            .unwrap_err();
        assert!(!err.is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..512),
            ts in ".{0,24}",
            sig in ".{0,100}",
            now in any::<i64>(),
        ) {
            let request = signed(&body, Some(&ts), Some(&sig));
            let _ = verify_at(&request, &creds(FIXTURE_KEY), now);
            let _ = normalize(&request);
        }

        #[test]
        fn arbitrary_payloads_never_panic(
            kind in "[a-z.]{0,20}",
            number in ".{0,20}",
            status in "[a-z_]{0,16}",
            text in ".{0,40}",
        ) {
            for event_type in [kind.as_str(), "message.received", "message.finalized"] {
                let body = event(event_type, json!({"id": "m", "type": "MMS", "text": text,
                    "from": {"phone_number": number}, "to": [{"phone_number": number, "status": status}],
                    "media": [{"url": text}], "errors": [{"code": 1}]}));
                let _ = normalize(&signed(&body, None, None));
            }
        }
    }

    #[test]
    fn telnyx_admin_json_is_validated_and_redacted() {
        let key = "H1DCBogd1myv/s9jVKJLikB0GpWKvr2y6bZiwSGrJ0M=";
        let ok = serde_json::json!({"api_key": "KEY-telnyx-very-secret", "public_key": key});
        let creds = Credentials::from_admin_json(ProviderKind::Telnyx, ok).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Telnyx);
        let shown = format!("{creds:?} {}", creds.redacted());
        assert!(!shown.contains("KEY-telnyx-very-secret"), "{shown}");
        assert!(shown.contains(key), "the public key is not secret: {shown}");
        assert_eq!(creds.redacted()["provider"], "telnyx");
        assert_eq!(creds.secrets(), vec!["KEY-telnyx-very-secret"]);
        for bad in [
            serde_json::json!({"api_key": "", "public_key": key}),
            serde_json::json!({"api_key": "k", "public_key": "c2hvcnQ="}),
            serde_json::json!({"api_key": "k", "public_key": "not base64"}),
            serde_json::json!({"api_key": "k"}),
        ] {
            assert!(Credentials::from_admin_json(ProviderKind::Telnyx, bad).is_err());
        }
    }
}
