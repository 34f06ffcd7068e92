//! The shared storage conformance suite against the AWS backend, over the wire to the moto
//! emulator (`AWS_ENDPOINT_URL`; `scripts/test` starts it). Each check gets its own table and
//! queues.

use omni_aws::provision::{create_resources, emulator_config};
use omni_aws::AwsBackend;
use uuid::Uuid;

async fn fresh() -> AwsBackend {
    let config = emulator_config().await;
    let prefix = format!("omni-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let resources = create_resources(&config, &prefix)
        .await
        .expect("create the table and queues in the emulator");
    AwsBackend::new(&config, resources)
}

macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let backend = fresh().await;
            omni_conformance::$check(&backend).await;
        }
    )+};
}

conformance!(
    tenants_keep_created_at,
    numbers_route_and_conflict,
    api_keys_resolve_by_hash,
    routing_round_trips_per_tenant,
    credentials_round_trip_per_provider,
    inbound_is_applied_once,
    inbound_threads_and_unread_counts,
    status_updates_merge_monotonically,
    create_outbound_is_idempotent,
    claims_are_exclusive_and_counted,
    delivery_outcomes_are_recorded,
    failover_sends_record_sender_and_note,
    stranded_outbound_is_found,
    conversations_page_newest_first,
    messages_page_newest_first,
    starring_keeps_counts_exact,
    opt_outs_are_recorded,
    raw_webhooks_dedupe_and_expire,
    tenants_are_isolated,
    queue_accepts_jobs,
);

/// The whole suite on one shared backend: checks must not depend on an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_backend() {
    omni_conformance::run_all(&fresh().await).await;
}
