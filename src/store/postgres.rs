//! PostgreSQL on sqlx: a connection pool of the service's own, statements bound through
//! sea-query-sqlx, sqlx's migrator, and the mapping of its errors.
//!
//! Why not sqlx's `PgPool` for statements: it sends one more round trip each time a connection
//! goes back to it (a `Sync` answered by `ReadyForQuery`, to flush whatever a cancelled query left
//! behind), so every statement cost two wake-ups of the server process and of ours. `Pool` here
//! takes a connection back as it is when its statement ran to its end, and only one a cancelled
//! future left mid-way is cleaned up (what it left pending drained, its transaction rolled back) before
//! anyone uses it again. A connection idle for a while is pinged before use, and one idle for
//! long is closed.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sea_query::PostgresQueryBuilder;
use sea_query_sqlx::SqlxValues;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgPool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod batches;

#[cfg(test)]
pub(super) use self::batches::combine_writes;
use self::batches::{Waiting, Writes};
pub(super) use self::batches::{rows_batched, write_batched};
use super::row::{FromRow, Row};
use super::{Batch, DbOptions, Statement, StoreError, StoreResult, constraint_conflict};

/// A pooled connection idle this long is checked before it is used again.
const PING_WHEN_IDLE: Duration = Duration::from_secs(10);
/// A pooled connection idle this long is closed (sqlx's default too).
const CLOSE_WHEN_IDLE: Duration = Duration::from_secs(600);
/// How long cleaning up after a cancelled statement, or checking an idle connection, may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Statements kept prepared per connection (the service runs fewer distinct ones).
const STATEMENT_CACHE: usize = 512;

/// The service's PostgreSQL connections.
#[derive(Clone)]
pub(super) struct Pool(Arc<Shared>);

struct Shared {
    options: PgConnectOptions,
    /// Idle connections, the most recently used last (taken first: its socket and backend are
    /// warm, and the others age towards being closed).
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection that may be open; a lease holds one.
    slots: Arc<Semaphore>,
    max_connections: u32,
    acquire_timeout: Duration,
    /// For LISTEN: sqlx's listener takes a pool (of one connection, opened when first asked).
    listener: PgPool,
    /// Reads waiting to go together, by kind (`Batch`).
    batches: [Mutex<Waiting>; Batch::KINDS],
    /// Reads answered by a statement they shared with others.
    combined_reads: AtomicU64,
    /// Writes waiting to go together (`write_batched`).
    writes: Mutex<Writes>,
    /// Writes run in a statement they shared with others.
    combined_writes: AtomicU64,
}

struct Idle {
    connection: PgConnection,
    since: Instant,
}

/// A connection taken from the pool. Dropped after `finished`, it goes back as it is; dropped
/// earlier (a cancelled future, a broken connection), it is cleaned up first or closed.
pub(super) struct Lease {
    connection: Option<PgConnection>,
    finished: bool,
    /// Inside `BEGIN` … `COMMIT`/`ROLLBACK`.
    in_transaction: bool,
    pool: Arc<Shared>,
    slot: Option<OwnedSemaphorePermit>,
}

impl Pool {
    pub(super) async fn connect(url: &str, options: &DbOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
            // Every distinct statement the service runs stays prepared on each connection.
            .statement_cache_capacity(STATEMENT_CACHE);
        let pool = Self(Arc::new(Shared {
            listener: PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(connect.clone()),
            options: connect,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(options.max_connections.max(1) as usize)),
            max_connections: options.max_connections.max(1),
            acquire_timeout: options.acquire_timeout,
            batches: Default::default(),
            combined_reads: AtomicU64::new(0),
            writes: Default::default(),
            combined_writes: AtomicU64::new(0),
        }));
        // One connection now, so a bad URL or an unreachable server fails the start.
        pool.acquire().await?.finished = true;
        tokio::spawn(close_idle(Arc::downgrade(&pool.0)));
        Ok(pool)
    }

    /// A connection: an idle one (pinged first if it sat idle a while) or a new one, waiting at
    /// most the acquire timeout for one to be free.
    pub(super) async fn acquire(&self) -> StoreResult<Lease> {
        let deadline = Instant::now() + self.0.acquire_timeout;
        let slot = tokio::time::timeout_at(deadline.into(), self.0.slots.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::Unavailable("timed out waiting for a free database connection".into()))?
            .map_err(|_| StoreError::Unavailable("the database pool is closed".into()))?;
        loop {
            let idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let connection = match idle {
                Some(Idle { mut connection, since }) => {
                    // One a server restart or a firewall may have closed meanwhile is checked.
                    if since.elapsed() >= PING_WHEN_IDLE
                        && !matches!(
                            tokio::time::timeout(CLEANUP_TIMEOUT, connection.ping()).await,
                            Ok(Ok(()))
                        )
                    {
                        continue;
                    }
                    connection
                }
                None => tokio::time::timeout_at(deadline.into(), PgConnection::connect_with(&self.0.options))
                    .await
                    .map_err(|_| StoreError::Unavailable("timed out connecting to the database".into()))??,
            };
            return Ok(Lease {
                connection: Some(connection),
                finished: false,
                in_transaction: false,
                pool: self.0.clone(),
                slot: Some(slot),
            });
        }
    }

    /// A pool of one connection for sqlx's `PgListener`.
    pub(super) fn listener(&self) -> &PgPool {
        &self.0.listener
    }

    /// Reads answered so far by a statement they shared with others.
    pub(super) fn combined_reads(&self) -> u64 {
        self.0.combined_reads.load(Ordering::Relaxed)
    }

    /// Writes run so far in a statement they shared with others.
    pub(super) fn combined_writes(&self) -> u64 {
        self.0.combined_writes.load(Ordering::Relaxed)
    }

    /// (open, idle) connections.
    pub(super) fn state(&self) -> (u64, u64) {
        let idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        let leased = u64::from(self.0.max_connections) - self.0.slots.available_permits() as u64;
        (leased + idle, idle)
    }

    /// Closes the idle connections and refuses new leases.
    pub(super) async fn close(&self) {
        self.0.slots.close();
        let idle: Vec<Idle> = std::mem::take(&mut *self.0.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for Idle { connection, .. } in idle {
            let _ = connection.close().await;
        }
        self.0.listener.close().await;
    }
}

/// Closes connections idle for `CLOSE_WHEN_IDLE`, once a minute, while the pool lives.
async fn close_idle(pool: Weak<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let stale: Vec<Idle> = {
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            // The oldest are first.
            let keep = idle
                .iter()
                .position(|i| i.since.elapsed() < CLOSE_WHEN_IDLE)
                .unwrap_or(idle.len());
            idle.drain(..keep).collect()
        };
        drop(pool);
        for Idle { connection, .. } in stale {
            let _ = connection.close().await;
        }
    }
}

impl Lease {
    fn connection(&mut self) -> &mut PgConnection {
        self.connection
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }

    /// Closes the connection instead of giving it back.
    fn close(mut self) {
        drop(self.connection.take());
    }

    /// Marks the lease finished unless `outcome` left the connection unusable, and passes it on.
    fn settle<T>(&mut self, outcome: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if leaves_connection_ready(&outcome) {
            self.finished = true;
        }
        outcome
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        let pool = self.pool.clone();
        let slot = self.slot.take();
        if self.finished {
            give_back(&pool, connection);
            drop(slot);
            return;
        }
        // Left mid-way: drain what the server still sends (and end the transaction) before
        // anyone else uses it, or close it. Off this thread: a drop cannot wait.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let in_transaction = self.in_transaction;
        runtime.spawn(async move {
            let cleaned = tokio::time::timeout(CLEANUP_TIMEOUT, async {
                if in_transaction {
                    sqlx::raw_sql("ROLLBACK").execute(&mut connection).await.map(drop)
                } else {
                    connection.ping().await
                }
            })
            .await;
            if matches!(cleaned, Ok(Ok(()))) {
                give_back(&pool, connection);
            }
            drop(slot);
        });
    }
}

fn give_back(pool: &Shared, connection: PgConnection) {
    if pool.slots.is_closed() {
        return;
    }
    pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(Idle {
        connection,
        since: Instant::now(),
    });
}

/// Whether a failed statement left its connection ready for the next one: a database error
/// does (the server goes on after it); a lost or garbled connection does not.
fn leaves_connection_ready<T>(outcome: &Result<T, sqlx::Error>) -> bool {
    matches!(outcome, Ok(_) | Err(sqlx::Error::Database(_)))
}

/// Runs a statement on `connection` and decodes every row it returns.
pub(super) async fn rows_on<T: FromRow>(
    connection: &mut PgConnection,
    statement: &impl Statement,
) -> StoreResult<Vec<T>> {
    decode(&fetch(connection, statement).await?)
}

/// Runs an insert, update or delete on `connection` and returns how many rows it touched.
pub(super) async fn execute_on(connection: &mut PgConnection, statement: &impl Statement) -> StoreResult<u64> {
    Ok(run(connection, statement).await?)
}

/// Runs a statement on a pooled connection and decodes every row it returns.
pub(super) async fn rows<T: FromRow>(pool: &Pool, statement: &impl Statement) -> StoreResult<Vec<T>> {
    let mut lease = pool.acquire().await?;
    let rows = fetch(lease.connection(), statement).await;
    decode(&lease.settle(rows)?)
}

fn decode<T: FromRow>(rows: &[sqlx::postgres::PgRow]) -> StoreResult<Vec<T>> {
    rows.iter().map(|row| T::from_row(&Row::Postgres(row))).collect()
}

/// Runs an insert, update or delete on a pooled connection; how many rows it touched.
pub(super) async fn execute(pool: &Pool, statement: &impl Statement) -> StoreResult<u64> {
    let mut lease = pool.acquire().await?;
    let touched = run(lease.connection(), statement).await;
    Ok(lease.settle(touched)?)
}

async fn fetch(
    connection: &mut PgConnection,
    statement: &impl Statement,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    let (sql, values) = statement.build_for(PostgresQueryBuilder);
    sqlx::query_with(AssertSqlSafe(sql), SqlxValues(values))
        .fetch_all(connection)
        .await
}

async fn run(connection: &mut PgConnection, statement: &impl Statement) -> Result<u64, sqlx::Error> {
    let (sql, values) = statement.build_for(PostgresQueryBuilder);
    Ok(sqlx::query_with(AssertSqlSafe(sql), SqlxValues(values))
        .execute(connection)
        .await?
        .rows_affected())
}

/// A transaction on a pooled connection: `BEGIN` sent, ended by `Transaction::end`.
pub(super) struct Transaction(Lease);

impl Transaction {
    pub(super) async fn begin(pool: &Pool) -> StoreResult<Self> {
        let mut lease = pool.acquire().await?;
        // In a transaction from the moment `BEGIN` may have reached the server until `end`:
        // dropped in between (even while `BEGIN` is on its way), the lease is rolled back before
        // its connection serves anyone else.
        lease.in_transaction = true;
        sqlx::raw_sql("BEGIN").execute(lease.connection()).await?;
        Ok(Self(lease))
    }

    pub(super) fn connection(&mut self) -> &mut PgConnection {
        self.0.connection()
    }

    /// Commits (or rolls back) and gives the connection back. A transaction dropped without
    /// this is rolled back before its connection is used again.
    pub(super) async fn end(mut self, commit: bool) -> StoreResult<()> {
        let ended = sqlx::raw_sql(if commit { "COMMIT" } else { "ROLLBACK" })
            .execute(self.0.connection())
            .await;
        // A COMMIT refused (a deferred constraint, a serialization failure) ends the transaction
        // too: the connection is ready either way.
        self.0.settle(ended)?;
        Ok(())
    }
}

/// A connection holding the session advisory lock `key`, or `None` if another session holds it.
/// It is a connection of its own, outside the pool, closed when dropped: the lock never outlives it.
pub(super) async fn try_advisory_lock(pool: &Pool, key: i64) -> StoreResult<Option<PgConnection>> {
    let mut connection = PgConnection::connect_with(&pool.0.options).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut connection)
        .await?;
    Ok(locked.then_some(connection))
}

pub(super) async fn migrate(pool: &Pool) -> StoreResult<()> {
    let mut lease = pool.acquire().await?;
    let migrated = super::migrations::postgres_migrator().run(lease.connection()).await;
    match migrated {
        Ok(()) => {
            lease.finished = true;
            Ok(())
        }
        Err(error) => {
            // A failed run may leave its lock or a transaction on the connection: close it.
            lease.close();
            Err(StoreError::Other(Box::new(error)))
        }
    }
}

/// Runs a script of several statements in one transaction.
pub(super) async fn run_script(pool: &Pool, sql: &str) -> StoreResult<()> {
    let mut tx = Transaction::begin(pool).await?;
    let ran = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(tx.connection())
        .await;
    let ok = ran.is_ok();
    tx.end(ok).await?;
    ran?;
    Ok(())
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                Self::Unavailable(Box::new(err))
            }
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                constraint_conflict(db.constraint().unwrap_or_default())
            }
            other => Self::Other(Box::new(other)),
        }
    }
}
