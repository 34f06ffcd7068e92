//! What the benches share: a server process under test, `omni serve` started on a fresh
//! database, and the tenant the load is for.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The platform admin token `omni serve` is started with.
const ADMIN: &str = "bench-admin-token-0123456789abcdef";

/// `program serve` (an `omni` binary) on a fresh database in `dir`, logging warnings only to
/// nowhere; the caller adds any other setting, then starts it with [`Server::start`].
pub fn omni_serve(program: impl AsRef<OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .args(["serve"])
        .env("OMNI_ADDR", "127.0.0.1:0")
        .env("OMNI_DB", dir.join("omni.db"))
        .env("OMNI_ADMIN_TOKEN", ADMIN)
        .env(
            "OMNI_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("OMNI_LOG", "warn")
        .stderr(Stdio::null());
    command
}

/// Creates tenant `bench` on the `omni serve` at `base`: Twilio with `auth_token`, `number`
/// routed to it for SMS. Returns the tenant's API key.
pub async fn bench_tenant(
    http: &reqwest::Client,
    base: &str,
    auth_token: &str,
    number: &str,
) -> String {
    let admin = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    for (path, body) in [
        (
            "/v1/admin/tenants/bench".to_owned(),
            serde_json::json!({"name": "Bench"}),
        ),
        (
            "/v1/admin/tenants/bench/providers/twilio".to_owned(),
            serde_json::json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": auth_token}),
        ),
        (
            format!("/v1/admin/tenants/bench/numbers/{number}"),
            serde_json::json!({"provider": "twilio", "channels": ["sms"]}),
        ),
    ] {
        let status = admin(reqwest::Method::PUT, &path, Some(body))
            .await
            .expect("admin API")
            .status();
        assert!(status.is_success(), "{path}: {status}");
    }
    let key: serde_json::Value = admin(
        reqwest::Method::POST,
        "/v1/admin/tenants/bench/api-keys",
        None,
    )
    .await
    .expect("admin API")
    .json()
    .await
    .expect("an API key");
    key["key"].as_str().expect("an API key").to_owned()
}

/// A server under test, killed however the bench ends (a failed assertion included), so
/// no server outlives its run.
pub struct Server(Child);

impl Server {
    /// Starts `command` and waits for its `<prefix>http://host:port` line on stdout; an
    /// error if it cannot start, exits or stays silent for a minute first. Its stdout is drained after that, so
    /// a server that logs there never blocks on a full pipe.
    pub fn start(mut command: Command, prefix: &'static str) -> Result<(Self, String), String> {
        // Named by program and arguments only: the environment holds the auth token.
        let name = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{name}`: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let server = Server(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let url = lines.find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
            let _ = tx.send(url);
            lines.for_each(drop);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(url)) => Ok((server, url)),
            _ => Err(format!(
                "`{name}` exited or printed no `{prefix}…` line within 60 s (its stderr is above)"
            )),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Peak resident memory so far (`VmHWM`), read while the process is still alive.
    pub fn max_rss_kib(&self) -> Option<u64> {
        max_rss_kib(self.pid())
    }
}

/// Peak resident memory of a process, from /proc (Linux).
fn max_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
