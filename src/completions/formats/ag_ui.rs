//! The AG-UI protocol (`@ag-ui/client`'s `HttpAgent`, CopilotKit): `RunAgentInput` in, its SSE
//! events out.
//!
//! Request: `{threadId, runId, messages, tools, context, state, forwardedProps}`, the whole
//! history each time; `threadId` is the conversation. Messages carry ids, so the history is
//! compared with what is stored as the AI SDK's is; a client tool's result is a `tool` message
//! (`toolCallId`) after the assistant message that called it. The agent's own tools answer: the
//! input's `tools` and `context` are not given to the model, as the body's `tools` of an OpenAI
//! request are not. Stream: `RUN_STARTED`, `TEXT_MESSAGE_START`/`CONTENT`/`END` per step's text,
//! `TOOL_CALL_START`/`ARGS`/`END` per call, `TOOL_CALL_RESULT` for server tools, then
//! `RUN_FINISHED`, or `RUN_ERROR` on a failure.

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    Encoder, SentMessage, ToolResultIn, Trigger, TurnMeta, TurnRequest, Whole, sse_data, sse_json, whole_history_turn,
};
use crate::completions::{FinishReason, PromptMessage, ToolCall, Usage};
use crate::error::{Error, Result};

/// AG-UI's `RunAgentInput`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // `tools`, `context`, `state`, `forwardedProps`: read for the document only.
pub struct RunAgentInput {
    /// The conversation.
    #[serde(default)]
    thread_id: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    /// The whole history, oldest first.
    messages: Vec<AgUiMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    memory: Option<bool>,
    /// Not given to the model: the agent's own tools are offered.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    context: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    state: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    forwarded_props: Option<Value>,
}

/// An AG-UI message: `user`, `assistant` (with `toolCalls`) or `tool` (with `toolCallId`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgUiMessage {
    #[serde(default)]
    id: Option<String>,
    role: String,
    #[serde(default)]
    #[schema(value_type = String)]
    content: Value,
    #[serde(default)]
    tool_calls: Vec<AgUiToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct AgUiToolCall {
    id: String,
    function: AgUiFunction,
}

#[derive(Deserialize, ToSchema)]
pub struct AgUiFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// Text content: a string, or (multimodal user messages) the text of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

impl AgUiMessage {
    fn sent(&self) -> SentMessage {
        let text = text_of(&self.content);
        match self.role.as_str() {
            "tool" => {
                let result = ToolResultIn {
                    tool_call_id: self.tool_call_id.clone().unwrap_or_default(),
                    output: text.clone(),
                };
                SentMessage {
                    id: self.id.clone(),
                    role: "tool".into(),
                    prompt: vec![result.to_prompt()],
                    tool_results: vec![result],
                    text,
                }
            }
            "assistant" if !self.tool_calls.is_empty() => {
                let calls = self
                    .tool_calls
                    .iter()
                    .map(|c| ToolCall {
                        id: c.id.clone(),
                        name: c.function.name.clone(),
                        arguments: c.function.arguments.clone(),
                    })
                    .collect();
                SentMessage {
                    id: self.id.clone(),
                    role: "assistant".into(),
                    prompt: vec![PromptMessage {
                        role: "assistant",
                        content: text.clone(),
                        tool_calls: calls,
                        tool_call_id: None,
                    }],
                    tool_results: Vec::new(),
                    text,
                }
            }
            _ => SentMessage::text(self.id.clone(), self.role.clone(), text),
        }
    }
}

pub fn parse(body: Value) -> Result<TurnRequest> {
    let input: RunAgentInput =
        serde_json::from_value(body).map_err(|e| Error::InvalidRequest(format!("invalid ag-ui request: {e}")))?;
    if input
        .messages
        .iter()
        .any(|m| m.role == "tool" && m.tool_call_id.is_none())
    {
        return Err(Error::invalid_field(
            "messages",
            "a tool message needs its `toolCallId`",
        ));
    }
    let messages = input.messages.iter().map(AgUiMessage::sent).collect();
    let mut turn = whole_history_turn(
        input.thread_id,
        messages,
        input.stream,
        input.memory,
        Trigger::default(),
    )?;
    turn.run_id = input.run_id.filter(|id| !id.is_empty() && id.len() <= 200);
    Ok(turn)
}

pub struct AgUiEncoder {
    meta: TurnMeta,
    run_id: String,
    /// Model calls so far (each step's messages get their own ids).
    step: usize,
    /// The open text message's id.
    text: Option<String>,
    /// Tool calls started and not yet ended.
    open_calls: Vec<String>,
}

impl AgUiEncoder {
    pub fn new(meta: TurnMeta) -> Self {
        let run_id = meta
            .run_id
            .clone()
            .unwrap_or_else(|| format!("run-{}", meta.message_id));
        Self {
            meta,
            run_id,
            step: 1,
            text: None,
            open_calls: Vec::new(),
        }
    }

    /// The id of this step's assistant message: the reply's id for the first step.
    fn message_id(&self) -> String {
        if self.step == 1 {
            self.meta.message_id.clone()
        } else {
            format!("{}-{}", self.meta.message_id, self.step)
        }
    }

    fn close_text(&mut self) -> String {
        match self.text.take() {
            Some(id) => event(json!({"type": "TEXT_MESSAGE_END", "messageId": id})),
            None => String::new(),
        }
    }
}

fn event(value: Value) -> String {
    sse_data(&value.to_string())
}

/// `{"type": "TEXT_MESSAGE_CONTENT", "messageId", "delta"}`, once per chunk (keys in the order
/// `json!` gives).
#[derive(serde::Serialize)]
struct TextContent<'a> {
    delta: &'a str,
    #[serde(rename = "messageId")]
    message_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl Encoder for AgUiEncoder {
    fn start(&mut self) -> String {
        event(json!({"type": "RUN_STARTED", "threadId": self.meta.conversation_id, "runId": self.run_id}))
    }

    fn delta(&mut self, text: &str) -> String {
        if text.is_empty() {
            return String::new();
        }
        let start = match self.text {
            Some(_) => None,
            None => {
                let id = self.message_id();
                let start = event(json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}));
                self.text = Some(id);
                Some(start)
            }
        };
        let delta = sse_json(&TextContent {
            delta: text,
            message_id: self.text.as_deref().unwrap_or_default(),
            kind: "TEXT_MESSAGE_CONTENT",
        });
        match start {
            Some(start) => start + &delta,
            None => delta,
        }
    }

    fn tool_call_start(&mut self, id: &str, name: &str, _server: bool) -> String {
        let mut frames = self.close_text();
        self.open_calls.push(id.to_owned());
        frames.push_str(&event(json!({
            "type": "TOOL_CALL_START",
            "toolCallId": id,
            "toolCallName": name,
            "parentMessageId": self.message_id(),
        })));
        frames
    }

    fn tool_call_delta(&mut self, id: &str, delta: &str, _server: bool) -> String {
        if delta.is_empty() || !self.open_calls.iter().any(|c| c == id) {
            return String::new();
        }
        event(json!({"type": "TOOL_CALL_ARGS", "toolCallId": id, "delta": delta}))
    }

    fn tool_call(&mut self, call: &ToolCall, server: bool) -> String {
        let mut frames = String::new();
        if !self.open_calls.contains(&call.id) {
            // The model gave the call whole: start it and give its arguments first.
            frames.push_str(&self.tool_call_start(&call.id, &call.name, server));
            frames.push_str(&self.tool_call_delta(&call.id, &call.arguments, server));
        }
        self.open_calls.retain(|c| c != &call.id);
        frames.push_str(&event(json!({"type": "TOOL_CALL_END", "toolCallId": call.id})));
        frames
    }

    fn tool_result(&mut self, call: &ToolCall, output: &str, _error: bool) -> String {
        event(json!({
            "type": "TOOL_CALL_RESULT",
            "messageId": format!("result-{}", call.id),
            "toolCallId": call.id,
            "content": output,
            "role": "tool",
        }))
    }

    fn step_finish(&mut self) -> String {
        self.close_text()
    }

    fn step_start(&mut self) -> String {
        self.step += 1;
        String::new()
    }

    fn finish(&mut self, _reason: FinishReason, _usage: Usage) -> String {
        let mut frames = self.close_text();
        frames.push_str(&event(
            json!({"type": "RUN_FINISHED", "threadId": self.meta.conversation_id, "runId": self.run_id}),
        ));
        frames
    }

    fn error(&mut self, message: &str) -> Option<String> {
        Some(event(
            json!({"type": "RUN_ERROR", "message": message, "code": "upstream_error"}),
        ))
    }

    fn whole(&self, reply: &Whole) -> Value {
        let calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        let mut message = json!({"id": self.meta.message_id, "role": "assistant", "content": reply.text});
        if !calls.is_empty() {
            message["toolCalls"] = Value::Array(calls);
        }
        json!({
            "threadId": self.meta.conversation_id,
            "runId": self.run_id,
            "messages": [message],
            "finish_reason": reply.reason,
            "usage": {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TurnMeta {
        TurnMeta {
            conversation_id: "thread-1".into(),
            message_id: "m".into(),
            model: "echo".into(),
            created: 0,
            run_id: Some("run-7".into()),
            continuation: false,
        }
    }

    fn types(frames: &str) -> Vec<String> {
        frames
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| {
                serde_json::from_str::<Value>(d).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn a_run_with_text_and_a_server_tool() {
        let mut encoder = AgUiEncoder::new(meta());
        let call = ToolCall {
            id: "c1".into(),
            name: "search_memory".into(),
            arguments: "{}".into(),
        };
        let all = [
            encoder.start(),
            encoder.delta("Looking"),
            encoder.tool_call_start("c1", "search_memory", true),
            encoder.tool_call_delta("c1", "{}", true),
            encoder.tool_call(&call, true),
            encoder.tool_result(&call, "[]", false),
            encoder.step_finish(),
            encoder.step_start(),
            encoder.delta("Nothing."),
            encoder.finish(FinishReason::Stop, Usage::default()),
        ]
        .concat();
        assert_eq!(
            types(&all),
            [
                "RUN_STARTED",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "TOOL_CALL_START",
                "TOOL_CALL_ARGS",
                "TOOL_CALL_END",
                "TOOL_CALL_RESULT",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "RUN_FINISHED"
            ]
        );
        assert!(all.contains(r#""runId":"run-7""#));
        assert!(all.contains(r#""messageId":"m-2""#));
    }

    #[test]
    fn tool_messages_are_results_and_thread_is_the_conversation() {
        let body = json!({"threadId": "t1", "runId": "r1", "state": {}, "tools": [], "context": [], "forwardedProps": {},
        "messages": [
            {"id": "u1", "role": "user", "content": "weather?"},
            {"id": "a1", "role": "assistant", "toolCalls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"id": "t1", "role": "tool", "toolCallId": "call_1", "content": "sunny"},
        ]});
        let turn = parse(body).unwrap();
        assert_eq!(turn.conversation_id.as_deref(), Some("t1"));
        assert_eq!(turn.run_id.as_deref(), Some("r1"));
        assert_eq!(turn.tool_results.len(), 1);
        assert_eq!(turn.tool_results[0].output, "sunny");
        assert_eq!(turn.history.len(), 3);
    }
}
