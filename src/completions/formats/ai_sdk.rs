//! The Vercel AI SDK 5+ UI message stream, what `useChat` / `DefaultChatTransport` speak.
//!
//! Request: `{id, messages: [{id, role, parts: [{type: "text", text}]}], trigger}`, the whole
//! history every time; `id` is the conversation. User messages are stored under their client id,
//! so the ones already stored are skipped. The stream is `start`, `start-step`, `text-start`,
//! `text-delta`…, `text-end`, `finish-step`, `finish`, `[DONE]`; the SDK validates every chunk, so
//! nothing else is sent (the conversation id rides in `start`'s `messageMetadata`). Tool calls are
//! `tool-input-start`, `tool-input-delta`, `tool-input-available`, a server tool's result
//! `tool-output-available`; each model call is a `start-step` … `finish-step`. The client sends a
//! client tool's result back as the assistant message's tool part in state `output-available`
//! (what `addToolResult` makes).

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    Encoder, SentMessage, ToolResultIn, Trigger, TurnMeta, TurnRequest, Whole, arguments_json, known_role, output_json,
    sse_data, sse_json, whole_history_turn,
};
use crate::completions::{FinishReason, PromptMessage, ToolCall, Usage};
use crate::error::{Error, Result};

/// The Vercel AI SDK 5 chat's request (`DefaultChatTransport`).
#[derive(Deserialize, ToSchema)]
pub struct AiSdkChatRequest {
    /// The chat's id: the conversation.
    #[serde(default)]
    id: Option<String>,
    /// The whole history, oldest first.
    messages: Vec<UiMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    memory: Option<bool>,
    /// `submit-message` (default) or `regenerate-message`.
    #[serde(default)]
    #[schema(example = "submit-message")]
    trigger: Option<String>,
    /// The message to regenerate, or the user message that was edited.
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
}

/// A UI message: its `parts` are `text` parts, and tool parts (`tool-<name>` or `dynamic-tool`,
/// with `toolCallId`, `state`, `input` and, once run, `output`).
#[derive(Deserialize, ToSchema)]
#[schema(as = AiSdkUiMessage)]
pub struct UiMessage {
    #[serde(default)]
    id: Option<String>,
    #[schema(example = "user")]
    role: String,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    parts: Vec<Value>,
}

impl UiMessage {
    fn text(&self) -> String {
        self.parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")
    }

    /// The message as the client's `SentMessage`: an assistant's parts become its steps (text and
    /// tool calls, each followed by the results it has), cut at every `step-start`.
    fn sent(&self) -> SentMessage {
        let text = self.text();
        if self.role != "assistant" {
            return SentMessage::text(self.id.clone(), self.role.clone(), text);
        }
        let mut prompt = Vec::new();
        let mut tool_results = Vec::new();
        let mut step = Step::default();
        for part in &self.parts {
            let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
            if kind == "step-start" {
                step.flush(&mut prompt);
            } else if kind == "text" {
                step.text
                    .push_str(part.get("text").and_then(Value::as_str).unwrap_or_default());
            } else if let Some(tool) = ToolPart::read(kind, part) {
                step.calls.push(tool.call);
                if let Some(result) = tool.result {
                    step.results.push(result.clone());
                    tool_results.push(result);
                }
            }
        }
        step.flush(&mut prompt);
        SentMessage {
            id: self.id.clone(),
            role: self.role.clone(),
            text,
            prompt,
            tool_results,
        }
    }
}

/// One step of an assistant message being read.
#[derive(Default)]
struct Step {
    text: String,
    calls: Vec<ToolCall>,
    results: Vec<ToolResultIn>,
}

impl Step {
    fn flush(&mut self, prompt: &mut Vec<PromptMessage>) {
        if self.text.is_empty() && self.calls.is_empty() {
            return;
        }
        prompt.push(PromptMessage {
            role: known_role("assistant").unwrap_or("assistant"),
            content: std::mem::take(&mut self.text),
            tool_calls: std::mem::take(&mut self.calls),
            tool_call_id: None,
        });
        prompt.extend(self.results.drain(..).map(|r| r.to_prompt()));
    }
}

/// A tool part (`tool-<name>`, or `dynamic-tool` with `toolName`) that has its input.
struct ToolPart {
    call: ToolCall,
    /// Its result, once the client ran it (`output-available`, or `output-error`).
    result: Option<ToolResultIn>,
}

impl ToolPart {
    fn read(kind: &str, part: &Value) -> Option<Self> {
        let name = match kind.strip_prefix("tool-") {
            Some(name) => name.to_owned(),
            None if kind == "dynamic-tool" => part.get("toolName")?.as_str()?.to_owned(),
            None => return None,
        };
        let id = part.get("toolCallId")?.as_str()?.to_owned();
        let state = part.get("state").and_then(Value::as_str).unwrap_or_default();
        if !matches!(state, "input-available" | "output-available" | "output-error") {
            return None;
        }
        let input = part.get("input").cloned().unwrap_or_else(|| json!({}));
        let result = match state {
            "output-available" => Some(ToolResultIn::new(
                id.clone(),
                part.get("output").unwrap_or(&Value::Null),
            )),
            "output-error" => Some(ToolResultIn {
                tool_call_id: id.clone(),
                output: format!(
                    "error: {}",
                    part.get("errorText")
                        .and_then(Value::as_str)
                        .unwrap_or("the tool failed")
                ),
            }),
            _ => None,
        };
        Some(Self {
            call: ToolCall {
                id,
                name,
                arguments: input.to_string(),
            },
            result,
        })
    }
}

pub fn parse(body: Value) -> Result<TurnRequest> {
    let body: AiSdkChatRequest =
        serde_json::from_value(body).map_err(|e| Error::InvalidRequest(format!("invalid ai-sdk request: {e}")))?;
    let messages = body.messages.iter().map(UiMessage::sent).collect();
    let trigger = Trigger::from_ai_sdk(body.trigger.as_deref(), body.message_id)?;
    whole_history_turn(body.id, messages, body.stream, body.memory, trigger)
}

pub struct AiSdkEncoder {
    meta: TurnMeta,
    /// The open text part's id, if one is open.
    text: Option<String>,
    /// Text parts opened so far (each gets its own id).
    texts: usize,
}

impl AiSdkEncoder {
    pub fn new(meta: TurnMeta) -> Self {
        Self {
            meta,
            text: None,
            texts: 0,
        }
    }

    fn close_text(&mut self) -> String {
        match self.text.take() {
            Some(id) => event(json!({"type": "text-end", "id": id})),
            None => String::new(),
        }
    }
}

fn event(value: Value) -> String {
    sse_data(&value.to_string())
}

/// `{"type": "text-delta", "id", "delta"}`, once per chunk (keys in the order `json!` gives).
#[derive(serde::Serialize)]
struct TextDelta<'a> {
    delta: &'a str,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// `providerExecuted`: the SDK's mark for a tool run on the server, so `useChat` does not call
/// `onToolCall` for it.
fn mark_server(chunk: &mut Value, server: bool) {
    if server {
        chunk["providerExecuted"] = true.into();
    }
}

impl Encoder for AiSdkEncoder {
    fn stream_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("x-vercel-ai-ui-message-stream", "v1")]
    }

    fn start(&mut self) -> String {
        let mut start = json!({
            "type": "start",
            "messageId": self.meta.message_id,
            "messageMetadata": {"conversationId": self.meta.conversation_id},
        });
        if self.meta.continuation {
            // The reply goes on in the message whose tool results the client sent: `useChat`
            // keeps adding to it as long as no new id is named.
            start.as_object_mut().map(|o| o.remove("messageId"));
        }
        let mut frames = event(start);
        frames.push_str(&event(json!({"type": "start-step"})));
        frames
    }

    fn delta(&mut self, text: &str) -> String {
        let start = match self.text {
            Some(_) => None,
            None => {
                let id = format!("text-{}", self.texts);
                self.texts += 1;
                let start = event(json!({"type": "text-start", "id": id}));
                self.text = Some(id);
                Some(start)
            }
        };
        let delta = sse_json(&TextDelta {
            delta: text,
            id: self.text.as_deref().unwrap_or_default(),
            kind: "text-delta",
        });
        match start {
            Some(start) => start + &delta,
            None => delta,
        }
    }

    fn tool_call_start(&mut self, id: &str, name: &str, server: bool) -> String {
        let mut frames = self.close_text();
        let mut start = json!({"type": "tool-input-start", "toolCallId": id, "toolName": name});
        mark_server(&mut start, server);
        frames.push_str(&event(start));
        frames
    }

    fn tool_call_delta(&mut self, id: &str, delta: &str, _server: bool) -> String {
        event(json!({"type": "tool-input-delta", "toolCallId": id, "inputTextDelta": delta}))
    }

    fn tool_call(&mut self, call: &ToolCall, server: bool) -> String {
        let mut frames = self.close_text();
        let mut available = json!({
            "type": "tool-input-available",
            "toolCallId": call.id,
            "toolName": call.name,
            "input": arguments_json(call),
        });
        mark_server(&mut available, server);
        frames.push_str(&event(available));
        frames
    }

    fn tool_result(&mut self, call: &ToolCall, output: &str, error: bool) -> String {
        if error {
            return event(
                json!({"type": "tool-output-error", "toolCallId": call.id, "errorText": output, "providerExecuted": true}),
            );
        }
        event(
            json!({"type": "tool-output-available", "toolCallId": call.id, "output": output_json(output), "providerExecuted": true}),
        )
    }

    fn step_finish(&mut self) -> String {
        let mut frames = self.close_text();
        frames.push_str(&event(json!({"type": "finish-step"})));
        frames
    }

    fn step_start(&mut self) -> String {
        event(json!({"type": "start-step"}))
    }

    fn finish(&mut self, _reason: FinishReason, _usage: Usage) -> String {
        let mut frames = self.close_text();
        frames.push_str(&event(json!({"type": "finish-step"})));
        frames.push_str(&event(json!({"type": "finish"})));
        frames.push_str(&sse_data("[DONE]"));
        frames
    }

    fn error(&mut self, message: &str) -> Option<String> {
        let mut frames = event(json!({"type": "error", "errorText": message}));
        frames.push_str(&sse_data("[DONE]"));
        Some(frames)
    }

    fn whole(&self, reply: &Whole) -> Value {
        let mut parts = vec![json!({"type": "text", "text": reply.text})];
        parts.extend(reply.tool_calls.iter().map(|call| {
            json!({"type": format!("tool-{}", call.name), "toolCallId": call.id, "state": "input-available", "input": arguments_json(call)})
        }));
        json!({
            "id": self.meta.message_id,
            "role": "assistant",
            "parts": parts,
            "metadata": {"conversationId": self.meta.conversation_id},
            "conversation_id": self.meta.conversation_id,
            "finish_reason": reply.reason,
            "usage": {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        json!({"id": "chat-1", "trigger": "submit-message", "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "first"}]},
            {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}, {"type": "text", "text": "reply"}]},
            {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "sec"}, {"type": "text", "text": "ond"}]},
        ]})
    }

    #[test]
    fn every_user_message_is_a_candidate_under_its_id() {
        let turn = parse(body()).unwrap();
        assert_eq!(turn.conversation_id.as_deref(), Some("chat-1"));
        let ids: Vec<_> = turn
            .user_messages
            .iter()
            .map(|m| (m.client_id.clone().unwrap(), m.content.clone()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("u1".to_owned(), "first".to_owned()),
                ("u2".to_owned(), "second".to_owned())
            ]
        );
        assert_eq!(turn.history.len(), 3);
        assert_eq!(turn.history[1].content, "reply");
    }

    #[test]
    fn the_stream_opens_and_closes_its_text_part() {
        let meta = TurnMeta::for_tests();
        let mut encoder = AiSdkEncoder::new(meta);
        let all = format!(
            "{}{}{}{}",
            encoder.start(),
            encoder.delta("h"),
            encoder.delta("i"),
            encoder.finish(FinishReason::Stop, Usage::default())
        );
        let types: Vec<String> = all
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| {
                serde_json::from_str::<Value>(d)
                    .map(|v| v["type"].as_str().unwrap().to_owned())
                    .unwrap_or_else(|_| d.to_owned())
            })
            .collect();
        assert_eq!(
            types,
            [
                "start",
                "start-step",
                "text-start",
                "text-delta",
                "text-delta",
                "text-end",
                "finish-step",
                "finish",
                "[DONE]"
            ]
        );
    }

    #[test]
    fn tool_parts_are_steps_and_results() {
        let body = json!({"id": "c", "trigger": "submit-message", "messageId": "a1", "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "weather and memory?"}]},
            {"id": "a1", "role": "assistant", "parts": [
                {"type": "step-start"},
                {"type": "tool-search_memory", "toolCallId": "s1", "state": "output-available", "input": {"query": "city"}, "output": "{\"memories\":[]}"},
                {"type": "step-start"},
                {"type": "text", "text": "Checking."},
                {"type": "tool-get_weather", "toolCallId": "w1", "state": "output-available", "input": {"city": "Paris"}, "output": {"sky": "clear"}},
            ]},
        ]});
        let turn = parse(body).unwrap();
        let roles: Vec<(&str, usize)> = turn.history.iter().map(|m| (m.role, m.tool_calls.len())).collect();
        assert_eq!(
            roles,
            [
                ("user", 0),
                ("assistant", 1),
                ("tool", 0),
                ("assistant", 1),
                ("tool", 0)
            ]
        );
        assert_eq!(turn.history[3].content, "Checking.");
        assert_eq!(turn.history[3].tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        let results: Vec<(&str, &str)> = turn
            .tool_results
            .iter()
            .map(|r| (r.tool_call_id.as_str(), r.output.as_str()))
            .collect();
        assert_eq!(results, [("s1", "{\"memories\":[]}"), ("w1", r#"{"sky":"clear"}"#)]);
        // `messageId` names the assistant message whose results these are: not an edit.
        assert_eq!(turn.sent_history.unwrap().edited, None);
    }
}
