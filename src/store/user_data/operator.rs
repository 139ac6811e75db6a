//! An application's administrators looking across its users' conversations: browse them (with
//! whose they are) and purge old ones. Every statement starts from `select_all_users` or
//! `delete_all_users` with the caller's `AppAccess`.

use sea_query::{Expr, ExprTrait, SelectStatement};
use uuid::Uuid;

use super::conversations::{CONVERSATION_COLUMNS, Conversation};
use super::tables::{Conversations, Memories};
use super::{RecentCursor, delete_all_users, newest_first, select_all_users, sub_column};
use crate::store::row::{FromRow, Row};
use crate::store::scope::AppAccess;
use crate::store::{Db, StoreResult};

/// Which conversations an administrator browses: by agent, user and last activity.
#[derive(Debug, Clone, Default)]
pub struct BrowseFilter {
    pub agent_id: Option<Uuid>,
    pub sub: Option<String>,
    /// Updated at or after (microseconds).
    pub from: Option<i64>,
    /// Updated at or before (microseconds).
    pub to: Option<i64>,
}

/// A conversation and whose it is.
#[derive(Debug, Clone)]
pub struct UserConversation {
    pub sub: String,
    pub conversation: Conversation,
}

impl FromRow for UserConversation {
    fn from_row(row: &Row<'_>) -> StoreResult<Self> {
        Ok(Self {
            sub: row.get("sub")?,
            conversation: Conversation::from_row(row)?,
        })
    }
}

fn browse_statement(
    access: &AppAccess,
    filter: &BrowseFilter,
    limit: u64,
    after: Option<RecentCursor>,
) -> SelectStatement {
    let mut query = select_all_users::<Conversations>(access);
    query
        .columns(CONVERSATION_COLUMNS.map(|c| (Conversations::Table, c)))
        .column(sub_column::<Conversations>());
    if let Some(agent) = filter.agent_id {
        query.and_where(Expr::col(Conversations::AgentId).eq(agent));
    }
    if let Some(sub) = &filter.sub {
        query.and_where(Expr::col(sub_column::<Conversations>()).eq(sub.as_str()));
    }
    if let Some(from) = filter.from {
        query.and_where(Expr::col(Conversations::UpdatedAt).gte(from));
    }
    if let Some(to) = filter.to {
        query.and_where(Expr::col(Conversations::UpdatedAt).lte(to));
    }
    newest_first(
        &mut query,
        (Conversations::UpdatedAt, Conversations::Id),
        limit + 1,
        after,
    );
    query
}

/// The application's conversations, most recently updated first, a page at a time.
pub async fn browse_conversations(
    db: &Db,
    access: &AppAccess,
    filter: &BrowseFilter,
    limit: u64,
    after: Option<RecentCursor>,
) -> StoreResult<(Vec<UserConversation>, Option<RecentCursor>)> {
    let mut rows: Vec<UserConversation> = db.rows(&browse_statement(access, filter, limit, after)).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = more
        .then(|| rows.last())
        .flatten()
        .map(|c| c.conversation.position_cursor());
    Ok((rows, next))
}

/// Conversations deleted per transaction by a purge: their messages go with them, so a batch is
/// kept small enough not to hold the writer (or a PostgreSQL lock) for long.
const PURGE_BATCH: u64 = 100;

fn purge_statement(access: &AppAccess, agent_id: Option<Uuid>, before: i64) -> sea_query::DeleteStatement {
    let mut victims = select_all_users::<Conversations>(access);
    victims
        .column(Conversations::Id)
        .and_where(Expr::col(Conversations::UpdatedAt).lt(before))
        .limit(PURGE_BATCH);
    if let Some(agent) = agent_id {
        victims.and_where(Expr::col(Conversations::AgentId).eq(agent));
    }
    let mut delete = delete_all_users::<Conversations>(access);
    delete.and_where(Expr::col(Conversations::Id).in_subquery(victims));
    delete
}

/// Deletes the application's conversations (of one agent, if given) not updated since `before`,
/// with their messages, in batches; returns how many went.
pub async fn purge_conversations(db: &Db, access: &AppAccess, agent_id: Option<Uuid>, before: i64) -> StoreResult<u64> {
    db.execute_in_batches(PURGE_BATCH, || purge_statement(access, agent_id, before))
        .await
}

fn purge_memories_statement(access: &AppAccess, before: i64) -> sea_query::DeleteStatement {
    let mut victims = select_all_users::<Memories>(access);
    victims
        .column(Memories::Id)
        .and_where(Expr::col(Memories::UpdatedAt).lt(before))
        .limit(PURGE_BATCH);
    let mut delete = delete_all_users::<Memories>(access);
    delete.and_where(Expr::col(Memories::Id).in_subquery(victims));
    delete
}

/// Deletes the application's memory records not written since `before`, in batches (their
/// full-text entries go with them); returns how many went.
pub async fn purge_memories(db: &Db, access: &AppAccess, before: i64) -> StoreResult<u64> {
    db.execute_in_batches(PURGE_BATCH, || purge_memories_statement(access, before))
        .await
}

#[cfg(test)]
mod tests {
    use sea_query::{SqliteQueryBuilder, Value};

    use super::*;
    use crate::store::scope::Role;

    #[test]
    fn browse_and_purge_stay_in_the_application() {
        let app = Uuid::now_v7();
        let access = AppAccess::granted(app, Role::Admin);
        let filter = BrowseFilter {
            agent_id: Some(Uuid::now_v7()),
            sub: Some("u".into()),
            from: Some(1),
            to: Some(2),
        };
        for (sql, values) in [
            browse_statement(&access, &filter, 10, None).build(SqliteQueryBuilder),
            purge_statement(&access, None, 5).build(SqliteQueryBuilder),
            purge_memories_statement(&access, 5).build(SqliteQueryBuilder),
        ] {
            assert!(sql.contains("\"application_id\" = ?"), "{sql}");
            let bound = values.0.iter().filter(|v| **v == Value::Uuid(Some(app))).count();
            assert!(bound >= 1, "{sql} {values:?}");
        }
        // The purges' inner selects are bounded and in the application too.
        for (sql, values) in [
            purge_statement(&access, None, 5).build(SqliteQueryBuilder),
            purge_memories_statement(&access, 5).build(SqliteQueryBuilder),
        ] {
            assert!(sql.contains("LIMIT"), "{sql}");
            assert_eq!(
                values.0.iter().filter(|v| **v == Value::Uuid(Some(app))).count(),
                2,
                "{sql}"
            );
        }
    }
}
