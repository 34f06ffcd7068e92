//! The ports: what the services need from storage, queues and push. The `omni-local`
//! backend implements them on SQLite; the AWS backend on DynamoDB, Secrets Manager, SQS and
//! the API Gateway management API. Both pass one conformance suite.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::autoreply::AutoReplies;
use crate::domain::{
    Address, ChatId, InboundMessage, MessagePart, PartRole, Priority, ProviderKind, SendResult,
    StatusUpdate, TenantId, WebhookEvent,
};
use crate::livechat::LivechatSettings;
use crate::model::{
    ApiKeyInfo, ApiKeyOwner, Assignee, AuditEntry, AuditQuery, Conversation, ConversationFilter,
    ConversationStatus, DeliveryClaim, Failover, Message, MessageSearch, NewOutbound, Note,
    NumberRoute, Page, Routing, StatusApplied, Tenant, WebhookLogEntry, WebhookLogQuery,
};
use crate::providers::{Credentials, Secret};
use crate::team::{Invite, Session, User, UserRecord};
use crate::templates::{MetaTemplateStatus, StoredTemplate};
use crate::waba::{ForwardCount, WabaId, WabaRoute};
use crate::webhook::{WebhookDelivery, WebhookEndpoint};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. a number held by another tenant).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A cursor that this store did not issue.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The recipient opted out of the tenant's messages (a send is refused).
    #[error("the recipient opted out")]
    RecipientOptedOut,
    /// The backend failed; the message is for logs only.
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// Result alias for the ports.
pub type StoreResult<T> = Result<T, StoreError>;

/// Tenants, their numbers and their API keys.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates or updates a tenant (keeping its `created_at`); returns it as stored.
    async fn put_tenant(&self, tenant: &Tenant) -> StoreResult<Tenant>;
    /// A tenant by id.
    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>>;
    /// Assigns a number to a tenant; [`StoreError::Conflict`] if another tenant holds it.
    async fn put_number(&self, route: &NumberRoute) -> StoreResult<NumberRoute>;
    /// Releases a tenant's number; false if the tenant did not hold it.
    async fn delete_number(&self, tenant: &TenantId, number: &Address) -> StoreResult<bool>;
    /// Who owns a number (inbound routing).
    async fn number_route(&self, number: &Address) -> StoreResult<Option<NumberRoute>>;
    /// A tenant's numbers.
    async fn tenant_numbers(&self, tenant: &TenantId) -> StoreResult<Vec<NumberRoute>>;
    /// A tenant and its numbers together (a send needs both). A store that keeps them side
    /// by side overrides this to read them at once.
    async fn tenant_with_numbers(
        &self,
        tenant: &TenantId,
    ) -> StoreResult<Option<(Tenant, Vec<NumberRoute>)>> {
        let Some(record) = self.get_tenant(tenant).await? else {
            return Ok(None);
        };
        Ok(Some((record, self.tenant_numbers(tenant).await?)))
    }
    /// Stores an API key by its hash (the key itself is never stored); storing the same key
    /// again is a no-op, and a hash another tenant holds is a [`StoreError::Conflict`].
    async fn put_api_key(
        &self,
        tenant: &TenantId,
        key: &ApiKeyInfo,
        key_hash: &str,
    ) -> StoreResult<()>;
    /// Whose an API key hash is, read from the store itself (no cache), so a revoked key stops
    /// working on every instance at once.
    async fn tenant_for_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyOwner>>;
    /// Records that a key of the tenant's opened a request at `at`.
    async fn touch_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// A tenant's API keys, oldest first.
    async fn list_api_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyInfo>>;
    /// Deletes a tenant's API key; false if the tenant has no key of that id.
    async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> StoreResult<bool>;
    /// Replaces a tenant's carrier priorities per channel (failover); an empty routing clears them.
    async fn put_routing(&self, tenant: &TenantId, routing: &Routing) -> StoreResult<()>;
    /// A tenant's carrier priorities per channel; empty when none were set.
    async fn get_routing(&self, tenant: &TenantId) -> StoreResult<Routing>;
    /// Replaces a tenant's automatic replies.
    async fn put_auto_replies(&self, tenant: &TenantId, settings: &AutoReplies) -> StoreResult<()>;
    /// A tenant's automatic replies (none set: the empty settings).
    async fn get_auto_replies(&self, tenant: &TenantId) -> StoreResult<AutoReplies>;
    /// Creates or replaces a tenant's LiveChat widget (secrets kept as carrier secrets are);
    /// [`StoreError::Conflict`] when another tenant's widget has that key.
    async fn put_livechat(&self, settings: &LivechatSettings) -> StoreResult<()>;
    /// A tenant's LiveChat widget.
    async fn get_livechat(&self, tenant: &TenantId) -> StoreResult<Option<LivechatSettings>>;
    /// The LiveChat widget of a widget key (what a visitor's page names).
    async fn livechat_by_widget_key(
        &self,
        widget_key: &ChatId,
    ) -> StoreResult<Option<LivechatSettings>>;
}

/// A tenant's users and their sign-in records: invites and sessions, kept by the hash of
/// their tokens only.
#[async_trait]
pub trait TeamStore: Send + Sync {
    /// Adds a user; [`StoreError::Conflict`] when the tenant has a user with that e-mail.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    /// A user of the tenant's, by id.
    async fn get_user(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<UserRecord>>;
    /// A user of the tenant's, by (lower-case) e-mail.
    async fn user_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> StoreResult<Option<UserRecord>>;
    /// The tenant's users, oldest first.
    async fn list_users(&self, tenant: &TenantId) -> StoreResult<Vec<User>>;
    /// Replaces a user's name, role, disabled flag, password hash and generation (the
    /// e-mail never changes).
    async fn update_user(&self, user: &UserRecord) -> StoreResult<()>;
    /// Stores an invite.
    async fn put_invite(&self, invite: &Invite) -> StoreResult<()>;
    /// Removes and returns the invite of that token hash: of two concurrent takers, one
    /// gets it.
    async fn take_invite(&self, token_hash: &str) -> StoreResult<Option<Invite>>;
    /// Stores a session (the store may forget it once it expired).
    async fn put_session(&self, session: &Session) -> StoreResult<()>;
    /// The session of that token hash, expired or not.
    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    /// Moves a session's expiry (it was used).
    async fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> StoreResult<()>;
    /// Ends a session.
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Counts a failed sign-in against `subject` (an account or an address): within `window`
    /// of the window's first failure the count grows, after it a new window starts at `now`.
    /// The failures in the window and when it started.
    async fn count_login_failure(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<(u32, DateTime<Utc>)>;
    /// The failed sign-ins against `subject` in its window still open at `now`, and when it
    /// started; none when no window is open.
    async fn login_failures(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<Option<(u32, DateTime<Utc>)>>;
}

/// A tenant's own message templates (every version) and Meta's status for each language of
/// its WhatsApp templates.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// A template of the tenant's, by name.
    async fn get_template(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> StoreResult<Option<StoredTemplate>>;
    /// The tenant's templates, by name.
    async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<StoredTemplate>>;
    /// Writes a template over the revision it was read at (`revision` 0: it must not exist
    /// yet) and returns it with the revision moved on; [`StoreError::Conflict`] when someone
    /// wrote it in between, so of two concurrent steps one wins and the other is refused.
    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &StoredTemplate,
    ) -> StoreResult<StoredTemplate>;
    /// Records Meta's status for one language of one of the tenant's WhatsApp templates
    /// (replacing the one known before).
    async fn put_meta_status(
        &self,
        tenant: &TenantId,
        status: &MetaTemplateStatus,
    ) -> StoreResult<()>;
    /// Meta's statuses of the tenant's WhatsApp template `name` (its name at Meta), one per
    /// language.
    async fn meta_statuses(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> StoreResult<Vec<MetaTemplateStatus>>;
}

/// Tenant carrier credentials (encrypted at rest / Secrets Manager).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Stores (replaces) a tenant's configuration for the credentials' carrier.
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        credentials: &Credentials,
    ) -> StoreResult<()>;
    /// A tenant's configuration for a carrier.
    async fn get_credentials(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
    ) -> StoreResult<Option<Credentials>>;
    /// Removes a tenant's configuration; false if there was none.
    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
    ) -> StoreResult<bool>;
    /// The carriers a tenant has configured.
    async fn configured_providers(&self, tenant: &TenantId) -> StoreResult<Vec<ProviderKind>>;
    /// Every tenant with a configuration for `provider` (e.g. whom the Signal poller serves).
    async fn tenants_with_provider(&self, provider: ProviderKind) -> StoreResult<Vec<TenantId>>;
}

/// The platform's WhatsApp Business Account routes (forwarding to other environments), their
/// counters, and their app secrets, kept like carrier credentials (encrypted at rest /
/// Secrets Manager) and never listed.
#[async_trait]
pub trait WabaRouteStore: Send + Sync {
    /// Creates or replaces a route's URL, note and app secret, keeping its counters and
    /// `created_at`; returns it as stored.
    async fn put_waba_route(
        &self,
        route: &WabaRoute,
        app_secret: &Secret,
    ) -> StoreResult<WabaRoute>;
    /// A route and its app secret.
    async fn get_waba_route(&self, waba_id: &WabaId) -> StoreResult<Option<(WabaRoute, Secret)>>;
    /// Every route (no secrets), by account id.
    async fn list_waba_routes(&self) -> StoreResult<Vec<WabaRoute>>;
    /// Removes a route and its secret; false if there was none.
    async fn delete_waba_route(&self, waba_id: &WabaId) -> StoreResult<bool>;
    /// Moves a route's counters atomically (concurrent workers never lose a count); nothing
    /// for a route that no longer exists.
    async fn count_forward(&self, waba_id: &WabaId, count: ForwardCount) -> StoreResult<()>;
}

/// A tenant's event webhook endpoints (their signing secrets kept like carrier credentials:
/// encrypted at rest / Secrets Manager, never listed) and their deliveries. A store writes the
/// deliveries of a change in the same commit as the change ([`MessageStore`]'s writes call
/// [`crate::webhook::deliveries_for`] with the tenant's endpoints): a crash loses none.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Adds an endpoint with its secret.
    async fn create_webhook(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpoint,
        secret: &Secret,
    ) -> StoreResult<()>;
    /// Replaces an endpoint's URL, events, description, enabled flag and failing time;
    /// false when the tenant has no such endpoint.
    async fn update_webhook(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpoint,
    ) -> StoreResult<bool>;
    /// Replaces an endpoint's secret; false when the tenant has no such endpoint.
    async fn set_webhook_secret(
        &self,
        tenant: &TenantId,
        id: Uuid,
        secret: &Secret,
    ) -> StoreResult<bool>;
    /// An endpoint of the tenant's and its secret.
    async fn get_webhook(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<(WebhookEndpoint, Secret)>>;
    /// The tenant's endpoints, oldest first (no secrets).
    async fn list_webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Removes an endpoint, its secret and its deliveries; false if there was none.
    async fn delete_webhook(&self, tenant: &TenantId, id: Uuid) -> StoreResult<bool>;
    /// Stores new deliveries (a test event; changes write theirs with the change itself).
    async fn add_deliveries(&self, deliveries: &[WebhookDelivery]) -> StoreResult<()>;
    /// A delivery of one of the tenant's endpoints.
    async fn get_delivery(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<WebhookDelivery>>;
    /// An endpoint's deliveries, newest first.
    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<WebhookDelivery>>;
    /// Up to `limit` pending deliveries due at `now`, each moved `lease` later in the same
    /// step, so two dispatchers never take the same one and one a crashed dispatcher held
    /// comes due again.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    /// Replaces a delivery's state, attempts and next attempt time.
    async fn update_delivery(&self, delivery: &WebhookDelivery) -> StoreResult<()>;
}

/// Messages, conversations, raw payloads, opt-outs.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Keeps a verified webhook's raw body until `expires_at`, keyed by its dedupe key.
    /// Returns false when the same key was stored before (a redelivery).
    async fn save_raw_webhook(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
        dedupe_key: &str,
        body: &[u8],
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Takes the conversation's auto-reply turn: true (and `now` recorded) when it had no
    /// auto-reply since `now - cooldown`, false otherwise; atomic, so two concurrent
    /// messages earn one reply.
    async fn claim_auto_reply(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        now: DateTime<Utc>,
        cooldown: Duration,
    ) -> StoreResult<bool>;

    /// Counts one more message of a LiveChat visitor session (the visitor rate limit, one
    /// count for every process and Lambda instance): within `window` of the session's window
    /// start the count grows, after it a new window starts at `now`. The window's count, this
    /// message included, and when it started. Atomic: concurrent messages each get their own
    /// count, and of two that would start a window one does. The count may be forgotten once
    /// its window is over.
    async fn count_visitor_message(
        &self,
        tenant: &TenantId,
        session: Uuid,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<(u32, DateTime<Utc>)>;

    /// Keeps an inbound webhook log entry until `expires_at`: under `tenant`, or among the
    /// webhooks no tenant could be told (`None`: an unknown number, an unreadable body).
    async fn append_webhook_log(
        &self,
        tenant: Option<&TenantId>,
        entry: &WebhookLogEntry,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The webhook log of `tenant` (or the unattributed one), newest first.
    async fn list_webhook_log(
        &self,
        tenant: Option<&TenantId>,
        query: &WebhookLogQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<WebhookLogEntry>>;

    /// In one atomic step: upsert the conversation (tenant, thread channel, contact), append the
    /// message, add one to unread, set the last message. `None` when this carrier message was
    /// applied before (idempotent under redelivery).
    async fn apply_inbound(
        &self,
        tenant: &TenantId,
        message: &InboundMessage,
    ) -> StoreResult<Option<(Message, Conversation)>>;

    /// Applies a carrier status update monotonically ([`crate::domain::DeliveryStatus::merge`]),
    /// recording the transition in the message's events when it changes anything.
    async fn apply_status(
        &self,
        tenant: &TenantId,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied>;

    /// Stores a new outbound message as `queued` (the outbox) and upserts its conversation.
    /// With an idempotency key seen before, returns the first message and `false`.
    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &NewOutbound,
    ) -> StoreResult<(Message, bool)>;

    /// [`create_outbound`](Self::create_outbound) of a send, refused with
    /// [`StoreError::RecipientOptedOut`] when the recipient opted out; when the message was
    /// created, also its conversation as the write left it (what dashboards are pushed). A
    /// store that can tell both from the reads its write makes anyway overrides this.
    async fn create_outbound_with_conversation(
        &self,
        tenant: &TenantId,
        message: &NewOutbound,
    ) -> StoreResult<(Message, Option<Conversation>)> {
        if self.is_opted_out(tenant, &message.to).await? {
            return Err(StoreError::RecipientOptedOut);
        }
        let (message, created) = self.create_outbound(tenant, message).await?;
        let conversation = if created {
            self.get_conversation(tenant, message.conversation_id)
                .await?
        } else {
            None
        };
        Ok((message, conversation))
    }

    /// Claims a queued message for one send attempt, for `lease`; `None` when it is not queued
    /// or another worker holds a live claim. Counts the attempt.
    async fn claim_delivery(
        &self,
        tenant: &TenantId,
        id: Uuid,
        lease: Duration,
    ) -> StoreResult<Option<DeliveryClaim>>;

    /// Records the carrier's acceptance; releases the claim. After a failover, the message's
    /// sender becomes the number it really went out from and the `sent` event carries the note.
    async fn record_sent(
        &self,
        tenant: &TenantId,
        id: Uuid,
        result: &SendResult,
        failover: Option<&Failover>,
    ) -> StoreResult<Message>;

    /// Releases the claim after a transient failure, keeping the message queued, and records the
    /// last error and when the next attempt is due (`retry_at`): until then the message is not
    /// stranded, however long the delay (a carrier's `Retry-After`, a late backoff step).
    async fn record_retry(
        &self,
        tenant: &TenantId,
        id: Uuid,
        error_code: Option<&str>,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> StoreResult<Message>;

    /// Marks the message failed for good with the carrier's code and reason; releases the claim.
    async fn record_failed(
        &self,
        tenant: &TenantId,
        id: Uuid,
        error_code: Option<&str>,
        error: &str,
    ) -> StoreResult<Message>;

    /// Puts a `failed` or `undelivered` outbound message back in the outbox
    /// ([`Message::requeue`]) with a fresh retry budget; `None` when the tenant has no such
    /// message, [`StoreError::Conflict`] when it is in any other state.
    async fn requeue_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>>;

    /// Gives a claimed message back without counting the attempt, its next attempt due at
    /// `at`: the sender number's pace (`max_per_second`) allows no send before then. The
    /// message stays queued and is not stranded until `at` has passed.
    async fn defer_delivery(
        &self,
        tenant: &TenantId,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Books the next send from `number`, at least `interval` after the one booked before it
    /// (across processes and instances): the booked time, `now` when the number is free.
    async fn book_send_slot(
        &self,
        number: &Address,
        interval: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>>;

    /// Moves a message to its next fallback channel, sent from `from` ([`Message::fall_back`]),
    /// with a fresh retry budget; the carrier id it had still finds it (a late delivery
    /// receipt). `None` when the message has delivered, was canceled, or no longer has
    /// `remaining` steps left (another trigger moved it first).
    async fn fall_back_message(
        &self,
        tenant: &TenantId,
        id: Uuid,
        remaining: usize,
        from: &Address,
        reason: &str,
    ) -> StoreResult<Option<Message>>;

    /// Cancels a message no send attempt has started for ([`Message::cancel`]): `scheduled`,
    /// or queued and never claimed. `None` when the tenant has no such message,
    /// [`StoreError::Conflict`] once sending has begun.
    async fn cancel_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>>;

    /// Moves up to `limit` scheduled messages due by `until` into the outbox ([`Message::release`],
    /// next attempt due at their `send_at`) and returns them: the caller queues each for its
    /// time. A message canceled meanwhile is not among them.
    async fn release_scheduled(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;

    /// Queued messages with no live claim, last touched before `before` and, after a retry,
    /// whose next attempt was due before `before`: the sweeper's work.
    async fn stranded_outbound(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(TenantId, Uuid)>>;

    /// A message of the tenant's.
    async fn get_message(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Message>>;

    /// The tenant's conversations, newest activity first.
    async fn list_conversations(
        &self,
        tenant: &TenantId,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Conversation>> {
        self.find_conversations(tenant, &ConversationFilter::default(), limit, cursor)
            .await
    }

    /// The tenant's conversations that pass `filter`, newest activity first.
    async fn find_conversations(
        &self,
        tenant: &TenantId,
        filter: &ConversationFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Conversation>>;

    /// Sets a conversation's status and, when `assignee` is given, its assignee (`Some(None)`
    /// unassigns); `None` when the tenant has no such conversation.
    async fn update_conversation(
        &self,
        tenant: &TenantId,
        id: Uuid,
        status: Option<ConversationStatus>,
        assignee: Option<Option<Assignee>>,
    ) -> StoreResult<Option<Conversation>>;

    /// Adds a private note to a conversation's timeline.
    async fn add_note(&self, tenant: &TenantId, note: &Note) -> StoreResult<()>;

    /// A conversation's notes written after `after` and at or before `until` (either
    /// unbounded when unset), newest first.
    async fn list_notes(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        after: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<Note>>;

    /// Appends an entry to the tenant's audit log, kept until `expires_at`.
    async fn append_audit(
        &self,
        tenant: &TenantId,
        entry: &AuditEntry,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The tenant's audit entries that pass `query`, newest first.
    async fn list_audit(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<AuditEntry>>;

    /// A conversation of the tenant's.
    async fn get_conversation(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<Conversation>>;

    /// A conversation's messages, newest first.
    async fn list_messages(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>>;

    /// The tenant's messages that `search` keeps, newest first (the delivery log).
    async fn search_messages(
        &self,
        tenant: &TenantId,
        search: &MessageSearch,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>>;

    /// Sets unread to zero.
    async fn mark_read(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
    ) -> StoreResult<Option<Conversation>>;

    /// Stars or unstars a message, keeping the conversation's `starred_count` exact.
    async fn set_starred(
        &self,
        tenant: &TenantId,
        id: Uuid,
        starred: bool,
    ) -> StoreResult<Option<(Message, Conversation)>>;

    /// Records a contact's opt-out (true) or opt-in (false) for this tenant.
    async fn set_opt_out(
        &self,
        tenant: &TenantId,
        contact: &Address,
        opted_out: bool,
    ) -> StoreResult<()>;

    /// Whether a contact has opted out of this tenant's messages.
    async fn is_opted_out(&self, tenant: &TenantId, contact: &Address) -> StoreResult<bool>;

    /// Deletes raw payloads past their retention; returns how many.
    async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Keeps one half of a split message (keyed by tenant, carrier and the part's key) until
    /// its other half arrives or `flush_at` passes; the record may go after `expires_at`.
    ///
    /// Atomic per key: of two halves arriving at the same moment exactly one call sees
    /// [`PartOutcome::Complete`]. A redelivered half gets the outcome its pair is in now
    /// (`Complete` again once both are here, `Alone` once the other was given up on), so a
    /// caller that failed before acting acts on the redelivery; what it acts on has stable
    /// ids, and the updater applies a carrier message once. A half whose slot already holds
    /// another carrier message (two messages that collide on the key) is not stored and comes
    /// back `Alone`.
    async fn put_message_part(
        &self,
        tenant: &TenantId,
        part: &MessagePart,
        flush_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<PartOutcome>;

    /// Lone halves whose `flush_at` is at or before `now`, each marked given up on in the same
    /// atomic step that checks its other half is still missing (so a half arriving later is
    /// delivered on its own, never merged with an already delivered one). A half given up on
    /// but not yet [confirmed](Self::confirm_flushed_part) is returned again, so a sweeper
    /// that crashed before handing it on does not lose it.
    async fn flush_message_parts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<FlushedPart>>;

    /// The flushed half was handed on: [`Self::flush_message_parts`] stops returning it.
    async fn confirm_flushed_part(&self, part: &FlushedPart) -> StoreResult<()>;
}

/// What became of a half given to [`MessageStore::put_message_part`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    /// Kept; the other half has not arrived yet.
    Waiting,
    /// Both halves are here: deliver them merged ([`InboundMessage::merge_parts`]).
    Complete {
        /// The text half, as first stored.
        text: InboundMessage,
        /// The media half, as first stored.
        media: InboundMessage,
    },
    /// Deliver this half on its own: its other half was given up on, or it collided with
    /// another message on the key.
    Alone(InboundMessage),
}

/// A pair of halves as a store holds it, for working out [`PartOutcome`]s the same way on
/// every backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPair {
    /// The text half, once it arrived.
    pub text: Option<InboundMessage>,
    /// The media half, once it arrived.
    pub media: Option<InboundMessage>,
    /// The half the sweep gave up on (delivered alone), if any.
    pub flushed: Option<PartRole>,
}

impl StoredPair {
    /// The stored half of role `role`.
    pub fn half(&self, role: PartRole) -> Option<&InboundMessage> {
        match role {
            PartRole::Text => self.text.as_ref(),
            PartRole::Media => self.media.as_ref(),
        }
    }

    /// What the pair, after `part` was written to it (or found already there), means for
    /// `part`: see [`MessageStore::put_message_part`].
    pub fn outcome(&self, part: &MessagePart) -> PartOutcome {
        let Some(mine) = self
            .half(part.role)
            .filter(|m| m.provider_message_id == part.message.provider_message_id)
        else {
            // The slot holds another carrier message that collided on the key.
            return PartOutcome::Alone(part.message.clone());
        };
        if self.flushed.is_some() {
            return PartOutcome::Alone(mine.clone());
        }
        match (&self.text, &self.media) {
            (Some(text), Some(media)) => PartOutcome::Complete {
                text: text.clone(),
                media: media.clone(),
            },
            _ => PartOutcome::Waiting,
        }
    }

    /// The lone half the sweep may give up on: the flushed one, or the only one present.
    pub fn lone(&self) -> Option<PartRole> {
        match (self.flushed, &self.text, &self.media) {
            (Some(role), _, _) => Some(role),
            (None, Some(_), None) => Some(PartRole::Text),
            (None, None, Some(_)) => Some(PartRole::Media),
            _ => None,
        }
    }
}

/// A lone half [`MessageStore::flush_message_parts`] gave up waiting for a partner for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushedPart {
    /// Whose it is.
    pub tenant_id: TenantId,
    /// The part's correlation key.
    pub key: String,
    /// The half, to deliver on its own.
    pub message: InboundMessage,
}

/// Work handed between the flows through a queue.
// A job lives only between being built and being serialised onto a queue (or read off it and
// handled), one at a time: boxing the larger variant would add an allocation and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// A verified, normalised webhook event for the conversation updater.
    Inbound {
        /// Whose it is.
        tenant_id: TenantId,
        /// What happened.
        event: WebhookEvent,
    },
    /// An outbound message for the delivery worker.
    Deliver {
        /// Whose it is.
        tenant_id: TenantId,
        /// Which message.
        message_id: Uuid,
        /// The message's priority: which queue, or place in the queue, the job takes.
        #[serde(default, skip_serializing_if = "Priority::is_normal")]
        priority: Priority,
        /// The send booked for it from its paced sender number (see
        /// [`MessageStore::book_send_slot`]): the job comes back then and sends without
        /// booking again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<BookedSlot>,
    },
    /// A WhatsApp webhook to hand, exactly as Meta sent it, to the environment that owns
    /// one of the business accounts it names.
    Forward {
        /// The account whose route says where.
        waba_id: WabaId,
        /// The raw body, base64 (the signature covers its exact bytes).
        body: String,
        /// Meta's `X-Hub-Signature-256`, sent on unchanged.
        signature: String,
        /// When Omni received it: retries stop 24 hours later.
        received_at: DateTime<Utc>,
        /// Attempts made so far.
        attempts: u32,
    },
    /// The check, `after_secs` after a send, that a message with fallback channels has been
    /// delivered; if not, it moves to its next channel.
    Fallback {
        /// Whose it is.
        tenant_id: TenantId,
        /// Which message.
        message_id: Uuid,
        /// Its fallback steps left when the check was set: a message that has moved on since
        /// is left alone.
        remaining: usize,
        /// When the check is due (a queue that delays less comes back early: queued again).
        due: DateTime<Utc>,
    },
    /// An event webhook delivery to attempt when it is due (on AWS; `omni serve`'s runner
    /// looks for due deliveries itself).
    Webhook {
        /// Whose it is.
        tenant_id: TenantId,
        /// The endpoint it goes to.
        endpoint_id: Uuid,
        /// Which delivery.
        delivery_id: Uuid,
    },
}

impl Job {
    /// The delivery job of a message, at its priority.
    pub fn deliver(message: &Message) -> StoreResult<Job> {
        let tenant_id = message
            .tenant_id
            .clone()
            .ok_or_else(|| StoreError::Backend(format!("message {} without tenant", message.id)))?;
        Ok(Job::Deliver {
            tenant_id,
            message_id: message.id,
            priority: message.priority,
            slot: None,
        })
    }

    /// The job without the send slot it booked (a retry books its own).
    pub fn without_slot(&self) -> Job {
        let mut job = self.clone();
        if let Job::Deliver { slot, .. } = &mut job {
            *slot = None;
        }
        job
    }

    /// Where the job goes in its queue: high before normal before bulk.
    pub fn priority(&self) -> Priority {
        match self {
            Job::Deliver { priority, .. } => *priority,
            Job::Inbound { .. }
            | Job::Forward { .. }
            | Job::Webhook { .. }
            | Job::Fallback { .. } => Priority::Normal,
        }
    }
}

/// A send booked from a paced number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookedSlot {
    /// The number it was booked from (a failover may send from another).
    pub from: Address,
    /// When.
    pub at: DateTime<Utc>,
}

/// Durable queues between the flows (SQS, or a SQLite table).
#[async_trait]
pub trait Queue: Send + Sync {
    /// Enqueues a job, visible after `delay`.
    async fn enqueue(&self, job: &Job, delay: Duration) -> StoreResult<()>;
    /// Keeps a job that can never succeed, with the reason, for an operator.
    async fn dead_letter(&self, job: &Job, reason: &str) -> StoreResult<()>;
}

/// What dashboards are told, as the contract's WebSocket frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// `message.received`, `message.status`, `conversation.updated`,
    /// `conversation.assigned`, `conversation.status`, `note.created`, or presence
    /// (`conversation.viewing`, `conversation.typing`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The conversation concerned.
    pub conversation_id: Uuid,
    /// The message, for message events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// The conversation, for conversation events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    /// The note, for `note.created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Note>,
    /// Who is viewing or typing, for presence events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<PresenceUser>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A dashboard's user as presence events name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUser {
    /// The user's (or API key's) id.
    pub id: String,
    /// Their name.
    pub name: String,
}

impl PushEvent {
    /// An event of `kind` about a conversation, with nothing attached yet.
    pub fn about(kind: &str, tenant: &TenantId, conversation_id: Uuid) -> PushEvent {
        PushEvent {
            kind: kind.into(),
            tenant_id: tenant.clone(),
            conversation_id,
            message: None,
            conversation: None,
            note: None,
            user: None,
            at: chrono::Utc::now(),
        }
    }

    /// A message event of `kind` (`message.received`, `message.status`, ...).
    pub fn for_message(kind: &str, tenant: &TenantId, message: &Message) -> PushEvent {
        PushEvent {
            message: Some(message.clone()),
            ..PushEvent::about(kind, tenant, message.conversation_id)
        }
    }

    /// A conversation event of `kind` (`conversation.updated`, `.assigned`, `.status`).
    pub fn for_conversation(
        kind: &str,
        tenant: &TenantId,
        conversation: &Conversation,
    ) -> PushEvent {
        PushEvent {
            conversation: Some(conversation.clone()),
            ..PushEvent::about(kind, tenant, conversation.id)
        }
    }
}

/// Objects handed out through short-lived signed URLs: media too large to pass through a
/// response (Lambda's responses stop at 6 MB). On AWS an S3 bucket.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Stores `content` under `key` and returns a URL that fetches it, without any other
    /// credential, for `ttl`. Media types a browser would run (anything but pictures, sound and
    /// video) are served as attachments.
    async fn publish(
        &self,
        key: &str,
        content: &crate::providers::MediaContent,
        ttl: std::time::Duration,
    ) -> StoreResult<String>;
}

/// Fan-out to a tenant's connected dashboards (WebSocket hub, or API Gateway connections).
#[async_trait]
pub trait Push: Send + Sync {
    /// Sends an event to every dashboard of `event.tenant_id`, and to nobody else.
    async fn push(&self, event: &PushEvent) -> StoreResult<()>;

    /// Sends one flow's events, in order, all of one tenant (a backend that must look the
    /// dashboards up does it once). Every event is tried; the first failure is reported.
    async fn push_all(&self, events: &[PushEvent]) -> StoreResult<()> {
        let mut failed = None;
        for event in events {
            if let Err(e) = self.push(event).await {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Closes every dashboard connection opened with the tenant's key `key_id` (revoked), or
    /// by a user when `key_id` is `user:<id>` (disabled).
    async fn disconnect_api_key(&self, tenant: &TenantId, key_id: &str) -> StoreResult<()>;

    /// Sends a frame to the LiveChat visitor sockets open on one of the tenant's
    /// conversations, and to nobody else; whether any was open. A backend without visitor
    /// sockets reaches nobody: replies then stay `sent` until the visitor comes back.
    async fn push_visitor(
        &self,
        _tenant: &TenantId,
        _conversation: Uuid,
        _frame: &VisitorFrame,
    ) -> StoreResult<bool> {
        Ok(false)
    }
}

/// What a LiveChat visitor's socket is told: `message.created` (a reply), `message.status`,
/// `typing`; about their own conversation only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorFrame {
    /// The frame's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The visitor's conversation.
    pub conversation_id: Uuid,
    /// The message, for message frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<crate::service::VisitorMessage>,
    /// When.
    pub at: DateTime<Utc>,
}

impl VisitorFrame {
    /// The `typing` frame a dashboard's `conversation.typing` presence event becomes for the
    /// conversation's visitor; none for any other event.
    pub fn typing(event: &PushEvent) -> Option<VisitorFrame> {
        (event.kind == "conversation.typing").then(|| VisitorFrame {
            kind: "typing".into(),
            conversation_id: event.conversation_id,
            message: None,
            at: event.at,
        })
    }
}

/// Where LiveChat visitors' uploads are kept (a directory beside the database, or S3).
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Keeps an upload of the tenant's.
    async fn put_upload(
        &self,
        tenant: &TenantId,
        id: Uuid,
        content: &crate::providers::MediaContent,
    ) -> StoreResult<()>;
    /// The media type of an upload of the tenant's, if there is one.
    async fn upload_type(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<String>>;
    /// An upload of the tenant's.
    async fn get_upload(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StoreResult<Option<crate::providers::MediaContent>>;
    /// A link fetching the upload without other credentials for `ttl`, when the store signs
    /// its own (S3); `None` when the server hands it out itself.
    async fn signed_url(
        &self,
        tenant: &TenantId,
        id: Uuid,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<String>>;
}
