//! [`SecretStore`] on Secrets Manager: one secret per tenant and carrier, named
//! `<prefix><tenant>/<provider>`, referenced from a table item so a tenant's carriers (and a
//! carrier's tenants) are listed without touching Secrets Manager. Values are cached in memory
//! for a while, as every webhook and send needs them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use omni_core::domain::{ProviderKind, TenantId};
use omni_core::ports::{SecretStore, StoreError, StoreResult};
use omni_core::providers::{Credentials, Secret};

use crate::item::{get_s, key, parse, s, values};
use crate::tenants::tenant_pk;
use crate::{error_code, sdk_error, AwsBackend};

type CacheKey = (TenantId, ProviderKind);

/// Credentials read from Secrets Manager, kept for a time-to-live. A miss (no configuration)
/// is cached too, so an unconfigured carrier does not cost a call per webhook.
#[derive(Debug)]
pub struct SecretCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, (Instant, Option<Credentials>)>>,
}

impl SecretCache {
    /// An empty cache whose entries live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        SecretCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, k: &CacheKey) -> Option<Option<Credentials>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(k)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, c)| c.clone())
    }

    fn set(&self, k: CacheKey, value: Option<Credentials>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(k, (Instant::now(), value));
    }
}

fn config_key(tenant: &TenantId, provider: ProviderKind) -> crate::item::Item {
    key(tenant_pk(tenant), format!("P#{provider}"))
}

impl AwsBackend {
    fn secret_name(&self, tenant: &TenantId, provider: ProviderKind) -> String {
        format!("{}{tenant}/{provider}", self.resources.secret_prefix)
    }

    /// Deletes the secret a table item names (`secret_id`), without a recovery window, so the
    /// same name can be used again at once; one already gone is fine.
    pub(crate) async fn delete_secret_of(&self, item: &crate::item::Item) -> StoreResult<()> {
        let deleted = self
            .secrets
            .delete_secret()
            .secret_id(get_s(item, "secret_id")?)
            .force_delete_without_recovery(true)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(sdk_error("DeleteSecret", e)),
        }
    }

    pub(crate) async fn write_secret(&self, name: &str, value: String) -> StoreResult<()> {
        let created = self
            .secrets
            .create_secret()
            .name(name)
            .secret_string(value.clone())
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceExistsException") => {
                self.secrets
                    .put_secret_value()
                    .secret_id(name)
                    .secret_string(value)
                    .send()
                    .await
                    .map_err(|e| sdk_error("PutSecretValue", e))?;
                Ok(())
            }
            Err(e) => Err(sdk_error("CreateSecret", e)),
        }
    }
}

#[async_trait]
impl SecretStore for AwsBackend {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        credentials: &Credentials,
    ) -> StoreResult<()> {
        let provider = credentials.kind();
        let name = self.secret_name(tenant, provider);
        let value = serde_json::to_string(credentials)
            .map_err(|_| StoreError::Backend("credentials could not be serialised".into()))?;
        self.write_secret(&name, value).await?;
        let mut record = config_key(tenant, provider);
        record.extend(values([
            ("secret_id", s(&name)),
            ("provider", s(provider.as_str())),
            ("tenant", s(tenant.as_str())),
            ("gsi1pk", s(format!("P#{provider}"))),
            ("gsi1sk", s(tenant.as_str())),
        ]));
        self.put_item(record).await?;
        self.cache
            .set((tenant.clone(), provider), Some(credentials.clone()));
        Ok(())
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
    ) -> StoreResult<Option<Credentials>> {
        let cache_key = (tenant.clone(), provider);
        if let Some(hit) = self.cache.get(&cache_key) {
            return Ok(hit);
        }
        let found = match self.get_item(config_key(tenant, provider)).await? {
            None => None,
            Some(record) => {
                let out = self
                    .secrets
                    .get_secret_value()
                    .secret_id(get_s(&record, "secret_id")?)
                    .send()
                    .await
                    .map_err(|e| sdk_error("GetSecretValue", e))?;
                let text = out.secret_string().ok_or_else(|| {
                    StoreError::Backend(format!("secret of {tenant} for {provider} has no string"))
                })?;
                let credentials: Credentials = serde_json::from_str(text).map_err(|_| {
                    StoreError::Backend(format!(
                        "credentials of tenant {tenant} for {provider} could not be decoded"
                    ))
                })?;
                if credentials.kind() != provider {
                    return Err(StoreError::Backend(
                        "credentials stored under the wrong provider".into(),
                    ));
                }
                Some(credentials)
            }
        };
        self.cache.set(cache_key, found.clone());
        Ok(found)
    }

    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
    ) -> StoreResult<bool> {
        let out = self
            .ddb
            .delete_item()
            .table_name(&self.resources.table)
            .set_key(Some(config_key(tenant, provider)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        self.cache.set((tenant.clone(), provider), None);
        match out.attributes {
            Some(old) => self.delete_secret_of(&old).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn configured_providers(&self, tenant: &TenantId) -> StoreResult<Vec<ProviderKind>> {
        self.query_prefix(&tenant_pk(tenant), "P#")
            .await?
            .iter()
            .map(|i| parse(i, "provider"))
            .collect()
    }

    async fn tenants_with_provider(&self, provider: ProviderKind) -> StoreResult<Vec<TenantId>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :p")
                .set_expression_attribute_values(Some(values([(":p", s(format!("P#{provider}")))])))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for record in page.items.unwrap_or_default() {
                out.push(
                    TenantId::parse(get_s(&record, "tenant")?)
                        .map_err(|_| crate::item::corrupt("tenant id"))?,
                );
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }
}

impl AwsBackend {
    /// The string value of a secret: a platform secret (e.g. the admin token, read once at
    /// start-up), or the one a WhatsApp route or webhook endpoint item names.
    pub async fn platform_secret(&self, secret_id: &str) -> StoreResult<Secret> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| sdk_error("GetSecretValue", e))?;
        out.secret_string()
            .map(Secret::new)
            .ok_or_else(|| StoreError::Backend(format!("secret {secret_id} has no string value")))
    }
}
