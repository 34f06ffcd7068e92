//! The dispatch API: send, read messages, conversations, stars (tenant API key).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use omni_core::model::Message;
use omni_core::providers::MediaContent;
use omni_core::service::{Caller, MediaDownload, SendRequest};
use omni_core::team::Permission;
use serde::Deserialize;
use uuid::Uuid;

use crate::access::Auth;
use crate::error::ApiError;
use crate::ratelimit::SendLimiter;
use crate::routes::Routes;
use crate::AppState;

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Send and message routes (the `send` function on AWS) plus conversations (`conversations`).
pub fn routes(state: AppState) -> Routes {
    send_routes(state.clone()).merge(conversation_routes(state))
}

/// Sending as a finished router (the `send` function on AWS). It owns the per-tenant send
/// rate limit ([`send_routes`]): on Lambda that is one token bucket per function instance.
pub fn send_app(state: AppState) -> axum::Router {
    crate::routes::finish(send_routes(state).into_router())
}

/// Conversations, messages, read and star, users and sign-in as a finished router (the
/// `conversations` function on AWS), which also answers `/healthz` and `/openapi.json` there:
/// the contract serves them at the same paths on both deployments.
pub fn conversations_app(state: AppState) -> axum::Router {
    crate::routes::finish(
        conversation_routes(state.clone())
            .merge(crate::team::routes(state))
            .merge(crate::routes::meta_routes())
            .into_router(),
    )
}

/// `POST /v1/messages`, `GET /v1/messages/{id}`.
///
/// Sending is rate limited per tenant (`settings.send_rate`) by a token bucket this router
/// owns, in memory: one per `omni serve` process and, on AWS, one per Lambda function
/// instance, so there the limit holds per instance, not across concurrent instances.
pub fn send_routes(state: AppState) -> Routes {
    let limiter = Arc::new(SendLimiter::new(state.services.settings.send_rate));
    Routes::default()
        .route(
            "/v1/messages",
            &[Method::POST],
            post(send)
                .with_state(state.clone())
                .layer(Extension(limiter)),
        )
        .route(
            "/v1/messages/{id}",
            &[Method::GET],
            get(get_message).with_state(state),
        )
}

/// Conversations, their messages, read and star.
pub fn conversation_routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/conversations",
            &[Method::GET],
            get(list_conversations).with_state(state.clone()),
        )
        .route(
            "/v1/conversations/{id}/messages",
            &[Method::GET],
            get(list_messages).with_state(state.clone()),
        )
        .route(
            "/v1/conversations/{id}/read",
            &[Method::POST],
            post(mark_read).with_state(state.clone()),
        )
        .route(
            "/v1/messages/{id}/star",
            &[Method::PUT, Method::DELETE],
            put(star).delete(unstar).with_state(state.clone()),
        )
        .route(
            "/v1/messages/{id}/media/{index}",
            &[Method::GET],
            get(get_media).with_state(state),
        )
}

async fn send(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<SendLimiter>>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = caller.tenant.clone();
    // Before anything is read or stored: a refused send leaves no trace.
    limiter.check(&tenant)?;
    let Json(mut request) = body?;
    if let Some(header_key) = headers.get("idempotency-key") {
        let header_key = header_key
            .to_str()
            .map_err(|_| ApiError::invalid("Idempotency-Key must be text"))?;
        match &request.idempotency_key {
            Some(body_key) if body_key != header_key => {
                return Err(ApiError::invalid(
                    "Idempotency-Key header and idempotency_key differ",
                ));
            }
            _ => request.idempotency_key = Some(header_key.to_string()),
        }
    }
    let (message, _created) = state
        .services
        .send_message(&tenant, request, caller.actor)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

/// Ids are UUIDs; anything else cannot name a message of the caller's.
fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what))
}

async fn get_message(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "message")?;
    Ok(Json(readable_message(&state, &caller, id).await?))
}

/// A message the caller may read: any of the tenant's, or for a role that cannot read
/// conversations (a dispatch system's `sender` key), only the ones it sent.
async fn readable_message(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Message, ApiError> {
    let message = state
        .services
        .messages
        .get_message(&caller.tenant, id)
        .await?
        .filter(|m| {
            caller.role.allows(Permission::ConversationsRead)
                || m.sent_by
                    .as_ref()
                    .is_some_and(|by| by.kind == caller.actor.kind && by.id == caller.actor.id)
        });
    message.ok_or_else(|| ApiError::not_found("message"))
}

/// `GET /v1/messages/{id}/media/{index}`: a redirect to a plain link, or the bytes the
/// carrier keeps behind its own authentication (WhatsApp media ids).
async fn get_media(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "message")?;
    let index = index
        .parse::<usize>()
        .map_err(|_| ApiError::not_found("media"))?;
    readable_message(&state, &caller, id).await?;
    Ok(
        match state.services.media(&caller.tenant, id, index).await? {
            MediaDownload::Link(url) => match HeaderValue::from_str(&url) {
                Ok(location) => (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response(),
                Err(_) => return Err(ApiError::not_found("media")),
            },
            MediaDownload::Content(content) => media_response(content),
        },
    )
}

/// The carrier's bytes under our origin: the type the carrier named (or octet-stream), never
/// sniffed and sandboxed, so a contact's upload cannot run as a page of the dashboard's
/// origin; only pictures, sound and video are shown inline.
fn media_response(content: MediaContent) -> Response {
    let content_type = content
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let disposition = content.disposition();
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static(disposition),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=300"),
            ),
        ],
        content.bytes,
    )
        .into_response()
}

/// `?limit=&cursor=` of the listings.
#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid("limit must be between 1 and 200")),
        }
    }
}

fn page_query(
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<PageQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

async fn list_conversations(
    State(state): State<AppState>,
    Auth(caller): Auth,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = page_query(query)?;
    let page = state
        .services
        .messages
        .list_conversations(&caller.tenant, q.limit()?, q.cursor.as_deref())
        .await?;
    Ok(Json(page))
}

async fn list_messages(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "conversation")?;
    let q = page_query(query)?;
    let messages = &state.services.messages;
    if messages
        .get_conversation(&caller.tenant, id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("conversation"));
    }
    let page = messages
        .list_messages(&caller.tenant, id, q.limit()?, q.cursor.as_deref())
        .await?;
    Ok(Json(page))
}

async fn mark_read(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "conversation")?;
    let conversation = state
        .services
        .messages
        .mark_read(&caller.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    state
        .services
        .push_conversation(&caller.tenant, &conversation)
        .await;
    Ok(Json(conversation))
}

async fn star(
    state: State<AppState>,
    auth: Auth,
    id: Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_star(state, auth, id, true).await
}

async fn unstar(
    state: State<AppState>,
    auth: Auth,
    id: Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_star(state, auth, id, false).await
}

async fn set_star(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    starred: bool,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "message")?;
    let (message, conversation) = state
        .services
        .messages
        .set_starred(&caller.tenant, id, starred)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    state
        .services
        .push_conversation(&caller.tenant, &conversation)
        .await;
    Ok(Json(message))
}
