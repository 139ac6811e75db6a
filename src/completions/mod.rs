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
pub mod relay;
mod reply;
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

    /// The message in OpenAI's chat format.
    pub fn to_openai(&self) -> serde_json::Value {
        let mut message = serde_json::json!({"role": self.role, "content": self.content});
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|call| {
                    serde_json::json!({
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    })
                })
                .collect();
            if self.content.is_empty() {
                message["content"] = serde_json::Value::Null;
            }
        }
        if let Some(id) = &self.tool_call_id {
            message["tool_call_id"] = id.as_str().into();
        }
        message
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
