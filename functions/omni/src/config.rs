//! Configuration, read once at start-up from flags and the environment into typed values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use omni_api::config::ServiceArgs;
use omni_api::limits::HttpLimits;
use omni_core::service::ServiceSettings;

/// Settings of `omni serve` (every flag also reads its environment variable).
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Listen address.
    #[arg(long, env = "OMNI_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// SQLite database file.
    #[arg(long, env = "OMNI_DB", default_value = "omni.db")]
    pub db: PathBuf,
    /// Bearer token for /v1/admin/*; generated and printed once when unset.
    #[arg(long, env = "OMNI_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Base URL as carriers see it (checks URL-signed webhooks); default http://{addr}.
    #[arg(long, env = "OMNI_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Milliseconds between signal-cli polls.
    #[arg(long, env = "OMNI_SIGNAL_POLL_MS", default_value_t = 2000)]
    pub signal_poll_ms: u64,
    /// Milliseconds a client has to send a request's whole head (request line and headers)
    /// before the connection is closed (slowloris).
    #[arg(long, env = "OMNI_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Milliseconds a client has to send a request's whole body once the head is in (408).
    #[arg(long, env = "OMNI_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Largest header section in bytes (431).
    #[arg(long, env = "OMNI_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Longest request URL (path and query) in bytes (414).
    #[arg(long, env = "OMNI_MAX_URL_BYTES", default_value_t = 8 * 1024)]
    pub max_url_bytes: usize,
    /// Carriers, retries and retention.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Log format: `text` or `json`.
    #[arg(long, env = "OMNI_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Seed a demo tenant with the built-in simulator carrier (demo mode only).
    #[arg(long)]
    pub demo: bool,
}

impl ServeConfig {
    /// The public base URL.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr))
    }

    /// The services' settings.
    pub fn settings(&self) -> ServiceSettings {
        self.service.settings(self.public_url())
    }

    /// Body deadline and URL and header caps.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms.max(1)),
            max_url_bytes: self.max_url_bytes,
            max_header_bytes: self.max_header_bytes,
        }
    }

    /// How long a client may take to send a request head.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }
}
