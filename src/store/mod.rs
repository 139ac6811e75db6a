//! Storage: one code path over SQLite and PostgreSQL.
//!
//! Statements are built once with sea-query and run through one small executor API whose names
//! do not depend on the database: `Db::rows` / `Db::row` (reads), `Db::execute` (a write),
//! `Db::transaction` (several statements, all or nothing; the body is the same `async` code on
//! both). SQLite runs on rusqlite (`sqlite`: one group-committing writer thread, readers on the
//! calling thread); PostgreSQL on sqlx (`postgres`). Each row type is decoded once (`row`). A
//! `match` on the backend appears only where the dialects truly differ.
//!
//! Each aggregate has its file. End users' data (`user_data`) is reached only through the scopes
//! of `scope` (`UserScope`, `AgentScope`, `MemoryOwner`), the admin plane's rows only through an
//! `ApplicationId` an access check proved; `notices` tells other instances what changed, inside the
//! changing transaction; `cache` keeps hot rows in memory.

pub mod agents;
pub mod applications;
pub mod cache;
pub mod keys;
mod migrations;
pub mod notices;
pub mod operators;
mod postgres;
pub mod providers;
pub mod row;
pub mod schema;
pub mod scope;
mod sqlite;
pub use sqlite::Locking as SqliteLocking;
pub mod user_data;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sea_query::{
    DeleteStatement, InsertStatement, QueryBuilder, QueryStatementWriter, SelectStatement, SqliteQueryBuilder,
    UpdateStatement, Values, WithQuery,
};
use sqlx::PgPool;

pub use self::row::{Column, Count, FromRow, Json, Row};

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Storage failures, kept apart from HTTP errors; `crate::error::Error` maps them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint was hit; the message names what is taken.
    #[error("{0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(BoxError),
    #[error(transparent)]
    Other(BoxError),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// The same failure again, for each of the callers one statement served (a boxed error
    /// cannot be cloned: its message is kept).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::NotFound => Self::NotFound,
            Self::Conflict(message) => Self::Conflict(message.clone()),
            Self::Unavailable(error) => Self::Unavailable(error.to_string().into()),
            Self::Other(error) => Self::Other(error.to_string().into()),
        }
    }
}

/// Reads that PostgreSQL may answer together (`Db::rows_batched`): the hot ones, which many users
/// make at once. Each names the output columns its statement orders its rows by (descending), so
/// a combined statement keeps each part's order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Batch {
    /// The first page of a user's conversations with an agent.
    Conversations,
    /// One conversation with the first page of its messages.
    Conversation,
}

impl Batch {
    const KINDS: usize = 2;

    fn newest_first(self) -> &'static [&'static str] {
        match self {
            Self::Conversations => &["updated_at", "id"],
            Self::Conversation => &["message_seq"],
        }
    }
}

/// A write PostgreSQL may run in one statement with others waiting at the same moment
/// (`Db::write_batched`), so that one commit, one round trip and one wake-up of the server
/// serve them all. It is written as common table expressions (`WITH <name> AS (UPDATE …
/// RETURNING …), …`), named after its slot in the statement, one of which returns the rows that
/// answer it; every such write returns a conversation's columns and `last_seq`.
pub(crate) trait CombinedWrite: Send + Sync + 'static {
    /// The conversation it writes to: writes with the same key never go in one statement, nor
    /// in two running at once (a statement must not update a row twice, and two statements that
    /// share no row cannot wait for each other).
    fn key(&self) -> u64;
    /// Its statement's shape: only writes of one shape go together, so the texts sent repeat (and
    /// stay prepared) whatever order the writes came in.
    fn shape(&self) -> u64;
    /// Its common table expressions, with names of `slot`'s own, and the name of the one whose
    /// rows answer it.
    fn parts(&self, slot: usize) -> (Vec<sea_query::CommonTableExpression>, String);
}

/// The unique constraints a client can run into, by their PostgreSQL name and the columns SQLite
/// names in its message, with what to tell the client.
const CONSTRAINTS: &[(&str, &str, &str)] = &[
    (
        "agents_application_name_key",
        "agents.application_id, agents.name",
        "an agent with this name already exists in the application",
    ),
    (
        "providers_application_name_key",
        "providers.application_id, providers.name",
        "a provider with this name already exists in the application",
    ),
    (
        "authentication_keys_application_name_key",
        "authentication_keys.application_id, authentication_keys.name",
        "an authentication key with this name already exists in the application",
    ),
    (
        "api_keys_application_name_key",
        "api_keys.application_id, api_keys.name",
        "an API key with this name already exists in the application",
    ),
    (
        "memberships_pkey",
        "memberships.application_id, memberships.operator_id",
        "this operator is already a member of the application",
    ),
    (
        "operators_email_key",
        "operators.email",
        "an operator with this email already exists",
    ),
    (
        "conversations_user_external_id_key",
        "conversations.application_id, conversations.sub, conversations.external_id",
        "a conversation with this id already exists",
    ),
];

/// A unique violation, named by a PostgreSQL constraint or SQLite's list of columns.
fn constraint_conflict(constraint: &str) -> StoreError {
    let message = CONSTRAINTS
        .iter()
        .find(|(postgres, sqlite, _)| constraint == *postgres || constraint == *sqlite)
        .map_or("this conflicts with an existing record", |(_, _, message)| message);
    StoreError::Conflict(message.to_owned())
}

/// A lock one instance at a time holds (`Db::exclusive`); released when dropped (on PostgreSQL
/// its connection is closed, which ends the session and its advisory lock, whatever happened).
pub struct ExclusiveLock(#[allow(dead_code)] Option<sqlx::PgConnection>);

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the SQLite database file lives, if the URL names one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

pub fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else {
        None
    }
}

/// Tunables for opening the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// PostgreSQL pool size.
    pub max_connections: u32,
    /// Idle reader connections kept by a SQLite database (its writer is always one).
    pub sqlite_readers: u32,
    /// Whether other processes may open the SQLite file while the service runs.
    pub sqlite_locking: sqlite::Locking,
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        Self {
            // Measured on 2 cores with PostgreSQL beside the service: 8 connections serve more
            // than 32 (each busy backend competes for the same cores; get one conversation
            // 11,400-12,100/s with 32, 13,200-15,100/s with 8, 10,800/s with 3), and 5,000
            // streaming turns started at once all begin within the acquire timeout (no longer
            // two round trips a statement, as under sqlx's pool, when 8 were too few).
            max_connections: (cores * 4).max(8),
            sqlite_readers: (cores * 2).max(2),
            sqlite_locking: sqlite::Locking::Shared,
            acquire_timeout: Duration::from_secs(15),
        }
    }
}

/// A statement sea-query renders for either database.
pub trait Statement: Send + Sync {
    fn build_for(&self, builder: impl QueryBuilder) -> (String, Values);
}

macro_rules! statements {
    ($($statement:ty),*) => {$(
        impl Statement for $statement {
            fn build_for(&self, builder: impl QueryBuilder) -> (String, Values) {
                QueryStatementWriter::build(self, builder)
            }
        }
    )*};
}
statements!(
    SelectStatement,
    InsertStatement,
    UpdateStatement,
    DeleteStatement,
    WithQuery
);

impl<S: Statement> Statement for &S {
    fn build_for(&self, builder: impl QueryBuilder) -> (String, Values) {
        (**self).build_for(builder)
    }
}

impl<S: Statement> Statement for &mut S {
    fn build_for(&self, builder: impl QueryBuilder) -> (String, Values) {
        (**self).build_for(builder)
    }
}

/// The body of a transaction: the same `async` code runs on both databases.
pub trait Transaction<T>: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, StoreResult<T>> + Send + 'static {}
impl<T, F> Transaction<T> for F where F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, StoreResult<T>> + Send + 'static {}

/// The configured database.
#[derive(Clone)]
pub struct Db(Engine);

#[derive(Clone)]
enum Engine {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(postgres::Pool),
}

impl Db {
    /// Opens the database the URL names (creating a SQLite file if missing) and checks it answers.
    pub async fn connect(url: &str, options: &DbOptions) -> StoreResult<Self> {
        match backend_of(url) {
            Some(Backend::Sqlite) => {
                // Every connection must see one database: an in-memory one would be private to
                // each connection.
                let Some(path) = sqlite_path(url) else {
                    return Err(StoreError::Unavailable(
                        "SQLite needs a file path (sqlite://PATH); in-memory databases are not supported".into(),
                    ));
                };
                let (readers, locking) = (options.sqlite_readers as usize, options.sqlite_locking);
                let engine = tokio::task::spawn_blocking(move || {
                    sqlite::Sqlite::open(&path, readers, locking, sqlite::MAINTENANCE)
                })
                .await
                .map_err(|e| StoreError::Other(Box::new(e)))??;
                Ok(Self(Engine::Sqlite(Arc::new(engine))))
            }
            Some(Backend::Postgres) => Ok(Self(Engine::Postgres(postgres::Pool::connect(url, options).await?))),
            None => Err(StoreError::Unavailable(
                "unsupported database URL (expected sqlite://PATH or postgres://...)".into(),
            )),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.0 {
            Engine::Sqlite(_) => Backend::Sqlite,
            Engine::Postgres(_) => Backend::Postgres,
        }
    }

    /// A pool of one PostgreSQL connection for what only PostgreSQL has (LISTEN).
    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.0 {
            Engine::Postgres(pool) => Some(pool.listener()),
            Engine::Sqlite(_) => None,
        }
    }

    /// Holds a lock that only one instance at a time may have (PostgreSQL: a session advisory
    /// lock on a connection of its own), or `None` when another instance holds it. SQLite has
    /// one process serving each file: the lock is always free. The lock ends with the value.
    pub async fn exclusive(&self, key: i64) -> StoreResult<Option<ExclusiveLock>> {
        match &self.0 {
            Engine::Sqlite(_) => Ok(Some(ExclusiveLock(None))),
            Engine::Postgres(pool) => Ok(postgres::try_advisory_lock(pool, key)
                .await?
                .map(|c| ExclusiveLock(Some(c)))),
        }
    }

    /// Applies the migrations this build carries that the database has not seen yet.
    pub async fn migrate(&self) -> StoreResult<()> {
        match &self.0 {
            Engine::Sqlite(sqlite) => sqlite.migrate().await,
            Engine::Postgres(pool) => postgres::migrate(pool).await,
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        let query = SelectStatement::new()
            .expr_as(sea_query::Expr::val(1i64), "n")
            .to_owned();
        self.rows::<Count>(&query).await.is_ok()
    }

    /// Reads answered so far by a statement they shared with others (PostgreSQL; `rows_batched`).
    pub fn combined_reads(&self) -> u64 {
        match &self.0 {
            Engine::Sqlite(_) => 0,
            Engine::Postgres(pool) => pool.combined_reads(),
        }
    }

    /// Writes run so far in a statement they shared with others (PostgreSQL; `write_batched`).
    pub fn combined_writes(&self) -> u64 {
        match &self.0 {
            Engine::Sqlite(_) => 0,
            Engine::Postgres(pool) => pool.combined_writes(),
        }
    }

    /// (labels, connections) of each pool, for `/metrics`.
    pub fn pool_state(&self) -> Vec<(&'static str, u64)> {
        match &self.0 {
            Engine::Sqlite(sqlite) => vec![
                ("pool=\"read\",state=\"idle\"", sqlite.idle_readers() as u64),
                ("pool=\"write\",state=\"open\"", u64::from(sqlite.is_open())),
            ],
            Engine::Postgres(pool) => {
                let (open, idle) = pool.state();
                vec![
                    ("pool=\"main\",state=\"open\"", open),
                    ("pool=\"main\",state=\"idle\"", idle),
                ]
            }
        }
    }

    pub async fn close(&self) {
        match &self.0 {
            Engine::Sqlite(sqlite) => {
                let sqlite = sqlite.clone();
                let _ = tokio::task::spawn_blocking(move || sqlite.close()).await;
            }
            Engine::Postgres(pool) => pool.close().await,
        }
    }

    /// Runs a query and decodes every row (on SQLite, on this thread, from a reader connection).
    pub async fn rows<T: FromRow>(&self, query: &impl Statement) -> StoreResult<Vec<T>> {
        match &self.0 {
            Engine::Sqlite(sqlite) => {
                let (sql, values) = query.build_for(SqliteQueryBuilder);
                sqlite.read(|connection| sqlite::rows(connection, &sql, values))
            }
            Engine::Postgres(pool) => postgres::rows(pool, query).await,
        }
    }

    /// The first row of `rows`, if any.
    pub async fn row<T: FromRow>(&self, query: &impl Statement) -> StoreResult<Option<T>> {
        Ok(self.rows(query).await?.into_iter().next())
    }

    /// `rows`, for a read of `kind`'s shape. On PostgreSQL it may go in one statement with others
    /// of its kind waiting at the same moment (`postgres::rows_batched`); SQLite answers in the
    /// process and runs it alone.
    pub(crate) async fn rows_batched<T: FromRow>(&self, kind: Batch, query: SelectStatement) -> StoreResult<Vec<T>> {
        match &self.0 {
            Engine::Sqlite(_) => self.rows(&query).await,
            Engine::Postgres(pool) => postgres::rows_batched(pool, kind, query).await,
        }
    }

    /// Runs a write that may go in one statement with others waiting at the same moment
    /// (`CombinedWrite`), and decodes the row that answers it, if any. PostgreSQL only: SQLite has
    /// no writes inside `WITH`, and commits many writes together on its writer thread anyway.
    pub(crate) async fn write_batched<T: FromRow>(&self, write: Arc<dyn CombinedWrite>) -> StoreResult<Option<T>> {
        match &self.0 {
            Engine::Sqlite(_) => Err(StoreError::Other("a combined write runs on PostgreSQL only".into())),
            Engine::Postgres(pool) => postgres::write_batched(pool, write).await,
        }
    }

    /// Runs one write and returns how many rows it touched.
    pub async fn execute(&self, statement: impl Statement) -> StoreResult<u64> {
        match &self.0 {
            Engine::Sqlite(sqlite) => {
                // Rendered here, owned, and run as is on the writer thread.
                let (sql, values) = statement.build_for(SqliteQueryBuilder);
                sqlite
                    .transaction(move |tx| Box::pin(async move { tx.sqlite_execute(&sql, values) }))
                    .await
            }
            Engine::Postgres(pool) => postgres::execute(pool, &statement).await,
        }
    }

    /// Runs a bounded delete (`statement()` touches at most `batch` rows) until a run touches
    /// fewer, letting other work in between, so a large purge never holds the database long.
    /// Returns how many rows went.
    pub async fn execute_in_batches<S: Statement>(&self, batch: u64, statement: impl Fn() -> S) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let touched = self.execute(statement()).await?;
            total += touched;
            if touched < batch {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Runs one write with a `RETURNING` clause and decodes the row it returns, if any.
    pub async fn returning<T: FromRow>(&self, statement: impl Statement) -> StoreResult<Option<T>> {
        match &self.0 {
            Engine::Sqlite(sqlite) => {
                let (sql, values) = statement.build_for(SqliteQueryBuilder);
                sqlite
                    .transaction(move |tx| {
                        Box::pin(async move { Ok(tx.sqlite_rows(&sql, values)?.into_iter().next()) })
                    })
                    .await
            }
            Engine::Postgres(pool) => Ok(postgres::rows(pool, &statement).await?.into_iter().next()),
        }
    }

    /// Runs every statement in one transaction (one commit for a batch of writes).
    pub async fn execute_all<S: Statement + 'static>(&self, statements: Vec<S>) -> StoreResult<()> {
        if statements.is_empty() {
            return Ok(());
        }
        self.transaction(move |tx| {
            Box::pin(async move {
                for statement in &statements {
                    tx.execute(statement).await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Runs `body` in a transaction: committed if it returns `Ok`, rolled back if it returns an
    /// error. On SQLite it runs on the writer thread, and must await nothing but `tx`.
    pub async fn transaction<T, F>(&self, body: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        match &self.0 {
            Engine::Sqlite(sqlite) => sqlite.transaction(body).await,
            Engine::Postgres(pool) => {
                let mut tx = Tx(TxEngine::Postgres(postgres::Transaction::begin(pool).await?));
                let outcome = body(&mut tx).await;
                let TxEngine::Postgres(transaction) = tx.0 else {
                    unreachable!("a PostgreSQL transaction");
                };
                match outcome {
                    Ok(value) => {
                        transaction.end(true).await?;
                        Ok(value)
                    }
                    Err(error) => {
                        // Dropping it would roll back too; say so now, on this connection.
                        let _ = transaction.end(false).await;
                        Err(error)
                    }
                }
            }
        }
    }

    /// Runs a script of SQL statements in one transaction (for tests and tools, not requests).
    pub async fn run_script(&self, sql: &str) -> StoreResult<()> {
        match &self.0 {
            Engine::Sqlite(sqlite) => sqlite.run_script(sql).await,
            Engine::Postgres(pool) => postgres::run_script(pool, sql).await,
        }
    }
}

/// An open transaction on either database.
pub struct Tx(TxEngine);

enum TxEngine {
    Sqlite(sqlite::WriterConnection),
    Postgres(postgres::Transaction),
}

impl Tx {
    fn sqlite(connection: sqlite::WriterConnection) -> Self {
        Self(TxEngine::Sqlite(connection))
    }

    /// A statement already rendered for SQLite (`Db::execute` renders before the writer thread).
    fn sqlite_execute(&mut self, sql: &str, values: Values) -> StoreResult<u64> {
        match &self.0 {
            TxEngine::Sqlite(connection) => {
                sqlite::execute(&connection.lock().unwrap_or_else(|e| e.into_inner()), sql, values)
            }
            TxEngine::Postgres(_) => Err(StoreError::Other("SQLite SQL on a PostgreSQL transaction".into())),
        }
    }

    fn sqlite_rows<T: FromRow>(&mut self, sql: &str, values: Values) -> StoreResult<Vec<T>> {
        match &self.0 {
            TxEngine::Sqlite(connection) => {
                sqlite::rows(&connection.lock().unwrap_or_else(|e| e.into_inner()), sql, values)
            }
            TxEngine::Postgres(_) => Err(StoreError::Other("SQLite SQL on a PostgreSQL transaction".into())),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.0 {
            TxEngine::Sqlite(_) => Backend::Sqlite,
            TxEngine::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs a statement (a query, or a write with `RETURNING`) and decodes every row.
    pub async fn rows<T: FromRow>(&mut self, statement: &impl Statement) -> StoreResult<Vec<T>> {
        match &mut self.0 {
            TxEngine::Sqlite(_) => {
                let (sql, values) = statement.build_for(SqliteQueryBuilder);
                self.sqlite_rows(&sql, values)
            }
            TxEngine::Postgres(tx) => postgres::rows_on(tx.connection(), statement).await,
        }
    }

    /// The first row of `rows`, if any.
    pub async fn row<T: FromRow>(&mut self, statement: &impl Statement) -> StoreResult<Option<T>> {
        Ok(self.rows(statement).await?.into_iter().next())
    }

    /// Runs a write and returns how many rows it touched.
    pub async fn execute(&mut self, statement: &impl Statement) -> StoreResult<u64> {
        match &mut self.0 {
            TxEngine::Sqlite(_) => {
                let (sql, values) = statement.build_for(SqliteQueryBuilder);
                self.sqlite_execute(&sql, values)
            }
            TxEngine::Postgres(tx) => postgres::execute_on(tx.connection(), statement).await,
        }
    }
}

/// Deletes the row of `table` with this id if it belongs to this application (the shape of every
/// admin-plane delete), with `notice` for the other instances in the same transaction when the
/// row was cached somewhere. Returns whether a row went.
pub async fn delete_in_application<T>(
    db: &Db,
    table: T,
    app_column: T,
    id_column: T,
    app_id: scope::ApplicationId,
    id: uuid::Uuid,
    notice: Option<notices::Notice>,
) -> StoreResult<bool>
where
    T: sea_query::Iden + Copy + 'static,
{
    use sea_query::{Expr, ExprTrait, Query};
    let delete = Query::delete()
        .from_table(table)
        .and_where(Expr::col(app_column).eq(app_id))
        .and_where(Expr::col(id_column).eq(id))
        .to_owned();
    db.transaction(move |tx| {
        Box::pin(async move {
            let deleted = tx.execute(&delete).await? > 0;
            if let (true, Some(notice)) = (deleted, notice) {
                tx.notify(notice).await?;
            }
            Ok(deleted)
        })
    })
    .await
}

/// Microseconds in a day (timestamps are microseconds since the Unix epoch).
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A keyset page request over rows ordered by a UUIDv7 id, newest first.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u64,
    /// Return rows older than this id.
    pub before: Option<uuid::Uuid>,
}

impl PageRequest {
    /// Adds the keyset condition, order and limit (one extra row, to learn whether more exist).
    pub fn apply(&self, query: &mut SelectStatement, id: impl sea_query::IntoColumnRef + Copy) {
        if let Some(before) = self.before {
            query.and_where(sea_query::ExprTrait::lt(sea_query::Expr::col(id), before));
        }
        query.order_by(id, sea_query::Order::Desc).limit(self.limit + 1);
    }

    /// Splits the fetched rows into the page and the id to continue from.
    pub fn finish<T>(&self, mut rows: Vec<T>, id_of: impl Fn(&T) -> uuid::Uuid) -> (Vec<T>, Option<uuid::Uuid>) {
        let more = rows.len() as u64 > self.limit;
        rows.truncate(self.limit as usize);
        let next = if more { rows.last().map(&id_of) } else { None };
        (rows, next)
    }
}
