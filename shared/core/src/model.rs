//! Records Omni keeps: tenants, number routes, messages and conversations, in the shapes the
//! public contract returns.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    Channel, DeliveryStatus, Direction, InboundMessage, Media, ProviderKind, Region, SendResult,
    StatusUpdate, TenantId, E164,
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
}

/// A tenant number: inbound traffic to it belongs to the tenant, and the tenant sends from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRoute {
    /// The number, E.164.
    pub number: E164,
    /// Its owner.
    pub tenant_id: TenantId,
    /// The carrier the number lives at.
    pub provider: ProviderKind,
    /// The channels it sends and receives on.
    pub channels: Vec<Channel>,
    /// When it was (re)configured.
    pub updated_at: DateTime<Utc>,
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
    pub from: E164,
    /// Why, for the message's events: the carriers passed over and the reason for each.
    pub note: String,
}

/// A message as the contract returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// UUID v7.
    pub id: Uuid,
    /// The tenant; never serialised (the caller's key already says it).
    #[serde(skip_serializing)]
    pub tenant_id: Option<TenantId>,
    /// The conversation it belongs to.
    pub conversation_id: Uuid,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The channel.
    pub channel: Channel,
    /// Sender.
    pub from: E164,
    /// Recipient.
    pub to: E164,
    /// Text.
    pub body: Option<String>,
    /// Attachments.
    pub media: Vec<Media>,
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
        }
    }

    /// A new outbound message, `queued` (the outbox), in `conversation_id`.
    pub fn queued(tenant: &TenantId, m: &NewOutbound, conversation_id: Uuid) -> Message {
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
            status: DeliveryStatus::Queued,
            provider: None,
            provider_message_id: None,
            error_code: None,
            error_message: None,
            starred: false,
            created_at: m.at,
            updated_at: m.at,
            events: vec![StatusEvent {
                status: DeliveryStatus::Queued,
                at: m.at,
                source: SOURCE_API.to_owned(),
                note: None,
            }],
        }
    }

    /// Applies a carrier's status callback monotonically ([`DeliveryStatus::merge`]); false
    /// when it changes nothing (a duplicate, or late and out of order).
    pub fn apply_status_update(&mut self, u: &StatusUpdate, now: DateTime<Utc>) -> bool {
        let merged = self.status.merge(u.status);
        if merged == self.status {
            return false;
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

    /// Records a transient failure: the message stays queued for another attempt. Touching
    /// `updated_at` keeps the sweeper off it until the retry is due.
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
    pub contact: E164,
    /// The tenant number used in this thread.
    pub tenant_number: E164,
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
    pub from: E164,
    /// Contact.
    pub to: E164,
    /// Text.
    pub body: Option<String>,
    /// Attachments.
    pub media: Vec<crate::domain::Media>,
    /// The client's idempotency key, if given.
    pub idempotency_key: Option<String>,
    /// When it was accepted.
    pub at: DateTime<Utc>,
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
