//! `POST /v1/agents/{agent_id}/completions`: one turn of a conversation, streamed or whole, in
//! the wire format of the calling client.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::conversations::user_agent;
use super::{Json, Path, Query};
use crate::AppState;
use crate::completions::formats::{Encoder, Format, TurnMeta, TurnRequest};
use crate::completions::models::Model;
use crate::completions::{FinishReason, ModelEvent, Outcome, PromptMessage, Usage};
use crate::error::{Error, Result};
use crate::scope::UserScope;
use crate::store::agents::{Agent, AgentModel};
use crate::store::user_data::{self, Conversation, MemoryFilter, NewMessage, OpenedConversation};

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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompletionParams {
    /// `openai` (more formats are coming). Inferred from the body when absent.
    pub format: Option<String>,
    /// Algolia's name for `format`.
    #[serde(rename = "compatibilityMode")]
    #[param(rename = "compatibilityMode")]
    pub compatibility_mode: Option<String>,
    /// Stream the reply (SSE). Defaults per format (`openai`: false).
    pub stream: Option<bool>,
}

/// Send the user's message and get the agent's reply.
///
/// The conversation is the user's own: the one the body names (created if new), else a new one.
/// The reply names it in the `X-Conversation-Id` header and in the body. The user message is
/// stored before the model is called, the reply when it ends (as `incomplete` if the model fails
/// or the client goes away).
#[utoipa::path(
    post, path = "/v1/agents/{agent_id}/completions", tag = "completions",
    params(("agent_id" = Uuid, Path, description = "Agent id"), CompletionParams),
    request_body(content = Object, description = "The format's request body, e.g. OpenAI's `{messages, conversation_id?, stream?}`",
        example = json!({"messages": [{"role": "user", "content": "Hello!"}], "conversation_id": "support-chat-1", "stream": false})),
    security(("user_token" = []), ("user_token_header" = [])),
    responses(
        (status = 200, description = "The reply: a JSON object, or `text/event-stream` when streaming",
            headers(("X-Conversation-Id" = String, description = "The conversation this turn belongs to")),
            content(
                (Object = "application/json", example = json!({"id": "chatcmpl-…", "object": "chat.completion", "created": 1767225600, "model": "echo", "conversation_id": "support-chat-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})),
                (String = "text/event-stream", example = "data: {\"object\":\"chat.completion.chunk\",…}\n\ndata: [DONE]\n\n"),
            )),
        (status = 403, description = "`agent_not_in_scope`: the token's key does not cover this agent", body = crate::error::ErrorBody),
        (status = 409, description = "`conflict`: the named conversation belongs to another agent", body = crate::error::ErrorBody),
    )
)]
async fn completions(
    State(state): State<AppState>,
    scope: UserScope,
    Path(agent_id): Path<Uuid>,
    Query(params): Query<CompletionParams>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    let named = params.format.as_deref().or(params.compatibility_mode.as_deref());
    let format = match named {
        Some(name) => Format::from_name(name)?,
        None => Format::infer(&body),
    };
    turn(state, scope, agent_id, format, params.stream, body).await
}

/// The same endpoint fixed to the `openai` format, for OpenAI SDKs configured with
/// `base_url = <server>/v1/agents/<agent_id>` and the user token as API key.
#[utoipa::path(
    post, path = "/v1/agents/{agent_id}/chat/completions", tag = "completions",
    params(("agent_id" = Uuid, Path, description = "Agent id")),
    request_body(content = Object, example = json!({"model": "ignored", "messages": [{"role": "user", "content": "Hello!"}], "stream": true})),
    security(("user_token" = []), ("user_token_header" = [])),
    responses(
        (status = 200, description = "A `chat.completion`, or a stream of `chat.completion.chunk`",
            headers(("X-Conversation-Id" = String, description = "The conversation this turn belongs to"))),
    )
)]
async fn chat_completions(
    State(state): State<AppState>,
    scope: UserScope,
    Path(agent_id): Path<Uuid>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    turn(state, scope, agent_id, Format::OpenAi, None, body).await
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

fn model_for(agent: &Agent) -> Result<Model> {
    match agent.model.0.provider.as_str() {
        AgentModel::ECHO => Ok(Model::Echo),
        _ => Err(Error::Upstream(
            "this agent's model provider is not available yet".into(),
        )),
    }
}

async fn turn(
    state: AppState,
    scope: UserScope,
    agent_id: Uuid,
    format: Format,
    stream_param: Option<bool>,
    body: serde_json::Value,
) -> Result<Response> {
    let agent = user_agent(&state, &scope, agent_id).await?;
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
    let model = model_for(&agent)?;
    let external_id = request
        .conversation_id
        .clone()
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let title = request
        .user_messages
        .last()
        .map(|m| m.content.chars().take(80).collect::<String>());

    let conversation =
        match user_data::open_conversation(state.db(), &scope, agent.id, &external_id, title.as_deref()).await? {
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
            status: "complete",
            client_id: m.client_id.clone(),
        })
        .collect();
    user_data::append_messages(state.db(), &scope, &conversation, &new).await?;

    let use_memory = agent.memory && request.memory != Some(false);
    let query_text = request
        .user_messages
        .last()
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let prompt = build_prompt(&state, &scope, &agent, &conversation, use_memory, query_text).await?;

    // The assistant message's id is fixed now, so the client sees the id it is stored under.
    let reply_id = Uuid::now_v7();
    let meta = TurnMeta {
        conversation_id: external_id.clone(),
        message_id: reply_id.to_string(),
        model: agent
            .model
            .0
            .model
            .clone()
            .unwrap_or_else(|| agent.model.0.provider.clone()),
        created: chrono::Utc::now().timestamp(),
    };
    let encoder = format.encoder(meta);
    let conversation_header = HeaderValue::from_str(&external_id).map_err(Error::internal)?;
    let events = model.stream(&prompt);
    let turn = TurnTask {
        state: state.clone(),
        scope,
        conversation,
        reply_id,
    };

    if stream {
        let headers = encoder.stream_headers();
        let (frames_tx, frames_rx) = mpsc::channel::<Result<String, std::io::Error>>(32);
        tokio::spawn(turn.stream(events, encoder, frames_tx));
        let body = futures_util::stream::unfold(
            frames_rx,
            |mut rx| async move { rx.recv().await.map(|frame| (frame, rx)) },
        );
        let mut response = Response::new(Body::from_stream(body));
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        h.insert(HeaderName::from_static("x-conversation-id"), conversation_header);
        for (name, value) in headers {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        Ok(response)
    } else {
        let (done_tx, done_rx) = oneshot::channel();
        // Run in its own task so the reply is stored even if this request is dropped.
        tokio::spawn(turn.whole(events, done_tx));
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

/// The model's context: instructions, then relevant memory, then the conversation's history.
async fn build_prompt(
    state: &AppState,
    scope: &UserScope,
    agent: &Agent,
    conversation: &Conversation,
    use_memory: bool,
    query_text: &str,
) -> Result<Vec<PromptMessage>> {
    let mut prompt = Vec::new();
    if !agent.instructions.trim().is_empty() {
        prompt.push(PromptMessage {
            role: "system",
            content: agent.instructions.clone(),
        });
    }
    if use_memory {
        let terms = user_data::search_terms(query_text);
        let memories = user_data::search_memories(
            state.db(),
            scope,
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
    let history =
        user_data::recent_messages(state.db(), scope, conversation, state.settings().history_messages).await?;
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
    scope: UserScope,
    conversation: Conversation,
    reply_id: Uuid,
}

impl TurnTask {
    async fn store(&self, text: String, complete: bool) {
        let message = NewMessage {
            id: self.reply_id,
            role: "assistant",
            content: text,
            status: if complete { "complete" } else { "incomplete" },
            client_id: None,
        };
        if let Err(error) =
            user_data::append_messages(self.state.db(), &self.scope, &self.conversation, &[message]).await
        {
            tracing::error!(%error, "could not store the assistant's reply");
        }
    }

    async fn whole(
        self,
        events: impl futures_util::Stream<Item = ModelEvent> + Send + 'static,
        done: oneshot::Sender<(String, Outcome)>,
    ) {
        let mut events = std::pin::pin!(events);
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
        events: impl futures_util::Stream<Item = ModelEvent> + Send + 'static,
        mut encoder: Box<dyn Encoder>,
        frames: mpsc::Sender<Result<String, std::io::Error>>,
    ) {
        let mut events = std::pin::pin!(events);
        let mut text = String::new();
        if frames.send(Ok(encoder.start())).await.is_err() {
            return self.store(text, false).await;
        }
        loop {
            let event = tokio::select! {
                // The client went away: stop pulling from the model at once.
                () = frames.closed() => return self.store(text, false).await,
                event = events.next() => event,
            };
            let (reason, usage): (FinishReason, Usage) = match event {
                Some(ModelEvent::Delta(delta)) => {
                    let frame = encoder.delta(&delta);
                    text.push_str(&delta);
                    if frames.send(Ok(frame)).await.is_err() {
                        return self.store(text, false).await;
                    }
                    continue;
                }
                Some(ModelEvent::Finish { reason, usage }) => (reason, usage),
                Some(ModelEvent::Error(message)) => return self.fail(text, &message, encoder.as_mut(), &frames).await,
                None => {
                    return self
                        .fail(text, "the model ended without finishing", encoder.as_mut(), &frames)
                        .await;
                }
            };
            // Stored before the stream ends, so a client that saw the end can read it back.
            self.store(text, true).await;
            let _ = frames.send(Ok(encoder.finish(reason, usage))).await;
            return;
        }
    }

    async fn fail(
        self,
        text: String,
        message: &str,
        encoder: &mut dyn Encoder,
        frames: &mpsc::Sender<Result<String, std::io::Error>>,
    ) {
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
