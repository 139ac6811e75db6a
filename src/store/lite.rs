//! SQLite's hot paths, without a thread hop per statement.
//!
//! sqlx runs each SQLite connection on its own thread and sends every statement, and every row it
//! returns, across a channel to and from that thread. For the queries behind every end-user request
//! (a page of conversations, a conversation's messages, a turn's two appends) those hops cost more
//! than SQLite's own work: profiles of the turn workload showed most of the time in futex wake-ups
//! and context switches, and SQLite itself at ~2 %. So those queries run here, on plain
//! `rusqlite` connections to the same file, built by the same sea-query code as everywhere else:
//!
//! - **Reads** run on the calling thread, on a connection taken from a small pool. They are indexed
//!   lookups bounded by a `LIMIT` that take tens of microseconds, less than a hop to another thread.
//! - **Writes** go to one writer thread that commits them in groups: it takes every write queued
//!   while the previous group committed, runs each inside its own savepoint (a failing write is
//!   rolled back alone), and commits once. With `synchronous = FULL` each commit is durable on disk
//!   before any of its writers is answered, and one fsync serves the whole group.
//!
//! Everything else (migrations, the admin plane) stays on sqlx; both take SQLite's write lock with
//! `BEGIN IMMEDIATE`, so they wait for each other (busy timeout) rather than fail.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, Row};
use sea_query::{SelectStatement, SqliteQueryBuilder};
use tokio::sync::oneshot;

use super::{Backend, StoreError, StoreResult, Write, conflict_message};

/// How long a connection waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// The most writes committed together.
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

/// A row type decoded from a `rusqlite` row, by column name.
pub trait FromRow: Sized {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self>;
}

/// Reader connections and the writer thread of one SQLite database file.
pub struct Lite {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    max_idle_readers: usize,
    writes: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
}

impl Lite {
    /// Opens the writer (a thread owning one connection) and the checkpointer (another); readers
    /// open on first use. `maintenance` runs on the writer (no second writer to wait for) about
    /// once a second while writes arrive, in a transaction of its own.
    pub fn open(path: &Path, max_idle_readers: usize, maintenance: &'static [&'static str]) -> StoreResult<Self> {
        let writer = connect(path, false).map_err(unavailable)?;
        // Checkpoints (copying the WAL back into the database, with an fsync) run on their own
        // thread, so no commit waits behind one.
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(unavailable)?;
        writer
            .pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)
            .map_err(unavailable)?;
        let checkpointer = connect(path, false).map_err(unavailable)?;
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>();
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map_err(|e| StoreError::Unavailable(Box::new(e)))
        };
        spawn(
            "sqlite-checkpoint",
            Box::new(move || checkpoint_loop(&checkpointer, &nudged, &counted)),
        )?;
        spawn(
            "sqlite-writer",
            Box::new(move || write_loop(&writer, &receiver, &nudge, &commits, maintenance)),
        )?;
        Ok(Self {
            path: path.to_owned(),
            readers: Mutex::new(Vec::new()),
            max_idle_readers: max_idle_readers.max(1),
            writes: Mutex::new(Some(sender)),
        })
    }

    /// Runs `read` on a reader connection, on this thread.
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => connect(&self.path, true).map_err(unavailable)?,
        };
        let result = read(&connection).map_err(StoreError::from);
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle_readers {
            idle.push(connection);
        }
        result
    }

    /// Runs `write` on the writer thread, in a transaction it may share with other writes queued
    /// at the same time; answers once that transaction is committed. If `write` fails, its own
    /// changes are rolled back and the others' are kept.
    pub async fn write<T, F>(&self, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(write),
            outcome: None,
            reply,
        });
        let sent = match &*self.writes.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(sender) => sender.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Unavailable("the SQLite writer has stopped".into()));
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }

    /// Stops taking writes; the writer thread finishes the queued ones and exits.
    pub fn close(&self) {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn connect(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
    if !read_only {
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(connection)
}

// ---------------------------------------------------------------------------------------------
// Group commit

/// One queued write: runs inside the group's transaction, then learns whether it was committed.
trait Job: Send {
    /// Runs the write; returns whether it succeeded (if not, its savepoint is rolled back).
    fn run(&mut self, connection: &Connection) -> bool;
    /// Answers the caller once the group's commit is known.
    fn finish(self: Box<Self>, committed: Result<(), &str>);
}

struct Pending<F, T> {
    work: Option<F>,
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for Pending<F, T>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A bug in one write must not take the writer thread (and every later write) down.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(connection)))
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
    connection: &Connection,
    jobs: &mpsc::Receiver<Box<dyn Job>>,
    checkpoint: &mpsc::SyncSender<()>,
    commits: &AtomicU64,
    maintenance: &[&str],
) {
    let mut nudged = std::time::Instant::now();
    let mut maintained = std::time::Instant::now();
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
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
            maintained = std::time::Instant::now();
            maintain(connection, maintenance);
        }
        if nudged.elapsed() >= CHECKPOINT_EVERY {
            nudged = std::time::Instant::now();
            // Full means a nudge is already pending.
            let _ = checkpoint.try_send(());
        }
    }
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
fn commit_group(connection: &Connection, group: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    run(connection, "BEGIN IMMEDIATE")?;
    let alone = group.len() == 1;
    for job in group.iter_mut() {
        if alone {
            if !job.run(connection) {
                return run(connection, "ROLLBACK");
            }
            continue;
        }
        let step = run(connection, "SAVEPOINT job").and_then(|()| {
            if job.run(connection) {
                run(connection, "RELEASE job")
            } else {
                run(connection, "ROLLBACK TO job").and_then(|()| run(connection, "RELEASE job"))
            }
        });
        if let Err(error) = step {
            let _ = run(connection, "ROLLBACK");
            return Err(error);
        }
    }
    run(connection, "COMMIT").inspect_err(|_| {
        let _ = run(connection, "ROLLBACK");
    })
}

fn run(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statements built by sea-query, run on a rusqlite connection

/// Runs a select and decodes every row.
pub fn select<T: FromRow>(connection: &Connection, query: &SelectStatement) -> rusqlite::Result<Vec<T>> {
    let (sql, values) = query.build(SqliteQueryBuilder);
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(bind(values.0)?), |row| T::from_row(row))?;
    rows.collect::<rusqlite::Result<Vec<T>>>()
}

/// A write rendered for SQLite, owned, so it can be sent to the writer thread.
pub struct Built {
    sql: String,
    values: Vec<sea_query::Value>,
}

impl Built {
    pub fn of(statement: &impl Write) -> Self {
        let (sql, values) = statement.build(Backend::Sqlite);
        Self {
            sql,
            values: values.0.0,
        }
    }
}

/// Runs an insert, update or delete and returns how many rows it touched.
pub fn execute(connection: &Connection, statement: Built) -> rusqlite::Result<usize> {
    connection
        .prepare_cached(&statement.sql)?
        .execute(rusqlite::params_from_iter(bind(statement.values)?))
}

/// Runs a write with a `RETURNING` clause and decodes the first row it returns.
pub fn returning<T: FromRow>(connection: &Connection, statement: Built) -> rusqlite::Result<Option<T>> {
    let mut prepared = connection.prepare_cached(&statement.sql)?;
    let mut rows = prepared.query(rusqlite::params_from_iter(bind(statement.values)?))?;
    let first = rows.next()?.map(T::from_row).transpose()?;
    // Step to the end so the statement completes before it is reset.
    while rows.next()?.is_some() {}
    Ok(first)
}

/// sea-query's values as SQLite stores them through sqlx too: UUIDs as 16-byte blobs, JSON as
/// text, booleans as integers.
fn bind(values: Vec<sea_query::Value>) -> rusqlite::Result<Vec<SqlValue>> {
    use sea_query::Value as V;
    fn int<T: Into<i64>>(v: Option<T>) -> SqlValue {
        v.map_or(SqlValue::Null, |v| SqlValue::Integer(v.into()))
    }
    values
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

/// Reads a UUID stored as a 16-byte blob.
pub fn uuid(row: &Row<'_>, column: &str) -> rusqlite::Result<uuid::Uuid> {
    let bytes: [u8; 16] = row.get(column)?;
    Ok(uuid::Uuid::from_bytes(bytes))
}

/// Reads a nullable UUID stored as a 16-byte blob.
pub fn uuid_opt(row: &Row<'_>, column: &str) -> rusqlite::Result<Option<uuid::Uuid>> {
    let bytes: Option<[u8; 16]> = row.get(column)?;
    Ok(bytes.map(uuid::Uuid::from_bytes))
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

/// SQLite's errors, mapped as `From<sqlx::Error>` maps them: unique violations are conflicts, a
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
                    StoreError::Conflict(conflict_message(message.as_deref().unwrap_or("")))
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
mod tests {
    use sea_query::{Alias, Expr, ExprTrait, Query};

    use super::*;

    fn database() -> (tempfile::TempDir, Lite) {
        database_with(&[])
    }

    fn database_with(maintenance: &'static [&'static str]) -> (tempfile::TempDir, Lite) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lite.db");
        let setup = Connection::open(&path).expect("create");
        setup
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);",
            )
            .expect("schema");
        drop(setup);
        let lite = Lite::open(&path, 2, maintenance).expect("open");
        (dir, lite)
    }

    fn insert(id: i64, name: &str) -> Built {
        Built::of(
            &Query::insert()
                .into_table(Alias::new("t"))
                .columns([Alias::new("id"), Alias::new("name")])
                .values_panic([id.into(), name.into()])
                .to_owned(),
        )
    }

    struct Name(String);
    impl FromRow for Name {
        fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
            Ok(Self(row.get("name")?))
        }
    }

    fn names(lite: &Lite) -> Vec<String> {
        let query = Query::select()
            .column(Alias::new("name"))
            .from(Alias::new("t"))
            .order_by(Alias::new("id"), sea_query::Order::Asc)
            .to_owned();
        lite.read(|c| select::<Name>(c, &query))
            .expect("read")
            .into_iter()
            .map(|n| n.0)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_is_rolled_back_alone_and_the_others_in_its_group_commit() {
        let (_dir, lite) = database();
        let lite = std::sync::Arc::new(lite);
        lite.write(|c| Ok(execute(c, insert(0, "name-0"))?))
            .await
            .expect("first");
        // Many writes at once so the writer takes them in groups; every tenth one collides with
        // the first name and must fail alone, also when it ran half-way (two rows, one taken).
        let writes = (1..200i64).map(|i| {
            let lite = lite.clone();
            tokio::spawn(async move {
                lite.write(move |c| {
                    if i % 10 == 9 {
                        execute(c, insert(1000 + i, &format!("extra-{i}")))?;
                        execute(c, insert(2000 + i, "name-0"))?;
                    } else {
                        execute(c, insert(i, &format!("name-{i}")))?;
                    }
                    Ok(i)
                })
                .await
            })
        });
        let mut failed = Vec::new();
        let writes: Vec<_> = writes.collect();
        for (i, write) in (1..).zip(writes) {
            match write.await.expect("task") {
                Ok(n) => assert_eq!(n, i),
                Err(StoreError::Conflict(_)) => failed.push(i),
                Err(other) => panic!("write {i}: {other}"),
            }
        }
        assert_eq!(failed, (1..200).filter(|i| i % 10 == 9).collect::<Vec<_>>());
        let stored = names(&lite);
        assert_eq!(stored.len(), 180);
        assert!(stored.iter().all(|n| n.starts_with("name-")), "{stored:?}");
    }

    #[tokio::test]
    async fn maintenance_runs_and_the_checkpointer_copies_committed_writes_into_the_database_file() {
        let (dir, lite) = database_with(&["INSERT OR IGNORE INTO t (id, name) VALUES (-1, 'maintained')"]);
        let file = dir.path().join("lite.db");
        let before = std::fs::metadata(&file).expect("file").len();
        // 2 KiB rows, written for longer than the checkpointer's interval.
        let started = std::time::Instant::now();
        let mut i = 0;
        while i < 128 || started.elapsed() < MAINTAIN_EVERY + Duration::from_millis(100) {
            let name = format!("{i:0>2048}");
            lite.write(move |c| Ok(execute(c, insert(i, &name))?))
                .await
                .expect("write");
            i += 1;
        }
        // The writer never checkpoints itself: only the checkpointer grows the main file.
        let mut grown = 0;
        for _ in 0..100 {
            grown = std::fs::metadata(&file).expect("file").len() - before;
            if grown > 200 * 1024 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(grown > 200 * 1024, "the database file grew by {grown} bytes only");
        assert!(names(&lite).contains(&"maintained".to_owned()));
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_keeps_going() {
        let (_dir, lite) = database();
        let failed = lite
            .write(|c| -> StoreResult<()> {
                execute(c, insert(1, "before the panic"))?;
                panic!("a bug in a write");
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Other(_))), "{failed:?}");
        lite.write(|c| Ok(execute(c, insert(2, "after"))?))
            .await
            .expect("writer still running");
        assert_eq!(names(&lite), ["after"]);
    }

    #[tokio::test]
    async fn a_write_is_visible_to_other_connections_once_answered_and_none_after_close() {
        let (dir, lite) = database();
        let update = Query::update()
            .table(Alias::new("t"))
            .value(Alias::new("name"), "renamed")
            .and_where(Expr::col(Alias::new("id")).eq(7))
            .to_owned();
        lite.write(|c| Ok(execute(c, insert(7, "seven"))?))
            .await
            .expect("insert");
        let touched = lite
            .write(move |c| Ok(execute(c, Built::of(&update))?))
            .await
            .expect("update");
        assert_eq!(touched, 1);
        // A connection that is not `lite`'s sees the committed row.
        let other = Connection::open(dir.path().join("lite.db")).expect("open");
        let name: String = other
            .query_row("SELECT name FROM t WHERE id = 7", [], |r| r.get(0))
            .expect("row");
        assert_eq!(name, "renamed");
        lite.close();
        let refused = lite.write(|c| Ok(execute(c, insert(8, "late"))?)).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    }
}
