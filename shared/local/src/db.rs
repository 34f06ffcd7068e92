//! Connections, pragmas, migrations, and the conversions between rows and records.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use omni_core::ports::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Schema migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_routing.sql"),
    include_str!("../migrations/0003_message_parts.sql"),
    include_str!("../migrations/0004_whatsapp_templates.sql"),
    include_str!("../migrations/0005_email_subject.sql"),
    include_str!("../migrations/0006_retry_at.sql"),
    include_str!("../migrations/0007_api_key_listing.sql"),
    include_str!("../migrations/0008_team.sql"),
    include_str!("../migrations/0009_livechat.sql"),
    include_str!("../migrations/0010_waba_routes.sql"),
    include_str!("../migrations/0011_message_log.sql"),
    include_str!("../migrations/0012_webhook_log.sql"),
    include_str!("../migrations/0013_auto_replies.sql"),
    include_str!("../migrations/0014_event_webhooks.sql"),
    include_str!("../migrations/0015_templates.sql"),
    include_str!("../migrations/0016_livechat_gaps.sql"),
    include_str!("../migrations/0017_scheduled_sends.sql"),
];

/// Reader connections for a file database: enough for the API and the workers to read while
/// the single writer commits.
const READERS: usize = 4;

/// How long a statement waits for a lock another connection holds before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most writes committed together in one transaction (one fsync).
const MAX_BATCH: usize = 512;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Bytes of WAL file kept after a checkpoint resets it (the rest is truncated).
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The writer's page cache, in KiB (SQLite's default is 2 MiB). The updater touches pages
/// all over the conversations and the messages-by-conversation index; with the default cache
/// a busy database's working set no longer fits, and every miss is a read of the file.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Prepared statements kept per connection: more than the distinct statements Omni runs, so
/// none is parsed twice.
const STATEMENT_CACHE: usize = 128;

/// `execute` and `query_row` through the connection's statement cache. The writer runs the
/// same few statements thousands of times a second; parsing each one every time was about a
/// sixth of its work.
pub(crate) trait Cached {
    /// Runs one statement, prepared once per connection.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;

    /// The first row of a query, prepared once per connection.
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// A submitted write, run by the writer thread; it returns what to do once the batch's commit
/// succeeded or failed.
type Work = Box<dyn FnOnce(&Connection) -> Finish + Send>;
type Finish = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// One writer thread that commits writes in groups (SQLite admits one writer at a time anyway:
/// while one commit's fsync runs, the next writes queue up and share the following one), and a
/// few readers that WAL lets run alongside it.
pub(crate) struct Pool {
    writer: Arc<Mutex<Connection>>,
    /// `None` only while dropping.
    submit: Option<mpsc::Sender<Work>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Empty for an in-memory database: the writer's connection is the only view of it.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// File databases only: dropping the sender stops the checkpointer.
    checkpointer: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Pool {
    /// Opens (creating if needed) and migrates the database file.
    pub(crate) fn open(path: &Path) -> StoreResult<Self> {
        owner_only(path)?;
        let mut writer = Connection::open(path).map_err(db)?;
        configure(&writer)?;
        // WAL lets readers work during a write. The promise to carriers is "a 2xx means it
        // is committed; kill -9 loses nothing acknowledged". In WAL mode synchronous=NORMAL
        // already keeps every commit across a process crash (kill -9), but a power loss or
        // OS crash may lose the last commits, and a carrier we answered 2xx never redelivers
        // them. FULL fsyncs the WAL on every commit, which closes that gap for the price of
        // one fsync per write: negligible at dispatch-centre volumes.
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "could not switch the database to WAL (journal_mode={mode})"
            )));
        }
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        // Left to itself, the commit that grows the WAL past its threshold also copies it into
        // the database and fsyncs that, stalling every write in its group by tens of
        // milliseconds. A checkpointer thread does it beside the writer instead.
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db)?;
        writer
            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(db)?;
        writer
            .pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(db)?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(db)?;
                configure(&reader)?;
                // Readers never write: a bug that tries fails instead of bypassing the writer.
                reader.pragma_update(None, "query_only", true).map_err(db)?;
                Ok(Mutex::new(reader))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let checkpoints = Connection::open(path).map_err(db)?;
        configure(&checkpoints)?;
        let mut pool = Pool::new(writer, readers);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("omni-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoints, &stopped))
            .expect("spawn the SQLite checkpoint thread");
        pool.checkpointer = Some((stop, thread));
        Ok(pool)
    }

    /// A private in-memory database (tests): one connection serves reads and writes, so
    /// every read sees every commit.
    pub(crate) fn open_in_memory() -> StoreResult<Self> {
        let mut conn = Connection::open_in_memory().map_err(db)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(Pool::new(conn, Vec::new()))
    }

    fn new(writer: Connection, readers: Vec<Mutex<Connection>>) -> Self {
        let writer = Arc::new(Mutex::new(writer));
        let (submit, queue) = mpsc::channel();
        let conn = writer.clone();
        // The thread ends when the pool (the only sender) is dropped.
        let writer_thread = std::thread::Builder::new()
            .name("omni-sqlite-writer".into())
            .spawn(move || write_loop(&conn, &queue))
            .expect("spawn the SQLite writer thread");
        Pool {
            writer,
            submit: Some(submit),
            writer_thread: Some(writer_thread),
            readers,
            next_reader: AtomicUsize::new(0),
            checkpointer: None,
        }
    }

    /// Queues `f` for the writer thread, which runs it in a savepoint of the next group
    /// transaction: its changes are rolled back alone when it returns `Err`, and its result is
    /// delivered only once the group has committed, so an `Ok` is durable and a change is
    /// never half-written.
    pub(crate) fn submit<T, F>(&self, f: F) -> oneshot::Receiver<StoreResult<T>>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit_to_writer(f, true)
    }

    /// [`submit`](Self::submit) for a write that is a single statement: it runs without a
    /// savepoint of its own, since SQLite undoes a failing statement by itself, and a
    /// savepoint copies every page the write touches (the intake's two writes per webhook
    /// are such statements). `f` may fail only before or in that statement, never after a
    /// change: an `Err` must leave nothing written.
    pub(crate) fn submit_statement<T, F>(&self, f: F) -> oneshot::Receiver<StoreResult<T>>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit_to_writer(f, false)
    }

    fn submit_to_writer<T, F>(&self, f: F, savepoint: bool) -> oneshot::Receiver<StoreResult<T>>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, received) = oneshot::channel();
        let work: Work = Box::new(move |conn: &Connection| {
            let result = if savepoint {
                in_savepoint(conn, f)
            } else {
                caught(conn, f)
            };
            Box::new(move |committed: Result<(), &StoreError>| {
                let _ = reply.send(match committed {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                });
            })
        });
        // If the writer is gone the work is dropped with its reply: the caller hears so.
        if let Some(submit) = &self.submit {
            let _ = submit.send(work);
        }
        received
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on a reader.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Transaction) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = if self.readers.is_empty() {
            lock(&self.writer)
        } else {
            let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
            lock(&self.readers[i])
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(db)?;
        f(&tx)
        // Dropping the transaction rolls back, which for a read just ends the snapshot.
    }
}

impl Drop for Pool {
    /// Stops the writer after the writes already queued, so the database is closed (and its
    /// WAL checkpointed) when the pool is gone.
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpointer.take() {
            drop(stop);
            let _ = thread.join();
        }
        self.submit = None;
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies the WAL into the database every [`CHECKPOINT_EVERY`] until the pool drops. A
/// passive checkpoint never blocks the writer or the readers; what it cannot copy yet (frames
/// a reader still needs) waits for the next round.
fn checkpoint_loop(conn: &Connection, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying on the next round");
        }
    }
}

/// Runs `f` in a savepoint: rolled back alone on `Err` (or a panic, which must not take the
/// writer thread down).
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.exec("SAVEPOINT omni_write", []).map_err(db)?;
    let result = caught(conn, f);
    if result.is_err() {
        conn.exec("ROLLBACK TO omni_write", []).map_err(db)?;
    }
    conn.exec("RELEASE omni_write", []).map_err(db)?;
    result
}

/// Runs `f`, turning a panic (which must not take the writer thread down) into an error.
fn caught<T>(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Backend("a write panicked".into())))
}

/// The writer thread: takes every write waiting (up to [`MAX_BATCH`]), runs them in one
/// transaction, commits once, then answers each.
fn write_loop(conn: &Mutex<Connection>, queue: &mpsc::Receiver<Work>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let conn = lock(conn);
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the batch tells every caller its write did not happen.
            tracing::error!(error = %e, "cannot begin a write transaction");
            continue;
        }
        let finishes: Vec<Finish> = batch.into_iter().map(|work| work(&conn)).collect();
        let committed = conn.execute_batch("COMMIT").map_err(db);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        drop(conn);
        for finish in finishes {
            finish(committed.as_ref().map(|_| ()));
        }
    }
}

/// A panic in another thread while it held a connection leaves it usable: its transaction
/// was rolled back when the guard dropped. So a poisoned lock is taken over, not propagated.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes the database file (and a WAL and shared-memory file left by an earlier process)
/// readable by the owner only, creating it so if it does not exist: contacts' numbers and
/// texts are in it. SQLite gives the `-wal` and `-shm` files it creates the mode of the
/// database file, so they follow.
fn owner_only(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = Path::new(&name);
            match std::fs::metadata(file) {
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    Ok(())
}

fn configure(conn: &Connection) -> StoreResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
    // Savepoints (one per write, see `Pool::submit`) copy the pages they change into a
    // statement journal, which by default spills to a temporary file past 64 KiB: a file
    // created, written and deleted for every large group. Kept in memory, it is a copy.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db)?;
    Ok(())
}

/// Applies the migrations not yet applied, each in its own transaction with its version bump.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let applied: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(db)?
        .try_into()
        .unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {applied} is newer than this build ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", i + 1).map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

/// Maps a SQLite error. Uniqueness violations become [`StoreError::Conflict`]; the rest are
/// backend errors. SQLite's messages name tables and columns, never bound values, so no
/// payload or secret leaks through them.
pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(code, _)
            if code.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || code.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// A stored value that does not parse: the row is corrupt (or from a newer build).
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt stored value: {what}"))
}

/// Fixed-width RFC 3339 UTC (nanoseconds, `Z`): text order is time order, and the instant
/// round-trips exactly.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Reads a timestamp written by [`ts`].
pub(crate) fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt("timestamp"))
}

/// Parses a stored enum, id or number.
pub(crate) fn parse<T: FromStr>(s: &str, what: &str) -> StoreResult<T> {
    s.parse().map_err(|_| corrupt(what))
}

/// Unix milliseconds, for the job queue's visibility times.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// `now - d`, or the earliest time when that is before it.
pub(crate) fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `now + d`, saturating instead of overflowing on absurd durations.
pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An opaque page cursor: the sort key and id of the last item returned.
pub(crate) fn encode_cursor(key: &str, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{key}|{id}"))
}

/// Reads a cursor made by [`encode_cursor`]; anything else is [`StoreError::InvalidCursor`].
pub(crate) fn decode_cursor(cursor: &str) -> StoreResult<(String, Uuid)> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    let (key, id) = text.split_once('|').ok_or(StoreError::InvalidCursor)?;
    let at = parse_ts(key).map_err(|_| StoreError::InvalidCursor)?;
    let id = Uuid::parse_str(id).map_err(|_| StoreError::InvalidCursor)?;
    // Re-encode the time so a cursor edited to another valid spelling still compares right.
    Ok((ts(at), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool on a new in-memory database with one table, created by `schema`.
    async fn pool_with(schema: &'static str) -> Pool {
        let pool = Pool::open_in_memory().unwrap();
        pool.submit(move |c| c.execute_batch(schema).map_err(db))
            .await
            .unwrap()
            .unwrap();
        pool
    }

    /// Every row `sql` selects, as `T`.
    fn rows<T>(
        pool: &Pool,
        sql: &str,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        pool.read(|c| {
            let mut stmt = c.prepare(sql).map_err(db)?;
            let rows = stmt.query_map([], row).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)
        })
        .unwrap()
    }

    /// Writes queued together commit together, but each fails alone: a failed or panicking
    /// write rolls back only its own changes, and the writer goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_isolates_each_write() {
        let pool = Arc::new(pool_with("CREATE TABLE t (n INTEGER PRIMARY KEY)").await);
        let writes = (0..200).map(|n: i64| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.submit(move |c| {
                    c.execute("INSERT INTO t (n) VALUES (?1)", [n])
                        .map_err(db)?;
                    match n % 10 {
                        3 => Err(StoreError::Conflict("refused".into())),
                        7 => panic!("a bug in one write"),
                        _ => Ok(n),
                    }
                })
                .await
                .unwrap()
            })
        });
        let results = join_in_order(writes).await;
        for (n, result) in results.iter().enumerate() {
            assert_eq!(
                result.is_ok(),
                n % 10 != 3 && n % 10 != 7,
                "write {n}: {result:?}"
            );
        }
        let stored = rows(&pool, "SELECT n FROM t ORDER BY n", |r| r.get::<_, i64>(0));
        let expected: Vec<i64> = (0..200).filter(|n| n % 10 != 3 && n % 10 != 7).collect();
        assert_eq!(stored, expected);
    }

    /// A single-statement write has no savepoint of its own: one that fails still leaves
    /// nothing behind, and the writes of its group commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_statement_fails_alone_without_a_savepoint() {
        let pool = pool_with("CREATE TABLE t (n INTEGER PRIMARY KEY, m INTEGER UNIQUE)").await;
        let insert = |n: i64, m: i64| {
            pool.submit_statement(move |c| {
                c.exec("INSERT INTO t (n, m) VALUES (?1, ?2)", [n, m])
                    .map_err(db)
            })
        };
        // The second passes the primary key and fails on the unique column.
        let (first, clash, last) = (insert(1, 10), insert(2, 10), insert(3, 30));
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert!(matches!(clash.await.unwrap(), Err(StoreError::Conflict(_))));
        assert_eq!(last.await.unwrap().unwrap(), 1);
        let stored = rows(&pool, "SELECT n, m FROM t ORDER BY n", |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        });
        assert_eq!(stored, vec![(1, 10), (3, 30)]);
    }

    async fn join_in_order<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }

    #[test]
    fn timestamps_sort_as_text_and_round_trip() {
        let a = DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        let b = DateTime::from_timestamp(1_700_000_000, 40_000_000).unwrap();
        assert!(ts(a) < ts(b));
        assert_eq!(ts(a).len(), ts(b).len());
        assert_eq!(parse_ts(&ts(a)).unwrap(), a);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = ts(Utc::now());
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(&at, id)).unwrap(), (at, id));
        for bad in ["", "!!", "bm9waXBl", &URL_SAFE_NO_PAD.encode("2024|x")] {
            assert!(
                matches!(decode_cursor(bad), Err(StoreError::InvalidCursor)),
                "{bad}"
            );
        }
    }
}
