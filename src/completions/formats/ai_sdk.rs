//! The Vercel AI SDK 5+ UI message stream, what `useChat` / `DefaultChatTransport` speak.
//!
//! Request: `{id, messages: [{id, role, parts: [{type: "text", text}]}], trigger}`, the whole
//! history every time; `id` is the conversation. User messages are stored under their client id,
//! so the ones already stored are skipped. The stream is `start`, `start-step`, `text-start`,
//! `text-delta`…, `text-end`, `finish-step`, `finish`, `[DONE]`; the SDK validates every chunk, so
//! nothing else is sent (the conversation id rides in `start`'s `messageMetadata`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Encoder, SentMessage, Trigger, TurnMeta, TurnRequest, sse_data, whole_history_turn};
use crate::completions::{FinishReason, Usage};
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    id: Option<String>,
    messages: Vec<UiMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    memory: Option<bool>,
    #[serde(default)]
    trigger: Option<String>,
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
}

#[derive(Deserialize)]
struct UiMessage {
    #[serde(default)]
    id: Option<String>,
    role: String,
    #[serde(default)]
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
}

pub fn parse(body: Value) -> Result<TurnRequest> {
    let body: Body =
        serde_json::from_value(body).map_err(|e| Error::InvalidRequest(format!("invalid ai-sdk request: {e}")))?;
    let messages = body
        .messages
        .iter()
        .map(|m| SentMessage {
            id: m.id.clone(),
            role: m.role.clone(),
            text: m.text(),
        })
        .collect();
    let trigger = Trigger::from_ai_sdk(body.trigger.as_deref(), body.message_id)?;
    whole_history_turn(body.id, messages, body.stream, body.memory, trigger)
}

pub struct AiSdkEncoder {
    meta: TurnMeta,
}

impl AiSdkEncoder {
    pub fn new(meta: TurnMeta) -> Self {
        Self { meta }
    }
}

const TEXT_ID: &str = "text-0";

fn event(value: Value) -> String {
    sse_data(&value.to_string())
}

impl Encoder for AiSdkEncoder {
    fn stream_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("x-vercel-ai-ui-message-stream", "v1")]
    }

    fn start(&mut self) -> String {
        let mut frames = event(json!({
            "type": "start",
            "messageId": self.meta.message_id,
            "messageMetadata": {"conversationId": self.meta.conversation_id},
        }));
        frames.push_str(&event(json!({"type": "start-step"})));
        frames.push_str(&event(json!({"type": "text-start", "id": TEXT_ID})));
        frames
    }

    fn delta(&mut self, text: &str) -> String {
        event(json!({"type": "text-delta", "id": TEXT_ID, "delta": text}))
    }

    fn finish(&mut self, _reason: FinishReason, _usage: Usage) -> String {
        let mut frames = event(json!({"type": "text-end", "id": TEXT_ID}));
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

    fn whole(&self, text: &str, reason: FinishReason, usage: Usage) -> Value {
        json!({
            "id": self.meta.message_id,
            "role": "assistant",
            "parts": [{"type": "text", "text": text}],
            "metadata": {"conversationId": self.meta.conversation_id},
            "conversation_id": self.meta.conversation_id,
            "finish_reason": reason,
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
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
        let meta = TurnMeta {
            conversation_id: "c".into(),
            message_id: "m".into(),
            model: "echo".into(),
            created: 0,
        };
        let mut encoder = AiSdkEncoder::new(meta);
        let all = format!(
            "{}{}{}",
            encoder.start(),
            encoder.delta("hi"),
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
                "text-end",
                "finish-step",
                "finish",
                "[DONE]"
            ]
        );
    }
}
