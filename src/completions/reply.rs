//! The reply of one turn, run by a task of its own: the loop of model calls and server tools.
//!
//! Each step is one model call. Its text and tool calls are forwarded to the turn's reader as
//! they come; when the model finishes, the step's assistant message is stored (with its tool
//! calls). Calls of server tools (memory, MCP) are run for this user, their results stored and
//! given back to the model, and the next step begins; a call of a client tool ends the turn
//! (the client runs it and sends the result), as do text without calls, `max_steps`, the turn's
//! deadline, a failure, and (for a stream) the reader leaving. The turn's last assistant message
//! has the id the reader was told, so a whole-history client that shows one message for the turn
//! names the message stored last.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::live::LiveGuard;
use super::models::{Model, ModelStream};
use super::tools::{ToolOutcome, ToolSet};
use super::turn::Detach;
use super::{FinishReason, ModelEvent, PromptMessage, ToolCall, TurnEvent, Usage};
use crate::AppState;
use crate::metrics::{ReplyEnd, ToolKind};
use crate::store::StoreError;
use crate::store::scope::{AgentScope, UserScope};
use crate::store::user_data::{self, Conversation, LiveMark, MessageStatus, NewMessage};
use crate::store::webhooks::{Event, EventType};

/// Where a user turn's reply is stored.
pub(super) struct Reply {
    pub scope: AgentScope,
    pub conversation: Conversation,
    /// The id of the turn's last assistant message (the one its reader was told of).
    pub id: Uuid,
    /// `false`: privacy mode, the reply is stored without its text.
    pub store_content: bool,
}

/// Owns one turn's reply: runs its steps, forwards their events, stores its messages.
pub(super) struct ReplyTask {
    pub state: AppState,
    pub reply: Option<Reply>,
    /// Whose tokens these are: the user, or the application's servers (`sub` empty).
    pub payer: UserScope,
    pub agent_id: Uuid,
    pub model: Model,
    pub tools: ToolSet,
    pub prompt: Vec<PromptMessage>,
    pub max_steps: u32,
    pub events: mpsc::Sender<TurnEvent>,
    pub detach: Detach,
    /// Where a user's reply is kept for resumes and stops while it runs.
    pub live: Option<LiveGuard>,
}

/// How a step ended.
enum StepEnd {
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
    /// The reply reached the server's size limit.
    Cut,
    Failed(String),
    /// The reader left and the turn stops with it.
    Left,
    /// The user asked for the reply to stop (`POST …/stop`).
    Stopped,
}

struct StepResult {
    text: String,
    calls: Vec<ToolCall>,
    end: StepEnd,
}

/// What waiting for the next model event ended with.
enum Wait {
    Event(Option<ModelEvent>),
    ReaderGone,
    Stopped,
}

/// The turn's running totals.
#[derive(Default)]
struct Totals {
    /// As the model reports them.
    usage: Usage,
    /// Estimated, for a model that reports none.
    estimate: Usage,
    /// Bytes of reply text, over every step.
    text_bytes: usize,
}

impl ReplyTask {
    pub async fn run(mut self, first: ModelStream) {
        let settings = self.state.settings();
        let deadline = Instant::now() + settings.turn_timeout;
        let mut totals = Totals::default();
        let mut reader = true;
        let mut stream = first;
        let mut step = 1;
        loop {
            totals.estimate.prompt_tokens += self.prompt.iter().map(|m| estimate_tokens(&m.content)).sum::<u64>();
            let result = self
                .step(&mut stream, deadline, &mut reader, &mut totals.text_bytes)
                .await;
            totals.estimate.completion_tokens += estimate_tokens(&result.text);
            let (reason, usage) = match result.end {
                StepEnd::Finished { reason, usage } => (reason, usage),
                StepEnd::Cut => {
                    drop(stream);
                    self.store(result.text, Vec::new(), MessageStatus::Incomplete, true)
                        .await;
                    self.end(ReplyEnd::Incomplete, &totals);
                    let cut = TurnEvent::Finish {
                        reason: FinishReason::Length,
                        usage: Usage::default(),
                    };
                    self.send(cut, reader).await;
                    return;
                }
                StepEnd::Failed(message) => {
                    tracing::warn!(message, "the reply ended early");
                    drop(stream);
                    self.store(result.text, Vec::new(), MessageStatus::Incomplete, true)
                        .await;
                    self.end(ReplyEnd::Incomplete, &totals);
                    self.send(TurnEvent::Error(message), reader).await;
                    return;
                }
                StepEnd::Left => {
                    // Dropping the stream closes the upstream connection.
                    drop(stream);
                    self.store(result.text, Vec::new(), MessageStatus::Incomplete, true)
                        .await;
                    self.end(ReplyEnd::Incomplete, &totals);
                    let left = TurnEvent::Error("the reply stopped when its client left".into());
                    self.send(left, false).await;
                    return;
                }
                StepEnd::Stopped => {
                    drop(stream);
                    tracing::debug!("the reply was stopped by its user");
                    self.store(result.text, Vec::new(), MessageStatus::Incomplete, true)
                        .await;
                    self.end(ReplyEnd::Incomplete, &totals);
                    self.send(finish(FinishReason::Stop, &totals), reader).await;
                    return;
                }
            };
            totals.usage.add(usage);
            let (server, client): (Vec<ToolCall>, Vec<ToolCall>) = result
                .calls
                .iter()
                .cloned()
                .partition(|c| self.tools.is_server(&c.name));
            for call in &client {
                self.state.metrics().observe_tool_call(ToolKind::Client, false);
                tracing::debug!(tool = %call.name, "the model called a client tool");
            }
            let last = server.is_empty() || !client.is_empty() || step >= self.max_steps;
            if result.calls.is_empty() {
                // The usual end: the text goes to the store as it is (a copy of a long reply,
                // made at the moment every stream started together ends, is a copy too many).
                self.store(result.text, result.calls, MessageStatus::Complete, last)
                    .await;
                self.end(ReplyEnd::Complete, &totals);
                self.send(finish(reason, &totals), reader).await;
                return;
            }
            self.store(result.text.clone(), result.calls.clone(), MessageStatus::Complete, last)
                .await;
            self.prompt.push(PromptMessage {
                role: "assistant",
                content: result.text,
                tool_calls: result.calls,
                tool_call_id: None,
            });
            let scope = self.reply.as_ref().map(|r| r.scope.clone());
            for call in &server {
                let outcome = match tokio::time::timeout_at(
                    deadline,
                    Box::pin(self.tools.run(&self.state, scope.as_ref(), call)),
                )
                .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => ToolOutcome::failed("the turn ran out of time"),
                };
                self.state
                    .metrics()
                    .observe_tool_call(self.tools.kind(&call.name), outcome.error);
                self.store_result(call, &outcome.output).await;
                self.prompt.push(PromptMessage {
                    role: "tool",
                    content: outcome.output.clone(),
                    tool_call_id: Some(call.id.clone()),
                    ..PromptMessage::default()
                });
                let event = TurnEvent::ToolResult {
                    call: Box::new(call.clone()),
                    output: outcome.output,
                    error: outcome.error,
                };
                reader = self.send(event, reader).await;
            }
            if self.stop_requested() {
                // Stopped while the server's tools ran: what they did is stored, nothing more.
                self.end(ReplyEnd::Complete, &totals);
                self.send(finish(FinishReason::Stop, &totals), reader).await;
                return;
            }
            if last || (!reader && self.detach == Detach::Stop) || Instant::now() >= deadline {
                // Client tools to run, or no more steps: the turn ends asking for tools.
                self.end(ReplyEnd::Complete, &totals);
                self.send(finish(FinishReason::ToolCalls, &totals), reader).await;
                return;
            }
            reader = self.send(TurnEvent::StepFinish, reader).await;
            reader = self.send(TurnEvent::StepStart, reader).await;
            step += 1;
            let offered = self.tools.to_openai();
            stream = match tokio::time::timeout_at(deadline, Box::pin(self.model.start(&self.prompt, &offered))).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    self.end(ReplyEnd::Incomplete, &totals);
                    self.send(TurnEvent::Error(error.0), reader).await;
                    return;
                }
                Err(_) => {
                    self.end(ReplyEnd::Incomplete, &totals);
                    let late = TurnEvent::Error("the reply took longer than this server allows".into());
                    self.send(late, reader).await;
                    return;
                }
            };
        }
    }

    /// One model call: forwards its events, gathers its text and tool calls. The text is held
    /// once: what the reply's log records is read back from it at the step's end.
    async fn step(
        &self,
        stream: &mut ModelStream,
        deadline: Instant,
        reader: &mut bool,
        text_bytes: &mut usize,
    ) -> StepResult {
        let mark = self.live.as_ref().map(|live| live.reply().mark());
        let mut result = self.step_events(stream, deadline, reader, text_bytes).await;
        if let (Some(mark), Some(live)) = (mark, &self.live) {
            let mut text = live.reply().text_since(mark);
            text.push_str(&result.text);
            result.text = text;
        }
        result
    }

    /// `step`'s events; its result's text is only what the log did not record.
    async fn step_events(
        &self,
        stream: &mut ModelStream,
        deadline: Instant,
        reader: &mut bool,
        text_bytes: &mut usize,
    ) -> StepResult {
        let max_bytes = self.state.settings().max_reply_bytes;
        // The text the log did not record (all of it without a log, or past the log's bound).
        let mut text = String::new();
        let mut calls = Vec::new();
        // Who runs each call being streamed, by id.
        let mut server: HashMap<String, bool> = HashMap::new();
        // Made once per step and polled again for each event (a timer or a waiter registered
        // per chunk costs more than the chunk's own work).
        let late = tokio::time::sleep_until(deadline);
        let stopped = async {
            match &self.live {
                Some(live) => live.reply().stopped().await,
                None => std::future::pending().await,
            }
        };
        let reader_gone = self.events.closed();
        tokio::pin!(late, stopped, reader_gone);
        loop {
            let wait = tokio::select! {
                () = &mut stopped => Wait::Stopped,
                // The reader went away while the model was silent.
                () = &mut reader_gone, if *reader => Wait::ReaderGone,
                event = stream.next() => Wait::Event(event),
                () = &mut late => Wait::Event(Some(ModelEvent::Error(
                    "the reply took longer than this server allows".into(),
                ))),
            };
            let event = match wait {
                Wait::Stopped => {
                    return StepResult {
                        text,
                        calls,
                        end: StepEnd::Stopped,
                    };
                }
                Wait::ReaderGone => {
                    *reader = false;
                    if self.detach == Detach::Stop {
                        return StepResult {
                            text,
                            calls,
                            end: StepEnd::Left,
                        };
                    }
                    continue;
                }
                Wait::Event(event) => {
                    event.unwrap_or_else(|| ModelEvent::Error("the model ended without finishing".into()))
                }
            };
            let forward = match event {
                ModelEvent::Delta(delta) if *text_bytes + delta.len() > max_bytes => {
                    // Keep what fits (at a character boundary), then end as too long.
                    let mut fits = max_bytes.saturating_sub(*text_bytes).min(delta.len());
                    while !delta.is_char_boundary(fits) {
                        fits -= 1;
                    }
                    if fits > 0 {
                        let event = TurnEvent::Delta(delta[..fits].to_owned());
                        if !self.record(&event) {
                            text.push_str(&delta[..fits]);
                        }
                        *reader = self.forward(event, *reader).await;
                    }
                    return StepResult {
                        text,
                        calls,
                        end: StepEnd::Cut,
                    };
                }
                ModelEvent::Delta(delta) => {
                    *text_bytes += delta.len();
                    TurnEvent::Delta(delta)
                }
                ModelEvent::ToolCallStart { id, name } => {
                    let runs_here = self.tools.is_server(&name);
                    server.insert(id.clone(), runs_here);
                    TurnEvent::ToolCallStart {
                        id,
                        name,
                        server: runs_here,
                    }
                }
                ModelEvent::ToolCallDelta { id, delta } => {
                    let runs_here = server.get(&id).copied().unwrap_or(true);
                    TurnEvent::ToolCallDelta {
                        id,
                        delta,
                        server: runs_here,
                    }
                }
                ModelEvent::ToolCall(call) => {
                    let runs_here = self.tools.is_server(&call.name);
                    calls.push(call.clone());
                    TurnEvent::ToolCall {
                        call: Box::new(call),
                        server: runs_here,
                    }
                }
                ModelEvent::Finish { reason, usage } => {
                    return StepResult {
                        text,
                        calls,
                        end: StepEnd::Finished { reason, usage },
                    };
                }
                ModelEvent::Error(message) => {
                    return StepResult {
                        text,
                        calls,
                        end: StepEnd::Failed(message),
                    };
                }
            };
            let was_reading = *reader;
            if !self.record(&forward)
                && let TurnEvent::Delta(delta) = &forward
            {
                text.push_str(delta);
            }
            *reader = self.forward(forward, was_reading).await;
            if was_reading && !*reader && self.detach == Detach::Stop {
                return StepResult {
                    text,
                    calls,
                    end: StepEnd::Left,
                };
            }
        }
    }

    /// Records an event for resumes, and hands it to the reader, if it is still there; returns
    /// whether it is. A reader that took no data for the send timeout is treated as gone (a
    /// stalled client must not hold the model and this task forever).
    async fn send(&self, event: TurnEvent, reader: bool) -> bool {
        self.record(&event);
        self.forward(event, reader).await
    }

    /// Records an event in the reply's log, for resumes; false if it was not recorded (no log,
    /// or the log is full).
    fn record(&self, event: &TurnEvent) -> bool {
        self.live.as_ref().is_some_and(|live| live.reply().record(event))
    }

    /// Hands an event to the reader, if it is still there; returns whether it is.
    async fn forward(&self, event: TurnEvent, reader: bool) -> bool {
        if !reader {
            return false;
        }
        // Room in the channel (the usual case) needs no timer.
        let event = match self.events.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        let timeout: Duration = self.state.settings().send_timeout;
        matches!(tokio::time::timeout(timeout, self.events.send(event)).await, Ok(Ok(())))
    }

    fn stop_requested(&self) -> bool {
        self.live.as_ref().is_some_and(|live| live.reply().stop_requested())
    }

    /// Counts the turn's tokens (the model's own count, else the estimate) and how it ended.
    fn end(&self, end: ReplyEnd, totals: &Totals) {
        self.state.metrics().observe_reply(end);
        let usage = if totals.usage.total() > 0 {
            totals.usage
        } else {
            totals.estimate
        };
        self.state.metering().record(&self.payer, self.agent_id, usage);
    }

    /// Stores a step's assistant message (`last`: the turn's last, under the id its reader knows).
    async fn store(&self, text: String, calls: Vec<ToolCall>, status: MessageStatus, last: bool) {
        let Some(reply) = &self.reply else { return };
        if text.is_empty() && calls.is_empty() && status == MessageStatus::Complete && !last {
            return;
        }
        let id = if last { reply.id } else { Uuid::now_v7() };
        let calls = if reply.store_content {
            calls
        } else {
            // Privacy mode: which tools were called, not with what.
            calls
                .into_iter()
                .map(|c| ToolCall {
                    arguments: String::new(),
                    ..c
                })
                .collect()
        };
        let message = NewMessage {
            id,
            role: "assistant",
            content: if reply.store_content { text } else { String::new() },
            status,
            client_id: Some(id.to_string()),
            tool_calls: calls,
            tool_call_id: None,
        };
        // The turn's last message ends this instance's claim on the conversation's reply, and is
        // the reply the application's webhooks hear of.
        let (live, event) = if last {
            (self.state.live().ended_mark(), completed_event(reply, &message))
        } else {
            (LiveMark::Keep, None)
        };
        self.append(reply, message, live, event).await;
    }

    /// Stores a server tool's result.
    async fn store_result(&self, call: &ToolCall, output: &str) {
        let Some(reply) = &self.reply else { return };
        let content = if reply.store_content {
            output.to_owned()
        } else {
            String::new()
        };
        self.append(reply, tool_message(call.id.clone(), content), LiveMark::Keep, None)
            .await;
    }

    async fn append(&self, reply: &Reply, message: NewMessage, live: LiveMark, event: Option<Event>) {
        let db = self.state.db();
        // Boxed: the store's future is large and only lives at a step's end, while the task's own
        // future lives (per stream) for the whole reply.
        match Box::pin(user_data::append_reply(
            db,
            &reply.scope,
            &reply.conversation,
            message,
            live,
            event,
        ))
        .await
        {
            Ok(_) => {}
            // Deleted while the reply ran (by its user, or by a retention purge): nothing to add to.
            Err(StoreError::NotFound) => {
                tracing::info!("the conversation was deleted before its reply was stored");
            }
            Err(error) => tracing::error!(%error, "could not store the assistant's reply"),
        }
    }
}

/// `message.completed` for the turn's reply, when the application's webhooks receive it.
fn completed_event(reply: &Reply, message: &NewMessage) -> Option<Event> {
    let user = reply.scope.user();
    user.notifies(EventType::MessageCompleted).then(|| {
        Event::new(
            EventType::MessageCompleted,
            serde_json::json!({
                "agent_id": reply.scope.agent_id(),
                "conversation_id": reply.conversation.external_id(),
                "message_id": message.id,
                "user": user.sub(),
                "status": message.status.as_str(),
                "content": message.content,
            }),
        )
    })
}

/// A tool's result as a message: its client id is `tool:<call id>`, so a result is stored once.
pub(super) fn tool_message(call_id: String, content: String) -> NewMessage {
    NewMessage {
        id: Uuid::now_v7(),
        role: "tool",
        content,
        status: MessageStatus::Complete,
        client_id: Some(format!("tool:{call_id}")),
        tool_calls: Vec::new(),
        tool_call_id: Some(call_id),
    }
}

/// The turn's `Finish` event, with the usage of all its steps.
fn finish(reason: FinishReason, totals: &Totals) -> TurnEvent {
    TurnEvent::Finish {
        reason,
        usage: totals.usage,
    }
}

/// Tokens in a text, estimated as OpenAI's tokenizers average on English: four bytes each.
pub(super) fn estimate_tokens(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}
