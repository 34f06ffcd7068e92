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

use crate::domain::{
    Channel, OutboundMessage, ProviderKind, SendError, SendResult, WebhookEvent, E164,
};

pub mod bandwidth;
pub mod bird;
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

/// Twilio account credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioCredentials {
    /// `AC…` account SID (not secret).
    pub account_sid: String,
    /// Auth token: Basic auth password and webhook HMAC-SHA1 key.
    pub auth_token: Secret,
    /// SharedKey id → secret, for HMAC-SHA256 webhook signing.
    #[serde(default)]
    pub webhook_keys: BTreeMap<String, Secret>,
}

/// VoIP.ms API credentials and the secret placed in the callback URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoipmsCredentials {
    /// Portal login e-mail (not secret).
    pub api_username: String,
    /// API password.
    pub api_password: Secret,
    /// The `secret=` query value VoIP.ms must send back on callbacks.
    pub webhook_secret: Secret,
}

/// Where a tenant's signal-cli daemon listens, and which account it sends as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalConfig {
    /// The JSON-RPC endpoint, e.g. `http://127.0.0.1:8080/api/v1/rpc`.
    pub rpc_url: String,
    /// The account (E.164) when the daemon serves several.
    #[serde(default)]
    pub account: Option<String>,
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
}

/// Telnyx Messaging v2 credentials: the API key sends, the account's public key checks
/// webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelnyxCredentials {
    /// API key (`KEY…`), sent as a Bearer token.
    pub api_key: Secret,
    /// The account's Ed25519 public key, base64 (32 bytes), as the Telnyx portal shows it
    /// (not secret): webhooks are signed with its private half.
    pub public_key: String,
}

/// Bandwidth Messaging v2 credentials: the API user sends, the callback credentials set on
/// the Bandwidth application authenticate its webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthCredentials {
    /// Account id (digits, not secret); it goes into the send path.
    pub account_id: String,
    /// The messaging application's id (not secret), sent as `applicationId`.
    pub application_id: String,
    /// API user name (Basic auth user of sends).
    pub api_username: String,
    /// API user password.
    pub api_password: Secret,
    /// Callback user name configured on the Bandwidth application.
    pub webhook_username: String,
    /// Callback password configured on the Bandwidth application.
    pub webhook_password: Secret,
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

/// MessageBird legacy REST API credentials: the access key sends, the account's signing key
/// checks the JWT on every request MessageBird makes to us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBirdCredentials {
    /// Live access key, sent as `Authorization: AccessKey <key>`.
    pub access_key: Secret,
    /// The signing key of the dashboard's developer settings (HS256/384/512 JWT key).
    pub signing_key: Secret,
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

/// A tenant's configuration for one carrier, secrets included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Credentials {
    /// Twilio.
    Twilio(TwilioCredentials),
    /// VoIP.ms.
    Voipms(VoipmsCredentials),
    /// signal-cli.
    Signal(SignalConfig),
    /// WhatsApp Cloud API.
    Whatsapp(WhatsappCredentials),
    /// Telnyx Messaging v2.
    Telnyx(TelnyxCredentials),
    /// Bandwidth Messaging v2.
    Bandwidth(BandwidthCredentials),
    /// Sinch SMS.
    Sinch(SinchCredentials),
    /// VoiceMeUp.
    Voicemeup(VoicemeupCredentials),
    /// Vonage Messages API.
    Vonage(VonageCredentials),
    /// SendGrid email.
    Sendgrid(SendgridCredentials),
    /// Amazon SES v2 email.
    Ses(SesCredentials),
    /// Bird Channels API.
    Bird(BirdCredentials),
    /// Inteliquent Message Broker.
    Inteliquent(InteliquentCredentials),
    /// MessageBird legacy REST API.
    MessageBird(MessageBirdCredentials),
    /// The demo carrier (no secrets).
    Simulator,
}

impl Credentials {
    /// Which carrier these are for.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Credentials::Twilio(_) => ProviderKind::Twilio,
            Credentials::Voipms(_) => ProviderKind::Voipms,
            Credentials::Signal(_) => ProviderKind::Signal,
            Credentials::Whatsapp(_) => ProviderKind::Whatsapp,
            Credentials::Telnyx(_) => ProviderKind::Telnyx,
            Credentials::Bandwidth(_) => ProviderKind::Bandwidth,
            Credentials::Sinch(_) => ProviderKind::Sinch,
            Credentials::Voicemeup(_) => ProviderKind::Voicemeup,
            Credentials::Vonage(_) => ProviderKind::Vonage,
            Credentials::Sendgrid(_) => ProviderKind::Sendgrid,
            Credentials::Ses(_) => ProviderKind::Ses,
            Credentials::Bird(_) => ProviderKind::Bird,
            Credentials::Inteliquent(_) => ProviderKind::Inteliquent,
            Credentials::MessageBird(_) => ProviderKind::MessageBird,
            Credentials::Simulator => ProviderKind::Simulator,
        }
    }

    /// Parses a provider config body from the admin API (`{"account_sid": …}` for twilio, …).
    pub fn from_admin_json(kind: ProviderKind, body: serde_json::Value) -> Result<Self, String> {
        let parsed = match kind {
            ProviderKind::Twilio => serde_json::from_value(body).map(Credentials::Twilio),
            ProviderKind::Voipms => serde_json::from_value(body).map(Credentials::Voipms),
            ProviderKind::Signal => serde_json::from_value(body).map(Credentials::Signal),
            ProviderKind::Whatsapp => serde_json::from_value(body).map(Credentials::Whatsapp),
            ProviderKind::Telnyx => serde_json::from_value(body).map(Credentials::Telnyx),
            ProviderKind::Bandwidth => serde_json::from_value(body).map(Credentials::Bandwidth),
            ProviderKind::Sinch => serde_json::from_value(body).map(Credentials::Sinch),
            ProviderKind::Voicemeup => serde_json::from_value(body).map(Credentials::Voicemeup),
            ProviderKind::Vonage => serde_json::from_value(body).map(Credentials::Vonage),
            ProviderKind::Sendgrid => serde_json::from_value(body).map(Credentials::Sendgrid),
            ProviderKind::Ses => serde_json::from_value(body).map(Credentials::Ses),
            ProviderKind::Bird => serde_json::from_value(body).map(Credentials::Bird),
            ProviderKind::Inteliquent => serde_json::from_value(body).map(Credentials::Inteliquent),
            ProviderKind::MessageBird => serde_json::from_value(body).map(Credentials::MessageBird),
            ProviderKind::Simulator => {
                return Err("the simulator is configured only in demo mode".into())
            }
        };
        let creds = parsed.map_err(|e| format!("invalid {kind} configuration: {e}"))?;
        creds.validate()?;
        Ok(creds)
    }

    /// Checks the configuration's shape and the strength of its webhook secrets; the error
    /// names the field.
    pub fn validate(&self) -> Result<(), String> {
        let require = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{what} must not be empty"))
            }
        };
        // A secret that alone authenticates a carrier's webhooks (a URL secret, Basic
        // credentials, a signing key) must resist guessing.
        let strong = |secret: &Secret, field: &str| {
            if secret.expose().chars().count() >= MIN_WEBHOOK_SECRET_CHARS {
                Ok(())
            } else {
                Err(format!(
                    "{field} must be at least {MIN_WEBHOOK_SECRET_CHARS} characters \
                     (it authenticates the carrier's webhooks)"
                ))
            }
        };
        match self {
            Credentials::Twilio(c) => {
                // The SID goes into the API path: only the documented shape is accepted.
                let sid_ok = c.account_sid.len() == 34
                    && c.account_sid.starts_with("AC")
                    && c.account_sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
                require(sid_ok, "account_sid (AC + 32 hex)")?;
                strong(&c.auth_token, "auth_token")?;
                c.webhook_keys
                    .values()
                    .try_for_each(|k| strong(k, "webhook_keys"))
            }
            Credentials::Voipms(c) => {
                require(!c.api_username.is_empty(), "api_username")?;
                require(!c.api_password.expose().is_empty(), "api_password")?;
                strong(&c.webhook_secret, "webhook_secret")
            }
            Credentials::Signal(c) => {
                let url =
                    url::Url::parse(&c.rpc_url).map_err(|_| "rpc_url must be a URL".to_string())?;
                require(
                    matches!(url.scheme(), "http" | "https"),
                    "rpc_url (http or https)",
                )
            }
            Credentials::Whatsapp(c) => {
                // The id goes into the API path: digits only keep it a single path segment.
                let id_ok = !c.phone_number_id.is_empty()
                    && c.phone_number_id.bytes().all(|b| b.is_ascii_digit());
                require(id_ok, "phone_number_id (digits)")?;
                require(!c.access_token.expose().is_empty(), "access_token")?;
                strong(&c.app_secret, "app_secret")?;
                require(!c.verify_token.expose().is_empty(), "verify_token")
            }
            Credentials::Telnyx(c) => {
                require(!c.api_key.expose().is_empty(), "api_key")?;
                require(
                    telnyx::public_key(&c.public_key).is_some(),
                    "public_key (base64 Ed25519 public key, 32 bytes)",
                )
            }
            Credentials::Bandwidth(c) => {
                // The account id goes into the API path: digits keep it one path segment.
                let id_ok =
                    !c.account_id.is_empty() && c.account_id.bytes().all(|b| b.is_ascii_digit());
                require(id_ok, "account_id (digits)")?;
                require(!c.application_id.is_empty(), "application_id")?;
                require(!c.api_username.is_empty(), "api_username")?;
                require(!c.api_password.expose().is_empty(), "api_password")?;
                // Basic auth: a colon in the user name would make the pair ambiguous.
                require(
                    !c.webhook_username.is_empty() && !c.webhook_username.contains(':'),
                    "webhook_username (no colon)",
                )?;
                strong(&c.webhook_password, "webhook_password")
            }
            Credentials::Sinch(c) => {
                // The plan id goes into the API path: letters and digits keep it one segment.
                let id_ok = !c.service_plan_id.is_empty()
                    && c.service_plan_id.bytes().all(|b| b.is_ascii_alphanumeric());
                require(id_ok, "service_plan_id (letters and digits)")?;
                require(!c.api_token.expose().is_empty(), "api_token")?;
                strong(&c.app_secret, "app_secret")
            }
            Credentials::Voicemeup(c) => {
                require(!c.username.is_empty(), "username")?;
                require(!c.auth_token.expose().is_empty(), "auth_token")?;
                strong(&c.webhook_secret, "webhook_secret")
            }
            Credentials::Vonage(c) => {
                require(
                    uuid::Uuid::parse_str(&c.application_id).is_ok(),
                    "application_id (a UUID)",
                )?;
                // Signed with now, so a bad key is refused at configuration, not at the first
                // send.
                require(
                    vonage::application_jwt(&c.application_id, &c.private_key, 0).is_some(),
                    "private_key (an RSA private key in PEM)",
                )?;
                strong(&c.signature_secret, "signature_secret")
            }
            Credentials::Sendgrid(c) => {
                require(!c.api_key.expose().is_empty(), "api_key")?;
                strong(&c.webhook_secret, "webhook_secret")?;
                require(
                    sendgrid::event_public_key(&c.event_public_key).is_some(),
                    "event_public_key (base64 DER of an ECDSA P-256 public key)",
                )
            }
            Credentials::Ses(c) => {
                // It goes into the Authorization header's credential: no separators.
                require(
                    !c.access_key_id.is_empty()
                        && c.access_key_id.bytes().all(|b| b.is_ascii_alphanumeric()),
                    "access_key_id (letters and digits)",
                )?;
                require(
                    !c.secret_access_key.expose().is_empty(),
                    "secret_access_key",
                )?;
                require(ses::valid_region(&c.region), "region (e.g. us-east-1)")?;
                require(
                    c.sns_topic_arns.len() <= 32
                        && c.sns_topic_arns
                            .iter()
                            .all(|a| ses::sns::valid_topic_arn(a)),
                    "sns_topic_arns (at most 32 SNS topic ARNs)",
                )
            }
            Credentials::Bird(c) => {
                // Both ids go into the API path: UUIDs keep them single path segments.
                require(
                    uuid::Uuid::parse_str(&c.workspace_id).is_ok(),
                    "workspace_id (a UUID)",
                )?;
                require(
                    uuid::Uuid::parse_str(&c.channel_id).is_ok(),
                    "channel_id (a UUID)",
                )?;
                require(!c.access_key.expose().is_empty(), "access_key")?;
                strong(&c.signing_key, "signing_key")
            }
            Credentials::Inteliquent(c) => {
                require(!c.api_key.expose().is_empty(), "api_key")?;
                strong(&c.webhook_key, "webhook_key")
            }
            Credentials::MessageBird(c) => {
                // It goes into a header value.
                require(
                    !c.access_key.expose().is_empty()
                        && c.access_key.expose().bytes().all(|b| b.is_ascii_graphic()),
                    "access_key",
                )?;
                strong(&c.signing_key, "signing_key")
            }
            Credentials::Simulator => Ok(()),
        }
    }

    /// The configuration with every secret replaced, safe to return from the API.
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            for key in [
                "auth_token",
                "api_password",
                "webhook_secret",
                "access_token",
                "app_secret",
                "verify_token",
                "api_key",
                "webhook_password",
                "api_token",
                "private_key",
                "signature_secret",
                "secret_access_key",
                "access_key",
                "signing_key",
                "webhook_key",
            ] {
                if obj.contains_key(key) {
                    obj.insert(key.into(), "***".into());
                }
            }
            if let Some(keys) = obj.get_mut("webhook_keys").and_then(|k| k.as_object_mut()) {
                for value in keys.values_mut() {
                    *value = "***".into();
                }
            }
        }
        v
    }

    /// Every secret value in this configuration (for log scrubbing tests and redaction).
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Credentials::Twilio(c) => std::iter::once(c.auth_token.expose())
                .chain(c.webhook_keys.values().map(Secret::expose))
                .collect(),
            Credentials::Voipms(c) => vec![c.api_password.expose(), c.webhook_secret.expose()],
            Credentials::Whatsapp(c) => vec![
                c.access_token.expose(),
                c.app_secret.expose(),
                c.verify_token.expose(),
            ],
            Credentials::Telnyx(c) => vec![c.api_key.expose()],
            Credentials::Bandwidth(c) => vec![c.api_password.expose(), c.webhook_password.expose()],
            Credentials::Sinch(c) => vec![c.api_token.expose(), c.app_secret.expose()],
            Credentials::Voicemeup(c) => vec![c.auth_token.expose(), c.webhook_secret.expose()],
            Credentials::Vonage(c) => vec![c.private_key.expose(), c.signature_secret.expose()],
            Credentials::Sendgrid(c) => vec![c.api_key.expose(), c.webhook_secret.expose()],
            Credentials::Ses(c) => vec![c.secret_access_key.expose()],
            Credentials::Bird(c) => vec![c.access_key.expose(), c.signing_key.expose()],
            Credentials::Inteliquent(c) => vec![c.api_key.expose(), c.webhook_key.expose()],
            Credentials::MessageBird(c) => vec![c.access_key.expose(), c.signing_key.expose()],
            Credentials::Signal(_) | Credentials::Simulator => vec![],
        }
    }
}

/// Fewest characters of a secret that alone authenticates a carrier's webhooks: URL secrets
/// (VoIP.ms, VoiceMeUp, SendGrid Inbound Parse), Basic credentials (Bandwidth) and signing
/// keys. The carriers' own generated secrets are all longer.
pub const MIN_WEBHOOK_SECRET_CHARS: usize = 16;

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
}

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
    /// Twilio REST API, default `https://api.twilio.com`.
    pub twilio: String,
    /// VoIP.ms REST endpoint, default `https://voip.ms/api/v1/rest.php`.
    pub voipms: String,
    /// WhatsApp Cloud API (Graph API, versioned), default `https://graph.facebook.com/v21.0`.
    pub whatsapp: String,
    /// Telnyx API, default `https://api.telnyx.com` (`/v2/messages` is appended).
    pub telnyx: String,
    /// Bandwidth Messaging API, default `https://messaging.bandwidth.com`
    /// (`/api/v2/users/{accountId}/messages` is appended).
    pub bandwidth: String,
    /// Sinch SMS API of the platform's region, default `https://us.sms.api.sinch.com`
    /// (`/xms/v1/{service_plan_id}/batches` is appended).
    pub sinch: String,
    /// VoiceMeUp API, default `https://clients.voicemeup.com/api/v1.1/json` (`/queue_sms` is
    /// appended).
    pub voicemeup: String,
    /// Vonage Messages API, default `https://api.nexmo.com` (`/v1/messages` is appended).
    pub vonage: String,
    /// SendGrid API, default `https://api.sendgrid.com` (`/v3/mail/send` is appended).
    pub sendgrid: String,
    /// Amazon SES v2; empty (the default) for `https://email.{region}.amazonaws.com` of each
    /// tenant's region (`/v2/email/outbound-emails` is appended).
    pub ses: String,
    /// Bird Channels API, default `https://api.bird.com`
    /// (`/workspaces/{workspace}/channels/{channel}/messages` is appended).
    pub bird: String,
    /// Inteliquent Message Broker, default
    /// `https://messagebroker.inteliquent.com/msgbroker/rest` (`/publishMessages` is appended).
    pub inteliquent: String,
    /// Amazon SNS: empty (the default) trusts signing certificates and subscription URLs only
    /// on `https://sns.<region>.amazonaws.com`; otherwise only URLs starting with this (tests,
    /// emulators).
    pub sns_cert_url_prefix: String,
    /// MessageBird legacy REST API, default `https://rest.messagebird.com` (`/messages` and
    /// `/mms` are appended).
    pub messagebird: String,
}

impl Default for ProviderEndpoints {
    fn default() -> Self {
        ProviderEndpoints {
            twilio: "https://api.twilio.com".into(),
            voipms: "https://voip.ms/api/v1/rest.php".into(),
            whatsapp: "https://graph.facebook.com/v21.0".into(),
            telnyx: "https://api.telnyx.com".into(),
            bandwidth: "https://messaging.bandwidth.com".into(),
            sinch: "https://us.sms.api.sinch.com".into(),
            voicemeup: "https://clients.voicemeup.com/api/v1.1/json".into(),
            vonage: "https://api.nexmo.com".into(),
            sendgrid: "https://api.sendgrid.com".into(),
            ses: String::new(),
            bird: "https://api.bird.com".into(),
            inteliquent: "https://messagebroker.inteliquent.com/msgbroker/rest".into(),
            sns_cert_url_prefix: String::new(),
            messagebird: "https://rest.messagebird.com".into(),
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
    /// The production carriers; the simulator only when `demo` is set.
    pub fn new(http: reqwest::Client, endpoints: &ProviderEndpoints, demo: bool) -> Self {
        let mut adapters: BTreeMap<ProviderKind, Arc<dyn MessagingProviderAdapter>> =
            BTreeMap::new();
        adapters.insert(
            ProviderKind::Twilio,
            Arc::new(twilio::TwilioAdapter::new(http.clone(), &endpoints.twilio)),
        );
        adapters.insert(
            ProviderKind::Voipms,
            Arc::new(voipms::VoipmsAdapter::new(http.clone(), &endpoints.voipms)),
        );
        adapters.insert(
            ProviderKind::Whatsapp,
            Arc::new(whatsapp::WhatsappAdapter::new(
                http.clone(),
                &endpoints.whatsapp,
            )),
        );
        adapters.insert(
            ProviderKind::Telnyx,
            Arc::new(telnyx::TelnyxAdapter::new(http.clone(), &endpoints.telnyx)),
        );
        adapters.insert(
            ProviderKind::Bandwidth,
            Arc::new(bandwidth::BandwidthAdapter::new(
                http.clone(),
                &endpoints.bandwidth,
            )),
        );
        adapters.insert(
            ProviderKind::Sinch,
            Arc::new(sinch::SinchAdapter::new(http.clone(), &endpoints.sinch)),
        );
        adapters.insert(
            ProviderKind::Voicemeup,
            Arc::new(voicemeup::VoicemeupAdapter::new(
                http.clone(),
                &endpoints.voicemeup,
            )),
        );
        adapters.insert(
            ProviderKind::Vonage,
            Arc::new(vonage::VonageAdapter::new(http.clone(), &endpoints.vonage)),
        );
        adapters.insert(
            ProviderKind::Sendgrid,
            Arc::new(sendgrid::SendgridAdapter::new(
                http.clone(),
                &endpoints.sendgrid,
            )),
        );
        adapters.insert(
            ProviderKind::Ses,
            Arc::new(ses::SesAdapter::new(http.clone(), &endpoints.ses)),
        );
        adapters.insert(
            ProviderKind::Bird,
            Arc::new(bird::BirdAdapter::new(http.clone(), &endpoints.bird)),
        );
        adapters.insert(
            ProviderKind::Inteliquent,
            Arc::new(inteliquent::InteliquentAdapter::new(
                http.clone(),
                &endpoints.inteliquent,
            )),
        );
        let sns = Arc::new(ses::sns::SnsVerifier::new(
            http.clone(),
            ses::sns::UrlRule::new(&endpoints.sns_cert_url_prefix),
        ));
        adapters.insert(
            ProviderKind::MessageBird,
            Arc::new(messagebird::MessageBirdAdapter::new(
                http.clone(),
                &endpoints.messagebird,
            )),
        );
        adapters.insert(
            ProviderKind::Signal,
            Arc::new(signal::SignalAdapter::new(http)),
        );
        if demo {
            adapters.insert(
                ProviderKind::Simulator,
                Arc::new(simulator::SimulatorAdapter),
            );
        }
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

    #[test]
    fn whatsapp_secrets_are_redacted() {
        let creds = Credentials::Whatsapp(WhatsappCredentials {
            phone_number_id: "106540352242922".into(),
            access_token: Secret::new("EAAG-access-secret"),
            app_secret: Secret::new("app-very-secret"),
            verify_token: Secret::new("verify-very-secret"),
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

    #[test]
    fn telnyx_admin_json_is_validated_and_redacted() {
        let key = "H1DCBogd1myv/s9jVKJLikB0GpWKvr2y6bZiwSGrJ0M=";
        let ok = serde_json::json!({"api_key": "KEY-telnyx-very-secret", "public_key": key});
        let creds = Credentials::from_admin_json(ProviderKind::Telnyx, ok).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Telnyx);
        let shown = format!("{creds:?} {}", creds.redacted());
        assert!(!shown.contains("KEY-telnyx-very-secret"), "{shown}");
        assert!(shown.contains(key), "the public key is not secret: {shown}");
        assert_eq!(creds.redacted()["provider"], "telnyx");
        assert_eq!(creds.secrets(), vec!["KEY-telnyx-very-secret"]);
        for bad in [
            serde_json::json!({"api_key": "", "public_key": key}),
            serde_json::json!({"api_key": "k", "public_key": "c2hvcnQ="}),
            serde_json::json!({"api_key": "k", "public_key": "not base64"}),
            serde_json::json!({"api_key": "k"}),
        ] {
            assert!(Credentials::from_admin_json(ProviderKind::Telnyx, bad).is_err());
        }
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

    #[test]
    fn bandwidth_admin_json_is_validated_and_redacted() {
        let ok = serde_json::json!({"account_id": "9900000", "application_id": "app-1",
            "api_username": "api-user", "api_password": "bw-api-very-secret",
            "webhook_username": "hooks", "webhook_password": "bw-hook-very-secret"});
        let creds = Credentials::from_admin_json(ProviderKind::Bandwidth, ok.clone()).unwrap();
        assert_eq!(creds.kind(), ProviderKind::Bandwidth);
        let shown = format!("{creds:?} {}", creds.redacted());
        for secret in ["bw-api-very-secret", "bw-hook-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("9900000") && shown.contains("hooks"),
            "{shown}"
        );
        assert_eq!(creds.redacted()["provider"], "bandwidth");
        assert_eq!(
            creds.secrets(),
            vec!["bw-api-very-secret", "bw-hook-very-secret"]
        );
        for (field, bad) in [
            ("account_id", "99/00"),
            ("account_id", ""),
            ("application_id", ""),
            ("api_username", ""),
            ("api_password", ""),
            ("webhook_username", "a:b"),
            ("webhook_password", "short"),
        ] {
            let mut body = ok.clone();
            body[field] = bad.into();
            assert!(Credentials::from_admin_json(ProviderKind::Bandwidth, body).is_err());
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
