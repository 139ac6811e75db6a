//! Messages of the user's conversations: appended in order, never twice, read back as the
//! model's context.

use std::sync::Arc;

use sea_query::{Expr, ExprTrait, Func, Order, SelectStatement};
use uuid::Uuid;

use super::conversations::Conversation;
use super::tables::{Conversations, Messages};
use super::{insert, select, update};
use crate::completions::ToolCall;
use crate::store::Json;
use crate::store::scope::{AgentScope, UserScope};
use crate::store::webhooks::{self, Event};
use crate::store::{Backend, Db, StoreError, StoreResult, Tx, now_micros};

mod one_statement;

pub use self::one_statement::append_to_named;

crate::text_enum! {
    /// How a stored message ended.
    pub enum MessageStatus {
        Complete = "complete",
        /// Cut short: the model failed, or the client went away.
        Incomplete = "incomplete",
    }
}

/// A stored message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Uuid,
    pub seq: i64,
    pub role: String,
    pub content: String,
    pub status: MessageStatus,
    pub client_id: Option<String>,
    pub created_at: i64,
    /// When a regenerate or an edit replaced it; such a message is never given to the model.
    pub superseded_at: Option<i64>,
    /// An assistant message's tool calls.
    pub tool_calls: Option<Json<Vec<ToolCall>>>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// What the API calls its state: `superseded` once replaced, else how it ended.
    pub fn state(&self) -> &'static str {
        if self.superseded_at.is_some() {
            "superseded"
        } else {
            self.status.as_str()
        }
    }
}

crate::from_row!(Message {
    id,
    seq,
    role,
    content,
    status,
    client_id,
    created_at,
    superseded_at,
    tool_calls,
    tool_call_id
});

pub(super) const MESSAGE_COLUMNS: [Messages; 10] = [
    Messages::Id,
    Messages::Seq,
    Messages::Role,
    Messages::Content,
    Messages::Status,
    Messages::ClientId,
    Messages::CreatedAt,
    Messages::SupersededAt,
    Messages::ToolCalls,
    Messages::ToolCallId,
];

const INSERT_COLUMNS: [Messages; 10] = [
    Messages::Id,
    Messages::ConversationId,
    Messages::Seq,
    Messages::Role,
    Messages::Content,
    Messages::Status,
    Messages::ClientId,
    Messages::CreatedAt,
    Messages::ToolCalls,
    Messages::ToolCallId,
];

/// Messages of one of the user's conversations. Messages carry their owner's application and
/// `sub` too, so the filter holds even for a conversation id from elsewhere.
pub(super) fn of_conversation(scope: &UserScope, conversation: &Conversation) -> SelectStatement {
    let mut query = select(scope, &MESSAGE_COLUMNS);
    query.and_where(Expr::col(Messages::ConversationId).eq(conversation.id));
    query
}

fn recent_statement(
    scope: &AgentScope,
    conversation: &Conversation,
    up_to: Option<i64>,
    limit: u64,
) -> SelectStatement {
    let mut query = of_conversation(scope.user(), conversation);
    query.and_where(Expr::col(Messages::SupersededAt).is_null());
    if let Some(up_to) = up_to {
        query.and_where(Expr::col(Messages::Seq).lte(up_to));
    }
    query.order_by(Messages::Seq, Order::Desc).limit(limit);
    query
}

/// The last `limit` live messages of the conversation up to sequence number `up_to` (inclusive),
/// oldest first: the model's context window as of one turn, untouched by turns that came later
/// and without the messages a regenerate or an edit replaced.
pub async fn recent_messages(
    db: &Db,
    scope: &AgentScope,
    conversation: &Conversation,
    up_to: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<Message>> {
    let mut rows: Vec<Message> = db.rows(&recent_statement(scope, conversation, up_to, limit)).await?;
    rows.reverse();
    Ok(rows)
}

/// How many of a conversation's latest tool-calling messages a client's tool results are checked
/// against.
const TOOL_CALL_MESSAGES: u64 = 20;

fn tool_calls_statement(scope: &AgentScope, conversation: &Conversation) -> SelectStatement {
    let mut query = of_conversation(scope.user(), conversation);
    query
        .and_where(Expr::col(Messages::SupersededAt).is_null())
        .and_where(Expr::col(Messages::ToolCalls).is_not_null())
        .order_by(Messages::Seq, Order::Desc)
        .limit(TOOL_CALL_MESSAGES);
    query
}

/// The tool calls of the conversation's latest live assistant messages that made any: what a
/// client's tool results may answer.
pub async fn recent_tool_calls(db: &Db, scope: &AgentScope, conversation: &Conversation) -> StoreResult<Vec<ToolCall>> {
    let rows: Vec<Message> = db.rows(&tool_calls_statement(scope, conversation)).await?;
    Ok(rows
        .into_iter()
        .flat_map(|m| m.tool_calls.map(|calls| calls.0).unwrap_or_default())
        .collect())
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub role: &'static str,
    pub content: String,
    pub status: MessageStatus,
    /// The client's own id for the message (AI SDK), used to never store it twice.
    pub client_id: Option<String>,
    /// An assistant message's tool calls (empty: none).
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl NewMessage {
    /// A message of text alone.
    pub fn text(role: &'static str, content: String, status: MessageStatus, client_id: Option<String>) -> Self {
        Self {
            id: Uuid::now_v7(),
            role,
            content,
            status,
            client_id,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The stored form of its tool calls: `NULL` when it has none.
    fn tool_calls_value(&self) -> Option<serde_json::Value> {
        (!self.tool_calls.is_empty()).then(|| serde_json::to_value(&self.tool_calls).expect("tool calls serialize"))
    }
}

/// What storing messages says of the reply being produced in their conversation
/// (`conversations.live_instance`), so a resume or a stop reaching another server instance knows
/// which one to ask. Written by the statement that stores the messages: no write of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LiveMark {
    /// Says nothing.
    #[default]
    Keep,
    /// This instance is producing the reply to these messages.
    Running(Uuid),
    /// This instance's reply ended: the mark is cleared if it still names this instance.
    Ended(Uuid),
}

/// Appends messages to one of the user's conversations with the scope's agent, in order,
/// skipping any whose `client_id` is already stored. One transaction: the conversation row's
/// `last_seq` hands out the sequence numbers (`UPDATE … RETURNING`, which also locks the row on
/// PostgreSQL; SQLite has one writer), so concurrent appends to one conversation get distinct,
/// ordered numbers.
pub async fn append_messages(
    db: &Db,
    scope: &AgentScope,
    conversation: &Conversation,
    new: &[NewMessage],
    live: LiveMark,
) -> StoreResult<Vec<Message>> {
    append(db, scope, conversation, new, live, None).await
}

/// Appends a reply's message as `append_messages` does, and writes `event`'s webhook deliveries
/// in the same transaction when the message is stored (not when it was already).
pub async fn append_reply(
    db: &Db,
    scope: &AgentScope,
    conversation: &Conversation,
    message: NewMessage,
    live: LiveMark,
    event: Option<Event>,
) -> StoreResult<Vec<Message>> {
    append(db, scope, conversation, &[message], live, event).await
}

async fn append(
    db: &Db,
    scope: &AgentScope,
    conversation: &Conversation,
    new: &[NewMessage],
    live: LiveMark,
    event: Option<Event>,
) -> StoreResult<Vec<Message>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    if conversation.agent_id != scope.agent_id() {
        return Err(StoreError::NotFound);
    }
    let append = Arc::new(Append {
        scope: scope.user().clone(),
        conversation: conversation.clone(),
        new: new.to_vec(),
        now: now_micros(),
        live,
    });
    if db.backend() == Backend::Postgres && event.is_none() {
        // Reserve and insert in one statement, one round trip (a transaction of four statements
        // took six), which may also carry other conversations' appends (one commit for all). It
        // inserts nothing when one of the client ids is stored already, or when a concurrent
        // append stored it first (the unique index refuses the insert): the transaction below
        // sorts out which messages are new, then.
        match db.write_batched::<LastSeq>(append.clone()).await {
            Ok(Some(reserved)) => {
                let fresh: Vec<&NewMessage> = append.new.iter().collect();
                return Ok(append.rows(&fresh, reserved));
            }
            Ok(None) if !append.has_client_ids() => return Err(StoreError::NotFound),
            Ok(None) | Err(StoreError::Conflict(_)) => {}
            Err(error) => return Err(error),
        }
    }
    db.transaction(move |tx| {
        Box::pin(async move {
            let stored = append.run(tx).await?;
            if let Some(event) = event.filter(|_| !stored.is_empty()) {
                webhooks::enqueue(tx, append.scope.application_id(), &event).await?;
            }
            Ok(stored)
        })
    })
    .await
}

/// `UPDATE conversations SET updated_at, last_seq = last_seq + count, <live mark> WHERE <owner>`:
/// reserves `count` sequence numbers in the user's conversation the caller's filter picks.
fn reservation(scope: &UserScope, now: i64, count: usize, live: LiveMark) -> sea_query::UpdateStatement {
    let mut update = update::<Conversations>(scope);
    update.value(Conversations::UpdatedAt, now).value(
        Conversations::LastSeq,
        Expr::col(Conversations::LastSeq).add(count as i64),
    );
    match live {
        LiveMark::Keep => {}
        LiveMark::Running(instance) => {
            update.value(Conversations::LiveInstance, instance.to_string());
        }
        LiveMark::Ended(instance) => {
            let cleared = Func::cust("NULLIF")
                .arg(Expr::col(Conversations::LiveInstance))
                .arg(instance.to_string());
            update.value(Conversations::LiveInstance, cleared);
        }
    }
    update
}

/// One append's statements, shared by both backends.
pub(super) struct Append {
    pub(super) scope: UserScope,
    pub(super) conversation: Conversation,
    pub(super) new: Vec<NewMessage>,
    pub(super) now: i64,
    pub(super) live: LiveMark,
}

pub(super) struct LastSeq {
    pub(super) last_seq: i64,
}
crate::from_row!(LastSeq { last_seq });

struct ClientId {
    client_id: Option<String>,
}
crate::from_row!(ClientId { client_id });

impl Append {
    /// Skips what is stored already, reserves sequence numbers, inserts: in the caller's
    /// transaction.
    async fn run(&self, tx: &mut Tx) -> StoreResult<Vec<Message>> {
        let fresh = if self.has_client_ids() {
            // Lock the row before looking (PostgreSQL; SQLite has one writer), so two requests
            // carrying the same message can't both add it.
            if tx.row::<LastSeq>(&self.lock()).await?.is_none() {
                return Err(StoreError::NotFound);
            }
            let known: Vec<ClientId> = tx.rows(&self.known_client_ids()).await?;
            self.fresh(&known)
        } else {
            self.new.iter().collect()
        };
        if fresh.is_empty() {
            self.mark_only(tx).await?;
            return Ok(Vec::new());
        }
        let reserved: Option<LastSeq> = tx.row(&self.reserve(fresh.len())).await?;
        let rows = self.rows(&fresh, reserved.ok_or(StoreError::NotFound)?);
        tx.execute(&self.insert(&rows)).await?;
        Ok(rows)
    }

    fn has_client_ids(&self) -> bool {
        self.new.iter().any(|m| m.client_id.is_some())
    }

    /// `SELECT last_seq … FOR UPDATE` of the conversation row, if it is this user's.
    pub(super) fn lock(&self) -> SelectStatement {
        let mut query = select(&self.scope, &[Conversations::LastSeq]);
        query
            .and_where(Expr::col((Conversations::Table, Conversations::Id)).eq(self.conversation.id))
            .lock(sea_query::LockType::Update);
        query
    }

    /// Which of the new messages' client ids the conversation already holds.
    fn known_client_ids(&self) -> SelectStatement {
        let ids: Vec<String> = self.new.iter().filter_map(|m| m.client_id.clone()).collect();
        let mut query = of_conversation(&self.scope, &self.conversation);
        query
            .and_where(Expr::col(Messages::ClientId).is_in(ids))
            .and_where(Expr::col(Messages::SupersededAt).is_null());
        query
    }

    fn fresh(&self, known: &[ClientId]) -> Vec<&NewMessage> {
        self.new
            .iter()
            .filter(|m| {
                !m.client_id
                    .as_ref()
                    .is_some_and(|id| known.iter().any(|k| k.client_id.as_ref() == Some(id)))
            })
            .collect()
    }

    /// Reserves `count` sequence numbers; returns the last one (no row: not this user's). Writes
    /// the live mark too.
    pub(super) fn reserve(&self, count: usize) -> sea_query::UpdateStatement {
        reservation(&self.scope, self.now, count, self.live)
            .and_where(Expr::col(Conversations::Id).eq(self.conversation.id))
            .returning_col(Conversations::LastSeq)
            .to_owned()
    }

    /// Writes the live mark when no message is stored (all known already).
    pub(super) async fn mark_only(&self, tx: &mut Tx) -> StoreResult<()> {
        if self.live != LiveMark::Keep {
            tx.execute(&self.reserve(0)).await?;
        }
        Ok(())
    }

    pub(super) fn rows(&self, fresh: &[&NewMessage], reserved: LastSeq) -> Vec<Message> {
        let first = reserved.last_seq - fresh.len() as i64 + 1;
        fresh
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                id: m.id,
                seq: first + i as i64,
                role: m.role.to_owned(),
                content: m.content.clone(),
                status: m.status,
                client_id: m.client_id.clone(),
                created_at: self.now,
                superseded_at: None,
                tool_calls: (!m.tool_calls.is_empty()).then(|| Json(m.tool_calls.clone())),
                tool_call_id: m.tool_call_id.clone(),
            })
            .collect()
    }

    pub(super) fn insert(&self, rows: &[Message]) -> sea_query::InsertStatement {
        let values = rows
            .iter()
            .map(|row| {
                let tool_calls = row
                    .tool_calls
                    .as_ref()
                    .map(|calls| serde_json::to_value(&calls.0).expect("tool calls serialize"));
                vec![
                    Expr::val(row.id),
                    Expr::val(self.conversation.id),
                    Expr::val(row.seq),
                    Expr::val(row.role.clone()),
                    Expr::val(row.content.clone()),
                    Expr::val(row.status),
                    Expr::val(row.client_id.clone()),
                    Expr::val(self.now),
                    Expr::val(tool_calls),
                    Expr::val(row.tool_call_id.clone()),
                ]
            })
            .collect();
        insert(&self.scope, &INSERT_COLUMNS, values)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{agent_scope_and_conversation, assert_owned};
    use super::*;
    use crate::store::CombinedWrite;

    #[test]
    fn every_message_statement_is_owned() {
        let (scope, conversation) = agent_scope_and_conversation();
        let append = Append {
            scope: scope.user().clone(),
            conversation: conversation.clone(),
            new: vec![NewMessage::text(
                "user",
                "hello".into(),
                MessageStatus::Complete,
                Some("m1".into()),
            )],
            now: 1,
            live: LiveMark::Running(Uuid::nil()),
        };
        let user = scope.user();
        assert_owned(&recent_statement(&scope, &conversation, Some(3), 10), user);
        assert_owned(&tool_calls_statement(&scope, &conversation), user);
        assert_owned(&append.lock(), user);
        assert_owned(&append.known_client_ids(), user);
        assert_owned(&append.reserve(1), user);
        let stored = append.rows(&append.new.iter().collect::<Vec<_>>(), LastSeq { last_seq: 1 });
        assert_owned(&append.insert(&stored), user);
        // The reservation, the check for client ids stored already and the insert of the
        // single-statement append are all owned (without client ids, there is no check).
        let alone = |write: &dyn CombinedWrite| {
            crate::store::postgres::combine_writes(std::iter::once(write)).build(sea_query::PostgresQueryBuilder)
        };
        let (sql, values) = alone(&append);
        assert_eq!(sql.matches("\"application_id\" = $").count(), 2, "{sql}");
        assert_eq!(sql.matches("\"sub\" = $").count(), 2, "{sql}");
        assert!(sql.contains("NOT EXISTS"), "{sql}");
        assert!(
            sql.contains("INSERT INTO \"messages\" (\"application_id\", \"sub\""),
            "{sql}"
        );
        assert!(
            values
                .0
                .contains(&sea_query::Value::String(Some(user.sub().to_owned())))
        );
        let unnamed = Append {
            new: vec![NewMessage::text("user", "hello".into(), MessageStatus::Complete, None)],
            ..append
        };
        let (sql, _) = alone(&unnamed);
        assert!(!sql.contains("NOT EXISTS"), "{sql}");
        assert_eq!(sql.matches("\"application_id\" = $").count(), 1, "{sql}");
        // Finding the conversation by the client's id and appending: the update is the user's
        // and the agent's, the insert the user's.
        let named = one_statement::NamedAppendWrite {
            scope: scope.clone(),
            external_id: "c1".into(),
            new: unnamed.new.clone(),
            now: 1,
            live: LiveMark::Keep,
        };
        let (sql, values) = alone(&named);
        assert_eq!(sql.matches("\"application_id\" = $").count(), 1, "{sql}");
        assert_eq!(sql.matches("\"sub\" = $").count(), 1, "{sql}");
        assert!(sql.contains("\"agent_id\" = $"), "{sql}");
        assert!(
            sql.contains("INSERT INTO \"messages\" (\"application_id\", \"sub\""),
            "{sql}"
        );
        assert!(values.0.contains(&sea_query::Value::Uuid(Some(scope.agent_id()))));
    }
}
