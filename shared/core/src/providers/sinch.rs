//! Sinch SMS (the REST "xms" API).
//!
//! Sends go to `POST {base}/xms/v1/{service_plan_id}/batches` with the API token as a Bearer
//! token: a batch of one recipient (`to[]`, `from`, `body`; MMS as `type: mt_media` with
//! `body: {url, message}`), asking for `per_recipient` delivery reports at our status
//! webhook. The batch id is the message id. Recipient delivery reports name no sender, so
//! the batch's `client_reference` carries our sending number and routes the report back.
//!
//! Callbacks are JSON objects: `mo_text` / `mo_media` are inbound messages,
//! `recipient_delivery_report_sms|mms` report on one of ours (status names compared
//! case-insensitively, Sinch's status code kept). Each is signed: `x-sinch-webhook-signature`
//! is the base64 HMAC-SHA256, under the app secret the tenant configured, of
//! `{raw body}.{nonce}.{timestamp}` from the `x-sinch-webhook-signature-nonce` and
//! `-timestamp` headers; a timestamp more than five minutes from now is refused as a replay.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use super::carrier::{
    guess_content_type, require, strong, ApiUrlSetting, Carrier, CarrierConfig, Receives,
    SigningKey, TestInbound, TestWebhook, WebhookRoute,
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

/// The signature header: base64 HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-sinch-webhook-signature";
/// The nonce header, part of what is signed.
pub const NONCE_HEADER: &str = "x-sinch-webhook-signature-nonce";
/// The timestamp header (Unix seconds), part of what is signed.
pub const TIMESTAMP_HEADER: &str = "x-sinch-webhook-signature-timestamp";
/// How far a callback's timestamp may be from now, either way (as for Telnyx).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);

/// Sinch SMS REST adapter.
#[derive(Clone)]
pub struct SinchAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl SinchAdapter {
    /// An adapter calling the SMS API at `base_url` (`https://us.sms.api.sinch.com`; the
    /// region is platform configuration).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        SinchAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// The `x-sinch-webhook-signature` value of a body sent with `nonce` at `timestamp`.
pub fn signature(app_secret: &str, body: &[u8], nonce: &str, timestamp: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.update(b".");
    mac.update(nonce.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// Checks a callback's signature and freshness against the tenant's app secret, as of `now`
/// (Unix seconds).
pub fn verify_at(
    request: &WebhookRequest,
    credentials: &Credentials,
    now: i64,
) -> Result<(), VerifyError> {
    let Credentials::Sinch(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let given = request
        .header(SIGNATURE_HEADER)
        .ok_or(VerifyError::Missing)?;
    let nonce = request.header(NONCE_HEADER).ok_or(VerifyError::Missing)?;
    let timestamp = request
        .header(TIMESTAMP_HEADER)
        .ok_or(VerifyError::Missing)?;
    let expected = signature(creds.app_secret.expose(), &request.body, nonce, timestamp);
    if !ct_eq(given.trim().as_bytes(), expected.as_bytes()) {
        return Err(VerifyError::Mismatch);
    }
    // After the signature, which covers the timestamp: only a genuine but old (or
    // future-dated) callback gets here.
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
struct Callback {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    body: Option<serde_json::Value>,
    batch_id: Option<String>,
    status: Option<String>,
    code: Option<serde_json::Value>,
    client_reference: Option<String>,
    applied_originator: Option<String>,
}

#[derive(Deserialize)]
struct MediaBody {
    message: Option<String>,
    #[serde(default)]
    media: Vec<MediaItem>,
}

#[derive(Deserialize)]
struct MediaItem {
    url: String,
    content_type: Option<String>,
    status: Option<String>,
}

/// Maps a delivery report status (any case) to ours.
fn map_status(raw: &str) -> Option<DeliveryStatus> {
    Some(match raw.to_ascii_lowercase().as_str() {
        "queued" => DeliveryStatus::Queued,
        "dispatched" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        // Never handed to an operator.
        "aborted" | "cancelled" | "rejected" | "deleted" => DeliveryStatus::Failed,
        "failed" | "expired" => DeliveryStatus::Undelivered,
        // Final, but the operator said nothing more: it left Sinch, as far as we know.
        "unknown" => DeliveryStatus::Sent,
        _ => return None,
    })
}

/// A number as Sinch writes it: international, usually without the `+`.
fn number(raw: &str, what: &str) -> Result<Address, ParseError> {
    let raw = raw.trim();
    let international = if raw.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{raw}")
    } else {
        raw.to_string()
    };
    E164::from_carrier(&international)
        .map(Address::Phone)
        .map_err(|_| ParseError::new(format!("{what} is not a valid phone number")))
}

fn required<'a>(field: &'a Option<String>, what: &str) -> Result<&'a str, ParseError> {
    field
        .as_deref()
        .ok_or_else(|| ParseError::new(format!("{what} is missing")))
}

fn inbound(callback: Callback) -> Result<Vec<WebhookEvent>, ParseError> {
    let (body, media) = match (callback.kind.as_str(), callback.body.clone()) {
        ("mo_text", Some(serde_json::Value::String(text))) => (Some(text), vec![]),
        ("mo_text", None) => (None, vec![]),
        ("mo_media", Some(body)) => {
            let body: MediaBody = serde_json::from_value(body)
                .map_err(|_| ParseError::new("body is not an MMS body"))?;
            // Media Sinch failed to fetch from the operator have no usable URL.
            let media = body
                .media
                .into_iter()
                .filter(|m| {
                    !m.status
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("failed"))
                })
                .map(|m| Media {
                    url: m.url,
                    content_type: m.content_type,
                })
                .collect();
            (body.message, media)
        }
        _ => return Err(ParseError::new("body is missing or of the wrong type")),
    };
    let channel = if media.is_empty() {
        Channel::Sms
    } else {
        Channel::Mms
    };
    Ok(vec![WebhookEvent::Message(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Sinch,
        provider_message_id: required(&callback.id, "id")?.to_string(),
        channel,
        from: number(required(&callback.from, "from")?, "from")?,
        to: number(required(&callback.to, "to")?, "to")?,
        body: body.filter(|t| !t.is_empty()),
        media,
        profile_name: None,
        received_at: Utc::now(),
        auto_submitted: false,
    })])
}

fn delivery_report(callback: Callback) -> Result<Vec<WebhookEvent>, ParseError> {
    let raw = required(&callback.status, "status")?.to_string();
    // Statuses Sinch may add later are acknowledged and skipped.
    let Some(status) = map_status(&raw) else {
        return Ok(vec![]);
    };
    let ours = callback
        .client_reference
        .as_deref()
        .or(callback.applied_originator.as_deref())
        .ok_or_else(|| ParseError::new("client_reference (our number) is missing"))?;
    Ok(vec![WebhookEvent::Status(StatusUpdate {
        provider: ProviderKind::Sinch,
        provider_message_id: required(&callback.batch_id, "batch_id")?.to_string(),
        status,
        error_code: callback
            .code
            .as_ref()
            .and_then(code_text)
            .filter(|_| status.is_failure()),
        error_message: status.is_failure().then(|| raw.clone()),
        raw_status: raw,
        tenant_number: Some(number(ours, "client_reference")?),
        at: Utc::now(),
    })])
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let callback: Callback = serde_json::from_slice(&request.body)
        .map_err(|_| ParseError::new("the body is not a Sinch callback"))?;
    match callback.kind.as_str() {
        "mo_text" | "mo_media" => inbound(callback),
        "recipient_delivery_report_sms" | "recipient_delivery_report_mms" => {
            delivery_report(callback)
        }
        // Binary MO has nothing to show; batch-level reports are never requested.
        _ => Ok(vec![]),
    }
}

/// The JSON body of a send: one recipient per batch, so the batch id is the message id.
fn batch_body(message: &OutboundMessage) -> Result<serde_json::Value, SendError> {
    let mut body = json!({
        "to": [message.to.as_str()],
        "from": message.from.as_str(),
        "delivery_report": "per_recipient",
        // Echoed in delivery reports, which otherwise name no sender: routes them back.
        "client_reference": message.from.as_str(),
    });
    match (message.media.as_slice(), &message.body) {
        ([], Some(text)) => body["body"] = text.as_str().into(),
        ([], None) => {
            return Err(SendError::permanent(
                None,
                "a message needs a body or media",
            ))
        }
        ([media], text) => {
            body["type"] = "mt_media".into();
            body["body"] = json!({"url": media.url});
            if let Some(text) = text {
                body["body"]["message"] = text.as_str().into();
            }
        }
        _ => {
            return Err(SendError::permanent(
                None,
                "Sinch sends one media item per MMS",
            ))
        }
    }
    if let Some(callback) = &message.status_callback {
        body["callback_url"] = callback.as_str().into();
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Batch {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    text: Option<String>,
}

#[async_trait]
impl MessagingProviderAdapter for SinchAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sinch
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Sinch(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not Sinch's"));
        };
        carries("Sinch", self.channels(), message)?;
        let body = batch_body(message)?;
        let response = self
            .http
            .post(format!(
                "{}/xms/v1/{}/batches",
                self.base_url, creds.service_plan_id
            ))
            .bearer_auth(creds.api_token.expose())
            .json(&body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            let batch = serde_json::from_slice::<Batch>(&bytes)
                .map_err(|_| SendError::transient("Sinch answered without a batch id", None))?;
            return Ok(SendResult {
                provider: ProviderKind::Sinch,
                provider_message_id: batch.id,
                status: DeliveryStatus::Queued,
                raw_status: "queued".into(),
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        let code = error.as_ref().and_then(|e| e.code.clone());
        let message = error
            .and_then(|e| e.text)
            .unwrap_or_else(|| format!("Sinch answered HTTP {}", status.as_u16()));
        Err(named_failure(status, code, message, wait))
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

/// Sinch SMS credentials: the service plan's API token sends, the app secret checks
/// callback signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinchCredentials {
    /// Service plan id (letters and digits, not secret); it goes into the send path.
    pub service_plan_id: String,
    /// The service plan's API token, sent as a Bearer token.
    pub api_token: Secret,
    /// The secret Sinch signs callbacks with (HMAC-SHA256).
    pub app_secret: Secret,
}

impl CarrierConfig for SinchCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["api_token", "app_secret"];

    fn validate(&self) -> Result<(), String> {
        // The plan id goes into the API path: letters and digits keep it one segment.
        let id_ok = !self.service_plan_id.is_empty()
            && self
                .service_plan_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric());
        require(id_ok, "service_plan_id (letters and digits)")?;
        require(!self.api_token.expose().is_empty(), "api_token")?;
        strong(&self.app_secret, "app_secret")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.api_token.expose(), self.app_secret.expose()]
    }

    fn example() -> Self {
        SinchCredentials {
            service_plan_id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
            api_token: Secret::new("sinch-api-token-secret"),
            app_secret: Secret::new("sinch-app-secret-secret"),
        }
    }
}

/// The Omni declaration of Sinch.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Sinch,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_SINCH_API_URL",
        default: "https://us.sms.api.sinch.com",
        help: "Sinch SMS API base URL of the platform's region (`/xms/v1/{service_plan_id}/batches` is appended).",
    }),
    webhooks: &[
        WebhookRoute::post("/webhooks/sinch", Receives::Inbound),
        WebhookRoute::post("/webhooks/sinch/status", Receives::Status),
    ],
    adapter: |http, base_url| Arc::new(SinchAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "JSON POST, HMAC-SHA256-signed; --secret: the app secret",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// An `mo_text` (with media, `mo_media`) callback as Sinch posts it, numbers without `+`,
/// signed with the app secret.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("Sinch")?;
    let (from, to) = message.numbers()?;
    let secret = key.secret(|c| SinchCredentials::of(c).map(|c| &c.app_secret))?;
    let id = message.id_or(|| Uuid::new_v4().simple().to_string().to_uppercase());
    let (kind, text) = if message.media.is_empty() {
        ("mo_text", serde_json::json!(message.body))
    } else {
        let items: Vec<_> = message
            .media
            .iter()
            .map(|url| {
                serde_json::json!({"url": url, "content_type": guess_content_type(url),
                "status": "Uploaded", "code": 0})
            })
            .collect();
        (
            "mo_media",
            serde_json::json!({"message": message.body, "media": items}),
        )
    };
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = serde_json::json!({"id": id, "type": kind, "from": from.digits(),
        "to": to.digits(), "body": text, "received_at": now})
    .to_string();
    let nonce = Uuid::new_v4().simple().to_string();
    let timestamp = Utc::now().timestamp().to_string();
    let signature = signature(&secret, body.as_bytes(), &nonce, &timestamp);
    Ok(vec![message.post(
        "/webhooks/sinch",
        "application/json",
        vec![
            (SIGNATURE_HEADER.into(), signature),
            (NONCE_HEADER.into(), nonce),
            (TIMESTAMP_HEADER.into(), timestamp),
        ],
        body.into_bytes(),
    )])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/sinch": {"post": {"summary": "Sinch SMS inbound callbacks (mo_text, mo_media), HMAC-signed; routed by the called number", "parameters": [{"name": "x-sinch-webhook-signature", "in": "header", "required": true, "schema": {"type": "string"}, "description": "base64 HMAC-SHA256 of `{raw body}.{nonce}.{timestamp}` under the tenant's Sinch app secret"}, {"name": "x-sinch-webhook-signature-nonce", "in": "header", "required": true, "schema": {"type": "string"}, "description": "the nonce, part of what is signed"}, {"name": "x-sinch-webhook-signature-timestamp", "in": "header", "required": true, "schema": {"type": "string"}, "description": "Unix seconds, part of what is signed; more than 300 s from the server's clock, either way, is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}},
"/webhooks/sinch/status": {"post": {"summary": "Sinch recipient delivery reports (recipient_delivery_report_sms/_mms) requested per batch (callback_url); routed by the batch's client_reference, our sending number", "parameters": [{"name": "x-sinch-webhook-signature", "in": "header", "required": true, "schema": {"type": "string"}, "description": "base64 HMAC-SHA256 of `{raw body}.{nonce}.{timestamp}` under the tenant's Sinch app secret"}, {"name": "x-sinch-webhook-signature-nonce", "in": "header", "required": true, "schema": {"type": "string"}, "description": "the nonce, part of what is signed"}, {"name": "x-sinch-webhook-signature-timestamp", "in": "header", "required": true, "schema": {"type": "string"}, "description": "Unix seconds, part of what is signed; more than 300 s from the server's clock, either way, is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::providers::test_support::{e164, fixture, one};
    use crate::providers::{Secret, SinchCredentials};
    use proptest::prelude::*;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const PLAN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const API_TOKEN: &str = "sinch-api-token-secret";
    const APP_SECRET: &str = "sinch-app-secret-0123456789";

    fn creds() -> Credentials {
        Credentials::Sinch(SinchCredentials {
            service_plan_id: PLAN.into(),
            api_token: Secret::new(API_TOKEN),
            app_secret: Secret::new(APP_SECRET),
        })
    }

    fn request(body: &[u8], headers: &[(&str, &str)]) -> WebhookRequest {
        let mut all = vec![("content-type".to_string(), "application/json".to_string())];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/webhooks/sinch".into(),
            headers: all,
            body: body.to_vec(),
        }
    }

    fn signed(body: &[u8], secret: &str, ts: i64) -> WebhookRequest {
        let ts = ts.to_string();
        let sig = signature(secret, body, "nonce-01", &ts);
        request(
            body,
            &[
                (SIGNATURE_HEADER, &sig),
                (NONCE_HEADER, "nonce-01"),
                (TIMESTAMP_HEADER, &ts),
            ],
        )
    }

    #[test]
    fn signature_vector() {
        // Computed independently: printf '%s' '{"a":1}.n0.1700000000' |
        // openssl dgst -sha256 -hmac secret -binary | base64
        assert_eq!(
            signature("secret", br#"{"a":1}"#, "n0", "1700000000"),
            "+0sUSrQp6txyGmrARGJumgZq51E2lDbLFU0L8fo1pCg="
        );
    }

    #[test]
    fn signatures_and_replay_window_are_checked() {
        let body = fixture("sinch_mo_text.json");
        let now = 1_800_000_000;
        assert_eq!(
            verify_at(&signed(&body, APP_SECRET, now), &creds(), now + 2),
            Ok(())
        );
        assert_eq!(
            verify_at(&signed(&body, "another-secret", now), &creds(), now),
            Err(VerifyError::Mismatch)
        );
        for stale in [now - 301, now + 301] {
            assert_eq!(
                verify_at(&signed(&body, APP_SECRET, stale), &creds(), now),
                Err(VerifyError::Stale)
            );
        }
        // The body, nonce and timestamp are each covered.
        let good = signed(&body, APP_SECRET, now);
        let mut tampered = good.clone();
        tampered.body.push(b' ');
        assert_eq!(
            verify_at(&tampered, &creds(), now),
            Err(VerifyError::Mismatch)
        );
        for header in [NONCE_HEADER, TIMESTAMP_HEADER] {
            let mut other = good.clone();
            for (k, v) in other.headers.iter_mut() {
                if k == header {
                    v.push('1');
                }
            }
            assert_eq!(verify_at(&other, &creds(), now), Err(VerifyError::Mismatch));
            let mut missing = good.clone();
            missing.headers.retain(|(k, _)| k != header);
            assert_eq!(
                verify_at(&missing, &creds(), now),
                Err(VerifyError::Missing)
            );
        }
        assert_eq!(
            verify_at(&request(&body, &[]), &creds(), now),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify_at(&good, &Credentials::Simulator, now),
            Err(VerifyError::WrongCredentials)
        );
    }

    #[test]
    fn inbound_text_fixture() {
        let WebhookEvent::Message(m) =
            one(normalize(&request(&fixture("sinch_mo_text.json"), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Sinch);
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(m.provider_message_id, "01JDSINCHMOTEXT000000000001");
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(m.body.as_deref(), Some("Smoke on 5th street"));
        assert!(m.media.is_empty());
    }

    #[test]
    fn inbound_media_fixture() {
        let WebhookEvent::Message(m) =
            one(normalize(&request(&fixture("sinch_mo_media.json"), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(m.body.as_deref(), Some("Photo of the roof"));
        // The item Sinch failed to fetch is left out.
        assert_eq!(
            m.media,
            vec![Media {
                url: "https://mms.example.sinch.com/media/roof.jpg".into(),
                content_type: Some("image/jpeg".into()),
            }]
        );
    }

    #[test]
    fn delivery_report_fixture() {
        let WebhookEvent::Status(s) =
            one(normalize(&request(&fixture("sinch_delivery_report.json"), &[])).unwrap())
        else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::Sinch);
        assert_eq!(s.provider_message_id, "01JDSINCHBATCH0000000000001");
        assert_eq!(s.status, DeliveryStatus::Undelivered);
        assert_eq!(s.raw_status, "Failed");
        assert_eq!(s.error_code.as_deref(), Some("406"));
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
    }

    fn report(status: &str, code: serde_json::Value) -> Vec<u8> {
        json!({"type": "recipient_delivery_report_sms", "batch_id": "b1",
            "recipient": "15555550123", "status": status, "code": code,
            "at": "2026-11-30T10:00:00.000Z", "client_reference": "+15555550100"})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn statuses_are_case_insensitive_and_codes_kept_on_failures() {
        for (word, expected) in [
            ("Queued", DeliveryStatus::Queued),
            ("DISPATCHED", DeliveryStatus::Sent),
            ("delivered", DeliveryStatus::Delivered),
            ("Aborted", DeliveryStatus::Failed),
            ("CANCELLED", DeliveryStatus::Failed),
            ("Rejected", DeliveryStatus::Failed),
            ("Deleted", DeliveryStatus::Failed),
            ("Failed", DeliveryStatus::Undelivered),
            ("EXPIRED", DeliveryStatus::Undelivered),
            ("Unknown", DeliveryStatus::Sent),
        ] {
            let WebhookEvent::Status(s) =
                one(normalize(&request(&report(word, json!(402)), &[])).unwrap())
            else {
                panic!("not a status");
            };
            assert_eq!((s.status, s.raw_status.as_str()), (expected, word));
            let code = s.status.is_failure().then(|| "402".to_string());
            assert_eq!(s.error_code, code);
        }
        assert_eq!(
            normalize(&request(&report("Teleported", json!(0)), &[])).unwrap(),
            vec![]
        );
        // Only the applied originator (a default pool): still routed.
        let body = json!({"type": "recipient_delivery_report_mms", "batch_id": "b2",
            "status": "Delivered", "code": 0, "applied_originator": "15555550100"});
        let WebhookEvent::Status(s) =
            one(normalize(&request(body.to_string().as_bytes(), &[])).unwrap())
        else {
            panic!("not a status");
        };
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
        for ignored in [
            json!({"type": "mo_binary", "id": "x", "from": "1", "to": "2", "body": "AAE="}),
            json!({"type": "delivery_report_sms", "batch_id": "b", "statuses": []}),
        ] {
            assert_eq!(
                normalize(&request(ignored.to_string().as_bytes(), &[])).unwrap(),
                vec![]
            );
        }
        for bad in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"type":"mo_text","id":"x","from":"15555550123"}"#,
            br#"{"type":"mo_text","id":"x","from":"12","to":"15555550100","body":"hi"}"#,
            br#"{"type":"mo_text","id":"x","from":"15555550123","to":"15555550100","body":{"a":1}}"#,
            br#"{"type":"mo_media","id":"x","from":"15555550123","to":"15555550100","body":"text"}"#,
            br#"{"type":"recipient_delivery_report_sms","batch_id":"b","status":"Delivered"}"#,
            br#"{"type":"recipient_delivery_report_sms","status":"Delivered","client_reference":"+15555550100"}"#,
        ] {
            assert!(normalize(&request(bad, &[])).is_err(), "{}", String::from_utf8_lossy(bad));
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
            status_callback: Some("https://omni.example.org/webhooks/sinch/status".into()),
        }
    }

    fn created() -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(json!({
            "id": "01JDSINCHBATCH0000000000001", "to": ["15555550123"], "from": "15555550100",
            "canceled": false, "body": "Units are on the way", "type": "mt_text",
            "created_at": "2026-11-30T10:00:00.000Z", "modified_at": "2026-11-30T10:00:00.000Z",
            "delivery_report": "per_recipient"}))
    }

    async fn server() -> (MockServer, SinchAdapter) {
        let server = MockServer::start().await;
        let adapter = SinchAdapter::new(reqwest::Client::new(), &format!("{}/", server.uri()));
        (server, adapter)
    }

    fn batches() -> String {
        format!("/xms/v1/{PLAN}/batches")
    }

    #[tokio::test]
    async fn sends_text_with_bearer_and_exact_body() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(batches()))
            .and(header(
                "authorization",
                format!("Bearer {API_TOKEN}").as_str(),
            ))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "to": ["+15555550123"], "from": "+15555550100", "body": "Units are on the way",
                "delivery_report": "per_recipient", "client_reference": "+15555550100",
                "callback_url": "https://omni.example.org/webhooks/sinch/status"})))
            .respond_with(created())
            .expect(1)
            .mount(&server)
            .await;
        let result = adapter.send(&creds(), &outbound(vec![])).await.unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Sinch,
                provider_message_id: "01JDSINCHBATCH0000000000001".into(),
                status: DeliveryStatus::Queued,
                raw_status: "queued".into(),
            }
        );
    }

    #[tokio::test]
    async fn sends_mms_as_mt_media_and_refuses_what_sinch_cannot_carry() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(batches()))
            .and(body_json(json!({
                "to": ["+15555550123"], "from": "+15555550100", "type": "mt_media",
                "body": {"url": "https://cdn.example.org/a.jpg", "message": "Units are on the way"},
                "delivery_report": "per_recipient", "client_reference": "+15555550100"})))
            .respond_with(created())
            .expect(1)
            .mount(&server)
            .await;
        let media = |url: &str| Media {
            url: url.into(),
            content_type: None,
        };
        let mut mms = outbound(vec![media("https://cdn.example.org/a.jpg")]);
        mms.channel = Channel::Mms;
        mms.status_callback = None;
        adapter.send(&creds(), &mms).await.unwrap();
        let mut two = mms.clone();
        two.media.push(media("https://cdn.example.org/b.jpg"));
        let mut empty = outbound(vec![]);
        empty.body = None;
        let mut whatsapp = outbound(vec![]);
        whatsapp.channel = Channel::Whatsapp;
        for refused in [two, empty, whatsapp] {
            assert!(!adapter
                .send(&creds(), &refused)
                .await
                .unwrap_err()
                .is_transient());
        }
        assert!(!adapter
            .send(&Credentials::Simulator, &outbound(vec![]))
            .await
            .unwrap_err()
            .is_transient());
    }

    async fn failing(response: ResponseTemplate) -> SendError {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(batches()))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter.send(&creds(), &outbound(vec![])).await.unwrap_err();
        assert!(!err.to_string().contains(API_TOKEN), "{err}");
        err
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let err = failing(ResponseTemplate::new(400).set_body_json(
            json!({"code": "syntax_constraint_violation", "text": "to: must not be empty"}),
        ))
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("syntax_constraint_violation".into()),
                message: "to: must not be empty".into(),
            }
        );
        assert!(!failing(ResponseTemplate::new(401)).await.is_transient());
        assert!(failing(ResponseTemplate::new(503)).await.is_transient());
        let err = failing(ResponseTemplate::new(429).insert_header("retry-after", "7")).await;
        assert!(matches!(
            err,
            SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(failing(ResponseTemplate::new(201).set_body_string("{}"))
            .await
            .is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..512),
            sig in ".{0,60}",
            nonce in ".{0,20}",
            ts in ".{0,20}",
            now in any::<i64>(),
        ) {
            let r = request(&body, &[(SIGNATURE_HEADER, &sig), (NONCE_HEADER, &nonce), (TIMESTAMP_HEADER, &ts)]);
            let _ = verify_at(&r, &creds(), now);
            let _ = normalize(&r);
        }

        #[test]
        fn arbitrary_callbacks_never_panic(
            kind in "[a-z_]{0,30}",
            number in ".{0,20}",
            text in ".{0,40}",
        ) {
            for kind in [kind.as_str(), "mo_media", "mo_text", "recipient_delivery_report_sms"] {
                for body in [json!(text), json!({"message": text, "media": [{"url": text, "status": text}]})] {
                    let callback = json!({"type": kind, "id": text, "from": number, "to": number,
                        "body": body, "batch_id": text, "status": text, "code": text,
                        "client_reference": number});
                    let _ = normalize(&request(callback.to_string().as_bytes(), &[]));
                }
            }
        }
    }

    #[test]
    fn sinch_admin_json_is_validated_and_redacted() {
        let ok = serde_json::json!({"service_plan_id": "a1b2c3d4e5f6", "api_token": "sinch-token-very-secret",
            "app_secret": "sinch-app-very-secret"});
        let creds = Credentials::from_admin_json(ProviderKind::Sinch, ok.clone()).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Sinch);
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in ["sinch-token-very-secret", "sinch-app-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("a1b2c3d4e5f6"), "{shown}");
        assert_eq!(creds.redacted()["provider"], "sinch");
        assert_eq!(
            creds.secrets(),
            vec!["sinch-token-very-secret", "sinch-app-very-secret"]
        );
        for (field, bad) in [
            ("service_plan_id", "../x"),
            ("service_plan_id", ""),
            ("api_token", ""),
            ("app_secret", ""),
        ] {
            let mut body = ok.clone();
            body[field] = bad.into();
            assert!(Credentials::from_admin_json(ProviderKind::Sinch, body).is_err());
        }
    }
}
