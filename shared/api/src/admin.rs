//! The admin API (`Authorization: Bearer $OMNI_ADMIN_TOKEN`): tenants, carrier
//! configurations, numbers, API keys.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, put};
use axum::Json;
use chrono::Utc;
use omni_core::autoreply::AutoReplies;
use omni_core::domain::{Address, Channel, ProviderKind, Region, TenantId};
use omni_core::model::{ApiKeyInfo, FallbackStep, NumberRoute, Routing, Tenant};
use omni_core::providers::Credentials;
use omni_core::team::{Actor, Role};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::access::AdminAuth;
use crate::error::ApiError;
use crate::routes::Routes;
use crate::AppState;

/// The admin API as a finished router (the `admin` function on AWS).
pub fn app(state: AppState) -> axum::Router {
    let cors = state.cors.clone();
    crate::routes::finish(routes(state).into_router(), &cors)
}

/// The admin routes (the `admin` function on AWS).
pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/v1/admin/tenants/{tenant_id}",
            &[Method::PUT],
            put(put_tenant).with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/providers",
            &[Method::GET],
            get(list_providers).with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/providers/{provider}",
            &[Method::PUT, Method::DELETE],
            put(put_provider)
                .delete(delete_provider)
                .with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/numbers/{number}",
            &[Method::PUT, Method::DELETE],
            put(put_number)
                .delete(delete_number)
                .with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/routing",
            &[Method::GET, Method::PUT],
            get(get_routing).put(put_routing).with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/fallback",
            &[Method::GET, Method::PUT],
            get(get_fallback)
                .put(put_fallback)
                .with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/auto-replies",
            &[Method::GET, Method::PUT],
            get(get_auto_replies)
                .put(put_auto_replies)
                .with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/api-keys",
            &[Method::GET, Method::POST],
            get(list_api_keys)
                .post(create_api_key)
                .with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/api-keys/{id}",
            &[Method::DELETE],
            delete(revoke_api_key).with_state(state.clone()),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/users",
            &[Method::POST],
            axum::routing::post(create_user).with_state(state.clone()),
        )
        .merge(crate::livechat::admin_routes(state.clone()))
        .merge(crate::delivery_log::admin_routes(state.clone()))
        .merge(crate::waba::routes(state.clone()))
        .merge(crate::team::platform_audit_routes(state.clone()))
        .merge(crate::event_webhooks::routes(state))
}

/// Records an admin change in the tenant's audit log (never a secret: credentials are not
/// in `details`).
async fn audit(
    state: &AppState,
    tenant: &TenantId,
    actor: &Actor,
    action: &str,
    target: &str,
    details: serde_json::Value,
) {
    state
        .services
        .audit(tenant, actor, action, Some(target.to_owned()), details)
        .await;
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

async fn existing_tenant(state: &AppState, raw: &str) -> Result<Tenant, ApiError> {
    let id = tenant_id(raw)?;
    state
        .services
        .tenants
        .get_tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    name: String,
    #[serde(default)]
    default_region: Option<Region>,
    #[serde(default)]
    help_text: Option<String>,
}

async fn put_tenant(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
    body: Result<Json<TenantBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = tenant_id(&raw)?;
    let body = json_body(body)?;
    if body.name.trim().is_empty() || body.name.len() > 200 {
        return Err(ApiError::invalid("name must be 1 to 200 characters"));
    }
    if body
        .help_text
        .as_ref()
        .is_some_and(|h| h.chars().count() > 320)
    {
        return Err(ApiError::invalid(
            "help_text must be at most 320 characters",
        ));
    }
    let now = Utc::now();
    // The fallback defaults have their own route: a PUT of the tenant keeps them.
    let fallback = state
        .services
        .tenants
        .get_tenant(&id)
        .await?
        .map(|t| t.fallback)
        .unwrap_or_default();
    let tenant = Tenant {
        id,
        name: body.name.trim().to_string(),
        default_region: body.default_region.unwrap_or_default(),
        help_text: body.help_text,
        created_at: now,
        updated_at: now,
        fallback,
    };
    let stored = state.services.tenants.put_tenant(&tenant).await?;
    info!(tenant_id = %stored.id, "tenant saved");
    let details = json!({"name": stored.name, "default_region": stored.default_region});
    audit(&state, &stored.id, &actor, "tenant.put", "tenant", details).await;
    Ok(Json(stored))
}

fn provider(raw: &str) -> Result<ProviderKind, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("provider"))
}

async fn put_provider(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path((raw_tenant, raw_provider)): Path<(String, String)>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw_tenant).await?;
    let kind = provider(&raw_provider)?;
    let credentials =
        Credentials::from_admin_json(kind, json_body(body)?).map_err(ApiError::invalid)?;
    state
        .services
        .secrets
        .put_credentials(&tenant.id, &credentials)
        .await?;
    info!(tenant_id = %tenant.id, provider = %kind, "provider configured");
    let target = format!("provider:{kind}");
    audit(
        &state,
        &tenant.id,
        &actor,
        "provider.put",
        &target,
        json!(null),
    )
    .await;
    Ok(Json(json!({"provider": kind, "configured": true})))
}

async fn list_providers(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    let mut items = Vec::new();
    for kind in state
        .services
        .secrets
        .configured_providers(&tenant.id)
        .await?
    {
        if let Some(creds) = state
            .services
            .secrets
            .get_credentials(&tenant.id, kind)
            .await?
        {
            items.push(json!({"provider": kind, "configured": true, "config": creds.redacted()}));
        }
    }
    Ok(Json(json!({"items": items})))
}

async fn delete_provider(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path((raw_tenant, raw_provider)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw_tenant).await?;
    let kind = provider(&raw_provider)?;
    if !state
        .services
        .secrets
        .delete_credentials(&tenant.id, kind)
        .await?
    {
        return Err(ApiError::not_found("provider configuration"));
    }
    info!(tenant_id = %tenant.id, provider = %kind, "provider removed");
    let target = format!("provider:{kind}");
    audit(
        &state,
        &tenant.id,
        &actor,
        "provider.delete",
        &target,
        json!(null),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NumberBody {
    provider: ProviderKind,
    channels: Vec<Channel>,
    /// Sends a second the number's carrier allows from it (e.g. 1 for a long code).
    #[serde(default)]
    max_per_second: Option<u32>,
}

/// The fastest pace a number may be given: beyond it pacing is the carrier's business.
const MAX_PER_SECOND: u32 = 1_000;

async fn put_number(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path((raw_tenant, raw_number)): Path<(String, String)>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw_tenant).await?;
    let number = Address::parse(&raw_number, tenant.default_region)
        .map_err(omni_core::service::ServiceError::from)?;
    let body = json_body(body)?;
    if body.channels.is_empty() {
        return Err(ApiError::invalid("channels must not be empty"));
    }
    if body
        .max_per_second
        .is_some_and(|r| r == 0 || r > MAX_PER_SECOND)
    {
        return Err(ApiError::invalid(format!(
            "max_per_second must be 1 to {MAX_PER_SECOND}"
        )));
    }
    // An email address carries email only, a phone number everything but email.
    let email = number.email().is_some();
    if let Some(wrong) = body
        .channels
        .iter()
        .find(|c| (**c == Channel::Email) != email)
    {
        return Err(ApiError::invalid(format!(
            "channels: {wrong} is not carried by {}",
            if email {
                "an email address"
            } else {
                "a phone number"
            }
        )));
    }
    let adapter = state.services.providers.get(body.provider).ok_or_else(|| {
        ApiError::invalid(format!(
            "provider {} is not available on this server",
            body.provider
        ))
    })?;
    if let Some(unsupported) = body
        .channels
        .iter()
        .find(|c| !adapter.channels().contains(c))
    {
        return Err(ApiError::invalid(format!(
            "{} does not carry {unsupported}",
            body.provider
        )));
    }
    let mut channels = body.channels;
    channels.sort();
    channels.dedup();
    let route = NumberRoute {
        number,
        tenant_id: tenant.id.clone(),
        provider: body.provider,
        channels,
        updated_at: Utc::now(),
        max_per_second: body.max_per_second,
    };
    let stored = state.services.tenants.put_number(&route).await?;
    info!(tenant_id = %tenant.id, provider = %stored.provider, "number routed");
    let target = format!("number:{}", stored.number);
    let details = json!({"provider": stored.provider, "channels": stored.channels,
        "max_per_second": stored.max_per_second});
    audit(&state, &tenant.id, &actor, "number.put", &target, details).await;
    Ok(Json(stored))
}

async fn delete_number(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path((raw_tenant, raw_number)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw_tenant).await?;
    let number = Address::parse(&raw_number, tenant.default_region)
        .map_err(omni_core::service::ServiceError::from)?;
    if !state
        .services
        .tenants
        .delete_number(&tenant.id, &number)
        .await?
    {
        return Err(ApiError::not_found("number"));
    }
    let target = format!("number:{number}");
    audit(
        &state,
        &tenant.id,
        &actor,
        "number.delete",
        &target,
        json!(null),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Carriers a routing list may name per channel: more would only lengthen a failing
/// message's road to the dead-letter queue.
const MAX_FALLBACKS: usize = 5;

/// `PUT .../routing` `{"sms": ["twilio", "voipms"], ...}`: the tenant's carriers per channel in
/// priority order (failover). Replaces the whole routing; `{}` removes every fallback.
async fn put_routing(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
    body: Result<Json<Routing>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    let routing = json_body(body)?;
    for (channel, providers) in &routing.0 {
        if providers.is_empty() || providers.len() > MAX_FALLBACKS {
            return Err(ApiError::invalid(format!(
                "{channel}: list 1 to {MAX_FALLBACKS} providers"
            )));
        }
        for (i, provider) in providers.iter().enumerate() {
            if providers[..i].contains(provider) {
                return Err(ApiError::invalid(format!(
                    "{channel}: {provider} is listed twice"
                )));
            }
            let adapter = state.services.providers.get(*provider).ok_or_else(|| {
                ApiError::invalid(format!(
                    "provider {provider} is not available on this server"
                ))
            })?;
            if !adapter.channels().contains(channel) {
                return Err(ApiError::invalid(format!(
                    "{provider} does not carry {channel}"
                )));
            }
        }
    }
    state
        .services
        .tenants
        .put_routing(&tenant.id, &routing)
        .await?;
    info!(tenant_id = %tenant.id, channels = routing.0.len(), "routing saved");
    let details = serde_json::to_value(&routing).unwrap_or_default();
    audit(
        &state,
        &tenant.id,
        &actor,
        "routing.put",
        "routing",
        details,
    )
    .await;
    Ok(Json(routing))
}

async fn get_routing(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    Ok(Json(state.services.tenants.get_routing(&tenant.id).await?))
}

/// `PUT /v1/admin/tenants/{t}/fallback` `{"whatsapp": [{"channel": "sms", "after_secs": 300}]}`:
/// the fallback steps of a send that gives none, by its first channel. Replaces them all; `{}`
/// removes them. Checked as a send's steps are, except that a channel none of the tenant's
/// numbers carries yet is accepted (and passed over until one does).
async fn put_fallback(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
    body: Result<Json<BTreeMap<Channel, Vec<FallbackStep>>>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let mut tenant = existing_tenant(&state, &raw).await?;
    let fallback = json_body(body)?;
    for (channel, steps) in &fallback {
        state
            .services
            .check_fallback(*channel, steps)
            .map_err(ApiError::from)?;
    }
    tenant.fallback = fallback;
    tenant.updated_at = Utc::now();
    let stored = state.services.tenants.put_tenant(&tenant).await?;
    let details = serde_json::to_value(&stored.fallback).unwrap_or_default();
    audit(
        &state,
        &stored.id,
        &actor,
        "fallback.put",
        "fallback",
        details,
    )
    .await;
    Ok(Json(stored.fallback))
}

async fn get_fallback(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(existing_tenant(&state, &raw).await?.fallback))
}

/// `PUT /v1/admin/tenants/{t}/auto-replies`: replaces them; answers them as stored.
async fn put_auto_replies(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
    body: Result<Json<AutoReplies>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    let settings = json_body(body)?;
    let saved = state
        .services
        .put_auto_replies(&tenant.id, settings, &actor)
        .await?;
    Ok(Json(saved))
}

async fn get_auto_replies(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    Ok(Json(
        state.services.tenants.get_auto_replies(&tenant.id).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApiKeyBody {
    #[serde(default)]
    name: Option<String>,
    /// `admin` unless given.
    #[serde(default)]
    role: Option<Role>,
}

/// A key as the admin API lists it: never the key, nor its hash.
fn key_json(key: &ApiKeyInfo) -> serde_json::Value {
    json!({
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
    })
}

/// `POST .../api-keys`, optionally `{"name": "..."}`: the key is in this answer only.
async fn create_api_key(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    let body: ApiKeyBody = if body.iter().all(u8::is_ascii_whitespace) {
        ApiKeyBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(e.to_string()))?
    };
    let name = body.name.map(|n| n.trim().to_string());
    if name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 100)
    {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
    }
    let role = body.role.unwrap_or(Role::Admin);
    let issued = state.services.issue_api_key(&tenant.id, name, role).await?;
    info!(tenant_id = %tenant.id, key_id = %issued.info.id, "api key issued");
    let target = format!("api_key:{}", issued.info.id);
    let details = json!({"name": issued.info.name, "role": issued.info.role});
    audit(
        &state,
        &tenant.id,
        &actor,
        "api_key.create",
        &target,
        details,
    )
    .await;
    let mut answer = key_json(&issued.info);
    answer["key"] = issued.key.into();
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET .../api-keys`: the tenant's keys, oldest first.
async fn list_api_keys(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    let keys = state.services.tenants.list_api_keys(&tenant.id).await?;
    Ok(Json(
        json!({"items": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

/// `DELETE .../api-keys/{id}`: the key stops working at once and its dashboards are closed.
async fn revoke_api_key(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path((raw, key_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    if !state.services.revoke_api_key(&tenant.id, &key_id).await? {
        return Err(ApiError::not_found("api key"));
    }
    let target = format!("api_key:{key_id}");
    audit(
        &state,
        &tenant.id,
        &actor,
        "api_key.revoke",
        &target,
        json!(null),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../users`: the platform operator invites a tenant's first admin (or anyone); the
/// tenant's admins may too.
async fn create_user(
    State(state): State<AppState>,
    AdminAuth(actor): AdminAuth,
    Path(raw): Path<String>,
    body: Result<Json<crate::team::NewUser>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = existing_tenant(&state, &raw).await?;
    crate::team::invite(&state, &tenant.id, json_body(body)?, &actor).await
}
