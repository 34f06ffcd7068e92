//! Who may call which route: the one table the server enforces (the README's "Roles and
//! permissions" shows the same table, and a test holds every route, every role and the
//! README to it), and the extractors that enforce it.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, MatchedPath, Path};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use omni_core::service::{Caller, ServiceError, API_KEY_PREFIX, SESSION_PREFIX};
use omni_core::team::{Actor, Permission};
use subtle::ConstantTimeEq;

use crate::dispatch::bearer;
use crate::error::ApiError;
use crate::{AppState, ClientAddr};

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nobody in particular: carriers (their signatures are checked), the console's files,
    /// health, the OpenAPI document, signing in and accepting an invite.
    Public,
    /// The platform admin token only.
    Platform,
    /// Any user or API key of a tenant.
    Signed,
    /// A user or API key whose role holds the permission.
    Tenant(Permission),
    /// The platform admin token, or a user or API key of the tenant named in the path whose
    /// role holds the permission.
    PlatformOr(Permission),
}

impl Access {
    /// The name the README's table gives it.
    pub fn name(self) -> String {
        match self {
            Access::Public => "public".into(),
            Access::Platform => "platform".into(),
            Access::Signed => "signed in".into(),
            Access::Tenant(p) => p.as_str().into(),
            Access::PlatformOr(p) => format!("platform or {p}"),
        }
    }
}

/// Every route that is not [`Access::Public`], by method and path (axum's `{param}` syntax).
pub const TABLE: &[(Method, &str, Access)] = {
    use Access::*;
    use Permission::*;
    &[
        (Method::POST, "/v1/messages", Tenant(MessagesSend)),
        (Method::POST, "/v1/messages/batch", Tenant(MessagesSend)),
        (Method::GET, "/v1/messages", Tenant(DeliveryLogRead)),
        (Method::GET, "/v1/webhook-events", Tenant(DeliveryLogRead)),
        (
            Method::POST,
            "/v1/messages/{id}/retry",
            Tenant(MessagesRetry),
        ),
        (Method::GET, "/v1/messages/{id}", Tenant(MessagesRead)),
        (Method::DELETE, "/v1/messages/{id}", Tenant(MessagesSend)),
        (
            Method::GET,
            "/v1/messages/{id}/media/{index}",
            Tenant(MessagesRead),
        ),
        (
            Method::PUT,
            "/v1/messages/{id}/star",
            Tenant(ConversationsWrite),
        ),
        (
            Method::DELETE,
            "/v1/messages/{id}/star",
            Tenant(ConversationsWrite),
        ),
        (Method::GET, "/v1/conversations", Tenant(ConversationsRead)),
        (
            Method::GET,
            "/v1/conversations/{id}/messages",
            Tenant(ConversationsRead),
        ),
        (
            Method::POST,
            "/v1/conversations/{id}/read",
            Tenant(ConversationsWrite),
        ),
        (
            Method::POST,
            "/v1/conversations/{id}/assign",
            Tenant(ConversationsWrite),
        ),
        (
            Method::POST,
            "/v1/conversations/{id}/resolve",
            Tenant(ConversationsWrite),
        ),
        (
            Method::POST,
            "/v1/conversations/{id}/reopen",
            Tenant(ConversationsWrite),
        ),
        (
            Method::POST,
            "/v1/conversations/{id}/notes",
            Tenant(NotesWrite),
        ),
        (Method::GET, "/v1/audit", Tenant(AuditRead)),
        (Method::GET, "/v1/ws", Tenant(ConversationsRead)),
        // Dispatchers read approved templates for canned replies.
        (Method::GET, "/v1/templates", Tenant(TemplatesRead)),
        (Method::GET, "/v1/templates/{name}", Tenant(TemplatesRead)),
        (Method::PUT, "/v1/templates/{name}", Tenant(TemplatesManage)),
        (
            Method::POST,
            "/v1/templates/{name}/submit",
            Tenant(TemplatesManage),
        ),
        (
            Method::POST,
            "/v1/templates/{name}/approve",
            Tenant(TemplatesManage),
        ),
        (
            Method::POST,
            "/v1/templates/{name}/reject",
            Tenant(TemplatesManage),
        ),
        (
            Method::POST,
            "/v1/templates/sync/whatsapp",
            Tenant(TemplatesManage),
        ),
        (Method::GET, "/v1/me", Signed),
        (Method::POST, "/v1/me/password", Signed),
        (Method::POST, "/v1/auth/logout", Signed),
        // Listing names whom to assign: supervisors too.
        (Method::GET, "/v1/users", Tenant(ConversationsAssignOthers)),
        (Method::POST, "/v1/users", Tenant(UsersManage)),
        (Method::PATCH, "/v1/users/{id}", Tenant(UsersManage)),
        (Method::GET, "/v1/webhooks", Tenant(TenantManage)),
        (Method::POST, "/v1/webhooks", Tenant(TenantManage)),
        (Method::GET, "/v1/webhooks/{id}", Tenant(TenantManage)),
        (Method::PATCH, "/v1/webhooks/{id}", Tenant(TenantManage)),
        (Method::DELETE, "/v1/webhooks/{id}", Tenant(TenantManage)),
        (
            Method::POST,
            "/v1/webhooks/{id}/rotate-secret",
            Tenant(TenantManage),
        ),
        (Method::POST, "/v1/webhooks/{id}/test", Tenant(TenantManage)),
        (
            Method::GET,
            "/v1/webhooks/{id}/deliveries",
            Tenant(TenantManage),
        ),
        (
            Method::POST,
            "/v1/webhooks/{id}/deliveries/{delivery}/retry",
            Tenant(TenantManage),
        ),
        (Method::PUT, "/v1/admin/tenants/{tenant_id}", Platform),
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/providers",
            PlatformOr(TenantManage),
        ),
        (
            Method::PUT,
            "/v1/admin/tenants/{tenant_id}/providers/{provider}",
            PlatformOr(TenantManage),
        ),
        (
            Method::DELETE,
            "/v1/admin/tenants/{tenant_id}/providers/{provider}",
            PlatformOr(TenantManage),
        ),
        (
            Method::PUT,
            "/v1/admin/tenants/{tenant_id}/numbers/{number}",
            PlatformOr(TenantManage),
        ),
        (
            Method::DELETE,
            "/v1/admin/tenants/{tenant_id}/numbers/{number}",
            PlatformOr(TenantManage),
        ),
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/routing",
            PlatformOr(TenantManage),
        ),
        (
            Method::PUT,
            "/v1/admin/tenants/{tenant_id}/routing",
            PlatformOr(TenantManage),
        ),
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/fallback",
            PlatformOr(TenantManage),
        ),
        (
            Method::PUT,
            "/v1/admin/tenants/{tenant_id}/fallback",
            PlatformOr(TenantManage),
        ),
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/auto-replies",
            PlatformOr(TenantManage),
        ),
        (
            Method::PUT,
            "/v1/admin/tenants/{tenant_id}/auto-replies",
            PlatformOr(TenantManage),
        ),
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/api-keys",
            PlatformOr(ApiKeysManage),
        ),
        (
            Method::POST,
            "/v1/admin/tenants/{tenant_id}/api-keys",
            PlatformOr(ApiKeysManage),
        ),
        (
            Method::DELETE,
            "/v1/admin/tenants/{tenant_id}/api-keys/{id}",
            PlatformOr(ApiKeysManage),
        ),
        (
            Method::POST,
            "/v1/admin/tenants/{tenant_id}/users",
            PlatformOr(UsersManage),
        ),
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/livechat",
            PlatformOr(TenantManage),
        ),
        (
            Method::PUT,
            "/v1/admin/tenants/{tenant_id}/livechat",
            PlatformOr(TenantManage),
        ),
        (
            Method::POST,
            "/v1/admin/tenants/{tenant_id}/livechat/rotate-secret",
            PlatformOr(TenantManage),
        ),
        (Method::GET, "/v1/admin/whatsapp/waba-routes", Platform),
        (
            Method::PUT,
            "/v1/admin/whatsapp/waba-routes/{waba_id}",
            Platform,
        ),
        (
            Method::DELETE,
            "/v1/admin/whatsapp/waba-routes/{waba_id}",
            Platform,
        ),
        (Method::GET, "/v1/admin/webhook-events", Platform),
        (Method::GET, "/v1/admin/audit", Platform),
    ]
};

/// What `method path` asks of its caller; [`Access::Public`] for a route the table does not
/// list.
pub fn access(method: &Method, path: &str) -> Access {
    TABLE
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map_or(Access::Public, |(_, _, a)| *a)
}

/// The route's entry in [`TABLE`], from the path axum matched.
fn route_access(parts: &Parts) -> Access {
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or_default();
    access(&parts.method, path)
}

/// A route listed as one thing and extracting another is a bug of ours, not the caller's.
fn misconfigured(access: Access) -> ApiError {
    tracing::error!(?access, "route access does not match its extractor");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

/// The authenticated caller of a tenant route, already checked against [`TABLE`]. Every
/// tenant-scoped read and write is keyed by its tenant, never by request data.
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let access = route_access(parts);
        let caller = caller(parts, state).await?;
        match access {
            Access::Signed => {}
            Access::Tenant(permission) => caller.require(permission)?,
            other => return Err(misconfigured(other)),
        }
        Ok(Auth(caller))
    }
}

/// The caller behind the request's bearer token (`?token=` on the WebSocket).
pub async fn caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let client = ClientAddr::of(&parts.extensions);
    let token = bearer(&parts.headers).unwrap_or_default();
    Ok(state.services.authenticate_caller(token, client).await?)
}

/// Who called an admin route: the platform operator (admin token, compared in constant
/// time) or, where the table allows, a user or API key of the tenant in the path whose role
/// holds the permission.
pub struct AdminAuth(pub Actor);

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let access = route_access(parts);
        let token = bearer(&parts.headers).unwrap_or_default();
        let tenant_token = token.starts_with(API_KEY_PREFIX) || token.starts_with(SESSION_PREFIX);
        match access {
            Access::Platform | Access::PlatformOr(_) if !tenant_token => {
                platform(parts, state, token).await?;
                Ok(AdminAuth(Actor::platform()))
            }
            Access::Platform => {
                caller(parts, state).await?;
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "forbidden: this needs the platform admin token",
                ))
            }
            Access::PlatformOr(permission) => {
                let caller = caller(parts, state).await?;
                caller.require(permission)?;
                let Path(params) =
                    Path::<HashMap<String, String>>::from_request_parts(parts, state)
                        .await
                        .map_err(|e| ApiError::invalid(e.body_text()))?;
                if params.get("tenant_id").map(String::as_str) != Some(caller.tenant.as_str()) {
                    return Err(ServiceError::Forbidden(permission).into());
                }
                Ok(AdminAuth(caller.actor))
            }
            other => Err(misconfigured(other)),
        }
    }
}

/// Checks the platform admin token, counting failures against the address.
async fn platform(parts: &Parts, state: &AppState, token: &str) -> Result<(), ApiError> {
    use omni_core::service::AuthScope;
    let client = ClientAddr::of(&parts.extensions);
    let services = &state.services;
    services.auth_allowed(client, &AuthScope::Admin)?;
    let expected = state.admin_token.expose().as_bytes();
    if expected.is_empty() || !bool::from(token.as_bytes().ct_eq(expected)) {
        services.auth_failed(client, &AuthScope::Admin).await;
        return Err(ApiError::unauthorized());
    }
    Ok(())
}
