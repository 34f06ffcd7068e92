//! The shared storage conformance suite, against a fresh file-backed SQLite database per check.

use omni_local::{MasterKey, SqliteBackend};
use tempfile::TempDir;

/// A new database in its own directory; the directory lives as long as the returned guard.
fn fresh() -> (TempDir, SqliteBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("omni.db"), MasterKey::generate()).unwrap();
    (dir, backend)
}

omni_conformance::conformance_tests!((_dir, backend) = fresh(); &backend);

/// The whole suite on one shared backend (checks must not depend on an empty store), and on
/// the in-memory flavour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_backend_and_in_memory() {
    let (_dir, backend) = fresh();
    omni_conformance::run_all(&backend).await;
    let memory = SqliteBackend::open_in_memory(MasterKey::generate()).unwrap();
    omni_conformance::run_all(&memory).await;
}
