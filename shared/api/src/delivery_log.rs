//! The delivery log: supervisors search every message of the tenant, as JSON pages or as one
//! CSV export, and send a failed message again.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use omni_core::domain::{Address, Channel, DeliveryStatus, Direction, ProviderKind, TenantId};
use omni_core::model::{
    Message, MessageSearch, Page, WebhookLogEntry, WebhookLogQuery, WebhookResult,
};
use omni_core::service::Caller;
use omni_core::team::Role;
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::access::{AdminAuth, Auth};
use crate::dispatch::{page_limit, page_query, parse_id};
use crate::error::ApiError;
use crate::routes::Routes;
use crate::AppState;

/// `GET /v1/messages` and `GET /v1/webhook-events` (the `conversations` function on AWS).
pub fn search_routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/messages",
            &[Method::GET],
            get(search).with_state(state.clone()),
        )
        .route(
            "/v1/webhook-events",
            &[Method::GET],
            get(webhook_events).with_state(state),
        )
}

/// `GET /v1/admin/webhook-events`: the webhooks no tenant could be told (the `admin` function
/// on AWS).
pub fn admin_routes(state: AppState) -> Routes {
    Routes::default().route(
        "/v1/admin/webhook-events",
        &[Method::GET],
        get(unattributed_webhook_events).with_state(state),
    )
}

/// `POST /v1/messages/{id}/retry` (the `send` function on AWS: it queues deliveries).
pub fn retry_routes(state: AppState) -> Routes {
    Routes::default().route(
        "/v1/messages/{id}/retry",
        &[Method::POST],
        post(retry).with_state(state),
    )
}

/// `GET /v1/messages?direction&status&channel&carrier&from&to&since&until&q&cursor&limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    direction: Option<Direction>,
    status: Option<DeliveryStatus>,
    channel: Option<Channel>,
    carrier: Option<ProviderKind>,
    from: Option<String>,
    to: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Rows the CSV export reads from the store at a time.
const EXPORT_PAGE: usize = 500;

async fn search(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = page_query(query)?;
    let search = MessageSearch {
        direction: q.direction,
        status: q.status,
        channel: q.channel,
        carrier: q.carrier,
        from: address(&state, &caller.tenant, "from", q.from.as_deref()).await?,
        to: address(&state, &caller.tenant, "to", q.to.as_deref()).await?,
        since: q.since,
        until: q.until,
        q: q.q.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
    };
    if wants_csv(&headers) {
        // The first page is read before the answer starts, so a bad cursor is still a 400.
        let first = state
            .services
            .messages
            .search_messages(&caller.tenant, &search, EXPORT_PAGE, q.cursor.as_deref())
            .await?;
        return Ok(csv_export(state, caller, search, first));
    }
    let page = state
        .services
        .messages
        .search_messages(
            &caller.tenant,
            &search,
            page_limit(q.limit)?,
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(page).into_response())
}

/// An address filter as typed: as stored (E.164, an email address), else a number in the
/// tenant's region. A `+` that arrived unescaped in the query string reads as a space: the
/// trim undoes it.
async fn address(
    state: &AppState,
    tenant: &TenantId,
    field: &str,
    raw: Option<&str>,
) -> Result<Option<Address>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if let Ok(address) = Address::from_stored(raw) {
        return Ok(Some(address));
    }
    let region = state
        .services
        .tenants
        .get_tenant(tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?
        .default_region;
    Address::parse(raw, region)
        .map(Some)
        .map_err(|e| ApiError::invalid(format!("{field}: {e}")))
}

/// Whether the caller asked for CSV rather than JSON.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|t| t.split(';').next().unwrap_or("").trim() == "text/csv")
        })
}

/// The CSV columns, in order.
const COLUMNS: [&str; 16] = [
    "id",
    "created_at",
    "updated_at",
    "direction",
    "channel",
    "status",
    "carrier",
    "carrier_message_id",
    "from",
    "to",
    "body",
    "media_count",
    "error_code",
    "error_message",
    "conversation_id",
    "sent_by",
];

/// The whole search as CSV, streamed page by page: no row limit, and memory stays one page.
fn csv_export(
    state: AppState,
    caller: Caller,
    search: MessageSearch,
    first: Page<Message>,
) -> Response {
    let header_row = csv_rows(&[], true);
    let pages = futures::stream::unfold(
        (Some(first), state, caller, search),
        |(page, state, caller, search)| async move {
            let page = page?;
            let chunk = csv_rows(&page.items, false);
            let next = match page.next_cursor {
                None => None,
                Some(cursor) => match state
                    .services
                    .messages
                    .search_messages(&caller.tenant, &search, EXPORT_PAGE, Some(&cursor))
                    .await
                {
                    Ok(next) => Some(next),
                    Err(e) => {
                        // The headers are gone: a body cut short is how the client learns.
                        warn!(error = %e, "delivery log export cut short");
                        let error = std::io::Error::other("export cut short");
                        return Some((Err(error), (None, state, caller, search)));
                    }
                },
            };
            Some((Ok(chunk), (next, state, caller, search)))
        },
    );
    let body = futures::stream::iter([Ok::<_, std::io::Error>(header_row)]).chain(pages);
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"messages.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// CSV lines for `messages` (with the header line first when `header` is set).
fn csv_rows(messages: &[Message], header: bool) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail; a row that could not be written is left out.
    if header {
        let _ = out.write_record(COLUMNS);
    }
    for m in messages {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let row = [
            m.id.to_string(),
            time(m.created_at),
            time(m.updated_at),
            m.direction.as_str().to_owned(),
            m.channel.as_str().to_owned(),
            m.status.as_str().to_owned(),
            m.provider
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            m.provider_message_id.clone().unwrap_or_default(),
            m.from.as_str().to_owned(),
            m.to.as_str().to_owned(),
            spreadsheet_safe(m.body.as_deref().unwrap_or_default()),
            m.media.len().to_string(),
            m.error_code.clone().unwrap_or_default(),
            spreadsheet_safe(m.error_message.as_deref().unwrap_or_default()),
            m.conversation_id.to_string(),
            m.sent_by
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
        ];
        let _ = out.write_record(&row);
    }
    out.into_inner().unwrap_or_default()
}

/// Free text from the public as a spreadsheet cell: text a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@`, tab, carriage return first) gets a leading `'`.
fn spreadsheet_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// `GET /v1/webhook-events?carrier&result=accepted|rejected&since&cursor&limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookLogParams {
    carrier: Option<ProviderKind>,
    result: Option<WebhookResult>,
    since: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// The tenant's inbound webhook log; bodies for admins only (they may hold what contacts
/// wrote, and forged ones what an attacker did).
async fn webhook_events(
    State(state): State<AppState>,
    Auth(caller): Auth,
    query: Result<Query<WebhookLogParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let with_bodies = caller.role == Role::Admin;
    webhook_log(
        &state,
        Some(&caller.tenant),
        page_query(query)?,
        with_bodies,
    )
    .await
}

/// The webhooks no tenant could be told (an unknown number, an unreadable body), for the
/// platform operator.
async fn unattributed_webhook_events(
    State(state): State<AppState>,
    _: AdminAuth,
    query: Result<Query<WebhookLogParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    webhook_log(&state, None, page_query(query)?, true).await
}

async fn webhook_log(
    state: &AppState,
    tenant: Option<&TenantId>,
    params: WebhookLogParams,
    with_bodies: bool,
) -> Result<Json<Page<WebhookLogEntry>>, ApiError> {
    let query = WebhookLogQuery {
        carrier: params.carrier,
        result: params.result,
        since: params.since,
    };
    let mut page = state
        .services
        .messages
        .list_webhook_log(
            tenant,
            &query,
            page_limit(params.limit)?,
            params.cursor.as_deref(),
        )
        .await?;
    if !with_bodies {
        for entry in &mut page.items {
            entry.body = None;
        }
    }
    Ok(Json(page))
}

async fn retry(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "message")?;
    let message = state.services.retry_message(&caller.tenant, id).await?;
    state
        .services
        .audit(
            &caller.tenant,
            &caller.actor,
            "message.retry",
            Some(format!("message:{id}")),
            json!({"channel": message.channel, "to": message.to}),
        )
        .await;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_from_the_public_are_defused_and_plain_text_kept() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("-2+3"), "'-2+3");
        assert_eq!(
            spreadsheet_safe("Unit 12, on the way"),
            "Unit 12, on the way"
        );
    }

    #[test]
    fn csv_is_asked_for_by_media_type_among_others() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, accept.parse().unwrap());
            wants_csv(&h)
        };
        assert!(with("text/csv"));
        assert!(with("application/json;q=0.5, text/csv; charset=utf-8"));
        assert!(!with("application/json"));
        assert!(!with("text/csvx"));
        assert!(!wants_csv(&HeaderMap::new()));
    }
}
