//! The models that answer: the built-in `echo` model and OpenAI-compatible providers. Both produce
//! the same `ModelEvent` stream.
//!
//! Starting a model is separate from reading its stream, so a provider that refuses the request
//! (connection refused, 4xx/5xx) fails before the client's response has begun and becomes an
//! ordinary `502 upstream_error`.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FinishReason, ModelEvent, PromptMessage, Usage};

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

/// Where and how to call an OpenAI-compatible provider for one agent.
#[derive(Clone)]
pub struct ProviderCall {
    pub client: reqwest::Client,
    /// `{base_url}/chat/completions`.
    pub url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Longest silence tolerated between two chunks of the provider's stream.
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for ProviderCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCall")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Why a model could not start; the message is safe to show a client (no keys, no upstream body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl Model {
    /// Starts the reply to `prompt`.
    pub async fn start(&self, prompt: &[PromptMessage]) -> Result<ModelStream, StartError> {
        match self {
            Model::Echo => Ok(Box::pin(echo(prompt))),
            Model::OpenAiCompatible(call) => call.start(prompt).await,
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

fn echo(prompt: &[PromptMessage]) -> impl Stream<Item = ModelEvent> + Send + 'static {
    let text = prompt
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())
        .unwrap_or_default();
    let prompt_tokens = prompt.iter().map(|m| m.content.split_whitespace().count() as u64).sum();
    let words: Vec<String> = text.split_inclusive(char::is_whitespace).map(str::to_owned).collect();
    let usage = Usage {
        prompt_tokens,
        completion_tokens: text.split_whitespace().count() as u64,
    };
    stream::iter(words.into_iter().map(ModelEvent::Delta).chain([ModelEvent::Finish {
        reason: FinishReason::Stop,
        usage,
    }]))
}

/// One chunk of an OpenAI-compatible stream, read leniently: servers omit `object`, send
/// `finish_reason` as null, `""` or not at all, and put `usage` alone in a last chunk.
#[derive(Deserialize, Default)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    /// Some servers stream `message` instead of `delta`.
    #[serde(default)]
    message: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Deserialize, Default)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// The stream's state between chunks.
struct Reading<S> {
    events: S,
    idle_timeout: Duration,
    finish: Option<FinishReason>,
    usage: Usage,
    done: bool,
}

impl ProviderCall {
    async fn start(&self, prompt: &[PromptMessage]) -> Result<ModelStream, StartError> {
        let mut body = json!({
            "model": self.model,
            "messages": prompt,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(temperature) = self.temperature {
            body["temperature"] = json!(temperature);
        }
        if let Some(max_tokens) = self.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        let mut request = self
            .client
            .post(&self.url)
            .json(&body)
            .header("accept", "text/event-stream");
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = tokio::time::timeout(self.idle_timeout, request.send())
            .await
            .map_err(|_| StartError("the model provider did not answer in time".into()))?
            .map_err(|e| {
                // reqwest's errors name the URL, which may carry credentials in a query string.
                tracing::warn!(error = %e.without_url(), "model provider unreachable");
                StartError("the model provider could not be reached".into())
            })?;
        let status = response.status();
        if !status.is_success() {
            // The upstream body may echo the request or hold account details: it is not passed on.
            tracing::warn!(status = status.as_u16(), "model provider refused the request");
            return Err(StartError(format!("the model provider answered {}", status.as_u16())));
        }
        let reading = Reading {
            events: response.bytes_stream().eventsource(),
            idle_timeout: self.idle_timeout,
            finish: None,
            usage: Usage::default(),
            done: false,
        };
        Ok(Box::pin(stream::unfold(reading, next_event)))
    }
}

async fn next_event<S, E>(mut state: Reading<S>) -> Option<(ModelEvent, Reading<S>)>
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Display,
{
    if state.done {
        return None;
    }
    loop {
        let next = match tokio::time::timeout(state.idle_timeout, state.events.next()).await {
            Err(_) => return fail(state, "the model provider stopped answering"),
            Ok(next) => next,
        };
        let event = match next {
            None => {
                // The connection closed: a clean end only if the provider said it was finished.
                return match state.finish {
                    Some(reason) => finish(state, reason),
                    None => fail(state, "the model provider ended the stream without finishing"),
                };
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "model provider stream broke");
                return fail(state, "the connection to the model provider was lost");
            }
            Some(Ok(event)) => event,
        };
        let data = event.data.trim();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            let reason = state.finish.unwrap_or(FinishReason::Stop);
            return finish(state, reason);
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            // Not JSON (a comment-like line some servers send): skip it.
            continue;
        };
        if chunk.error.is_some() {
            return fail(state, "the model provider reported an error");
        }
        if let Some(usage) = chunk.usage {
            state.usage = Usage {
                prompt_tokens: usage.prompt_tokens.unwrap_or(state.usage.prompt_tokens),
                completion_tokens: usage.completion_tokens.unwrap_or(state.usage.completion_tokens),
            };
        }
        let mut text = String::new();
        for choice in chunk.choices.into_iter().take(1) {
            if let Some(Value::String(delta)) = choice.delta.or(choice.message).and_then(|d| d.content) {
                text = delta;
            }
            match choice.finish_reason {
                Some(Value::String(reason)) if reason == "length" => state.finish = Some(FinishReason::Length),
                Some(Value::String(reason)) if !reason.is_empty() => state.finish = Some(FinishReason::Stop),
                _ => {}
            }
        }
        if !text.is_empty() {
            return Some((ModelEvent::Delta(text), state));
        }
    }
}

fn finish<S>(mut state: Reading<S>, reason: FinishReason) -> Option<(ModelEvent, Reading<S>)> {
    state.done = true;
    let usage = state.usage;
    Some((ModelEvent::Finish { reason, usage }, state))
}

fn fail<S>(mut state: Reading<S>, message: &str) -> Option<(ModelEvent, Reading<S>)> {
    state.done = true;
    Some((ModelEvent::Error(message.to_owned()), state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_repeats_the_last_user_message_word_by_word() {
        let prompt = vec![
            PromptMessage {
                role: "system",
                content: "Be kind.".into(),
            },
            PromptMessage {
                role: "user",
                content: "first".into(),
            },
            PromptMessage {
                role: "assistant",
                content: "first".into(),
            },
            PromptMessage {
                role: "user",
                content: "hello  there world".into(),
            },
        ];
        let events: Vec<ModelEvent> = Model::Echo.start(&prompt).await.unwrap().collect().await;
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

    async fn events_of(lines: &[&str]) -> Vec<ModelEvent> {
        let body: String = lines.iter().map(|l| format!("data: {l}\n\n")).collect();
        let bytes = stream::iter([Ok::<_, std::io::Error>(body.into_bytes())]);
        let reading = Reading {
            events: bytes.eventsource(),
            idle_timeout: Duration::from_secs(5),
            finish: None,
            usage: Usage::default(),
            done: false,
        };
        stream::unfold(reading, next_event).collect().await
    }

    #[tokio::test]
    async fn lenient_chunks_become_deltas_and_one_finish() {
        let events = events_of(&[
            r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":""}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            "[DONE]",
        ])
        .await;
        assert_eq!(
            events,
            vec![
                ModelEvent::Delta("Hel".into()),
                ModelEvent::Delta("lo".into()),
                ModelEvent::Finish {
                    reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: 3,
                        completion_tokens: 2
                    }
                },
            ]
        );
    }

    #[tokio::test]
    async fn an_end_without_finish_is_an_error() {
        let events = events_of(&[r#"{"choices":[{"delta":{"content":"partial"}}]}"#]).await;
        assert!(matches!(
            events.as_slice(),
            [ModelEvent::Delta(_), ModelEvent::Error(_)]
        ));
        // A finish_reason without [DONE] is a clean end.
        let events = events_of(&[r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#]).await;
        assert!(matches!(
            events.last(),
            Some(ModelEvent::Finish {
                reason: FinishReason::Stop,
                ..
            })
        ));
    }
}
