//! PostgreSQL's appends in one statement: the reservation of sequence numbers and the insert
//! as common table expressions (`CombinedWrite`), so an append is one round trip and may share
//! its statement, and its commit, with other conversations' appends (`Db::write_batched`).

use std::sync::Arc;

use sea_query::{Alias, CommonTableExpression, Expr, ExprTrait};

use super::super::conversations::{self, Conversation};
use super::super::insert_selected;
use super::super::tables::Conversations;
use super::{Append, INSERT_COLUMNS, LastSeq, LiveMark, Message, NewMessage, reservation};
use crate::store::scope::{AgentScope, UserScope};
use crate::store::{Backend, CombinedWrite, Db, FromRow, StoreResult, now_micros};

/// PostgreSQL: appends `new` (messages without client ids) to the user's conversation with the
/// scope's agent that the client calls `external_id`, finding it in the same statement: one round
/// trip where opening it and appending took two. `None` when there is no such conversation with
/// this agent (and on SQLite, where the two reads cost no round trip): open or start it then, and
/// append as usual.
pub async fn append_to_named(
    db: &Db,
    scope: &AgentScope,
    external_id: &str,
    new: &[NewMessage],
    live: LiveMark,
) -> StoreResult<Option<(Conversation, Vec<Message>)>> {
    if db.backend() != Backend::Postgres || new.is_empty() || new.iter().any(|m| m.client_id.is_some()) {
        return Ok(None);
    }
    let now = now_micros();
    let named = NamedAppendWrite {
        scope: scope.clone(),
        external_id: external_id.to_owned(),
        new: new.to_vec(),
        now,
        live,
    };
    // It may go in one statement, one commit, with other conversations' appends.
    let Some(found) = db.write_batched::<NamedAppend>(Arc::new(named)).await? else {
        return Ok(None);
    };
    let append = Append {
        scope: scope.user().clone(),
        conversation: found.conversation,
        new: new.to_vec(),
        now,
        live,
    };
    let fresh: Vec<&NewMessage> = append.new.iter().collect();
    let rows = append.rows(
        &fresh,
        LastSeq {
            last_seq: found.last_seq,
        },
    );
    Ok(Some((append.conversation, rows)))
}

/// An append to the conversation the client names, finding it as it goes.
pub(super) struct NamedAppendWrite {
    pub(super) scope: AgentScope,
    pub(super) external_id: String,
    pub(super) new: Vec<NewMessage>,
    pub(super) now: i64,
    pub(super) live: LiveMark,
}

impl CombinedWrite for NamedAppendWrite {
    fn key(&self) -> u64 {
        conversation_key(self.scope.user(), &self.external_id)
    }

    fn shape(&self) -> u64 {
        append_shape(0, &self.new)
    }

    /// `reserved_<slot> AS (UPDATE conversations … WHERE <owner> AND agent_id AND external_id
    /// RETURNING <conversation>, last_seq), inserted_<slot> AS (INSERT INTO messages … SELECT …
    /// FROM reserved_<slot>)`, answered by `reserved_<slot>`.
    fn parts(&self, slot: usize) -> (Vec<CommonTableExpression>, String) {
        let mut reserve = reservation(self.scope.user(), self.now, self.new.len(), self.live);
        reserve
            .and_where(Expr::col(Conversations::AgentId).eq(self.scope.agent_id()))
            .and_where(Expr::col(Conversations::ExternalId).eq(self.external_id.as_str()));
        reserved_and_inserted(
            slot,
            reserve,
            self.scope.user(),
            &self.new,
            |reserved| Expr::col((Alias::new(reserved), Conversations::Id)),
            self.now,
        )
    }
}

/// Which conversation an append writes to (`CombinedWrite::key`): its owner and the client's id
/// for it.
fn conversation_key(scope: &UserScope, external_id: &str) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = foldhash::fast::FixedState::default().build_hasher();
    scope.application_id().hash(&mut hasher);
    scope.sub().hash(&mut hasher);
    external_id.hash(&mut hasher);
    hasher.finish()
}

/// An append's statement shape (`CombinedWrite::shape`): its form, how many messages, and
/// whether it checks client ids.
fn append_shape(form: u64, new: &[NewMessage]) -> u64 {
    let checks = new.iter().any(|m| m.client_id.is_some());
    form << 48 | (new.len() as u64) << 1 | u64::from(checks)
}

/// The two expressions of an append in one statement: `reserved_<slot> AS (<reserve> RETURNING
/// <conversation>, last_seq)` and `inserted_<slot> AS (INSERT INTO messages … SELECT … FROM
/// reserved_<slot>)`, in the conversation `conversation` names from the reserved row; answered
/// by `reserved_<slot>`.
fn reserved_and_inserted(
    slot: usize,
    mut reserve: sea_query::UpdateStatement,
    scope: &UserScope,
    new: &[NewMessage],
    conversation: impl Fn(&str) -> sea_query::SimpleExpr,
    now: i64,
) -> (Vec<CommonTableExpression>, String) {
    let reserved = format!("reserved_{slot}");
    reserve.returning(
        sea_query::Query::returning().columns(
            conversations::CONVERSATION_COLUMNS
                .into_iter()
                .chain([Conversations::LastSeq]),
        ),
    );
    let rows = reserved_rows(new, &reserved, conversation(&reserved), now);
    let expressions = vec![
        CommonTableExpression::new()
            .query(reserve)
            .table_name(Alias::new(&reserved))
            .to_owned(),
        CommonTableExpression::new()
            .query(insert_selected(scope, &INSERT_COLUMNS, &reserved, rows))
            .table_name(Alias::new(format!("inserted_{slot}")))
            .to_owned(),
    ];
    (expressions, reserved)
}

/// The `INSERT … SELECT` rows (in `INSERT_COLUMNS` order) of messages appended in one statement
/// with their reservation: numbered back from the expression `reserved`'s `last_seq`, in
/// `conversation`.
fn reserved_rows(
    new: &[NewMessage],
    reserved: &str,
    conversation: sea_query::SimpleExpr,
    now: i64,
) -> Vec<Vec<sea_query::SimpleExpr>> {
    let count = new.len() as i64;
    new.iter()
        .enumerate()
        .map(|(i, m)| {
            vec![
                Expr::val(m.id),
                conversation.clone(),
                Expr::col((Alias::new(reserved), Conversations::LastSeq)).sub(count - 1 - i as i64),
                Expr::val(m.role),
                Expr::val(m.content.clone()),
                Expr::val(m.status),
                Expr::val(m.client_id.clone()),
                Expr::val(now),
                Expr::val(m.tool_calls_value()),
                Expr::val(m.tool_call_id.clone()),
            ]
        })
        .collect()
}

/// A row of `append_to_named`: the conversation, and the last sequence number it reserved.
struct NamedAppend {
    conversation: Conversation,
    last_seq: i64,
}

impl FromRow for NamedAppend {
    fn from_row(row: &crate::store::Row<'_>) -> StoreResult<Self> {
        Ok(Self {
            conversation: Conversation::from_row(row)?,
            last_seq: row.get("last_seq")?,
        })
    }
}

/// PostgreSQL's single-statement append: the reservation (which, with client ids, finds none of
/// them stored) and the insert. No row: not this user's conversation, or (with client ids) one of
/// them is stored already; nothing is inserted then (the insert selects from the empty
/// reservation).
impl CombinedWrite for Append {
    fn key(&self) -> u64 {
        conversation_key(&self.scope, self.conversation.external_id())
    }

    fn shape(&self) -> u64 {
        append_shape(1, &self.new)
    }

    fn parts(&self, slot: usize) -> (Vec<CommonTableExpression>, String) {
        let mut reserve = self.reserve(self.new.len());
        if self.has_client_ids() {
            reserve.and_where(Expr::exists(self.known_client_ids()).not());
        }
        let conversation = self.conversation.id;
        reserved_and_inserted(
            slot,
            reserve,
            &self.scope,
            &self.new,
            |_| Expr::val(conversation),
            self.now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::agent_scope_and_conversation;
    use super::super::MessageStatus;
    use super::*;

    #[test]
    fn appends_in_one_statement_each_keep_their_own_scope_and_names() {
        let (scope, conversation) = agent_scope_and_conversation();
        let other = crate::store::scope::UserScope::from_verified_token(
            scope.user().application_id(),
            "someone-else",
            crate::store::scope::AgentAccess::All,
        );
        let hello = |client_id: Option<&str>| {
            vec![NewMessage::text(
                "user",
                "hello".into(),
                MessageStatus::Complete,
                client_id.map(Into::into),
            )]
        };
        let mine = Append {
            scope: scope.user().clone(),
            conversation: conversation.clone(),
            new: hello(Some("m1")),
            now: 1,
            live: LiveMark::Keep,
        };
        let theirs = Append {
            scope: other,
            conversation,
            new: hello(None),
            now: 1,
            live: LiveMark::Keep,
        };
        let writes: [&dyn CombinedWrite; 2] = [&mine, &theirs];
        let (sql, values) = crate::store::postgres::combine_writes(writes).build(sea_query::PostgresQueryBuilder);
        // Each part reserves from and inserts into its own expressions.
        for name in ["reserved_0", "inserted_0", "reserved_1", "inserted_1"] {
            assert!(sql.contains(&format!("\"{name}\" AS (")), "{name}: {sql}");
        }
        assert!(sql.contains("FROM \"reserved_0\""), "{sql}");
        assert!(sql.contains("FROM \"reserved_1\""), "{sql}");
        assert!(sql.contains("UNION ALL"), "{sql}");
        // Both owners are bound: mine twice (the reservation and the client-id check), theirs once.
        let bound = |sub: &str| {
            values
                .0
                .iter()
                .filter(|v| **v == sea_query::Value::String(Some(sub.to_owned())))
                .count()
        };
        assert_eq!(bound(scope.user().sub()), 2 + 1, "{sql}");
        assert_eq!(bound("someone-else"), 1 + 1, "{sql}");
        assert_ne!(mine.key(), theirs.key(), "two owners' conversations are two keys");
    }
}
