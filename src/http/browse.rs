//! An application's conversations, for its administrators: browse them across users (with whose
//! each is) and purge old ones.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::conversations::{ConversationView, ConversationWithMessages, MessageParams, conversation_json};
use super::{Json, Path, Query, encode_recent_cursor, parse_time, recent_page};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::error::{Error, Result};
use crate::store::scope::{AgentScope, UserScope, validate_sub};
use crate::store::user_data::{self, BrowseFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(browse_conversations, purge_conversations))
        .routes(routes!(read_users_conversation))
}

/// One conversation of one of the application's users, with a page of its messages (as the user
/// reads it: the newest `limit`, oldest first, `messages_next_cursor` to page back).
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/users/{sub}/conversations/{conversation_id}", tag = "conversations",
    params(("app_id" = Uuid, Path, description = "Application id"), ("sub" = String, Path, description = "The user's `sub` (URL-encoded)"),
        ("conversation_id" = String, Path, description = "Conversation id"), MessageParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The conversation and a page of its messages", body = ConversationWithMessages))
)]
async fn read_users_conversation(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, sub, conversation_id)): Path<(Uuid, String, String)>,
    Query(params): Query<MessageParams>,
) -> Result<Json<ConversationWithMessages>> {
    let access = principal.access(&state, app_id).await?;
    let page = params.page()?;
    let user = UserScope::for_administrator(&access, &sub)?;
    let conversation = user_data::find_users_conversation(state.db(), &user, &conversation_id)
        .await?
        .ok_or_else(|| Error::not_found("conversation"))?;
    let scope = AgentScope::check(state.db(), state.agents(), user, conversation.agent_id()).await?;
    conversation_json(&state, &scope, &conversation_id, page).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BrowseParams {
    /// Only this agent's conversations.
    pub agent_id: Option<Uuid>,
    /// Only this user's conversations.
    pub sub: Option<String>,
    /// Updated at or after: RFC 3339, or a day (`YYYY-MM-DD`, from its start, UTC).
    pub from: Option<String>,
    /// Updated at or before: RFC 3339, or a day (`YYYY-MM-DD`, to its end, UTC).
    pub to: Option<String>,
    /// Page size, 1..100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A conversation of one of the application's users.
#[derive(Serialize, ToSchema)]
pub struct UserConversationView {
    /// The user it belongs to.
    pub sub: String,
    #[serde(flatten)]
    pub conversation: ConversationView,
}

#[derive(Serialize, ToSchema)]
pub struct UserConversationPage {
    pub data: Vec<UserConversationView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The application's conversations across its users, most recently active first.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/conversations", tag = "conversations",
    params(("app_id" = Uuid, Path, description = "Application id"), BrowseParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of conversations, each with its user", body = UserConversationPage))
)]
async fn browse_conversations(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<BrowseParams>,
) -> Result<Json<UserConversationPage>> {
    let access = principal.access(&state, app_id).await?;
    let (limit, after) = recent_page(params.limit, params.cursor.as_deref())?;
    if let Some(sub) = &params.sub {
        validate_sub(sub).map_err(|problem| Error::invalid_field("sub", problem))?;
    }
    let filter = BrowseFilter {
        agent_id: params.agent_id,
        sub: params.sub,
        from: params
            .from
            .as_deref()
            .map(|t| parse_time("from", t, false))
            .transpose()?,
        to: params.to.as_deref().map(|t| parse_time("to", t, true)).transpose()?,
    };
    let (rows, next) = user_data::browse_conversations(state.db(), &access, &filter, limit, after).await?;
    Ok(Json(UserConversationPage {
        data: rows
            .into_iter()
            .map(|row| UserConversationView {
                conversation: ConversationView::from(&row.conversation),
                sub: row.sub,
            })
            .collect(),
        next_cursor: next.map(encode_recent_cursor),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeParams {
    /// Only this agent's conversations.
    pub agent_id: Option<Uuid>,
    /// Required: conversations not updated since this go (RFC 3339, or a day: its start, UTC).
    pub before: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"deleted": 42}))]
pub struct Purged {
    /// Conversations deleted (their messages went with them).
    pub deleted: u64,
}

/// Delete the application's conversations (of one agent, if given) not updated since `before`,
/// with their messages. Runs in small batches, so turns go on meanwhile.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/conversations", tag = "conversations",
    params(("app_id" = Uuid, Path, description = "Application id"), PurgeParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "How many conversations were deleted", body = Purged))
)]
async fn purge_conversations(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<PurgeParams>,
) -> Result<Json<Purged>> {
    let access = principal.access(&state, app_id).await?;
    let before = params
        .before
        .as_deref()
        .ok_or_else(|| Error::invalid_field("before", "required: conversations not updated since this go"))?;
    let before = parse_time("before", before, false)?;
    let deleted = user_data::purge_conversations(state.db(), &access, params.agent_id, before).await?;
    tracing::info!(application.id = %access.app_id(), deleted, "conversations purged");
    Ok(Json(Purged { deleted }))
}
