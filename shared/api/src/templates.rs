//! A tenant's message templates: versions written by supervisors and admins, submitted,
//! approved or rejected by another one (four eyes), listed and read by the whole team, and
//! Meta's statuses of the WhatsApp ones (served by the `conversations` function on AWS).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use omni_core::templates::{Step, TemplateDefinition};
use serde::Deserialize;
use serde_json::json;

use crate::access::Auth;
use crate::error::ApiError;
use crate::routes::Routes;
use crate::team::json_body;
use crate::AppState;

/// The template routes.
pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/templates",
            &[Method::GET],
            get(list).with_state(state.clone()),
        )
        .route(
            "/v1/templates/{name}",
            &[Method::GET, Method::PUT],
            get(read).put(write).with_state(state.clone()),
        )
        .route(
            "/v1/templates/{name}/submit",
            &[Method::POST],
            post(submit).with_state(state.clone()),
        )
        .route(
            "/v1/templates/{name}/approve",
            &[Method::POST],
            post(approve).with_state(state.clone()),
        )
        .route(
            "/v1/templates/{name}/reject",
            &[Method::POST],
            post(reject).with_state(state.clone()),
        )
        .route(
            "/v1/templates/sync/whatsapp",
            &[Method::POST],
            post(sync_whatsapp).with_state(state),
        )
}

/// `POST /v1/templates/sync/whatsapp`: Meta's status of every language of the account's
/// templates, read through the Graph API and recorded.
async fn sync_whatsapp(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let statuses = state.services.sync_whatsapp_templates(&caller).await?;
    Ok(Json(json!({"items": statuses})))
}

/// `GET /v1/templates`: every template, by name, as `GET /v1/templates/{name}` shows it
/// (without Meta's statuses).
async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let templates = state
        .services
        .templates
        .list_templates(&caller.tenant)
        .await?;
    let items: Vec<_> = templates.iter().map(|t| t.view()).collect();
    Ok(Json(json!({"items": items})))
}

/// `GET /v1/templates/{name}`: the definition in use, every version, and Meta's status per
/// language of its WhatsApp template.
async fn read(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let template = state.services.template(&caller.tenant, &name).await?;
    Ok(Json(
        state
            .services
            .template_view(&caller.tenant, &template)
            .await?,
    ))
}

/// `PUT /v1/templates/{name}`: the next version, a draft (`201`).
async fn write(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    body: Result<Json<TemplateDefinition>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let definition = json_body(body)?;
    let template = state
        .services
        .put_template(&caller, &name, definition)
        .await?;
    Ok((StatusCode::CREATED, Json(template.view())))
}

async fn step(
    state: &AppState,
    caller: &omni_core::service::Caller,
    name: &str,
    step: Step,
) -> Result<Json<serde_json::Value>, ApiError> {
    let template = state.services.template_step(caller, name, step).await?;
    Ok(Json(template.view()))
}

/// `POST /v1/templates/{name}/submit`: the draft becomes pending.
async fn submit(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    step(&state, &caller, &name, Step::Submit).await
}

/// `POST /v1/templates/{name}/approve`: the pending version is approved (and in use).
async fn approve(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    step(&state, &caller, &name, Step::Approve).await
}

/// `POST /v1/templates/{name}/reject {"reason"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rejection {
    reason: String,
}

async fn reject(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    body: Result<Json<Rejection>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = json_body(body)?;
    step(&state, &caller, &name, Step::Reject(body.reason)).await
}
