//! Vonage Messages API (v1).
//!
//! Sends go to `POST {base}/v1/messages` with `Authorization: Bearer <application JWT>`: a
//! JWT signed RS256 with the tenant's application private key (claims `application_id`,
//! `iat`, `jti`, `exp`), made fresh for each send. The JSON names the `channel` (`sms`, `mms`,
//! `whatsapp`), the `message_type` (`text`, or `image` with `image: {url, caption}`), `to` and
//! `from` as international digits without `+`, and `client_ref` = Omni's message id; status
//! callbacks for the message are asked at our status webhook (`webhook_url`). Vonage answers
//! `202 {"message_uuid"}`, the message id; errors are RFC 7807 bodies whose `type` ends in
//! `#<code>`.
//!
//! Inbound messages and message statuses arrive as JSON, one per callback. Statuses
//! (`submitted`, `delivered`, `read`, `rejected`, `undeliverable`, with `error {type, title,
//! detail}`) name our number as `from`, which routes them. Each callback carries
//! `Authorization: Bearer <JWT>` signed HS256 with the account's signature secret; its
//! `payload_hash` claim, the hex SHA-256 of the raw body, ties the token to this body, and an
//! `iat` more than five minutes from now is refused as a replay (Vonage's SDKs check only the
//! signature, so the freshness rule is ours, as for Telnyx).

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::carrier::{
    require, strong, ApiUrlSetting, Carrier, CarrierConfig, Receives, SigningKey, TestInbound,
    TestWebhook, WebhookRoute,
};
use super::{
    code_text, ct_eq, named_failure, network_error, retry_after, Credentials,
    MessagingProviderAdapter, ParseError, Secret, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent, E164,
};
use std::sync::Arc;

/// How far a callback token's `iat` may be from now, either way.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);
/// How long a send JWT is valid (as Vonage's SDKs make them).
const SEND_JWT_LIFETIME: Duration = Duration::from_secs(900);

/// Vonage Messages API adapter.
#[derive(Clone)]
pub struct VonageAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl VonageAdapter {
    /// An adapter calling the Messages API at `base_url` (`https://api.nexmo.com`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        VonageAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

#[derive(Serialize)]
struct SendClaims<'a> {
    application_id: &'a str,
    iat: i64,
    jti: String,
    exp: i64,
}

/// The application JWT (RS256) a send made at `now` (Unix seconds) carries, or `None` when
/// the private key cannot sign.
pub fn application_jwt(application_id: &str, private_key: &Secret, now: i64) -> Option<String> {
    let claims = SendClaims {
        application_id,
        iat: now,
        jti: Uuid::new_v4().to_string(),
        exp: now + SEND_JWT_LIFETIME.as_secs() as i64,
    };
    let key = EncodingKey::from_rsa_pem(private_key.expose().as_bytes()).ok()?;
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).ok()
}

/// The hex SHA-256 of a callback body, as the `payload_hash` claim carries it.
pub fn payload_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[derive(Serialize, Deserialize)]
struct CallbackClaims {
    iat: Option<i64>,
    payload_hash: Option<String>,
}

/// The `Authorization` header value Vonage sends with `body` at `iat` (Unix seconds): a
/// HS256 JWT under the signature secret (`None` for an empty secret, which Vonage never
/// has). For tests and `omni webhook send`.
pub fn callback_authorization(signature_secret: &str, body: &[u8], iat: i64) -> Option<String> {
    if signature_secret.is_empty() {
        return None;
    }
    let claims = json!({"iat": iat, "jti": Uuid::new_v4().to_string(), "iss": "Vonage",
        "payload_hash": payload_hash(body)});
    let key = EncodingKey::from_secret(signature_secret.as_bytes());
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).ok()?;
    Some(format!("Bearer {token}"))
}

/// Checks a callback's token against the tenant's signature secret, as of `now` (Unix
/// seconds): the HS256 signature, the body's hash and the token's age.
pub fn verify_at(
    request: &WebhookRequest,
    credentials: &Credentials,
    now: i64,
) -> Result<(), VerifyError> {
    let Credentials::Vonage(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let header = request
        .header("authorization")
        .ok_or(VerifyError::Missing)?;
    let token = header
        .trim()
        .strip_prefix("Bearer ")
        .ok_or(VerifyError::Missing)?
        .trim();
    let mut validation = Validation::new(Algorithm::HS256);
    // Vonage's tokens carry no `exp`: their age is checked on `iat` below.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    // The HMAC comparison inside is constant-time (RustCrypto's `verify_slice`).
    let key = DecodingKey::from_secret(creds.signature_secret.expose().as_bytes());
    let claims = jsonwebtoken::decode::<CallbackClaims>(token, &key, &validation)
        .map_err(|_| VerifyError::Mismatch)?
        .claims;
    let hash = claims.payload_hash.ok_or(VerifyError::Mismatch)?;
    if !ct_eq(
        hash.to_ascii_lowercase().as_bytes(),
        payload_hash(&request.body).as_bytes(),
    ) {
        return Err(VerifyError::Mismatch);
    }
    let iat = claims.iat.ok_or(VerifyError::Mismatch)?;
    if iat.abs_diff(now) > REPLAY_WINDOW.as_secs() {
        return Err(VerifyError::Stale);
    }
    Ok(())
}

#[derive(Deserialize)]
struct Callback {
    channel: Option<String>,
    message_uuid: Option<String>,
    to: Option<String>,
    from: Option<String>,
    message_type: Option<String>,
    text: Option<String>,
    image: Option<MediaRef>,
    video: Option<MediaRef>,
    audio: Option<MediaRef>,
    file: Option<MediaRef>,
    profile: Option<Profile>,
    status: Option<String>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct MediaRef {
    url: String,
    caption: Option<String>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

/// An RFC 7807 error: Vonage's `type` URL ends in `#<code>`; `title` is the code (status
/// callbacks) or a short phrase (API answers).
#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<serde_json::Value>,
    detail: Option<String>,
}

impl ApiError {
    fn code(&self) -> Option<String> {
        self.kind
            .as_deref()
            .and_then(|t| t.rsplit_once('#'))
            .map(|(_, code)| code.to_string())
            .filter(|c| !c.is_empty())
            .or_else(|| self.title.as_ref().and_then(code_text))
    }

    fn message(&self) -> Option<String> {
        self.detail.clone().or_else(|| match &self.title {
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            _ => None,
        })
    }
}

fn channel(raw: Option<&str>) -> Option<Channel> {
    match raw? {
        "sms" => Some(Channel::Sms),
        "mms" => Some(Channel::Mms),
        "whatsapp" => Some(Channel::Whatsapp),
        _ => None,
    }
}

fn map_status(raw: &str) -> Option<DeliveryStatus> {
    Some(match raw {
        // Handed to the network (SMS is charged here).
        "submitted" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        // Refused by Vonage before reaching the network.
        "rejected" => DeliveryStatus::Failed,
        "undeliverable" => DeliveryStatus::Undelivered,
        _ => return None,
    })
}

/// A number as Vonage writes it: international digits without the `+`.
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

fn status(callback: Callback, raw: String) -> Result<Vec<WebhookEvent>, ParseError> {
    // Statuses Vonage may add later are acknowledged and skipped.
    let Some(status) = map_status(&raw) else {
        return Ok(vec![]);
    };
    let failure = status.is_failure();
    let error = callback.error.filter(|_| failure);
    Ok(vec![WebhookEvent::Status(StatusUpdate {
        provider: ProviderKind::Vonage,
        provider_message_id: required(&callback.message_uuid, "message_uuid")?.to_string(),
        status,
        error_code: error.as_ref().and_then(ApiError::code),
        error_message: error
            .as_ref()
            .and_then(ApiError::message)
            .or_else(|| failure.then(|| raw.clone())),
        raw_status: raw,
        // Our number sent the message.
        tenant_number: Some(number(required(&callback.from, "from")?, "from")?),
        at: Utc::now(),
    })])
}

fn inbound(callback: Callback, channel: Channel) -> Result<Vec<WebhookEvent>, ParseError> {
    let kind = required(&callback.message_type, "message_type")?;
    let (body, media) = match kind {
        "text" => (callback.text, None),
        "image" => (None, callback.image),
        "video" => (None, callback.video),
        "audio" => (None, callback.audio),
        "file" => (None, callback.file),
        // Locations, contacts, stickers, replies…: nothing Omni shows.
        _ => return Ok(vec![]),
    };
    let (body, media) = match (body, media) {
        (Some(text), None) => (Some(text), vec![]),
        (None, Some(m)) => (
            m.caption,
            vec![Media {
                url: m.url,
                content_type: None,
            }],
        ),
        _ => return Err(ParseError::new(format!("the {kind} message has no {kind}"))),
    };
    Ok(vec![WebhookEvent::Message(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Vonage,
        provider_message_id: required(&callback.message_uuid, "message_uuid")?.to_string(),
        channel,
        from: number(required(&callback.from, "from")?, "from")?,
        to: number(required(&callback.to, "to")?, "to")?,
        body: body.filter(|t| !t.is_empty()),
        media,
        profile_name: callback.profile.and_then(|p| p.name),
        received_at: Utc::now(),
        auto_submitted: false,
    })])
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let callback: Callback = serde_json::from_slice(&request.body)
        .map_err(|_| ParseError::new("the body is not a Vonage callback"))?;
    let Some(channel) = channel(callback.channel.as_deref()) else {
        // Messenger, Viber, RCS…: not channels Omni routes through Vonage.
        return match callback.channel {
            Some(_) => Ok(vec![]),
            None => Err(ParseError::new("channel is missing")),
        };
    };
    match callback.status.clone() {
        Some(raw) => status(callback, raw),
        None => inbound(callback, channel),
    }
}

/// International digits without `+`, as Vonage takes numbers.
fn digits(number: &str) -> &str {
    number.trim_start_matches('+')
}

/// The JSON body of a send.
fn message_body(message: &OutboundMessage) -> Result<serde_json::Value, SendError> {
    let channel = match message.channel {
        Channel::Sms => "sms",
        Channel::Mms => "mms",
        Channel::Whatsapp => "whatsapp",
        other => {
            return Err(SendError::permanent(
                None,
                format!("Vonage does not carry {other}"),
            ))
        }
    };
    let mut body = json!({
        "channel": channel,
        "to": digits(&message.to),
        "from": digits(&message.from),
        "client_ref": message.id.to_string(),
    });
    match (message.media.as_slice(), &message.body) {
        ([], Some(text)) => {
            body["message_type"] = "text".into();
            body["text"] = text.as_str().into();
        }
        ([], None) => {
            return Err(SendError::permanent(
                None,
                "a message needs a body or media",
            ))
        }
        ([_], _) if message.channel == Channel::Sms => {
            return Err(SendError::permanent(
                None,
                "Vonage SMS carries no media: send it as MMS",
            ))
        }
        ([media], text) => {
            body["message_type"] = "image".into();
            body["image"] = json!({"url": media.url});
            if let Some(text) = text {
                body["image"]["caption"] = text.as_str().into();
            }
        }
        _ => {
            return Err(SendError::permanent(
                None,
                "Vonage sends one image per message",
            ))
        }
    }
    if let Some(callback) = &message.status_callback {
        body["webhook_url"] = callback.as_str().into();
        body["webhook_version"] = "v1".into();
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Accepted {
    message_uuid: String,
}

#[async_trait]
impl MessagingProviderAdapter for VonageAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Vonage
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms, Channel::Whatsapp]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Vonage(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not Vonage's"));
        };
        let body = message_body(message)?;
        let jwt = application_jwt(
            &creds.application_id,
            &creds.private_key,
            Utc::now().timestamp(),
        )
        .ok_or_else(|| SendError::permanent(None, "the Vonage private key cannot sign"))?;
        let response = self
            .http
            .post(format!("{}/v1/messages", self.base_url))
            .bearer_auth(jwt)
            .json(&body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            let accepted = serde_json::from_slice::<Accepted>(&bytes).map_err(|_| {
                SendError::transient("Vonage answered without a message_uuid", None)
            })?;
            return Ok(SendResult {
                provider: ProviderKind::Vonage,
                provider_message_id: accepted.message_uuid,
                status: DeliveryStatus::Queued,
                raw_status: "accepted".into(),
            });
        }
        let error = serde_json::from_slice::<ApiError>(&bytes).ok();
        let code = error.as_ref().and_then(ApiError::code);
        let message = error
            .as_ref()
            .and_then(ApiError::message)
            .unwrap_or_else(|| format!("Vonage answered HTTP {}", status.as_u16()));
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

/// Vonage Messages API credentials: the application's private key signs the JWTs that send,
/// the account's signature secret checks the JWTs callbacks carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VonageCredentials {
    /// The Vonage application's id (a UUID, not secret), claimed in every send JWT.
    pub application_id: String,
    /// The application's RSA private key (PEM), signing send JWTs (RS256).
    pub private_key: Secret,
    /// The account's signature secret, the HS256 key of callback JWTs.
    pub signature_secret: Secret,
}

impl CarrierConfig for VonageCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["private_key", "signature_secret"];

    fn validate(&self) -> Result<(), String> {
        require(
            uuid::Uuid::parse_str(&self.application_id).is_ok(),
            "application_id (a UUID)",
        )?;
        // Signed with now, so a bad key is refused at configuration, not at the first send.
        require(
            application_jwt(&self.application_id, &self.private_key, 0).is_some(),
            "private_key (an RSA private key in PEM)",
        )?;
        strong(&self.signature_secret, "signature_secret")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.private_key.expose(), self.signature_secret.expose()]
    }

    fn example() -> Self {
        VonageCredentials {
            application_id: "aaaaaaaa-0000-4000-8000-0000000000a1".into(),
            private_key: Secret::new("vonage-private-key-secret"),
            signature_secret: Secret::new("vonage-signature-secret-secret"),
        }
    }
}

/// The Omni declaration of Vonage.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Vonage,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_VONAGE_API_URL",
        default: "https://api.nexmo.com",
        help: "Vonage Messages API base URL (`/v1/messages` is appended).",
    }),
    webhooks: &[
        WebhookRoute::post("/webhooks/vonage", Receives::Inbound),
        WebhookRoute::post("/webhooks/vonage/status", Receives::Status),
    ],
    adapter: |http, base_url| Arc::new(VonageAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "JSON POST with a JWT signed HS256; --secret: the signature secret",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// An inbound message as Vonage posts it (SMS text, or with media an MMS image captioned with
/// the text; numbers without `+`), with a JWT under the signature secret.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("Vonage")?;
    let (from, to) = message.numbers()?;
    let secret = key.secret(|c| VonageCredentials::of(c).map(|c| &c.signature_secret))?;
    let id = message.id_or(|| Uuid::new_v4().to_string());
    let mut body = serde_json::json!({"message_uuid": id, "from": from.digits(),
        "to": to.digits(),
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    match message.media.as_slice() {
        [] => {
            body["channel"] = "sms".into();
            body["message_type"] = "text".into();
            body["text"] = message.body.clone().into();
        }
        [url] => {
            body["channel"] = "mms".into();
            body["message_type"] = "image".into();
            body["image"] = serde_json::json!({"url": url, "caption": message.body});
        }
        _ => return Err("Vonage carries one image per message".into()),
    }
    let body = body.to_string();
    let authorization = callback_authorization(&secret, body.as_bytes(), Utc::now().timestamp())
        .ok_or("the Vonage signature secret must not be empty")?;
    Ok(vec![message.post(
        "/webhooks/vonage",
        "application/json",
        vec![("authorization".into(), authorization)],
        body.into_bytes(),
    )])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/vonage": {"post": {"summary": "Vonage Messages inbound messages (SMS, MMS, WhatsApp: text, image, video, audio, file), signed with a JWT; routed by the called number", "parameters": [{"name": "authorization", "in": "header", "required": true, "schema": {"type": "string"}, "description": "`Bearer <JWT>` signed HS256 with the tenant's Vonage signature secret; its `payload_hash` claim must be the hex SHA-256 of the raw body, and an `iat` more than 300 s from the server's clock, either way, is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}},
"/webhooks/vonage/status": {"post": {"summary": "Vonage Messages message statuses (submitted, delivered, read, rejected, undeliverable), requested per message (webhook_url); routed by `from`, our sending number", "parameters": [{"name": "authorization", "in": "header", "required": true, "schema": {"type": "string"}, "description": "`Bearer <JWT>` signed HS256 with the tenant's Vonage signature secret; its `payload_hash` claim must be the hex SHA-256 of the raw body, and an `iat` more than 300 s from the server's clock, either way, is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::providers::test_support::{e164, fixture, one};
    use crate::providers::VonageCredentials;
    use proptest::prelude::*;
    use wiremock::matchers::{header_regex, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const APP_ID: &str = "aaaaaaaa-0000-4000-8000-0000000000a1";
    const SIGNATURE_SECRET: &str = "vonage-signature-secret-0123456789";

    fn key_file(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../../tests/fixtures/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn creds() -> Credentials {
        Credentials::Vonage(VonageCredentials {
            application_id: APP_ID.into(),
            private_key: Secret::new(key_file("vonage-test-private.pem")),
            signature_secret: Secret::new(SIGNATURE_SECRET),
        })
    }

    fn request(body: &[u8], authorization: Option<&str>) -> WebhookRequest {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(a) = authorization {
            headers.push(("authorization".into(), a.into()));
        }
        WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/webhooks/vonage".into(),
            headers,
            body: body.to_vec(),
        }
    }

    fn signed(body: &[u8], secret: &str, iat: i64) -> WebhookRequest {
        request(
            body,
            Some(&callback_authorization(secret, body, iat).unwrap()),
        )
    }

    #[test]
    fn callback_token_vector() {
        // A token made independently (header {"alg":"HS256","typ":"JWT"}, claims iat,
        // payload_hash of `{"a":1}`), HMAC-SHA256 under "secret-vector-123":
        // computed with Python's hmac/hashlib, unpadded base64url.
        let body = br#"{"a":1}"#;
        assert_eq!(
            payload_hash(body),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
        let token = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsInBheWxvYWRfaGFzaCI6IjAxNWFiZDdmNWNjNTdhMmRkOTRiNzU5MGYwNGFkODA4NDI3MzkwNWVlMzNlYzVjZWJlYWU2MjI3NmE5N2Y4NjIifQ.D89oXh9dKxJnf9UcysMJJW2Aeb6aswzUywrjRFiw5oc";
        let creds = Credentials::Vonage(VonageCredentials {
            application_id: APP_ID.into(),
            private_key: Secret::new("unused"),
            signature_secret: Secret::new("secret-vector-123"),
        });
        assert_eq!(
            verify_at(&request(body, Some(token)), &creds, 1_700_000_000),
            Ok(())
        );
    }

    #[test]
    fn tokens_hashes_and_freshness_are_checked() {
        let body = fixture("vonage_inbound_sms.json");
        let now = 1_800_000_000;
        assert_eq!(
            verify_at(&signed(&body, SIGNATURE_SECRET, now), &creds(), now + 2),
            Ok(())
        );
        assert_eq!(
            verify_at(
                &signed(&body, "another-signature-secret", now),
                &creds(),
                now
            ),
            Err(VerifyError::Mismatch)
        );
        for stale in [now - 301, now + 301] {
            assert_eq!(
                verify_at(&signed(&body, SIGNATURE_SECRET, stale), &creds(), now),
                Err(VerifyError::Stale)
            );
        }
        // A genuine token moved onto another body: its payload_hash no longer matches.
        let mut moved = signed(&body, SIGNATURE_SECRET, now);
        moved.body.push(b' ');
        assert_eq!(verify_at(&moved, &creds(), now), Err(VerifyError::Mismatch));
        // Correctly signed but without the hash or iat claim.
        let key = EncodingKey::from_secret(SIGNATURE_SECRET.as_bytes());
        for claims in [
            json!({"iat": now}),
            json!({"payload_hash": payload_hash(&body)}),
        ] {
            let token =
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
            let r = request(&body, Some(&format!("Bearer {token}")));
            assert_eq!(verify_at(&r, &creds(), now), Err(VerifyError::Mismatch));
        }
        // The application's RS256 tokens are not callback tokens.
        let rs = application_jwt(
            APP_ID,
            &Secret::new(key_file("vonage-test-private.pem")),
            now,
        );
        let r = request(&body, Some(&format!("Bearer {}", rs.unwrap())));
        assert_eq!(verify_at(&r, &creds(), now), Err(VerifyError::Mismatch));
        for missing in [None, Some("Basic dXNlcjpwdw=="), Some("Bearer")] {
            assert_eq!(
                verify_at(&request(&body, missing), &creds(), now),
                Err(VerifyError::Missing)
            );
        }
        assert_eq!(
            verify_at(&request(&body, Some("Bearer not.a.jwt")), &creds(), now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_at(
                &signed(&body, SIGNATURE_SECRET, now),
                &Credentials::Simulator,
                now
            ),
            Err(VerifyError::WrongCredentials)
        );
        assert_eq!(callback_authorization("", &body, now), None);
    }

    #[test]
    fn inbound_sms_fixture() {
        let WebhookEvent::Message(m) =
            one(normalize(&request(&fixture("vonage_inbound_sms.json"), None)).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Vonage);
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(
            m.provider_message_id,
            "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
        );
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(m.body.as_deref(), Some("Smoke on 5th street"));
        assert!(m.media.is_empty());
    }

    #[test]
    fn inbound_whatsapp_image_fixture() {
        let WebhookEvent::Message(m) = one(normalize(&request(
            &fixture("vonage_inbound_whatsapp_image.json"),
            None,
        ))
        .unwrap()) else {
            panic!("not a message");
        };
        assert_eq!(m.channel, Channel::Whatsapp);
        assert_eq!(m.body.as_deref(), Some("Photo of the roof"));
        assert_eq!(m.profile_name.as_deref(), Some("Jane Caller"));
        assert_eq!(
            m.media,
            vec![Media {
                url: "https://api-us.nexmo.com/v3/media/1b456509-974c-458b-aafa-45b8b1a1a0bd"
                    .into(),
                content_type: None,
            }]
        );
    }

    #[test]
    fn status_fixture() {
        let WebhookEvent::Status(s) =
            one(normalize(&request(&fixture("vonage_status_undeliverable.json"), None)).unwrap())
        else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::Vonage);
        assert_eq!(
            s.provider_message_id,
            "cccccccc-dddd-4eee-8fff-0123456789ab"
        );
        assert_eq!(s.status, DeliveryStatus::Undelivered);
        assert_eq!(s.raw_status, "undeliverable");
        assert_eq!(s.error_code.as_deref(), Some("1330"));
        assert_eq!(
            s.error_message.as_deref(),
            Some("The message could not be delivered to the handset")
        );
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
    }

    fn status_body(status: &str, error: serde_json::Value) -> Vec<u8> {
        json!({"message_uuid": "m1", "to": "15555550123", "from": "15555550100",
            "timestamp": "2026-11-30T10:00:00Z", "status": status, "channel": "whatsapp",
            "error": error})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn statuses_map_and_errors_are_kept_on_failures() {
        let err = json!({"type": "https://developer.vonage.com/api-errors/messages#1000",
            "title": "Throttled", "detail": "Too many"});
        for (word, expected) in [
            ("submitted", DeliveryStatus::Sent),
            ("delivered", DeliveryStatus::Delivered),
            ("read", DeliveryStatus::Read),
            ("rejected", DeliveryStatus::Failed),
            ("undeliverable", DeliveryStatus::Undelivered),
        ] {
            let WebhookEvent::Status(s) =
                one(normalize(&request(&status_body(word, err.clone()), None)).unwrap())
            else {
                panic!("not a status");
            };
            assert_eq!((s.status, s.raw_status.as_str()), (expected, word));
            let failure = expected.is_failure();
            assert_eq!(s.error_code, failure.then(|| "1000".to_string()));
            assert_eq!(s.error_message, failure.then(|| "Too many".to_string()));
        }
        // A title alone (no `#code` in the type) is the code.
        let WebhookEvent::Status(s) = one(normalize(&request(
            &status_body("rejected", json!({"title": 1250})),
            None,
        ))
        .unwrap()) else {
            panic!("not a status");
        };
        assert_eq!(s.error_code.as_deref(), Some("1250"));
        assert_eq!(s.error_message.as_deref(), Some("rejected"));
        for ignored in [
            status_body("teleported", json!(null)),
            json!({"channel": "messenger", "message_uuid": "x", "from": "1", "to": "2",
                "message_type": "text", "text": "hi"})
            .to_string()
            .into_bytes(),
            json!({"channel": "whatsapp", "message_uuid": "x", "from": "15555550123",
                "to": "15555550100", "message_type": "location", "location": {"lat": 1}})
            .to_string()
            .into_bytes(),
        ] {
            assert_eq!(normalize(&request(&ignored, None)).unwrap(), vec![]);
        }
        for bad in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"message_uuid":"x","from":"15555550123","to":"15555550100","message_type":"text","text":"hi"}"#,
            br#"{"channel":"sms","message_uuid":"x","from":"15555550123","to":"15555550100"}"#,
            br#"{"channel":"sms","message_uuid":"x","from":"12","to":"15555550100","message_type":"text","text":"hi"}"#,
            br#"{"channel":"mms","message_uuid":"x","from":"15555550123","to":"15555550100","message_type":"image"}"#,
            br#"{"channel":"sms","from":"15555550123","to":"15555550100","message_type":"text","text":"hi"}"#,
            br#"{"channel":"sms","message_uuid":"x","to":"15555550123","status":"delivered"}"#,
        ] {
            assert!(normalize(&request(bad, None)).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn outbound(channel: Channel, media: Vec<Media>) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("north").unwrap(),
            channel,
            from: e164("+15555550100"),
            to: e164("+15555550123"),
            body: Some("Units are on the way".into()),
            media,
            status_callback: Some("https://omni.example.org/webhooks/vonage/status".into()),
            template: None,
            subject: None,
        }
    }

    fn accepted() -> ResponseTemplate {
        ResponseTemplate::new(202)
            .set_body_json(json!({"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"}))
    }

    async fn server() -> (MockServer, VonageAdapter) {
        let server = MockServer::start().await;
        let adapter = VonageAdapter::new(reqwest::Client::new(), &format!("{}/", server.uri()));
        (server, adapter)
    }

    #[derive(Deserialize)]
    struct SentClaims {
        application_id: String,
        iat: i64,
        jti: String,
        exp: i64,
    }

    /// The request's application JWT, checked against the application's public key.
    fn sent_claims(request: &wiremock::Request) -> SentClaims {
        let auth = request
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap();
        let token = auth.strip_prefix("Bearer ").unwrap();
        let key = DecodingKey::from_rsa_pem(key_file("vonage-test-public.pem").as_bytes()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<SentClaims>(token, &key, &validation)
            .unwrap()
            .claims
    }

    #[tokio::test]
    async fn sends_text_with_an_application_jwt_and_exact_body() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .and(header_regex(
                "authorization",
                "^Bearer [^.]+\\.[^.]+\\.[^.]+$",
            ))
            .and(header_regex("content-type", "^application/json"))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let message = outbound(Channel::Sms, vec![]);
        let result = adapter.send(&creds(), &message).await.unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Vonage,
                provider_message_id: "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab".into(),
                status: DeliveryStatus::Queued,
                raw_status: "accepted".into(),
            }
        );
        let requests = server.received_requests().await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body,
            json!({"channel": "sms", "message_type": "text", "to": "15555550123",
                "from": "15555550100", "text": "Units are on the way",
                "client_ref": message.id.to_string(),
                "webhook_url": "https://omni.example.org/webhooks/vonage/status",
                "webhook_version": "v1"})
        );
        let claims = sent_claims(&requests[0]);
        assert_eq!(claims.application_id, APP_ID);
        assert_eq!(claims.exp - claims.iat, 900);
        assert!(claims.iat.abs_diff(Utc::now().timestamp()) < 60);
        assert!(Uuid::parse_str(&claims.jti).is_ok());
    }

    #[tokio::test]
    async fn sends_images_on_mms_and_whatsapp_and_refuses_the_rest() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(accepted())
            .expect(2)
            .mount(&server)
            .await;
        let media = |url: &str| Media {
            url: url.into(),
            content_type: Some("image/jpeg".into()),
        };
        let mut mms = outbound(Channel::Mms, vec![media("https://cdn.example.org/a.jpg")]);
        mms.status_callback = None;
        adapter.send(&creds(), &mms).await.unwrap();
        let mut whatsapp = outbound(
            Channel::Whatsapp,
            vec![media("https://cdn.example.org/b.jpg")],
        );
        whatsapp.body = None;
        whatsapp.status_callback = None;
        adapter.send(&creds(), &whatsapp).await.unwrap();
        let requests = server.received_requests().await.unwrap();
        let bodies: Vec<serde_json::Value> = requests
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        assert_eq!(
            bodies,
            vec![
                json!({"channel": "mms", "message_type": "image", "to": "15555550123",
                    "from": "15555550100", "client_ref": mms.id.to_string(),
                    "image": {"url": "https://cdn.example.org/a.jpg", "caption": "Units are on the way"}}),
                json!({"channel": "whatsapp", "message_type": "image", "to": "15555550123",
                    "from": "15555550100", "client_ref": whatsapp.id.to_string(),
                    "image": {"url": "https://cdn.example.org/b.jpg"}}),
            ]
        );
        let mut two = mms.clone();
        two.media.push(media("https://cdn.example.org/c.jpg"));
        let sms_media = outbound(Channel::Sms, vec![media("https://cdn.example.org/a.jpg")]);
        let mut empty = outbound(Channel::Sms, vec![]);
        empty.body = None;
        let signal = outbound(Channel::Signal, vec![]);
        for refused in [two, sms_media, empty, signal] {
            assert!(!adapter
                .send(&creds(), &refused)
                .await
                .unwrap_err()
                .is_transient());
        }
        let bad_key = Credentials::Vonage(VonageCredentials {
            application_id: APP_ID.into(),
            private_key: Secret::new(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            signature_secret: Secret::new(SIGNATURE_SECRET),
        });
        for creds in [bad_key, Credentials::Simulator] {
            assert!(!adapter
                .send(&creds, &outbound(Channel::Sms, vec![]))
                .await
                .unwrap_err()
                .is_transient());
        }
    }

    async fn failing(response: ResponseTemplate) -> SendError {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter
            .send(&creds(), &outbound(Channel::Sms, vec![]))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
        err
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let err = failing(ResponseTemplate::new(422).set_body_json(json!({
            "type": "https://developer.vonage.com/api-errors/messages#1120",
            "title": "Invalid sender",
            "detail": "The `from` parameter is invalid for the given channel.",
            "instance": "bf0ca0bf927b3b52e3cb03217e1a1ddf"})))
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("1120".into()),
                message: "The `from` parameter is invalid for the given channel.".into(),
            }
        );
        assert!(!failing(ResponseTemplate::new(401)).await.is_transient());
        assert!(failing(ResponseTemplate::new(503)).await.is_transient());
        let err = failing(ResponseTemplate::new(429).insert_header("retry-after", "7")).await;
        assert!(matches!(
            err,
            SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(failing(ResponseTemplate::new(202).set_body_string("{}"))
            .await
            .is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..512),
            auth in ".{0,80}",
            now in any::<i64>(),
        ) {
            let r = request(&body, Some(&auth));
            let _ = verify_at(&r, &creds(), now);
            let _ = normalize(&r);
            let bearer = format!("Bearer {auth}");
            let _ = verify_at(&request(&body, Some(&bearer)), &creds(), now);
        }

        #[test]
        fn arbitrary_callbacks_never_panic(
            channel in "[a-z]{0,10}",
            kind in "[a-z]{0,10}",
            number in ".{0,20}",
            text in ".{0,40}",
        ) {
            for channel in [channel.as_str(), "sms", "mms", "whatsapp"] {
                for kind in [kind.as_str(), "text", "image"] {
                    let inbound = json!({"channel": channel, "message_uuid": text, "from": number,
                        "to": number, "message_type": kind, "text": text,
                        "image": {"url": text, "caption": text}});
                    let status = json!({"channel": channel, "message_uuid": text, "from": number,
                        "to": number, "status": kind, "error": {"type": text, "title": text}});
                    for body in [inbound, status] {
                        let _ = normalize(&request(body.to_string().as_bytes(), None));
                    }
                }
            }
        }
    }

    #[test]
    fn vonage_admin_json_is_validated_and_redacted() {
        let pem = std::fs::read_to_string(format!(
            "{}/../../tests/fixtures/keys/vonage-test-private.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let ok = serde_json::json!({"application_id": "aaaaaaaa-0000-4000-8000-0000000000a1",
            "private_key": pem, "signature_secret": "vonage-signature-very-secret"});
        let creds = Credentials::from_admin_json(ProviderKind::Vonage, ok.clone()).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Vonage);
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in ["PRIVATE KEY", "vonage-signature-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("aaaaaaaa-0000-4000-8000-0000000000a1"),
            "{shown}"
        );
        assert_eq!(
            creds.secrets(),
            vec![pem.as_str(), "vonage-signature-very-secret"]
        );
        for (field, bad) in [
            ("application_id", "not-a-uuid"),
            (
                "private_key",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            ("private_key", ""),
            ("signature_secret", "short"),
        ] {
            let mut body = ok.clone();
            body[field] = bad.into();
            assert!(
                Credentials::from_admin_json(ProviderKind::Vonage, body).is_err(),
                "{field}"
            );
        }
    }
}
