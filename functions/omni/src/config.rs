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
    /// Directory of LiveChat visitors' uploads; default `<db>.media` beside the database.
    #[arg(long, env = "OMNI_MEDIA_DIR")]
    pub media_dir: Option<PathBuf>,
    /// Bearer token for /v1/admin/*; generated and printed once when unset.
    #[arg(long, env = "OMNI_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Base URL as carriers see it (checks URL-signed webhooks); default http://{addr}. Set
    /// but empty is refused at start: signature checks would otherwise have no base but the
    /// client's own `Host` header.
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

/// A setting `omni serve` refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `OMNI_PUBLIC_URL` is not an absolute http(s) URL with a host (empty included).
    #[error(
        "OMNI_PUBLIC_URL must be an absolute http(s) URL such as https://omni.example.org \
         (or unset, for http://OMNI_ADDR); got {0:?}"
    )]
    PublicUrl(String),
    /// `OMNI_ADMIN_TOKEN` is too short to resist guessing.
    #[error(
        "OMNI_ADMIN_TOKEN must be at least {} characters (unset, a random one is generated \
         and printed)",
        omni_api::MIN_ADMIN_TOKEN_CHARS
    )]
    WeakAdminToken,
}

impl ServeConfig {
    /// Where LiveChat uploads are kept: `OMNI_MEDIA_DIR`, or `<db>.media` beside the database.
    pub fn media_dir(&self) -> PathBuf {
        self.media_dir.clone().unwrap_or_else(|| {
            let mut name = self.db.clone().into_os_string();
            name.push(".media");
            PathBuf::from(name)
        })
    }

    /// Refuses settings that would weaken the server: a guessable admin token, or an empty or
    /// relative public URL, which would leave webhook signature checks to build their URL
    /// from the client's `Host` header.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.chars().count() < omni_api::MIN_ADMIN_TOKEN_CHARS)
        {
            return Err(ConfigError::WeakAdminToken);
        }
        if let Some(raw) = &self.public_url {
            let ok = url::Url::parse(raw.trim()).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return Err(ConfigError::PublicUrl(raw.clone()));
            }
        }
        Ok(())
    }

    /// The public base URL (as validated by [`ServeConfig::validate`]).
    pub fn public_url(&self) -> String {
        self.public_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_string())
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn config(public_url: Option<&str>) -> ServeConfig {
        let mut args = vec!["omni"];
        if let Some(u) = public_url {
            args.extend(["--public-url", u]);
        }
        Cli::parse_from(args).serve
    }

    /// `OMNI_PUBLIC_URL=` (set but empty) used to leave signature checks trusting the `Host`
    /// header; it and anything else that is not an absolute http(s) URL is refused, and so is
    /// an admin token under 32 characters (`qz` used to be accepted).
    #[test]
    fn an_empty_or_relative_public_url_or_a_short_admin_token_is_refused() {
        for bad in [
            "",
            "  ",
            "omni.example.org",
            "/webhooks",
            "ftp://omni.example",
            "https://",
        ] {
            assert_eq!(
                config(Some(bad)).validate(),
                Err(ConfigError::PublicUrl(bad.into())),
                "{bad:?}"
            );
        }
        for good in ["https://omni.example.org", "http://127.0.0.1:8080/"] {
            let c = config(Some(good));
            assert_eq!(c.validate(), Ok(()), "{good}");
            assert!(!c.public_url().ends_with('/'));
        }
        let unset = config(None);
        assert_eq!(unset.validate(), Ok(()));
        let mut weak = config(None);
        weak.admin_token = Some("qz".into());
        assert_eq!(weak.validate(), Err(ConfigError::WeakAdminToken));
        weak.admin_token = Some("x".repeat(omni_api::MIN_ADMIN_TOKEN_CHARS));
        assert_eq!(weak.validate(), Ok(()));
        assert_eq!(unset.public_url(), "http://127.0.0.1:8080");
    }
}
