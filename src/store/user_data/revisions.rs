//! Revising a conversation with the whole history a client sent (the AI SDKs): what the history
//! no longer has (a regenerated reply, an edited message and what followed) becomes
//! `superseded`, what it adds is appended, in one transaction.

use sea_query::{Expr, ExprTrait, SelectStatement};
use uuid::Uuid;

use super::conversations::Conversation;
use super::messages::{Append, LastSeq, LiveMark, Message, MessageStatus, NewMessage, of_conversation};
use super::tables::Messages;
use super::update;
use crate::store::scope::AgentScope;
use crate::store::{Db, StoreError, StoreResult, Tx, now_micros};

/// A message of the whole history a client sent (AI SDK), to compare with what is stored.
#[derive(Debug, Clone)]
pub struct SentEntry {
    /// The client's id; `None` for a reply the client named its own way (it cannot be compared).
    pub client_id: Option<String>,
    /// `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

/// The whole history a client sent, and what it asked to be done with it.
#[derive(Debug, Clone, Default)]
pub struct SentHistory {
    /// Oldest first; every user message has its client id.
    pub messages: Vec<SentEntry>,
    /// AI SDK `trigger: "regenerate-message"`: the stored messages after this history are
    /// replaced by a new reply.
    pub regenerate: bool,
    /// The message the client says it edited (AI SDK `messageId` with `submit-message`).
    pub edited: Option<String>,
}

/// What revising a conversation with a client's history did.
#[derive(Debug, Default)]
pub struct Revised {
    /// The messages stored now (the user's new or edited ones), in order.
    pub appended: Vec<Message>,
    /// The last message of the history the model answers (the newest appended, else the last one
    /// kept).
    pub up_to: Option<i64>,
    /// How many stored messages were marked `superseded`.
    pub superseded: u64,
}

/// Reconciles one of the user's conversations with the whole history a client sent: the stored
/// messages the history no longer has (a regenerated reply, an edited message and all after it)
/// are marked `superseded`, and the user messages the store has not seen are appended. Messages
/// are matched by client id, in order; the text of user messages is compared when
/// `compare_text` (privacy mode stores none to compare). A history with a reply the store does
/// not know (ids the client made up) cannot say what it dropped: only its explicit signals
/// (`regenerate`, `edited`, a changed text) replace anything. One transaction.
pub async fn revise_history(
    db: &Db,
    scope: &AgentScope,
    conversation: &Conversation,
    history: SentHistory,
    compare_text: bool,
    live: LiveMark,
) -> StoreResult<Revised> {
    if conversation.agent_id != scope.agent_id() {
        return Err(StoreError::NotFound);
    }
    let revision = Revision {
        append: Append {
            scope: scope.user().clone(),
            conversation: conversation.clone(),
            new: Vec::new(),
            now: now_micros(),
            live,
        },
        history,
        compare_text,
    };
    db.transaction(move |tx| Box::pin(async move { revision.run(tx).await }))
        .await
}

/// A stored live message that shares an id with the sent history (the client's own, or the
/// server's: a client that loaded the conversation from the API sends back the ids it read).
struct Known {
    id: Uuid,
    seq: i64,
    role: String,
    client_id: Option<String>,
    /// The text of a user message (replies are not compared, so not read).
    content: String,
}
crate::from_row!(Known {
    id,
    seq,
    role,
    client_id,
    content
});

struct Seq {
    seq: i64,
}
crate::from_row!(Seq { seq });

/// What to do with a sent history, given what is stored.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// Mark the live messages from this sequence number on `superseded`.
    supersede_from: Option<i64>,
    /// The sent messages to append (indexes into the history).
    append: Vec<usize>,
    /// The last stored message the history keeps.
    kept: Option<i64>,
    /// `supersede_from` is what follows a kept reply (not a changed message): a client shows a
    /// reply's tool calls, their results and the replies to them as one message, so what follows
    /// it up to the next user message stays.
    after_kept: bool,
}

fn plan(history: &SentHistory, known: &[Known], compare_text: bool) -> Plan {
    let find = |id: &Option<String>| {
        let id = id.as_deref()?;
        let server_id = Uuid::parse_str(id).ok();
        known
            .iter()
            .find(|k| k.client_id.as_deref() == Some(id) || Some(k.id) == server_id)
    };
    let mut kept: Option<i64> = None;
    let mut foreign_reply = false;
    let mut changed: Option<i64> = None;
    let mut first_new = history.messages.len();
    for (i, sent) in history.messages.iter().enumerate() {
        match find(&sent.client_id) {
            None if sent.role == "assistant" => foreign_reply = true,
            None => {
                first_new = i;
                break;
            }
            Some(stored) => {
                let after = kept.unwrap_or(i64::MIN);
                let same = stored.role == sent.role
                    && stored.seq > after
                    && (history.edited.is_none() || history.edited != sent.client_id)
                    && (sent.role != "user" || !compare_text || stored.content == sent.content);
                if same {
                    kept = Some(stored.seq);
                } else {
                    changed = Some(kept.map_or(stored.seq, |k| Ord::max(stored.seq, k + 1)));
                    first_new = i;
                    break;
                }
            }
        }
    }
    // What comes after the last message kept was dropped by the client, when it can tell: a
    // history that knows nothing stored (a client sending only its newest message) drops nothing.
    let kept_reply = kept.is_some_and(|k| known.iter().any(|m| m.seq == k && m.role == "assistant"));
    let after_kept = changed.is_none() && kept_reply;
    let supersede_from = changed.or_else(|| {
        let dropped = history.regenerate || !foreign_reply;
        kept.filter(|_| dropped).map(|k| k + 1)
    });
    let mut append = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    for (i, sent) in history.messages.iter().enumerate().skip(first_new) {
        if sent.role != "user" {
            continue;
        }
        // A message still stored and kept is not stored again (nor one sent twice).
        let stays = find(&sent.client_id).is_some_and(|stored| supersede_from.is_none_or(|from| stored.seq < from));
        let id = sent.client_id.as_deref().unwrap_or_default();
        if stays || ids.contains(&id) {
            continue;
        }
        ids.push(id);
        append.push(i);
    }
    Plan {
        supersede_from,
        append,
        kept,
        after_kept,
    }
}

/// One revision's statements, shared by both backends.
struct Revision {
    append: Append,
    history: SentHistory,
    compare_text: bool,
}

impl Revision {
    async fn run(mut self, tx: &mut Tx) -> StoreResult<Revised> {
        // Lock the conversation first (PostgreSQL; SQLite has one writer): two revisions of one
        // conversation take turns.
        let Some(locked) = tx.row::<LastSeq>(&self.append.lock()).await? else {
            return Err(StoreError::NotFound);
        };
        let known: Vec<Known> = tx.rows(&self.known()).await?;
        let plan = plan(&self.history, &known, self.compare_text);
        let mut superseded = 0;
        let mut from = plan.supersede_from.filter(|from| *from <= locked.last_seq);
        if let Some(start) = from
            && plan.after_kept
        {
            from = tx.row::<Seq>(&self.next_user_message(start)).await?.map(|row| row.seq);
        }
        if let Some(from) = from {
            superseded = tx.execute(&self.supersede(from)).await?;
        }
        self.append.new = plan
            .append
            .iter()
            .map(|&i| {
                let sent = &self.history.messages[i];
                NewMessage::text(
                    "user",
                    sent.content.clone(),
                    MessageStatus::Complete,
                    sent.client_id.clone(),
                )
            })
            .collect();
        let mut appended = Vec::new();
        if !self.append.new.is_empty() {
            let reserved: Option<LastSeq> = tx.row(&self.append.reserve(self.append.new.len())).await?;
            let fresh: Vec<&NewMessage> = self.append.new.iter().collect();
            appended = self.append.rows(&fresh, reserved.ok_or(StoreError::NotFound)?);
            tx.execute(&self.append.insert(&appended)).await?;
        } else {
            self.append.mark_only(tx).await?;
        }
        let up_to = appended.last().map(|m| m.seq).or(plan.kept);
        Ok(Revised {
            appended,
            up_to,
            superseded,
        })
    }

    /// The live stored messages that share an id (client's or server's) with the history: ids,
    /// seq, role, and the text of user messages.
    fn known(&self) -> SelectStatement {
        let ids: Vec<String> = self
            .history
            .messages
            .iter()
            .filter_map(|m| m.client_id.clone())
            .collect();
        let server_ids: Vec<Uuid> = ids.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect();
        let mut matches = sea_query::Condition::any().add(Expr::col(Messages::ClientId).is_in(ids));
        if !server_ids.is_empty() {
            matches = matches.add(Expr::col(Messages::Id).is_in(server_ids));
        }
        let mut query = of_conversation(&self.append.scope, &self.append.conversation);
        query
            .clear_selects()
            .columns([Messages::Id, Messages::Seq, Messages::Role, Messages::ClientId])
            .expr_as(
                Expr::case(Expr::col(Messages::Role).eq("user"), Expr::col(Messages::Content)).finally(""),
                "content",
            )
            .cond_where(matches)
            .and_where(Expr::col(Messages::SupersededAt).is_null());
        query
    }

    /// The first live user message from `from` on.
    fn next_user_message(&self, from: i64) -> SelectStatement {
        let mut query = of_conversation(&self.append.scope, &self.append.conversation);
        query
            .clear_selects()
            .column(Messages::Seq)
            .and_where(Expr::col(Messages::Seq).gte(from))
            .and_where(Expr::col(Messages::Role).eq("user"))
            .and_where(Expr::col(Messages::SupersededAt).is_null())
            .order_by(Messages::Seq, sea_query::Order::Asc)
            .limit(1);
        query
    }

    /// Marks the conversation's live messages from `from` on as superseded.
    fn supersede(&self, from: i64) -> sea_query::UpdateStatement {
        update::<Messages>(&self.append.scope)
            .value(Messages::SupersededAt, self.append.now)
            .and_where(Expr::col(Messages::ConversationId).eq(self.append.conversation.id))
            .and_where(Expr::col(Messages::Seq).gte(from))
            .and_where(Expr::col(Messages::SupersededAt).is_null())
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{agent_scope_and_conversation, assert_owned};
    use super::*;

    fn revision(history: SentHistory) -> (crate::store::scope::AgentScope, Revision) {
        let (scope, conversation) = agent_scope_and_conversation();
        let revision = Revision {
            append: Append {
                scope: scope.user().clone(),
                conversation,
                new: Vec::new(),
                now: 1,
                live: LiveMark::Keep,
            },
            history,
            compare_text: true,
        };
        (scope, revision)
    }

    #[test]
    fn every_revision_statement_is_owned() {
        let history = SentHistory {
            messages: vec![
                sent("u1", "user", "hi"),
                sent(&Uuid::now_v7().to_string(), "assistant", ""),
            ],
            ..SentHistory::default()
        };
        let (scope, revision) = revision(history);
        assert_owned(&revision.known(), scope.user());
        assert_owned(&revision.supersede(3), scope.user());
        assert_owned(&revision.next_user_message(3), scope.user());
        // The id match is inside the owner's filter, not beside it.
        let (sql, _) = revision.known().build(sea_query::SqliteQueryBuilder);
        assert!(sql.contains("AND (\"client_id\" IN"), "{sql}");
    }

    fn sent(id: &str, role: &'static str, text: &str) -> SentEntry {
        SentEntry {
            client_id: Some(id.to_owned()),
            role,
            content: text.to_owned(),
        }
    }

    fn stored(seq: i64, id: &str, role: &str, text: &str) -> Known {
        Known {
            id: Uuid::now_v7(),
            seq,
            role: role.to_owned(),
            client_id: Some(id.to_owned()),
            content: text.to_owned(),
        }
    }

    fn history(messages: Vec<SentEntry>) -> SentHistory {
        SentHistory {
            messages,
            ..SentHistory::default()
        }
    }

    fn two_turns() -> Vec<Known> {
        vec![
            stored(1, "u1", "user", "one"),
            stored(2, "a1", "assistant", ""),
            stored(3, "u2", "user", "two"),
            stored(4, "a2", "assistant", ""),
        ]
    }

    #[test]
    fn a_longer_history_appends_its_new_messages_and_replaces_nothing() {
        let sent = history(vec![
            sent("u1", "user", "one"),
            sent("a1", "assistant", "reply"),
            sent("u2", "user", "two"),
            sent("a2", "assistant", "reply"),
            sent("u3", "user", "three"),
        ]);
        let plan = plan(&sent, &two_turns(), true);
        assert_eq!(
            plan,
            Plan {
                supersede_from: Some(5),
                append: vec![4],
                kept: Some(4),
                after_kept: true,
            }
        );
    }

    #[test]
    fn a_history_that_stops_early_replaces_what_it_dropped() {
        // useChat's regenerate: the reply to u2 is dropped and made again.
        let mut sent = history(vec![
            sent("u1", "user", "one"),
            sent("a1", "assistant", ""),
            sent("u2", "user", "two"),
        ]);
        sent.regenerate = true;
        let plan = plan(&sent, &two_turns(), true);
        assert_eq!(plan.supersede_from, Some(4));
        assert!(plan.append.is_empty());
        assert_eq!(plan.kept, Some(3));
    }

    #[test]
    fn an_edited_message_is_replaced_with_everything_after_it() {
        let edited = vec![
            sent("u1", "user", "one"),
            sent("a1", "assistant", ""),
            sent("u2", "user", "TWO"),
        ];
        let plan_by_text = plan(&history(edited.clone()), &two_turns(), true);
        assert_eq!(
            plan_by_text,
            Plan {
                supersede_from: Some(3),
                append: vec![2],
                kept: Some(2),
                after_kept: false,
            }
        );
        // Without text to compare (privacy mode) the client's `messageId` says which.
        let mut by_id = history(edited);
        assert_eq!(plan(&by_id, &two_turns(), false).append, Vec::<usize>::new());
        by_id.edited = Some("u2".into());
        assert_eq!(plan(&by_id, &two_turns(), false), plan_by_text);
    }

    #[test]
    fn a_history_that_knows_nothing_stored_replaces_nothing() {
        // A client that sends only its newest message.
        let plan = plan(&history(vec![sent("u9", "user", "new")]), &two_turns(), true);
        assert_eq!(
            plan,
            Plan {
                supersede_from: None,
                append: vec![0],
                kept: None,
                after_kept: false,
            }
        );
    }

    #[test]
    fn replies_the_store_does_not_know_make_dropping_unknowable() {
        // The client named the replies its own way: only explicit signals replace anything.
        let sent_messages = vec![sent("u1", "user", "one"), sent("mine-1", "assistant", "reply")];
        let plan_plain = plan(&history(sent_messages.clone()), &two_turns(), true);
        assert_eq!(plan_plain.supersede_from, None);
        assert_eq!(plan_plain.kept, Some(1));
        let mut regenerate = history(sent_messages);
        regenerate.regenerate = true;
        assert_eq!(plan(&regenerate, &two_turns(), true).supersede_from, Some(2));
    }

    #[test]
    fn server_ids_match_as_the_clients_own() {
        let known = two_turns();
        let server_id = known[0].id.to_string();
        let sent = history(vec![
            sent(&server_id, "user", "one"),
            sent("a1", "assistant", ""),
            sent("u2", "user", "two"),
            sent("a2", "assistant", ""),
            sent("u3", "user", "three"),
        ]);
        assert_eq!(plan(&sent, &known, true).append, vec![4]);
    }
}
