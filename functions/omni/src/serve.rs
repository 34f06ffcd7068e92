//! `omni serve`: every router, worker and loop of the platform in one process.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use omni_api::{AppState, ClientAddr, WsHub};
use omni_core::providers::{http_client, ProviderRegistry, Secret};
use omni_core::service::Services;
use omni_local::{DirUploads, MasterKey, SqliteBackend};
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::ServeConfig;
use crate::{demo, runner};
use omni_api::config::platform_credentials;

/// Installs the log subscriber: human-readable by default, JSON for log shippers.
pub fn init_tracing(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("OMNI_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(config: ServeConfig) -> Result<(), String> {
    init_tracing(&config.log_format);
    config.validate().map_err(|e| e.to_string())?;
    let key = MasterKey::from_env_or_file(&config.db).map_err(|e| format!("master key: {e}"))?;
    let backend = Arc::new(
        SqliteBackend::open(&config.db, key)
            .map_err(|e| format!("database {}: {e}", config.db.display()))?,
    );
    let (jobs, claims) = backend
        .recover_after_restart()
        .await
        .map_err(|e| format!("database recovery: {e}"))?;
    if jobs + claims > 0 {
        info!(jobs, claims, "resumed work left by the previous process");
    }
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;

    let mut ws_limits = config.service.ws_limits();
    let files = raise_open_file_limit();
    // Each dashboard holds a descriptor; half the process's stay free for carriers'
    // webhooks, the database and carrier calls, however many dashboards connect.
    if let Some(files) = files {
        let room = usize::try_from(files / 2).unwrap_or(usize::MAX);
        if ws_limits.total > room {
            warn!(
                configured = ws_limits.total,
                allowed = room,
                "OMNI_WS_MAX_CONNECTIONS lowered to half the open-file limit"
            );
            ws_limits.total = room;
        }
    }
    let hub = Arc::new(WsHub::new(ws_limits));
    let http = http_client(Duration::from_millis(config.service.carrier_timeout_ms));
    let mut settings = config.settings();
    if config.public_url.is_none() {
        // With port 0 the real port is only known now.
        settings.public_url = format!("http://{local}");
    }
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
        providers: ProviderRegistry::new(http.clone(), &config.service.endpoints(), config.demo),
        platform: platform_credentials()?,
        settings,
        breakers: Default::default(),
        media_store: None,
        uploads: Some(Arc::new(
            DirUploads::open(&config.media_dir()).map_err(|e| format!("media directory: {e}"))?,
        )),
        auth_throttle: Default::default(),
        api_key_usage: Default::default(),
        auto_reply_cache: Default::default(),
    };

    let admin_token = match &config.admin_token {
        Some(token) => Secret::new(token.clone()),
        None => {
            let token = format!("oat_{}", hex_token());
            println!("admin token (shown once): {token}");
            Secret::new(token)
        }
    };
    if config.demo {
        demo::seed(
            &services,
            &services.settings.public_url,
            &config.db,
            // A token the operator supplied is never printed back.
            if config.admin_token.is_some() {
                "$OMNI_ADMIN_TOKEN"
            } else {
                admin_token.expose()
            },
        )
        .await?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = runner::spawn_all(backend.clone(), services.clone(), http, stop_rx, &config);
    let app = omni_api::serve_app(
        AppState::new(services, admin_token, config.service.cors_origins.clone()),
        hub,
        config.http_limits(),
    );
    println!("omni listening on http://{local}");
    info!(addr = %local, demo = config.demo, "omni serve started");
    serve_http(listener, app, &config).await;
    let _ = stop_tx.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    info!("omni serve stopped");
    Ok(())
}

/// Serves HTTP/1.1 (with upgrades, for the WebSocket) until SIGINT/SIGTERM, then lets open
/// requests finish for up to ten seconds. A client gets `OMNI_HEADER_READ_TIMEOUT_MS` to send
/// each request head, or the connection is closed (slowloris); a head larger than the read
/// buffer (room for the URL and header caps plus slack) is refused by hyper with a bare 431.
async fn serve_http(listener: TcpListener, app: axum::Router, config: &ServeConfig) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout())
        .max_buf_size(config.http_limits().head_buffer_bytes());
    // Shutdown: a signal to every connection, and a channel whose senders they hold, so its
    // receiver ends when the last one has finished.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer's address is what failed authentications are counted against.
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer.ip()));
                    request
                })
                .service(app.clone()),
        );
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (mut stop, open) = (stop_rx.clone(), open_tx.clone());
        tokio::spawn(async move {
            let _open = open;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.changed() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_tx);
    if tokio::time::timeout(Duration::from_secs(10), open_rx.recv())
        .await
        .is_err()
    {
        warn!("connections still open after 10 s; stopping anyway");
    }
}

/// Raises the soft limit on open files to the hard limit (the usual soft limit, 1,024, is
/// far below what a server with dashboards and carriers needs); the limit now in force.
#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => {
                info!(open_files = ?limit.current, "open-file limit raised to the hard limit")
            }
            Err(e) => warn!(error = %e, "could not raise the open-file limit"),
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}

fn hex_token() -> String {
    let bytes: [u8; 24] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use omni_core::service::Services;
    use tower::ServiceExt;

    use super::*;

    fn app_state(backend: Arc<SqliteBackend>, hub: Arc<WsHub>) -> AppState {
        let services = Services {
            tenants: backend.clone(),
            team: backend.clone(),
            secrets: backend.clone(),
            waba: backend.clone(),
            webhooks: backend.clone(),
            templates: backend.clone(),
            messages: backend.clone(),
            queue: backend,
            push: hub,
            providers: ProviderRegistry::new(
                http_client(Duration::from_secs(1)),
                &Default::default(),
                false,
            ),
            platform: Default::default(),
            settings: Default::default(),
            breakers: Default::default(),
            media_store: None,
            uploads: None,
            auth_throttle: Default::default(),
            api_key_usage: Default::default(),
            auto_reply_cache: Default::default(),
        };
        AppState::new(services, Secret::new("t"), Default::default())
    }

    /// The usual soft limit of 1,024 open files let 1,001 WebSockets starve every webhook;
    /// start-up raises the soft limit to the hard one.
    #[cfg(unix)]
    #[test]
    fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut limit = getrlimit(Resource::Nofile);
        let hard = limit.maximum;
        limit.current = Some(hard.map_or(256, |h| h.min(256)));
        setrlimit(Resource::Nofile, limit).unwrap();
        assert_eq!(raise_open_file_limit(), hard);
        assert_eq!(getrlimit(Resource::Nofile).current, hard);
    }

    /// Every route the server mounts is in the OpenAPI document, and every operation of the
    /// document is mounted (answers with something other than the router's own 404/405).
    #[tokio::test]
    async fn mounted_routes_and_the_openapi_document_agree() {
        let backend = Arc::new(SqliteBackend::open_in_memory(MasterKey::generate()).unwrap());
        let hub = Arc::new(WsHub::default());
        let state = app_state(backend, hub.clone());
        let table = omni_api::all_routes(state.clone(), hub.clone());
        let mounted: BTreeSet<(String, String)> = table
            .table()
            .iter()
            .map(|(m, p)| (m.as_str().to_lowercase(), p.to_string()))
            .collect();

        let doc: serde_json::Value = serde_json::from_str(omni_api::openapi::document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(mounted, documented, "routes and openapi.json differ");

        let app = omni_api::full_app(state, hub);
        for (method, path) in &documented {
            let concrete = path
                .replace("{tenant_id}", "north")
                .replace("{provider}", "twilio")
                .replace("{number}", "+15555550100")
                .replace("{id}", "0190a0a0-0000-7000-8000-000000000000");
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            if response.status() == StatusCode::NOT_FOUND {
                let body = axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .unwrap();
                assert!(
                    !String::from_utf8_lossy(&body).contains("route not found"),
                    "{method} {path} is not mounted"
                );
            }
        }
    }

    /// A README route row: method, path, what it needs.
    type RouteRow = (String, String, String);
    /// A README permission row: the permission, and whether each role holds it.
    type PermissionRow = (String, Vec<bool>);

    /// The README's roles tables.
    fn readme_access() -> (Vec<RouteRow>, Vec<PermissionRow>) {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("#### Roles and permissions")
            .nth(1)
            .expect("the README has a roles table");
        let (mut routes, mut permissions) = (Vec::new(), Vec::new());
        for line in section.lines().take_while(|l| !l.starts_with("###")) {
            let cells: Vec<&str> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            match cells.as_slice() {
                [method, path, needs] if path.starts_with('/') => {
                    routes.push((method.to_string(), path.to_string(), needs.to_string()))
                }
                [permission, roles @ ..] if roles.len() == 4 && permission.contains('.') => {
                    permissions.push((
                        permission.to_string(),
                        roles.iter().map(|r| r.starts_with("yes")).collect(),
                    ))
                }
                _ => {}
            }
        }
        (routes, permissions)
    }

    /// The README's table is the server's table, and every route answers every role as the
    /// table says: `403 forbidden` naming the permission exactly when the role lacks it.
    #[tokio::test]
    async fn every_route_answers_every_role_as_the_readme_table_says() {
        use omni_api::access::{access, Access, TABLE};
        use omni_core::team::{Role, PERMISSIONS, ROLES};

        let (readme_routes, readme_permissions) = readme_access();
        let table: Vec<_> = TABLE
            .iter()
            .map(|(m, p, a)| (m.to_string(), p.to_string(), a.name()))
            .collect();
        assert_eq!(readme_routes, table, "README and access.rs differ");
        assert_eq!(
            readme_permissions.len(),
            PERMISSIONS.len(),
            "README permissions"
        );
        for (permission, columns) in &readme_permissions {
            let p = PERMISSIONS
                .into_iter()
                .find(|p| p.as_str() == permission)
                .unwrap_or_else(|| panic!("{permission} is no permission"));
            let held: Vec<bool> = ROLES.iter().map(|r| r.allows(p)).collect();
            assert_eq!(&held, columns, "{permission}");
        }

        let backend = Arc::new(SqliteBackend::open_in_memory(MasterKey::generate()).unwrap());
        let hub = Arc::new(WsHub::default());
        let state = app_state(backend, hub.clone());
        let services = state.services.clone();
        let tenant = omni_core::domain::TenantId::parse("north").unwrap();
        let now = chrono::Utc::now();
        services
            .tenants
            .put_tenant(&omni_core::model::Tenant {
                id: tenant.clone(),
                name: "North".into(),
                default_region: Default::default(),
                help_text: None,
                created_at: now,
                updated_at: now,
                fallback: Default::default(),
            })
            .await
            .unwrap();
        let by = omni_core::team::Actor::platform();
        let mut tokens = Vec::new();
        for role in ROLES {
            let token = if role == Role::Sender {
                services
                    .issue_api_key(&tenant, None, role)
                    .await
                    .unwrap()
                    .key
            } else {
                let email = format!("{role}@north.example");
                let (_, invite) = services
                    .invite_user(&tenant, &email, role.as_str(), role, &by)
                    .await
                    .unwrap();
                let password = "correct horse battery staple";
                services.accept_invite(&invite, password).await.unwrap();
                services
                    .login("north", &email, password, None)
                    .await
                    .unwrap()
                    .token
            };
            tokens.push((role, token));
        }

        let app = omni_api::full_app(state.clone(), hub.clone());
        let mut routes: Vec<_> = omni_api::all_routes(state, hub)
            .table()
            .iter()
            .map(|(m, p)| (m.clone(), *p))
            .collect();
        // Signing out ends the session the other routes use: last.
        routes.sort_by_key(|(_, p)| *p == "/v1/auth/logout");
        for (method, path) in routes {
            let uri = path
                .replace("{tenant_id}", "north")
                .replace("{provider}", "twilio")
                .replace("{number}", "+15555550100")
                .replace("{index}", "0")
                .replace("{id}", "0190a0a0-0000-7000-8000-000000000000");
            let needs = access(&method, path);
            for (role, token) in &tokens {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(&uri)
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let body = String::from_utf8_lossy(&body);
                let refused_for = match needs {
                    Access::Public | Access::Signed => None,
                    Access::Platform => Some("platform admin token".to_owned()),
                    Access::Tenant(p) | Access::PlatformOr(p) => {
                        (!role.allows(p)).then(|| p.as_str().to_owned())
                    }
                };
                match refused_for {
                    Some(permission) => {
                        assert_eq!(
                            status,
                            StatusCode::FORBIDDEN,
                            "{role} {method} {path}: {body}"
                        );
                        assert!(
                            body.contains("\"forbidden\"") && body.contains(&permission),
                            "{role} {method} {path}: {body}"
                        );
                    }
                    // A public route may refuse for its own reasons (a carrier's verify
                    // token), never for a role.
                    None if needs == Access::Public => {
                        assert!(
                            !body.contains("permission"),
                            "{role} {method} {path}: {body}"
                        )
                    }
                    None => {
                        for refused in [
                            StatusCode::FORBIDDEN,
                            StatusCode::UNAUTHORIZED,
                            StatusCode::INTERNAL_SERVER_ERROR,
                        ] {
                            assert_ne!(status, refused, "{role} {method} {path}: {body}");
                        }
                    }
                }
            }
        }
    }

    /// Each function area's router serves its own routes and answers 404 for the others',
    /// as each Lambda function will.
    #[tokio::test]
    async fn each_area_router_serves_only_its_routes() {
        let backend = Arc::new(SqliteBackend::open_in_memory(MasterKey::generate()).unwrap());
        let state = app_state(backend, Arc::new(WsHub::default()));
        let areas: [(&str, axum::Router, &str); 4] = [
            (
                "webhooks",
                omni_api::webhooks::app(state.clone()),
                "/webhooks/twilio",
            ),
            (
                "send",
                omni_api::dispatch::send_app(state.clone()),
                "/v1/messages",
            ),
            (
                "conversations",
                omni_api::dispatch::conversations_app(state.clone()),
                "/v1/conversations",
            ),
            (
                "admin",
                omni_api::admin::app(state.clone()),
                "/v1/admin/tenants/north",
            ),
        ];
        let probes = [
            ("POST", "/webhooks/twilio"),
            ("POST", "/v1/messages"),
            ("GET", "/v1/conversations"),
            ("PUT", "/v1/admin/tenants/north"),
        ];
        for (name, app, own) in areas {
            for (method, path) in probes {
                let request = Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                let body = axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .unwrap();
                // A path another area serves with another method (GET /v1/messages, the
                // delivery log) answers 405: not served here either.
                let body = String::from_utf8_lossy(&body);
                let unmounted =
                    body.contains("route not found") || body.contains("method not allowed");
                assert_eq!(unmounted, path != own, "{name}: {method} {path}");
            }
        }
    }

    /// An event webhook endpoint whose every attempt has failed for 5 days is disabled at its
    /// next failure, with an audit entry; one failing for less is not, and records since when.
    #[tokio::test]
    async fn an_event_webhook_failing_for_five_days_is_disabled_and_audited() {
        use omni_core::domain::TenantId;
        use omni_core::model::AuditQuery;
        use omni_core::webhook::{DeliveryState, EventType, WebhookDelivery, WebhookEndpoint};

        let backend = Arc::new(SqliteBackend::open_in_memory(MasterKey::generate()).unwrap());
        let services = app_state(backend, Arc::new(WsHub::default()))
            .services
            .clone();
        let tenant = TenantId::parse("north").unwrap();
        let now = chrono::Utc::now();
        let endpoint = |failing_since| WebhookEndpoint {
            id: uuid::Uuid::now_v7(),
            // Refused at send time (loopback without the test switch): every attempt fails.
            url: "https://127.0.0.1/omni".into(),
            events: vec![EventType::MessageReceived],
            description: None,
            enabled: true,
            failing_since,
            created_at: now,
            updated_at: now,
        };
        let old = endpoint(Some(
            now - chrono::TimeDelta::days(5) - chrono::TimeDelta::minutes(1),
        ));
        let recent = endpoint(None);
        for e in [&old, &recent] {
            services
                .webhooks
                .create_webhook(&tenant, e, &omni_core::webhook::generate_secret())
                .await
                .unwrap();
            let delivery =
                WebhookDelivery::new(&tenant, e.id, "message.received", "{}".into(), now);
            services.webhooks.add_deliveries(&[delivery]).await.unwrap();
        }
        assert_eq!(services.dispatch_webhooks().await.unwrap(), 2);

        let (disabled, _) = services
            .webhooks
            .get_webhook(&tenant, old.id)
            .await
            .unwrap()
            .unwrap();
        assert!(!disabled.enabled);
        let (failing, _) = services
            .webhooks
            .get_webhook(&tenant, recent.id)
            .await
            .unwrap()
            .unwrap();
        assert!(failing.enabled);
        assert!(failing.failing_since.is_some_and(|t| t >= now));
        let page = services
            .webhooks
            .list_deliveries(&tenant, recent.id, 10, None)
            .await
            .unwrap();
        let attempt = &page.items[0].attempts[0];
        assert_eq!(page.items[0].status, DeliveryState::Pending);
        assert_eq!(attempt.status_code, None);
        assert!(
            attempt.error.as_deref().unwrap().contains("loopback"),
            "{attempt:?}"
        );
        let audit = services
            .messages
            .list_audit(
                &tenant,
                &AuditQuery {
                    action: Some("webhook.disable".into()),
                    ..Default::default()
                },
                10,
                None,
            )
            .await
            .unwrap();
        assert_eq!(audit.items.len(), 1);
        assert_eq!(audit.items[0].target, Some(format!("webhook:{}", old.id)));
    }

    /// A routed WhatsApp webhook that also names an account of this environment: the routed
    /// account is queued for forwarding, the other handled here as before. A forward that
    /// keeps failing is queued again with its attempt counted, and once 24 hours have passed
    /// since it arrived, dead-lettered and counted failed.
    #[tokio::test]
    async fn routed_accounts_are_forwarded_others_handled_here_and_failures_dead_lettered() {
        use base64::Engine;
        use omni_core::domain::{Address, Channel, ProviderKind, Region, TenantId};
        use omni_core::model::{NumberRoute, Tenant};
        use omni_core::ports::Job;
        use omni_core::providers::{whatsapp, Credentials, WebhookRequest, WhatsappCredentials};
        use omni_core::waba::{WabaId, WabaRoute};

        const SECRET: &str = "one-meta-app-secret-0001";
        let backend = Arc::new(SqliteBackend::open_in_memory(MasterKey::generate()).unwrap());
        let mut services = app_state(backend.clone(), Arc::new(WsHub::default()))
            .services
            .clone();
        services.settings.retry.base = Duration::ZERO;
        let tenant = TenantId::parse("north").unwrap();
        let now = chrono::Utc::now();
        services
            .tenants
            .put_tenant(&Tenant {
                id: tenant.clone(),
                name: "North".into(),
                default_region: Region::default(),
                help_text: None,
                created_at: now,
                updated_at: now,
                fallback: Default::default(),
            })
            .await
            .unwrap();
        let credentials = Credentials::Whatsapp(WhatsappCredentials {
            phone_number_id: "300".into(),
            access_token: Secret::new("wa-access-token-0001"),
            app_secret: Secret::new(SECRET),
            verify_token: Secret::new("verify-token-0001"),
            waba_id: None,
        });
        services
            .secrets
            .put_credentials(&tenant, &credentials)
            .await
            .unwrap();
        services
            .tenants
            .put_number(&NumberRoute {
                number: Address::parse("+15555550111", Region::default()).unwrap(),
                tenant_id: tenant.clone(),
                provider: ProviderKind::Whatsapp,
                channels: vec![Channel::Whatsapp],
                updated_at: now,
                max_per_second: None,
            })
            .await
            .unwrap();
        let staging = WabaId::parse("100").unwrap();
        // Refused at send time (loopback without the test switch): every attempt fails.
        let route = WabaRoute::new(staging.clone(), "https://127.0.0.1/hook".into(), None, now);
        services
            .waba
            .put_waba_route(&route, &Secret::new(SECRET))
            .await
            .unwrap();

        let entry = |waba: &str, phone_id: &str, display: &str, wamid: &str| {
            serde_json::json!({"id": waba, "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": display, "phone_number_id": phone_id},
                "messages": [{"from": "15555550123", "id": wamid, "timestamp": "1700000000",
                    "type": "text", "text": {"body": "hi"}}]}}]})
        };
        // The routed account first: the local check must read the local entry.
        let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [
            entry("100", "200", "15555550100", "wamid.STAGING"),
            entry("999", "300", "15555550111", "wamid.LOCAL")]})
        .to_string()
        .into_bytes();
        let request = |signature: String| WebhookRequest {
            method: "POST".into(),
            url: "http://127.0.0.1:8080/webhooks/whatsapp".into(),
            headers: vec![("x-hub-signature-256".into(), signature)],
            body: body.clone(),
        };
        let forged = request(whatsapp::signature(&body, "another-app-secret-01"));
        assert!(services
            .handle_webhook(ProviderKind::Whatsapp, &forged, None)
            .await
            .is_err());
        assert!(backend
            .lease_jobs(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty());

        let signed = request(whatsapp::signature(&body, SECRET));
        services
            .handle_webhook(ProviderKind::Whatsapp, &signed, None)
            .await
            .unwrap();
        let jobs = backend
            .lease_jobs(10, Duration::from_secs(60))
            .await
            .unwrap();
        let forward = jobs
            .iter()
            .find_map(|j| match &j.job {
                f @ Job::Forward {
                    body: b, waba_id, ..
                } => {
                    let raw = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                    assert_eq!(raw, body, "the exact bytes are forwarded");
                    assert_eq!(waba_id, &staging);
                    Some(f.clone())
                }
                _ => None,
            })
            .expect("a forward job");
        let local: Vec<&str> = jobs
            .iter()
            .filter_map(|j| match &j.job {
                Job::Inbound {
                    event: omni_core::domain::WebhookEvent::Message(m),
                    ..
                } => Some(m.provider_message_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            local,
            ["wamid.LOCAL"],
            "only this environment's entry is handled here"
        );
        let counted = services.waba.list_waba_routes().await.unwrap();
        assert_eq!(counted[0].pending, 1);

        // A failed attempt within the day: queued again, one attempt more, nothing counted.
        services.handle_job(&forward).await.unwrap();
        let again = backend
            .lease_jobs(10, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            matches!(&again[..], [j] if matches!(j.job, Job::Forward { attempts: 1, .. })),
            "{again:?}"
        );
        assert!(backend.dead_letters().await.unwrap().is_empty());

        // The same after 24 hours: dead-lettered, counted failed.
        let mut late = forward.clone();
        if let Job::Forward { received_at, .. } = &mut late {
            *received_at = chrono::Utc::now() - chrono::TimeDelta::hours(25);
        }
        services.handle_job(&late).await.unwrap();
        let dead = backend.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].1.contains("24 h"), "{}", dead[0].1);
        assert!(backend
            .lease_jobs(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty());
        let route = &services.waba.list_waba_routes().await.unwrap()[0];
        assert_eq!((route.pending, route.failed, route.forwarded), (0, 1, 0));
    }
}
