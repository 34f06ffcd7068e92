//! The carrier adapter contract and one module per carrier.
//!
//! Every vendor quirk (channel prefixes, form vs JSON bodies, status vocabularies, signature
//! schemes, error codes) stays inside its carrier's module; the rest of Omni only sees the
//! domain types.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{Channel, OutboundMessage, SendError, SendResult, WebhookEvent, E164};

pub mod bandwidth;
pub mod bird;
pub mod carrier;
pub mod inteliquent;
pub mod messagebird;
pub mod sendgrid;
pub mod ses;
pub mod signal;
pub mod simulator;
pub mod sinch;
pub mod telnyx;
pub mod twilio;
pub mod voicemeup;
pub mod voipms;
pub mod vonage;
pub mod whatsapp;

pub use carrier::{
    ApiUrlSetting, Carrier, CarrierConfig, Receives, SigningKey, TestInbound, TestWebhook,
    WebhookHandler, WebhookMethod, WebhookReply, WebhookRoute, MIN_WEBHOOK_SECRET_CHARS,
};

/// An HTTP request as a carrier made it, before anything is trusted.
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    /// `GET` or `POST`, upper case.
    pub method: String,
    /// The full URL the carrier called, as the carrier saw it (public scheme, host, path, query).
    pub url: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The raw body bytes, exactly as received (signatures cover them).
    pub body: Vec<u8>,
}

impl WebhookRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The query string of [`Self::url`], without the `?`.
    pub fn query(&self) -> &str {
        self.url.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// Whether the body is a form (`application/x-www-form-urlencoded`).
    pub fn is_form(&self) -> bool {
        const FORM: &str = "application/x-www-form-urlencoded";
        self.header("content-type")
            .and_then(|ct| ct.get(..FORM.len()))
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(FORM))
    }
}

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; call only where it is used (signing, auth headers).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Declares the carriers: the [`ProviderKind`] vocabulary, the [`Credentials`] a tenant
/// configures for each, and [`CARRIERS`], every carrier module's [`Carrier`] declaration.
macro_rules! carriers {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $module:ident :: $config:ident;)+) => {
        crate::domain::string_enum!(
            /// A carrier (or carrier-like gateway) Omni can send and receive through.
            ProviderKind, "provider" {
                $($(#[$doc])* $variant => $name,)+
                /// The built-in demo carrier; only available in demo mode.
                Simulator => "simulator",
                /// LiveChat, Omni's own web chat: no carrier, no credentials; replies are
                /// pushed to the visitor's socket.
                Livechat => "livechat",
            }
        );

        /// A tenant's configuration for one carrier, secrets included.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "provider")]
        pub enum Credentials {
            $($(#[$doc])* #[serde(rename = $name)] $variant($module::$config),)+
            /// The demo carrier (no secrets).
            #[serde(rename = "simulator")]
            Simulator,
        }

        $(pub use $module::$config;)+

        $(impl $module::$config {
            /// This carrier's configuration, if `credentials` are this carrier's.
            pub fn of(credentials: &Credentials) -> Option<&Self> {
                match credentials {
                    Credentials::$variant(c) => Some(c),
                    _ => None,
                }
            }
        })+

        /// Every carrier's declaration, in the list's order (the simulator is not one).
        pub static CARRIERS: &[&Carrier] = &[$(&$module::CARRIER),+];

        impl Credentials {
            /// Which carrier these are for.
            pub fn kind(&self) -> ProviderKind {
                match self {
                    $(Credentials::$variant(_) => ProviderKind::$variant,)+
                    Credentials::Simulator => ProviderKind::Simulator,
                }
            }

            /// Reads a carrier's admin JSON (`{"account_sid": …}` for twilio, …).
            fn parse(kind: ProviderKind, body: serde_json::Value) -> Result<Self, String> {
                let parsed = match kind {
                    $(ProviderKind::$variant => serde_json::from_value(body).map(Credentials::$variant),)+
                    ProviderKind::Simulator => {
                        return Err("the simulator is configured only in demo mode".into())
                    }
                    ProviderKind::Livechat => {
                        return Err("LiveChat is configured at .../livechat, not as a provider".into())
                    }
                };
                parsed.map_err(|e| format!("invalid {kind} configuration: {e}"))
            }

            /// Checks the configuration's shape and the strength of its webhook secrets; the
            /// error names the field.
            pub fn validate(&self) -> Result<(), String> {
                match self {
                    $(Credentials::$variant(c) => c.validate(),)+
                    Credentials::Simulator => Ok(()),
                }
            }

            /// Every secret value in this configuration (for log scrubbing tests and
            /// redaction).
            pub fn secrets(&self) -> Vec<&str> {
                match self {
                    $(Credentials::$variant(c) => c.secrets(),)+
                    Credentials::Simulator => Vec::new(),
                }
            }

            /// The JSON fields holding secrets.
            fn secret_fields(&self) -> &'static [&'static str] {
                match self {
                    $(Credentials::$variant(_) => <$module::$config as CarrierConfig>::SECRET_FIELDS,)+
                    Credentials::Simulator => &[],
                }
            }

            /// One made-up configuration per carrier (storage round trips).
            pub fn examples() -> Vec<Credentials> {
                vec![$(Credentials::$variant(<$module::$config as CarrierConfig>::example()),)+]
            }
        }
    };
}

carriers! {
    /// Twilio Programmable Messaging.
    Twilio => "twilio", twilio::TwilioCredentials;
    /// VoIP.ms REST API and SMS URL callback.
    Voipms => "voipms", voipms::VoipmsCredentials;
    /// A signal-cli daemon in HTTP JSON-RPC mode.
    Signal => "signal", signal::SignalConfig;
    /// The WhatsApp Cloud API (Meta's Graph API) as a carrier in its own right.
    Whatsapp => "whatsapp", whatsapp::WhatsappCredentials;
    /// Telnyx Messaging v2.
    Telnyx => "telnyx", telnyx::TelnyxCredentials;
    /// Bandwidth Messaging v2.
    Bandwidth => "bandwidth", bandwidth::BandwidthCredentials;
    /// Sinch SMS (the REST "xms" API).
    Sinch => "sinch", sinch::SinchCredentials;
    /// VoiceMeUp (`queue_sms` REST API and SMS webhook).
    Voicemeup => "voicemeup", voicemeup::VoicemeupCredentials;
    /// Vonage Messages API.
    Vonage => "vonage", vonage::VonageCredentials;
    /// SendGrid (Twilio SendGrid) email.
    Sendgrid => "sendgrid", sendgrid::SendgridCredentials;
    /// Amazon SES v2 email.
    Ses => "ses", ses::SesCredentials;
    /// Bird Channels API (SMS channels).
    Bird => "bird", bird::BirdCredentials;
    /// Inteliquent Message Broker (`publishMessages` and the inbound-messaging webhook).
    Inteliquent => "inteliquent", inteliquent::InteliquentCredentials;
    /// MessageBird's legacy REST API (`rest.messagebird.com`), SMS and MMS.
    MessageBird => "messagebird", messagebird::MessageBirdCredentials;
}

impl Credentials {
    /// Parses and validates a carrier configuration from the admin API.
    pub fn from_admin_json(kind: ProviderKind, body: serde_json::Value) -> Result<Self, String> {
        let creds = Credentials::parse(kind, body)?;
        creds.validate()?;
        Ok(creds)
    }

    /// The configuration with every secret replaced, safe to return from the API.
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            for field in self.secret_fields() {
                match obj.get_mut(*field) {
                    // A map of secrets (Twilio's webhook_keys): the names stay visible.
                    Some(serde_json::Value::Object(secrets)) => {
                        secrets.values_mut().for_each(|s| *s = "***".into())
                    }
                    Some(value) => *value = "***".into(),
                    None => {}
                }
            }
        }
        v
    }
}

/// The declaration of a carrier (`None` for the simulator).
pub fn carrier(kind: ProviderKind) -> Option<&'static Carrier> {
    CARRIERS.iter().copied().find(|c| c.kind == kind)
}

/// Why a webhook was not accepted as authentic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature (or shared secret) where one is required.
    #[error("signature missing")]
    Missing,
    /// The signature or secret does not match.
    #[error("signature mismatch")]
    Mismatch,
    /// The request is signed with a scheme or key we do not have.
    #[error("unsupported signature scheme: {0}")]
    Unsupported(String),
    /// Correctly signed, but outside the carrier's replay window.
    #[error("signature timestamp outside the replay window")]
    Stale,
    /// The credentials given are for another carrier.
    #[error("credentials are for another provider")]
    WrongCredentials,
}

/// Why a webhook body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    /// A parse error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        ParseError(msg.into())
    }
}

/// What every carrier adapter does.
///
/// Adapters hold no tenant state: the HTTP client and the carrier's base URL come from
/// platform configuration, credentials come with each call. So one adapter per carrier
/// serves every tenant, and a tenant switching carrier changes only data.
#[async_trait]
pub trait MessagingProviderAdapter: Send + Sync {
    /// Which carrier this is.
    fn kind(&self) -> ProviderKind;

    /// The channels this carrier can carry.
    fn channels(&self) -> &'static [Channel];

    /// Whether this carrier sends WhatsApp templates ([`OutboundMessage::template`]); the
    /// others refuse such a message for good.
    fn sends_templates(&self) -> bool {
        false
    }

    /// Sends one message with the tenant's credentials.
    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError>;

    /// Checks a webhook's authenticity in constant time.
    fn verify_inbound(
        &self,
        request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError>;

    /// Reads a webhook into Omni's events (inbound messages and status updates).
    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError>;

    /// Whether an inbound media URL this carrier gave us is kept behind the carrier's own
    /// authentication (so Omni must fetch it with the tenant's credentials) rather than a
    /// link a dashboard can follow itself.
    fn keeps_media(&self, _url: &str) -> bool {
        false
    }

    /// Fetches a media item [`keeps_media`](Self::keeps_media) said is kept by the carrier,
    /// at most [`MAX_MEDIA_BYTES`].
    async fn fetch_media(
        &self,
        _credentials: &Credentials,
        _url: &str,
    ) -> Result<MediaContent, MediaError> {
        Err(MediaError::NotFound)
    }

    /// Meta's status of each language of the business account's WhatsApp templates
    /// (WhatsApp only).
    async fn template_statuses(
        &self,
        _credentials: &Credentials,
    ) -> Result<Vec<crate::templates::MetaTemplateStatus>, TemplateSyncError> {
        Err(TemplateSyncError(
            "only the WhatsApp Cloud API keeps WhatsApp templates".into(),
        ))
    }
}

/// Why a carrier's template statuses could not be read: the carrier's answer, or what is
/// missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateSyncError(pub String);

/// The largest media item Omni fetches on a dashboard's behalf: WhatsApp's own limit for
/// audio and video (documents may be larger and are refused rather than held in memory).
pub const MAX_MEDIA_BYTES: usize = 16 * 1024 * 1024;

/// A media item fetched from a carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaContent {
    /// MIME type, when the carrier said.
    pub content_type: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl MediaContent {
    /// Whether a browser may show it in place: pictures, sound and video only. Anything else
    /// (HTML, SVG is an image but scriptable, PDF, …) is a download, so a contact's file can
    /// never run as a page of the site that serves it.
    pub fn shown_inline(&self) -> bool {
        self.content_type.as_deref().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            ["image/", "audio/", "video/"]
                .iter()
                .any(|p| t.starts_with(p))
                && !t.starts_with("image/svg")
        })
    }

    /// The `Content-Disposition` it is served with: `inline` when [shown in
    /// place](Self::shown_inline), else `attachment`.
    pub fn disposition(&self) -> &'static str {
        if self.shown_inline() {
            "inline"
        } else {
            "attachment"
        }
    }
}

/// Why a carrier's media item could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The carrier has no such item (never had it, or it expired).
    #[error("the carrier has no such media")]
    NotFound,
    /// Larger than [`MAX_MEDIA_BYTES`].
    #[error("the media is larger than {MAX_MEDIA_BYTES} bytes")]
    TooLarge,
    /// The carrier failed or refused (credentials, outage); the text is the carrier's answer.
    #[error("{0}")]
    Carrier(String),
    /// The credentials given are for another carrier.
    #[error("credentials are for another provider")]
    WrongCredentials,
}

/// Reads a carrier's media response body, giving up past [`MAX_MEDIA_BYTES`] without
/// buffering more than that.
pub(crate) async fn read_media_body(
    carrier: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, MediaError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_MEDIA_BYTES as u64)
    {
        return Err(MediaError::TooLarge);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        MediaError::Carrier(format!(
            "{carrier} media download failed: {}",
            e.without_url()
        ))
    })? {
        if bytes.len() + chunk.len() > MAX_MEDIA_BYTES {
            return Err(MediaError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Carrier API base URLs (platform configuration only, never request data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoints {
    /// Each carrier's base URL, where it differs from its declared default.
    api_urls: BTreeMap<ProviderKind, String>,
    /// Amazon SNS (SES over SNS): empty trusts signing certificates only on
    /// `https://sns.<region>.amazonaws.com`; otherwise only URLs starting with this prefix.
    pub sns_cert_url_prefix: String,
}

impl Default for ProviderEndpoints {
    /// Every carrier at its production URL.
    fn default() -> Self {
        ProviderEndpoints {
            api_urls: BTreeMap::new(),
            sns_cert_url_prefix: String::new(),
        }
    }
}

impl ProviderEndpoints {
    /// Calls `kind` at `url` instead of its default.
    pub fn with(mut self, kind: ProviderKind, url: impl Into<String>) -> Self {
        self.api_urls.insert(kind, url.into());
        self
    }

    /// The base URL `kind` is called at (empty for a carrier without one).
    pub fn api_url(&self, kind: ProviderKind) -> &str {
        match self.api_urls.get(&kind) {
            Some(url) => url,
            None => carrier(kind)
                .and_then(|c| c.api_url)
                .map_or("", |setting| setting.default),
        }
    }
}

/// Builds the HTTP client carriers are called with: rustls, bounded timeouts.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .user_agent(concat!("omni/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend is compiled in")
}

/// One adapter per carrier, shared by every tenant.
#[derive(Clone)]
pub struct ProviderRegistry {
    adapters: BTreeMap<ProviderKind, Arc<dyn MessagingProviderAdapter>>,
    /// SES over SNS: checks message signatures (certificates cached for every tenant).
    sns: Arc<ses::sns::SnsVerifier>,
}

impl ProviderRegistry {
    /// Every carrier of [`CARRIERS`]; the simulator only when `demo` is set.
    pub fn new(http: reqwest::Client, endpoints: &ProviderEndpoints, demo: bool) -> Self {
        let mut adapters: BTreeMap<ProviderKind, Arc<dyn MessagingProviderAdapter>> = CARRIERS
            .iter()
            .map(|c| (c.kind, (c.adapter)(http.clone(), endpoints.api_url(c.kind))))
            .collect();
        if demo {
            adapters.insert(
                ProviderKind::Simulator,
                Arc::new(simulator::SimulatorAdapter),
            );
        }
        let sns = Arc::new(ses::sns::SnsVerifier::new(
            http,
            ses::sns::UrlRule::new(&endpoints.sns_cert_url_prefix),
        ));
        ProviderRegistry { adapters, sns }
    }

    /// The SNS message verifier (SES over SNS).
    pub fn sns(&self) -> &ses::sns::SnsVerifier {
        &self.sns
    }

    /// The adapter for a carrier, if enabled.
    pub fn get(&self, kind: ProviderKind) -> Option<Arc<dyn MessagingProviderAdapter>> {
        self.adapters.get(&kind).cloned()
    }
}

/// Constant-time equality of two byte strings (length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Checks the shared secret a carrier that signs nothing sends back in the callback URL we
/// gave it (VoIP.ms, VoiceMeUp: `?secret=…`), in constant time.
pub(crate) fn check_url_secret(given: Option<&str>, expected: &Secret) -> Result<(), VerifyError> {
    let given = given.ok_or(VerifyError::Missing)?;
    if ct_eq(given.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Refuses for good a message on a channel the carrier does not carry, or addressed with the
/// wrong kind of address for its channel: no retry can change either.
pub(crate) fn carries(
    carrier: &str,
    channels: &[Channel],
    message: &OutboundMessage,
) -> Result<(), SendError> {
    if !channels.contains(&message.channel) {
        return Err(SendError::permanent(
            None,
            format!("{carrier} does not carry {}", message.channel),
        ));
    }
    // Email goes between email addresses, every other channel between phone numbers.
    let email = message.channel == Channel::Email;
    if [&message.from, &message.to]
        .iter()
        .all(|a| a.email().is_some() == email)
    {
        Ok(())
    } else {
        Err(SendError::permanent(
            None,
            format!(
                "{carrier} sends {} only between {}",
                message.channel,
                if email {
                    "email addresses"
                } else {
                    "phone numbers"
                }
            ),
        ))
    }
}

/// The sender and recipient phone numbers of a message for a phone carrier; an email address
/// on either side is refused for good (no retry turns it into a number).
pub(crate) fn phones<'m>(
    carrier: &str,
    message: &'m OutboundMessage,
) -> Result<(&'m E164, &'m E164), SendError> {
    match (message.from.phone(), message.to.phone()) {
        (Some(from), Some(to)) => Ok((from, to)),
        _ => Err(SendError::permanent(
            None,
            format!("{carrier} sends only between phone numbers"),
        )),
    }
}

/// The plain text of an email: the body, then the media links (email has no URL
/// attachments, and fetching media to attach it would make the send path download arbitrary
/// URLs).
pub(crate) fn email_text(message: &OutboundMessage) -> String {
    let mut text = message.body.clone().unwrap_or_default();
    for media in &message.media {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&media.url);
    }
    text
}

/// The text of a received email: its body, then a line naming each attachment (Omni keeps
/// no files, so the dispatcher at least sees that one was sent).
pub(crate) fn inbound_email_text(
    mut body: Option<String>,
    attachments: impl IntoIterator<Item = String>,
) -> Option<String> {
    for file in attachments {
        let line = format!("[attachment not kept: {file}]");
        body = Some(match body {
            Some(b) => format!("{b}\n{line}"),
            None => line,
        });
    }
    body
}

/// Parses an HTTP `Retry-After` given in seconds (the form carriers use).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The error for a non-2xx carrier answer that carries nothing more specific: 429 and 5xx
/// are worth retrying (honouring `Retry-After`), any other status is a configuration or
/// request problem that a retry cannot fix.
pub(crate) fn http_failure(carrier: &str, response: &reqwest::Response) -> Option<SendError> {
    let status = response.status();
    if status.is_success() {
        return None;
    }
    let message = format!("{carrier} answered HTTP {}", status.as_u16());
    Some(
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            SendError::transient(message, retry_after(response.headers()))
        } else {
            SendError::permanent(None, message)
        },
    )
}

/// The error for a carrier's non-2xx answer that names its own error code: 429, 5xx and
/// the carrier's retryable codes are transient (honouring `Retry-After`), the rest permanent,
/// code and message kept.
pub(crate) fn coded_failure(
    status: reqwest::StatusCode,
    code: Option<i64>,
    message: String,
    transient_codes: &[i64],
    retry_after: Option<Duration>,
) -> SendError {
    let code_text = code.map(|c| c.to_string());
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || code.is_some_and(|c| transient_codes.contains(&c))
    {
        SendError::Transient {
            code: code_text,
            message,
            retry_after,
        }
    } else {
        SendError::Permanent {
            code: code_text,
            message,
        }
    }
}

/// The error for a carrier's non-2xx answer that names its error with a word rather than a
/// number (Bandwidth's `type`, Sinch's `code`): 429 and 5xx are transient (honouring
/// `Retry-After`), the rest permanent, code and message kept.
pub(crate) fn named_failure(
    status: reqwest::StatusCode,
    code: Option<String>,
    message: String,
    retry_after: Option<Duration>,
) -> SendError {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        SendError::Transient {
            code,
            message,
            retry_after,
        }
    } else {
        SendError::Permanent { code, message }
    }
}

/// A carrier error code as text: payloads give codes as numbers or strings.
pub(crate) fn code_text(code: &serde_json::Value) -> Option<String> {
    match code {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Posts a form to a carrier that answers JSON, mapping transport failures and non-2xx
/// answers; a body that is not JSON (a maintenance page served with 200) is transient:
/// losing a message is worse than the small chance of a duplicate. POSTing the form keeps
/// credentials out of URLs, which proxies and access logs keep.
pub(crate) async fn post_form_for_json(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    carrier: &str,
) -> Result<serde_json::Value, SendError> {
    let response = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(network_error)?;
    if let Some(error) = http_failure(carrier, &response) {
        return Err(error);
    }
    response.json().await.map_err(|_| {
        SendError::transient(format!("{carrier} answered with an unreadable body"), None)
    })
}

/// Maps a transport failure (connect, timeout, reset) to a transient send error.
pub(crate) fn network_error(err: reqwest::Error) -> SendError {
    // Never include the URL: some carriers take credentials in the query string.
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    SendError::transient(format!("carrier {what}"), None)
}

/// Helpers the carrier modules' tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use uuid::Uuid;

    use super::WebhookRequest;
    use crate::domain::{Address, Channel, Media, OutboundMessage, TenantId, WebhookEvent, E164};

    /// A phone number as an address, from its E.164 text.
    pub(crate) fn e164(s: &str) -> Address {
        Address::Phone(E164::from_e164(s).unwrap())
    }

    /// An outbound SMS (MMS with media) from +15555550100 to +15555550123.
    pub(crate) fn nanp_outbound(body: &str, media: &[&str]) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("acme").unwrap(),
            channel: if media.is_empty() {
                Channel::Sms
            } else {
                Channel::Mms
            },
            from: Address::from_stored("+15555550100").unwrap(),
            to: Address::from_stored("+15555550123").unwrap(),
            body: Some(body.into()),
            media: media
                .iter()
                .map(|u| Media {
                    url: u.to_string(),
                    content_type: None,
                })
                .collect(),
            template: None,
            subject: None,
            status_callback: None,
        }
    }

    /// A carrier payload of `tests/fixtures`.
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// A JSON webhook POST to `url` with extra `headers`.
    pub(crate) fn json_post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> WebhookRequest {
        let mut all = vec![("content-type".to_string(), "application/json".to_string())];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        WebhookRequest {
            method: "POST".into(),
            url: url.into(),
            headers: all,
            body: body.to_vec(),
        }
    }

    /// The only event of a webhook.
    pub(crate) fn one(events: Vec<WebhookEvent>) -> WebhookEvent {
        assert_eq!(events.len(), 1, "{events:?}");
        events.into_iter().next().unwrap()
    }

    /// The form fields of a request a fake carrier received.
    pub(crate) fn form_of(req: &wiremock::Request) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_carriers_declared_secrets_are_redacted() {
        for credentials in Credentials::examples() {
            let kind = credentials.kind();
            let shown = credentials.redacted().to_string();
            assert!(
                shown.contains(&format!("\"provider\":\"{kind}\"")),
                "{shown}"
            );
            for secret in credentials.secrets() {
                assert!(!shown.contains(secret), "{kind} shows a secret: {shown}");
            }
            let stored = serde_json::to_value(&credentials).unwrap();
            for field in credentials.secret_fields() {
                assert!(stored.get(*field).is_some(), "{kind} has no field {field}");
            }
            assert_eq!(carrier(kind).map(|c| c.kind), Some(kind));
        }
        assert_eq!(Credentials::examples().len(), CARRIERS.len());
        assert!(carrier(ProviderKind::Simulator).is_none());
    }

    #[test]
    fn only_pictures_sound_and_video_are_shown_inline() {
        let of = |t: Option<&str>| MediaContent {
            content_type: t.map(str::to_owned),
            bytes: vec![],
        };
        for shown in ["image/jpeg", "IMAGE/PNG", "audio/ogg", "video/mp4"] {
            assert!(of(Some(shown)).shown_inline(), "{shown}");
        }
        for download in [
            "text/html",
            "image/svg+xml",
            "application/pdf",
            "application/xhtml+xml",
        ] {
            assert!(!of(Some(download)).shown_inline(), "{download}");
        }
        assert!(!of(None).shown_inline());
    }

    #[test]
    fn secrets_are_redacted_and_never_debug_printed() {
        let creds = Credentials::Twilio(TwilioCredentials {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: Secret::new("tok-very-secret"),
            webhook_keys: BTreeMap::from([("k1".into(), Secret::new("shared-very-secret"))]),
        });
        let shown = format!("{creds:?} {}", creds.redacted());
        assert!(
            !shown.contains("tok-very-secret") && !shown.contains("shared-very-secret"),
            "{shown}"
        );
        assert!(shown.contains("AC0123456789abcdef0123456789abcdef"));
        assert_eq!(
            creds.secrets(),
            vec!["tok-very-secret", "shared-very-secret"]
        );
    }

    #[tokio::test]
    async fn form_posts_map_rate_limits_outages_and_unreadable_bodies() {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let http = reqwest::Client::new();
        let form = [("api_password", "pw-very-secret")];
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        let err = post_form_for_json(&http, &server.uri(), &form, "Carrier")
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(30)),
            "{err:?}"
        );
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
            .mount(&server)
            .await;
        let err = post_form_for_json(&http, &server.uri(), &form, "Carrier")
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let err = post_form_for_json(&http, "http://127.0.0.1:9/x?k=v", &form, "Carrier")
            .await
            .unwrap_err();
        assert!(err.is_transient());
        assert!(!format!("{err} {err:?}").contains("pw-very-secret"));
        assert!(
            !format!("{err} {err:?}").contains("k=v"),
            "no URL in errors"
        );
    }

    #[test]
    fn a_phone_channel_goes_between_numbers_and_email_between_email_addresses() {
        let sms = test_support::nanp_outbound("hi", &[]);
        assert!(carries("Twilio", &[Channel::Sms], &sms).is_ok());
        assert!(phones("Twilio", &sms).is_ok());
        let mut to_email = sms.clone();
        to_email.to = crate::domain::Address::from_stored("jane@example.org").unwrap();
        for refused in [
            carries("Twilio", &[Channel::Sms], &to_email),
            phones("Twilio", &to_email).map(|_| ()),
        ] {
            assert!(
                matches!(refused, Err(SendError::Permanent { .. })),
                "{refused:?}"
            );
        }
        let mut email = to_email.clone();
        email.channel = Channel::Email;
        assert!(carries("Twilio", &[Channel::Sms], &email).is_err());
        // An email message from a phone number is refused by an email carrier too.
        assert!(carries("SendGrid", &[Channel::Email], &email).is_err());
        email.from = crate::domain::Address::from_stored("dispatch@example.org").unwrap();
        assert!(carries("SendGrid", &[Channel::Email], &email).is_ok());
    }

    #[test]
    fn admin_json_is_validated_per_provider() {
        let ok = serde_json::json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "twilio-auth-token-0001"});
        assert!(Credentials::from_admin_json(ProviderKind::Twilio, ok).is_ok());
        let bad = serde_json::json!({"account_sid": "nope", "auth_token": "t"});
        assert!(Credentials::from_admin_json(ProviderKind::Twilio, bad).is_err());
        let missing = serde_json::json!({"api_username": "u"});
        assert!(Credentials::from_admin_json(ProviderKind::Voipms, missing).is_err());
        assert!(
            Credentials::from_admin_json(ProviderKind::Simulator, serde_json::json!({})).is_err()
        );
        // The SID is part of the API path: nothing but AC + 32 hex digits gets in.
        let traversal = serde_json::json!({"account_sid": "AC../../../2010-04-01/Accounts/xxxxx", "auth_token": "t"});
        assert!(Credentials::from_admin_json(ProviderKind::Twilio, traversal).is_err());
        let not_hex =
            serde_json::json!({"account_sid": format!("AC{}", "z".repeat(32)), "auth_token": "t"});
        assert!(Credentials::from_admin_json(ProviderKind::Twilio, not_hex).is_err());
    }

    /// A one-character VoiceMeUp `webhook_secret` used to be accepted (and guessed in 34
    /// tries); every secret that alone authenticates webhooks needs 16 characters, and the
    /// refusal names the field and the minimum.
    #[test]
    fn weak_webhook_secrets_are_refused_naming_the_field_and_the_minimum() {
        let cases = [
            (
                ProviderKind::Voicemeup,
                serde_json::json!({"username": "u", "auth_token": "t", "webhook_secret": "x"}),
                "webhook_secret",
            ),
            (
                ProviderKind::Voipms,
                serde_json::json!({"api_username": "u", "api_password": "p",
                    "webhook_secret": "eight-ch"}),
                "webhook_secret",
            ),
            (
                ProviderKind::Twilio,
                serde_json::json!({"account_sid": "AC0123456789abcdef0123456789abcdef",
                    "auth_token": "short-token"}),
                "auth_token",
            ),
            (
                ProviderKind::Inteliquent,
                serde_json::json!({"api_key": "k", "webhook_key": "fifteen-chars!!"}),
                "webhook_key",
            ),
        ];
        for (kind, body, field) in cases {
            let error = Credentials::from_admin_json(kind, body.clone()).unwrap_err();
            assert!(
                error.contains(field) && error.contains("16"),
                "{kind}: {error}"
            );
            let mut strong = body;
            strong[field] = "sixteen-chars-ok".into();
            assert!(Credentials::from_admin_json(kind, strong).is_ok(), "{kind}");
        }
    }
}
