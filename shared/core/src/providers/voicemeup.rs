//! VoiceMeUp: `queue_sms` out, the SMS webhook in, and its split MMS.
//!
//! Wire facts (dossier §11, from roomkit's VoiceMeUp provider; VoiceMeUp publishes no
//! webhook reference): a send is `POST {base}/queue_sms` with the form fields `username`,
//! `auth_token`, `source_number`, `destination_number` (digits, no `+`), `message` and at most
//! one `attachment` URL. The answer is JSON: `response_details.response_status` (`error` on
//! failure) and `response_details.response_messages.message` (one object or a list) of
//! `{code, _content}`; on success the message coded `queued_sms_hash` holds the id.
//!
//! Inbound messages carry `sms_hash`, `source_number`, `destination_number`,
//! `datetime_transmission`, `direction`, `message`, `attachment` (or `attachment_url`) and
//! `attachment_mime_type` (or `attachment_type`); the body encoding is unconfirmed, so JSON and
//! forms are both read. VoiceMeUp signs nothing: like VoIP.ms, the callback URL configured at
//! VoiceMeUp carries `?secret=<webhook_secret>`, compared in constant time.
//!
//! An MMS arrives as two webhooks: the text with an `attachment` that is an HTML wrapper
//! (`….mms.html`, or `text/html` with `.mms.` in the URL), not media, then the media without
//! text. Both carry the same `source_number:destination_number:datetime_transmission`; they
//! become [`WebhookEvent::Part`]s under that key, which the services merge in the store
//! (either order, any redelivery) into one message with the ids `<text hash>+<media hash>`.
//! The wrapper URL is never kept as media. A lone media half waits too (its text half may be
//! late), so a picture sent without text reaches the tenant after the configured wait.
//!
//! Sending several media is refused rather than split into one request per attachment: the
//! requests could not be made atomic, so a retry after a partial failure would send some
//! pictures twice, and one message would get several carrier ids.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::carrier::{
    guess_content_type, require, strong, ApiUrlSetting, Carrier, CarrierConfig, Receives,
    SigningKey, TestInbound, TestWebhook, WebhookRoute,
};
use super::Secret;
use super::{
    check_url_secret, post_form_for_json, Credentials, MessagingProviderAdapter, ParseError,
    VerifyError, WebhookRequest,
};
use crate::domain::{
    Channel, DeliveryStatus, InboundMessage, Media, MessagePart, OutboundMessage, PartRole,
    ProviderKind, SendError, SendResult, WebhookEvent, E164,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// VoiceMeUp's longest message (roomkit splits longer text at this many characters).
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// The success message code whose content is the id of the queued message.
const QUEUED_HASH_CODE: &str = "queued_sms_hash";
/// Carrier strings echoed into errors are cut to this length (they are untrusted input).
const MAX_ECHO: usize = 64;

/// The VoiceMeUp carrier.
#[derive(Clone)]
pub struct VoicemeupAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl VoicemeupAdapter {
    /// An adapter calling the API at `base_url`
    /// (`https://clients.voicemeup.com/api/v1.1/json`; `/queue_sms` is appended).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        VoicemeupAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// A number as VoiceMeUp writes it: E.164 digits without the `+`.
fn digits(number: &str) -> &str {
    number.trim_start_matches('+')
}

/// Builds the `queue_sms` form, or says why the message cannot go through VoiceMeUp.
fn build_form<'a>(
    creds: &'a VoicemeupCredentials,
    message: &'a OutboundMessage,
) -> Result<Vec<(&'static str, &'a str)>, SendError> {
    if !matches!(message.channel, Channel::Sms | Channel::Mms) {
        return Err(SendError::permanent(
            None,
            format!("VoiceMeUp cannot send on the {} channel", message.channel),
        ));
    }
    let body = message.body.as_deref().unwrap_or("");
    if body.is_empty() && message.media.is_empty() {
        return Err(SendError::permanent(
            None,
            "nothing to send: no text and no media",
        ));
    }
    if message.media.len() > 1 {
        return Err(SendError::permanent(
            None,
            "VoiceMeUp takes one attachment per message; send each medium as its own message",
        ));
    }
    if body.chars().count() > MAX_MESSAGE_CHARS {
        return Err(SendError::permanent(
            None,
            format!("message longer than VoiceMeUp's {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    let mut form = vec![
        ("username", creds.username.as_str()),
        ("auth_token", creds.auth_token.expose()),
        ("source_number", digits(&message.from)),
        ("destination_number", digits(&message.to)),
        ("message", body),
    ];
    if let Some(media) = message.media.first() {
        form.push(("attachment", media.url.as_str()));
    }
    Ok(form)
}

/// `response_messages.message` as a list (VoiceMeUp sends one object or an array).
fn response_messages(details: &Value) -> Vec<&Value> {
    match details
        .get("response_messages")
        .and_then(|m| m.get("message"))
    {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    }
}

/// A field of a response message as text, cut to [`MAX_ECHO`] characters.
fn echo(message: &Value, field: &str) -> Option<String> {
    let text = match message.get(field)? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then(|| text.chars().take(MAX_ECHO).collect())
}

/// Maps VoiceMeUp's JSON answer (HTTP 200) to a send outcome.
fn map_response(body: &Value) -> Result<SendResult, SendError> {
    let Some(details) = body.get("response_details") else {
        return Err(SendError::transient(
            "VoiceMeUp answered without response_details",
            None,
        ));
    };
    let messages = response_messages(details);
    let status = details
        .get("response_status")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status == "error" {
        // VoiceMeUp documents no retryable codes: an error is a configuration or request
        // problem (credentials, numbers, content) that a retry cannot fix.
        let first = messages.first();
        let code = first.and_then(|m| echo(m, "code"));
        let text = first
            .and_then(|m| echo(m, "_content"))
            .unwrap_or_else(|| "VoiceMeUp refused the message".into());
        return Err(SendError::permanent(code, format!("VoiceMeUp: {text}")));
    }
    let id = messages
        .iter()
        .find(|m| m.get("code").and_then(Value::as_str) == Some(QUEUED_HASH_CODE))
        .and_then(|m| echo(m, "_content"));
    // Accepted without an id still means queued: a permanent error (never retried) avoids
    // sending it twice.
    let id = id.ok_or_else(|| {
        SendError::permanent(
            Some(status.chars().take(MAX_ECHO).collect()),
            "VoiceMeUp answered without a queued_sms_hash",
        )
    })?;
    Ok(SendResult {
        provider: ProviderKind::Voicemeup,
        provider_message_id: id,
        status: DeliveryStatus::Sent,
        raw_status: "queued".into(),
    })
}

/// The webhook's fields as text: a JSON object, or a form.
fn fields(request: &WebhookRequest) -> Result<Vec<(String, String)>, ParseError> {
    let body = String::from_utf8_lossy(&request.body);
    if !request.is_form() && body.trim_start().starts_with('{') {
        let Value::Object(map) = serde_json::from_str::<Value>(&body)
            .map_err(|_| ParseError::new("body is not valid JSON"))?
        else {
            return Err(ParseError::new("body is not a JSON object"));
        };
        return Ok(map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                // Numbers come unquoted from some senders (`"source_number": 15555550123`).
                Value::Number(n) => Some((k, n.to_string())),
                _ => None,
            })
            .collect());
    }
    Ok(url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect())
}

/// The first non-blank value among `names`.
fn field<'a>(fields: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|name| {
        fields
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    })
}

fn number(fields: &[(String, String)], name: &str) -> Result<E164, ParseError> {
    let raw = field(fields, &[name]).ok_or_else(|| ParseError::new(format!("missing {name}")))?;
    E164::from_carrier(raw).map_err(|e| ParseError::new(format!("{name}: {e}")))
}

/// Whether an attachment is the HTML wrapper of a split MMS's text half rather than media.
pub fn is_mms_wrapper(url: &str, mime: Option<&str>) -> bool {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_ascii_lowercase())
        .unwrap_or_else(|_| url.to_ascii_lowercase());
    let html = mime.is_some_and(|m| {
        m.trim()
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case("text/html"))
    });
    path.ends_with(".mms.html") || (html && url.to_ascii_lowercase().contains(".mms."))
}

/// What the attachment of a webhook is.
enum Attachment {
    None,
    /// The text half's wrapper: not media.
    Wrapper,
    Media(Media),
}

fn attachment(fields: &[(String, String)]) -> Attachment {
    let Some(url) = field(fields, &["attachment", "attachment_url"]) else {
        return Attachment::None;
    };
    let mime = field(fields, &["attachment_mime_type", "attachment_type"]);
    if is_mms_wrapper(url, mime) {
        return Attachment::Wrapper;
    }
    // Only http(s) links are media: Omni later fetches them.
    if !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        tracing::warn!("dropping a VoiceMeUp attachment that is not an http(s) URL");
        return Attachment::None;
    }
    Attachment::Media(Media {
        url: url.to_string(),
        content_type: mime.map(str::to_string),
    })
}

#[async_trait]
impl MessagingProviderAdapter for VoicemeupAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Voicemeup
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Voicemeup(creds) = credentials else {
            return Err(SendError::permanent(
                None,
                "credentials are not for VoiceMeUp",
            ));
        };
        let form = build_form(creds, message)?;
        let url = format!("{}/queue_sms", self.base_url);
        let body = post_form_for_json(&self.http, &url, &form, "VoiceMeUp").await?;
        map_response(&body)
    }

    /// VoiceMeUp signs nothing: the callback URL carries `secret=<webhook_secret>` in its
    /// query (never read from the body, which VoiceMeUp fills).
    fn verify_inbound(
        &self,
        request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        let Credentials::Voicemeup(creds) = credentials else {
            return Err(VerifyError::WrongCredentials);
        };
        let query: Vec<(String, String)> = url::form_urlencoded::parse(request.query().as_bytes())
            .into_owned()
            .collect();
        check_url_secret(field(&query, &["secret"]), &creds.webhook_secret)
    }

    /// Reads one inbound message, or one half of a split MMS. A webhook whose `direction` is
    /// not `inbound` reports on our own traffic, which Omni tracks itself: it yields nothing.
    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        let fields = fields(request)?;
        if field(&fields, &["direction"]).is_some_and(|d| !d.eq_ignore_ascii_case("inbound")) {
            return Ok(Vec::new());
        }
        let id =
            field(&fields, &["sms_hash"]).ok_or_else(|| ParseError::new("missing sms_hash"))?;
        let from = number(&fields, "source_number")?;
        let to = number(&fields, "destination_number")?;
        // The text as sent, untrimmed; blank text is none.
        let body = fields
            .iter()
            .find(|(k, v)| k == "message" && !v.trim().is_empty())
            .map(|(_, v)| v.clone());
        let attachment = attachment(&fields);
        let role = match (&attachment, &body) {
            (Attachment::Wrapper, _) => Some(PartRole::Text),
            (Attachment::Media(_), None) => Some(PartRole::Media),
            _ => None,
        };
        let media: Vec<Media> = match attachment {
            Attachment::Media(m) => vec![m],
            Attachment::None | Attachment::Wrapper => Vec::new(),
        };
        let message = InboundMessage {
            id: Uuid::now_v7(),
            provider: ProviderKind::Voicemeup,
            provider_message_id: id.to_string(),
            channel: if media.is_empty() {
                Channel::Sms
            } else {
                Channel::Mms
            },
            from: from.into(),
            to: to.into(),
            body,
            media,
            profile_name: None,
            received_at: Utc::now(),
            auto_submitted: false,
        };
        let time = field(&fields, &["datetime_transmission"]);
        Ok(vec![match (role, time) {
            (Some(role), Some(time)) => WebhookEvent::Part(MessagePart {
                key: format!("{}:{}:{time}", digits(&message.from), digits(&message.to)),
                role,
                message,
            }),
            // Without a transmission time the halves cannot be paired: each goes on alone.
            _ => WebhookEvent::Message(message),
        }])
    }
}

/// VoiceMeUp API credentials and the secret placed in the callback URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoicemeupCredentials {
    /// API username (not secret).
    pub username: String,
    /// API auth token.
    pub auth_token: Secret,
    /// The `secret=` query value the callback URL configured at VoiceMeUp carries
    /// (VoiceMeUp signs nothing).
    pub webhook_secret: Secret,
}

impl CarrierConfig for VoicemeupCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["auth_token", "webhook_secret"];

    fn validate(&self) -> Result<(), String> {
        require(!self.username.is_empty(), "username")?;
        require(!self.auth_token.expose().is_empty(), "auth_token")?;
        strong(&self.webhook_secret, "webhook_secret")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.auth_token.expose(), self.webhook_secret.expose()]
    }

    fn example() -> Self {
        VoicemeupCredentials {
            username: "dispatch".into(),
            auth_token: Secret::new("vmu-auth-token-secret"),
            webhook_secret: Secret::new("vmu-webhook-secret"),
        }
    }
}

/// The Omni declaration of Voicemeup.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Voicemeup,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_VOICEMEUP_API_URL",
        default: "https://clients.voicemeup.com/api/v1.1/json",
        help: "VoiceMeUp API base URL (`/queue_sms` is appended).",
    }),
    webhooks: &[WebhookRoute::post("/webhooks/voicemeup", Receives::Inbound)],
    adapter: |http, base_url| Arc::new(VoicemeupAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "JSON POST with the tenant's secret in the URL; --secret: the webhook secret; \
               --split posts an MMS as VoiceMeUp does, in two halves",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// An inbound message as VoiceMeUp posts it, the secret in the URL; with `split`, an MMS as
/// VoiceMeUp splits it: the text with an `.mms.html` wrapper, then the media alone (its id
/// the text's with `-media` appended).
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    let (from, to) = message.numbers()?;
    let secret = key.secret(|c| VoicemeupCredentials::of(c).map(|c| &c.webhook_secret))?;
    let id = message.id_or(|| Uuid::new_v4().simple().to_string());
    let sent_at = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let post = |hash: &str, text: &str, attachment: Option<(&str, &str)>| {
        let mut body = serde_json::json!({
            "sms_hash": hash,
            "source_number": from.digits(),
            "destination_number": to.digits(),
            "datetime_transmission": sent_at,
            "direction": "inbound",
            "message": text,
        });
        if let Some((url, mime)) = attachment {
            body["attachment"] = url.into();
            body["attachment_mime_type"] = mime.into();
        }
        let query = serde_urlencoded::to_string([("secret", secret.as_str())])
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(message.post(
            &format!("/webhooks/voicemeup?{query}"),
            "application/json",
            Vec::new(),
            body.to_string().into_bytes(),
        ))
    };
    let Some(media_first) = message.split else {
        if message.media.len() > 1 {
            return Err("VoiceMeUp carries one attachment per message".into());
        }
        let media = message
            .media
            .first()
            .map(|m| (m.as_str(), guess_content_type(m)));
        return Ok(vec![post(&id, &message.body, media)?]);
    };
    let [media] = message.media.as_slice() else {
        return Err("--split needs exactly one --media".into());
    };
    let wrapper = format!("https://clients.voicemeup.com/files/{id}.mms.html");
    let text = post(&id, &message.body, Some((&wrapper, "text/html")))?;
    let media = post(
        &format!("{id}-media"),
        "",
        Some((media, guess_content_type(media))),
    )?;
    Ok(if media_first {
        vec![media, text]
    } else {
        vec![text, media]
    })
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/voicemeup": {"post": {"summary": "VoiceMeUp SMS/MMS webhook (JSON or form). VoiceMeUp signs nothing: the callback URL configured at VoiceMeUp carries the tenant's webhook_secret. An MMS arrives as two posts (text with a `.mms.html` wrapper, then the media) that are merged into one message, in either order; a half whose partner does not come within OMNI_VOICEMEUP_MMS_WAIT_SECS is delivered alone by the next sweep", "parameters": [{"name": "secret", "in": "query", "required": true, "schema": {"type": "string"}, "description": "the tenant's VoiceMeUp webhook_secret, compared in constant time"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VoicemeupInbound"}}, "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/VoicemeupInbound"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {
"VoicemeupInbound": {"type": "object", "required": ["sms_hash", "source_number", "destination_number"], "properties": {"sms_hash": {"type": "string", "description": "VoiceMeUp's message id"}, "source_number": {"type": ["string", "integer"], "description": "the contact, digits without +"}, "destination_number": {"type": ["string", "integer"], "description": "the tenant number, digits without +"}, "datetime_transmission": {"type": "string", "description": "pairs the two halves of a split MMS (with both numbers)"}, "direction": {"type": "string", "description": "only `inbound` is read; anything else is acknowledged and ignored"}, "message": {"type": "string"}, "attachment": {"type": "string", "description": "one URL; `….mms.html` (or text/html with `.mms.` in the URL) is the text half's wrapper, not media"}, "attachment_url": {"type": "string", "description": "alternative name of attachment"}, "attachment_mime_type": {"type": "string"}, "attachment_type": {"type": "string", "description": "alternative name of attachment_mime_type"}}}
}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::test_support::{form_of, nanp_outbound as message};
    use crate::providers::{Secret, SignalConfig};
    use proptest::prelude::*;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const PART1: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/voicemeup_mms_part1.json"
    ));
    const PART2: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/voicemeup_mms_part2.json"
    ));
    const TOKEN: &str = "vmu-token-very-secret";
    const SECRET: &str = "vmu-hook-secret";

    fn creds() -> Credentials {
        Credentials::Voicemeup(VoicemeupCredentials {
            username: "dispatch".into(),
            auth_token: Secret::new(TOKEN),
            webhook_secret: Secret::new(SECRET),
        })
    }

    fn post(query: &str, content_type: &str, body: &str) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            url: format!("https://hooks.example.com/webhooks/voicemeup?{query}"),
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn json_post(body: &str) -> WebhookRequest {
        post(&format!("secret={SECRET}"), "application/json", body)
    }

    fn adapter(base: &str) -> VoicemeupAdapter {
        VoicemeupAdapter::new(reqwest::Client::new(), base)
    }

    fn only(events: Vec<WebhookEvent>) -> WebhookEvent {
        assert_eq!(events.len(), 1, "{events:?}");
        events.into_iter().next().unwrap()
    }

    fn success(hash: &str) -> String {
        serde_json::json!({"response_details": {"response_status": "success",
            "response_messages": {"message": [{"code": "queued_sms_hash", "_content": hash}]}}})
        .to_string()
    }

    #[test]
    fn split_mms_halves_are_parts_under_one_key() {
        let a = adapter("http://x");
        let WebhookEvent::Part(text) = only(a.normalize_inbound(&json_post(PART1)).unwrap()) else {
            panic!("part 1 is a part")
        };
        let WebhookEvent::Part(media) = only(a.normalize_inbound(&json_post(PART2)).unwrap())
        else {
            panic!("part 2 is a part")
        };
        assert_eq!(text.key, "15555550123:15555550100:2025-01-01 12:00:00");
        assert_eq!(text.key, media.key);
        assert_eq!(text.role, PartRole::Text);
        assert_eq!(media.role, PartRole::Media);
        assert_eq!(text.message.provider_message_id, "a1b2c3d4");
        assert_eq!(text.message.body.as_deref(), Some("see attached"));
        assert!(text.message.media.is_empty(), "the wrapper is not media");
        assert_eq!(text.message.channel, Channel::Sms);
        assert_eq!(text.message.from.as_str(), "+15555550123");
        assert_eq!(text.message.to.as_str(), "+15555550100");
        assert_eq!(media.message.body, None);
        assert_eq!(
            media.message.media,
            vec![Media {
                url: "https://clients.voicemeup.com/files/0001.jpg".into(),
                content_type: Some("image/jpeg".into()),
            }]
        );

        let merged = InboundMessage::merge_parts(&text.message, &media.message);
        assert_eq!(merged.provider_message_id, "a1b2c3d4+e5f6a7b8");
        assert_eq!(merged.body.as_deref(), Some("see attached"));
        assert_eq!(merged.media, media.message.media);
        assert_eq!(merged.channel, Channel::Mms);
        assert_eq!(merged.id, text.message.id);
    }

    #[test]
    fn forms_alternate_names_and_plain_messages_are_read() {
        let a = adapter("http://x");
        let form = "sms_hash=h9&source_number=15555550123&destination_number=15555550100\
            &datetime_transmission=2025-01-01+12%3A00%3A00&direction=inbound&message=hello+there";
        let req = post(
            &format!("secret={SECRET}"),
            "application/x-www-form-urlencoded",
            form,
        );
        assert_eq!(a.verify_inbound(&req, &creds()), Ok(()));
        let WebhookEvent::Message(m) = only(a.normalize_inbound(&req).unwrap()) else {
            panic!("a plain SMS is a message")
        };
        assert_eq!(m.body.as_deref(), Some("hello there"));
        assert_eq!(m.provider_message_id, "h9");

        // Text with real media is a whole MMS, not a half.
        let whole = r#"{"sms_hash":"h1","source_number":15555550123,"destination_number":"15555550100",
            "datetime_transmission":"t","message":"pic","attachment_url":"https://f.example/a.png",
            "attachment_type":"image/png"}"#;
        let WebhookEvent::Message(m) = only(a.normalize_inbound(&json_post(whole)).unwrap()) else {
            panic!("text with media is a message")
        };
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(m.media[0].content_type.as_deref(), Some("image/png"));

        // A wrapper recognised by type and `.mms.` in the URL.
        let wrapper = r#"{"sms_hash":"h2","source_number":"15555550123","destination_number":"15555550100",
            "datetime_transmission":"t","message":"hi","attachment":"https://f.example/x.mms.view?id=1",
            "attachment_mime_type":"text/html; charset=utf-8"}"#;
        assert!(matches!(
            only(a.normalize_inbound(&json_post(wrapper)).unwrap()),
            WebhookEvent::Part(MessagePart {
                role: PartRole::Text,
                ..
            })
        ));

        // No transmission time: the halves cannot pair, each is a message.
        let untimed = PART1.replace("\"datetime_transmission\": \"2025-01-01 12:00:00\",", "");
        let WebhookEvent::Message(m) = only(a.normalize_inbound(&json_post(&untimed)).unwrap())
        else {
            panic!("an untimed half is a message")
        };
        assert!(m.media.is_empty());

        let outbound = PART1.replace("\"inbound\"", "\"outbound\"");
        assert!(a
            .normalize_inbound(&json_post(&outbound))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_bodies_are_rejected() {
        let a = adapter("http://x");
        for body in [
            "{",
            "[1]",
            r#"{"source_number":"15555550123","destination_number":"15555550100"}"#,
            r#"{"sms_hash":"1","source_number":"12","destination_number":"15555550100"}"#,
            r#"{"sms_hash":"1","source_number":"15555550123"}"#,
            "sms_hash=1",
        ] {
            assert!(a.normalize_inbound(&json_post(body)).is_err(), "{body}");
        }
    }

    #[test]
    fn the_secret_is_checked_in_the_query_only() {
        let a = adapter("http://x");
        assert_eq!(a.verify_inbound(&json_post(PART1), &creds()), Ok(()));
        let wrong = post("secret=vmu-hook-secreX", "application/json", PART1);
        assert_eq!(
            a.verify_inbound(&wrong, &creds()),
            Err(VerifyError::Mismatch)
        );
        let in_body = post(
            "",
            "application/x-www-form-urlencoded",
            &format!("secret={SECRET}&sms_hash=1"),
        );
        assert_eq!(
            a.verify_inbound(&in_body, &creds()),
            Err(VerifyError::Missing)
        );
        let signal = Credentials::Signal(SignalConfig {
            rpc_url: "http://127.0.0.1:8080/api/v1/rpc".into(),
            account: None,
        });
        assert_eq!(
            a.verify_inbound(&json_post(PART1), &signal),
            Err(VerifyError::WrongCredentials)
        );
    }

    #[tokio::test]
    async fn send_posts_the_queue_sms_form_and_reads_the_hash() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1.1/json/queue_sms"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .respond_with(ResponseTemplate::new(200).set_body_string(success("q-123")))
            .expect(1)
            .mount(&server)
            .await;
        let a = adapter(&format!("{}/api/v1.1/json/", server.uri()));
        let result = a
            .send(&creds(), &message("pic", &["https://cdn.example/a.jpg"]))
            .await
            .unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Voicemeup,
                provider_message_id: "q-123".into(),
                status: DeliveryStatus::Sent,
                raw_status: "queued".into(),
            }
        );
        let requests = server.received_requests().await.unwrap();
        let req = requests.first().unwrap();
        assert_eq!(req.url.query(), None, "the token never goes in the URL");
        assert_eq!(
            form_of(req),
            vec![
                ("username".to_string(), "dispatch".to_string()),
                ("auth_token".into(), TOKEN.into()),
                ("source_number".into(), "15555550100".into()),
                ("destination_number".into(), "15555550123".into()),
                ("message".into(), "pic".into()),
                ("attachment".into(), "https://cdn.example/a.jpg".into()),
            ]
        );
    }

    #[tokio::test]
    async fn a_single_message_object_is_read_too() {
        let server = MockServer::start().await;
        let body = r#"{"response_details":{"response_status":"success","response_messages":
            {"message":{"code":"queued_sms_hash","_content":"solo"}}}}"#;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;
        let result = adapter(&server.uri())
            .send(&creds(), &message("hi", &[]))
            .await
            .unwrap();
        assert_eq!(result.provider_message_id, "solo");
        let requests = server.received_requests().await.unwrap();
        assert!(!form_of(&requests[0]).iter().any(|(k, _)| k == "attachment"));
    }

    #[tokio::test]
    async fn carrier_errors_are_classified_without_leaking_the_token() {
        let server = MockServer::start().await;
        let a = adapter(&server.uri());
        let error = r#"{"response_details":{"response_status":"error","response_messages":
            {"message":[{"code":"invalid_destination","_content":"Destination is invalid"}]}}}"#;
        let no_hash = r#"{"response_details":{"response_status":"success"}}"#;
        let cases: [(u16, &str, bool, Option<&str>); 6] = [
            (200, error, false, Some("invalid_destination")),
            (200, no_hash, false, Some("success")),
            (200, "<html>maintenance</html>", true, None),
            (200, "{}", true, None),
            (503, "busy", true, None),
            (401, "no", false, None),
        ];
        for (http, body, transient, code) in cases {
            server.reset().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(http).set_body_string(body))
                .mount(&server)
                .await;
            let err = a.send(&creds(), &message("hi", &[])).await.unwrap_err();
            assert_eq!(err.is_transient(), transient, "{body}: {err:?}");
            assert_eq!(err.code(), code, "{body}");
            assert!(!format!("{err} {err:?}").contains(TOKEN));
        }
    }

    #[tokio::test]
    async fn unsendable_messages_fail_permanently_before_any_request() {
        let a = adapter("http://127.0.0.1:9/never-called");
        let mut whatsapp = message("hi", &[]);
        whatsapp.channel = Channel::Whatsapp;
        let two = message("hi", &["https://a/1", "https://a/2"]);
        let huge = message(&"x".repeat(MAX_MESSAGE_CHARS + 1), &[]);
        let empty = message("", &[]);
        for m in [whatsapp, two, huge, empty] {
            let err = a.send(&creds(), &m).await.unwrap_err();
            assert!(!err.is_transient(), "{err:?}");
        }
        let signal = Credentials::Signal(SignalConfig {
            rpc_url: "http://127.0.0.1:9".into(),
            account: None,
        });
        assert!(!a
            .send(&signal, &message("hi", &[]))
            .await
            .unwrap_err()
            .is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(query in ".{0,80}", body in prop::collection::vec(any::<u8>(), 0..300), form in any::<bool>()) {
            let ct = if form { "application/x-www-form-urlencoded" } else { "application/json" };
            let req = WebhookRequest {
                method: "POST".into(),
                url: format!("https://h.example/webhooks/voicemeup?{query}"),
                headers: vec![("content-type".into(), ct.into())],
                body,
            };
            let a = adapter("http://x");
            let _ = a.verify_inbound(&req, &creds());
            let _ = a.normalize_inbound(&req);
        }
    }

    #[test]
    fn voicemeup_admin_json_is_validated_and_redacted() {
        let ok = serde_json::json!({"username": "dispatch", "auth_token": "vmu-token-very-secret",
            "webhook_secret": "vmu-hook-very-secret"});
        let creds = Credentials::from_admin_json(ProviderKind::Voicemeup, ok).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Voicemeup);
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in ["vmu-token-very-secret", "vmu-hook-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("dispatch"));
        assert_eq!(creds.redacted()["provider"], "voicemeup");
        assert_eq!(
            creds.secrets(),
            vec!["vmu-token-very-secret", "vmu-hook-very-secret"]
        );
        for bad in [
            serde_json::json!({"username": "", "auth_token": "t", "webhook_secret": "s"}),
            serde_json::json!({"username": "u", "auth_token": "t", "webhook_secret": ""}),
            serde_json::json!({"username": "u", "auth_token": "t"}),
        ] {
            assert!(Credentials::from_admin_json(ProviderKind::Voicemeup, bad).is_err());
        }
    }
}
