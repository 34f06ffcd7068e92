//! SendGrid (Twilio SendGrid): email out through Mail Send v3, email in through Inbound Parse,
//! delivery events through the signed Event Webhook.
//!
//! Wire facts (SendGrid's v3 API reference): a send is `POST {base}/v3/mail/send` with
//! `Authorization: Bearer <API key>` and a JSON body of `personalizations[].to[].email`,
//! `from.email`, `subject`, `content[{type, value}]` and `custom_args` (strings SendGrid copies
//! into every event about the message). It answers `202 Accepted` with no body and the
//! message's id in `X-Message-Id`; errors are `{"errors": [{"message", "field"?}]}`, 429 with
//! `Retry-After` when rate limited.
//!
//! Inbound Parse posts each received email as `multipart/form-data`: `from`, `to`, `subject`,
//! `text`, `html`, `headers` (the raw header block), `envelope` (JSON `{"to": [...], "from"}`,
//! the SMTP envelope), `charsets`, `attachments` (a count) and one file part per attachment.
//! SendGrid signs nothing here: like VoIP.ms, the Parse URL configured at SendGrid carries
//! `?secret=<webhook_secret>`, compared in constant time. Omni keeps no files, so attachments
//! are named in the text rather than kept as media (media are URLs Omni does not host).
//!
//! The Event Webhook posts a JSON array of events (`processed`, `deferred`, `delivered`,
//! `open`, `click`, `bounce`, `dropped`, …), each with `sg_message_id` (the `X-Message-Id`
//! followed by `.` and a per-recipient suffix), `event`, `reason`/`status` on failures, and
//! our `custom_args` at the top level. With "signed event webhook requests" on, it is signed
//! with ECDSA P-256 / SHA-256 over `timestamp || raw body`: the signature (base64 DER) is in
//! `X-Twilio-Email-Event-Webhook-Signature`, the timestamp in
//! `X-Twilio-Email-Event-Webhook-Timestamp`, and the account's verification key is the
//! base64 DER (SPKI) public key the SendGrid console shows. SendGrid retries failed posts for
//! a day with the same signature, so no replay window is enforced: a replayed event is a
//! duplicate, which deduplication and monotonic statuses make harmless.
//!
//! Events name neither the sender nor the tenant, so every send carries the tenant's address
//! in `custom_args.omni_from` (and Omni's message id in `omni_message_id`): the events route
//! by it. Events without it concern mail Omni did not send and are ignored.

use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
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
    carries, check_url_secret, email_text, inbound_email_text, named_failure, network_error,
    retry_after, Credentials, MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, EmailAddress, InboundMessage, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent,
};
use std::sync::Arc;

/// The Event Webhook's signature header.
pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
/// The Event Webhook's timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";
/// The custom argument carrying the tenant's sending address (routes events).
const FROM_ARG: &str = "omni_from";
/// The custom argument carrying Omni's message id.
const ID_ARG: &str = "omni_message_id";
/// Carrier strings echoed into errors are cut to this length (they are untrusted input).
const MAX_ECHO: usize = 200;

/// The SendGrid carrier.
#[derive(Clone)]
pub struct SendgridAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl SendgridAdapter {
    /// An adapter calling the API at `base_url` (`https://api.sendgrid.com`; `/v3/mail/send`
    /// is appended).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        SendgridAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// The account's Event Webhook verification key, from its base64 DER (SPKI) form.
pub fn event_public_key(base64_der: &str) -> Option<VerifyingKey> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64_der.trim())
        .ok()?;
    VerifyingKey::from_public_key_der(&der).ok()
}

/// Checks an Event Webhook signature: ECDSA P-256 / SHA-256 over `timestamp || body`.
pub fn verify_event_signature(
    key: &VerifyingKey,
    timestamp: &str,
    body: &[u8],
    signature_base64: &str,
) -> Result<(), VerifyError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_base64.trim())
        .map_err(|_| VerifyError::Mismatch)?;
    let signature = DerSignature::from_bytes(&der).map_err(|_| VerifyError::Mismatch)?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    key.verify(&signed, &signature)
        .map_err(|_| VerifyError::Mismatch)
}

/// Whether the request is one of the Event Webhook's (`/webhooks/sendgrid/events`) rather
/// than an Inbound Parse post.
fn is_event_post(request: &WebhookRequest) -> bool {
    let path = request.url.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/').ends_with("/events")
}

/// The JSON body of a send.
fn message_body(message: &OutboundMessage) -> Value {
    let custom_args = json!({ ID_ARG: message.id.to_string(), FROM_ARG: message.from.as_str() });
    json!({
        "personalizations": [{ "to": [{ "email": message.to.as_str() }] }],
        "from": { "email": message.from.as_str() },
        "subject": message.subject.as_deref().unwrap_or_default(),
        "content": [{ "type": "text/plain", "value": email_text(message) }],
        "custom_args": custom_args,
    })
}

/// SendGrid's error answer: the messages joined, the first field named as the code.
fn failure(
    status: reqwest::StatusCode,
    body: &[u8],
    wait: Option<std::time::Duration>,
) -> SendError {
    let errors = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let text: Vec<&str> = errors
        .iter()
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect();
    let message = if text.is_empty() {
        format!("SendGrid answered HTTP {}", status.as_u16())
    } else {
        format!(
            "SendGrid: {}",
            text.join("; ").chars().take(MAX_ECHO).collect::<String>()
        )
    };
    let code = errors
        .iter()
        .find_map(|e| e.get("field").and_then(Value::as_str))
        .map(|f| f.chars().take(MAX_ECHO).collect());
    named_failure(status, code, message, wait)
}

#[async_trait]
impl MessagingProviderAdapter for SendgridAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sendgrid
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Email]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Sendgrid(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not SendGrid's"));
        };
        carries("SendGrid", self.channels(), message)?;
        let response = self
            .http
            .post(format!("{}/v3/mail/send", self.base_url))
            .bearer_auth(creds.api_key.expose())
            .json(&message_body(message))
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let id = response
            .headers()
            .get("x-message-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(network_error)?;
        if !status.is_success() {
            return Err(failure(status, &bytes, wait));
        }
        // Accepted without an id still means accepted: a permanent error (never retried)
        // avoids sending it twice.
        let id = id.filter(|i| !i.is_empty()).ok_or_else(|| {
            SendError::permanent(
                None,
                "SendGrid accepted the message without an X-Message-Id",
            )
        })?;
        Ok(SendResult {
            provider: ProviderKind::Sendgrid,
            provider_message_id: id,
            status: DeliveryStatus::Sent,
            raw_status: "accepted".into(),
        })
    }

    /// Events: the ECDSA signature under the account's verification key. Inbound Parse: the
    /// `secret=` in the URL (SendGrid signs nothing there).
    fn verify_inbound(
        &self,
        request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        let Credentials::Sendgrid(creds) = credentials else {
            return Err(VerifyError::WrongCredentials);
        };
        if is_event_post(request) {
            let signature = request
                .header(SIGNATURE_HEADER)
                .ok_or(VerifyError::Missing)?;
            let timestamp = request
                .header(TIMESTAMP_HEADER)
                .ok_or(VerifyError::Missing)?;
            let key = event_public_key(&creds.event_public_key)
                .ok_or_else(|| VerifyError::Unsupported("no valid event_public_key".into()))?;
            return verify_event_signature(&key, timestamp, &request.body, signature);
        }
        let secret = url::form_urlencoded::parse(request.query().as_bytes())
            .find(|(k, _)| k == "secret")
            .map(|(_, v)| v.into_owned());
        check_url_secret(secret.as_deref(), &creds.webhook_secret)
    }

    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        if is_event_post(request) {
            events(&request.body)
        } else {
            inbound_email(request).map(|m| vec![WebhookEvent::Message(m)])
        }
    }
}

/// One Event Webhook event, the fields Omni reads.
#[derive(Deserialize)]
struct Event {
    event: String,
    #[serde(default)]
    sg_message_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    omni_from: Option<String>,
}

/// SendGrid's event vocabulary in Omni's; `None` for events that say nothing about delivery
/// (`click` after `open`, list management, spam reports).
fn map_event(event: &str) -> Option<DeliveryStatus> {
    Some(match event {
        "processed" | "deferred" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "open" => DeliveryStatus::Read,
        "bounce" | "blocked" => DeliveryStatus::Undelivered,
        "dropped" => DeliveryStatus::Failed,
        _ => return None,
    })
}

fn events(body: &[u8]) -> Result<Vec<WebhookEvent>, ParseError> {
    let raw: Vec<Value> = serde_json::from_slice(body)
        .map_err(|_| ParseError::new("the body is not a SendGrid event batch (a JSON array)"))?;
    let mut out = Vec::with_capacity(raw.len());
    for value in raw {
        let event: Event = serde_json::from_value(value)
            .map_err(|_| ParseError::new("a SendGrid event has no event name"))?;
        let Some(status) = map_event(&event.event) else {
            continue;
        };
        // Mail Omni did not send (no routing argument) is not ours to track.
        let Some(from) = event.omni_from.as_deref() else {
            continue;
        };
        let tenant = EmailAddress::parse(from)
            .map_err(|_| ParseError::new("omni_from is not an email address"))?;
        let id = event
            .sg_message_id
            .as_deref()
            .and_then(|id| id.split('.').next())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ParseError::new("a SendGrid event has no sg_message_id"))?;
        let failed = status.is_failure();
        out.push(WebhookEvent::Status(StatusUpdate {
            provider: ProviderKind::Sendgrid,
            provider_message_id: id.to_string(),
            status,
            raw_status: event.event,
            error_code: event.status.filter(|_| failed),
            error_message: event
                .reason
                .or(event.response)
                .filter(|_| failed)
                .map(|r| r.chars().take(MAX_ECHO).collect()),
            tenant_number: Some(Address::Email(tenant)),
            at: Utc::now(),
        }));
    }
    Ok(out)
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct FormPart<'a> {
    /// The field name.
    pub name: String,
    /// The file name, for file parts.
    pub filename: Option<String>,
    /// The part's content type, if given.
    pub content_type: Option<String>,
    /// The raw content.
    pub data: &'a [u8],
}

/// Splits a `multipart/form-data` body (RFC 7578) into its parts. Strict: a body that does
/// not end with the closing delimiter, or a part without a named `Content-Disposition`, is
/// an error rather than a partial read.
pub fn form_parts<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<FormPart<'a>>, ParseError> {
    let bad = |what: &str| ParseError::new(format!("multipart body: {what}"));
    let (mime, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return Err(bad("not multipart/form-data"));
    }
    let boundary = header_param(params, "boundary")
        .filter(|b| (1..=70).contains(&b.len()))
        .ok_or_else(|| bad("no boundary"))?;
    let delimiter = [b"--", boundary.as_bytes()].concat();
    let mut rest = &body[find(body, &delimiter).ok_or_else(|| bad("no first boundary"))?..];
    let mut parts = Vec::new();
    loop {
        rest = &rest[delimiter.len()..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("a boundary line is malformed"))?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(|| bad("a part has no header end"))?;
        let head =
            std::str::from_utf8(&rest[..head_end]).map_err(|_| bad("a part header is not text"))?;
        rest = &rest[head_end + 4..];
        let close = [b"\r\n", delimiter.as_slice()].concat();
        let end = find(rest, &close).ok_or_else(|| bad("the body is not closed"))?;
        let data = &rest[..end];
        rest = &rest[end + 2..];
        let mut part = FormPart {
            name: String::new(),
            filename: None,
            content_type: None,
            data,
        };
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                part.name = header_param(value, "name").unwrap_or_default();
                part.filename = header_param(value, "filename");
            } else if key.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.trim().to_string());
            }
        }
        if part.name.is_empty() {
            return Err(bad("a part has no name"));
        }
        parts.push(part);
    }
}

/// The position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `key=value` or `key="value"` parameter of a header (`; `-separated).
fn header_param(params: &str, key: &str) -> Option<String> {
    params.split(';').find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case(key) {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.replace("\\\"", "\"").replace("\\\\", "\\"))
    })
}

/// The mailbox in an address header value (`Jane Doe <jane@example.org>` → the address).
fn mailbox(value: &str) -> Result<EmailAddress, ParseError> {
    let value = value.trim();
    let inner = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    EmailAddress::parse(inner).map_err(|_| ParseError::new("an address is not an email address"))
}

/// The display name of an address header value (`"Doe, Jane" <jane@…>` → `Doe, Jane`).
fn display_name(value: &str) -> Option<String> {
    let (name, _) = value.split_once('<')?;
    let name = name.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.chars().take(MAX_ECHO).collect())
}

/// The text of a field: UTF-8, or ISO-8859-1 when `charsets` says so (the two SendGrid uses
/// for plain text); anything else is read as UTF-8, lossily.
fn field_text(part: &FormPart<'_>, charsets: &Value) -> String {
    let latin1 = charsets
        .get(&part.name)
        .and_then(Value::as_str)
        .is_some_and(|c| c.eq_ignore_ascii_case("iso-8859-1") || c.eq_ignore_ascii_case("latin1"));
    if latin1 {
        part.data.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(part.data).into_owned()
    }
}

/// The value of a header in the raw header block Inbound Parse passes as `headers`.
fn raw_header<'h>(headers: &'h str, name: &str) -> Option<&'h str> {
    headers.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The SMTP envelope (`{"to": [...], "from": "..."}`), the surest account of who sent the
/// email to whom: headers can name anyone.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    from: Option<String>,
}

fn inbound_email(request: &WebhookRequest) -> Result<InboundMessage, ParseError> {
    let content_type = request
        .header("content-type")
        .ok_or_else(|| ParseError::new("no content type"))?;
    let parts = form_parts(content_type, &request.body)?;
    let charsets: Value = parts
        .iter()
        .find(|p| p.name == "charsets")
        .and_then(|p| serde_json::from_slice(p.data).ok())
        .unwrap_or_default();
    let text = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name && p.filename.is_none())
            .map(|p| field_text(p, &charsets))
            .filter(|t| !t.trim().is_empty())
    };
    let envelope: Option<Envelope> = text("envelope").and_then(|e| serde_json::from_str(&e).ok());
    // The envelope first; the headers when SendGrid sent none.
    let from = match envelope.as_ref().and_then(|e| e.from.as_deref()) {
        Some(from) => mailbox(from)?,
        None => mailbox(&text("from").ok_or_else(|| ParseError::new("missing from"))?)?,
    };
    let to = match envelope.as_ref().and_then(|e| e.to.first()) {
        Some(to) => mailbox(to)?,
        None => {
            let header = text("to").ok_or_else(|| ParseError::new("missing to"))?;
            mailbox(header.split(',').next().unwrap_or_default())?
        }
    };
    let subject = text("subject");
    let body = inbound_email_text(
        text("text").or_else(|| subject.clone()),
        parts.iter().filter(|p| p.filename.is_some()).map(|file| {
            format!(
                "{} ({})",
                file.filename.as_deref().unwrap_or_default(),
                file.content_type.as_deref().unwrap_or("unknown type")
            )
        }),
    );
    let headers = text("headers").unwrap_or_default();
    // The Message-ID names the email for deduplication; without one, a digest of what makes
    // it this email does.
    let id = match raw_header(&headers, "message-id") {
        Some(id) if !id.is_empty() => id.chars().take(MAX_ECHO).collect(),
        _ => {
            let mut digest = Sha256::new();
            for field in [
                from.as_str(),
                to.as_str(),
                subject.as_deref().unwrap_or_default(),
                body.as_deref().unwrap_or_default(),
            ] {
                digest.update(field.as_bytes());
                digest.update([0]);
            }
            hex::encode(digest.finalize())
        }
    };
    Ok(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Sendgrid,
        provider_message_id: id,
        channel: Channel::Email,
        from: Address::Email(from),
        to: Address::Email(to),
        body,
        media: Vec::new(),
        profile_name: text("from").as_deref().and_then(display_name),
        received_at: Utc::now(),
        auto_submitted: crate::domain::auto_submitted(raw_header(&headers, "auto-submitted")),
    })
}

/// SendGrid credentials: the API key sends, the secret in the Inbound Parse URL authenticates
/// received email, the account's verification key checks the signed Event Webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendgridCredentials {
    /// API key with Mail Send access (`SG.…`), sent as a Bearer token.
    pub api_key: Secret,
    /// The `secret=` query value of the Inbound Parse URL configured at SendGrid (SendGrid
    /// signs nothing there).
    pub webhook_secret: Secret,
    /// The Event Webhook's verification key as the SendGrid console shows it: base64 DER
    /// (SPKI) of an ECDSA P-256 public key (not secret).
    pub event_public_key: String,
}

impl CarrierConfig for SendgridCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["api_key", "webhook_secret"];

    fn validate(&self) -> Result<(), String> {
        require(!self.api_key.expose().is_empty(), "api_key")?;
        strong(&self.webhook_secret, "webhook_secret")?;
        require(
            event_public_key(&self.event_public_key).is_some(),
            "event_public_key (base64 DER of an ECDSA P-256 public key)",
        )
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.api_key.expose(), self.webhook_secret.expose()]
    }

    fn example() -> Self {
        SendgridCredentials {
            api_key: Secret::new("sendgrid-api-key-secret"),
            webhook_secret: Secret::new("sendgrid-webhook-secret"),
            event_public_key: "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEH3+aj/qEATycUbqgPpiYP3Ggxs/jlarOe27T5pQiIlTlQgO+TD80efjJxCQVyJzR0ULDAngVQzMjpm13KYcTkQ==".into(),
        }
    }
}

/// The Omni declaration of Sendgrid.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Sendgrid,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_SENDGRID_API_URL",
        default: "https://api.sendgrid.com",
        help: "SendGrid API base URL (`/v3/mail/send` is appended).",
    }),
    webhooks: &[
        WebhookRoute::post("/webhooks/sendgrid", Receives::Inbound),
        WebhookRoute::post("/webhooks/sendgrid/events", Receives::Status),
    ],
    adapter: |http, base_url| Arc::new(SendgridAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "Inbound Parse: an email as a multipart POST with the tenant's secret in the URL; \
               --from and --to are email addresses; --secret: the webhook secret",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// An Inbound Parse post as SendGrid makes it: the email's fields as multipart/form-data,
/// the tenant's secret in the URL.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("SendGrid")?;
    if !message.media.is_empty() {
        return Err("SendGrid posts attachments as files, which this command does not send".into());
    }
    let (from, to) = message.addresses()?;
    let secret = key.secret(|c| SendgridCredentials::of(c).map(|c| &c.webhook_secret))?;
    let query =
        serde_urlencoded::to_string([("secret", secret.as_str())]).map_err(|e| e.to_string())?;
    let id = message.id_or(|| format!("<{}@omni-webhook-send>", Uuid::new_v4().simple()));
    let boundary = format!("omni{}", Uuid::new_v4().simple());
    let envelope = serde_json::json!({"to": [to.as_str()], "from": from.as_str()}).to_string();
    let fields = [
        (
            "headers",
            format!("Message-ID: {id}\nSubject: omni webhook send\n"),
        ),
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("subject", "omni webhook send".to_string()),
        ("text", message.body.clone()),
        ("envelope", envelope),
        ("attachments", "0".to_string()),
    ];
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    Ok(vec![message.post(
        &format!("/webhooks/sendgrid?{query}"),
        &format!("multipart/form-data; boundary={boundary}"),
        Vec::new(),
        body.into_bytes(),
    )])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/sendgrid": {"post": {"summary": "SendGrid Inbound Parse: an email to a tenant's registered address (multipart/form-data: from, to, subject, text, headers, envelope, charsets, attachments). SendGrid signs nothing: the Parse URL carries the tenant's webhook_secret. Routed by the envelope's first recipient (the `to` header without an envelope); the sender's address is the conversation's contact. Attachments are named in the text, not kept", "parameters": [{"name": "secret", "in": "query", "required": true, "schema": {"type": "string"}, "description": "the tenant's SendGrid webhook_secret, compared in constant time"}], "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/SendgridInbound"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}},
"/webhooks/sendgrid/events": {"post": {"summary": "SendGrid Event Webhook (a JSON array: processed, deferred, delivered, open, bounce, blocked, dropped; others are acknowledged and ignored), signed with ECDSA P-256 over timestamp + body; routed by the custom argument omni_from (the tenant address a message was sent from); events without it concern mail Omni did not send and are ignored", "parameters": [{"name": "X-Twilio-Email-Event-Webhook-Signature", "in": "header", "required": true, "schema": {"type": "string"}, "description": "base64 DER ECDSA P-256 / SHA-256 signature of the timestamp header followed by the raw body, checked with the tenant's event_public_key"}, {"name": "X-Twilio-Email-Event-Webhook-Timestamp", "in": "header", "required": true, "schema": {"type": "string"}, "description": "the signed timestamp (Unix seconds)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object", "required": ["event"], "properties": {"event": {"type": "string"}, "sg_message_id": {"type": "string", "description": "X-Message-Id of the send, then `.` and SendGrid's suffix"}, "email": {"type": "string"}, "reason": {"type": "string"}, "status": {"type": "string"}, "response": {"type": "string"}, "omni_from": {"type": "string", "description": "custom argument Omni sets on every send"}, "omni_message_id": {"type": "string", "description": "custom argument Omni sets on every send"}}}}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {
"SendgridInbound": {"type": "object", "required": ["from", "to"], "properties": {"from": {"type": "string", "description": "the From header (`Name <address>`)"}, "to": {"type": "string", "description": "the To header"}, "subject": {"type": "string"}, "text": {"type": "string", "description": "the plain-text body; the subject stands in when it is empty"}, "html": {"type": "string", "description": "not read"}, "headers": {"type": "string", "description": "the raw header block; its Message-ID deduplicates redeliveries"}, "envelope": {"type": "string", "description": "JSON {\"to\": [...], \"from\": \"...\"}, the SMTP envelope; preferred to the headers"}, "charsets": {"type": "string", "description": "JSON field → charset; UTF-8 and ISO-8859-1 are read"}, "attachments": {"type": "string", "description": "how many file parts follow (attachment1…N)"}}}
}}"##;

#[cfg(test)]
mod tests {
    //! The Event Webhook vector was made with OpenSSL, with the test key
    //! `tests/fixtures/keys/sendgrid-test-private.pem` (used nowhere else):
    //!
    //! ```sh
    //! openssl ecparam -name prime256v1 -genkey -noout -out key.pem
    //! openssl pkcs8 -topk8 -nocrypt -in key.pem -out sendgrid-test-private.pem
    //! openssl ec -in key.pem -pubout -outform DER | base64 -w0          # PUBLIC_KEY
    //! tests/fixtures/sendgrid_event_delivered.json is body.json; printf '1764500000' | cat - body.json > signed
    //! openssl dgst -sha256 -sign key.pem signed | base64 -w0           # SIGNATURE
    //! ```

    use super::*;
    use crate::domain::{Media, TenantId};
    use crate::providers::{Secret, SendgridCredentials};
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEH3+aj/qEATycUbqgPpiYP3Ggxs/jlarOe27T5pQiIlTlQgO+TD80efjJxCQVyJzR0ULDAngVQzMjpm13KYcTkQ==";
    const TIMESTAMP: &str = "1764500000";
    /// The signed Event Webhook body (`BODY` above), exactly as signed: no trailing newline.
    fn body() -> String {
        String::from_utf8(crate::providers::test_support::fixture(
            "sendgrid_event_delivered.json",
        ))
        .unwrap()
    }
    const SIGNATURE: &str = "MEUCICEC+Xjoxq9hbSRu0zO9BASzScjAlIJW+GYKn4F5/iPcAiEAzw0r4tUbRSObVIBuLLi7Yncb4fJJwD814DA+SLLlAcA=";
    /// Another P-256 public key (`openssl ecparam … -genkey`, its private half discarded).
    const OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4/pWkHP9/W898rAFFRk5TwFYZMvnGldlQRTEUo8mlGmjCjnz5sLoJrgJUratGdliuogVKEIaBo3ASOfmlR8FPQ==";

    fn creds(event_public_key: &str) -> Credentials {
        Credentials::Sendgrid(SendgridCredentials {
            api_key: Secret::new("SG.test-api-key"),
            webhook_secret: Secret::new("parse-secret-0001"),
            event_public_key: event_public_key.into(),
        })
    }

    fn email(s: &str) -> Address {
        Address::from_stored(s).unwrap()
    }

    fn outbound() -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("north").unwrap(),
            channel: Channel::Email,
            from: email("dispatch@north.example"),
            to: email("Jane@example.org"),
            body: Some("Units are on the way".into()),
            media: vec![Media {
                url: "https://media.example/map.png".into(),
                content_type: None,
            }],
            template: None,
            subject: Some("Your call to North County".into()),
            status_callback: None,
        }
    }

    fn events_request(
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &str,
    ) -> WebhookRequest {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(s) = signature {
            headers.push((SIGNATURE_HEADER.into(), s.into()));
        }
        if let Some(t) = timestamp {
            headers.push((TIMESTAMP_HEADER.into(), t.into()));
        }
        WebhookRequest {
            method: "POST".into(),
            url: "https://omni.example/webhooks/sendgrid/events".into(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn adapter(base: &str) -> SendgridAdapter {
        SendgridAdapter::new(reqwest::Client::new(), base)
    }

    #[tokio::test]
    async fn send_posts_mail_send_with_the_documented_shape() {
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .and(header("authorization", "Bearer SG.test-api-key"))
            .respond_with(
                ResponseTemplate::new(202).insert_header("x-message-id", "W4Qx1yLkTgyd5rM2bGQx8w"),
            )
            .expect(1)
            .mount(&api)
            .await;
        let message = outbound();
        let sent = adapter(&api.uri())
            .send(&creds(PUBLIC_KEY), &message)
            .await
            .unwrap();
        assert_eq!(sent.provider_message_id, "W4Qx1yLkTgyd5rM2bGQx8w");
        assert_eq!(sent.status, DeliveryStatus::Sent);
        let requests = api.received_requests().await.unwrap();
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body,
            json!({
                "personalizations": [{"to": [{"email": "Jane@example.org"}]}],
                "from": {"email": "dispatch@north.example"},
                "subject": "Your call to North County",
                "content": [{"type": "text/plain",
                    "value": "Units are on the way\nhttps://media.example/map.png"}],
                "custom_args": {"omni_message_id": message.id.to_string(),
                    "omni_from": "dispatch@north.example"},
            })
        );
    }

    #[tokio::test]
    async fn send_errors_are_mapped() {
        let cases: [(u16, Option<&str>, Value, bool); 4] = [
            (
                429,
                Some("7"),
                json!({"errors": [{"message": "too many requests"}]}),
                true,
            ),
            (503, None, json!({}), true),
            (
                400,
                None,
                json!({"errors": [{"message": "The from address does not match a verified Sender Identity.", "field": "from"}]}),
                false,
            ),
            (
                401,
                None,
                json!({"errors": [{"message": "The provided authorization grant is invalid"}]}),
                false,
            ),
        ];
        for (status, wait, body, transient) in cases {
            let api = MockServer::start().await;
            let mut response = ResponseTemplate::new(status).set_body_json(body.clone());
            if let Some(w) = wait {
                response = response.insert_header("retry-after", w);
            }
            Mock::given(method("POST"))
                .respond_with(response)
                .mount(&api)
                .await;
            let err = adapter(&api.uri())
                .send(&creds(PUBLIC_KEY), &outbound())
                .await
                .unwrap_err();
            assert_eq!(err.is_transient(), transient, "{status}: {err:?}");
            if let Some(text) = body["errors"][0]["message"].as_str() {
                assert!(err.message().contains(text), "{err:?}");
            }
            if status == 429 {
                assert!(
                    matches!(err, SendError::Transient { retry_after: Some(d), .. } if d.as_secs() == 7)
                );
            }
            if status == 400 {
                assert_eq!(err.code(), Some("from"));
            }
        }
        // Accepted without an id: never retried, so never sent twice.
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(202))
            .mount(&api)
            .await;
        let err = adapter(&api.uri())
            .send(&creds(PUBLIC_KEY), &outbound())
            .await
            .unwrap_err();
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn phone_messages_and_other_credentials_are_refused_for_good() {
        let api = MockServer::start().await;
        let mut sms = outbound();
        sms.channel = Channel::Sms;
        sms.to = Address::from_stored("+15555550123").unwrap();
        let err = adapter(&api.uri())
            .send(&creds(PUBLIC_KEY), &sms)
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{err:?}");
        let mut to_phone = outbound();
        to_phone.to = Address::from_stored("+15555550123").unwrap();
        assert!(adapter(&api.uri())
            .send(&creds(PUBLIC_KEY), &to_phone)
            .await
            .is_err());
        assert!(adapter(&api.uri())
            .send(&Credentials::Simulator, &outbound())
            .await
            .is_err());
        assert!(api.received_requests().await.unwrap().is_empty());
    }

    #[test]
    fn the_openssl_event_vector_verifies_and_nothing_else_does() {
        let a = adapter("http://unused");
        let good = events_request(Some(SIGNATURE), Some(TIMESTAMP), &body());
        assert_eq!(a.verify_inbound(&good, &creds(PUBLIC_KEY)), Ok(()));
        let tampered = body().replace("delivered", "bounce");
        for (request, key) in [
            (
                events_request(Some(SIGNATURE), Some(TIMESTAMP), &body()),
                OTHER_KEY,
            ),
            (
                events_request(Some(SIGNATURE), Some("1764500001"), &body()),
                PUBLIC_KEY,
            ),
            (
                events_request(Some(SIGNATURE), Some(TIMESTAMP), &tampered),
                PUBLIC_KEY,
            ),
            (
                events_request(Some("bm90IGEgc2lnbmF0dXJl"), Some(TIMESTAMP), &body()),
                PUBLIC_KEY,
            ),
            (
                events_request(Some("%%%"), Some(TIMESTAMP), &body()),
                PUBLIC_KEY,
            ),
        ] {
            assert_eq!(
                a.verify_inbound(&request, &creds(key)),
                Err(VerifyError::Mismatch)
            );
        }
        for request in [
            events_request(None, Some(TIMESTAMP), &body()),
            events_request(Some(SIGNATURE), None, &body()),
        ] {
            assert_eq!(
                a.verify_inbound(&request, &creds(PUBLIC_KEY)),
                Err(VerifyError::Missing)
            );
        }
        assert_eq!(
            a.verify_inbound(&good, &Credentials::Simulator),
            Err(VerifyError::WrongCredentials)
        );
        assert!(event_public_key("not a key").is_none());
        assert!(event_public_key(OTHER_KEY).is_some());
    }

    #[test]
    fn events_become_status_updates_routed_by_the_sending_address() {
        let batch = json!([
            {"event": "processed", "sg_message_id": "abc.filter-1", "omni_from": "dispatch@north.example"},
            {"event": "delivered", "sg_message_id": "abc.filter-1", "omni_from": "dispatch@north.example"},
            {"event": "open", "sg_message_id": "abc.filter-1", "omni_from": "dispatch@north.example"},
            {"event": "click", "sg_message_id": "abc.filter-1", "omni_from": "dispatch@north.example"},
            {"event": "bounce", "sg_message_id": "def.filter-2", "omni_from": "dispatch@North.Example",
                "status": "5.1.1", "reason": "550 5.1.1 mailbox unavailable", "type": "bounce"},
            {"event": "dropped", "sg_message_id": "ghi.filter-3", "omni_from": "dispatch@north.example",
                "reason": "Bounced Address"},
            {"event": "delivered", "sg_message_id": "xyz.filter-9"},
        ]);
        let request = events_request(None, None, &batch.to_string());
        let events = adapter("http://unused")
            .normalize_inbound(&request)
            .unwrap();
        let statuses: Vec<(String, DeliveryStatus, Option<String>, Option<String>)> = events
            .iter()
            .map(|e| match e {
                WebhookEvent::Status(s) => {
                    assert_eq!(s.tenant_number, Some(email("dispatch@north.example")));
                    (
                        s.provider_message_id.clone(),
                        s.status,
                        s.error_code.clone(),
                        s.error_message.clone(),
                    )
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("abc".into(), DeliveryStatus::Sent, None, None),
                ("abc".into(), DeliveryStatus::Delivered, None, None),
                ("abc".into(), DeliveryStatus::Read, None, None),
                (
                    "def".into(),
                    DeliveryStatus::Undelivered,
                    Some("5.1.1".into()),
                    Some("550 5.1.1 mailbox unavailable".into())
                ),
                (
                    "ghi".into(),
                    DeliveryStatus::Failed,
                    None,
                    Some("Bounced Address".into())
                ),
            ]
        );
        for bad in ["{}", "[{\"sg_message_id\": \"a\"}]", "[{\"event\": \"delivered\", \"omni_from\": \"x@y.org\"}]",
            "[{\"event\": \"delivered\", \"sg_message_id\": \"a\", \"omni_from\": \"+15555550100\"}]"] {
            assert!(adapter("http://unused").normalize_inbound(&events_request(None, None, bad)).is_err(), "{bad}");
        }
    }

    /// An Inbound Parse post as SendGrid makes it.
    fn parse_post(
        query: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> WebhookRequest {
        let boundary = "xYzZY";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
            );
        }
        for (i, (filename, content_type, data)) in files.iter().enumerate() {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"attachment{}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n",
                    i + 1
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        WebhookRequest {
            method: "POST".into(),
            url: format!("https://omni.example/webhooks/sendgrid{query}"),
            headers: vec![(
                "content-type".into(),
                format!("multipart/form-data; boundary={boundary}"),
            )],
            body,
        }
    }

    const HEADERS: &str = "Received: from mail.example.org\nMessage-ID: <CAF=abc123@mail.example.org>\nSubject: Smoke\n";

    /// An out-of-office answer (RFC 3834 `Auto-Submitted`) is marked, so no auto-reply
    /// answers it; a person's email is not.
    #[test]
    fn machine_sent_email_is_marked_auto_submitted() {
        let inbound = |headers: &str| {
            let request = parse_post(
                "?secret=parse-secret-0001",
                &[
                    ("headers", headers),
                    ("from", "jane@example.org"),
                    ("to", "dispatch@north.example"),
                    ("text", "I am out of the office"),
                ],
                &[],
            );
            let events = adapter("http://unused")
                .normalize_inbound(&request)
                .unwrap();
            let [WebhookEvent::Message(m)] = events.as_slice() else {
                panic!("{events:?}");
            };
            m.auto_submitted
        };
        assert!(inbound(&format!("{HEADERS}Auto-Submitted: auto-replied\n")));
        assert!(inbound(&format!(
            "{HEADERS}auto-submitted: Auto-Generated; x=1\n"
        )));
        assert!(!inbound(&format!("{HEADERS}Auto-Submitted: no\n")));
        assert!(!inbound(HEADERS));
    }

    #[test]
    fn an_inbound_email_is_a_message_from_the_sender_to_the_tenant_address() {
        let request = parse_post(
            "?secret=parse-secret-0001",
            &[
                ("headers", HEADERS),
                ("from", "Jane Doe <Jane@Example.ORG>"),
                (
                    "to",
                    "North County Dispatch <dispatch@north.example>, other@else.example",
                ),
                ("subject", "Smoke"),
                ("text", "Smoke on 5th street\r\nSecond line"),
                (
                    "envelope",
                    r#"{"to":["dispatch@north.example"],"from":"jane@example.org"}"#,
                ),
                (
                    "charsets",
                    r#"{"to":"UTF-8","text":"UTF-8","subject":"UTF-8","from":"UTF-8"}"#,
                ),
                ("attachments", "1"),
            ],
            &[(
                "map.png",
                "image/png",
                &[0x89, b'P', b'N', b'G', b'\r', b'\n'],
            )],
        );
        let a = adapter("http://unused");
        assert_eq!(a.verify_inbound(&request, &creds(PUBLIC_KEY)), Ok(()));
        let events = a.normalize_inbound(&request).unwrap();
        let [WebhookEvent::Message(m)] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(m.provider, ProviderKind::Sendgrid);
        assert_eq!(m.channel, Channel::Email);
        assert_eq!(m.from, email("jane@example.org"));
        assert_eq!(m.to, email("dispatch@north.example"));
        assert_eq!(m.provider_message_id, "<CAF=abc123@mail.example.org>");
        assert_eq!(m.profile_name.as_deref(), Some("Jane Doe"));
        assert_eq!(
            m.body.as_deref(),
            Some("Smoke on 5th street\r\nSecond line\n[attachment not kept: map.png (image/png)]")
        );
        assert!(m.media.is_empty());

        // Without an envelope the headers are read; without a Message-ID a digest dedupes.
        let bare = parse_post(
            "",
            &[
                ("from", "Jane Doe <Jane@Example.ORG>"),
                ("to", "dispatch@North.example"),
                ("subject", "Only a subject"),
            ],
            &[],
        );
        let WebhookEvent::Message(m) = &a.normalize_inbound(&bare).unwrap()[0] else {
            panic!()
        };
        assert_eq!(
            (m.from.as_str(), m.to.as_str()),
            ("Jane@example.org", "dispatch@north.example")
        );
        assert_eq!(m.body.as_deref(), Some("Only a subject"));
        assert_eq!(m.provider_message_id.len(), 64);
        let again = &a.normalize_inbound(&bare).unwrap()[0];
        assert_eq!(
            again.dedupe_key(),
            WebhookEvent::Message(m.clone()).dedupe_key()
        );
    }

    #[test]
    fn latin1_text_is_read_as_latin1() {
        let mut request = parse_post(
            "",
            &[
                ("from", "jane@example.org"),
                ("to", "dispatch@north.example"),
                ("charsets", r#"{"text":"iso-8859-1"}"#),
                ("text", "PLACEHOLDER"),
            ],
            &[],
        );
        let at = find(&request.body, b"PLACEHOLDER").unwrap();
        request.body.splice(at..at + 11, [b'C', b'a', b'f', 0xe9]);
        let WebhookEvent::Message(m) = &adapter("x").normalize_inbound(&request).unwrap()[0] else {
            panic!()
        };
        assert_eq!(m.body.as_deref(), Some("Café"));
    }

    #[test]
    fn the_parse_url_secret_is_required() {
        let a = adapter("http://unused");
        let fields = [
            ("from", "jane@example.org"),
            ("to", "dispatch@north.example"),
            ("text", "hi"),
        ];
        assert_eq!(
            a.verify_inbound(
                &parse_post("?secret=wrong-secret", &fields, &[]),
                &creds(PUBLIC_KEY)
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            a.verify_inbound(&parse_post("", &fields, &[]), &creds(PUBLIC_KEY)),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn malformed_inbound_posts_are_parse_errors() {
        let a = adapter("http://unused");
        let good = parse_post(
            "",
            &[
                ("from", "jane@example.org"),
                ("to", "dispatch@north.example"),
                ("text", "hi"),
            ],
            &[],
        );
        let mut unclosed = good.clone();
        unclosed.body.truncate(unclosed.body.len() - 10);
        let mut no_boundary = good.clone();
        no_boundary.headers = vec![("content-type".into(), "multipart/form-data".into())];
        let mut form = good.clone();
        form.headers = vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )];
        let not_email = parse_post(
            "",
            &[("from", "+15555550123"), ("to", "dispatch@north.example")],
            &[],
        );
        let no_to = parse_post("", &[("from", "jane@example.org"), ("text", "hi")], &[]);
        for request in [unclosed, no_boundary, form, not_email, no_to] {
            assert!(
                a.normalize_inbound(&request).is_err(),
                "{:?}",
                String::from_utf8_lossy(&request.body)
            );
        }
    }

    #[test]
    fn admin_json_is_validated_and_redacted() {
        let ok = json!({"api_key": "SG.key-secret", "webhook_secret": "parse-secret-0001", "event_public_key": PUBLIC_KEY});
        let creds = Credentials::from_admin_json(ProviderKind::Sendgrid, ok.clone()).unwrap();
        let shown = format!("{creds:?} {}", creds.redacted());
        assert!(
            !shown.contains("SG.key-secret") && !shown.contains("parse-secret-0001"),
            "{shown}"
        );
        assert!(shown.contains(PUBLIC_KEY));
        assert_eq!(creds.secrets(), vec!["SG.key-secret", "parse-secret-0001"]);
        for (field, value) in [
            ("api_key", ""),
            ("webhook_secret", "short"),
            ("event_public_key", "bm90IGEga2V5"),
        ] {
            let mut bad = ok.clone();
            bad[field] = json!(value);
            let err = Credentials::from_admin_json(ProviderKind::Sendgrid, bad).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }
}
