//! DeltaKit (`@deltakit/react` `useStreamChat`): the client sends only the new text, the history
//! lives on the server.
//!
//! Request: `{message: "text", conversation_id?}` plus whatever else the app adds to the body;
//! the results of client tools come as `{tool_results: [{tool_call_id, output}]}` (with or
//! without a message). Stream: `{"type":"text_delta","delta":…}` events, tool calls as
//! `{"type":"tool_call","id","name","arguments","server"}` and a server tool's result as
//! `{"type":"tool_result","tool_call_id","output"}`, then `[DONE]`. The client has no error event,
//! so a failure mid-stream aborts the body. A first `conversation` event names the conversation;
//! the client skips event types it does not know.

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    ClientMessage, Encoder, IncomingMessage, ToolResultIn, TurnMeta, TurnRequest, Whole, arguments_json, output_json,
    sse_data, sse_json,
};
use crate::completions::{FinishReason, ToolCall, Usage};
use crate::error::{Error, Result};

/// DeltaKit's request: only the new text (the history lives on the server), or the results of
/// the client's tools.
#[derive(Deserialize, ToSchema)]
pub struct DeltaKitRequest {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    tool_results: Vec<DeltaKitToolResult>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    memory: Option<bool>,
}

/// A client tool's result.
#[derive(Deserialize, ToSchema)]
pub struct DeltaKitToolResult {
    tool_call_id: String,
    /// Text, or any JSON.
    #[serde(default)]
    #[schema(value_type = Object)]
    output: Value,
}

pub fn parse(body: Value) -> Result<TurnRequest> {
    let body: DeltaKitRequest =
        serde_json::from_value(body).map_err(|e| Error::InvalidRequest(format!("invalid deltakit request: {e}")))?;
    let tool_results: Vec<ToolResultIn> = body
        .tool_results
        .iter()
        .map(|r| ToolResultIn::new(r.tool_call_id.clone(), &r.output))
        .collect();
    let message = body.message.filter(|m| !m.trim().is_empty());
    if message.is_none() && tool_results.is_empty() {
        return Err(Error::invalid_field("message", "must not be empty"));
    }
    let mut history: Vec<ClientMessage> = tool_results.iter().map(ToolResultIn::to_prompt).collect();
    history.extend(message.iter().map(|m| ClientMessage::text("user", m.clone())));
    Ok(TurnRequest {
        conversation_id: body.conversation_id,
        history,
        user_messages: message
            .into_iter()
            .map(|content| IncomingMessage {
                content,
                client_id: None,
            })
            .collect(),
        stream: body.stream,
        memory: body.memory,
        sent_history: None,
        tool_results,
        run_id: None,
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
        sse_json(&TextDelta {
            delta: text,
            kind: "text_delta",
        })
    }

    fn tool_call_start(&mut self, _id: &str, _name: &str, _server: bool) -> String {
        String::new()
    }

    fn tool_call_delta(&mut self, _id: &str, _delta: &str, _server: bool) -> String {
        String::new()
    }

    fn tool_call(&mut self, call: &ToolCall, server: bool) -> String {
        sse_data(
            &json!({"type": "tool_call", "id": call.id, "name": call.name, "arguments": arguments_json(call), "server": server})
                .to_string(),
        )
    }

    fn tool_result(&mut self, call: &ToolCall, output: &str, error: bool) -> String {
        sse_data(
            &json!({"type": "tool_result", "tool_call_id": call.id, "name": call.name, "output": output_json(output), "error": error})
                .to_string(),
        )
    }

    fn finish(&mut self, _reason: FinishReason, _usage: Usage) -> String {
        sse_data("[DONE]")
    }

    fn error(&mut self, _message: &str) -> Option<String> {
        None
    }

    fn whole(&self, reply: &Whole) -> Value {
        let calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "arguments": arguments_json(c)}))
            .collect();
        json!({
            "conversation_id": self.meta.conversation_id,
            "message": {"id": self.meta.message_id, "role": "assistant", "content": reply.text, "tool_calls": calls},
            "finish_reason": reply.reason,
            "usage": {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens},
        })
    }
}

/// `{"type": "text_delta", "delta"}`, once per chunk (keys in the order `json!` gives).
#[derive(serde::Serialize)]
struct TextDelta<'a> {
    delta: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}
