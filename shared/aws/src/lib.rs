//! Omni's ports on AWS: [`TenantStore`](omni_core::ports::TenantStore),
//! [`MessageStore`](omni_core::ports::MessageStore) and WebSocket connections on one DynamoDB
//! table, [`SecretStore`](omni_core::ports::SecretStore) on Secrets Manager, the
//! [`Queue`](omni_core::ports::Queue) on SQS, [`Push`](omni_core::ports::Push) through the
//! API Gateway management API, and [`MediaStore`](omni_core::ports::MediaStore) on S3.
//!
//! # The table
//!
//! One table, key `pk` (S) + `sk` (S), four global secondary indexes (`gsi1` on
//! `gsi1pk`/`gsi1sk`, `gsi2` on `gsi2pk`/`gsi2sk` and `gsi4` on `gsi4pk`/`gsi4sk`, projecting
//! everything their listings read; `gsi3` on `gsi3pk`/`gsi3sk`, keys only, so raw webhook
//! bodies are never copied into an index), TTL on `ttl`
//! (epoch seconds). Every key that holds tenant data starts with the tenant id, so a lookup with
//! another tenant's id can only miss. High-volume items (messages, conversations, carrier ids,
//! raw payloads) each get their own partition; a tenant's few settings share `T#<tenant>`.
//!
//! | Item | `pk` | `sk` | Index keys | Access pattern |
//! |---|---|---|---|---|
//! | tenant | `T#<tenant>` | `TENANT` | | get by id |
//! | number route | `N#<e164>` | `ROUTE` | | inbound routing by the called number |
//! | tenant's number | `T#<tenant>` | `N#<e164>` | | a tenant's numbers (query `begins_with`) |
//! | API key | `K#<sha256>` | `KEY` | | tenant and id of a key hash (read on every request: revoking is immediate) |
//! | tenant's API key | `T#<tenant>` | `K#<key id>` | | listing (name, prefix, created, last used) and revoking by id |
//! | LiveChat widget | `T#<tenant>` | `LIVECHAT` | | a tenant's widget settings (with its identity secret and token key; the table is encrypted at rest) |
//! | widget key | `LCW#<widget key>` | `LCW` | | a copy of the settings found by the key visitors' pages name (one read per visitor request); keeps the key to one tenant (conditional put) |
//! | carrier config | `T#<tenant>` | `P#<provider>` | gsi1: `P#<provider>` / `<tenant>` | a tenant's carriers; tenants of a carrier; names the Secrets Manager secret |
//! | conversation | `C#<tenant>#<id>` (id: UUID v5 of tenant, thread channel and contact) | `C` | gsi1: `CONVS#<tenant>` / `<last at>#<id>` | get; list by recency; a writer finds it by its derived id |
//! | thread | `TH#<tenant>#<channel>#<contact>` | `TH` | | the conversation of (channel, contact) when its id was not derived (made before ids were), read in the same `BatchGetItem` |
//! | message | `M#<tenant>#<id>` | `M` | gsi1: `MSGS#<tenant>#<conversation>` / `<created>#<id>`; gsi2 (only while queued): `OUTBOX` / `<due>#<tenant>#<id>` (its last change, or its retry when later); gsi4: `LOG#<tenant>` / `<created>#<id>` | get; list a conversation; the sweeper's stranded outbox; the delivery log (a tenant's messages by time, filtered as they are read) |
//! | carrier message id | `PM#<tenant>#<provider>#<carrier id>` | `PM` | | dedupe inbound; find a message for a status callback |
//! | idempotency key | `I#<tenant>#<key>` | `I` | | replay `POST /v1/messages`; TTL 24 h |
//! | raw webhook | `R#<tenant>#<dedupe key>` | `R` | gsi3 (keys only): `RAW#<expiry day>` / `<expires at>#…` | dedupe redeliveries; retention (TTL, plus an exact purge) |
//! | opt-out | `O#<tenant>#<contact>` | `O` | | STOP / START |
//! | auto-replies | `T#<tenant>` | `AUTOREPLY` | | the tenant's automatic replies |
//! | auto-reply turn | `AR#<tenant>#<conversation>` | `AR` | | when the conversation last got an auto-reply (conditional put: one per cooldown); TTL past the cooldown |
//! | webhook log entry | `WHL#<tenant>` (`WHL#` when no tenant could be told) | `<received>#<id>` | | what became of each carrier webhook, newest first; TTL as raw payloads |
//! | split-message pair | `MP#<tenant>#<provider>#<key>` | `MP` | gsi2 (only while the sweep must look at it): `PARTS` / `<due>#<tenant>#<provider>#<key>` | merge a carrier's two halves (conditional writes); give up on a lone half when due; TTL 1 day |
//! | user | `U#<tenant>` | `U#<user id>` | | get; a tenant's users (query `begins_with`); password hash and session generation beside the document |
//! | user e-mail | `U#<tenant>` | `E#<email>` | | sign-in by e-mail; keeps e-mails unique per tenant (conditional put) |
//! | invite | `INV#<sha256>` | `INV` | | accept once (delete returning it); TTL 72 h |
//! | session | `SES#<sha256>` | `SES` | | read on every signed-in request; TTL at its inactivity expiry, moved on use |
//! | failed sign-ins | `LF#account:<tenant>:<email>` or `LF#address:<ip>` | `LF` | | the sign-in lockout's window and count; TTL at the window's end |
//! | template | `TPL#<tenant>` | `T#<name>` | | get; a tenant's templates (query `begins_with`); every version in `doc`, written on the revision `rev` read |
//! | Meta template status | `TPL#<tenant>` | `W#<Meta name>#<language>` | | Meta's status per language of a WhatsApp template (query `begins_with`) |
//! | WebSocket connection | `WS#<tenant>` | `<connection id>` | | a tenant's dashboards and the key that opened each (TTL 2 h; caps, revocation) |
//! | connection owner | `WSC#<connection id>` | `WSC` | | `$disconnect` finds the tenant |
//!
//! A message's audit trail (every status transition with its source) lives in the message item
//! itself, so it can never disagree with the status. Writes that must agree go in one
//! transaction (a message, its carrier id or idempotency item, and its conversation's counters
//! and last message); items that change under concurrency carry a version (`ver`) checked on
//! write; unread and starred counters move with `ADD`; a status write is conditional on the rank
//! not going backwards; a delivery claim is a conditional update. Global secondary indexes are
//! eventually consistent, so a listing may trail a write by a moment; point reads are strongly
//! consistent.

#![warn(missing_docs)]

mod connections;
mod item;
mod media;
mod messages;
mod parts;
mod queue;
mod secrets;
mod team;
mod templates;
mod tenants;
mod waba;
mod webhooks;

pub mod provision;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use omni_core::domain::TenantId;
use omni_core::ports::StoreError;

pub use aws_types::SdkConfig;
pub use connections::ApiGatewayPush;
pub use media::S3MediaStore;
pub use secrets::SecretCache;

/// Where the backend's resources are: read once at start-up from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    /// The DynamoDB table (`OMNI_TABLE`).
    pub table: String,
    /// Conversation-updater queue (`OMNI_INBOUND_QUEUE_URL`).
    pub inbound_queue_url: String,
    /// Delivery-worker queue (`OMNI_DELIVERY_QUEUE_URL`).
    pub delivery_queue_url: String,
    /// Bulk deliveries (`OMNI_BULK_QUEUE_URL`), consumed apart so a campaign never delays
    /// the delivery queue; without it bulk messages share the delivery queue.
    pub bulk_queue_url: Option<String>,
    /// Dead letters of inbound jobs (`OMNI_INBOUND_DLQ_URL`).
    pub inbound_dlq_url: String,
    /// Dead letters of deliveries (`OMNI_DELIVERY_DLQ_URL`).
    pub delivery_dlq_url: String,
    /// Prefix of the Secrets Manager names of tenant credentials (`OMNI_SECRET_PREFIX`).
    pub secret_prefix: String,
    /// WhatsApp forwarding queue (`OMNI_FORWARD_QUEUE_URL`): set for the functions that
    /// queue or forward routed WhatsApp webhooks.
    pub forward_queue_url: Option<String>,
    /// Dead letters of forwarding (`OMNI_FORWARD_DLQ_URL`), beside it.
    pub forward_dlq_url: Option<String>,
    /// Event webhook deliveries (`OMNI_EVENTS_QUEUE_URL`): set for the functions whose writes
    /// add deliveries (each is queued once committed) and for the dispatcher.
    pub events_queue_url: Option<String>,
    /// Dead letters of the event dispatcher (`OMNI_EVENTS_DLQ_URL`), beside it.
    pub events_dlq_url: Option<String>,
}

impl AwsResources {
    /// Reads the resource names from the environment; names the first missing variable.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name} is not set"))
        };
        Ok(AwsResources {
            table: var("OMNI_TABLE")?,
            inbound_queue_url: var("OMNI_INBOUND_QUEUE_URL")?,
            delivery_queue_url: var("OMNI_DELIVERY_QUEUE_URL")?,
            bulk_queue_url: env_value("OMNI_BULK_QUEUE_URL"),
            inbound_dlq_url: var("OMNI_INBOUND_DLQ_URL")?,
            delivery_dlq_url: var("OMNI_DELIVERY_DLQ_URL")?,
            forward_queue_url: env_value("OMNI_FORWARD_QUEUE_URL"),
            forward_dlq_url: env_value("OMNI_FORWARD_DLQ_URL"),
            events_queue_url: env_value("OMNI_EVENTS_QUEUE_URL"),
            events_dlq_url: env_value("OMNI_EVENTS_DLQ_URL"),
            secret_prefix: std::env::var("OMNI_SECRET_PREFIX")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "omni/".to_owned()),
        })
    }
}

/// The AWS backend: one value implements the store, secret and queue ports.
#[derive(Clone)]
pub struct AwsBackend {
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    secrets: aws_sdk_secretsmanager::Client,
    resources: Arc<AwsResources>,
    cache: Arc<SecretCache>,
    /// Messages as this instance last claimed them, with their version: the write that
    /// records the claimed attempt's outcome tries that version first instead of reading the
    /// message again (a stale one only fails the conditional write, which then reads).
    claimed:
        Arc<std::sync::Mutex<std::collections::HashMap<(TenantId, uuid::Uuid), ClaimedMessage>>>,
}

/// A claimed message and its version (see `AwsBackend::claimed`).
type ClaimedMessage = (omni_core::model::Message, i64);

/// Claimed messages remembered at most: a worker holds a batch's worth at a time.
const CLAIMED_KEPT: usize = 256;

impl std::fmt::Debug for AwsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsBackend")
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// How long decrypted tenant credentials are kept in memory before Secrets Manager is asked
/// again (a credential rotated elsewhere is picked up within this).
pub const DEFAULT_SECRET_TTL: Duration = Duration::from_secs(300);

impl AwsBackend {
    /// A backend over clients built from `config`.
    pub fn new(config: &SdkConfig, resources: AwsResources) -> Self {
        AwsBackend {
            ddb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            resources: Arc::new(resources),
            cache: Arc::new(SecretCache::new(DEFAULT_SECRET_TTL)),
            claimed: Arc::default(),
        }
    }

    /// Keeps decrypted credentials for `ttl` instead of [`DEFAULT_SECRET_TTL`].
    pub fn with_secret_ttl(mut self, ttl: Duration) -> Self {
        self.cache = Arc::new(SecretCache::new(ttl));
        self
    }

    /// The resources this backend uses.
    pub fn resources(&self) -> &AwsResources {
        &self.resources
    }

    /// Remembers a message as just claimed (see `claimed`).
    pub(crate) fn remember_claim(
        &self,
        tenant: &TenantId,
        message: omni_core::model::Message,
        ver: i64,
    ) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.len() >= CLAIMED_KEPT {
            claimed.clear();
        }
        claimed.insert((tenant.clone(), message.id), (message, ver));
    }

    /// Takes back a message remembered as claimed, if any.
    pub(crate) fn take_claim(&self, tenant: &TenantId, id: uuid::Uuid) -> Option<ClaimedMessage> {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant.clone(), id))
    }

    /// The DynamoDB client (shared with [`ApiGatewayPush`]).
    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.ddb
    }
}

/// The SDK configuration from the environment, as Lambda provides it: `AWS_REGION` (or
/// `AWS_DEFAULT_REGION`), the `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`
/// credentials and, for emulators, `AWS_ENDPOINT_URL`. The HTTPS client is on rustls + ring:
/// the SDK's default client would add a second TLS stack. Built by hand rather than with
/// `aws-config`, whose credential chain (STS, SSO, profile files) Lambda never needs and which
/// made up about half a megabyte of a function binary (`webhook-twilio`, BENCHMARKS.md).
pub async fn sdk_config() -> SdkConfig {
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_sdk_dynamodb::config::retry::RetryConfig;
    use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Region};
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let region = env_value("AWS_REGION")
        .or_else(|| env_value("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(EnvironmentCredentials))
        .http_client(http)
        .retry_config(RetryConfig::standard())
        // aws-config's default: fail a connection attempt fast and let the retry try again.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_millis(3100))
                .build(),
        );
    if let Some(endpoint) = env_value("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(endpoint);
    }
    config.build()
}

/// A non-empty environment variable.
pub(crate) fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Credentials from the environment, read at every request as the SDK asks: Lambda puts the
/// function role's credentials there.
#[derive(Debug)]
struct EnvironmentCredentials;

impl aws_credential_types::provider::ProvideCredentials for EnvironmentCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        use aws_credential_types::provider::error::CredentialsError;
        let missing = |name: &str| CredentialsError::not_loaded(format!("{name} is not set"));
        let credentials = match (
            env_value("AWS_ACCESS_KEY_ID"),
            env_value("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Ok(aws_credential_types::Credentials::new(
                id,
                secret,
                env_value("AWS_SESSION_TOKEN"),
                None,
                "environment",
            )),
            (None, _) => Err(missing("AWS_ACCESS_KEY_ID")),
            (_, None) => Err(missing("AWS_SECRET_ACCESS_KEY")),
        };
        aws_credential_types::provider::future::ProvideCredentials::ready(credentials)
    }
}

/// Maps any SDK failure to a backend error with its full context (for logs only).
pub(crate) fn sdk_error<E>(what: &str, error: E) -> StoreError
where
    E: std::error::Error + 'static,
{
    StoreError::Backend(format!("{what}: {}", DisplayErrorContext(error)))
}

/// The service error code of an SDK failure (`ConditionalCheckFailedException`, …).
pub(crate) fn error_code<E: ProvideErrorMetadata>(error: &E) -> Option<&str> {
    error.code()
}
