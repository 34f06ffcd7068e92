//! The dispatch API: send, read messages, conversations, stars (tenant API key).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use omni_core::domain::Channel;
use omni_core::model::{ConversationFilter, ConversationStatus, Message};
use omni_core::providers::MediaContent;
use omni_core::service::{Caller, MediaDownload, SendRequest};
use omni_core::team::Permission;
use serde::Deserialize;
use serde_json::json;
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
    let cors = state.cors.clone();
    crate::routes::finish(send_routes(state).into_router(), &cors)
}

/// Conversations, messages, read and star, users and sign-in, templates as a finished router (the
/// `conversations` function on AWS), which also answers `/healthz` and `/openapi.json` there:
/// the contract serves them at the same paths on both deployments.
pub fn conversations_app(state: AppState) -> axum::Router {
    let cors = state.cors.clone();
    crate::routes::finish(
        conversation_routes(state.clone())
            .merge(crate::team::routes(state.clone()))
            .merge(crate::templates::routes(state))
            .merge(crate::routes::meta_routes())
            .into_router(),
        &cors,
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
                .layer(Extension(limiter.clone())),
        )
        .route(
            BATCH_PATH,
            &[Method::POST],
            post(send_batch)
                .with_state(state.clone())
                .layer((Extension(limiter), DefaultBodyLimit::max(BATCH_BODY_BYTES))),
        )
        .route(
            "/v1/messages/{id}",
            &[Method::GET, Method::DELETE],
            get(get_message)
                .delete(cancel_message)
                .with_state(state.clone()),
        )
        .merge(crate::delivery_log::retry_routes(state))
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
            "/v1/conversations/{id}/assign",
            &[Method::POST],
            post(assign).with_state(state.clone()),
        )
        .route(
            "/v1/conversations/{id}/resolve",
            &[Method::POST],
            post(resolve).with_state(state.clone()),
        )
        .route(
            "/v1/conversations/{id}/reopen",
            &[Method::POST],
            post(reopen).with_state(state.clone()),
        )
        .route(
            "/v1/conversations/{id}/notes",
            &[Method::POST],
            post(add_note).with_state(state.clone()),
        )
        .route(
            "/v1/messages/{id}/star",
            &[Method::PUT, Method::DELETE],
            put(star).delete(unstar).with_state(state.clone()),
        )
        .route(
            "/v1/messages/{id}/media/{index}",
            &[Method::GET],
            get(get_media).with_state(state.clone()),
        )
        .merge(crate::delivery_log::search_routes(state))
}

async fn send(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<SendLimiter>>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // Before anything is read or stored: a refused send leaves no trace.
    limiter.check(&caller.tenant)?;
    let Json(mut request) = body?;
    if let Some(header_key) = idempotency_header(&headers)? {
        match &request.idempotency_key {
            Some(body_key) if body_key != header_key => {
                return Err(ApiError::invalid(
                    "Idempotency-Key header and idempotency_key differ",
                ));
            }
            _ => request.idempotency_key = Some(header_key.to_string()),
        }
    }
    let message = send_one(&state, &caller, request).await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

/// The `Idempotency-Key` header, if any.
fn idempotency_header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be text"))
        })
        .transpose()
}

/// Sends one message for `caller` and records a new one in the audit log.
async fn send_one(
    state: &AppState,
    caller: &Caller,
    request: SendRequest,
) -> Result<Message, ApiError> {
    let tenant = &caller.tenant;
    let (message, created) = state
        .services
        .send_message(tenant, request, caller.actor.clone())
        .await?;
    if created {
        let details = json!({"channel": message.channel, "to": message.to});
        let target = Some(format!("message:{}", message.id));
        state
            .services
            .audit(tenant, &caller.actor, "message.send", target, details)
            .await;
    }
    Ok(message)
}

/// Where batches are sent.
pub const BATCH_PATH: &str = "/v1/messages/batch";

/// Most messages one `POST /v1/messages/batch` may carry.
pub const MAX_BATCH_MESSAGES: usize = 1_000;

/// The body cap of `POST /v1/messages/batch`: a thousand messages with long bodies do not
/// fit the 1 MiB of other requests (API Gateway allows 10 MB, Lambda 6 MB).
pub const BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Sends in flight at once for one batch: enough to hide store and queue latency without
/// one batch taking every connection of the pool.
const BATCH_CONCURRENCY: usize = 16;

/// `POST /v1/messages/batch {"messages": [...]}`.
#[derive(Deserialize)]
struct BatchRequest {
    messages: Vec<serde_json::Value>,
}

/// Sends up to [`MAX_BATCH_MESSAGES`] messages; answers each item's id or error in request
/// order, so one bad item refuses only itself. The batch takes one token of the send rate
/// limit: it is one call, and pacing per number is the carriers' limit. With an
/// `Idempotency-Key`, item `i` is sent under the key `<key>#<i>` (an item's own
/// `idempotency_key` wins), so retrying the batch sends nothing twice.
async fn send_batch(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<SendLimiter>>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    limiter.check(&caller.tenant)?;
    let Json(batch) = body?;
    if batch.messages.is_empty() || batch.messages.len() > MAX_BATCH_MESSAGES {
        return Err(ApiError::invalid(format!(
            "messages: 1 to {MAX_BATCH_MESSAGES} messages per batch"
        )));
    }
    let batch_key = idempotency_header(&headers)?;
    if let Some(key) = batch_key {
        // Room for `#<index>` within the 255 characters of a message's key.
        if key.is_empty() || key.len() > 250 {
            return Err(ApiError::invalid(
                "Idempotency-Key must be 1 to 250 characters for a batch",
            ));
        }
    }
    let (state, caller) = (&state, &caller);
    let results: Vec<serde_json::Value> =
        futures::stream::iter(batch.messages.into_iter().enumerate())
            .map(|(index, item)| async move {
                let outcome = async {
                    let mut request: SendRequest = serde_json::from_value(item)
                        .map_err(|e| ApiError::invalid(format!("messages[{index}]: {e}")))?;
                    if request.idempotency_key.is_none() {
                        request.idempotency_key = batch_key.map(|key| format!("{key}#{index}"));
                    }
                    send_one(state, caller, request).await
                }
                .await;
                match outcome {
                    Ok(message) => json!({"index": index, "id": message.id}),
                    Err(error) => json!({"index": index, "error": error.body()}),
                }
            })
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await;
    Ok(Json(json!({ "results": results })))
}

/// Ids are UUIDs; anything else cannot name a message of the caller's.
pub(crate) fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
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

/// `DELETE /v1/messages/{id}`: cancels a message before sending begins (`scheduled`, or
/// queued and not yet tried); `409` once it has. A sender key cancels only what it sent.
async fn cancel_message(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "message")?;
    readable_message(&state, &caller, id).await?;
    let message = state.services.cancel_message(&caller.tenant, id).await?;
    state
        .services
        .audit(
            &caller.tenant,
            &caller.actor,
            "message.cancel",
            Some(format!("message:{id}")),
            json!({"channel": message.channel, "to": message.to, "send_at": message.send_at}),
        )
        .await;
    Ok(Json(message))
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

/// A listing's page size: 50 unless asked, 1 to 200.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit must be between 1 and 200")),
    }
}

/// A listing's query string, or 400 naming what is wrong with it.
pub(crate) fn page_query<T>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

/// `GET /v1/conversations?status=&assignee=me|none|<user id>&channel=&q=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
struct ConversationQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    status: Option<ConversationStatus>,
    assignee: Option<String>,
    channel: Option<Channel>,
    q: Option<String>,
}

async fn list_conversations(
    State(state): State<AppState>,
    Auth(caller): Auth,
    query: Result<Query<ConversationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = page_query(query)?;
    let assignee = match q.assignee.as_deref() {
        None => None,
        Some("none") => Some(None),
        Some("me") => Some(Some(caller.user_id().ok_or_else(|| {
            ApiError::invalid("assignee=me needs a signed-in user, not an API key")
        })?)),
        Some(id) => Some(Some(Uuid::parse_str(id).map_err(|_| {
            ApiError::invalid("assignee must be me, none or a user id")
        })?)),
    };
    let filter = ConversationFilter {
        status: q.status,
        assignee,
        channel: q.channel,
        q: q.q.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
    };
    let page = state
        .services
        .messages
        .find_conversations(
            &caller.tenant,
            &filter,
            page_limit(q.limit)?,
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(page))
}

/// A timeline cursor: the store's cursor of the messages, and the time of the oldest message
/// the previous page showed (the notes of this page are those at or before it).
fn timeline_cursor(store: &str, until: DateTime<Utc>) -> String {
    format!("{store}~{}", until.timestamp_micros())
}

fn read_timeline_cursor(cursor: &str) -> Result<(&str, DateTime<Utc>), ApiError> {
    let invalid = || ApiError::invalid("invalid cursor");
    let (store, until) = cursor.rsplit_once('~').ok_or_else(invalid)?;
    let until = until
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    Ok((store, until))
}

/// `GET /v1/conversations/{id}/messages`: the timeline, newest first: messages
/// (`"kind": "message"`) and private notes (`"kind": "note"`) among them by time. A page's
/// notes are those after its oldest message (or all older ones on the last page).
async fn list_messages(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "conversation")?;
    let q = page_query(query)?;
    let (store_cursor, until) = match q.cursor.as_deref() {
        Some(c) => {
            let (store, until) = read_timeline_cursor(c)?;
            (Some(store), Some(until))
        }
        None => (None, None),
    };
    let messages = &state.services.messages;
    if messages
        .get_conversation(&caller.tenant, id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("conversation"));
    }
    let page = messages
        .list_messages(&caller.tenant, id, page_limit(q.limit)?, store_cursor)
        .await?;
    let oldest = page.items.last().map(|m| m.created_at);
    let after = page.next_cursor.as_ref().and(oldest);
    let notes = messages
        .list_notes(&caller.tenant, id, after, until)
        .await?;
    let mut items: Vec<(DateTime<Utc>, serde_json::Value)> = Vec::new();
    for m in &page.items {
        items.push((m.created_at, timeline_item("message", m)?));
    }
    for n in &notes {
        items.push((n.created_at, timeline_item("note", n)?));
    }
    // Stable: a note written at a message's instant stays after it (newer).
    items.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let next_cursor = match (&page.next_cursor, oldest) {
        (Some(next), Some(oldest)) => Some(timeline_cursor(next, oldest)),
        _ => None,
    };
    Ok(Json(json!({
        "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

/// A record as a timeline item: its JSON with `kind`.
fn timeline_item<T: serde::Serialize>(
    kind: &str,
    record: &T,
) -> Result<serde_json::Value, ApiError> {
    let mut value = serde_json::to_value(record)
        .map_err(|e| ApiError::from(omni_core::service::ServiceError::Upstream(e.to_string())))?;
    value["kind"] = kind.into();
    Ok(value)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignment {
    user_id: Option<Uuid>,
}

/// `POST /v1/conversations/{id}/assign {"user_id"}` (`null` unassigns).
async fn assign(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: Result<Json<Assignment>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "conversation")?;
    let Json(body) = body?;
    Ok(Json(
        state.services.assign(&caller, id, body.user_id).await?,
    ))
}

async fn resolve(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "conversation")?;
    let status = ConversationStatus::Resolved;
    Ok(Json(state.services.set_status(&caller, id, status).await?))
}

async fn reopen(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "conversation")?;
    let status = ConversationStatus::Open;
    Ok(Json(state.services.set_status(&caller, id, status).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    body: String,
}

/// `POST /v1/conversations/{id}/notes {"body"}` → 201 the note (as a timeline item).
async fn add_note(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: Result<Json<NewNote>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "conversation")?;
    let Json(body) = body?;
    let note = state.services.add_note(&caller, id, &body.body).await?;
    Ok((StatusCode::CREATED, Json(timeline_item("note", &note)?)))
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
    let action = if starred {
        "message.star"
    } else {
        "message.unstar"
    };
    let target = Some(format!("message:{id}"));
    state
        .services
        .audit(&caller.tenant, &caller.actor, action, target, json!(null))
        .await;
    Ok(Json(message))
}
