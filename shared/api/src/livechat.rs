//! LiveChat over HTTP: the tenant's widget settings (admin) and the visitor API under
//! `/livechat/v1`, called by the widget from the tenant's own pages.
//!
//! CORS: every visitor route answers the preflight (`OPTIONS`) for any origin, since a
//! preflight names no widget and no token and so no tenant whose list could decide; the
//! request itself is then checked against its widget's allowed origins: another origin (or
//! none) gets `403 origin_not_allowed` without CORS headers, so the page cannot read it.
//! Answers to an allowed origin carry `Access-Control-Allow-Origin` for it, errors included.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use omni_core::domain::TenantId;
use omni_core::livechat::{LivechatSettings, MAX_UPLOAD_BYTES};
use omni_core::service::{
    LivechatUpdate, SessionRequest, Visitor, VisitorMessageRequest, MAX_VISITOR_MEDIA,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::access::AdminAuth;
use crate::dispatch::bearer;
use crate::error::ApiError;
use crate::routes::Routes;
use crate::AppState;

/// Largest `POST /livechat/v1/media` body: the upload plus room for the multipart framing.
pub const UPLOAD_BODY_BYTES: usize = MAX_UPLOAD_BYTES + 64 * 1024;

/// The path uploads are posted to (the one route with a larger body limit).
pub const UPLOAD_PATH: &str = "/livechat/v1/media";

/// The widget script, built into the binary (no CDN).
const WIDGET_JS: &str = include_str!("../livechat/widget.js");

/// The visitor API as a finished router (the `livechat` function on AWS). Its CORS is each
/// tenant's allowed origins, answered by these routes, not `OMNI_CORS_ORIGINS` (which is for
/// `/v1`).
pub fn app(state: AppState) -> axum::Router {
    let none = crate::cors::CorsOrigins::default();
    crate::routes::finish(routes(state).into_router(), &none)
}

/// The admin routes for a tenant's widget (part of [`crate::admin::routes`]).
pub fn admin_routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/admin/tenants/{tenant_id}/livechat",
            &[Method::GET, Method::PUT],
            put(put_settings)
                .get(get_settings)
                .with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/livechat/rotate-secret",
            &[Method::POST],
            post(rotate_secret).with_state(state),
        )
}

/// The visitor API (the `livechat` function on AWS), without its WebSocket.
pub fn routes(state: AppState) -> Routes {
    let both = [Method::POST, Method::OPTIONS];
    Routes::default()
        .route(
            "/livechat/v1/sessions",
            &both,
            post(start_session)
                .options(preflight)
                .with_state(state.clone()),
        )
        .route(
            "/livechat/v1/sessions/refresh",
            &both,
            post(refresh_session)
                .options(preflight)
                .with_state(state.clone()),
        )
        .route(
            "/livechat/v1/messages",
            &[Method::GET, Method::POST, Method::OPTIONS],
            get(list_messages)
                .post(post_message)
                .options(preflight)
                .with_state(state.clone()),
        )
        .route(
            UPLOAD_PATH,
            &both,
            post(upload)
                .options(preflight)
                .layer(DefaultBodyLimit::max(UPLOAD_BODY_BYTES))
                .with_state(state.clone()),
        )
        .route(
            "/livechat/v1/media/{id}",
            &[Method::GET],
            get(download).with_state(state.clone()),
        )
        .route(
            "/livechat/widget.js",
            &[Method::GET],
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                        (header::CACHE_CONTROL, "public, max-age=300"),
                    ],
                    WIDGET_JS,
                )
            }),
        )
        .route(
            "/livechat/v1/read",
            &both,
            post(read).options(preflight).with_state(state),
        )
}

/// The preflight: any origin may ask; the request itself is checked against its widget.
pub async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = headers.get(header::ORIGIN) {
        allow(&mut response, origin.clone());
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

fn allow(response: &mut Response, origin: HeaderValue) {
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// The request's origin if the widget allows it; otherwise `403 origin_not_allowed`.
fn allowed_origin(
    settings: &LivechatSettings,
    headers: &HeaderMap,
) -> Result<HeaderValue, ApiError> {
    headers
        .get(header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| settings.allows_origin(o)))
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this page's origin may not use this widget",
            )
        })
}

/// A response for an allowed origin: the answer or the error, with CORS headers.
fn answer(origin: HeaderValue, result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    allow(&mut response, origin);
    response
}

/// The visitor of a request's token, from a page the widget allows; the socket uses it too.
pub async fn visitor(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
) -> Result<Visitor, ApiError> {
    let settings = state.services.token_widget(token).await?;
    allowed_origin(&settings, headers)?;
    Ok(state.services.verify_visitor(settings, token)?)
}

/// The bearer token's visitor and the allowed origin; a bad token is answered with CORS
/// headers (the widget must see its 401 to start again), a bad origin without.
async fn bearer_visitor(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Visitor, HeaderValue), Response> {
    let token = bearer(headers).unwrap_or_default();
    let settings = state
        .services
        .token_widget(token)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let origin = allowed_origin(&settings, headers).map_err(IntoResponse::into_response)?;
    match state.services.verify_visitor(settings, token) {
        Ok(visitor) => Ok((visitor, origin)),
        Err(e) => Err(answer(origin, Err(e.into()))),
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(ApiError::from)
}

async fn start_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SessionRequest>, JsonRejection>,
) -> Response {
    let request = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let services = &state.services;
    let settings = match services.widget(&request.widget_key).await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let origin = match allowed_origin(&settings, &headers) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let result = services
        .start_visitor_session(&settings, request)
        .await
        .map(|s| (StatusCode::CREATED, Json(s)).into_response())
        .map_err(ApiError::from);
    answer(origin, result)
}

async fn refresh_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match bearer_visitor(&state, &headers).await {
        Ok((visitor, origin)) => {
            let session = state.services.refresh_visitor_session(&visitor);
            answer(origin, Ok(Json(session).into_response()))
        }
        Err(refused) => refused,
    }
}

async fn post_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<VisitorMessageRequest>, JsonRejection>,
) -> Response {
    let (visitor, origin) = match bearer_visitor(&state, &headers).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let result = async {
        let request = json_body(body)?;
        if request.media.len() > MAX_VISITOR_MEDIA {
            return Err(ApiError::invalid(format!(
                "at most {MAX_VISITOR_MEDIA} media"
            )));
        }
        let message = state
            .services
            .post_visitor_message(&visitor, request)
            .await?;
        Ok((StatusCode::ACCEPTED, Json(message)).into_response())
    }
    .await;
    answer(origin, result)
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (visitor, origin) = match bearer_visitor(&state, &headers).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let result = async {
        let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
        let limit = q.limit.unwrap_or(50).clamp(1, 100);
        let page = state
            .services
            .visitor_messages(&visitor, q.after.as_deref(), limit)
            .await?;
        Ok(Json(page).into_response())
    }
    .await;
    answer(origin, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    up_to: Uuid,
}

async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ReadBody>, JsonRejection>,
) -> Response {
    let (visitor, origin) = match bearer_visitor(&state, &headers).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let result = async {
        let body = json_body(body)?;
        state.services.visitor_read(&visitor, body.up_to).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(origin, result)
}

async fn upload(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (visitor, origin) = match bearer_visitor(&state, &headers).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let result = async {
        let file = multipart_file(&headers, &body)?;
        let stored = state.services.upload(&visitor, file.to_vec()).await?;
        Ok((StatusCode::CREATED, Json(stored)).into_response())
    }
    .await;
    answer(origin, result)
}

/// The bytes of the `file` field of a `multipart/form-data` body (RFC 7578).
fn multipart_file<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<&'a [u8], ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|_| content_type.starts_with("multipart/form-data"))
        .ok_or_else(|| ApiError::invalid("send the upload as multipart/form-data, field file"))?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = body;
    while let Some(at) = find(rest, delimiter) {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let content = &rest[head_end + 4..];
        let Some(end) = find(content, delimiter) else {
            break;
        };
        let is_file = head.lines().any(|l| {
            l.starts_with("content-disposition:")
                && l.split(';').any(|p| p.trim() == "name=\"file\"")
        });
        if is_file {
            return Ok(content[..end]
                .strip_suffix(b"\r\n")
                .unwrap_or(&content[..end]));
        }
    }
    Err(ApiError::invalid("the multipart body has no file field"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Deserialize)]
struct DownloadQuery {
    tenant: String,
    expires: i64,
    signature: String,
}

/// An upload through its signed link (`omni serve`; S3 signs its own on AWS).
async fn download(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(q): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    let content = state
        .services
        .signed_upload(&q.tenant, id, q.expires, &q.signature)
        .await?;
    let disposition = content.disposition();
    let content_type = content
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CACHE_CONTROL, "private, max-age=300".to_string()),
        ],
        content.bytes,
    )
        .into_response())
}

// ---- admin ------------------------------------------------------------------------------

/// The settings as the admin API shows them: never the signing key; the identity secret
/// only when `secret` (created or rotated).
fn settings_json(settings: &LivechatSettings, secret: bool) -> serde_json::Value {
    let mut v = json!({
        "widget_key": settings.widget_key,
        "allowed_origins": settings.allowed_origins,
        "title": settings.title,
        "greeting": settings.greeting,
        "offline_message": settings.offline_message,
        "identity_required": settings.identity_required,
        "created_at": settings.created_at,
        "updated_at": settings.updated_at,
    });
    if secret {
        v["identity_secret"] = settings.identity_secret.expose().into();
    }
    v
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

async fn put_settings(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
    body: Result<Json<LivechatUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_id(&raw)?;
    let update = json_body(body)?;
    let (settings, created) = state.services.put_livechat(&tenant, update, &actor).await?;
    Ok(Json(settings_json(&settings, created)).into_response())
}

async fn get_settings(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_id(&raw)?;
    let settings = state.services.livechat(&tenant).await?;
    Ok(Json(settings_json(&settings, false)).into_response())
}

async fn rotate_secret(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_id(&raw)?;
    let settings = state
        .services
        .rotate_livechat_secret(&tenant, &actor)
        .await?;
    Ok(Json(settings_json(&settings, true)).into_response())
}
