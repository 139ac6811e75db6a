//! An OpenAI-compatible provider as a model: the chat-completions request, written straight
//! from the prompt, and its streamed reply read into `ModelEvent`s (text deltas, tool calls
//! assembled from their fragments, one finish or one error).

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use axum::http::{HeaderValue, Request, header};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::models::{ModelStream, StartError};
use super::sse::{DataEvents, ReadError};
use super::{FinishReason, ModelEvent, PromptMessage, ToolCall, Usage};

/// Where and how to call an OpenAI-compatible provider for one agent.
#[derive(Clone)]
pub struct ProviderCall {
    /// The provider clients; the call takes a place in one for as long as its reply streams.
    pub lanes: super::lanes::ProviderLanes,
    /// `{base_url}/chat/completions`.
    pub url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Longest silence tolerated between two chunks of the provider's stream.
    pub idle_timeout: Duration,
    /// Longest event the provider's stream may send.
    pub max_event_bytes: usize,
}

impl std::fmt::Debug for ProviderCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCall")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
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
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallFragment>>,
}

/// A piece of a streamed tool call: the first names it (`id`, `function.name`), the rest add to
/// its arguments; `index` says which call it belongs to.
#[derive(Deserialize, Default)]
struct ToolCallFragment {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionFragment>,
}

#[derive(Deserialize, Default)]
struct FunctionFragment {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// A tool call being assembled from its fragments.
struct PartialCall {
    index: u64,
    call: ToolCall,
    /// Whether `ToolCallStart` was sent (once its name is known).
    started: bool,
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
    /// The idle timer, moved on at each event (cheaper than a timer of its own per event).
    idle: Pin<Box<tokio::time::Sleep>>,
    finish: Option<FinishReason>,
    usage: Usage,
    calls: Vec<PartialCall>,
    /// The turn's place in a provider lane, held until the stream is dropped.
    _lane: Option<super::lanes::Claim>,
    /// Events read but not yet handed out (a chunk may carry several).
    pending: VecDeque<ModelEvent>,
    done: bool,
}

/// Most tool calls one step may make, and most bytes of arguments each.
const MAX_CALLS: usize = 32;
const MAX_ARGUMENT_BYTES: usize = 256 * 1024;

impl<S> Reading<S> {
    fn new(events: S, idle_timeout: Duration) -> Self {
        Self {
            events,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            finish: None,
            usage: Usage::default(),
            calls: Vec::new(),
            _lane: None,
            pending: VecDeque::new(),
            done: false,
        }
    }

    fn holding(self, lane: super::lanes::Claim) -> Self {
        Self {
            _lane: Some(lane),
            ..self
        }
    }

    /// Adds a fragment to its call; the events it makes are queued. Err: the model exceeded the
    /// limits.
    fn fragment(&mut self, fragment: ToolCallFragment) -> Result<(), &'static str> {
        let index = fragment.index.unwrap_or(self.calls.len().saturating_sub(1) as u64);
        let function = fragment.function.unwrap_or_default();
        let at = match self.calls.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                if self.calls.len() >= MAX_CALLS {
                    return Err("the model made too many tool calls");
                }
                self.calls.push(PartialCall {
                    index,
                    call: ToolCall {
                        id: fragment
                            .id
                            .clone()
                            .unwrap_or_else(|| format!("call_{}", uuid::Uuid::now_v7().simple())),
                        name: String::new(),
                        arguments: String::new(),
                    },
                    started: false,
                });
                self.calls.len() - 1
            }
        };
        let partial = &mut self.calls[at];
        if let Some(name) = function.name {
            partial.call.name.push_str(&name);
        }
        if !partial.started && !partial.call.name.is_empty() {
            partial.started = true;
            self.pending.push_back(ModelEvent::ToolCallStart {
                id: partial.call.id.clone(),
                name: partial.call.name.clone(),
            });
            if !partial.call.arguments.is_empty() {
                self.pending.push_back(ModelEvent::ToolCallDelta {
                    id: partial.call.id.clone(),
                    delta: partial.call.arguments.clone(),
                });
            }
        }
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            if partial.call.arguments.len() + arguments.len() > MAX_ARGUMENT_BYTES {
                return Err("the model's tool arguments are too long");
            }
            partial.call.arguments.push_str(&arguments);
            if partial.started {
                self.pending.push_back(ModelEvent::ToolCallDelta {
                    id: partial.call.id.clone(),
                    delta: arguments,
                });
            }
        }
        Ok(())
    }
}

/// A chat-completions request, written straight from the prompt.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Messages<'a>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    tools: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

struct Messages<'a>(&'a [PromptMessage]);

impl Serialize for Messages<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(PromptMessage::openai))
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl ProviderCall {
    /// The chat-completions request: JSON, a streamed reply asked for, the key as a bearer token
    /// (marked sensitive, so no log or debug output shows it).
    fn request(&self, body: &ChatRequest<'_>) -> Result<Request<Full<Bytes>>, StartError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| StartError(format!("the request to the model provider could not be written: {e}")))?;
        let invalid = || StartError("the model provider's URL or API key is not valid in an HTTP request".into());
        let mut request = Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "text/event-stream")
            .header(header::USER_AGENT, super::lanes::USER_AGENT);
        if let Some(key) = &self.api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| invalid())?;
            value.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(Full::new(Bytes::from(body))).map_err(|_| invalid())
    }

    /// Sends the request; the provider's refusal is a `StartError`, its reply the stream.
    pub(super) async fn start(&self, prompt: &[PromptMessage], tools: &[Value]) -> Result<ModelStream, StartError> {
        let body = ChatRequest {
            model: &self.model,
            messages: Messages(prompt),
            stream: true,
            stream_options: StreamOptions { include_usage: true },
            tools,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        };
        let request = self.request(&body)?;
        let lane = self.lanes.claim();
        let response = tokio::time::timeout(self.idle_timeout, lane.client().request(request))
            .await
            .map_err(|_| StartError("the model provider did not answer in time".into()))?
            .map_err(|e| {
                // hyper-util's errors name no URL (which may carry credentials): the cause is
                // in the source, an I/O, TLS or refused-address error.
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                tracing::warn!(error = %e, cause, "model provider unreachable");
                StartError("the model provider could not be reached".into())
            })?;
        let status = response.status();
        if !status.is_success() {
            // The upstream body may echo the request or hold account details: it is not passed on.
            tracing::warn!(status = status.as_u16(), "model provider refused the request");
            return Err(StartError(format!("the model provider answered {}", status.as_u16())));
        }
        let body = http_body_util::BodyDataStream::new(response.into_body());
        let events = DataEvents::new(body, self.max_event_bytes);
        let reading = Reading::new(events, self.idle_timeout).holding(lane);
        Ok(Box::pin(stream::unfold(reading, next_event)))
    }
}

async fn next_event<S, E>(mut state: Reading<S>) -> Option<(ModelEvent, Reading<S>)>
where
    S: Stream<Item = Result<bytes::Bytes, ReadError<E>>> + Unpin,
    E: std::fmt::Display,
{
    loop {
        if let Some(event) = state.pending.pop_front() {
            return Some((event, state));
        }
        if state.done {
            return None;
        }
        let idle_until = tokio::time::Instant::now() + state.idle_timeout;
        state.idle.as_mut().reset(idle_until);
        let next = tokio::select! {
            next = state.events.next() => next,
            () = state.idle.as_mut() => return fail(state, "the model provider stopped answering"),
        };
        let event = match next {
            None => {
                // The connection closed: a clean end only if the provider said it was finished.
                return match state.finish {
                    Some(reason) => finish(state, reason),
                    None => fail(state, "the model provider ended the stream without finishing"),
                };
            }
            Some(Err(ReadError::TooLarge)) => {
                tracing::warn!("model provider sent an event past the bound");
                return fail(
                    state,
                    "the model provider sent an event longer than this server accepts",
                );
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "model provider stream broke");
                return fail(state, "the connection to the model provider was lost");
            }
            Some(Ok(event)) => event,
        };
        let data = event.trim_ascii();
        if data.is_empty() {
            continue;
        }
        if data == b"[DONE]" {
            let reason = state.finish.unwrap_or(FinishReason::Stop);
            return finish(state, reason);
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
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
        for choice in chunk.choices.into_iter().take(1) {
            let delta = choice.delta.or(choice.message).unwrap_or_default();
            if let Some(Value::String(text)) = delta.content
                && !text.is_empty()
            {
                state.pending.push_back(ModelEvent::Delta(text));
            }
            for fragment in delta.tool_calls.unwrap_or_default() {
                if let Err(why) = state.fragment(fragment) {
                    return fail(state, why);
                }
            }
            match choice.finish_reason {
                Some(Value::String(reason)) if reason == "length" => state.finish = Some(FinishReason::Length),
                Some(Value::String(reason)) if reason == "tool_calls" || reason == "function_call" => {
                    state.finish = Some(FinishReason::ToolCalls);
                }
                Some(Value::String(reason)) if !reason.is_empty() => state.finish = Some(FinishReason::Stop),
                _ => {}
            }
        }
    }
}

/// Ends the step: the whole tool calls (those that got a name), then `Finish` (`ToolCalls`
/// whenever there are calls, whatever the provider said).
fn finish<S>(mut state: Reading<S>, reason: FinishReason) -> Option<(ModelEvent, Reading<S>)> {
    state.done = true;
    let calls: Vec<ToolCall> = state.calls.drain(..).filter(|c| c.started).map(|c| c.call).collect();
    let reason = if calls.is_empty() {
        if reason == FinishReason::ToolCalls {
            FinishReason::Stop
        } else {
            reason
        }
    } else {
        FinishReason::ToolCalls
    };
    state.pending.extend(calls.into_iter().map(ModelEvent::ToolCall));
    state.pending.push_back(ModelEvent::Finish {
        reason,
        usage: state.usage,
    });
    let first = state.pending.pop_front()?;
    Some((first, state))
}

fn fail<S>(mut state: Reading<S>, message: &str) -> Option<(ModelEvent, Reading<S>)> {
    state.done = true;
    state.pending.clear();
    Some((ModelEvent::Error(message.to_owned()), state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_is_written_in_openai_shape() {
        let prompt = [
            PromptMessage::text("system", "Be kind."),
            PromptMessage::text("user", "hi"),
        ];
        let tool = serde_json::json!({"type": "function", "function": {"name": "f", "parameters": {}}});
        let bare = ChatRequest {
            model: "m",
            messages: Messages(&prompt),
            stream: true,
            stream_options: StreamOptions { include_usage: true },
            tools: &[],
            temperature: None,
            max_tokens: None,
        };
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}],
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
        let tools = [tool.clone()];
        let full = ChatRequest {
            tools: &tools,
            temperature: Some(0.5),
            max_tokens: Some(100),
            ..bare
        };
        let value = serde_json::to_value(&full).unwrap();
        assert_eq!(value["tools"], serde_json::json!([tool]));
        assert_eq!(
            (value["temperature"].as_f64(), value["max_tokens"].as_u64()),
            (Some(0.5), Some(100))
        );
    }

    async fn events_of(lines: &[&str]) -> Vec<ModelEvent> {
        let body: String = lines.iter().map(|l| format!("data: {l}\n\n")).collect();
        let bytes = stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
        let reading = Reading::new(DataEvents::new(bytes, 1 << 20), Duration::from_secs(5));
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

    #[tokio::test]
    async fn streamed_tool_calls_are_assembled_by_index() {
        let events = events_of(&[
            r#"{"choices":[{"delta":{"role":"assistant","content":"Let me look."}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"get_time","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}"#,
            "[DONE]",
        ])
        .await;
        let whole: Vec<&ToolCall> = events
            .iter()
            .filter_map(|e| if let ModelEvent::ToolCall(c) = e { Some(c) } else { None })
            .collect();
        assert_eq!(whole.len(), 2);
        assert_eq!(
            (whole[0].id.as_str(), whole[0].name.as_str()),
            ("call_a", "get_weather")
        );
        assert_eq!(whole[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(whole[1].arguments, "{}");
        let deltas: String = events
            .iter()
            .filter_map(|e| match e {
                ModelEvent::ToolCallDelta { id, delta } if id == "call_a" => Some(delta.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, r#"{"city":"Paris"}"#);
        assert!(matches!(events[0], ModelEvent::Delta(_)));
        assert!(matches!(&events[1], ModelEvent::ToolCallStart { name, .. } if name == "get_weather"));
        assert_eq!(
            events.last(),
            Some(&ModelEvent::Finish {
                reason: FinishReason::ToolCalls,
                usage: Usage {
                    prompt_tokens: 7,
                    completion_tokens: 5
                }
            })
        );
    }
}
