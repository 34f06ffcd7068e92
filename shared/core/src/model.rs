//! Records Omni keeps: tenants, number routes, messages and conversations, in the shapes the
//! public contract returns.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ports::StoreError;
use crate::team::{Actor, ActorType, Role};
use crate::templates::SentTemplate;

use crate::domain::{
    Address, Channel, DeliveryStatus, Direction, InboundMessage, Media, Priority, ProviderKind,
    Region, SendResult, StatusUpdate, TenantId,
};

/// An organisation using Omni (a dispatch centre).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// `[a-z0-9-]{1,64}`.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Region used to read numbers written in national format.
    pub default_region: Region,
    /// Reply to the HELP keyword; a generic text when unset.
    pub help_text: Option<String>,
    /// When the tenant was created.
    pub created_at: DateTime<Utc>,
    /// When the tenant was last changed.
    pub updated_at: DateTime<Utc>,
    /// The channels a message falls back to, by its first channel, when the send gives none
    /// (`PUT /v1/admin/tenants/{t}/fallback`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallback: BTreeMap<Channel, Vec<FallbackStep>>,
}

/// One step of a message's fallback: the channel to try next when the current one fails for
/// good or has not delivered within `after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackStep {
    /// The next channel, to the same contact.
    pub channel: Channel,
    /// How long the current channel has to report `delivered` before this one is tried.
    pub after_secs: u64,
}

/// A tenant API key as stored and listed: never the key, only its hash (stored apart) and
/// its first characters, so a leaked key can be recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// `key_…`, the id the admin API revokes it by.
    pub id: String,
    /// What the operator called it.
    pub name: Option<String>,
    /// The key's first characters (`omk_` and 8 more); unknown for keys issued before they
    /// were kept.
    pub prefix: Option<String>,
    /// When it was issued; unknown for keys the AWS backend issued before it was kept.
    pub created_at: Option<DateTime<Utc>>,
    /// When it last opened a request, to the minute; never, if unset.
    pub last_used_at: Option<DateTime<Utc>>,
    /// What it may do; keys issued before keys had roles are admins.
    #[serde(default = "admin_role")]
    pub role: Role,
}

fn admin_role() -> Role {
    Role::Admin
}

/// Who an API key opens: its tenant, its id, name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyOwner {
    /// The tenant.
    pub tenant: TenantId,
    /// The key's id.
    pub key_id: String,
    /// The key's name, if it has one.
    pub name: Option<String>,
    /// What it may do.
    pub role: Role,
}

impl ApiKeyOwner {
    /// The key as an actor (named by its id when it has no name).
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorType::ApiKey,
            id: self.key_id.clone(),
            name: self.name.clone().unwrap_or_else(|| self.key_id.clone()),
        }
    }
}

/// A tenant number: inbound traffic to it belongs to the tenant, and the tenant sends from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRoute {
    /// The number, E.164.
    pub number: Address,
    /// Its owner.
    pub tenant_id: TenantId,
    /// The carrier the number lives at.
    pub provider: ProviderKind,
    /// The channels it sends and receives on.
    pub channels: Vec<Channel>,
    /// When it was (re)configured.
    pub updated_at: DateTime<Utc>,
    /// At most this many sends a second from it (e.g. 1 for a long code), so its carrier
    /// never refuses one for speed; unpaced when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
}

/// One status transition of a message, for its audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The status reached.
    pub status: DeliveryStatus,
    /// When.
    pub at: DateTime<Utc>,
    /// Who said so: `api`, `worker`, `sweeper`, or a carrier name.
    pub source: String,
    /// Why, when it is worth saying: e.g. that the delivery worker failed over to another
    /// carrier, and from which of the tenant's numbers the message then went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A tenant's carriers per channel, in priority order, for failover
/// (`PUT /v1/admin/tenants/{id}/routing`, e.g. `{"sms": ["twilio", "voipms"]}`).
///
/// A message goes out first through the carrier of the number it was sent from; the listed
/// carriers after that one are its fallbacks, in order, each sending from the tenant's own
/// number on that carrier. A channel that is not listed has no fallback.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Routing(pub BTreeMap<Channel, Vec<ProviderKind>>);

impl Routing {
    /// The carriers listed for a channel (empty when none are).
    pub fn providers(&self, channel: Channel) -> &[ProviderKind] {
        self.0.get(&channel).map(Vec::as_slice).unwrap_or_default()
    }
}

/// How a message went out when it did not go through its sender number's own carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    /// The tenant number it was sent from (the tenant's number on the fallback carrier).
    pub from: Address,
    /// Why, for the message's events: the carriers passed over and the reason for each.
    pub note: String,
}

/// A message as the contract returns it. Serialised by hand (below) to add what is derived
/// from it rather than stored: an SMS's `segments` and `encoding`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    /// UUID v7.
    pub id: Uuid,
    /// The tenant; never serialised (the caller's key already says it).
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// The conversation it belongs to.
    pub conversation_id: Uuid,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The channel.
    pub channel: Channel,
    /// Sender.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Text.
    pub body: Option<String>,
    /// Attachments.
    pub media: Vec<Media>,
    /// The template it was sent with: one of the tenant's (its body is the rendering), or a
    /// WhatsApp template given inline (instead of a body).
    #[serde(default)]
    pub template: Option<SentTemplate>,
    /// The subject line (email only).
    #[serde(default)]
    pub subject: Option<String>,
    /// Current status.
    pub status: DeliveryStatus,
    /// The carrier that carried it (once known).
    pub provider: Option<ProviderKind>,
    /// The carrier's id (once known).
    pub provider_message_id: Option<String>,
    /// The carrier's error code on failure.
    pub error_code: Option<String>,
    /// The failure reason.
    pub error_message: Option<String>,
    /// Starred by a dispatcher.
    pub starred: bool,
    /// When it was accepted or received.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Every status transition, oldest first.
    pub events: Vec<StatusEvent>,
    /// Who sent it (outbound only; none for messages sent before this was recorded).
    #[serde(default)]
    pub sent_by: Option<Actor>,
    /// How urgent it is (outbound only).
    #[serde(default)]
    pub priority: Priority,
    /// When it is to be sent, for a message scheduled ahead.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    /// The channels still to fall back to, in order (outbound only).
    #[serde(default)]
    pub fallback: Vec<FallbackStep>,
}

impl Message {
    /// How a carrier counts the message's text: SMS only, and only when it has text.
    pub fn sms_count(&self) -> Option<crate::sms::SmsCount> {
        match (self.channel, &self.body) {
            (Channel::Sms, Some(body)) => Some(crate::sms::count(body)),
            _ => None,
        }
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let sms = self.sms_count();
        let mut m = serializer.serialize_struct("Message", 25)?;
        // The tenant is never serialised: the caller's key already says it.
        m.skip_field("tenant_id")?;
        m.serialize_field("id", &self.id)?;
        m.serialize_field("conversation_id", &self.conversation_id)?;
        m.serialize_field("direction", &self.direction)?;
        m.serialize_field("channel", &self.channel)?;
        m.serialize_field("from", &self.from)?;
        m.serialize_field("to", &self.to)?;
        m.serialize_field("body", &self.body)?;
        m.serialize_field("media", &self.media)?;
        match &self.template {
            Some(template) => m.serialize_field("template", template)?,
            None => m.skip_field("template")?,
        }
        match &self.subject {
            Some(subject) => m.serialize_field("subject", subject)?,
            None => m.skip_field("subject")?,
        }
        m.serialize_field("status", &self.status)?;
        m.serialize_field("provider", &self.provider)?;
        m.serialize_field("provider_message_id", &self.provider_message_id)?;
        m.serialize_field("error_code", &self.error_code)?;
        m.serialize_field("error_message", &self.error_message)?;
        m.serialize_field("starred", &self.starred)?;
        m.serialize_field("created_at", &self.created_at)?;
        m.serialize_field("updated_at", &self.updated_at)?;
        m.serialize_field("events", &self.events)?;
        m.serialize_field("sent_by", &self.sent_by)?;
        match self.direction {
            Direction::Outbound => m.serialize_field("priority", &self.priority)?,
            Direction::Inbound => m.skip_field("priority")?,
        }
        match &self.send_at {
            Some(at) => m.serialize_field("send_at", at)?,
            None => m.skip_field("send_at")?,
        }
        if self.fallback.is_empty() {
            m.skip_field("fallback")?;
        } else {
            m.serialize_field("fallback", &self.fallback)?;
        }
        match sms {
            Some(sms) => {
                m.serialize_field("segments", &sms.segments)?;
                m.serialize_field("encoding", &sms.encoding)?;
            }
            None => {
                m.skip_field("segments")?;
                m.skip_field("encoding")?;
            }
        }
        m.end()
    }
}

/// Who records the transitions a store makes on its own behalf.
const SOURCE_API: &str = "api";
const SOURCE_WORKER: &str = "worker";

/// The lifecycle rules every store applies, written once: what a new message looks like and
/// how sends, retries, failures and carrier callbacks change it.
impl Message {
    /// A message a contact sent, received now, in `conversation_id`.
    pub fn received(tenant: &TenantId, m: &InboundMessage, conversation_id: Uuid) -> Message {
        Message {
            id: m.id,
            tenant_id: Some(tenant.clone()),
            conversation_id,
            direction: Direction::Inbound,
            channel: m.channel,
            from: m.from.clone(),
            to: m.to.clone(),
            body: m.body.clone(),
            media: m.media.clone(),
            template: None,
            subject: None,
            status: DeliveryStatus::Received,
            provider: Some(m.provider),
            provider_message_id: Some(m.provider_message_id.clone()),
            error_code: None,
            error_message: None,
            starred: false,
            created_at: m.received_at,
            updated_at: m.received_at,
            events: vec![StatusEvent {
                status: DeliveryStatus::Received,
                at: m.received_at,
                source: m.provider.as_str().to_owned(),
                note: None,
            }],
            sent_by: None,
            priority: Priority::Normal,
            send_at: None,
            fallback: Vec::new(),
        }
    }

    /// A new outbound message in `conversation_id`: `queued` (the outbox), or `scheduled`
    /// when it has a `send_at`.
    pub fn queued(tenant: &TenantId, m: &NewOutbound, conversation_id: Uuid) -> Message {
        let status = if m.send_at.is_some() {
            DeliveryStatus::Scheduled
        } else {
            DeliveryStatus::Queued
        };
        Message {
            id: m.id,
            tenant_id: Some(tenant.clone()),
            conversation_id,
            direction: Direction::Outbound,
            channel: m.channel,
            from: m.from.clone(),
            to: m.to.clone(),
            body: m.body.clone(),
            media: m.media.clone(),
            template: m.template.clone(),
            subject: m.subject.clone(),
            status,
            provider: None,
            provider_message_id: None,
            error_code: None,
            error_message: None,
            starred: false,
            created_at: m.at,
            updated_at: m.at,
            events: vec![StatusEvent {
                status,
                at: m.at,
                source: SOURCE_API.to_owned(),
                note: None,
            }],
            sent_by: m.sent_by.clone(),
            priority: m.priority,
            send_at: m.send_at,
            fallback: m.fallback.clone(),
        }
    }

    /// Moves the message to its next fallback channel, `channel` from `from`, as a new attempt
    /// of the same message: queued again, its carrier ids cleared (returned, so the store can
    /// still find the message by them for a late delivery receipt), the step in its history.
    /// `None` (nothing changed) when it has delivered or been read, was canceled, or has
    /// already moved past `remaining` steps.
    pub fn fall_back(
        &mut self,
        remaining: usize,
        from: Address,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<Option<(ProviderKind, String)>> {
        let movable = self.direction == Direction::Outbound
            && self.fallback.len() == remaining
            && !self.fallback.is_empty()
            && !matches!(
                self.status,
                DeliveryStatus::Delivered
                    | DeliveryStatus::Read
                    | DeliveryStatus::Canceled
                    | DeliveryStatus::Scheduled
            );
        if !movable {
            return None;
        }
        let step = self.fallback.remove(0);
        let superseded = self.provider.zip(self.provider_message_id.take());
        let note = format!(
            "fallback from {} to {} (from {from}): {reason}",
            self.channel, step.channel
        );
        self.channel = step.channel;
        self.from = from;
        self.provider = None;
        self.error_code = None;
        self.error_message = None;
        // Meta's template form goes with WhatsApp only; elsewhere the rendered text goes.
        if step.channel != Channel::Whatsapp {
            if let Some(SentTemplate::Stored { whatsapp, .. }) = &mut self.template {
                *whatsapp = None;
            }
        }
        self.status = DeliveryStatus::Queued;
        self.events.push(StatusEvent {
            status: DeliveryStatus::Queued,
            at: now,
            source: SOURCE_WORKER.to_owned(),
            note: Some(note),
        });
        self.updated_at = now;
        Some(superseded)
    }

    /// A scheduled message whose time has come joins the outbox: `queued`, the step in its
    /// history. False (nothing changed) when it is not scheduled.
    pub fn release(&mut self, now: DateTime<Utc>) -> bool {
        if self.status != DeliveryStatus::Scheduled {
            return false;
        }
        self.transition(DeliveryStatus::Queued, now, SOURCE_WORKER, None);
        self.updated_at = now;
        true
    }

    /// Cancels a message no send attempt has started for: `scheduled`, or `queued` with
    /// `attempts` (the store's count of delivery claims) zero. Anything else is left as it
    /// is: [`StoreError::Conflict`] says why.
    pub fn cancel(&mut self, attempts: u32, now: DateTime<Utc>) -> Result<(), StoreError> {
        let cancelable = self.direction == Direction::Outbound
            && (self.status == DeliveryStatus::Scheduled
                || (self.status == DeliveryStatus::Queued && attempts == 0));
        if !cancelable {
            return Err(StoreError::Conflict(format!(
                "sending has begun: the message is {}",
                if self.status == DeliveryStatus::Queued {
                    "being sent"
                } else {
                    self.status.as_str()
                }
            )));
        }
        self.transition(DeliveryStatus::Canceled, now, SOURCE_API, None);
        self.updated_at = now;
        Ok(())
    }

    /// Applies a carrier's status callback monotonically ([`DeliveryStatus::merge`]); false
    /// when it changes nothing (a duplicate, or late and out of order).
    ///
    /// A success milestone reported after a later one (`delivered` after `read`) leaves the
    /// status alone but is filled into the history once, at its place in the lifecycle, so
    /// the history is the same whatever order the callbacks arrived in.
    pub fn apply_status_update(&mut self, u: &StatusUpdate, now: DateTime<Utc>) -> bool {
        // A receipt for an attempt this message fell back from counts only as a delivery:
        // its failure is what the fallback already acted on.
        let superseded =
            self.provider_message_id.as_deref() != Some(u.provider_message_id.as_str());
        if superseded && !matches!(u.status, DeliveryStatus::Delivered | DeliveryStatus::Read) {
            return false;
        }
        let merged = self.status.merge(u.status);
        if merged == self.status {
            return self.fill_in_milestone(u, now);
        }
        self.transition(merged, u.at, u.provider.as_str(), None);
        if u.error_code.is_some() {
            self.error_code = u.error_code.clone();
        }
        if u.error_message.is_some() {
            self.error_message = u.error_message.clone();
        }
        self.updated_at = now;
        true
    }

    /// Records a late success milestone the history lacks (see [`Self::apply_status_update`]).
    fn fill_in_milestone(&mut self, u: &StatusUpdate, now: DateTime<Utc>) -> bool {
        let status = u.status;
        let passed = !status.is_failure()
            && status.rank() >= DeliveryStatus::Sent.rank()
            && status.rank() < self.status.rank()
            && status != DeliveryStatus::Received;
        if !passed || self.events.iter().any(|e| e.status == status) {
            return false;
        }
        let at = self
            .events
            .iter()
            .position(|e| e.status.rank() > status.rank())
            .unwrap_or(self.events.len());
        self.events.insert(
            at,
            StatusEvent {
                status,
                at: u.at,
                source: u.provider.as_str().to_owned(),
                note: None,
            },
        );
        self.updated_at = now;
        true
    }

    /// Records the carrier's acceptance of a send; after a failover, the number it really went
    /// out from and why, in the `sent` event's note.
    pub fn record_sent(&mut self, r: &SendResult, failover: Option<&Failover>, now: DateTime<Utc>) {
        // Carriers often answer "queued" on acceptance; for us that is at least sent.
        let merged = self.status.merge(r.status).merge(DeliveryStatus::Sent);
        let note = failover.map(|f| f.note.as_str());
        self.transition(merged, now, r.provider.as_str(), note);
        if let Some(f) = failover {
            self.from = f.from.clone();
        }
        self.provider = Some(r.provider);
        self.provider_message_id = Some(r.provider_message_id.clone());
        self.updated_at = now;
    }

    /// Records a transient failure: the message stays queued for another attempt (the store
    /// keeps when it is due, so the sweeper leaves it alone until then).
    pub fn record_retry(&mut self, error_code: Option<&str>, error: &str, now: DateTime<Utc>) {
        self.error_code = error_code.map(str::to_owned);
        self.error_message = Some(error.to_owned());
        self.updated_at = now;
    }

    /// Marks the message failed for good, through merge, so a message a carrier already
    /// delivered is never marked failed.
    pub fn record_failed(&mut self, error_code: Option<&str>, error: &str, now: DateTime<Utc>) {
        let merged = self.status.merge(DeliveryStatus::Failed);
        self.transition(merged, now, SOURCE_WORKER, None);
        self.error_code = error_code.map(str::to_owned);
        self.error_message = Some(error.to_owned());
        self.updated_at = now;
    }

    /// Puts a `failed` or `undelivered` outbound message back in the outbox for a new attempt
    /// (the delivery log's retry): queued again, its last error cleared, the step in its
    /// history. Anything else is left as it is: [`StoreError::Conflict`] says why.
    pub fn requeue(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.direction != Direction::Outbound
            || !matches!(
                self.status,
                DeliveryStatus::Failed | DeliveryStatus::Undelivered
            )
        {
            return Err(StoreError::Conflict(format!(
                "only a failed or undelivered outbound message can be retried; this one is {} {}",
                self.direction.as_str(),
                self.status.as_str()
            )));
        }
        self.status = DeliveryStatus::Queued;
        self.events.push(StatusEvent {
            status: DeliveryStatus::Queued,
            at: now,
            source: SOURCE_API.to_owned(),
            note: Some("sent again".to_owned()),
        });
        self.error_code = None;
        self.error_message = None;
        self.updated_at = now;
        Ok(())
    }

    /// Moves to `merged` and records the transition; an unchanged status records nothing.
    fn transition(
        &mut self,
        merged: DeliveryStatus,
        at: DateTime<Utc>,
        source: &str,
        note: Option<&str>,
    ) {
        if merged != self.status {
            self.status = merged;
            self.events.push(StatusEvent {
                status: merged,
                at,
                source: source.to_owned(),
                note: note.map(str::to_owned),
            });
        }
    }
}

/// The newest message of a conversation, in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMessage {
    /// Message id.
    pub id: Uuid,
    /// Its text.
    pub body: Option<String>,
    /// Its direction.
    pub direction: Direction,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// A thread between a tenant and one contact on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// UUID v7.
    pub id: Uuid,
    /// The tenant; never serialised.
    #[serde(skip_serializing)]
    pub tenant_id: Option<TenantId>,
    /// Conversation channel (MMS threads with SMS: see [`Channel::thread`]).
    pub channel: Channel,
    /// The contact.
    pub contact: Address,
    /// What the contact calls themself, when they said (a LiveChat visitor's name or e-mail,
    /// a WhatsApp or Signal profile name): the newest their messages carried.
    #[serde(default)]
    pub contact_name: Option<String>,
    /// The tenant number used in this thread.
    pub tenant_number: Address,
    /// Inbound messages not yet read.
    pub unread_count: i64,
    /// Starred messages in the thread.
    pub starred_count: i64,
    /// The newest message.
    pub last_message: Option<LastMessage>,
    /// When the newest message happened (the list order).
    pub last_message_at: Option<DateTime<Utc>>,
    /// Whether the contact has opted out of this tenant's messages.
    #[serde(default)]
    pub opted_out: bool,
    /// Open until resolved; a new inbound message opens it again.
    #[serde(default)]
    pub status: ConversationStatus,
    /// The user it is assigned to, if any.
    #[serde(default)]
    pub assignee: Option<Assignee>,
}

impl Conversation {
    /// The id of the conversation of (tenant, thread channel, contact), derived from what it
    /// is: every backend gives a new conversation this id, so a writer (and a LiveChat
    /// session, before its first message) knows it without reading a pointer first.
    pub fn id_for(tenant: &TenantId, channel: Channel, contact: &Address) -> Uuid {
        const NAMESPACE: Uuid = Uuid::from_u128(0x6f6d_6e69_2d63_6f6e_7665_7273_6174_696f);
        Uuid::new_v5(
            &NAMESPACE,
            format!("{tenant}\n{}\n{contact}", channel.thread()).as_bytes(),
        )
    }
}

/// Whether a conversation still needs someone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Needs attention (every conversation starts open).
    #[default]
    Open,
    /// Dealt with.
    Resolved,
}

impl ConversationStatus {
    /// The status's name in the API and the stores.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Open => "open",
            ConversationStatus::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for ConversationStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(ConversationStatus::Open),
            "resolved" => Ok(ConversationStatus::Resolved),
            other => Err(format!("unknown status {other:?} (open or resolved)")),
        }
    }
}

/// The user a conversation is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignee {
    /// The user's id.
    pub id: Uuid,
    /// Their name when assigned.
    pub name: String,
}

/// Which conversations a listing keeps (every field unset: all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationFilter {
    /// Only this status.
    pub status: Option<ConversationStatus>,
    /// Only unassigned ones (`Some(None)`) or those of one user (`Some(Some(id))`).
    pub assignee: Option<Option<Uuid>>,
    /// Only this thread channel.
    pub channel: Option<Channel>,
    /// Only those whose contact, or one of whose messages' text, contains this
    /// (case-insensitively).
    pub q: Option<String>,
}

impl ConversationFilter {
    /// Whether a conversation passes every field but `q`'s message-text search (which needs
    /// the messages): `Some(true)` when `q` already matches the contact (or there is none).
    pub fn matches_without_text(&self, c: &Conversation) -> Option<bool> {
        if self.status.is_some_and(|s| s != c.status)
            || self.channel.is_some_and(|ch| ch.thread() != c.channel)
            || self
                .assignee
                .is_some_and(|want| want != c.assignee.as_ref().map(|a| a.id))
        {
            return None;
        }
        Some(match &self.q {
            None => true,
            Some(q) => {
                let q = q.to_lowercase();
                c.contact.as_str().to_lowercase().contains(&q)
                    || c.contact_name
                        .as_ref()
                        .is_some_and(|n| n.to_lowercase().contains(&q))
            }
        })
    }
}

/// Which messages a delivery-log search keeps (every field unset: all of the tenant's), newest
/// first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageSearch {
    /// Only inbound or only outbound.
    pub direction: Option<Direction>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this channel (`sms` and `mms` are apart).
    pub channel: Option<Channel>,
    /// Only those this carrier carried.
    pub carrier: Option<ProviderKind>,
    /// Only those from this address.
    pub from: Option<Address>,
    /// Only those to this address.
    pub to: Option<Address>,
    /// Only those created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only those created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only those whose text contains this, ignoring case.
    pub q: Option<String>,
}

impl MessageSearch {
    /// Whether `m` passes every field. A store that cannot filter on the server filters with
    /// this, so both backends keep the same messages.
    pub fn matches(&self, m: &Message) -> bool {
        self.direction.is_none_or(|d| d == m.direction)
            && self.status.is_none_or(|s| s == m.status)
            && self.channel.is_none_or(|c| c == m.channel)
            && self.carrier.is_none_or(|c| Some(c) == m.provider)
            && self.from.as_ref().is_none_or(|a| a == &m.from)
            && self.to.as_ref().is_none_or(|a| a == &m.to)
            && self.since.is_none_or(|t| m.created_at >= t)
            && self.until.is_none_or(|t| m.created_at < t)
            && self.q.as_ref().is_none_or(|q| {
                m.body
                    .as_deref()
                    .is_some_and(|b| b.to_lowercase().contains(&q.to_lowercase()))
            })
    }
}

/// What became of one carrier webhook: an entry of the inbound webhook log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookLogEntry {
    /// UUID v7.
    pub id: Uuid,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The carrier whose webhook URL was called.
    pub carrier: ProviderKind,
    /// Accepted or rejected.
    pub result: WebhookResult,
    /// Why it was rejected: `bad_signature`, `unknown_number`, `malformed` or
    /// `internal_error` (the carrier retries those).
    pub reason: Option<String>,
    /// The refusal as the carrier was answered.
    pub detail: Option<String>,
    /// The body as received, up to [`WebhookLogEntry::MAX_BODY`] bytes (admins only).
    pub body: Option<String>,
}

impl WebhookLogEntry {
    /// The most of a body the log keeps: enough to see what a carrier sent, not a copy of
    /// every attachment's metadata.
    pub const MAX_BODY: usize = 16 * 1024;

    /// `body` as the log keeps it: text, cut at [`Self::MAX_BODY`] on a character boundary.
    pub fn kept_body(body: &[u8]) -> Option<String> {
        if body.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(Self::MAX_BODY)]);
        // A cut through a multi-byte character leaves a replacement character: drop it.
        let text = if body.len() > Self::MAX_BODY {
            text.trim_end_matches('\u{fffd}').to_owned()
        } else {
            text.into_owned()
        };
        Some(text)
    }
}

/// Whether a webhook was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookResult {
    /// Verified and committed (the carrier was answered 2xx).
    Accepted,
    /// Refused; `reason` says why.
    Rejected,
}

impl WebhookResult {
    /// `accepted` or `rejected`, as the API says it.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Rejected => "rejected",
        }
    }
}

/// Which webhook log entries a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookLogQuery {
    /// Only this carrier's.
    pub carrier: Option<ProviderKind>,
    /// Only accepted or only rejected ones.
    pub result: Option<WebhookResult>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
}

impl WebhookLogQuery {
    /// Whether an entry passes the carrier and result fields (the time is the store's key
    /// range).
    pub fn keeps(&self, e: &WebhookLogEntry) -> bool {
        self.carrier.is_none_or(|c| c == e.carrier) && self.result.is_none_or(|r| r == e.result)
    }
}

/// A private note in a conversation's timeline: never sent to the contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// UUID v7.
    pub id: Uuid,
    /// The conversation.
    pub conversation_id: Uuid,
    /// The text.
    pub body: String,
    /// Who wrote it.
    pub author: Actor,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// One entry of a tenant's audit log: who did what to what, never a secret or a message's
/// text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// UUID v7.
    pub id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What, e.g. `conversation.assign`.
    pub action: String,
    /// What it was done to, e.g. `conversation:<id>`.
    pub target: Option<String>,
    /// Anything else worth keeping (never a secret or message text).
    pub details: serde_json::Value,
}

/// Which audit entries a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Only this actor's (by id).
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
}

impl AuditQuery {
    /// Whether an entry passes the actor and action fields (the time range is the
    /// store's key range).
    pub fn keeps(&self, e: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == e.actor.id)
            && self.action.as_ref().is_none_or(|a| *a == e.action)
    }
}

impl Channel {
    /// The channel a conversation is kept under: MMS and SMS with one contact are one thread.
    pub fn thread(self) -> Channel {
        match self {
            Channel::Mms => Channel::Sms,
            other => other,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// A new outbound message, validated, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbound {
    /// Id to give it (UUID v7).
    pub id: Uuid,
    /// Channel to send on.
    pub channel: Channel,
    /// Tenant number to send from.
    pub from: Address,
    /// Contact.
    pub to: Address,
    /// Text.
    pub body: Option<String>,
    /// Attachments.
    pub media: Vec<crate::domain::Media>,
    /// The template it is sent with (see [`Message::template`]).
    pub template: Option<SentTemplate>,
    /// The subject line (email only).
    pub subject: Option<String>,
    /// The client's idempotency key, if given.
    pub idempotency_key: Option<String>,
    /// When it was accepted.
    pub at: DateTime<Utc>,
    /// Who sent it.
    pub sent_by: Option<Actor>,
    /// How urgent it is.
    pub priority: Priority,
    /// When to send it, for a message scheduled ahead (`scheduled` until then).
    pub send_at: Option<DateTime<Utc>>,
    /// The channels to fall back to, in order.
    pub fallback: Vec<FallbackStep>,
}

/// What the store did with a status update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusApplied {
    /// No message of ours has that carrier id (yet).
    NotFound,
    /// The update changed nothing (duplicate or out of order).
    Unchanged(Message),
    /// The status moved on; the transition was recorded.
    Changed(Message),
}

/// A message claimed by the delivery worker for one send attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    /// The message as the adapter gets it.
    pub message: Message,
    /// Attempts so far, this one included.
    pub attempt: u32,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{Channel, ProviderKind, SendResult, StatusUpdate};

    fn sent_message() -> Message {
        let at = Utc::now();
        let new = NewOutbound {
            id: Uuid::now_v7(),
            channel: Channel::Whatsapp,
            from: Address::from_stored("+15555550100").unwrap(),
            to: Address::from_stored("+15555550123").unwrap(),
            body: Some("x".into()),
            media: Vec::new(),
            template: None,
            subject: None,
            idempotency_key: None,
            at,
            sent_by: None,
            priority: Default::default(),
            send_at: None,
            fallback: Vec::new(),
        };
        let tenant = TenantId::parse("north").unwrap();
        let mut m = Message::queued(&tenant, &new, Uuid::now_v7());
        let result = SendResult {
            provider: ProviderKind::Twilio,
            provider_message_id: "SM1".into(),
            status: DeliveryStatus::Queued,
            raw_status: "queued".into(),
        };
        m.record_sent(&result, None, at);
        m
    }

    fn update(status: DeliveryStatus) -> StatusUpdate {
        StatusUpdate {
            provider: ProviderKind::Twilio,
            provider_message_id: "SM1".into(),
            status,
            raw_status: status.as_str().into(),
            error_code: None,
            error_message: None,
            tenant_number: None,
            at: Utc::now(),
        }
    }

    fn history(m: &Message) -> Vec<DeliveryStatus> {
        m.events.iter().map(|e| e.status).collect()
    }

    #[test]
    fn a_late_delivered_after_read_fills_in_the_history_once() {
        use DeliveryStatus::*;
        let mut m = sent_message();
        assert!(m.apply_status_update(&update(Read), Utc::now()));
        assert!(m.apply_status_update(&update(Delivered), Utc::now()));
        assert_eq!(m.status, Read, "the status never moves back");
        assert_eq!(history(&m), [Queued, Sent, Delivered, Read]);
        // Once: a duplicate, or a late sent or sending, changes nothing.
        for late in [Delivered, Sent, Sending, Queued, Undelivered] {
            assert!(
                !m.apply_status_update(&update(late), Utc::now()),
                "{late:?}"
            );
        }
        assert_eq!(history(&m), [Queued, Sent, Delivered, Read]);
    }

    fn outbound_status() -> impl Strategy<Value = DeliveryStatus> {
        use DeliveryStatus::*;
        prop::sample::select(vec![
            Queued,
            Sending,
            Sent,
            Delivered,
            Read,
            Failed,
            Undelivered,
        ])
    }

    proptest! {
        /// Callbacks with one outcome (successes only) leave the same status and history
        /// whatever order, and however often, they arrive in.
        #[test]
        fn success_callbacks_commute(
            updates in prop::collection::vec(
                prop::sample::select(vec![
                    DeliveryStatus::Sending,
                    DeliveryStatus::Sent,
                    DeliveryStatus::Delivered,
                    DeliveryStatus::Read,
                ]),
                0..8,
            ),
            seed in any::<u64>(),
        ) {
            let mut in_order = updates.clone();
            in_order.sort_by_key(|s| s.rank());
            let mut shuffled = updates.clone();
            // A cheap deterministic shuffle, then every update twice.
            shuffled.sort_by_key(|s| seed.rotate_left(u32::from(s.rank()) * 7) ^ u64::from(s.rank()));
            shuffled.extend(updates.iter().rev().copied());
            let (mut a, mut b) = (sent_message(), sent_message());
            for s in &in_order {
                a.apply_status_update(&update(*s), Utc::now());
            }
            for s in &shuffled {
                b.apply_status_update(&update(*s), Utc::now());
            }
            prop_assert_eq!(a.status, b.status);
            prop_assert_eq!(history(&a), history(&b));
        }

        /// Whatever arrives, the history never holds a status twice and ends at the status.
        #[test]
        fn the_history_holds_each_status_once(
            updates in prop::collection::vec(outbound_status(), 0..10),
        ) {
            let mut m = sent_message();
            for s in updates {
                m.apply_status_update(&update(s), Utc::now());
            }
            let h = history(&m);
            let mut unique = h.clone();
            unique.dedup();
            prop_assert_eq!(&unique, &h);
            prop_assert_eq!(*h.iter().max_by_key(|s| s.rank()).unwrap(), m.status);
        }
    }
}
