//! Halves of split messages on SQLite (see [`MessageStore::put_message_part`]): one row per
//! pair, every change made by the single writer, so a check and the write that depends on it
//! are never interleaved with another.
//!
//! [`MessageStore::put_message_part`]: omni_core::ports::MessageStore::put_message_part

use chrono::{DateTime, Utc};
use omni_core::domain::{InboundMessage, MessagePart, PartRole, TenantId};
use omni_core::ports::{FlushedPart, PartOutcome, StoreError, StoreResult, StoredPair};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::db::{corrupt, db, ts};

const PAIR_COLS: &str = "text_part, media_part, flushed";

fn decode(json: Option<String>) -> StoreResult<Option<InboundMessage>> {
    json.map(|j| serde_json::from_str(&j).map_err(|_| corrupt("message part")))
        .transpose()
}

fn encode(message: &InboundMessage) -> StoreResult<String> {
    serde_json::to_string(message).map_err(|e| StoreError::Backend(format!("json: {e}")))
}

fn column(role: PartRole) -> &'static str {
    match role {
        PartRole::Text => "text_part",
        PartRole::Media => "media_part",
    }
}

/// Reads [`PAIR_COLS`] starting at column `at`.
fn pair_row(
    row: &Row,
    at: usize,
) -> rusqlite::Result<(Option<String>, Option<String>, Option<String>)> {
    Ok((row.get(at)?, row.get(at + 1)?, row.get(at + 2)?))
}

fn pair(cols: (Option<String>, Option<String>, Option<String>)) -> StoreResult<StoredPair> {
    let flushed = match cols.2.as_deref() {
        None => None,
        Some("text") => Some(PartRole::Text),
        Some("media") => Some(PartRole::Media),
        Some(_) => return Err(corrupt("flushed part")),
    };
    Ok(StoredPair {
        text: decode(cols.0)?,
        media: decode(cols.1)?,
        flushed,
    })
}

/// Stores a half and says what the pair is now.
pub(crate) fn put(
    conn: &Connection,
    tenant: &TenantId,
    part: &MessagePart,
    flush_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> StoreResult<PartOutcome> {
    let key = (
        tenant.as_str(),
        part.message.provider.as_str(),
        part.key.as_str(),
    );
    // A pair past its retention is forgotten, as DynamoDB's TTL would.
    conn.execute(
        "DELETE FROM message_parts WHERE tenant_id = ?1 AND provider = ?2 AND part_key = ?3
             AND expires_at <= ?4",
        params![key.0, key.1, key.2, ts(Utc::now())],
    )
    .map_err(db)?;
    // The first half creates the row; a second fills its slot only if empty (a redelivery or
    // a colliding message leaves the first one). A pair completed before any flush leaves the
    // sweep's view; a flushed one stays in it until the flush is confirmed.
    conn.execute(
        &format!(
            "INSERT INTO message_parts (tenant_id, provider, part_key, {col}, flush_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tenant_id, provider, part_key) DO UPDATE
                 SET {col} = coalesce({col}, excluded.{col}),
                     pending = CASE WHEN flushed IS NULL AND {col} IS NULL THEN 0 ELSE pending END",
            col = column(part.role)
        ),
        params![
            key.0,
            key.1,
            key.2,
            encode(&part.message)?,
            ts(flush_at),
            ts(expires_at)
        ],
    )
    .map_err(db)?;
    let cols = conn
        .query_row(
            &format!(
                "SELECT {PAIR_COLS} FROM message_parts
                 WHERE tenant_id = ?1 AND provider = ?2 AND part_key = ?3"
            ),
            params![key.0, key.1, key.2],
            |r| pair_row(r, 0),
        )
        .optional()
        .map_err(db)?
        .ok_or_else(|| corrupt("message part vanished"))?;
    Ok(pair(cols)?.outcome(part))
}

/// Gives up on lone halves due by `now`; returns them with those given up on before but not
/// confirmed.
pub(crate) fn flush(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> StoreResult<Vec<FlushedPart>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT tenant_id, provider, part_key, {PAIR_COLS}
             FROM message_parts WHERE pending = 1 AND flush_at <= ?1
             ORDER BY flush_at LIMIT ?2"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![ts(now), limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                pair_row(r, 3)?,
            ))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for (tenant, provider, key, cols) in rows {
        let pair = pair(cols)?;
        let Some(lone) = pair.lone() else {
            // Complete: nothing to flush.
            confirm(conn, &tenant, &provider, &key)?;
            continue;
        };
        if pair.flushed.is_none() {
            conn.execute(
                "UPDATE message_parts SET flushed = ?4
                 WHERE tenant_id = ?1 AND provider = ?2 AND part_key = ?3",
                params![tenant, provider, key, lone.as_str()],
            )
            .map_err(db)?;
        }
        let message = pair
            .half(lone)
            .cloned()
            .ok_or_else(|| corrupt("flushed part"))?;
        out.push(FlushedPart {
            tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
            key,
            message,
        });
    }
    Ok(out)
}

/// Takes a pair out of the sweep's view.
pub(crate) fn confirm(
    conn: &Connection,
    tenant: &str,
    provider: &str,
    key: &str,
) -> StoreResult<()> {
    conn.execute(
        "UPDATE message_parts SET pending = 0
         WHERE tenant_id = ?1 AND provider = ?2 AND part_key = ?3",
        params![tenant, provider, key],
    )
    .map_err(db)?;
    Ok(())
}
