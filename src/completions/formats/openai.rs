//! The OpenAI chat-completions format: what the OpenAI SDKs send and expect.
//!
//! Request: `{messages: [{role, content}], conversation_id?, stream?, model?}`. The server keeps
//! the history, so only the last user message is new, or the `tool` messages that end the list
//! (the results of the client's tools); the body's `model` and `tools` are ignored (the agent's
//! model and tools answer) and the client's system messages are ignored (the agent's
//! instructions rule).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ClientMessage, Encoder, IncomingMessage, ToolResultIn, TurnMeta, TurnRequest, Whole, known_role, sse_data,
};
use crate::completions::{FinishReason, PromptMessage, ToolCall, Usage};
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Body {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    memory: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<ChatToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct ChatToolCall {
    id: String,
    function: ChatFunction,
}

#[derive(Deserialize)]
struct ChatFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// `content` is a string, or an array of parts of which the text ones count.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
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
    let body: Body =
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
    /// The client tool calls streamed so far, by id (their index is their place).
    calls: Vec<String>,
}

impl OpenAiEncoder {
    pub fn new(meta: TurnMeta) -> Self {
        Self {
            meta,
            calls: Vec::new(),
        }
    }

    fn call_index(&self, id: &str) -> Option<usize> {
        self.calls.iter().position(|c| c == id)
    }

    fn id(&self) -> String {
        format!("chatcmpl-{}", self.meta.message_id)
    }

    fn chunk(&self, delta: Value, finish_reason: Option<FinishReason>, usage: Option<Usage>) -> String {
        let mut chunk = json!({
            "id": self.id(),
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

fn usage_json(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total()})
}

impl Encoder for OpenAiEncoder {
    fn start(&mut self) -> String {
        self.chunk(json!({"role": "assistant", "content": ""}), None, None)
    }

    fn delta(&mut self, text: &str) -> String {
        self.chunk(json!({"content": text}), None, None)
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
        let mut message = json!({"role": "assistant", "content": reply.text});
        if !reply.tool_calls.is_empty() {
            message["tool_calls"] = reply
                .tool_calls
                .iter()
                .map(
                    |c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}),
                )
                .collect();
            if reply.text.is_empty() {
                message["content"] = Value::Null;
            }
        }
        json!({
            "id": self.id(),
            "object": "chat.completion",
            "created": self.meta.created,
            "model": self.meta.model,
            "conversation_id": self.meta.conversation_id,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.reason}],
            "usage": usage_json(reply.usage),
        })
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
