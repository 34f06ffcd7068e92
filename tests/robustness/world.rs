//! One Omni in process: the full router over an in-memory SQLite backend, with the queue
//! drained by hand (the updater and, when asked, the delivery worker) instead of by workers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use omni_api::{AppState, WsHub};
use omni_core::domain::ProviderKind;
use omni_core::ports::Job;
use omni_core::providers::{http_client, ProviderEndpoints, ProviderRegistry, Secret, CARRIERS};
use omni_core::service::{JobError, SendRateLimit, ServiceSettings, Services};
use omni_local::{MasterKey, SqliteBackend};
use serde_json::Value;
use tower::ServiceExt;

/// The base URL carriers sign against.
pub const PUBLIC_URL: &str = "https://omni.example";
/// The admin token of every world.
pub const ADMIN: &str = "robustness-admin-token-0001";

/// A server's worth of Omni, without the sockets and the workers.
pub struct World {
    pub backend: Arc<SqliteBackend>,
    pub services: Services,
    pub app: Router,
}

/// A response: status, headers, body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (Null when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl World {
    /// A fresh world; carriers' APIs at `carrier_url` (a fake, or a closed port).
    pub fn new(carrier_url: &str) -> World {
        let backend = Arc::new(SqliteBackend::open_in_memory(MasterKey::generate()).unwrap());
        let hub = Arc::new(WsHub::default());
        // Every carrier at the fake; those whose paths would collide under their own
        // prefix.
        let mut endpoints = CARRIERS.iter().fold(ProviderEndpoints::default(), |e, c| {
            let url = match c.kind {
                ProviderKind::Voipms => format!("{carrier_url}/voipms"),
                ProviderKind::Whatsapp => format!("{carrier_url}/graph"),
                ProviderKind::Voicemeup => format!("{carrier_url}/voicemeup"),
                _ => carrier_url.to_string(),
            };
            e.with(c.kind, url)
        });
        endpoints.sns_cert_url_prefix = carrier_url.into();
        let services = Services {
            tenants: backend.clone(),
            team: backend.clone(),
            secrets: backend.clone(),
            waba: backend.clone(),
            webhooks: backend.clone(),
            templates: backend.clone(),
            messages: backend.clone(),
            queue: backend.clone(),
            push: hub.clone(),
            providers: ProviderRegistry::new(
                http_client(Duration::from_secs(2)),
                &endpoints,
                false,
            ),
            platform: Default::default(),
            settings: ServiceSettings {
                public_url: PUBLIC_URL.into(),
                send_rate: SendRateLimit {
                    per_second: 0.0,
                    burst: 1,
                },
                ..Default::default()
            },
            breakers: Default::default(),
            media_store: None,
            uploads: None,
            auth_throttle: Default::default(),
            api_key_usage: Default::default(),
            auto_reply_cache: Default::default(),
        };
        let app = omni_api::full_app(
            AppState::new(services.clone(), Secret::new(ADMIN), Default::default()),
            hub,
        );
        World {
            backend,
            services,
            app,
        }
    }

    /// Sends one request through the router.
    pub async fn call(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn json_call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let reply = self.call(request).await;
        (reply.status.as_u16(), reply.json())
    }

    /// An admin call.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, body) = self.json_call(ADMIN, method, path, body).await;
        assert!(status < 300, "{path}: {status} {body}");
        (status, body)
    }

    /// A tenant API call.
    pub async fn api(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.json_call(key, method, path, body).await
    }

    /// Creates a tenant; returns its API key.
    pub async fn tenant(&self, id: &str) -> String {
        self.admin(
            Method::PUT,
            &format!("/v1/admin/tenants/{id}"),
            Some(serde_json::json!({"name": id, "default_region": "US"})),
        )
        .await;
        let (_, key) = self
            .admin(
                Method::POST,
                &format!("/v1/admin/tenants/{id}/api-keys"),
                None,
            )
            .await;
        key["key"].as_str().unwrap().to_string()
    }

    /// Configures `provider` for tenant `id` and routes `number` to it on `channels`.
    pub async fn provider(
        &self,
        id: &str,
        provider: &str,
        config: Value,
        number: &str,
        channels: &[&str],
    ) {
        self.admin(
            Method::PUT,
            &format!("/v1/admin/tenants/{id}/providers/{provider}"),
            Some(config),
        )
        .await;
        self.admin(
            Method::PUT,
            &format!("/v1/admin/tenants/{id}/numbers/{number}"),
            Some(serde_json::json!({"provider": provider, "channels": channels})),
        )
        .await;
    }

    /// Runs queued jobs until none is left: inbound events through the conversation updater
    /// always, deliveries through the carriers only when `deliver` (else they are dropped).
    /// A job asking to be retried is retried at once, at most `MAX_ATTEMPTS` times. Returns
    /// how many jobs ran.
    pub async fn drain(&self, deliver: bool) -> usize {
        const MAX_ATTEMPTS: u32 = 8;
        let mut ran = 0;
        loop {
            let jobs = self
                .backend
                .lease_jobs(64, Duration::from_secs(60))
                .await
                .unwrap();
            if jobs.is_empty() {
                return ran;
            }
            for leased in jobs {
                ran += 1;
                if matches!(leased.job, Job::Deliver { .. }) && !deliver {
                    self.backend.ack_job(leased.id).await.unwrap();
                    continue;
                }
                match self.services.handle_job(&leased.job).await {
                    Ok(()) => self.backend.ack_job(leased.id).await.unwrap(),
                    Err(JobError::Retry(..)) if leased.attempts < MAX_ATTEMPTS => self
                        .backend
                        .retry_job(leased.id, Duration::ZERO)
                        .await
                        .unwrap(),
                    Err(e) => self
                        .backend
                        .dead_letter_job(leased.id, &e.to_string())
                        .await
                        .unwrap(),
                };
            }
        }
    }
}
