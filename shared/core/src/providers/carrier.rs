//! What a carrier module declares about itself: its configuration, its webhook routes, its
//! API base URL setting, its test-webhook signer and its part of the OpenAPI document. The
//! list in [`super`] wires every declaration into the registry, the router, the CLI and the
//! configuration, so adding a carrier edits nothing outside its own module but that list.

use std::fmt::Debug;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Credentials, MessagingProviderAdapter, Secret, WebhookRequest};
use crate::domain::{EmailAddress, ProviderKind, Region, E164};

/// Everything Omni knows about one carrier, declared by its module as `CARRIER`.
#[derive(Debug)]
pub struct Carrier {
    /// Which carrier.
    pub kind: ProviderKind,
    /// Its API base URL setting; `None` when each tenant names its own endpoint (signal-cli).
    pub api_url: Option<ApiUrlSetting>,
    /// The webhook routes it calls, each `(method, path)` once.
    pub webhooks: &'static [WebhookRoute],
    /// Builds the adapter (one per process, shared by every tenant) calling `base_url`.
    pub adapter: fn(reqwest::Client, &str) -> Arc<dyn MessagingProviderAdapter>,
    /// Platform-wide fallback configuration read from the environment (the lookup), for
    /// tenants with none of their own; `None` for carriers that have none.
    pub platform_config: Option<fn(&EnvLookup) -> Option<Credentials>>,
    /// How `omni webhook send <carrier>` impersonates it.
    pub test_webhook: TestWebhook,
    /// Its OpenAPI fragment: `{"paths": {…}, "schemas": {…}}` for its webhook routes, the
    /// shared error answers left out (the document adds them); checked against
    /// [`webhooks`](Self::webhooks) by a test.
    pub openapi: &'static str,
}

impl Carrier {
    /// The wire name (`twilio`).
    pub fn name(&self) -> &'static str {
        self.kind.as_str()
    }
}

/// Reads one environment variable (unset and empty are `None`).
pub type EnvLookup = dyn Fn(&str) -> Option<String>;

/// A platform setting naming a carrier's API base URL (tests point it at a fake).
#[derive(Debug, Clone, Copy)]
pub struct ApiUrlSetting {
    /// The environment variable, `OMNI_<CARRIER>_API_URL`; the flag is its lower-case,
    /// dashed form without `OMNI_` (`--twilio-api-url`).
    pub env: &'static str,
    /// The production URL.
    pub default: &'static str,
    /// What the URL is and what is appended to it.
    pub help: &'static str,
}

impl ApiUrlSetting {
    /// The command-line flag (`twilio-api-url`).
    pub fn flag(&self) -> String {
        self.env
            .trim_start_matches("OMNI_")
            .to_ascii_lowercase()
            .replace('_', "-")
    }
}

/// An HTTP method a carrier calls a webhook with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookMethod {
    /// `GET` (fields in the query).
    Get,
    /// `POST`.
    Post,
}

impl WebhookMethod {
    /// Upper case, as HTTP writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookMethod::Get => "GET",
            WebhookMethod::Post => "POST",
        }
    }
}

/// What a webhook route receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receives {
    /// Messages from contacts.
    Inbound,
    /// Status reports of messages Omni sent.
    Status,
    /// Either, told apart by the payload.
    Both,
    /// The carrier's subscription handshake (no message).
    Handshake,
}

/// Which handler serves a webhook route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookHandler {
    /// Verified and read by the carrier's adapter, routed by the number called.
    Adapter,
    /// Meta's `hub.verify_token` subscription handshake.
    MetaHandshake,
    /// An Amazon SNS message (SES over SNS).
    AmazonSns,
}

/// What a webhook is answered with once committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookReply {
    /// `text/plain` `ok` (VoIP.ms retries until the body is exactly that; the others only
    /// need a 2xx).
    Ok,
    /// Empty TwiML: acknowledged with no auto-reply (Twilio).
    EmptyTwiml,
}

impl WebhookReply {
    /// (content type, body).
    pub fn content(&self) -> (&'static str, &'static str) {
        match self {
            WebhookReply::Ok => ("text/plain", "ok"),
            WebhookReply::EmptyTwiml => (
                "text/xml",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
            ),
        }
    }
}

/// One webhook route of a carrier.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRoute {
    /// The method the carrier calls with.
    pub method: WebhookMethod,
    /// The path, `/webhooks/<carrier>[/…]`.
    pub path: &'static str,
    /// What it receives.
    pub receives: Receives,
    /// Which handler serves it.
    pub handler: WebhookHandler,
    /// What it answers.
    pub reply: WebhookReply,
}

impl WebhookRoute {
    /// A `POST` route the carrier's adapter serves, answered `ok`.
    pub const fn post(path: &'static str, receives: Receives) -> Self {
        WebhookRoute {
            method: WebhookMethod::Post,
            path,
            receives,
            handler: WebhookHandler::Adapter,
            reply: WebhookReply::Ok,
        }
    }

    /// A `GET` route the carrier's adapter serves (fields in the query), answered `ok`.
    pub const fn get(path: &'static str, receives: Receives) -> Self {
        WebhookRoute {
            method: WebhookMethod::Get,
            ..WebhookRoute::post(path, receives)
        }
    }

    /// The same route, served by `handler`.
    pub const fn served_by(self, handler: WebhookHandler) -> Self {
        WebhookRoute { handler, ..self }
    }

    /// The same route, answered with `reply`.
    pub const fn replying(self, reply: WebhookReply) -> Self {
        WebhookRoute { reply, ..self }
    }
}

/// A carrier's configuration type: its admin JSON (serde), validation and secrets.
pub trait CarrierConfig: Serialize + DeserializeOwned + Clone + PartialEq + Debug {
    /// The JSON fields holding secrets; an object field's every value is one (Twilio's
    /// `webhook_keys`). Replaced by `***` wherever the configuration is shown.
    const SECRET_FIELDS: &'static [&'static str];

    /// Checks the shape and the strength of the webhook secrets; the error names the field.
    fn validate(&self) -> Result<(), String>;

    /// Every secret value (redaction and log-scrubbing tests).
    fn secrets(&self) -> Vec<&str>;

    /// A valid configuration with made-up values, for the documentation and the storage
    /// conformance suite.
    fn example() -> Self;
}

/// `Err` naming `what` unless `ok`.
pub(crate) fn require(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what} must not be empty"))
    }
}

/// Fewest characters of a secret that alone authenticates a carrier's webhooks: URL secrets
/// (VoIP.ms, VoiceMeUp, SendGrid Inbound Parse), Basic credentials (Bandwidth) and signing
/// keys. The carriers' own generated secrets are all longer.
pub const MIN_WEBHOOK_SECRET_CHARS: usize = 16;

/// A secret that alone authenticates a carrier's webhooks must resist guessing.
pub(crate) fn strong(secret: &Secret, field: &str) -> Result<(), String> {
    if secret.expose().chars().count() >= MIN_WEBHOOK_SECRET_CHARS {
        Ok(())
    } else {
        Err(format!(
            "{field} must be at least {MIN_WEBHOOK_SECRET_CHARS} characters \
             (it authenticates the carrier's webhooks)"
        ))
    }
}

/// How `omni webhook send` impersonates a carrier.
#[derive(Debug, Clone, Copy)]
pub enum TestWebhook {
    /// Builds the requests the carrier would make, signed as it signs them.
    Signer {
        /// What `--secret` is for this carrier, and what else the carrier needs (`--help`).
        help: &'static str,
        /// The requests, in the order to send them.
        sign: fn(&TestInbound, SigningKey<'_>) -> Result<Vec<WebhookRequest>, String>,
    },
    /// Not impersonable; the text says why and how to test it instead.
    Unsupported(&'static str),
}

/// A contact's message to impersonate (`omni webhook send`).
#[derive(Debug, Clone, Default)]
pub struct TestInbound {
    /// The server's base URL as carriers see it, without a trailing `/`.
    pub base_url: String,
    /// The contact (a number, or an address for email carriers).
    pub from: String,
    /// The tenant's number or address.
    pub to: String,
    /// The text.
    pub body: String,
    /// Media URLs.
    pub media: Vec<String>,
    /// The carrier's message id; random when absent.
    pub id: Option<String>,
    /// Split the MMS in two posts as the carrier does (VoiceMeUp); `Some(true)`: media first.
    pub split: Option<bool>,
}

impl TestInbound {
    /// The contact's and the tenant's numbers.
    pub fn numbers(&self) -> Result<(E164, E164), String> {
        let number = |raw: &str| E164::parse(raw, Region::default()).map_err(|e| e.to_string());
        Ok((number(&self.from)?, number(&self.to)?))
    }

    /// The contact's and the tenant's email addresses.
    pub fn addresses(&self) -> Result<(EmailAddress, EmailAddress), String> {
        let address = |raw: &str| EmailAddress::parse(raw).map_err(|e| e.to_string());
        Ok((address(&self.from)?, address(&self.to)?))
    }

    /// The given id, or `make()`.
    pub fn id_or(&self, make: impl FnOnce() -> String) -> String {
        self.id.clone().unwrap_or_else(make)
    }

    /// Refuses `--split` for a carrier that does not split messages.
    pub fn unsplit(&self, carrier: &str) -> Result<(), String> {
        match self.split {
            Some(_) => Err(format!("--split is VoiceMeUp's MMS form, not {carrier}'s")),
            None => Ok(()),
        }
    }

    /// A POST of `body` to `path` under the base URL, with `headers`.
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> WebhookRequest {
        let mut all = vec![("content-type".to_string(), content_type.to_string())];
        all.extend(headers);
        WebhookRequest {
            method: "POST".into(),
            url: format!("{}{path}", self.base_url),
            headers: all,
            body,
        }
    }
}

/// What a test webhook is signed with: `--secret` as given, or the tenant's stored
/// configuration.
#[derive(Debug, Clone, Copy)]
pub enum SigningKey<'a> {
    /// `--secret`, in the carrier's form (see [`TestWebhook::Signer::help`]).
    Given(&'a str),
    /// The tenant's configuration for the carrier.
    Stored(&'a Credentials),
}

impl<'a> SigningKey<'a> {
    /// The given secret, or `pick` applied to the stored configuration (`None` when it is
    /// another carrier's).
    pub fn secret(
        self,
        pick: impl FnOnce(&'a Credentials) -> Option<&'a Secret>,
    ) -> Result<String, String> {
        match self {
            SigningKey::Given(secret) => Ok(secret.to_string()),
            SigningKey::Stored(credentials) => pick(credentials)
                .map(|s| s.expose().to_string())
                .ok_or_else(|| {
                    format!(
                        "the stored configuration is {}'s, not this carrier's",
                        credentials.kind()
                    )
                }),
        }
    }
}

/// A content type for a media URL, guessed from its extension (test webhooks only).
pub fn guess_content_type(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else if lower.ends_with(".mp4") {
        "video/mp4"
    } else {
        "image/jpeg"
    }
}

/// A random number for carriers whose ids are digits (test webhooks only).
pub(crate) fn random_digits() -> u64 {
    rand::random()
}
