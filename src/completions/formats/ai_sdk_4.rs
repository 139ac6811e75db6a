//! The Vercel AI SDK 4 data stream: one `code:json` line per part.
//!
//! Request: `{id, messages: [{role, content}]}` (the whole history; `id` is the conversation).
//! Response lines: `f:{messageId}`, `0:"text"`…, `e:{finish of the step}`, `d:{finish of the
//! message}`; a failure is `3:"message"`. Tool calls are `b:` (start), `c:` (argument delta), `9:`
//! (whole call), a server tool's result `a:`; the client sends a result back as the assistant
//! message's `toolInvocations` entry in state `result`. The format has no comments, so no
//! keep-alives.

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    Encoder, SentMessage, ToolResultIn, Trigger, TurnMeta, TurnRequest, Whole, arguments_json, framed_json,
    output_json, whole_history_turn,
};
use crate::completions::{FinishReason, PromptMessage, ToolCall, Usage};
use crate::error::{Error, Result};

/// The Vercel AI SDK 4 chat's request (`useChat` with the data stream).
#[derive(Deserialize, ToSchema)]
pub struct AiSdk4ChatRequest {
    /// The chat's id: the conversation.
    #[serde(default)]
    id: Option<String>,
    /// The whole history, oldest first.
    messages: Vec<AiSdk4Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    memory: Option<bool>,
    #[serde(default)]
    trigger: Option<String>,
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct AiSdk4Message {
    #[serde(default)]
    id: Option<String>,
    #[schema(example = "user")]
    role: String,
    /// Text (or an array of parts, of which the `text` ones count).
    #[serde(default)]
    #[schema(value_type = String)]
    content: Value,
    #[serde(default, rename = "toolInvocations")]
    tool_invocations: Vec<AiSdk4ToolInvocation>,
}

/// A tool call of an assistant message; `state: "result"` with its `result` once the client ran
/// it.
#[derive(Deserialize, ToSchema)]
pub struct AiSdk4ToolInvocation {
    #[serde(default)]
    state: String,
    #[serde(rename = "toolCallId")]
    tool_call_id: String,
    #[serde(rename = "toolName")]
    tool_name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    args: Value,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
}

impl AiSdk4Message {
    fn sent(&self) -> SentMessage {
        let mut sent = SentMessage::text(self.id.clone(), self.role.clone(), text_of(&self.content));
        let calls: Vec<&AiSdk4ToolInvocation> = self
            .tool_invocations
            .iter()
            .filter(|t| t.state == "call" || t.state == "result")
            .collect();
        if self.role != "assistant" || calls.is_empty() {
            return sent;
        }
        sent.tool_results = calls
            .iter()
            .filter(|t| t.state == "result")
            .map(|t| ToolResultIn::new(t.tool_call_id.clone(), t.result.as_ref().unwrap_or(&Value::Null)))
            .collect();
        sent.prompt = vec![PromptMessage {
            role: "assistant",
            content: sent.text.clone(),
            tool_calls: calls
                .iter()
                .map(|t| ToolCall {
                    id: t.tool_call_id.clone(),
                    name: t.tool_name.clone(),
                    arguments: if t.args.is_null() {
                        "{}".into()
                    } else {
                        t.args.to_string()
                    },
                })
                .collect(),
            tool_call_id: None,
        }];
        sent.prompt
            .extend(sent.tool_results.iter().map(ToolResultIn::to_prompt));
        sent
    }
}

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

pub fn parse(body: Value) -> Result<TurnRequest> {
    let body: AiSdk4ChatRequest =
        serde_json::from_value(body).map_err(|e| Error::InvalidRequest(format!("invalid ai-sdk-4 request: {e}")))?;
    let messages = body.messages.iter().map(AiSdk4Message::sent).collect();
    let trigger = Trigger::from_ai_sdk(body.trigger.as_deref(), body.message_id)?;
    whole_history_turn(body.id, messages, body.stream, body.memory, trigger)
}

pub struct AiSdk4Encoder {
    meta: TurnMeta,
}

impl AiSdk4Encoder {
    pub fn new(meta: TurnMeta) -> Self {
        Self { meta }
    }
}

fn line(code: char, value: &Value) -> String {
    format!("{code}:{value}\n")
}

/// The SDK's names for why a step ended.
fn reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool-calls",
    }
}

fn finish_json(reason: FinishReason, usage: Usage) -> Value {
    json!({"finishReason": reason_name(reason), "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens}})
}

impl Encoder for AiSdk4Encoder {
    fn stream_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("x-vercel-ai-data-stream", "v1")]
    }

    fn content_type(&self) -> &'static str {
        "text/plain; charset=utf-8"
    }

    fn keep_alive(&self) -> Option<&'static str> {
        None
    }

    fn start(&mut self) -> String {
        line('f', &json!({"messageId": self.meta.message_id}))
    }

    fn delta(&mut self, text: &str) -> String {
        framed_json("0:", &text, "\n")
    }

    fn tool_call_start(&mut self, id: &str, name: &str, _server: bool) -> String {
        line('b', &json!({"toolCallId": id, "toolName": name}))
    }

    fn tool_call_delta(&mut self, id: &str, delta: &str, _server: bool) -> String {
        line('c', &json!({"toolCallId": id, "argsTextDelta": delta}))
    }

    fn tool_call(&mut self, call: &ToolCall, _server: bool) -> String {
        line(
            '9',
            &json!({"toolCallId": call.id, "toolName": call.name, "args": arguments_json(call)}),
        )
    }

    fn tool_result(&mut self, call: &ToolCall, output: &str, _error: bool) -> String {
        line('a', &json!({"toolCallId": call.id, "result": output_json(output)}))
    }

    fn step_finish(&mut self) -> String {
        line(
            'e',
            &json!({"finishReason": "tool-calls", "usage": {"promptTokens": 0, "completionTokens": 0}, "isContinued": false}),
        )
    }

    fn step_start(&mut self) -> String {
        line('f', &json!({"messageId": self.meta.message_id}))
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage) -> String {
        let mut step = finish_json(reason, usage);
        step["isContinued"] = json!(false);
        let mut frames = line('e', &step);
        frames.push_str(&line('d', &finish_json(reason, usage)));
        frames
    }

    fn error(&mut self, message: &str) -> Option<String> {
        Some(line('3', &Value::String(message.to_owned())))
    }

    fn whole(&self, reply: &Whole) -> Value {
        let invocations: Vec<Value> = reply
            .tool_calls
            .iter()
            .map(|c| json!({"state": "call", "toolCallId": c.id, "toolName": c.name, "args": arguments_json(c)}))
            .collect();
        json!({
            "id": self.meta.message_id,
            "role": "assistant",
            "content": reply.text,
            "toolInvocations": invocations,
            "conversation_id": self.meta.conversation_id,
            "finishReason": reason_name(reply.reason),
            "usage": {"promptTokens": reply.usage.prompt_tokens, "completionTokens": reply.usage.completion_tokens},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_codes_and_json() {
        let meta = TurnMeta::for_tests();
        let mut encoder = AiSdk4Encoder::new(meta);
        assert_eq!(encoder.start(), "f:{\"messageId\":\"m\"}\n");
        assert_eq!(encoder.delta("a \"quote\"\n"), "0:\"a \\\"quote\\\"\\n\"\n");
        let end = encoder.finish(
            FinishReason::Stop,
            Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
            },
        );
        let lines: Vec<&str> = end.lines().collect();
        assert!(lines[0].starts_with("e:") && lines[1].starts_with("d:"));
        assert_eq!(encoder.error("boom").unwrap(), "3:\"boom\"\n");
    }
}
