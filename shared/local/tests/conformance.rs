//! The shared storage conformance suite, against a fresh file-backed SQLite database per check.

use omni_local::{MasterKey, SqliteBackend};
use tempfile::TempDir;

/// A new database in its own directory; the directory lives as long as the returned guard.
fn fresh() -> (TempDir, SqliteBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("omni.db"), MasterKey::generate()).unwrap();
    (dir, backend)
}

macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (_dir, backend) = fresh();
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

/// The whole suite on one shared backend (checks must not depend on an empty store), and on
/// the in-memory flavour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_backend_and_in_memory() {
    let (_dir, backend) = fresh();
    omni_conformance::run_all(&backend).await;
    let memory = SqliteBackend::open_in_memory(MasterKey::generate()).unwrap();
    omni_conformance::run_all(&memory).await;
}
