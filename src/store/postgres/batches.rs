//! Statements that go together: the hot reads of one kind (`rows_batched`) and the turns'
//! appends (`write_batched`), each queued and sent by a few tasks as one statement per batch, so
//! PostgreSQL's backend and this process are woken (and, for writes, a commit is flushed) once
//! for them all. Each part is its caller's own scoped statement; its rows go to that caller only.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use sea_query::{Alias, Asterisk, Expr, Order, Query, SelectStatement, WithClause, WithQuery};
use tokio::sync::oneshot;

use super::{Lease, Pool, decode, fetch};
use crate::store::{Batch, CombinedWrite, FromRow, StoreError, StoreResult};

impl Pool {
    /// How many tasks may send reads of one kind at once.
    fn batch_runners(&self) -> usize {
        (self.0.max_connections / CONNECTIONS_PER_BATCH_RUNNER).max(1) as usize
    }

    /// How many tasks may send writes at once: with the default pool (4 a core, at least 8),
    /// two on two cores, so one statement's commit is being flushed while the next is sent.
    fn write_runners(&self) -> usize {
        (self.0.max_connections / CONNECTIONS_PER_WRITE_RUNNER).max(1) as usize
    }
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
pub(super) struct Waiting {
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
pub(in crate::store) async fn rows_batched<T: FromRow>(
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
pub(super) struct Writes {
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
pub(in crate::store) async fn write_batched<T: FromRow>(
    pool: &Pool,
    write: Arc<dyn CombinedWrite>,
) -> StoreResult<Option<T>> {
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
pub(in crate::store) fn combine_writes<'a>(writes: impl IntoIterator<Item = &'a dyn CombinedWrite>) -> WithQuery {
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

#[cfg(test)]
mod tests {
    use super::super::{rows, run_script};
    use super::*;
    use crate::store::DbOptions;

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
