//! The user's memory records, with full-text search.

use sea_query::{Condition, Expr, ExprTrait, Order, SelectStatement};
use serde_json::Value;
use uuid::Uuid;

use super::tables::Memories;
use super::{insert, select, update};
use crate::store::scope::{MemoryOwner, UserScope};
use crate::store::webhooks::{self, Event, EventType};
use crate::store::{Backend, Db, Json, PageRequest, StoreResult, now_micros};

/// A stored memory record.
#[derive(Debug, Clone)]
pub struct Memory {
    pub id: Uuid,
    /// `None`: the user's, app-wide.
    pub agent_id: Option<Uuid>,
    pub content: String,
    pub metadata: Json<Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::from_row!(Memory {
    id,
    agent_id,
    content,
    metadata,
    created_at,
    updated_at
});

const MEMORY_COLUMNS: [Memories; 6] = [
    Memories::Id,
    Memories::AgentId,
    Memories::Content,
    Memories::Metadata,
    Memories::CreatedAt,
    Memories::UpdatedAt,
];

/// `SELECT <memory> FROM memories WHERE <owner>`.
pub(super) fn of_user(scope: &UserScope) -> SelectStatement {
    select(scope, &MEMORY_COLUMNS)
}

fn by_id(scope: &UserScope, id: Uuid) -> SelectStatement {
    let mut query = of_user(scope);
    query.and_where(Expr::col((Memories::Table, Memories::Id)).eq(id));
    query
}

fn insert_statement(owner: &MemoryOwner, memory: &Memory) -> sea_query::InsertStatement {
    insert(
        owner.user(),
        &MEMORY_COLUMNS,
        vec![vec![
            Expr::val(memory.id),
            Expr::val(owner.agent_id()),
            Expr::val(memory.content.clone()),
            Expr::val(memory.metadata.0.clone()),
            Expr::val(memory.created_at),
            Expr::val(memory.updated_at),
        ]],
    )
}

/// Stores a memory record for its owner (one agent's, or the user's app-wide).
pub async fn create_memory(db: &Db, owner: &MemoryOwner, content: &str, metadata: &Value) -> StoreResult<Memory> {
    let now = now_micros();
    let memory = Memory {
        id: Uuid::now_v7(),
        agent_id: owner.agent_id(),
        content: content.to_owned(),
        metadata: Json(metadata.clone()),
        created_at: now,
        updated_at: now,
    };
    let user = owner.user();
    let event = user.notifies(EventType::MemoryCreated).then(|| {
        Event::new(
            EventType::MemoryCreated,
            serde_json::json!({
                "agent_id": memory.agent_id,
                "memory_id": memory.id,
                "user": user.sub(),
                "content": memory.content,
                "metadata": memory.metadata.0,
            }),
        )
    });
    webhooks::execute_noting(db, user.application_id(), insert_statement(owner, &memory), event).await?;
    Ok(memory)
}

pub async fn find_memory(db: &Db, scope: &UserScope, id: Uuid) -> StoreResult<Option<Memory>> {
    db.row(&by_id(scope, id)).await
}

fn update_statement(
    scope: &UserScope,
    id: Uuid,
    content: Option<&str>,
    metadata: Option<&Value>,
) -> sea_query::UpdateStatement {
    let mut update = update::<Memories>(scope);
    update.value(Memories::UpdatedAt, now_micros());
    if let Some(content) = content {
        update.value(Memories::Content, content);
    }
    if let Some(metadata) = metadata {
        update.value(Memories::Metadata, metadata.clone());
    }
    update.and_where(Expr::col((Memories::Table, Memories::Id)).eq(id));
    update
}

pub async fn update_memory(
    db: &Db,
    scope: &UserScope,
    id: Uuid,
    content: Option<&str>,
    metadata: Option<&Value>,
) -> StoreResult<Option<Memory>> {
    if db.execute(update_statement(scope, id, content, metadata)).await? == 0 {
        return Ok(None);
    }
    find_memory(db, scope, id).await
}

fn delete_statement(scope: &UserScope, id: Uuid) -> sea_query::DeleteStatement {
    super::delete::<Memories>(scope)
        .and_where(Expr::col((Memories::Table, Memories::Id)).eq(id))
        .to_owned()
}

pub async fn delete_memory(db: &Db, scope: &UserScope, id: Uuid) -> StoreResult<bool> {
    Ok(db.execute(delete_statement(scope, id)).await? > 0)
}

/// Which memories a listing or search covers.
#[derive(Debug, Clone, Copy)]
pub enum MemoryFilter {
    /// Everything the scope reaches.
    All,
    /// Only this agent's memories.
    Agent(Uuid),
    /// This agent's memories and the user's app-wide ones (what the agent's model is given).
    AgentOrShared(Uuid),
}

fn filtered(scope: &UserScope, filter: MemoryFilter) -> SelectStatement {
    let mut query = of_user(scope);
    let agent = Expr::col((Memories::Table, Memories::AgentId));
    match filter {
        MemoryFilter::All => {}
        MemoryFilter::Agent(agent_id) => {
            query.and_where(agent.eq(agent_id));
        }
        MemoryFilter::AgentOrShared(agent_id) => {
            query.cond_where(Condition::any().add(agent.clone().eq(agent_id)).add(agent.is_null()));
        }
    }
    query
}

/// The user's memories, newest first.
pub async fn list_memories(
    db: &Db,
    scope: &UserScope,
    filter: MemoryFilter,
    page: PageRequest,
) -> StoreResult<(Vec<Memory>, Option<Uuid>)> {
    let mut query = filtered(scope, filter);
    page.apply(&mut query, (Memories::Table, Memories::Id));
    Ok(page.finish(db.rows(&query).await?, |m: &Memory| m.id))
}

fn search_statement(
    backend: Backend,
    scope: &UserScope,
    filter: MemoryFilter,
    terms: &[String],
    limit: u64,
) -> SelectStatement {
    let mut query = filtered(scope, filter);
    match backend {
        Backend::Sqlite => {
            // Each term quoted as an FTS5 string: no query syntax reaches MATCH. The owner token
            // (see migration 0004) makes FTS5 walk only this user's memories. (sea-query wants the
            // backend's own placeholder in custom SQL: `?` here, `$1` for PostgreSQL.)
            let words = terms
                .iter()
                .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" OR ");
            let expression = format!("search_owner : \"{}\" AND content : ({words})", search_owner(scope));
            query
                .inner_join("memories_fts", Expr::cust("memories_fts.rowid = memories.rowid"))
                .and_where(Expr::cust_with_values("memories_fts MATCH ?", [expression]))
                // Rank by the content alone: every row matches its owner once.
                .order_by_expr(Expr::cust("bm25(memories_fts, 0.0, 1.0)"), Order::Asc);
        }
        Backend::Postgres => {
            // Terms hold only letters and digits (see `search_terms`), so `|` joins them safely.
            let expression = terms.join(" | ");
            query
                .and_where(Expr::cust_with_values(
                    "memories.search @@ to_tsquery('simple', $1)",
                    [expression.clone()],
                ))
                .order_by_expr(
                    Expr::cust_with_values("ts_rank(memories.search, to_tsquery('simple', $1))", [expression]),
                    Order::Desc,
                );
        }
    }
    query
        .order_by((Memories::Table, Memories::Id), Order::Desc)
        .limit(limit);
    query
}

/// Full-text search over the user's memories, best match first. `terms` are plain words; they are
/// matched as "any of these words" and ranked (bm25 on SQLite, ts_rank on PostgreSQL).
pub async fn search_memories(
    db: &Db,
    scope: &UserScope,
    filter: MemoryFilter,
    terms: &[String],
    limit: u64,
) -> StoreResult<Vec<Memory>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    db.rows(&search_statement(db.backend(), scope, filter, terms, limit))
        .await
}

/// The owner token SQLite's full-text index holds for each memory: `lower(hex(application_id)) ||
/// 'x' || lower(hex(sub))`, as the generated column `memories.search_owner` computes it.
fn search_owner(scope: &UserScope) -> String {
    use std::fmt::Write as _;
    let mut owner = String::with_capacity(33 + 2 * scope.sub().len());
    for byte in scope.application_id().uuid().as_bytes() {
        let _ = write!(owner, "{byte:02x}");
    }
    owner.push('x');
    for byte in scope.sub().as_bytes() {
        let _ = write!(owner, "{byte:02x}");
    }
    owner
}

/// Splits free text into search terms: runs of letters and digits, lower-cased, at most 32.
pub fn search_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .map(str::to_lowercase)
        .collect();
    terms.dedup();
    terms.truncate(32);
    terms
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{assert_owned, user};
    use super::*;
    use crate::store::scope::{AgentAccess, AgentScope};

    #[test]
    fn every_memory_statement_is_owned() {
        let agent = Uuid::now_v7();
        let scope = user(AgentAccess::Only(Arc::from([agent])));
        let memory = Memory {
            id: Uuid::now_v7(),
            agent_id: Some(agent),
            content: "likes tea".into(),
            metadata: Json(Value::Null),
            created_at: 0,
            updated_at: 0,
        };
        let owner = MemoryOwner::Agent(AgentScope::for_tests(scope.clone(), agent));
        assert_owned(&insert_statement(&owner, &memory), &scope);
        assert_owned(&by_id(&scope, memory.id), &scope);
        assert_owned(&update_statement(&scope, memory.id, Some("x"), None), &scope);
        assert_owned(&delete_statement(&scope, memory.id), &scope);
        let terms = search_terms("tea please");
        for filter in [
            MemoryFilter::All,
            MemoryFilter::Agent(agent),
            MemoryFilter::AgentOrShared(agent),
        ] {
            assert_owned(&filtered(&scope, filter), &scope);
            assert_owned(&search_statement(Backend::Sqlite, &scope, filter, &terms, 5), &scope);
            let (sql, values) =
                search_statement(Backend::Postgres, &scope, filter, &terms, 5).build(sea_query::PostgresQueryBuilder);
            assert!(sql.contains("\"memories\".\"application_id\" = $1"), "{sql}");
            assert!(
                values
                    .0
                    .contains(&sea_query::Value::String(Some(scope.sub().to_owned())))
            );
        }
    }
}
