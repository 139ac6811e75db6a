//! End users' votes on the assistant's messages (one per message), and the application's view of
//! them for its administrators.

use sea_query::{Alias, Expr, ExprTrait, OnConflict, SelectStatement};
use uuid::Uuid;

use super::conversations::{Conversation, find_conversation};
use super::tables::{Conversations, Feedback, Messages};
use super::{RecentCursor, delete, insert, newest_first, select, select_all_users, sub_column};
use crate::store::row::Json;
use crate::store::scope::{AgentScope, AppAccess, UserScope};
use crate::store::webhooks::{self, Event, EventType};
use crate::store::{Db, StoreResult, now_micros};

crate::text_enum! {
    /// An end user's verdict on a reply.
    #[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Vote {
        Up = "up",
        Down = "down",
    }
}

/// A vote, with its comment and tags.
#[derive(Debug, Clone)]
pub struct FeedbackRow {
    pub message_id: Uuid,
    pub agent_id: Uuid,
    pub vote: Vote,
    pub comment: Option<String>,
    pub tags: Json<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::from_row!(FeedbackRow {
    message_id,
    agent_id,
    vote,
    comment,
    tags,
    created_at,
    updated_at
});

/// Votes list newest first: (updated_at, message id), qualified (the operators' list joins).
const BY_RECENCY: ((Feedback, Feedback), (Feedback, Feedback)) = (
    (Feedback::Table, Feedback::UpdatedAt),
    (Feedback::Table, Feedback::MessageId),
);

const COLUMNS: [Feedback; 7] = [
    Feedback::MessageId,
    Feedback::AgentId,
    Feedback::Vote,
    Feedback::Comment,
    Feedback::Tags,
    Feedback::CreatedAt,
    Feedback::UpdatedAt,
];

/// What a vote is about.
pub struct NewFeedback {
    pub vote: Vote,
    pub comment: Option<String>,
    pub tags: Vec<String>,
}

/// How a vote went.
pub enum FeedbackOutcome {
    Saved(FeedbackRow),
    /// No such message in the user's conversation with the agent.
    NoSuchMessage,
    /// The message is not the assistant's.
    NotAssistant,
}

struct Role {
    role: String,
}
crate::from_row!(Role { role });

fn role_statement(scope: &AgentScope, conversation: &Conversation, message_id: Uuid) -> SelectStatement {
    let mut query = select::<Messages>(scope.user(), &[Messages::Role]);
    query
        .and_where(Expr::col(Messages::ConversationId).eq(conversation.id))
        .and_where(Expr::col(Messages::Id).eq(message_id));
    query
}

fn upsert_statement(
    scope: &AgentScope,
    conversation: &Conversation,
    message_id: Uuid,
    feedback: &NewFeedback,
    now: i64,
) -> sea_query::InsertStatement {
    let tags = serde_json::to_value(&feedback.tags).expect("strings serialize");
    let columns = [
        Feedback::MessageId,
        Feedback::AgentId,
        Feedback::ConversationId,
        Feedback::Vote,
        Feedback::Comment,
        Feedback::Tags,
        Feedback::CreatedAt,
        Feedback::UpdatedAt,
    ];
    let row = vec![
        Expr::val(message_id),
        Expr::val(scope.agent_id()),
        Expr::val(conversation.id),
        Expr::val(feedback.vote.as_str()),
        Expr::val(feedback.comment.clone()),
        Expr::val(tags),
        Expr::val(now),
        Expr::val(now),
    ];
    let mut statement = insert::<Feedback>(scope.user(), &columns, vec![row]);
    let excluded = |column: Feedback| Expr::col((Alias::new("excluded"), column));
    statement.on_conflict(
        OnConflict::column(Feedback::MessageId)
            .value(Feedback::Vote, excluded(Feedback::Vote))
            .value(Feedback::Comment, excluded(Feedback::Comment))
            .value(Feedback::Tags, excluded(Feedback::Tags))
            .value(Feedback::UpdatedAt, excluded(Feedback::UpdatedAt))
            .to_owned(),
    );
    statement
}

fn one_statement(scope: &UserScope, message_id: Uuid) -> SelectStatement {
    let mut query = select::<Feedback>(scope, &COLUMNS);
    query.and_where(Expr::col(Feedback::MessageId).eq(message_id));
    query
}

/// Sets (or replaces) the user's vote on an assistant message of their conversation with the
/// scope's agent.
pub async fn put_feedback(
    db: &Db,
    scope: &AgentScope,
    conversation_id: &str,
    message_id: Uuid,
    feedback: NewFeedback,
) -> StoreResult<FeedbackOutcome> {
    let Some(conversation) = find_conversation(db, scope, conversation_id).await? else {
        return Ok(FeedbackOutcome::NoSuchMessage);
    };
    let role = role_statement(scope, &conversation, message_id);
    let upsert = upsert_statement(scope, &conversation, message_id, &feedback, now_micros());
    let read = one_statement(scope.user(), message_id);
    let app_id = scope.user().application_id();
    let event = scope.user().notifies(EventType::FeedbackCreated).then(|| {
        Event::new(
            EventType::FeedbackCreated,
            serde_json::json!({
                "agent_id": scope.agent_id(),
                "conversation_id": conversation.external_id,
                "message_id": message_id,
                "user": scope.user().sub(),
                "vote": feedback.vote.as_str(),
                "comment": feedback.comment,
                "tags": feedback.tags,
            }),
        )
    });
    db.transaction(move |tx| {
        Box::pin(async move {
            match tx.row::<Role>(&role).await? {
                None => return Ok(FeedbackOutcome::NoSuchMessage),
                Some(found) if found.role != "assistant" => return Ok(FeedbackOutcome::NotAssistant),
                Some(_) => {}
            }
            tx.execute(&upsert).await?;
            let Some(saved) = tx.row::<FeedbackRow>(&read).await? else {
                return Ok(FeedbackOutcome::NoSuchMessage);
            };
            if let Some(mut event) = event {
                event.data["replaced"] = (saved.created_at != saved.updated_at).into();
                webhooks::enqueue(tx, app_id, &event).await?;
            }
            Ok(FeedbackOutcome::Saved(saved))
        })
    })
    .await
}

/// Removes the user's vote on a message of their conversation with the scope's agent.
pub async fn delete_feedback(
    db: &Db,
    scope: &AgentScope,
    conversation_id: &str,
    message_id: Uuid,
) -> StoreResult<bool> {
    let Some(conversation) = find_conversation(db, scope, conversation_id).await? else {
        return Ok(false);
    };
    let mut statement = delete::<Feedback>(scope.user());
    statement
        .and_where(Expr::col(Feedback::ConversationId).eq(conversation.id))
        .and_where(Expr::col(Feedback::MessageId).eq(message_id));
    Ok(db.execute(statement).await? > 0)
}

/// A page of the user's votes (export), newest first, before `before`.
pub async fn export_feedback(
    db: &Db,
    scope: &UserScope,
    before: Option<RecentCursor>,
    limit: u64,
) -> StoreResult<Vec<FeedbackRow>> {
    let mut query = select::<Feedback>(scope, &COLUMNS);
    newest_first(&mut query, BY_RECENCY, limit, before);
    db.rows(&query).await
}

/// Which votes an administrator lists.
#[derive(Debug, Clone, Default)]
pub struct FeedbackFilter {
    pub agent_id: Option<Uuid>,
    pub vote: Option<Vote>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// A vote with what it is about: the message's text, its conversation and user.
#[derive(Debug, Clone)]
pub struct FeedbackEntry {
    pub feedback: FeedbackRow,
    pub sub: String,
    pub conversation_id: String,
    pub content: String,
}

impl crate::store::row::FromRow for FeedbackEntry {
    fn from_row(row: &crate::store::row::Row<'_>) -> StoreResult<Self> {
        Ok(Self {
            feedback: FeedbackRow::from_row(row)?,
            sub: row.get("sub")?,
            conversation_id: row.get("conversation_external_id")?,
            content: row.get("content")?,
        })
    }
}

fn list_statement(
    access: &AppAccess,
    filter: &FeedbackFilter,
    limit: u64,
    before: Option<RecentCursor>,
) -> SelectStatement {
    let mut query = select_all_users::<Feedback>(access);
    query
        .columns(COLUMNS.map(|c| (Feedback::Table, c)))
        .column(sub_column::<Feedback>())
        .expr_as(
            Expr::col((Conversations::Table, Conversations::ExternalId)),
            "conversation_external_id",
        )
        .column((Messages::Table, Messages::Content))
        // The message and conversation a vote names are its own (foreign keys, same owner).
        .inner_join(
            Messages::Table,
            Expr::col((Messages::Table, Messages::Id)).equals((Feedback::Table, Feedback::MessageId)),
        )
        .inner_join(
            Conversations::Table,
            Expr::col((Conversations::Table, Conversations::Id)).equals((Feedback::Table, Feedback::ConversationId)),
        );
    if let Some(agent) = filter.agent_id {
        query.and_where(Expr::col((Feedback::Table, Feedback::AgentId)).eq(agent));
    }
    if let Some(vote) = filter.vote {
        query.and_where(Expr::col((Feedback::Table, Feedback::Vote)).eq(vote.as_str()));
    }
    if let Some(from) = filter.from {
        query.and_where(Expr::col((Feedback::Table, Feedback::UpdatedAt)).gte(from));
    }
    if let Some(to) = filter.to {
        query.and_where(Expr::col((Feedback::Table, Feedback::UpdatedAt)).lte(to));
    }
    newest_first(&mut query, BY_RECENCY, limit + 1, before);
    query
}

/// The application's votes, newest first, a page at a time.
pub async fn list_feedback(
    db: &Db,
    access: &AppAccess,
    filter: &FeedbackFilter,
    limit: u64,
    before: Option<RecentCursor>,
) -> StoreResult<(Vec<FeedbackEntry>, Option<RecentCursor>)> {
    let mut rows: Vec<FeedbackEntry> = db.rows(&list_statement(access, filter, limit, before)).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last()).flatten().map(|e| RecentCursor {
        updated_at: e.feedback.updated_at,
        id: e.feedback.message_id,
    });
    Ok((rows, next))
}

#[cfg(test)]
mod tests {
    use sea_query::SqliteQueryBuilder;

    use super::super::tests::{agent_scope_and_conversation, assert_owned};
    use super::*;
    use crate::store::scope::Role as AccessRole;

    #[test]
    fn feedback_statements_are_owned() {
        let (scope, conversation) = agent_scope_and_conversation();
        let message = Uuid::now_v7();
        assert_owned(&role_statement(&scope, &conversation, message), scope.user());
        let vote = NewFeedback {
            vote: Vote::Up,
            comment: None,
            tags: vec![],
        };
        assert_owned(
            &upsert_statement(&scope, &conversation, message, &vote, 1),
            scope.user(),
        );
        assert_owned(&one_statement(scope.user(), message), scope.user());
        let access = AppAccess::granted(scope.user().application_id().uuid(), AccessRole::Admin);
        let (sql, _) = list_statement(&access, &FeedbackFilter::default(), 10, None).build(SqliteQueryBuilder);
        assert!(sql.contains("\"feedback\".\"application_id\" = ?"), "{sql}");
    }
}
