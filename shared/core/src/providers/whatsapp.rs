//! WhatsApp Cloud API (Meta's Graph API) as a carrier of its own.
//!
//! Sends go to `POST {base}/{phone_number_id}/messages` with a Bearer access token and a
//! JSON body. Webhooks are JSON posts signed with `X-Hub-Signature-256` (HMAC-SHA256 of the
//! raw body with the app secret); subscribing a callback takes a `hub.challenge` handshake
//! first (see [`verify_subscription`]). Omni routes webhooks to the tenant by the business
//! phone number id in the payload (see [`phone_number_id`]).

use async_trait::async_trait;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use super::carrier::{
    require, strong, ApiUrlSetting, Carrier, CarrierConfig, Receives, TestWebhook, WebhookHandler,
    WebhookRoute,
};
use super::Secret;
use super::{
    carries, coded_failure, ct_eq, network_error, phones, read_media_body, retry_after,
    Credentials, MediaContent, MediaError, MessagingProviderAdapter, ParseError, TemplateSyncError,
    VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent, E164,
};
use crate::templates::{MetaStatus, MetaTemplateStatus};
use std::sync::Arc;

/// Graph error codes worth retrying: 4 (app rate limit), 80007 (WABA rate limit), 130429
/// (throughput), 131048 (spam rate limit), 131056 (pair rate limit), 131016 (service
/// unavailable), 131000 (unknown) and 368 (temporarily blocked). Everything else (expired
/// token, permissions, parameters, the 24-hour window) needs a change a retry cannot make.
const TRANSIENT_CODES: [i64; 8] = [4, 80007, 130429, 131048, 131056, 131016, 131000, 368];

/// Meta's "re-engagement message" error: the 24-hour customer-service window since the
/// contact last wrote is closed, and only an approved template is delivered now.
const OUTSIDE_WINDOW: i64 = 131047;

/// URL path endings WhatsApp accepts as `image` messages; anything else goes as a document,
/// which WhatsApp delivers whatever the file type.
const IMAGE_EXTENSIONS: [&str; 3] = [".jpg", ".jpeg", ".png"];

/// Inbound message types that carry a media object under the key of the same name.
const MEDIA_TYPES: [&str; 5] = ["image", "audio", "video", "document", "sticker"];

/// The prefix of [`Media::url`] for inbound media: WhatsApp sends only a media id, which
/// must be resolved (with the tenant's token) through the Graph API before downloading.
pub const MEDIA_URL_PREFIX: &str = "whatsapp-media:";

/// WhatsApp Cloud API adapter.
#[derive(Clone)]
pub struct WhatsappAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl WhatsappAdapter {
    /// An adapter calling the Graph API at `base_url` (`https://graph.facebook.com/v21.0`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        WhatsappAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// The `X-Hub-Signature-256` value of a body: `sha256=` + lowercase hex HMAC-SHA256.
pub fn signature(body: &[u8], app_secret: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify(request: &WebhookRequest, credentials: &Credentials) -> Result<(), VerifyError> {
    verify_signed(&request.body, request, credentials)
}

/// Checks a webhook whose signed bytes are `signed` while `request.body` is what is read
/// (the same bytes, or those with other environments' accounts taken out; see
/// [`crate::waba::without_accounts`]): the signature over `signed`, the phone number id in
/// what is read.
pub fn verify_signed(
    signed: &[u8],
    request: &WebhookRequest,
    credentials: &Credentials,
) -> Result<(), VerifyError> {
    let Credentials::Whatsapp(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let given = request
        .header("x-hub-signature-256")
        .ok_or(VerifyError::Missing)?;
    if !given.starts_with("sha256=") {
        return Err(VerifyError::Unsupported(
            "only sha256= signatures are accepted".into(),
        ));
    }
    // Meta always sends lowercase hex, so the comparison is byte for byte: an upper-case
    // signature is not one Meta made.
    if !signature_matches(signed, given, creds.app_secret.expose()) {
        return Err(VerifyError::Mismatch);
    }
    // One Meta app may serve several businesses: a correctly signed event is this tenant's
    // only if it is addressed to the tenant's own phone number id.
    match phone_number_id(request) {
        Some(id) if id != creds.phone_number_id => Err(VerifyError::Mismatch),
        _ => Ok(()),
    }
}

/// Whether `given` (an `X-Hub-Signature-256` value) is `body`'s under `app_secret`, compared
/// in constant time.
pub fn signature_matches(body: &[u8], given: &str, app_secret: &str) -> bool {
    ct_eq(signature(body, app_secret).as_bytes(), given.as_bytes())
}

/// Answers Meta's subscription handshake: for
/// `hub.mode=subscribe&hub.verify_token=<t>&hub.challenge=<c>` the challenge to echo back,
/// iff the mode is `subscribe` and `t` equals `verify_token` (compared in constant time).
pub fn verify_subscription(query: &str, verify_token: &str) -> Option<String> {
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    // The first value of each name wins, so a repeated parameter cannot override it.
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "hub.mode" => &mut mode,
            "hub.verify_token" => &mut token,
            "hub.challenge" => &mut challenge,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    // An empty configured token would let an empty `hub.verify_token` through.
    let token_ok = !verify_token.is_empty()
        && token.is_some_and(|t| ct_eq(t.as_bytes(), verify_token.as_bytes()));
    if mode.as_deref() == Some("subscribe") && token_ok {
        challenge.filter(|c| !c.is_empty())
    } else {
        None
    }
}

/// The business phone number id a webhook is for (`value.metadata.phone_number_id` of the
/// first change): the key Omni routes WhatsApp webhooks to a tenant by, read before the
/// signature can be checked (the tenant's app secret depends on it).
pub fn phone_number_id(request: &WebhookRequest) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    body.pointer("/entry/0/changes/0/value/metadata/phone_number_id")?
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct Envelope {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: ChangeValue,
}

#[derive(Deserialize, Default)]
struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<WaMessage>,
    #[serde(default)]
    statuses: Vec<WaStatus>,
}

#[derive(Deserialize)]
struct Metadata {
    display_phone_number: String,
}

#[derive(Deserialize)]
struct Contact {
    wa_id: Option<String>,
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct WaMessage {
    from: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    text: Option<Text>,
    image: Option<MediaObject>,
    audio: Option<MediaObject>,
    video: Option<MediaObject>,
    document: Option<MediaObject>,
    sticker: Option<MediaObject>,
}

impl WaMessage {
    /// The media object of a media message (the key is the message type).
    fn media(&self) -> Option<&MediaObject> {
        match self.kind.as_str() {
            "image" => self.image.as_ref(),
            "audio" => self.audio.as_ref(),
            "video" => self.video.as_ref(),
            "document" => self.document.as_ref(),
            "sticker" => self.sticker.as_ref(),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

#[derive(Deserialize)]
struct MediaObject {
    id: String,
    mime_type: Option<String>,
    caption: Option<String>,
}

#[derive(Deserialize)]
struct WaStatus {
    id: String,
    status: String,
    #[serde(default)]
    errors: Vec<StatusError>,
}

#[derive(Deserialize)]
struct StatusError {
    code: Option<i64>,
    title: Option<String>,
}

/// Maps WhatsApp's status words to ours; None for words we do not track.
fn map_status(raw: &str) -> Option<DeliveryStatus> {
    Some(match raw {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        // `played` is the voice-note equivalent of `read`.
        "read" | "played" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed,
        _ => return None,
    })
}

/// A number WhatsApp gives as digits (`from`, `wa_id`) or, for the business's own number,
/// possibly formatted (`display_phone_number`): punctuation is dropped, `+` is added.
fn number(raw: &str) -> Option<E164> {
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '+'))
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    E164::from_carrier(&format!("+{digits}")).ok()
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let envelope: Envelope = serde_json::from_slice(&request.body)
        .map_err(|_| ParseError::new("the body is not a WhatsApp webhook"))?;
    if envelope.object != "whatsapp_business_account" {
        return Err(ParseError::new("object is not whatsapp_business_account"));
    }
    let mut events = Vec::new();
    // Other fields (account, template and quality updates) carry no message events.
    let changes = envelope
        .entry
        .into_iter()
        .flat_map(|e| e.changes)
        .filter(|c| c.field == "messages");
    for change in changes {
        let value = change.value;
        let business = value
            .metadata
            .as_ref()
            .and_then(|m| number(&m.display_phone_number));
        for message in &value.messages {
            // Types without a text or media body (reactions, locations, system notices, …)
            // are not messages Omni can relay; they are skipped, not refused, so the other
            // events of the same delivery still count.
            let media = message.media();
            if message.kind != "text" && !MEDIA_TYPES.contains(&message.kind.as_str()) {
                continue;
            }
            let to = business
                .clone()
                .ok_or_else(|| ParseError::new("metadata.display_phone_number is missing"))?;
            let from = number(&message.from)
                .ok_or_else(|| ParseError::new("from is not a valid phone number"))?;
            let body = match (&message.text, media) {
                (Some(text), _) if message.kind == "text" => Some(text.body.clone()),
                (_, Some(m)) => m.caption.clone(),
                _ => None,
            };
            let media = media
                .map(|m| Media {
                    url: format!("{MEDIA_URL_PREFIX}{}", m.id),
                    content_type: m.mime_type.clone(),
                })
                .into_iter()
                .collect();
            let profile_name = value
                .contacts
                .iter()
                .find(|c| c.wa_id.as_deref() == Some(message.from.as_str()))
                .and_then(|c| c.profile.as_ref()?.name.clone());
            events.push(WebhookEvent::Message(InboundMessage {
                id: Uuid::now_v7(),
                provider: ProviderKind::Whatsapp,
                provider_message_id: message.id.clone(),
                channel: Channel::Whatsapp,
                from: from.into(),
                to: to.into(),
                body,
                media,
                profile_name,
                received_at: Utc::now(),
                auto_submitted: false,
            }));
        }
        for status in value.statuses {
            // Statuses we do not track (e.g. `deleted`) are skipped like unknown messages.
            let Some(mapped) = map_status(&status.status) else {
                continue;
            };
            let error = status.errors.into_iter().next();
            events.push(WebhookEvent::Status(StatusUpdate {
                provider: ProviderKind::Whatsapp,
                provider_message_id: status.id,
                status: mapped,
                raw_status: status.status,
                error_code: error.as_ref().and_then(|e| e.code).map(|c| c.to_string()),
                error_message: error.and_then(|e| e.title),
                tenant_number: business.clone().map(Address::from),
                at: Utc::now(),
            }));
        }
    }
    Ok(events)
}

/// Whether a media URL names an image WhatsApp sends as `image` (query and fragment aside).
fn is_image_url(url: &str) -> bool {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    IMAGE_EXTENSIONS.iter().any(|ext| path.ends_with(ext))
}

/// The JSON body of a send: a template, text, or one media item with the text as its
/// caption.
fn message_body(message: &OutboundMessage) -> Result<serde_json::Value, SendError> {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": phones("the WhatsApp Cloud API", message)?.1.digits(),
    });
    if let Some(template) = &message.template {
        let mut object = json!({
            "name": template.name,
            "language": {"code": template.language},
        });
        if !template.components.is_empty() {
            object["components"] = serde_json::to_value(&template.components)
                .map_err(|e| SendError::permanent(None, format!("template: {e}")))?;
        }
        body["type"] = "template".into();
        body["template"] = object;
        return Ok(body);
    }
    match (message.media.as_slice(), &message.body) {
        ([], Some(text)) => {
            body["type"] = "text".into();
            body["text"] = json!({"body": text, "preview_url": false});
        }
        ([], None) => {
            return Err(SendError::permanent(
                None,
                "a message needs a body or media",
            ));
        }
        ([media], text) => {
            let kind = if is_image_url(&media.url) {
                "image"
            } else {
                "document"
            };
            let mut object = json!({"link": media.url});
            if let Some(text) = text {
                object["caption"] = text.as_str().into();
            }
            body["type"] = kind.into();
            body[kind] = object;
        }
        // One request per item would repeat the caption (or lose it); refusing keeps a send
        // one message.
        _ => {
            return Err(SendError::permanent(
                None,
                "WhatsApp sends at most one media item per message",
            ));
        }
    }
    Ok(body)
}

#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    code: Option<i64>,
    message: Option<String>,
}

/// Sends a Graph API read: its status, its body, and Meta's error when it failed.
async fn graph_read(
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Vec<u8>, Option<GraphError>), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let bytes = response.bytes().await?.to_vec();
    let error = if status.is_success() {
        None
    } else {
        serde_json::from_slice::<GraphErrorBody>(&bytes)
            .ok()
            .map(|b| b.error)
    };
    Ok((status, bytes, error))
}

/// `GET /{media-id}`: where the media can be downloaded (for a few minutes) and its type.
#[derive(Deserialize)]
struct MediaLocation {
    url: String,
    mime_type: Option<String>,
}

/// Graph's "invalid parameter" code, which it answers for a media id that does not exist,
/// belongs to another business or has expired.
const INVALID_PARAMETER: i64 = 100;

impl WhatsappAdapter {
    /// Resolves a media id to its short-lived download URL, then downloads it; both requests
    /// carry the tenant's access token, which is why dashboards cannot follow the id
    /// themselves.
    async fn download(&self, token: &str, media_id: &str) -> Result<MediaContent, MediaError> {
        // Without the URL: a download URL is Meta's signed link, not for logs or responses.
        let failed =
            |e: reqwest::Error| MediaError::Carrier(format!("WhatsApp media: {}", e.without_url()));
        let (status, bytes, error) = graph_read(
            self.http
                .get(format!("{}/{media_id}", self.base_url))
                .bearer_auth(token),
        )
        .await
        .map_err(failed)?;
        if !status.is_success() {
            if status == reqwest::StatusCode::NOT_FOUND
                || error.as_ref().and_then(|e| e.code) == Some(INVALID_PARAMETER)
            {
                return Err(MediaError::NotFound);
            }
            return Err(MediaError::Carrier(
                error.and_then(|e| e.message).unwrap_or_else(|| {
                    format!("WhatsApp answered HTTP {} for the media", status.as_u16())
                }),
            ));
        }
        let location: MediaLocation = serde_json::from_slice(&bytes).map_err(|_| {
            MediaError::Carrier("WhatsApp answered the media lookup without a URL".into())
        })?;
        if !media_url_allowed(&self.base_url, &location.url) {
            return Err(MediaError::Carrier(
                "WhatsApp named a media URL that is not HTTPS".into(),
            ));
        }
        let response = self
            .http
            .get(&location.url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(failed)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(MediaError::NotFound);
        }
        if !response.status().is_success() {
            return Err(MediaError::Carrier(format!(
                "WhatsApp answered HTTP {} for the media download",
                response.status().as_u16()
            )));
        }
        let content_type = location.mime_type.or_else(|| {
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let bytes = read_media_body("WhatsApp", response).await?;
        Ok(MediaContent {
            content_type,
            bytes,
        })
    }
}

/// Whether the token may go to the download URL Graph named: never over plain HTTP unless
/// the Graph endpoint itself is (a local fake).
fn media_url_allowed(base_url: &str, url: &str) -> bool {
    url.starts_with("https://") || (base_url.starts_with("http://") && url.starts_with("http://"))
}

/// The media id of a `whatsapp-media:<id>` URL, if it is one; ids are digits, so nothing
/// else can reach the Graph API path.
fn media_id(url: &str) -> Option<&str> {
    url.strip_prefix(MEDIA_URL_PREFIX)
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit()))
}

#[async_trait]
impl MessagingProviderAdapter for WhatsappAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Whatsapp
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Whatsapp]
    }

    fn sends_templates(&self) -> bool {
        true
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Whatsapp(creds) = credentials else {
            return Err(SendError::permanent(
                None,
                "credentials are not WhatsApp Cloud API's",
            ));
        };
        carries("the WhatsApp Cloud API", self.channels(), message)?;
        let body = message_body(message)?;
        let url = format!("{}/{}/messages", self.base_url, creds.phone_number_id);
        let response = self
            .http
            .post(url)
            .bearer_auth(creds.access_token.expose())
            .json(&body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            let id = serde_json::from_slice::<SendResponse>(&bytes)
                .ok()
                .and_then(|r| r.messages.into_iter().next())
                .map(|m| m.id)
                .ok_or_else(|| {
                    SendError::transient("WhatsApp answered without a message id", None)
                })?;
            return Ok(SendResult {
                provider: ProviderKind::Whatsapp,
                provider_message_id: id,
                status: DeliveryStatus::Sent,
                raw_status: "accepted".into(),
            });
        }
        // The Graph error message describes the request, never echoes the token.
        let error = serde_json::from_slice::<GraphErrorBody>(&bytes)
            .ok()
            .map(|b| b.error);
        let code = error.as_ref().and_then(|e| e.code);
        let message = error
            .and_then(|e| e.message)
            .unwrap_or_else(|| format!("WhatsApp answered HTTP {}", status.as_u16()));
        if code == Some(OUTSIDE_WINDOW) {
            return Err(SendError::permanent(
                Some(OUTSIDE_WINDOW.to_string()),
                format!(
                    "{message}: more than 24 hours since the contact last wrote, \
                     only an approved template can be sent (send a template)"
                ),
            ));
        }
        Err(coded_failure(status, code, message, &TRANSIENT_CODES, wait))
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

    fn keeps_media(&self, url: &str) -> bool {
        url.starts_with(MEDIA_URL_PREFIX)
    }

    async fn fetch_media(
        &self,
        credentials: &Credentials,
        url: &str,
    ) -> Result<MediaContent, MediaError> {
        let Credentials::Whatsapp(creds) = credentials else {
            return Err(MediaError::WrongCredentials);
        };
        let id = media_id(url).ok_or(MediaError::NotFound)?;
        self.download(creds.access_token.expose(), id).await
    }

    async fn template_statuses(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<MetaTemplateStatus>, TemplateSyncError> {
        let Credentials::Whatsapp(creds) = credentials else {
            return Err(TemplateSyncError(
                "credentials are for another provider".into(),
            ));
        };
        self.list_template_statuses(creds).await
    }
}

/// `GET /{waba_id}/message_templates`: one page of the account's templates.
#[derive(Deserialize)]
struct TemplatePage {
    #[serde(default)]
    data: Vec<ListedTemplate>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct ListedTemplate {
    name: String,
    language: String,
    status: String,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    cursors: Option<Cursors>,
    /// Present only when there is a next page.
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Cursors {
    after: Option<String>,
}

/// Most template pages read in one sync (100 templates a page): a bound on a misbehaving
/// answer that keeps naming a next page.
const MAX_TEMPLATE_PAGES: usize = 50;

impl WhatsappAdapter {
    /// Meta's status of every language of the business account's templates, read page by
    /// page with the `after` cursor (never a URL from the answer: the base URL is the
    /// platform's configuration).
    pub(super) async fn list_template_statuses(
        &self,
        creds: &WhatsappCredentials,
    ) -> Result<Vec<MetaTemplateStatus>, TemplateSyncError> {
        let waba_id = creds.waba_id.as_deref().ok_or_else(|| {
            TemplateSyncError("the tenant's WhatsApp settings have no waba_id".into())
        })?;
        let failed = |e: reqwest::Error| {
            TemplateSyncError(format!("WhatsApp templates: {}", e.without_url()))
        };
        let url = format!("{}/{waba_id}/message_templates", self.base_url);
        let mut statuses = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_TEMPLATE_PAGES {
            let mut query = vec![("fields", "name,language,status"), ("limit", "100")];
            if let Some(cursor) = after.as_deref() {
                query.push(("after", cursor));
            }
            let (status, bytes, error) = graph_read(
                self.http
                    .get(&url)
                    .query(&query)
                    .bearer_auth(creds.access_token.expose()),
            )
            .await
            .map_err(failed)?;
            if !status.is_success() {
                let message = error
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
                return Err(TemplateSyncError(format!(
                    "WhatsApp refused the template listing: {message}"
                )));
            }
            let page: TemplatePage = serde_json::from_slice(&bytes).map_err(|_| {
                TemplateSyncError("WhatsApp answered the template listing unreadably".into())
            })?;
            let now = Utc::now();
            statuses.extend(page.data.into_iter().map(|t| MetaTemplateStatus {
                status: MetaStatus::from_meta(&t.status),
                name: t.name,
                language: t.language,
                updated_at: now,
            }));
            after = page
                .paging
                .filter(|p| p.next.is_some())
                .and_then(|p| p.cursors)
                .and_then(|c| c.after);
            if after.is_none() {
                return Ok(statuses);
            }
        }
        Err(TemplateSyncError(format!(
            "WhatsApp listed more than {MAX_TEMPLATE_PAGES} pages of templates"
        )))
    }
}

/// One `message_template_status_update` change of a webhook: Meta's new status for one
/// language of a business account's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateStatusChange {
    /// The business account (the entry's `id`).
    pub waba_id: String,
    /// The status, for the template's name and Meta language code.
    pub status: MetaTemplateStatus,
}

/// The template status changes a WhatsApp webhook carries (none for other fields).
pub fn template_status_changes(body: &[u8]) -> Vec<TemplateStatusChange> {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let empty = Vec::new();
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().map(str::to_owned);
    let now = Utc::now();
    let mut changes = Vec::new();
    for entry in body["entry"].as_array().unwrap_or(&empty) {
        let Some(waba_id) = text(entry, "id") else {
            continue;
        };
        for change in entry["changes"].as_array().unwrap_or(&empty) {
            if change["field"] != "message_template_status_update" {
                continue;
            }
            let value = &change["value"];
            let (Some(event), Some(name), Some(language)) = (
                text(value, "event"),
                text(value, "message_template_name"),
                text(value, "message_template_language"),
            ) else {
                continue;
            };
            changes.push(TemplateStatusChange {
                waba_id: waba_id.clone(),
                status: MetaTemplateStatus {
                    name,
                    language,
                    status: MetaStatus::from_meta(&event),
                    updated_at: now,
                },
            });
        }
    }
    changes
}

/// WhatsApp Cloud API credentials for one business phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsappCredentials {
    /// The Graph API phone number id (digits, not secret); it goes into the send path.
    pub phone_number_id: String,
    /// System-user (or user) access token, sent as a Bearer token.
    pub access_token: Secret,
    /// The Meta app secret: HMAC-SHA256 key of `X-Hub-Signature-256`.
    pub app_secret: Secret,
    /// The token Meta echoes in the `hub.verify_token` subscription handshake.
    pub verify_token: Secret,
    /// The WhatsApp Business Account id (digits, not secret): whose templates
    /// `POST /v1/templates/sync/whatsapp` reads, and whose template status webhooks are
    /// this tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waba_id: Option<String>,
}

impl CarrierConfig for WhatsappCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["access_token", "app_secret", "verify_token"];

    fn validate(&self) -> Result<(), String> {
        // The id goes into the API path: digits only keep it a single path segment.
        let id_ok = !self.phone_number_id.is_empty()
            && self.phone_number_id.bytes().all(|b| b.is_ascii_digit());
        require(id_ok, "phone_number_id (digits)")?;
        require(!self.access_token.expose().is_empty(), "access_token")?;
        // Also a path segment of the Graph API.
        let waba_ok = self
            .waba_id
            .as_ref()
            .is_none_or(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        require(waba_ok, "waba_id (digits)")?;
        strong(&self.app_secret, "app_secret")?;
        require(!self.verify_token.expose().is_empty(), "verify_token")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![
            self.access_token.expose(),
            self.app_secret.expose(),
            self.verify_token.expose(),
        ]
    }

    fn example() -> Self {
        WhatsappCredentials {
            phone_number_id: "106540352242922".into(),
            access_token: Secret::new("wa-access-token-secret"),
            app_secret: Secret::new("wa-app-secret"),
            verify_token: Secret::new("wa-verify-token-secret"),
            waba_id: Some("102290129340398".into()),
        }
    }
}

/// The Omni declaration of Whatsapp.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Whatsapp,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_WHATSAPP_API_URL",
        default: "https://graph.facebook.com/v21.0",
        help: "WhatsApp Cloud API (Graph) base URL, version included.",
    }),
    webhooks: &[
        WebhookRoute::get("/webhooks/whatsapp", Receives::Handshake)
            .served_by(WebhookHandler::MetaHandshake),
        WebhookRoute::post("/webhooks/whatsapp", Receives::Both),
    ],
    adapter: |http, base_url| Arc::new(WhatsappAdapter::new(http, base_url)),
    platform_config: None,
    test_webhook: TestWebhook::Unsupported(
        "not impersonated: post a Cloud API payload signed with X-Hub-Signature-256 \
         (events/webhook-whatsapp.json is one)",
    ),
    openapi: OPENAPI,
};

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/whatsapp": {"get": {"summary": "WhatsApp Cloud API webhook subscription handshake", "parameters": [{"name": "hub.mode", "in": "query", "required": true, "schema": {"type": "string"}}, {"name": "hub.verify_token", "in": "query", "required": true, "schema": {"type": "string"}}, {"name": "hub.challenge", "in": "query", "required": true, "schema": {"type": "string"}}], "responses": {"200": {"description": "the hub.challenge, echoed", "content": {"text/plain": {"schema": {"type": "string"}}}}, "403": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}, "post": {"summary": "WhatsApp Cloud API messages and statuses (X-Hub-Signature-256); routed by the business number, which must match the tenant's phone_number_id", "parameters": [{"name": "X-Hub-Signature-256", "in": "header", "required": true, "schema": {"type": "string"}}], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::providers::test_support::{e164, one};
    use crate::providers::{Secret, TwilioCredentials, WhatsappCredentials, MAX_MEDIA_BYTES};
    use proptest::prelude::*;
    use serde_json::Value;
    use std::time::Duration;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/vectors/whatsapp_signature.json"
    ));
    const INDEX: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/index.json"
    ));
    const FIXTURE_SECRET: &str = "0123456789abcdef0123456789abcdef";
    const PHONE_ID: &str = "200000000000002";
    const TOKEN: &str = "EAAG-access-token-secret";
    const WABA_ID: &str = "300000000000003";

    fn creds(app_secret: &str) -> Credentials {
        Credentials::Whatsapp(WhatsappCredentials {
            phone_number_id: PHONE_ID.into(),
            access_token: Secret::new(TOKEN),
            app_secret: Secret::new(app_secret),
            verify_token: Secret::new("verify-me"),
            waba_id: Some(WABA_ID.into()),
        })
    }

    fn signed(body: &[u8], sig: Option<&str>) -> WebhookRequest {
        let mut headers = vec![("content-type".into(), "application/json".into())];
        if let Some(sig) = sig {
            headers.push(("x-hub-signature-256".into(), sig.into()));
        }
        WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/whatsapp".into(),
            headers,
            body: body.to_vec(),
        }
    }

    #[test]
    fn every_signature_vector_verifies_and_every_alteration_fails() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            let secret = case["app_secret"].as_str().unwrap();
            let body = case["raw_body"].as_str().unwrap().as_bytes();
            let header = case["header"].as_str().unwrap();
            assert_eq!(signature(body, secret), header);
            // The tenant configured for the vector's own phone number id.
            let mut tenant = creds(secret);
            let addressed_to = phone_number_id(&signed(body, None));
            if let (Credentials::Whatsapp(c), Some(id)) = (&mut tenant, addressed_to.clone()) {
                c.phone_number_id = id;
            }
            assert_eq!(verify(&signed(body, Some(header)), &tenant), Ok(()));
            if addressed_to.is_some() {
                // Correctly signed, but for another business's number: not this tenant's.
                let mut other = tenant.clone();
                if let Credentials::Whatsapp(c) = &mut other {
                    c.phone_number_id = "999".into();
                }
                assert_eq!(
                    verify(&signed(body, Some(header)), &other),
                    Err(VerifyError::Mismatch)
                );
            }

            // Negatives derived from each valid case.
            let upper = format!("sha256={}", header["sha256=".len()..].to_ascii_uppercase());
            let mut flipped = header.to_string();
            let last = if flipped.ends_with('0') { "1" } else { "0" };
            flipped.replace_range(flipped.len() - 1.., last);
            let mismatches = [
                upper.as_str(),
                flipped.as_str(),
                &header[..header.len() - 2],
                "sha256=",
            ];
            for bad in mismatches {
                assert_eq!(
                    verify(&signed(body, Some(bad)), &creds(secret)),
                    Err(VerifyError::Mismatch),
                    "{bad}"
                );
            }
            let mut tampered = body.to_vec();
            tampered.push(b' ');
            assert_eq!(
                verify(&signed(&tampered, Some(header)), &creds(secret)),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(
                verify(&signed(body, Some(header)), &creds("another-secret")),
                Err(VerifyError::Mismatch)
            );
            let bare = &header["sha256=".len()..];
            assert!(matches!(
                verify(&signed(body, Some(bare)), &creds(secret)),
                Err(VerifyError::Unsupported(_))
            ));
            assert!(matches!(
                verify(
                    &signed(body, Some(&header.replace("sha256=", "sha1="))),
                    &creds(secret)
                ),
                Err(VerifyError::Unsupported(_))
            ));
            assert_eq!(
                verify(&signed(body, None), &creds(secret)),
                Err(VerifyError::Missing)
            );
        }
    }

    #[test]
    fn foreign_credentials_are_refused() {
        let twilio = Credentials::Twilio(TwilioCredentials {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: Secret::new(FIXTURE_SECRET),
            webhook_keys: Default::default(),
        });
        let request = signed(b"{}", Some(&signature(b"{}", FIXTURE_SECRET)));
        assert_eq!(
            verify(&request, &twilio),
            Err(VerifyError::WrongCredentials)
        );
        assert_eq!(
            verify(&request, &Credentials::Simulator),
            Err(VerifyError::WrongCredentials)
        );
    }

    fn fixture(name: &str) -> WebhookRequest {
        let index: Value = serde_json::from_str(INDEX).unwrap();
        assert_eq!(index["test_secrets"]["whatsapp_app_secret"], FIXTURE_SECRET);
        let entry = index["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == name)
            .unwrap()
            .clone();
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/whatsapp".into(),
            headers: entry["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_string()))
                .collect(),
            body: std::fs::read(path).unwrap(),
        }
    }

    fn checked(name: &str) -> WebhookEvent {
        let request = fixture(name);
        let adapter = WhatsappAdapter::new(reqwest::Client::new(), "http://unused");
        assert_eq!(
            adapter.verify_inbound(&request, &creds(FIXTURE_SECRET)),
            Ok(())
        );
        assert_eq!(
            adapter.verify_inbound(&request, &creds("wrong")),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(phone_number_id(&request).as_deref(), Some(PHONE_ID));
        one(adapter.normalize_inbound(&request).unwrap())
    }

    #[test]
    fn inbound_text_fixture() {
        let WebhookEvent::Message(m) = checked("whatsapp_inbound_text.json") else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Whatsapp);
        assert_eq!(m.channel, Channel::Whatsapp);
        assert_eq!(
            m.provider_message_id,
            "wamid.HBgLMTU1NTU1NTAxMjMVAgASGBQzQUZBQ0U="
        );
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(m.body.as_deref(), Some("Hola, café?"));
        assert!(m.media.is_empty());
        assert_eq!(m.profile_name.as_deref(), Some("Jane Example"));
        assert!((Utc::now() - m.received_at).num_seconds() < 60);
    }

    #[test]
    fn inbound_image_fixture() {
        let WebhookEvent::Message(m) = checked("whatsapp_inbound_image.json") else {
            panic!("not a message");
        };
        assert_eq!(m.provider, ProviderKind::Whatsapp);
        assert_eq!(m.channel, Channel::Whatsapp);
        assert_eq!(
            m.provider_message_id,
            "wamid.HBgLMTU1NTU1NTAxMjMVAgASGBQzQUZBQ0Y="
        );
        assert_eq!(m.from, e164("+15555550123"));
        assert_eq!(m.to, e164("+15555550100"));
        assert_eq!(m.body.as_deref(), Some("receipt"));
        assert_eq!(
            m.media,
            vec![Media {
                url: "whatsapp-media:300000000000003".into(),
                content_type: Some("image/jpeg".into()),
            }]
        );
        assert_eq!(m.profile_name.as_deref(), Some("Jane Example"));
    }

    #[test]
    fn status_sent_fixture() {
        let WebhookEvent::Status(s) = checked("whatsapp_status_sent.json") else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::Whatsapp);
        assert_eq!(
            s.provider_message_id,
            "wamid.HBgLMTU1NTU1NTAxMjMVAgARGBIyQjVDRDU="
        );
        assert_eq!(s.status, DeliveryStatus::Sent);
        assert_eq!(s.raw_status, "sent");
        assert_eq!(s.error_code, None);
        assert_eq!(s.error_message, None);
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
        assert!((Utc::now() - s.at).num_seconds() < 60);
    }

    #[test]
    fn status_failed_fixture() {
        let WebhookEvent::Status(s) = checked("whatsapp_status_failed.json") else {
            panic!("not a status");
        };
        assert_eq!(s.provider, ProviderKind::Whatsapp);
        assert_eq!(
            s.provider_message_id,
            "wamid.HBgLMTU1NTU1NTAxMjMVAgARGBIyQjVDRDY="
        );
        assert_eq!(s.status, DeliveryStatus::Failed);
        assert_eq!(s.raw_status, "failed");
        assert_eq!(s.error_code.as_deref(), Some("131047"));
        assert_eq!(s.error_message.as_deref(), Some("Re-engagement message"));
        assert_eq!(s.tenant_number, Some(e164("+15555550100")));
    }

    #[test]
    fn status_words_unknown_types_and_bad_envelopes() {
        let envelope = |value: Value| {
            json!({"object": "whatsapp_business_account", "entry": [{"changes": [
                {"field": "messages", "value": value}]}]})
            .to_string()
            .into_bytes()
        };
        for (word, expected) in [
            ("delivered", DeliveryStatus::Delivered),
            ("read", DeliveryStatus::Read),
            ("played", DeliveryStatus::Read),
        ] {
            let body = envelope(json!({"statuses": [{"id": "wamid.1", "status": word}]}));
            let WebhookEvent::Status(s) = one(normalize(&signed(&body, None)).unwrap()) else {
                panic!("not a status");
            };
            assert_eq!((s.status, s.raw_status.as_str()), (expected, word));
        }
        let reaction = envelope(json!({
            "metadata": {"display_phone_number": "15555550100", "phone_number_id": "1"},
            "messages": [{"from": "15555550123", "id": "wamid.2", "type": "reaction",
                "reaction": {"message_id": "wamid.1", "emoji": "👍"}}]}));
        assert_eq!(normalize(&signed(&reaction, None)).unwrap(), vec![]);
        for bad in [
            &b"not json"[..],
            br#"{"object":"page","entry":[]}"#,
            br#"{"entry":[]}"#,
        ] {
            assert!(normalize(&signed(bad, None)).is_err());
            assert_eq!(phone_number_id(&signed(bad, None)), None);
        }
    }

    #[test]
    fn subscription_handshake() {
        let good = "hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444";
        assert_eq!(
            verify_subscription(good, "verify-me").as_deref(),
            Some("1158201444")
        );
        assert_eq!(verify_subscription(good, "other-token"), None);
        assert_eq!(verify_subscription(good, ""), None);
        let wrong_mode = "hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1";
        assert_eq!(verify_subscription(wrong_mode, "verify-me"), None);
        let no_challenge = "hub.mode=subscribe&hub.verify_token=verify-me";
        assert_eq!(verify_subscription(no_challenge, "verify-me"), None);
        assert_eq!(verify_subscription("", "verify-me"), None);
    }

    fn outbound(media: Vec<Media>) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("north").unwrap(),
            channel: Channel::Whatsapp,
            from: e164("+15555550100"),
            to: e164("+15555550123"),
            body: Some("Units are on the way".into()),
            media,
            template: None,
            subject: None,
            status_callback: None,
        }
    }

    const MESSAGES: &str = "/v21.0/200000000000002/messages";

    async fn server() -> (MockServer, WhatsappAdapter) {
        let server = MockServer::start().await;
        let adapter =
            WhatsappAdapter::new(reqwest::Client::new(), &format!("{}/v21.0/", server.uri()));
        (server, adapter)
    }

    fn accepted() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": "15555550123", "wa_id": "15555550123"}],
            "messages": [{"id": "wamid.SENT1"}]}))
    }

    #[tokio::test]
    async fn sends_text_with_bearer_and_exact_body() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(body_json(json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "15555550123", "type": "text",
                "text": {"body": "Units are on the way", "preview_url": false}})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let result = adapter
            .send(&creds(FIXTURE_SECRET), &outbound(vec![]))
            .await
            .unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Whatsapp,
                provider_message_id: "wamid.SENT1".into(),
                status: DeliveryStatus::Sent,
                raw_status: "accepted".into(),
            }
        );
    }

    #[tokio::test]
    async fn sends_one_media_with_the_text_as_caption() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(body_json(json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "15555550123", "type": "image",
                "image": {"link": "https://cdn.example.org/map.PNG?v=2", "caption": "Units are on the way"}})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(body_json(json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "15555550123", "type": "document",
                "document": {"link": "https://cdn.example.org/report.pdf", "caption": "Units are on the way"}})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let media = |url: &str| Media {
            url: url.into(),
            content_type: None,
        };
        for url in [
            "https://cdn.example.org/map.PNG?v=2",
            "https://cdn.example.org/report.pdf",
        ] {
            let sent = adapter
                .send(&creds(FIXTURE_SECRET), &outbound(vec![media(url)]))
                .await
                .unwrap();
            assert_eq!(sent.provider_message_id, "wamid.SENT1");
        }
        // Two items would be two WhatsApp messages: refused before any request.
        let two = outbound(vec![media("https://a/1.jpg"), media("https://a/2.jpg")]);
        let err = adapter
            .send(&creds(FIXTURE_SECRET), &two)
            .await
            .unwrap_err();
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn sends_a_template_as_meta_documents_it() {
        // Meta's components as clients send them (a number index is accepted too).
        let components = json!([
            {"type": "header", "parameters": [
                {"type": "image", "image": {"link": "https://cdn.example.org/map.png"}}]},
            {"type": "body", "parameters": [
                {"type": "text", "text": "Unit 12"},
                {"type": "currency", "currency":
                    {"fallback_value": "$12.34", "code": "USD", "amount_1000": 12340}},
                {"type": "date_time", "date_time": {"fallback_value": "May 1, 2027"}}]},
            {"type": "button", "sub_type": "quick_reply", "index": "0",
                "parameters": [{"type": "payload", "payload": "ACK-42"}]}
        ]);
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(body_json(json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "15555550123", "type": "template",
                "template": {
                    "name": "unit_dispatched",
                    "language": {"code": "en_US"},
                    "components": components}})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let template = serde_json::from_value(json!({
            "name": "unit_dispatched", "language": "en_US", "components": components}))
        .unwrap();
        let message = OutboundMessage {
            body: None,
            template: Some(template),
            ..outbound(vec![])
        };
        let sent = adapter
            .send(&creds(FIXTURE_SECRET), &message)
            .await
            .unwrap();
        assert_eq!(sent.provider_message_id, "wamid.SENT1");
        assert!(adapter.sends_templates());
    }

    #[tokio::test]
    async fn template_statuses_are_read_page_by_page_with_the_after_cursor() {
        use wiremock::matchers::query_param;
        let (server, adapter) = server().await;
        let listing = format!("/v21.0/{WABA_ID}/message_templates");
        Mock::given(method("GET"))
            .and(path(listing.as_str()))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(query_param("fields", "name,language,status"))
            .and(query_param("after", "MjQZD"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": [{"name": "unit_dispatched", "language": "es", "status": "PAUSED",
                    "id": "2", "category": "UTILITY"}],
                "paging": {"cursors": {"before": "MAZDZD", "after": "MjQZE"}}})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(listing.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": [
                    {"name": "unit_dispatched", "language": "en_US", "status": "APPROVED", "id": "1"},
                    {"name": "promo", "language": "en_US", "status": "REJECTED", "id": "3"}],
                "paging": {"cursors": {"before": "MAZDZD", "after": "MjQZD"},
                    "next": "https://graph.example/elsewhere"}})))
            .expect(1)
            .mount(&server)
            .await;
        let statuses = adapter
            .template_statuses(&creds(FIXTURE_SECRET))
            .await
            .unwrap();
        let got: Vec<_> = statuses
            .iter()
            .map(|s| (s.name.as_str(), s.language.as_str(), s.status))
            .collect();
        assert_eq!(
            got,
            [
                ("unit_dispatched", "en_US", MetaStatus::Approved),
                ("promo", "en_US", MetaStatus::Rejected),
                ("unit_dispatched", "es", MetaStatus::Paused),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_template_listing_says_why_and_no_account_is_asked_for() {
        let (server, adapter) = server().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
                "message": "Error validating access token", "type": "OAuthException", "code": 190}})))
            .mount(&server)
            .await;
        let refused = adapter.template_statuses(&creds(FIXTURE_SECRET)).await;
        assert_eq!(
            refused.unwrap_err().to_string(),
            "WhatsApp refused the template listing: Error validating access token"
        );
        let Credentials::Whatsapp(mut without) = creds(FIXTURE_SECRET) else {
            unreachable!()
        };
        without.waba_id = None;
        let missing = adapter
            .template_statuses(&Credentials::Whatsapp(without))
            .await;
        assert!(missing.unwrap_err().to_string().contains("waba_id"));
    }

    #[test]
    fn template_status_webhooks_are_read_per_account() {
        let body = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "300000000000003", "time": 1700000000, "changes": [
                {"field": "message_template_status_update", "value": {
                    "event": "APPROVED", "message_template_id": 594425479261596_i64,
                    "message_template_name": "unit_dispatched",
                    "message_template_language": "es", "reason": "NONE"}},
                {"field": "messages", "value": {}}]},
            {"id": "300000000000004", "changes": [
                {"field": "message_template_status_update", "value": {
                    "event": "DISABLED", "message_template_name": "promo",
                    "message_template_language": "en_US"}},
                {"field": "message_template_status_update", "value": {"event": "PAUSED"}}]}]});
        let changes = template_status_changes(body.to_string().as_bytes());
        let got: Vec<_> = changes
            .iter()
            .map(|c| {
                (
                    c.waba_id.as_str(),
                    c.status.name.as_str(),
                    c.status.language.as_str(),
                    c.status.status,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "300000000000003",
                    "unit_dispatched",
                    "es",
                    MetaStatus::Approved
                ),
                ("300000000000004", "promo", "en_US", MetaStatus::Disabled),
            ]
        );
        assert!(template_status_changes(b"not json").is_empty());
    }

    #[tokio::test]
    async fn a_template_without_components_sends_name_and_language_only() {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(body_json(json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "15555550123", "type": "template",
                "template": {"name": "hello_world", "language": {"code": "en"}}})))
            .respond_with(accepted())
            .expect(1)
            .mount(&server)
            .await;
        let message = OutboundMessage {
            body: None,
            template: Some(crate::template::Template {
                name: "hello_world".into(),
                language: "en".into(),
                components: vec![],
            }),
            ..outbound(vec![])
        };
        adapter
            .send(&creds(FIXTURE_SECRET), &message)
            .await
            .unwrap();
    }

    async fn failing(response: ResponseTemplate) -> SendError {
        let (server, adapter) = server().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .respond_with(response)
            .mount(&server)
            .await;
        let err = adapter
            .send(&creds(FIXTURE_SECRET), &outbound(vec![]))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains(TOKEN), "{err}");
        err
    }

    fn graph_error(status: u16, code: i64, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({"error": {
            "message": message, "type": "OAuthException", "code": code,
            "error_subcode": 2494010, "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}}))
    }

    #[tokio::test]
    async fn errors_are_classified() {
        // Outside the 24-hour window: permanent, and the reason says what would get through.
        let err = failing(graph_error(400, 131047, "Re-engagement message")).await;
        assert!(!err.is_transient());
        assert_eq!(err.code(), Some("131047"));
        assert!(err.message().starts_with("Re-engagement message: "));
        assert!(err.message().contains("template"), "{err}");
        let err = failing(graph_error(400, 130429, "Rate limit hit")).await;
        assert!(err.is_transient());
        assert_eq!(err.code(), Some("130429"));
        let err = failing(ResponseTemplate::new(500)).await;
        assert!(err.is_transient());
        let err = failing(ResponseTemplate::new(429).insert_header("retry-after", "7")).await;
        assert!(matches!(
            err,
            SendError::Transient {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(7)
        ));
    }

    #[tokio::test]
    async fn wrong_credentials_and_channels_are_refused() {
        let adapter = WhatsappAdapter::new(reqwest::Client::new(), "http://127.0.0.1:9");
        let err = adapter
            .send(&Credentials::Simulator, &outbound(vec![]))
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        let mut sms = outbound(vec![]);
        sms.channel = Channel::Sms;
        let err = adapter
            .send(&creds(FIXTURE_SECRET), &sms)
            .await
            .unwrap_err();
        assert!(!err.is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), sig in ".{0,80}") {
            let request = signed(&body, Some(&sig));
            let _ = verify(&request, &creds(FIXTURE_SECRET));
            let _ = normalize(&request);
            let _ = phone_number_id(&request);
        }

        #[test]
        fn arbitrary_envelopes_never_panic(from in ".{0,20}", kind in "[a-z]{0,10}", display in ".{0,20}") {
            let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
                {"field": "messages", "value": {
                    "metadata": {"display_phone_number": display, "phone_number_id": "1"},
                    "messages": [{"from": from, "id": "wamid.x", "type": kind}],
                    "statuses": [{"id": "wamid.y", "status": kind, "errors": [{"code": 1}]}]}}]}]});
            let _ = normalize(&signed(body.to_string().as_bytes(), None));
        }
    }

    #[tokio::test]
    async fn inbound_media_is_resolved_then_downloaded_with_the_token() {
        let (server, adapter) = server().await;
        let bearer = format!("Bearer {TOKEN}");
        Mock::given(method("GET"))
            .and(path("/v21.0/300000000000003"))
            .and(header("authorization", bearer.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messaging_product": "whatsapp",
                "url": format!("{}/lookaside/media?mid=300000000000003", server.uri()),
                "mime_type": "image/jpeg", "sha256": "abc", "file_size": 4,
                "id": "300000000000003"})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/lookaside/media"))
            .and(header("authorization", bearer.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(b"\xff\xd8\xff\xe0".to_vec()))
            .expect(1)
            .mount(&server)
            .await;
        let url = "whatsapp-media:300000000000003";
        assert!(adapter.keeps_media(url));
        assert!(!adapter.keeps_media("https://cdn.example.org/a.jpg"));
        let media = adapter
            .fetch_media(&creds(FIXTURE_SECRET), url)
            .await
            .unwrap();
        assert_eq!(media.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(media.bytes, b"\xff\xd8\xff\xe0");
    }

    #[tokio::test]
    async fn unknown_foreign_or_malformed_media_ids_are_not_found() {
        let (server, adapter) = server().await;
        Mock::given(method("GET"))
            .and(path("/v21.0/999"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": "Unsupported get request.", "type": "GraphMethodException",
                "code": 100, "error_subcode": 33}})))
            .expect(1)
            .mount(&server)
            .await;
        let creds = creds(FIXTURE_SECRET);
        let fetch = |url: &'static str| adapter.fetch_media(&creds, url);
        assert_eq!(fetch("whatsapp-media:999").await, Err(MediaError::NotFound));
        // Not digits: never reaches the Graph API (the mock above expects one call only).
        for url in [
            "whatsapp-media:../me",
            "whatsapp-media:",
            "whatsapp-media:1?x=2",
        ] {
            assert_eq!(fetch(url).await, Err(MediaError::NotFound), "{url}");
        }
        let twilio = Credentials::Twilio(TwilioCredentials {
            account_sid: "AC1".into(),
            auth_token: Secret::new("t"),
            webhook_keys: Default::default(),
        });
        assert_eq!(
            adapter.fetch_media(&twilio, "whatsapp-media:999").await,
            Err(MediaError::WrongCredentials)
        );
    }

    #[tokio::test]
    async fn refused_tokens_and_oversized_media_are_errors_not_downloads() {
        let (server, adapter) = server().await;
        Mock::given(method("GET"))
            .and(path("/v21.0/1"))
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
                "message": "Error validating access token", "code": 190}})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v21.0/2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "url": format!("{}/big", server.uri()), "mime_type": "video/mp4"})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/big"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![0u8; MAX_MEDIA_BYTES + 1]))
            .mount(&server)
            .await;
        let creds = creds(FIXTURE_SECRET);
        let refused = adapter.fetch_media(&creds, "whatsapp-media:1").await;
        assert_eq!(
            refused,
            Err(MediaError::Carrier("Error validating access token".into()))
        );
        let big = adapter.fetch_media(&creds, "whatsapp-media:2").await;
        assert_eq!(big, Err(MediaError::TooLarge));
    }

    #[test]
    fn the_token_goes_to_plain_http_media_urls_only_from_a_plain_http_fake() {
        let secure = "https://graph.facebook.com/v21.0";
        assert!(media_url_allowed(secure, "https://lookaside.fbsbx.com/x"));
        assert!(!media_url_allowed(secure, "http://lookaside.fbsbx.com/x"));
        assert!(!media_url_allowed(secure, "file:///etc/passwd"));
        assert!(media_url_allowed(
            "http://127.0.0.1:9/v21.0",
            "http://127.0.0.1:9/x"
        ));
    }

    #[test]
    fn whatsapp_secrets_are_redacted() {
        let creds = Credentials::Whatsapp(WhatsappCredentials {
            phone_number_id: "106540352242922".into(),
            access_token: Secret::new("EAAG-access-secret"),
            app_secret: Secret::new("app-very-secret"),
            verify_token: Secret::new("verify-very-secret"),
            waba_id: Some("102290129340398".into()),
        });
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in [
            "EAAG-access-secret",
            "app-very-secret",
            "verify-very-secret",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("106540352242922"));
        assert_eq!(creds.redacted()["waba_id"], "102290129340398");
        assert_eq!(creds.redacted()["provider"], "whatsapp");
        assert_eq!(
            creds.secrets(),
            vec![
                "EAAG-access-secret",
                "app-very-secret",
                "verify-very-secret"
            ]
        );
    }

    #[test]
    fn whatsapp_admin_json_is_validated() {
        let ok = serde_json::json!({"phone_number_id": "106540352242922", "access_token": "t",
            "app_secret": "meta-app-secret-0001", "verify_token": "v"});
        assert_eq!(
            Credentials::from_admin_json(ProviderKind::Whatsapp, ok)
                .unwrap()
                .kind(),
            ProviderKind::Whatsapp
        );
        let traversal = serde_json::json!({"phone_number_id": "1/../me", "access_token": "t",
            "app_secret": "s", "verify_token": "v"});
        assert!(Credentials::from_admin_json(ProviderKind::Whatsapp, traversal).is_err());
        let empty = serde_json::json!({"phone_number_id": "1", "access_token": "t",
            "app_secret": "", "verify_token": "v"});
        assert!(Credentials::from_admin_json(ProviderKind::Whatsapp, empty).is_err());
    }
}
