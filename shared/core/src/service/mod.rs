//! The flows of DESIGN.md, written once against the ports: inbound webhooks, the conversation
//! updater, sending, delivery with retries, the outbox sweeper, and the Signal poller.
//!
//! Each entry point (an axum handler, a Lambda function, the local job runner) calls into
//! [`Services`]; none of them holds business rules of its own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::domain::{DomainError, ProviderKind, TenantId};
use crate::ports::{
    MediaStore, MessageStore, Push, Queue, SecretStore, StoreError, TeamStore, TemplateStore,
    TenantStore, UploadStore, WabaRouteStore, WebhookStore,
};
use crate::providers::{Credentials, ProviderRegistry};
use crate::team::Permission;
use crate::templates::TemplateRuleError;

mod autoreply;
mod breaker;
mod delivery;
mod desk;
mod fallback;
mod forward;
mod inbound;
mod keys;
mod keywords;
mod livechat;
mod media;
mod outbound;
mod schedule;
mod ses_sns;
mod team;
mod templates;
mod throttle;
mod updater;
mod webhooks;

pub use autoreply::AutoReplyCache;
pub use breaker::{BreakerPolicy, CircuitBreakers};
pub use delivery::DeliveryOutcome;
pub use forward::FORWARD_WINDOW;
pub use keys::{ApiKeyUsage, IssuedKey};
pub use keywords::Keyword;
pub use livechat::{
    LivechatUpdate, SessionRequest, Upload, Visitor, VisitorMessage, VisitorMessageRequest,
    VisitorPage, VisitorProfile, VisitorSession, WidgetText, MAX_VISITOR_BODY_CHARS,
    MAX_VISITOR_MEDIA, UPLOAD_SCHEME, VISITOR_MESSAGES_PER_MINUTE,
};
pub use media::MediaDownload;
pub use outbound::SendRequest;
pub use schedule::MAX_SCHEDULE_AHEAD;
pub use team::{
    normalize_email, Caller, Credential, LoginLockout, SignedIn, UserChange, INVITE_PREFIX,
    INVITE_TTL, MIN_PASSWORD_CHARS, SESSION_IDLE, SESSION_PREFIX,
};
pub use throttle::{AuthScope, AuthThrottle, AuthThrottlePolicy};
pub use updater::JobError;
pub use webhooks::{delivery_job, WebhookChange};

/// A failure the caller should hear about, mapped to HTTP in one place (the API crate).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or breaks a rule.
    #[error("{0}")]
    InvalidRequest(String),
    /// A phone number that does not parse.
    #[error("{0}")]
    InvalidPhoneNumber(String),
    /// No carrier is configured for what was asked.
    #[error("{0}")]
    ChannelNotConfigured(String),
    /// The contact replied STOP to this tenant.
    #[error("the recipient has opted out of messages from this tenant")]
    RecipientOptedOut,
    /// No valid credential.
    #[error("a valid API key or token is required")]
    Unauthorized,
    /// A sign-in with an unknown e-mail or a wrong password (the same answer for both).
    #[error("the e-mail or password is wrong")]
    InvalidCredentials,
    /// The caller's role lacks the permission.
    #[error("forbidden: this needs the {0} permission")]
    Forbidden(Permission),
    /// The webhook's signature or secret does not match.
    #[error("webhook signature is invalid")]
    InvalidSignature,
    /// Nothing of that id belongs to the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken.
    #[error("{0}")]
    Conflict(String),
    /// The carrier could not hand over a media item (outage, refused credentials, too large).
    #[error("{0}")]
    MediaUnavailable(String),
    /// A service Omni had to call on the way failed (SNS's signing certificate, its
    /// subscription confirmation); the caller may retry.
    #[error("{0}")]
    Upstream(String),
    /// A LiveChat `user_hash` that does not match (or is missing where identities are
    /// required).
    #[error("the user's identity could not be verified")]
    IdentityInvalid,
    /// An upload of a type that is not accepted (read from its bytes).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An upload larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No template of that name (`template_not_found`).
    #[error("{0}")]
    TemplateNotFound(String),
    /// The template has no version that may be sent: none approved by the tenant, or, on
    /// WhatsApp, not approved by Meta in that language (`template_not_approved`).
    #[error("{0}")]
    TemplateNotApproved(String),
    /// Neither the language asked for, its base language nor the template's default exists
    /// (`template_language_unavailable`).
    #[error("{0}")]
    TemplateLanguageUnavailable(String),
    /// The caller holds the permission but the rule refuses this caller (four eyes: the
    /// author of a template version cannot approve it).
    #[error("{0}")]
    NotAllowed(String),
    /// Storage failed; details go to logs only.
    #[error("internal error")]
    Store(#[source] StoreError),
    /// This address failed to authenticate too often: refused, whatever it presents, for
    /// this many more seconds.
    #[error("too many failed authentication attempts; retry after {0} s")]
    LockedOut(u64),
    /// The caller sent more than its rate allows: refused for this many more seconds.
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::InvalidCursor => ServiceError::InvalidRequest("invalid cursor".into()),
            StoreError::RecipientOptedOut => ServiceError::RecipientOptedOut,
            other => ServiceError::Store(other),
        }
    }
}

impl From<TemplateRuleError> for ServiceError {
    fn from(e: TemplateRuleError) -> Self {
        match e {
            TemplateRuleError::Invalid(m) => ServiceError::InvalidRequest(m),
            TemplateRuleError::LanguageUnavailable(m) => {
                ServiceError::TemplateLanguageUnavailable(m)
            }
            TemplateRuleError::WrongState(m) => ServiceError::Conflict(m),
            TemplateRuleError::OwnVersion(m) => ServiceError::NotAllowed(m),
        }
    }
}

impl From<DomainError> for ServiceError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidPhoneNumber(_) => ServiceError::InvalidPhoneNumber(e.to_string()),
            other => ServiceError::InvalidRequest(other.to_string()),
        }
    }
}

/// Platform credentials from the environment: used only for a tenant with none of its own.
#[derive(Debug, Clone, Default)]
pub struct PlatformCredentials(BTreeMap<ProviderKind, Credentials>);

impl PlatformCredentials {
    /// Adds (or replaces) the platform's configuration for its carrier.
    pub fn insert(&mut self, credentials: Credentials) {
        self.0.insert(credentials.kind(), credentials);
    }

    fn get(&self, kind: ProviderKind) -> Option<&Credentials> {
        self.0.get(&kind)
    }
}

/// Retry schedule for transient carrier errors: exponential backoff with jitter, at least
/// what the carrier asked for (`Retry-After`), until the attempt budget is spent.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub base: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): full backoff scaled by a random
    /// factor in [0.5, 1] so a burst of failures does not retry in lockstep.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let jittered = capped.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        jittered.max(retry_after.unwrap_or_default())
    }
}

/// Settings the services read once at start-up.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Base URL carriers call us at (`OMNI_PUBLIC_URL`), used for signed-URL checks and status callbacks.
    pub public_url: String,
    /// How long raw webhook payloads are kept.
    pub raw_retention: Duration,
    /// Carrier retry schedule.
    pub retry: RetryPolicy,
    /// How long a delivery claim holds before another worker may try.
    pub claim_lease: Duration,
    /// A queued message untouched this long with no job is re-queued by the sweeper.
    pub sweep_after: Duration,
    /// When a carrier's circuit breaker opens, and for how long (failover).
    pub breaker: BreakerPolicy,
    /// How fast one tenant may call the send API (enforced by the send router).
    pub send_rate: SendRateLimit,
    /// How long one half of a split message (VoiceMeUp's MMS) waits for its other half
    /// before it is delivered on its own by the next sweep.
    pub split_message_wait: Duration,
    /// How repeated authentication failures from one address are slowed and locked out.
    pub auth_throttle: AuthThrottlePolicy,
    /// How failed sign-ins lock an account or an address out.
    pub login_lockout: LoginLockout,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// Which WhatsApp forwarding targets are allowed besides public HTTPS ones.
    pub forward_targets: crate::waba::TargetPolicy,
    /// Which event webhook URLs are allowed besides public HTTPS ones.
    pub webhook_targets: crate::waba::TargetPolicy,
    /// Where LiveChat visitors open their socket when it is not this server's
    /// `/livechat/v1/ws` (on AWS, the WebSocket API's stage); visitor sessions carry it.
    pub livechat_socket_url: Option<String>,
}

/// A per-tenant token bucket on `POST /v1/messages`: `burst` sends at once, refilled at
/// `per_second`. Enforced in memory by each process (each Lambda function instance), so it
/// bounds a tenant's rate per instance, not across a fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendRateLimit {
    /// Sustained sends per second per tenant (fractions allowed: 0.5 is one every two
    /// seconds); 0 turns the limit off.
    pub per_second: f64,
    /// Sends a tenant may make at once (the bucket's size); at least 1.
    pub burst: u32,
}

impl Default for SendRateLimit {
    fn default() -> Self {
        SendRateLimit {
            per_second: 50.0,
            burst: 100,
        }
    }
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            public_url: "http://127.0.0.1:8080".into(),
            raw_retention: Duration::from_secs(30 * 24 * 3600),
            retry: RetryPolicy::default(),
            claim_lease: Duration::from_secs(60),
            sweep_after: Duration::from_secs(30),
            breaker: BreakerPolicy::default(),
            send_rate: SendRateLimit::default(),
            split_message_wait: Duration::from_secs(10),
            auth_throttle: AuthThrottlePolicy::default(),
            login_lockout: LoginLockout::default(),
            audit_retention: Duration::from_secs(365 * 24 * 3600),
            forward_targets: Default::default(),
            webhook_targets: Default::default(),
            livechat_socket_url: None,
        }
    }
}

/// The ports and configuration every flow runs on.
#[derive(Clone)]
pub struct Services {
    /// Tenants, numbers, API keys.
    pub tenants: Arc<dyn TenantStore>,
    /// Users, invites, sessions.
    pub team: Arc<dyn TeamStore>,
    /// Carrier credentials.
    pub secrets: Arc<dyn SecretStore>,
    /// The tenants' message templates and Meta's statuses of them.
    pub templates: Arc<dyn TemplateStore>,
    /// WhatsApp Business Account routes to other environments.
    pub waba: Arc<dyn WabaRouteStore>,
    /// Event webhook endpoints and their deliveries.
    pub webhooks: Arc<dyn WebhookStore>,
    /// Messages and conversations.
    pub messages: Arc<dyn MessageStore>,
    /// Queues between the flows.
    pub queue: Arc<dyn Queue>,
    /// Dashboard fan-out.
    pub push: Arc<dyn Push>,
    /// One adapter per carrier.
    pub providers: ProviderRegistry,
    /// Environment fallback credentials.
    pub platform: PlatformCredentials,
    /// Settings.
    pub settings: ServiceSettings,
    /// Circuit breakers per (tenant, carrier), shared by every clone of these services.
    pub breakers: Arc<CircuitBreakers>,
    /// Where media too large for a response are published (Lambda); none: served in the
    /// response whatever their size (`omni serve`).
    pub media_store: Option<Arc<dyn MediaStore>>,
    /// Where LiveChat visitors' uploads are kept; none: uploads are refused.
    pub uploads: Option<Arc<dyn UploadStore>>,
    /// Authentication failures per (address, scope), shared by every clone.
    pub auth_throttle: Arc<AuthThrottle>,
    /// When each API key's use was last recorded, shared by every clone.
    pub api_key_usage: Arc<ApiKeyUsage>,
    /// Each tenant's auto-replies as recently read, shared by every clone.
    pub auto_reply_cache: Arc<AutoReplyCache>,
}

impl Services {
    /// Credentials for (tenant, carrier): the tenant's own first; the platform's only when the
    /// tenant has none, so a tenant's choice is never masked.
    pub async fn credentials_for(
        &self,
        tenant: &TenantId,
        kind: ProviderKind,
    ) -> Result<Option<Credentials>, ServiceError> {
        if let Some(own) = self.secrets.get_credentials(tenant, kind).await? {
            return Ok(Some(own));
        }
        Ok(self.platform.get(kind).cloned())
    }

    /// [`ServiceError::LockedOut`] while `client` is locked out of `scope`.
    pub fn auth_allowed(
        &self,
        client: Option<IpAddr>,
        scope: &AuthScope,
    ) -> Result<(), ServiceError> {
        match client {
            Some(ip) => self
                .auth_throttle
                .check(&self.settings.auth_throttle, ip, scope)
                .map_err(ServiceError::LockedOut),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication of `client` on `scope` and holds the caller for the
    /// delay it has earned.
    pub async fn auth_failed(&self, client: Option<IpAddr>, scope: &AuthScope) {
        if let Some(ip) = client {
            let delay = self
                .auth_throttle
                .failed(&self.settings.auth_throttle, ip, scope);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Every tenant API key starts with this, so leaked keys are recognisable.
pub const API_KEY_PREFIX: &str = "omk_";

/// The stored form of an API key: keys are long random strings, so a plain SHA-256 suffices.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        let d1 = p.delay(1, None);
        assert!(
            d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1),
            "{d1:?}"
        );
        let d3 = p.delay(3, None);
        assert!(
            d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4),
            "{d3:?}"
        );
        assert!(p.delay(30, None) <= Duration::from_secs(10));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(42))),
            Duration::from_secs(42)
        );
    }

    #[test]
    fn api_key_hash_is_stable_and_not_the_key() {
        let h = hash_api_key("omk_abc");
        assert_eq!(h, hash_api_key("omk_abc"));
        assert_ne!(h, hash_api_key("omk_abd"));
        assert!(!h.contains("omk_abc"));
    }
}
