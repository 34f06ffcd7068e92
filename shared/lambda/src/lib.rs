//! Omni on AWS Lambda: configuration read once per cold start, the services wired to the AWS
//! backend, and one handler per function. Each function's `main` is a few lines that pick a
//! handler (see `functions/`); the HTTP functions run the same axum routers as `omni serve`
//! under `lambda_http`.

#![warn(missing_docs)]

mod handlers;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use omni_api::config::{platform_credentials, ServiceArgs};
use omni_api::{AppState, ClientAddr};
use omni_aws::{ApiGatewayPush, AwsBackend, AwsResources};
use omni_core::providers::{http_client, ProviderRegistry, Secret};
use omni_core::service::Services;
use rand::Rng;

pub use handlers::{
    conversation_updater, delivery_worker, event_dispatcher, outbox_sweeper, retry_delay,
    ses_events, signal_poller, whatsapp_forwarder, ws_connect, ws_disconnect, PollReport,
    SesEventReport, SweepReport,
};
pub use lambda_runtime::Error;

/// Settings of every function, from its environment (the template sets them).
#[derive(Debug, Clone, Parser)]
#[command(name = "omni-lambda")]
pub struct LambdaConfig {
    /// The HTTP API's public base URL (checks URL-signed webhooks, builds status callbacks);
    /// empty: webhooks use `https://<Host>`, as API Gateway's own domain is called.
    #[arg(long, env = "OMNI_PUBLIC_URL", default_value = "")]
    pub public_url: String,
    /// The WebSocket API stage's management endpoint, for pushes.
    #[arg(long, env = "OMNI_WS_ENDPOINT")]
    pub ws_endpoint: String,
    /// Secrets Manager id of the admin token (the admin function).
    #[arg(long, env = "OMNI_ADMIN_TOKEN_SECRET")]
    pub admin_token_secret: Option<String>,
    /// S3 bucket where media too large for a Lambda response are published (the functions
    /// that serve media); unset: such media cannot be served.
    #[arg(long, env = "OMNI_MEDIA_BUCKET")]
    pub media_bucket: Option<String>,
    /// Seconds tenant credentials stay cached in memory.
    #[arg(long, env = "OMNI_SECRET_TTL_SECS", default_value_t = 300)]
    pub secret_ttl_secs: u64,
    /// Carriers, retries and retention.
    #[command(flatten)]
    pub service: ServiceArgs,
}

impl LambdaConfig {
    /// Reads the settings from the environment only.
    pub fn from_env() -> Result<Self, Error> {
        Ok(LambdaConfig::try_parse_from(["omni-lambda"])?)
    }

    /// Settings from explicit `--flag value` pairs (the environment still fills the rest):
    /// for tests and harnesses. Panics on an invalid flag.
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Self {
        LambdaConfig::parse_from(std::iter::once("omni-lambda").chain(args))
    }
}

/// What a function keeps between invocations: the services over the AWS backend.
#[derive(Clone)]
pub struct Omni {
    /// The flows.
    pub services: Services,
    /// The backend (for the WebSocket connection table and SQS visibility).
    pub backend: AwsBackend,
    /// Dashboard caps per key and per tenant (`ws-connect`).
    pub ws_limits: omni_api::ws::WsLimits,
    /// The push that relays dashboards' presence to each other (`ws-connect`'s `$default`).
    pub presence: Arc<ApiGatewayPush>,
    admin_token: Secret,
    cors: omni_api::cors::CorsOrigins,
    /// The carrier HTTP timeout: a queue consumer starts no carrier call that could not
    /// finish before its invocation's deadline.
    carrier_timeout: Duration,
}

impl std::fmt::Debug for Omni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Omni")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Omni {
    /// Reads the environment and builds the clients: a function's cold start.
    pub async fn from_env() -> Result<Self, Error> {
        let config = LambdaConfig::from_env()?;
        let resources = AwsResources::from_env()?;
        let sdk = omni_aws::sdk_config().await;
        Omni::new(&config, &sdk, resources).await
    }

    /// Wires the services to the AWS backend described by `resources`.
    pub async fn new(
        config: &LambdaConfig,
        sdk: &omni_aws::SdkConfig,
        resources: AwsResources,
    ) -> Result<Self, Error> {
        let backend = AwsBackend::new(sdk, resources)
            .with_secret_ttl(Duration::from_secs(config.secret_ttl_secs));
        let push = Arc::new(ApiGatewayPush::new(
            sdk,
            backend.clone(),
            &config.ws_endpoint,
        ));
        let admin_token = match &config.admin_token_secret {
            Some(id) => {
                let token = backend.platform_secret(id).await?;
                // The template generates 48 characters; a hand-set one must not be guessable.
                if token.expose().chars().count() < omni_api::MIN_ADMIN_TOKEN_CHARS {
                    return Err(format!(
                        "the admin token secret must be at least {} characters",
                        omni_api::MIN_ADMIN_TOKEN_CHARS
                    )
                    .into());
                }
                token
            }
            // Functions that do not serve /v1/admin get a token nobody knows.
            None => Secret::new(hex::encode(rand::thread_rng().gen::<[u8; 32]>())),
        };
        let carrier_timeout = Duration::from_millis(config.service.carrier_timeout_ms);
        let http = http_client(carrier_timeout);
        // The media bucket: large media published for dashboards, and LiveChat uploads.
        let media = match &config.media_bucket {
            Some(bucket) => Some(Arc::new(
                omni_aws::S3MediaStore::new(sdk, http.clone(), bucket)
                    .map_err(|e| format!("media bucket: {e}"))?,
            )),
            None => None,
        };
        let services = Services {
            tenants: Arc::new(backend.clone()),
            team: Arc::new(backend.clone()),
            secrets: Arc::new(backend.clone()),
            waba: Arc::new(backend.clone()),
            webhooks: Arc::new(backend.clone()),
            templates: Arc::new(backend.clone()),
            messages: Arc::new(backend.clone()),
            queue: Arc::new(backend.clone()),
            push: push.clone(),
            providers: ProviderRegistry::new(http.clone(), &config.service.endpoints(), false),
            platform: platform_credentials()?,
            // Whitespace alone is unset, never a base URL of its own.
            settings: config
                .service
                .settings(config.public_url.trim().to_string()),
            breakers: Default::default(),
            auth_throttle: Default::default(),
            api_key_usage: Default::default(),
            auto_reply_cache: Default::default(),
            uploads: media
                .clone()
                .map(|m| m as Arc<dyn omni_core::ports::UploadStore>),
            media_store: media.map(|m| m as Arc<dyn omni_core::ports::MediaStore>),
        };
        Ok(Omni {
            services,
            backend,
            ws_limits: config.service.ws_limits(),
            presence: push,
            admin_token,
            cors: config.service.cors_origins.clone(),
            carrier_timeout,
        })
    }

    /// The state the HTTP routers share.
    pub fn app_state(&self) -> AppState {
        AppState::new(
            self.services.clone(),
            self.admin_token.clone(),
            self.cors.clone(),
        )
    }
}

/// Serves an HTTP router under `lambda_http` (an HTTP API function's `main`) as [`http_app`].
pub async fn run_http(router: axum::Router) -> Result<(), Error> {
    lambda_http::run(http_app(router)).await
}

/// `router` with API Gateway's `sourceIp` given to each request as its [`ClientAddr`]: what
/// repeated authentication failures are counted against.
pub fn http_app(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::map_request(with_client_addr))
}

async fn with_client_addr(mut request: axum::extract::Request) -> axum::extract::Request {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    let source = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    };
    if let Some(ip) = source.and_then(|s| s.parse().ok()) {
        request.extensions_mut().insert(ClientAddr(ip));
    }
    request
}

/// Logs as JSON lines on stdout (CloudWatch) at the level `OMNI_LOG` names (default `info`).
/// Each line inside an invocation carries its request id (`span.requestId`, from the
/// runtime's span: the JSON format keeps the current span), so one invocation's lines can
/// be gathered; functions/ses-events/tests/request_id.rs checks it on the real binary.
/// A plain level, not an `EnvFilter`: the directive parser's regex engine would add about a
/// megabyte to every function binary.
pub fn init_tracing() {
    let level = std::env::var("OMNI_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .try_init();
}
