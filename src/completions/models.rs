//! The models that answer: the built-in `echo` model and OpenAI-compatible providers
//! (`provider`). Both produce the same `ModelEvent` stream.
//!
//! Starting a model is separate from reading its stream, so a provider that refuses the request
//! (connection refused, 4xx/5xx) fails before the client's response has begun and becomes an
//! ordinary `502 upstream_error`.

use std::pin::Pin;

use futures_util::{Stream, stream};
use serde_json::Value;

use super::provider::ProviderCall;
use super::{FinishReason, ModelEvent, PromptMessage, ToolCall, Usage};

/// A model's reply as it arrives.
pub type ModelStream = Pin<Box<dyn Stream<Item = ModelEvent> + Send + 'static>>;

/// A model ready to answer one turn.
#[derive(Debug, Clone)]
pub enum Model {
    /// Deterministic and offline: replies with the text of the user's last message, a word at a
    /// time.
    Echo,
    /// A server speaking OpenAI's chat-completions protocol.
    OpenAiCompatible(ProviderCall),
}

/// Why a model could not start; the message is safe to show a client (no keys, no upstream body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl Model {
    /// Starts the reply to `prompt`, offering `tools` (OpenAI's request shape).
    pub async fn start(&self, prompt: &[PromptMessage], tools: &[Value]) -> Result<ModelStream, StartError> {
        match self {
            Model::Echo => Ok(Box::pin(echo(prompt))),
            Model::OpenAiCompatible(call) => call.start(prompt, tools).await,
        }
    }

    /// The model id reported to clients.
    pub fn name(&self) -> &str {
        match self {
            Model::Echo => "echo",
            Model::OpenAiCompatible(call) => &call.model,
        }
    }
}

/// The echo model: after tool results it answers with their text; a user message whose lines are
/// `/call <tool> <json arguments>` makes it call those tools; else it repeats the user's last
/// message, a word at a time.
fn echo(prompt: &[PromptMessage]) -> impl Stream<Item = ModelEvent> + Send + 'static {
    let prompt_tokens = prompt.iter().map(|m| m.content.split_whitespace().count() as u64).sum();
    let last = prompt.iter().rev().find(|m| m.role != "system");
    let text = match last {
        Some(m) if m.role == "tool" => {
            let results: Vec<&str> = prompt
                .iter()
                .rev()
                .take_while(|m| m.role == "tool")
                .map(|m| m.content.as_str())
                .collect();
            results.into_iter().rev().collect::<Vec<_>>().join("\n")
        }
        _ => prompt
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default(),
    };
    let calls = if last.is_some_and(|m| m.role == "user") {
        echo_calls(&text)
    } else {
        Vec::new()
    };
    let mut events = Vec::new();
    if calls.is_empty() {
        let usage = Usage {
            prompt_tokens,
            completion_tokens: text.split_whitespace().count() as u64,
        };
        events.extend(
            text.split_inclusive(char::is_whitespace)
                .map(|w| ModelEvent::Delta(w.to_owned())),
        );
        events.push(ModelEvent::Finish {
            reason: FinishReason::Stop,
            usage,
        });
    } else {
        let completion_tokens = calls
            .iter()
            .map(|c| c.arguments.split_whitespace().count() as u64 + 1)
            .sum();
        for call in &calls {
            events.push(ModelEvent::ToolCallStart {
                id: call.id.clone(),
                name: call.name.clone(),
            });
            events.push(ModelEvent::ToolCallDelta {
                id: call.id.clone(),
                delta: call.arguments.clone(),
            });
        }
        events.extend(calls.into_iter().map(ModelEvent::ToolCall));
        events.push(ModelEvent::Finish {
            reason: FinishReason::ToolCalls,
            usage: Usage {
                prompt_tokens,
                completion_tokens,
            },
        });
    }
    stream::iter(events)
}

/// The tool calls of an echo prompt: every line `/call <tool> <json>` (arguments `{}` when left
/// out). A message with any other line calls nothing.
fn echo_calls(text: &str) -> Vec<ToolCall> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() || !lines.iter().all(|l| l.starts_with("/call ")) {
        return Vec::new();
    }
    lines
        .iter()
        .filter_map(|line| {
            let rest = line["/call ".len()..].trim_start();
            let (name, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let arguments = arguments.trim();
            (!name.is_empty()).then(|| ToolCall {
                id: format!("call_{}", uuid::Uuid::now_v7().simple()),
                name: name.to_owned(),
                arguments: if arguments.is_empty() {
                    "{}".into()
                } else {
                    arguments.to_owned()
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn echo_repeats_the_last_user_message_word_by_word() {
        let prompt = vec![
            PromptMessage::text("system", "Be kind."),
            PromptMessage::text("user", "first"),
            PromptMessage::text("assistant", "first"),
            PromptMessage::text("user", "hello  there world"),
        ];
        let events: Vec<ModelEvent> = Model::Echo.start(&prompt, &[]).await.unwrap().collect().await;
        let text: String = events
            .iter()
            .filter_map(|e| {
                if let ModelEvent::Delta(d) = e {
                    Some(d.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(text, "hello  there world");
        assert_eq!(events.iter().filter(|e| matches!(e, ModelEvent::Delta(_))).count(), 4);
        assert!(
            matches!(events.last(), Some(ModelEvent::Finish { reason: FinishReason::Stop, usage }) if usage.completion_tokens == 3)
        );
    }

    #[tokio::test]
    async fn echo_calls_tools_and_answers_with_their_results() {
        let asked = vec![PromptMessage::text(
            "user",
            "/call get_weather {\"city\": \"Paris\"}\n/call now",
        )];
        let events: Vec<ModelEvent> = Model::Echo.start(&asked, &[]).await.unwrap().collect().await;
        let calls: Vec<&ToolCall> = events
            .iter()
            .filter_map(|e| if let ModelEvent::ToolCall(c) = e { Some(c) } else { None })
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, "{\"city\": \"Paris\"}");
        assert_eq!((calls[1].name.as_str(), calls[1].arguments.as_str()), ("now", "{}"));
        assert!(matches!(
            events.last(),
            Some(ModelEvent::Finish {
                reason: FinishReason::ToolCalls,
                ..
            })
        ));
        let answered = vec![
            PromptMessage::text("user", "/call get_weather {}"),
            PromptMessage {
                role: "tool",
                content: "sunny".into(),
                tool_call_id: Some("c".into()),
                ..PromptMessage::default()
            },
        ];
        let events: Vec<ModelEvent> = Model::Echo.start(&answered, &[]).await.unwrap().collect().await;
        assert_eq!(events[0], ModelEvent::Delta("sunny".into()));
        // Prose that mentions /call calls nothing.
        assert!(echo_calls("please /call x").is_empty());
        assert!(echo_calls("/call a {}\nthanks").is_empty());
    }
}
