//! Settings shared by `omni serve` and the Lambda functions, read once at start-up from flags
//! and the environment.

use std::time::Duration;

use std::collections::BTreeMap;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use omni_core::domain::ProviderKind;
use omni_core::providers::{ProviderEndpoints, CARRIERS};
use omni_core::service::{
    AuthThrottlePolicy, BreakerPolicy, PlatformCredentials, RetryPolicy, SendRateLimit,
    ServiceSettings,
};

use crate::ws::WsLimits;

/// Carrier endpoints, retry schedule and retention (every flag also reads its environment
/// variable).
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Each carrier's API base URL (`--<carrier>-api-url`, `OMNI_<CARRIER>_API_URL`).
    #[command(flatten)]
    pub carrier_api_urls: CarrierApiUrls,
    /// Seconds (at most 3600) one half of a VoiceMeUp split MMS waits for the other before it
    /// is delivered on its own (by the next sweep: within a minute more on AWS, within 10 s
    /// locally).
    #[arg(long, env = "OMNI_VOICEMEUP_MMS_WAIT_SECS", default_value_t = 10)]
    pub voicemeup_mms_wait_secs: u64,
    /// Amazon SNS (SES over SNS, `/webhooks/ses`): empty trusts signing certificates and
    /// subscription URLs only on `https://sns.<region>.amazonaws.com`; otherwise only URLs
    /// starting with this prefix (tests and emulators, e.g. `http://127.0.0.1:9000/`).
    #[arg(long, env = "OMNI_SNS_CERT_URL_PREFIX", default_value = "")]
    pub sns_cert_url_prefix: String,
    /// Attempts per outbound message before it is dead-lettered.
    #[arg(long, env = "OMNI_RETRY_MAX_ATTEMPTS", default_value_t = 6)]
    pub retry_max_attempts: u32,
    /// First retry delay in milliseconds (doubles each attempt, with jitter).
    #[arg(long, env = "OMNI_RETRY_BASE_MS", default_value_t = 2000)]
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[arg(long, env = "OMNI_RETRY_MAX_MS", default_value_t = 300_000)]
    pub retry_max_ms: u64,
    /// Seconds a queued message may sit with no job before the sweeper re-queues it.
    #[arg(long, env = "OMNI_SWEEP_AFTER_SECS", default_value_t = 30)]
    pub sweep_after_secs: u64,
    /// Days raw webhook payloads are kept.
    #[arg(long, env = "OMNI_RAW_RETENTION_DAYS", default_value_t = 30)]
    pub raw_retention_days: u64,
    /// Consecutive transient failures of one tenant's carrier that open its circuit breaker
    /// (failover then skips that carrier).
    #[arg(long, env = "OMNI_BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,
    /// Seconds within which those failures must fall.
    #[arg(long, env = "OMNI_BREAKER_WINDOW_SECS", default_value_t = 60)]
    pub breaker_window_secs: u64,
    /// Seconds an open breaker keeps calls away from the carrier before one trial call.
    #[arg(long, env = "OMNI_BREAKER_COOLDOWN_SECS", default_value_t = 30)]
    pub breaker_cooldown_secs: u64,
    /// Carrier HTTP timeout in milliseconds.
    #[arg(long, env = "OMNI_CARRIER_TIMEOUT_MS", default_value_t = 15_000)]
    pub carrier_timeout_ms: u64,
    /// Sustained `POST /v1/messages` calls per second per tenant, fractions allowed (0: no
    /// limit). In memory: per process, and per function instance on Lambda.
    #[arg(long, env = "OMNI_SEND_RATE_PER_SEC", default_value_t = 50.0)]
    pub send_rate_per_sec: f64,
    /// `POST /v1/messages` calls a tenant may make at once before the rate applies.
    #[arg(long, env = "OMNI_SEND_BURST", default_value_t = 100)]
    pub send_burst: u32,
    /// Failed authentications (admin token, API key, a tenant's webhook secret) from one
    /// address within `OMNI_AUTH_FAILURE_WINDOW_SECS` that lock it out (0: never). In memory:
    /// per process, and per function instance on Lambda.
    #[arg(long, env = "OMNI_AUTH_FAILURE_LIMIT", default_value_t = 10)]
    pub auth_failure_limit: u32,
    /// Seconds within which those failures count.
    #[arg(long, env = "OMNI_AUTH_FAILURE_WINDOW_SECS", default_value_t = 60)]
    pub auth_failure_window_secs: u64,
    /// Seconds a locked-out address is refused (`429` with `Retry-After`).
    #[arg(long, env = "OMNI_AUTH_LOCKOUT_SECS", default_value_t = 300)]
    pub auth_lockout_secs: u64,
    /// Milliseconds added to the answer of each failure after the first within the window
    /// (at most 2 s).
    #[arg(long, env = "OMNI_AUTH_FAILURE_DELAY_MS", default_value_t = 200)]
    pub auth_failure_delay_ms: u64,
    /// Days audit log entries are kept.
    #[arg(long, env = "OMNI_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    pub audit_retention_days: u64,
    /// Dashboard WebSockets one API key may hold open (more: `429 too_many_connections`).
    #[arg(long, env = "OMNI_WS_MAX_PER_KEY", default_value_t = 50)]
    pub ws_max_per_key: usize,
    /// Dashboard WebSockets one tenant may hold open, all its keys together.
    #[arg(long, env = "OMNI_WS_MAX_PER_TENANT", default_value_t = 200)]
    pub ws_max_per_tenant: usize,
    /// Dashboard WebSockets the whole process holds open (`omni serve`; on AWS, API
    /// Gateway's quotas).
    #[arg(long, env = "OMNI_WS_MAX_CONNECTIONS", default_value_t = 2000)]
    pub ws_max_connections: usize,
    /// Largest frame or message a dashboard may send, in bytes (`omni serve`; API Gateway
    /// caps frames at 32 KiB on AWS).
    #[arg(long, env = "OMNI_WS_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub ws_max_message_bytes: usize,
    /// Seconds between the server's pings to each dashboard (`omni serve`).
    #[arg(long, env = "OMNI_WS_PING_SECS", default_value_t = 30)]
    pub ws_ping_secs: u64,
    /// Seconds a dashboard may stay silent (no pong, no frame) before it is closed
    /// (`omni serve`; API Gateway closes idle connections after 10 minutes on AWS).
    #[arg(long, env = "OMNI_WS_IDLE_SECS", default_value_t = 75)]
    pub ws_idle_secs: u64,
    /// Browser origins (comma-separated `scheme://host[:port]`) whose pages may call the API
    /// (browser-based dispatch integrations): their CORS preflights are answered on every
    /// route; other origins get no CORS header. Empty: none.
    #[arg(long, env = "OMNI_CORS_ORIGINS", default_value = "")]
    pub cors_origins: crate::cors::CorsOrigins,
    /// Where LiveChat widgets open the visitor socket (`?token=` is appended), when it is not
    /// the server's own `/livechat/v1/ws`: on AWS the template sets the WebSocket API's
    /// stage URL with `?channel=livechat`.
    #[arg(long, env = "OMNI_LIVECHAT_SOCKET_URL")]
    pub livechat_socket_url: Option<String>,
    /// Tests only: WhatsApp forwarding (WABA routes) may target plain `http://` URLs and
    /// loopback addresses (private, link-local and metadata addresses stay refused).
    #[arg(long, env = "OMNI_ALLOW_HTTP_FORWARD", default_value_t = false)]
    pub allow_http_forward: bool,
    /// Tests only: event webhooks may target plain `http://` URLs and loopback addresses
    /// (private, link-local and metadata addresses stay refused).
    #[arg(long, env = "OMNI_ALLOW_HTTP_WEBHOOKS", default_value_t = false)]
    pub allow_http_webhooks: bool,
}

impl ServiceArgs {
    /// The dashboards' caps and timers.
    pub fn ws_limits(&self) -> WsLimits {
        WsLimits {
            per_key: self.ws_max_per_key,
            per_tenant: self.ws_max_per_tenant,
            total: self.ws_max_connections,
            max_message_bytes: self.ws_max_message_bytes.max(125),
            ping_every: Duration::from_secs(self.ws_ping_secs.max(1)),
            idle_timeout: Duration::from_secs(self.ws_idle_secs.max(1)),
        }
    }

    /// The carriers' base URLs.
    pub fn endpoints(&self) -> ProviderEndpoints {
        let mut endpoints = ProviderEndpoints::default();
        endpoints.sns_cert_url_prefix = self.sns_cert_url_prefix.clone();
        self.carrier_api_urls
            .0
            .iter()
            .fold(endpoints, |e, (kind, url)| e.with(*kind, url.clone()))
    }

    /// The services' settings, with carriers calling us at `public_url`.
    pub fn settings(&self, public_url: String) -> ServiceSettings {
        ServiceSettings {
            public_url,
            raw_retention: Duration::from_secs(self.raw_retention_days * 24 * 3600),
            retry: RetryPolicy {
                max_attempts: self.retry_max_attempts.max(1),
                base: Duration::from_millis(self.retry_base_ms),
                max: Duration::from_millis(self.retry_max_ms.max(self.retry_base_ms)),
            },
            claim_lease: Duration::from_secs(60),
            sweep_after: Duration::from_secs(self.sweep_after_secs),
            breaker: BreakerPolicy {
                threshold: self.breaker_threshold.max(1),
                window: Duration::from_secs(self.breaker_window_secs),
                cooldown: Duration::from_secs(self.breaker_cooldown_secs),
            },
            send_rate: SendRateLimit {
                per_second: self.send_rate_per_sec,
                burst: self.send_burst.max(1),
            },
            split_message_wait: Duration::from_secs(self.voicemeup_mms_wait_secs.min(3600)),
            auth_throttle: AuthThrottlePolicy {
                max_failures: self.auth_failure_limit,
                window: Duration::from_secs(self.auth_failure_window_secs),
                lockout: Duration::from_secs(self.auth_lockout_secs),
                delay_step: Duration::from_millis(self.auth_failure_delay_ms),
            },
            login_lockout: Default::default(),
            audit_retention: Duration::from_secs(self.audit_retention_days.max(1) * 24 * 3600),
            forward_targets: omni_core::waba::TargetPolicy {
                allow_http: self.allow_http_forward,
            },
            webhook_targets: omni_core::waba::TargetPolicy {
                allow_http: self.allow_http_webhooks,
            },
            // Whitespace alone is unset.
            livechat_socket_url: self
                .livechat_socket_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
        }
    }
}

/// Each carrier's API base URL, one flag and variable per carrier with a
/// [`ApiUrlSetting`](omni_core::providers::ApiUrlSetting), as its module declares it.
#[derive(Debug, Clone, Default)]
pub struct CarrierApiUrls(BTreeMap<ProviderKind, String>);

impl FromArgMatches for CarrierApiUrls {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let urls = CARRIERS
            .iter()
            .filter_map(|c| {
                let setting = c.api_url?;
                let url = matches.get_one::<String>(setting.env)?;
                Some((c.kind, url.clone()))
            })
            .collect();
        Ok(CarrierApiUrls(urls))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for CarrierApiUrls {
    fn augment_args(command: Command) -> Command {
        CARRIERS
            .iter()
            .filter_map(|c| c.api_url)
            .fold(command, |command, setting| {
                command.arg(
                    Arg::new(setting.env)
                        .long(setting.flag())
                        .env(setting.env)
                        .default_value(setting.default)
                        .value_name("URL")
                        .help(setting.help),
                )
            })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

/// Platform fallback credentials from the environment (used only for tenants with none):
/// each carrier that declares a platform configuration reads its own variables. Refused,
/// naming the carrier and the field, when a webhook secret among them is too weak.
pub fn platform_credentials() -> Result<PlatformCredentials, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut platform = PlatformCredentials::default();
    for carrier in CARRIERS {
        let Some(credentials) = carrier.platform_config.and_then(|read| read(&var)) else {
            continue;
        };
        credentials
            .validate()
            .map_err(|e| format!("platform {} credentials: {e}", carrier.kind))?;
        platform.insert(credentials);
    }
    Ok(platform)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        service: ServiceArgs,
    }

    #[test]
    fn cors_origins_are_read_into_the_typed_config_and_checked() {
        let flags = Flags::try_parse_from(["omni"]).unwrap();
        assert!(flags.service.cors_origins.is_empty());
        let flags = Flags::try_parse_from([
            "omni",
            "--cors-origins",
            "https://dispatch.example.org,http://localhost:3000",
        ])
        .unwrap();
        assert_eq!(
            flags.service.cors_origins,
            crate::cors::CorsOrigins::parse("https://dispatch.example.org, http://localhost:3000")
                .unwrap()
        );
        assert!(
            Flags::try_parse_from(["omni", "--cors-origins", "https://a.example/app"]).is_err()
        );
    }

    #[test]
    fn each_carrier_has_its_api_url_flag_with_its_default() {
        let flags =
            Flags::try_parse_from(["omni", "--twilio-api-url", "http://127.0.0.1:9/"]).unwrap();
        let endpoints = flags.service.endpoints();
        assert_eq!(
            endpoints.api_url(ProviderKind::Twilio),
            "http://127.0.0.1:9/"
        );
        assert_eq!(
            endpoints.api_url(ProviderKind::Telnyx),
            "https://api.telnyx.com"
        );
        assert_eq!(endpoints.api_url(ProviderKind::Signal), "");
        for carrier in CARRIERS {
            if let Some(setting) = carrier.api_url {
                assert_eq!(setting.flag(), format!("{}-api-url", carrier.name()));
                assert_eq!(
                    endpoints.api_url(carrier.kind) == setting.default,
                    carrier.kind != ProviderKind::Twilio
                );
            }
        }
    }
}
