//! Feedback: an end user's vote on a reply of their own, and the application's view of the votes.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Json, Path, Query, encode_recent_cursor, parse_time, recent_page, timestamp};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::error::{Error, Result};
use crate::store::scope::AgentScope;
use crate::store::user_data::{self, FeedbackEntry, FeedbackFilter, FeedbackOutcome, FeedbackRow, NewFeedback, Vote};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_feedback, delete_feedback))
        .routes(routes!(list_feedback))
}

const MAX_COMMENT_CHARS: usize = 2000;
const MAX_TAGS: usize = 20;
const MAX_TAG_CHARS: usize = 50;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"vote": "down", "comment": "The tracking link was wrong.", "tags": ["inaccurate"]}))]
pub struct PutFeedback {
    pub vote: Vote,
    /// At most 2,000 characters.
    pub comment: Option<String>,
    /// At most 20 tags of at most 50 characters.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A user's vote on a reply.
#[derive(Serialize, ToSchema)]
pub struct FeedbackView {
    pub message_id: Uuid,
    pub agent_id: Uuid,
    pub vote: Vote,
    pub comment: Option<String>,
    pub tags: Vec<String>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<FeedbackRow> for FeedbackView {
    fn from(row: FeedbackRow) -> Self {
        Self {
            message_id: row.message_id,
            agent_id: row.agent_id,
            vote: row.vote,
            comment: row.comment,
            tags: row.tags.0,
            created_at: timestamp(row.created_at),
            updated_at: timestamp(row.updated_at),
        }
    }
}

fn validate(body: PutFeedback) -> Result<NewFeedback> {
    let comment = body.comment.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    if comment.as_ref().is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS) {
        return Err(Error::invalid_field(
            "comment",
            format!("must be at most {MAX_COMMENT_CHARS} characters"),
        ));
    }
    let mut tags: Vec<String> = Vec::new();
    for tag in body.tags {
        let tag = tag.trim().to_owned();
        if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            return Err(Error::invalid_field(
                "tags",
                format!("each tag must be 1 to {MAX_TAG_CHARS} printable characters"),
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid_field("tags", format!("at most {MAX_TAGS} tags")));
    }
    Ok(NewFeedback {
        vote: body.vote,
        comment,
        tags,
    })
}

/// Vote on a reply of the assistant in one of your conversations (one vote per message; a new one
/// replaces it).
#[utoipa::path(
    put, path = "/v1/agents/{agent_id}/conversations/{conversation_id}/messages/{message_id}/feedback", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id"), ("message_id" = Uuid, Path, description = "The assistant message's id")),
    request_body = PutFeedback,
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 200, description = "The vote as stored", body = FeedbackView))
)]
async fn put_feedback(
    State(state): State<AppState>,
    scope: AgentScope,
    Path((_agent, conversation_id, message_id)): Path<(Uuid, String, Uuid)>,
    Json(body): Json<PutFeedback>,
) -> Result<Json<FeedbackView>> {
    let feedback = validate(body)?;
    match user_data::put_feedback(state.db(), &scope, &conversation_id, message_id, feedback).await? {
        FeedbackOutcome::Saved(row) => Ok(Json(row.into())),
        FeedbackOutcome::NoSuchMessage => Err(Error::not_found("message")),
        FeedbackOutcome::NotAssistant => Err(Error::invalid_field(
            "message_id",
            "only the assistant's messages take feedback",
        )),
    }
}

/// Take back your vote on a reply.
#[utoipa::path(
    delete, path = "/v1/agents/{agent_id}/conversations/{conversation_id}/messages/{message_id}/feedback", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id"), ("message_id" = Uuid, Path, description = "The assistant message's id")),
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 204, description = "Removed"))
)]
async fn delete_feedback(
    State(state): State<AppState>,
    scope: AgentScope,
    Path((_agent, conversation_id, message_id)): Path<(Uuid, String, Uuid)>,
) -> Result<StatusCode> {
    if user_data::delete_feedback(state.db(), &scope, &conversation_id, message_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("feedback"))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedbackParams {
    /// Only this agent's replies.
    pub agent_id: Option<Uuid>,
    /// `up` or `down`.
    pub vote: Option<Vote>,
    /// Voted at or after: RFC 3339, or a day (`YYYY-MM-DD`, UTC).
    pub from: Option<String>,
    /// Voted at or before: RFC 3339, or a day (to its end, UTC).
    pub to: Option<String>,
    /// Page size, 1..100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A vote, with the reply it is about.
#[derive(Serialize, ToSchema)]
pub struct FeedbackEntryView {
    pub sub: String,
    pub conversation_id: String,
    /// The reply's text.
    pub content: String,
    #[serde(flatten)]
    pub feedback: FeedbackView,
}

#[derive(Serialize, ToSchema)]
pub struct FeedbackPage {
    pub data: Vec<FeedbackEntryView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The application's feedback, newest first, with each reply's text and conversation.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/feedback", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id"), FeedbackParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of votes", body = FeedbackPage))
)]
async fn list_feedback(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<FeedbackParams>,
) -> Result<Json<FeedbackPage>> {
    let access = principal.access(&state, app_id).await?;
    let (limit, before) = recent_page(params.limit, params.cursor.as_deref())?;
    let filter = FeedbackFilter {
        agent_id: params.agent_id,
        vote: params.vote,
        from: params
            .from
            .as_deref()
            .map(|t| parse_time("from", t, false))
            .transpose()?,
        to: params.to.as_deref().map(|t| parse_time("to", t, true)).transpose()?,
    };
    let (rows, next) = user_data::list_feedback(state.db(), &access, &filter, limit, before).await?;
    Ok(Json(FeedbackPage {
        data: rows.into_iter().map(entry_view).collect(),
        next_cursor: next.map(encode_recent_cursor),
    }))
}

fn entry_view(entry: FeedbackEntry) -> FeedbackEntryView {
    FeedbackEntryView {
        sub: entry.sub,
        conversation_id: entry.conversation_id,
        content: entry.content,
        feedback: entry.feedback.into(),
    }
}
