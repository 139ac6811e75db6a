//! The end user's conversations with an agent (secure user token).

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Json, ListParams, Path, Query, encode_recent_cursor, recent_page, timestamp};
use crate::AppState;
use crate::error::{Error, Result};
use crate::store::scope::AgentScope;
use crate::store::user_data::{self, Conversation, ListedMessage, MessagePage, MessageVote, Vote};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_conversations)).routes(routes!(
        get_conversation,
        rename_conversation,
        delete_conversation
    ))
}

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    #[schema(example = "user")]
    pub role: String,
    pub content: String,
    /// `complete`; `incomplete` when the reply was cut short (model failure, client gone, stop);
    /// `superseded` when a regenerate or an edit replaced it (listed only with
    /// `?include=superseded`).
    #[schema(example = "complete")]
    pub status: String,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// An assistant message's tool calls (`arguments` is the JSON text the model wrote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<crate::completions::ToolCall>>,
    /// A `tool` message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The user's vote on this reply, if they gave one.
    #[schema(required = true)]
    pub feedback: Option<MessageFeedback>,
}

/// A vote as its message shows it.
#[derive(Serialize, ToSchema)]
pub struct MessageFeedback {
    pub vote: Vote,
    pub comment: Option<String>,
    pub tags: Vec<String>,
}

impl From<ListedMessage> for MessageView {
    fn from(listed: ListedMessage) -> Self {
        let feedback = listed.feedback.map(|f: MessageVote| MessageFeedback {
            vote: f.vote,
            comment: f.comment,
            tags: f.tags,
        });
        let m = listed.message;
        Self {
            feedback,
            status: m.state().to_owned(),
            id: m.id,
            role: m.role,
            content: m.content,
            created_at: timestamp(m.created_at),
            tool_calls: m.tool_calls.map(|calls| calls.0),
            tool_call_id: m.tool_call_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ConversationView {
    /// The conversation id (client-chosen, or a UUID the server made).
    #[schema(example = "support-chat-1")]
    pub id: String,
    pub agent_id: Uuid,
    pub title: Option<String>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<&Conversation> for ConversationView {
    fn from(c: &Conversation) -> Self {
        Self {
            id: c.external_id().to_owned(),
            agent_id: c.agent_id(),
            title: c.title().map(str::to_owned),
            created_at: timestamp(c.created_at()),
            updated_at: timestamp(c.updated_at()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ConversationWithMessages {
    #[serde(flatten)]
    pub conversation: ConversationView,
    /// The newest `limit` messages (before `before`), oldest first.
    pub messages: Vec<MessageView>,
    /// Pass as `before` to get the messages older than these; `null` when there are none.
    #[schema(required = true)]
    pub messages_next_cursor: Option<String>,
}

/// `?limit=&before=` of a conversation's messages.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageParams {
    /// How many of the newest messages, 1..1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `messages_next_cursor` of the previous page: messages older than those.
    pub before: Option<String>,
    /// `superseded` also lists the messages a regenerate or an edit replaced (`status:
    /// "superseded"`), in their place.
    #[param(inline)]
    pub include: Option<Include>,
}

/// What `?include=` adds to a conversation's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Include {
    Superseded,
}

impl MessageParams {
    pub(super) fn page(&self) -> Result<MessagePage> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::InvalidRequest("limit must be between 1 and 1000".into()));
        }
        let before = match self.before.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(decode_message_cursor(cursor)?),
        };
        Ok(MessagePage {
            limit: limit.into(),
            before,
            include_superseded: self.include == Some(Include::Superseded),
        })
    }
}

fn encode_message_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(seq.to_be_bytes())
}

fn decode_message_cursor(text: &str) -> Result<i64> {
    let bad = || Error::InvalidRequest("the cursor is not one this server issued".into());
    let bytes: [u8; 8] = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    Ok(i64::from_be_bytes(bytes))
}

#[derive(Serialize, ToSchema)]
pub struct ConversationPage {
    pub data: Vec<ConversationView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The user's conversations with this agent, most recently active first.
#[utoipa::path(
    get, path = "/v1/agents/{agent_id}/conversations", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ListParams),
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 200, description = "A page of conversations", body = ConversationPage))
)]
async fn list_conversations(
    State(state): State<AppState>,
    scope: AgentScope,
    Query(params): Query<ListParams>,
) -> Result<Json<ConversationPage>> {
    let (limit, after) = recent_page(params.limit, params.cursor.as_deref())?;
    let (rows, next) = user_data::list_conversations(state.db(), &scope, limit, after).await?;
    Ok(Json(ConversationPage {
        data: rows.iter().map(ConversationView::from).collect(),
        next_cursor: next.map(encode_recent_cursor),
    }))
}

/// One of the user's conversations, with its messages.
#[utoipa::path(
    get, path = "/v1/agents/{agent_id}/conversations/{conversation_id}", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id"), MessageParams),
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 200, description = "The conversation and a page of its messages", body = ConversationWithMessages))
)]
async fn get_conversation(
    State(state): State<AppState>,
    scope: AgentScope,
    // (The agent is the scope's; a tuple deserializes without building a map.)
    Path((_agent, conversation_id)): Path<(Uuid, String)>,
    Query(params): Query<MessageParams>,
) -> Result<Json<ConversationWithMessages>> {
    let page = params.page()?;
    conversation_json(&state, &scope, &conversation_id, page).await
}

/// One conversation of the scope's user and agent with a page of its messages, as the API shows it.
pub(super) async fn conversation_json(
    state: &AppState,
    scope: &AgentScope,
    conversation_id: &str,
    page: MessagePage,
) -> Result<Json<ConversationWithMessages>> {
    let (conversation, messages, older) =
        user_data::conversation_with_messages(state.db(), scope, conversation_id, page)
            .await?
            .ok_or_else(|| Error::not_found("conversation"))?;
    Ok(Json(ConversationWithMessages {
        conversation: ConversationView::from(&conversation),
        messages: messages.into_iter().map(MessageView::from).collect(),
        messages_next_cursor: older.map(encode_message_cursor),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Shipping question"}))]
pub struct RenameConversation {
    /// The new title; `null` clears it.
    pub title: Option<String>,
}

/// Rename one of the user's conversations.
#[utoipa::path(
    patch, path = "/v1/agents/{agent_id}/conversations/{conversation_id}", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id")),
    request_body = RenameConversation,
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 200, description = "The renamed conversation", body = ConversationView))
)]
async fn rename_conversation(
    State(state): State<AppState>,
    scope: AgentScope,
    // (The agent is the scope's; a tuple deserializes without building a map.)
    Path((_agent, conversation_id)): Path<(Uuid, String)>,
    Json(body): Json<RenameConversation>,
) -> Result<Json<ConversationView>> {
    let title = body
        .title
        .as_deref()
        .map(|t| super::validate_name("title", t))
        .transpose()?;
    let renamed = user_data::rename_conversation(state.db(), &scope, &conversation_id, title.as_deref())
        .await?
        .ok_or_else(|| Error::not_found("conversation"))?;
    Ok(Json(ConversationView::from(&renamed)))
}

/// Delete one of the user's conversations and its messages.
#[utoipa::path(
    delete, path = "/v1/agents/{agent_id}/conversations/{conversation_id}", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id")),
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_conversation(
    State(state): State<AppState>,
    scope: AgentScope,
    // (The agent is the scope's; a tuple deserializes without building a map.)
    Path((_agent, conversation_id)): Path<(Uuid, String)>,
) -> Result<StatusCode> {
    if !user_data::delete_conversation(state.db(), &scope, &conversation_id).await? {
        return Err(Error::not_found("conversation"));
    }
    Ok(StatusCode::NO_CONTENT)
}
