//! Inteliquent Message Broker: `publishMessages` out, the inbound-messaging webhook in.
//!
//! Wire facts relied on, and where they come from (no dossier section exists):
//!
//! - Inteliquent's Services API OpenAPI document (Swagger 2.0, "Inteliquent_API_V2-3", Feb
//!   2023) as published in `ooglek/inteliquent-sdk-php` (`Inteliquent_API_V2-3.yaml`, paths
//!   `/publishMessages`, `/configureAuthorization`,
//!   `/CustomerConfiguredWebhookURLForInboundMessaging`, definition `ResponsePublishMessage`;
//!   also `docs/Api/MessageBrokerApi.md`):
//!   - a send is `POST https://messagebroker.inteliquent.com/msgbroker/rest/publishMessages`
//!     with `Authorization: Bearer <API key>` (a message broker key from the portal) and the
//!     JSON `{"from", "to": [..], "text", "mediaUrls": [..]}`; numbers are 11 digits without
//!     `+` (`19205551234`); the message is an MMS when `mediaUrls` is present, and
//!     `mediaUrls` is a list, so every attachment goes in the one message;
//!   - the answer is `{"success", "reason", "detail", "result": {"referenceId", …,
//!     "resultResponses": [{"to", "status"}]}}` (`SUCCESS` per recipient); errors are
//!     documented as HTTP 408 "user error" with `{"statusCode", "status"}` (the error text);
//!   - inbound messages and delivery receipts both arrive at the one webhook configured with
//!     `configureAuthorization` as `{"referenceId", "from", "to": [..], "text",
//!     "mediaUrls": [..], "deliveryReceipt": bool}`; `referenceId` is the "cross reference
//!     for the message Id"; delivery receipts are an account setting (`msgDeliveryReceipt`);
//!   - webhook authenticity: when the webhook is configured with an `apiKey`, each request
//!     carries a random token in the `messageID` header and `HMAC_SHA256([API key])` of it in
//!     the `verificationToken` header.
//! - Mozilla's Firefox Relay, which ran on Inteliquent (`mozilla/fx-private-relay`,
//!   `api/views/phones.py` and `phones/iq_utils.py` before commit f01cd226b removed them):
//!   sends exactly the body above with the Bearer key; inbound `from` and `to[]` came as 10
//!   national digits (`5556660000`), the receiving number being `to[0]`; and the
//!   `verificationToken` it checked was the lower-case hex SHA-256 of `key + messageID`,
//!   noted there as a stand-in "until iQ is ready" for the HMAC.
//!
//! So [`verify_inbound`](InteliquentAdapter) accepts a `verificationToken` that is the hex
//! (either case) of either HMAC-SHA256(key, messageID) (documented) or SHA-256(key ‖
//! messageID) (observed), each compared in constant time, under the tenant's `webhook_key`
//! (the `apiKey` given to `configureAuthorization`; Relay kept it apart from the send key).
//! Neither covers the body nor a time, so a captured request can be replayed: redeliveries
//! are harmless (inbound messages and receipts are deduplicated by `referenceId`), but the
//! scheme is weaker than a body signature, which Inteliquent does not offer.
//!
//! Unconfirmed, and handled defensively:
//! - the encoding of `verificationToken` (hex assumed, from Relay);
//! - the number format of inbound payloads: 10 digits (read as NANP), 11 digits, `+E.164`,
//!   and JSON numbers (the OpenAPI example writes `from: 13123752629` unquoted) are read;
//! - which `to[]` entry is the tenant's in a group MMS: the first, as Relay did;
//! - the delivery receipt's status: the OpenAPI model has none. A receipt routes by its
//!   called number (`to[0]`, as if the handset reported to our number, as in SMPP) and is
//!   matched to our message by `referenceId`; an SMPP-style `stat:` word in its `text` is
//!   mapped when present (`DELIVRD` delivered, `UNDELIV`/`EXPIRED` undelivered, `REJECTD`
//!   failed, with `err:` kept), otherwise a receipt means delivered;
//! - HTTP 408 is Inteliquent's documented user error, so with its `{statusCode, status}`
//!   body it is permanent; a bare 408 (a proxy's timeout) is retried.

use async_trait::async_trait;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::carrier::{
    require, strong, ApiUrlSetting, Carrier, CarrierConfig, Receives, SigningKey, TestInbound,
    TestWebhook, WebhookRoute,
};
use super::Secret;
use super::{
    carries, code_text, ct_eq, named_failure, network_error, phones, retry_after, Credentials,
    MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent, E164,
};
use std::sync::Arc;

/// The header carrying the random token Inteliquent authenticates.
pub const MESSAGE_ID_HEADER: &str = "messageid";
/// The header carrying the hex MAC of the token under the webhook key.
pub const TOKEN_HEADER: &str = "verificationtoken";
/// Carrier strings echoed into errors are cut to this length (they are untrusted input).
const MAX_ECHO: usize = 120;

/// Inteliquent Message Broker adapter.
#[derive(Clone)]
pub struct InteliquentAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl InteliquentAdapter {
    /// An adapter calling the Message Broker at `base_url`
    /// (`https://messagebroker.inteliquent.com/msgbroker/rest`; `/publishMessages` is
    /// appended).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        InteliquentAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// The documented `verificationToken` for `message_id`: lower-case hex
/// HMAC-SHA256(webhook key, messageID). `omni webhook send` and the tests sign with it.
pub fn verification_token(webhook_key: &str, message_id: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(webhook_key.as_bytes()).expect("HMAC takes any key length");
    mac.update(message_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The form Firefox Relay saw in production: SHA-256 of the key followed by the token.
fn concatenated_digest(webhook_key: &str, message_id: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(webhook_key.as_bytes());
    digest.update(message_id.as_bytes());
    digest.finalize().into()
}

/// Checks `messageID` / `verificationToken` against the tenant's webhook key.
fn verify(request: &WebhookRequest, credentials: &Credentials) -> Result<(), VerifyError> {
    let Credentials::Inteliquent(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let message_id = request
        .header(MESSAGE_ID_HEADER)
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::Missing)?;
    let given = request.header(TOKEN_HEADER).ok_or(VerifyError::Missing)?;
    let given = hex::decode(given.trim()).map_err(|_| VerifyError::Mismatch)?;
    let key = creds.webhook_key.expose();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(message_id.as_bytes());
    let documented = mac.finalize().into_bytes();
    let observed = concatenated_digest(key, message_id);
    // Both compared, whichever matches: which one ran leaks nothing about the key.
    let ok = ct_eq(&given, &documented) | ct_eq(&given, &observed);
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// A number as Inteliquent writes it: 10 national digits, 11 digits, `+E.164`, or a JSON
/// number.
fn number(raw: &Value, what: &str) -> Result<Address, ParseError> {
    let invalid = || ParseError::new(format!("{what} is not a valid phone number"));
    let text = match raw {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return Err(invalid()),
    };
    let international = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if text.len() == 10 {
            format!("+1{text}")
        } else {
            format!("+{text}")
        }
    } else {
        text
    };
    E164::from_carrier(&international)
        .map(Address::Phone)
        .map_err(|_| invalid())
}

/// The webhook body: an inbound message or a delivery receipt.
#[derive(Deserialize)]
struct Callback {
    #[serde(rename = "referenceId")]
    reference_id: Option<Value>,
    from: Option<Value>,
    to: Option<Value>,
    text: Option<String>,
    #[serde(rename = "mediaUrls", default)]
    media_urls: Option<Value>,
    #[serde(rename = "deliveryReceipt", default)]
    delivery_receipt: Option<Value>,
}

impl Callback {
    fn reference(&self) -> Result<String, ParseError> {
        self.reference_id
            .as_ref()
            .and_then(code_text)
            .ok_or_else(|| ParseError::new("referenceId is missing"))
    }

    /// The called number: `to[0]` (a lone string is read as a list of one).
    fn called(&self) -> Result<Address, ParseError> {
        let first = match &self.to {
            Some(Value::Array(list)) => list.first(),
            Some(single @ (Value::String(_) | Value::Number(_))) => Some(single),
            _ => None,
        };
        number(first.ok_or_else(|| ParseError::new("to is missing"))?, "to")
    }

    fn is_receipt(&self) -> Result<bool, ParseError> {
        match &self.delivery_receipt {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ParseError::new("deliveryReceipt is not a boolean")),
        }
    }

    fn media(&self) -> Result<Vec<Media>, ParseError> {
        let urls = match &self.media_urls {
            None | Some(Value::Null) => return Ok(vec![]),
            Some(Value::Array(list)) => list.iter().collect(),
            Some(single @ Value::String(_)) => vec![single],
            Some(_) => return Err(ParseError::new("mediaUrls is not a list of URLs")),
        };
        urls.into_iter()
            .filter_map(|u| match u {
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(Ok(Media {
                    url: s.trim().to_string(),
                    content_type: None,
                })),
                _ => Some(Err(ParseError::new("mediaUrls is not a list of URLs"))),
            })
            .collect()
    }
}

/// Maps an SMPP-style receipt word to ours; `None` for words we do not know.
fn map_status(word: &str) -> Option<DeliveryStatus> {
    Some(match word.to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => DeliveryStatus::Delivered,
        "ACCEPTD" | "ENROUTE" | "UNKNOWN" => DeliveryStatus::Sent,
        "UNDELIV" | "UNDELIVERED" | "EXPIRED" => DeliveryStatus::Undelivered,
        "REJECTD" | "REJECTED" | "DELETED" | "FAILED" => DeliveryStatus::Failed,
        _ => return None,
    })
}

/// The value of an SMPP receipt field (`stat:DELIVRD`, `err:000`) in a receipt's text.
fn receipt_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|part| {
        let (key, value) = part.split_once(':')?;
        (key.eq_ignore_ascii_case(name) && !value.is_empty()).then_some(value)
    })
}

fn receipt(callback: &Callback) -> Result<Vec<WebhookEvent>, ParseError> {
    let text = callback.text.as_deref().unwrap_or("");
    let (status, raw) = match receipt_field(text, "stat") {
        Some(word) => match map_status(word) {
            Some(status) => (status, word.to_ascii_uppercase()),
            // Words Inteliquent may add later are acknowledged and skipped.
            None => return Ok(vec![]),
        },
        // A receipt without a status word reports the message delivered.
        None => (DeliveryStatus::Delivered, "DELIVRD".to_string()),
    };
    let error_code = receipt_field(text, "err")
        .filter(|_| status.is_failure())
        .map(|c| c.chars().take(MAX_ECHO).collect());
    Ok(vec![WebhookEvent::Status(StatusUpdate {
        provider: ProviderKind::Inteliquent,
        provider_message_id: callback.reference()?,
        status,
        error_message: status.is_failure().then(|| raw.clone()),
        error_code,
        raw_status: raw,
        tenant_number: Some(callback.called()?),
        at: Utc::now(),
    })])
}

fn inbound(callback: &Callback) -> Result<Vec<WebhookEvent>, ParseError> {
    let media = callback.media()?;
    let from = number(
        callback
            .from
            .as_ref()
            .ok_or_else(|| ParseError::new("from is missing"))?,
        "from",
    )?;
    Ok(vec![WebhookEvent::Message(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Inteliquent,
        provider_message_id: callback.reference()?,
        channel: if media.is_empty() {
            Channel::Sms
        } else {
            Channel::Mms
        },
        from,
        to: callback.called()?,
        body: callback.text.clone().filter(|t| !t.is_empty()),
        media,
        profile_name: None,
        received_at: Utc::now(),
        auto_submitted: false,
    })])
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let callback: Callback = serde_json::from_slice(&request.body)
        .map_err(|_| ParseError::new("the body is not an Inteliquent message"))?;
    if callback.is_receipt()? {
        receipt(&callback)
    } else {
        inbound(&callback)
    }
}

/// The `publishMessages` body: one recipient, and every attachment of the message.
fn publish_body(message: &OutboundMessage) -> Result<Value, SendError> {
    if message.body.is_none() && message.media.is_empty() {
        return Err(SendError::permanent(
            None,
            "a message needs a body or media",
        ));
    }
    let (from, to) = phones("Inteliquent", message)?;
    let mut body = json!({"from": from.digits(), "to": [to.digits()]});
    if let Some(text) = &message.body {
        body["text"] = text.as_str().into();
    }
    if !message.media.is_empty() {
        body["mediaUrls"] = message.media.iter().map(|m| m.url.as_str()).collect();
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Published {
    success: Option<bool>,
    reason: Option<String>,
    detail: Option<String>,
    result: Option<PublishResult>,
}

#[derive(Deserialize)]
struct PublishResult {
    #[serde(rename = "referenceId")]
    reference_id: Option<String>,
    #[serde(rename = "resultResponses", default)]
    result_responses: Vec<RecipientResult>,
}

#[derive(Deserialize)]
struct RecipientResult {
    status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "statusCode")]
    status_code: Option<Value>,
    status: Option<String>,
    reason: Option<String>,
    detail: Option<String>,
}

fn echo(text: &str) -> String {
    text.chars().take(MAX_ECHO).collect()
}

/// Reads a 2xx answer: the reference id, or why Inteliquent refused the message.
fn accepted(bytes: &[u8]) -> Result<SendResult, SendError> {
    let answer: Published = serde_json::from_slice(bytes)
        .map_err(|_| SendError::transient("Inteliquent answered with an unreadable body", None))?;
    let refused = |code: Option<&str>, text: Option<&str>| SendError::Permanent {
        code: code.map(echo),
        message: text.map_or_else(|| "Inteliquent refused the message".into(), echo),
    };
    if answer.success == Some(false) {
        return Err(refused(
            answer.reason.as_deref(),
            answer.detail.as_deref().or(answer.reason.as_deref()),
        ));
    }
    let result = answer
        .result
        .ok_or_else(|| SendError::transient("Inteliquent answered without a referenceId", None))?;
    // One recipient per send: its own status is the message's.
    if let Some(status) = result
        .result_responses
        .first()
        .and_then(|r| r.status.as_deref())
        .filter(|s| !s.eq_ignore_ascii_case("SUCCESS"))
    {
        return Err(refused(Some(status), Some(status)));
    }
    let reference = result
        .reference_id
        .filter(|r| !r.is_empty())
        .ok_or_else(|| SendError::transient("Inteliquent answered without a referenceId", None))?;
    Ok(SendResult {
        provider: ProviderKind::Inteliquent,
        provider_message_id: reference,
        status: DeliveryStatus::Queued,
        raw_status: "SUCCESS".into(),
    })
}

#[async_trait]
impl MessagingProviderAdapter for InteliquentAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Inteliquent
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Inteliquent(creds) = credentials else {
            return Err(SendError::permanent(
                None,
                "credentials are not Inteliquent's",
            ));
        };
        carries("Inteliquent", self.channels(), message)?;
        let body = publish_body(message)?;
        let response = self
            .http
            .post(format!("{}/publishMessages", self.base_url))
            .bearer_auth(creds.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            return accepted(&bytes);
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        if status == reqwest::StatusCode::REQUEST_TIMEOUT
            && error.as_ref().is_none_or(|e| e.status.is_none())
        {
            // Not Inteliquent's "user error" body: a timeout somewhere on the way.
            return Err(SendError::transient(
                "Inteliquent timed out (HTTP 408)",
                wait,
            ));
        }
        let code = error.as_ref().and_then(|e| {
            e.status_code
                .as_ref()
                .and_then(code_text)
                .or_else(|| e.reason.clone())
        });
        let text = error
            .and_then(|e| e.status.or(e.detail).or(e.reason))
            .map(|t| echo(&t))
            .unwrap_or_else(|| format!("Inteliquent answered HTTP {}", status.as_u16()));
        Err(named_failure(status, code.map(|c| echo(&c)), text, wait))
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

/// Inteliquent Message Broker credentials: the API key sends, the key configured on the
/// inbound webhook authenticates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteliquentCredentials {
    /// A message broker API key from the portal, sent as a Bearer token.
    pub api_key: Secret,
    /// The `apiKey` given to `configureAuthorization` for our webhook: the key of each
    /// callback's `verificationToken`.
    pub webhook_key: Secret,
}

impl CarrierConfig for InteliquentCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["api_key", "webhook_key"];

    fn validate(&self) -> Result<(), String> {
        require(!self.api_key.expose().is_empty(), "api_key")?;
        strong(&self.webhook_key, "webhook_key")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.api_key.expose(), self.webhook_key.expose()]
    }

    fn example() -> Self {
        InteliquentCredentials {
            api_key: Secret::new("iq-api-key-secret"),
            webhook_key: Secret::new("iq-webhook-key-secret"),
        }
    }
}

/// The Omni declaration of Inteliquent.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Inteliquent,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_INTELIQUENT_API_URL",
        default: "https://messagebroker.inteliquent.com/msgbroker/rest",
        help: "Inteliquent Message Broker base URL (`/publishMessages` is appended).",
    }),
    webhooks: &[WebhookRoute::post("/webhooks/inteliquent", Receives::Both)],
    adapter: |http, base_url| Arc::new(InteliquentAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "JSON POST; `verificationToken` = hex HMAC-SHA256 of a random `messageID` under \
               the webhook key; several --media make one MMS; --secret: the webhook key",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// An inbound message as Inteliquent posts it (numbers as digits without `+`), with the
/// verification token of a random message id under the webhook key.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("Inteliquent")?;
    let (from, to) = message.numbers()?;
    let key = key.secret(|c| InteliquentCredentials::of(c).map(|c| &c.webhook_key))?;
    let id = message.id_or(|| Uuid::new_v4().simple().to_string());
    let mut body = serde_json::json!({"referenceId": id, "from": from.digits(),
        "to": [to.digits()], "text": message.body, "deliveryReceipt": false});
    if !message.media.is_empty() {
        body["mediaUrls"] = message.media.clone().into();
    }
    let message_id = Uuid::new_v4().to_string();
    Ok(vec![message.post(
        "/webhooks/inteliquent",
        "application/json",
        vec![
            (TOKEN_HEADER.into(), verification_token(&key, &message_id)),
            (MESSAGE_ID_HEADER.into(), message_id),
        ],
        body.to_string().into_bytes(),
    )])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/inteliquent": {"post": {"summary": "Inteliquent Message Broker inbound messages (SMS, MMS with every attachment in `mediaUrls`) and delivery receipts (`deliveryReceipt: true`, matched by `referenceId`), one webhook; routed by the called number (`to[0]`)", "parameters": [{"name": "messageid", "in": "header", "required": true, "schema": {"type": "string"}, "description": "the random token Inteliquent sends with each request"}, {"name": "verificationtoken", "in": "header", "required": true, "schema": {"type": "string"}, "description": "hex HMAC-SHA256 of `messageid` under the tenant's Inteliquent webhook key (the `apiKey` given to `configureAuthorization`); the hex SHA-256 of key followed by `messageid` is accepted too. Wrong or missing: 401"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::test_support::{e164, fixture, json_post, nanp_outbound, one};
    use crate::providers::{InteliquentCredentials, Secret};
    use proptest::prelude::*;
    use std::time::Duration;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const API_KEY: &str = "iq-api-key-very-secret";
    const WEBHOOK_KEY: &str = "iq-webhook-key";
    const MESSAGE_ID: &str = "9a09df23-01f3-4e0f-adbc-2a783878a574";

    fn creds() -> Credentials {
        Credentials::Inteliquent(InteliquentCredentials {
            api_key: Secret::new(API_KEY),
            webhook_key: Secret::new(WEBHOOK_KEY),
        })
    }

    fn request(body: &[u8], headers: &[(&str, &str)]) -> WebhookRequest {
        json_post(
            "https://hooks.example.com/webhooks/inteliquent",
            body,
            headers,
        )
    }

    fn signed(token: &str) -> WebhookRequest {
        request(
            b"{}",
            &[("messageid", MESSAGE_ID), ("verificationtoken", token)],
        )
    }

    #[test]
    fn token_vectors() {
        // Computed independently: printf '%s' "$MESSAGE_ID" |
        // openssl dgst -sha256 -hmac iq-webhook-key
        assert_eq!(
            verification_token(WEBHOOK_KEY, MESSAGE_ID),
            "5577fab4129fa037990ebc54bbad27b63dd09666ee14e6b585c9b55e6fe2fa39"
        );
        // printf '%s' "iq-webhook-key$MESSAGE_ID" | openssl dgst -sha256
        assert_eq!(
            hex::encode(concatenated_digest(WEBHOOK_KEY, MESSAGE_ID)),
            "933b700401073cd7ff829a668b6b4f4b8be2d0c5cfb3e47d53f886ca2d6c719b"
        );
    }

    #[test]
    fn documented_and_observed_tokens_are_accepted_in_either_case() {
        for token in [
            "5577fab4129fa037990ebc54bbad27b63dd09666ee14e6b585c9b55e6fe2fa39",
            "5577FAB4129FA037990EBC54BBAD27B63DD09666EE14E6B585C9B55E6FE2FA39",
            "933b700401073cd7ff829a668b6b4f4b8be2d0c5cfb3e47d53f886ca2d6c719b",
            " 933b700401073cd7ff829a668b6b4f4b8be2d0c5cfb3e47d53f886ca2d6c719b ",
        ] {
            assert_eq!(verify(&signed(token), &creds()), Ok(()), "{token}");
        }
        // Header names are matched case-insensitively, as Inteliquent writes them.
        let mixed = request(
            b"{}",
            &[
                ("MessageID", MESSAGE_ID),
                (
                    "VerificationToken",
                    &verification_token(WEBHOOK_KEY, MESSAGE_ID),
                ),
            ],
        );
        assert_eq!(verify(&mixed, &creds()), Ok(()));
    }

    #[test]
    fn wrong_missing_and_foreign_tokens_are_refused() {
        let other_key = verification_token("another-key", MESSAGE_ID);
        let other_id = verification_token(WEBHOOK_KEY, "another-id");
        for bad in [other_key.as_str(), other_id.as_str(), "not hex", "", "00"] {
            assert_eq!(
                verify(&signed(bad), &creds()),
                Err(VerifyError::Mismatch),
                "{bad}"
            );
        }
        let token = verification_token(WEBHOOK_KEY, MESSAGE_ID);
        assert_eq!(
            verify(&request(b"{}", &[("verificationtoken", &token)]), &creds()),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(
                &request(b"{}", &[("messageid", ""), ("verificationtoken", &token)]),
                &creds()
            ),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(&request(b"{}", &[("messageid", MESSAGE_ID)]), &creds()),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(&signed(&token), &Credentials::Simulator),
            Err(VerifyError::WrongCredentials)
        );
    }

    #[test]
    fn inbound_sms_fixture() {
        let WebhookEvent::Message(m) =
            one(normalize(&request(&fixture("inteliquent_inbound_sms.json"), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Inteliquent);
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(m.provider_message_id, "AccO09773Fd7Gdec0001");
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(m.body.as_deref(), Some("Smoke on 5th street"));
        assert!(m.media.is_empty());
    }

    #[test]
    fn inbound_mms_keeps_every_attachment_and_routes_by_the_first_called_number() {
        let WebhookEvent::Message(m) =
            one(normalize(&request(&fixture("inteliquent_inbound_mms.json"), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(m.body.as_deref(), Some("Photos of the roof"));
        // A JSON number and 10 national digits are both read.
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        let urls: Vec<_> = m.media.iter().map(|m| m.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://mms.example.inteliquent.com/media/roof-1.jpg",
                "https://mms.example.inteliquent.com/media/roof-2.jpg",
                "https://mms.example.inteliquent.com/media/clip.mp4",
            ]
        );
        // Media alone is a message; a lone `to` string and `+E.164` are read too.
        let body = json!({"referenceId": "r1", "from": "+15555550123", "to": "15555550100",
            "mediaUrls": ["https://m.example/a.png", ""]});
        let WebhookEvent::Message(m) =
            one(normalize(&request(body.to_string().as_bytes(), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!((m.body, m.media.len()), (None, 1));
    }

    #[test]
    fn delivery_receipt_fixture() {
        let WebhookEvent::Status(s) =
            one(normalize(&request(&fixture("inteliquent_delivery_receipt.json"), &[])).unwrap())
        else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::Inteliquent);
        assert_eq!(
            s.provider_message_id,
            "d88231b5-13b3-4fb2-8528-bc7164309389"
        );
        assert_eq!(s.status, DeliveryStatus::Undelivered);
        assert_eq!(s.raw_status, "UNDELIV");
        assert_eq!(s.error_code.as_deref(), Some("034"));
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
    }

    fn receipt_with(text: Option<&str>, flag: Value) -> Vec<WebhookEvent> {
        let mut body = json!({"referenceId": "r9", "from": "15555550123",
            "to": ["15555550100"], "deliveryReceipt": flag});
        if let Some(text) = text {
            body["text"] = text.into();
        }
        normalize(&request(body.to_string().as_bytes(), &[])).unwrap()
    }

    #[test]
    fn receipt_words_map_to_our_statuses() {
        for (text, expected, raw) in [
            (None, DeliveryStatus::Delivered, "DELIVRD"),
            (
                Some("Delivered to handset"),
                DeliveryStatus::Delivered,
                "DELIVRD",
            ),
            (
                Some("stat:DELIVRD err:000"),
                DeliveryStatus::Delivered,
                "DELIVRD",
            ),
            (Some("stat:enroute"), DeliveryStatus::Sent, "ENROUTE"),
            (Some("stat:ACCEPTD"), DeliveryStatus::Sent, "ACCEPTD"),
            (
                Some("stat:EXPIRED err:001"),
                DeliveryStatus::Undelivered,
                "EXPIRED",
            ),
            (
                Some("stat:REJECTD err:069"),
                DeliveryStatus::Failed,
                "REJECTD",
            ),
        ] {
            let WebhookEvent::Status(s) = one(receipt_with(text, json!(true))) else {
                panic!("not a status");
            };
            assert_eq!(
                (s.status, s.raw_status.as_str()),
                (expected, raw),
                "{text:?}"
            );
            // Error codes only on failures.
            assert_eq!(s.error_code.is_some(), expected.is_failure(), "{text:?}");
        }
        // The flag may come as a string.
        assert!(matches!(
            one(receipt_with(None, json!("true"))),
            WebhookEvent::Status(_)
        ));
        assert!(matches!(
            one(receipt_with(Some("hi"), json!("false"))),
            WebhookEvent::Message(_)
        ));
        // Words we do not know are acknowledged and skipped.
        assert_eq!(receipt_with(Some("stat:TELEPORTED"), json!(true)), vec![]);
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        for bad in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"from":"15555550123","to":["15555550100"],"text":"no reference"}"#,
            br#"{"referenceId":"r","to":["15555550100"],"text":"no from"}"#,
            br#"{"referenceId":"r","from":"15555550123","text":"no to"}"#,
            br#"{"referenceId":"r","from":"15555550123","to":[],"text":"empty to"}"#,
            br#"{"referenceId":"r","from":"12","to":["15555550100"],"text":"bad from"}"#,
            br#"{"referenceId":"r","from":"15555550123","to":["abc"],"text":"bad to"}"#,
            br#"{"referenceId":"r","from":-1,"to":["15555550100"]}"#,
            br#"{"referenceId":"r","from":"15555550123","to":["15555550100"],"mediaUrls":{"a":1}}"#,
            br#"{"referenceId":"r","from":"15555550123","to":["15555550100"],"mediaUrls":[1]}"#,
            br#"{"referenceId":"r","from":"15555550123","to":["15555550100"],"deliveryReceipt":1}"#,
            br#"{"referenceId":{"a":1},"from":"15555550123","to":["15555550100"]}"#,
            br#"{"referenceId":"r","to":[true],"deliveryReceipt":true}"#,
        ] {
            assert!(
                normalize(&request(bad, &[])).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    async fn server() -> (MockServer, InteliquentAdapter) {
        let server = MockServer::start().await;
        let adapter =
            InteliquentAdapter::new(reqwest::Client::new(), &format!("{}/", server.uri()));
        (server, adapter)
    }

    fn published(reference: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "reason": "SUCCESS", "detail": "SUCCESS",
            "result": {"referenceId": reference, "from": "15555550100", "text": "x",
                "messageType": "SMS",
                "resultResponses": [{"to": "15555550123", "status": "SUCCESS"}]}}))
    }

    #[tokio::test]
    async fn sends_sms_with_bearer_key_and_bare_digits() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/publishMessages"))
            .and(header(
                "authorization",
                format!("Bearer {API_KEY}").as_str(),
            ))
            .and(header("content-type", "application/json"))
            .and(body_json(
                json!({"from": "15555550100", "to": ["15555550123"],
                "text": "Units are on the way"}),
            ))
            .respond_with(published("d88231b5-13b3-4fb2-8528-bc7164309389"))
            .expect(1)
            .mount(&server)
            .await;
        let result = adapter
            .send(&creds(), &nanp_outbound("Units are on the way", &[]))
            .await
            .unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Inteliquent,
                provider_message_id: "d88231b5-13b3-4fb2-8528-bc7164309389".into(),
                status: DeliveryStatus::Queued,
                raw_status: "SUCCESS".into(),
            }
        );
    }

    #[tokio::test]
    async fn sends_every_attachment_in_one_mms() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/publishMessages"))
            .and(body_json(
                json!({"from": "15555550100", "to": ["15555550123"],
                "text": "Scene photos",
                "mediaUrls": ["https://cdn.example.org/a.jpg", "https://cdn.example.org/b.png",
                    "https://cdn.example.org/c.mp4"]}),
            ))
            .respond_with(published("ref-mms"))
            .expect(1)
            .mount(&server)
            .await;
        let mms = nanp_outbound(
            "Scene photos",
            &[
                "https://cdn.example.org/a.jpg",
                "https://cdn.example.org/b.png",
                "https://cdn.example.org/c.mp4",
            ],
        );
        let sent = adapter.send(&creds(), &mms).await.unwrap();
        assert_eq!(sent.provider_message_id, "ref-mms");
        // Media without text goes without `text`.
        let mut bare = nanp_outbound("", &["https://cdn.example.org/a.jpg"]);
        bare.body = None;
        assert_eq!(
            publish_body(&bare).unwrap(),
            json!({"from": "15555550100", "to": ["15555550123"],
                "mediaUrls": ["https://cdn.example.org/a.jpg"]})
        );
    }

    #[tokio::test]
    async fn refuses_what_inteliquent_cannot_carry() {
        let (_server, adapter) = server().await;
        let mut empty = nanp_outbound("", &[]);
        empty.body = None;
        let mut whatsapp = nanp_outbound("hi", &[]);
        whatsapp.channel = Channel::Whatsapp;
        for refused in [empty, whatsapp] {
            assert!(!adapter
                .send(&creds(), &refused)
                .await
                .unwrap_err()
                .is_transient());
        }
        assert!(!adapter
            .send(&Credentials::Simulator, &nanp_outbound("hi", &[]))
            .await
            .unwrap_err()
            .is_transient());
    }

    async fn failing(response: ResponseTemplate) -> SendError {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/publishMessages"))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter
            .send(&creds(), &nanp_outbound("hi", &[]))
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains(API_KEY), "{err}");
        err
    }

    #[tokio::test]
    async fn errors_are_classified_with_the_carriers_text() {
        // The documented user error.
        let err = failing(ResponseTemplate::new(408).set_body_json(
            json!({"statusCode": "408", "status": "From number is not assigned to your account"}),
        ))
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("408".into()),
                message: "From number is not assigned to your account".into(),
            }
        );
        // A bare 408 is a timeout on the way: retried.
        assert!(failing(ResponseTemplate::new(408)).await.is_transient());
        let err = failing(ResponseTemplate::new(401).set_body_json(
            json!({"success": false, "reason": "UNAUTHORIZED", "detail": "Invalid API key"}),
        ))
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("UNAUTHORIZED".into()),
                message: "Invalid API key".into(),
            }
        );
        assert!(!failing(ResponseTemplate::new(400)).await.is_transient());
        assert!(failing(ResponseTemplate::new(503)).await.is_transient());
        let err = failing(ResponseTemplate::new(429).insert_header("retry-after", "7")).await;
        assert!(matches!(
            err,
            SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        // 200 answers that refuse: the broker's reason, or the recipient's status.
        let err = failing(
            ResponseTemplate::new(200).set_body_json(json!({"success": false,
            "reason": "INVALID_TN", "detail": "Invalid destination number"})),
        )
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("INVALID_TN".into()),
                message: "Invalid destination number".into(),
            }
        );
        let err = failing(
            ResponseTemplate::new(200).set_body_json(json!({"success": true,
            "result": {"referenceId": "r", "resultResponses": [{"to": "15555550123",
            "status": "OPTED_OUT"}]}})),
        )
        .await;
        assert!(
            matches!(&err, SendError::Permanent { code: Some(c), .. } if c == "OPTED_OUT"),
            "{err:?}"
        );
        // Unreadable or id-less answers: the message may or may not have gone; retried.
        for body in [
            "<html>maintenance</html>",
            "{}",
            r#"{"success":true,"result":{}}"#,
        ] {
            assert!(
                failing(ResponseTemplate::new(200).set_body_string(body))
                    .await
                    .is_transient(),
                "{body}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..512),
            id in ".{0,40}",
            token in ".{0,70}",
        ) {
            let r = request(&body, &[("messageid", &id), ("verificationtoken", &token)]);
            let _ = verify(&r, &creds());
            let _ = normalize(&r);
        }

        #[test]
        fn arbitrary_callbacks_never_panic(
            number in ".{0,20}",
            text in ".{0,60}",
            receipt in any::<bool>(),
        ) {
            let callback = json!({"referenceId": text, "from": number, "to": [number, text],
                "text": text, "mediaUrls": [text], "deliveryReceipt": receipt});
            let _ = normalize(&request(callback.to_string().as_bytes(), &[]));
        }
    }

    #[test]
    fn inteliquent_admin_json_is_validated_and_redacted() {
        let ok = serde_json::json!({"api_key": "iq-api-very-secret",
            "webhook_key": "iq-webhook-very-secret"});
        let creds = Credentials::from_admin_json(ProviderKind::Inteliquent, ok.clone()).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Inteliquent);
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in ["iq-api-very-secret", "iq-webhook-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(creds.redacted()["provider"], "inteliquent");
        assert_eq!(
            creds.secrets(),
            vec!["iq-api-very-secret", "iq-webhook-very-secret"]
        );
        for (field, bad) in [("api_key", ""), ("webhook_key", "short")] {
            let mut body = ok.clone();
            body[field] = bad.into();
            assert!(
                Credentials::from_admin_json(ProviderKind::Inteliquent, body).is_err(),
                "{field}"
            );
        }
    }
}
