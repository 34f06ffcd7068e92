//! A route table that remembers what it mounts, so tests can hold the server and the
//! OpenAPI document to each other, plus the middleware every router gets.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};

use crate::cors::CorsOrigins;
use crate::error::{ApiError, RequestId, REQUEST_ID};
use crate::limits::HttpLimits;
use crate::MAX_BODY_BYTES;

/// A router plus the list of (method, path) it serves.
#[derive(Default)]
pub struct Routes {
    router: Router,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    /// Mounts `handler` (already bound to its state) at `path` for `methods`.
    pub fn route(mut self, path: &'static str, methods: &[Method], handler: MethodRouter) -> Self {
        self.router = self.router.route(path, handler);
        self.table.extend(methods.iter().map(|m| (m.clone(), path)));
        self
    }

    /// Adds another table's routes.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// The (method, path) pairs mounted, paths in axum's `{param}` syntax.
    pub fn table(&self) -> &[(Method, &'static str)] {
        &self.table
    }

    /// The router.
    pub fn into_router(self) -> Router {
        self.router
    }
}

/// `/healthz` and `/openapi.json`.
pub fn meta_routes() -> Routes {
    Routes::default()
        .route(
            "/healthz",
            &[Method::GET],
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/openapi.json",
            &[Method::GET],
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    crate::openapi::document(),
                )
            }),
        )
}

/// Wraps a router with what every Omni endpoint has: a request id, the 1 MiB body limit,
/// JSON errors for anything axum rejects, a JSON 404 for unknown paths, and CORS for the
/// `cors` origins (outermost, so even those errors reach the browser's page).
pub fn finish(router: Router, cors: &CorsOrigins) -> Router {
    finish_with(router, None, cors)
}

/// [`finish`], plus, with `limits`, the body deadline and the URL and header caps of a
/// server clients reach directly (`omni serve`), answered with a request id like any error.
pub fn finish_with(router: Router, limits: Option<HttpLimits>, cors: &CorsOrigins) -> Router {
    let router = router
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let router = match limits {
        Some(limits) => router.layer(middleware::from_fn_with_state(
            Arc::new(limits),
            crate::limits::enforce,
        )),
        None => router,
    };
    crate::cors::apply(router.layer(middleware::from_fn(request_id)), cors)
}

/// Gives each request an id (the caller's `x-request-id` if sane), visible to error bodies
/// and echoed in the response.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let mut response = REQUEST_ID
        .scope(RequestId(id.clone()), next.run(request))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Turns axum's plain-text rejections (bad JSON, wrong method, body too large) into the
/// contract's JSON error, so a client never has to parse two error shapes.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(status, "invalid_request", "method not allowed")
        }
        StatusCode::NOT_FOUND => ApiError::not_found("route"),
        s if s.is_client_error() => ApiError::new(
            s,
            "invalid_request",
            if text.is_empty() {
                "invalid request".into()
            } else {
                text
            },
        ),
        s => ApiError::new(s, "internal", "internal error"),
    };
    error.into_response()
}
