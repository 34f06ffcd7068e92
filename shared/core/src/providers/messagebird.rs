//! MessageBird's legacy REST API (`rest.messagebird.com`): SMS and MMS out, status reports
//! and forwarded inbound SMS in. Bird's newer Channels API is [`super::bird`].
//!
//! Wire facts relied on, and where they come from:
//!
//! - The dossier (§9, first bullet) and MessageBird's official Python SDK
//!   (`messagebird/python-rest-api`, `messagebird/client.py`, `http_client.py`, `mms.py`,
//!   `tests/test_mms.py`): requests carry `Authorization: AccessKey <key>` and a JSON body;
//!   an SMS is `POST /messages` `{originator, recipients, body, reference, reportUrl}`, an
//!   MMS `POST /mms` `{originator, recipients, body, mediaUrls: [..], subject, reference}`;
//!   `recipients` is a comma-separated string of numbers in E.164 (the SDK's own test sends
//!   `"+4915238456487"`); the answer is the message object (`id`, `href`,
//!   `recipients.items[] {recipient, status, statusDatetime}`); errors are
//!   `{"errors": [{code, description, parameter}]}`.
//! - Signed requests: the official `RequestValidator` (`messagebird/request_validator.py`
//!   and its test vectors `tests/test_request_validator/webhook_signature_test_data.json`).
//!   The `MessageBird-Signature-JWT` header is a JWT signed HS256, HS384 or HS512 with the
//!   account's *signing key* (its UTF-8 bytes, not the access key); `iss` must be
//!   `MessageBird`, `nbf` and `exp` are required and checked with one second of leeway,
//!   `url_hash` is the hex SHA-256 of the full raw URL called (scheme, host, port, path and
//!   query exactly as sent: reordered parameters do not match), and `payload_hash` is the hex
//!   SHA-256 of the raw body, present if and only if the body is not empty. `jti` is a unique
//!   id the validator leaves unchecked; so do we (a replay inside the one-minute token life
//!   is a redelivery, which deduplication makes harmless). The deprecated
//!   `MessageBird-Signature` / `MessageBird-Request-Timestamp` HMAC scheme is not accepted:
//!   a request without the JWT header is refused.
//! - The status list `scheduled|sent|buffered|delivered|expired|delivery_failed` (dossier).
//!
//! Unconfirmed, and handled defensively:
//! - Status reports: MessageBird calls the message's `reportUrl` with `id`, `reference`
//!   (Omni's message id), `recipient`, `status`, `statusDatetime` and, on failures,
//!   `statusReason` / `statusErrorCode`, as GET query parameters; a POST with the same fields
//!   as a form or a JSON object is read too. The reports name no originator, so the
//!   `reportUrl` Omni gives carries the tenant's number in our own `omni_from` query
//!   parameter; MessageBird is assumed to append its parameters to that query (`&…`), which
//!   the signed `url_hash` covers either way. A report with an `originator` field routes by
//!   it when `omni_from` is absent (an account-level report URL). Reports are matched to our
//!   message by `id`, the id the send answered, as every carrier's are; `reference` is only
//!   informational.
//! - The MMS API's parameter list has no `reportUrl`, so none is sent with an MMS: its
//!   reports come only to an account-level report URL, routed by `originator` if they name it.
//! - Inbound SMS forwarded to `/webhooks/messagebird`: `id`, `originator` (the contact),
//!   `recipient` (the tenant's number, which routes it), `body` (older accounts: `message`),
//!   `createdDatetime`, and for an inbound MMS `mediaUrls`; read from the query of a GET or a
//!   form / JSON POST body. Numbers come as MSISDNs without `+` (`31612345678`) or in E.164.
//! - Numbers are sent in E.164 with `+` (`originator` and `recipients`), as the SDK does.

use async_trait::async_trait;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

/// The header carrying the signed JWT.
pub const SIGNATURE_HEADER: &str = "messagebird-signature-jwt";
/// The query parameter of our `reportUrl` naming the tenant's number (reports lack one).
pub const FROM_PARAM: &str = "omni_from";
/// The only issuer MessageBird's tokens name.
const ISSUER: &str = "MessageBird";
/// Clock leeway on `nbf` / `exp`, in seconds: the official validator's.
const LEEWAY: i64 = 1;
/// How long the tokens [`signature_jwt`] makes are valid (MessageBird's are valid a minute).
const TOKEN_LIFE: i64 = 60;
/// Carrier strings echoed into errors are cut to this length (they are untrusted input).
const MAX_ECHO: usize = 120;

/// MessageBird legacy REST API adapter.
#[derive(Clone)]
pub struct MessageBirdAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl MessageBirdAdapter {
    /// An adapter calling the REST API at `base_url` (`https://rest.messagebird.com`;
    /// `/messages` and `/mms` are appended).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        MessageBirdAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// Lower-case hex SHA-256, the form of both hash claims.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: Option<String>,
    nbf: Option<i64>,
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    url_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hash: Option<String>,
}

/// The `MessageBird-Signature-JWT` MessageBird would send calling `url` with `body` at `now`
/// (Unix seconds): HS256 under the signing key, valid for a minute. For tests, the events
/// samples and `omni webhook send`.
pub fn signature_jwt(signing_key: &str, url: &str, body: &[u8], now: i64) -> String {
    let claims = Claims {
        iss: Some(ISSUER.into()),
        nbf: Some(now),
        exp: Some(now + TOKEN_LIFE),
        jti: Some(Uuid::new_v4().to_string()),
        url_hash: Some(sha256_hex(url.as_bytes())),
        payload_hash: (!body.is_empty()).then(|| sha256_hex(body)),
    };
    let key = EncodingKey::from_secret(signing_key.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .expect("HMAC signing of serializable claims cannot fail")
}

/// Whether a hash claim is the hex SHA-256 we computed, compared in constant time.
fn hash_matches(claim: &str, expected: &str) -> bool {
    ct_eq(claim.to_ascii_lowercase().as_bytes(), expected.as_bytes())
}

/// Checks a request's `MessageBird-Signature-JWT` against the tenant's signing key as of
/// `now` (Unix seconds), as the official `RequestValidator` does.
pub fn verify_at(
    request: &WebhookRequest,
    credentials: &Credentials,
    now: i64,
) -> Result<(), VerifyError> {
    let Credentials::MessageBird(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let token = request
        .header(SIGNATURE_HEADER)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(VerifyError::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    // The time claims are checked below against `now`, so tests can replay official vectors.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    // The HMAC comparison inside is constant-time (RustCrypto's `verify_slice`).
    let key = DecodingKey::from_secret(creds.signing_key.expose().as_bytes());
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|_| VerifyError::Mismatch)?
        .claims;
    if claims.iss.as_deref() != Some(ISSUER) {
        return Err(VerifyError::Mismatch);
    }
    let (Some(nbf), Some(exp)) = (claims.nbf, claims.exp) else {
        return Err(VerifyError::Mismatch);
    };
    // PyJWT's rules, which the official validator uses: expired once `exp <= now - leeway`.
    if nbf > now.saturating_add(LEEWAY) || exp <= now.saturating_sub(LEEWAY) {
        return Err(VerifyError::Stale);
    }
    let url_hash = claims.url_hash.ok_or(VerifyError::Mismatch)?;
    if !hash_matches(&url_hash, &sha256_hex(request.url.as_bytes())) {
        return Err(VerifyError::Mismatch);
    }
    match (request.body.is_empty(), claims.payload_hash) {
        (true, None) => Ok(()),
        (false, Some(hash)) if hash_matches(&hash, &sha256_hex(&request.body)) => Ok(()),
        _ => Err(VerifyError::Mismatch),
    }
}

/// A request's fields: the URL's query, then the body's (a form, or a JSON object whose
/// scalars and lists of scalars are read; nested objects are not MessageBird's fields).
fn fields(request: &WebhookRequest) -> Result<Vec<(String, String)>, ParseError> {
    let mut all: Vec<(String, String)> = url::form_urlencoded::parse(request.query().as_bytes())
        .into_owned()
        .collect();
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(all);
    }
    if request.is_form() {
        all.extend(url::form_urlencoded::parse(&request.body).into_owned());
        return Ok(all);
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&request.body) else {
        return Err(ParseError::new(
            "the body is neither a form nor a JSON object",
        ));
    };
    for (key, value) in object {
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for item in items {
            let text = match item {
                Value::String(s) => s,
                Value::Number(_) | Value::Bool(_) => item.to_string(),
                _ => continue,
            };
            all.push((key.clone(), text));
        }
    }
    Ok(all)
}

/// The first non-empty value of any of `names`.
fn field<'a>(fields: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|name| {
        fields
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    })
}

/// A number as MessageBird writes it: an MSISDN (digits with the country code, no `+`) or
/// E.164.
fn number(raw: Option<&str>, what: &str) -> Result<Address, ParseError> {
    let raw = raw.ok_or_else(|| ParseError::new(format!("{what} is missing")))?;
    let international = if raw.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{raw}")
    } else {
        raw.to_string()
    };
    E164::from_carrier(&international)
        .map(Address::Phone)
        .map_err(|_| ParseError::new(format!("{what} is not a valid phone number")))
}

/// Maps a MessageBird recipient status to ours; `None` for words we do not know.
fn map_status(word: &str) -> Option<DeliveryStatus> {
    Some(match word {
        "scheduled" => DeliveryStatus::Queued,
        // `buffered`: the operator holds it (handset off); still on its way.
        "sent" | "buffered" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "expired" | "delivery_failed" => DeliveryStatus::Undelivered,
        _ => return None,
    })
}

fn echo(text: &str) -> String {
    text.chars().take(MAX_ECHO).collect()
}

fn status_report(fields: &[(String, String)]) -> Result<Vec<WebhookEvent>, ParseError> {
    let id = field(fields, &["id"]).ok_or_else(|| ParseError::new("id is missing"))?;
    let word = field(fields, &["status"]).ok_or_else(|| ParseError::new("status is missing"))?;
    let tenant = number(field(fields, &[FROM_PARAM, "originator"]), FROM_PARAM)?;
    let Some(status) = map_status(word) else {
        // Words MessageBird may add later are acknowledged and skipped.
        return Ok(vec![]);
    };
    let failed = status.is_failure();
    let reason = field(fields, &["statusReason"]).map(echo);
    Ok(vec![WebhookEvent::Status(StatusUpdate {
        provider: ProviderKind::MessageBird,
        provider_message_id: id.to_string(),
        status,
        raw_status: word.to_string(),
        error_code: field(fields, &["statusErrorCode"])
            .filter(|_| failed)
            .map(echo),
        error_message: failed.then(|| reason.unwrap_or_else(|| word.to_string())),
        tenant_number: Some(tenant),
        at: Utc::now(),
    })])
}

fn inbound(fields: &[(String, String)]) -> Result<Vec<WebhookEvent>, ParseError> {
    let id = field(fields, &["id"]).ok_or_else(|| ParseError::new("id is missing"))?;
    let media: Vec<Media> = fields
        .iter()
        .filter(|(k, v)| (k == "mediaUrls" || k == "mediaUrls[]") && !v.trim().is_empty())
        .map(|(_, url)| Media {
            url: url.trim().to_string(),
            content_type: None,
        })
        .collect();
    Ok(vec![WebhookEvent::Message(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::MessageBird,
        provider_message_id: id.to_string(),
        channel: if media.is_empty() {
            Channel::Sms
        } else {
            Channel::Mms
        },
        from: number(field(fields, &["originator"]), "originator")?,
        to: number(field(fields, &["recipient"]), "recipient")?,
        body: fields
            .iter()
            .find(|(k, v)| (k == "body" || k == "message") && !v.is_empty())
            .map(|(_, v)| v.clone()),
        media,
        profile_name: None,
        received_at: Utc::now(),
        auto_submitted: false,
    })])
}

/// A status report when the path is our `reportUrl`'s, otherwise a forwarded message.
fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let fields = fields(request)?;
    let path = request.url.split(['?', '#']).next().unwrap_or("");
    if path.trim_end_matches('/').ends_with("/status") {
        status_report(&fields)
    } else {
        inbound(&fields)
    }
}

/// The `reportUrl` of an SMS: the status callback, naming the tenant's number.
fn report_url(callback: &str, from: &E164) -> String {
    let separator = if callback.contains('?') { '&' } else { '?' };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(FROM_PARAM, from.as_str())
        .finish();
    format!("{callback}{separator}{query}")
}

/// The path and JSON body of a send: `/messages` for text, `/mms` once there is media.
fn request_body(message: &OutboundMessage) -> Result<(&'static str, Value), SendError> {
    let (from, to) = phones("MessageBird", message)?;
    let mut body = json!({"originator": from.as_str(), "recipients": to.as_str(),
        "reference": message.id.to_string()});
    if message.media.is_empty() {
        let text = message
            .body
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SendError::permanent(None, "a message needs a body or media"))?;
        body["body"] = text.into();
        if let Some(callback) = &message.status_callback {
            body["reportUrl"] = report_url(callback, from).into();
        }
        return Ok(("/messages", body));
    }
    if let Some(text) = message.body.as_deref().filter(|t| !t.is_empty()) {
        body["body"] = text.into();
    }
    if let Some(subject) = message.subject.as_deref().filter(|s| !s.is_empty()) {
        body["subject"] = subject.into();
    }
    body["mediaUrls"] = message.media.iter().map(|m| m.url.as_str()).collect();
    Ok(("/mms", body))
}

#[derive(Deserialize)]
struct Created {
    id: Option<String>,
    recipients: Option<Recipients>,
}

#[derive(Deserialize)]
struct Recipients {
    #[serde(default)]
    items: Vec<RecipientItem>,
}

#[derive(Deserialize)]
struct RecipientItem {
    status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    code: Option<Value>,
    description: Option<String>,
}

/// Reads a 2xx answer: the message's id and its recipient's first status.
fn accepted(bytes: &[u8]) -> Result<SendResult, SendError> {
    let created: Created = serde_json::from_slice(bytes)
        .map_err(|_| SendError::transient("MessageBird answered with an unreadable body", None))?;
    let id = created
        .id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| SendError::transient("MessageBird answered without a message id", None))?;
    let word = created
        .recipients
        .and_then(|r| r.items.into_iter().next())
        .and_then(|item| item.status)
        .filter(|w| map_status(w).is_some());
    Ok(SendResult {
        provider: ProviderKind::MessageBird,
        provider_message_id: id,
        status: word
            .as_deref()
            .and_then(map_status)
            .unwrap_or(DeliveryStatus::Queued),
        raw_status: word.unwrap_or_else(|| "scheduled".into()),
    })
}

#[async_trait]
impl MessagingProviderAdapter for MessageBirdAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::MessageBird
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::MessageBird(creds) = credentials else {
            return Err(SendError::permanent(
                None,
                "credentials are not MessageBird's",
            ));
        };
        carries("MessageBird", self.channels(), message)?;
        let (path, body) = request_body(message)?;
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header(
                reqwest::header::AUTHORIZATION,
                format!("AccessKey {}", creds.access_key.expose()),
            )
            .header(reqwest::header::ACCEPT, "application/json")
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
        let first = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .and_then(|e| e.errors.into_iter().next());
        let code = first
            .as_ref()
            .and_then(|e| e.code.as_ref())
            .and_then(code_text)
            .map(|c| echo(&c));
        let text = first
            .and_then(|e| e.description)
            .map(|d| echo(&d))
            .unwrap_or_else(|| format!("MessageBird answered HTTP {}", status.as_u16()));
        Err(named_failure(status, code, text, wait))
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

/// MessageBird legacy REST API credentials: the access key sends, the account's signing key
/// checks the JWT on every request MessageBird makes to us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBirdCredentials {
    /// Live access key, sent as `Authorization: AccessKey <key>`.
    pub access_key: Secret,
    /// The signing key of the dashboard's developer settings (HS256/384/512 JWT key).
    pub signing_key: Secret,
}

impl CarrierConfig for MessageBirdCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["access_key", "signing_key"];

    fn validate(&self) -> Result<(), String> {
        // It goes into a header value.
        require(
            !self.access_key.expose().is_empty()
                && self
                    .access_key
                    .expose()
                    .bytes()
                    .all(|b| b.is_ascii_graphic()),
            "access_key",
        )?;
        strong(&self.signing_key, "signing_key")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.access_key.expose(), self.signing_key.expose()]
    }

    fn example() -> Self {
        MessageBirdCredentials {
            access_key: Secret::new("mb-access-key-secret"),
            signing_key: Secret::new("mb-signing-key-secret"),
        }
    }
}

/// The Omni declaration of MessageBird.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::MessageBird,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_MESSAGEBIRD_API_URL",
        default: "https://rest.messagebird.com",
        help: "MessageBird legacy REST API base URL (`/messages` and `/mms` are appended).",
    }),
    webhooks: &[
        WebhookRoute::get("/webhooks/messagebird", Receives::Inbound),
        WebhookRoute::post("/webhooks/messagebird", Receives::Inbound),
        WebhookRoute::get("/webhooks/messagebird/status", Receives::Status),
        WebhookRoute::post("/webhooks/messagebird/status", Receives::Status),
    ],
    adapter: |http, base_url| Arc::new(MessageBirdAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "an inbound SMS forwarded as a GET with the fields in the query, \
               `MessageBird-Signature-JWT` signed with the signing key; --media makes it an MMS; \
               --secret: the signing key",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// An inbound SMS (MMS with media) as MessageBird forwards it: a GET with the fields in the
/// query (numbers as MSISDNs, digits without `+`), with a JWT under the signing key.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("MessageBird")?;
    let (from, to) = message.numbers()?;
    let key = key.secret(|c| MessageBirdCredentials::of(c).map(|c| &c.signing_key))?;
    let id = message.id_or(|| Uuid::new_v4().simple().to_string());
    let mut fields = vec![
        ("id", id),
        ("recipient", to.digits().to_string()),
        ("originator", from.digits().to_string()),
        ("body", message.body.clone()),
        ("createdDatetime", Utc::now().to_rfc3339()),
    ];
    fields.extend(message.media.iter().map(|url| ("mediaUrls[]", url.clone())));
    let url = url::Url::parse_with_params(
        &format!("{}/webhooks/messagebird", message.base_url),
        &fields,
    )
    .map_err(|e| format!("bad server URL: {e}"))?
    .to_string();
    let token = signature_jwt(&key, &url, b"", Utc::now().timestamp());
    Ok(vec![WebhookRequest {
        method: "GET".into(),
        url,
        headers: vec![(SIGNATURE_HEADER.into(), token)],
        body: Vec::new(),
    }])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/messagebird": {"get": {"summary": "MessageBird legacy REST API: an inbound SMS (MMS with `mediaUrls`) forwarded to this URL, fields in the query (GET) or a form / JSON body (POST); routed by `recipient`", "parameters": [{"name": "messagebird-signature-jwt", "in": "header", "required": true, "schema": {"type": "string"}, "description": "JWT (HS256, HS384 or HS512) under the tenant's MessageBird signing key: `iss` MessageBird, `nbf`/`exp` (one second of leeway), `url_hash` = hex SHA-256 of the URL called (query included), `payload_hash` = hex SHA-256 of the body, present only with a body. Wrong, expired or missing (the deprecated `MessageBird-Signature` alone): 401"}, {"name": "id", "in": "query", "required": false, "schema": {"type": "string"}, "description": "MessageBird's id of the message (required, here or in a POST body)"}, {"name": "originator", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the contact's number (MSISDN or E.164)"}, {"name": "recipient", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the tenant's number, which routes the message"}, {"name": "body", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the text (older accounts: `message`)"}, {"name": "createdDatetime", "in": "query", "required": false, "schema": {"type": "string"}, "description": "when MessageBird received it"}], "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}, "post": {"summary": "MessageBird legacy REST API: an inbound SMS (MMS with `mediaUrls`) forwarded to this URL, fields in the query (GET) or a form / JSON body (POST); routed by `recipient`", "parameters": [{"name": "messagebird-signature-jwt", "in": "header", "required": true, "schema": {"type": "string"}, "description": "JWT (HS256, HS384 or HS512) under the tenant's MessageBird signing key: `iss` MessageBird, `nbf`/`exp` (one second of leeway), `url_hash` = hex SHA-256 of the URL called (query included), `payload_hash` = hex SHA-256 of the body, present only with a body. Wrong, expired or missing (the deprecated `MessageBird-Signature` alone): 401"}, {"name": "id", "in": "query", "required": false, "schema": {"type": "string"}, "description": "MessageBird's id of the message (required, here or in a POST body)"}, {"name": "originator", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the contact's number (MSISDN or E.164)"}, {"name": "recipient", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the tenant's number, which routes the message"}, {"name": "body", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the text (older accounts: `message`)"}, {"name": "createdDatetime", "in": "query", "required": false, "schema": {"type": "string"}, "description": "when MessageBird received it"}], "requestBody": {"required": false, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}, "application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}},
"/webhooks/messagebird/status": {"get": {"summary": "MessageBird legacy REST API: a status report for a message Omni sent (its `reportUrl`), fields in the query (GET) or a form / JSON body (POST); matched by `id`", "parameters": [{"name": "messagebird-signature-jwt", "in": "header", "required": true, "schema": {"type": "string"}, "description": "JWT (HS256, HS384 or HS512) under the tenant's MessageBird signing key: `iss` MessageBird, `nbf`/`exp` (one second of leeway), `url_hash` = hex SHA-256 of the URL called (query included), `payload_hash` = hex SHA-256 of the body, present only with a body. Wrong, expired or missing (the deprecated `MessageBird-Signature` alone): 401"}, {"name": "omni_from", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the tenant's number, which Omni puts in the `reportUrl` it sends (routes the report; `originator` is read when absent)"}, {"name": "id", "in": "query", "required": false, "schema": {"type": "string"}, "description": "MessageBird's id of our message, as the send answered (required, here or in a POST body)"}, {"name": "reference", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Omni's message id"}, {"name": "recipient", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the contact's number"}, {"name": "status", "in": "query", "required": false, "schema": {"type": "string"}, "description": "scheduled | sent | buffered | delivered | expired | delivery_failed (other words are acknowledged and ignored)"}, {"name": "statusDatetime", "in": "query", "required": false, "schema": {"type": "string"}, "description": "when the status changed"}, {"name": "statusReason", "in": "query", "required": false, "schema": {"type": "string"}, "description": "why, on failures"}, {"name": "statusErrorCode", "in": "query", "required": false, "schema": {"type": "string"}, "description": "MessageBird's error code, on failures"}], "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}, "post": {"summary": "MessageBird legacy REST API: a status report for a message Omni sent (its `reportUrl`), fields in the query (GET) or a form / JSON body (POST); matched by `id`", "parameters": [{"name": "messagebird-signature-jwt", "in": "header", "required": true, "schema": {"type": "string"}, "description": "JWT (HS256, HS384 or HS512) under the tenant's MessageBird signing key: `iss` MessageBird, `nbf`/`exp` (one second of leeway), `url_hash` = hex SHA-256 of the URL called (query included), `payload_hash` = hex SHA-256 of the body, present only with a body. Wrong, expired or missing (the deprecated `MessageBird-Signature` alone): 401"}, {"name": "omni_from", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the tenant's number, which Omni puts in the `reportUrl` it sends (routes the report; `originator` is read when absent)"}, {"name": "id", "in": "query", "required": false, "schema": {"type": "string"}, "description": "MessageBird's id of our message, as the send answered (required, here or in a POST body)"}, {"name": "reference", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Omni's message id"}, {"name": "recipient", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the contact's number"}, {"name": "status", "in": "query", "required": false, "schema": {"type": "string"}, "description": "scheduled | sent | buffered | delivered | expired | delivery_failed (other words are acknowledged and ignored)"}, {"name": "statusDatetime", "in": "query", "required": false, "schema": {"type": "string"}, "description": "when the status changed"}, {"name": "statusReason", "in": "query", "required": false, "schema": {"type": "string"}, "description": "why, on failures"}, {"name": "statusErrorCode", "in": "query", "required": false, "schema": {"type": "string"}, "description": "MessageBird's error code, on failures"}], "requestBody": {"required": false, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}, "application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::test_support::{e164, fixture, json_post, nanp_outbound, one};
    use crate::providers::{MessageBirdCredentials, Secret};
    use proptest::prelude::*;
    use std::time::Duration;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const ACCESS_KEY: &str = "live_mb-access-key-very-secret";
    const SIGNING_KEY: &str = "mb-signing-key";
    const NOW: i64 = 1_764_511_200;
    const INBOUND_URL: &str = "https://hooks.example.com/webhooks/messagebird";

    fn creds(signing_key: &str) -> Credentials {
        Credentials::MessageBird(MessageBirdCredentials {
            access_key: Secret::new(ACCESS_KEY),
            signing_key: Secret::new(signing_key),
        })
    }

    fn get(url: &str, headers: &[(&str, &str)]) -> WebhookRequest {
        WebhookRequest {
            method: "GET".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    /// MessageBird's official test vectors: `messagebird/python-rest-api`,
    /// `tests/test_request_validator/webhook_signature_test_data.json` (all signed with this
    /// secret and checked at 2021-07-05T10:00:00Z). (name, url, payload, token, outcome)
    const OFFICIAL_SECRET: &str =
        "36efdd1aace2e26cd490f0d951138253bef2f7c6d34d18981da781555cc4cebb";
    const OFFICIAL_NOW: i64 = 1_625_479_200;
    type Vector = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Result<(), VerifyError>,
    );
    const OFFICIAL: &[Vector] = &[
        (
            "Valid JWT with URL parameters and payload - POST",
            "https://example.com/path?bar=1&foo=2",
            "Hello, World!",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI5M2U1NTAwNi1hMGU4LTQ1MjYtYTE5MC1mYTVmZjAwZWExMTYiLCJ1cmxfaGFzaCI6IjQxZjA1ZjBkZGQwYTIyYWIyMDlhYzQ2ZjQ3YzQ1NzJkOWNlZmEyNTdlZDc0YjI0MDA0YmFlNzUzZWNlNmMyNjAiLCJwYXlsb2FkX2hhc2giOiJkZmZkNjAyMWJiMmJkNWIwYWY2NzYyOTA4MDllYzNhNTMxOTFkZDgxYzdmNzBhNGIyODY4OGEzNjIxODI5ODZmIn0._H--TOuYFLpeEH39-rg5E3IHVkjHozBcaKVWPRC5m9I",
            Ok(()),
        ),
        (
            "Valid JWT with URL parameters and no payload - GET",
            "https://example.com/path?bar=1&foo=2",
            "",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiJjOTQ2YWY3Ny1lMTgyLTRlYWEtYjJmZi0xYTU0NWI1ZTk5MWEiLCJ1cmxfaGFzaCI6IjQxZjA1ZjBkZGQwYTIyYWIyMDlhYzQ2ZjQ3YzQ1NzJkOWNlZmEyNTdlZDc0YjI0MDA0YmFlNzUzZWNlNmMyNjAifQ.huo2ou6JDoDc7sV25d75UMWeYhBeavQlLsqIibSZuac",
            Ok(()),
        ),
        (
            "Special characters in URL - GET",
            "https://example.com/?obj%5Bfield1%5D=val1&obj%5Bfield2%5D=val2&param=value+with+spaces",
            "",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI1OWEyNDRkYy1lOWFkLTRlMjMtOTc3OC0zNzFmYWEyMzhmNzIiLCJ1cmxfaGFzaCI6IjhhZmYzNzQ4ZDc4OWM0MzMzNTczZTFjMzFmZTViMDA0OTQwY2I1ZmM0NzQ2MGVkM2QwZTY1NGY3ZmM0ZTVmYWUifQ.mJBCMfEjKmN3IMuzqPXPHktWETrcu0iNdF3agE8PDyI",
            Ok(()),
        ),
        (
            "HS384 alg - GET",
            "https://example.com/",
            "",
            "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI1OWEyNDRkYy1lOWFkLTRlMjMtOTc3OC0zNzFmYWEyMzhmNzIiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDcifQ.KNMW-29X77lZeuPmThmHWc_RUAvTkaDkpxIZK6mqE08v8mWKiU9Edh4QXwAJO2nv",
            Ok(()),
        ),
        (
            "HS512 alg - GET",
            "https://example.com/",
            "",
            "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI1OWEyNDRkYy1lOWFkLTRlMjMtOTc3OC0zNzFmYWEyMzhmNzIiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDcifQ.rd6r0iMyNGnVPCwurETphE3Y8rpAyvvnUK0S8WvGUkt2E1QSRAZ7NZJZBHw1Y_Wb5W-sK9HJr_PRL2vz4jRT3Q",
            Ok(()),
        ),
        (
            "Token received before it was issued - GET",
            "https://example.com/",
            "",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ4MjgwMCwiZXhwIjoxNjI1NDgyODYwLCJqdGkiOiJmOWY4YzM4Mi0yNDQ5LTQzMTEtYjcyYi0xZGY3MTY4NzkzMWUiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDcifQ.ZELgDFNGhjZH9CffQKcq3sytBe2I0KciLxpBhcfstHQ",
            Err(VerifyError::Stale),
        ),
        (
            "Token received after it was expired - GET",
            "https://example.com/",
            "",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3NTYwMCwiZXhwIjoxNjI1NDc1NjYwLCJqdGkiOiI1ZjAyZjUyMi02MDMwLTQ2YzgtYjVhMy0wMTI0NjQ3OGQ4YmMiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDcifQ.45MSST3B_2PsjNUeiuW54_vUQgVw4rBXrdWrOUEz3lM",
            Err(VerifyError::Stale),
        ),
        (
            "Token received on different URL (parameters were sorted out of order) - GET",
            "https://example.com/path?foo=1&bar=2",
            "",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiJhNzVjOTA5Ni1lODIzLTQ0MmItODVmMi03ZDNjOWQ5YjcyNmIiLCJ1cmxfaGFzaCI6IjZhMDIyZDgzNGMxODMzMGJhYWQ4YTJiZDYxMzUxNzNlZDIxNjEwYTQ1NDUxNmJlMGRmM2YxY2MwMTUxNjEwZWEifQ.z6Sw1XQIM0wuEQGBhXBdawDIIrtMg2XnmA_bpDq53pE",
            Err(VerifyError::Mismatch),
        ),
        (
            "Payload does not match - POST",
            "https://example.com/",
            "Hello, World!",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiIxNDUwMTUzMi05NmYyLTQ2ODQtOTgzMi02OGYwOTUxYWUzNDIiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDciLCJwYXlsb2FkX2hhc2giOiJmYjYyZjAyYWNkYTdkNzQxNzdhNzAxYTFjZTAwNmU2YmFjZDkwYzdkNGQ3YWI0ODE2OTJjMWRhNDdjODEwNzZiIn0.m79RCwO6dGa9pvzsQypkVuXQ6eM0CkRl6_U7MfWg6TM",
            Err(VerifyError::Mismatch),
        ),
        (
            "Different secret - GET",
            "https://example.com/",
            "",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiIyNDNjMjdhZS0yZjAyLTQ2YTAtODg1Mi1jNjZmMzdlYTlmNDYiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDcifQ.JgSeYyOtlEKAXk8bz30iJI4tXgf4lxknoiezawuVhb4",
            Err(VerifyError::Mismatch),
        ),
        (
            "payload was removed in transit - POST",
            "https://example.com/",
            "",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiIxNDUwMTUzMi05NmYyLTQ2ODQtOTgzMi02OGYwOTUxYWUzNDIiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDciLCJwYXlsb2FkX2hhc2giOiJkZmZkNjAyMWJiMmJkNWIwYWY2NzYyOTA4MDllYzNhNTMxOTFkZDgxYzdmNzBhNGIyODY4OGEzNjIxODI5ODZmIn0.bHfsjj3tljfzTufoG3EU3p_yFrQh9CufyzRSaRMd4ss",
            Err(VerifyError::Mismatch),
        ),
        (
            "payload was added in transit - POST",
            "https://example.com/",
            "Hello, World!",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI1OWEyNDRkYy1lOWFkLTRlMjMtOTc3OC0zNzFmYWEyMzhmNzIiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDcifQ.6Fp0rVOsRr1fj9S2GidXAfkmPVofKr8_RTffC6G6r2E",
            Err(VerifyError::Mismatch),
        ),
        (
            "none alg - GET",
            "https://example.com/",
            "",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJNZXNzYWdlQmlyZCIsImlhdCI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI1OWEyNDRkYy1lOWFkLTRlMjMtOTc3OC0zNzFmYWEyMzhmNzIiLCJ1cmxfaGFzaCI6IjBmMTE1ZGIwNjJiN2MwZGQwMzBiMTY4NzhjOTlkZWE1YzM1NGI0OWRjMzdiMzhlYjg4NDYxNzljNzc4M2U5ZDcifQ.",
            Err(VerifyError::Mismatch),
        ),
    ];

    #[test]
    fn official_vectors() {
        for (name, url, payload, token, outcome) in OFFICIAL {
            let mut request = get(url, &[("MessageBird-Signature-JWT", token)]);
            request.body = payload.as_bytes().to_vec();
            assert_eq!(
                verify_at(&request, &creds(OFFICIAL_SECRET), OFFICIAL_NOW),
                *outcome,
                "{name}"
            );
        }
    }

    fn signed_get(url: &str, key: &str, now: i64) -> WebhookRequest {
        get(
            url,
            &[(SIGNATURE_HEADER, &signature_jwt(key, url, b"", now))],
        )
    }

    #[test]
    fn our_tokens_verify_within_their_life_and_one_second_of_leeway() {
        let url = format!("{INBOUND_URL}?id=1");
        let request = signed_get(&url, SIGNING_KEY, NOW);
        for now in [NOW - 1, NOW, NOW + TOKEN_LIFE] {
            assert_eq!(
                verify_at(&request, &creds(SIGNING_KEY), now),
                Ok(()),
                "{now}"
            );
        }
        for now in [NOW - 2, NOW + TOKEN_LIFE + 1] {
            assert_eq!(
                verify_at(&request, &creds(SIGNING_KEY), now),
                Err(VerifyError::Stale),
                "{now}"
            );
        }
        // A body is covered by payload_hash.
        let body = br#"{"id":"1"}"#;
        let post = json_post(
            INBOUND_URL,
            body,
            &[(
                SIGNATURE_HEADER,
                &signature_jwt(SIGNING_KEY, INBOUND_URL, body, NOW),
            )],
        );
        assert_eq!(verify_at(&post, &creds(SIGNING_KEY), NOW), Ok(()));
        let mut tampered = post.clone();
        tampered.body = br#"{"id":"2"}"#.to_vec();
        assert_eq!(
            verify_at(&tampered, &creds(SIGNING_KEY), NOW),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn forged_missing_and_foreign_tokens_are_refused() {
        let url = format!("{INBOUND_URL}?id=1");
        let other_key = signed_get(&url, "another-signing-key", NOW);
        let other_url = get(
            &url,
            &[(
                SIGNATURE_HEADER,
                &signature_jwt(SIGNING_KEY, INBOUND_URL, b"", NOW),
            )],
        );
        for bad in [other_key, other_url] {
            assert_eq!(
                verify_at(&bad, &creds(SIGNING_KEY), NOW),
                Err(VerifyError::Mismatch)
            );
        }
        // Claims MessageBird always sets are required: the issuer, the times, the URL hash.
        let key = EncodingKey::from_secret(SIGNING_KEY.as_bytes());
        let url_hash = sha256_hex(url.as_bytes());
        for claims in [
            json!({"iss": "Vonage", "nbf": NOW, "exp": NOW + 60, "url_hash": url_hash}),
            json!({"nbf": NOW, "exp": NOW + 60, "url_hash": url_hash}),
            json!({"iss": "MessageBird", "exp": NOW + 60, "url_hash": url_hash}),
            json!({"iss": "MessageBird", "nbf": NOW, "url_hash": url_hash}),
            json!({"iss": "MessageBird", "nbf": NOW, "exp": NOW + 60}),
        ] {
            let token =
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
            assert_eq!(
                verify_at(
                    &get(&url, &[(SIGNATURE_HEADER, &token)]),
                    &creds(SIGNING_KEY),
                    NOW
                ),
                Err(VerifyError::Mismatch),
                "{claims}"
            );
        }
        // The deprecated HMAC scheme alone is not accepted.
        let legacy = get(
            &url,
            &[
                ("messagebird-signature", "c2lnbmF0dXJl"),
                ("messagebird-request-timestamp", "1764511200"),
            ],
        );
        assert_eq!(
            verify_at(&legacy, &creds(SIGNING_KEY), NOW),
            Err(VerifyError::Missing)
        );
        for junk in ["", "not.a.jwt", "a.b.c"] {
            let request = get(&url, &[(SIGNATURE_HEADER, junk)]);
            assert!(
                verify_at(&request, &creds(SIGNING_KEY), NOW).is_err(),
                "{junk}"
            );
        }
        assert_eq!(
            verify_at(
                &signed_get(&url, SIGNING_KEY, NOW),
                &Credentials::Simulator,
                NOW
            ),
            Err(VerifyError::WrongCredentials)
        );
    }

    fn query_request(path: &str, query: &[u8]) -> WebhookRequest {
        get(
            &format!(
                "https://hooks.example.com{path}?{}",
                String::from_utf8_lossy(query)
            ),
            &[],
        )
    }

    #[test]
    fn inbound_sms_fixture() {
        let request = query_request(
            "/webhooks/messagebird",
            &fixture("messagebird_inbound_sms.query"),
        );
        let WebhookEvent::Message(m) = one(normalize(&request).unwrap()) else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::MessageBird);
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(m.provider_message_id, "e8077d803532c0b5937c639b60216938");
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550110"));
        assert_eq!(m.body.as_deref(), Some("Smoke on 5th street"));
        assert!(m.media.is_empty());
    }

    #[test]
    fn inbound_posts_are_read_as_forms_or_json_with_media() {
        let form = WebhookRequest {
            method: "POST".into(),
            url: INBOUND_URL.into(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: b"id=m1&originator=%2B15555550123&recipient=15555550110&message=legacy+name"
                .to_vec(),
        };
        let WebhookEvent::Message(m) = one(normalize(&form).unwrap()) else {
            panic!("not a message");
        };
        assert_eq!(m.body.as_deref(), Some("legacy name"));
        assert_eq!(m.from, e164("+15555550123"));
        let body = json!({"id": "m2", "originator": 15555550123_u64, "recipient": "15555550110",
            "mediaUrls": ["https://media.messagebird.com/a.jpg", ""]});
        let WebhookEvent::Message(m) =
            one(normalize(&json_post(INBOUND_URL, body.to_string().as_bytes(), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!((m.channel, m.body, m.media.len()), (Channel::Mms, None, 1));
        assert_eq!(m.media[0].url, "https://media.messagebird.com/a.jpg");
    }

    #[test]
    fn status_report_fixture() {
        let request = query_request(
            "/webhooks/messagebird/status",
            &fixture("messagebird_status_failed.query"),
        );
        let WebhookEvent::Status(s) = one(normalize(&request).unwrap()) else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::MessageBird);
        assert_eq!(s.provider_message_id, "b8fb3e2a5b2f4d0c9e1f7a6d3c2b1a09");
        assert_eq!(s.status, DeliveryStatus::Undelivered);
        assert_eq!(s.raw_status, "delivery_failed");
        assert_eq!(s.error_code.as_deref(), Some("1"));
        assert_eq!(s.error_message.as_deref(), Some("unknown subscriber"));
        assert_eq!(s.tenant_number, Some(e164("+15555550110")));
    }

    fn report(word: &str) -> Vec<WebhookEvent> {
        let query = format!("omni_from=%2B15555550110&id=x&status={word}&statusErrorCode=5");
        normalize(&query_request(
            "/webhooks/messagebird/status",
            query.as_bytes(),
        ))
        .unwrap()
    }

    #[test]
    fn report_words_map_to_our_statuses() {
        for (word, expected) in [
            ("scheduled", DeliveryStatus::Queued),
            ("sent", DeliveryStatus::Sent),
            ("buffered", DeliveryStatus::Sent),
            ("delivered", DeliveryStatus::Delivered),
            ("expired", DeliveryStatus::Undelivered),
            ("delivery_failed", DeliveryStatus::Undelivered),
        ] {
            let WebhookEvent::Status(s) = one(report(word)) else {
                panic!("not a status");
            };
            assert_eq!((s.status, s.raw_status.as_str()), (expected, word));
            // Error codes only on failures.
            assert_eq!(s.error_code.is_some(), expected.is_failure(), "{word}");
        }
        assert_eq!(report("teleported"), vec![]);
        // A POSTed report (JSON) routes by `originator` when our parameter is absent.
        let body = json!({"id": "y", "status": "delivered", "originator": "15555550110"});
        let request = json_post(
            "https://hooks.example.com/webhooks/messagebird/status",
            body.to_string().as_bytes(),
            &[],
        );
        let WebhookEvent::Status(s) = one(normalize(&request).unwrap()) else {
            panic!("not a status");
        };
        assert_eq!(s.tenant_number, Some(e164("+15555550110")));
    }

    #[test]
    fn malformed_requests_are_parse_errors() {
        for (path, query, body) in [
            ("/webhooks/messagebird", "", ""),
            (
                "/webhooks/messagebird",
                "originator=15555550123&recipient=15555550110",
                "",
            ),
            (
                "/webhooks/messagebird",
                "id=1&recipient=15555550110&body=x",
                "",
            ),
            (
                "/webhooks/messagebird",
                "id=1&originator=15555550123&body=x",
                "",
            ),
            (
                "/webhooks/messagebird",
                "id=1&originator=Omni&recipient=15555550110",
                "",
            ),
            ("/webhooks/messagebird", "", "not json"),
            ("/webhooks/messagebird", "", "[1,2]"),
            ("/webhooks/messagebird/status", "id=1&status=sent", ""),
            (
                "/webhooks/messagebird/status",
                "omni_from=%2B15555550110&status=sent",
                "",
            ),
            (
                "/webhooks/messagebird/status",
                "omni_from=%2B15555550110&id=1",
                "",
            ),
            (
                "/webhooks/messagebird/status",
                "omni_from=12&id=1&status=sent",
                "",
            ),
        ] {
            let mut request = get(&format!("https://hooks.example.com{path}?{query}"), &[]);
            request.body = body.as_bytes().to_vec();
            assert!(normalize(&request).is_err(), "{path}?{query} {body}");
        }
    }

    async fn server() -> (MockServer, MessageBirdAdapter) {
        let server = MockServer::start().await;
        let adapter =
            MessageBirdAdapter::new(reqwest::Client::new(), &format!("{}/", server.uri()));
        (server, adapter)
    }

    fn created(id: &str, status: &str) -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(json!({
            "id": id, "href": format!("https://rest.messagebird.com/messages/{id}"),
            "direction": "mt", "type": "sms", "originator": "+15555550100", "body": "x",
            "recipients": {"totalCount": 1, "totalSentCount": 1, "items": [
                {"recipient": 15555550123_u64, "status": status,
                 "statusDatetime": "2026-11-30T14:00:00+00:00"}]}}))
    }

    #[tokio::test]
    async fn sends_sms_with_access_key_reference_and_report_url() {
        let (server, adapter) = server().await;
        let mut message = nanp_outbound("Units are on the way", &[]);
        message.status_callback =
            Some("https://omni.example.org/webhooks/messagebird/status".into());
        Mock::given(method("POST"))
            .and(path("/messages"))
            .and(header(
                "authorization",
                format!("AccessKey {ACCESS_KEY}").as_str(),
            ))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "originator": "+15555550100", "recipients": "+15555550123",
                "body": "Units are on the way", "reference": message.id.to_string(),
                "reportUrl":
                    "https://omni.example.org/webhooks/messagebird/status?omni_from=%2B15555550100"})))
            .respond_with(created("e8077d803532c0b5937c639b60216938", "sent"))
            .expect(1)
            .mount(&server)
            .await;
        let result = adapter.send(&creds(SIGNING_KEY), &message).await.unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::MessageBird,
                provider_message_id: "e8077d803532c0b5937c639b60216938".into(),
                status: DeliveryStatus::Sent,
                raw_status: "sent".into(),
            }
        );
    }

    #[tokio::test]
    async fn sends_media_as_one_mms_with_subject() {
        let (server, adapter) = server().await;
        let mut mms = nanp_outbound(
            "Scene photos",
            &[
                "https://cdn.example.org/a.jpg",
                "https://cdn.example.org/b.png",
            ],
        );
        mms.subject = Some("Incident 42".into());
        mms.status_callback = Some("https://omni.example.org/webhooks/messagebird/status".into());
        Mock::given(method("POST"))
            .and(path("/mms"))
            .and(header(
                "authorization",
                format!("AccessKey {ACCESS_KEY}").as_str(),
            ))
            .and(body_json(json!({
                "originator": "+15555550100", "recipients": "+15555550123",
                "body": "Scene photos", "subject": "Incident 42",
                "reference": mms.id.to_string(),
                "mediaUrls": ["https://cdn.example.org/a.jpg", "https://cdn.example.org/b.png"]})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "0a75f8f82b5d4377bd8fb5b22ac1e8ac", "direction": "mt",
                "mediaUrls": ["https://cdn.example.org/a.jpg"], "recipients": {"items": []}})))
            .expect(1)
            .mount(&server)
            .await;
        let sent = adapter.send(&creds(SIGNING_KEY), &mms).await.unwrap();
        assert_eq!(sent.provider_message_id, "0a75f8f82b5d4377bd8fb5b22ac1e8ac");
        assert_eq!(
            (sent.status, sent.raw_status.as_str()),
            (DeliveryStatus::Queued, "scheduled")
        );
        // Media without text goes without `body`.
        let mut bare = nanp_outbound("", &["https://cdn.example.org/a.jpg"]);
        bare.body = None;
        let (path, body) = request_body(&bare).unwrap();
        assert_eq!(path, "/mms");
        assert!(body.get("body").is_none() && body.get("reportUrl").is_none());
    }

    #[tokio::test]
    async fn refuses_what_messagebird_cannot_carry() {
        let (_server, adapter) = server().await;
        let mut empty = nanp_outbound("", &[]);
        empty.body = None;
        let mut whatsapp = nanp_outbound("hi", &[]);
        whatsapp.channel = Channel::Whatsapp;
        for refused in [empty, whatsapp] {
            assert!(!adapter
                .send(&creds(SIGNING_KEY), &refused)
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
            .and(path("/messages"))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter
            .send(&creds(SIGNING_KEY), &nanp_outbound("hi", &[]))
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains(ACCESS_KEY), "{err}");
        err
    }

    #[tokio::test]
    async fn errors_are_classified_with_messagebirds_code_and_description() {
        let err = failing(ResponseTemplate::new(401).set_body_json(json!({"errors": [
            {"code": 2, "description": "Request not allowed (incorrect access_key)",
             "parameter": "access_key"}]})))
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("2".into()),
                message: "Request not allowed (incorrect access_key)".into(),
            }
        );
        let err = failing(ResponseTemplate::new(422).set_body_json(json!({"errors": [
            {"code": 9, "description": "no (correct) recipients found", "parameter": "recipients"}]})))
        .await;
        assert!(
            matches!(&err, SendError::Permanent { code: Some(c), .. } if c == "9"),
            "{err:?}"
        );
        assert!(!failing(ResponseTemplate::new(400)).await.is_transient());
        assert!(failing(ResponseTemplate::new(503)).await.is_transient());
        let err = failing(ResponseTemplate::new(429).insert_header("retry-after", "7")).await;
        assert!(matches!(
            err,
            SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        let err = failing(ResponseTemplate::new(500).set_body_json(json!({"errors": [
            {"code": 99, "description": "internal error"}]})))
        .await;
        assert!(
            matches!(&err, SendError::Transient { code: Some(c), .. } if c == "99"),
            "{err:?}"
        );
        // Unreadable or id-less answers: the message may or may not have gone; retried.
        for body in ["<html>maintenance</html>", "{}", r#"{"id":""}"#] {
            assert!(
                failing(ResponseTemplate::new(201).set_body_string(body))
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
            query in ".{0,80}",
            token in ".{0,200}",
            status in any::<bool>(),
        ) {
            let path = if status { "/webhooks/messagebird/status" } else { "/webhooks/messagebird" };
            let mut r = get(&format!("https://hooks.example.com{path}?{query}"),
                &[(SIGNATURE_HEADER, &token)]);
            r.body = body;
            let _ = verify_at(&r, &creds(SIGNING_KEY), NOW);
            let _ = normalize(&r);
        }
    }

    #[test]
    fn messagebird_admin_json_is_validated_and_redacted() {
        let ok = serde_json::json!({"access_key": "mb-live-access-secret",
            "signing_key": "mb-signing-very-secret"});
        let creds = Credentials::from_admin_json(ProviderKind::MessageBird, ok.clone()).unwrap();
        assert_eq!(creds.kind(), ProviderKind::MessageBird);
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in ["mb-live-access-secret", "mb-signing-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(creds.redacted()["provider"], "messagebird");
        assert_eq!(
            creds.secrets(),
            vec!["mb-live-access-secret", "mb-signing-very-secret"]
        );
        for (field, bad) in [
            ("access_key", ""),
            ("access_key", "two words"),
            ("signing_key", "short"),
        ] {
            let mut body = ok.clone();
            body[field] = bad.into();
            assert!(
                Credentials::from_admin_json(ProviderKind::MessageBird, body).is_err(),
                "{field}"
            );
        }
    }
}
