//! An application's end users, for its administrators: export everything stored for a user
//! (right of access) or erase it (right to be forgotten).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::conversations::{ConversationView, ConversationWithMessages, MessageView};
use super::memories::MemoryView;
use super::{Json, Path};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::error::Result;
use crate::store::scope::UserScope;
use crate::store::user_data;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export_user, erase_user))
}

#[derive(Serialize, ToSchema)]
pub struct UserExport {
    pub sub: String,
    pub conversations: Vec<ConversationWithMessages>,
    pub memories: Vec<MemoryView>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"sub": "user-42", "conversations": 2, "messages": 14, "memories": 3}))]
pub struct UserErased {
    pub sub: String,
    pub conversations: u64,
    pub messages: u64,
    pub memories: u64,
}

/// Everything stored for one end user of the application: conversations with messages, memory.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/users/{sub}", tag = "users",
    params(("app_id" = Uuid, Path, description = "Application id"), ("sub" = String, Path, description = "The user's `sub` (URL-encoded)")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The user's data (empty lists for an unknown user)", body = UserExport))
)]
async fn export_user(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, sub)): Path<(Uuid, String)>,
) -> Result<Json<UserExport>> {
    let access = principal.access(&state, app_id).await?;
    let app_id = access.app_id();
    let scope = UserScope::for_administrator(&access, &sub)?;
    let export = user_data::export(state.db(), &scope).await?;
    tracing::info!(application.id = %app_id, "user data exported");
    Ok(Json(UserExport {
        sub,
        conversations: export
            .conversations
            .into_iter()
            .map(|(c, messages)| ConversationWithMessages {
                conversation: ConversationView::from(&c),
                messages: messages.into_iter().map(MessageView::from).collect(),
                // An export holds every message.
                messages_next_cursor: None,
            })
            .collect(),
        memories: export.memories.into_iter().map(MemoryView::from).collect(),
    }))
}

/// Erase everything stored for one end user of the application, and say how much went.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/users/{sub}", tag = "users",
    params(("app_id" = Uuid, Path, description = "Application id"), ("sub" = String, Path, description = "The user's `sub` (URL-encoded)")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "What was erased", body = UserErased))
)]
async fn erase_user(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, sub)): Path<(Uuid, String)>,
) -> Result<Json<UserErased>> {
    let access = principal.access(&state, app_id).await?;
    let app_id = access.app_id();
    let scope = UserScope::for_administrator(&access, &sub)?;
    let erased = user_data::erase(state.db(), &scope).await?;
    tracing::info!(application.id = %app_id, conversations = erased.conversations, memories = erased.memories, "user data erased");
    Ok(Json(UserErased {
        sub,
        conversations: erased.conversations,
        messages: erased.messages,
        memories: erased.memories,
    }))
}
