//! Configuration, read once at start-up from flags and the environment into typed values.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use omni_api::config::ServiceArgs;
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
}
