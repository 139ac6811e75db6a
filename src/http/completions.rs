//! `POST /v1/agents/{agent_id}/completions`: one turn of a conversation, streamed or whole, in
//! the wire format of the calling client.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Json, Path, Query};
use crate::AppState;
use crate::auth::API_KEY_PREFIX;
use crate::auth::extract::{ACL_COMPLETIONS, ApiKeyPrincipal, authenticate_api_key};
use crate::auth::user_token::user_token;
use crate::completions::formats::{ClientMessage, Encoder, Format, TurnMeta, TurnRequest};
use crate::completions::models::{Model, ModelStream, ProviderCall};
use crate::completions::{ModelEvent, Outcome, PromptMessage};
use crate::error::{Error, Result};
use crate::scope::AgentScope;
use crate::store::agents::{Agent, AgentModel};
use crate::store::providers::{self, seal_context};
use crate::store::user_data::{self, Conversation, MemoryFilter, MessageStatus, NewMessage, OpenedConversation};

/// Most memory records given to the model per turn, and most characters of them.
const MEMORY_RECORDS: u64 = 8;
const MEMORY_CHARS: usize = 4_000;
/// Longest accepted user message, in bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(completions))
        .routes(routes!(chat_completions))
}

/// Who is asking: an end user (the turn is stored in their conversation) or a server with a
/// `completions` API key (stateless: nothing is stored).
pub enum Caller {
    User(AgentScope),
    Stateless { key: ApiKeyPrincipal, agent: Arc<Agent> },
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let api_key = match parts.headers.get("x-api-key") {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| Error::unauthorized("invalid_api_key", "the API key is not valid text"))?,
            ),
            None if parts.headers.get("x-secure-user-token").is_none() => {
                user_token(&parts.headers)?.filter(|token| token.starts_with(API_KEY_PREFIX))
            }
            None => None,
        };
        let Some(key) = api_key else {
            return AgentScope::from_request_parts(parts, state).await.map(Caller::User);
        };
        let key = authenticate_api_key(state, key.trim()).await?;
        if !key.acl.iter().any(|a| a == ACL_COMPLETIONS) {
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
        Ok(Caller::Stateless { key, agent })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompletionParams {
    /// `ai-sdk` (alias `ai-sdk-5`), `ai-sdk-4`, `openai` or `deltakit`; inferred from the body
    /// when absent.
    pub format: Option<String>,
    /// Algolia's name for `format` (`ai-sdk-4`, `ai-sdk-5`).
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
/// completions; `deltakit`: `text_delta` events). The conversation is the user's own: the one the
/// body names (created if new), else a new one; the reply names it in `X-Conversation-Id` and in
/// the body or first event. The user message is stored before the model is called, the reply
/// when it ends (`incomplete` if the model fails or the client goes away). With a `completions`
/// API key instead of a user token, nothing is stored.
#[utoipa::path(
    post, path = "/v1/agents/{agent_id}/completions", tag = "completions",
    params(("agent_id" = Uuid, Path, description = "Agent id"), CompletionParams),
    request_body(content = Object, description = "The format's request body",
        examples(
            ("openai" = (value = json!({"messages": [{"role": "user", "content": "Hello!"}], "conversation_id": "support-chat-1", "stream": false}))),
            ("ai-sdk" = (value = json!({"id": "support-chat-1", "trigger": "submit-message", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello!"}]}]}))),
            ("deltakit" = (value = json!({"message": "Hello!", "conversation_id": "support-chat-1"}))),
        )),
    security(("user_token" = []), ("user_token_header" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses(
        (status = 200, description = "The reply: a JSON object, or a stream (`text/event-stream`; `text/plain` for `ai-sdk-4`)",
            headers(("X-Conversation-Id" = String, description = "The conversation this turn belongs to")),
            content(
                (Object = "application/json", example = json!({"id": "chatcmpl-…", "object": "chat.completion", "created": 1767225600, "model": "echo", "conversation_id": "support-chat-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})),
                (String = "text/event-stream", example = "data: {\"object\":\"chat.completion.chunk\",…}\n\ndata: [DONE]\n\n"),
            )),
        (status = 403, description = "`agent_not_in_scope`: the token's key does not cover this agent", body = crate::error::ErrorBody),
        (status = 409, description = "`conflict`: the named conversation belongs to another agent", body = crate::error::ErrorBody),
        (status = 502, description = "`upstream_error`: the model provider failed before the reply began", body = crate::error::ErrorBody),
    )
)]
async fn completions(
    State(state): State<AppState>,
    caller: Caller,
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
    request_body(content = Object, example = json!({"model": "ignored", "messages": [{"role": "user", "content": "Hello!"}], "stream": true})),
    security(("user_token" = []), ("user_token_header" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses(
        (status = 200, description = "A `chat.completion`, or a stream of `chat.completion.chunk`",
            headers(("X-Conversation-Id" = String, description = "The conversation this turn belongs to"))),
        (status = 502, description = "`upstream_error`: the model provider failed before the reply began", body = crate::error::ErrorBody),
    )
)]
async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    turn(state, caller, Format::OpenAi, None, body).await
}

/// A conversation id: 1–128 of `A-Za-z0-9_-`.
fn validate_conversation_id(id: &str) -> Result<()> {
    let ok =
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_field(
            "conversation_id",
            "must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'",
        ))
    }
}

/// The model behind an agent: `echo`, or its provider with the key decrypted for this call.
async fn resolve_model(state: &AppState, agent: &Agent) -> Result<Model> {
    let choice = &agent.model.0;
    if choice.provider == AgentModel::ECHO {
        return Ok(Model::Echo);
    }
    let provider = providers::find_by_name(state.db(), agent.application_id, &choice.provider)
        .await?
        .ok_or_else(|| Error::Upstream(format!("the agent's provider `{}` no longer exists", choice.provider)))?;
    if !state.settings().provider_hosts.allows_url(&provider.base_url) {
        tracing::warn!(provider.id = %provider.id, "provider host is not in CONFIDANT_PROVIDER_ALLOWED_HOSTS");
        return Err(Error::Upstream(
            "the provider's host is not allowed by this server's configuration".into(),
        ));
    }
    let api_key = match &provider.api_key_encrypted {
        Some(sealed) => {
            let bytes = state
                .master_key()
                .open(&seal_context(provider.application_id, provider.id), sealed)
                .map_err(Error::internal)?;
            Some(String::from_utf8(bytes).map_err(Error::internal)?)
        }
        None => None,
    };
    Ok(Model::OpenAiCompatible(ProviderCall {
        client: state.http().clone(),
        url: format!("{}/chat/completions", provider.base_url.trim_end_matches('/')),
        api_key,
        model: choice.model.clone().unwrap_or_default(),
        temperature: choice.temperature,
        max_tokens: choice.max_tokens,
        idle_timeout: state.settings().provider_idle_timeout,
    }))
}

/// Where a turn's reply goes: the user's conversation, or nowhere (stateless).
struct ReplySink {
    scope: AgentScope,
    conversation: Conversation,
    reply_id: Uuid,
}

async fn turn(
    state: AppState,
    caller: Caller,
    format: Format,
    stream_param: Option<bool>,
    body: serde_json::Value,
) -> Result<Response> {
    let request: TurnRequest = format.parse(body)?;
    let stream = stream_param.or(request.stream).unwrap_or(format.streams_by_default());
    for message in &request.user_messages {
        if message.content.len() > MAX_MESSAGE_BYTES {
            return Err(Error::invalid_field(
                "messages",
                format!("a message may be at most {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
    }
    if let Some(id) = &request.conversation_id {
        validate_conversation_id(id)?;
    }
    let external_id = request
        .conversation_id
        .clone()
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let reply_id = Uuid::now_v7();

    let (agent, prompt, sink) = match caller {
        Caller::User(scope) => {
            let agent = scope.agent().clone();
            let (conversation, last_seq) = store_user_messages(&state, &scope, &external_id, &request).await?;
            let use_memory = agent.memory && request.memory != Some(false);
            let query_text = request
                .user_messages
                .last()
                .map(|m| m.content.as_str())
                .unwrap_or_default();
            let context = Context {
                conversation: &conversation,
                up_to: last_seq,
                use_memory,
                query_text,
            };
            let prompt = build_prompt(&state, &scope, &agent, context).await?;
            (
                agent,
                prompt,
                Some(ReplySink {
                    scope,
                    conversation,
                    reply_id,
                }),
            )
        }
        Caller::Stateless { agent, .. } => {
            let mut prompt = instructions(&agent);
            prompt.extend(request.history.iter().map(|m: &ClientMessage| PromptMessage {
                role: m.role,
                content: m.content.clone(),
            }));
            (agent, prompt, None)
        }
    };

    // Start the model before answering: a provider that refuses is an ordinary 502, and the user
    // message stays stored with no assistant message.
    let model = resolve_model(&state, &agent).await?;
    let events = model.start(&prompt).await.map_err(|e| Error::Upstream(e.0))?;

    let meta = TurnMeta {
        conversation_id: external_id.clone(),
        message_id: reply_id.to_string(),
        model: model.name().to_owned(),
        created: chrono::Utc::now().timestamp(),
    };
    let encoder = format.encoder(meta);
    let conversation_header = HeaderValue::from_str(&external_id).map_err(Error::internal)?;
    let task = TurnTask {
        state: state.clone(),
        sink,
    };

    if stream {
        let content_type = encoder.content_type();
        let extra = encoder.stream_headers();
        let (frames_tx, frames_rx) = mpsc::channel::<Result<String, std::io::Error>>(32);
        tokio::spawn(task.stream(events, encoder, frames_tx, state.settings().keepalive_interval));
        let body = futures_util::stream::unfold(
            frames_rx,
            |mut rx| async move { rx.recv().await.map(|frame| (frame, rx)) },
        );
        let mut response = Response::new(Body::from_stream(body));
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        h.insert(HeaderName::from_static("x-conversation-id"), conversation_header);
        for (name, value) in extra {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        Ok(response)
    } else {
        let (done_tx, done_rx) = oneshot::channel();
        // Run in its own task so the reply is stored even if this request is dropped.
        tokio::spawn(task.whole(events, done_tx));
        let (text, outcome) = done_rx.await.map_err(Error::internal)?;
        match outcome {
            Outcome::Complete { reason, usage } => {
                let mut response = axum::Json(encoder.whole(&text, reason, usage)).into_response();
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("x-conversation-id"), conversation_header);
                Ok(response)
            }
            Outcome::Failed(message) => Err(Error::Upstream(message)),
        }
    }
}

/// Opens (or starts) the user's conversation and appends the messages it has not stored yet;
/// returns the conversation and the sequence number of the last message this turn stored.
async fn store_user_messages(
    state: &AppState,
    scope: &AgentScope,
    external_id: &str,
    request: &TurnRequest,
) -> Result<(Conversation, Option<i64>)> {
    let title = request
        .user_messages
        .last()
        .map(|m| m.content.chars().take(80).collect::<String>());
    let conversation = match user_data::open_conversation(state.db(), scope, external_id, title.as_deref()).await? {
        OpenedConversation::Existing(c) | OpenedConversation::Created(c) => c,
        OpenedConversation::OtherAgent => {
            return Err(Error::Conflict(
                "this conversation id is already used with another agent".into(),
            ));
        }
    };
    let new: Vec<NewMessage> = request
        .user_messages
        .iter()
        .map(|m| NewMessage {
            id: Uuid::now_v7(),
            role: "user",
            content: m.content.clone(),
            status: MessageStatus::Complete,
            client_id: m.client_id.clone(),
        })
        .collect();
    let stored = user_data::append_messages(state.db(), scope, &conversation, &new).await?;
    Ok((conversation, stored.last().map(|m| m.seq)))
}

fn instructions(agent: &Agent) -> Vec<PromptMessage> {
    if agent.instructions.trim().is_empty() {
        Vec::new()
    } else {
        vec![PromptMessage {
            role: "system",
            content: agent.instructions.clone(),
        }]
    }
}

/// The model's context: instructions, then relevant memory, then the conversation's history.
/// What a user turn's prompt is built from.
struct Context<'a> {
    conversation: &'a Conversation,
    /// The history ends at this turn's last message (later turns of concurrent calls stay out).
    up_to: Option<i64>,
    use_memory: bool,
    /// The text memory is searched with.
    query_text: &'a str,
}

async fn build_prompt(
    state: &AppState,
    scope: &AgentScope,
    agent: &Agent,
    context: Context<'_>,
) -> Result<Vec<PromptMessage>> {
    let Context {
        conversation,
        up_to,
        use_memory,
        query_text,
    } = context;
    let mut prompt = instructions(agent);
    if use_memory {
        let terms = user_data::search_terms(query_text);
        let memories = user_data::search_memories(
            state.db(),
            scope.user(),
            MemoryFilter::AgentOrShared(agent.id),
            &terms,
            MEMORY_RECORDS,
        )
        .await?;
        if !memories.is_empty() {
            let mut text = String::from("What you know about the user:");
            for memory in memories {
                if text.len() + memory.content.len() + 3 > MEMORY_CHARS {
                    break;
                }
                text.push_str("\n- ");
                text.push_str(&memory.content);
            }
            prompt.push(PromptMessage {
                role: "system",
                content: text,
            });
        }
    }
    let history = user_data::recent_messages(
        state.db(),
        scope,
        conversation,
        up_to,
        state.settings().history_messages,
    )
    .await?;
    for message in history {
        let role = match message.role.as_str() {
            "assistant" => "assistant",
            "system" => "system",
            "tool" => "tool",
            _ => "user",
        };
        prompt.push(PromptMessage {
            role,
            content: message.content,
        });
    }
    Ok(prompt)
}

/// Owns one turn's reply: pulls the model's events and stores the assistant message at the end.
struct TurnTask {
    state: AppState,
    sink: Option<ReplySink>,
}

type Frames = mpsc::Sender<Result<String, std::io::Error>>;

impl TurnTask {
    async fn store(&self, text: String, complete: bool) {
        let end = if complete {
            crate::metrics::ReplyEnd::Complete
        } else {
            crate::metrics::ReplyEnd::Incomplete
        };
        self.state.metrics().observe_reply(end);
        let Some(sink) = &self.sink else { return };
        let message = NewMessage {
            id: sink.reply_id,
            role: "assistant",
            content: text,
            status: if complete {
                MessageStatus::Complete
            } else {
                MessageStatus::Incomplete
            },
            client_id: Some(sink.reply_id.to_string()),
        };
        if let Err(error) =
            user_data::append_messages(self.state.db(), &sink.scope, &sink.conversation, &[message]).await
        {
            tracing::error!(%error, "could not store the assistant's reply");
        }
    }

    async fn whole(self, mut events: ModelStream, done: oneshot::Sender<(String, Outcome)>) {
        let mut text = String::new();
        let outcome = loop {
            match events.next().await {
                Some(ModelEvent::Delta(delta)) => text.push_str(&delta),
                Some(ModelEvent::Finish { reason, usage }) => break Outcome::Complete { reason, usage },
                Some(ModelEvent::Error(message)) => break Outcome::Failed(message),
                None => break Outcome::Failed("the model ended without finishing".into()),
            }
        };
        self.store(text.clone(), matches!(outcome, Outcome::Complete { .. }))
            .await;
        let _ = done.send((text, outcome));
    }

    async fn stream(
        self,
        mut events: ModelStream,
        mut encoder: Box<dyn Encoder>,
        frames: Frames,
        keepalive: std::time::Duration,
    ) {
        let mut text = String::new();
        if frames.send(Ok(encoder.start())).await.is_err() {
            return self.store(text, false).await;
        }
        let mut quiet_until = Instant::now() + keepalive;
        loop {
            let event = tokio::select! {
                // The client went away: stop pulling from the model at once (dropping the stream
                // closes the upstream connection).
                () = frames.closed() => {
                    drop(events);
                    return self.store(text, false).await;
                }
                () = sleep_until(quiet_until), if encoder.keep_alive().is_some() => {
                    quiet_until = Instant::now() + keepalive;
                    let comment = encoder.keep_alive().unwrap_or_default().to_owned();
                    if frames.send(Ok(comment)).await.is_err() {
                        drop(events);
                        return self.store(text, false).await;
                    }
                    continue;
                }
                event = events.next() => event,
            };
            quiet_until = Instant::now() + keepalive;
            match event {
                Some(ModelEvent::Delta(delta)) => {
                    let frame = encoder.delta(&delta);
                    text.push_str(&delta);
                    if frames.send(Ok(frame)).await.is_err() {
                        drop(events);
                        return self.store(text, false).await;
                    }
                }
                Some(ModelEvent::Finish { reason, usage }) => {
                    // Stored before the stream ends, so a client that saw the end can read it back.
                    self.store(text, true).await;
                    let _ = frames.send(Ok(encoder.finish(reason, usage))).await;
                    return;
                }
                Some(ModelEvent::Error(message)) => return self.fail(text, &message, encoder.as_mut(), &frames).await,
                None => {
                    return self
                        .fail(text, "the model ended without finishing", encoder.as_mut(), &frames)
                        .await;
                }
            }
        }
    }

    async fn fail(self, text: String, message: &str, encoder: &mut dyn Encoder, frames: &Frames) {
        tracing::warn!(message, "the model failed mid-stream");
        self.store(text, false).await;
        let frame = match encoder.error(message) {
            Some(frame) => Ok(frame),
            // No error event in this format: abort the body so the client sees a failed read.
            None => Err(std::io::Error::other("the model failed")),
        };
        let _ = frames.send(frame).await;
    }
}
