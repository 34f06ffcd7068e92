//! [`MessageStore`] on SQLite: conversations, messages, the outbox, raw payloads, opt-outs.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use omni_core::domain::{
    Address, Channel, InboundMessage, Media, MessagePart, ProviderKind, SendResult, StatusUpdate,
    TenantId,
};
use omni_core::model::{
    Assignee, AuditEntry, AuditQuery, Conversation, ConversationFilter, ConversationStatus,
    DeliveryClaim, Failover, LastMessage, Message, MessageSearch, NewOutbound, Note, Page,
    StatusApplied, StatusEvent, WebhookLogEntry, WebhookLogQuery,
};
use omni_core::ports::{
    FlushedPart, MessageStore, PartOutcome, PushEvent, StoreError, StoreResult,
};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql};
use uuid::Uuid;

use crate::db::{
    after, before, corrupt, db, decode_cursor, encode_cursor, ms, parse, parse_ts, ts, Cached,
};
use crate::webhooks::{outbox, outbox_with};
use crate::SqliteBackend;

const MESSAGE_COLS: &str = "id, tenant_id, conversation_id, direction, channel, from_number, \
    to_number, body, media, status, provider, provider_message_id, error_code, error_message, \
    starred, created_at, updated_at, events, template, subject, sent_by, priority, send_at, fallback";

/// The opt-out list is joined in so every conversation read reports it.
const CONVERSATION_SELECT: &str = "SELECT c.id, c.tenant_id, c.channel, c.contact, \
    c.tenant_number, c.unread_count, c.starred_count, c.last_message_id, c.last_message_body, \
    c.last_message_direction, c.last_message_at, o.contact IS NOT NULL, c.status, \
    c.assignee_id, c.assignee_name, c.contact_name \
    FROM conversations c \
    LEFT JOIN opt_outs o ON o.tenant_id = c.tenant_id AND o.contact = c.contact";

/// The largest page served, whatever the caller asks for.
const MAX_PAGE: usize = 500;

fn uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| corrupt("uuid"))
}

fn address(s: &str) -> StoreResult<Address> {
    Address::from_stored(s).map_err(|_| corrupt("address"))
}

fn tenant_id(s: &str) -> StoreResult<TenantId> {
    TenantId::parse(s).map_err(|_| corrupt("tenant id"))
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("json: {e}")))
}

fn message_row(row: &Row) -> StoreResult<Message> {
    let text = |i| row.get::<_, String>(i).map_err(db);
    let opt = |i| row.get::<_, Option<String>>(i).map_err(db);
    let media: Vec<Media> = serde_json::from_str(&text(8)?).map_err(|_| corrupt("media"))?;
    let events: Vec<StatusEvent> =
        serde_json::from_str(&text(17)?).map_err(|_| corrupt("events"))?;
    let template = opt(18)?
        .map(|t| serde_json::from_str(&t).map_err(|_| corrupt("template")))
        .transpose()?;
    Ok(Message {
        id: uuid(&text(0)?)?,
        tenant_id: Some(tenant_id(&text(1)?)?),
        conversation_id: uuid(&text(2)?)?,
        direction: parse(&text(3)?, "direction")?,
        channel: parse(&text(4)?, "channel")?,
        from: address(&text(5)?)?,
        to: address(&text(6)?)?,
        body: opt(7)?,
        media,
        template,
        subject: opt(19)?,
        status: parse(&text(9)?, "status")?,
        provider: opt(10)?.map(|p| parse(&p, "provider")).transpose()?,
        provider_message_id: opt(11)?,
        error_code: opt(12)?,
        error_message: opt(13)?,
        starred: row.get::<_, bool>(14).map_err(db)?,
        created_at: parse_ts(&text(15)?)?,
        updated_at: parse_ts(&text(16)?)?,
        events,
        sent_by: opt(20)?
            .map(|a| serde_json::from_str(&a).map_err(|_| corrupt("sent_by")))
            .transpose()?,
        priority: parse(&text(21)?, "priority")?,
        send_at: opt(22)?.map(|t| parse_ts(&t)).transpose()?,
        fallback: serde_json::from_str(&text(23)?).map_err(|_| corrupt("fallback"))?,
    })
}

fn conversation_row(row: &Row) -> StoreResult<Conversation> {
    let text = |i| row.get::<_, String>(i).map_err(db);
    let opt = |i| row.get::<_, Option<String>>(i).map_err(db);
    let last_at = opt(10)?.map(|t| parse_ts(&t)).transpose()?;
    let last_message = match (opt(7)?, opt(9)?, last_at) {
        (Some(id), Some(direction), Some(at)) => Some(LastMessage {
            id: uuid(&id)?,
            body: opt(8)?,
            direction: parse(&direction, "direction")?,
            at,
        }),
        _ => None,
    };
    Ok(Conversation {
        id: uuid(&text(0)?)?,
        tenant_id: Some(tenant_id(&text(1)?)?),
        channel: parse(&text(2)?, "channel")?,
        contact: address(&text(3)?)?,
        tenant_number: address(&text(4)?)?,
        unread_count: row.get(5).map_err(db)?,
        starred_count: row.get(6).map_err(db)?,
        last_message,
        last_message_at: last_at,
        opted_out: row.get(11).map_err(db)?,
        status: parse(&text(12)?, "status")?,
        assignee: match (opt(13)?, opt(14)?) {
            (Some(id), Some(name)) => Some(Assignee {
                id: uuid(&id)?,
                name,
            }),
            _ => None,
        },
        contact_name: opt(15)?,
    })
}

/// Runs a query and converts every row.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToSql],
    convert: fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(convert(row)?);
    }
    Ok(out)
}

fn get_message(conn: &Connection, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE tenant_id = ?1 AND id = ?2");
    let found = collect(
        conn,
        &sql,
        &[&tenant.as_str(), &id.to_string()],
        message_row,
    )?;
    Ok(found.into_iter().next())
}

/// A message this transaction just wrote (so it must be there).
fn reload_message(conn: &Connection, tenant: &TenantId, id: Uuid) -> StoreResult<Message> {
    get_message(conn, tenant, id)?.ok_or_else(|| corrupt("message vanished"))
}

fn get_conversation(
    conn: &Connection,
    tenant: &TenantId,
    id: Uuid,
) -> StoreResult<Option<Conversation>> {
    let sql = format!("{CONVERSATION_SELECT} WHERE c.tenant_id = ?1 AND c.id = ?2");
    let found = collect(
        conn,
        &sql,
        &[&tenant.as_str(), &id.to_string()],
        conversation_row,
    )?;
    Ok(found.into_iter().next())
}

fn reload_conversation(
    conn: &Connection,
    tenant: &TenantId,
    id: Uuid,
) -> StoreResult<Conversation> {
    get_conversation(conn, tenant, id)?.ok_or_else(|| corrupt("conversation vanished"))
}

/// The conversation for (tenant, thread channel, contact), created if new; the tenant number
/// is set to the one this message used.
fn upsert_conversation(
    conn: &Connection,
    tenant: &TenantId,
    channel: Channel,
    contact: &Address,
    tenant_number: &Address,
) -> StoreResult<Uuid> {
    let id: String = conn
        .row(
            "INSERT INTO conversations (id, tenant_id, channel, contact, tenant_number)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant_id, channel, contact)
                 DO UPDATE SET tenant_number = excluded.tenant_number
             RETURNING id",
            params![
                Conversation::id_for(tenant, channel, contact).to_string(),
                tenant.as_str(),
                channel.thread().as_str(),
                contact.as_str(),
                tenant_number.as_str()
            ],
            |r| r.get(0),
        )
        .map_err(db)?;
    uuid(&id)
}

/// Whether the conversation's stored last message is older than the one being upserted
/// (`excluded`): a late redelivery must not hide newer traffic; ties on time go to the larger
/// (later v7) id.
macro_rules! newer_than_last {
    () => {
        "(last_message_at IS NULL OR last_message_at < excluded.last_message_at
            OR (last_message_at = excluded.last_message_at
                AND last_message_id < excluded.last_message_id))"
    };
}

/// The conversation of an inbound message, created if new or opened again if resolved, with
/// one more unread message and that message as its last unless a newer one already is (`newer_than_last!`). Every
/// right-hand side reads the row as it was, so the condition holds for the four columns alike.
/// The contact's name is the message's when it carries one.
/// It returns the conversation as it leaves it, in [`CONVERSATION_SELECT`]'s columns.
const UPSERT_INBOUND_CONVERSATION: &str = concat!(
    "INSERT INTO conversations (id, tenant_id, channel, contact, tenant_number, unread_count,
         last_message_id, last_message_body, last_message_direction, last_message_at,
         contact_name)
     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10)
     ON CONFLICT (tenant_id, channel, contact) DO UPDATE SET
         tenant_number = excluded.tenant_number,
         unread_count = unread_count + 1,
         status = 'open',
         contact_name = COALESCE(excluded.contact_name, contact_name),
         last_message_id = CASE WHEN ",
    newer_than_last!(),
    " THEN excluded.last_message_id ELSE last_message_id END,
         last_message_body = CASE WHEN ",
    newer_than_last!(),
    " THEN excluded.last_message_body ELSE last_message_body END,
         last_message_direction = CASE WHEN ",
    newer_than_last!(),
    " THEN excluded.last_message_direction ELSE last_message_direction END,
         last_message_at = CASE WHEN ",
    newer_than_last!(),
    " THEN excluded.last_message_at ELSE last_message_at END
     RETURNING id, tenant_id, channel, contact, tenant_number, unread_count, starred_count,
         last_message_id, last_message_body, last_message_direction, last_message_at,
         EXISTS (SELECT 1 FROM opt_outs o
                 WHERE o.tenant_id = conversations.tenant_id AND o.contact = conversations.contact),
         status, assignee_id, assignee_name, contact_name"
);

/// [`MessageStore::apply_inbound`] within the caller's transaction: upserts the conversation
/// with its unread count and last message in one statement, which returns it as dashboards
/// are pushed it, and appends the message. `None` when the carrier message was applied
/// before. Three statements: the updater runs this for every inbound message.
pub(crate) fn apply_inbound(
    conn: &Connection,
    tenant: &TenantId,
    m: &InboundMessage,
) -> StoreResult<Option<(Message, Conversation)>> {
    let seen = conn
        .row(
            "SELECT 1 FROM messages
             WHERE tenant_id = ?1 AND provider = ?2 AND provider_message_id = ?3",
            params![tenant.as_str(), m.provider.as_str(), m.provider_message_id],
            |_| Ok(()),
        )
        .optional()
        .map_err(db)?;
    if seen.is_some() {
        return Ok(None);
    }
    let mut message = Message::received(tenant, m, Uuid::nil());
    let conversation = conn
        .row(
            UPSERT_INBOUND_CONVERSATION,
            params![
                Conversation::id_for(tenant, m.channel, &m.from).to_string(),
                tenant.as_str(),
                m.channel.thread().as_str(),
                m.from.as_str(),
                m.to.as_str(),
                message.id.to_string(),
                message.body,
                message.direction.as_str(),
                ts(message.created_at),
                m.contact_name()
            ],
            |r| Ok(conversation_row(r)),
        )
        .map_err(db)??;
    message.conversation_id = conversation.id;
    // Stored exactly as built, so it needs no reading back.
    insert_message(conn, &message, None)?;
    outbox(
        conn,
        tenant,
        &[
            PushEvent::for_message("message.received", tenant, &message),
            PushEvent::for_conversation("conversation.updated", tenant, &conversation),
        ],
    )?;
    Ok(Some((message, conversation)))
}

/// Makes `message` the conversation's last message unless a newer one already is (a late
/// redelivery must not hide newer traffic); ties on time go to the larger (later v7) id.
fn set_last_message(conn: &Connection, conversation: Uuid, message: &Message) -> StoreResult<()> {
    conn.exec(
        "UPDATE conversations SET last_message_id = ?2, last_message_body = ?3,
             last_message_direction = ?4, last_message_at = ?5
         WHERE id = ?1 AND (last_message_at IS NULL OR last_message_at < ?5
             OR (last_message_at = ?5 AND last_message_id < ?2))",
        params![
            conversation.to_string(),
            message.id.to_string(),
            message.body,
            message.direction.as_str(),
            ts(message.created_at)
        ],
    )
    .map_err(db)?;
    Ok(())
}

fn insert_message(
    conn: &Connection,
    message: &Message,
    idempotency_key: Option<&str>,
) -> StoreResult<()> {
    let tenant = message
        .tenant_id
        .as_ref()
        .ok_or_else(|| StoreError::Backend("message without tenant".into()))?;
    conn.exec(
        "INSERT INTO messages (id, tenant_id, conversation_id, direction, channel, from_number,
             to_number, body, media, status, provider, provider_message_id, error_code,
             error_message, starred, created_at, updated_at, events, idempotency_key, template,
             subject, sent_by, priority, send_at, fallback)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
        params![
            message.id.to_string(),
            tenant.as_str(),
            message.conversation_id.to_string(),
            message.direction.as_str(),
            message.channel.as_str(),
            message.from.as_str(),
            message.to.as_str(),
            message.body,
            json(&message.media)?,
            message.status.as_str(),
            message.provider.map(|p| p.as_str()),
            message.provider_message_id,
            message.error_code,
            message.error_message,
            message.starred,
            ts(message.created_at),
            ts(message.updated_at),
            json(&message.events)?,
            idempotency_key,
            message.template.as_ref().map(json).transpose()?,
            message.subject,
            message.sent_by.as_ref().map(json).transpose()?,
            message.priority.as_str(),
            message.send_at.map(ts),
            json(&message.fallback)?,
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Writes a message's status, errors, carrier ids and events as `message` has them, and
/// releases any delivery claim.
fn update_message(conn: &Connection, message: &Message) -> StoreResult<()> {
    conn.exec(
        "UPDATE messages SET status = ?2, provider = ?3, provider_message_id = ?4,
             error_code = ?5, error_message = ?6, updated_at = ?7, events = ?8,
             from_number = ?9, claim_until = NULL
         WHERE id = ?1",
        params![
            message.id.to_string(),
            message.status.as_str(),
            message.provider.map(|p| p.as_str()),
            message.provider_message_id,
            message.error_code,
            message.error_message,
            ts(message.updated_at),
            json(&message.events)?,
            message.from.as_str(),
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Loads a message for an update by the delivery worker; the port has no "not found"
/// outcome for these, so an unknown id (or another tenant's) is a backend error.
fn message_for_update(conn: &Connection, tenant: &TenantId, id: Uuid) -> StoreResult<Message> {
    get_message(conn, tenant, id)?
        .ok_or_else(|| StoreError::Backend(format!("message {id} not found for tenant {tenant}")))
}

/// Builds a page from up to `limit + 1` rows: the extra row only says there is more.
fn page<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> (String, Uuid)) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| {
            let (k, id) = key(last);
            encode_cursor(&k, id)
        })
    } else {
        None
    };
    Page { items, next_cursor }
}

/// A `LIKE ... ESCAPE '\\'` pattern for text containing `q`, lower-cased.
fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The webhook log's tenant column: the tenant, or `''` for webhooks no tenant could be told.
fn log_tenant(tenant: Option<&TenantId>) -> String {
    tenant.map(|t| t.as_str().to_owned()).unwrap_or_default()
}

/// A usable page size: at least one item (a zero limit would page forever), at most
/// [`MAX_PAGE`].
fn page_size(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

#[async_trait]
impl MessageStore for SqliteBackend {
    async fn save_raw_webhook(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
        dedupe_key: &str,
        body: &[u8],
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (tenant, key, body) = (tenant.clone(), dedupe_key.to_owned(), body.to_vec());
        self.write_statement(move |tx| {
            let n = tx
                .exec(
                    "INSERT INTO raw_webhooks
                         (tenant_id, dedupe_key, provider, body, received_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (tenant_id, dedupe_key) DO NOTHING",
                    params![
                        tenant.as_str(),
                        key,
                        provider.as_str(),
                        body,
                        ts(Utc::now()),
                        ts(expires_at)
                    ],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn claim_auto_reply(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        now: DateTime<Utc>,
        cooldown: Duration,
    ) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            let taken = tx
                .exec(
                    "INSERT INTO auto_reply_turns (tenant_id, conversation_id, last_at)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, conversation_id) DO UPDATE
                         SET last_at = excluded.last_at WHERE last_at <= ?4",
                    params![
                        tenant.as_str(),
                        conversation.to_string(),
                        ts(now),
                        ts(before(now, cooldown))
                    ],
                )
                .map_err(db)?;
            Ok(taken == 1)
        })
        .await
    }

    async fn count_visitor_message(
        &self,
        tenant: &TenantId,
        session: Uuid,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<(u32, DateTime<Utc>)> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            // One statement under the single writer: one more in the open window, or a new
            // window from `now` once it is over.
            let (count, since): (i64, String) = tx
                .row(
                    "INSERT INTO livechat_rate (tenant_id, session_id, window_start, messages)
                     VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT (tenant_id, session_id) DO UPDATE SET
                         messages = CASE WHEN window_start > ?4 THEN messages + 1 ELSE 1 END,
                         window_start = CASE WHEN window_start > ?4 THEN window_start
                             ELSE excluded.window_start END
                     RETURNING messages, window_start",
                    params![
                        tenant.as_str(),
                        session.to_string(),
                        ts(now),
                        ts(now - window)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)?;
            Ok((u32::try_from(count).unwrap_or(u32::MAX), parse_ts(&since)?))
        })
        .await
    }

    async fn append_webhook_log(
        &self,
        tenant: Option<&TenantId>,
        entry: &WebhookLogEntry,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (tenant, entry) = (log_tenant(tenant), entry.clone());
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO webhook_log
                     (id, tenant_id, received_at, carrier, result, entry, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    entry.id.to_string(),
                    tenant,
                    ts(entry.received_at),
                    entry.carrier.as_str(),
                    entry.result.as_str(),
                    json(&entry)?,
                    ts(expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn list_webhook_log(
        &self,
        tenant: Option<&TenantId>,
        query: &WebhookLogQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<WebhookLogEntry>> {
        let (tenant, query) = (log_tenant(tenant), query.clone());
        let after_key = cursor.map(decode_cursor).transpose()?;
        let limit = page_size(limit);
        self.read(move |conn| {
            let (after_at, after_id) = after_key.unzip();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entry FROM webhook_log
                     WHERE tenant_id = ?1
                         AND (?2 IS NULL OR received_at >= ?2)
                         AND (?3 IS NULL OR carrier = ?3) AND (?4 IS NULL OR result = ?4)
                         AND (?5 IS NULL OR received_at < ?5 OR (received_at = ?5 AND id < ?6))
                     ORDER BY received_at DESC, id DESC LIMIT ?7",
                )
                .map_err(db)?;
            let mut rows = stmt
                .query(params![
                    tenant,
                    query.since.map(ts),
                    query.carrier.map(|c| c.as_str()),
                    query.result.map(|r| r.as_str()),
                    after_at,
                    after_id.map(|id| id.to_string()),
                    (limit + 1) as i64
                ])
                .map_err(db)?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let entry: String = row.get(0).map_err(db)?;
                items.push(serde_json::from_str(&entry).map_err(|_| corrupt("webhook log"))?);
            }
            Ok(page(items, limit, |e: &WebhookLogEntry| {
                (ts(e.received_at), e.id)
            }))
        })
        .await
    }

    async fn apply_inbound(
        &self,
        tenant: &TenantId,
        message: &InboundMessage,
    ) -> StoreResult<Option<(Message, Conversation)>> {
        let (tenant, m) = (tenant.clone(), message.clone());
        self.write(move |tx| apply_inbound(tx, &tenant, &m)).await
    }

    async fn apply_status(
        &self,
        tenant: &TenantId,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        let (tenant, u) = (tenant.clone(), update.clone());
        self.write(move |tx| {
            let sql = format!(
                "SELECT {MESSAGE_COLS} FROM messages WHERE tenant_id = ?1 AND provider = ?2
                 AND provider_message_id = ?3 AND direction = 'outbound'"
            );
            let found = collect(
                tx,
                &sql,
                &[
                    &tenant.as_str(),
                    &u.provider.as_str(),
                    &u.provider_message_id,
                ],
                message_row,
            )?;
            let found = match found.into_iter().next() {
                Some(message) => Some(message),
                // An attempt the message fell back from.
                None => tx
                    .row(
                        "SELECT message_id FROM superseded_carrier_ids
                         WHERE tenant_id = ?1 AND provider = ?2 AND provider_message_id = ?3",
                        params![tenant.as_str(), u.provider.as_str(), u.provider_message_id],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()
                    .map_err(db)?
                    .map(|id| get_message(tx, &tenant, uuid(&id)?))
                    .transpose()?
                    .flatten(),
            };
            let Some(mut message) = found else {
                return Ok(StatusApplied::NotFound);
            };
            if !message.apply_status_update(&u, Utc::now()) {
                return Ok(StatusApplied::Unchanged(message));
            }
            update_message(tx, &message)?;
            let message = reload_message(tx, &tenant, message.id)?;
            outbox(
                tx,
                &tenant,
                &[PushEvent::for_message("message.status", &tenant, &message)],
            )?;
            Ok(StatusApplied::Changed(message))
        })
        .await
    }

    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &NewOutbound,
    ) -> StoreResult<(Message, bool)> {
        let (tenant, m) = (tenant.clone(), message.clone());
        self.write(move |tx| {
            if let Some(key) = &m.idempotency_key {
                let first: Option<String> = tx
                    .row(
                        "SELECT id FROM messages WHERE tenant_id = ?1 AND idempotency_key = ?2",
                        params![tenant.as_str(), key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                if let Some(first) = first {
                    return Ok((reload_message(tx, &tenant, uuid(&first)?)?, false));
                }
            }
            let conversation = upsert_conversation(tx, &tenant, m.channel, &m.to, &m.from)?;
            let message = Message::queued(&tenant, &m, conversation);
            insert_message(tx, &message, m.idempotency_key.as_deref())?;
            set_last_message(tx, conversation, &message)?;
            outbox_with(tx, &tenant, || {
                let c = reload_conversation(tx, &tenant, conversation)?;
                Ok(vec![PushEvent::for_conversation(
                    "conversation.updated",
                    &tenant,
                    &c,
                )])
            })?;
            Ok((reload_message(tx, &tenant, message.id)?, true))
        })
        .await
    }

    async fn claim_delivery(
        &self,
        tenant: &TenantId,
        id: Uuid,
        lease: Duration,
    ) -> StoreResult<Option<DeliveryClaim>> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            let now = Utc::now();
            let attempts: Option<i64> = tx
                .row(
                    "UPDATE messages SET claim_until = ?3, attempts = attempts + 1
                     WHERE tenant_id = ?1 AND id = ?2 AND status = 'queued'
                         AND (claim_until IS NULL OR claim_until <= ?4)
                     RETURNING attempts",
                    params![
                        tenant.as_str(),
                        id.to_string(),
                        ts(after(now, lease)),
                        ts(now)
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(attempts) = attempts else {
                return Ok(None);
            };
            Ok(Some(DeliveryClaim {
                message: reload_message(tx, &tenant, id)?,
                attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
            }))
        })
        .await
    }

    async fn record_sent(
        &self,
        tenant: &TenantId,
        id: Uuid,
        result: &SendResult,
        failover: Option<&Failover>,
    ) -> StoreResult<Message> {
        let (tenant, r, failover) = (tenant.clone(), result.clone(), failover.cloned());
        self.write(move |tx| {
            // No claim is required: the carrier has taken the message even if our lease ran
            // out during the call, and forgetting that would send it twice.
            let mut message = message_for_update(tx, &tenant, id)?;
            message.record_sent(&r, failover.as_ref(), Utc::now());
            update_message(tx, &message)?;
            let message = reload_message(tx, &tenant, id)?;
            outbox(
                tx,
                &tenant,
                &[PushEvent::for_message("message.sent", &tenant, &message)],
            )?;
            Ok(message)
        })
        .await
    }

    async fn record_retry(
        &self,
        tenant: &TenantId,
        id: Uuid,
        error_code: Option<&str>,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> StoreResult<Message> {
        let (tenant, code, error) = (
            tenant.clone(),
            error_code.map(str::to_owned),
            error.to_owned(),
        );
        self.write(move |tx| {
            let mut message = message_for_update(tx, &tenant, id)?;
            message.record_retry(code.as_deref(), &error, Utc::now());
            update_message(tx, &message)?;
            tx.exec(
                "UPDATE messages SET retry_at = ?2 WHERE id = ?1",
                params![id.to_string(), ts(retry_at)],
            )
            .map_err(db)?;
            reload_message(tx, &tenant, id)
        })
        .await
    }

    async fn record_failed(
        &self,
        tenant: &TenantId,
        id: Uuid,
        error_code: Option<&str>,
        error: &str,
    ) -> StoreResult<Message> {
        let (tenant, code, error) = (
            tenant.clone(),
            error_code.map(str::to_owned),
            error.to_owned(),
        );
        self.write(move |tx| {
            let mut message = message_for_update(tx, &tenant, id)?;
            message.record_failed(code.as_deref(), &error, Utc::now());
            update_message(tx, &message)?;
            let message = reload_message(tx, &tenant, id)?;
            outbox(
                tx,
                &tenant,
                &[PushEvent::for_message("message.status", &tenant, &message)],
            )?;
            Ok(message)
        })
        .await
    }

    async fn requeue_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            let Some(mut message) = get_message(tx, &tenant, id)? else {
                return Ok(None);
            };
            message.requeue(Utc::now())?;
            update_message(tx, &message)?;
            tx.exec(
                "UPDATE messages SET attempts = 0, retry_at = NULL WHERE id = ?1",
                params![id.to_string()],
            )
            .map_err(db)?;
            reload_message(tx, &tenant, id).map(Some)
        })
        .await
    }

    async fn defer_delivery(
        &self,
        tenant: &TenantId,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            tx.exec(
                "UPDATE messages SET claim_until = NULL, attempts = MAX(attempts - 1, 0),
                     retry_at = ?3
                 WHERE tenant_id = ?1 AND id = ?2 AND status = 'queued'",
                params![tenant.as_str(), id.to_string(), ts(at)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn book_send_slot(
        &self,
        number: &Address,
        interval: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        let number = number.as_str().to_owned();
        let step = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let booked: i64 = self
            .write(move |tx| {
                // The slot is the later of now and the next free time; the next free time moves
                // one interval past it.
                tx.row(
                    "INSERT INTO send_pace (number, next_at_ms) VALUES (?1, ?2 + ?3)
                     ON CONFLICT (number) DO UPDATE
                         SET next_at_ms = MAX(next_at_ms, ?2) + ?3
                     RETURNING next_at_ms - ?3",
                    params![number, ms(now), step],
                    |r| r.get(0),
                )
                .map_err(db)
            })
            .await?;
        Ok(DateTime::from_timestamp_millis(booked).unwrap_or(now))
    }

    async fn fall_back_message(
        &self,
        tenant: &TenantId,
        id: Uuid,
        remaining: usize,
        from: &Address,
        reason: &str,
    ) -> StoreResult<Option<Message>> {
        let (tenant, from, reason) = (tenant.clone(), from.clone(), reason.to_owned());
        self.write(move |tx| {
            let Some(mut message) = get_message(tx, &tenant, id)? else {
                return Ok(None);
            };
            let Some(superseded) = message.fall_back(remaining, from, &reason, Utc::now()) else {
                return Ok(None);
            };
            update_message(tx, &message)?;
            tx.exec(
                "UPDATE messages SET channel = ?2, template = ?3, fallback = ?4, attempts = 0,
                     retry_at = NULL
                 WHERE id = ?1",
                params![
                    id.to_string(),
                    message.channel.as_str(),
                    message.template.as_ref().map(json).transpose()?,
                    json(&message.fallback)?,
                ],
            )
            .map_err(db)?;
            if let Some((provider, carrier_id)) = superseded {
                tx.exec(
                    "INSERT OR IGNORE INTO superseded_carrier_ids
                         (tenant_id, provider, provider_message_id, message_id)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        tenant.as_str(),
                        provider.as_str(),
                        carrier_id,
                        id.to_string()
                    ],
                )
                .map_err(db)?;
            }
            reload_message(tx, &tenant, id).map(Some)
        })
        .await
    }

    async fn cancel_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            let found: Option<i64> = tx
                .row(
                    "SELECT attempts FROM messages WHERE tenant_id = ?1 AND id = ?2",
                    params![tenant.as_str(), id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(attempts) = found else {
                return Ok(None);
            };
            let mut message = reload_message(tx, &tenant, id)?;
            message.cancel(u32::try_from(attempts).unwrap_or(u32::MAX), Utc::now())?;
            update_message(tx, &message)?;
            // Its job, if queued, finds nothing to send; removing it spares the runner.
            tx.exec(
                "DELETE FROM jobs WHERE message_id = ?1 AND leased = 0",
                [id.to_string()],
            )
            .map_err(db)?;
            let message = reload_message(tx, &tenant, id)?;
            outbox(
                tx,
                &tenant,
                &[PushEvent::for_message("message.status", &tenant, &message)],
            )?;
            Ok(Some(message))
        })
        .await
    }

    async fn release_scheduled(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            let due: Vec<(String, String)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT tenant_id, id FROM messages
                         WHERE status = 'scheduled' AND send_at <= ?1
                         ORDER BY send_at, id LIMIT ?2",
                    )
                    .map_err(db)?;
                let rows = stmt
                    .query_map(params![ts(until), limit], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            let now = Utc::now();
            let mut released = Vec::with_capacity(due.len());
            for (tenant, id) in due {
                let (tenant, id) = (tenant_id(&tenant)?, uuid(&id)?);
                let mut message = reload_message(tx, &tenant, id)?;
                message.release(now);
                update_message(tx, &message)?;
                // Not stranded before its time, however far ahead the caller looked.
                tx.exec(
                    "UPDATE messages SET retry_at = send_at WHERE id = ?1",
                    [id.to_string()],
                )
                .map_err(db)?;
                released.push(reload_message(tx, &tenant, id)?);
            }
            Ok(released)
        })
        .await
    }

    async fn stranded_outbound(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(TenantId, Uuid)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT m.tenant_id, m.id FROM messages m
                     WHERE m.status = 'queued'
                         AND MAX(m.updated_at, COALESCE(m.retry_at, '')) < ?1
                         AND (m.claim_until IS NULL OR m.claim_until <= ?2)
                         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.message_id = m.id)
                     ORDER BY m.updated_at, m.id
                     LIMIT ?3",
                )
                .map_err(db)?;
            let mut rows = stmt
                .query(params![ts(before), ts(Utc::now()), limit])
                .map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push((
                    tenant_id(&row.get::<_, String>(0).map_err(db)?)?,
                    uuid(&row.get::<_, String>(1).map_err(db)?)?,
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn get_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>> {
        let tenant = tenant.clone();
        self.read(move |conn| get_message(conn, &tenant, id)).await
    }

    async fn find_conversations(
        &self,
        tenant: &TenantId,
        filter: &ConversationFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Conversation>> {
        let (tenant, filter) = (tenant.clone(), filter.clone());
        let after_key = cursor.map(decode_cursor).transpose()?;
        let limit = page_size(limit);
        self.read(move |conn| {
            // A conversation always has a message, but the column is nullable: sort missing
            // times as the oldest so paging stays total.
            let order_key = "COALESCE(c.last_message_at, '')";
            let mut sql = format!("{CONVERSATION_SELECT} WHERE c.tenant_id = :tenant");
            let mut args: Vec<(&str, Box<dyn ToSql>)> =
                vec![(":tenant", Box::new(tenant.as_str().to_owned()))];
            if let Some(status) = filter.status {
                sql.push_str(" AND c.status = :status");
                args.push((":status", Box::new(status.as_str())));
            }
            match filter.assignee {
                Some(Some(user)) => {
                    sql.push_str(" AND c.assignee_id = :assignee");
                    args.push((":assignee", Box::new(user.to_string())));
                }
                Some(None) => sql.push_str(" AND c.assignee_id IS NULL"),
                None => {}
            }
            if let Some(channel) = filter.channel {
                sql.push_str(" AND c.channel = :channel");
                args.push((":channel", Box::new(channel.thread().as_str())));
            }
            if let Some(q) = &filter.q {
                sql.push_str(
                    " AND (lower(c.contact) LIKE :q ESCAPE '\\'
                         OR lower(c.contact_name) LIKE :q ESCAPE '\\'
                         OR EXISTS (SELECT 1 FROM messages m
                         WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id
                         AND lower(m.body) LIKE :q ESCAPE '\\'))",
                );
                args.push((":q", Box::new(like_pattern(q))));
            }
            if let Some((key, id)) = after_key {
                sql.push_str(&format!(
                    " AND ({order_key} < :after OR ({order_key} = :after AND c.id < :after_id))"
                ));
                args.push((":after", Box::new(key)));
                args.push((":after_id", Box::new(id.to_string())));
            }
            sql.push_str(&format!(
                " ORDER BY {order_key} DESC, c.id DESC LIMIT :limit"
            ));
            args.push((":limit", Box::new((limit + 1) as i64)));
            let named: Vec<(&str, &dyn ToSql)> =
                args.iter().map(|(name, v)| (*name, v.as_ref())).collect();
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt.query(named.as_slice()).map_err(db)?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                items.push(conversation_row(row)?);
            }
            Ok(page(items, limit, |c| {
                (c.last_message_at.map(ts).unwrap_or_default(), c.id)
            }))
        })
        .await
    }

    async fn update_conversation(
        &self,
        tenant: &TenantId,
        id: Uuid,
        status: Option<ConversationStatus>,
        assignee: Option<Option<Assignee>>,
    ) -> StoreResult<Option<Conversation>> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            if let Some(status) = status {
                tx.exec(
                    "UPDATE conversations SET status = ?3 WHERE tenant_id = ?1 AND id = ?2",
                    params![tenant.as_str(), id.to_string(), status.as_str()],
                )
                .map_err(db)?;
            }
            if let Some(assignee) = &assignee {
                tx.exec(
                    "UPDATE conversations SET assignee_id = ?3, assignee_name = ?4
                     WHERE tenant_id = ?1 AND id = ?2",
                    params![
                        tenant.as_str(),
                        id.to_string(),
                        assignee.as_ref().map(|a| a.id.to_string()),
                        assignee.as_ref().map(|a| a.name.clone())
                    ],
                )
                .map_err(db)?;
            }
            let conversation = get_conversation(tx, &tenant, id)?;
            if let Some(c) = &conversation {
                let kind = if assignee.is_some() {
                    "conversation.assigned"
                } else {
                    "conversation.updated"
                };
                outbox(
                    tx,
                    &tenant,
                    &[PushEvent::for_conversation(kind, &tenant, c)],
                )?;
            }
            Ok(conversation)
        })
        .await
    }

    async fn add_note(&self, tenant: &TenantId, note: &Note) -> StoreResult<()> {
        let (tenant, note) = (tenant.clone(), note.clone());
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO notes (id, tenant_id, conversation_id, body, author, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    note.id.to_string(),
                    tenant.as_str(),
                    note.conversation_id.to_string(),
                    note.body,
                    json(&note.author)?,
                    ts(note.created_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn list_notes(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        after: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<Note>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, body, author, created_at FROM notes
                     WHERE tenant_id = ?1 AND conversation_id = ?2
                         AND (?3 IS NULL OR created_at > ?3) AND (?4 IS NULL OR created_at <= ?4)
                     ORDER BY created_at DESC, id DESC",
                )
                .map_err(db)?;
            let mut rows = stmt
                .query(params![
                    tenant.as_str(),
                    conversation.to_string(),
                    after.map(ts),
                    until.map(ts)
                ])
                .map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let text = |i| row.get::<_, String>(i).map_err(db);
                out.push(Note {
                    id: uuid(&text(0)?)?,
                    conversation_id: conversation,
                    body: text(1)?,
                    author: serde_json::from_str(&text(2)?).map_err(|_| corrupt("author"))?,
                    created_at: parse_ts(&text(3)?)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn append_audit(
        &self,
        tenant: &TenantId,
        entry: &AuditEntry,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (tenant, entry) = (tenant.clone(), entry.clone());
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO audit_log (id, tenant_id, at, actor_id, action, entry, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    entry.id.to_string(),
                    tenant.as_str(),
                    ts(entry.at),
                    entry.actor.id,
                    entry.action,
                    json(&entry)?,
                    ts(expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<AuditEntry>> {
        let (tenant, query) = (tenant.clone(), query.clone());
        let after_key = cursor.map(decode_cursor).transpose()?;
        let limit = page_size(limit);
        self.read(move |conn| {
            let (after_at, after_id) = after_key.unzip();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entry FROM audit_log
                     WHERE tenant_id = ?1
                         AND (?2 IS NULL OR at >= ?2) AND (?3 IS NULL OR at < ?3)
                         AND (?4 IS NULL OR actor_id = ?4) AND (?5 IS NULL OR action = ?5)
                         AND (?6 IS NULL OR at < ?6 OR (at = ?6 AND id < ?7))
                     ORDER BY at DESC, id DESC LIMIT ?8",
                )
                .map_err(db)?;
            let mut rows = stmt
                .query(params![
                    tenant.as_str(),
                    query.since.map(ts),
                    query.until.map(ts),
                    query.actor,
                    query.action,
                    after_at,
                    after_id.map(|id| id.to_string()),
                    (limit + 1) as i64
                ])
                .map_err(db)?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let entry: String = row.get(0).map_err(db)?;
                items.push(serde_json::from_str(&entry).map_err(|_| corrupt("audit entry"))?);
            }
            Ok(page(items, limit, |e: &AuditEntry| (ts(e.at), e.id)))
        })
        .await
    }

    async fn get_conversation(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<Conversation>> {
        let tenant = tenant.clone();
        self.read(move |conn| get_conversation(conn, &tenant, id))
            .await
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>> {
        let tenant = tenant.clone();
        let after_key = cursor.map(decode_cursor).transpose()?;
        let limit = page_size(limit);
        self.read(move |conn| {
            let fetch = (limit + 1) as i64;
            let conversation = conversation.to_string();
            let items = match after_key {
                None => collect(
                    conn,
                    &format!(
                        "SELECT {MESSAGE_COLS} FROM messages
                         WHERE tenant_id = ?1 AND conversation_id = ?2
                         ORDER BY created_at DESC, id DESC LIMIT ?3"
                    ),
                    &[&tenant.as_str(), &conversation, &fetch],
                    message_row,
                )?,
                Some((key, id)) => collect(
                    conn,
                    &format!(
                        "SELECT {MESSAGE_COLS} FROM messages
                         WHERE tenant_id = ?1 AND conversation_id = ?2
                             AND (created_at < ?3 OR (created_at = ?3 AND id < ?4))
                         ORDER BY created_at DESC, id DESC LIMIT ?5"
                    ),
                    &[
                        &tenant.as_str(),
                        &conversation,
                        &key,
                        &id.to_string(),
                        &fetch,
                    ],
                    message_row,
                )?,
            };
            Ok(page(items, limit, |m| (ts(m.created_at), m.id)))
        })
        .await
    }

    async fn search_messages(
        &self,
        tenant: &TenantId,
        search: &MessageSearch,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>> {
        let (tenant, search) = (tenant.clone(), search.clone());
        let after_key = cursor.map(decode_cursor).transpose()?;
        let limit = page_size(limit);
        self.read(move |conn| {
            let mut sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE tenant_id = :tenant");
            let mut args: Vec<(&str, Box<dyn ToSql>)> =
                vec![(":tenant", Box::new(tenant.as_str().to_owned()))];
            let equal = [
                (
                    "direction",
                    ":direction",
                    search.direction.map(|d| d.as_str()),
                ),
                ("status", ":status", search.status.map(|s| s.as_str())),
                ("channel", ":channel", search.channel.map(|c| c.as_str())),
                ("provider", ":provider", search.carrier.map(|p| p.as_str())),
                (
                    "from_number",
                    ":from",
                    search.from.as_ref().map(|a| a.as_str()),
                ),
                ("to_number", ":to", search.to.as_ref().map(|a| a.as_str())),
            ];
            for (column, name, value) in equal {
                if let Some(value) = value {
                    sql.push_str(&format!(" AND {column} = {name}"));
                    args.push((name, Box::new(value.to_owned())));
                }
            }
            if let Some(since) = search.since {
                sql.push_str(" AND created_at >= :since");
                args.push((":since", Box::new(ts(since))));
            }
            if let Some(until) = search.until {
                sql.push_str(" AND created_at < :until");
                args.push((":until", Box::new(ts(until))));
            }
            if let Some(q) = &search.q {
                sql.push_str(" AND lower(body) LIKE :q ESCAPE '\\'");
                args.push((":q", Box::new(like_pattern(q))));
            }
            if let Some((key, id)) = after_key {
                sql.push_str(
                    " AND (created_at < :after OR (created_at = :after AND id < :after_id))",
                );
                args.push((":after", Box::new(key)));
                args.push((":after_id", Box::new(id.to_string())));
            }
            sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT :limit");
            args.push((":limit", Box::new((limit + 1) as i64)));
            let named: Vec<(&str, &dyn ToSql)> =
                args.iter().map(|(name, v)| (*name, v.as_ref())).collect();
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt.query(named.as_slice()).map_err(db)?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                items.push(message_row(row)?);
            }
            Ok(page(items, limit, |m| (ts(m.created_at), m.id)))
        })
        .await
    }

    async fn mark_read(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
    ) -> StoreResult<Option<Conversation>> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            tx.exec(
                "UPDATE conversations SET unread_count = 0 WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), conversation.to_string()],
            )
            .map_err(db)?;
            let read = get_conversation(tx, &tenant, conversation)?;
            if let Some(c) = &read {
                outbox(
                    tx,
                    &tenant,
                    &[PushEvent::for_conversation(
                        "conversation.updated",
                        &tenant,
                        c,
                    )],
                )?;
            }
            Ok(read)
        })
        .await
    }

    async fn set_starred(
        &self,
        tenant: &TenantId,
        id: Uuid,
        starred: bool,
    ) -> StoreResult<Option<(Message, Conversation)>> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            let Some(message) = get_message(tx, &tenant, id)? else {
                return Ok(None);
            };
            // Only a real change moves the count, so starring twice counts once. updated_at
            // is left alone: it tracks delivery, and the sweeper reads it.
            if message.starred != starred {
                tx.exec(
                    "UPDATE messages SET starred = ?2 WHERE id = ?1",
                    params![id.to_string(), starred],
                )
                .map_err(db)?;
                tx.exec(
                    "UPDATE conversations SET starred_count = starred_count + ?2 WHERE id = ?1",
                    params![
                        message.conversation_id.to_string(),
                        if starred { 1 } else { -1 }
                    ],
                )
                .map_err(db)?;
            }
            let conversation = reload_conversation(tx, &tenant, message.conversation_id)?;
            if message.starred != starred {
                outbox(
                    tx,
                    &tenant,
                    &[PushEvent::for_conversation(
                        "conversation.updated",
                        &tenant,
                        &conversation,
                    )],
                )?;
            }
            Ok(Some((reload_message(tx, &tenant, id)?, conversation)))
        })
        .await
    }

    async fn set_opt_out(
        &self,
        tenant: &TenantId,
        contact: &Address,
        opted_out: bool,
    ) -> StoreResult<()> {
        let (tenant, contact) = (tenant.clone(), contact.clone());
        self.write(move |tx| {
            if opted_out {
                tx.exec(
                    "INSERT INTO opt_outs (tenant_id, contact, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, contact) DO UPDATE SET updated_at = excluded.updated_at",
                    params![tenant.as_str(), contact.as_str(), ts(Utc::now())],
                )
            } else {
                tx.exec(
                    "DELETE FROM opt_outs WHERE tenant_id = ?1 AND contact = ?2",
                    params![tenant.as_str(), contact.as_str()],
                )
            }
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn is_opted_out(&self, tenant: &TenantId, contact: &Address) -> StoreResult<bool> {
        let (tenant, contact) = (tenant.clone(), contact.clone());
        self.read(move |conn| {
            conn.row(
                "SELECT EXISTS (SELECT 1 FROM opt_outs WHERE tenant_id = ?1 AND contact = ?2)",
                params![tenant.as_str(), contact.as_str()],
                |r| r.get(0),
            )
            .map_err(db)
        })
        .await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |tx| {
            let n = tx
                .exec("DELETE FROM raw_webhooks WHERE expires_at <= ?1", [ts(now)])
                .map_err(db)?;
            // Split-message halves past their retention go too (not counted: they are not
            // payloads).
            tx.execute(
                "DELETE FROM message_parts WHERE expires_at <= ?1",
                [ts(now)],
            )
            .map_err(db)?;
            // So do audit entries past the audit retention, and the webhook log past its.
            tx.execute("DELETE FROM audit_log WHERE expires_at <= ?1", [ts(now)])
                .map_err(db)?;
            tx.execute("DELETE FROM webhook_log WHERE expires_at <= ?1", [ts(now)])
                .map_err(db)?;
            // LiveChat rate counts whose window (a minute) is over.
            tx.execute(
                "DELETE FROM livechat_rate WHERE window_start <= ?1",
                [ts(now - TimeDelta::minutes(2))],
            )
            .map_err(db)?;
            // And failed sign-ins a day old: no lockout window is that long.
            tx.execute(
                "DELETE FROM login_failures WHERE window_start <= ?1",
                [ts(now - TimeDelta::days(1))],
            )
            .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    async fn put_message_part(
        &self,
        tenant: &TenantId,
        part: &MessagePart,
        flush_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<PartOutcome> {
        let (tenant, part) = (tenant.clone(), part.clone());
        self.write(move |tx| crate::parts::put(tx, &tenant, &part, flush_at, expires_at))
            .await
    }

    async fn flush_message_parts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<FlushedPart>> {
        self.write(move |tx| crate::parts::flush(tx, now, limit))
            .await
    }

    async fn confirm_flushed_part(&self, part: &FlushedPart) -> StoreResult<()> {
        let (tenant, provider, key) = (
            part.tenant_id.clone(),
            part.message.provider,
            part.key.clone(),
        );
        self.write(move |tx| crate::parts::confirm(tx, tenant.as_str(), provider.as_str(), &key))
            .await
    }
}
