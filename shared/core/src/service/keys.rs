//! Tenant API keys: issuing, authenticating (with the time of last use), listing and
//! revoking. A revoked key stops at once everywhere: every request looks its hash up in the
//! store (no cache), and its dashboards are disconnected through the [`crate::ports::Push`]
//! port.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use tracing::{info, warn};

use super::{hash_api_key, AuthScope, ServiceError, Services, API_KEY_PREFIX};
use crate::domain::TenantId;
use crate::model::{ApiKeyInfo, ApiKeyOwner};
use crate::team::Role;

/// Characters of a key kept and listed: `omk_` and 8 hex digits (32 of its 192 random bits)
/// recognise a leaked key without helping anyone guess it.
const PREFIX_CHARS: usize = API_KEY_PREFIX.len() + 8;

/// How often a key's last use is written: to the minute is all an operator needs, and a
/// write per request would double the store's traffic.
const USAGE_EVERY: Duration = Duration::from_secs(60);

/// Keys whose use this process recorded recently (per function instance on Lambda).
#[derive(Debug, Default)]
pub struct ApiKeyUsage {
    recorded: Mutex<HashMap<String, Instant>>,
}

impl ApiKeyUsage {
    /// Whether `key_id`'s use is due to be written now (and notes that it is).
    fn due(&self, key_id: &str) -> bool {
        let now = Instant::now();
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        if recorded
            .get(key_id)
            .is_some_and(|at| now.duration_since(*at) < USAGE_EVERY)
        {
            return false;
        }
        // Forget what is stale so the map holds at most the keys used in the last minute.
        recorded.retain(|_, at| now.duration_since(*at) < USAGE_EVERY);
        recorded.insert(key_id.to_owned(), now);
        true
    }
}

/// A key just issued: the only time the key itself is seen.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// As listed.
    pub info: ApiKeyInfo,
    /// The key (`omk_…`).
    pub key: String,
}

impl Services {
    /// The tenant an API key belongs to, presented by `client` (when its address is known,
    /// repeated failures slow it down and then lock it out).
    pub async fn authenticate(
        &self,
        api_key: &str,
        client: Option<IpAddr>,
    ) -> Result<TenantId, ServiceError> {
        self.authenticate_key(api_key, client)
            .await
            .map(|owner| owner.tenant)
    }

    /// [`Services::authenticate`], with the key's id (dashboards are closed by it).
    pub async fn authenticate_key(
        &self,
        api_key: &str,
        client: Option<IpAddr>,
    ) -> Result<ApiKeyOwner, ServiceError> {
        self.auth_allowed(client, &AuthScope::ApiKey)?;
        let hash = hash_api_key(api_key);
        let found = if api_key.starts_with(API_KEY_PREFIX) {
            self.tenants.tenant_for_api_key(&hash).await?
        } else {
            None
        };
        let Some(owner) = found else {
            self.auth_failed(client, &AuthScope::ApiKey).await;
            return Err(ServiceError::Unauthorized);
        };
        if self.api_key_usage.due(&owner.key_id) {
            // Bookkeeping: a failed write must not refuse a valid key.
            if let Err(e) = self
                .tenants
                .touch_api_key(&owner.tenant, &owner.key_id, &hash, Utc::now())
                .await
            {
                warn!(error = %e, key_id = %owner.key_id, "could not record the key's use");
            }
        }
        Ok(owner)
    }

    /// Issues an API key with `role` for a tenant; only its hash and prefix are stored.
    pub async fn issue_api_key(
        &self,
        tenant: &TenantId,
        name: Option<String>,
        role: Role,
    ) -> Result<IssuedKey, ServiceError> {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill(&mut bytes);
        let key = format!("{API_KEY_PREFIX}{}", hex::encode(bytes));
        let info = ApiKeyInfo {
            id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            name,
            prefix: Some(key[..PREFIX_CHARS].to_string()),
            created_at: Some(Utc::now()),
            last_used_at: None,
            role,
        };
        self.tenants
            .put_api_key(tenant, &info, &hash_api_key(&key))
            .await?;
        Ok(IssuedKey { info, key })
    }

    /// Revokes a tenant's key: it stops opening requests at once, and the dashboards it
    /// opened are disconnected. False if the tenant has no key of that id.
    pub async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> Result<bool, ServiceError> {
        if !self.tenants.revoke_api_key(tenant, key_id).await? {
            return Ok(false);
        }
        info!(tenant_id = %tenant, key_id, "api key revoked");
        self.push.disconnect_api_key(tenant, key_id).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_written_at_most_once_a_minute_per_key() {
        let usage = ApiKeyUsage::default();
        assert!(usage.due("key_a"));
        assert!(!usage.due("key_a"));
        assert!(usage.due("key_b"));
    }
}
