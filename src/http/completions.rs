//! `POST /v1/agents/{agent_id}/completions`: one turn of a conversation, streamed or whole, in
//! the wire format of the calling client.

use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Json, Path, Query};
use crate::AppState;
use crate::auth::credentials::Credentials;
use crate::auth::extract::authenticate_api_key;
use crate::completions::TurnEvent;
use crate::completions::formats::openai::{ChatCompletion, OpenAiChatRequest};
use crate::completions::formats::{CompletionRequest, Encoder, Format, TurnRequest, Whole};
use crate::completions::live::EventSource;
use crate::completions::turn::{self, TurnCaller};
use crate::error::{Error, Result};
use crate::store::keys::Acl;
use crate::store::scope::AgentScope;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(completions))
        .routes(routes!(chat_completions))
}

/// Who is asking: an end user (the turn is stored in their conversation with the path's agent) or
/// a server with a `completions` API key that covers that agent (stateless: nothing is stored).
impl FromRequestParts<AppState> for TurnCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let api_key = Credentials::read(&parts.headers).completions_api_key()?;
        let Some(key) = api_key else {
            return AgentScope::from_request_parts(parts, state).await.map(TurnCaller::User);
        };
        let key = authenticate_api_key(state, key).await?;
        if !key.acl.contains(&Acl::Completions) {
            return Err(Error::Forbidden("this API key lacks the `completions` ACL".into()));
        }
        let Path(agent_id) = Path::<Uuid>::from_request_parts(parts, state).await?;
        let agent = state
            .agents()
            .get(state.db(), key.application_id, agent_id)
            .await?
            .ok_or_else(|| Error::not_found("agent"))?;
        if key.agent_ids.as_ref().is_some_and(|ids| !ids.contains(&agent.id)) {
            return Err(Error::AgentNotInScope("this API key does not cover this agent".into()));
        }
        let caller = crate::edge::Caller {
            application_id: key.application_id,
            agent: Some(&agent),
            user: None,
        };
        crate::edge::admit(state, parts, caller).await?;
        Ok(TurnCaller::Stateless(agent))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompletionParams {
    /// `ai-sdk` (alias `ai-sdk-5`), `ai-sdk-4`, `openai`, `deltakit` or `ag-ui`; inferred from
    /// the body when absent.
    pub format: Option<String>,
    /// Algolia's name for `format` (`ai-sdk-4`, `ai-sdk-5`, `ag-ui`).
    #[serde(rename = "compatibilityMode")]
    #[param(rename = "compatibilityMode")]
    pub compatibility_mode: Option<String>,
    /// Stream the reply. Defaults: `openai` false, the others true.
    pub stream: Option<bool>,
}

/// Send the user's message and get the agent's reply.
///
/// One endpoint serves every popular client unchanged; `format` picks the request body and the
/// reply (`ai-sdk`: Vercel AI SDK 5 UI message stream; `ai-sdk-4`: data stream; `openai`: chat
/// completions; `deltakit`: `text_delta` events; `ag-ui`: the AG-UI protocol's events). A turn
/// may call tools: the server runs its own (memory, MCP) and goes on; a client tool's call ends
/// the turn (finish reason `tool_calls`) and the client sends its result back in its format. The conversation is the user's own: the one the
/// body names (created if new), else a new one; the reply names it in `X-Conversation-Id` and in
/// the body or first event. The user message is stored before the model is called, the reply
/// when it ends (`incomplete` if the model fails or the client goes away). With a `completions`
/// API key instead of a user token, nothing is stored.
#[utoipa::path(
    post, path = "/v1/agents/{agent_id}/completions", tag = "completions",
    params(("agent_id" = Uuid, Path, description = "Agent id"), CompletionParams),
    request_body(content = CompletionRequest, description = "The format's request body",
        examples(
            ("openai" = (value = json!({"messages": [{"role": "user", "content": "Hello!"}], "conversation_id": "support-chat-1", "stream": false}))),
            ("ai-sdk" = (value = json!({"id": "support-chat-1", "trigger": "submit-message", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello!"}]}]}))),
            ("deltakit" = (value = json!({"message": "Hello!", "conversation_id": "support-chat-1"}))),
            ("openai-tool-result" = (value = json!({"conversation_id": "support-chat-1", "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}))),
            ("ag-ui" = (value = json!({"threadId": "support-chat-1", "runId": "run-1", "messages": [{"id": "m1", "role": "user", "content": "Hello!"}], "tools": [], "context": [], "state": {}, "forwardedProps": {}}))),
        )),
    security(("user_token" = []), ("user_token_header" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses(
        (status = 200, description = "The reply: a JSON object, or a stream (`text/event-stream`; `text/plain` for `ai-sdk-4`)",
            headers(("X-Conversation-Id" = String, description = "The conversation this turn belongs to")),
            content(
                (ChatCompletion = "application/json", example = json!({"id": "chatcmpl-…", "object": "chat.completion", "created": 1767225600, "model": "echo", "conversation_id": "support-chat-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})),
                (String = "text/event-stream", example = "data: {\"object\":\"chat.completion.chunk\",…}\n\ndata: [DONE]\n\n"),
            )),
        (status = 403, description = "`agent_not_in_scope`: the token's key does not cover this agent", body = crate::error::ErrorBody),
        (status = 409, description = "`conflict`: the named conversation belongs to another agent", body = crate::error::ErrorBody),
        (status = 502, description = "`upstream_error`: the model provider failed before the reply began", body = crate::error::ErrorBody),
    )
)]
async fn completions(
    State(state): State<AppState>,
    caller: TurnCaller,
    Query(params): Query<CompletionParams>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    let named = params.format.as_deref().or(params.compatibility_mode.as_deref());
    let format = match named {
        Some(name) => Format::from_name(name)?,
        None => Format::infer(&body),
    };
    turn(state, caller, format, params.stream, body).await
}

/// The same endpoint fixed to the `openai` format, for OpenAI SDKs configured with
/// `base_url = <server>/v1/agents/<agent_id>` and the user token as API key.
#[utoipa::path(
    post, path = "/v1/agents/{agent_id}/chat/completions", tag = "completions",
    params(("agent_id" = Uuid, Path, description = "Agent id")),
    request_body(content = OpenAiChatRequest, example = json!({"model": "ignored", "messages": [{"role": "user", "content": "Hello!"}], "stream": true})),
    security(("user_token" = []), ("user_token_header" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses(
        (status = 200, description = "A `chat.completion`, or a stream of `chat.completion.chunk`",
            headers(("X-Conversation-Id" = String, description = "The conversation this turn belongs to")),
            content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 502, description = "`upstream_error`: the model provider failed before the reply began", body = crate::error::ErrorBody),
    )
)]
async fn chat_completions(
    State(state): State<AppState>,
    caller: TurnCaller,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    turn(state, caller, Format::OpenAi, None, body).await
}

/// One turn: the body parsed in its format, the turn service run, its events encoded.
async fn turn(
    state: AppState,
    caller: TurnCaller,
    format: Format,
    stream_param: Option<bool>,
    body: serde_json::Value,
) -> Result<Response> {
    let request: TurnRequest = format.parse(body)?;
    let stream = stream_param.or(request.stream).unwrap_or(format.streams_by_default());
    let turn = turn::start(&state, caller, request, format, stream).await?;
    let conversation_header = HeaderValue::from_str(&turn.meta.conversation_id).map_err(Error::internal)?;
    let encoder = format.encoder(turn.meta);
    let mut response = if stream {
        streamed(
            EventSource::Channel(turn.events),
            encoder,
            state.settings().keepalive_interval,
        )
    } else {
        whole(turn.events, encoder).await?
    };
    response
        .headers_mut()
        .insert(HeaderName::from_static("x-conversation-id"), conversation_header);
    Ok(response)
}

/// A turn's events as the format's stream, with keep-alive comments while the model is silent.
pub(super) fn streamed(events: EventSource, encoder: Box<dyn Encoder>, keepalive: Duration) -> Response {
    let content_type = encoder.content_type();
    let extra = encoder.stream_headers();
    let frames = Frames {
        events,
        encoder,
        keepalive,
        silence: Box::pin(tokio::time::sleep(keepalive)),
        started: false,
        ended: false,
    };
    let body = futures_util::stream::unfold(frames, |mut frames| async move {
        let frame = frames.next().await?;
        Some((frame, frames))
    });
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    for (name, value) in extra {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

/// The frames of a streamed reply, one per event.
struct Frames {
    events: EventSource,
    encoder: Box<dyn Encoder>,
    keepalive: Duration,
    /// The keep-alive timer, moved on before each wait (moving a timer later costs no lock; a
    /// timeout per frame registered a timer and removed it again, each under the timer's lock).
    silence: Pin<Box<tokio::time::Sleep>>,
    started: bool,
    ended: bool,
}

impl Frames {
    async fn next(&mut self) -> Option<std::io::Result<String>> {
        if self.ended {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Ok(self.encoder.start()));
        }
        loop {
            let event = match self.encoder.keep_alive() {
                Some(comment) => {
                    self.silence
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.keepalive);
                    tokio::select! {
                        biased;
                        event = self.events.recv() => event,
                        () = self.silence.as_mut() => return Some(Ok(comment.to_owned())),
                    }
                }
                None => self.events.recv().await,
            };
            let event = event.unwrap_or_else(|| TurnEvent::Error("the reply ended without finishing".into()));
            let encoder = &mut self.encoder;
            let frame = match event {
                TurnEvent::Delta(delta) => encoder.delta(&delta),
                TurnEvent::ToolCallStart { id, name, server } => encoder.tool_call_start(&id, &name, server),
                TurnEvent::ToolCallDelta { id, delta, server } => encoder.tool_call_delta(&id, &delta, server),
                TurnEvent::ToolCall { call, server } => encoder.tool_call(&call, server),
                TurnEvent::ToolResult { call, output, error } => encoder.tool_result(&call, &output, error),
                TurnEvent::StepFinish => encoder.step_finish(),
                TurnEvent::StepStart => encoder.step_start(),
                TurnEvent::Finish { reason, usage } => {
                    self.ended = true;
                    encoder.finish(reason, usage)
                }
                TurnEvent::Error(message) => {
                    self.ended = true;
                    // No error event in this format: abort the body so the client sees a failed
                    // read.
                    return Some(
                        encoder
                            .error(&message)
                            .ok_or_else(|| std::io::Error::other("the model failed")),
                    );
                }
            };
            // Events a format does not show (a server tool's call, for OpenAI) make no frame.
            if !frame.is_empty() || self.ended {
                return Some(Ok(frame));
            }
        }
    }
}

/// The whole reply as one JSON body, once the model has finished.
async fn whole(mut events: mpsc::Receiver<TurnEvent>, encoder: Box<dyn Encoder>) -> Result<Response> {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    loop {
        match events.recv().await {
            Some(TurnEvent::Delta(delta)) => text.push_str(&delta),
            Some(TurnEvent::ToolCall { call, server: false }) => tool_calls.push(*call),
            Some(TurnEvent::Finish { reason, usage }) => {
                let reply = Whole {
                    text,
                    tool_calls,
                    reason,
                    usage,
                };
                return Ok(Json(encoder.whole(&reply)).into_response());
            }
            Some(TurnEvent::Error(message)) => return Err(Error::Upstream(message)),
            Some(_) => {}
            None => return Err(Error::Upstream("the model ended without finishing".into())),
        }
    }
}
