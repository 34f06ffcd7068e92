//! The storage conformance suite: what every backend of [`omni_core::ports`] must do,
//! written once against the traits so the SQLite and AWS backends are held to the same rules.
//!
//! Each check is a `pub async fn` taking the backend; [`run_all`] runs them in turn. Checks
//! create their own tenants (random ids) and numbers (random NANP 555 numbers), so they can
//! share one backend, but they are meant to get a fresh one each. They panic (assert) on a
//! violation, like any test.

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use omni_core::autoreply::AutoReplies;
use omni_core::domain::{
    Address, Channel, ChatId, DeliveryStatus, Direction, InboundMessage, Media, MessagePart,
    PartRole, Priority, ProviderKind, Region, SendResult, StatusUpdate, TenantId,
};
use omni_core::livechat::LivechatSettings;
use omni_core::model::{
    ApiKeyInfo, ApiKeyOwner, Assignee, AuditEntry, AuditQuery, Conversation, ConversationFilter,
    ConversationStatus, Failover, FallbackStep, Message, MessageSearch, NewOutbound, Note,
    NumberRoute, Routing, StatusApplied, Tenant, WebhookLogEntry, WebhookLogQuery, WebhookResult,
};
use omni_core::ports::{
    FlushedPart, Job, MessageStore, PartOutcome, Queue, SecretStore, StoreError, TeamStore,
    TemplateStore, TenantStore, WabaRouteStore, WebhookStore,
};
use omni_core::providers::{Credentials, Secret, TwilioCredentials};
use omni_core::team::{Actor, ActorType, Invite, Role, Session, User, UserRecord};
use omni_core::template::{ButtonSubType, Component, Currency, MediaLink, Parameter, Template};
use omni_core::templates::{
    MetaStatus, MetaTemplateStatus, SentTemplate, Step, StoredTemplate, TemplateDefinition,
};
use omni_core::waba::{ForwardCount, WabaId, WabaRoute};
use omni_core::webhook::{
    DeliveryAttempt, DeliveryState, EventType, WebhookDelivery, WebhookEndpoint,
};
use uuid::Uuid;

/// Everything a full Omni storage backend implements.
pub trait Backend:
    TenantStore
    + TeamStore
    + SecretStore
    + MessageStore
    + Queue
    + WabaRouteStore
    + WebhookStore
    + TemplateStore
{
}

impl<
        T: TenantStore
            + TeamStore
            + SecretStore
            + MessageStore
            + Queue
            + WabaRouteStore
            + WebhookStore
            + TemplateStore,
    > Backend for T
{
}

/// Declares one `#[tokio::test]` per check, each on a fresh backend, so a backend's test file
/// lists no checks itself: `conformance_tests!(backend = fresh().await; &backend);` binds the
/// pattern to the set-up expression, then passes the backend expression to each check.
#[macro_export]
macro_rules! conformance_tests {
    ($pat:pat = $setup:expr; $backend:expr) => {
        $crate::conformance_tests!(@each ($pat = $setup; $backend) tenants_keep_created_at, tenant_with_numbers_reads_both, numbers_route_and_conflict, api_keys_resolve_by_hash, api_keys_are_listed_and_revoked, routing_round_trips_per_tenant, credentials_round_trip_per_provider, inbound_is_applied_once, inbound_threads_and_unread_counts, status_updates_merge_monotonically, late_milestones_fill_the_history, create_outbound_is_idempotent, written_conversations_match_a_fresh_read, whatsapp_templates_round_trip, email_conversations_round_trip, claims_are_exclusive_and_counted, delivery_outcomes_are_recorded, failover_sends_record_sender_and_note, stranded_outbound_is_found, retries_are_not_stranded_before_due, conversations_page_newest_first, messages_page_newest_first, starring_keeps_counts_exact, opt_outs_are_recorded, raw_webhooks_dedupe_and_expire, split_message_halves_merge_once_in_either_order, concurrent_halves_complete_exactly_once, lone_halves_are_flushed_and_late_halves_go_alone, tenants_are_isolated, queue_accepts_jobs, users_are_unique_per_tenant_and_updated, invites_are_taken_once, sessions_are_kept_touched_and_ended, conversations_are_assigned_resolved_and_reopened, conversations_are_filtered, notes_are_listed_by_time, audit_entries_are_filtered_and_paged, login_failures_count_in_windows, livechat_widgets_round_trip_by_tenant_and_key, livechat_conversations_have_derived_ids, conversations_keep_the_contact_name, visitor_messages_are_counted_per_session_and_minute, platform_audit_is_kept_apart_from_tenants, waba_routes_keep_secrets_and_counts, delivery_log_is_searched_and_paged, failed_messages_are_requeued_with_a_fresh_budget, webhook_log_is_kept_per_tenant_and_filtered, auto_replies_round_trip_and_take_turns, webhook_endpoints_keep_secrets_and_deliveries, changes_write_their_webhook_deliveries, sends_reads_and_stars_write_conversation_updates, templates_keep_versions_over_revisions, meta_template_statuses_per_language, scheduled_messages_are_released_when_due_and_canceled, paced_numbers_book_slots_apart, deferred_deliveries_keep_their_attempts, messages_fall_back_to_their_next_channel);
    };
    (@each ($pat:pat = $setup:expr; $backend:expr) $($check:ident),+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let $pat = $setup;
            $crate::$check($backend).await;
        }
    )+};
}

/// Runs every check against one backend.
pub async fn run_all<B: Backend>(backend: &B) {
    tenants_keep_created_at(backend).await;
    waba_routes_keep_secrets_and_counts(backend).await;
    webhook_endpoints_keep_secrets_and_deliveries(backend).await;
    changes_write_their_webhook_deliveries(backend).await;
    sends_reads_and_stars_write_conversation_updates(backend).await;
    templates_keep_versions_over_revisions(backend).await;
    meta_template_statuses_per_language(backend).await;
    tenant_with_numbers_reads_both(backend).await;
    numbers_route_and_conflict(backend).await;
    api_keys_resolve_by_hash(backend).await;
    api_keys_are_listed_and_revoked(backend).await;
    routing_round_trips_per_tenant(backend).await;
    credentials_round_trip_per_provider(backend).await;
    inbound_is_applied_once(backend).await;
    written_conversations_match_a_fresh_read(backend).await;
    inbound_threads_and_unread_counts(backend).await;
    status_updates_merge_monotonically(backend).await;
    late_milestones_fill_the_history(backend).await;
    create_outbound_is_idempotent(backend).await;
    whatsapp_templates_round_trip(backend).await;
    email_conversations_round_trip(backend).await;
    claims_are_exclusive_and_counted(backend).await;
    delivery_outcomes_are_recorded(backend).await;
    failover_sends_record_sender_and_note(backend).await;
    stranded_outbound_is_found(backend).await;
    retries_are_not_stranded_before_due(backend).await;
    conversations_page_newest_first(backend).await;
    messages_page_newest_first(backend).await;
    starring_keeps_counts_exact(backend).await;
    opt_outs_are_recorded(backend).await;
    raw_webhooks_dedupe_and_expire(backend).await;
    split_message_halves_merge_once_in_either_order(backend).await;
    concurrent_halves_complete_exactly_once(backend).await;
    lone_halves_are_flushed_and_late_halves_go_alone(backend).await;
    tenants_are_isolated(backend).await;
    queue_accepts_jobs(backend).await;
    users_are_unique_per_tenant_and_updated(backend).await;
    invites_are_taken_once(backend).await;
    sessions_are_kept_touched_and_ended(backend).await;
    conversations_are_assigned_resolved_and_reopened(backend).await;
    conversations_are_filtered(backend).await;
    notes_are_listed_by_time(backend).await;
    audit_entries_are_filtered_and_paged(backend).await;
    login_failures_count_in_windows(backend).await;
    livechat_widgets_round_trip_by_tenant_and_key(backend).await;
    livechat_conversations_have_derived_ids(backend).await;
    conversations_keep_the_contact_name(backend).await;
    visitor_messages_are_counted_per_session_and_minute(backend).await;
    platform_audit_is_kept_apart_from_tenants(backend).await;
    delivery_log_is_searched_and_paged(backend).await;
    failed_messages_are_requeued_with_a_fresh_budget(backend).await;
    webhook_log_is_kept_per_tenant_and_filtered(backend).await;
    auto_replies_round_trip_and_take_turns(backend).await;
    scheduled_messages_are_released_when_due_and_canceled(backend).await;
    paced_numbers_book_slots_apart(backend).await;
    deferred_deliveries_keep_their_attempts(backend).await;
    messages_fall_back_to_their_next_channel(backend).await;
}

// ---- fixtures --------------------------------------------------------------------------

/// A fresh tenant id, unique across runs.
pub fn new_tenant_id(label: &str) -> TenantId {
    let suffix = Uuid::new_v4().simple().to_string();
    TenantId::parse(&format!("{label}-{}", &suffix[..12])).expect("valid tenant id")
}

/// A random number in the NANP fictional 555 range.
pub fn new_number() -> Address {
    let digits = Uuid::new_v4().as_u128() % 10_000_000;
    Address::from_stored(&format!("+1555{digits:07}")).expect("valid 555 number")
}

/// A time in the recent past on a whole millisecond, so backends that store milliseconds
/// round-trip it exactly.
fn base_time() -> DateTime<Utc> {
    let now = Utc::now() - TimeDelta::hours(1);
    DateTime::from_timestamp_millis(now.timestamp_millis()).expect("valid time")
}

fn secs(t: DateTime<Utc>, s: i64) -> DateTime<Utc> {
    t + TimeDelta::seconds(s)
}

fn inbound(
    channel: Channel,
    from: &Address,
    to: &Address,
    body: &str,
    at: DateTime<Utc>,
) -> InboundMessage {
    InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Twilio,
        provider_message_id: format!("SM{}", Uuid::new_v4().simple()),
        channel,
        from: from.clone(),
        to: to.clone(),
        body: Some(body.to_owned()),
        media: Vec::new(),
        profile_name: None,
        received_at: at,
        auto_submitted: false,
    }
}

fn outbound(from: &Address, to: &Address, body: &str, at: DateTime<Utc>) -> NewOutbound {
    NewOutbound {
        id: Uuid::now_v7(),
        channel: Channel::Sms,
        from: from.clone(),
        to: to.clone(),
        body: Some(body.to_owned()),
        media: Vec::new(),
        template: None,
        subject: None,
        idempotency_key: None,
        at,
        sent_by: Some(Actor {
            kind: ActorType::User,
            id: "0190a7d0-0000-7000-8000-000000000001".into(),
            name: "Alex".into(),
        }),
        priority: Default::default(),
        send_at: None,
        fallback: Vec::new(),
    }
}

fn status(provider_message_id: &str, status: DeliveryStatus, at: DateTime<Utc>) -> StatusUpdate {
    StatusUpdate {
        provider: ProviderKind::Twilio,
        provider_message_id: provider_message_id.to_owned(),
        status,
        raw_status: status.as_str().to_owned(),
        error_code: None,
        error_message: None,
        tenant_number: None,
        at,
    }
}

fn sent(provider_message_id: &str) -> SendResult {
    SendResult {
        provider: ProviderKind::Twilio,
        provider_message_id: provider_message_id.to_owned(),
        status: DeliveryStatus::Queued,
        raw_status: "queued".into(),
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// A WhatsApp template with every kind of component and parameter.
fn template() -> Template {
    let text = |t: &str| Parameter::Text { text: t.into() };
    Template {
        name: "dispatch_update".into(),
        language: "en_US".into(),
        components: vec![
            Component::Header {
                parameters: vec![Parameter::Document {
                    document: MediaLink {
                        link: "https://example.org/r.pdf".into(),
                        filename: Some("r.pdf".into()),
                    },
                }],
            },
            Component::Body {
                parameters: vec![
                    text("Unit 12"),
                    Parameter::Currency {
                        currency: Currency {
                            fallback_value: "$1.50".into(),
                            code: "USD".into(),
                            amount_1000: 1500,
                        },
                    },
                    Parameter::DateTime {
                        date_time: omni_core::template::DateTime {
                            fallback_value: "May 1".into(),
                        },
                    },
                ],
            },
            Component::Button {
                sub_type: ButtonSubType::QuickReply,
                index: 1,
                parameters: vec![Parameter::Payload {
                    payload: "ACK".into(),
                }],
            },
        ],
    }
}

/// Creates an outbound message and has it accepted by the carrier under `pid`.
async fn sent_message<B: Backend>(b: &B, tenant: &TenantId, pid: &str) -> Message {
    let (m, _) = b
        .create_outbound(
            tenant,
            &outbound(&new_number(), &new_number(), "hi", base_time()),
        )
        .await
        .unwrap();
    b.claim_delivery(tenant, m.id, LEASE)
        .await
        .unwrap()
        .expect("claimable");
    b.record_sent(tenant, m.id, &sent(pid), None).await.unwrap()
}

/// Whether the sweeper, asking with `before`, would find the tenant's message `id` stranded.
async fn is_stranded<B: Backend>(
    b: &B,
    tenant: &TenantId,
    id: Uuid,
    before: DateTime<Utc>,
) -> bool {
    b.stranded_outbound(before, 10_000)
        .await
        .unwrap()
        .into_iter()
        .any(|(t, found)| &t == tenant && found == id)
}

fn statuses(m: &Message) -> Vec<(DeliveryStatus, &str)> {
    m.events
        .iter()
        .map(|e| (e.status, e.source.as_str()))
        .collect()
}

// ---- tenants and secrets ---------------------------------------------------------------

/// `put_tenant` creates and updates, keeping the first `created_at`.
pub async fn tenants_keep_created_at<B: Backend>(b: &B) {
    let created = base_time();
    let mut tenant = Tenant {
        id: new_tenant_id("t"),
        name: "North County PSAP".into(),
        default_region: Region::default(),
        help_text: None,
        created_at: created,
        updated_at: created,
        // Round-trips with the tenant.
        fallback: BTreeMap::from([(
            Channel::Whatsapp,
            vec![FallbackStep {
                channel: Channel::Sms,
                after_secs: 300,
            }],
        )]),
    };
    assert_eq!(b.put_tenant(&tenant).await.unwrap(), tenant);
    assert_eq!(
        b.get_tenant(&tenant.id).await.unwrap(),
        Some(tenant.clone())
    );

    tenant.name = "North County 911".into();
    tenant.default_region = "CA".parse().unwrap();
    tenant.help_text = Some("Text 911 for emergencies".into());
    tenant.created_at = secs(created, 600);
    tenant.updated_at = secs(created, 600);
    let stored = b.put_tenant(&tenant).await.unwrap();
    assert_eq!(stored.created_at, created, "created_at is kept");
    assert_eq!(stored.name, "North County 911");
    assert_eq!(stored.default_region.code(), "CA");
    assert_eq!(
        stored.help_text.as_deref(),
        Some("Text 911 for emergencies")
    );
    assert_eq!(stored.updated_at, tenant.updated_at);
    assert_eq!(b.get_tenant(&tenant.id).await.unwrap(), Some(stored));
    assert_eq!(b.get_tenant(&new_tenant_id("none")).await.unwrap(), None);
}

/// A tenant and its numbers read together are the tenant and the numbers read apart; other
/// items of the tenant (carriers, keys) are not numbers; an unknown tenant is none.
pub async fn tenant_with_numbers_reads_both<B: Backend>(b: &B) {
    let at = base_time();
    let tenant = Tenant {
        id: new_tenant_id("tn"),
        name: "North".into(),
        default_region: Region::default(),
        help_text: None,
        created_at: at,
        updated_at: at,
        fallback: Default::default(),
    };
    b.put_tenant(&tenant).await.unwrap();
    assert_eq!(
        b.tenant_with_numbers(&tenant.id).await.unwrap(),
        Some((tenant.clone(), vec![]))
    );
    for n in 0..2 {
        b.put_number(&NumberRoute {
            number: new_number(),
            tenant_id: tenant.id.clone(),
            provider: ProviderKind::Twilio,
            channels: vec![Channel::Sms],
            updated_at: secs(at, n),
            max_per_second: None,
        })
        .await
        .unwrap();
    }
    let (record, mut numbers) = b.tenant_with_numbers(&tenant.id).await.unwrap().unwrap();
    let mut apart = b.tenant_numbers(&tenant.id).await.unwrap();
    numbers.sort_by(|x, y| x.number.cmp(&y.number));
    apart.sort_by(|x, y| x.number.cmp(&y.number));
    assert_eq!((record, numbers.len()), (tenant.clone(), 2));
    assert_eq!(numbers, apart);
    assert_eq!(
        b.tenant_with_numbers(&new_tenant_id("none")).await.unwrap(),
        None
    );
}

/// A number routes to one tenant; another tenant claiming it is a conflict.
pub async fn numbers_route_and_conflict<B: Backend>(b: &B) {
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    let number = new_number();
    let route = NumberRoute {
        number: number.clone(),
        tenant_id: a.clone(),
        provider: ProviderKind::Twilio,
        channels: vec![Channel::Sms, Channel::Mms],
        updated_at: base_time(),
        max_per_second: None,
    };
    assert_eq!(b.put_number(&route).await.unwrap(), route);
    assert_eq!(b.number_route(&number).await.unwrap(), Some(route.clone()));

    let stolen = NumberRoute {
        tenant_id: other.clone(),
        ..route.clone()
    };
    assert!(matches!(
        b.put_number(&stolen).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(b.number_route(&number).await.unwrap(), Some(route.clone()));

    let moved = NumberRoute {
        provider: ProviderKind::Voipms,
        channels: vec![Channel::Sms],
        updated_at: secs(base_time(), 5),
        max_per_second: None,
        ..route.clone()
    };
    assert_eq!(b.put_number(&moved).await.unwrap(), moved);
    let second = NumberRoute {
        number: new_number(),
        ..route.clone()
    };
    b.put_number(&second).await.unwrap();
    let mut mine = b.tenant_numbers(&a).await.unwrap();
    mine.sort_by(|x, y| x.number.cmp(&y.number));
    let mut expected = vec![moved.clone(), second.clone()];
    expected.sort_by(|x, y| x.number.cmp(&y.number));
    assert_eq!(mine, expected);
    assert!(b.tenant_numbers(&other).await.unwrap().is_empty());

    assert!(
        !b.delete_number(&other, &number).await.unwrap(),
        "not theirs"
    );
    assert!(b.delete_number(&a, &number).await.unwrap());
    assert!(!b.delete_number(&a, &number).await.unwrap());
    assert_eq!(b.number_route(&number).await.unwrap(), None);
    assert_eq!(b.put_number(&stolen).await.unwrap(), stolen, "free again");
}

fn api_key(id: &str, name: Option<&str>) -> ApiKeyInfo {
    ApiKeyInfo {
        id: id.into(),
        name: name.map(Into::into),
        prefix: Some("omk_0123abcd".into()),
        // Stores keep microseconds at least; whole seconds compare equal everywhere.
        created_at: Some(DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()),
        last_used_at: None,
        role: Role::Admin,
    }
}

/// API keys resolve by hash only, to their tenant and id; a hash is one tenant's.
pub async fn api_keys_resolve_by_hash<B: Backend>(b: &B) {
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    let hash_a = format!("sha256-{}", Uuid::new_v4().simple());
    let hash_b = format!("sha256-{}", Uuid::new_v4().simple());
    b.put_api_key(&a, &api_key("key-1", None), &hash_a)
        .await
        .unwrap();
    b.put_api_key(&a, &api_key("key-1", None), &hash_a)
        .await
        .unwrap();
    let sender = ApiKeyInfo {
        role: Role::Sender,
        ..api_key("key-1", Some("CAD"))
    };
    b.put_api_key(&other, &sender, &hash_b).await.unwrap();
    let owner = |tenant: &TenantId| ApiKeyOwner {
        tenant: tenant.clone(),
        key_id: "key-1".into(),
        name: None,
        role: Role::Admin,
    };
    assert_eq!(
        b.tenant_for_api_key(&hash_a).await.unwrap(),
        Some(owner(&a))
    );
    assert_eq!(
        b.tenant_for_api_key(&hash_b).await.unwrap(),
        Some(ApiKeyOwner {
            name: Some("CAD".into()),
            role: Role::Sender,
            ..owner(&other)
        }),
        "a key's name and role come with it"
    );
    assert_eq!(b.list_api_keys(&other).await.unwrap(), [sender]);
    assert_eq!(b.tenant_for_api_key("sha256-unknown").await.unwrap(), None);
    assert!(matches!(
        b.put_api_key(&other, &api_key("key-2", None), &hash_a)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        b.tenant_for_api_key(&hash_a).await.unwrap(),
        Some(owner(&a))
    );
}

/// A tenant's keys are listed (never their hash) with their last use, and a revoked key
/// stops resolving at once; another tenant cannot revoke it.
pub async fn api_keys_are_listed_and_revoked<B: Backend>(b: &B) {
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    let (hash_1, hash_2) = (
        format!("sha256-{}", Uuid::new_v4().simple()),
        format!("sha256-{}", Uuid::new_v4().simple()),
    );
    let (first, second) = (
        api_key("key_0001", Some("console")),
        api_key("key_0002", None),
    );
    b.put_api_key(&a, &first, &hash_1).await.unwrap();
    b.put_api_key(&a, &second, &hash_2).await.unwrap();
    assert_eq!(
        b.list_api_keys(&a).await.unwrap(),
        [first.clone(), second.clone()]
    );
    assert!(b.list_api_keys(&other).await.unwrap().is_empty());

    let used = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    b.touch_api_key(&a, "key_0001", &hash_1, used)
        .await
        .unwrap();
    let listed = b.list_api_keys(&a).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(used));
    assert_eq!(listed[1].last_used_at, None);

    assert!(
        !b.revoke_api_key(&other, "key_0001").await.unwrap(),
        "not theirs"
    );
    assert!(b.tenant_for_api_key(&hash_1).await.unwrap().is_some());
    assert!(b.revoke_api_key(&a, "key_0001").await.unwrap());
    assert_eq!(b.tenant_for_api_key(&hash_1).await.unwrap(), None);
    assert!(!b.revoke_api_key(&a, "key_0001").await.unwrap());
    assert_eq!(b.list_api_keys(&a).await.unwrap(), [second]);
    assert!(b.tenant_for_api_key(&hash_2).await.unwrap().is_some());
}

/// A tenant's carrier priorities round-trip, are replaced whole, cleared by an empty routing,
/// and are the tenant's own.
pub async fn routing_round_trips_per_tenant<B: Backend>(b: &B) {
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    assert_eq!(b.get_routing(&a).await.unwrap(), Routing::default());
    let routing = Routing(BTreeMap::from([
        (
            Channel::Sms,
            vec![
                ProviderKind::Twilio,
                ProviderKind::Voipms,
                ProviderKind::Telnyx,
            ],
        ),
        (
            Channel::Mms,
            vec![ProviderKind::Telnyx, ProviderKind::Twilio],
        ),
    ]));
    b.put_routing(&a, &routing).await.unwrap();
    assert_eq!(b.get_routing(&a).await.unwrap(), routing);
    assert_eq!(
        b.get_routing(&a).await.unwrap().providers(Channel::Sms),
        &[
            ProviderKind::Twilio,
            ProviderKind::Voipms,
            ProviderKind::Telnyx
        ],
        "the order is kept"
    );
    assert_eq!(b.get_routing(&other).await.unwrap(), Routing::default());
    // The routing lives beside the tenant's numbers without disturbing them.
    let number = new_number();
    b.put_number(&route(&a, &number, ProviderKind::Twilio))
        .await
        .unwrap();
    assert_eq!(b.tenant_numbers(&a).await.unwrap().len(), 1);
    let replaced = Routing(BTreeMap::from([(Channel::Sms, vec![ProviderKind::Voipms])]));
    b.put_routing(&a, &replaced).await.unwrap();
    assert_eq!(b.get_routing(&a).await.unwrap(), replaced);
    b.put_routing(&a, &Routing::default()).await.unwrap();
    assert_eq!(b.get_routing(&a).await.unwrap(), Routing::default());
    assert_eq!(b.tenant_numbers(&a).await.unwrap().len(), 1);
}

fn route(tenant: &TenantId, number: &Address, provider: ProviderKind) -> NumberRoute {
    NumberRoute {
        number: number.clone(),
        tenant_id: tenant.clone(),
        provider,
        channels: vec![Channel::Sms],
        updated_at: base_time(),
        max_per_second: None,
    }
}

/// One configuration per carrier, as its module makes an example, and the simulator's.
fn sample_credentials() -> Vec<Credentials> {
    let mut all = Credentials::examples();
    all.push(Credentials::Simulator);
    all
}

// ---- split messages ---------------------------------------------------------------------

/// One half of a split message (VoiceMeUp-style) under `key`.
fn half(key: &str, role: PartRole, carrier_id: &str) -> MessagePart {
    let (from, to) = (
        Address::from_stored("+15555550123").expect("valid"),
        Address::from_stored("+15555550100").expect("valid"),
    );
    let mut message = inbound(Channel::Sms, &from, &to, "see attached", base_time());
    message.provider = ProviderKind::Voicemeup;
    message.provider_message_id = carrier_id.to_owned();
    if role == PartRole::Media {
        message.channel = Channel::Mms;
        message.body = None;
        message.media = vec![Media {
            url: format!("https://files.example/{carrier_id}.jpg"),
            content_type: Some("image/jpeg".into()),
        }];
    }
    MessagePart {
        key: key.to_owned(),
        role,
        message,
    }
}

/// A flush far in the future and the retention after it.
fn later() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now();
    (now + TimeDelta::hours(1), now + TimeDelta::days(1))
}

/// The tenant's flushed halves among everything due by `now`.
async fn flushed_of<B: Backend>(b: &B, tenant: &TenantId, now: DateTime<Utc>) -> Vec<FlushedPart> {
    b.flush_message_parts(now, 500)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| &p.tenant_id == tenant)
        .collect()
}

/// The two halves of a split message complete their pair once, in either order; a
/// redelivered half finds the pair complete (so a caller that failed can act again), a
/// message colliding on the key goes on alone, tenants and carriers do not share pairs, and a
/// complete pair is nothing to flush.
pub async fn split_message_halves_merge_once_in_either_order<B: Backend>(b: &B) {
    let tenant = new_tenant_id("parts");
    let (flush_at, expires) = later();
    for (first, second) in [
        (PartRole::Text, PartRole::Media),
        (PartRole::Media, PartRole::Text),
    ] {
        let key = format!("15555550123:15555550100:{first:?}");
        let text = half(&key, PartRole::Text, &format!("t-{first:?}"));
        let media = half(&key, PartRole::Media, &format!("m-{first:?}"));
        let pick = |role| {
            if role == PartRole::Text {
                &text
            } else {
                &media
            }
        };
        assert_eq!(
            b.put_message_part(&tenant, pick(first), flush_at, expires)
                .await
                .unwrap(),
            PartOutcome::Waiting
        );
        // The same half again: still waiting.
        assert_eq!(
            b.put_message_part(&tenant, pick(first), flush_at, expires)
                .await
                .unwrap(),
            PartOutcome::Waiting
        );
        let complete = PartOutcome::Complete {
            text: text.message.clone(),
            media: media.message.clone(),
        };
        assert_eq!(
            b.put_message_part(&tenant, pick(second), flush_at, expires)
                .await
                .unwrap(),
            complete
        );
        for redelivered in [&text, &media] {
            assert_eq!(
                b.put_message_part(&tenant, redelivered, flush_at, expires)
                    .await
                    .unwrap(),
                complete,
                "a redelivery finds the pair as it is"
            );
        }
        // Another message on the same key and slot is not this pair's.
        let stranger = half(&key, PartRole::Text, "t-stranger");
        assert_eq!(
            b.put_message_part(&tenant, &stranger, flush_at, expires)
                .await
                .unwrap(),
            PartOutcome::Alone(stranger.message.clone())
        );
        // Another tenant's half under the same key starts its own pair.
        assert_eq!(
            b.put_message_part(&new_tenant_id("other"), &text, flush_at, expires)
                .await
                .unwrap(),
            PartOutcome::Waiting
        );
    }
    assert!(flushed_of(b, &tenant, Utc::now() + TimeDelta::days(2))
        .await
        .is_empty());
}

/// Two halves arriving at the same moment (two Lambda invocations) complete their pair
/// exactly once: one call sees it complete, the other waiting; never both, never neither.
pub async fn concurrent_halves_complete_exactly_once<B: Backend>(b: &B) {
    let tenant = new_tenant_id("race");
    let (flush_at, expires) = later();
    for round in 0..8 {
        let key = format!("race-{round}");
        let text = half(&key, PartRole::Text, &format!("t{round}"));
        let media = half(&key, PartRole::Media, &format!("m{round}"));
        let (a, c) = tokio::join!(
            b.put_message_part(&tenant, &text, flush_at, expires),
            b.put_message_part(&tenant, &media, flush_at, expires),
        );
        let outcomes = [a.unwrap(), c.unwrap()];
        let complete = outcomes
            .iter()
            .filter(|o| matches!(o, PartOutcome::Complete { .. }))
            .count();
        let waiting = outcomes
            .iter()
            .filter(|o| **o == PartOutcome::Waiting)
            .count();
        assert_eq!((complete, waiting), (1, 1), "round {round}: {outcomes:?}");
    }
}

/// A lone half is given up on once due (not before), returned again until confirmed, then no
/// more; its partner arriving late goes on alone, as does a redelivery of the flushed half.
/// A lone media half is flushed the same way.
pub async fn lone_halves_are_flushed_and_late_halves_go_alone<B: Backend>(b: &B) {
    let tenant = new_tenant_id("flush");
    let now = Utc::now();
    let due = now - TimeDelta::seconds(1);
    let expires = now + TimeDelta::days(1);
    let text = half("lone-text", PartRole::Text, "t-lone");
    let media_only = half("lone-media", PartRole::Media, "m-lone");
    let not_due = half("not-due", PartRole::Text, "t-later");
    for (part, at) in [
        (&text, due),
        (&media_only, due),
        (&not_due, now + TimeDelta::hours(1)),
    ] {
        assert_eq!(
            b.put_message_part(&tenant, part, at, expires)
                .await
                .unwrap(),
            PartOutcome::Waiting
        );
    }
    let ids = |parts: &[FlushedPart]| -> BTreeSet<String> {
        parts
            .iter()
            .map(|p| format!("{}={}", p.key, p.message.provider_message_id))
            .collect()
    };
    let expected = BTreeSet::from(["lone-text=t-lone".to_owned(), "lone-media=m-lone".into()]);
    let flushed = flushed_of(b, &tenant, now).await;
    assert_eq!(ids(&flushed), expected);
    let text_flushed = flushed.iter().find(|p| p.key == "lone-text").unwrap();
    assert_eq!(text_flushed.message, text.message);
    // Not confirmed yet (a sweeper that crashed): returned again.
    assert_eq!(ids(&flushed_of(b, &tenant, now).await), expected);
    for part in &flushed {
        b.confirm_flushed_part(part).await.unwrap();
    }
    assert!(flushed_of(b, &tenant, now).await.is_empty());

    // The partner arrives after the flush: it goes on alone, never merged.
    let late = half("lone-text", PartRole::Media, "m-late");
    let (flush_at, _) = later();
    assert_eq!(
        b.put_message_part(&tenant, &late, flush_at, expires)
            .await
            .unwrap(),
        PartOutcome::Alone(late.message.clone())
    );
    assert_eq!(
        b.put_message_part(&tenant, &text, flush_at, expires)
            .await
            .unwrap(),
        PartOutcome::Alone(text.message.clone())
    );
    assert!(flushed_of(b, &tenant, now + TimeDelta::hours(2))
        .await
        .iter()
        .all(|p| p.key == "not-due"));
}

/// Every carrier's configuration round-trips, per tenant, and can be replaced and removed.
pub async fn credentials_round_trip_per_provider<B: Backend>(b: &B) {
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    for creds in sample_credentials() {
        b.put_credentials(&a, &creds).await.unwrap();
        assert_eq!(
            b.get_credentials(&a, creds.kind()).await.unwrap(),
            Some(creds.clone())
        );
        assert_eq!(b.get_credentials(&other, creds.kind()).await.unwrap(), None);
    }
    let mut configured = b.configured_providers(&a).await.unwrap();
    configured.sort();
    let mut expected: Vec<ProviderKind> =
        sample_credentials().iter().map(Credentials::kind).collect();
    expected.sort();
    assert_eq!(configured, expected);
    assert!(b.configured_providers(&other).await.unwrap().is_empty());
    assert!(b
        .tenants_with_provider(ProviderKind::Signal)
        .await
        .unwrap()
        .contains(&a));
    assert!(!b
        .tenants_with_provider(ProviderKind::Signal)
        .await
        .unwrap()
        .contains(&other));

    let replaced = Credentials::Twilio(TwilioCredentials {
        account_sid: format!("AC{}", Uuid::new_v4().simple()),
        auth_token: Secret::new("rotated-token"),
        webhook_keys: BTreeMap::new(),
    });
    b.put_credentials(&a, &replaced).await.unwrap();
    assert_eq!(
        b.get_credentials(&a, ProviderKind::Twilio).await.unwrap(),
        Some(replaced)
    );

    assert!(b
        .delete_credentials(&a, ProviderKind::Twilio)
        .await
        .unwrap());
    assert!(!b
        .delete_credentials(&a, ProviderKind::Twilio)
        .await
        .unwrap());
    assert!(!b
        .delete_credentials(&other, ProviderKind::Voipms)
        .await
        .unwrap());
    assert_eq!(
        b.get_credentials(&a, ProviderKind::Twilio).await.unwrap(),
        None
    );
    assert!(!b
        .tenants_with_provider(ProviderKind::Twilio)
        .await
        .unwrap()
        .contains(&a));
    assert_eq!(
        b.get_credentials(&a, ProviderKind::Voipms).await.unwrap(),
        Some(sample_credentials().remove(1))
    );
}

// ---- inbound ---------------------------------------------------------------------------

/// An inbound message is stored once, with its conversation; a redelivery changes nothing.
pub async fn inbound_is_applied_once<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (contact, ours) = (new_number(), new_number());
    let mut m = inbound(Channel::Sms, &contact, &ours, "help", base_time());
    m.media = vec![Media {
        url: "https://example.org/a.jpg".into(),
        content_type: Some("image/jpeg".into()),
    }];
    let (msg, conv) = b.apply_inbound(&tenant, &m).await.unwrap().expect("new");
    assert_eq!(msg.id, m.id);
    assert_eq!(msg.conversation_id, conv.id);
    assert_eq!(msg.direction, Direction::Inbound);
    assert_eq!(
        (msg.from.clone(), msg.to.clone()),
        (contact.clone(), ours.clone())
    );
    assert_eq!(msg.body.as_deref(), Some("help"));
    assert_eq!(msg.media, m.media);
    assert_eq!(msg.status, DeliveryStatus::Received);
    assert_eq!(msg.provider, Some(ProviderKind::Twilio));
    assert_eq!(
        msg.provider_message_id.as_deref(),
        Some(m.provider_message_id.as_str())
    );
    assert!(!msg.starred);
    assert_eq!(msg.created_at, m.received_at);
    assert_eq!(statuses(&msg), vec![(DeliveryStatus::Received, "twilio")]);
    assert_eq!(msg.events[0].at, m.received_at);
    assert!(msg.tenant_id.is_none() || msg.tenant_id.as_ref() == Some(&tenant));

    assert_eq!(conv.channel, Channel::Sms);
    assert_eq!(conv.contact, contact);
    assert_eq!(conv.tenant_number, ours);
    assert_eq!(conv.unread_count, 1);
    assert_eq!(conv.starred_count, 0);
    assert_eq!(conv.last_message_at, Some(m.received_at));
    let last = conv.last_message.clone().expect("last message");
    assert_eq!((last.id, last.direction), (m.id, Direction::Inbound));
    assert_eq!(last.body.as_deref(), Some("help"));
    assert!(!conv.opted_out);
    assert_eq!(
        b.get_message(&tenant, m.id).await.unwrap(),
        Some(msg.clone())
    );
    assert_eq!(
        b.get_conversation(&tenant, conv.id).await.unwrap(),
        Some(conv.clone())
    );

    // The carrier redelivers (a new Omni id, the same carrier id).
    let again = InboundMessage {
        id: Uuid::now_v7(),
        ..m.clone()
    };
    assert_eq!(b.apply_inbound(&tenant, &again).await.unwrap(), None);
    assert_eq!(b.apply_inbound(&tenant, &m).await.unwrap(), None);
    assert_eq!(
        b.get_conversation(&tenant, conv.id).await.unwrap(),
        Some(conv.clone())
    );
    assert_eq!(b.get_message(&tenant, again.id).await.unwrap(), None);
    let page = b.list_messages(&tenant, conv.id, 10, None).await.unwrap();
    assert_eq!(page.items, vec![msg]);
}

/// MMS threads with SMS, other channels get their own conversation; unread counts every
/// inbound message and only inbound; a late, older message does not become the last one.
pub async fn inbound_threads_and_unread_counts<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (contact, ours) = (new_number(), new_number());
    let t0 = base_time();
    let (_, c1) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &contact, &ours, "one", secs(t0, 10)),
        )
        .await
        .unwrap()
        .unwrap();
    let mms = inbound(Channel::Mms, &contact, &ours, "two", secs(t0, 20));
    let (m2, c2) = b.apply_inbound(&tenant, &mms).await.unwrap().unwrap();
    assert_eq!(c2.id, c1.id, "MMS threads with SMS");
    assert_eq!(c2.channel, Channel::Sms);
    assert_eq!(
        m2.channel,
        Channel::Mms,
        "the message keeps its own channel"
    );
    assert_eq!(c2.unread_count, 2);

    let late = inbound(Channel::Sms, &contact, &ours, "zero", t0);
    let (_, c3) = b.apply_inbound(&tenant, &late).await.unwrap().unwrap();
    assert_eq!(c3.unread_count, 3);
    assert_eq!(
        c3.last_message.as_ref().map(|l| l.id),
        Some(m2.id),
        "newest stays last"
    );
    assert_eq!(c3.last_message_at, Some(secs(t0, 20)));

    let (_, wa) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Whatsapp, &contact, &ours, "wa", secs(t0, 30)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_ne!(wa.id, c1.id);
    assert_eq!((wa.channel, wa.unread_count), (Channel::Whatsapp, 1));

    let read = b.mark_read(&tenant, c1.id).await.unwrap().unwrap();
    assert_eq!(read.unread_count, 0);
    assert_eq!(b.mark_read(&tenant, Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(
        b.get_conversation(&tenant, wa.id)
            .await
            .unwrap()
            .unwrap()
            .unread_count,
        1
    );

    // A reply is the newest message but not unread.
    let (reply, created) = b
        .create_outbound(
            &tenant,
            &outbound(&ours, &contact, "on our way", secs(t0, 40)),
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(reply.conversation_id, c1.id);
    let after = b.get_conversation(&tenant, c1.id).await.unwrap().unwrap();
    assert_eq!(after.unread_count, 0);
    let last = after.last_message.unwrap();
    assert_eq!((last.id, last.direction), (reply.id, Direction::Outbound));
    assert_eq!(after.last_message_at, Some(secs(t0, 40)));
}

// ---- outbound and status ---------------------------------------------------------------

/// A `delivered` that arrives after `read` leaves the status alone but is stored in the
/// history once, at its place: the stored history does not depend on callback order.
pub async fn late_milestones_fill_the_history<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let t0 = base_time();
    let m = sent_message(b, &tenant, "SM-late-1").await;
    let read = status("SM-late-1", DeliveryStatus::Read, secs(t0, 9));
    let StatusApplied::Changed(r) = b.apply_status(&tenant, &read).await.unwrap() else {
        panic!("read must change a sent message");
    };
    assert_eq!(r.status, DeliveryStatus::Read);

    let delivered = status("SM-late-1", DeliveryStatus::Delivered, secs(t0, 5));
    let StatusApplied::Changed(d) = b.apply_status(&tenant, &delivered).await.unwrap() else {
        panic!("a late delivered must be filled into the history");
    };
    assert_eq!(
        d.status,
        DeliveryStatus::Read,
        "the status never moves back"
    );
    let history: Vec<_> = d.events.iter().map(|e| (e.status, e.at)).collect();
    assert_eq!(
        history[2..],
        [
            (DeliveryStatus::Delivered, secs(t0, 5)),
            (DeliveryStatus::Read, secs(t0, 9))
        ]
    );
    assert_eq!(
        statuses(&d)[..2],
        [
            (DeliveryStatus::Queued, "api"),
            (DeliveryStatus::Sent, "twilio")
        ]
    );
    assert_eq!(b.get_message(&tenant, m.id).await.unwrap(), Some(d.clone()));

    // Once: the same receipt again, or an older milestone, changes nothing more.
    for again in [
        delivered,
        status("SM-late-1", DeliveryStatus::Sent, secs(t0, 1)),
    ] {
        match b.apply_status(&tenant, &again).await.unwrap() {
            StatusApplied::Unchanged(u) => assert_eq!(u, d),
            other => panic!("{:?} must change nothing now: {other:?}", again.status),
        }
    }
    assert_eq!(b.get_message(&tenant, m.id).await.unwrap(), Some(d));
}

/// Status updates never move a message backwards, and every change is in its events.
pub async fn status_updates_merge_monotonically<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let t0 = base_time();
    let m = sent_message(b, &tenant, "SM-status-1").await;
    assert_eq!(
        m.status,
        DeliveryStatus::Sent,
        "carrier \"queued\" counts as sent"
    );
    assert_eq!(m.provider, Some(ProviderKind::Twilio));
    assert_eq!(m.provider_message_id.as_deref(), Some("SM-status-1"));
    assert_eq!(
        statuses(&m),
        vec![
            (DeliveryStatus::Queued, "api"),
            (DeliveryStatus::Sent, "twilio")
        ]
    );

    let delivered = status("SM-status-1", DeliveryStatus::Delivered, secs(t0, 5));
    let StatusApplied::Changed(d) = b.apply_status(&tenant, &delivered).await.unwrap() else {
        panic!("delivered must change a sent message");
    };
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(d.events.len(), 3);
    let last = d.events.last().unwrap();
    assert_eq!(
        (last.status, last.at, last.source.as_str()),
        (DeliveryStatus::Delivered, secs(t0, 5), "twilio")
    );

    // Late "sent", a duplicate "delivered" and an "undelivered" after delivery change nothing.
    for update in [
        status("SM-status-1", DeliveryStatus::Sent, secs(t0, 1)),
        delivered.clone(),
        status("SM-status-1", DeliveryStatus::Undelivered, secs(t0, 6)),
        status("SM-status-1", DeliveryStatus::Queued, secs(t0, 7)),
    ] {
        match b.apply_status(&tenant, &update).await.unwrap() {
            StatusApplied::Unchanged(u) => assert_eq!(u, d),
            other => panic!(
                "{:?} must not change a delivered message: {other:?}",
                update.status
            ),
        }
    }
    let StatusApplied::Changed(r) = b
        .apply_status(
            &tenant,
            &status("SM-status-1", DeliveryStatus::Read, secs(t0, 9)),
        )
        .await
        .unwrap()
    else {
        panic!("read moves delivered on");
    };
    assert_eq!(r.status, DeliveryStatus::Read);
    assert_eq!(r.events.len(), 4);
    assert_eq!(b.get_message(&tenant, m.id).await.unwrap(), Some(r));

    // A failure before delivery wins, with the carrier's code; nothing replaces it.
    let f = sent_message(b, &tenant, "SM-status-2").await;
    let mut failed = status("SM-status-2", DeliveryStatus::Undelivered, secs(t0, 3));
    failed.error_code = Some("30003".into());
    failed.error_message = Some("Unreachable destination handset".into());
    let StatusApplied::Changed(u) = b.apply_status(&tenant, &failed).await.unwrap() else {
        panic!("undelivered must change a sent message");
    };
    assert_eq!(u.status, DeliveryStatus::Undelivered);
    assert_eq!(u.error_code.as_deref(), Some("30003"));
    assert_eq!(
        u.error_message.as_deref(),
        Some("Unreachable destination handset")
    );
    assert!(matches!(
        b.apply_status(
            &tenant,
            &status("SM-status-2", DeliveryStatus::Delivered, secs(t0, 4))
        )
        .await
        .unwrap(),
        StatusApplied::Unchanged(_)
    ));
    assert_eq!(
        b.get_message(&tenant, f.id).await.unwrap().unwrap().status,
        DeliveryStatus::Undelivered
    );

    // Unknown carrier ids, and inbound messages, are not found.
    assert_eq!(
        b.apply_status(
            &tenant,
            &status("SM-unknown", DeliveryStatus::Delivered, t0)
        )
        .await
        .unwrap(),
        StatusApplied::NotFound
    );
    let inb = inbound(Channel::Sms, &new_number(), &new_number(), "x", t0);
    b.apply_inbound(&tenant, &inb).await.unwrap().unwrap();
    assert_eq!(
        b.apply_status(
            &tenant,
            &status(&inb.provider_message_id, DeliveryStatus::Read, t0)
        )
        .await
        .unwrap(),
        StatusApplied::NotFound
    );
}

/// A queued WhatsApp template message keeps its template (Meta's inline form with every
/// component, or one of the tenant's templates with its version, language and Meta's form)
/// through the outbox, the delivery claim the worker sends from, and the carrier's acceptance.
pub async fn whatsapp_templates_round_trip<B: Backend>(b: &B) {
    let tenant = new_tenant_id("wa");
    let stored = SentTemplate::Stored {
        name: "unit-dispatched".into(),
        version: 3,
        language: "es".into(),
        whatsapp: Some(template()),
    };
    for (sent_template, body) in [
        (SentTemplate::Inline(template()), None),
        (stored, Some("La unidad M12 llega en 7 min".to_owned())),
    ] {
        let mut new = outbound(&new_number(), &new_number(), "", base_time());
        new.channel = Channel::Whatsapp;
        new.body = body;
        new.template = Some(sent_template);
        let (m, created) = b.create_outbound(&tenant, &new).await.unwrap();
        assert!(created);
        assert_eq!(
            (m.template.clone(), m.body.clone()),
            (new.template.clone(), new.body.clone())
        );
        let stored = b.get_message(&tenant, m.id).await.unwrap().unwrap();
        assert_eq!(stored, m);
        let claimed = b
            .claim_delivery(&tenant, m.id, LEASE)
            .await
            .unwrap()
            .expect("claimable");
        assert_eq!(claimed.message.template, new.template);
        let sent = b
            .record_sent(
                &tenant,
                m.id,
                &sent(&format!("wamid.{}", Uuid::new_v4().simple())),
                None,
            )
            .await
            .unwrap();
        assert_eq!(sent.template, new.template);
        let page = b
            .list_messages(&tenant, m.conversation_id, 10, None)
            .await
            .unwrap();
        assert_eq!(page.items[0].template, new.template);
    }
    // Messages without one have none.
    let (plain, _) = b
        .create_outbound(
            &tenant,
            &outbound(&new_number(), &new_number(), "hi", base_time()),
        )
        .await
        .unwrap();
    assert_eq!(plain.template, None);
}

/// An email address routes like a number, and a conversation with a contact known only by
/// an email address keeps both addresses, the subject and its thread.
pub async fn email_conversations_round_trip<B: Backend>(b: &B) {
    let tenant = new_tenant_id("mail");
    let email = |s: String| Address::from_stored(&s).expect("valid");
    let id = Uuid::new_v4().simple();
    let (ours, contact) = (
        email(format!("dispatch@n{id}.example")),
        email(format!("Jane.{id}@example.org")),
    );
    let route = NumberRoute {
        number: ours.clone(),
        tenant_id: tenant.clone(),
        provider: ProviderKind::Sendgrid,
        channels: vec![Channel::Email],
        updated_at: base_time(),
        max_per_second: None,
    };
    b.put_number(&route).await.unwrap();
    assert_eq!(b.number_route(&ours).await.unwrap(), Some(route));

    let mut new = outbound(&ours, &contact, "Units are on the way", base_time());
    new.channel = Channel::Email;
    new.subject = Some("Your call".into());
    let (m, _) = b.create_outbound(&tenant, &new).await.unwrap();
    assert_eq!((&m.from, &m.to), (&ours, &contact));
    let claimed = b
        .claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .expect("claimable");
    assert_eq!(claimed.message.subject.as_deref(), Some("Your call"));
    b.record_sent(&tenant, m.id, &sent("sg-1"), None)
        .await
        .unwrap();

    let reply = inbound(
        Channel::Email,
        &contact,
        &ours,
        "Thank you",
        secs(base_time(), 5),
    );
    let (r, conversation) = b.apply_inbound(&tenant, &reply).await.unwrap().unwrap();
    assert_eq!(conversation.id, m.conversation_id, "the reply threads");
    assert_eq!((r.from.clone(), r.subject.clone()), (contact.clone(), None));
    let listed = b.list_conversations(&tenant, 10, None).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let c = &listed.items[0];
    assert_eq!(
        (c.channel, &c.contact, &c.tenant_number, c.unread_count),
        (Channel::Email, &contact, &ours, 1)
    );
    let stored = b.get_message(&tenant, m.id).await.unwrap().unwrap();
    assert_eq!(stored.subject.as_deref(), Some("Your call"));
    b.set_opt_out(&tenant, &contact, true).await.unwrap();
    assert!(b.is_opted_out(&tenant, &contact).await.unwrap());
}

/// The same idempotency key returns the first message, once per tenant.
pub async fn create_outbound_is_idempotent<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("a"), new_tenant_id("b"));
    let (ours, contact) = (new_number(), new_number());
    let t0 = base_time();
    let mut first = outbound(&ours, &contact, "units on the way", t0);
    first.idempotency_key = Some("req-1".into());
    first.channel = Channel::Mms;
    first.media = vec![Media {
        url: "https://example.org/map.png".into(),
        content_type: None,
    }];
    let (m, created) = b.create_outbound(&tenant, &first).await.unwrap();
    assert!(created);
    assert_eq!(m.id, first.id);
    assert_eq!(m.direction, Direction::Outbound);
    assert_eq!(m.channel, Channel::Mms);
    assert_eq!(
        (m.from.clone(), m.to.clone()),
        (ours.clone(), contact.clone())
    );
    assert_eq!(m.media, first.media);
    assert_eq!(m.status, DeliveryStatus::Queued);
    assert_eq!((m.provider, m.provider_message_id.clone()), (None, None));
    assert_eq!(statuses(&m), vec![(DeliveryStatus::Queued, "api")]);
    assert_eq!(m.events[0].at, t0);
    assert_eq!((m.created_at, m.updated_at), (t0, t0));

    let conv = b
        .get_conversation(&tenant, m.conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conv.channel, Channel::Sms, "MMS threads with SMS");
    assert_eq!(
        (conv.contact.clone(), conv.tenant_number.clone()),
        (contact.clone(), ours.clone())
    );
    assert_eq!(conv.unread_count, 0);

    let retry = NewOutbound {
        id: Uuid::now_v7(),
        body: Some("different".into()),
        at: secs(t0, 5),
        ..first.clone()
    };
    let (again, created) = b.create_outbound(&tenant, &retry).await.unwrap();
    assert!(!created);
    assert_eq!(again, m);
    assert_eq!(b.get_message(&tenant, retry.id).await.unwrap(), None);

    // Keys are per tenant; no key means no deduplication.
    let (theirs, created) = b.create_outbound(&other, &retry).await.unwrap();
    assert!(created);
    assert_eq!(theirs.id, retry.id);
    let plain = outbound(&ours, &contact, "again", secs(t0, 6));
    assert!(b.create_outbound(&tenant, &plain).await.unwrap().1);
    let plain2 = outbound(&ours, &contact, "again", secs(t0, 6));
    assert!(b.create_outbound(&tenant, &plain2).await.unwrap().1);
    let page = b
        .list_messages(&tenant, m.conversation_id, 10, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
}

/// The conversation a write returns (for dashboards) is the one a fresh read gives, after
/// reads and stars in between: a store may compute it instead of reading it again. A send to
/// a contact who opted out is refused, nothing stored.
pub async fn written_conversations_match_a_fresh_read<B: Backend>(b: &B) {
    let tenant = new_tenant_id("w");
    let (contact, ours) = (new_number(), new_number());
    let t0 = base_time();
    let (m1, c1) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &contact, &ours, "one", secs(t0, 1)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(c1.clone()),
        b.get_conversation(&tenant, c1.id).await.unwrap()
    );
    b.mark_read(&tenant, c1.id).await.unwrap();
    b.set_starred(&tenant, m1.id, true).await.unwrap();
    let (_, c2) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &contact, &ours, "two", secs(t0, 2)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c2.unread_count, c2.starred_count), (1, 1), "{c2:?}");
    assert_eq!(Some(c2), b.get_conversation(&tenant, c1.id).await.unwrap());

    b.set_opt_out(&tenant, &contact, true).await.unwrap();
    let mut reply = outbound(&ours, &contact, "three", secs(t0, 3));
    reply.idempotency_key = Some("w-1".into());
    assert!(matches!(
        b.create_outbound_with_conversation(&tenant, &reply).await,
        Err(StoreError::RecipientOptedOut)
    ));
    assert_eq!(b.get_message(&tenant, reply.id).await.unwrap(), None);
    b.set_opt_out(&tenant, &contact, false).await.unwrap();
    let (m3, c3) = b
        .create_outbound_with_conversation(&tenant, &reply)
        .await
        .unwrap();
    let c3 = c3.expect("a created message has its conversation");
    assert_eq!(c3.last_message.as_ref().map(|l| l.id), Some(m3.id));
    assert!(!c3.opted_out, "{c3:?}");
    assert_eq!(Some(c3), b.get_conversation(&tenant, c1.id).await.unwrap());
    let again = NewOutbound {
        id: Uuid::now_v7(),
        ..reply
    };
    let (same, none) = b
        .create_outbound_with_conversation(&tenant, &again)
        .await
        .unwrap();
    assert_eq!(
        (same.id, none),
        (m3.id, None),
        "a replayed key creates nothing"
    );
}

/// One live claim at a time; every claim counts an attempt; an expired lease can be retaken.
pub async fn claims_are_exclusive_and_counted<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (m, _) = b
        .create_outbound(
            &tenant,
            &outbound(&new_number(), &new_number(), "x", base_time()),
        )
        .await
        .unwrap();
    let claim = b
        .claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .expect("first claim");
    assert_eq!(claim.attempt, 1);
    assert_eq!(claim.message.id, m.id);
    assert_eq!(claim.message.status, DeliveryStatus::Queued);
    assert_eq!(
        b.claim_delivery(&tenant, m.id, LEASE).await.unwrap(),
        None,
        "held"
    );

    b.record_retry(
        &tenant,
        m.id,
        Some("20429"),
        "Too Many Requests",
        Utc::now(),
    )
    .await
    .unwrap();
    let second = b
        .claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .expect("released");
    assert_eq!(second.attempt, 2);
    b.record_sent(&tenant, m.id, &sent("SM-claim-1"), None)
        .await
        .unwrap();
    assert_eq!(
        b.claim_delivery(&tenant, m.id, LEASE).await.unwrap(),
        None,
        "no longer queued"
    );
    assert_eq!(
        b.claim_delivery(&tenant, Uuid::now_v7(), LEASE)
            .await
            .unwrap(),
        None
    );

    let (short, _) = b
        .create_outbound(
            &tenant,
            &outbound(&new_number(), &new_number(), "y", base_time()),
        )
        .await
        .unwrap();
    let lease = Duration::from_millis(50);
    assert!(b
        .claim_delivery(&tenant, short.id, lease)
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let retaken = b
        .claim_delivery(&tenant, short.id, LEASE)
        .await
        .unwrap()
        .expect("lease ran out");
    assert_eq!(retaken.attempt, 2);
}

/// A send that failed over records the number it really went out from and, on its `sent`
/// event, the carrier that took it and why.
pub async fn failover_sends_record_sender_and_note<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (from, fallback, to) = (new_number(), new_number(), new_number());
    let (m, _) = b
        .create_outbound(&tenant, &outbound(&from, &to, "failover", base_time()))
        .await
        .unwrap();
    b.claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    let failover = Failover {
        from: fallback.clone(),
        note: "failover to voipms from +1555: twilio: circuit open".into(),
    };
    let result = SendResult {
        provider: ProviderKind::Voipms,
        ..sent("voipms-failover-1")
    };
    let done = b
        .record_sent(&tenant, m.id, &result, Some(&failover))
        .await
        .unwrap();
    assert_eq!(done.status, DeliveryStatus::Sent);
    assert_eq!(done.from, fallback, "the sender it really went out from");
    assert_eq!(done.to, to);
    assert_eq!(done.provider, Some(ProviderKind::Voipms));
    let last = done.events.last().unwrap();
    assert_eq!(
        (last.status, last.source.as_str(), last.note.as_deref()),
        (DeliveryStatus::Sent, "voipms", Some(failover.note.as_str()))
    );
    assert_eq!(done.events[0].note, None);
    assert_eq!(b.get_message(&tenant, m.id).await.unwrap(), Some(done));
}

/// record_sent / record_retry / record_failed set status, errors and events.
pub async fn delivery_outcomes_are_recorded<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let new = |body: &str| outbound(&new_number(), &new_number(), body, base_time());

    let (m, _) = b.create_outbound(&tenant, &new("retry")).await.unwrap();
    b.claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    let r = b
        .record_retry(
            &tenant,
            m.id,
            Some("503"),
            "carrier unavailable",
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, DeliveryStatus::Queued);
    assert_eq!(r.error_code.as_deref(), Some("503"));
    assert_eq!(r.error_message.as_deref(), Some("carrier unavailable"));
    assert!(r.updated_at > m.updated_at, "updated_at is touched");
    assert_eq!(r.events, m.events, "a retry is not a transition");
    let r2 = b
        .record_retry(&tenant, m.id, None, "timeout", Utc::now())
        .await
        .unwrap();
    assert_eq!(
        (r2.error_code, r2.error_message.as_deref()),
        (None, Some("timeout"))
    );

    let (f, _) = b.create_outbound(&tenant, &new("fail")).await.unwrap();
    b.claim_delivery(&tenant, f.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    let failed = b
        .record_failed(&tenant, f.id, Some("21610"), "recipient opted out")
        .await
        .unwrap();
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("21610"));
    assert_eq!(failed.error_message.as_deref(), Some("recipient opted out"));
    assert_eq!(
        statuses(&failed),
        vec![
            (DeliveryStatus::Queued, "api"),
            (DeliveryStatus::Failed, "worker")
        ]
    );
    assert_eq!(b.claim_delivery(&tenant, f.id, LEASE).await.unwrap(), None);

    let (s, _) = b.create_outbound(&tenant, &new("send")).await.unwrap();
    b.claim_delivery(&tenant, s.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    let result = SendResult {
        status: DeliveryStatus::Delivered,
        raw_status: "delivered".into(),
        ..sent("SM-outcome-1")
    };
    let done = b.record_sent(&tenant, s.id, &result, None).await.unwrap();
    assert_eq!(
        done.status,
        DeliveryStatus::Delivered,
        "the carrier's status when further on"
    );
    assert_eq!(
        statuses(&done),
        vec![
            (DeliveryStatus::Queued, "api"),
            (DeliveryStatus::Delivered, "twilio")
        ]
    );
    assert_eq!(b.get_message(&tenant, s.id).await.unwrap(), Some(done));

    assert!(b
        .record_sent(&tenant, Uuid::now_v7(), &sent("SM-x"), None)
        .await
        .is_err());
    assert!(b
        .record_retry(&tenant, Uuid::now_v7(), None, "x", Utc::now())
        .await
        .is_err());
    assert!(b
        .record_failed(&tenant, Uuid::now_v7(), None, "x")
        .await
        .is_err());
}

/// Queued, unclaimed messages untouched since `before` are stranded; nothing else is.
pub async fn stranded_outbound_is_found<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let now = Utc::now();
    let old = now - TimeDelta::minutes(10);
    let create = |at| outbound(&new_number(), &new_number(), "s", at);
    let (stale, _) = b.create_outbound(&tenant, &create(old)).await.unwrap();
    let (fresh, _) = b.create_outbound(&tenant, &create(now)).await.unwrap();
    let (claimed, _) = b.create_outbound(&tenant, &create(old)).await.unwrap();
    b.claim_delivery(&tenant, claimed.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    let (done, _) = b.create_outbound(&tenant, &create(old)).await.unwrap();
    b.claim_delivery(&tenant, done.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    b.record_sent(&tenant, done.id, &sent("SM-stranded-1"), None)
        .await
        .unwrap();

    let mine = |found: Vec<(TenantId, Uuid)>| -> Vec<Uuid> {
        found
            .into_iter()
            .filter(|(t, _)| *t == tenant)
            .map(|(_, id)| id)
            .collect()
    };
    let found = mine(
        b.stranded_outbound(now - TimeDelta::minutes(1), 10_000)
            .await
            .unwrap(),
    );
    assert_eq!(found, vec![stale.id]);

    // A released claim makes it stranded again once old enough.
    b.record_retry(&tenant, claimed.id, None, "timeout", Utc::now())
        .await
        .unwrap();
    let later = Utc::now() + TimeDelta::seconds(1);
    let mut found = mine(b.stranded_outbound(later, 10_000).await.unwrap());
    found.sort();
    let mut expected = vec![stale.id, fresh.id, claimed.id];
    expected.sort();
    assert_eq!(found, expected);
    assert!(
        b.stranded_outbound(later, 1).await.unwrap().len() <= 1,
        "limit"
    );
}

/// A retry due later than the sweeper's threshold (a carrier's 60 s `Retry-After`) keeps the
/// message out of the stranded list until it is due: the sweeper must not send it early, and
/// twice.
pub async fn retries_are_not_stranded_before_due<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let old = Utc::now() - TimeDelta::minutes(10);
    let (m, _) = b
        .create_outbound(&tenant, &outbound(&new_number(), &new_number(), "s", old))
        .await
        .unwrap();
    b.claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    let due = Utc::now() + TimeDelta::seconds(60);
    b.record_retry(&tenant, m.id, Some("429"), "Too Many Requests", due)
        .await
        .unwrap();
    let (ours, id) = (&tenant, m.id);
    let stranded = |before| is_stranded(b, ours, id, before);
    // What the sweeper asks 30 s after the retry was recorded: not yet.
    assert!(
        !stranded(Utc::now() + TimeDelta::seconds(1)).await,
        "before due"
    );
    assert!(
        !stranded(due - TimeDelta::seconds(1)).await,
        "just before due"
    );
    assert!(stranded(due + TimeDelta::seconds(1)).await, "after due");

    // A retry due at once (a short backoff) is stranded as soon as it is untouched.
    b.claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    b.record_retry(
        &tenant,
        m.id,
        None,
        "timeout",
        Utc::now() - TimeDelta::seconds(5),
    )
    .await
    .unwrap();
    assert!(
        stranded(Utc::now() + TimeDelta::seconds(1)).await,
        "short delay"
    );
}

// ---- listings --------------------------------------------------------------------------

/// Conversations list newest activity first, in pages joined by opaque cursors.
pub async fn conversations_page_newest_first<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let ours = new_number();
    let t0 = base_time();
    // Two share a time, to exercise the tie-break.
    let offsets = [0, 10, 20, 20, 30, 40, 50];
    for (i, off) in offsets.iter().enumerate() {
        let m = inbound(
            Channel::Sms,
            &new_number(),
            &ours,
            &format!("c{i}"),
            secs(t0, *off),
        );
        b.apply_inbound(&tenant, &m).await.unwrap().unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = b
            .list_conversations(&tenant, 3, cursor.as_deref())
            .await
            .unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(sizes.len() < 10, "paging must end");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    let times: Vec<_> = seen.iter().map(|c| c.last_message_at.unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let ids: BTreeSet<_> = seen.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 7, "no duplicates across pages");
    let all = b.list_conversations(&tenant, 7, None).await.unwrap();
    assert_eq!(all.items, seen, "pages join to the whole list");
    assert_eq!(all.next_cursor, None, "an exact fit has no next page");

    assert!(matches!(
        b.list_conversations(&tenant, 3, Some("not a cursor!"))
            .await,
        Err(StoreError::InvalidCursor)
    ));
    let other = b
        .list_conversations(&new_tenant_id("o"), 3, None)
        .await
        .unwrap();
    assert!(other.items.is_empty() && other.next_cursor.is_none());
}

/// A conversation's messages list newest first, in pages.
pub async fn messages_page_newest_first<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (contact, ours) = (new_number(), new_number());
    let t0 = base_time();
    let mut ids = Vec::new();
    let mut conversation = None;
    for i in 0..5 {
        let m = inbound(Channel::Sms, &contact, &ours, &format!("m{i}"), secs(t0, i));
        let (msg, conv) = b.apply_inbound(&tenant, &m).await.unwrap().unwrap();
        ids.push(msg.id);
        conversation = Some(conv.id);
    }
    let conversation = conversation.unwrap();
    ids.reverse();
    let p1 = b
        .list_messages(&tenant, conversation, 2, None)
        .await
        .unwrap();
    let p2 = b
        .list_messages(&tenant, conversation, 2, p1.next_cursor.as_deref())
        .await
        .unwrap();
    let p3 = b
        .list_messages(&tenant, conversation, 2, p2.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(p3.next_cursor, None);
    let got: Vec<_> = [p1.items, p2.items, p3.items]
        .concat()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(got, ids);
    assert!(matches!(
        b.list_messages(&tenant, conversation, 2, Some("%%%")).await,
        Err(StoreError::InvalidCursor)
    ));
    assert!(b
        .list_messages(&tenant, Uuid::now_v7(), 2, None)
        .await
        .unwrap()
        .items
        .is_empty());
}

/// The delivery log: every filter keeps what it says across conversations, newest first,
/// paged, and never another tenant's messages.
pub async fn delivery_log_is_searched_and_paged<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (alice, bob, ours) = (new_number(), new_number(), new_number());
    let t0 = base_time();
    let (from_alice, _) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &alice, &ours, "Address is 12 MAIN St", t0),
        )
        .await
        .unwrap()
        .unwrap();
    let (from_bob, _) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Mms, &bob, &ours, "need help", secs(t0, 1)),
        )
        .await
        .unwrap()
        .unwrap();
    let (to_alice, _) = b
        .create_outbound(
            &tenant,
            &outbound(&ours, &alice, "Unit on the way", secs(t0, 2)),
        )
        .await
        .unwrap();
    let (to_bob, _) = b
        .create_outbound(
            &tenant,
            &outbound(&ours, &bob, "stay on the line", secs(t0, 3)),
        )
        .await
        .unwrap();
    b.claim_delivery(&tenant, to_bob.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    b.record_failed(&tenant, to_bob.id, Some("30007"), "filtered")
        .await
        .unwrap();
    // Another tenant's message with the same text and numbers is never found.
    b.apply_inbound(
        &new_tenant_id("t"),
        &inbound(Channel::Sms, &alice, &ours, "Address is 12 MAIN St", t0),
    )
    .await
    .unwrap()
    .unwrap();

    let tenant = &tenant;
    let find = |search: MessageSearch| async move {
        let page = b.search_messages(tenant, &search, 50, None).await.unwrap();
        assert_eq!(page.next_cursor, None);
        page.items.iter().map(|m| m.id).collect::<Vec<_>>()
    };
    let all = vec![to_bob.id, to_alice.id, from_bob.id, from_alice.id];
    assert_eq!(find(MessageSearch::default()).await, all);
    let cases = [
        (
            MessageSearch {
                direction: Some(Direction::Inbound),
                ..Default::default()
            },
            vec![from_bob.id, from_alice.id],
        ),
        (
            MessageSearch {
                status: Some(DeliveryStatus::Failed),
                ..Default::default()
            },
            vec![to_bob.id],
        ),
        (
            MessageSearch {
                channel: Some(Channel::Mms),
                ..Default::default()
            },
            vec![from_bob.id],
        ),
        (
            MessageSearch {
                carrier: Some(ProviderKind::Twilio),
                direction: Some(Direction::Inbound),
                ..Default::default()
            },
            vec![from_bob.id, from_alice.id],
        ),
        (
            MessageSearch {
                carrier: Some(ProviderKind::Telnyx),
                ..Default::default()
            },
            vec![],
        ),
        (
            MessageSearch {
                from: Some(alice.clone()),
                ..Default::default()
            },
            vec![from_alice.id],
        ),
        (
            MessageSearch {
                to: Some(alice.clone()),
                ..Default::default()
            },
            vec![to_alice.id],
        ),
        (
            MessageSearch {
                since: Some(secs(t0, 1)),
                until: Some(secs(t0, 3)),
                ..Default::default()
            },
            vec![to_alice.id, from_bob.id],
        ),
        (
            MessageSearch {
                q: Some("main st".into()),
                ..Default::default()
            },
            vec![from_alice.id],
        ),
        (
            MessageSearch {
                q: Some("%".into()),
                ..Default::default()
            },
            vec![],
        ),
        (
            MessageSearch {
                direction: Some(Direction::Outbound),
                q: Some("THE".into()),
                to: Some(bob.clone()),
                ..Default::default()
            },
            vec![to_bob.id],
        ),
    ];
    for (search, want) in cases {
        assert_eq!(find(search.clone()).await, want, "{search:?}");
    }

    // One at a time, with and without a filter, the pages add up to the whole.
    for (search, want) in [
        (MessageSearch::default(), all.clone()),
        (
            MessageSearch {
                direction: Some(Direction::Outbound),
                ..Default::default()
            },
            vec![to_bob.id, to_alice.id],
        ),
    ] {
        let (mut got, mut cursor) = (Vec::new(), None);
        loop {
            let page = b
                .search_messages(tenant, &search, 1, cursor.as_deref())
                .await
                .unwrap();
            got.extend(page.items.iter().map(|m| m.id));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
            assert!(got.len() <= want.len(), "{search:?} pages past the end");
        }
        assert_eq!(got, want, "{search:?}");
    }
    assert!(matches!(
        b.search_messages(tenant, &MessageSearch::default(), 1, Some("%%%"))
            .await,
        Err(StoreError::InvalidCursor)
    ));
}

/// A tenant's auto-replies round-trip (none: the empty settings), and a conversation gets one
/// turn per cooldown, even to concurrent claims.
pub async fn auto_replies_round_trip_and_take_turns<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    assert_eq!(
        b.get_auto_replies(&tenant).await.unwrap(),
        AutoReplies::default()
    );
    let settings: AutoReplies = serde_json::from_value(serde_json::json!({
        "business_hours": {"timezone": "America/Toronto", "hours": {"mon": [["08:00", "17:00"]]}, "holidays": ["2026-12-25"]},
        "outside_hours_reply": "We are closed.",
        "greeting": {"template": {"name": "welcome", "language": "en", "variables": {"unit": "12"}}},
        "keyword_rules": [{"match": "contains", "keyword": "address", "reply": "12 Main St"}],
        "cooldown_minutes": 15
    }))
    .unwrap();
    b.put_auto_replies(&tenant, &settings).await.unwrap();
    assert_eq!(b.get_auto_replies(&tenant).await.unwrap(), settings);
    assert_eq!(
        b.get_auto_replies(&new_tenant_id("t")).await.unwrap(),
        AutoReplies::default(),
        "another tenant's are its own"
    );

    let cooldown = Duration::from_secs(15 * 60);
    let (conversation, other) = (Uuid::now_v7(), Uuid::now_v7());
    let t0 = base_time();
    assert!(b
        .claim_auto_reply(&tenant, conversation, t0, cooldown)
        .await
        .unwrap());
    assert!(!b
        .claim_auto_reply(&tenant, conversation, secs(t0, 14 * 60), cooldown)
        .await
        .unwrap());
    assert!(b
        .claim_auto_reply(&tenant, other, secs(t0, 60), cooldown)
        .await
        .unwrap());
    assert!(b
        .claim_auto_reply(&tenant, conversation, secs(t0, 15 * 60), cooldown)
        .await
        .unwrap());
    let later = secs(t0, 40 * 60);
    let claims = futures::future::join_all(
        (0..4).map(|_| b.claim_auto_reply(&tenant, conversation, later, cooldown)),
    )
    .await;
    assert_eq!(
        claims.into_iter().filter(|c| *c.as_ref().unwrap()).count(),
        1,
        "concurrent claims: one turn"
    );
}

/// The inbound webhook log: entries under their tenant (or none), newest first, filtered by
/// carrier, result and time, paged.
pub async fn webhook_log_is_kept_per_tenant_and_filtered<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("t"), new_tenant_id("t"));
    let t0 = base_time();
    let entry = |at: i64, carrier: ProviderKind, reason: Option<&str>| WebhookLogEntry {
        id: Uuid::now_v7(),
        received_at: secs(t0, at),
        carrier,
        result: if reason.is_some() {
            WebhookResult::Rejected
        } else {
            WebhookResult::Accepted
        },
        reason: reason.map(str::to_owned),
        detail: reason.map(|r| format!("refused: {r}")),
        body: Some(format!("Body=at+{at}")),
    };
    let expires = secs(t0, 86_400);
    let accepted = entry(0, ProviderKind::Twilio, None);
    let forged = entry(1, ProviderKind::Telnyx, Some("bad_signature"));
    let later = entry(2, ProviderKind::Twilio, None);
    for e in [&accepted, &forged, &later] {
        b.append_webhook_log(Some(&tenant), e, expires)
            .await
            .unwrap();
    }
    let unrouted = entry(3, ProviderKind::Twilio, Some("unknown_number"));
    b.append_webhook_log(None, &unrouted, expires)
        .await
        .unwrap();
    b.append_webhook_log(Some(&other), &entry(4, ProviderKind::Twilio, None), expires)
        .await
        .unwrap();

    let list = |query: WebhookLogQuery| {
        let tenant = &tenant;
        async move {
            let page = b
                .list_webhook_log(Some(tenant), &query, 50, None)
                .await
                .unwrap();
            assert_eq!(page.next_cursor, None);
            page.items
        }
    };
    assert_eq!(
        list(WebhookLogQuery::default()).await,
        vec![later.clone(), forged.clone(), accepted.clone()],
        "everything kept as written, newest first, only the tenant's"
    );
    let rejected = WebhookLogQuery {
        result: Some(WebhookResult::Rejected),
        ..Default::default()
    };
    assert_eq!(list(rejected).await, vec![forged.clone()]);
    let twilio = WebhookLogQuery {
        carrier: Some(ProviderKind::Twilio),
        result: Some(WebhookResult::Accepted),
        ..Default::default()
    };
    assert_eq!(list(twilio).await, vec![later.clone(), accepted.clone()]);
    let since = WebhookLogQuery {
        since: Some(secs(t0, 1)),
        ..Default::default()
    };
    assert_eq!(list(since).await, vec![later.clone(), forged.clone()]);
    // Some unattributed entries may be other runs': this one is among them, the tenants'
    // are not.
    let unattributed = b
        .list_webhook_log(None, &WebhookLogQuery::default(), 200, None)
        .await
        .unwrap()
        .items;
    assert!(unattributed.contains(&unrouted));
    assert!(!unattributed.contains(&accepted));

    let (mut got, mut cursor) = (Vec::new(), None);
    loop {
        let page = b
            .list_webhook_log(
                Some(&tenant),
                &WebhookLogQuery::default(),
                1,
                cursor.as_deref(),
            )
            .await
            .unwrap();
        got.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
        assert!(got.len() <= 3, "pages past the end");
    }
    assert_eq!(got, vec![later, forged, accepted]);
    assert!(matches!(
        b.list_webhook_log(Some(&tenant), &WebhookLogQuery::default(), 1, Some("%%%"))
            .await,
        Err(StoreError::InvalidCursor)
    ));
}

/// A failed message goes back to the outbox once: queued, its error cleared, the step in its
/// history, claimable as a first attempt; nothing else can be requeued.
pub async fn failed_messages_are_requeued_with_a_fresh_budget<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (ours, contact) = (new_number(), new_number());
    let (m, _) = b
        .create_outbound(&tenant, &outbound(&ours, &contact, "retry me", base_time()))
        .await
        .unwrap();
    // Not failed yet: a conflict, and the message is untouched.
    assert!(matches!(
        b.requeue_message(&tenant, m.id).await,
        Err(StoreError::Conflict(_))
    ));
    for _ in 0..2 {
        b.claim_delivery(&tenant, m.id, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
    }
    b.record_failed(&tenant, m.id, Some("30003"), "unreachable")
        .await
        .unwrap();
    let again = b.requeue_message(&tenant, m.id).await.unwrap().unwrap();
    assert_eq!(again.status, DeliveryStatus::Queued);
    assert_eq!((&again.error_code, &again.error_message), (&None, &None));
    assert_eq!(
        statuses(&again),
        vec![
            (DeliveryStatus::Queued, "api"),
            (DeliveryStatus::Failed, "worker"),
            (DeliveryStatus::Queued, "api"),
        ]
    );
    assert_eq!(b.get_message(&tenant, m.id).await.unwrap().unwrap(), again);
    let claim = b
        .claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .expect("queued again, so claimable");
    assert_eq!(claim.attempt, 1, "a fresh retry budget");
    // Queued (and claimed) again: not retryable until it fails again.
    assert!(matches!(
        b.requeue_message(&tenant, m.id).await,
        Err(StoreError::Conflict(_))
    ));
    // Inbound messages, unknown ids and other tenants' messages are never requeued.
    let (received, _) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &contact, &ours, "hi", base_time()),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        b.requeue_message(&tenant, received.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        b.requeue_message(&tenant, Uuid::now_v7()).await.unwrap(),
        None
    );
    assert_eq!(
        b.requeue_message(&new_tenant_id("t"), m.id).await.unwrap(),
        None
    );
}

/// Starring is idempotent and the conversation's count stays exact.
pub async fn starring_keeps_counts_exact<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (contact, ours) = (new_number(), new_number());
    let t0 = base_time();
    let (m1, conv) = b
        .apply_inbound(&tenant, &inbound(Channel::Sms, &contact, &ours, "1", t0))
        .await
        .unwrap()
        .unwrap();
    let (m2, _) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &contact, &ours, "2", secs(t0, 1)),
        )
        .await
        .unwrap()
        .unwrap();
    let star = |id, on| b.set_starred(&tenant, id, on);
    let (s, c) = star(m1.id, true).await.unwrap().unwrap();
    assert!(s.starred);
    assert_eq!((c.id, c.starred_count), (conv.id, 1));
    assert_eq!(
        star(m1.id, true).await.unwrap().unwrap().1.starred_count,
        1,
        "twice counts once"
    );
    assert_eq!(star(m2.id, true).await.unwrap().unwrap().1.starred_count, 2);
    let (u, c) = star(m1.id, false).await.unwrap().unwrap();
    assert!(!u.starred);
    assert_eq!(c.starred_count, 1);
    assert_eq!(
        star(m1.id, false).await.unwrap().unwrap().1.starred_count,
        1
    );
    assert!(
        b.get_message(&tenant, m2.id)
            .await
            .unwrap()
            .unwrap()
            .starred
    );
    assert_eq!(star(Uuid::now_v7(), true).await.unwrap(), None);
    assert_eq!(
        b.get_conversation(&tenant, conv.id)
            .await
            .unwrap()
            .unwrap()
            .starred_count,
        1
    );
}

/// Opt-outs are per tenant and show on conversations.
pub async fn opt_outs_are_recorded<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("a"), new_tenant_id("b"));
    let (contact, ours) = (new_number(), new_number());
    let (_, conv) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &contact, &ours, "STOP", base_time()),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!b.is_opted_out(&tenant, &contact).await.unwrap());
    b.set_opt_out(&tenant, &contact, true).await.unwrap();
    b.set_opt_out(&tenant, &contact, true).await.unwrap();
    assert!(b.is_opted_out(&tenant, &contact).await.unwrap());
    assert!(!b.is_opted_out(&other, &contact).await.unwrap());
    assert!(
        b.get_conversation(&tenant, conv.id)
            .await
            .unwrap()
            .unwrap()
            .opted_out
    );
    let listed = b.list_conversations(&tenant, 10, None).await.unwrap();
    assert!(listed.items.iter().all(|c| c.opted_out));

    b.set_opt_out(&tenant, &contact, false).await.unwrap();
    assert!(!b.is_opted_out(&tenant, &contact).await.unwrap());
    assert!(
        !b.get_conversation(&tenant, conv.id)
            .await
            .unwrap()
            .unwrap()
            .opted_out
    );
    b.set_opt_out(&tenant, &contact, false).await.unwrap();
}

/// Raw webhooks deduplicate per tenant and are purged after their retention.
pub async fn raw_webhooks_dedupe_and_expire<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("a"), new_tenant_id("b"));
    let now = Utc::now();
    let keep = format!("twilio:msg:SM{}", Uuid::new_v4().simple());
    let expired = format!("twilio:msg:SM{}", Uuid::new_v4().simple());
    let future = now + TimeDelta::days(30);
    let save =
        |t, key, until| b.save_raw_webhook(t, ProviderKind::Twilio, key, b"Body=help", until);
    assert!(save(&tenant, &keep, future).await.unwrap());
    assert!(!save(&tenant, &keep, future).await.unwrap(), "redelivery");
    assert!(
        save(&other, &keep, future).await.unwrap(),
        "dedupe is per tenant"
    );
    assert!(save(&tenant, &expired, now - TimeDelta::hours(1))
        .await
        .unwrap());

    assert!(b.purge_expired(now).await.unwrap() >= 1);
    assert!(
        !save(&tenant, &keep, future).await.unwrap(),
        "kept until it expires"
    );
    assert!(
        save(&tenant, &expired, future).await.unwrap(),
        "the expired one is gone"
    );
}

/// Another tenant can neither read nor change a tenant's conversations and messages by id.
pub async fn tenants_are_isolated<B: Backend>(b: &B) {
    let (a, intruder) = (new_tenant_id("a"), new_tenant_id("b"));
    let (contact, ours) = (new_number(), new_number());
    let inb = inbound(Channel::Sms, &contact, &ours, "private", base_time());
    let (msg, conv) = b.apply_inbound(&a, &inb).await.unwrap().unwrap();
    let (out, _) = b
        .create_outbound(
            &a,
            &outbound(&ours, &contact, "reply", secs(base_time(), 1)),
        )
        .await
        .unwrap();
    let sent_out = sent_message(b, &a, "SM-isolated-1").await;
    let snapshot = |id| b.get_message(&a, id);
    let (msg0, out0, sent0) = (
        snapshot(msg.id).await.unwrap(),
        snapshot(out.id).await.unwrap(),
        snapshot(sent_out.id).await.unwrap(),
    );
    let conv0 = b.get_conversation(&a, conv.id).await.unwrap();

    let x = &intruder;
    assert_eq!(b.get_message(x, msg.id).await.unwrap(), None);
    assert_eq!(b.get_conversation(x, conv.id).await.unwrap(), None);
    assert!(b
        .list_conversations(x, 50, None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(b
        .list_messages(x, conv.id, 50, None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(b.mark_read(x, conv.id).await.unwrap(), None);
    assert_eq!(b.set_starred(x, msg.id, true).await.unwrap(), None);
    assert_eq!(b.claim_delivery(x, out.id, LEASE).await.unwrap(), None);
    assert!(b
        .record_sent(x, out.id, &sent("SM-hijack"), None)
        .await
        .is_err());
    assert!(b
        .record_retry(x, out.id, None, "x", Utc::now())
        .await
        .is_err());
    assert!(b.record_failed(x, out.id, None, "x").await.is_err());
    assert_eq!(
        b.apply_status(
            x,
            &status("SM-isolated-1", DeliveryStatus::Failed, base_time())
        )
        .await
        .unwrap(),
        StatusApplied::NotFound
    );
    // The same carrier id under another tenant is that tenant's own message.
    let (theirs, their_conv) = b
        .apply_inbound(
            x,
            &InboundMessage {
                id: Uuid::now_v7(),
                ..inb
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_ne!(their_conv.id, conv.id);
    assert_eq!(b.get_message(&a, theirs.id).await.unwrap(), None);

    assert_eq!(snapshot(msg.id).await.unwrap(), msg0);
    assert_eq!(snapshot(out.id).await.unwrap(), out0);
    assert_eq!(snapshot(sent_out.id).await.unwrap(), sent0);
    assert_eq!(b.get_conversation(&a, conv.id).await.unwrap(), conv0);
}

/// The queue accepts both job kinds, delayed or not, and dead letters.
pub async fn queue_accepts_jobs<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let deliver = Job::Deliver {
        tenant_id: tenant.clone(),
        message_id: Uuid::now_v7(),
        priority: Default::default(),
        slot: None,
    };
    b.enqueue(&deliver, Duration::ZERO).await.unwrap();
    b.enqueue(&deliver, Duration::from_secs(30)).await.unwrap();
    b.dead_letter(&deliver, "retry budget exhausted")
        .await
        .unwrap();
}

// ---- the team ----------------------------------------------------------------------------

fn user_record(tenant: &TenantId, email: &str, role: Role) -> UserRecord {
    let at = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    UserRecord {
        user: User {
            id: Uuid::now_v7(),
            tenant_id: Some(tenant.clone()),
            email: email.into(),
            name: format!("{email} name"),
            role,
            disabled: false,
            active: false,
            created_at: at,
            updated_at: at,
        },
        password_hash: None,
        generation: 0,
    }
}

/// Users are found by id and e-mail within their tenant only; an e-mail is unique per
/// tenant; an update keeps the e-mail and replaces the rest, password hash included.
pub async fn users_are_unique_per_tenant_and_updated<B: Backend>(b: &B) {
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    let alex = user_record(&a, "alex@example.org", Role::Dispatcher);
    let sam = user_record(&a, "sam@example.org", Role::Admin);
    b.create_user(&alex).await.unwrap();
    b.create_user(&sam).await.unwrap();
    assert!(matches!(
        b.create_user(&user_record(&a, "alex@example.org", Role::Admin))
            .await,
        Err(StoreError::Conflict(_))
    ));
    b.create_user(&user_record(&other, "alex@example.org", Role::Admin))
        .await
        .unwrap();
    assert_eq!(
        b.get_user(&a, alex.user.id).await.unwrap(),
        Some(alex.clone())
    );
    assert_eq!(b.get_user(&other, alex.user.id).await.unwrap(), None);
    assert_eq!(
        b.user_by_email(&a, "alex@example.org").await.unwrap(),
        Some(alex.clone())
    );
    assert_eq!(
        b.user_by_email(&a, "nobody@example.org").await.unwrap(),
        None
    );
    assert_eq!(
        b.list_users(&a).await.unwrap(),
        [alex.user.clone(), sam.user.clone()]
    );

    let mut changed = alex.clone();
    changed.user.name = "Alex R.".into();
    changed.user.role = Role::Supervisor;
    changed.user.disabled = true;
    changed.user.active = true;
    changed.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
    changed.generation = 3;
    b.update_user(&changed).await.unwrap();
    assert_eq!(
        b.get_user(&a, alex.user.id).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        b.user_by_email(&a, "alex@example.org").await.unwrap(),
        Some(changed)
    );
}

/// An invite is taken once, whoever races for it, and only by its token's hash.
pub async fn invites_are_taken_once<B: Backend>(b: &B) {
    let tenant = new_tenant_id("a");
    let invite = Invite {
        token_hash: format!("sha256-{}", Uuid::new_v4().simple()),
        tenant_id: tenant.clone(),
        user_id: Uuid::now_v7(),
        expires_at: DateTime::from_timestamp(Utc::now().timestamp() + 3600, 0).unwrap(),
    };
    b.put_invite(&invite).await.unwrap();
    assert_eq!(b.take_invite("sha256-unknown").await.unwrap(), None);
    let (first, second) = tokio::join!(
        b.take_invite(&invite.token_hash),
        b.take_invite(&invite.token_hash)
    );
    let taken: Vec<_> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(taken, [invite]);
}

/// A session is found by its token's hash, keeps its generation, moves its expiry when
/// touched, and is gone once deleted (a touch after that does not bring it back).
pub async fn sessions_are_kept_touched_and_ended<B: Backend>(b: &B) {
    let tenant = new_tenant_id("a");
    let expires = DateTime::from_timestamp(Utc::now().timestamp() + 3600, 0).unwrap();
    let session = Session {
        token_hash: format!("sha256-{}", Uuid::new_v4().simple()),
        tenant_id: tenant,
        user_id: Uuid::now_v7(),
        generation: 2,
        expires_at: expires,
    };
    b.put_session(&session).await.unwrap();
    assert_eq!(
        b.get_session(&session.token_hash).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(b.get_session("sha256-unknown").await.unwrap(), None);
    let later = secs(expires, 600);
    b.touch_session(&session.token_hash, later).await.unwrap();
    assert_eq!(
        b.get_session(&session.token_hash).await.unwrap(),
        Some(Session {
            expires_at: later,
            ..session.clone()
        })
    );
    b.delete_session(&session.token_hash).await.unwrap();
    assert_eq!(b.get_session(&session.token_hash).await.unwrap(), None);
    b.touch_session(&session.token_hash, secs(later, 60))
        .await
        .unwrap();
    assert_eq!(b.get_session(&session.token_hash).await.unwrap(), None);
}

// ---- assignment, notes, audit ------------------------------------------------------------

fn alex() -> Actor {
    Actor {
        kind: ActorType::User,
        id: "0190a7d0-0000-7000-8000-000000000001".into(),
        name: "Alex".into(),
    }
}

/// A conversation starts open and unassigned; it is assigned, unassigned, resolved, and a
/// new inbound message opens it again (keeping its assignee); another tenant cannot touch it.
pub async fn conversations_are_assigned_resolved_and_reopened<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("t"), new_tenant_id("o"));
    let (ours, contact) = (new_number(), new_number());
    let t0 = base_time();
    let (_, c) = b
        .apply_inbound(&tenant, &inbound(Channel::Sms, &contact, &ours, "hi", t0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.status, c.assignee.clone()),
        (ConversationStatus::Open, None)
    );
    let assignee = Assignee {
        id: Uuid::now_v7(),
        name: "Alex".into(),
    };
    let assigned = b
        .update_conversation(&tenant, c.id, None, Some(Some(assignee.clone())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(assigned.assignee, Some(assignee.clone()));
    assert_eq!(
        b.get_conversation(&tenant, c.id).await.unwrap(),
        Some(assigned.clone())
    );
    let resolved = b
        .update_conversation(&tenant, c.id, Some(ConversationStatus::Resolved), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.status, ConversationStatus::Resolved);
    assert_eq!(resolved.assignee, Some(assignee.clone()), "kept");
    assert_eq!(
        b.update_conversation(&other, c.id, Some(ConversationStatus::Open), Some(None))
            .await
            .unwrap(),
        None
    );
    // An outbound reply leaves it resolved; the contact writing again opens it.
    b.create_outbound(&tenant, &outbound(&ours, &contact, "done", secs(t0, 5)))
        .await
        .unwrap();
    let after_reply = b.get_conversation(&tenant, c.id).await.unwrap().unwrap();
    assert_eq!(after_reply.status, ConversationStatus::Resolved);
    let (_, reopened) = b
        .apply_inbound(
            &tenant,
            &inbound(Channel::Sms, &contact, &ours, "again", secs(t0, 10)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reopened.status, ConversationStatus::Open);
    assert_eq!(reopened.assignee, Some(assignee));
    let unassigned = b
        .update_conversation(&tenant, c.id, None, Some(None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unassigned.assignee, None);
    assert_eq!(
        b.get_conversation(&tenant, c.id).await.unwrap(),
        Some(unassigned)
    );
}

/// Listings keep the conversations that pass every field of the filter, in pages.
pub async fn conversations_are_filtered<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let ours = new_number();
    let t0 = base_time();
    let user = Uuid::now_v7();
    let mut ids = Vec::new();
    for i in 0..6 {
        let body = if i == 2 {
            "Smoke on 5th Street"
        } else {
            "hello"
        };
        let (_, c) = b
            .apply_inbound(
                &tenant,
                &inbound(Channel::Sms, &new_number(), &ours, body, secs(t0, i)),
            )
            .await
            .unwrap()
            .unwrap();
        ids.push(c.id);
    }
    // 0 and 1 are the user's, 1 and 3 resolved.
    for id in &ids[..2] {
        let a = Assignee {
            id: user,
            name: "Alex".into(),
        };
        b.update_conversation(&tenant, *id, None, Some(Some(a)))
            .await
            .unwrap();
    }
    for id in [ids[1], ids[3]] {
        b.update_conversation(&tenant, id, Some(ConversationStatus::Resolved), None)
            .await
            .unwrap();
    }
    let t = &tenant;
    let found = |filter: ConversationFilter| async move {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = b
                .find_conversations(t, &filter, 2, cursor.as_deref())
                .await
                .unwrap();
            out.extend(page.items.iter().map(|c| c.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    };
    let newest_first = |picked: &[usize]| picked.iter().rev().map(|i| ids[*i]).collect::<Vec<_>>();
    let open = ConversationFilter {
        status: Some(ConversationStatus::Open),
        ..Default::default()
    };
    assert_eq!(found(open.clone()).await, newest_first(&[0, 2, 4, 5]));
    let mine = ConversationFilter {
        assignee: Some(Some(user)),
        ..Default::default()
    };
    assert_eq!(found(mine).await, newest_first(&[0, 1]));
    let open_unassigned = ConversationFilter {
        assignee: Some(None),
        ..open
    };
    assert_eq!(found(open_unassigned).await, newest_first(&[2, 4, 5]));
    let text = ConversationFilter {
        q: Some("5TH street".into()),
        ..Default::default()
    };
    assert_eq!(found(text).await, newest_first(&[2]));
    let all = b.list_conversations(&tenant, 50, None).await.unwrap();
    let contact = all
        .items
        .iter()
        .find(|c| c.id == ids[4])
        .unwrap()
        .contact
        .clone();
    let by_number = ConversationFilter {
        q: Some(contact.as_str()[2..].to_owned()),
        ..Default::default()
    };
    assert_eq!(found(by_number).await, newest_first(&[4]));
    let whatsapp = ConversationFilter {
        channel: Some(Channel::Whatsapp),
        ..Default::default()
    };
    assert!(found(whatsapp).await.is_empty());
    let sms = ConversationFilter {
        channel: Some(Channel::Mms),
        ..Default::default()
    };
    assert_eq!(found(sms).await.len(), 6, "MMS threads with SMS");
}

/// Notes are kept per conversation and listed newest first within a time range.
pub async fn notes_are_listed_by_time<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("t"), new_tenant_id("o"));
    let conversation = Uuid::now_v7();
    let t0 = base_time();
    let notes: Vec<Note> = (0..3)
        .map(|i| Note {
            id: Uuid::now_v7(),
            conversation_id: conversation,
            body: format!("note {i}"),
            author: alex(),
            created_at: secs(t0, i * 10),
        })
        .collect();
    for note in &notes {
        b.add_note(&tenant, note).await.unwrap();
    }
    let all = b
        .list_notes(&tenant, conversation, None, None)
        .await
        .unwrap();
    assert_eq!(all, [notes[2].clone(), notes[1].clone(), notes[0].clone()]);
    let middle = b
        .list_notes(&tenant, conversation, Some(t0), Some(secs(t0, 10)))
        .await
        .unwrap();
    assert_eq!(
        middle,
        [notes[1].clone()],
        "after is exclusive, until inclusive"
    );
    assert!(b
        .list_notes(&other, conversation, None, None)
        .await
        .unwrap()
        .is_empty());
}

/// Audit entries list newest first, filtered by time, actor and action, in pages; another
/// tenant's are never seen.
pub async fn audit_entries_are_filtered_and_paged<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("t"), new_tenant_id("o"));
    let t0 = base_time();
    let sam = Actor {
        id: "key_0001".into(),
        kind: ActorType::ApiKey,
        name: "CAD".into(),
    };
    let entries: Vec<AuditEntry> = (0..7)
        .map(|i| AuditEntry {
            id: Uuid::now_v7(),
            at: secs(t0, i),
            actor: if i % 2 == 0 { alex() } else { sam.clone() },
            action: if i < 4 {
                "message.send"
            } else {
                "conversation.assign"
            }
            .into(),
            target: Some(format!("conversation:{i}")),
            details: format!("{{\"i\": {i}}}").parse().unwrap(),
        })
        .collect();
    let expires = secs(t0, 3600 * 24);
    for e in &entries {
        b.append_audit(&tenant, e, expires).await.unwrap();
    }
    let t = &tenant;
    let listed = |query: AuditQuery| async move {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = b.list_audit(t, &query, 2, cursor.as_deref()).await.unwrap();
            out.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    };
    let newest_first = |picked: &[usize]| {
        picked
            .iter()
            .rev()
            .map(|i| entries[*i].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(AuditQuery::default()).await,
        newest_first(&[0, 1, 2, 3, 4, 5, 6])
    );
    let alexs = AuditQuery {
        actor: Some(alex().id),
        ..Default::default()
    };
    assert_eq!(listed(alexs).await, newest_first(&[0, 2, 4, 6]));
    let window = AuditQuery {
        since: Some(secs(t0, 2)),
        until: Some(secs(t0, 5)),
        action: Some("message.send".into()),
        ..Default::default()
    };
    assert_eq!(listed(window).await, newest_first(&[2, 3]));
    assert!(b
        .list_audit(&other, &AuditQuery::default(), 10, None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(matches!(
        b.list_audit(&tenant, &AuditQuery::default(), 2, Some("not a cursor!"))
            .await,
        Err(StoreError::InvalidCursor)
    ));
}

/// Failed sign-ins count per subject within a window from the first; after it a new window
/// starts.
pub async fn login_failures_count_in_windows<B: Backend>(b: &B) {
    let subject = format!("account:{}:alex@example.org", new_tenant_id("t"));
    let other = format!("address:{}", Uuid::new_v4());
    let window = TimeDelta::minutes(15);
    let t0 = base_time();
    assert_eq!(b.login_failures(&subject, t0, window).await.unwrap(), None);
    for n in 1..=3 {
        let at = secs(t0, i64::from(n) * 60);
        assert_eq!(
            b.count_login_failure(&subject, at, window).await.unwrap(),
            (n, secs(t0, 60))
        );
    }
    assert_eq!(
        b.login_failures(&subject, secs(t0, 600), window)
            .await
            .unwrap(),
        Some((3, secs(t0, 60)))
    );
    assert_eq!(b.login_failures(&other, t0, window).await.unwrap(), None);
    let later = secs(t0, 60 + 15 * 60 + 1);
    assert_eq!(
        b.login_failures(&subject, later, window).await.unwrap(),
        None
    );
    assert_eq!(
        b.count_login_failure(&subject, later, window)
            .await
            .unwrap(),
        (1, later),
        "a new window"
    );
}

// ---- LiveChat ---------------------------------------------------------------------------

fn livechat_settings(tenant: &TenantId) -> LivechatSettings {
    let at = base_time();
    LivechatSettings {
        tenant_id: tenant.clone(),
        widget_key: ChatId::from_bytes(ChatId::WIDGET, Uuid::new_v4().into_bytes()),
        allowed_origins: vec!["https://north.example.org".into()],
        title: Some("Chat with us".into()),
        greeting: Some("Hello".into()),
        offline_message: None,
        identity_required: false,
        identity_secret: Secret::new(Uuid::new_v4().simple().to_string()),
        signing_key: Secret::new(Uuid::new_v4().simple().to_string()),
        created_at: at,
        updated_at: at,
    }
}

/// A tenant's LiveChat widget round-trips, secrets included, by tenant and by widget key; a
/// save replaces it; another tenant's key is refused; other tenants see nothing.
pub async fn livechat_widgets_round_trip_by_tenant_and_key<B: Backend>(b: &B) {
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    assert_eq!(b.get_livechat(&a).await.unwrap(), None);
    let settings = livechat_settings(&a);
    b.put_livechat(&settings).await.unwrap();
    assert_eq!(b.get_livechat(&a).await.unwrap(), Some(settings.clone()));
    assert_eq!(
        b.livechat_by_widget_key(&settings.widget_key)
            .await
            .unwrap(),
        Some(settings.clone())
    );
    assert_eq!(b.get_livechat(&other).await.unwrap(), None);

    let replaced = LivechatSettings {
        allowed_origins: vec!["https://a.example".into(), "http://127.0.0.1:9000".into()],
        identity_required: true,
        identity_secret: Secret::new("rotated"),
        updated_at: secs(settings.updated_at, 5),
        ..settings.clone()
    };
    b.put_livechat(&replaced).await.unwrap();
    assert_eq!(b.get_livechat(&a).await.unwrap(), Some(replaced.clone()));
    assert_eq!(
        b.livechat_by_widget_key(&settings.widget_key)
            .await
            .unwrap(),
        Some(replaced.clone())
    );

    let stolen = LivechatSettings {
        widget_key: settings.widget_key.clone(),
        ..livechat_settings(&other)
    };
    assert!(matches!(
        b.put_livechat(&stolen).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(b.get_livechat(&other).await.unwrap(), None);
    assert_eq!(
        b.livechat_by_widget_key(&settings.widget_key)
            .await
            .unwrap(),
        Some(replaced)
    );
    let unknown = ChatId::from_bytes(ChatId::WIDGET, Uuid::new_v4().into_bytes());
    assert_eq!(b.livechat_by_widget_key(&unknown).await.unwrap(), None);
}

/// A new conversation gets the id [`Conversation::id_for`] derives (a LiveChat session
/// names it before the first message), on the LiveChat channel between a visitor and a
/// widget, both ways.
pub async fn livechat_conversations_have_derived_ids<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (visitor, widget) = new_chat();
    let expected = Conversation::id_for(&tenant, Channel::Livechat, &visitor);
    let mut m = inbound(Channel::Livechat, &visitor, &widget, "hi", base_time());
    m.provider = ProviderKind::Livechat;
    let (msg, conv) = b.apply_inbound(&tenant, &m).await.unwrap().expect("new");
    assert_eq!(conv.id, expected);
    assert_eq!(msg.conversation_id, expected);
    assert_eq!(
        (conv.contact.clone(), conv.tenant_number.clone()),
        (visitor.clone(), widget.clone())
    );

    let mut reply = outbound(&widget, &visitor, "hello", secs(base_time(), 1));
    reply.channel = Channel::Livechat;
    let (sent, _) = b.create_outbound(&tenant, &reply).await.unwrap();
    assert_eq!(sent.conversation_id, expected);
    let page = b.list_messages(&tenant, expected, 10, None).await.unwrap();
    assert_eq!(
        page.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![sent.id, msg.id]
    );

    // An outbound message first creates the derived conversation too.
    let sms_contact = new_number();
    let first = outbound(&new_number(), &sms_contact, "hi", base_time());
    let (created, _) = b.create_outbound(&tenant, &first).await.unwrap();
    assert_eq!(
        created.conversation_id,
        Conversation::id_for(&tenant, Channel::Sms, &sms_contact)
    );
}

/// A conversation shows the name its contact's newest message gave (a LiveChat visitor's
/// name, a profile name), trimmed; a message without one, or a reply, keeps it; the
/// conversation list and its search by text find it; the write's answer matches a fresh read.
pub async fn conversations_keep_the_contact_name<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (visitor, widget) = new_chat();
    let t0 = base_time();
    let mut first = inbound(Channel::Livechat, &visitor, &widget, "hi", t0);
    first.provider = ProviderKind::Livechat;
    first.profile_name = Some("  Ana Example ".into());
    let (_, conv) = b
        .apply_inbound(&tenant, &first)
        .await
        .unwrap()
        .expect("new");
    assert_eq!(conv.contact_name.as_deref(), Some("Ana Example"));
    let read = b.get_conversation(&tenant, conv.id).await.unwrap().unwrap();
    assert_eq!(read, conv, "the write's answer is what a read finds");

    let mut nameless = inbound(Channel::Livechat, &visitor, &widget, "again", secs(t0, 1));
    nameless.provider = ProviderKind::Livechat;
    let (_, conv) = b.apply_inbound(&tenant, &nameless).await.unwrap().unwrap();
    assert_eq!(conv.contact_name.as_deref(), Some("Ana Example"));
    let mut reply = outbound(&widget, &visitor, "hello", secs(t0, 2));
    reply.channel = Channel::Livechat;
    b.create_outbound(&tenant, &reply).await.unwrap();
    let listed = b.list_conversations(&tenant, 10, None).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].contact_name.as_deref(), Some("Ana Example"));

    let mut renamed = inbound(Channel::Livechat, &visitor, &widget, "it's me", secs(t0, 3));
    renamed.provider = ProviderKind::Livechat;
    renamed.profile_name = Some("ana@example.org".into());
    let (_, conv) = b.apply_inbound(&tenant, &renamed).await.unwrap().unwrap();
    assert_eq!(conv.contact_name.as_deref(), Some("ana@example.org"));
    assert_eq!(
        b.get_conversation(&tenant, conv.id).await.unwrap().unwrap(),
        conv
    );

    // An SMS contact without a name has none; the search by text finds the named one.
    let sms = inbound(Channel::Sms, &new_number(), &new_number(), "smoke", t0);
    let (_, plain) = b.apply_inbound(&tenant, &sms).await.unwrap().unwrap();
    assert_eq!(plain.contact_name, None);
    let filter = ConversationFilter {
        q: Some("ANA@EXAMPLE".into()),
        ..ConversationFilter::default()
    };
    let found = b
        .find_conversations(&tenant, &filter, 10, None)
        .await
        .unwrap();
    assert_eq!(
        found.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![conv.id]
    );
}

/// LiveChat visitor messages are counted per (tenant, session) in windows of a minute from
/// a window's first message, atomically: twenty concurrent first counts get 1 to 20 each
/// once, in one window; another session and another tenant count on their own; past the
/// window a new one starts.
pub async fn visitor_messages_are_counted_per_session_and_minute<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("t"), new_tenant_id("o"));
    let session = Uuid::now_v7();
    let (t0, minute) = (base_time(), TimeDelta::minutes(1));
    let counted = futures::future::join_all(
        (0..20).map(|_| b.count_visitor_message(&tenant, session, t0, minute)),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect::<Vec<_>>();
    assert_eq!(
        counted.iter().map(|(c, _)| *c).collect::<BTreeSet<u32>>(),
        (1..=20).collect::<BTreeSet<u32>>()
    );
    assert!(counted.iter().all(|(_, since)| *since == t0));
    assert_eq!(
        b.count_visitor_message(&tenant, session, secs(t0, 59), minute)
            .await
            .unwrap(),
        (21, t0)
    );
    assert_eq!(
        b.count_visitor_message(&tenant, Uuid::now_v7(), secs(t0, 1), minute)
            .await
            .unwrap(),
        (1, secs(t0, 1))
    );
    assert_eq!(
        b.count_visitor_message(&other, session, secs(t0, 1), minute)
            .await
            .unwrap(),
        (1, secs(t0, 1))
    );
    let later = secs(t0, 61);
    assert_eq!(
        b.count_visitor_message(&tenant, session, later, minute)
            .await
            .unwrap(),
        (1, later)
    );
    assert_eq!(
        b.count_visitor_message(&tenant, session, secs(later, 1), minute)
            .await
            .unwrap(),
        (2, later)
    );
}

/// The platform's audit log (its reserved scope) holds what belongs to no tenant: listed by
/// itself, and in no tenant's log.
pub async fn platform_audit_is_kept_apart_from_tenants<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let action = format!("waba_route.put.{}", rand_u32());
    let entry = AuditEntry {
        id: Uuid::now_v7(),
        at: base_time(),
        actor: Actor::platform(),
        action: action.clone(),
        target: Some("102290129340398".into()),
        details: serde_json::json!({"url": "https://staging.example.org/webhooks/whatsapp"}),
    };
    let expires = secs(base_time(), 3600);
    b.append_audit(&TenantId::platform(), &entry, expires)
        .await
        .unwrap();
    let query = AuditQuery {
        action: Some(action),
        ..AuditQuery::default()
    };
    let platform = b
        .list_audit(&TenantId::platform(), &query, 10, None)
        .await
        .unwrap();
    assert_eq!(platform.items, vec![entry]);
    let tenant_log = b.list_audit(&tenant, &query, 10, None).await.unwrap();
    assert!(tenant_log.items.is_empty());
}

/// WhatsApp Business Account routes: saved with their secret, replaced keeping counters and
/// `created_at`, listed without secrets, counted atomically under concurrency, deleted with
/// their secret; a count for a removed route changes nothing.
pub async fn waba_routes_keep_secrets_and_counts<B: Backend>(b: &B) {
    let id = WabaId::parse(&format!("{}", 100_000_000 + rand_u32())).unwrap();
    let other = WabaId::parse(&format!("{}", 900_000_000 + rand_u32())).unwrap();
    assert!(b.get_waba_route(&id).await.unwrap().is_none());
    let t0 = Utc::now() - TimeDelta::minutes(5);
    let first = WabaRoute::new(
        id.clone(),
        "https://staging.example.org/webhooks/whatsapp".into(),
        Some("staging".into()),
        t0,
    );
    let stored = b
        .put_waba_route(&first, &Secret::new("first-app-secret-0123456789"))
        .await
        .unwrap();
    assert_eq!(stored, first);
    b.put_waba_route(
        &WabaRoute::new(other.clone(), "https://dev.example.org/".into(), None, t0),
        &Secret::new("other-app-secret-0123456789"),
    )
    .await
    .unwrap();

    let counts = (0..8).map(|_| b.count_forward(&id, ForwardCount::Queued));
    for r in futures::future::join_all(counts).await {
        r.unwrap();
    }
    let at = Utc::now();
    b.count_forward(&id, ForwardCount::Forwarded(at))
        .await
        .unwrap();
    b.count_forward(&id, ForwardCount::Forwarded(at))
        .await
        .unwrap();
    b.count_forward(&id, ForwardCount::Failed).await.unwrap();

    let t1 = Utc::now();
    let changed = WabaRoute::new(
        id.clone(),
        "https://staging2.example.org/hook".into(),
        None,
        t1,
    );
    let stored = b
        .put_waba_route(&changed, &Secret::new("second-app-secret-0123456789"))
        .await
        .unwrap();
    assert_eq!(stored.url, changed.url);
    assert_eq!(stored.note, None);
    assert_eq!(
        ts_ms(stored.created_at),
        ts_ms(t0),
        "created_at survives a change"
    );
    assert_eq!(ts_ms(stored.updated_at), ts_ms(t1));
    assert_eq!((stored.pending, stored.forwarded, stored.failed), (5, 2, 1));
    assert_eq!(stored.last_forwarded_at.map(ts_ms), Some(ts_ms(at)));

    let (route, secret) = b.get_waba_route(&id).await.unwrap().unwrap();
    assert_eq!(route, stored);
    assert_eq!(secret.expose(), "second-app-secret-0123456789");
    let (_, other_secret) = b.get_waba_route(&other).await.unwrap().unwrap();
    assert_eq!(other_secret.expose(), "other-app-secret-0123456789");

    let listed = b.list_waba_routes().await.unwrap();
    assert!(listed.contains(&stored));
    let mine: Vec<&WabaId> = listed
        .iter()
        .map(|r| &r.waba_id)
        .filter(|w| **w == id || **w == other)
        .collect();
    assert_eq!(mine.len(), 2);
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("app-secret"), "no secret in a listing");

    assert!(b.delete_waba_route(&id).await.unwrap());
    assert!(!b.delete_waba_route(&id).await.unwrap());
    assert!(b.get_waba_route(&id).await.unwrap().is_none());
    b.count_forward(&id, ForwardCount::Queued).await.unwrap();
    assert!(
        b.get_waba_route(&id).await.unwrap().is_none(),
        "a late count does not bring a route back"
    );
    assert!(b.delete_waba_route(&other).await.unwrap());
}

/// A new LiveChat visitor and widget, as chat addresses.
fn new_chat() -> (Address, Address) {
    let chat = |prefix| Address::Chat(ChatId::from_bytes(prefix, Uuid::new_v4().into_bytes()));
    (chat(ChatId::VISITOR), chat(ChatId::WIDGET))
}

fn rand_u32() -> u32 {
    (Uuid::new_v4().as_u128() % 100_000_000) as u32
}

fn ts_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

// ---- event webhooks --------------------------------------------------------------------

fn endpoint(events: Vec<EventType>) -> WebhookEndpoint {
    let now = base_time();
    WebhookEndpoint {
        id: Uuid::now_v7(),
        url: "https://crm.example.org/omni".into(),
        events,
        description: Some("CRM".into()),
        enabled: true,
        failing_since: None,
        created_at: now,
        updated_at: now,
    }
}

/// Claims every due delivery (other checks' too, on a shared backend) and keeps the tenant's.
async fn claim_all_of<B: Backend>(b: &B, tenant: &TenantId) -> Vec<WebhookDelivery> {
    let mut mine = Vec::new();
    loop {
        let claimed = b
            .claim_deliveries(Utc::now(), Duration::from_secs(60), 10)
            .await
            .unwrap();
        if claimed.is_empty() {
            return mine;
        }
        mine.extend(claimed.into_iter().filter(|d| &d.tenant_id == tenant));
    }
}

/// Endpoints keep their secret (never listed), change, and are the tenant's only; deliveries
/// page newest first, are claimed once until their lease ends, keep their attempts, and go
/// with their endpoint.
pub async fn webhook_endpoints_keep_secrets_and_deliveries<B: Backend>(b: &B) {
    let (tenant, other) = (new_tenant_id("t"), new_tenant_id("o"));
    let mut e = endpoint(vec![EventType::MessageReceived]);
    b.create_webhook(&tenant, &e, &Secret::new("whsec_first"))
        .await
        .unwrap();
    let (got, secret) = b.get_webhook(&tenant, e.id).await.unwrap().unwrap();
    assert_eq!((got, secret.expose()), (e.clone(), "whsec_first"));
    assert!(b.get_webhook(&other, e.id).await.unwrap().is_none());
    assert!(b.list_webhooks(&other).await.unwrap().is_empty());

    e.url = "https://crm.example.org/v2".into();
    e.events = vec![EventType::MessageSent, EventType::MessageStatus];
    e.enabled = false;
    e.failing_since = Some(base_time());
    assert!(b.update_webhook(&tenant, &e).await.unwrap());
    assert!(!b.update_webhook(&other, &e).await.unwrap());
    assert!(b
        .set_webhook_secret(&tenant, e.id, &Secret::new("whsec_second"))
        .await
        .unwrap());
    assert!(!b
        .set_webhook_secret(&other, e.id, &Secret::new("whsec_x"))
        .await
        .unwrap());
    let (got, secret) = b.get_webhook(&tenant, e.id).await.unwrap().unwrap();
    assert_eq!((got, secret.expose()), (e.clone(), "whsec_second"));
    assert_eq!(b.list_webhooks(&tenant).await.unwrap(), vec![e.clone()]);

    let now = Utc::now();
    let deliveries: Vec<WebhookDelivery> = (0..3)
        .map(|i| WebhookDelivery::new(&tenant, e.id, "message.sent", format!("{{\"n\":{i}}}"), now))
        .collect();
    b.add_deliveries(&deliveries).await.unwrap();
    let first = b.list_deliveries(&tenant, e.id, 2, None).await.unwrap();
    assert_eq!(
        first.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![deliveries[2].id, deliveries[1].id]
    );
    let cursor = first.next_cursor.expect("a second page");
    let second = b
        .list_deliveries(&tenant, e.id, 2, Some(&cursor))
        .await
        .unwrap();
    assert_eq!(second.items, vec![deliveries[0].clone()]);
    assert_eq!(second.next_cursor, None);
    assert!(b
        .list_deliveries(&other, e.id, 10, None)
        .await
        .unwrap()
        .items
        .is_empty());

    let claimed = claim_all_of(b, &tenant).await;
    assert_eq!(claimed.len(), 3, "each due delivery is claimed once");
    assert!(claimed.iter().all(|d| d.next_attempt_at > Some(now)));
    assert!(
        claim_all_of(b, &tenant).await.is_empty(),
        "held by the lease"
    );

    let mut done = claimed[0].clone();
    done.record(DeliveryAttempt {
        at: Utc::now(),
        status_code: Some(204),
        duration_ms: 12,
        error: None,
    });
    b.update_delivery(&done).await.unwrap();
    let got = b
        .get_delivery(&tenant, e.id, done.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, done);
    assert_eq!(got.status, DeliveryState::Succeeded);
    assert!(b
        .get_delivery(&other, e.id, done.id)
        .await
        .unwrap()
        .is_none());

    assert!(!b.delete_webhook(&other, e.id).await.unwrap());
    assert!(b.delete_webhook(&tenant, e.id).await.unwrap());
    assert!(!b.delete_webhook(&tenant, e.id).await.unwrap());
    assert!(b.get_webhook(&tenant, e.id).await.unwrap().is_none());
    assert!(b
        .list_deliveries(&tenant, e.id, 10, None)
        .await
        .unwrap()
        .items
        .is_empty());
}

/// A send, marking a conversation read and starring a message each write the conversation as
/// they leave it to the endpoints subscribed to `conversation.updated`, in their own commit;
/// starring twice writes once.
pub async fn sends_reads_and_stars_write_conversation_updates<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let e = endpoint(vec![EventType::ConversationUpdated]);
    b.create_webhook(&tenant, &e, &Secret::new("whsec_c2VjcmV0"))
        .await
        .unwrap();
    let conversations = || async {
        let mut page = b
            .list_deliveries(&tenant, e.id, 50, None)
            .await
            .unwrap()
            .items;
        page.reverse();
        page.into_iter()
            .map(|d| {
                assert_eq!(d.event_type, "conversation.updated");
                let body: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
                body["data"]["conversation"].clone()
            })
            .collect::<Vec<_>>()
    };
    let (ours, contact) = (new_number(), new_number());
    let (sent, _) = b
        .create_outbound(
            &tenant,
            &outbound(&ours, &contact, "on our way", base_time()),
        )
        .await
        .unwrap();
    let got = conversations().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["last_message"]["id"], sent.id.to_string());
    b.apply_inbound(
        &tenant,
        &inbound(
            Channel::Sms,
            &contact,
            &ours,
            "thanks",
            secs(base_time(), 1),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let read = b
        .mark_read(&tenant, sent.conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.unread_count, 0);
    let (_, starred) = b
        .set_starred(&tenant, sent.id, true)
        .await
        .unwrap()
        .unwrap();
    b.set_starred(&tenant, sent.id, true)
        .await
        .unwrap()
        .unwrap();
    let got = conversations().await;
    assert_eq!(got.len(), 4, "send, inbound, read, one star: {got:?}");
    assert_eq!(got[1]["unread_count"], 1);
    assert_eq!(got[2], serde_json::to_value(&read).unwrap());
    assert_eq!(got[3], serde_json::to_value(&starred).unwrap());
    assert_eq!(got[3]["starred_count"], 1);
}

/// An inbound message, a send, a status change and an assignment each write their deliveries
/// (the WebSocket frame, under `data`) with the change, to the enabled endpoints that
/// subscribe to them; a redelivered inbound message writes none.
pub async fn changes_write_their_webhook_deliveries<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let all = endpoint(vec![
        EventType::MessageReceived,
        EventType::MessageSent,
        EventType::MessageStatus,
        EventType::ConversationUpdated,
        EventType::ConversationAssigned,
    ]);
    let status_only = endpoint(vec![EventType::MessageStatus]);
    let off = WebhookEndpoint {
        enabled: false,
        ..endpoint(vec![EventType::MessageReceived])
    };
    for e in [&all, &status_only, &off] {
        b.create_webhook(&tenant, e, &Secret::new("whsec_c2VjcmV0"))
            .await
            .unwrap();
    }
    let bodies = |page: Vec<WebhookDelivery>| -> Vec<(String, serde_json::Value)> {
        let mut out: Vec<_> = page
            .into_iter()
            .map(|d| {
                assert_eq!(d.status, DeliveryState::Pending);
                (d.event_type, serde_json::from_str(&d.payload).unwrap())
            })
            .collect();
        out.reverse();
        out
    };
    let tenant_ref = &tenant;
    let list = |id| async move {
        b.list_deliveries(tenant_ref, id, 50, None)
            .await
            .unwrap()
            .items
    };

    let m = inbound(
        Channel::Sms,
        &new_number(),
        &new_number(),
        "hi",
        base_time(),
    );
    let (msg, conv) = b.apply_inbound(&tenant, &m).await.unwrap().unwrap();
    assert_eq!(b.apply_inbound(&tenant, &m).await.unwrap(), None);
    let got = bodies(list(all.id).await);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "message.received");
    assert_eq!(got[0].1["type"], "message.received");
    assert_eq!(
        got[0].1["data"]["message"],
        serde_json::to_value(&msg).unwrap()
    );
    assert_eq!(got[1].0, "conversation.updated");
    assert_eq!(
        got[1].1["data"]["conversation"],
        serde_json::to_value(&conv).unwrap()
    );
    assert!(
        list(off.id).await.is_empty(),
        "a disabled endpoint gets none"
    );

    let sent = sent_message(b, &tenant, "SM-webhook-1").await;
    let delivered = status("SM-webhook-1", DeliveryStatus::Delivered, Utc::now());
    let StatusApplied::Changed(changed) = b.apply_status(&tenant, &delivered).await.unwrap() else {
        panic!("delivered must change a sent message");
    };
    b.apply_status(&tenant, &delivered).await.unwrap();
    let assignee = Assignee {
        id: Uuid::now_v7(),
        name: "Alex".into(),
    };
    let assigned = b
        .update_conversation(&tenant, conv.id, None, Some(Some(assignee)))
        .await
        .unwrap()
        .unwrap();
    let got = bodies(list(all.id).await);
    let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message.received",
            "conversation.updated",
            // The send's conversation (its last message).
            "conversation.updated",
            "message.sent",
            "message.status",
            "conversation.assigned"
        ]
    );
    assert_eq!(
        got[2].1["data"]["conversation"]["last_message"]["id"],
        sent.id.to_string()
    );
    assert_eq!(got[3].1["data"]["message"]["id"], sent.id.to_string());
    assert_eq!(got[3].1["data"]["message"]["status"], "sent");
    assert_eq!(
        got[4].1["data"]["message"],
        serde_json::to_value(&changed).unwrap()
    );
    assert_eq!(
        got[5].1["data"]["conversation"],
        serde_json::to_value(&assigned).unwrap()
    );
    let only = bodies(list(status_only.id).await);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].1["data"]["message"]["status"], "delivered");
    // Every delivery of the tenant's is due now: the dispatcher finds them.
    assert_eq!(claim_all_of(b, &tenant).await.len(), 7);
}

fn template_definition(body: &str) -> TemplateDefinition {
    serde_json::from_value(serde_json::json!({
        "channels": ["sms"],
        "variables": {"unit": {"type": "text", "max_length": 20}},
        "languages": {"en": {"body": body}},
        "default_language": "en",
    }))
    .expect("a definition")
}

/// A template is created once, read back with every version, listed by name per tenant, and
/// written only over the revision it was read at: of two writers holding the same revision,
/// the second gets a conflict and the first's version stays.
pub async fn templates_keep_versions_over_revisions<B: Backend>(b: &B) {
    let tenant = new_tenant_id("tpl");
    let other = new_tenant_id("tpl");
    let author = Actor {
        kind: ActorType::User,
        id: Uuid::now_v7().to_string(),
        name: "Ana".into(),
    };
    assert!(b.get_template(&tenant, "unit").await.unwrap().is_none());
    let first = StoredTemplate::first("unit", template_definition("Unit {{unit}}"), author.clone());
    let stored = b.put_template(&tenant, &first).await.unwrap();
    assert_eq!(stored.revision, 1);
    // A second creation of the same name is refused.
    assert!(matches!(
        b.put_template(&tenant, &first).await,
        Err(StoreError::Conflict(_))
    ));
    let mut read = b.get_template(&tenant, "unit").await.unwrap().unwrap();
    assert_eq!(read, stored);

    // Two writers read revision 1; the first one's step wins.
    let mut rival = read.clone();
    let at = base_time();
    read.apply(&Step::Submit, &author, at).unwrap();
    let submitted = b.put_template(&tenant, &read).await.unwrap();
    assert_eq!(submitted.revision, 2);
    rival.push_draft(
        template_definition("Unit {{unit}}!"),
        author.clone(),
        base_time(),
    );
    assert!(matches!(
        b.put_template(&tenant, &rival).await,
        Err(StoreError::Conflict(_))
    ));
    let read = b.get_template(&tenant, "unit").await.unwrap().unwrap();
    assert_eq!(read, submitted);
    assert_eq!(read.versions.len(), 1);
    assert_eq!(read.versions[0].submitted_at, Some(at));

    let second = StoredTemplate::first("arrival", template_definition("{{unit}} here"), author);
    b.put_template(&tenant, &second).await.unwrap();
    let names: Vec<String> = b
        .list_templates(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["arrival", "unit"]);
    assert!(b.list_templates(&other).await.unwrap().is_empty());
    assert!(b.get_template(&other, "unit").await.unwrap().is_none());
}

/// Meta's status is kept per template name and language, replaced by a newer one, and is
/// the tenant's own.
pub async fn meta_template_statuses_per_language<B: Backend>(b: &B) {
    let tenant = new_tenant_id("meta");
    let at = base_time();
    let status = |name: &str, language: &str, status: MetaStatus| MetaTemplateStatus {
        name: name.into(),
        language: language.into(),
        status,
        updated_at: at,
    };
    assert!(b
        .meta_statuses(&tenant, "unit_dispatched")
        .await
        .unwrap()
        .is_empty());
    for s in [
        status("unit_dispatched", "en", MetaStatus::Pending),
        status("unit_dispatched", "es", MetaStatus::Approved),
        status("unit_dispatched_2", "en", MetaStatus::Rejected),
        status("unit_dispatched", "en", MetaStatus::Paused),
    ] {
        b.put_meta_status(&tenant, &s).await.unwrap();
    }
    let mut got = b.meta_statuses(&tenant, "unit_dispatched").await.unwrap();
    got.sort_by(|a, b| a.language.cmp(&b.language));
    assert_eq!(
        got,
        [
            status("unit_dispatched", "en", MetaStatus::Paused),
            status("unit_dispatched", "es", MetaStatus::Approved),
        ]
    );
    assert!(b
        .meta_statuses(&new_tenant_id("meta"), "unit_dispatched")
        .await
        .unwrap()
        .is_empty());
}

// ---- scheduled and paced sends ---------------------------------------------------------

/// A message with a `send_at` is `scheduled`: not claimable, not stranded, released into the
/// outbox once due (only once, and not before its time is near), and cancelable until sending
/// begins; a queued message can be canceled until it is first claimed.
pub async fn scheduled_messages_are_released_when_due_and_canceled<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let now = Utc::now();
    let schedule = |send_at: DateTime<Utc>, priority| {
        let mut m = outbound(&new_number(), &new_number(), "later", now);
        m.send_at = Some(DateTime::from_timestamp_millis(send_at.timestamp_millis()).unwrap());
        m.priority = priority;
        m
    };
    let (soon, _) = b
        .create_outbound(
            &tenant,
            &schedule(now + TimeDelta::seconds(2), Priority::Bulk),
        )
        .await
        .unwrap();
    let (later, _) = b
        .create_outbound(
            &tenant,
            &schedule(now + TimeDelta::hours(1), Priority::High),
        )
        .await
        .unwrap();
    let (doomed, _) = b
        .create_outbound(
            &tenant,
            &schedule(now + TimeDelta::hours(1), Priority::Normal),
        )
        .await
        .unwrap();
    assert_eq!(soon.status, DeliveryStatus::Scheduled);
    assert_eq!(soon.priority, Priority::Bulk);
    let read = b.get_message(&tenant, later.id).await.unwrap().unwrap();
    assert_eq!(read.send_at, later.send_at);
    assert_eq!(read.priority, Priority::High);
    assert_eq!(read.status, DeliveryStatus::Scheduled);

    assert!(
        b.claim_delivery(&tenant, soon.id, LEASE)
            .await
            .unwrap()
            .is_none(),
        "a scheduled message is not sent before it is released"
    );
    let stranded: Vec<Uuid> = b
        .stranded_outbound(now + TimeDelta::hours(2), 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(t, _)| *t == tenant)
        .map(|(_, id)| id)
        .collect();
    assert!(stranded.is_empty(), "scheduled messages are not stranded");

    let ours = &tenant;
    let released = |until| async move {
        b.release_scheduled(until, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.tenant_id.as_ref() == Some(ours))
            .collect::<Vec<_>>()
    };
    let first = released(now + TimeDelta::seconds(10)).await;
    assert_eq!(
        first.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![soon.id]
    );
    assert_eq!(first[0].status, DeliveryStatus::Queued);
    assert_eq!(first[0].priority, Priority::Bulk);
    assert_eq!(
        first[0].events.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![DeliveryStatus::Scheduled, DeliveryStatus::Queued]
    );
    assert!(
        released(now + TimeDelta::seconds(10)).await.is_empty(),
        "released once"
    );
    // Released ahead of its time (the AWS sweeper looks a minute ahead): not stranded
    // before its send_at, claimable by its job.
    let stranded_soon = |before| is_stranded(b, ours, soon.id, before);
    assert!(!stranded_soon(soon.send_at.unwrap() - TimeDelta::milliseconds(500)).await);
    assert!(stranded_soon(soon.send_at.unwrap() + TimeDelta::seconds(1)).await);

    let canceled = b.cancel_message(&tenant, doomed.id).await.unwrap().unwrap();
    assert_eq!(canceled.status, DeliveryStatus::Canceled);
    assert_eq!(
        canceled.events.last().map(|e| e.status),
        Some(DeliveryStatus::Canceled)
    );
    assert_eq!(
        b.get_message(&tenant, doomed.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        DeliveryStatus::Canceled
    );
    assert!(matches!(
        b.cancel_message(&tenant, doomed.id).await,
        Err(StoreError::Conflict(_))
    ));
    let rest = released(now + TimeDelta::hours(2)).await;
    assert_eq!(
        rest.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![later.id],
        "a canceled message is never released"
    );

    // Queued and never claimed: cancelable. Claimed once: sending has begun.
    let cancel_queued = b.cancel_message(&tenant, soon.id).await.unwrap().unwrap();
    assert_eq!(cancel_queued.status, DeliveryStatus::Canceled);
    b.claim_delivery(&tenant, later.id, LEASE)
        .await
        .unwrap()
        .expect("released: claimable");
    assert!(matches!(
        b.cancel_message(&tenant, later.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(b
        .cancel_message(&tenant, Uuid::now_v7())
        .await
        .unwrap()
        .is_none());
    assert!(
        b.cancel_message(&new_tenant_id("other"), doomed.id)
            .await
            .unwrap()
            .is_none(),
        "another tenant's message is unknown"
    );
}

/// Booked sends from a number are `interval` apart, also when booked at once by several
/// workers; another number and a number idle long enough are free now.
pub async fn paced_numbers_book_slots_apart<B: Backend>(b: &B) {
    let number = new_number();
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let step = Duration::from_millis(100);
    let ms = |n: i64| now + TimeDelta::milliseconds(n);
    assert_eq!(b.book_send_slot(&number, step, now).await.unwrap(), now);
    assert_eq!(b.book_send_slot(&number, step, now).await.unwrap(), ms(100));
    assert_eq!(
        b.book_send_slot(&number, step, ms(50)).await.unwrap(),
        ms(200)
    );
    assert_eq!(
        b.book_send_slot(&new_number(), step, now).await.unwrap(),
        now
    );
    // Idle past its next free time: free at once.
    assert_eq!(
        b.book_send_slot(&number, step, ms(1000)).await.unwrap(),
        ms(1000)
    );

    let busy = new_number();
    let bookings =
        futures::future::join_all((0..8).map(|_| b.book_send_slot(&busy, step, now))).await;
    let mut slots: Vec<DateTime<Utc>> = bookings.into_iter().map(|r| r.unwrap()).collect();
    slots.sort();
    assert_eq!(slots, (0..8).map(|i| ms(i * 100)).collect::<Vec<_>>());
}

/// A paced message given back before its slot keeps its retry budget (the attempt is not
/// counted) and is not stranded before the slot.
pub async fn deferred_deliveries_keep_their_attempts<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (m, _) = b
        .create_outbound(
            &tenant,
            &outbound(&new_number(), &new_number(), "paced", Utc::now()),
        )
        .await
        .unwrap();
    let claim = b
        .claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.attempt, 1);
    let slot = Utc::now() + TimeDelta::seconds(60);
    b.defer_delivery(&tenant, m.id, slot).await.unwrap();
    let (ours, id) = (&tenant, m.id);
    let stranded = |before| is_stranded(b, ours, id, before);
    assert!(
        !stranded(Utc::now() + TimeDelta::seconds(30)).await,
        "before its slot"
    );
    assert!(
        stranded(slot + TimeDelta::seconds(1)).await,
        "after its slot"
    );
    let again = b
        .claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 1, "the deferred attempt is not counted");
    assert_eq!(again.message.status, DeliveryStatus::Queued);
}

/// A message that failed on WhatsApp moves to SMS as a new attempt of the same message (from
/// the tenant's SMS number, with a fresh retry budget, the step in its history), once however
/// many triggers race; the first attempt's late delivery receipt still finds it and is
/// recorded, its late failure changes nothing.
pub async fn messages_fall_back_to_their_next_channel<B: Backend>(b: &B) {
    let tenant = new_tenant_id("t");
    let (whatsapp_from, sms_from) = (new_number(), new_number());
    let mut new = outbound(
        &whatsapp_from,
        &new_number(),
        "Unit 12 is on its way",
        Utc::now(),
    );
    new.channel = Channel::Whatsapp;
    new.fallback = vec![FallbackStep {
        channel: Channel::Sms,
        after_secs: 300,
    }];
    let (m, _) = b.create_outbound(&tenant, &new).await.unwrap();
    assert_eq!(m.fallback, new.fallback);
    b.claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    b.record_sent(&tenant, m.id, &sent("wamid.first"), None)
        .await
        .unwrap();
    let mut refused = status("wamid.first", DeliveryStatus::Failed, Utc::now());
    refused.error_code = Some("131047".into());
    assert!(matches!(
        b.apply_status(&tenant, &refused).await.unwrap(),
        StatusApplied::Changed(_)
    ));

    let moved = b
        .fall_back_message(
            &tenant,
            m.id,
            1,
            &sms_from,
            "131047 re-engagement window closed",
        )
        .await
        .unwrap()
        .expect("moved to SMS");
    assert_eq!(moved.channel, Channel::Sms);
    assert_eq!(moved.from, sms_from);
    assert_eq!(moved.status, DeliveryStatus::Queued);
    assert!(moved.fallback.is_empty());
    assert_eq!(moved.provider_message_id, None);
    let note = moved.events.last().and_then(|e| e.note.clone()).unwrap();
    assert!(note.starts_with("fallback from whatsapp to sms"), "{note}");
    assert_eq!(b.get_message(&tenant, m.id).await.unwrap().unwrap(), moved);
    assert!(
        b.fall_back_message(&tenant, m.id, 1, &sms_from, "again")
            .await
            .unwrap()
            .is_none(),
        "a second trigger finds it moved on"
    );

    let claim = b
        .claim_delivery(&tenant, m.id, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.attempt, 1, "a fresh retry budget");
    b.record_sent(&tenant, m.id, &sent("SM-second"), None)
        .await
        .unwrap();
    // The first attempt's receipts: a late failure changes nothing, a late delivery counts.
    assert!(matches!(
        b.apply_status(&tenant, &refused).await.unwrap(),
        StatusApplied::Unchanged(_)
    ));
    let late = status("wamid.first", DeliveryStatus::Delivered, Utc::now());
    let StatusApplied::Changed(delivered) = b.apply_status(&tenant, &late).await.unwrap() else {
        panic!("the late delivery is recorded");
    };
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.channel, Channel::Sms);
    assert!(b
        .fall_back_message(&tenant, m.id, 0, &sms_from, "none left")
        .await
        .unwrap()
        .is_none());
}
