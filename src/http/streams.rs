//! A user's reply in progress: resumed (`GET …/stream`, what the AI SDK's `resume: true` asks
//! for on mount) or stopped (`POST …/stop`), on whichever instance produces it.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::Path;
use super::completions::streamed;
use crate::AppState;
use crate::completions::streams;
use crate::error::{Error, Result};
use crate::store::scope::AgentScope;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resume_reply))
        .routes(routes!(resume_completion))
        .routes(routes!(stop_reply))
}

/// Resume the reply in progress in a conversation.
///
/// Replays the reply from its first event, in the format of the request that started it, then
/// follows it live to its end. `204` when no reply is in progress (the AI SDK's `resume: true`
/// reads that as nothing to resume). Text is replayed in as few events as it can be (the
/// fragments the model sent so far come as one).
#[utoipa::path(
    get, path = "/v1/agents/{agent_id}/conversations/{conversation_id}/stream", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id")),
    security(("user_token" = []), ("user_token_header" = [])),
    responses(
        (status = 200, description = "The reply's stream, in its format (`text/event-stream`; `text/plain` for `ai-sdk-4`)",
            headers(("X-Conversation-Id" = String, description = "The conversation")),
            content((String = "text/event-stream", example = "data: {\"type\":\"start\",\"messageId\":\"…\"}\n\ndata: {\"type\":\"text-delta\",…}\n\n"))),
        (status = 204, description = "No reply is in progress in this conversation"),
        (status = 404, description = "`not_found`: no such conversation of this user", body = crate::error::ErrorBody),
    )
)]
async fn resume_reply(
    State(state): State<AppState>,
    scope: AgentScope,
    // (The agent is the scope's; a tuple deserializes without building a map.)
    Path((_agent, conversation_id)): Path<(Uuid, String)>,
) -> Result<Response> {
    let Some(resumed) = streams::resume(&state, &scope, &conversation_id).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let header = HeaderValue::from_str(&resumed.meta.conversation_id).map_err(Error::internal)?;
    let encoder = resumed.format.encoder(resumed.meta);
    let mut response = streamed(resumed.events, encoder, state.settings().keepalive_interval);
    response
        .headers_mut()
        .insert(HeaderName::from_static("x-conversation-id"), header);
    Ok(response)
}

/// Resume the reply in progress in a conversation, at the AI SDK's default reconnect URL.
///
/// The same as `GET …/conversations/{conversation_id}/stream`, where a `DefaultChatTransport`
/// whose `api` is this agent's completions endpoint looks for it (`{api}/{chatId}/stream`), so
/// `useChat({resume: true})` needs no `prepareReconnectToStreamRequest`.
#[utoipa::path(
    get, path = "/v1/agents/{agent_id}/completions/{conversation_id}/stream", tag = "completions",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id (the AI SDK chat id)")),
    security(("user_token" = []), ("user_token_header" = [])),
    responses(
        (status = 200, description = "The reply's stream, in its format",
            headers(("X-Conversation-Id" = String, description = "The conversation")),
            content((String = "text/event-stream"))),
        (status = 204, description = "No reply is in progress in this conversation"),
        (status = 404, description = "`not_found`: no such conversation of this user", body = crate::error::ErrorBody),
    )
)]
async fn resume_completion(state: State<AppState>, scope: AgentScope, path: Path<(Uuid, String)>) -> Result<Response> {
    resume_reply(state, scope, path).await
}

/// Stop the reply in progress in a conversation.
///
/// Ends the reply on whichever instance produces it and answers once what was produced is
/// stored, as `incomplete`; its readers see the stream end. `204` also when nothing is in
/// progress.
#[utoipa::path(
    post, path = "/v1/agents/{agent_id}/conversations/{conversation_id}/stop", tag = "conversations",
    params(("agent_id" = Uuid, Path, description = "Agent id"), ("conversation_id" = String, Path, description = "Conversation id")),
    security(("user_token" = []), ("user_token_header" = [])),
    responses(
        (status = 204, description = "Stopped (or nothing was in progress)"),
        (status = 404, description = "`not_found`: no such conversation of this user", body = crate::error::ErrorBody),
    )
)]
async fn stop_reply(
    State(state): State<AppState>,
    scope: AgentScope,
    Path((_agent, conversation_id)): Path<(Uuid, String)>,
) -> Result<StatusCode> {
    streams::stop(&state, &scope, &conversation_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
