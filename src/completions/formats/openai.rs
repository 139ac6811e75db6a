//! The OpenAI chat-completions format: what the OpenAI SDKs send and expect.
//!
//! Request: `{messages: [{role, content}], conversation_id?, stream?, model?}`. The server keeps
//! the history, so only the last user message is new, or the `tool` messages that end the list
//! (the results of the client's tools); the body's `model` and `tools` are ignored (the agent's
//! model and tools answer) and the client's system messages are ignored (the agent's
//! instructions rule).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    ClientMessage, Encoder, IncomingMessage, ToolResultIn, TurnMeta, TurnRequest, Whole, known_role, sse_data, sse_json,
};
use crate::completions::{FinishReason, PromptMessage, ToolCall, Usage};
use crate::error::{Error, Result};

/// An OpenAI chat-completions request, as the OpenAI SDKs send it.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // `model` and `tools` are read for the document only: the agent's answer.
pub struct OpenAiChatRequest {
    /// The conversation as the client has it; the last user message (or the `tool` messages
    /// that end the list) is what is new.
    messages: Vec<OpenAiChatMessage>,
    /// The user's conversation to continue (new when left out).
    #[serde(default)]
    conversation_id: Option<String>,
    /// Default `false`.
    #[serde(default)]
    stream: Option<bool>,
    /// `false` keeps the user's memory out of this turn.
    #[serde(default)]
    memory: Option<bool>,
    /// Ignored: the agent's model answers.
    #[serde(default)]
    model: Option<String>,
    /// Ignored: the agent's tools are offered.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<Value>>,
}

/// A message of an OpenAI chat request: `system`, `user`, `assistant` (with `tool_calls`) or
/// `tool` (with `tool_call_id`).
#[derive(Deserialize, ToSchema)]
pub struct OpenAiChatMessage {
    #[schema(example = "user")]
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<OpenAiToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// A tool call of an assistant message.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct OpenAiToolCall {
    id: String,
    /// `function`.
    #[serde(default = "function_kind", rename = "type")]
    kind: String,
    function: OpenAiFunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct OpenAiFunctionCall {
    name: String,
    /// The arguments as JSON text.
    #[serde(default)]
    arguments: String,
}

/// `content` is a string, or an array of parts of which the text ones count.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = OpenAiContent)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, ToSchema)]
#[schema(as = OpenAiContentPart)]
pub struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn into_text(self) -> String {
        match self {
            Content::Text(text) => text,
            Content::Parts(parts) => parts
                .into_iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text)
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

pub fn parse(body: Value) -> Result<TurnRequest> {
    let body: OpenAiChatRequest =
        serde_json::from_value(body).map_err(|e| Error::InvalidRequest(format!("invalid openai request: {e}")))?;
    let mut history: Vec<ClientMessage> = Vec::with_capacity(body.messages.len());
    for m in body.messages {
        let content = m.content.map(Content::into_text).unwrap_or_default();
        if m.role == "tool" {
            let Some(id) = m.tool_call_id.filter(|id| !id.is_empty()) else {
                return Err(Error::invalid_field(
                    "messages",
                    "a tool message needs its `tool_call_id`",
                ));
            };
            history.push(
                ToolResultIn {
                    tool_call_id: id,
                    output: content,
                }
                .to_prompt(),
            );
            continue;
        }
        let Some(role) = known_role(&m.role) else { continue };
        let tool_calls = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments,
            })
            .collect();
        history.push(PromptMessage {
            role,
            content,
            tool_calls,
            tool_call_id: None,
        });
    }
    // Tool messages last: the client ran the tools the reply asked for, the model goes on.
    let tool_results: Vec<ToolResultIn> = history
        .iter()
        .rev()
        .take_while(|m| m.role == "tool")
        .map(|m| ToolResultIn {
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
            output: m.content.clone(),
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let user_messages = if tool_results.is_empty() {
        let Some(last_user) = history.iter().rev().find(|m| m.role == "user") else {
            return Err(Error::invalid_field("messages", "must hold a user message"));
        };
        vec![IncomingMessage {
            content: last_user.content.clone(),
            client_id: None,
        }]
    } else {
        Vec::new()
    };
    Ok(TurnRequest {
        conversation_id: body.conversation_id,
        user_messages,
        stream: body.stream,
        memory: body.memory,
        history,
        sent_history: None,
        tool_results,
        run_id: None,
    })
}

/// Server tools are the server's business: an OpenAI client would try to run any call it sees,
/// so only the client's tool calls are streamed, numbered as OpenAI numbers them.
pub struct OpenAiEncoder {
    meta: TurnMeta,
    /// `chatcmpl-<message id>`, every chunk's id.
    id: String,
    /// The client tool calls streamed so far, by id (their index is their place).
    calls: Vec<String>,
}

impl OpenAiEncoder {
    pub fn new(meta: TurnMeta) -> Self {
        Self {
            id: format!("chatcmpl-{}", meta.message_id),
            meta,
            calls: Vec::new(),
        }
    }

    fn call_index(&self, id: &str) -> Option<usize> {
        self.calls.iter().position(|c| c == id)
    }

    fn chunk(&self, delta: Value, finish_reason: Option<FinishReason>, usage: Option<Usage>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.meta.model,
            "conversation_id": self.meta.conversation_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage_json(usage);
        }
        sse_data(&chunk.to_string())
    }
}

/// A text delta's chunk: what `chunk` makes of `{"content": text}`, keys in the same order.
#[derive(Serialize)]
struct DeltaChunk<'a> {
    choices: [DeltaChoice<'a>; 1],
    conversation_id: &'a str,
    created: i64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
}

#[derive(Serialize)]
struct DeltaChoice<'a> {
    delta: TextContent<'a>,
    finish_reason: Option<FinishReason>,
    index: u32,
}

#[derive(Serialize)]
struct TextContent<'a> {
    content: &'a str,
}

/// A whole (non-streamed) reply: OpenAI's `chat.completion`, with the conversation it belongs to.
#[derive(Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<message id>`.
    id: String,
    /// `chat.completion`.
    #[schema(value_type = String, example = "chat.completion")]
    object: &'static str,
    /// Unix seconds.
    created: i64,
    model: String,
    conversation_id: String,
    choices: Vec<Choice>,
    usage: CompletionUsage,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChatCompletionChoice)]
pub struct Choice {
    index: u32,
    message: AssistantMessage,
    /// `stop`, `length`, or `tool_calls` (the client has tools to run, or the turn reached its
    /// `max_steps`).
    #[schema(value_type = String, example = "stop")]
    finish_reason: FinishReason,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChatCompletionMessage)]
pub struct AssistantMessage {
    /// `assistant`.
    #[schema(value_type = String, example = "assistant")]
    role: &'static str,
    /// The reply's text (`null` when it only calls tools).
    content: Option<String>,
    /// The client's tools the model called (a server's tools are never listed here).
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<OpenAiToolCall>>,
}

#[derive(Serialize, ToSchema)]
pub struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

fn usage_json(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total()})
}

impl Encoder for OpenAiEncoder {
    fn start(&mut self) -> String {
        self.chunk(json!({"role": "assistant", "content": ""}), None, None)
    }

    fn delta(&mut self, text: &str) -> String {
        sse_json(&DeltaChunk {
            choices: [DeltaChoice {
                delta: TextContent { content: text },
                finish_reason: None,
                index: 0,
            }],
            conversation_id: &self.meta.conversation_id,
            created: self.meta.created,
            id: &self.id,
            model: &self.meta.model,
            object: "chat.completion.chunk",
        })
    }

    fn tool_call_start(&mut self, id: &str, name: &str, server: bool) -> String {
        if server {
            return String::new();
        }
        self.calls.push(id.to_owned());
        let index = self.calls.len() - 1;
        self.chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
            None,
        )
    }

    fn tool_call_delta(&mut self, id: &str, delta: &str, server: bool) -> String {
        match self.call_index(id) {
            Some(index) if !server => self.chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]}),
                None,
                None,
            ),
            _ => String::new(),
        }
    }

    fn tool_call(&mut self, call: &ToolCall, server: bool) -> String {
        // Streamed already, unless the model gave it whole.
        if server || self.call_index(&call.id).is_some() {
            return String::new();
        }
        let mut frames = self.tool_call_start(&call.id, &call.name, false);
        frames.push_str(&self.tool_call_delta(&call.id, &call.arguments, false));
        frames
    }

    fn tool_result(&mut self, _call: &ToolCall, _output: &str, _error: bool) -> String {
        String::new()
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage) -> String {
        let mut frames = self.chunk(json!({}), Some(reason), Some(usage));
        frames.push_str(&sse_data("[DONE]"));
        frames
    }

    fn error(&mut self, message: &str) -> Option<String> {
        // The OpenAI SDKs raise an APIError on a chunk that carries `error`.
        Some(sse_data(
            &json!({"error": {"message": message, "type": "upstream_error", "code": "upstream_error"}}).to_string(),
        ))
    }

    fn whole(&self, reply: &Whole) -> Value {
        let tool_calls: Vec<OpenAiToolCall> = reply
            .tool_calls
            .iter()
            .map(|c| OpenAiToolCall {
                id: c.id.clone(),
                kind: function_kind(),
                function: OpenAiFunctionCall {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                },
            })
            .collect();
        let completion = ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion",
            created: self.meta.created,
            model: self.meta.model.clone(),
            conversation_id: self.meta.conversation_id.clone(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: (!reply.text.is_empty() || tool_calls.is_empty()).then(|| reply.text.clone()),
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                },
                finish_reason: reply.reason,
            }],
            usage: CompletionUsage {
                prompt_tokens: reply.usage.prompt_tokens,
                completion_tokens: reply.usage.completion_tokens,
                total_tokens: reply.usage.total(),
            },
        };
        serde_json::to_value(completion).expect("a chat completion serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_user_message_is_the_new_one() {
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {"url": "x"}}]},
        ], "conversation_id": "c1", "stream": true});
        let turn = parse(body).unwrap();
        assert_eq!(turn.user_messages.len(), 1);
        assert_eq!(turn.user_messages[0].content, "second");
        assert_eq!(turn.conversation_id.as_deref(), Some("c1"));
        assert_eq!(turn.stream, Some(true));
    }

    #[test]
    fn a_body_without_a_user_message_is_refused() {
        assert!(parse(json!({"messages": [{"role": "system", "content": "x"}]})).is_err());
        assert!(parse(json!({"messages": "nope"})).is_err());
    }

    #[test]
    fn stream_frames_are_chunks_then_done() {
        let meta = TurnMeta {
            conversation_id: "c".into(),
            message_id: "m".into(),
            model: "echo".into(),
            created: 1,
            run_id: None,
            continuation: false,
        };
        let mut encoder = OpenAiEncoder::new(meta);
        let delta = encoder.delta("hi");
        let chunk: Value = serde_json::from_str(delta.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["delta"]["content"], "hi");
        assert!(chunk["choices"][0]["finish_reason"].is_null());
        let end = encoder.finish(FinishReason::Stop, Usage::default());
        assert!(end.ends_with("data: [DONE]\n\n"));
        assert!(end.contains("\"finish_reason\":\"stop\""));
    }

    #[test]
    fn trailing_tool_messages_are_results_to_store() {
        let body = json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]});
        let turn = parse(body).unwrap();
        assert!(turn.user_messages.is_empty());
        assert_eq!(
            turn.tool_results,
            [ToolResultIn {
                tool_call_id: "call_1".into(),
                output: "sunny".into()
            }]
        );
        assert_eq!(turn.history[1].tool_calls[0].name, "get_weather");
        assert_eq!(turn.history[2].tool_call_id.as_deref(), Some("call_1"));
        let no_id = json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]});
        assert!(parse(no_id).is_err());
    }
}
