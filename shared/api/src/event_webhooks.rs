//! Signed event webhooks to a tenant's own systems (`/v1/webhooks`, the tenant's admins):
//! endpoints, their one-time secrets, test events, and the delivery log with retries.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use omni_core::providers::Secret;
use omni_core::service::WebhookChange;
use omni_core::webhook::{EventType, WebhookEndpoint};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::Auth;
use crate::dispatch::{page_limit, page_query, parse_id};
use crate::error::ApiError;
use crate::routes::Routes;
use crate::AppState;

/// The event webhook routes (served by the `admin` function on AWS).
pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/webhooks",
            &[Method::GET, Method::POST],
            get(list).post(create).with_state(state.clone()),
        )
        .route(
            "/v1/webhooks/{id}",
            &[Method::GET, Method::PATCH, Method::DELETE],
            get(show)
                .patch(change)
                .delete(remove)
                .with_state(state.clone()),
        )
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            &[Method::POST],
            post(rotate).with_state(state.clone()),
        )
        .route(
            "/v1/webhooks/{id}/test",
            &[Method::POST],
            post(test).with_state(state.clone()),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            &[Method::GET],
            get(deliveries).with_state(state.clone()),
        )
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery}/retry",
            &[Method::POST],
            post(retry).with_state(state),
        )
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(ApiError::from)
}

/// The endpoint with its secret: the one answer that shows it.
fn with_secret(endpoint: &WebhookEndpoint, secret: &Secret) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(endpoint)
        .map_err(|e| ApiError::from(omni_core::service::ServiceError::Upstream(e.to_string())))?;
    value["secret"] = Value::String(secret.expose().to_owned());
    Ok(value)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    events: Vec<EventType>,
    #[serde(default)]
    description: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    new: Result<Json<NewEndpoint>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let new = body(new)?;
    let (endpoint, secret) = state
        .services
        .create_webhook(&caller, &new.url, new.events, new.description)
        .await?;
    Ok((StatusCode::CREATED, Json(with_secret(&endpoint, &secret)?)))
}

async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let items = state.services.list_webhooks(&caller.tenant).await?;
    Ok(Json(json!({ "items": items })))
}

async fn show(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "webhook")?;
    Ok(Json(state.services.get_webhook(&caller.tenant, id).await?))
}

/// `PATCH`: any of the fields; `description: null` clears it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointPatch {
    url: Option<String>,
    events: Option<Vec<EventType>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    enabled: Option<bool>,
}

/// A field that is there, even as `null`, is `Some` (absent stays `None`, by `default`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

async fn change(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    patch: Result<Json<EndpointPatch>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "webhook")?;
    let patch = body(patch)?;
    let change = WebhookChange {
        url: patch.url,
        events: patch.events,
        description: patch.description,
        enabled: patch.enabled,
    };
    Ok(Json(
        state.services.update_webhook(&caller, id, change).await?,
    ))
}

async fn remove(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "webhook")?;
    state.services.delete_webhook(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "webhook")?;
    let (endpoint, secret) = state.services.rotate_webhook_secret(&caller, id).await?;
    Ok(Json(with_secret(&endpoint, &secret)?))
}

async fn test(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "webhook")?;
    Ok(Json(state.services.test_webhook(&caller, id).await?))
}

#[derive(Deserialize)]
struct DeliveryQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn deliveries(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "webhook")?;
    let q = page_query(query)?;
    let page = state
        .services
        .list_webhook_deliveries(
            &caller.tenant,
            id,
            page_limit(q.limit)?.min(100),
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(page))
}

async fn retry(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "webhook")?;
    let delivery = parse_id(&delivery, "delivery")?;
    Ok(Json(
        state
            .services
            .retry_webhook_delivery(&caller, id, delivery)
            .await?,
    ))
}
