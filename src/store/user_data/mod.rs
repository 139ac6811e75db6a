//! End users' data: conversations, messages and memory, one file per aggregate.
//!
//! Isolation is structural, and this file is where to check it:
//! - the tables are private to this module (`tables`);
//! - every statement on them starts from one of the roots below (`select`, `update`, `delete`,
//!   `insert`, `insert_selected`), which take a `UserScope` and add its filter (application, `sub`,
//!   and the key's agents) or its values; the admin plane's aggregates start from
//!   `select_all_users`, which takes an `AppAccess` and filters by its application;
//! - the files beside this one never name an owner column nor start a statement on a user table
//!   themselves (a test reads them to make sure), and a test renders every statement they build
//!   to show its filter.
//!
//! The functions take the narrowest scope that fits: `AgentScope` for anything about one agent
//! (conversations, inserts), `UserScope` for the user's memory and export, `MemoryOwner` for a
//! new memory record.

mod conversations;
mod export;
mod feedback;
mod memories;
mod messages;
mod operator;
mod revisions;
mod stats;
mod usage;

use sea_query::{
    Condition, DeleteStatement, Expr, ExprTrait, Iden, InsertStatement, Query, SelectStatement, SimpleExpr, UnionType,
    UpdateStatement,
};

pub use self::conversations::{
    Conversation, ListedMessage, LiveState, MessagePage, MessageVote, OpenedConversation, conversation_with_messages,
    delete_conversation, find_conversation, find_users_conversation, list_conversations, live_state, open_conversation,
    rename_conversation,
};
pub use self::export::{Erased, erase, export_conversations, export_memories, export_messages};
pub use self::feedback::{
    FeedbackEntry, FeedbackFilter, FeedbackOutcome, FeedbackRow, NewFeedback, Vote, delete_feedback, export_feedback,
    list_feedback, put_feedback,
};
pub use self::memories::{
    Memory, MemoryFilter, create_memory, delete_memory, find_memory, list_memories, search_memories, search_terms,
    update_memory,
};
pub use self::messages::{
    LiveMark, Message, MessageStatus, NewMessage, append_messages, append_reply, append_to_named, recent_messages,
    recent_tool_calls,
};
pub use self::operator::{BrowseFilter, UserConversation, browse_conversations, purge_conversations, purge_memories};
pub use self::revisions::{Revised, SentEntry, SentHistory, revise_history};
pub use self::stats::{AgentStats, agent_stats};
// (RecentCursor is defined below, beside the keyset paging it drives.)
pub use self::usage::{
    Day, GroupBy, Spent, UsageGroup, UsageQuery, UsageRow, UserSpending, add_usage, export_usage, tokens_on_day,
    usage_report,
};
use uuid::Uuid;

use crate::store::scope::{AgentAccess, AppAccess, UserScope};

mod tables {
    use sea_query::Iden;

    #[derive(Iden, Clone, Copy)]
    pub enum Conversations {
        Table,
        Id,
        ApplicationId,
        Sub,
        ExternalId,
        AgentId,
        Title,
        CreatedAt,
        UpdatedAt,
        LastSeq,
        LiveInstance,
    }

    #[derive(Iden, Clone, Copy)]
    pub enum Messages {
        Table,
        Id,
        ConversationId,
        ApplicationId,
        Sub,
        Seq,
        Role,
        Content,
        Status,
        ClientId,
        CreatedAt,
        SupersededAt,
        ToolCalls,
        ToolCallId,
    }

    #[derive(Iden, Clone, Copy)]
    pub enum Memories {
        Table,
        Id,
        ApplicationId,
        Sub,
        AgentId,
        Content,
        Metadata,
        CreatedAt,
        UpdatedAt,
    }

    #[derive(Iden, Clone, Copy)]
    pub enum Feedback {
        Table,
        MessageId,
        ApplicationId,
        Sub,
        AgentId,
        ConversationId,
        Vote,
        Comment,
        Tags,
        CreatedAt,
        UpdatedAt,
    }

    #[derive(Iden, Clone, Copy)]
    #[iden = "usage_daily"]
    pub enum Usage {
        Table,
        ApplicationId,
        Sub,
        Day,
        AgentId,
        Turns,
        InputTokens,
        OutputTokens,
    }
}

use tables::{Conversations, Feedback, Memories, Messages, Usage};

/// A table of user data: every row carries its owner's application and `sub`.
trait UserTable: Iden + Copy + 'static {
    const TABLE: Self;
    const APPLICATION_ID: Self;
    const SUB: Self;
    /// The agent a row belongs to, for keys that reach only some agents. Messages have none: they
    /// are reached through their conversation.
    const AGENT_ID: Option<Self>;
}

macro_rules! user_table {
    ($table:ident, $agent:expr) => {
        impl UserTable for $table {
            const TABLE: Self = $table::Table;
            const APPLICATION_ID: Self = $table::ApplicationId;
            const SUB: Self = $table::Sub;
            const AGENT_ID: Option<Self> = $agent;
        }
    };
}
user_table!(Conversations, Some(Conversations::AgentId));
user_table!(Messages, None);
user_table!(Memories, Some(Memories::AgentId));
user_table!(Feedback, Some(Feedback::AgentId));
// Usage counts against the user whichever agent their key reaches (a quota is the user's).
user_table!(Usage, None);

/// The usage counters' primary key, for adding to a counter that exists.
fn usage_key() -> [Usage; 4] {
    [Usage::ApplicationId, Usage::Sub, Usage::Day, Usage::AgentId]
}

/// The `sub` column, for aggregates that group by user (administrators' reports).
fn sub_column<T: UserTable>() -> (T, T) {
    (T::TABLE, T::SUB)
}

/// `application_id = ? AND sub = ?`, plus `agent_id IN (...)` for a key that reaches only some
/// agents.
fn owner<T: UserTable>(scope: &UserScope) -> Condition {
    let mut condition = Condition::all()
        .add(Expr::col((T::TABLE, T::APPLICATION_ID)).eq(scope.application_id()))
        .add(Expr::col((T::TABLE, T::SUB)).eq(scope.sub()));
    if let (Some(agent), AgentAccess::Only(ids)) = (T::AGENT_ID, scope.agents()) {
        // `NULL IN (...)` is not true: app-wide memory stays out of an agent-scoped key's reach.
        condition = condition.add(Expr::col((T::TABLE, agent)).is_in(ids.iter().copied()));
    }
    condition
}

/// `SELECT <columns> FROM <table> WHERE <owner>`.
fn select<T: UserTable>(scope: &UserScope, columns: &[T]) -> SelectStatement {
    // Built in place: `.to_owned()` at the end of a chain would clone the whole statement.
    let mut select = Query::select();
    select
        .columns(columns.iter().map(|c| (T::TABLE, *c)))
        .from(T::TABLE)
        .cond_where(owner::<T>(scope));
    select
}

/// `UPDATE <table> SET … WHERE <owner>`.
fn update<T: UserTable>(scope: &UserScope) -> UpdateStatement {
    let mut update = Query::update();
    update.table(T::TABLE).cond_where(owner::<T>(scope));
    update
}

/// `DELETE FROM <table> WHERE <owner>`.
fn delete<T: UserTable>(scope: &UserScope) -> DeleteStatement {
    let mut delete = Query::delete();
    delete.from_table(T::TABLE).cond_where(owner::<T>(scope));
    delete
}

/// `INSERT INTO <table> (application_id, sub, <columns>) VALUES (<scope>, <row>), …`.
fn insert<T: UserTable>(scope: &UserScope, columns: &[T], rows: Vec<Vec<SimpleExpr>>) -> InsertStatement {
    let mut insert = Query::insert();
    insert
        .into_table(T::TABLE)
        .columns([T::APPLICATION_ID, T::SUB].into_iter().chain(columns.iter().copied()));
    for row in rows {
        let owner = [Expr::val(scope.application_id()), Expr::val(scope.sub())];
        insert.values_panic(owner.into_iter().chain(row));
    }
    insert
}

/// `INSERT INTO <table> (application_id, sub, <columns>) SELECT <scope>, <row> FROM <source>
/// UNION ALL …`: rows computed from a common table expression.
fn insert_selected<T: UserTable>(
    scope: &UserScope,
    columns: &[T],
    source: &str,
    rows: Vec<Vec<SimpleExpr>>,
) -> InsertStatement {
    let mut selects = rows.into_iter().map(|row| {
        let owner = [Expr::val(scope.application_id()), Expr::val(scope.sub())];
        Query::select()
            .exprs(owner.into_iter().chain(row))
            .from(sea_query::Alias::new(source))
            .to_owned()
    });
    let mut insert = Query::insert();
    insert
        .into_table(T::TABLE)
        .columns([T::APPLICATION_ID, T::SUB].into_iter().chain(columns.iter().copied()));
    if let Some(mut select) = selects.next() {
        for more in selects {
            select.union(UnionType::All, more);
        }
        insert.select_from(select).expect("as many values as columns");
    }
    insert
}

/// `LEFT JOIN <table> ON <on> AND <owner>`: rows of another user table, of the same owner.
fn left_join_owned<T: UserTable>(query: &mut SelectStatement, scope: &UserScope, on: Condition) {
    query.left_join(T::TABLE, on.add(owner::<T>(scope)));
}

/// `SELECT … FROM <table> WHERE application_id = ?`: aggregates over every user of the
/// application, for its administrators.
fn select_all_users<T: UserTable>(access: &AppAccess) -> SelectStatement {
    Query::select()
        .from(T::TABLE)
        .and_where(Expr::col((T::TABLE, T::APPLICATION_ID)).eq(access.app_id()))
        .to_owned()
}

/// `DELETE FROM <table> WHERE application_id = ?`: every user's rows of the application, for its
/// administrators (purges).
fn delete_all_users<T: UserTable>(access: &AppAccess) -> DeleteStatement {
    let mut delete = Query::delete();
    delete
        .from_table(T::TABLE)
        .and_where(Expr::col((T::TABLE, T::APPLICATION_ID)).eq(access.app_id()));
    delete
}

/// Where a newest-first listing continues: after the row last updated at `updated_at` with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentCursor {
    pub updated_at: i64,
    pub id: Uuid,
}

/// Most recently updated first (ties by id), after `after`, at most `limit` rows: the keyset
/// paging of every newest-first listing. `columns` are (updated_at, id) of the listed table.
fn newest_first<C: sea_query::IntoColumnRef + Copy>(
    query: &mut SelectStatement,
    columns: (C, C),
    limit: u64,
    after: Option<RecentCursor>,
) {
    let (updated_at, id) = columns;
    if let Some(after) = after {
        query.cond_where(
            Condition::any().add(Expr::col(updated_at).lt(after.updated_at)).add(
                Condition::all()
                    .add(Expr::col(updated_at).eq(after.updated_at))
                    .add(Expr::col(id).lt(after.id)),
            ),
        );
    }
    query
        .order_by(updated_at, sea_query::Order::Desc)
        .order_by(id, sea_query::Order::Desc)
        .limit(limit);
}

/// `COUNT(DISTINCT sub)`: how many users, for aggregates.
fn count_users<T: UserTable>() -> sea_query::Expr {
    Expr::col((T::TABLE, T::SUB)).count_distinct()
}

#[cfg(test)]
mod tests {
    //! Every statement on user data carries its owner's filter (or values).

    use std::sync::Arc;

    use sea_query::{QueryStatementWriter, SqliteQueryBuilder, Value};
    use uuid::Uuid;

    use super::*;

    /// The files that build statements on user data, apart from this one.
    const FILES: &[(&str, &str)] = &[
        ("conversations.rs", include_str!("conversations.rs")),
        ("messages.rs", include_str!("messages.rs")),
        ("revisions.rs", include_str!("revisions.rs")),
        ("memories.rs", include_str!("memories.rs")),
        ("export.rs", include_str!("export.rs")),
        ("stats.rs", include_str!("stats.rs")),
        ("usage.rs", include_str!("usage.rs")),
        ("operator.rs", include_str!("operator.rs")),
        ("feedback.rs", include_str!("feedback.rs")),
    ];

    #[test]
    fn only_this_file_names_owner_columns_or_starts_statements_on_user_tables() {
        let forbidden = [
            "ApplicationId",
            "::Sub",
            "Query::update",
            "Query::delete",
            "Query::insert",
            ".from(Conversations",
            ".from(Messages",
            ".from(Memories",
            ".from(Usage",
            ".from(Feedback",
            ".table(",
            ".from_table(",
            ".into_table(",
        ];
        for (file, source) in FILES {
            let code = source.split("#[cfg(test)]").next().unwrap_or(source);
            for needle in forbidden {
                assert!(
                    !code.contains(needle),
                    "{file} uses `{needle}`: start from a root in mod.rs"
                );
            }
        }
    }

    pub(super) fn user(agents: AgentAccess) -> UserScope {
        UserScope::from_verified_token(
            crate::store::scope::ApplicationId::for_tests(Uuid::now_v7()),
            "owner-sub",
            agents,
        )
    }

    /// A scope whose key reaches one agent, and a conversation of it.
    pub(super) fn agent_scope_and_conversation() -> (crate::store::scope::AgentScope, Conversation) {
        let agent = Uuid::now_v7();
        let scope = crate::store::scope::AgentScope::for_tests(user(AgentAccess::Only(Arc::from([agent]))), agent);
        let conversation = Conversation {
            id: Uuid::now_v7(),
            external_id: "c".into(),
            agent_id: agent,
            title: None,
            created_at: 0,
            updated_at: 0,
        };
        (scope, conversation)
    }

    /// Asserts that `statement` filters by (or writes) the scope's application and `sub`, and
    /// for an agent-scoped key its agents too when `agents` says the table has them.
    #[track_caller]
    pub(super) fn assert_owned(statement: &impl QueryStatementWriter, scope: &UserScope) {
        let (sql, values) = statement.build(SqliteQueryBuilder);
        assert!(sql.contains("\"application_id\""), "no application filter: {sql}");
        assert!(sql.contains("\"sub\""), "no sub filter: {sql}");
        let values = values.0;
        assert!(
            values.contains(&Value::Uuid(Some(scope.application_id().uuid()))),
            "the scope's application is not bound: {sql} {values:?}"
        );
        assert!(
            values.contains(&Value::String(Some(scope.sub().to_owned()))),
            "the scope's sub is not bound: {sql} {values:?}"
        );
    }

    #[test]
    fn the_roots_filter_by_owner_and_by_the_keys_agents() {
        let agent = Uuid::now_v7();
        let scope = user(AgentAccess::Only(Arc::from([agent])));
        for statement in [
            select::<Conversations>(&scope, &[Conversations::Id]),
            select::<Memories>(&scope, &[Memories::Id]),
        ] {
            assert_owned(&statement, &scope);
            let (sql, values) = statement.build(SqliteQueryBuilder);
            assert!(sql.contains("\"agent_id\" IN"), "{sql}");
            assert!(values.0.contains(&Value::Uuid(Some(agent))));
        }
        assert_owned(&select::<Messages>(&scope, &[Messages::Id]), &scope);
        assert_owned(&update::<Conversations>(&scope), &scope);
        assert_owned(&delete::<Memories>(&scope), &scope);
        let row = vec![Expr::val(1)];
        assert_owned(&insert::<Messages>(&scope, &[Messages::Seq], vec![row.clone()]), &scope);
        assert_owned(
            &insert_selected::<Messages>(&scope, &[Messages::Seq], "reserved", vec![row]),
            &scope,
        );
    }
}
