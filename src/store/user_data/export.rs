//! Everything stored for one user: export (right of access) and erase (right to be forgotten).

use sea_query::{Expr, ExprTrait, Order};
use uuid::Uuid;

use super::conversations::{self, Conversation};
use super::memories::{self, Memory};
use super::messages::{self, Message};
use super::tables::{Conversations, Feedback, Memories, Messages, Usage};
use super::{delete, select};
use crate::store::scope::UserScope;
use crate::store::webhooks::{self, Event, EventType};
use crate::store::{Count, Db, StoreResult};

/// A page of the user's conversations, in the order they were made, after `after`.
pub async fn export_conversations(
    db: &Db,
    scope: &UserScope,
    after: Option<Uuid>,
    limit: u64,
) -> StoreResult<Vec<Conversation>> {
    let mut query = conversations::of_user(scope);
    if let Some(after) = after {
        query.and_where(Expr::col((Conversations::Table, Conversations::Id)).gt(after));
    }
    query
        .order_by((Conversations::Table, Conversations::Id), Order::Asc)
        .limit(limit);
    db.rows(&query).await
}

/// A page of one of the user's conversations' messages, oldest first, after sequence `after`.
pub async fn export_messages(
    db: &Db,
    scope: &UserScope,
    conversation: &Conversation,
    after: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<Message>> {
    let mut query = messages::of_conversation(scope, conversation);
    if let Some(after) = after {
        query.and_where(Expr::col(Messages::Seq).gt(after));
    }
    query.order_by(Messages::Seq, Order::Asc).limit(limit);
    db.rows(&query).await
}

/// A page of the user's memories, oldest first, after `after`.
pub async fn export_memories(db: &Db, scope: &UserScope, after: Option<Uuid>, limit: u64) -> StoreResult<Vec<Memory>> {
    let mut query = memories::of_user(scope);
    if let Some(after) = after {
        query.and_where(Expr::col((Memories::Table, Memories::Id)).gt(after));
    }
    query.order_by((Memories::Table, Memories::Id), Order::Asc).limit(limit);
    db.rows(&query).await
}

/// How much an erase removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub conversations: u64,
    pub messages: u64,
    pub memories: u64,
}

/// Deletes everything stored for the user, in one transaction.
pub async fn erase(db: &Db, scope: &UserScope) -> StoreResult<Erased> {
    let statements = erase_statements(scope);
    let app_id = scope.application_id();
    let event = Event::new(EventType::UserErased, serde_json::json!({"user": scope.sub()}));
    db.transaction(move |tx| {
        Box::pin(async move {
            let (count_messages, delete_conversations, delete_memories, delete_usage, delete_feedback) = &statements;
            let messages = tx.row::<Count>(count_messages).await?.map_or(0, |c| c.n);
            let erased = Erased {
                conversations: tx.execute(delete_conversations).await?,
                messages: messages as u64,
                memories: tx.execute(delete_memories).await?,
            };
            // Usage and votes name the user too: they go with them.
            tx.execute(delete_usage).await?;
            tx.execute(delete_feedback).await?;
            // Whoever erased them (the user, or an administrator), the application is told.
            webhooks::enqueue(tx, app_id, &event).await?;
            Ok(erased)
        })
    })
    .await
}

fn erase_statements(
    scope: &UserScope,
) -> (
    sea_query::SelectStatement,
    sea_query::DeleteStatement,
    sea_query::DeleteStatement,
    sea_query::DeleteStatement,
    sea_query::DeleteStatement,
) {
    let count_messages = select::<Messages>(scope, &[])
        .expr_as(Expr::col(Messages::Id).count(), "n")
        .to_owned();
    (
        count_messages,
        delete::<Conversations>(scope),
        delete::<Memories>(scope),
        delete::<Usage>(scope),
        delete::<Feedback>(scope),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_owned, user};
    use super::*;
    use crate::store::scope::AgentAccess;

    #[test]
    fn every_export_and_erase_statement_is_owned() {
        let scope = user(AgentAccess::All);
        let (count, conversations, memories, usage, feedback) = erase_statements(&scope);
        assert_owned(&count, &scope);
        assert_owned(&usage, &scope);
        assert_owned(&feedback, &scope);
        assert_owned(&conversations, &scope);
        assert_owned(&memories, &scope);
        assert_owned(&conversations::of_user(&scope), &scope);
        assert_owned(&memories::of_user(&scope), &scope);
    }
}
