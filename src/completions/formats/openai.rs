//! The OpenAI chat-completions format: what the OpenAI SDKs send and expect.
//!
//! Request: `{messages: [{role, content}], conversation_id?, stream?, model?}`. The server keeps
//! the history, so only the last user message is new; the body's `model` is ignored (the agent's
//! model answers) and the client's system messages are ignored (the agent's instructions rule).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ClientMessage, Encoder, IncomingMessage, TurnMeta, TurnRequest, known_role, sse_data};
use crate::completions::{FinishReason, Usage};
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
    let history: Vec<ClientMessage> = body
        .messages
        .into_iter()
        .filter_map(|m| {
            let content = m.content.map(Content::into_text).unwrap_or_default();
            Some(ClientMessage {
                role: known_role(&m.role)?,
                content,
            })
        })
        .collect();
    let Some(last_user) = history.iter().rev().find(|m| m.role == "user") else {
        return Err(Error::invalid_field("messages", "must hold a user message"));
    };
    Ok(TurnRequest {
        conversation_id: body.conversation_id,
        user_messages: vec![IncomingMessage {
            content: last_user.content.clone(),
            client_id: None,
        }],
        stream: body.stream,
        memory: body.memory,
        history,
        sent_history: None,
    })
}

pub struct OpenAiEncoder {
    meta: TurnMeta,
}

impl OpenAiEncoder {
    pub fn new(meta: TurnMeta) -> Self {
        Self { meta }
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

    fn whole(&self, text: &str, reason: FinishReason, usage: Usage) -> Value {
        json!({
            "id": self.id(),
            "object": "chat.completion",
            "created": self.meta.created,
            "model": self.meta.model,
            "conversation_id": self.meta.conversation_id,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
            }],
            "usage": usage_json(usage),
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
}
