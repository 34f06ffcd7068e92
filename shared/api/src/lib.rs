//! Omni's HTTP surface as axum routers, one per function area (`fn app(state) -> Router`).
//!
//! The same routers run under `lambda_http` on AWS (one area per function) and are merged
//! by `omni serve` into one server. Errors become the contract's JSON shape in one place
//! ([`error`]).

pub mod access;
pub mod admin;
pub mod config;
pub mod console;
pub mod cors;
pub mod delivery_log;
pub mod dispatch;
pub mod error;
pub mod event_webhooks;
pub mod limits;
pub mod livechat;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod team;
pub mod templates;
pub mod waba;
pub mod webhooks;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use omni_core::providers::Secret;
use omni_core::service::Services;

pub use error::ApiError;
pub use ws::WsHub;

/// What every handler shares, behind one `Arc`: axum clones the state for every extractor of
/// every request, and a clone is then one atomic increment rather than a copy of the
/// services' ports, settings and strings.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

/// The contents of [`AppState`].
pub struct SharedState {
    /// The flows.
    pub services: Services,
    /// Bearer token for `/v1/admin/*`.
    pub admin_token: Secret,
    /// Browser origins allowed to call the API (`OMNI_CORS_ORIGINS`).
    pub cors: cors::CorsOrigins,
}

impl AppState {
    /// The state of the routers serving `services`.
    pub fn new(services: Services, admin_token: Secret, cors: cors::CorsOrigins) -> Self {
        AppState(Arc::new(SharedState {
            services,
            admin_token,
            cors,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The address of the client that made a request, as the server saw it (the socket's peer on
/// `omni serve`, API Gateway's `sourceIp` on Lambda): what repeated authentication failures
/// are counted against. A request extension; absent, nothing is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

impl ClientAddr {
    /// The client address of a request, when the server recorded one.
    pub fn of(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
        extensions.get::<ClientAddr>().map(|c| c.0)
    }
}

/// Fewest characters of the admin token (`omni serve` and the admin function refuse to start
/// with less): it opens every tenant.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Largest request body accepted (larger: 413).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every HTTP route of the contract in one router (the local server's shape), with the
/// WebSocket endpoint served by `hub`.
pub fn full_app(state: AppState, hub: Arc<WsHub>) -> Router {
    let cors = state.cors.clone();
    routes::finish(all_routes(state, hub).into_router(), &cors)
}

/// [`full_app`] with the limits of a server clients reach directly (`omni serve`): body read
/// deadline, URL and header size caps.
pub fn serve_app(state: AppState, hub: Arc<WsHub>, limits: limits::HttpLimits) -> Router {
    let cors = state.cors.clone();
    routes::finish_with(all_routes(state, hub).into_router(), Some(limits), &cors)
}

/// The route table behind [`full_app`], for tests that compare it with the OpenAPI document.
pub fn all_routes(state: AppState, hub: Arc<WsHub>) -> routes::Routes {
    routes::Routes::default()
        .merge(webhooks::routes(state.clone()))
        .merge(dispatch::routes(state.clone()))
        .merge(admin::routes(state.clone()))
        .merge(team::routes(state.clone()))
        .merge(templates::routes(state.clone()))
        .merge(livechat::routes(state.clone()))
        .merge(ws::routes(state, hub))
        .merge(routes::meta_routes())
        .merge(console::routes())
}
