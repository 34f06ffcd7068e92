//! [`WebhookStore`] on SQLite: one row per endpoint (its secret sealed with the master key,
//! bound to the endpoint) and one per delivery, the outbox [`outbox`] fills in the
//! transaction of the change that caused it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use omni_core::domain::TenantId;
use omni_core::model::Page;
use omni_core::ports::{PushEvent, StoreResult, WebhookStore};
use omni_core::providers::Secret;
use omni_core::webhook::{deliveries_for, DeliveryState, WebhookDelivery, WebhookEndpoint};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::db::{after, corrupt, db, decode_cursor, encode_cursor, parse_ts, ts, Cached};
use crate::key::MasterKey;
use crate::SqliteBackend;

const ENDPOINT_COLS: &str =
    "id, url, events, description, enabled, failing_since, created_at, updated_at";

const DELIVERY_COLS: &str =
    "id, tenant_id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, created_at";

/// Most deliveries listed at once.
const MAX_PAGE: usize = 100;

fn text(row: &Row, i: usize) -> StoreResult<String> {
    row.get::<_, String>(i).map_err(db)
}

fn opt_ts(row: &Row, i: usize) -> StoreResult<Option<DateTime<Utc>>> {
    row.get::<_, Option<String>>(i)
        .map_err(db)?
        .map(|t| parse_ts(&t))
        .transpose()
}

fn uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| corrupt("uuid"))
}

fn endpoint_row(row: &Row) -> StoreResult<WebhookEndpoint> {
    Ok(WebhookEndpoint {
        id: uuid(&text(row, 0)?)?,
        url: text(row, 1)?,
        events: serde_json::from_str(&text(row, 2)?).map_err(|_| corrupt("webhook events"))?,
        description: row.get(3).map_err(db)?,
        enabled: row.get(4).map_err(db)?,
        failing_since: opt_ts(row, 5)?,
        created_at: parse_ts(&text(row, 6)?)?,
        updated_at: parse_ts(&text(row, 7)?)?,
    })
}

fn delivery_row(row: &Row) -> StoreResult<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: uuid(&text(row, 0)?)?,
        tenant_id: TenantId::parse(&text(row, 1)?).map_err(|_| corrupt("tenant id"))?,
        endpoint_id: uuid(&text(row, 2)?)?,
        event_type: text(row, 3)?,
        payload: text(row, 4)?,
        status: DeliveryState::parse(&text(row, 5)?).ok_or_else(|| corrupt("delivery state"))?,
        attempts: serde_json::from_str(&text(row, 6)?).map_err(|_| corrupt("attempts"))?,
        next_attempt_at: opt_ts(row, 7)?,
        created_at: parse_ts(&text(row, 8)?)?,
    })
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| corrupt(&e.to_string()))
}

fn list_endpoints(conn: &Connection, tenant: &TenantId) -> StoreResult<Vec<WebhookEndpoint>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE tenant_id = ?1 ORDER BY id"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map([tenant.as_str()], |r| Ok(endpoint_row(r)))
        .map_err(db)?;
    rows.map(|r| r.map_err(db)?).collect()
}

fn insert_deliveries(conn: &Connection, deliveries: &[WebhookDelivery]) -> StoreResult<()> {
    for d in deliveries {
        conn.exec(
            &format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                d.id.to_string(),
                d.tenant_id.as_str(),
                d.endpoint_id.to_string(),
                d.event_type,
                d.payload,
                d.status.as_str(),
                json(&d.attempts)?,
                d.next_attempt_at.map(ts),
                ts(d.created_at)
            ],
        )
        .map_err(db)?;
    }
    Ok(())
}

/// Writes the deliveries of `events` to the tenant's subscribed endpoints, within the caller's
/// transaction: the change and its deliveries commit together or not at all.
pub(crate) fn outbox(
    conn: &Connection,
    tenant: &TenantId,
    events: &[PushEvent],
) -> StoreResult<()> {
    outbox_with(conn, tenant, || Ok(events.to_vec()))
}

/// [`outbox`] with the events made only when the tenant has endpoints (making them may take
/// a read).
pub(crate) fn outbox_with(
    conn: &Connection,
    tenant: &TenantId,
    events: impl FnOnce() -> StoreResult<Vec<PushEvent>>,
) -> StoreResult<()> {
    let endpoints = list_endpoints(conn, tenant)?;
    if endpoints.is_empty() {
        return Ok(());
    }
    insert_deliveries(
        conn,
        &deliveries_for(tenant, &endpoints, &events()?, Utc::now()),
    )
}

#[async_trait]
impl WebhookStore for SqliteBackend {
    async fn create_webhook(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpoint,
        secret: &Secret,
    ) -> StoreResult<()> {
        // Sealed on the caller's task: the plaintext never reaches the database thread.
        let aad = MasterKey::webhook_associated_data(tenant, endpoint.id);
        let (nonce, ciphertext) = self.key.seal_for(&aad, secret.expose().as_bytes())?;
        let (tenant, e) = (tenant.clone(), endpoint.clone());
        let events = json(&e.events)?;
        self.write_statement(move |tx| {
            tx.exec(
                "INSERT INTO webhook_endpoints (id, tenant_id, url, events, description, enabled,
                     failing_since, nonce, ciphertext, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    e.id.to_string(),
                    tenant.as_str(),
                    e.url,
                    events,
                    e.description,
                    e.enabled,
                    e.failing_since.map(ts),
                    nonce,
                    ciphertext,
                    ts(e.created_at),
                    ts(e.updated_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn update_webhook(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpoint,
    ) -> StoreResult<bool> {
        let (tenant, e) = (tenant.clone(), endpoint.clone());
        let events = json(&e.events)?;
        self.write_statement(move |tx| {
            let n = tx
                .exec(
                    "UPDATE webhook_endpoints SET url = ?3, events = ?4, description = ?5,
                         enabled = ?6, failing_since = ?7, updated_at = ?8
                     WHERE tenant_id = ?1 AND id = ?2",
                    params![
                        tenant.as_str(),
                        e.id.to_string(),
                        e.url,
                        events,
                        e.description,
                        e.enabled,
                        e.failing_since.map(ts),
                        ts(e.updated_at)
                    ],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_webhook_secret(
        &self,
        tenant: &TenantId,
        id: Uuid,
        secret: &Secret,
    ) -> StoreResult<bool> {
        let aad = MasterKey::webhook_associated_data(tenant, id);
        let (nonce, ciphertext) = self.key.seal_for(&aad, secret.expose().as_bytes())?;
        let tenant = tenant.clone();
        self.write_statement(move |tx| {
            let n = tx
                .exec(
                    "UPDATE webhook_endpoints SET nonce = ?3, ciphertext = ?4
                     WHERE tenant_id = ?1 AND id = ?2",
                    params![tenant.as_str(), id.to_string(), nonce, ciphertext],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_webhook(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<(WebhookEndpoint, Secret)>> {
        let owner = tenant.clone();
        let found = self
            .read(move |conn| {
                conn.row(
                    &format!(
                        "SELECT {ENDPOINT_COLS}, nonce, ciphertext FROM webhook_endpoints
                         WHERE tenant_id = ?1 AND id = ?2"
                    ),
                    params![owner.as_str(), id.to_string()],
                    |r| {
                        Ok(endpoint_row(r).and_then(|e| {
                            let nonce: Vec<u8> = r.get(8).map_err(db)?;
                            let sealed: Vec<u8> = r.get(9).map_err(db)?;
                            Ok((e, nonce, sealed))
                        }))
                    },
                )
                .optional()
                .map_err(db)?
                .transpose()
            })
            .await?;
        let Some((endpoint, nonce, sealed)) = found else {
            return Ok(None);
        };
        let aad = MasterKey::webhook_associated_data(tenant, id);
        let plain = self.key.open_for(&aad, &nonce, &sealed)?;
        let secret = String::from_utf8(plain).map_err(|_| corrupt("webhook secret"))?;
        Ok(Some((endpoint, Secret::new(secret))))
    }

    async fn list_webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<WebhookEndpoint>> {
        let tenant = tenant.clone();
        self.read(move |conn| list_endpoints(conn, &tenant)).await
    }

    async fn delete_webhook(&self, tenant: &TenantId, id: Uuid) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            let n = tx
                .exec(
                    "DELETE FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2",
                    params![tenant.as_str(), id.to_string()],
                )
                .map_err(db)?;
            tx.exec(
                "DELETE FROM webhook_deliveries WHERE tenant_id = ?1 AND endpoint_id = ?2",
                params![tenant.as_str(), id.to_string()],
            )
            .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn add_deliveries(&self, deliveries: &[WebhookDelivery]) -> StoreResult<()> {
        let deliveries = deliveries.to_vec();
        self.write(move |tx| insert_deliveries(tx, &deliveries))
            .await
    }

    async fn get_delivery(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<WebhookDelivery>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            conn.row(
                &format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_deliveries
                     WHERE tenant_id = ?1 AND endpoint_id = ?2 AND id = ?3"
                ),
                params![tenant.as_str(), endpoint.to_string(), id.to_string()],
                |r| Ok(delivery_row(r)),
            )
            .optional()
            .map_err(db)?
            .transpose()
        })
        .await
    }

    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<WebhookDelivery>> {
        let tenant = tenant.clone();
        let limit = limit.clamp(1, MAX_PAGE);
        // Ids are v7: their order is creation order, so the id alone is the cursor's key.
        let before = cursor
            .map(decode_cursor)
            .transpose()?
            .map(|(_, id)| id.to_string());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_deliveries
                     WHERE tenant_id = ?1 AND endpoint_id = ?2 AND (?3 IS NULL OR id < ?3)
                     ORDER BY id DESC LIMIT ?4"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(
                    params![
                        tenant.as_str(),
                        endpoint.to_string(),
                        before,
                        (limit + 1) as i64
                    ],
                    |r| Ok(delivery_row(r)),
                )
                .map_err(db)?;
            let mut items = rows
                .map(|r| r.map_err(db)?)
                .collect::<StoreResult<Vec<_>>>()?;
            let next_cursor = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|d| encode_cursor(&ts(d.created_at), d.id))
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Looked for on a reader first: the runner asks several times a second, and an idle
        // one should not take the writer's turn.
        let any_due = self
            .read(move |conn| {
                conn.row(
                    "SELECT 1 FROM webhook_deliveries
                     WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1 LIMIT 1",
                    [ts(now)],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)
            })
            .await?;
        if any_due.is_none() {
            return Ok(Vec::new());
        }
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "UPDATE webhook_deliveries SET next_attempt_at = ?2
                     WHERE id IN (SELECT id FROM webhook_deliveries
                                  WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1
                                  ORDER BY next_attempt_at LIMIT ?3)
                     RETURNING {DELIVERY_COLS}"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![ts(now), ts(after(now, lease)), limit], |r| {
                    Ok(delivery_row(r))
                })
                .map_err(db)?;
            rows.map(|r| r.map_err(db)?).collect()
        })
        .await
    }

    async fn update_delivery(&self, delivery: &WebhookDelivery) -> StoreResult<()> {
        let d = delivery.clone();
        let attempts = json(&d.attempts)?;
        self.write_statement(move |tx| {
            tx.exec(
                "UPDATE webhook_deliveries SET status = ?3, attempts = ?4, next_attempt_at = ?5
                 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    d.tenant_id.as_str(),
                    d.id.to_string(),
                    d.status.as_str(),
                    attempts,
                    d.next_attempt_at.map(ts)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}
