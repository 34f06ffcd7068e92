//! Amazon SES v2: email out through `SendEmail`, signed with AWS Signature Version 4.
//!
//! Wire facts (SES API v2 reference): a send is `POST {base}/v2/email/outbound-emails` with a
//! JSON body of `FromEmailAddress`, `Destination.ToAddresses`,
//! `Content.Simple.{Subject,Body.Text}.{Data,Charset}` and `EmailTags` (`Name`/`Value`, letters,
//! digits, `_` and `-`; they come back in SES's event records); it answers `200
//! {"MessageId"}`. Errors are JSON with the exception name in `X-Amzn-ErrorType` (or the
//! body's `__type`/`code`) and `message`: throttling and `TooManyRequestsException`, `429` and
//! `5xx` are worth retrying; `MessageRejected`, `MailFromDomainNotVerifiedException`,
//! `AccountSuspendedException`, `BadRequestException`, `NotFoundException` and signature or
//! credential errors are not.
//!
//! The base URL is `https://email.{region}.amazonaws.com`, or `OMNI_SES_API_URL` (a sandbox or
//! an emulator). Requests are signed with SigV4 (service `ses`, the tenant's region) by a short
//! implementation on the tree's hmac and sha2, tested against AWS's published example, rather
//! than with the AWS SDK, which omni-core does not depend on.
//!
//! Delivery events reach Omni through Amazon EventBridge, not a webhook: a configuration set's
//! EventBridge destination publishes them to the default bus (detail-types `Email Sent`,
//! `Email Delivered`, `Email Bounced`, …; the `detail` is SES's event record: `eventType`,
//! `mail.{messageId, source, tags}` and one object per type, e.g. `bounce.{bounceType,
//! bounceSubType, bouncedRecipients[].diagnosticCode}`), and the `ses-events` function hands
//! each to [`status_from_event`].
//!
//! Over Amazon SNS ([`sns`], `POST /webhooks/ses`, on `omni serve` and on AWS alike) SES
//! delivers both received email (a receipt rule's SNS action: `notificationType: "Received"`,
//! the raw MIME in `content`, read by [`parse_notification`]) and the same event records (a
//! configuration set's SNS event destination). The tenant's SES configuration names the SNS
//! topics it owns (`sns_topic_arns`): a message on any other topic is refused.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub mod sns;

use super::carrier::{
    require, ApiUrlSetting, Carrier, CarrierConfig, Receives, TestWebhook, WebhookHandler,
    WebhookRoute,
};
use super::Secret;
use super::{
    carries, email_text, inbound_email_text, named_failure, network_error, retry_after,
    Credentials, MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, EmailAddress, InboundMessage, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The SigV4 service name of SES (v1 and v2 alike).
const SERVICE: &str = "ses";
/// SES error names a retry can fix (besides 429 and 5xx).
const TRANSIENT_ERRORS: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];
/// Carrier strings echoed into errors are cut to this length (they are untrusted input).
const MAX_ECHO: usize = 200;
/// The `EmailTags` name carrying Omni's message id; SES echoes it in every event of the mail,
/// which tells Omni's mail from other mail sent through the same configuration set.
const MESSAGE_ID_TAG: &str = "omni_message_id";

/// The Amazon SES v2 carrier.
#[derive(Clone)]
pub struct SesAdapter {
    http: reqwest::Client,
    /// `OMNI_SES_API_URL`; empty for AWS's regional endpoint.
    base_url: String,
}

impl SesAdapter {
    /// An adapter calling `base_url`, or `https://email.{region}.amazonaws.com` of each
    /// tenant's region when it is empty (`/v2/email/outbound-emails` is appended).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        SesAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    fn endpoint(&self, region: &str) -> String {
        if self.base_url.is_empty() {
            format!("https://email.{region}.amazonaws.com")
        } else {
            self.base_url.clone()
        }
    }
}

/// Whether a region name is one SES could have: it goes into the endpoint's host name.
pub fn valid_region(region: &str) -> bool {
    (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// AWS Signature Version 4 (header form), as far as SES needs it.
pub mod sigv4 {
    use super::*;

    type HmacSha256 = Hmac<Sha256>;

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// RFC 3986 percent-encoding of everything but unreserved characters (SigV4's
    /// `UriEncode`); `/` kept when encoding a path.
    fn uri_encode(input: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(input.len());
        for b in input.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// What signing needs from a request.
    pub struct Request<'a> {
        /// `GET`, `POST`, …
        pub method: &'a str,
        /// The full URL (scheme, host, optional port, path, query).
        pub url: &'a url::Url,
        /// Headers to sign besides `host` and `x-amz-date` (lower-case names).
        pub headers: &'a [(&'a str, &'a str)],
        /// The body.
        pub payload: &'a [u8],
    }

    /// The signing identity and scope.
    pub struct Scope<'a> {
        /// Access key id.
        pub access_key_id: &'a str,
        /// Secret access key.
        pub secret_access_key: &'a str,
        /// Region, e.g. `us-east-1`.
        pub region: &'a str,
        /// Service, e.g. `ses`.
        pub service: &'a str,
    }

    /// The headers to add to the request: `x-amz-date` and `authorization`.
    pub fn sign(
        request: &Request<'_>,
        scope: &Scope<'_>,
        at: DateTime<Utc>,
    ) -> [(String, String); 2] {
        let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let host = match (request.url.host_str(), request.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .chain([
                ("host".into(), host),
                ("x-amz-date".into(), amz_date.clone()),
            ])
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut query: Vec<(String, String)> = request
            .url
            .query_pairs()
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let path = uri_encode(request.url.path(), true);
        let canonical_request = format!(
            "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
            request.method,
            sha256_hex(request.payload)
        );
        let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = [date, scope.region, scope.service, "aws4_request"]
            .iter()
            .fold(
                format!("AWS4{}", scope.secret_access_key).into_bytes(),
                |key, part| hmac(&key, part.as_bytes()),
            );
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        [
            ("x-amz-date".into(), amz_date),
            (
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
                    scope.access_key_id
                ),
            ),
        ]
    }
}

/// The JSON body of a `SendEmail`.
fn message_body(message: &OutboundMessage) -> Value {
    let text = email_text(message);
    json!({
        "FromEmailAddress": message.from.as_str(),
        "Destination": { "ToAddresses": [message.to.as_str()] },
        "Content": { "Simple": {
            "Subject": { "Data": message.subject.as_deref().unwrap_or_default(), "Charset": "UTF-8" },
            "Body": { "Text": { "Data": text, "Charset": "UTF-8" } },
        }},
        "EmailTags": [{ "Name": MESSAGE_ID_TAG, "Value": message.id.to_string() }],
    })
}

/// SES's error answer: the exception name (header, or the body's `__type`/`code`) as the
/// code, its `message`.
fn failure(
    status: reqwest::StatusCode,
    error_type: Option<String>,
    body: &[u8],
    wait: Option<std::time::Duration>,
) -> SendError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or_default();
    let name = error_type
        .or_else(|| {
            ["__type", "code", "Code"]
                .iter()
                .find_map(|k| parsed.get(*k).and_then(Value::as_str).map(str::to_owned))
        })
        // `X-Amzn-ErrorType` may carry `Name:http://…`, `__type` a `namespace#Name`.
        .map(|n| {
            let n = n.split(':').next().unwrap_or_default();
            n.rsplit('#')
                .next()
                .unwrap_or_default()
                .chars()
                .take(MAX_ECHO)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty());
    let text = ["message", "Message"]
        .iter()
        .find_map(|k| parsed.get(*k).and_then(Value::as_str))
        .map(|m| format!("SES: {}", m.chars().take(MAX_ECHO).collect::<String>()))
        .unwrap_or_else(|| format!("SES answered HTTP {}", status.as_u16()));
    if name
        .as_deref()
        .is_some_and(|n| TRANSIENT_ERRORS.contains(&n))
    {
        return SendError::Transient {
            code: name,
            message: text,
            retry_after: wait,
        };
    }
    named_failure(status, name, text, wait)
}

#[async_trait]
impl MessagingProviderAdapter for SesAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ses
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Email]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Ses(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not SES's"));
        };
        carries("SES", self.channels(), message)?;
        let url = url::Url::parse(&format!(
            "{}/v2/email/outbound-emails",
            self.endpoint(&creds.region)
        ))
        .map_err(|_| SendError::permanent(None, "the SES endpoint is not a URL"))?;
        let payload = serde_json::to_vec(&message_body(message))
            .map_err(|_| SendError::permanent(None, "the message does not serialise"))?;
        let content_type = "application/json";
        let signed = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                url: &url,
                headers: &[("content-type", content_type)],
                payload: &payload,
            },
            &sigv4::Scope {
                access_key_id: &creds.access_key_id,
                secret_access_key: creds.secret_access_key.expose(),
                region: &creds.region,
                service: SERVICE,
            },
            Utc::now(),
        );
        let mut request = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(payload);
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(network_error)?;
        if !status.is_success() {
            return Err(failure(status, error_type, &bytes, wait));
        }
        // Accepted without an id still means accepted: never retried, never sent twice.
        let id = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("MessageId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                SendError::permanent(None, "SES accepted the message without a MessageId")
            })?;
        Ok(SendResult {
            provider: ProviderKind::Ses,
            provider_message_id: id,
            status: DeliveryStatus::Sent,
            raw_status: "accepted".into(),
        })
    }

    /// SES reports through EventBridge ([`status_from_event`]) or SNS ([`sns`], verified by
    /// certificate, not by tenant credentials): never through the generic webhook path.
    fn verify_inbound(
        &self,
        _request: &WebhookRequest,
        _credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        Err(VerifyError::Unsupported(
            "SES reaches Omni through EventBridge or SNS".into(),
        ))
    }

    fn normalize_inbound(
        &self,
        _request: &WebhookRequest,
    ) -> Result<Vec<WebhookEvent>, ParseError> {
        Err(ParseError::new(
            "SES reaches Omni through EventBridge or SNS",
        ))
    }
}

/// The status an SES event record (an EventBridge SES event's `detail`) reports about a
/// message Omni sent, routed by its sender address and keyed by SES's `MessageId` (what
/// [`SesAdapter::send`] recorded). `None` for mail Omni did not send (no `omni_message_id`
/// tag) and for events that say nothing final: `DeliveryDelay` (SES still retries), `Click`,
/// `Subscription`. Bounces of every type are final: SES publishes a transient one only once it
/// has stopped retrying (a later one, e.g. an auto-reply, cannot undo a delivery: statuses
/// only move forward).
pub fn status_from_event(detail: &Value) -> Result<Option<StatusUpdate>, ParseError> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let event_type = text(detail, "eventType")
        .ok_or_else(|| ParseError::new("the SES event has no eventType"))?;
    let mail = detail
        .get("mail")
        .ok_or_else(|| ParseError::new("the SES event has no mail object"))?;
    // Tags come back as lists of values.
    if mail
        .pointer(&format!("/tags/{MESSAGE_ID_TAG}/0"))
        .and_then(Value::as_str)
        .is_none()
    {
        return Ok(None);
    }
    let (status, code, message) = match event_type.as_str() {
        "Send" => (DeliveryStatus::Sent, None, None),
        "Delivery" => (DeliveryStatus::Delivered, None, None),
        "Open" => (DeliveryStatus::Read, None, None),
        "Bounce" => {
            let bounce = detail.get("bounce").unwrap_or(&Value::Null);
            let kind = [text(bounce, "bounceType"), text(bounce, "bounceSubType")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            let diagnostic = bounce
                .pointer("/bouncedRecipients/0")
                .and_then(|r| text(r, "diagnosticCode").or_else(|| text(r, "status")));
            (
                DeliveryStatus::Undelivered,
                Some(kind).filter(|k| !k.is_empty()),
                diagnostic,
            )
        }
        "Complaint" => (
            DeliveryStatus::Undelivered,
            Some("Complaint".to_owned()),
            detail
                .get("complaint")
                .and_then(|c| text(c, "complaintFeedbackType"))
                .map(|t| format!("the recipient complained ({t})")),
        ),
        "Reject" => (
            DeliveryStatus::Failed,
            Some("Reject".to_owned()),
            detail.get("reject").and_then(|r| text(r, "reason")),
        ),
        // Published as "Rendering Failure"; the API's enum spells it without the space.
        "Rendering Failure" | "RenderingFailure" => (
            DeliveryStatus::Failed,
            Some("RenderingFailure".to_owned()),
            detail.get("failure").and_then(|f| text(f, "errorMessage")),
        ),
        _ => return Ok(None),
    };
    let id = text(mail, "messageId")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ParseError::new("the SES event has no mail.messageId"))?;
    let source =
        text(mail, "source").ok_or_else(|| ParseError::new("the SES event has no mail.source"))?;
    let tenant =
        mailbox(&source).ok_or_else(|| ParseError::new("mail.source is not an email address"))?;
    let echo = |s: String| s.chars().take(MAX_ECHO).collect::<String>();
    Ok(Some(StatusUpdate {
        provider: ProviderKind::Ses,
        provider_message_id: echo(id),
        status,
        raw_status: echo(event_type),
        error_code: code.map(echo),
        error_message: message.map(|m| format!("SES: {}", echo(m))),
        tenant_number: Some(Address::Email(tenant)),
        at: Utc::now(),
    }))
}

/// The address of `Name <address>` or of a bare address.
fn mailbox(value: &str) -> Option<EmailAddress> {
    let value = value.trim();
    let address = value
        .rsplit_once('<')
        .and_then(|(_, rest)| rest.strip_suffix('>'))
        .unwrap_or(value);
    EmailAddress::parse(address).ok()
}

/// What an SES message published to SNS says.
#[derive(Debug, Clone, PartialEq)]
pub enum SesNotification {
    /// An email a receipt rule received.
    Received(ReceivedEmail),
    /// An event-publishing record, read as [`status_from_event`] reads EventBridge's.
    Status(Option<StatusUpdate>),
    /// Acknowledged and dropped; why, for the log.
    Ignored(&'static str),
}

/// An email SES received, before it is routed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEmail {
    /// The envelope recipients SES accepted, in its order: the first that is a tenant's
    /// address routes the email.
    pub recipients: Vec<EmailAddress>,
    /// The email, addressed to the first recipient until routed.
    pub message: InboundMessage,
}

/// Reads the `Message` of an SNS notification from SES: a receipt notification
/// (`notificationType: "Received"`), an event-publishing record (`eventType`), or something
/// Omni acknowledges and drops (feedback notifications, which carry no Omni message tag: an
/// event destination reports the same and is what Omni reads; SES's topic test message;
/// email judged spam or a virus; email stored to S3 rather than carried in `content`).
pub fn parse_notification(message: &str) -> Result<SesNotification, ParseError> {
    let value: Value = serde_json::from_str(message)
        .map_err(|_| ParseError::new("the SNS message is not SES JSON"))?;
    if value.get("eventType").is_some() {
        return status_from_event(&value).map(SesNotification::Status);
    }
    match value.get("notificationType").and_then(Value::as_str) {
        Some("Received") => received_email(&value),
        Some("Bounce" | "Complaint" | "Delivery") => Ok(SesNotification::Ignored(
            "SES feedback notification (use a configuration set's SNS event destination)",
        )),
        Some("AmazonSnsSubscriptionSucceeded") => {
            Ok(SesNotification::Ignored("SES topic test message"))
        }
        _ => Err(ParseError::new("not an SES notification")),
    }
}

fn received_email(value: &Value) -> Result<SesNotification, ParseError> {
    let receipt = value.get("receipt").unwrap_or(&Value::Null);
    let failed = |verdict: &str| {
        receipt
            .pointer(&format!("/{verdict}/status"))
            .and_then(Value::as_str)
            == Some("FAIL")
    };
    if failed("spamVerdict") || failed("virusVerdict") {
        return Ok(SesNotification::Ignored(
            "received email failed SES's spam or virus scan",
        ));
    }
    let Some(content) = value.get("content").and_then(Value::as_str) else {
        return Ok(SesNotification::Ignored(
            "received email without content (S3 action): unsupported",
        ));
    };
    let raw = match receipt.pointer("/action/encoding").and_then(Value::as_str) {
        Some("BASE64") => {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, content.trim())
                .map_err(|_| ParseError::new("the email content is not base64"))?
        }
        _ => content.as_bytes().to_vec(),
    };
    let id = value
        .pointer("/mail/messageId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ParseError::new("the SES receipt has no mail.messageId"))?;
    let recipients: Vec<EmailAddress> = receipt
        .get("recipients")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(mailbox)
        .collect();
    let first = recipients
        .first()
        .cloned()
        .ok_or_else(|| ParseError::new("the SES receipt has no recipient"))?;
    let email = mail_parser::MessageParser::default()
        .parse(&raw)
        .ok_or_else(|| ParseError::new("the email content is not MIME"))?;
    let header_from = email.from().and_then(|a| a.first());
    // The envelope sender first, as for SendGrid: headers can name anyone.
    let from = value
        .pointer("/mail/source")
        .and_then(Value::as_str)
        .and_then(mailbox)
        .or_else(|| header_from.and_then(|a| a.address()).and_then(mailbox))
        .ok_or_else(|| ParseError::new("the email has no sender address"))?;
    let echo = |s: &str| s.chars().take(MAX_ECHO).collect::<String>();
    let body = email
        .body_text(0)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| {
            email
                .subject()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(echo)
        });
    let body = inbound_email_text(
        body,
        email.attachments().map(|file| {
            use mail_parser::MimeHeaders;
            echo(file.attachment_name().unwrap_or("unnamed"))
        }),
    );
    Ok(SesNotification::Received(ReceivedEmail {
        recipients,
        message: InboundMessage {
            id: uuid::Uuid::now_v7(),
            provider: ProviderKind::Ses,
            provider_message_id: echo(id),
            channel: Channel::Email,
            from: Address::Email(from),
            to: Address::Email(first),
            body,
            media: Vec::new(),
            profile_name: header_from
                .and_then(|a| a.name())
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(echo),
            received_at: Utc::now(),
            auto_submitted: crate::domain::auto_submitted(email.header_raw("Auto-Submitted")),
        },
    }))
}

/// Amazon SES credentials: an IAM access key allowed `ses:SendEmail`, and the region whose SES
/// the tenant's sending identity is verified in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SesCredentials {
    /// Access key id (`AKIA…`, not secret).
    pub access_key_id: String,
    /// Secret access key (signs each request, SigV4).
    pub secret_access_key: Secret,
    /// AWS region, e.g. `us-east-1`; it names the endpoint host.
    pub region: String,
    /// The Amazon SNS topics (ARNs, not secret) whose messages to `/webhooks/ses` are this
    /// tenant's: received email and SES events published to them. A message on a topic no
    /// tenant lists is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sns_topic_arns: Vec<String>,
}

impl CarrierConfig for SesCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["secret_access_key"];

    fn validate(&self) -> Result<(), String> {
        // It goes into the Authorization header's credential: no separators.
        require(
            !self.access_key_id.is_empty()
                && self
                    .access_key_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric()),
            "access_key_id (letters and digits)",
        )?;
        require(
            !self.secret_access_key.expose().is_empty(),
            "secret_access_key",
        )?;
        require(valid_region(&self.region), "region (e.g. us-east-1)")?;
        require(
            self.sns_topic_arns.len() <= 32
                && self.sns_topic_arns.iter().all(|a| sns::valid_topic_arn(a)),
            "sns_topic_arns (at most 32 SNS topic ARNs)",
        )
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.secret_access_key.expose()]
    }

    fn example() -> Self {
        SesCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("ses-secret-access-key-secret"),
            region: "us-east-1".into(),
            sns_topic_arns: Vec::new(),
        }
    }
}

/// The Omni declaration of Ses.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Ses,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_SES_API_URL",
        default: "",
        help: "Amazon SES v2 base URL; empty for each tenant region's own (`https://email.{region}.amazonaws.com`).",
    }),
    webhooks: &[WebhookRoute::post("/webhooks/ses", Receives::Both).served_by(WebhookHandler::AmazonSns)],
    adapter: |http, base_url| Arc::new(SesAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Unsupported(
        "SES reaches Omni through Amazon SNS, signed with AWS's own key: `omni webhook send` \
         cannot sign as AWS. Send a real email to an address of an SES receipt rule with an SNS \
         action (see README, Amazon SES), or run the e2e tests, which serve a test certificate \
         through OMNI_SNS_CERT_URL_PREFIX",
    ),
    openapi: OPENAPI,
};

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/ses": {"post": {"summary": "Amazon SES over Amazon SNS (an HTTPS subscription to the tenant's SNS topics): SubscriptionConfirmation (confirmed by calling its SubscribeURL when the topic is in some tenant's SES sns_topic_arns), Notification (an SES receipt notification from a receipt rule's SNS action: the email's raw MIME in content, UTF8 or BASE64, routed by the first receipt recipient that is a tenant's address; or an SES event-publishing record from a configuration set's SNS destination, moving the status of an email Omni sent) and UnsubscribeConfirmation (acknowledged). Every message must carry a valid SNS signature (SignatureVersion 1 or 2) under the certificate at its SigningCertURL (https://sns.<region>.amazonaws.com/…pem, or OMNI_SNS_CERT_URL_PREFIX), and its TopicArn must be one the routed tenant lists. Spam or virus verdicts of FAIL, receipts without content (S3 action), SES feedback notifications and events about mail Omni did not send are acknowledged and dropped", "requestBody": {"required": true, "content": {"text/plain": {"schema": {"$ref": "#/components/schemas/SnsMessage"}}, "application/json": {"schema": {"$ref": "#/components/schemas/SnsMessage"}}}}, "responses": {"200": {"description": "accepted (stored, confirmed, or verified and dropped)", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}, "502": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}
}, "schemas": {
"SnsMessage": {"type": "object", "description": "An Amazon SNS HTTP(S) message (JSON, sent as text/plain)", "required": ["Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion", "Signature", "SigningCertURL"], "properties": {"Type": {"type": "string", "enum": ["SubscriptionConfirmation", "Notification", "UnsubscribeConfirmation"]}, "MessageId": {"type": "string"}, "TopicArn": {"type": "string", "description": "must be listed in the tenant's SES sns_topic_arns"}, "Subject": {"type": "string"}, "Message": {"type": "string", "description": "for SES: a JSON receipt notification or event record, as a string"}, "Timestamp": {"type": "string"}, "SignatureVersion": {"type": "string", "enum": ["1", "2"], "description": "1: RSA PKCS#1 v1.5 over SHA-1; 2: over SHA-256"}, "Signature": {"type": "string", "description": "base64"}, "SigningCertURL": {"type": "string", "format": "uri"}, "SubscribeURL": {"type": "string", "format": "uri", "description": "confirmations only"}, "Token": {"type": "string", "description": "confirmations only"}, "UnsubscribeURL": {"type": "string", "format": "uri"}}}
}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Address, TenantId};
    use crate::providers::{Secret, SesCredentials};
    use uuid::Uuid;
    use wiremock::matchers::{header_regex, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// AWS's published SigV4 example ("Examples of the complete Signature Version 4 signing
    /// process", IAM `ListUsers`, 2015-08-30T12:36:00Z).
    #[test]
    fn signs_the_aws_documentation_example() {
        let url = url::Url::parse("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
            .unwrap();
        let at = DateTime::parse_from_rfc3339("2015-08-30T12:36:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let [(date_name, date), (auth_name, authorization)] = sigv4::sign(
            &sigv4::Request {
                method: "GET",
                url: &url,
                headers: &[(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                payload: b"",
            },
            &sigv4::Scope {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                region: "us-east-1",
                service: "iam",
            },
            at,
        );
        assert_eq!(
            (date_name.as_str(), date.as_str()),
            ("x-amz-date", "20150830T123600Z")
        );
        assert_eq!(auth_name, "authorization");
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    fn creds() -> Credentials {
        Credentials::Ses(SesCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("ses-secret-access-key"),
            region: "eu-west-1".into(),
            sns_topic_arns: Vec::new(),
        })
    }

    fn outbound() -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("north").unwrap(),
            channel: Channel::Email,
            from: Address::from_stored("dispatch@north.example").unwrap(),
            to: Address::from_stored("jane@example.org").unwrap(),
            body: Some("Units are on the way".into()),
            media: Vec::new(),
            template: None,
            subject: Some("Your call".into()),
            status_callback: None,
        }
    }

    #[tokio::test]
    async fn send_posts_send_email_signed_for_ses() {
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v2/email/outbound-emails"))
            .and(header_regex(
                "authorization",
                "^AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/[0-9]{8}/eu-west-1/ses/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature=[0-9a-f]{64}$",
            ))
            .and(header_regex("x-amz-date", "^[0-9]{8}T[0-9]{6}Z$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"MessageId": "0100018c-ses-id"})))
            .expect(1)
            .mount(&api)
            .await;
        let message = outbound();
        let sent = SesAdapter::new(reqwest::Client::new(), &api.uri())
            .send(&creds(), &message)
            .await
            .unwrap();
        assert_eq!(sent.provider_message_id, "0100018c-ses-id");
        let requests = api.received_requests().await.unwrap();
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body,
            json!({
                "FromEmailAddress": "dispatch@north.example",
                "Destination": {"ToAddresses": ["jane@example.org"]},
                "Content": {"Simple": {
                    "Subject": {"Data": "Your call", "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": "Units are on the way", "Charset": "UTF-8"}}}},
                "EmailTags": [{"Name": "omni_message_id", "Value": message.id.to_string()}],
            })
        );
    }

    /// HTTP status, `X-Amzn-ErrorType`, body, transient, expected code.
    type ErrorCase = (u16, Option<&'static str>, Value, bool, Option<&'static str>);

    #[tokio::test]
    async fn send_errors_are_mapped() {
        let cases: [ErrorCase; 5] = [
            (
                400,
                Some("MessageRejected:http://internal.amazon.com/coral/"),
                json!({"message": "Email address is not verified."}),
                false,
                Some("MessageRejected"),
            ),
            (
                429,
                None,
                json!({"__type": "com.amazonaws#TooManyRequestsException", "message": "slow down"}),
                true,
                Some("TooManyRequestsException"),
            ),
            (
                400,
                None,
                json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
                false,
                Some("ThrottlingException"),
            ),
            (503, None, json!({}), true, None),
            (
                403,
                None,
                json!({"message": "The request signature we calculated does not match"}),
                false,
                None,
            ),
        ];
        for (status, error_type, body, transient, code) in cases {
            let api = MockServer::start().await;
            let mut response = ResponseTemplate::new(status).set_body_json(body.clone());
            if let Some(t) = error_type {
                response = response.insert_header("x-amzn-errortype", t);
            }
            Mock::given(method("POST"))
                .respond_with(response)
                .mount(&api)
                .await;
            let err = SesAdapter::new(reqwest::Client::new(), &api.uri())
                .send(&creds(), &outbound())
                .await
                .unwrap_err();
            // ThrottlingException is SES's throttling even as a 400.
            let transient = transient || code == Some("ThrottlingException");
            assert_eq!(err.is_transient(), transient, "{status}: {err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            if let Some(text) = body["message"].as_str() {
                assert!(err.message().contains(text), "{err:?}");
            }
        }
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&api)
            .await;
        let err = SesAdapter::new(reqwest::Client::new(), &api.uri())
            .send(&creds(), &outbound())
            .await
            .unwrap_err();
        assert!(!err.is_transient());
    }

    #[test]
    fn the_regional_endpoint_is_used_without_an_override_and_regions_are_checked() {
        let adapter = SesAdapter::new(reqwest::Client::new(), "");
        assert_eq!(
            adapter.endpoint("eu-west-1"),
            "https://email.eu-west-1.amazonaws.com"
        );
        for bad in ["", "EU-WEST-1", "eu-west-1.evil.example", "-x", "a/b"] {
            assert!(!valid_region(bad), "{bad}");
        }
        let ok = json!({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "very-secret-key", "region": "us-east-1"});
        let c = Credentials::from_admin_json(ProviderKind::Ses, ok.clone()).unwrap();
        let shown = format!("{c:?} {}", c.redacted());
        assert!(!shown.contains("very-secret-key"), "{shown}");
        assert_eq!(c.secrets(), vec!["very-secret-key"]);
        for (field, value) in [
            ("access_key_id", "AKIA/x"),
            ("secret_access_key", ""),
            ("region", "us east"),
        ] {
            let mut bad = ok.clone();
            bad[field] = json!(value);
            let err = Credentials::from_admin_json(ProviderKind::Ses, bad).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
        let mut topics = ok.clone();
        topics["sns_topic_arns"] = json!(["arn:aws:sns:us-east-1:123456789012:omni-ses"]);
        let c = Credentials::from_admin_json(ProviderKind::Ses, topics.clone()).unwrap();
        assert_eq!(
            c.redacted()["sns_topic_arns"],
            json!(["arn:aws:sns:us-east-1:123456789012:omni-ses"]),
            "not a secret"
        );
        topics["sns_topic_arns"] = json!(["arn:aws:sqs:us-east-1:123456789012:queue"]);
        let err = Credentials::from_admin_json(ProviderKind::Ses, topics).unwrap_err();
        assert!(err.contains("sns_topic_arns"), "{err}");
    }

    /// The `detail` of tests/fixtures/ses_eventbridge_<name>.json (EventBridge SES events).
    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/ses_eventbridge_{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        event["detail"].clone()
    }

    #[test]
    fn events_map_to_statuses_routed_by_the_sender() {
        let update = status_from_event(&fixture("delivery")).unwrap().unwrap();
        assert_eq!(
            update.provider_message_id,
            "0100019a8c1d2e3f-7b1c9f4e-3a2d-4e5f-8a6b-9c0d1e2f3a4b-000000"
        );
        assert_eq!(update.provider, ProviderKind::Ses);
        assert_eq!(
            (update.status, update.raw_status.as_str()),
            (DeliveryStatus::Delivered, "Delivery")
        );
        assert_eq!(
            update.tenant_number.as_ref().map(Address::as_str),
            Some("dispatch@north.example"),
            "the display name is dropped"
        );
        assert_eq!(update.error_code, None);

        let cases = [
            ("send", DeliveryStatus::Sent, None, None),
            (
                "bounce",
                DeliveryStatus::Undelivered,
                Some("Permanent/General"),
                Some("SES: smtp; 550 5.1.1 user unknown"),
            ),
            (
                "complaint",
                DeliveryStatus::Undelivered,
                Some("Complaint"),
                Some("SES: the recipient complained (abuse)"),
            ),
            (
                "reject",
                DeliveryStatus::Failed,
                Some("Reject"),
                Some("SES: Bad content"),
            ),
            (
                "rendering_failure",
                DeliveryStatus::Failed,
                Some("RenderingFailure"),
                Some("SES: Attribute 'attributeName' is not present in the rendering data."),
            ),
        ];
        for (name, status, code, message) in cases {
            let u = status_from_event(&fixture(name)).unwrap().unwrap();
            assert_eq!(u.status, status, "{name}");
            assert_eq!(u.error_code.as_deref(), code, "{name}");
            assert_eq!(u.error_message.as_deref(), message, "{name}");
        }
    }

    #[test]
    fn delays_other_mail_and_unknown_events_move_nothing() {
        assert_eq!(status_from_event(&fixture("delivery_delay")).unwrap(), None);
        let mut untagged = fixture("delivery");
        untagged["mail"]["tags"]
            .as_object_mut()
            .unwrap()
            .remove(MESSAGE_ID_TAG);
        assert_eq!(
            status_from_event(&untagged).unwrap(),
            None,
            "not Omni's mail"
        );
        let mut click = fixture("delivery");
        click["eventType"] = json!("Click");
        assert_eq!(status_from_event(&click).unwrap(), None);

        // A transient bounce is final too (SES gave up retrying); the diagnostic falls back to
        // the recipient's status code.
        let mut soft = fixture("bounce");
        soft["bounce"]["bounceType"] = json!("Transient");
        soft["bounce"]["bounceSubType"] = json!("MailboxFull");
        soft["bounce"]["bouncedRecipients"][0]
            .as_object_mut()
            .unwrap()
            .remove("diagnosticCode");
        let u = status_from_event(&soft).unwrap().unwrap();
        assert_eq!(u.status, DeliveryStatus::Undelivered);
        assert_eq!(u.error_code.as_deref(), Some("Transient/MailboxFull"));
        assert_eq!(u.error_message.as_deref(), Some("SES: 5.1.1"));
    }

    #[test]
    fn malformed_events_are_parse_errors() {
        let delivery = fixture("delivery");
        for pointer in ["/eventType", "/mail", "/mail/messageId", "/mail/source"] {
            let mut bad = delivery.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            bad.pointer_mut(if parent.is_empty() { "" } else { parent })
                .and_then(Value::as_object_mut)
                .unwrap()
                .remove(key);
            assert!(status_from_event(&bad).is_err(), "{pointer}");
        }
        let mut bad = delivery.clone();
        bad["mail"]["source"] = json!("Dispatch <not an address>");
        assert!(status_from_event(&bad).is_err());
        assert!(status_from_event(&json!("a string")).is_err());
    }

    /// tests/fixtures/ses_sns_received.json: an SES receipt notification (SNS action, UTF8).
    fn received() -> Value {
        let path = format!(
            "{}/../../tests/fixtures/ses_sns_received.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn read(notification: &Value) -> SesNotification {
        parse_notification(&notification.to_string()).unwrap()
    }

    #[test]
    fn received_email_is_read_from_the_mime_content() {
        let SesNotification::Received(email) = read(&received()) else {
            panic!("not received email");
        };
        let m = &email.message;
        assert_eq!(
            email.recipients,
            vec![EmailAddress::parse("dispatch@north.example").unwrap()]
        );
        assert_eq!(m.provider, ProviderKind::Ses);
        assert_eq!(m.channel, Channel::Email);
        assert_eq!(
            m.provider_message_id,
            "o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1"
        );
        assert_eq!(m.from.as_str(), "jane@example.org");
        assert_eq!(m.to.as_str(), "dispatch@north.example");
        assert_eq!(
            m.body.as_deref(),
            Some("There is smoke coming from 12 Elm Street.")
        );
        assert_eq!(m.profile_name.as_deref(), Some("Jane Doe"));

        // BASE64 encoding (the action's other choice) reads the same.
        let mut encoded = received();
        let raw = encoded["content"].as_str().unwrap().to_owned();
        encoded["content"] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            raw
        ));
        encoded["receipt"]["action"]["encoding"] = json!("BASE64");
        let SesNotification::Received(again) = read(&encoded) else {
            panic!("not received email");
        };
        assert_eq!(again.message.body, m.body);

        // No text part: the subject; attachments are named; the header sender when the
        // envelope has none; several recipients kept in order.
        let mut bare = received();
        bare["content"] = json!(
            "From: Jane <jane@example.org>\r\nSubject: Smoke\r\nContent-Type: multipart/mixed; \
             boundary=b\r\n\r\n--b\r\nContent-Type: image/png\r\nContent-Disposition: \
             attachment; filename=elm.png\r\n\r\niVBOR\r\n--b--\r\n"
        );
        bare["mail"]["source"] = json!("");
        bare["receipt"]["recipients"] =
            json!(["other@elsewhere.example", "dispatch@north.example"]);
        let SesNotification::Received(bare) = read(&bare) else {
            panic!("not received email");
        };
        assert_eq!(
            bare.message.body.as_deref(),
            Some("Smoke\n[attachment not kept: elm.png]")
        );
        assert_eq!(bare.message.from.as_str(), "jane@example.org");
        assert_eq!(bare.recipients.len(), 2);
    }

    #[test]
    fn spam_s3_feedback_and_test_messages_are_dropped_and_events_read() {
        for verdict in ["spamVerdict", "virusVerdict"] {
            let mut spam = received();
            spam["receipt"][verdict]["status"] = json!("FAIL");
            assert!(
                matches!(read(&spam), SesNotification::Ignored(_)),
                "{verdict}"
            );
        }
        let mut s3 = received();
        s3.as_object_mut().unwrap().remove("content");
        s3["receipt"]["action"] = json!({"type": "S3", "bucketName": "mail"});
        assert!(matches!(read(&s3), SesNotification::Ignored(_)));
        for kind in [
            "Bounce",
            "Complaint",
            "Delivery",
            "AmazonSnsSubscriptionSucceeded",
        ] {
            let feedback = json!({"notificationType": kind, "mail": {}});
            assert!(
                matches!(read(&feedback), SesNotification::Ignored(_)),
                "{kind}"
            );
        }
        // Event publishing over SNS is the EventBridge detail as is.
        let SesNotification::Status(Some(update)) = read(&fixture("delivery")) else {
            panic!("not a status");
        };
        let expected = status_from_event(&fixture("delivery")).unwrap().unwrap();
        assert_eq!(update.at.timestamp() / 60, expected.at.timestamp() / 60);
        assert_eq!(
            StatusUpdate {
                at: expected.at,
                ..update
            },
            expected
        );
    }

    #[test]
    fn malformed_notifications_are_parse_errors() {
        for bad in ["", "null", "[]", "{}", r#"{"notificationType":"Other"}"#] {
            assert!(parse_notification(bad).is_err(), "{bad}");
        }
        for (pointer, value) in [
            ("/mail/messageId", json!("")),
            ("/receipt/recipients", json!(["not an address"])),
            ("/mail/source", json!(null)),
        ] {
            let mut bad = received();
            *bad.pointer_mut(pointer).unwrap() = value;
            if pointer == "/mail/source" {
                bad["content"] = json!("Subject: no sender\r\n\r\nhi\r\n");
            }
            assert!(parse_notification(&bad.to_string()).is_err(), "{pointer}");
        }
        let mut bad = received();
        bad["receipt"]["action"]["encoding"] = json!("BASE64");
        bad["content"] = json!("not base64!");
        assert!(parse_notification(&bad.to_string()).is_err());
    }
}
