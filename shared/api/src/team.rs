//! A tenant's team: users (invite, list, change), signing in and out, and who the caller is.

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::Json;
use chrono::{DateTime, Utc};
use omni_core::domain::TenantId;
use omni_core::model::AuditQuery;
use omni_core::service::UserChange;
use omni_core::team::{Actor, Role};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::access::{AdminAuth, Auth};
use crate::dispatch::{page_limit, page_query};
use crate::error::ApiError;
use crate::routes::Routes;
use crate::{AppState, ClientAddr};

/// Users, sign-in and `/v1/me` (served by the `conversations` function on AWS).
pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/users",
            &[Method::GET, Method::POST],
            get(list_users).post(create_user).with_state(state.clone()),
        )
        .route(
            "/v1/users/{id}",
            &[Method::PATCH],
            patch(change_user).with_state(state.clone()),
        )
        .route(
            "/v1/auth/invite",
            &[Method::POST],
            post(accept_invite).with_state(state.clone()),
        )
        .route(
            "/v1/auth/login",
            &[Method::POST],
            post(login).with_state(state.clone()),
        )
        .route(
            "/v1/auth/logout",
            &[Method::POST],
            post(logout).with_state(state.clone()),
        )
        .route("/v1/me", &[Method::GET], get(me).with_state(state.clone()))
        .route(
            "/v1/me/password",
            &[Method::POST],
            post(change_password).with_state(state.clone()),
        )
        .route("/v1/audit", &[Method::GET], get(audit).with_state(state))
}

/// A JSON body, or the contract's 400 naming what is wrong with it.
pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(ApiError::from)
}

/// `POST /v1/users` and `POST /v1/admin/tenants/{t}/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    name: String,
    role: Role,
}

/// Invites a user: `201 {"user", "invite_url", "invite_token"}`; the URL opens the console's
/// set-password form.
pub async fn invite(
    state: &AppState,
    tenant: &TenantId,
    body: NewUser,
    by: &Actor,
) -> Result<impl IntoResponse, ApiError> {
    let (user, token) = state
        .services
        .invite_user(tenant, &body.email, &body.name, body.role, by)
        .await?;
    let base = state.services.settings.public_url.trim_end_matches('/');
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "user": user,
            "invite_url": format!("{base}/#invite={token}"),
            "invite_token": token,
        })),
    ))
}

async fn create_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    invite(&state, &caller.tenant, json_body(body)?, &caller.actor).await
}

async fn list_users(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let users = state.services.team.list_users(&caller.tenant).await?;
    Ok(Json(json!({"items": users})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    name: Option<String>,
    role: Option<Role>,
    disabled: Option<bool>,
}

async fn change_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: Result<Json<UserPatch>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("user"))?;
    let body = json_body(body)?;
    let user = state
        .services
        .change_user(
            &caller.tenant,
            id,
            UserChange {
                name: body.name,
                role: body.role,
                disabled: body.disabled,
            },
            &caller.actor,
        )
        .await?;
    Ok(Json(user))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteAcceptance {
    token: String,
    password: String,
}

async fn accept_invite(
    State(state): State<AppState>,
    body: Result<Json<InviteAcceptance>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = json_body(body)?;
    let user = state
        .services
        .accept_invite(&body.token, &body.password)
        .await?;
    Ok(Json(json!({"user": user})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    tenant: String,
    email: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientAddr>>,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = json_body(body)?;
    let client = client.map(|axum::Extension(c)| c.0);
    let signed_in = state
        .services
        .login(&body.tenant, &body.email, &body.password, client)
        .await?;
    Ok(Json(json!({
        "token": signed_in.token,
        "expires_at": signed_in.expires_at,
        "user": signed_in.user,
    })))
}

async fn logout(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    state.services.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`: the tenant, the role, the caller as history names it and, for a person,
/// their user record.
async fn me(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let user = match caller.user_id() {
        Some(id) => Some(state.services.user(&caller.tenant, id).await?),
        None => None,
    };
    Ok(Json(json!({
        "tenant_id": caller.tenant,
        "role": caller.role,
        "actor": caller.actor,
        "user": user,
    })))
}

/// `POST /v1/me/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password: `204`, and every session of theirs has ended.
async fn change_password(
    State(state): State<AppState>,
    Auth(caller): Auth,
    body: Result<Json<PasswordChange>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = json_body(body)?;
    state
        .services
        .change_password(&caller, &body.current_password, &body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/audit?since=&until=&actor=&action=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
struct AuditParams {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The tenant's audit log, newest first.
async fn audit(
    State(state): State<AppState>,
    Auth(caller): Auth,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    audit_page(&state, &caller.tenant, query).await
}

/// `GET /v1/admin/audit`: the platform's own audit log (changes that belong to no tenant,
/// such as WhatsApp Business Account routes), newest first, for the platform admin.
pub fn platform_audit_routes(state: AppState) -> Routes {
    Routes::default().route(
        "/v1/admin/audit",
        &[Method::GET],
        get(platform_audit).with_state(state),
    )
}

async fn platform_audit(
    State(state): State<AppState>,
    _: AdminAuth,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    audit_page(&state, &TenantId::platform(), query).await
}

/// One page of `scope`'s audit log, as the query asks.
async fn audit_page(
    state: &AppState,
    scope: &TenantId,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<omni_core::model::Page<omni_core::model::AuditEntry>>, ApiError> {
    let q = page_query(query)?;
    let filter = AuditQuery {
        since: q.since,
        until: q.until,
        actor: q.actor,
        action: q.action,
    };
    let page = state
        .services
        .messages
        .list_audit(scope, &filter, page_limit(q.limit)?, q.cursor.as_deref())
        .await?;
    Ok(Json(page))
}
