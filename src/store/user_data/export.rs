//! Everything stored for one user: export (right of access) and erase (right to be forgotten).

use sea_query::{Expr, ExprTrait, Order};

use super::conversations::{self, Conversation};
use super::memories::{self, Memory};
use super::messages::{self, Message};
use super::tables::{Conversations, Memories, Messages};
use super::{delete, select};
use crate::store::scope::UserScope;
use crate::store::{Count, Db, StoreResult};

/// Everything stored for the user.
pub struct Export {
    pub conversations: Vec<(Conversation, Vec<Message>)>,
    pub memories: Vec<Memory>,
}

/// Reads everything stored for the user (off the async threads on SQLite: its size is the user's).
pub async fn export(db: &Db, scope: &UserScope) -> StoreResult<Export> {
    let mut query = conversations::of_user(scope);
    query.order_by((Conversations::Table, Conversations::Id), Order::Asc);
    let conversations: Vec<Conversation> = db.large_rows(&query).await?;
    let mut with_messages = Vec::with_capacity(conversations.len());
    for conversation in conversations {
        let mut query = messages::of_conversation(scope, &conversation);
        query.order_by(Messages::Seq, Order::Asc);
        let messages = db.large_rows(&query).await?;
        with_messages.push((conversation, messages));
    }
    let mut query = memories::of_user(scope);
    query.order_by((Memories::Table, Memories::Id), Order::Asc);
    Ok(Export {
        conversations: with_messages,
        memories: db.large_rows(&query).await?,
    })
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
    db.transaction(move |tx| {
        Box::pin(async move {
            let (count_messages, delete_conversations, delete_memories) = &statements;
            let messages = tx.row::<Count>(count_messages).await?.map_or(0, |c| c.n);
            Ok(Erased {
                conversations: tx.execute(delete_conversations).await?,
                messages: messages as u64,
                memories: tx.execute(delete_memories).await?,
            })
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
) {
    let count_messages = select::<Messages>(scope, &[])
        .expr_as(Expr::col(Messages::Id).count(), "n")
        .to_owned();
    (
        count_messages,
        delete::<Conversations>(scope),
        delete::<Memories>(scope),
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
        let (count, conversations, memories) = erase_statements(&scope);
        assert_owned(&count, &scope);
        assert_owned(&conversations, &scope);
        assert_owned(&memories, &scope);
        assert_owned(&conversations::of_user(&scope), &scope);
        assert_owned(&memories::of_user(&scope), &scope);
    }
}
