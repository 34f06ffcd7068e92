//! Omni's self-hosted backend: the ports of [`omni_core::ports`] on one SQLite database.
//!
//! [`SqliteBackend`] implements [`TenantStore`], [`SecretStore`], [`MessageStore`] and
//! [`Queue`]. Every change that touches several rows runs in one `BEGIN IMMEDIATE`
//! transaction on the single writer connection, so concurrent callers are serialised and
//! nothing is ever half-written. Tenant credentials are encrypted with a [`MasterKey`].
//!
//! [`TenantStore`]: omni_core::ports::TenantStore
//! [`SecretStore`]: omni_core::ports::SecretStore
//! [`MessageStore`]: omni_core::ports::MessageStore
//! [`Queue`]: omni_core::ports::Queue

#![warn(missing_docs)]

use std::path::Path;
use std::sync::Arc;

use omni_core::ports::{StoreError, StoreResult};
use rusqlite::Connection;
use tokio::sync::Notify;

mod cache;
mod db;
mod key;
mod messages;
mod parts;
mod queue;
mod team;
mod templates;
mod tenants;
mod uploads;
mod waba;
mod webhooks;

pub use key::{MasterKey, MASTER_KEY_ENV};
pub use queue::{AppliedInbound, LeasedJob, TakenJobs};
pub use uploads::DirUploads;

/// The SQLite backend. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct SqliteBackend {
    pool: Arc<db::Pool>,
    key: Arc<MasterKey>,
    jobs: Arc<Notify>,
    urgent: Arc<Notify>,
    routes: Arc<cache::RouteCache>,
    credentials: Arc<cache::CredentialCache>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend").finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path, key: MasterKey) -> Result<Self, StoreError> {
        Ok(Self::new(db::Pool::open(path)?, key))
    }

    /// A private, empty in-memory database, gone when the last clone is dropped (tests).
    pub fn open_in_memory(key: MasterKey) -> Result<Self, StoreError> {
        Ok(Self::new(db::Pool::open_in_memory()?, key))
    }

    fn new(pool: db::Pool, key: MasterKey) -> Self {
        SqliteBackend {
            pool: Arc::new(pool),
            key: Arc::new(key),
            jobs: Arc::new(Notify::new()),
            urgent: Arc::new(Notify::new()),
            routes: Arc::default(),
            credentials: Arc::default(),
        }
    }

    /// Notified on every enqueue, so the local job runner sleeps until there is work (or
    /// until its own timer fires, for delayed jobs).
    pub fn job_notify(&self) -> Arc<Notify> {
        self.jobs.clone()
    }

    /// Notified on every enqueue of a high-priority job, so the runner takes it at once even
    /// with every slot busy ([`SqliteBackend::lease_urgent_jobs`]).
    pub fn urgent_notify(&self) -> Arc<Notify> {
        self.urgent.clone()
    }

    /// Runs `f` on the writer thread, in the next group commit (see [`db::Pool::submit`]).
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        committed(self.pool.submit(f)).await
    }

    /// [`write`](Self::write) of a single statement, without a savepoint of its own (see
    /// [`db::Pool::submit_statement`]): `f` must fail only before or in that statement.
    async fn write_statement<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        committed(self.pool.submit_statement(f)).await
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.read(|tx| f(tx)))
            .await
            .map_err(task_failed)?
    }
}

/// A submitted write's outcome, once its group has committed (or failed).
async fn committed<T>(reply: tokio::sync::oneshot::Receiver<StoreResult<T>>) -> StoreResult<T> {
    reply
        .await
        .map_err(|_| StoreError::Backend("the write was not committed".into()))?
}

fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("storage task failed: {e}"))
}
