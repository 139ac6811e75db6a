//! DeltaKit (`@deltakit/react` `useStreamChat`): the client sends only the new text, the history
//! lives on the server.
//!
//! Request: `{message: "text", conversation_id?}` plus whatever else the app adds to the body.
//! Stream: `{"type":"text_delta","delta":…}` events, then `[DONE]`. The client has no error event,
//! so a failure mid-stream aborts the body. A first `conversation` event names the conversation;
//! the client skips event types it does not know.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ClientMessage, Encoder, IncomingMessage, TurnMeta, TurnRequest, sse_data};
use crate::completions::{FinishReason, Usage};
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Body {
    message: String,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    memory: Option<bool>,
}

pub fn parse(body: Value) -> Result<TurnRequest> {
    let body: Body =
        serde_json::from_value(body).map_err(|e| Error::InvalidRequest(format!("invalid deltakit request: {e}")))?;
    if body.message.trim().is_empty() {
        return Err(Error::invalid_field("message", "must not be empty"));
    }
    Ok(TurnRequest {
        conversation_id: body.conversation_id,
        history: vec![ClientMessage {
            role: "user",
            content: body.message.clone(),
        }],
        user_messages: vec![IncomingMessage {
            content: body.message,
            client_id: None,
        }],
        stream: body.stream,
        memory: body.memory,
        sent_history: None,
    })
}

pub struct DeltaKitEncoder {
    meta: TurnMeta,
}

impl DeltaKitEncoder {
    pub fn new(meta: TurnMeta) -> Self {
        Self { meta }
    }
}

impl Encoder for DeltaKitEncoder {
    fn start(&mut self) -> String {
        sse_data(&json!({"type": "conversation", "conversation_id": self.meta.conversation_id, "message_id": self.meta.message_id}).to_string())
    }

    fn delta(&mut self, text: &str) -> String {
        sse_data(&json!({"type": "text_delta", "delta": text}).to_string())
    }

    fn finish(&mut self, _reason: FinishReason, _usage: Usage) -> String {
        sse_data("[DONE]")
    }

    fn error(&mut self, _message: &str) -> Option<String> {
        None
    }

    fn whole(&self, text: &str, reason: FinishReason, usage: Usage) -> Value {
        json!({
            "conversation_id": self.meta.conversation_id,
            "message": {"id": self.meta.message_id, "role": "assistant", "content": text},
            "finish_reason": reason,
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
        })
    }
}
