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
pub const ADMIN: &str = "test-admin-token-0123456789abcdef0123";
/// A fixed master key, so a restarted server reads what the first one wrote.
pub const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A running `omni serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`: the recording proxy in front of the server, so every
    /// response a test receives (HTTP and WebSocket) is scanned for secrets.
    pub base: String,
    /// The server's own address, without the proxy (raw-socket tests).
    pub direct: std::net::SocketAddr,
    /// Every byte the server sent to the tests, through the proxy.
    responses: Arc<Mutex<Vec<u8>>>,
    /// Dropping it stops the proxy.
    _proxy: tokio::sync::oneshot::Sender<()>,
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
        let proxy = ResponseRecorder::bind();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omni"));
        cmd.arg("serve")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("OMNI_ADDR", "127.0.0.1:0")
            // Carriers and tests reach it through the proxy, so that is the URL they sign.
            .env("OMNI_PUBLIC_URL", format!("http://{}", proxy.addr))
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
            // Tests probe wrong credentials freely from one address; the lockout has its own.
            .env("OMNI_AUTH_FAILURE_LIMIT", "0")
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
        let listening =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .unwrap_or_else(|_| panic!("omni did not start; logs:\n{}", logs.lock().unwrap()));
        let direct: std::net::SocketAddr = listening
            .trim_start_matches("http://")
            .parse()
            .expect("listening address");
        let base = format!("http://{}", proxy.addr);
        let (responses, proxy) = proxy.forward_to(direct);
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
            direct,
            responses,
            _proxy: proxy,
            logs,
            dir,
            env,
            http: reqwest::Client::new(),
            secrets: Arc::new(Mutex::new(known)),
        }
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// Every byte of every response (and WebSocket frame) the server has sent the tests.
    pub fn response_bytes(&self) -> Vec<u8> {
        self.responses.lock().unwrap().clone()
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
            for field in [
                "auth_token",
                "api_password",
                "webhook_secret",
                "api_key",
                "access_token",
                "app_secret",
                "verify_token",
                "webhook_password",
                "api_token",
                "private_key",
                "signature_secret",
                "secret_access_key",
                "access_key",
                "signing_key",
                "webhook_key",
            ] {
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
        self.carrier_tenant(
            id,
            "twilio",
            json!({"account_sid": ACCOUNT_SID, "auth_token": auth_token}),
            number,
            &["sms", "mms", "whatsapp"],
        )
        .await
    }

    /// Creates tenant `id` with `config` for `provider` and routes `address` (a number or an
    /// email address) to it on `channels`; returns the tenant's API key.
    pub async fn carrier_tenant(
        &self,
        id: &str,
        provider: &str,
        config: Value,
        address: &str,
        channels: &[&str],
    ) -> String {
        let key = self.tenant(id).await;
        let (s, b) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/v1/admin/tenants/{id}/providers/{provider}"),
                Some(config),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/v1/admin/tenants/{id}/numbers/{address}"),
                Some(json!({"provider": provider, "channels": channels})),
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

    /// Opens a LiveChat visitor's socket from a page of `origin`.
    pub async fn visitor_ws(&self, token: &str, origin: &str) -> Feed {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/livechat/v1/ws?token={token}",
            self.base.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request().expect("ws request");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("origin header"));
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("visitor ws connect");
        Feed { stream }
    }

    /// Waits for the tenant's only conversation and checks it is an unread SMS from
    /// `contact` to `number` whose last message is `body`.
    pub async fn sole_sms_conversation(&self, key: &str, contact: &str, number: &str, body: &str) {
        let list = self
            .eventually(10, "the inbound message", || async {
                let (_, l) = self
                    .api(key, reqwest::Method::GET, "/v1/conversations", None)
                    .await;
                (l["items"].as_array()?.len() == 1).then_some(l)
            })
            .await;
        let conversation = &list["items"][0];
        assert_eq!(conversation["channel"], "sms");
        assert_eq!(conversation["contact"], contact);
        assert_eq!(conversation["tenant_number"], number);
        assert_eq!(conversation["unread_count"], 1);
        assert_eq!(conversation["last_message"]["body"], body);
    }

    /// The messages of the tenant's first conversation, oldest first (none yet: empty).
    pub async fn conversation_messages(&self, key: &str) -> Vec<Value> {
        let (_, list) = self
            .api(key, reqwest::Method::GET, "/v1/conversations", None)
            .await;
        let Some(id) = list["items"][0]["id"].as_str() else {
            return Vec::new();
        };
        let (_, page) = self
            .api(
                key,
                reqwest::Method::GET,
                &format!("/v1/conversations/{id}/messages"),
                None,
            )
            .await;
        let mut items = page["items"].as_array().cloned().unwrap_or_default();
        items.reverse();
        items
    }

    /// Runs `omni webhook send <carrier>` for `tenant` (a message `body` from `from` to `to`,
    /// authenticated with `secret`) against this server; waits until the message is the
    /// last of the tenant's conversations.
    pub async fn cli_webhook_send(
        &self,
        key: &str,
        (carrier, tenant, secret): (&str, &str, &str),
        (from, to, body): (&str, &str, &str),
    ) {
        let out = Command::new(env!("CARGO_BIN_EXE_omni"))
            .args(["webhook", "send", carrier, "--tenant", tenant])
            .args(["--from", from, "--to", to, "--body", body])
            .args(["--url", &self.base, "--secret", secret])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("200 ok"));
        self.eventually(10, &format!("the CLI's {carrier} message"), || async {
            let (_, l) = self
                .api(key, reqwest::Method::GET, "/v1/conversations", None)
                .await;
            (l["items"][0]["last_message"]["body"] == body).then_some(())
        })
        .await;
    }

    /// Sends an SMS to `to` through the API (202 expected); the message id.
    pub async fn send_sms(&self, key: &str, to: &str, body: &str) -> String {
        let (st, m) = self
            .api(
                key,
                reqwest::Method::POST,
                "/v1/messages",
                Some(json!({"channel": "sms", "to": to, "body": body})),
            )
            .await;
        assert_eq!(st, 202, "{m}");
        m["id"].as_str().unwrap().to_string()
    }

    /// Polls message `id` until its status is `status`; the message then.
    pub async fn message_reaching(&self, key: &str, id: &str, status: &str) -> Value {
        self.eventually(10, &format!("message {id} to be {status}"), || async {
            let (_, m) = self
                .api(
                    key,
                    reqwest::Method::GET,
                    &format!("/v1/messages/{id}"),
                    None,
                )
                .await;
            (m["status"] == status).then_some(m)
        })
        .await
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
    /// Stops the process and checks, for every test, that no secret reached its logs, nor
    /// any response or WebSocket frame the test received.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        let logs = self.log_text();
        let secrets = self.secrets.lock().unwrap().clone();
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            // The demo prints its generated API key and admin token once on stdout, by design.
            let printed_once = logs.contains(&format!("(shown once): {secret}"));
            assert!(
                printed_once || !logs.contains(secret.as_str()),
                "a secret reached the logs: {}…",
                &secret[..4]
            );
        }
        let leaks = leaked_secrets(&self.responses.lock().unwrap(), &secrets);
        assert!(
            leaks.is_empty(),
            "secrets reached API responses: {:?}",
            leaks
                .iter()
                .map(|s| format!("{}…", &s[..4]))
                .collect::<Vec<_>>()
        );
    }
}

/// The secrets (8+ characters) found in `responses`. A new API key appears exactly once, in
/// the body that creates it (`"key":"omk_…"`), by design; any other occurrence is a leak.
pub fn leaked_secrets(responses: &[u8], secrets: &[String]) -> Vec<String> {
    let mut leaks = Vec::new();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        let shown_once = format!("\"key\":\"{secret}\"");
        let allowed = count(responses, shown_once.as_bytes());
        if count(responses, secret.as_bytes()) > allowed.min(1) {
            leaks.push(secret.clone());
        }
    }
    leaks
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// A TCP proxy in front of the server that keeps every byte the server sends back. It runs
/// on a thread and runtime of its own, so a test that blocks its own runtime (running the
/// CLI, say) does not stall it.
struct ResponseRecorder {
    listener: std::net::TcpListener,
    addr: std::net::SocketAddr,
}

impl ResponseRecorder {
    fn bind() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking proxy");
        let addr = listener.local_addr().expect("proxy address");
        ResponseRecorder { listener, addr }
    }

    /// Forwards every connection to `upstream` until the returned sender is dropped;
    /// returns the recording.
    fn forward_to(
        self,
        upstream: std::net::SocketAddr,
    ) -> (Arc<Mutex<Vec<u8>>>, tokio::sync::oneshot::Sender<()>) {
        let recording = Arc::new(Mutex::new(Vec::new()));
        let record = recording.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(self.listener).expect("proxy");
                tokio::pin!(stop_rx);
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((client, _)) => {
                                tokio::spawn(relay(client, upstream, record.clone()));
                            }
                            Err(_) => break,
                        },
                        _ = &mut stop_rx => break,
                    }
                }
            });
            runtime.shutdown_background();
        });
        (recording, stop_tx)
    }
}

/// Copies one connection both ways, recording what the server sends.
async fn relay(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    record: Arc<Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
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
    /// Sends a JSON frame as the dashboard (presence).
    pub async fn say(&mut self, frame: Value) {
        use futures::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(
                frame.to_string().into(),
            ))
            .await
            .expect("ws send");
    }

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

#[cfg(test)]
mod scanner_tests {
    use super::leaked_secrets;

    fn secrets() -> Vec<String> {
        vec![
            "twilio-auth-token-0001".to_string(),
            "omk_0123456789abcdef".to_string(),
            "short".to_string(),
        ]
    }

    #[test]
    fn a_secret_in_a_response_body_or_header_is_caught() {
        let body = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"auth_token\":\"twilio-auth-token-0001\"}";
        assert_eq!(leaked_secrets(body, &secrets()), ["twilio-auth-token-0001"]);
        let header = b"HTTP/1.1 401 Unauthorized\r\nx-debug: twilio-auth-token-0001\r\n\r\n";
        assert_eq!(
            leaked_secrets(header, &secrets()),
            ["twilio-auth-token-0001"]
        );
        // A WebSocket text frame (server frames are unmasked).
        let mut frame = vec![0x81, 30];
        frame.extend_from_slice(b"{\"k\":\"twilio-auth-token-0001\"}");
        assert_eq!(
            leaked_secrets(&frame, &secrets()),
            ["twilio-auth-token-0001"]
        );
    }

    #[test]
    fn a_new_api_key_may_be_shown_once_in_its_creation_body_only() {
        let created =
            b"HTTP/1.1 201 Created\r\n\r\n{\"id\":\"k1\",\"key\":\"omk_0123456789abcdef\"}";
        assert!(leaked_secrets(created, &secrets()).is_empty());
        let twice = [&created[..], &created[..]].concat();
        assert_eq!(leaked_secrets(&twice, &secrets()), ["omk_0123456789abcdef"]);
        let elsewhere = [&created[..], b"{\"token\":\"omk_0123456789abcdef\"}"].concat();
        assert_eq!(
            leaked_secrets(&elsewhere, &secrets()),
            ["omk_0123456789abcdef"]
        );
    }

    #[test]
    fn clean_responses_and_short_values_pass() {
        let body = b"HTTP/1.1 200 OK\r\n\r\n{\"auth_token\":\"***\",\"note\":\"short\"}";
        assert!(leaked_secrets(body, &secrets()).is_empty());
    }
}
