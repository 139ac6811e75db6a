//! PostgreSQL on sqlx: a connection pool, statements bound through sea-query-sqlx, sqlx's
//! migrator, and the mapping of its errors.

use std::str::FromStr;

use sea_query::PostgresQueryBuilder;
use sea_query_sqlx::SqlxValues;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres};

use super::row::{FromRow, Row};
use super::{DbOptions, Statement, StoreError, StoreResult, constraint_conflict};

/// A pooled connection idle this long is checked before it is used again.
const PING_WHEN_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// Statements kept prepared per connection (the service runs fewer distinct ones).
const STATEMENT_CACHE: usize = 512;

pub(super) async fn connect(url: &str, options: &DbOptions) -> StoreResult<PgPool> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?
        // Every distinct statement the service runs stays prepared on each connection.
        .statement_cache_capacity(STATEMENT_CACHE);
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        // sqlx pings a connection every time it leaves the pool by default: one more round trip
        // per statement (measured, release, 32 connections: list 7,800 -> 9,000/s). Only a
        // connection that sat idle a while (the kind a server restart or a firewall closes) is
        // pinged now, and discarded if it does not answer.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_WHEN_IDLE {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(connection).await.is_ok())
            })
        })
        .connect_with(connect)
        .await?)
}

/// Runs a statement and decodes every row it returns.
pub(super) async fn rows<'e, T: FromRow>(
    executor: impl sqlx::Executor<'e, Database = Postgres>,
    statement: &impl Statement,
) -> StoreResult<Vec<T>> {
    let (sql, values) = statement.build_for(PostgresQueryBuilder);
    let rows = sqlx::query_with(AssertSqlSafe(sql), SqlxValues(values))
        .fetch_all(executor)
        .await?;
    rows.iter().map(|row| T::from_row(&Row::Postgres(row))).collect()
}

/// Runs an insert, update or delete and returns how many rows it touched.
pub(super) async fn execute<'e>(
    executor: impl sqlx::Executor<'e, Database = Postgres>,
    statement: &impl Statement,
) -> StoreResult<u64> {
    let (sql, values) = statement.build_for(PostgresQueryBuilder);
    Ok(sqlx::query_with(AssertSqlSafe(sql), SqlxValues(values))
        .execute(executor)
        .await?
        .rows_affected())
}

/// A connection holding the session advisory lock `key`, or `None` if another session holds it.
/// The connection is closed rather than returned to the pool, so the lock never outlives it.
pub(super) async fn try_advisory_lock(
    pool: &PgPool,
    key: i64,
) -> StoreResult<Option<sqlx::pool::PoolConnection<Postgres>>> {
    let mut connection = pool.acquire().await?;
    connection.close_on_drop();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *connection)
        .await?;
    Ok(locked.then_some(connection))
}

pub(super) async fn migrate(pool: &PgPool) -> StoreResult<()> {
    super::migrations::postgres_migrator()
        .run(pool)
        .await
        .map_err(|e| StoreError::Other(Box::new(e)))
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
