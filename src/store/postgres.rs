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

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sea_query::PostgresQueryBuilder;
use sea_query::{Alias, Asterisk, Expr, Order, Query, SelectStatement, WithClause, WithQuery};
use sea_query_sqlx::SqlxValues;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgPool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::row::{FromRow, Row};
use super::{Batch, CombinedWrite, DbOptions, Statement, StoreError, StoreResult, constraint_conflict};

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

    /// How many tasks may send reads of one kind at once.
    fn batch_runners(&self) -> usize {
        (self.0.max_connections / CONNECTIONS_PER_BATCH_RUNNER).max(1) as usize
    }

    /// How many tasks may send writes at once: with the default pool (4 a core, at least 8),
    /// two on two cores, so one statement's commit is being flushed while the next is sent.
    fn write_runners(&self) -> usize {
        (self.0.max_connections / CONNECTIONS_PER_WRITE_RUNNER).max(1) as usize
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

/// Reads of one kind sent as one statement at most this many at a time.
const BATCH_MAX: usize = 8;
/// Connections per task sending reads of one kind: with the default pool (4 a core, at least 8),
/// one a kind on two cores. Reads arriving while those are busy wait to go together in their next
/// statement. Swept on this 2-core machine with PostgreSQL beside the service (lists / gets a
/// second, 8 s runs): 1 task, 8 reads a statement: 30,964 · 30,290 / 16,591 · 17,414; 2 tasks:
/// 29,433 · 30,181 / 16,771 · 15,644; 4 tasks (16 reads): 25,566 / 12,908; 8 tasks: 19,729 /
/// 11,787, what it was without.
const CONNECTIONS_PER_BATCH_RUNNER: u32 = 8;
/// The column that says which read of a combined statement a row answers.
const BATCH_SLOT: &str = "batch_slot";

/// The reads of one kind waiting, and how many tasks are sending them.
#[derive(Default)]
struct Waiting {
    reads: Vec<Read>,
    runners: usize,
}

/// A queue with tasks sending what waits in it.
trait Queue {
    type Item: Waiter;
    fn runners(&mut self) -> &mut usize;
    /// Forgets what was taken and will not be run.
    fn release(&mut self, _taken: &[Self::Item]) {}
}

impl Queue for Waiting {
    type Item = Read;
    fn runners(&mut self) -> &mut usize {
        &mut self.runners
    }
}

/// Counts a task sending a queue's statements out however it ends (a panic too), so nothing
/// waits for none; `.1` is cleared when the task counted itself out under the queue's lock.
struct Runner<'a, Q: Queue>(&'a Mutex<Q>, bool);

impl<Q: Queue> Runner<'_, Q> {
    /// A connection, and what `take` takes from the queue under its lock; `None` once it takes
    /// nothing (the task is counted out then, and the connection goes back). When no connection
    /// can be had, what it took hears why, and it takes again.
    async fn next(
        &mut self,
        pool: &Pool,
        mut take: impl FnMut(&mut Q) -> Vec<Q::Item>,
    ) -> Option<(Lease, Vec<Q::Item>)> {
        loop {
            let lease = pool.acquire().await;
            let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let taken = take(&mut queue);
            if taken.is_empty() {
                *queue.runners() -= 1;
                self.1 = false;
                drop(queue);
                if let Ok(mut lease) = lease {
                    lease.finished = true;
                }
                return None;
            }
            drop(queue);
            match lease {
                Ok(lease) => return Some((lease, taken)),
                Err(error) => {
                    self.0.lock().unwrap_or_else(|e| e.into_inner()).release(&taken);
                    for waiter in taken {
                        waiter.fail(&error);
                    }
                }
            }
        }
    }
}

/// A read or write waiting in a queue.
trait Waiter {
    /// Tells its caller the statement could not be run.
    fn fail(self, error: &StoreError);
}

impl Waiter for Read {
    fn fail(self, error: &StoreError) {
        let _ = self.reply.send(Err(error.duplicate()));
    }
}

impl Waiter for Write {
    fn fail(self, error: &StoreError) {
        let _ = self.reply.send(Err(error.duplicate()));
    }
}

impl<Q: Queue> Drop for Runner<'_, Q> {
    fn drop(&mut self) {
        if self.1 {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()).runners() -= 1;
        }
    }
}

/// One read waiting: its statement (already scoped by its caller), and where its rows go.
struct Read {
    statement: SelectStatement,
    reply: oneshot::Sender<StoreResult<Vec<sqlx::postgres::PgRow>>>,
}

/// Runs a read that may go together with others of its kind waiting at the same moment: up to
/// [`BATCH_MAX`] of them as one statement (`SELECT 0 AS batch_slot, * FROM (<read 0>) … UNION
/// ALL …`, each part its caller's own scoped statement), so PostgreSQL's backend and this process
/// are woken once for them all rather than once each. Every row comes back tagged with the part
/// it answers and goes to that read's caller only. With nothing else waiting, a read goes alone.
pub(super) async fn rows_batched<T: FromRow>(
    pool: &Pool,
    kind: Batch,
    statement: SelectStatement,
) -> StoreResult<Vec<T>> {
    let (reply, answer) = oneshot::channel();
    let start_runner = {
        let mut waiting = pool.0.batches[kind as usize].lock().unwrap_or_else(|e| e.into_inner());
        waiting.reads.push(Read { statement, reply });
        let start = waiting.runners < pool.batch_runners();
        if start {
            waiting.runners += 1;
        }
        start
    };
    if start_runner {
        // A task of its own: the reads it takes are others' too, so no caller's cancellation may
        // stop it half-way.
        tokio::spawn(send_batches(pool.clone(), kind));
    }
    let rows = answer
        .await
        .map_err(|_| StoreError::Unavailable("the database read was dropped".into()))??;
    decode(&rows)
}

/// Takes a connection, then every read of `kind` waiting (up to [`BATCH_MAX`]), runs them, and
/// again, until none waits.
async fn send_batches(pool: Pool, kind: Batch) {
    let mut runner = Runner(&pool.0.batches[kind as usize], true);
    while let Some((mut lease, mut reads)) = runner
        .next(&pool, |waiting| {
            // Reads whose callers have gone (a client that hung up, a deadline) are not run.
            waiting.reads.retain(|read| !read.reply.is_closed());
            let n = waiting.reads.len().min(BATCH_MAX);
            waiting.reads.drain(..n).collect()
        })
        .await
    {
        if reads.len() == 1
            && let Some(Read { statement, reply }) = reads.pop()
        {
            let rows = fetch(lease.connection(), &statement).await;
            let _ = reply.send(lease.settle(rows).map_err(StoreError::from));
            continue;
        }
        let (statements, replies): (Vec<_>, Vec<_>) = reads.into_iter().map(|r| (r.statement, r.reply)).unzip();
        let combined = combine(statements, kind);
        let rows = fetch(lease.connection(), &combined).await;
        match lease
            .settle(rows)
            .map_err(StoreError::from)
            .and_then(|rows| split(rows, replies.len()))
        {
            Ok(parts) => {
                pool.0.combined_reads.fetch_add(parts.len() as u64, Ordering::Relaxed);
                for (reply, rows) in replies.into_iter().zip(parts) {
                    let _ = reply.send(Ok(rows));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.duplicate()));
                }
            }
        }
    }
}

/// `SELECT 0 AS batch_slot, * FROM (<first>) AS q UNION ALL (SELECT 1 AS batch_slot, * FROM
/// (<second>) AS q) … ORDER BY batch_slot, <kind's order>`: each part keeps its own order and
/// limit, and the rows come back part by part.
fn combine(statements: Vec<SelectStatement>, kind: Batch) -> SelectStatement {
    let part = |slot: usize, statement: SelectStatement| {
        let mut part = Query::select();
        part.expr_as(Expr::cust(slot.to_string()), Alias::new(BATCH_SLOT))
            .column(Asterisk)
            .from_subquery(statement, Alias::new("q"));
        part
    };
    let mut parts = statements.into_iter().enumerate();
    let (slot, first) = parts.next().expect("a batch has a read");
    let mut combined = part(slot, first);
    for (slot, statement) in parts {
        combined.union(sea_query::UnionType::All, part(slot, statement));
    }
    combined.order_by(Alias::new(BATCH_SLOT), Order::Asc);
    for &column in kind.newest_first() {
        combined.order_by(Alias::new(column), Order::Desc);
    }
    combined
}

/// The rows of a combined statement, by the part they answer.
fn split(rows: Vec<sqlx::postgres::PgRow>, parts: usize) -> StoreResult<Vec<Vec<sqlx::postgres::PgRow>>> {
    use sqlx::Row as _;
    let mut split: Vec<Vec<sqlx::postgres::PgRow>> = (0..parts).map(|_| Vec::new()).collect();
    for row in rows {
        let slot: i32 = row.try_get(BATCH_SLOT)?;
        split
            .get_mut(slot as usize)
            .ok_or_else(|| StoreError::Other(format!("a combined read answered part {slot} of {parts}").into()))?
            .push(row);
    }
    Ok(split)
}

/// Writes sent as one statement at most this many at a time.
const WRITE_BATCH_MAX: usize = 16;
/// Connections per task sending writes (`Pool::write_runners`).
const CONNECTIONS_PER_WRITE_RUNNER: u32 = 4;

/// The writes waiting, the keys of those being run, and how many tasks are sending them.
#[derive(Default)]
struct Writes {
    waiting: Vec<Write>,
    running: HashSet<u64>,
    runners: usize,
}

impl Queue for Writes {
    type Item = Write;
    fn runners(&mut self) -> &mut usize {
        &mut self.runners
    }
    fn release(&mut self, taken: &[Write]) {
        for write in taken {
            self.running.remove(&write.key);
        }
    }
}

impl Writes {
    /// Takes up to `WRITE_BATCH_MAX` waiting writes of the first one's shape whose keys differ
    /// from each other's and from those being run, and marks their keys running; the others keep
    /// their place. One shape a statement: the texts sent are one a shape and count, few enough
    /// to stay prepared (mixed, they were one an arrangement, and the connections' caches of
    /// prepared statements grew by megabytes).
    fn take(&mut self) -> Vec<Write> {
        let mut taken: Vec<Write> = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && taken.len() < WRITE_BATCH_MAX {
            let write = &self.waiting[i];
            let fits = taken.first().is_none_or(|first| first.shape == write.shape);
            if fits && self.running.insert(write.key) {
                taken.push(self.waiting.remove(i));
            } else {
                i += 1;
            }
        }
        taken
    }
}

/// One write waiting: the statement's parts (scoped by its caller), and where its rows go.
struct Write {
    key: u64,
    shape: u64,
    write: Arc<dyn CombinedWrite>,
    reply: oneshot::Sender<StoreResult<Vec<sqlx::postgres::PgRow>>>,
}

/// Runs a write that may go together with others waiting at the same moment: up to
/// [`WRITE_BATCH_MAX`] of them, of distinct conversations, as one statement (`WITH reserved_0 AS
/// (…), inserted_0 AS (…), reserved_1 AS (…), … SELECT 0 AS batch_slot, * FROM reserved_0 UNION
/// ALL …`, each part built by its caller's scoped builders), so one commit serves them all: a
/// commit waits for PostgreSQL to flush its log, which is most of a small write's cost. Each row
/// comes back tagged with the part it answers and goes to that write's caller only. If the
/// statement fails (one part's unique conflict fails them all), each write is run again alone,
/// so each gets its own outcome. With nothing else waiting, a write goes alone.
pub(super) async fn write_batched<T: FromRow>(pool: &Pool, write: Arc<dyn CombinedWrite>) -> StoreResult<Option<T>> {
    let (reply, answer) = oneshot::channel();
    let start_runner = {
        let mut writes = pool.0.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.waiting.push(Write {
            key: write.key(),
            shape: write.shape(),
            write,
            reply,
        });
        let start = writes.runners < pool.write_runners();
        if start {
            writes.runners += 1;
        }
        start
    };
    if start_runner {
        // A task of its own: the writes it takes are others' too, so no caller's cancellation
        // may stop it half-way.
        tokio::spawn(send_writes(pool.clone()));
    }
    let rows = answer
        .await
        .map_err(|_| StoreError::Unavailable("the database write was dropped".into()))??;
    Ok(decode(&rows)?.into_iter().next())
}

/// Takes a connection, then the writes waiting that may go together, runs them, and again,
/// until none that may go waits (one whose conversation another task is writing is left to
/// that task, which takes it next).
async fn send_writes(pool: Pool) {
    /// Gives the keys of the writes a task took back however it ends.
    struct Running<'a>(&'a Mutex<Writes>, Vec<u64>);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            let mut writes = self.0.lock().unwrap_or_else(|e| e.into_inner());
            for key in &self.1 {
                writes.running.remove(key);
            }
        }
    }
    let queue = &pool.0.writes;
    let mut runner = Runner(queue, true);
    while let Some((mut lease, taken)) = runner
        .next(&pool, |writes| {
            // Writes whose callers have gone (a deadline) are not run, as a cancelled
            // statement would not have been.
            writes.waiting.retain(|write| !write.reply.is_closed());
            writes.take()
        })
        .await
    {
        let _running = Running(queue, taken.iter().map(|w| w.key).collect());
        if taken.len() > 1 {
            let combined = combine_writes(taken.iter().map(|w| &*w.write));
            let rows = fetch(lease.connection(), &combined).await;
            let rows = match rows {
                // Nothing of it was done: each goes again alone, below.
                Err(sqlx::Error::Database(error)) => {
                    tracing::debug!(%error, writes = taken.len(), "a combined write failed; each runs alone");
                    None
                }
                rows => Some(
                    lease
                        .settle(rows)
                        .map_err(StoreError::from)
                        .and_then(|rows| split(rows, taken.len())),
                ),
            };
            match rows {
                Some(Ok(parts)) => {
                    pool.0.combined_writes.fetch_add(parts.len() as u64, Ordering::Relaxed);
                    for (write, rows) in taken.into_iter().zip(parts) {
                        let _ = write.reply.send(Ok(rows));
                    }
                    continue;
                }
                Some(Err(error)) => {
                    for write in taken {
                        let _ = write.reply.send(Err(error.duplicate()));
                    }
                    continue;
                }
                None => {}
            }
        }
        for write in taken {
            let alone = combine_writes(std::iter::once(&*write.write));
            let rows = fetch(lease.connection(), &alone).await;
            let outcome = lease
                .settle(rows)
                .map_err(StoreError::from)
                .and_then(|rows| split(rows, 1))
                .map(|mut parts| parts.pop().unwrap_or_default());
            let _ = write.reply.send(outcome);
        }
    }
}

/// `WITH <each write's expressions, named by its slot> SELECT 0 AS batch_slot, * FROM <the
/// first's answer> UNION ALL (SELECT 1 AS batch_slot, * FROM <the second's>) …`.
pub(super) fn combine_writes<'a>(writes: impl IntoIterator<Item = &'a dyn CombinedWrite>) -> WithQuery {
    let mut with = WithClause::new();
    let mut combined: Option<SelectStatement> = None;
    for (slot, write) in writes.into_iter().enumerate() {
        let (expressions, answer) = write.parts(slot);
        for expression in expressions {
            with.cte(expression);
        }
        let mut part = Query::select();
        part.expr_as(Expr::cust(slot.to_string()), Alias::new(BATCH_SLOT))
            .column(Asterisk)
            .from(Alias::new(answer));
        match &mut combined {
            None => combined = Some(part),
            Some(combined) => {
                combined.union(sea_query::UnionType::All, part);
            }
        }
    }
    combined.unwrap_or_default().with(with)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that only has a key.
    struct Keyed(u64);

    impl CombinedWrite for Keyed {
        fn key(&self) -> u64 {
            self.0
        }
        fn shape(&self) -> u64 {
            0
        }
        fn parts(&self, _slot: usize) -> (Vec<sea_query::CommonTableExpression>, String) {
            (Vec::new(), String::new())
        }
    }

    #[test]
    fn writes_of_one_conversation_never_go_together_nor_at_once() {
        let keys = |writes: &[Write]| writes.iter().map(|w| w.key).collect::<Vec<_>>();
        let mut writes = Writes::default();
        let mut answers = Vec::new();
        let mut push = |writes: &mut Writes, key: u64, shape: u64| {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            writes.waiting.push(Write {
                key,
                shape,
                write: Arc::new(Keyed(key)),
                reply,
            });
        };
        for key in [1, 2, 1, 3, 2] {
            push(&mut writes, key, 0);
        }
        // Another task is writing conversation 3.
        writes.running.insert(3);
        assert_eq!(keys(&writes.take()), [1, 2]);
        assert_eq!(keys(&writes.waiting), [1, 3, 2], "the others keep their order");
        // 1 and 2 are being written now: nothing else may go until they are done.
        assert!(writes.take().is_empty());
        writes.running.clear();
        let taken = writes.take();
        assert_eq!(keys(&taken), [1, 3, 2]);
        // What was taken and will not be run is forgotten.
        writes.release(&taken);
        assert!(writes.running.is_empty());
        // At most WRITE_BATCH_MAX at once.
        for key in 0..(WRITE_BATCH_MAX as u64 + 3) {
            push(&mut writes, key, 0);
        }
        assert_eq!(writes.take().len(), WRITE_BATCH_MAX);
        assert_eq!(writes.waiting.len(), 3);
        // Only writes of the first one's shape go together.
        writes.waiting.clear();
        writes.running.clear();
        for (key, shape) in [(1, 7), (2, 8), (3, 7), (4, 8)] {
            push(&mut writes, key, shape);
        }
        assert_eq!(keys(&writes.take()), [1, 3]);
        assert_eq!(keys(&writes.take()), [2, 4]);
    }

    /// An insert of `value` into the table `t` of the schema `table`, which only takes positive
    /// values.
    struct Insert {
        table: String,
        value: i64,
    }

    impl CombinedWrite for Insert {
        fn key(&self) -> u64 {
            self.value as u64
        }
        fn shape(&self) -> u64 {
            0
        }
        fn parts(&self, slot: usize) -> (Vec<sea_query::CommonTableExpression>, String) {
            let name = format!("inserted_{slot}");
            let mut insert = Query::insert();
            insert
                .into_table((Alias::new(&self.table), Alias::new("t")))
                .columns([Alias::new("last_seq")])
                .values_panic([self.value.into()])
                .returning_col(Alias::new("last_seq"));
            let expression = sea_query::CommonTableExpression::new()
                .query(insert)
                .table_name(Alias::new(&name))
                .to_owned();
            (vec![expression], name)
        }
    }

    struct Value {
        last_seq: i64,
    }
    crate::from_row!(Value { last_seq });

    /// Three writes go in one statement; one part fails (a check constraint), so nothing of the
    /// statement is kept and each runs again alone: the two good ones are stored once each, and
    /// only the bad one's caller hears of its failure.
    #[tokio::test]
    async fn a_failing_part_fails_only_its_own_write() {
        let url = std::env::var("CONFIDANT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let options = DbOptions {
            max_connections: 1,
            ..DbOptions::default()
        };
        let pool = match Pool::connect(&url, &options).await {
            Ok(pool) => pool,
            Err(error) if std::env::var("CONFIDANT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
                panic!("PostgreSQL is required (CONFIDANT_REQUIRE_POSTGRES=1) but unreachable at {url}: {error}")
            }
            Err(error) => {
                eprintln!("PostgreSQL is not reachable at {url}: skipped ({error})");
                return;
            }
        };
        let schema = format!("combined_writes_{}", uuid::Uuid::now_v7().simple());
        run_script(
            &pool,
            &format!(
                "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (last_seq BIGINT NOT NULL CHECK (last_seq > 0));"
            ),
        )
        .await
        .unwrap();
        let write = |value| {
            let pool = pool.clone();
            let insert = Arc::new(Insert {
                table: schema.clone(),
                value,
            });
            async move { write_batched::<Value>(&pool, insert).await }
        };
        // On this (current-thread) runtime all three wait before the task that sends them runs.
        let (one, bad, two) = tokio::join!(write(1), write(-1), write(2));
        assert_eq!(one.unwrap().map(|v| v.last_seq), Some(1));
        assert_eq!(two.unwrap().map(|v| v.last_seq), Some(2));
        assert!(matches!(bad, Err(StoreError::Other(_))), "{:?}", bad.err());
        let stored: Vec<Value> = rows(
            &pool,
            &Query::select()
                .column(Alias::new("last_seq"))
                .from((Alias::new(&schema), Alias::new("t")))
                .order_by(Alias::new("last_seq"), Order::Asc)
                .to_owned(),
        )
        .await
        .unwrap();
        assert_eq!(stored.iter().map(|v| v.last_seq).collect::<Vec<_>>(), [1, 2]);
        // They did go together first (the combined statement failed, so it counts none), and
        // together they go when nothing fails.
        let (three, four) = tokio::join!(write(3), write(4));
        assert_eq!(
            (three.unwrap().unwrap().last_seq, four.unwrap().unwrap().last_seq),
            (3, 4)
        );
        assert_eq!(pool.combined_writes(), 2);
        run_script(&pool, &format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
