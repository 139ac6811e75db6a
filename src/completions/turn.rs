//! The completion turn, as a service of its own: the HTTP handler parses the client's body into a
//! `TurnRequest`, calls `start`, and encodes the events of the `Turn` it gets back.
//!
//! `start` stores the user's messages (before the model is called), builds the model's context,
//! resolves and starts the model (a provider that refuses is an ordinary error, before any reply
//! begins), then hands the model's stream to a task of its own. That task owns the reply: it
//! forwards each event to the `Turn`'s receiver and stores the assistant message when the model
//! finishes, fails, or the receiver goes away (as `incomplete`), so nothing is lost and nothing is
//! half-written. Because the task, not the request, owns the reply, a reply can outlive its
//! request (`Detach::Finish`). The task runs the turn's loop of model calls and server tools
//! (`reply`).
//!
//! A turn may carry the results of client tools the model called in an earlier turn: they are
//! checked against the calls stored in the conversation (a result for a call never made there is
//! refused) and stored before the model goes on.

use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::context::{self, Context};
use super::formats::{Format, ToolResultIn, TurnMeta, TurnRequest};
use super::models::Model;
use super::provider::ProviderCall;
use super::reply::{Reply, ReplyTask, tool_message};
use super::tools::{MAX_RESULT_BYTES, ToolSet};
use super::{PromptMessage, TurnEvent};
use crate::AppState;
use crate::error::{Error, Result};
use crate::store::agents::{Agent, AgentModel};
use crate::store::scope::{AgentScope, UserScope};
use crate::store::user_data::{self, Conversation, MessageStatus, NewMessage, OpenedConversation};
use crate::store::{StoreError, providers};

/// Longest accepted user message, in bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Events buffered between the turn's task and its reader.
const EVENT_BUFFER: usize = 32;

/// Who takes the turn.
pub enum TurnCaller {
    /// An end user: the turn is stored in their conversation with the scope's agent.
    User(AgentScope),
    /// A server with a `completions` API key: the client sends the whole context, nothing is
    /// stored.
    Stateless(Arc<Agent>),
}

/// What the turn does when its reader goes away before the reply ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// Stop the model at once and store what was produced as `incomplete` (a stream whose
    /// client left).
    Stop,
    /// Let the model finish and store the whole reply (a request waiting for the whole answer).
    Finish,
}

/// A turn whose model has started: its facts, and its events until `Finish` or `Error`.
pub struct Turn {
    /// What the encoder needs: the conversation's id as the client knows it, the reply's id, the
    /// model's name.
    pub meta: TurnMeta,
    pub events: mpsc::Receiver<TurnEvent>,
}

/// Starts a turn: stores the user's messages, builds the context, starts the model, and leaves
/// the reply to a task of its own. `stream`: the reader takes events as they come (a stream
/// whose reader leaves stops, unless the application's replies are resumable); else it waits
/// for the whole reply, which is finished and stored even if it leaves.
pub async fn start(
    state: &AppState,
    caller: TurnCaller,
    request: TurnRequest,
    format: Format,
    stream: bool,
) -> Result<Turn> {
    for message in &request.user_messages {
        if message.content.len() > MAX_MESSAGE_BYTES {
            return Err(Error::invalid_field(
                "messages",
                format!("a message may be at most {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
    }
    if request.tool_results.iter().any(|r| r.output.len() > MAX_RESULT_BYTES) {
        return Err(Error::invalid_field(
            "tool_results",
            format!("a tool result may be at most {MAX_RESULT_BYTES} bytes"),
        ));
    }
    if let Some(id) = &request.conversation_id {
        validate_conversation_id(id)?;
    }
    let conversation_id = request
        .conversation_id
        .clone()
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let reply_id = Uuid::now_v7();

    let resumable = matches!(&caller, TurnCaller::User(scope) if scope.user().resumable());
    let detach = if stream && !resumable {
        Detach::Stop
    } else {
        Detach::Finish
    };
    let run_id = request.run_id.clone();
    let continuation = !request.tool_results.is_empty();
    let (agent, prompt, sink) = match caller {
        TurnCaller::User(scope) => {
            let store_content = scope.user().stores_content();
            let (conversation, mut up_to) =
                store_user_messages(state, &scope, &conversation_id, &request, store_content).await?;
            if !request.tool_results.is_empty() {
                let stored =
                    store_tool_results(state, &scope, &conversation, &request.tool_results, store_content).await?;
                up_to = stored.or(up_to);
            }
            let prompt = if store_content {
                let context = Context {
                    conversation: &conversation,
                    up_to,
                    use_memory: scope.agent().memory && request.memory != Some(false),
                    query_text: request
                        .user_messages
                        .last()
                        .map(|m| m.content.as_str())
                        .unwrap_or_default(),
                };
                context::build(state, &scope, context).await?
            } else {
                // Privacy mode: nothing stored to read back; the model sees what the request
                // carries.
                request_prompt(scope.agent(), &request)
            };
            let agent = scope.agent().clone();
            (
                agent,
                prompt,
                Some(Reply {
                    scope,
                    conversation,
                    id: reply_id,
                    store_content,
                }),
            )
        }
        TurnCaller::Stateless(agent) => {
            let prompt = request_prompt(&agent, &request);
            (agent, prompt, None)
        }
    };

    // Start the model before answering: a provider that refuses is an ordinary 502, and the user
    // message stays stored with no assistant message.
    let model = resolve_model(state, &agent).await?;
    let tools = ToolSet::for_turn(state, &agent, sink.is_some()).await;
    let first = model
        .start(&prompt, &tools.to_openai())
        .await
        .map_err(|e| Error::Upstream(e.0))?;
    let (events, receiver) = mpsc::channel(EVENT_BUFFER);
    let payer = match &sink {
        Some(reply) => reply.scope.user().clone(),
        None => UserScope::stateless_turns(agent.application_id),
    };
    let meta = TurnMeta {
        conversation_id,
        message_id: reply_id.to_string(),
        model: model.name().to_owned(),
        created: chrono::Utc::now().timestamp(),
        run_id,
        continuation,
    };
    // A user's reply is kept while it runs, for a resume or a stop.
    let live = sink.as_ref().map(|reply| {
        state
            .live()
            .register(reply.conversation.live_key(), format, meta.clone())
    });
    let task = ReplyTask {
        state: state.clone(),
        reply: sink,
        payer,
        agent_id: agent.id,
        model,
        tools,
        prompt,
        max_steps: agent.tools.0.max_steps(),
        events,
        detach,
        live,
    };
    tokio::spawn(task.run(first));
    Ok(Turn { meta, events: receiver })
}

/// The agent's instructions and the history the request carries (a stateless turn, or privacy
/// mode).
fn request_prompt(agent: &Agent, request: &TurnRequest) -> Vec<PromptMessage> {
    let mut prompt = context::instructions(agent);
    prompt.extend(super::tools::well_formed(request.history.clone()));
    prompt
}

/// The longest title a conversation takes from its first message, in characters.
const TITLE_CHARS: usize = 60;

/// A new conversation's title: its first user message on one line, cut at the last word boundary
/// within 60 characters (a single longer word is cut at 60).
fn title_from(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= TITLE_CHARS {
        return line;
    }
    let cut: String = line.chars().take(TITLE_CHARS + 1).collect();
    match cut.rfind(' ') {
        Some(space) if space > 0 => cut[..space].to_owned(),
        _ => cut.chars().take(TITLE_CHARS).collect(),
    }
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

/// Opens (or starts) the user's conversation and stores the turn's messages: appends those it has
/// not stored yet, or revises it with the whole history a client sent (a regenerate, an edit).
/// Returns the conversation and the sequence number of the last message the model answers.
/// In privacy mode the messages are stored without their text, and no title is taken from it.
async fn store_user_messages(
    state: &AppState,
    scope: &AgentScope,
    conversation_id: &str,
    request: &TurnRequest,
    store_content: bool,
) -> Result<(Conversation, Option<i64>)> {
    let title = request
        .user_messages
        .first()
        .map(|m| title_from(&m.content))
        .filter(|_| store_content);
    let text = |content: &str| {
        if store_content {
            content.to_owned()
        } else {
            String::new()
        }
    };
    // The reply to these messages is produced here: other instances know whom to ask for it.
    let live = state.live().running_mark();
    let new: Vec<NewMessage> = request
        .user_messages
        .iter()
        .map(|m| NewMessage::text("user", text(&m.content), MessageStatus::Complete, m.client_id.clone()))
        .collect();
    if request.sent_history.is_none()
        && let Some((conversation, stored)) =
            user_data::append_to_named(state.db(), scope, conversation_id, &new, live).await?
    {
        return Ok((conversation, stored.last().map(|m| m.seq)));
    }
    // A retention purge may delete the conversation between opening and appending: open it again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let conversation =
            match user_data::open_conversation(state.db(), scope, conversation_id, title.as_deref()).await? {
                OpenedConversation::Existing(c) | OpenedConversation::Created(c) => c,
                OpenedConversation::OtherAgent => {
                    return Err(Error::Conflict(
                        "this conversation id is already used with another agent".into(),
                    ));
                }
            };
        let stored = if let Some(history) = &request.sent_history {
            let mut history = history.clone();
            for message in &mut history.messages {
                message.content = text(&message.content);
            }
            user_data::revise_history(state.db(), scope, &conversation, history, store_content, live)
                .await
                .map(|revised| {
                    if revised.superseded > 0 {
                        tracing::debug!(
                            superseded = revised.superseded,
                            "messages replaced by the client's history"
                        );
                    }
                    revised.up_to
                })
        } else {
            user_data::append_messages(state.db(), scope, &conversation, &new, live)
                .await
                .map(|stored| stored.last().map(|m| m.seq))
        };
        match stored {
            Ok(up_to) => return Ok((conversation, up_to)),
            Err(StoreError::NotFound) if attempts < 3 => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// Stores the results of client tools, each once, after checking that the model called them in
/// this conversation. Returns the sequence number of the last one stored.
async fn store_tool_results(
    state: &AppState,
    scope: &AgentScope,
    conversation: &Conversation,
    results: &[ToolResultIn],
    store_content: bool,
) -> Result<Option<i64>> {
    let calls = user_data::recent_tool_calls(state.db(), scope, conversation).await?;
    for result in results {
        if !calls.iter().any(|c| c.id == result.tool_call_id) {
            return Err(Error::invalid_field(
                "tool_results",
                format!(
                    "no tool call `{}` was made in this conversation",
                    result.tool_call_id.chars().take(100).collect::<String>()
                ),
            ));
        }
    }
    let new: Vec<NewMessage> = results
        .iter()
        .map(|r| {
            let content = if store_content { r.output.clone() } else { String::new() };
            tool_message(r.tool_call_id.clone(), content)
        })
        .collect();
    let live = state.live().running_mark();
    let stored = user_data::append_messages(state.db(), scope, conversation, &new, live).await?;
    Ok(stored.last().map(|m| m.seq))
}

/// The model behind an agent: `echo`, or its provider with the key decrypted for this call.
async fn resolve_model(state: &AppState, agent: &Agent) -> Result<Model> {
    let choice = &agent.model.0;
    if choice.provider == AgentModel::ECHO {
        return Ok(Model::Echo);
    }
    let provider = state
        .providers()
        .find_by_name(state.db(), agent.application_id, &choice.provider)
        .await?
        .ok_or_else(|| Error::Upstream(format!("the agent's provider `{}` no longer exists", choice.provider)))?;
    let url = url::Url::parse(&provider.base_url).map_err(Error::internal)?;
    if let Err(refusal) = state.egress().check_url(&url) {
        tracing::warn!(provider.id = %provider.id, "provider refused: {refusal}");
        return Err(Error::Upstream(
            "the provider's address is not allowed by this server's configuration".into(),
        ));
    }
    let api_key = providers::open_api_key(state.master_key(), &provider).map_err(Error::internal)?;
    Ok(Model::OpenAiCompatible(ProviderCall {
        lanes: state.provider_lanes().clone(),
        url: format!("{}/chat/completions", provider.base_url.trim_end_matches('/')),
        api_key,
        model: choice.model.clone().unwrap_or_default(),
        temperature: choice.temperature,
        max_tokens: choice.max_tokens,
        idle_timeout: state.settings().provider_idle_timeout,
        max_event_bytes: max_event_bytes(state.settings().max_reply_bytes),
    }))
}

/// The longest event a provider's stream may send: one event may carry a whole reply (servers
/// that send `message` rather than deltas), escaped, so twice the longest reply stored, and at
/// least 4 MiB.
fn max_event_bytes(max_reply_bytes: usize) -> usize {
    max_reply_bytes.saturating_mul(2).max(4 << 20)
}

#[cfg(test)]
mod tests {
    use super::title_from;

    #[test]
    fn titles_are_cut_at_a_word_boundary_within_sixty_characters() {
        assert_eq!(title_from("  Where is\nmy   order? "), "Where is my order?");
        let long = "I ordered a pair of walking boots last Tuesday and they still have not arrived";
        let title = title_from(long);
        assert_eq!(title, "I ordered a pair of walking boots last Tuesday and they");
        assert!(title.chars().count() <= 60);
        // Exactly 60 characters, then a space: the whole 60 stay.
        let sixty = format!("{} tail", "a".repeat(60));
        assert_eq!(title_from(&sixty), "a".repeat(60));
        assert_eq!(title_from(&"x".repeat(100)), "x".repeat(60));
        assert_eq!(title_from(&"é".repeat(70)).chars().count(), 60);
    }
}
