//! An application's end users, for its administrators: export everything stored for a user
//! (right of access) or erase it (right to be forgotten).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::conversations::{ConversationView, ConversationWithMessages, MessageView};
use super::feedback::FeedbackView;
use super::memories::MemoryView;
use super::usage::UsageDay;
use super::{Json, Path};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::error::Result;
use crate::store::scope::UserScope;
use crate::store::user_data::{self, RecentCursor};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export_user, erase_user))
}

#[derive(Serialize, ToSchema)]
pub struct UserExport {
    pub sub: String,
    pub conversations: Vec<ConversationWithMessages>,
    pub memories: Vec<MemoryView>,
    /// Tokens and turns the user spent, per day and agent, newest first.
    pub usage: Vec<UsageDay>,
    /// The user's votes on replies, newest first.
    pub feedback: Vec<FeedbackView>,
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
) -> Result<Response> {
    let access = principal.access(&state, app_id).await?;
    let app_id = access.app_id();
    let scope = UserScope::for_administrator(&access, &sub)?;
    tracing::info!(application.id = %app_id, "user data exported");
    // Streamed a page at a time: an export is as large as the user's history, and neither the
    // server's memory nor a worker may be held by it.
    let (chunks, body) = mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::spawn(async move {
        if let Err(error) = write_export(&state, &scope, &sub, &chunks).await {
            tracing::warn!(%error, "user export ended early");
            // The body ends in an error: the client sees a broken read, not a short document.
            let _ = chunks.send(Err(std::io::Error::other("the export failed"))).await;
        }
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move { body.recv().await.map(|c| (c, body)) });
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// What an export reads at a time: conversations, messages of one conversation, memories.
const EXPORT_CONVERSATIONS: u64 = 20;
const EXPORT_MESSAGES: u64 = 200;
const EXPORT_MEMORIES: u64 = 100;
/// Usage rows (one per day and agent) in an export.
const EXPORT_USAGE_ROWS: u64 = 10_000;
const EXPORT_FEEDBACK: u64 = 200;

/// Writes `UserExport` as JSON, a page at a time. Stops quietly when the client goes away.
async fn write_export(
    state: &AppState,
    scope: &UserScope,
    sub: &str,
    chunks: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<()> {
    let send = |text: String| async move { chunks.send(Ok(Bytes::from(text))).await.is_ok() };
    if !send(format!("{{\"sub\":{},\"conversations\":[", json(sub))).await {
        return Ok(());
    }
    let db = state.db();
    let (mut after, mut first) = (None, true);
    loop {
        let page = user_data::export_conversations(db, scope, after, EXPORT_CONVERSATIONS).await?;
        for conversation in &page {
            // The conversation's fields, then its messages, as `ConversationWithMessages`.
            let head = json(&ConversationView::from(conversation));
            let head = head.strip_suffix('}').unwrap_or(&head);
            let comma = if first { "" } else { "," };
            first = false;
            if !send(format!("{comma}{head},\"messages\":[")).await {
                return Ok(());
            }
            let (mut seq, mut first_message) = (None, true);
            loop {
                let messages = user_data::export_messages(db, scope, conversation, seq, EXPORT_MESSAGES).await?;
                let mut text = String::new();
                for message in &messages {
                    if !first_message {
                        text.push(',');
                    }
                    first_message = false;
                    seq = Some(message.seq);
                    // (Votes are exported whole, under `feedback`.)
                    text.push_str(&json(&MessageView::from(user_data::ListedMessage {
                        message: message.clone(),
                        feedback: None,
                    })));
                }
                if !text.is_empty() && !send(text).await {
                    return Ok(());
                }
                if (messages.len() as u64) < EXPORT_MESSAGES {
                    break;
                }
            }
            // An export holds every message: nothing to page back to.
            if !send("],\"messages_next_cursor\":null}".to_owned()).await {
                return Ok(());
            }
        }
        after = page.last().map(|c| c.position());
        if (page.len() as u64) < EXPORT_CONVERSATIONS {
            break;
        }
    }
    if !send("],\"memories\":[".to_owned()).await {
        return Ok(());
    }
    let (mut after, mut first) = (None, true);
    loop {
        let page = user_data::export_memories(db, scope, after, EXPORT_MEMORIES).await?;
        let mut text = String::new();
        for memory in &page {
            if !first {
                text.push(',');
            }
            first = false;
            text.push_str(&json(&MemoryView::from(memory.clone())));
        }
        if !text.is_empty() && !send(text).await {
            return Ok(());
        }
        after = page.last().map(|m| m.id);
        if (page.len() as u64) < EXPORT_MEMORIES {
            break;
        }
    }
    // At most one row per day and agent: a few thousand rows for years of use.
    let usage: Vec<UsageDay> = user_data::export_usage(db, scope, EXPORT_USAGE_ROWS)
        .await?
        .into_iter()
        .map(UsageDay::from)
        .collect();
    if !send(format!("],\"usage\":{},\"feedback\":[", json(&usage))).await {
        return Ok(());
    }
    let (mut before, mut first) = (None, true);
    loop {
        let page = user_data::export_feedback(db, scope, before, EXPORT_FEEDBACK).await?;
        let mut text = String::new();
        for vote in &page {
            if !first {
                text.push(',');
            }
            first = false;
            text.push_str(&json(&FeedbackView::from(vote.clone())));
        }
        if !text.is_empty() && !send(text).await {
            return Ok(());
        }
        before = page.last().map(|v| RecentCursor {
            updated_at: v.updated_at,
            id: v.message_id,
        });
        if (page.len() as u64) < EXPORT_FEEDBACK {
            break;
        }
    }
    send("]}".to_owned()).await;
    Ok(())
}

/// A view as JSON text (each one is a plain JSON object).
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("views serialize")
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
