//! WhatsApp routing by business account (platform admin): where the webhooks of accounts
//! other environments own are forwarded.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::Json;
use omni_core::providers::Secret;
use serde::Deserialize;
use serde_json::json;

use crate::access::AdminAuth;
use crate::error::ApiError;
use crate::routes::Routes;
use crate::AppState;

/// The routes' admin endpoints (served by the `admin` function on AWS).
pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/admin/whatsapp/waba-routes",
            &[Method::GET],
            get(list_routes).with_state(state.clone()),
        )
        .route(
            "/v1/admin/whatsapp/waba-routes/{waba_id}",
            &[Method::PUT, Method::DELETE],
            put(put_route).delete(delete_route).with_state(state),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteBody {
    url: String,
    app_secret: Secret,
    #[serde(default)]
    note: Option<String>,
}

async fn put_route(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(waba_id): Path<String>,
    body: Result<Json<RouteBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    let route = state
        .services
        .put_waba_route(&waba_id, &body.url, body.app_secret, body.note, &actor)
        .await?;
    Ok(Json(route))
}

async fn list_routes(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<impl IntoResponse, ApiError> {
    let items = state.services.list_waba_routes().await?;
    Ok(Json(json!({ "items": items })))
}

async fn delete_route(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(waba_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state.services.delete_waba_route(&waba_id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
