//! Bird (formerly MessageBird): the Channels API of the Bird platform, SMS channels.
//!
//! Source: Bird's own documentation at docs.bird.com (read 2026-11-30): "Channels API →
//! Messaging → Send a message", "Programmable SMS → Sending SMS messages / Receiving
//! messages", "Message status and interactions" and "Notifications API → Verifying a webhook
//! subscription". They describe the Channels API as the way to send and receive SMS today;
//! the `{region}.platform.bird.com/v1/sms/messages` surface of Bird's "in development" SDK and
//! its Standard Webhooks signing (`webhook-id`/`-timestamp`/`-signature`) appear nowhere in
//! those docs, so this adapter does not speak them.
//!
//! Sends go to `POST {base}/workspaces/{workspace_id}/channels/{channel_id}/messages` with
//! `Authorization: AccessKey <access key>`: `receiver.contacts[0]` is the contact's number,
//! `body` is `{type: text, text: {text}}`, or with media (US and Canadian MMS-capable
//! numbers) `{type: image, image: {text, images: [{mediaUrl}]}}` (up to ten). The SMS channel
//! is bound to one of the tenant's numbers, so the sender is the channel, not a field; we put
//! our number in `reference`, which Bird echoes on the message's status events. Bird answers
//! 202 with the message (`id`, `status: accepted`).
//!
//! Webhooks are notifications of a subscription made at Bird (service `channels`, events
//! `sms.inbound` and `sms.outbound`), all posted to `/webhooks/bird`:
//! `{service, event, payload: <channel message>}`. An inbound message names the contact as
//! `sender.contact.identifierValue` and our number as `receiver.connector.identifierValue`;
//! an outbound one is a status change of a message of ours (`accepted`, `processing`,
//! `scheduled`, `sent`, `sending_failed`, `delivered`, `delivery_failed`, `skipped`,
//! `deleted`), routed by `sender.connector.identifierValue` or else the `reference` we set.
//!
//! Each notification is signed: `messagebird-signature` is the base64 HMAC-SHA256, under the
//! subscription's signing key (its bytes as given), of `timestamp \n url \n sha256(body)`
//! (the raw 32-byte digest), with the timestamp from `messagebird-request-timestamp` (Unix
//! seconds) and the URL Bird called. Bird's docs give no replay window; we refuse a timestamp
//! more than five minutes from now, as for the other carriers.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::carrier::{
    guess_content_type, require, strong, ApiUrlSetting, Carrier, CarrierConfig, Receives,
    SigningKey, TestInbound, TestWebhook, WebhookRoute,
};
use super::Secret;
use super::{
    carries, ct_eq, named_failure, network_error, retry_after, Credentials,
    MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent, E164,
};
use std::sync::Arc;

/// The signature header: base64 HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "messagebird-signature";
/// The timestamp header (Unix seconds), part of what is signed.
pub const TIMESTAMP_HEADER: &str = "messagebird-request-timestamp";
/// How far a notification's timestamp may be from now, either way.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);
/// The most images one Bird MMS carries.
pub const MAX_IMAGES: usize = 10;

/// Bird Channels API adapter (SMS channels).
#[derive(Clone)]
pub struct BirdAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl BirdAdapter {
    /// An adapter calling the Channels API at `base_url` (`https://api.bird.com`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        BirdAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// The `messagebird-signature` value of a notification of `body` posted to `url` at
/// `timestamp`.
pub fn signature(signing_key: &str, timestamp: &str, url: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(url.as_bytes());
    mac.update(b"\n");
    mac.update(&Sha256::digest(body));
    B64.encode(mac.finalize().into_bytes())
}

/// Checks a notification's signature and freshness against the tenant's signing key, as of
/// `now` (Unix seconds).
pub fn verify_at(
    request: &WebhookRequest,
    credentials: &Credentials,
    now: i64,
) -> Result<(), VerifyError> {
    let Credentials::Bird(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let given = request
        .header(SIGNATURE_HEADER)
        .ok_or(VerifyError::Missing)?;
    let timestamp = request
        .header(TIMESTAMP_HEADER)
        .ok_or(VerifyError::Missing)?;
    let expected = signature(
        creds.signing_key.expose(),
        timestamp,
        &request.url,
        &request.body,
    );
    if !ct_eq(given.trim().as_bytes(), expected.as_bytes()) {
        return Err(VerifyError::Mismatch);
    }
    // After the signature, which covers the timestamp: only a genuine but old (or
    // future-dated) notification gets here.
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
struct Notification {
    event: String,
    payload: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelMessage {
    id: String,
    sender: Option<Party>,
    receiver: Option<Party>,
    body: Option<Body>,
    reference: Option<String>,
    status: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Party {
    contact: Option<Identified>,
    connector: Option<Identified>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identified {
    identifier_value: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "type")]
    kind: String,
    text: Option<TextBody>,
    image: Option<MediaBody>,
    file: Option<MediaBody>,
}

#[derive(Deserialize)]
struct TextBody {
    text: Option<String>,
}

#[derive(Deserialize)]
struct MediaBody {
    text: Option<String>,
    #[serde(default)]
    images: Vec<MediaItem>,
    #[serde(default)]
    files: Vec<MediaItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaItem {
    media_url: String,
    content_type: Option<String>,
}

/// Maps a Channels message status to ours.
fn map_status(raw: &str) -> Option<DeliveryStatus> {
    Some(match raw {
        "accepted" | "processing" | "scheduled" => DeliveryStatus::Queued,
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        // Never handed to an operator.
        "sending_failed" | "skipped" | "deleted" => DeliveryStatus::Failed,
        "delivery_failed" => DeliveryStatus::Undelivered,
        _ => return None,
    })
}

fn number(raw: Option<&str>, what: &str) -> Result<Address, ParseError> {
    let raw = raw.ok_or_else(|| ParseError::new(format!("{what} is missing")))?;
    E164::from_carrier(raw.trim())
        .map(Address::Phone)
        .map_err(|_| ParseError::new(format!("{what} is not a valid phone number")))
}

/// The `identifierValue` of a party's contact or connector.
fn value(identified: &Option<Identified>) -> Option<&str> {
    identified.as_ref()?.identifier_value.as_deref()
}

fn inbound(message: ChannelMessage) -> Result<Vec<WebhookEvent>, ParseError> {
    let from = number(
        message.sender.as_ref().and_then(|p| value(&p.contact)),
        "sender.contact.identifierValue",
    )?;
    let to = number(
        message.receiver.as_ref().and_then(|p| value(&p.connector)),
        "receiver.connector.identifierValue",
    )?;
    let body = message
        .body
        .ok_or_else(|| ParseError::new("body is missing"))?;
    let (text, media) = match (body.kind.as_str(), body.text, body.image, body.file) {
        ("text", Some(text), _, _) => (text.text, vec![]),
        ("image", _, Some(media), _) | ("file", _, _, Some(media)) => {
            let items = media.images.into_iter().chain(media.files);
            let media_list = items
                .map(|m| Media {
                    url: m.media_url,
                    content_type: m.content_type,
                })
                .collect();
            (media.text, media_list)
        }
        _ => return Err(ParseError::new("body is not text, image or file")),
    };
    let channel = if media.is_empty() {
        Channel::Sms
    } else {
        Channel::Mms
    };
    Ok(vec![WebhookEvent::Message(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Bird,
        provider_message_id: message.id,
        channel,
        from,
        to,
        body: text.filter(|t| !t.is_empty()),
        media,
        profile_name: None,
        received_at: Utc::now(),
        auto_submitted: false,
    })])
}

fn outbound_status(message: ChannelMessage) -> Result<Vec<WebhookEvent>, ParseError> {
    let raw = message
        .status
        .ok_or_else(|| ParseError::new("status is missing"))?;
    // Statuses Bird may add later are acknowledged and skipped.
    let Some(status) = map_status(&raw) else {
        return Ok(vec![]);
    };
    let ours = message
        .sender
        .as_ref()
        .and_then(|p| value(&p.connector))
        .or(message.reference.as_deref());
    Ok(vec![WebhookEvent::Status(StatusUpdate {
        provider: ProviderKind::Bird,
        provider_message_id: message.id,
        status,
        error_code: None,
        error_message: status.is_failure().then(|| {
            message
                .reason
                .filter(|r| !r.is_empty())
                .unwrap_or(raw.clone())
        }),
        raw_status: raw,
        tenant_number: Some(number(
            ours,
            "sender.connector.identifierValue (our number)",
        )?),
        at: Utc::now(),
    })])
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let notification: Notification = serde_json::from_slice(&request.body)
        .map_err(|_| ParseError::new("the body is not a Bird notification"))?;
    let message = || {
        serde_json::from_value::<ChannelMessage>(notification.payload.clone())
            .map_err(|_| ParseError::new("payload is not a Bird channel message"))
    };
    match notification.event.as_str() {
        "sms.inbound" => inbound(message()?),
        "sms.outbound" => outbound_status(message()?),
        // Interactions, channel changes and other platforms' events carry nothing for us.
        _ => Ok(vec![]),
    }
}

/// The JSON body of a send.
fn message_body(message: &OutboundMessage) -> Result<serde_json::Value, SendError> {
    let body = match (message.media.as_slice(), &message.body) {
        ([], Some(text)) => json!({"type": "text", "text": {"text": text}}),
        ([], None) => {
            return Err(SendError::permanent(
                None,
                "a message needs a body or media",
            ))
        }
        (media, _) if media.len() > MAX_IMAGES => {
            return Err(SendError::permanent(
                None,
                format!("Bird sends at most {MAX_IMAGES} images per MMS"),
            ))
        }
        (media, text) => {
            let images: Vec<_> = media.iter().map(|m| json!({"mediaUrl": m.url})).collect();
            let mut image = json!({"images": images});
            if let Some(text) = text {
                image["text"] = text.as_str().into();
            }
            json!({"type": "image", "image": image})
        }
    };
    Ok(json!({
        "receiver": {"contacts": [{"identifierKey": "phonenumber",
            "identifierValue": message.to.as_str()}]},
        "body": body,
        // Echoed on the message's status events: routes them back to our number.
        "reference": message.from.as_str(),
    }))
}

#[derive(Deserialize)]
struct Accepted {
    id: String,
    status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

#[async_trait]
impl MessagingProviderAdapter for BirdAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Bird
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Bird(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not Bird's"));
        };
        carries("Bird", self.channels(), message)?;
        let body = message_body(message)?;
        let response = self
            .http
            .post(format!(
                "{}/workspaces/{}/channels/{}/messages",
                self.base_url, creds.workspace_id, creds.channel_id
            ))
            .header(
                reqwest::header::AUTHORIZATION,
                format!("AccessKey {}", creds.access_key.expose()),
            )
            .json(&body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            let accepted = serde_json::from_slice::<Accepted>(&bytes)
                .map_err(|_| SendError::transient("Bird answered without a message id", None))?;
            let raw_status = accepted.status.unwrap_or_else(|| "accepted".into());
            return Ok(SendResult {
                provider: ProviderKind::Bird,
                provider_message_id: accepted.id,
                status: map_status(&raw_status).unwrap_or(DeliveryStatus::Queued),
                raw_status,
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        let code = error.as_ref().and_then(|e| e.code.clone());
        let message = error
            .and_then(|e| e.message)
            .unwrap_or_else(|| format!("Bird answered HTTP {}", status.as_u16()));
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

/// Bird Channels API credentials: the access key sends through the tenant's SMS channel, the
/// webhook subscription's signing key checks notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirdCredentials {
    /// The workspace id (a UUID, not secret); it goes into the send path.
    pub workspace_id: String,
    /// The SMS channel's id (a UUID, not secret), bound to the tenant's number.
    pub channel_id: String,
    /// Access key, sent as `Authorization: AccessKey <key>`.
    pub access_key: Secret,
    /// The signing key given to Bird's webhook subscription (HMAC-SHA256 key).
    pub signing_key: Secret,
}

impl CarrierConfig for BirdCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["access_key", "signing_key"];

    fn validate(&self) -> Result<(), String> {
        // Both ids go into the API path: UUIDs keep them single path segments.
        require(
            uuid::Uuid::parse_str(&self.workspace_id).is_ok(),
            "workspace_id (a UUID)",
        )?;
        require(
            uuid::Uuid::parse_str(&self.channel_id).is_ok(),
            "channel_id (a UUID)",
        )?;
        require(!self.access_key.expose().is_empty(), "access_key")?;
        strong(&self.signing_key, "signing_key")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.access_key.expose(), self.signing_key.expose()]
    }

    fn example() -> Self {
        BirdCredentials {
            workspace_id: "5f3e9a1c-0000-4000-8000-00000000b1d0".into(),
            channel_id: "614208aa-b153-4d5d-9989-2fddfc0ce4c3".into(),
            access_key: Secret::new("bird-access-key-secret"),
            signing_key: Secret::new("bird-signing-key-secret"),
        }
    }
}

/// The Omni declaration of Bird.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Bird,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_BIRD_API_URL",
        default: "https://api.bird.com",
        help: "Bird Channels API base URL (`/workspaces/{workspace}/channels/{channel}/messages` is appended).",
    }),
    webhooks: &[
        WebhookRoute::post("/webhooks/bird", Receives::Both),
    ],
    adapter: |http, base_url| Arc::new(BirdAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Signer {
        help: "`sms.inbound` notification, HMAC-SHA256-signed over the timestamp, the URL and the \
               body's SHA-256; --secret: the signing key",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// An `sms.inbound` notification as Bird posts it (a text body, or with media an image body
/// whose text is the message), signed with the signing key.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("Bird")?;
    let (from, to) = message.numbers()?;
    let key = key.secret(|c| BirdCredentials::of(c).map(|c| &c.signing_key))?;
    let id = message.id_or(|| Uuid::new_v4().to_string());
    let content = match message.media.as_slice() {
        [] => serde_json::json!({"type": "text", "text": {"text": message.body}}),
        media if media.len() > MAX_IMAGES => {
            return Err(format!("Bird carries at most {MAX_IMAGES} images"))
        }
        media => {
            let images: Vec<_> = media
                .iter()
                .map(|url| serde_json::json!({"mediaUrl": url, "contentType": guess_content_type(url)}))
                .collect();
            serde_json::json!({"type": "image", "image": {"text": message.body, "images": images}})
        }
    };
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = serde_json::json!({"service": "channels", "event": "sms.inbound", "payload": {
        "id": id,
        "sender": {"contact": {"identifierKey": "phonenumber", "identifierValue": from.as_str()}},
        "receiver": {"connector": {"identifierValue": to.as_str()}},
        "body": content, "status": "delivered", "direction": "incoming",
        "createdAt": now, "updatedAt": now}})
    .to_string();
    let url = format!("{}/webhooks/bird", message.base_url);
    let timestamp = Utc::now().timestamp().to_string();
    let signature = signature(&key, &timestamp, &url, body.as_bytes());
    Ok(vec![message.post(
        "/webhooks/bird",
        "application/json",
        vec![
            (SIGNATURE_HEADER.into(), signature),
            (TIMESTAMP_HEADER.into(), timestamp),
        ],
        body.into_bytes(),
    )])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/bird": {"post": {"summary": "Bird Channels API notifications of a webhook subscription (service channels): sms.inbound messages (text, or MMS images/files), routed by the receiving connector's number; sms.outbound status changes of our messages (accepted, processing, scheduled, sent, sending_failed, delivered, delivery_failed, skipped, deleted), routed by the sender connector's number or the reference we set (our number)", "parameters": [{"name": "messagebird-signature", "in": "header", "required": true, "schema": {"type": "string"}, "description": "base64 HMAC-SHA256, under the tenant's Bird signing key, of `timestamp \\n URL \\n SHA-256(raw body)` (the URL Bird called, the raw 32-byte digest)"}, {"name": "messagebird-request-timestamp", "in": "header", "required": true, "schema": {"type": "string"}, "description": "Unix seconds, signed; more than 300 s from the server's clock, either way, is refused (401)"}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::providers::test_support::{e164, fixture, one};
    use crate::providers::{BirdCredentials, Secret};
    use proptest::prelude::*;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const WORKSPACE: &str = "5f3e9a1c-0000-4000-8000-00000000b1d0";
    const CHANNEL: &str = "614208aa-b153-4d5d-9989-2fddfc0ce4c3";
    const ACCESS_KEY: &str = "bird-access-key-secret";
    const SIGNING_KEY: &str = "bird-signing-key-0123456789";
    const URL: &str = "https://hooks.example.com/webhooks/bird";

    fn creds() -> Credentials {
        Credentials::Bird(BirdCredentials {
            workspace_id: WORKSPACE.into(),
            channel_id: CHANNEL.into(),
            access_key: Secret::new(ACCESS_KEY),
            signing_key: Secret::new(SIGNING_KEY),
        })
    }

    fn request(body: &[u8], headers: &[(&str, &str)]) -> WebhookRequest {
        let mut all = vec![("content-type".to_string(), "application/json".to_string())];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        WebhookRequest {
            method: "POST".into(),
            url: URL.into(),
            headers: all,
            body: body.to_vec(),
        }
    }

    fn signed(body: &[u8], key: &str, ts: i64) -> WebhookRequest {
        let ts = ts.to_string();
        let sig = signature(key, &ts, URL, body);
        request(body, &[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)])
    }

    #[test]
    fn signature_vector() {
        // Computed independently:
        // { printf '1700000000\nhttps://example.com/hook\n';
        //   printf '%s' '{"a":1}' | openssl dgst -sha256 -binary; } |
        // openssl dgst -sha256 -hmac key -binary | base64
        assert_eq!(
            signature(
                "key",
                "1700000000",
                "https://example.com/hook",
                br#"{"a":1}"#
            ),
            "Ir7VTBF+2b5BkM5gfSAHx1PHt0/Jouwpswsh40HivU4="
        );
    }

    #[test]
    fn signatures_and_replay_window_are_checked() {
        let body = fixture("bird_sms_inbound.json");
        let now = 1_800_000_000;
        assert_eq!(
            verify_at(&signed(&body, SIGNING_KEY, now), &creds(), now + 2),
            Ok(())
        );
        assert_eq!(
            verify_at(&signed(&body, "another-key", now), &creds(), now),
            Err(VerifyError::Mismatch)
        );
        for stale in [now - 301, now + 301] {
            assert_eq!(
                verify_at(&signed(&body, SIGNING_KEY, stale), &creds(), now),
                Err(VerifyError::Stale)
            );
        }
        // The body, the URL and the timestamp are each covered.
        let good = signed(&body, SIGNING_KEY, now);
        let mut tampered = good.clone();
        tampered.body.push(b' ');
        assert_eq!(
            verify_at(&tampered, &creds(), now),
            Err(VerifyError::Mismatch)
        );
        let mut elsewhere = good.clone();
        elsewhere.url.push_str("?x=1");
        assert_eq!(
            verify_at(&elsewhere, &creds(), now),
            Err(VerifyError::Mismatch)
        );
        let mut later = good.clone();
        for (k, v) in later.headers.iter_mut() {
            if k == TIMESTAMP_HEADER {
                *v = (now + 1).to_string();
            }
        }
        assert_eq!(verify_at(&later, &creds(), now), Err(VerifyError::Mismatch));
        for header in [SIGNATURE_HEADER, TIMESTAMP_HEADER] {
            let mut missing = good.clone();
            missing.headers.retain(|(k, _)| k != header);
            assert_eq!(
                verify_at(&missing, &creds(), now),
                Err(VerifyError::Missing)
            );
        }
        assert_eq!(
            verify_at(&good, &Credentials::Simulator, now),
            Err(VerifyError::WrongCredentials)
        );
    }

    #[test]
    fn inbound_text_fixture() {
        let WebhookEvent::Message(m) =
            one(normalize(&request(&fixture("bird_sms_inbound.json"), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Bird);
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(
            m.provider_message_id,
            "96a0b5fa-a986-453d-be5c-3117f989f025"
        );
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(m.body.as_deref(), Some("Smoke on 5th street"));
        assert!(m.media.is_empty());
    }

    #[test]
    fn inbound_image_fixture() {
        let WebhookEvent::Message(m) =
            one(normalize(&request(&fixture("bird_mms_inbound.json"), &[])).unwrap())
        else {
            panic!("not a message");
        };
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(m.body.as_deref(), Some("Photo of the roof"));
        assert_eq!(
            m.media,
            vec![Media {
                url: "https://media.api.bird.com/workspaces/w/messages/m/media/roof".into(),
                content_type: Some("image/jpeg".into()),
            }]
        );
    }

    #[test]
    fn outbound_status_fixture() {
        let WebhookEvent::Status(s) =
            one(normalize(&request(&fixture("bird_sms_outbound_failed.json"), &[])).unwrap())
        else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::Bird);
        assert_eq!(
            s.provider_message_id,
            "0192b7c2-1f0e-7000-8000-00000000b1d1"
        );
        assert_eq!(s.status, DeliveryStatus::Undelivered);
        assert_eq!(s.raw_status, "delivery_failed");
        assert_eq!(s.error_message.as_deref(), Some("Unknown subscriber"));
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
    }

    fn outbound_event(status: &str, sender: serde_json::Value) -> Vec<u8> {
        json!({"service": "channels", "event": "sms.outbound", "payload": {
            "id": "m1", "channelId": CHANNEL, "sender": sender,
            "receiver": {"contacts": [{"identifierValue": "+15555550123"}]},
            "reference": "+15555550100", "status": status, "direction": "outgoing"}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn statuses_map_and_route_by_sender_or_reference() {
        for (word, expected) in [
            ("accepted", DeliveryStatus::Queued),
            ("processing", DeliveryStatus::Queued),
            ("scheduled", DeliveryStatus::Queued),
            ("sent", DeliveryStatus::Sent),
            ("delivered", DeliveryStatus::Delivered),
            ("sending_failed", DeliveryStatus::Failed),
            ("skipped", DeliveryStatus::Failed),
            ("deleted", DeliveryStatus::Failed),
            ("delivery_failed", DeliveryStatus::Undelivered),
        ] {
            let WebhookEvent::Status(s) =
                one(normalize(&request(&outbound_event(word, json!(null)), &[])).unwrap())
            else {
                panic!("not a status");
            };
            assert_eq!((s.status, s.raw_status.as_str()), (expected, word));
            // No reason given: the status word says what failed.
            let reason = s.status.is_failure().then(|| word.to_string());
            assert_eq!(s.error_message, reason);
            assert_eq!(s.tenant_number, Some(e164("+15555550100")));
        }
        // The connector's number wins over the reference.
        let sender = json!({"connector": {"id": "c", "identifierValue": "+15555550199"}});
        let WebhookEvent::Status(s) =
            one(normalize(&request(&outbound_event("sent", sender), &[])).unwrap())
        else {
            panic!("not a status");
        };
        assert_eq!(s.tenant_number, Some(e164("+15555550199")));
        assert_eq!(
            normalize(&request(&outbound_event("teleported", json!(null)), &[])).unwrap(),
            vec![]
        );
        for ignored in [
            json!({"service": "channels", "event": "sms.interaction", "payload": {}}),
            json!({"service": "channels", "event": "whatsapp.inbound", "payload": {"id": "x"}}),
        ] {
            assert_eq!(
                normalize(&request(ignored.to_string().as_bytes(), &[])).unwrap(),
                vec![]
            );
        }
        let inbound = |payload: serde_json::Value| {
            json!({"service": "channels", "event": "sms.inbound", "payload": payload}).to_string()
        };
        let contact = json!({"contact": {"identifierValue": "+15555550123"}});
        let connector = json!({"connector": {"identifierValue": "+15555550100"}});
        for bad in [
            "not json".to_string(),
            "[]".to_string(),
            json!({"event": "sms.inbound"}).to_string(),
            inbound(json!({"id": "x"})),
            inbound(
                json!({"id": "x", "sender": contact, "receiver": {"connector": {"id": "c"}},
                "body": {"type": "text", "text": {"text": "hi"}}}),
            ),
            inbound(
                json!({"id": "x", "sender": {"contact": {"identifierValue": "12"}},
                "receiver": connector, "body": {"type": "text", "text": {"text": "hi"}}}),
            ),
            inbound(json!({"id": "x", "sender": contact, "receiver": connector,
                "body": {"type": "location"}})),
            inbound(json!({"id": "x", "sender": contact, "receiver": connector})),
            String::new(),
            json!({"event": "sms.outbound", "payload": {"id": "m", "status": "sent"}}).to_string(),
            json!({"event": "sms.outbound", "payload": {"id": "m", "reference": "+15555550100"}})
                .to_string(),
        ] {
            assert!(normalize(&request(bad.as_bytes(), &[])).is_err(), "{bad}");
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
            status_callback: Some("https://omni.example.org/webhooks/bird".into()),
        }
    }

    fn accepted() -> ResponseTemplate {
        ResponseTemplate::new(202).set_body_json(json!({
            "id": "0192b7c2-1f0e-7000-8000-00000000b1d1", "channelId": CHANNEL,
            "reference": "+15555550100", "status": "accepted", "direction": "outgoing",
            "createdAt": "2026-11-30T10:00:00.000Z"}))
    }

    async fn server() -> (MockServer, BirdAdapter) {
        let server = MockServer::start().await;
        let adapter = BirdAdapter::new(reqwest::Client::new(), &format!("{}/", server.uri()));
        (server, adapter)
    }

    fn messages() -> String {
        format!("/workspaces/{WORKSPACE}/channels/{CHANNEL}/messages")
    }

    #[tokio::test]
    async fn sends_text_with_access_key_and_exact_body() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(messages()))
            .and(header(
                "authorization",
                format!("AccessKey {ACCESS_KEY}").as_str(),
            ))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "receiver": {"contacts": [{"identifierKey": "phonenumber",
                    "identifierValue": "+15555550123"}]},
                "body": {"type": "text", "text": {"text": "Units are on the way"}},
                "reference": "+15555550100"})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let result = adapter.send(&creds(), &outbound(vec![])).await.unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Bird,
                provider_message_id: "0192b7c2-1f0e-7000-8000-00000000b1d1".into(),
                status: DeliveryStatus::Queued,
                raw_status: "accepted".into(),
            }
        );
    }

    #[tokio::test]
    async fn sends_mms_as_images_and_refuses_what_bird_cannot_carry() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(messages()))
            .and(body_json(json!({
                "receiver": {"contacts": [{"identifierKey": "phonenumber",
                    "identifierValue": "+15555550123"}]},
                "body": {"type": "image", "image": {"text": "Units are on the way", "images": [
                    {"mediaUrl": "https://cdn.example.org/a.jpg"},
                    {"mediaUrl": "https://cdn.example.org/b.jpg"}]}},
                "reference": "+15555550100"})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let media = |url: String| Media {
            url,
            content_type: None,
        };
        let mut mms = outbound(vec![
            media("https://cdn.example.org/a.jpg".into()),
            media("https://cdn.example.org/b.jpg".into()),
        ]);
        mms.channel = Channel::Mms;
        adapter.send(&creds(), &mms).await.unwrap();
        let mut eleven = mms.clone();
        eleven.media = (0..11)
            .map(|i| media(format!("https://cdn.example.org/{i}.jpg")))
            .collect();
        let mut empty = outbound(vec![]);
        empty.body = None;
        let mut whatsapp = outbound(vec![]);
        whatsapp.channel = Channel::Whatsapp;
        for refused in [eleven, empty, whatsapp] {
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
            .and(path(messages()))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter.send(&creds(), &outbound(vec![])).await.unwrap_err();
        assert!(!err.to_string().contains(ACCESS_KEY), "{err}");
        err
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let err = failing(ResponseTemplate::new(422).set_body_json(
            json!({"code": "InvalidPayload", "message": "The request did not pass validation"}),
        ))
        .await;
        assert_eq!(
            err,
            SendError::Permanent {
                code: Some("InvalidPayload".into()),
                message: "The request did not pass validation".into(),
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
            sig in ".{0,60}",
            ts in ".{0,20}",
            now in any::<i64>(),
        ) {
            let r = request(&body, &[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
            let _ = verify_at(&r, &creds(), now);
            let _ = normalize(&r);
        }

        #[test]
        fn arbitrary_notifications_never_panic(
            event in "[a-z_.]{0,20}",
            number in ".{0,20}",
            text in ".{0,40}",
        ) {
            for event in [event.as_str(), "sms.inbound", "sms.outbound"] {
                for kind in ["text", "image", "file", text.as_str()] {
                    let payload = json!({"id": text, "status": text, "reference": number,
                        "sender": {"contact": {"identifierValue": number},
                            "connector": {"identifierValue": number}},
                        "receiver": {"connector": {"identifierValue": number}},
                        "body": {"type": kind, "text": {"text": text},
                            "image": {"text": text, "images": [{"mediaUrl": text}]},
                            "file": {"files": [{"mediaUrl": text, "contentType": text}]}}});
                    let notification = json!({"event": event, "payload": payload});
                    let _ = normalize(&request(notification.to_string().as_bytes(), &[]));
                }
            }
        }
    }
}
