//! Completions: one internal event stream from the model, one encoder per wire format, and the
//! turn service between them.
//!
//! A turn goes: parse the client's body (the format's `parse`, in the HTTP handler), then
//! `turn::start`: store the new user message, build the model's context (`context`: instructions,
//! memory, history), run the model (`models`, through `egress`'s address rules); then the handler
//! encodes the turn's events for the client (`formats`).

pub mod context;
pub mod egress;
pub mod formats;
pub mod lanes;
pub mod live;
pub mod mcp;
pub mod models;
pub mod probe;
pub mod provider;
pub mod relay;
mod reply;
pub mod sse;
pub mod streams;
pub mod tools;
pub mod turn;

use serde::Serialize;

/// What a model produces, whatever the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// More text of the reply.
    Delta(String),
    /// The model began a tool call (its arguments follow as `ToolCallDelta`s).
    ToolCallStart { id: String, name: String },
    /// More of a tool call's arguments (JSON text, in fragments).
    ToolCallDelta { id: String, delta: String },
    /// A whole tool call, once its arguments are complete (before `Finish`).
    ToolCall(ToolCall),
    /// The model's step is complete; `ToolCalls` when it asked for tools.
    Finish { reason: FinishReason, usage: Usage },
    /// The model failed; what was produced so far is kept as incomplete.
    Error(String),
}

/// What a turn produces, for the encoders: the model's events of every step, with the tool calls
/// marked by who runs them, and the results of the tools the server ran. (Serialized only between
/// instances, `relay`.)
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEvent {
    Delta(String),
    /// `server`: a tool the server runs (memory, MCP); else the client's.
    ToolCallStart {
        id: String,
        name: String,
        server: bool,
    },
    ToolCallDelta {
        id: String,
        delta: String,
        server: bool,
    },
    /// The call is boxed, as in `ToolResult`: every event takes the size of the largest, and the
    /// channel to the reader holds its events in blocks of 32 (104 bytes an event unboxed, 56 now).
    ToolCall {
        call: Box<ToolCall>,
        server: bool,
    },
    /// The result of a server tool, as the model will see it.
    ToolResult {
        call: Box<ToolCall>,
        output: String,
        error: bool,
    },
    /// A model call ended with tool calls the server ran; another begins.
    StepFinish,
    StepStart,
    /// The turn is complete (`ToolCalls`: the client has tools to run, or `max_steps` was reached).
    Finish {
        reason: FinishReason,
        usage: Usage,
    },
    Error(String),
}

impl TurnEvent {
    /// Whether the reply ends with this event.
    pub fn ends_reply(&self) -> bool {
        matches!(self, Self::Finish { .. } | Self::Error(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
}

/// One tool call of the model: `arguments` is the JSON text it produced (as OpenAI sends it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    #[schema(example = "{\"city\":\"Paris\"}")]
    pub arguments: String,
}

/// Token counts, as the provider reports them (the echo model counts words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// One message of the model's context: text, an assistant's tool calls, or a tool's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: &'static str,
    pub content: String,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl PromptMessage {
    pub fn text(role: &'static str, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            ..Self::default()
        }
    }

    /// The message in OpenAI's chat format, written straight to the request body (no JSON
    /// tree: a turn's history is the bulk of the body).
    pub fn openai(&self) -> OpenAiMessage<'_> {
        OpenAiMessage(self)
    }
}

/// A `PromptMessage` as OpenAI's chat format writes it: `role`, `content` (null for an
/// assistant's tool calls without text), `tool_calls`, `tool_call_id`.
pub struct OpenAiMessage<'a>(&'a PromptMessage);

impl Serialize for OpenAiMessage<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Calls<'a>(&'a [ToolCall]);
        struct Call<'a>(&'a ToolCall);
        struct Function<'a>(&'a ToolCall);
        impl Serialize for Calls<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(Call))
            }
        }
        impl Serialize for Call<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("id", &self.0.id)?;
                map.serialize_entry("type", "function")?;
                map.serialize_entry("function", &Function(self.0))?;
                map.end()
            }
        }
        impl Serialize for Function<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("name", &self.0.name)?;
                map.serialize_entry("arguments", &self.0.arguments)?;
                map.end()
            }
        }
        let message = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("role", message.role)?;
        if message.tool_calls.is_empty() || !message.content.is_empty() {
            map.serialize_entry("content", &message.content)?;
        } else {
            map.serialize_entry("content", &())?;
        }
        if !message.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &Calls(&message.tool_calls))?;
        }
        if let Some(id) = &message.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod openai_tests {
    use super::{PromptMessage, ToolCall};
    use serde_json::json;

    #[test]
    fn prompt_messages_are_written_in_openai_chat_format() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        };
        let cases = [
            (
                PromptMessage::text("user", "hi \"there\"\n"),
                json!({"role": "user", "content": "hi \"there\"\n"}),
            ),
            (
                PromptMessage {
                    tool_calls: vec![call.clone()],
                    ..PromptMessage::text("assistant", "")
                },
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]}),
            ),
            (
                PromptMessage {
                    tool_calls: vec![call],
                    ..PromptMessage::text("assistant", "Let me look.")
                },
                json!({"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]}),
            ),
            (
                PromptMessage {
                    tool_call_id: Some("call_1".into()),
                    ..PromptMessage::text("tool", "18 C")
                },
                json!({"role": "tool", "content": "18 C", "tool_call_id": "call_1"}),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(serde_json::to_value(message.openai()).unwrap(), expected);
        }
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn a_turn_event_stays_small() {
        // The channel to a stream's reader holds its events in blocks of 32: every byte an
        // event takes is 32 bytes of each stream's memory.
        let size = std::mem::size_of::<super::TurnEvent>();
        assert!(size <= 56, "a turn event takes {size} bytes");
    }
}
