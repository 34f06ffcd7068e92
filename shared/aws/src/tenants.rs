//! [`TenantStore`] on DynamoDB: tenants, number routes (with a per-tenant mirror written in the
//! same transaction) and API key hashes (likewise mirrored per tenant, for listing and
//! revoking).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};
use omni_core::autoreply::AutoReplies;
use omni_core::domain::{Address, ChatId, TenantId};
use omni_core::livechat::LivechatSettings;
use omni_core::model::{ApiKeyInfo, ApiKeyOwner, NumberRoute, Routing, Tenant};
use omni_core::ports::{StoreError, StoreResult, TenantStore};
use omni_core::team::Role;

use crate::item::{doc, get_s, item, json, key, opt_s, s, values, Item};
use crate::{error_code, sdk_error, AwsBackend};

pub(crate) fn tenant_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}")
}

fn route_key(number: &Address) -> Item {
    key(format!("N#{number}"), "ROUTE")
}

/// Resolves a key by its hash: `tenant`, `key_id`.
fn api_key_key(key_hash: &str) -> Item {
    key(format!("K#{key_hash}"), "KEY")
}

/// A tenant's key as listed: `key_id`, `key_hash`, `doc` ([`ApiKeyInfo`]; absent for keys
/// issued before keys were listed) and `last_used_at`.
fn api_key_mirror(tenant: &TenantId, key_id: &str) -> Item {
    key(tenant_pk(tenant), format!("K#{key_id}"))
}

/// A LiveChat widget by its public key.
fn widget_key(widget: &ChatId) -> Item {
    key(format!("LCW#{widget}"), "LCW")
}

fn mirror_key(tenant: &TenantId, number: &Address) -> Item {
    key(tenant_pk(tenant), format!("N#{number}"))
}

impl AwsBackend {
    /// A strongly consistent read of one item.
    pub(crate) async fn get_item(&self, key: Item) -> StoreResult<Option<Item>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.resources.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item)
    }

    /// A put under `condition` (values `vals`): false when the condition did not hold.
    pub(crate) async fn put_if(
        &self,
        item: Item,
        condition: &str,
        vals: Option<Item>,
    ) -> StoreResult<bool> {
        let out = self
            .ddb
            .put_item()
            .table_name(&self.resources.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(vals)
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }

    /// A put with no condition.
    pub(crate) async fn put_item(&self, item: Item) -> StoreResult<()> {
        self.ddb
            .put_item()
            .table_name(&self.resources.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    /// Every item of a partition whose sort key starts with `prefix` (all of them when it is
    /// empty), in order.
    pub(crate) async fn query_prefix(&self, pk: &str, prefix: &str) -> StoreResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .key_condition_expression(if prefix.is_empty() {
                    "pk = :pk"
                } else {
                    "pk = :pk AND begins_with(sk, :prefix)"
                })
                .set_expression_attribute_values(Some(if prefix.is_empty() {
                    values([(":pk", s(pk))])
                } else {
                    values([(":pk", s(pk)), (":prefix", s(prefix))])
                }))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    pub(crate) fn put_op(
        &self,
        item: Item,
        condition: Option<&str>,
        vals: Option<Item>,
    ) -> StoreResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.resources.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values(vals)
            .build()
            .map_err(|e| sdk_error("Put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub(crate) fn delete_op(
        &self,
        key: Item,
        condition: Option<&str>,
        vals: Option<Item>,
    ) -> StoreResult<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.resources.table)
            .set_key(Some(key))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values(vals)
            .build()
            .map_err(|e| sdk_error("Delete", e))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Runs a transaction; `Ok(false)` when a condition cancelled it.
    pub(crate) async fn transact(&self, items: Vec<TransactWriteItem>) -> StoreResult<bool> {
        match self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let cancelled = e
                    .as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception());
                if cancelled {
                    Ok(false)
                } else {
                    Err(sdk_error("TransactWriteItems", e))
                }
            }
        }
    }
}

/// Whether an SDK error is a failed write condition.
pub(crate) fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    e: &E,
) -> bool {
    error_code(e) == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl TenantStore for AwsBackend {
    async fn put_tenant(&self, tenant: &Tenant) -> StoreResult<Tenant> {
        let mut stored = tenant.clone();
        let key = key(tenant_pk(&tenant.id), "TENANT");
        // On update the first created_at wins: it records when the tenant came to be.
        if let Some(existing) = self.get_item(key.clone()).await? {
            let existing: Tenant = doc(&existing, "doc")?;
            stored.created_at = existing.created_at;
        }
        let mut record = key;
        record.insert("doc".into(), json(&stored)?);
        self.put_item(record).await?;
        Ok(stored)
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        self.get_item(key(tenant_pk(id), "TENANT"))
            .await?
            .map(|i| doc(&i, "doc"))
            .transpose()
    }

    async fn put_number(&self, route: &NumberRoute) -> StoreResult<NumberRoute> {
        let tenant = s(route.tenant_id.as_str());
        let mut record = route_key(&route.number);
        record.insert("tenant".into(), tenant.clone());
        record.insert("doc".into(), json(route)?);
        let mut mirror = mirror_key(&route.tenant_id, &route.number);
        mirror.insert("doc".into(), json(route)?);
        let ops = vec![
            self.put_op(
                record,
                Some("attribute_not_exists(pk) OR tenant = :t"),
                Some(values([(":t", tenant)])),
            )?,
            self.put_op(mirror, None, None)?,
        ];
        if self.transact(ops).await? {
            Ok(route.clone())
        } else {
            Err(StoreError::Conflict(format!(
                "number {} is held by another tenant",
                route.number
            )))
        }
    }

    async fn delete_number(&self, tenant: &TenantId, number: &Address) -> StoreResult<bool> {
        let ops = vec![
            self.delete_op(
                route_key(number),
                Some("tenant = :t"),
                Some(values([(":t", s(tenant.as_str()))])),
            )?,
            self.delete_op(mirror_key(tenant, number), None, None)?,
        ];
        self.transact(ops).await
    }

    async fn number_route(&self, number: &Address) -> StoreResult<Option<NumberRoute>> {
        self.get_item(route_key(number))
            .await?
            .map(|i| doc(&i, "doc"))
            .transpose()
    }

    /// One query of the tenant's partition, which holds its record and its numbers.
    async fn tenant_with_numbers(
        &self,
        tenant: &TenantId,
    ) -> StoreResult<Option<(Tenant, Vec<NumberRoute>)>> {
        let items = self.query_prefix(&tenant_pk(tenant), "").await?;
        let mut record = None;
        let mut numbers = Vec::new();
        for item in &items {
            match get_s(item, "sk")? {
                "TENANT" => record = Some(doc(item, "doc")?),
                sk if sk.starts_with("N#") => numbers.push(doc(item, "doc")?),
                _ => {}
            }
        }
        Ok(record.map(|r| (r, numbers)))
    }

    async fn tenant_numbers(&self, tenant: &TenantId) -> StoreResult<Vec<NumberRoute>> {
        self.query_prefix(&tenant_pk(tenant), "N#")
            .await?
            .iter()
            .map(|i| doc(i, "doc"))
            .collect()
    }

    async fn put_api_key(
        &self,
        tenant: &TenantId,
        key: &ApiKeyInfo,
        key_hash: &str,
    ) -> StoreResult<()> {
        let owner = s(tenant.as_str());
        let mut record = api_key_key(key_hash);
        record.extend(item([
            ("tenant", owner.clone()),
            ("key_id", s(&key.id)),
            ("role", s(key.role.as_str())),
        ]));
        if let Some(name) = &key.name {
            record.insert("name".into(), s(name));
        }
        let mut mirror = api_key_mirror(tenant, &key.id);
        mirror.extend(item([
            ("key_id", s(&key.id)),
            ("key_hash", s(key_hash)),
            ("doc", json(key)?),
        ]));
        let ops = vec![
            self.put_op(
                record,
                Some("attribute_not_exists(pk) OR tenant = :t"),
                Some(values([(":t", owner)])),
            )?,
            self.put_op(mirror, None, None)?,
        ];
        if self.transact(ops).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "API key hash already belongs to another tenant".into(),
            ))
        }
    }

    async fn tenant_for_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyOwner>> {
        let Some(found) = self.get_item(api_key_key(key_hash)).await? else {
            return Ok(None);
        };
        Ok(Some(ApiKeyOwner {
            tenant: TenantId::parse(get_s(&found, "tenant")?)
                .map_err(|_| crate::item::corrupt("tenant id"))?,
            key_id: get_s(&found, "key_id")?.to_owned(),
            name: opt_s(&found, "name").map(str::to_owned),
            // Keys stored before keys had roles are admins.
            role: match opt_s(&found, "role") {
                Some(role) => role.parse().map_err(|_| crate::item::corrupt("role"))?,
                None => Role::Admin,
            },
        }))
    }

    async fn touch_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        // Unconditional: a key issued before keys were listed gets its listing entry (and the
        // hash revoking it needs) on its first use.
        self.ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(api_key_mirror(tenant, key_id)))
            .update_expression("SET last_used_at = :at, key_id = :id, key_hash = :h")
            .set_expression_attribute_values(Some(values([
                (":at", s(at.to_rfc3339_opts(SecondsFormat::Secs, true))),
                (":id", s(key_id)),
                (":h", s(key_hash)),
            ])))
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem", e))?;
        Ok(())
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyInfo>> {
        let mut keys = self
            .query_prefix(&tenant_pk(tenant), "K#")
            .await?
            .iter()
            .map(|i| {
                let mut info = match i.get("doc") {
                    Some(_) => doc::<ApiKeyInfo>(i, "doc")?,
                    None => ApiKeyInfo {
                        id: get_s(i, "key_id")?.to_owned(),
                        name: None,
                        prefix: None,
                        created_at: None,
                        last_used_at: None,
                        role: Role::Admin,
                    },
                };
                info.last_used_at = opt_s(i, "last_used_at")
                    .map(|t| {
                        DateTime::parse_from_rfc3339(t)
                            .map(|t| t.with_timezone(&Utc))
                            .map_err(|_| crate::item::corrupt("last_used_at"))
                    })
                    .transpose()?;
                Ok(info)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Ids are UUIDv7s: their order is their issue order, known or not.
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> StoreResult<bool> {
        let Some(mirror) = self.get_item(api_key_mirror(tenant, key_id)).await? else {
            return Ok(false);
        };
        let hash = get_s(&mirror, "key_hash")?;
        let ops = vec![
            self.delete_op(
                api_key_key(hash),
                Some("attribute_not_exists(pk) OR tenant = :t"),
                Some(values([(":t", s(tenant.as_str()))])),
            )?,
            self.delete_op(api_key_mirror(tenant, key_id), None, None)?,
        ];
        self.transact(ops).await
    }

    async fn put_routing(&self, tenant: &TenantId, routing: &Routing) -> StoreResult<()> {
        let mut record = key(tenant_pk(tenant), "ROUTING");
        record.insert("doc".into(), json(routing)?);
        self.put_item(record).await
    }

    async fn put_auto_replies(&self, tenant: &TenantId, settings: &AutoReplies) -> StoreResult<()> {
        let mut record = key(tenant_pk(tenant), "AUTOREPLY");
        record.insert("doc".into(), json(settings)?);
        self.put_item(record).await
    }

    async fn get_auto_replies(&self, tenant: &TenantId) -> StoreResult<AutoReplies> {
        self.get_item(key(tenant_pk(tenant), "AUTOREPLY"))
            .await?
            .map(|i| doc(&i, "doc"))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The settings item beside the tenant, and a copy under the widget key (read by every
    /// visitor request, so one read finds them), written together; the copy's condition keeps
    /// a key to one tenant.
    async fn put_livechat(&self, settings: &LivechatSettings) -> StoreResult<()> {
        let tenant = s(settings.tenant_id.as_str());
        let mut record = key(tenant_pk(&settings.tenant_id), "LIVECHAT");
        record.insert("doc".into(), json(settings)?);
        let mut by_key = widget_key(&settings.widget_key);
        by_key.insert("tenant".into(), tenant.clone());
        by_key.insert("doc".into(), json(settings)?);
        let ops = vec![
            self.put_op(record, None, None)?,
            self.put_op(
                by_key,
                Some("attribute_not_exists(pk) OR tenant = :t"),
                Some(values([(":t", tenant)])),
            )?,
        ];
        if self.transact(ops).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "the widget key is held by another tenant".into(),
            ))
        }
    }

    async fn get_livechat(&self, tenant: &TenantId) -> StoreResult<Option<LivechatSettings>> {
        self.get_item(key(tenant_pk(tenant), "LIVECHAT"))
            .await?
            .map(|i| doc(&i, "doc"))
            .transpose()
    }

    async fn livechat_by_widget_key(
        &self,
        widget: &ChatId,
    ) -> StoreResult<Option<LivechatSettings>> {
        self.get_item(widget_key(widget))
            .await?
            .map(|i| doc(&i, "doc"))
            .transpose()
    }

    async fn get_routing(&self, tenant: &TenantId) -> StoreResult<Routing> {
        self.get_item(key(tenant_pk(tenant), "ROUTING"))
            .await?
            .map(|i| doc(&i, "doc"))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}
