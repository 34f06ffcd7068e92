//! Spawns the real `omni` binary and talks to it over HTTP and WebSocket, like a user would.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use omni_core::providers::twilio;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The admin token every test server runs with.
pub const ADMIN: &str = "test-admin-token-0123456789";
/// A fixed master key, so a restarted server reads what the first one wrote.
pub const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A running `omni serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Everything the process printed (stdout and stderr).
    pub logs: Arc<Mutex<String>>,
    /// The directory holding its database.
    pub dir: Arc<TempDir>,
    env: Vec<(String, String)>,
    /// A client for the server.
    pub http: reqwest::Client,
    /// Every secret this server was given: none may ever appear in its logs.
    secrets: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server on a fresh database with extra environment.
    pub async fn start(env: &[(&str, &str)]) -> Server {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(
            dir,
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            &[],
        )
        .await
    }

    /// Starts a server with extra arguments after `serve` (e.g. `--demo`).
    pub async fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Server {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(
            dir,
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args,
        )
        .await
    }

    async fn start_in(dir: Arc<TempDir>, env: Vec<(String, String)>, args: &[&str]) -> Server {
        let db = dir.path().join("omni.db");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omni"));
        cmd.arg("serve")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("OMNI_ADDR", "127.0.0.1:0")
            .env("OMNI_DB", &db)
            .env("OMNI_ADMIN_TOKEN", ADMIN)
            .env("OMNI_MASTER_KEY", MASTER_KEY)
            .env(
                "OMNI_LOG",
                "debug,hyper=info,reqwest=info,h2=info,rustls=info",
            )
            .env("OMNI_RETRY_BASE_MS", "50")
            .env("OMNI_RETRY_MAX_MS", "400")
            .env("OMNI_SIGNAL_POLL_MS", "200")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn omni");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stderr), None),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(addr)) = (&tx, line.strip_prefix("omni listening on ")) {
                        let _ = tx.send(addr.to_string());
                    }
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let base = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("omni did not start; logs:\n{}", logs.lock().unwrap()));
        let mut known = vec![ADMIN.to_string(), MASTER_KEY.to_string()];
        let secret_vars = env.iter().filter(|(k, _)| {
            ["TOKEN", "PASSWORD", "SECRET"]
                .iter()
                .any(|w| k.contains(w))
        });
        known.extend(secret_vars.map(|(_, v)| v.clone()));
        Server {
            child,
            base,
            logs,
            dir,
            env,
            http: reqwest::Client::new(),
            secrets: Arc::new(Mutex::new(known)),
        }
    }

    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("omni.db")
    }

    /// Kills the process with SIGKILL (no shutdown hooks run).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and starts a new process on the same database and environment.
    pub async fn restart(mut self) -> Server {
        self.kill9();
        let dir = self.dir.clone();
        let env = std::mem::take(&mut self.env);
        let next = Self::start_in(dir, env, &[]).await;
        next.secrets
            .lock()
            .unwrap()
            .extend(self.secrets.lock().unwrap().iter().cloned());
        next
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// `url` relative to the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// An admin request with a JSON body; returns (status, body).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN);
        if let Some(b) = body {
            // Carrier secrets given to the server are remembered for the log scan.
            for field in ["auth_token", "api_password", "webhook_secret", "api_key"] {
                if let Some(secret) = b[field].as_str() {
                    self.secrets.lock().unwrap().push(secret.to_string());
                }
            }
            req = req.json(&b);
        }
        let (status, body) = send(req).await;
        if let Some(key) = body["key"].as_str() {
            self.secrets.lock().unwrap().push(key.to_string());
        }
        (status, body)
    }

    /// A tenant API request; returns (status, body).
    pub async fn api(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    /// Creates a tenant with an API key; returns the key.
    pub async fn tenant(&self, id: &str) -> String {
        let (s, _) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/v1/admin/tenants/{id}"),
                Some(json!({"name": format!("Tenant {id}"), "default_region": "US"})),
            )
            .await;
        assert_eq!(s, 200);
        let (s, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/v1/admin/tenants/{id}/api-keys"),
                None,
            )
            .await;
        assert_eq!(s, 201, "{body}");
        body["key"].as_str().unwrap().to_string()
    }

    /// Configures Twilio for a tenant and routes `number` to it.
    pub async fn twilio_tenant(&self, id: &str, auth_token: &str, number: &str) -> String {
        let key = self.tenant(id).await;
        let (s, b) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/v1/admin/tenants/{id}/providers/twilio"),
                Some(json!({"account_sid": ACCOUNT_SID, "auth_token": auth_token})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/v1/admin/tenants/{id}/numbers/{number}"),
                Some(json!({"provider": "twilio", "channels": ["sms", "mms", "whatsapp"]})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        key
    }

    /// Posts a Twilio-signed form to `path` (signed against this server's public URL).
    pub async fn twilio_webhook(
        &self,
        path: &str,
        params: &[(&str, &str)],
        auth_token: &str,
    ) -> (u16, String) {
        let resp = signed_twilio_post(&self.http, &self.url(path), params, auth_token)
            .send()
            .await
            .expect("webhook request");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }

    /// Opens the tenant's WebSocket feed.
    pub async fn ws(&self, key: &str) -> Feed {
        let url = format!("{}/v1/ws?token={key}", self.base.replacen("http", "ws", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Feed { stream }
    }

    /// Polls `check` until it returns Some, or panics after `secs`.
    pub async fn eventually<T, F, Fut>(&self, secs: u64, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; logs:\n{}",
                    tail(&self.log_text(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    /// Stops the process and checks, for every test, that no secret reached its logs.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        let logs = self.log_text();
        for secret in self.secrets.lock().unwrap().iter().filter(|s| s.len() >= 8) {
            // The demo prints its generated API key and admin token once on stdout, by design.
            let printed_once = logs.contains(&format!("(shown once): {secret}"));
            assert!(
                printed_once || !logs.contains(secret.as_str()),
                "a secret reached the logs: {}…",
                &secret[..4]
            );
        }
    }
}

/// The Twilio account SID used by tests.
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// Sends a request; returns (status, JSON body or Null).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A dashboard's WebSocket connection.
pub struct Feed {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Feed {
    /// The next frame of `kind`, skipping others; None if none arrives within `secs`.
    pub async fn next_of(&mut self, kind: &str, secs: u64) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = tokio::time::timeout(left, self.stream.next())
                .await
                .ok()??
                .ok()?;
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                let v: Value = serde_json::from_str(&text).ok()?;
                if v["type"] == kind {
                    return Some(v);
                }
            }
        }
    }
}

/// A form POST signed exactly as Twilio signs its webhooks.
pub fn signed_twilio_post(
    http: &reqwest::Client,
    url: &str,
    params: &[(&str, &str)],
    auth_token: &str,
) -> reqwest::RequestBuilder {
    let signature = twilio::signature(url, params, auth_token);
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(serde_urlencoded::to_string(params).expect("form"))
}
