//! SQLite on rusqlite: one writer thread that group-commits every write, a few reader
//! connections used on the calling thread, a checkpointer, and the migrations.
//!
//! sqlx runs each SQLite connection on a thread of its own and sends every statement and row
//! across a channel; for the small indexed queries behind user requests those hops cost more than
//! SQLite itself (profiles of the turn workload: most time in futex wake-ups, SQLite ~2 %). So:
//!
//! - **Reads** run on the calling thread, on a connection taken from a small pool. They are indexed
//!   lookups bounded by a `LIMIT` that take tens of microseconds, less than a hop to another thread.
//! - **Writes**, every one of them (user data and admin plane alike), are transactions queued to
//!   one writer thread. It takes every transaction queued while the previous group committed, runs
//!   each inside its own savepoint (a failing one is rolled back alone), and commits once. With
//!   `synchronous = FULL` each commit is on disk before any of its writers is answered, and one
//!   fsync serves the whole group. One queue means no writer waits on SQLite's busy handler (which
//!   polls) and none can starve the others: they are served in order.
//! - A transaction's body is the same `async` code as on PostgreSQL, run here by polling it once:
//!   every `Tx` call on SQLite completes at once, so a body that awaits anything else is a bug and
//!   fails (rolled back) instead of stalling the writer.
//! - **Checkpoints** (copying the WAL back into the database, with an fsync) run on a thread of their
//!   own, never inside a commit.
//! - **Locking** is SQLite's own by default, so other processes (the `sqlite3` shell, a backup or
//!   replication tool) can open the file while the service runs. [`Locking::Exclusive`] has the
//!   process hold the file alone instead (SQLite's `unix-excl` VFS): the connections inside it then
//!   coordinate in memory, where every read transaction otherwise takes and drops a lock on the
//!   `-shm` file with `fcntl`, under a mutex all of them share.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::migrations::{MIGRATIONS, Migration};
use super::row::{FromRow, Row};
use super::{StoreError, StoreResult, Transaction, Tx, constraint_conflict};

/// How long a connection waits for SQLite's lock (only other processes can hold it).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// The most transactions committed together.
const MAX_GROUP: usize = 256;
/// Page cache per connection (KiB). The OS caches the file too; a small cache keeps memory low.
const CACHE_KIB: i64 = 1024;
/// The writer nudges the checkpointer at most this often: the WAL then holds about this much
/// time's worth of writes. A longer interval let the WAL grow enough under load to slow every
/// read down (readers look pages up in the WAL index first): 1 s measured ~20 % fewer turns.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The writer runs its maintenance statements at most this often while writes arrive.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);
/// The checkpointer also runs this often when nothing nudges it.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(5);
/// The WAL file is cut back to this size after a checkpoint has emptied it.
const WAL_LIMIT_BYTES: i64 = 64 << 20;

/// Run by the writer about once a second while writes arrive. Every memory insert leaves a small
/// segment in the full-text index, and a search reads every segment: merging up to 64 pages per
/// round (only levels with enough segments, so work stays proportional to what was written) keeps
/// searches from slowing down as memories arrive one at a time (measured: 107 µs → 38 µs per
/// search with 300 memories written one by one).
pub const MAINTENANCE: &[&str] = &["INSERT INTO memories_fts (memories_fts, rank) VALUES ('merge', 64)"];

/// The writer's connection. Only the writer thread uses it; the mutex (never contended) lets a
/// transaction's `Tx` hold it across the `await`s of its body.
pub(super) type WriterConnection = Arc<Mutex<Connection>>;

/// How the service shares its database file with other processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Locking {
    /// SQLite's file locks: any process may open the file too.
    #[default]
    Shared,
    /// This process alone opens the file, from opening it until it exits; another process (a
    /// second instance, `confidant admin`, the `sqlite3` shell, a backup tool) is told the
    /// database is locked.
    /// Profiled under the list load (`perf`), the `-shm` locks of the shared mode cost 7 % of the
    /// service's CPU: `fcntl` calls, and worker threads sleeping on the mutex that guards them.
    Exclusive,
}

/// The reader connections and the writer thread of one SQLite database file.
pub struct Sqlite {
    path: PathBuf,
    locking: Locking,
    readers: Mutex<Vec<Connection>>,
    max_idle_readers: usize,
    queue: Mutex<Option<mpsc::Sender<Work>>>,
    /// False once `close` began: reads are refused too.
    open: AtomicBool,
    /// The writer and the checkpointer, joined by `close`.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What the writer thread is given.
enum Work {
    /// A transaction, committed with others queued at the same time.
    Grouped(Box<dyn Job>),
    /// Raw access to the connection outside any transaction (migrations).
    Alone(Box<dyn FnOnce(&Connection) + Send>),
}

impl Sqlite {
    /// Opens (creating if missing) the database file, starts the writer and the checkpointer;
    /// readers open on first use. `maintenance` runs on the writer about once a second while
    /// writes arrive, in a transaction of its own.
    pub fn open(
        path: &Path,
        max_idle_readers: usize,
        locking: Locking,
        maintenance: &'static [&'static str],
    ) -> StoreResult<Self> {
        // The writer is the first to read the file: in exclusive mode, it takes the process's lock.
        let writer = connect(path, Mode::Create, locking)
            .and_then(|writer| writer.pragma_update(None, "journal_mode", "WAL").map(|()| writer))
            .map_err(|e| match locking {
                Locking::Exclusive if is_busy(&e) => StoreError::Unavailable(
                    format!(
                        "{}: another process has the database open (CONFIDANT_SQLITE_LOCKING=exclusive)",
                        path.display()
                    )
                    .into(),
                ),
                _ => unavailable(e),
            })?;
        // Checkpoints belong to the checkpointer thread, never to a commit.
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(unavailable)?;
        writer
            .pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)
            .map_err(unavailable)?;
        let checkpointer = connect(path, Mode::ReadWrite, locking).map_err(unavailable)?;
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let (sender, receiver) = mpsc::channel::<Work>();
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map_err(|e| StoreError::Unavailable(Box::new(e)))
        };
        let checkpoints = spawn(
            "sqlite-checkpoint",
            Box::new(move || checkpoint_loop(&checkpointer, &nudged, &counted)),
        )?;
        let writer = Arc::new(Mutex::new(writer));
        let writes = spawn(
            "sqlite-writer",
            Box::new(move || write_loop(&writer, &receiver, &nudge, &commits, maintenance)),
        )?;
        Ok(Self {
            path: path.to_owned(),
            locking,
            readers: Mutex::new(Vec::new()),
            max_idle_readers: max_idle_readers.max(1),
            queue: Mutex::new(Some(sender)),
            open: AtomicBool::new(true),
            threads: Mutex::new(vec![writes, checkpoints]),
        })
    }

    /// Runs `read` on a reader connection, on this thread.
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        if !self.open.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => connect(&self.path, Mode::ReadOnly, self.locking).map_err(unavailable)?,
        };
        let result = read(&connection);
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle_readers {
            idle.push(connection);
        }
        result
    }

    /// Idle reader connections (for `/metrics`).
    pub fn idle_readers(&self) -> usize {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the writer takes writes (for `/metrics`).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Runs `body` on the writer thread, in a transaction it may share with others queued at the
    /// same time; answers once that transaction is committed. If `body` fails, its own changes are
    /// rolled back and the others' are kept.
    pub async fn transaction<T, F>(&self, body: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Transaction<T>,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Grouped(Box::new(Pending {
            body: Some(body),
            outcome: None,
            reply,
        })))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `work` on the writer thread between groups, with no transaction around it.
    async fn alone<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Alone(Box::new(move |connection| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(connection)))
                .unwrap_or_else(|_| Err(StoreError::Other("a database task panicked".into())));
            let _ = reply.send(outcome);
        })))?;
        answer.await.map_err(|_| stopped())?
    }

    fn send(&self, work: Work) -> StoreResult<()> {
        match &*self.queue.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(sender) if sender.send(work).is_ok() => Ok(()),
            _ => Err(stopped()),
        }
    }

    /// Applies the migrations the database has not seen yet, recording them as sqlx did.
    pub async fn migrate(&self) -> StoreResult<()> {
        self.alone(|connection| super::migrations::run_sqlite(connection, MIGRATIONS))
            .await
    }

    /// Runs a script of SQL statements in one transaction (tests and tools).
    pub async fn run_script(&self, sql: &str) -> StoreResult<()> {
        let sql = sql.to_owned();
        self.alone(move |connection| {
            connection
                .execute_batch(&format!("BEGIN IMMEDIATE; {sql}; COMMIT;"))
                .inspect_err(|_| {
                    let _ = connection.execute_batch("ROLLBACK");
                })
                .map_err(StoreError::from)
        })
        .await
    }

    /// Stops taking reads and writes, lets the writer finish the queued ones, and waits until
    /// every connection is closed (blocking: call it off the async threads).
    pub fn close(&self) {
        self.open.store(false, Ordering::Relaxed);
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

#[derive(Clone, Copy)]
enum Mode {
    Create,
    ReadWrite,
    ReadOnly,
}

fn connect(path: &Path, mode: Mode, locking: Locking) -> rusqlite::Result<Connection> {
    let flags = match (mode, locking) {
        (Mode::Create, _) => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        (Mode::ReadWrite, _) => OpenFlags::SQLITE_OPEN_READ_WRITE,
        (Mode::ReadOnly, Locking::Shared) => OpenFlags::SQLITE_OPEN_READ_ONLY,
        // `unix-excl` passes a read-only connection's locks to the OS, where one of them would
        // turn the process's exclusive lock into a shared one: readers open read-write and are
        // kept to reading by `query_only`.
        (Mode::ReadOnly, Locking::Exclusive) => OpenFlags::SQLITE_OPEN_READ_WRITE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = match locking {
        Locking::Shared => Connection::open_with_flags(path, flags)?,
        Locking::Exclusive => Connection::open_with_flags_and_vfs(path, flags, c"unix-excl")?,
    };
    if matches!((mode, locking), (Mode::ReadOnly, Locking::Exclusive)) {
        connection.pragma_update(None, "query_only", true)?;
    }
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The query planner's stability guarantee: plans never depend on bound values. Without it
    // SQLite (3.51) marks a statement to be re-planned whenever some parameters are bound again
    // (a `LIMIT ?`, an `= ?` it compares with a partial index's terms), so a cached statement was
    // parsed and planned anew on every request: 46 % of the CPU of reading a conversation
    // (perf): 8,700 conversations read a second before, 31,000 after; lists 18,400 → 39,800.
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
    if !matches!(mode, Mode::ReadOnly) {
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(connection)
}

// ---------------------------------------------------------------------------------------------
// Group commit

/// One queued transaction: runs inside the group's transaction, then learns whether it was
/// committed.
trait Job: Send {
    /// Runs the body; returns whether it succeeded (if not, its savepoint is rolled back).
    fn run(&mut self, connection: &WriterConnection) -> bool;
    /// Answers the caller once the group's commit is known.
    fn finish(self: Box<Self>, committed: Result<(), &str>);
}

struct Pending<F, T> {
    body: Option<F>,
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for Pending<F, T>
where
    T: Send + 'static,
    F: Transaction<T>,
{
    fn run(&mut self, connection: &WriterConnection) -> bool {
        let Some(body) = self.body.take() else {
            return false;
        };
        // A bug in one transaction must not take the writer thread (and every later write) down.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut tx = Tx::sqlite(connection.clone());
            let mut future = body(&mut tx);
            match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => Err(StoreError::Other(
                    "a SQLite transaction waited on something other than the database".into(),
                )),
            }
        }))
        .unwrap_or_else(|_| Err(StoreError::Other("a database write panicked".into())));
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), &str>) {
        let result = match (self.outcome, committed) {
            (Some(Err(error)), _) => Err(error),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(reason)) => Err(StoreError::Unavailable(format!("commit failed: {reason}").into())),
            (None, Ok(())) => Err(StoreError::Other("a database write was not run".into())),
        };
        // The caller may have gone (client disconnected); the write stands either way.
        let _ = self.reply.send(result);
    }
}

fn write_loop(
    connection: &WriterConnection,
    queue: &mpsc::Receiver<Work>,
    checkpoint: &mpsc::SyncSender<()>,
    commits: &AtomicU64,
    maintenance: &[&str],
) {
    let mut nudged = Instant::now();
    let mut maintained = Instant::now();
    let mut next = queue.recv().ok();
    while let Some(first) = next.take() {
        let first = match first {
            Work::Alone(work) => {
                work(&lock(connection));
                next = queue.recv().ok();
                continue;
            }
            Work::Grouped(job) => job,
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(Work::Grouped(job)) => group.push(job),
                Ok(alone) => {
                    // Runs after this group, in order.
                    next = Some(alone);
                    break;
                }
                Err(_) => break,
            }
        }
        let committed = commit_group(connection, &mut group).map_err(|e| e.to_string());
        match &committed {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => tracing::error!(error = %reason, writes = group.len(), "SQLite group commit failed"),
        }
        for job in group {
            job.finish(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
        if maintained.elapsed() >= MAINTAIN_EVERY {
            maintained = Instant::now();
            maintain(&lock(connection), maintenance);
        }
        if nudged.elapsed() >= CHECKPOINT_EVERY {
            nudged = Instant::now();
            // Full means a nudge is already pending.
            let _ = checkpoint.try_send(());
        }
        if next.is_none() {
            next = queue.recv().ok();
        }
    }
}

fn lock(connection: &WriterConnection) -> std::sync::MutexGuard<'_, Connection> {
    connection.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checkpoints the WAL when the writer nudges it and every few seconds, until the writer stops.
/// `PASSIVE`: it never blocks the writer or the readers, and what it cannot copy yet (pages a
/// reader still needs) waits for the next round. A round after which the writer committed
/// nothing does nothing.
fn checkpoint_loop(connection: &Connection, nudged: &mpsc::Receiver<()>, commits: &AtomicU64) {
    let mut seen = 0;
    loop {
        match nudged.recv_timeout(CHECKPOINT_IDLE) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = commits.load(Ordering::Relaxed);
        if now == seen {
            continue;
        }
        seen = now;
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "SQLite checkpoint failed");
        }
    }
}

/// Runs the maintenance statements (small, bounded writes) in one transaction of their own.
fn maintain(connection: &Connection, statements: &[&str]) {
    if statements.is_empty() {
        return;
    }
    let done = run(connection, "BEGIN IMMEDIATE").and_then(|()| {
        for statement in statements {
            connection.execute_batch(statement)?;
        }
        run(connection, "COMMIT")
    });
    if let Err(error) = done {
        let _ = run(connection, "ROLLBACK");
        tracing::warn!(%error, "SQLite maintenance failed");
    }
}

/// `BEGIN IMMEDIATE`, each job in its own savepoint, `COMMIT`. On a failed commit the whole
/// transaction is rolled back and every job is told.
fn commit_group(connection: &WriterConnection, group: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    let sql = |statement: &str| run(&lock(connection), statement);
    sql("BEGIN IMMEDIATE")?;
    let alone = group.len() == 1;
    for job in group.iter_mut() {
        if alone {
            if !job.run(connection) {
                return sql("ROLLBACK");
            }
            continue;
        }
        let step = sql("SAVEPOINT job").and_then(|()| {
            if job.run(connection) {
                sql("RELEASE job")
            } else {
                sql("ROLLBACK TO job").and_then(|()| sql("RELEASE job"))
            }
        });
        if let Err(error) = step {
            let _ = sql("ROLLBACK");
            return Err(error);
        }
    }
    sql("COMMIT").inspect_err(|_| {
        let _ = sql("ROLLBACK");
    })
}

fn run(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statements built by sea-query, run on a rusqlite connection

/// Runs a statement and decodes every row it returns.
pub(super) fn rows<T: FromRow>(connection: &Connection, sql: &str, values: sea_query::Values) -> StoreResult<Vec<T>> {
    // The SQL only, with its placeholders: bound values may be secrets.
    tracing::debug!(target: "confidant::store::sql", %sql);
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(bind(values)?))?;
    let mut decoded = Vec::new();
    let columns = super::row::SqliteColumns::default();
    while let Some(row) = rows.next()? {
        columns.next_row();
        decoded.push(T::from_row(&Row::Sqlite(row, &columns))?);
    }
    Ok(decoded)
}

/// Runs an insert, update or delete and returns how many rows it touched.
pub(super) fn execute(connection: &Connection, sql: &str, values: sea_query::Values) -> StoreResult<u64> {
    tracing::debug!(target: "confidant::store::sql", %sql);
    Ok(connection
        .prepare_cached(sql)?
        .execute(rusqlite::params_from_iter(bind(values)?))? as u64)
}

/// sea-query's values as SQLite stores them: UUIDs as 16-byte blobs, JSON as text, booleans as
/// integers.
fn bind(values: sea_query::Values) -> rusqlite::Result<Vec<SqlValue>> {
    use sea_query::Value as V;
    fn int<T: Into<i64>>(v: Option<T>) -> SqlValue {
        v.map_or(SqlValue::Null, |v| SqlValue::Integer(v.into()))
    }
    values
        .0
        .into_iter()
        .map(|value| {
            Ok(match value {
                V::Bool(v) => int(v),
                V::TinyInt(v) => int(v),
                V::SmallInt(v) => int(v),
                V::Int(v) => int(v),
                V::BigInt(v) => int(v),
                V::TinyUnsigned(v) => int(v),
                V::SmallUnsigned(v) => int(v),
                V::Unsigned(v) => int(v),
                V::BigUnsigned(v) => match v.map(i64::try_from) {
                    None => SqlValue::Null,
                    Some(Ok(v)) => SqlValue::Integer(v),
                    Some(Err(e)) => return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
                },
                V::Float(v) => v.map_or(SqlValue::Null, |v| SqlValue::Real(v.into())),
                V::Double(v) => v.map_or(SqlValue::Null, SqlValue::Real),
                V::String(v) => v.map_or(SqlValue::Null, SqlValue::Text),
                V::Char(v) => v.map_or(SqlValue::Null, |c| SqlValue::Text(c.to_string())),
                V::Bytes(v) => v.map_or(SqlValue::Null, SqlValue::Blob),
                V::Json(v) => v.map_or(SqlValue::Null, |j| SqlValue::Text(j.to_string())),
                V::Uuid(v) => v.map_or(SqlValue::Null, |u| SqlValue::Blob(u.as_bytes().to_vec())),
                other => {
                    return Err(rusqlite::Error::ToSqlConversionFailure(
                        format!("no SQLite binding for {other:?}").into(),
                    ));
                }
            })
        })
        .collect()
}

/// Applies one migration in a transaction of its own, recording it.
pub(super) fn apply(connection: &Connection, migration: &Migration, checksum: &[u8]) -> StoreResult<()> {
    let started = Instant::now();
    let applied = run(connection, "BEGIN IMMEDIATE").and_then(|()| {
        connection.execute_batch(migration.sqlite)?;
        connection.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, -1)",
            rusqlite::params![migration.version, migration.description, checksum],
        )?;
        run(connection, "COMMIT")
    });
    if let Err(error) = applied {
        let _ = run(connection, "ROLLBACK");
        return Err(StoreError::Other(
            format!("migration {} failed: {error}", migration.description).into(),
        ));
    }
    connection.execute(
        "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
        rusqlite::params![started.elapsed().as_nanos() as i64, migration.version],
    )?;
    Ok(())
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

/// Whether SQLite gave up waiting for another connection's lock.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// SQLite's errors: unique violations are conflicts (named by the columns SQLite reports), a
/// locked or unopenable database is unavailable.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &error {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(failure, message) => match failure.code {
                ErrorCode::ConstraintViolation
                    if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    // "UNIQUE constraint failed: agents.application_id, agents.name"
                    let columns = message.as_deref().and_then(|m| m.split_once(": ")).map(|(_, c)| c);
                    constraint_conflict(columns.unwrap_or(""))
                }
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull => StoreError::Unavailable(Box::new(error)),
                _ => StoreError::Other(Box::new(error)),
            },
            _ => StoreError::Other(Box::new(error)),
        }
    }
}

#[cfg(test)]
mod tests;
