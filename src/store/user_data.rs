//! End users' data: conversations, messages and memory.
//!
//! This is the only module that queries those tables, and every function here takes a `UserScope`.
//! The scope's filter (application, `sub`, and the key's agents) is added by `conversations_of` /
//! `memories_of` / `messages_of`, the only places that start a query on these tables. A reviewer
//! can check isolation by reading this file alone.

use sea_query::{Condition, Expr, ExprTrait, Order, Query, SelectExprTrait, SelectStatement};
use serde_json::Value;
use uuid::Uuid;

use super::{Backend, Count, Db, Json, StoreError, StoreResult, Tx, now_micros};
use crate::scope::{AgentAccess, UserScope};

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
}

use tables::{Conversations, Memories, Messages};

// ---------------------------------------------------------------------------------------------
// The scope filters: the only way queries on user data begin.

/// `application_id = ? AND sub = ?`, plus `agent_id IN (...)` for an agent-scoped key.
fn scope_condition<T: sea_query::Iden + Copy + 'static>(
    scope: &UserScope,
    table: T,
    app: T,
    sub: T,
    agent: T,
) -> Condition {
    let mut condition = Condition::all()
        .add(Expr::col((table, app)).eq(scope.application_id()))
        .add(Expr::col((table, sub)).eq(scope.sub()));
    if let AgentAccess::Only(ids) = scope.agents() {
        // `NULL IN (...)` is not true: app-wide memory stays out of an agent-scoped key's reach.
        condition = condition.add(Expr::col((table, agent)).is_in(ids.iter().copied()));
    }
    condition
}

/// `SELECT <conversation columns> FROM conversations WHERE <scope>`.
fn conversations_of(scope: &UserScope) -> SelectStatement {
    Query::select()
        .columns(CONVERSATION_COLUMNS.map(|c| (Conversations::Table, c)))
        .from(Conversations::Table)
        .cond_where(conversation_condition(scope))
        .to_owned()
}

/// `SELECT <memory columns> FROM memories WHERE <scope>`.
fn memories_of(scope: &UserScope) -> SelectStatement {
    Query::select()
        .columns(MEMORY_COLUMNS.map(|c| (Memories::Table, c)))
        .from(Memories::Table)
        .cond_where(memory_condition(scope))
        .to_owned()
}

fn conversation_condition(scope: &UserScope) -> Condition {
    scope_condition(
        scope,
        Conversations::Table,
        Conversations::ApplicationId,
        Conversations::Sub,
        Conversations::AgentId,
    )
}

fn memory_condition(scope: &UserScope) -> Condition {
    scope_condition(
        scope,
        Memories::Table,
        Memories::ApplicationId,
        Memories::Sub,
        Memories::AgentId,
    )
}

/// Messages of one of the scope's conversations. Messages carry the owner's application and
/// `sub` too, so the filter holds even for a conversation id from elsewhere.
fn messages_of(scope: &UserScope, conversation: &Conversation) -> SelectStatement {
    Query::select()
        .columns(MESSAGE_COLUMNS)
        .from(Messages::Table)
        .and_where(Expr::col(Messages::ConversationId).eq(conversation.id))
        .and_where(Expr::col(Messages::ApplicationId).eq(scope.application_id()))
        .and_where(Expr::col(Messages::Sub).eq(scope.sub()))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Conversations

#[derive(Debug, Clone)]
pub struct Conversation {
    /// Internal id; never shown.
    pub id: Uuid,
    /// The id the client sees (per user).
    pub external_id: String,
    pub agent_id: Uuid,
    pub title: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::from_row!(Conversation {
    id,
    external_id,
    agent_id,
    title,
    created_at,
    updated_at
});

const CONVERSATION_COLUMNS: [Conversations; 6] = [
    Conversations::Id,
    Conversations::ExternalId,
    Conversations::AgentId,
    Conversations::Title,
    Conversations::CreatedAt,
    Conversations::UpdatedAt,
];

/// Where a page of conversations continues: after this (updated_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationCursor {
    pub updated_at: i64,
    pub id: Uuid,
}

/// The user's conversations with an agent, most recently updated first.
pub async fn list_conversations(
    db: &Db,
    scope: &UserScope,
    agent_id: Uuid,
    limit: u64,
    after: Option<ConversationCursor>,
) -> StoreResult<(Vec<Conversation>, Option<ConversationCursor>)> {
    let mut query = conversations_of(scope);
    query.and_where(Expr::col((Conversations::Table, Conversations::AgentId)).eq(agent_id));
    if let Some(after) = after {
        query.cond_where(
            Condition::any()
                .add(Expr::col(Conversations::UpdatedAt).lt(after.updated_at))
                .add(
                    Condition::all()
                        .add(Expr::col(Conversations::UpdatedAt).eq(after.updated_at))
                        .add(Expr::col(Conversations::Id).lt(after.id)),
                ),
        );
    }
    query
        .order_by(Conversations::UpdatedAt, Order::Desc)
        .order_by(Conversations::Id, Order::Desc)
        .limit(limit + 1);
    let mut rows: Vec<Conversation> = db.rows(&query).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|c| ConversationCursor {
            updated_at: c.updated_at,
            id: c.id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// One of the user's conversations with this agent, by the id the client knows.
pub async fn find_conversation(
    db: &Db,
    scope: &UserScope,
    agent_id: Uuid,
    external_id: &str,
) -> StoreResult<Option<Conversation>> {
    let mut query = conversations_of(scope);
    query
        .and_where(Expr::col((Conversations::Table, Conversations::AgentId)).eq(agent_id))
        .and_where(Expr::col((Conversations::Table, Conversations::ExternalId)).eq(external_id));
    db.row(&query).await
}

/// One of the user's conversations with this agent and its messages (oldest first), in one query.
pub async fn conversation_with_messages(
    db: &Db,
    scope: &UserScope,
    agent_id: Uuid,
    external_id: &str,
) -> StoreResult<Option<(Conversation, Vec<Message>)>> {
    let mut query = conversations_of(scope);
    query
        .exprs([
            Expr::col((Messages::Table, Messages::Id)).alias("message_id"),
            Expr::col((Messages::Table, Messages::Seq)).alias("message_seq"),
            Expr::col((Messages::Table, Messages::Role)).alias("message_role"),
            Expr::col((Messages::Table, Messages::Content)).alias("message_content"),
            Expr::col((Messages::Table, Messages::Status)).alias("message_status"),
            Expr::col((Messages::Table, Messages::ClientId)).alias("message_client_id"),
            Expr::col((Messages::Table, Messages::CreatedAt)).alias("message_created_at"),
        ])
        // The messages carry their owner too: the join repeats the scope's filter on them.
        .left_join(
            Messages::Table,
            Condition::all()
                .add(
                    Expr::col((Messages::Table, Messages::ConversationId))
                        .equals((Conversations::Table, Conversations::Id)),
                )
                .add(
                    Expr::col((Messages::Table, Messages::ApplicationId))
                        .equals((Conversations::Table, Conversations::ApplicationId)),
                )
                .add(Expr::col((Messages::Table, Messages::Sub)).equals((Conversations::Table, Conversations::Sub))),
        )
        .and_where(Expr::col((Conversations::Table, Conversations::AgentId)).eq(agent_id))
        .and_where(Expr::col((Conversations::Table, Conversations::ExternalId)).eq(external_id))
        .order_by((Messages::Table, Messages::Seq), Order::Asc);
    let rows: Vec<ConversationMessage> = db.rows(&query).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let conversation = first.conversation.clone();
    let messages = rows.into_iter().filter_map(ConversationMessage::message).collect();
    Ok(Some((conversation, messages)))
}

/// A row of `conversation_with_messages`: the conversation, and one of its messages (none when it
/// has no messages: a left join).
struct ConversationMessage {
    conversation: Conversation,
    message_id: Option<Uuid>,
    message_seq: Option<i64>,
    message_role: Option<String>,
    message_content: Option<String>,
    message_status: Option<String>,
    message_client_id: Option<String>,
    message_created_at: Option<i64>,
}

impl super::FromRow for ConversationMessage {
    fn from_row(row: &super::Row<'_>) -> StoreResult<Self> {
        Ok(Self {
            conversation: Conversation::from_row(row)?,
            message_id: row.get("message_id")?,
            message_seq: row.get("message_seq")?,
            message_role: row.get("message_role")?,
            message_content: row.get("message_content")?,
            message_status: row.get("message_status")?,
            message_client_id: row.get("message_client_id")?,
            message_created_at: row.get("message_created_at")?,
        })
    }
}

impl ConversationMessage {
    fn message(self) -> Option<Message> {
        Some(Message {
            id: self.message_id?,
            seq: self.message_seq?,
            role: self.message_role?,
            content: self.message_content?,
            status: self.message_status?,
            client_id: self.message_client_id,
            created_at: self.message_created_at?,
        })
    }
}

/// The conversation's messages, oldest first.
pub async fn messages(db: &Db, scope: &UserScope, conversation: &Conversation) -> StoreResult<Vec<Message>> {
    let mut query = messages_of(scope, conversation);
    query.order_by(Messages::Seq, Order::Asc);
    db.rows(&query).await
}

/// The last `limit` messages of the conversation up to sequence number `up_to` (inclusive),
/// oldest first: the model's context window as of one turn, untouched by turns that came later.
pub async fn recent_messages(
    db: &Db,
    scope: &UserScope,
    conversation: &Conversation,
    up_to: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<Message>> {
    let mut query = messages_of(scope, conversation);
    if let Some(up_to) = up_to {
        query.and_where(Expr::col(Messages::Seq).lte(up_to));
    }
    query.order_by(Messages::Seq, Order::Desc).limit(limit);
    let mut rows: Vec<Message> = db.rows(&query).await?;
    rows.reverse();
    Ok(rows)
}

pub async fn rename_conversation(
    db: &Db,
    scope: &UserScope,
    agent_id: Uuid,
    external_id: &str,
    title: Option<&str>,
) -> StoreResult<Option<Conversation>> {
    let Some(conversation) = find_conversation(db, scope, agent_id, external_id).await? else {
        return Ok(None);
    };
    let now = now_micros();
    db.execute(
        Query::update()
            .table(Conversations::Table)
            .value(Conversations::Title, title.map(str::to_owned))
            .value(Conversations::UpdatedAt, now)
            .cond_where(conversation_condition(scope))
            .and_where(Expr::col(Conversations::Id).eq(conversation.id)),
    )
    .await?;
    Ok(Some(Conversation {
        title: title.map(str::to_owned),
        updated_at: now,
        ..conversation
    }))
}

/// Deletes one of the user's conversations; its messages go with it.
pub async fn delete_conversation(db: &Db, scope: &UserScope, agent_id: Uuid, external_id: &str) -> StoreResult<bool> {
    let deleted = db
        .execute(
            Query::delete()
                .from_table(Conversations::Table)
                .cond_where(conversation_condition(scope))
                .and_where(Expr::col(Conversations::AgentId).eq(agent_id))
                .and_where(Expr::col(Conversations::ExternalId).eq(external_id)),
        )
        .await?;
    Ok(deleted > 0)
}

/// The outcome of naming a conversation for a completion.
pub enum OpenedConversation {
    Existing(Conversation),
    Created(Conversation),
    /// The user has a conversation with this id, but with another agent.
    OtherAgent,
}

/// Finds the user's conversation with this id and agent, or starts it.
pub async fn open_conversation(
    db: &Db,
    scope: &UserScope,
    agent_id: Uuid,
    external_id: &str,
    title: Option<&str>,
) -> StoreResult<OpenedConversation> {
    for _ in 0..2 {
        // Look the id up across all the user's agents: ids are unique per user.
        let any_agent = Query::select()
            .columns(CONVERSATION_COLUMNS)
            .from(Conversations::Table)
            .and_where(Expr::col(Conversations::ApplicationId).eq(scope.application_id()))
            .and_where(Expr::col(Conversations::Sub).eq(scope.sub()))
            .and_where(Expr::col(Conversations::ExternalId).eq(external_id))
            .to_owned();
        if let Some(existing) = db.row::<Conversation>(&any_agent).await? {
            return Ok(if existing.agent_id == agent_id {
                OpenedConversation::Existing(existing)
            } else {
                OpenedConversation::OtherAgent
            });
        }
        let now = now_micros();
        let conversation = Conversation {
            id: Uuid::now_v7(),
            external_id: external_id.to_owned(),
            agent_id,
            title: title.map(str::to_owned),
            created_at: now,
            updated_at: now,
        };
        let inserted = db
            .execute(
                Query::insert()
                    .into_table(Conversations::Table)
                    .columns([
                        Conversations::Id,
                        Conversations::ApplicationId,
                        Conversations::Sub,
                        Conversations::ExternalId,
                        Conversations::AgentId,
                        Conversations::Title,
                        Conversations::CreatedAt,
                        Conversations::UpdatedAt,
                    ])
                    .values_panic([
                        conversation.id.into(),
                        scope.application_id().into(),
                        scope.sub().into(),
                        conversation.external_id.clone().into(),
                        agent_id.into(),
                        conversation.title.clone().into(),
                        now.into(),
                        now.into(),
                    ]),
            )
            .await;
        match inserted {
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

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Debug, Clone)]
pub struct Message {
    pub id: Uuid,
    pub seq: i64,
    pub role: String,
    pub content: String,
    pub status: String,
    pub client_id: Option<String>,
    pub created_at: i64,
}

crate::from_row!(Message {
    id,
    seq,
    role,
    content,
    status,
    client_id,
    created_at
});

const MESSAGE_COLUMNS: [Messages; 7] = [
    Messages::Id,
    Messages::Seq,
    Messages::Role,
    Messages::Content,
    Messages::Status,
    Messages::ClientId,
    Messages::CreatedAt,
];

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub role: &'static str,
    pub content: String,
    pub status: &'static str,
    /// The client's own id for the message (AI SDK), used to never store it twice.
    pub client_id: Option<String>,
}

/// Appends messages to one of the user's conversations, in order, skipping any whose `client_id`
/// is already stored. One transaction: the conversation row's `last_seq` hands out the sequence
/// numbers (`UPDATE … RETURNING`, which also locks the row on PostgreSQL; SQLite has one writer),
/// so concurrent appends to one conversation get distinct, ordered numbers.
pub async fn append_messages(
    db: &Db,
    scope: &UserScope,
    conversation: &Conversation,
    new: &[NewMessage],
) -> StoreResult<Vec<Message>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let append = Append {
        scope: scope.clone(),
        conversation: conversation.clone(),
        new: new.to_vec(),
        now: now_micros(),
    };
    if db.backend() == Backend::Postgres && !append.has_client_ids() {
        // Nothing to deduplicate: reserve and insert in one statement, one round trip.
        let reserved: Option<LastSeq> = db.returning(append.reserve_and_insert()?).await?;
        let fresh: Vec<&NewMessage> = append.new.iter().collect();
        return Ok(append.rows(&fresh, reserved.ok_or(StoreError::NotFound)?));
    }
    db.transaction(move |tx| Box::pin(async move { append.run(tx).await }))
        .await
}

/// One append's statements, shared by both backends.
struct Append {
    scope: UserScope,
    conversation: Conversation,
    new: Vec<NewMessage>,
    now: i64,
}

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

    /// The conversation row, if it is this user's.
    fn owned(&self) -> Condition {
        Condition::all()
            .add(Expr::col(Conversations::Id).eq(self.conversation.id))
            .add(Expr::col(Conversations::ApplicationId).eq(self.scope.application_id()))
            .add(Expr::col(Conversations::Sub).eq(self.scope.sub()))
    }

    /// `SELECT last_seq … FOR UPDATE` of the conversation row, if it is this user's.
    fn lock(&self) -> SelectStatement {
        Query::select()
            .column(Conversations::LastSeq)
            .from(Conversations::Table)
            .cond_where(self.owned())
            .lock(sea_query::LockType::Update)
            .to_owned()
    }

    /// Which of the new messages' client ids the conversation already holds.
    fn known_client_ids(&self) -> SelectStatement {
        let ids: Vec<String> = self.new.iter().filter_map(|m| m.client_id.clone()).collect();
        let mut query = messages_of(&self.scope, &self.conversation);
        query.and_where(Expr::col(Messages::ClientId).is_in(ids));
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

    /// Reserves `count` sequence numbers; returns the last one (no row: not this user's).
    fn reserve(&self, count: usize) -> sea_query::UpdateStatement {
        Query::update()
            .table(Conversations::Table)
            .value(Conversations::UpdatedAt, self.now)
            .value(
                Conversations::LastSeq,
                Expr::col(Conversations::LastSeq).add(count as i64),
            )
            .cond_where(self.owned())
            .returning_col(Conversations::LastSeq)
            .to_owned()
    }

    /// PostgreSQL: `WITH reserved AS (<reserve>), inserted AS (INSERT … SELECT … FROM reserved)
    /// SELECT last_seq FROM reserved`. No row: not this user's conversation, and nothing inserted
    /// (the insert selects from the empty `reserved`).
    fn reserve_and_insert(&self) -> StoreResult<sea_query::WithQuery> {
        use sea_query::{CommonTableExpression, UnionType, WithClause};
        let count = self.new.len() as i64;
        let reserved = CommonTableExpression::new()
            .query(self.reserve(self.new.len()))
            .table_name("reserved")
            .to_owned();
        let mut rows = self.new.iter().enumerate().map(|(i, m)| {
            Query::select()
                .exprs([
                    Expr::val(m.id),
                    Expr::val(self.conversation.id),
                    Expr::val(self.scope.application_id()),
                    Expr::val(self.scope.sub()),
                    Expr::col(("reserved", "last_seq")).sub(count - 1 - i as i64),
                    Expr::val(m.role),
                    Expr::val(m.content.clone()),
                    Expr::val(m.status),
                    Expr::val(m.client_id.clone()),
                    Expr::val(self.now),
                ])
                .from("reserved")
                .to_owned()
        });
        let mut select = rows.next().ok_or(StoreError::Other("nothing to append".into()))?;
        for row in rows {
            select.union(UnionType::All, row);
        }
        let mut insert = Query::insert();
        insert
            .into_table(Messages::Table)
            .columns(MESSAGE_INSERT_COLUMNS)
            .select_from(select)
            .map_err(|e| StoreError::Other(Box::new(e)))?;
        let inserted = CommonTableExpression::new()
            .query(insert)
            .table_name("inserted")
            .to_owned();
        Ok(Query::select()
            .column(("reserved", "last_seq"))
            .from("reserved")
            .to_owned()
            .with(WithClause::new().cte(reserved).cte(inserted).to_owned()))
    }

    fn rows(&self, fresh: &[&NewMessage], reserved: LastSeq) -> Vec<Message> {
        let first = reserved.last_seq - fresh.len() as i64 + 1;
        fresh
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                id: m.id,
                seq: first + i as i64,
                role: m.role.to_owned(),
                content: m.content.clone(),
                status: m.status.to_owned(),
                client_id: m.client_id.clone(),
                created_at: self.now,
            })
            .collect()
    }

    fn insert(&self, rows: &[Message]) -> sea_query::InsertStatement {
        let mut insert = Query::insert();
        insert.into_table(Messages::Table).columns(MESSAGE_INSERT_COLUMNS);
        for row in rows {
            insert.values_panic([
                row.id.into(),
                self.conversation.id.into(),
                self.scope.application_id().into(),
                self.scope.sub().into(),
                row.seq.into(),
                row.role.clone().into(),
                row.content.clone().into(),
                row.status.clone().into(),
                row.client_id.clone().into(),
                self.now.into(),
            ]);
        }
        insert
    }
}

struct LastSeq {
    last_seq: i64,
}
crate::from_row!(LastSeq { last_seq });

const MESSAGE_INSERT_COLUMNS: [Messages; 10] = [
    Messages::Id,
    Messages::ConversationId,
    Messages::ApplicationId,
    Messages::Sub,
    Messages::Seq,
    Messages::Role,
    Messages::Content,
    Messages::Status,
    Messages::ClientId,
    Messages::CreatedAt,
];

struct ClientId {
    client_id: Option<String>,
}
crate::from_row!(ClientId { client_id });

// ---------------------------------------------------------------------------------------------
// Memory

#[derive(Debug, Clone)]
pub struct Memory {
    pub id: Uuid,
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

/// Stores a memory for the user. The caller has checked that the scope covers `agent_id` (or all
/// agents, when it is `None`) and that the agent is of this application.
pub async fn create_memory(
    db: &Db,
    scope: &UserScope,
    agent_id: Option<Uuid>,
    content: &str,
    metadata: &Value,
) -> StoreResult<Memory> {
    let now = now_micros();
    let memory = Memory {
        id: Uuid::now_v7(),
        agent_id,
        content: content.to_owned(),
        metadata: Json(metadata.clone()),
        created_at: now,
        updated_at: now,
    };
    db.execute(
        Query::insert()
            .into_table(Memories::Table)
            .columns([
                Memories::Id,
                Memories::ApplicationId,
                Memories::Sub,
                Memories::AgentId,
                Memories::Content,
                Memories::Metadata,
                Memories::CreatedAt,
                Memories::UpdatedAt,
            ])
            .values_panic([
                memory.id.into(),
                scope.application_id().into(),
                scope.sub().into(),
                agent_id.into(),
                memory.content.clone().into(),
                metadata.clone().into(),
                now.into(),
                now.into(),
            ]),
    )
    .await?;
    Ok(memory)
}

pub async fn find_memory(db: &Db, scope: &UserScope, id: Uuid) -> StoreResult<Option<Memory>> {
    let mut query = memories_of(scope);
    query.and_where(Expr::col((Memories::Table, Memories::Id)).eq(id));
    db.row(&query).await
}

pub async fn update_memory(
    db: &Db,
    scope: &UserScope,
    id: Uuid,
    content: Option<&str>,
    metadata: Option<&Value>,
) -> StoreResult<Option<Memory>> {
    let mut update = Query::update();
    update.table(Memories::Table).value(Memories::UpdatedAt, now_micros());
    if let Some(content) = content {
        update.value(Memories::Content, content);
    }
    if let Some(metadata) = metadata {
        update.value(Memories::Metadata, metadata.clone());
    }
    update
        .cond_where(memory_condition(scope))
        .and_where(Expr::col((Memories::Table, Memories::Id)).eq(id));
    if db.execute(update).await? == 0 {
        return Ok(None);
    }
    find_memory(db, scope, id).await
}

pub async fn delete_memory(db: &Db, scope: &UserScope, id: Uuid) -> StoreResult<bool> {
    let deleted = db
        .execute(
            Query::delete()
                .from_table(Memories::Table)
                .cond_where(memory_condition(scope))
                .and_where(Expr::col((Memories::Table, Memories::Id)).eq(id)),
        )
        .await?;
    Ok(deleted > 0)
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

fn apply_filter(query: &mut SelectStatement, filter: MemoryFilter) {
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
}

/// The user's memories, newest first.
pub async fn list_memories(
    db: &Db,
    scope: &UserScope,
    filter: MemoryFilter,
    page: super::PageRequest,
) -> StoreResult<(Vec<Memory>, Option<Uuid>)> {
    let mut query = memories_of(scope);
    apply_filter(&mut query, filter);
    page.apply(&mut query, (Memories::Table, Memories::Id));
    Ok(page.finish(db.rows(&query).await?, |m: &Memory| m.id))
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
    let mut query = memories_of(scope);
    apply_filter(&mut query, filter);
    match db.backend() {
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
    db.rows(&query).await
}

/// The owner token SQLite's full-text index holds for each memory: `lower(hex(application_id)) ||
/// 'x' || lower(hex(sub))`, as the generated column `memories.search_owner` computes it.
fn search_owner(scope: &UserScope) -> String {
    use std::fmt::Write as _;
    let mut owner = String::with_capacity(33 + 2 * scope.sub().len());
    for byte in scope.application_id().as_bytes() {
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

// ---------------------------------------------------------------------------------------------
// Export and erase (right of access, right to be forgotten)

/// Everything stored for the user.
pub struct Export {
    pub conversations: Vec<(Conversation, Vec<Message>)>,
    pub memories: Vec<Memory>,
}

pub async fn export(db: &Db, scope: &UserScope) -> StoreResult<Export> {
    let mut query = conversations_of(scope);
    query.order_by((Conversations::Table, Conversations::Id), Order::Asc);
    let conversations: Vec<Conversation> = db.rows(&query).await?;
    let mut with_messages = Vec::with_capacity(conversations.len());
    for conversation in conversations {
        let messages = messages(db, scope, &conversation).await?;
        with_messages.push((conversation, messages));
    }
    let mut query = memories_of(scope);
    query.order_by((Memories::Table, Memories::Id), Order::Asc);
    Ok(Export {
        conversations: with_messages,
        memories: db.rows(&query).await?,
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
    let count_messages = Query::select()
        .expr_as(Expr::col(Messages::Id).count(), "n")
        .from(Messages::Table)
        .and_where(Expr::col(Messages::ApplicationId).eq(scope.application_id()))
        .and_where(Expr::col(Messages::Sub).eq(scope.sub()))
        .to_owned();
    let delete_conversations = Query::delete()
        .from_table(Conversations::Table)
        .cond_where(conversation_condition(scope))
        .to_owned();
    let delete_memories = Query::delete()
        .from_table(Memories::Table)
        .cond_where(memory_condition(scope))
        .to_owned();
    db.transaction(move |tx| {
        Box::pin(async move {
            let messages = tx.row::<Count>(&count_messages).await?.map_or(0, |c| c.n);
            Ok(Erased {
                conversations: tx.execute(&delete_conversations).await?,
                messages: messages as u64,
                memories: tx.execute(&delete_memories).await?,
            })
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Aggregates for the application's administrators (no user's content, only counts)

/// How much one agent is used.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    pub conversations: i64,
    pub users: i64,
    /// (day number since the Unix epoch, conversations started that day), oldest first.
    pub per_day: Vec<(i64, i64)>,
}

/// Counts over every user of the agent. Takes the caller's `AppAccess`: only administrators of
/// the agent's application see them.
pub async fn agent_stats(
    db: &Db,
    access: &crate::auth::extract::AppAccess,
    agent_id: Uuid,
    since: i64,
) -> StoreResult<AgentStats> {
    struct Totals {
        conversations: i64,
        users: i64,
    }
    crate::from_row!(Totals { conversations, users });
    struct Day {
        day: i64,
        n: i64,
    }
    crate::from_row!(Day { day, n });
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    let of_agent = Condition::all()
        .add(Expr::col(Conversations::ApplicationId).eq(access.app_id))
        .add(Expr::col(Conversations::AgentId).eq(agent_id));
    let totals: Totals = db
        .row(
            Query::select()
                .expr_as(Expr::col(Conversations::Id).count(), "conversations")
                .expr_as(Expr::col(Conversations::Sub).count_distinct(), "users")
                .from(Conversations::Table)
                .cond_where(of_agent.clone()),
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    // A literal divisor, not a bound parameter: PostgreSQL must see the same expression in
    // SELECT and GROUP BY.
    let day = Expr::cust(format!("created_at / {MICROS_PER_DAY}"));
    let per_day: Vec<Day> = db
        .rows(
            Query::select()
                .expr_as(day.clone(), "day")
                .expr_as(Expr::col(Conversations::Id).count(), "n")
                .from(Conversations::Table)
                .cond_where(of_agent)
                .and_where(Expr::col(Conversations::CreatedAt).gte(since))
                .add_group_by([day.clone()])
                .order_by_expr(day, Order::Asc),
        )
        .await?;
    Ok(AgentStats {
        conversations: totals.conversations,
        users: totals.users,
        per_day: per_day.into_iter().map(|d| (d.day, d.n)).collect(),
    })
}
