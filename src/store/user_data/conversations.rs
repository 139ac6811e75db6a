//! The user's conversations with an agent.

use sea_query::{Condition, Expr, ExprTrait, Order, SelectExprTrait, SelectStatement};
use uuid::Uuid;

use super::feedback::Vote;
use super::messages::{MESSAGE_COLUMNS, Message};
use super::tables::{Conversations, Feedback, Messages};
use super::{RecentCursor, insert, left_join_owned, newest_first, select, update};
use crate::store::scope::{AgentScope, UserScope};
use crate::store::webhooks::{self, Event, EventType};
use crate::store::{Batch, Db, FromRow, Row, StoreError, StoreResult, now_micros};

/// One of the user's conversations. Made only by the store, from a row its scope reached.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Internal id; never shown.
    pub(super) id: Uuid,
    /// The id the client sees (per user).
    pub(super) external_id: String,
    pub(super) agent_id: Uuid,
    pub(super) title: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

crate::from_row!(Conversation {
    id,
    external_id,
    agent_id,
    title,
    created_at,
    updated_at
});

impl Conversation {
    /// Where a listing continues after this conversation.
    pub fn position_cursor(&self) -> RecentCursor {
        RecentCursor {
            updated_at: self.updated_at,
            id: self.id,
        }
    }

    /// The id the client knows it by.
    pub fn external_id(&self) -> &str {
        &self.external_id
    }

    pub fn agent_id(&self) -> Uuid {
        self.agent_id
    }

    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    pub fn created_at(&self) -> i64 {
        self.created_at
    }

    pub fn updated_at(&self) -> i64 {
        self.updated_at
    }

    /// Where a listing of conversations in the order they were made continues after this one.
    pub fn position(&self) -> Uuid {
        self.id
    }

    /// What this instance's live replies are kept under (the internal id, never shown).
    pub fn live_key(&self) -> Uuid {
        self.id
    }
}

/// One of the user's conversations as a resume or a stop sees it: its live key, and the server
/// instance its reply is being produced by, if a turn said so.
#[derive(Debug, Clone)]
pub struct LiveState {
    pub id: Uuid,
    pub live_instance: Option<String>,
}

crate::from_row!(LiveState { id, live_instance });

fn live_state_statement(scope: &AgentScope, external_id: &str) -> SelectStatement {
    let mut query = select(scope.user(), &[Conversations::Id, Conversations::LiveInstance]);
    query
        .and_where(Expr::col((Conversations::Table, Conversations::AgentId)).eq(scope.agent_id()))
        .and_where(Expr::col((Conversations::Table, Conversations::ExternalId)).eq(external_id));
    query
}

/// The user's conversation with the scope's agent, as a resume or a stop needs it.
pub async fn live_state(db: &Db, scope: &AgentScope, external_id: &str) -> StoreResult<Option<LiveState>> {
    db.row(&live_state_statement(scope, external_id)).await
}

pub(super) const CONVERSATION_COLUMNS: [Conversations; 6] = [
    Conversations::Id,
    Conversations::ExternalId,
    Conversations::AgentId,
    Conversations::Title,
    Conversations::CreatedAt,
    Conversations::UpdatedAt,
];

/// `SELECT <conversation> FROM conversations WHERE <owner>`: the user's conversations with every
/// agent the scope reaches.
pub(super) fn of_user(scope: &UserScope) -> SelectStatement {
    select(scope, &CONVERSATION_COLUMNS)
}

/// The scope's conversations with its agent.
fn of_agent(scope: &AgentScope) -> SelectStatement {
    let mut query = of_user(scope.user());
    query.and_where(Expr::col((Conversations::Table, Conversations::AgentId)).eq(scope.agent_id()));
    query
}

/// The scope's conversation with its agent that the client calls `external_id`.
fn named(scope: &AgentScope, external_id: &str) -> SelectStatement {
    let mut query = of_agent(scope);
    query.and_where(Expr::col((Conversations::Table, Conversations::ExternalId)).eq(external_id));
    query
}

fn list_statement(scope: &AgentScope, limit: u64, after: Option<RecentCursor>) -> SelectStatement {
    let mut query = of_agent(scope);
    newest_first(
        &mut query,
        (Conversations::UpdatedAt, Conversations::Id),
        limit + 1,
        after,
    );
    query
}

/// The user's conversations with the scope's agent, most recently updated first.
pub async fn list_conversations(
    db: &Db,
    scope: &AgentScope,
    limit: u64,
    after: Option<RecentCursor>,
) -> StoreResult<(Vec<Conversation>, Option<RecentCursor>)> {
    let statement = list_statement(scope, limit, after);
    // The first page is what every client asks for, many at once: it may go with others.
    let mut rows: Vec<Conversation> = match after {
        None => db.rows_batched(Batch::Conversations, statement).await?,
        Some(_) => db.rows(&statement).await?,
    };
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last()).flatten().map(Conversation::position_cursor);
    Ok((rows, next))
}

/// One of the user's conversations with the scope's agent, by the id the client knows.
pub async fn find_conversation(db: &Db, scope: &AgentScope, external_id: &str) -> StoreResult<Option<Conversation>> {
    db.row(&named(scope, external_id)).await
}

/// A page of a conversation's messages: the newest `limit` before sequence number `before`.
#[derive(Debug, Clone, Copy)]
pub struct MessagePage {
    pub limit: u64,
    pub before: Option<i64>,
    /// Also the messages a regenerate or an edit replaced (`?include=superseded`).
    pub include_superseded: bool,
}

fn with_messages_statement(scope: &AgentScope, external_id: &str, page: MessagePage) -> SelectStatement {
    let mut query = named(scope, external_id);
    query.exprs(
        MESSAGE_COLUMNS
            .into_iter()
            .zip(MESSAGE_ALIASES)
            .map(|(column, alias)| Expr::col((Messages::Table, column)).alias(alias)),
    );
    // The messages carry their owner too: the join repeats the scope's filter on them. The page's
    // bound is in the join, so a conversation with no messages in range still comes back.
    let mut on = Condition::all()
        .add(Expr::col((Messages::Table, Messages::ConversationId)).equals((Conversations::Table, Conversations::Id)));
    if let Some(before) = page.before {
        on = on.add(Expr::col((Messages::Table, Messages::Seq)).lt(before));
    }
    if !page.include_superseded {
        on = on.add(Expr::col((Messages::Table, Messages::SupersededAt)).is_null());
    }
    left_join_owned::<Messages>(&mut query, scope.user(), on);
    // Each message's vote, if its user gave one (by the vote's primary key).
    query.exprs([
        Expr::col((Feedback::Table, Feedback::Vote)).alias("feedback_vote"),
        Expr::col((Feedback::Table, Feedback::Comment)).alias("feedback_comment"),
        Expr::col((Feedback::Table, Feedback::Tags)).alias("feedback_tags"),
    ]);
    left_join_owned::<Feedback>(
        &mut query,
        scope.user(),
        Condition::all().add(Expr::col((Feedback::Table, Feedback::MessageId)).equals((Messages::Table, Messages::Id))),
    );
    // Newest first, one more than asked to learn whether older ones remain.
    query
        .order_by((Messages::Table, Messages::Seq), Order::Desc)
        .limit(page.limit + 1);
    query
}

/// The user's vote on a message, as its conversation shows it.
#[derive(Debug, Clone)]
pub struct MessageVote {
    pub vote: Vote,
    pub comment: Option<String>,
    pub tags: Vec<String>,
}

/// A message of a conversation as it is read back, with its user's vote.
#[derive(Debug, Clone)]
pub struct ListedMessage {
    pub message: Message,
    pub feedback: Option<MessageVote>,
}

/// One of the user's conversations with the scope's agent and a page of its messages (the newest
/// `page.limit` before `page.before`, returned oldest first, each with its vote), in one bounded
/// query on the calling thread; and the sequence number to page back from, if older messages
/// remain.
pub async fn conversation_with_messages(
    db: &Db,
    scope: &AgentScope,
    external_id: &str,
    page: MessagePage,
) -> StoreResult<Option<(Conversation, Vec<ListedMessage>, Option<i64>)>> {
    let statement = with_messages_statement(scope, external_id, page);
    let rows: Vec<ConversationMessage> = if page.before.is_none() && !page.include_superseded {
        // The first page, as clients open a conversation: it may go with others.
        db.rows_batched(Batch::Conversation, statement).await?
    } else {
        db.rows(&statement).await?
    };
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let conversation = first.conversation.clone();
    let mut messages: Vec<ListedMessage> = rows.into_iter().filter_map(|row| row.message).collect();
    let more = messages.len() as u64 > page.limit;
    messages.truncate(page.limit as usize);
    messages.reverse();
    let next = more.then(|| messages.first().map(|m| m.message.seq)).flatten();
    Ok(Some((conversation, messages, next)))
}

/// What `conversation_with_messages` calls the message columns (`MESSAGE_COLUMNS`, in order).
const MESSAGE_ALIASES: [&str; 10] = [
    "message_id",
    "message_seq",
    "message_role",
    "message_content",
    "message_status",
    "message_client_id",
    "message_created_at",
    "message_superseded_at",
    "message_tool_calls",
    "message_tool_call_id",
];

/// A row of `conversation_with_messages`: the conversation, and one of its messages (none when it
/// has no messages: a left join).
struct ConversationMessage {
    conversation: Conversation,
    message: Option<ListedMessage>,
}

impl FromRow for ConversationMessage {
    fn from_row(row: &Row<'_>) -> StoreResult<Self> {
        let id: Option<Uuid> = row.get("message_id")?;
        let message = match id {
            None => None,
            Some(id) => Some(Message {
                id,
                seq: row.get("message_seq")?,
                role: row.get("message_role")?,
                content: row.get("message_content")?,
                status: row.get("message_status")?,
                client_id: row.get("message_client_id")?,
                created_at: row.get("message_created_at")?,
                superseded_at: row.get("message_superseded_at")?,
                tool_calls: row.get("message_tool_calls")?,
                tool_call_id: row.get("message_tool_call_id")?,
            }),
        };
        let vote = row
            .get::<Option<String>>("feedback_vote")?
            .as_deref()
            .and_then(Vote::parse);
        let message = match (message, vote) {
            (None, _) => None,
            (Some(message), None) => Some(ListedMessage {
                message,
                feedback: None,
            }),
            (Some(message), Some(vote)) => Some(ListedMessage {
                message,
                feedback: Some(MessageVote {
                    vote,
                    comment: row.get("feedback_comment")?,
                    tags: row.get::<crate::store::Json<Vec<String>>>("feedback_tags")?.0,
                }),
            }),
        };
        Ok(Self {
            conversation: Conversation::from_row(row)?,
            message,
        })
    }
}

/// Renames one of the user's conversations with the scope's agent.
pub async fn rename_conversation(
    db: &Db,
    scope: &AgentScope,
    external_id: &str,
    title: Option<&str>,
) -> StoreResult<Option<Conversation>> {
    let Some(conversation) = find_conversation(db, scope, external_id).await? else {
        return Ok(None);
    };
    let now = now_micros();
    db.execute(rename_statement(scope, &conversation, title, now)).await?;
    Ok(Some(Conversation {
        title: title.map(str::to_owned),
        updated_at: now,
        ..conversation
    }))
}

fn rename_statement(
    scope: &AgentScope,
    conversation: &Conversation,
    title: Option<&str>,
    now: i64,
) -> sea_query::UpdateStatement {
    update::<Conversations>(scope.user())
        .value(Conversations::Title, title.map(str::to_owned))
        .value(Conversations::UpdatedAt, now)
        .and_where(Expr::col(Conversations::Id).eq(conversation.id))
        .to_owned()
}

fn delete_statement(scope: &AgentScope, external_id: &str) -> sea_query::DeleteStatement {
    super::delete::<Conversations>(scope.user())
        .and_where(Expr::col(Conversations::AgentId).eq(scope.agent_id()))
        .and_where(Expr::col(Conversations::ExternalId).eq(external_id))
        .to_owned()
}

/// Deletes one of the user's conversations with the scope's agent; its messages go with it.
pub async fn delete_conversation(db: &Db, scope: &AgentScope, external_id: &str) -> StoreResult<bool> {
    Ok(db.execute(delete_statement(scope, external_id)).await? > 0)
}

/// The outcome of naming a conversation for a completion.
pub enum OpenedConversation {
    Existing(Conversation),
    Created(Conversation),
    /// The user has a conversation with this id, but with another agent.
    OtherAgent,
}

/// The user's conversation with this id, whatever its agent (ids are unique per user).
fn any_agent_statement(scope: &AgentScope, external_id: &str) -> SelectStatement {
    by_external_id(scope.user(), external_id)
}

fn by_external_id(scope: &UserScope, external_id: &str) -> SelectStatement {
    let mut query = of_user(scope);
    query.and_where(Expr::col((Conversations::Table, Conversations::ExternalId)).eq(external_id));
    query
}

/// The user's conversation with this id, with whichever agent the scope reaches (ids are unique
/// per user): for their administrators, who look at a user's conversations across agents.
pub async fn find_users_conversation(
    db: &Db,
    scope: &UserScope,
    external_id: &str,
) -> StoreResult<Option<Conversation>> {
    db.row(&by_external_id(scope, external_id)).await
}

fn insert_statement(scope: &AgentScope, conversation: &Conversation) -> sea_query::InsertStatement {
    insert(
        scope.user(),
        &CONVERSATION_COLUMNS,
        vec![vec![
            Expr::val(conversation.id),
            Expr::val(conversation.external_id.clone()),
            Expr::val(scope.agent_id()),
            Expr::val(conversation.title.clone()),
            Expr::val(conversation.created_at),
            Expr::val(conversation.updated_at),
        ]],
    )
}

/// Finds the user's conversation with this id and the scope's agent, or starts it.
pub async fn open_conversation(
    db: &Db,
    scope: &AgentScope,
    external_id: &str,
    title: Option<&str>,
) -> StoreResult<OpenedConversation> {
    for _ in 0..2 {
        if let Some(existing) = db.row::<Conversation>(&any_agent_statement(scope, external_id)).await? {
            return Ok(if existing.agent_id == scope.agent_id() {
                OpenedConversation::Existing(existing)
            } else {
                OpenedConversation::OtherAgent
            });
        }
        let now = now_micros();
        let conversation = Conversation {
            id: Uuid::now_v7(),
            external_id: external_id.to_owned(),
            agent_id: scope.agent_id(),
            title: title.map(str::to_owned),
            created_at: now,
            updated_at: now,
        };
        let event = scope.user().notifies(EventType::ConversationCreated).then(|| {
            Event::new(
                EventType::ConversationCreated,
                serde_json::json!({
                    "agent_id": scope.agent_id(),
                    "conversation_id": conversation.external_id,
                    "user": scope.user().sub(),
                    "title": conversation.title,
                }),
            )
        });
        let insert = insert_statement(scope, &conversation);
        match webhooks::execute_noting(db, scope.user().application_id(), insert, event).await {
            Ok(_) => return Ok(OpenedConversation::Created(conversation)),
            // Another request created it first: read theirs.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "the conversation is being created by another request".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{agent_scope_and_conversation, assert_owned};
    use super::*;

    #[test]
    fn every_conversation_statement_is_owned() {
        let (scope, conversation) = agent_scope_and_conversation();
        let agent = scope.agent_id();
        let cursor = RecentCursor {
            updated_at: 1,
            id: agent,
        };
        assert_owned(&list_statement(&scope, 10, Some(cursor)), scope.user());
        assert_owned(&named(&scope, "c"), scope.user());
        assert_owned(&live_state_statement(&scope, "c"), scope.user());
        assert_owned(&any_agent_statement(&scope, "c"), scope.user());
        assert_owned(&insert_statement(&scope, &conversation), scope.user());
        assert_owned(&rename_statement(&scope, &conversation, Some("t"), 1), scope.user());
        assert_owned(&delete_statement(&scope, "c"), scope.user());
        // The joined messages are filtered by owner too, not only the conversation.
        let page = MessagePage {
            limit: 10,
            before: Some(5),
            include_superseded: false,
        };
        let (sql, _) = with_messages_statement(&scope, "c", page).build(sea_query::SqliteQueryBuilder);
        assert!(sql.contains("\"messages\".\"application_id\" ="), "{sql}");
        assert!(sql.contains("\"messages\".\"sub\" ="), "{sql}");
    }
}
