//! [`WebhookStore`] on DynamoDB and Secrets Manager. A tenant's endpoints and deliveries
//! share the partition `WH#<tenant>` (`E#<id>` and `D#<endpoint>#<id>`); a pending delivery
//! is also in `gsi2` under `WHDUE`, keyed by when it is due, for the dispatcher. An
//! endpoint's secret is the secret `<prefix>_webhook/<tenant>/<id>` (no tenant id has `_`,
//! so it cannot meet a tenant's carrier credentials). The message writes add their
//! deliveries to their own transaction ([`AwsBackend::delivery_ops`]).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem};
use chrono::{DateTime, TimeDelta, Utc};
use omni_core::domain::TenantId;
use omni_core::model::Page;
use omni_core::ports::{PushEvent, Queue, StoreError, StoreResult, WebhookStore};
use omni_core::providers::Secret;
use omni_core::service::delivery_job;
use omni_core::webhook::{deliveries_for, DeliveryState, WebhookDelivery, WebhookEndpoint};
use tracing::warn;
use uuid::Uuid;

use crate::item::{
    corrupt, doc, get_s, get_uuid, json, key, n, opt_s, parse_ts, s, ts, values, Item,
};
use crate::tenants::is_condition_failure;
use crate::{sdk_error, AwsBackend};

/// The due-deliveries partition of `gsi2`.
const DUE: &str = "WHDUE";

/// Most deliveries listed at once.
const MAX_PAGE: usize = 100;

/// How long a delivery's record is kept (its retries end within two days).
const DELIVERY_TTL: TimeDelta = TimeDelta::days(30);

fn pk(tenant: &TenantId) -> String {
    format!("WH#{tenant}")
}

fn endpoint_key(tenant: &TenantId, id: Uuid) -> Item {
    key(pk(tenant), format!("E#{id}"))
}

fn delivery_sk(endpoint: Uuid, id: Uuid) -> String {
    format!("D#{endpoint}#{id}")
}

fn due_key(at: DateTime<Utc>, d: &WebhookDelivery) -> String {
    format!("{}#{}#{}", ts(at), d.tenant_id, d.id)
}

fn delivery_item(d: &WebhookDelivery) -> StoreResult<Item> {
    let mut item = key(pk(&d.tenant_id), delivery_sk(d.endpoint_id, d.id));
    item.extend(values([
        ("id", s(d.id.to_string())),
        ("tenant", s(d.tenant_id.as_str())),
        ("endpoint_id", s(d.endpoint_id.to_string())),
        ("event_type", s(&d.event_type)),
        ("payload", s(&d.payload)),
        ("st", s(d.status.as_str())),
        ("attempts", json(&d.attempts)?),
        ("created_at", s(ts(d.created_at))),
        ("ttl", n((d.created_at + DELIVERY_TTL).timestamp())),
    ]));
    if let Some(next) = d.next_attempt_at {
        item.extend(values([
            ("nxt", s(ts(next))),
            ("gsi2pk", s(DUE)),
            ("gsi2sk", s(due_key(next, d))),
        ]));
    }
    Ok(item)
}

fn delivery_of(item: &Item) -> StoreResult<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: get_uuid(item, "id")?,
        tenant_id: TenantId::parse(get_s(item, "tenant")?).map_err(|_| corrupt("tenant"))?,
        endpoint_id: get_uuid(item, "endpoint_id")?,
        event_type: get_s(item, "event_type")?.to_owned(),
        payload: get_s(item, "payload")?.to_owned(),
        status: DeliveryState::parse(get_s(item, "st")?).ok_or_else(|| corrupt("st"))?,
        attempts: doc(item, "attempts")?,
        next_attempt_at: opt_s(item, "nxt").map(parse_ts).transpose()?,
        created_at: parse_ts(get_s(item, "created_at")?)?,
    })
}

impl AwsBackend {
    fn webhook_secret_name(&self, tenant: &TenantId, id: Uuid) -> String {
        format!("{}_webhook/{tenant}/{id}", self.resources.secret_prefix)
    }

    /// The tenant's endpoints, with each item's secret name.
    async fn endpoint_items(&self, tenant: &TenantId) -> StoreResult<Vec<Item>> {
        self.query_prefix(&pk(tenant), "E#").await
    }

    /// The tenant's endpoints that subscribe to any of `kinds`: none means a write has no
    /// deliveries to add (one query, made before the write's transaction).
    pub(crate) async fn subscribed_endpoints(
        &self,
        tenant: &TenantId,
        kinds: &[&str],
    ) -> StoreResult<Vec<WebhookEndpoint>> {
        let mut endpoints = Vec::new();
        for item in self.endpoint_items(tenant).await? {
            let endpoint: WebhookEndpoint = doc(&item, "doc")?;
            if kinds.iter().any(|k| endpoint.wants(k)) {
                endpoints.push(endpoint);
            }
        }
        Ok(endpoints)
    }

    /// The puts of `events`' deliveries to `endpoints`, for the transaction of the change;
    /// `written` is left holding those deliveries, for [`Self::announce`] once it commits (a
    /// write retried after a conflict builds them again).
    pub(crate) fn delivery_ops(
        &self,
        tenant: &TenantId,
        endpoints: &[WebhookEndpoint],
        events: &[PushEvent],
        written: &Mutex<Vec<WebhookDelivery>>,
    ) -> StoreResult<Vec<TransactWriteItem>> {
        let deliveries = deliveries_for(tenant, endpoints, events, Utc::now());
        let ops = deliveries
            .iter()
            .map(|d| self.put_op(delivery_item(d)?, None, None))
            .collect::<StoreResult<Vec<_>>>()?;
        *written.lock().unwrap_or_else(|e| e.into_inner()) = deliveries;
        Ok(ops)
    }

    /// Queues each committed delivery for the event dispatcher. Best effort: the change is
    /// committed, so a failure here is logged and the outbox sweep queues the delivery later.
    pub(crate) async fn announce(&self, written: Mutex<Vec<WebhookDelivery>>) {
        let deliveries = written.into_inner().unwrap_or_else(|e| e.into_inner());
        for delivery in &deliveries {
            if let Err(e) = self.enqueue(&delivery_job(delivery), Duration::ZERO).await {
                warn!(error = %e, delivery_id = %delivery.id, "webhook delivery not queued; the sweep will");
            }
        }
    }

    async fn write_endpoint(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpoint,
        condition: &str,
    ) -> StoreResult<bool> {
        let mut item = endpoint_key(tenant, endpoint.id);
        item.extend(values([
            ("doc", json(endpoint)?),
            (
                "secret_id",
                s(self.webhook_secret_name(tenant, endpoint.id)),
            ),
        ]));
        self.put_if(item, condition, None).await
    }
}

#[async_trait]
impl WebhookStore for AwsBackend {
    async fn create_webhook(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpoint,
        secret: &Secret,
    ) -> StoreResult<()> {
        // The secret first: an endpoint item always has its secret.
        let name = self.webhook_secret_name(tenant, endpoint.id);
        self.write_secret(&name, secret.expose().to_owned()).await?;
        if !self
            .write_endpoint(tenant, endpoint, "attribute_not_exists(pk)")
            .await?
        {
            return Err(StoreError::Conflict("webhook endpoint exists".into()));
        }
        Ok(())
    }

    async fn update_webhook(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpoint,
    ) -> StoreResult<bool> {
        self.write_endpoint(tenant, endpoint, "attribute_exists(pk)")
            .await
    }

    async fn set_webhook_secret(
        &self,
        tenant: &TenantId,
        id: Uuid,
        secret: &Secret,
    ) -> StoreResult<bool> {
        if self.get_item(endpoint_key(tenant, id)).await?.is_none() {
            return Ok(false);
        }
        let name = self.webhook_secret_name(tenant, id);
        self.write_secret(&name, secret.expose().to_owned()).await?;
        Ok(true)
    }

    async fn get_webhook(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<(WebhookEndpoint, Secret)>> {
        let Some(item) = self.get_item(endpoint_key(tenant, id)).await? else {
            return Ok(None);
        };
        let endpoint: WebhookEndpoint = doc(&item, "doc")?;
        let secret = self.platform_secret(get_s(&item, "secret_id")?).await?;
        Ok(Some((endpoint, secret)))
    }

    async fn list_webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<WebhookEndpoint>> {
        self.endpoint_items(tenant)
            .await?
            .iter()
            .map(|item| doc(item, "doc"))
            .collect()
    }

    async fn delete_webhook(&self, tenant: &TenantId, id: Uuid) -> StoreResult<bool> {
        let out = self
            .ddb
            .delete_item()
            .table_name(&self.resources.table)
            .set_key(Some(endpoint_key(tenant, id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        let Some(old) = out.attributes else {
            return Ok(false);
        };
        self.delete_secret_of(&old).await?;
        for item in self.query_prefix(&pk(tenant), &format!("D#{id}#")).await? {
            self.ddb
                .delete_item()
                .table_name(&self.resources.table)
                .set_key(Some(key(get_s(&item, "pk")?, get_s(&item, "sk")?)))
                .send()
                .await
                .map_err(|e| sdk_error("DeleteItem", e))?;
        }
        Ok(true)
    }

    async fn add_deliveries(&self, deliveries: &[WebhookDelivery]) -> StoreResult<()> {
        for d in deliveries {
            self.put_item(delivery_item(d)?).await?;
        }
        Ok(())
    }

    async fn get_delivery(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<WebhookDelivery>> {
        self.get_item(key(pk(tenant), delivery_sk(endpoint, id)))
            .await?
            .map(|item| delivery_of(&item))
            .transpose()
    }

    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<WebhookDelivery>> {
        let limit = limit.clamp(1, MAX_PAGE);
        let prefix = format!("D#{endpoint}#");
        let start = match cursor {
            Some(c) => {
                let id = Uuid::parse_str(c).map_err(|_| StoreError::InvalidCursor)?;
                Some(key(pk(tenant), delivery_sk(endpoint, id)))
            }
            None => None,
        };
        let page = self
            .ddb
            .query()
            .table_name(&self.resources.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .set_expression_attribute_values(Some(values([
                (":pk", s(pk(tenant))),
                (":prefix", s(prefix)),
            ])))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        let items = page
            .items
            .unwrap_or_default()
            .iter()
            .map(delivery_of)
            .collect::<StoreResult<Vec<_>>>()?;
        // The last id served is the cursor (ids are v7: their order is creation order).
        let next_cursor = page
            .last_evaluated_key
            .and(items.last().map(|d| d.id.to_string()));
        Ok(Page { items, next_cursor })
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let due = self
            .ddb
            .query()
            .table_name(&self.resources.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :due AND gsi2sk <= :now")
            .set_expression_attribute_values(Some(values([
                (":due", s(DUE)),
                // Every key of a time at or before `now` sorts before this one.
                (":now", s(format!("{}#~", ts(now)))),
            ])))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        let until = TimeDelta::from_std(lease)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut claimed = Vec::new();
        for found in due.items.unwrap_or_default() {
            let d = delivery_of(&found)?;
            let Some(was) = opt_s(&found, "nxt") else {
                continue;
            };
            // The index lags the table: the condition takes it only if nobody did since.
            let out = self
                .ddb
                .update_item()
                .table_name(&self.resources.table)
                .set_key(Some(key(get_s(&found, "pk")?, get_s(&found, "sk")?)))
                .update_expression("SET nxt = :until, gsi2sk = :key")
                .condition_expression("nxt = :was")
                .set_expression_attribute_values(Some(values([
                    (":until", s(ts(until))),
                    (":key", s(due_key(until, &d))),
                    (":was", s(was)),
                ])))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match out {
                Ok(out) => {
                    let item = out.attributes.ok_or_else(|| corrupt("claimed delivery"))?;
                    claimed.push(delivery_of(&item)?);
                }
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
        }
        Ok(claimed)
    }

    async fn update_delivery(&self, delivery: &WebhookDelivery) -> StoreResult<()> {
        let out = self
            .ddb
            .put_item()
            .table_name(&self.resources.table)
            .set_item(Some(delivery_item(delivery)?))
            // A delivery deleted with its endpoint is not brought back.
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }
}
