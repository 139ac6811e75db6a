//! Storage: one code path over SQLite and PostgreSQL.
//!
//! Queries are built once with sea-query, rendered for the connected backend and bound with
//! sea-query-sqlx. Row types derive `sqlx::FromRow` and use only types both drivers decode (UUIDs,
//! `i64` microsecond timestamps, text, JSON, bytes). A `match` on the backend appears only where the
//! dialects truly differ.
//!
//! SQLite allows one writer at a time, so it gets two pools: many readers, one writer. Writes queue
//! in the writer pool instead of failing with `SQLITE_BUSY`. The queries behind every end-user
//! request run on SQLite through `lite` instead (same sea-query statements, no thread hop per
//! statement, writes committed in groups): `Db::rows`, `Db::row` and `Db::execute`.

pub mod agents;
pub mod applications;
pub mod keys;
pub mod lite;
pub mod operators;
pub mod providers;
pub mod schema;
pub mod user_data;

use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sea_query::{
    DeleteStatement, InsertStatement, PostgresQueryBuilder, SelectStatement, SqliteQueryBuilder, UpdateStatement,
    WithQuery,
};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, FromRow, PgPool, SqlStr, SqlitePool};

use crate::error::BoxError;

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

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                Self::Unavailable(Box::new(err))
            }
            sqlx::Error::Database(ref db) => {
                if db.is_unique_violation() {
                    // SQLite reports no constraint name; its message names the table and columns.
                    return Self::Conflict(conflict_message(db.constraint().unwrap_or(db.message())));
                }
                Self::Other(Box::new(err))
            }
            other => Self::Other(Box::new(other)),
        }
    }
}

/// Turns a unique-constraint name (PostgreSQL) or message (SQLite) into a sentence for the client.
fn conflict_message(constraint: &str) -> String {
    const KNOWN: &[(&str, &str)] = &[
        ("agents", "an agent with this name already exists in the application"),
        (
            "providers",
            "a provider with this name already exists in the application",
        ),
        (
            "authentication_keys",
            "an authentication key with this name already exists in the application",
        ),
        (
            "api_keys",
            "an API key with this name already exists in the application",
        ),
        ("memberships", "this operator is already a member of the application"),
        ("operators", "an operator with this email already exists"),
        ("conversations", "a conversation with this id already exists"),
    ];
    KNOWN
        .iter()
        .find(|(table, _)| constraint.contains(table))
        .map(|(_, message)| (*message).to_owned())
        .unwrap_or_else(|| "this conflicts with an existing record".to_owned())
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The connection pools of the configured database.
#[derive(Clone)]
pub enum Db {
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        lite: Arc<lite::Lite>,
    },
    Postgres(PgPool),
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

macro_rules! migrations {
    ($($version:literal $name:literal),* $(,)?) => {
        fn migrator(backend: Backend) -> Migrator {
            let migrations = match backend {
                Backend::Sqlite => vec![$(
                    Migration::new($version, Cow::Borrowed($name), MigrationType::Simple,
                        SqlStr::from_static(include_str!(concat!("../../migrations/sqlite/", $name, ".sql"))), false),
                )*],
                Backend::Postgres => vec![$(
                    Migration::new($version, Cow::Borrowed($name), MigrationType::Simple,
                        SqlStr::from_static(include_str!(concat!("../../migrations/postgres/", $name, ".sql"))), false),
                )*],
            };
            Migrator::with_migrations(migrations)
        }
    };
}

// Both backends share one list, so a migration cannot exist for one database and not the other.
migrations! {
    1 "0001_initial",
    2 "0002_conversation_last_seq",
    3 "0003_messages_owner_index",
    4 "0004_memory_search_by_owner",
}

/// Run by SQLite's writer thread about once a second while writes arrive. Every memory insert
/// leaves a small segment in the full-text index, and a search reads every segment: merging up to
/// 64 pages per round (only levels with enough segments, so work stays proportional to what was
/// written) keeps searches from slowing down as memories arrive one at a time (measured: 107 µs →
/// 38 µs per search with 300 memories written one by one).
const SQLITE_MAINTENANCE: &[&str] = &["INSERT INTO memories_fts (memories_fts, rank) VALUES ('merge', 64)"];

/// Tunables for opening the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    /// Reader connections of a SQLite database (its writer is always one).
    pub sqlite_readers: u32,
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        Self {
            max_connections: (cores * 4).max(8),
            sqlite_readers: (cores * 2).max(2),
            acquire_timeout: Duration::from_secs(5),
        }
    }
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
                let connect = SqliteConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Unavailable(Box::new(e)))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Each commit is on disk before it is acknowledged.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(options.acquire_timeout.max(Duration::from_secs(30)))
                    .connect_with(connect.clone())
                    .await?;
                // Each sqlx SQLite connection is a thread with its own page cache. The hot reads run
                // on `lite`'s connections, so sqlx keeps only a couple, closed when idle.
                let readers = options.max_connections.min(options.sqlite_readers);
                let read = SqlitePoolOptions::new()
                    .max_connections(readers.min(2))
                    .idle_timeout(Duration::from_secs(60))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect.read_only(true))
                    .await?;
                let lite = Arc::new(lite::Lite::open(&path, readers as usize, SQLITE_MAINTENANCE)?);
                Ok(Self::Sqlite { read, write, lite })
            }
            Some(Backend::Postgres) => {
                let connect = PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await?;
                Ok(Self::Postgres(pool))
            }
            None => Err(StoreError::Unavailable(
                "unsupported database URL (expected sqlite://PATH or postgres://...)".into(),
            )),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite { .. } => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the migrations this build carries that the database has not seen yet.
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrator = migrator(self.backend());
        let result = match self {
            Self::Sqlite { write, .. } => migrator.run(write).await,
            Self::Postgres(pool) => migrator.run(pool).await,
        };
        result.map_err(|e| StoreError::Other(Box::new(e)))
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        let result = match self {
            Self::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.map(|_| ()),
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        };
        result.is_ok()
    }

    /// (labels, connections) of each pool, for `/metrics`.
    pub fn pool_state(&self) -> Vec<(&'static str, u64)> {
        fn of<D: sqlx::Database>(
            pool: &sqlx::Pool<D>,
            open: &'static str,
            idle: &'static str,
        ) -> [(&'static str, u64); 2] {
            [(open, u64::from(pool.size())), (idle, pool.num_idle() as u64)]
        }
        match self {
            Self::Sqlite { read, write, .. } => {
                let mut state = of(read, "pool=\"read\",state=\"open\"", "pool=\"read\",state=\"idle\"").to_vec();
                state.extend(of(
                    write,
                    "pool=\"write\",state=\"open\"",
                    "pool=\"write\",state=\"idle\"",
                ));
                state
            }
            Self::Postgres(pool) => of(pool, "pool=\"main\",state=\"open\"", "pool=\"main\",state=\"idle\"").to_vec(),
        }
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite { read, write, lite } => {
                lite.close();
                read.close().await;
                write.close().await;
            }
            Self::Postgres(pool) => pool.close().await,
        }
    }

    /// Starts a transaction (on SQLite, on the writer connection, holding the write lock from the
    /// start so it cannot fail half-way because another connection wrote first).
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(match self {
            Self::Sqlite { write, .. } => Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    pub async fn fetch_all<T: Record>(&self, query: &SelectStatement) -> StoreResult<Vec<T>> {
        Ok(match self {
            Self::Sqlite { read, .. } => {
                let (sql, values) = query.build_sqlx(SqliteQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_all(read)
                    .await?
            }
            Self::Postgres(pool) => {
                let (sql, values) = query.build_sqlx(PostgresQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    pub async fn fetch_optional<T: Record>(&self, query: &SelectStatement) -> StoreResult<Option<T>> {
        Ok(match self {
            Self::Sqlite { read, .. } => {
                let (sql, values) = query.build_sqlx(SqliteQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(read)
                    .await?
            }
            Self::Postgres(pool) => {
                let (sql, values) = query.build_sqlx(PostgresQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(pool)
                    .await?
            }
        })
    }

    pub async fn fetch_one<T: Record>(&self, query: &SelectStatement) -> StoreResult<T> {
        self.fetch_optional(query).await?.ok_or(StoreError::NotFound)
    }

    /// The SQLite hot-path connections, if this is SQLite.
    pub fn lite(&self) -> Option<&lite::Lite> {
        match self {
            Self::Sqlite { lite, .. } => Some(lite),
            Self::Postgres(_) => None,
        }
    }

    /// Runs a select whose rows both sqlx and `lite` decode (on SQLite, on this thread).
    pub async fn rows<T: Row>(&self, query: &SelectStatement) -> StoreResult<Vec<T>> {
        match self {
            Self::Sqlite { lite, .. } => lite.read(|connection| lite::select(connection, query)),
            Self::Postgres(_) => self.fetch_all(query).await,
        }
    }

    /// The first row of `rows`, if any.
    pub async fn row<T: Row>(&self, query: &SelectStatement) -> StoreResult<Option<T>> {
        Ok(self.rows(query).await?.into_iter().next())
    }

    /// Runs a write and returns how many rows it touched (on SQLite, group-committed by `lite`).
    pub async fn execute(&self, statement: impl Write) -> StoreResult<u64> {
        Ok(match self {
            Self::Sqlite { lite, .. } => {
                let statement = lite::Built::of(&statement);
                lite.write(move |connection| Ok(lite::execute(connection, statement)? as u64))
                    .await?
            }
            Self::Postgres(pool) => {
                let (sql, values) = statement.build(Backend::Postgres);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Runs a write with a `RETURNING` clause and decodes the row it returns, if any.
    pub async fn write_returning<T: Record>(&self, statement: impl Write) -> StoreResult<Option<T>> {
        Ok(match self {
            Self::Sqlite { write, .. } => {
                let (sql, values) = statement.build(Backend::Sqlite);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(write)
                    .await?
            }
            Self::Postgres(pool) => {
                let (sql, values) = statement.build(Backend::Postgres);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(pool)
                    .await?
            }
        })
    }
}

/// An open transaction on either backend.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn commit(self) -> StoreResult<()> {
        match self {
            Self::Sqlite(tx) => tx.commit().await?,
            Self::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub async fn fetch_optional<T: Record>(&mut self, query: &SelectStatement) -> StoreResult<Option<T>> {
        Ok(match self {
            Self::Sqlite(tx) => {
                let (sql, values) = query.build_sqlx(SqliteQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            Self::Postgres(tx) => {
                let (sql, values) = query.build_sqlx(PostgresQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        })
    }

    pub async fn fetch_all<T: Record>(&mut self, query: &SelectStatement) -> StoreResult<Vec<T>> {
        Ok(match self {
            Self::Sqlite(tx) => {
                let (sql, values) = query.build_sqlx(SqliteQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_all(&mut **tx)
                    .await?
            }
            Self::Postgres(tx) => {
                let (sql, values) = query.build_sqlx(PostgresQueryBuilder);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_all(&mut **tx)
                    .await?
            }
        })
    }

    pub async fn execute(&mut self, statement: impl Write) -> StoreResult<u64> {
        Ok(match self {
            Self::Sqlite(tx) => {
                let (sql, values) = statement.build(Backend::Sqlite);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
            Self::Postgres(tx) => {
                let (sql, values) = statement.build(Backend::Postgres);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    pub async fn write_returning<T: Record>(&mut self, statement: impl Write) -> StoreResult<Option<T>> {
        Ok(match self {
            Self::Sqlite(tx) => {
                let (sql, values) = statement.build(Backend::Sqlite);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            Self::Postgres(tx) => {
                let (sql, values) = statement.build(Backend::Postgres);
                sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), values)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        })
    }
}

/// A row type both drivers can decode.
pub trait Record: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}
impl<T> Record for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

/// A row type of the hot paths: sqlx (PostgreSQL) and `lite` (SQLite) decode it.
pub trait Row: Record + lite::FromRow {}
impl<T: Record + lite::FromRow> Row for T {}

/// A statement that changes rows: insert, update or delete.
pub trait Write {
    fn build(&self, backend: Backend) -> (String, SqlxValues);
}

macro_rules! impl_write {
    ($($statement:ty),*) => {$(
        impl Write for $statement {
            fn build(&self, backend: Backend) -> (String, SqlxValues) {
                match backend {
                    Backend::Sqlite => self.build_sqlx(SqliteQueryBuilder),
                    Backend::Postgres => self.build_sqlx(PostgresQueryBuilder),
                }
            }
        }
        impl Write for &mut $statement {
            fn build(&self, backend: Backend) -> (String, SqlxValues) {
                Write::build(&**self, backend)
            }
        }
    )*};
}
impl_write!(InsertStatement, UpdateStatement, DeleteStatement, WithQuery);

/// Deletes the row of `table` with this id if it belongs to this application (the shape of every
/// admin-plane delete). Returns whether a row went.
pub async fn delete_in_application<T>(
    db: &Db,
    table: T,
    app_column: T,
    id_column: T,
    app_id: uuid::Uuid,
    id: uuid::Uuid,
) -> StoreResult<bool>
where
    T: sea_query::Iden + Copy + 'static,
{
    use sea_query::{Expr, ExprTrait, Query};
    let deleted = db
        .execute(
            Query::delete()
                .from_table(table)
                .and_where(Expr::col(app_column).eq(app_id))
                .and_where(Expr::col(id_column).eq(id)),
        )
        .await?;
    Ok(deleted > 0)
}

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// One count, for `SELECT COUNT(*) AS n`.
#[derive(Debug, sqlx::FromRow)]
pub struct Count {
    pub n: i64,
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
