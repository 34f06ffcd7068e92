//! [`MessageStore`] on DynamoDB: messages, conversations, the outbox, raw payloads, opt-outs.
//! Key schema and access patterns: see the crate documentation.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, TransactWriteItem, Update,
};
use chrono::{DateTime, TimeDelta, Utc};
use omni_core::domain::{
    Address, Channel, DeliveryStatus, Direction, InboundMessage, MessagePart, ProviderKind,
    SendResult, StatusUpdate, TenantId,
};
use omni_core::model::{
    Assignee, AuditEntry, AuditQuery, Conversation, ConversationFilter, ConversationStatus,
    DeliveryClaim, Failover, LastMessage, Message, MessageSearch, NewOutbound, Note, Page,
    StatusApplied, WebhookLogEntry, WebhookLogQuery,
};
use omni_core::ports::{
    FlushedPart, MessageStore, PartOutcome, PushEvent, StoreError, StoreResult,
};
use rand::Rng;
use uuid::Uuid;

use crate::item::{
    corrupt, decode_cursor, doc, encode_cursor, get_n, get_s, get_uuid, json, key, n, opt_s,
    order_key, parse, parse_ts, s, ts, values, Item,
};
use crate::tenants::is_condition_failure;
use crate::{sdk_error, AwsBackend};

/// The largest page served, whatever the caller asks for.
const MAX_PAGE: usize = 500;

/// Attempts at an optimistic write before giving up (each retry re-reads what raced it).
const WRITE_ATTEMPTS: u32 = 24;

/// A short random pause before retrying a write that lost a race, growing with the attempt,
/// so contending writers spread out instead of colliding again.
async fn back_off(attempt: u32) {
    let ceiling_ms = 4u64 << attempt.min(5);
    let pause = rand::thread_rng().gen_range(1..=ceiling_ms);
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

/// Idempotency keys are honoured for this long (DynamoDB's TTL then removes them).
const IDEMPOTENCY_TTL: TimeDelta = TimeDelta::days(30);

/// Raw payloads larger than this are cut: a DynamoDB item holds at most 400 KB.
const MAX_RAW_BODY: usize = 300 * 1024;

/// Days of raw-payload expiry buckets [`MessageStore::purge_expired`] sweeps; anything older
/// was already removed by DynamoDB's TTL, which acts within about two days.
const PURGE_DAYS: i64 = 3;

/// The outbox index partition (sparse: only queued messages are in it).
const OUTBOX: &str = "OUTBOX";
/// The scheduled messages' partition of gsi2, by `send_at`.
const SCHEDULED: &str = "SCHEDULED";
/// How long a paced number's booking record outlives its last booking.
const PACE_TTL: TimeDelta = TimeDelta::days(2);

/// Index rows one delivery-log search reads at most before it answers a short page with a
/// cursor: a narrow filter over a long history must not hold a request for minutes.
const SEARCH_BUDGET: usize = 5_000;

fn message_key(tenant: &TenantId, id: Uuid) -> Item {
    key(format!("M#{tenant}#{id}"), "M")
}

fn conversation_key(tenant: &TenantId, id: Uuid) -> Item {
    key(format!("C#{tenant}#{id}"), "C")
}

fn thread_key(tenant: &TenantId, channel: Channel, contact: &Address) -> Item {
    key(format!("TH#{tenant}#{}#{contact}", channel.thread()), "TH")
}

/// Conversation ids are derived from what a conversation is ([`Conversation::id_for`]), so a
/// writer finds the conversation without reading a pointer to it first. Those made before
/// keep their random id, found through their thread item.
fn conversation_id_of(tenant: &TenantId, channel: Channel, contact: &Address) -> Uuid {
    Conversation::id_for(tenant, channel, contact)
}

/// What [`AwsBackend::conversation_lookup`] found.
#[derive(Default)]
struct ConversationLookup {
    conversation: Option<Item>,
    thread: Option<Item>,
    opted_out: bool,
}

fn carrier_id_key(tenant: &TenantId, provider: ProviderKind, carrier_id: &str) -> Item {
    key(format!("PM#{tenant}#{provider}#{carrier_id}"), "PM")
}

fn opt_out_key(tenant: &TenantId, contact: &str) -> Item {
    key(format!("O#{tenant}#{contact}"), "O")
}

/// The delivery log's partition: every message of the tenant, by creation.
fn log_index(tenant: &TenantId) -> String {
    format!("LOG#{tenant}")
}

fn messages_index(tenant: &TenantId, conversation: Uuid) -> String {
    format!("MSGS#{tenant}#{conversation}")
}

fn conversations_index(tenant: &TenantId) -> String {
    format!("CONVS#{tenant}")
}

/// A conversation's private notes: one partition, sorted by time.
fn notes_pk(tenant: &TenantId, conversation: Uuid) -> String {
    format!("NOTE#{tenant}#{conversation}")
}

/// A tenant's audit log: one partition, sorted by time.
/// The webhook log's partition: a tenant's, or `WHL#` alone for webhooks no tenant could be
/// told (tenant ids are never empty).
fn webhook_log_pk(tenant: Option<&TenantId>) -> String {
    format!("WHL#{}", tenant.map(TenantId::as_str).unwrap_or_default())
}

fn audit_pk(tenant: &TenantId) -> String {
    format!("AUD#{tenant}")
}

fn raw_bucket(at: DateTime<Utc>) -> String {
    format!("RAW#{}", at.format("%Y-%m-%d"))
}

pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn tenant_of(item: &Item) -> StoreResult<TenantId> {
    TenantId::parse(get_s(item, "tenant")?).map_err(|_| corrupt("tenant id"))
}

fn message_from(item: &Item) -> StoreResult<Message> {
    let mut message: Message = doc(item, "doc")?;
    message.tenant_id = Some(tenant_of(item)?);
    Ok(message)
}

fn conversation_from(item: &Item, opted_out: bool) -> StoreResult<Conversation> {
    let last_at = opt_s(item, "last_at").map(parse_ts).transpose()?;
    let last_message = match (opt_s(item, "last_id"), opt_s(item, "last_dir"), last_at) {
        (Some(id), Some(direction), Some(at)) => Some(LastMessage {
            id: Uuid::parse_str(id).map_err(|_| corrupt("last_id"))?,
            body: opt_s(item, "last_body").map(str::to_owned),
            direction: direction.parse().map_err(|_| corrupt("last_dir"))?,
            at,
        }),
        _ => None,
    };
    Ok(Conversation {
        id: get_uuid(item, "id")?,
        tenant_id: Some(tenant_of(item)?),
        channel: parse(item, "channel")?,
        contact: Address::from_stored(get_s(item, "contact")?).map_err(|_| corrupt("contact"))?,
        tenant_number: Address::from_stored(get_s(item, "tenant_number")?)
            .map_err(|_| corrupt("tenant_number"))?,
        unread_count: get_n(item, "unread")?,
        starred_count: get_n(item, "starred")?,
        last_message,
        last_message_at: last_at,
        opted_out,
        // Absent on conversations written before conversations had a status: open.
        status: opt_s(item, "cst")
            .map(|st| st.parse().map_err(|_| corrupt("cst")))
            .transpose()?
            .unwrap_or_default(),
        assignee: match (opt_s(item, "asg_id"), opt_s(item, "asg_name")) {
            (Some(id), Some(name)) => Some(Assignee {
                id: Uuid::parse_str(id).map_err(|_| corrupt("asg_id"))?,
                name: name.to_owned(),
            }),
            _ => None,
        },
        contact_name: opt_s(item, "contact_name").map(str::to_owned),
    })
}

/// The contact of a message being written, and the name it gives (an inbound message's
/// profile name) for its conversation.
struct Contact<'a> {
    address: &'a Address,
    name: Option<String>,
}

/// A new message item: the whole message as a document, plus the attributes conditions,
/// indexes and claims work on.
fn message_item(tenant: &TenantId, m: &Message) -> StoreResult<Item> {
    let mut item = message_key(tenant, m.id);
    item.extend(values([
        ("tenant", s(tenant.as_str())),
        ("id", s(m.id.to_string())),
        ("doc", json(m)?),
        ("st", s(m.status.as_str())),
        ("srank", n(i64::from(m.status.rank()))),
        ("ver", n(1)),
        ("upd", s(ts(m.updated_at))),
        ("attempts", n(0)),
        ("gsi1pk", s(messages_index(tenant, m.conversation_id))),
        ("gsi1sk", s(order_key(m.created_at, m.id))),
        ("gsi4pk", s(log_index(tenant))),
        ("gsi4sk", s(order_key(m.created_at, m.id))),
    ]));
    match (m.status, m.send_at) {
        (DeliveryStatus::Queued, _) => {
            item.insert("gsi2pk".into(), s(OUTBOX));
            item.insert("gsi2sk".into(), s(outbox_key(tenant, m, None)));
        }
        (DeliveryStatus::Scheduled, Some(at)) => {
            item.insert("gsi2pk".into(), s(SCHEDULED));
            item.insert("gsi2sk".into(), s(due_key(tenant, m.id, at)));
        }
        _ => {}
    }
    Ok(item)
}

/// The values every versioned write of a message's status binds: its document, status and
/// rank, the version read (`:ver`) and the next (`:next`), and when it changed.
fn status_write_values(m: &Message, ver: i64) -> StoreResult<Item> {
    Ok(values([
        (":doc", json(m)?),
        (":st", s(m.status.as_str())),
        (":rank", n(i64::from(m.status.rank()))),
        (":ver", n(ver)),
        (":next", n(ver + 1)),
        (":upd", s(ts(m.updated_at))),
    ]))
}

/// A queued message's place in the outbox index: when the sweeper may first think it lost,
/// its last change or, after a retry, when that retry is due if later.
fn outbox_key(tenant: &TenantId, m: &Message, retry_at: Option<DateTime<Utc>>) -> String {
    let due = retry_at.map_or(m.updated_at, |at| at.max(m.updated_at));
    due_key(tenant, m.id, due)
}

/// A gsi2 sort key: due time first, so a range query finds what is due.
fn due_key(tenant: &TenantId, id: Uuid, due: DateTime<Utc>) -> String {
    format!("{}#{tenant}#{id}", ts(due))
}

fn pace_key(number: &Address) -> Item {
    key(format!("PACE#{number}"), "PACE")
}

fn page_size(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// What writing a new message came to.
enum Written {
    /// Stored; with its conversation as it now is, when asked for.
    Stored(Box<(Message, Option<Conversation>)>),
    /// The guard item (carrier id or idempotency key) was there already.
    Duplicate(Item),
}

impl AwsBackend {
    fn update_op(
        &self,
        key: Item,
        expression: String,
        condition: &str,
        vals: Item,
    ) -> StoreResult<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.resources.table)
            .set_key(Some(key))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(vals))
            .build()
            .map_err(|e| sdk_error("Update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Writes a changed message (status, errors, carrier ids, events) if nobody changed it since
    /// version `ver` was read; a status write also requires the rank not to go backwards.
    /// Releases any delivery claim; keeps the message in the outbox index only while queued
    /// (keyed by `retry_at` when a retry is due later than now).
    fn message_update_op(
        &self,
        tenant: &TenantId,
        m: &Message,
        ver: i64,
        retry_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TransactWriteItem> {
        let mut vals = status_write_values(m, ver)?;
        let mut expression =
            "SET doc = :doc, st = :st, srank = :rank, ver = :next, upd = :upd".to_owned();
        if m.status == DeliveryStatus::Queued {
            expression.push_str(", gsi2pk = :ob, gsi2sk = :obk REMOVE claim_until");
            vals.insert(":ob".into(), s(OUTBOX));
            vals.insert(":obk".into(), s(outbox_key(tenant, m, retry_at)));
        } else {
            expression.push_str(" REMOVE claim_until, gsi2pk, gsi2sk");
        }
        self.update_op(
            message_key(tenant, m.id),
            expression,
            "ver = :ver AND srank <= :rank",
            vals,
        )
    }

    /// Puts a message back in the outbox with a fresh retry budget after `change` (a requeue,
    /// a fallback) has moved it there: `None` when the tenant has no such message or `change`
    /// answers false (nothing to do). Not [`Self::message_update_op`]: its guard lets a status
    /// only move forward, and this is the one step back.
    async fn back_to_outbox(
        &self,
        tenant: &TenantId,
        id: Uuid,
        mut change: impl FnMut(&mut Message) -> StoreResult<bool>,
    ) -> StoreResult<Option<Message>> {
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let Some((mut message, ver)) = self.load_message(tenant, id).await? else {
                return Ok(None);
            };
            if !change(&mut message)? {
                return Ok(None);
            }
            let mut vals = status_write_values(&message, ver)?;
            vals.extend(values([
                (":zero", n(0)),
                (":ob", s(OUTBOX)),
                (":obk", s(outbox_key(tenant, &message, None))),
            ]));
            let op = self.update_op(
                message_key(tenant, id),
                "SET doc = :doc, st = :st, srank = :rank, ver = :next, upd = :upd, \
                 attempts = :zero, gsi2pk = :ob, gsi2sk = :obk REMOVE claim_until"
                    .into(),
                "ver = :ver",
                vals,
            )?;
            if self.transact(vec![op]).await? {
                return Ok(Some(message));
            }
        }
        Err(StoreError::Backend(format!(
            "message {id}: gave up after repeated write conflicts"
        )))
    }

    /// A message with its version, for an optimistic update.
    async fn load_message(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<(Message, i64)>> {
        let Some(item) = self.get_item(message_key(tenant, id)).await? else {
            return Ok(None);
        };
        Ok(Some((message_from(&item)?, get_n(&item, "ver")?)))
    }

    async fn conversation(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Conversation>> {
        let Some(item) = self.get_item(conversation_key(tenant, id)).await? else {
            return Ok(None);
        };
        let opted_out = self
            .is_opted_out_str(tenant, get_s(&item, "contact")?)
            .await?;
        conversation_from(&item, opted_out).map(Some)
    }

    async fn is_opted_out_str(&self, tenant: &TenantId, contact: &str) -> StoreResult<bool> {
        Ok(self.get_item(opt_out_key(tenant, contact)).await?.is_some())
    }

    /// The items of `keys` that exist, by one strongly consistent `BatchGetItem` (and more
    /// for any keys DynamoDB leaves unprocessed).
    async fn batch_get(&self, keys: Vec<Item>) -> StoreResult<Vec<Item>> {
        let mut found = Vec::new();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .consistent_read(true)
                .set_keys(Some(keys))
                .build()
                .map_err(|e| sdk_error("BatchGetItem", e))?,
        );
        while let Some(keys) = pending.take() {
            let out = self
                .ddb
                .batch_get_item()
                .request_items(&self.resources.table, keys)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", e))?;
            found.extend(
                out.responses
                    .and_then(|mut r| r.remove(&self.resources.table))
                    .unwrap_or_default(),
            );
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.resources.table))
                .filter(|k| !k.keys.is_empty());
        }
        Ok(found)
    }

    /// The conversation at `id`, the `thread` pointer and whether `contact` opted out of the
    /// tenant, in one strongly consistent `BatchGetItem`.
    async fn conversation_lookup(
        &self,
        tenant: &TenantId,
        id: Uuid,
        thread: &Item,
        contact: &str,
    ) -> StoreResult<ConversationLookup> {
        let conversation = conversation_key(tenant, id);
        let opt_out = opt_out_key(tenant, contact);
        let mut found = ConversationLookup::default();
        for item in self
            .batch_get(vec![conversation.clone(), thread.clone(), opt_out.clone()])
            .await?
        {
            if item.get("pk") == conversation.get("pk") {
                found.conversation = Some(item);
            } else if item.get("pk") == thread.get("pk") {
                found.thread = Some(item);
            } else if item.get("pk") == opt_out.get("pk") {
                found.opted_out = true;
            }
        }
        Ok(found)
    }

    /// Which of `contacts` opted out of this tenant (batched reads).
    async fn opted_out_among(
        &self,
        tenant: &TenantId,
        contacts: &[String],
    ) -> StoreResult<HashSet<String>> {
        let mut found = HashSet::new();
        let unique: Vec<&String> = contacts
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for chunk in unique.chunks(100) {
            let keys = chunk.iter().map(|c| opt_out_key(tenant, c)).collect();
            for item in self.batch_get(keys).await? {
                let pk = get_s(&item, "pk")?;
                if let Some(contact) = pk.rsplit('#').next() {
                    found.insert(contact.to_owned());
                }
            }
        }
        Ok(found)
    }

    /// Stores a new outbound message (see `MessageStore::create_outbound`): `Some` when it
    /// was created, holding its conversation as the write left it when `with_conversation`.
    async fn write_outbound(
        &self,
        tenant: &TenantId,
        m: &NewOutbound,
        with_conversation: bool,
    ) -> StoreResult<(Message, Option<Option<Conversation>>)> {
        let guard = m.idempotency_key.as_ref().map(|k| {
            let mut g = key(format!("I#{tenant}#{k}"), "I");
            g.insert("ttl".into(), n((m.at + IDEMPOTENCY_TTL).timestamp()));
            g
        });
        let message = Message::queued(tenant, m, Uuid::nil());
        match self
            .write_new_message(
                tenant,
                message,
                Contact {
                    address: &m.to,
                    name: None,
                },
                0,
                guard,
                with_conversation,
            )
            .await?
        {
            Written::Stored(stored) => {
                let (message, conversation) = *stored;
                Ok((message, Some(conversation)))
            }
            Written::Duplicate(existing) => {
                let first = get_uuid(&existing, "message_id")?;
                let (message, _) = self
                    .load_message(tenant, first)
                    .await?
                    .ok_or_else(|| corrupt("idempotency key without message"))?;
                Ok((message, None))
            }
        }
    }

    /// Stores a new message and, in the same transaction, creates or updates its conversation
    /// (thread lookup, `unread` added, last message moved only forward) and puts `guard` (the
    /// carrier id or idempotency item) unless it exists. With `with_conversation`, also
    /// returns the conversation as the write left it: computed, not read back (every
    /// conversation write moves `ver`, and this one was conditional on it); the contact's
    /// opt-out comes with the conversation's lookup, and an outbound message (a send) to a
    /// contact who opted out is refused with [`StoreError::RecipientOptedOut`].
    async fn write_new_message(
        &self,
        tenant: &TenantId,
        mut message: Message,
        contact: Contact<'_>,
        unread: i64,
        guard: Option<Item>,
        with_conversation: bool,
    ) -> StoreResult<Written> {
        let Contact {
            address: contact,
            name: contact_name,
        } = contact;
        let thread = thread_key(tenant, message.channel, contact);
        let derived = conversation_id_of(tenant, message.channel, contact);
        let new_key = order_key(message.created_at, message.id);
        // A message's event webhooks are written in its transaction (the outbox): an inbound
        // one's `message.received`, and the conversation it changes.
        let inbound = message.direction == Direction::Inbound;
        let kinds: &[&str] = if inbound {
            &["message.received", "conversation.updated"]
        } else {
            &["conversation.updated"]
        };
        let endpoints = self.subscribed_endpoints(tenant, kinds).await?;
        let written = Mutex::new(Vec::new());
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let mut ops = Vec::new();
            // The conversation as this write leaves it: its versioned write succeeding means
            // nobody changed it in between, so it need not be read again.
            let after: Item;
            // One read: the conversation at its derived id, the thread pointer a conversation
            // made before ids were derived has instead, and the contact's opt-out.
            let found = self
                .conversation_lookup(tenant, derived, &thread, contact.as_str())
                .await?;
            let opted_out = found.opted_out;
            // A send (the outbound write that wants its conversation) to a contact who opted
            // out is refused, its replays too, as `create_outbound_with_conversation` says.
            if with_conversation && opted_out && message.direction == Direction::Outbound {
                return Err(StoreError::RecipientOptedOut);
            }
            let existing = match (found.conversation, found.thread) {
                (Some(conv), _) => Some((derived, conv)),
                (None, Some(th)) => {
                    let id = get_uuid(&th, "conversation_id")?;
                    if id == derived {
                        return Err(corrupt("thread without conversation"));
                    }
                    let conv = self
                        .get_item(conversation_key(tenant, id))
                        .await?
                        .ok_or_else(|| corrupt("thread without conversation"))?;
                    Some((id, conv))
                }
                (None, None) => None,
            };
            let conversation_id = match existing {
                None => {
                    let id = derived;
                    let mut th = thread.clone();
                    th.insert("conversation_id".into(), s(id.to_string()));
                    ops.push(self.put_op(th, Some("attribute_not_exists(pk)"), None)?);
                    let mut conv = conversation_key(tenant, id);
                    conv.extend(values([
                        ("id", s(id.to_string())),
                        ("tenant", s(tenant.as_str())),
                        ("channel", s(message.channel.thread().as_str())),
                        ("contact", s(contact.as_str())),
                        (
                            "tenant_number",
                            s(tenant_number(&message, contact).as_str()),
                        ),
                        ("unread", n(unread)),
                        ("starred", n(0)),
                        ("ver", n(1)),
                        ("last_id", s(message.id.to_string())),
                        ("last_dir", s(message.direction.as_str())),
                        ("last_at", s(ts(message.created_at))),
                        ("last_key", s(&new_key)),
                        ("gsi1pk", s(conversations_index(tenant))),
                        ("gsi1sk", s(order_key(message.created_at, id))),
                    ]));
                    if let Some(body) = &message.body {
                        conv.insert("last_body".into(), s(body));
                    }
                    if let Some(name) = &contact_name {
                        conv.insert("contact_name".into(), s(name));
                    }
                    after = conv.clone();
                    ops.push(self.put_op(conv, Some("attribute_not_exists(pk)"), None)?);
                    id
                }
                Some((id, conv)) => {
                    let ver = get_n(&conv, "ver")?;
                    let mut next = conv.clone();
                    next.insert(
                        "tenant_number".into(),
                        s(tenant_number(&message, contact).as_str()),
                    );
                    next.insert("ver".into(), n(ver + 1));
                    next.insert(
                        "unread".into(),
                        n(get_n(&conv, "unread").unwrap_or(0) + unread),
                    );
                    let mut vals = values([
                        (":tn", s(tenant_number(&message, contact).as_str())),
                        (":ver", n(ver)),
                        (":next", n(ver + 1)),
                        (":u", n(unread)),
                    ]);
                    let mut set = vec!["tenant_number = :tn", "ver = :next"];
                    let mut remove = Vec::new();
                    // A new message from the contact opens a resolved conversation again.
                    if message.direction == Direction::Inbound {
                        set.push("cst = :open");
                        vals.insert(":open".into(), s(ConversationStatus::Open.as_str()));
                        next.insert("cst".into(), s(ConversationStatus::Open.as_str()));
                    }
                    if let Some(name) = &contact_name {
                        set.push("contact_name = :cname");
                        vals.insert(":cname".into(), s(name));
                        next.insert("contact_name".into(), s(name));
                    }
                    // A late redelivery must not hide newer traffic; ties on time go to the
                    // larger (later v7) id.
                    if opt_s(&conv, "last_key").is_none_or(|k| k < new_key.as_str()) {
                        set.extend([
                            "last_id = :lid",
                            "last_dir = :ldir",
                            "last_at = :lat",
                            "last_key = :lkey",
                            "gsi1sk = :order",
                        ]);
                        vals.extend(values([
                            (":lid", s(message.id.to_string())),
                            (":ldir", s(message.direction.as_str())),
                            (":lat", s(ts(message.created_at))),
                            (":lkey", s(&new_key)),
                            (":order", s(order_key(message.created_at, id))),
                        ]));
                        for (name, value) in [
                            ("last_id", s(message.id.to_string())),
                            ("last_dir", s(message.direction.as_str())),
                            ("last_at", s(ts(message.created_at))),
                            ("last_key", s(&new_key)),
                            ("gsi1sk", s(order_key(message.created_at, id))),
                        ] {
                            next.insert(name.into(), value);
                        }
                        match &message.body {
                            Some(body) => {
                                set.push("last_body = :lbody");
                                vals.insert(":lbody".into(), s(body));
                                next.insert("last_body".into(), s(body));
                            }
                            None => {
                                remove.push("last_body");
                                next.remove("last_body");
                            }
                        }
                    }
                    after = next;
                    let mut expression = format!("SET {} ADD unread :u", set.join(", "));
                    if !remove.is_empty() {
                        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
                    }
                    ops.push(self.update_op(
                        conversation_key(tenant, id),
                        expression,
                        "ver = :ver",
                        vals,
                    )?);
                    id
                }
            };
            message.conversation_id = conversation_id;
            ops.push(self.put_op(
                message_item(tenant, &message)?,
                Some("attribute_not_exists(pk)"),
                None,
            )?);
            if let Some(guard) = &guard {
                let mut g = guard.clone();
                g.insert("message_id".into(), s(message.id.to_string()));
                g.insert("direction".into(), s(message.direction.as_str()));
                ops.push(self.put_op(g, Some("attribute_not_exists(pk)"), None)?);
            }
            if !endpoints.is_empty() {
                let conversation = conversation_from(&after, opted_out)?;
                let mut events = Vec::with_capacity(2);
                if inbound {
                    events.push(PushEvent::for_message("message.received", tenant, &message));
                }
                events.push(PushEvent::for_conversation(
                    "conversation.updated",
                    tenant,
                    &conversation,
                ));
                ops.extend(self.delivery_ops(tenant, &endpoints, &events, &written)?);
            }
            if self.transact(ops).await? {
                self.announce(written).await;
                let conversation = if with_conversation {
                    Some(conversation_from(&after, opted_out)?)
                } else {
                    None
                };
                return Ok(Written::Stored(Box::new((message, conversation))));
            }
            if let Some(guard) = &guard {
                let guard_key = key(get_s(guard, "pk")?, get_s(guard, "sk")?);
                if let Some(existing) = self.get_item(guard_key).await? {
                    return Ok(Written::Duplicate(existing));
                }
            }
            // Raced with another writer of this conversation: read again and retry.
        }
        Err(StoreError::Backend(
            "conversation too contended: gave up after repeated conflicts".into(),
        ))
    }

    /// Read-modify-write of a message under its version, retried when a concurrent write wins.
    /// `change` returns `None` to leave the message as it is; `retry_at` is when a queued
    /// message's next attempt is due (see [`outbox_key`]).
    async fn modify_message<F>(
        &self,
        tenant: &TenantId,
        id: Uuid,
        retry_at: Option<DateTime<Utc>>,
        mut change: F,
        extra: impl Fn(&Message) -> StoreResult<Vec<TransactWriteItem>>,
    ) -> StoreResult<Message>
    where
        F: FnMut(Message) -> Option<Message>,
    {
        let mut claimed = self.take_claim(tenant, id);
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let remembered = claimed.take();
            let from_claim = remembered.is_some();
            let (message, ver) = match remembered {
                Some(known) => known,
                None => self.load_message(tenant, id).await?.ok_or_else(|| {
                    StoreError::Backend(format!("message {id} not found for tenant {tenant}"))
                })?,
            };
            let Some(changed) = change(message.clone()) else {
                if from_claim {
                    // Only a fresh read may say nothing changes.
                    continue;
                }
                return Ok(message);
            };
            let mut ops = vec![self.message_update_op(tenant, &changed, ver, retry_at)?];
            ops.extend(extra(&changed)?);
            if self.transact(ops).await? {
                return Ok(changed);
            }
        }
        Err(StoreError::Backend(format!(
            "message {id}: gave up after repeated write conflicts"
        )))
    }

    /// [`Self::modify_message`] of a change that is the event `kind` of the message: its
    /// deliveries to the tenant's subscribed endpoints go in the same transaction, and are
    /// queued for the dispatcher once it commits.
    async fn modify_message_with_event<F>(
        &self,
        tenant: &TenantId,
        id: Uuid,
        kind: &str,
        change: F,
        extra: impl Fn(&Message) -> StoreResult<Vec<TransactWriteItem>>,
    ) -> StoreResult<Message>
    where
        F: FnMut(Message) -> Option<Message>,
    {
        let endpoints = self.subscribed_endpoints(tenant, &[kind]).await?;
        let written = Mutex::new(Vec::new());
        let message = self
            .modify_message(tenant, id, None, change, |message| {
                let mut ops = extra(message)?;
                if !endpoints.is_empty() {
                    ops.extend(self.delivery_ops(
                        tenant,
                        &endpoints,
                        &[PushEvent::for_message(kind, tenant, message)],
                        &written,
                    )?);
                }
                Ok(ops)
            })
            .await?;
        self.announce(written).await;
        Ok(message)
    }

    /// Updates an existing conversation (`None` when the tenant has none of that id) and
    /// returns it as the update left it. The expression must move its version: every write of
    /// a conversation does, so a writer that read it can tell, from its own conditional write
    /// succeeding, what the item now holds.
    async fn update_conversation_item(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expression: String,
        vals: Item,
    ) -> StoreResult<Option<Conversation>> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(conversation_key(tenant, id)))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_values(Some(vals))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| corrupt("conversation"))?;
                let opted_out = self
                    .is_opted_out_str(tenant, get_s(&item, "contact")?)
                    .await?;
                conversation_from(&item, opted_out).map(Some)
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    /// Whether a conversation's index row passes `filter`; `q` not found in its contact is
    /// looked for in its messages' text.
    async fn conversation_passes(
        &self,
        tenant: &TenantId,
        filter: &ConversationFilter,
        item: &Item,
    ) -> StoreResult<bool> {
        let conversation = conversation_from(item, false)?;
        match (filter.matches_without_text(&conversation), &filter.q) {
            (None, _) => Ok(false),
            (Some(true), _) | (Some(false), None) => Ok(true),
            (Some(false), Some(q)) => {
                let q = q.to_lowercase();
                let mut after = None;
                loop {
                    let (items, more) = self
                        .list_index(
                            messages_index(tenant, conversation.id),
                            MAX_PAGE,
                            after.as_deref(),
                        )
                        .await?;
                    for item in &items {
                        let body = message_from(item)?.body.unwrap_or_default();
                        if body.to_lowercase().contains(&q) {
                            return Ok(true);
                        }
                    }
                    if !more {
                        return Ok(false);
                    }
                    after = next_cursor(true, items.last())?;
                }
            }
        }
    }

    /// Updates a conversation with `expression` (which must move `ver`) and, when the tenant
    /// has endpoints subscribed to `kind`, writes their deliveries in the same transaction: the
    /// conversation is then read, `apply` makes the change to it here, and it is written
    /// under its version with the deliveries. `None` when the tenant has no such conversation.
    async fn update_conversation_with_event(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expression: String,
        vals: Item,
        kind: &str,
        apply: impl Fn(&mut Conversation),
    ) -> StoreResult<Option<Conversation>> {
        let endpoints = self.subscribed_endpoints(tenant, &[kind]).await?;
        if endpoints.is_empty() {
            return self
                .update_conversation_item(tenant, id, expression, vals)
                .await;
        }
        let written = Mutex::new(Vec::new());
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let Some(item) = self.get_item(conversation_key(tenant, id)).await? else {
                return Ok(None);
            };
            let opted_out = self
                .is_opted_out_str(tenant, get_s(&item, "contact")?)
                .await?;
            let mut conversation = conversation_from(&item, opted_out)?;
            apply(&mut conversation);
            let mut vals = vals.clone();
            vals.insert(":ver".into(), n(get_n(&item, "ver")?));
            let mut ops = vec![self.update_op(
                conversation_key(tenant, id),
                expression.clone(),
                "ver = :ver",
                vals,
            )?];
            ops.extend(self.delivery_ops(
                tenant,
                &endpoints,
                &[PushEvent::for_conversation(kind, tenant, &conversation)],
                &written,
            )?);
            if self.transact(ops).await? {
                self.announce(written).await;
                return Ok(Some(conversation));
            }
        }
        Err(StoreError::Backend(format!(
            "conversation {id}: gave up after repeated write conflicts"
        )))
    }

    /// Index rows of one listing, newest first, after the cursor's key.
    async fn list_index(
        &self,
        partition: String,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<(Vec<Item>, bool)> {
        let after = cursor.map(decode_cursor).transpose()?;
        let fetch = limit + 1;
        let mut vals = values([(":p", s(partition))]);
        let condition = match after {
            Some(after) => {
                vals.insert(":after".into(), s(after));
                "gsi1pk = :p AND gsi1sk < :after"
            }
            None => "gsi1pk = :p",
        };
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .index_name("gsi1")
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(vals.clone()))
                .scan_index_forward(false)
                .limit(i32::try_from(fetch - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if items.len() >= fetch || start.is_none() {
                break;
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        Ok((items, more))
    }
}

/// The tenant's number in a message's thread: the other end from the contact.
fn tenant_number<'a>(message: &'a Message, contact: &Address) -> &'a Address {
    if &message.from == contact {
        &message.to
    } else {
        &message.from
    }
}

/// A delivery-log page from the matches found (sort key and message), newest first: past
/// `limit`, the cursor is the last one served; a walk cut short by the budget resumes
/// below `last_read`.
fn search_page(
    mut found: Vec<(String, Message)>,
    limit: usize,
    last_read: Option<String>,
) -> Page<Message> {
    let next = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|(key, _)| key.clone())
    } else {
        last_read
    };
    Page {
        items: found.into_iter().map(|(_, m)| m).collect(),
        next_cursor: next.as_deref().map(encode_cursor),
    }
}

fn next_cursor(more: bool, last: Option<&Item>) -> StoreResult<Option<String>> {
    match (more, last) {
        (true, Some(item)) => Ok(Some(encode_cursor(get_s(item, "gsi1sk")?))),
        _ => Ok(None),
    }
}

#[async_trait]
impl MessageStore for AwsBackend {
    async fn save_raw_webhook(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
        dedupe_key: &str,
        body: &[u8],
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = Utc::now();
        let mut item = key(format!("R#{tenant}#{dedupe_key}"), "R");
        item.extend(values([
            ("tenant", s(tenant.as_str())),
            ("provider", s(provider.as_str())),
            (
                "body",
                AttributeValue::B(body[..body.len().min(MAX_RAW_BODY)].to_vec().into()),
            ),
            ("received_at", s(ts(now))),
            ("expires_at", n(millis(expires_at))),
            ("ttl", n(expires_at.timestamp())),
            // A keys-only index: the purge needs nothing else, and the body stays out of it.
            ("gsi3pk", s(raw_bucket(expires_at))),
            (
                "gsi3sk",
                s(format!("{}#{tenant}#{dedupe_key}", ts(expires_at))),
            ),
        ]));
        if body.len() > MAX_RAW_BODY {
            item.insert("truncated".into(), AttributeValue::Bool(true));
        }
        // An expired copy that TTL has not removed yet does not count.
        self.put_if(
            item,
            "attribute_not_exists(pk) OR expires_at <= :now",
            Some(values([(":now", n(millis(now)))])),
        )
        .await
    }

    async fn apply_inbound(
        &self,
        tenant: &TenantId,
        m: &InboundMessage,
    ) -> StoreResult<Option<(Message, Conversation)>> {
        // The conversation id is settled when it is written.
        let message = Message::received(tenant, m, Uuid::nil());
        let guard = carrier_id_key(tenant, m.provider, &m.provider_message_id);
        match self
            .write_new_message(
                tenant,
                message,
                Contact {
                    address: &m.from,
                    name: m.contact_name(),
                },
                1,
                Some(guard),
                true,
            )
            .await?
        {
            Written::Stored(stored) => {
                let (message, conversation) = *stored;
                Ok(conversation.map(|c| (message, c)))
            }
            Written::Duplicate(_) => Ok(None),
        }
    }

    async fn apply_status(
        &self,
        tenant: &TenantId,
        u: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        let Some(index) = self
            .get_item(carrier_id_key(tenant, u.provider, &u.provider_message_id))
            .await?
        else {
            return Ok(StatusApplied::NotFound);
        };
        if opt_s(&index, "direction") != Some(Direction::Outbound.as_str()) {
            return Ok(StatusApplied::NotFound);
        }
        let id = get_uuid(&index, "message_id")?;
        let mut changed = false;
        let message = self
            .modify_message_with_event(
                tenant,
                id,
                "message.status",
                |mut message| {
                    changed = message.apply_status_update(u, Utc::now());
                    changed.then_some(message)
                },
                |_| Ok(Vec::new()),
            )
            .await?;
        Ok(if changed {
            StatusApplied::Changed(message)
        } else {
            StatusApplied::Unchanged(message)
        })
    }

    async fn create_outbound(
        &self,
        tenant: &TenantId,
        m: &NewOutbound,
    ) -> StoreResult<(Message, bool)> {
        let (message, created) = self.write_outbound(tenant, m, false).await?;
        Ok((message, created.is_some()))
    }

    async fn create_outbound_with_conversation(
        &self,
        tenant: &TenantId,
        m: &NewOutbound,
    ) -> StoreResult<(Message, Option<Conversation>)> {
        let (message, created) = self.write_outbound(tenant, m, true).await?;
        Ok((message, created.flatten()))
    }

    async fn claim_delivery(
        &self,
        tenant: &TenantId,
        id: Uuid,
        lease: Duration,
    ) -> StoreResult<Option<DeliveryClaim>> {
        let now = Utc::now();
        // A lease too long to represent holds until the end of time rather than panicking.
        let until = TimeDelta::from_std(lease)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let out = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(message_key(tenant, id)))
            .update_expression("SET claim_until = :until ADD attempts :one")
            .condition_expression(
                "attribute_exists(pk) AND st = :queued \
                 AND (attribute_not_exists(claim_until) OR claim_until <= :now)",
            )
            .set_expression_attribute_values(Some(values([
                (":until", n(millis(until))),
                (":one", n(1)),
                (":queued", s(DeliveryStatus::Queued.as_str())),
                (":now", n(millis(now))),
            ])))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| corrupt("claimed message"))?;
                let message = message_from(&item)?;
                self.remember_claim(tenant, message.clone(), get_n(&item, "ver")?);
                Ok(Some(DeliveryClaim {
                    message,
                    attempt: u32::try_from(get_n(&item, "attempts")?).unwrap_or(u32::MAX),
                }))
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn record_sent(
        &self,
        tenant: &TenantId,
        id: Uuid,
        r: &SendResult,
        failover: Option<&Failover>,
    ) -> StoreResult<Message> {
        // No claim is required: the carrier has taken the message even if our lease ran out
        // during the call, and forgetting that would send it twice.
        self.modify_message_with_event(
            tenant,
            id,
            "message.sent",
            |mut message| {
                message.record_sent(r, failover, Utc::now());
                Some(message)
            },
            |message| {
                let mut index = carrier_id_key(tenant, r.provider, &r.provider_message_id);
                index.extend(values([
                    ("message_id", s(message.id.to_string())),
                    ("direction", s(Direction::Outbound.as_str())),
                ]));
                Ok(vec![self.put_op(index, None, None)?])
            },
        )
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
        self.modify_message(
            tenant,
            id,
            Some(retry_at),
            |mut message| {
                message.record_retry(error_code, error, Utc::now());
                Some(message)
            },
            |_| Ok(Vec::new()),
        )
        .await
    }

    async fn record_failed(
        &self,
        tenant: &TenantId,
        id: Uuid,
        error_code: Option<&str>,
        error: &str,
    ) -> StoreResult<Message> {
        self.modify_message_with_event(
            tenant,
            id,
            "message.status",
            |mut message| {
                message.record_failed(error_code, error, Utc::now());
                Some(message)
            },
            |_| Ok(Vec::new()),
        )
        .await
    }

    async fn requeue_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>> {
        self.back_to_outbox(tenant, id, |message| {
            message.requeue(Utc::now())?;
            Ok(true)
        })
        .await
    }

    async fn defer_delivery(
        &self,
        tenant: &TenantId,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.take_claim(tenant, id);
        let out = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(message_key(tenant, id)))
            .update_expression("SET gsi2sk = :due REMOVE claim_until ADD attempts :minus")
            .condition_expression("st = :queued AND attempts > :zero")
            .set_expression_attribute_values(Some(values([
                (":due", s(due_key(tenant, id, at))),
                (":minus", n(-1)),
                (":zero", n(0)),
                (":queued", s(DeliveryStatus::Queued.as_str())),
            ])))
            .send()
            .await;
        match out {
            // No longer queued (canceled meanwhile): nothing to give back.
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn book_send_slot(
        &self,
        number: &Address,
        interval: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        let step = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let expires = n((now + PACE_TTL).timestamp());
        // DynamoDB has no max(): either the number is free now (the first write), or the
        // booking moves its next free time on by one interval (the second); should the free
        // time pass between the two, the first succeeds on the next round.
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let free = self
                .ddb
                .update_item()
                .table_name(&self.resources.table)
                .set_key(Some(pace_key(number)))
                .update_expression("SET next_at = :next, #ttl = :ttl")
                .condition_expression("attribute_not_exists(next_at) OR next_at <= :now")
                .expression_attribute_names("#ttl", "ttl")
                .set_expression_attribute_values(Some(values([
                    (":next", n(millis(now).saturating_add(step))),
                    (":now", n(millis(now))),
                    (":ttl", expires.clone()),
                ])))
                .send()
                .await;
            match free {
                Ok(_) => return Ok(now),
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
            let later = self
                .ddb
                .update_item()
                .table_name(&self.resources.table)
                .set_key(Some(pace_key(number)))
                .update_expression("SET next_at = next_at + :step, #ttl = :ttl")
                .condition_expression("next_at > :now")
                .expression_attribute_names("#ttl", "ttl")
                .set_expression_attribute_values(Some(values([
                    (":step", n(step)),
                    (":now", n(millis(now))),
                    (":ttl", expires.clone()),
                ])))
                .return_values(ReturnValue::UpdatedOld)
                .send()
                .await;
            match later {
                Ok(out) => {
                    let old = out.attributes.ok_or_else(|| corrupt("pace"))?;
                    let at = get_n(&old, "next_at")?;
                    return Ok(DateTime::from_timestamp_millis(at).unwrap_or(now));
                }
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
        }
        Err(StoreError::Backend(format!(
            "pace of {number}: gave up after repeated write conflicts"
        )))
    }

    async fn fall_back_message(
        &self,
        tenant: &TenantId,
        id: Uuid,
        remaining: usize,
        from: &Address,
        reason: &str,
    ) -> StoreResult<Option<Message>> {
        self.take_claim(tenant, id);
        // The carrier id index item of the attempt it leaves stays: a late delivery receipt
        // still finds the message through it.
        self.back_to_outbox(tenant, id, |message| {
            Ok(message
                .fall_back(remaining, from.clone(), reason, Utc::now())
                .is_some())
        })
        .await
    }

    async fn cancel_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>> {
        let kind = "message.status";
        let endpoints = self.subscribed_endpoints(tenant, &[kind]).await?;
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let Some(item) = self.get_item(message_key(tenant, id)).await? else {
                return Ok(None);
            };
            let mut message = message_from(&item)?;
            let (ver, attempts) = (get_n(&item, "ver")?, get_n(&item, "attempts")?);
            message.cancel(u32::try_from(attempts).unwrap_or(u32::MAX), Utc::now())?;
            let mut vals = status_write_values(&message, ver)?;
            vals.insert(":attempts".into(), n(attempts));
            // The attempt count guards against a delivery claim taken since the read (a
            // claim does not move the version).
            let mut ops = vec![self.update_op(
                message_key(tenant, id),
                "SET doc = :doc, st = :st, srank = :rank, ver = :next, upd = :upd \
                 REMOVE claim_until, gsi2pk, gsi2sk"
                    .into(),
                "ver = :ver AND attempts = :attempts",
                vals,
            )?];
            let written = Mutex::new(Vec::new());
            if !endpoints.is_empty() {
                ops.extend(self.delivery_ops(
                    tenant,
                    &endpoints,
                    &[PushEvent::for_message(kind, tenant, &message)],
                    &written,
                )?);
            }
            if self.transact(ops).await? {
                self.announce(written).await;
                return Ok(Some(message));
            }
        }
        Err(StoreError::Backend(format!(
            "message {id}: gave up after repeated write conflicts"
        )))
    }

    async fn release_scheduled(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let mut due = Vec::new();
        let mut start = None;
        // '~' sorts after the '#' that follows the time in every key due at `until`.
        let vals = values([
            (":sch", s(SCHEDULED)),
            (":upto", s(format!("{}~", ts(until)))),
        ]);
        while due.len() < limit {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .index_name("gsi2")
                .key_condition_expression("gsi2pk = :sch AND gsi2sk < :upto")
                .set_expression_attribute_values(Some(vals.clone()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                if due.len() < limit {
                    due.push(message_from(&item)?);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        let mut released = Vec::with_capacity(due.len());
        for scheduled in due {
            let tenant = scheduled
                .tenant_id
                .clone()
                .ok_or_else(|| corrupt("tenant"))?;
            let mut moved = false;
            let message = self
                .modify_message(
                    &tenant,
                    scheduled.id,
                    // Not stranded before its time, however far ahead the caller looked.
                    scheduled.send_at,
                    |mut message| {
                        moved = message.release(Utc::now());
                        moved.then_some(message)
                    },
                    |_| Ok(Vec::new()),
                )
                .await?;
            if moved {
                released.push(message);
            }
        }
        Ok(released)
    }

    async fn stranded_outbound(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(TenantId, Uuid)>> {
        let mut out = Vec::new();
        let mut start = None;
        let vals = values([
            (":ob", s(OUTBOX)),
            (":before", s(ts(before))),
            (":now", n(millis(Utc::now()))),
        ]);
        while out.len() < limit {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .index_name("gsi2")
                .key_condition_expression("gsi2pk = :ob AND gsi2sk < :before")
                .filter_expression("attribute_not_exists(claim_until) OR claim_until <= :now")
                .set_expression_attribute_values(Some(vals.clone()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                if out.len() < limit {
                    out.push((tenant_of(&item)?, get_uuid(&item, "id")?));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn get_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>> {
        Ok(self.load_message(tenant, id).await?.map(|(m, _)| m))
    }

    async fn find_conversations(
        &self,
        tenant: &TenantId,
        filter: &ConversationFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Conversation>> {
        let limit = page_size(limit);
        // The index holds every conversation by recency; a filter is applied as its pages are
        // read, until a page's worth (and one more, which says there is more) is kept.
        let mut kept = Vec::new();
        let mut after = cursor.map(str::to_owned);
        loop {
            let (items, more) = self
                .list_index(conversations_index(tenant), limit + 1, after.as_deref())
                .await?;
            for item in &items {
                if kept.len() > limit {
                    break;
                }
                if self.conversation_passes(tenant, filter, item).await? {
                    kept.push(item.clone());
                }
            }
            if kept.len() > limit || !more {
                break;
            }
            after = next_cursor(true, items.last())?;
        }
        let more = kept.len() > limit;
        kept.truncate(limit);
        let contacts = kept
            .iter()
            .map(|i| get_s(i, "contact").map(str::to_owned))
            .collect::<StoreResult<Vec<_>>>()?;
        let opted_out = self.opted_out_among(tenant, &contacts).await?;
        let conversations = kept
            .iter()
            .zip(&contacts)
            .map(|(item, contact)| conversation_from(item, opted_out.contains(contact)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page {
            items: conversations,
            next_cursor: next_cursor(more, kept.last())?,
        })
    }

    async fn update_conversation(
        &self,
        tenant: &TenantId,
        id: Uuid,
        status: Option<ConversationStatus>,
        assignee: Option<Option<Assignee>>,
    ) -> StoreResult<Option<Conversation>> {
        let mut set = vec!["ver = ver + :one"];
        let mut remove = Vec::new();
        let mut vals = values([(":one", n(1))]);
        if let Some(status) = status {
            set.push("cst = :cst");
            vals.insert(":cst".into(), s(status.as_str()));
        }
        match &assignee {
            Some(Some(a)) => {
                set.extend(["asg_id = :aid", "asg_name = :aname"]);
                vals.insert(":aid".into(), s(a.id.to_string()));
                vals.insert(":aname".into(), s(&a.name));
            }
            Some(None) => remove.extend(["asg_id", "asg_name"]),
            None => {}
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let kind = if assignee.is_some() {
            "conversation.assigned"
        } else {
            "conversation.updated"
        };
        self.update_conversation_with_event(tenant, id, expression, vals, kind, |c| {
            if let Some(status) = status {
                c.status = status;
            }
            if let Some(assignee) = &assignee {
                c.assignee = assignee.clone();
            }
        })
        .await
    }

    async fn add_note(&self, tenant: &TenantId, note: &Note) -> StoreResult<()> {
        let mut item = key(
            notes_pk(tenant, note.conversation_id),
            order_key(note.created_at, note.id),
        );
        item.insert("doc".into(), json(note)?);
        self.put_item(item).await
    }

    async fn list_notes(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        after: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<Note>> {
        // A conversation's notes are few: one query of its partition, filtered here.
        let mut notes = self
            .query_prefix(&notes_pk(tenant, conversation), "")
            .await?
            .iter()
            .map(|i| doc::<Note>(i, "doc"))
            .filter(|n| {
                n.as_ref().map_or(true, |n| {
                    after.is_none_or(|a| n.created_at > a)
                        && until.is_none_or(|u| n.created_at <= u)
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        notes.reverse();
        Ok(notes)
    }

    async fn claim_auto_reply(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        now: DateTime<Utc>,
        cooldown: std::time::Duration,
    ) -> StoreResult<bool> {
        let cutoff = TimeDelta::from_std(cooldown)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut item = key(format!("AR#{tenant}#{conversation}"), "AR");
        item.extend(values([
            ("last_at", s(ts(now))),
            // Gone once it no longer holds a turn back.
            (
                "ttl",
                n((now
                    + TimeDelta::from_std(cooldown)
                        .unwrap_or(TimeDelta::MAX)
                        .min(TimeDelta::days(8)))
                .timestamp()),
            ),
        ]));
        self.put_if(
            item,
            "attribute_not_exists(pk) OR last_at <= :cutoff",
            Some(values([(":cutoff", s(ts(cutoff)))])),
        )
        .await
    }

    async fn count_visitor_message(
        &self,
        tenant: &TenantId,
        session: Uuid,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<(u32, DateTime<Utc>)> {
        let item_key = key(format!("LCRATE#{tenant}#{session}"), "LCRATE");
        let cutoff = s(ts(now - window));
        // One UpdateItem while a window is open (the visitor's usual case); a window's first
        // message takes a second. Of two racing to start a window one does and the other
        // counts in it, so no message goes uncounted.
        for _ in 0..WRITE_ATTEMPTS {
            let counted = self
                .ddb
                .update_item()
                .table_name(&self.resources.table)
                .set_key(Some(item_key.clone()))
                .update_expression("ADD cnt :one")
                .condition_expression("since > :cutoff")
                .set_expression_attribute_values(Some(values([
                    (":one", n(1)),
                    (":cutoff", cutoff.clone()),
                ])))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match counted {
                Ok(out) => {
                    let item = out.attributes.ok_or_else(|| corrupt("rate count"))?;
                    let count = u32::try_from(get_n(&item, "cnt")?).unwrap_or(u32::MAX);
                    return Ok((count, parse_ts(get_s(&item, "since")?)?));
                }
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
            let started = self
                .ddb
                .update_item()
                .table_name(&self.resources.table)
                .set_key(Some(item_key.clone()))
                .update_expression("SET since = :now, cnt = :one, #ttl = :ttl")
                .condition_expression("attribute_not_exists(pk) OR since <= :cutoff")
                .expression_attribute_names("#ttl", "ttl")
                .set_expression_attribute_values(Some(values([
                    (":now", s(ts(now))),
                    (":one", n(1)),
                    (":cutoff", cutoff.clone()),
                    (":ttl", n((now + window * 2).timestamp())),
                ])))
                .send()
                .await;
            match started {
                Ok(_) => return Ok((1, now)),
                // Another message started the window in between: count in it.
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
        }
        Err(StoreError::Backend("the rate count kept changing".into()))
    }

    async fn append_webhook_log(
        &self,
        tenant: Option<&TenantId>,
        entry: &WebhookLogEntry,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut item = key(
            webhook_log_pk(tenant),
            order_key(entry.received_at, entry.id),
        );
        item.extend(values([
            ("doc", json(entry)?),
            ("ttl", n(expires_at.timestamp())),
        ]));
        self.ddb
            .put_item()
            .table_name(&self.resources.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    async fn list_webhook_log(
        &self,
        tenant: Option<&TenantId>,
        query: &WebhookLogQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<WebhookLogEntry>> {
        let limit = page_size(limit);
        let below = cursor.map(decode_cursor).transpose()?;
        let mut vals = values([(":p", s(webhook_log_pk(tenant)))]);
        let mut condition = "pk = :p".to_owned();
        if let Some(below) = below {
            condition.push_str(" AND sk < :below");
            vals.insert(":below".into(), s(below));
        }
        // Newest first; `since` ends the walk, carrier and result are filtered here.
        let since = query.since.map(ts);
        let mut kept: Vec<(String, WebhookLogEntry)> = Vec::new();
        let mut start = None;
        'walk: loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .key_condition_expression(&condition)
                .set_expression_attribute_values(Some(vals.clone()))
                .scan_index_forward(false)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let sk = get_s(&item, "sk")?.to_owned();
                if since.as_deref().is_some_and(|since| sk.as_str() < since) {
                    break 'walk;
                }
                let entry: WebhookLogEntry = doc(&item, "doc")?;
                if query.keeps(&entry) {
                    kept.push((sk, entry));
                    if kept.len() > limit {
                        break 'walk;
                    }
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        let more = kept.len() > limit;
        kept.truncate(limit);
        let next_cursor = match (more, kept.last()) {
            (true, Some((sk, _))) => Some(encode_cursor(sk)),
            _ => None,
        };
        Ok(Page {
            items: kept.into_iter().map(|(_, e)| e).collect(),
            next_cursor,
        })
    }

    async fn append_audit(
        &self,
        tenant: &TenantId,
        entry: &AuditEntry,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut item = key(audit_pk(tenant), order_key(entry.at, entry.id));
        item.extend(values([
            ("doc", json(entry)?),
            ("ttl", n(expires_at.timestamp())),
        ]));
        // Append-only: an entry is never written over.
        self.ddb
            .put_item()
            .table_name(&self.resources.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    async fn list_audit(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<AuditEntry>> {
        let limit = page_size(limit);
        let after = cursor.map(decode_cursor).transpose()?;
        // The sort key is `<at>#<id>`: `until` and the cursor bound it from above, `since`
        // from below; actor and action are filtered here.
        let upper = match (after, query.until) {
            (Some(a), Some(u)) => Some(a.min(ts(u))),
            (a, u) => a.or(u.map(ts)),
        };
        let mut vals = values([(":p", s(audit_pk(tenant)))]);
        let mut condition = "pk = :p".to_owned();
        match (&upper, query.since) {
            (Some(upper), Some(since)) => {
                condition.push_str(" AND sk BETWEEN :lo AND :hi");
                vals.insert(":lo".into(), s(ts(since)));
                vals.insert(":hi".into(), s(upper));
            }
            (Some(upper), None) => {
                condition.push_str(" AND sk < :hi");
                vals.insert(":hi".into(), s(upper));
            }
            (None, Some(since)) => {
                condition.push_str(" AND sk >= :lo");
                vals.insert(":lo".into(), s(ts(since)));
            }
            (None, None) => {}
        }
        let mut kept: Vec<(String, AuditEntry)> = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .key_condition_expression(&condition)
                .set_expression_attribute_values(Some(vals.clone()))
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let sk = get_s(&item, "sk")?.to_owned();
                // BETWEEN includes its upper end, which the cursor's own entry sits on.
                if upper.as_ref().is_some_and(|u| sk >= *u) {
                    continue;
                }
                let entry: AuditEntry = doc(&item, "doc")?;
                if query.keeps(&entry) {
                    kept.push((sk, entry));
                }
            }
            start = page.last_evaluated_key;
            if kept.len() > limit || start.is_none() {
                break;
            }
        }
        let more = kept.len() > limit;
        kept.truncate(limit);
        let next_cursor = match (more, kept.last()) {
            (true, Some((sk, _))) => Some(encode_cursor(sk)),
            _ => None,
        };
        Ok(Page {
            items: kept.into_iter().map(|(_, e)| e).collect(),
            next_cursor,
        })
    }

    async fn get_conversation(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<Conversation>> {
        self.conversation(tenant, id).await
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>> {
        let limit = page_size(limit);
        let (items, more) = self
            .list_index(messages_index(tenant, conversation), limit, cursor)
            .await?;
        Ok(Page {
            items: items.iter().map(message_from).collect::<StoreResult<_>>()?,
            next_cursor: next_cursor(more, items.last())?,
        })
    }

    async fn search_messages(
        &self,
        tenant: &TenantId,
        search: &MessageSearch,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>> {
        let limit = page_size(limit);
        // Newest first, below the cursor and `until`; `since` ends the walk. The other fields
        // are filtered here with the shared predicate, so both backends keep the same messages.
        let below = [cursor.map(decode_cursor).transpose()?, search.until.map(ts)]
            .into_iter()
            .flatten()
            .min();
        let since = search.since.map(ts);
        let mut vals = values([(":p", s(log_index(tenant)))]);
        let condition = match below {
            Some(below) => {
                vals.insert(":below".into(), s(below));
                "gsi4pk = :p AND gsi4sk < :below"
            }
            None => "gsi4pk = :p",
        };
        // Filters in the walk: read in larger steps, most rows will not be kept.
        let narrowed = MessageSearch {
            since: None,
            until: None,
            ..search.clone()
        } != MessageSearch::default();
        let step = if narrowed { MAX_PAGE } else { limit + 1 };
        let (mut items, mut read, mut start, mut last_read) = (Vec::new(), 0, None, None);
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .index_name("gsi4")
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(vals.clone()))
                .scan_index_forward(false)
                .limit(i32::try_from(step).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let key = get_s(&item, "gsi4sk")?.to_owned();
                if since.as_deref().is_some_and(|since| key.as_str() < since) {
                    return Ok(search_page(items, limit, None));
                }
                read += 1;
                let message = message_from(&item)?;
                if search.matches(&message) {
                    items.push((key.clone(), message));
                    if items.len() > limit {
                        return Ok(search_page(items, limit, None));
                    }
                }
                last_read = Some(key);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(search_page(items, limit, None));
            }
            if read >= SEARCH_BUDGET {
                return Ok(search_page(items, limit, last_read));
            }
        }
    }

    async fn mark_read(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
    ) -> StoreResult<Option<Conversation>> {
        let vals = values([(":zero", n(0)), (":one", n(1))]);
        self.update_conversation_with_event(
            tenant,
            conversation,
            "SET unread = :zero ADD ver :one".into(),
            vals,
            "conversation.updated",
            |c| c.unread_count = 0,
        )
        .await
    }

    async fn set_starred(
        &self,
        tenant: &TenantId,
        id: Uuid,
        starred: bool,
    ) -> StoreResult<Option<(Message, Conversation)>> {
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let Some((mut message, ver)) = self.load_message(tenant, id).await? else {
                return Ok(None);
            };
            // Only a real change moves the count, so starring twice counts once. updated_at
            // is left alone: it tracks delivery, and the sweeper reads it.
            if message.starred != starred {
                message.starred = starred;
                let delta = if starred { 1 } else { -1 };
                let mut ops = vec![self.update_op(
                    message_key(tenant, id),
                    "SET doc = :doc, ver = :next".to_owned(),
                    "ver = :ver",
                    values([
                        (":doc", json(&message)?),
                        (":ver", n(ver)),
                        (":next", n(ver + 1)),
                    ]),
                )?];
                let conversation_key = conversation_key(tenant, message.conversation_id);
                let endpoints = self
                    .subscribed_endpoints(tenant, &["conversation.updated"])
                    .await?;
                let written = Mutex::new(Vec::new());
                if endpoints.is_empty() {
                    ops.push(self.update_op(
                        conversation_key,
                        "ADD starred :d, ver :one".to_owned(),
                        "attribute_exists(pk)",
                        values([(":d", n(delta)), (":one", n(1))]),
                    )?);
                } else {
                    // Its event webhooks carry the conversation as this write leaves it: read
                    // it, and write under its version.
                    let item = self
                        .get_item(conversation_key.clone())
                        .await?
                        .ok_or_else(|| corrupt("message without conversation"))?;
                    let opted_out = self
                        .is_opted_out_str(tenant, get_s(&item, "contact")?)
                        .await?;
                    let mut conversation = conversation_from(&item, opted_out)?;
                    conversation.starred_count += delta;
                    ops.push(self.update_op(
                        conversation_key,
                        "ADD starred :d, ver :one".to_owned(),
                        "ver = :ver",
                        values([
                            (":d", n(delta)),
                            (":one", n(1)),
                            (":ver", n(get_n(&item, "ver")?)),
                        ]),
                    )?);
                    ops.extend(self.delivery_ops(
                        tenant,
                        &endpoints,
                        &[PushEvent::for_conversation(
                            "conversation.updated",
                            tenant,
                            &conversation,
                        )],
                        &written,
                    )?);
                }
                if !self.transact(ops).await? {
                    continue;
                }
                self.announce(written).await;
            }
            let conversation = self
                .conversation(tenant, message.conversation_id)
                .await?
                .ok_or_else(|| corrupt("message without conversation"))?;
            return Ok(Some((message, conversation)));
        }
        Err(StoreError::Backend(format!(
            "message {id}: gave up after repeated write conflicts"
        )))
    }

    async fn set_opt_out(
        &self,
        tenant: &TenantId,
        contact: &Address,
        opted_out: bool,
    ) -> StoreResult<()> {
        let key = opt_out_key(tenant, contact.as_str());
        if opted_out {
            let mut item = key;
            item.insert("updated_at".into(), s(ts(Utc::now())));
            self.put_item(item).await
        } else {
            self.ddb
                .delete_item()
                .table_name(&self.resources.table)
                .set_key(Some(key))
                .send()
                .await
                .map_err(|e| sdk_error("DeleteItem", e))?;
            Ok(())
        }
    }

    async fn is_opted_out(&self, tenant: &TenantId, contact: &Address) -> StoreResult<bool> {
        self.is_opted_out_str(tenant, contact.as_str()).await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut purged = 0;
        // '$' sorts right after '#', so every key of an expiry at or before `now` is below it.
        let upto = format!("{}$", ts(now));
        for days_ago in (0..PURGE_DAYS).rev() {
            let bucket = raw_bucket(now - TimeDelta::days(days_ago));
            let mut start = None;
            loop {
                let page = self
                    .ddb
                    .query()
                    .table_name(&self.resources.table)
                    .index_name("gsi3")
                    .key_condition_expression("gsi3pk = :b AND gsi3sk < :upto")
                    .set_expression_attribute_values(Some(values([
                        (":b", s(&bucket)),
                        (":upto", s(&upto)),
                    ])))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| sdk_error("Query", e))?;
                for item in page.items.unwrap_or_default() {
                    // The index may trail a re-save with a later expiry: check before deleting.
                    let deleted = self
                        .ddb
                        .delete_item()
                        .table_name(&self.resources.table)
                        .set_key(Some(key(get_s(&item, "pk")?, get_s(&item, "sk")?)))
                        .condition_expression("expires_at <= :now")
                        .set_expression_attribute_values(Some(values([(":now", n(millis(now)))])))
                        .send()
                        .await;
                    match deleted {
                        Ok(_) => purged += 1,
                        Err(e) if is_condition_failure(&e) => {}
                        Err(e) => return Err(sdk_error("DeleteItem", e)),
                    }
                }
                start = page.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(purged)
    }

    async fn put_message_part(
        &self,
        tenant: &TenantId,
        part: &MessagePart,
        flush_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<PartOutcome> {
        self.put_part(tenant, part, flush_at, expires_at).await
    }

    async fn flush_message_parts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<FlushedPart>> {
        self.flush_parts(now, limit).await
    }

    async fn confirm_flushed_part(&self, part: &FlushedPart) -> StoreResult<()> {
        self.confirm_part(part).await
    }
}
