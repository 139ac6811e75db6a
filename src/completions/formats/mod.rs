//! Wire formats: how a client's request body reads, and how the reply is written back.
//!
//! Each format is one file with a `parse` function and an `Encoder`. The turn driver
//! (`http::completions`) knows only `TurnRequest` and `Encoder`, so adding a format touches
//! neither the driver nor the other formats.

pub mod ag_ui;
pub mod ai_sdk;
pub mod ai_sdk_4;
pub mod deltakit;
pub mod openai;

use serde::Deserialize;
use utoipa::ToSchema;

use super::{FinishReason, PromptMessage, ToolCall, Usage};
use crate::error::{Error, Result};
use crate::store::user_data::{SentEntry, SentHistory};

/// The formats the completions endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, ToSchema)]
pub enum Format {
    /// Vercel AI SDK 5+ UI message stream (`useChat`).
    #[serde(rename = "ai-sdk")]
    AiSdk,
    /// Vercel AI SDK 4 data stream.
    #[serde(rename = "ai-sdk-4")]
    AiSdk4,
    /// OpenAI chat completions (`chat.completion` / `chat.completion.chunk`).
    #[serde(rename = "openai")]
    OpenAi,
    /// DeltaKit's `text_delta` events; the client sends only the new message.
    #[serde(rename = "deltakit")]
    DeltaKit,
    /// The AG-UI protocol: `RunAgentInput` in, its events out.
    #[serde(rename = "ag-ui")]
    AgUi,
}

impl Format {
    /// Reads `?format=` (or Algolia's `compatibilityMode=`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "ai-sdk" | "ai-sdk-5" => Ok(Self::AiSdk),
            "ai-sdk-4" => Ok(Self::AiSdk4),
            "openai" => Ok(Self::OpenAi),
            "deltakit" => Ok(Self::DeltaKit),
            "ag-ui" => Ok(Self::AgUi),
            other => Err(Error::InvalidRequest(format!(
                "unsupported format `{other}` (supported: ai-sdk, ai-sdk-5, ai-sdk-4, openai, deltakit, ag-ui)"
            ))),
        }
    }

    /// Infers the format from the body when the client did not name one: `threadId` with `runId`
    /// is AG-UI; `message` as a string (or `tool_results` without `messages`) is DeltaKit; messages with `parts`, or a `trigger`, are the AI SDK 5; anything else OpenAI.
    pub fn infer(body: &serde_json::Value) -> Self {
        if body.get("threadId").is_some() && body.get("runId").is_some() {
            return Self::AgUi;
        }
        if body.get("message").is_some_and(serde_json::Value::is_string)
            || (body.get("tool_results").is_some() && body.get("messages").is_none())
        {
            return Self::DeltaKit;
        }
        let has_parts = body
            .get("messages")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|messages| messages.iter().any(|m| m.get("parts").is_some()));
        if has_parts || body.get("trigger").is_some() {
            return Self::AiSdk;
        }
        Self::OpenAi
    }

    /// Whether a turn streams when neither the query nor the body says (as each client expects).
    pub fn streams_by_default(self) -> bool {
        !matches!(self, Self::OpenAi)
    }

    pub fn parse(self, body: serde_json::Value) -> Result<TurnRequest> {
        match self {
            Self::AiSdk => ai_sdk::parse(body),
            Self::AiSdk4 => ai_sdk_4::parse(body),
            Self::OpenAi => openai::parse(body),
            Self::DeltaKit => deltakit::parse(body),
            Self::AgUi => ag_ui::parse(body),
        }
    }

    pub fn encoder(self, meta: TurnMeta) -> Box<dyn Encoder> {
        match self {
            Self::AiSdk => Box::new(ai_sdk::AiSdkEncoder::new(meta)),
            Self::AiSdk4 => Box::new(ai_sdk_4::AiSdk4Encoder::new(meta)),
            Self::OpenAi => Box::new(openai::OpenAiEncoder::new(meta)),
            Self::DeltaKit => Box::new(deltakit::DeltaKitEncoder::new(meta)),
            Self::AgUi => Box::new(ag_ui::AgUiEncoder::new(meta)),
        }
    }
}

/// The completions endpoint's body: the request of one of the formats.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // For the document: each format parses its own.
pub enum CompletionRequest {
    OpenAi(openai::OpenAiChatRequest),
    AiSdk(ai_sdk::AiSdkChatRequest),
    AiSdk4(ai_sdk_4::AiSdk4ChatRequest),
    DeltaKit(deltakit::DeltaKitRequest),
    AgUi(ag_ui::RunAgentInput),
}

/// A message of the history a client sent, as the model reads it (the context when nothing is
/// stored: stateless calls, privacy mode).
pub type ClientMessage = PromptMessage;

/// A client tool's result, as a client sends it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResultIn {
    pub tool_call_id: String,
    pub output: String,
}

impl ToolResultIn {
    /// A result whose output may be any JSON: text stays text, anything else is its JSON.
    pub fn new(tool_call_id: String, output: &serde_json::Value) -> Self {
        let output = match output {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        Self { tool_call_id, output }
    }

    /// The result as a model message.
    pub fn to_prompt(&self) -> PromptMessage {
        PromptMessage {
            role: "tool",
            content: self.output.clone(),
            tool_call_id: Some(self.tool_call_id.clone()),
            ..PromptMessage::default()
        }
    }
}

/// One message of a client that sends the whole history each time (the AI SDKs).
pub struct SentMessage {
    /// The client's id for the message, if it gives one.
    pub id: Option<String>,
    pub role: String,
    pub text: String,
    /// The message as the model reads it: a user's text, or an assistant's steps (text and tool
    /// calls, each followed by the results it has).
    pub prompt: Vec<PromptMessage>,
    /// The client tools' results this message carries.
    pub tool_results: Vec<ToolResultIn>,
}

impl SentMessage {
    /// A message of text alone.
    pub fn text(id: Option<String>, role: String, text: String) -> Self {
        let prompt = known_role(&role)
            .map(|role| vec![PromptMessage::text(role, text.clone())])
            .unwrap_or_default();
        Self {
            id,
            role,
            text,
            prompt,
            tool_results: Vec::new(),
        }
    }
}

/// Longest client message id kept (AI SDK ids are short).
const MAX_CLIENT_ID: usize = 200;

/// What a whole-history client's `trigger` (and `messageId`) ask for.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    /// AI SDK `regenerate-message`: replace a reply.
    pub regenerate: bool,
    /// AI SDK `messageId`: the reply to regenerate, or the user message that was edited.
    pub message_id: Option<String>,
}

impl Trigger {
    /// Reads the AI SDK's `trigger` (its v5 names and their early spellings) and `messageId`.
    pub fn from_ai_sdk(trigger: Option<&str>, message_id: Option<String>) -> Result<Self> {
        let regenerate = match trigger {
            None | Some("submit-message" | "submit-user-message" | "submit-tool-result") => false,
            Some("regenerate-message" | "regenerate-assistant-message") => true,
            Some(other) => {
                return Err(Error::InvalidRequest(format!(
                    "unsupported trigger `{other}` (supported: submit-message, regenerate-message)"
                )));
            }
        };
        Ok(Self {
            regenerate,
            message_id: message_id.filter(|id| !id.is_empty() && id.len() <= MAX_CLIENT_ID),
        })
    }
}

/// The turn of a whole-history client: with ids on every user message, the history is compared
/// with what is stored (new messages appended, a regenerated reply or an edited message and all
/// after it replaced); without, only the last user message is new.
pub fn whole_history_turn(
    conversation_id: Option<String>,
    mut messages: Vec<SentMessage>,
    stream: Option<bool>,
    memory: Option<bool>,
    trigger: Trigger,
) -> Result<TurnRequest> {
    if trigger.regenerate
        && let Some(target) = &trigger.message_id
        && let Some(at) = messages.iter().position(|m| m.id.as_ref() == Some(target))
    {
        // A client that still sends the reply to regenerate: the history ends before it (after
        // it, when it names a user message: the reply to that one is made again).
        let keep = if messages[at].role == "user" { at + 1 } else { at };
        messages.truncate(keep);
    }
    let history: Vec<ClientMessage> = messages.iter().flat_map(|m| m.prompt.iter().cloned()).collect();
    // The results of client tools end the history (tool messages, or parts of the assistant
    // message that called them): the model goes on.
    let mut tool_results: Vec<ToolResultIn> = messages
        .iter()
        .rev()
        .take_while(|m| m.role == "tool")
        .flat_map(|m| m.tool_results.iter().rev().cloned())
        .collect();
    tool_results.reverse();
    if tool_results.is_empty()
        && let Some(last) = messages.last().filter(|m| m.role == "assistant")
    {
        tool_results = last.tool_results.clone();
    }
    if trigger.regenerate {
        tool_results.clear();
    }
    let users: Vec<&SentMessage> = messages.iter().filter(|m| m.role == "user").collect();
    let Some(last) = users.last() else {
        return Err(Error::invalid_field("messages", "must hold a user message"));
    };
    let usable_id = |m: &SentMessage| {
        m.id.as_deref()
            .is_some_and(|id| !id.is_empty() && id.len() <= MAX_CLIENT_ID)
    };
    let all_have_ids = users.iter().all(|m| usable_id(m));
    let user_messages = if all_have_ids {
        users
            .iter()
            .map(|m| IncomingMessage {
                content: m.text.clone(),
                client_id: m.id.clone(),
            })
            .collect()
    } else {
        vec![IncomingMessage {
            content: last.text.clone(),
            client_id: None,
        }]
    };
    let sent_history = all_have_ids.then(|| SentHistory {
        messages: messages
            .iter()
            .filter_map(|m| {
                Some(SentEntry {
                    client_id: m.id.clone().filter(|_| usable_id(m)),
                    role: known_role(&m.role)?,
                    content: m.text.clone(),
                })
            })
            .collect(),
        regenerate: trigger.regenerate,
        // An edit names a user message (the AI SDK also sends the id of the assistant message
        // whose tool results it submits).
        edited: trigger
            .message_id
            .filter(|id| !trigger.regenerate && users.iter().any(|m| m.id.as_ref() == Some(id))),
    });
    Ok(TurnRequest {
        conversation_id,
        user_messages,
        stream,
        memory,
        history,
        sent_history,
        tool_results,
        run_id: None,
    })
}

/// Maps a client's role name to ours; other roles (system, tool) are dropped: the agent's
/// instructions are the system message.
pub fn known_role(role: &str) -> Option<&'static str> {
    match role {
        "user" => Some("user"),
        "assistant" => Some("assistant"),
        _ => None,
    }
}

/// What a client asked for, whatever its format.
#[derive(Debug, Clone, Default)]
pub struct TurnRequest {
    /// The conversation the client names, if any.
    pub conversation_id: Option<String>,
    /// The user messages to store before calling the model, oldest first (usually one).
    pub user_messages: Vec<IncomingMessage>,
    pub stream: Option<bool>,
    /// `false` turns memory off for this call.
    pub memory: Option<bool>,
    /// The whole conversation as the client sent it, oldest first (user and assistant turns).
    pub history: Vec<ClientMessage>,
    /// The same history with the client's message ids, when it gives them (the AI SDKs): the
    /// store compares it with what it holds.
    pub sent_history: Option<SentHistory>,
    /// Results of client tools the model called, to store before the model goes on.
    pub tool_results: Vec<ToolResultIn>,
    /// AG-UI's `runId`, echoed in the run's events.
    pub run_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IncomingMessage {
    pub content: String,
    /// The client's id for the message (AI SDK), so it is never stored twice.
    pub client_id: Option<String>,
}

/// Facts about the turn every encoder may need.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct TurnMeta {
    pub conversation_id: String,
    /// The id the assistant message will have.
    pub message_id: String,
    /// What to report as the model (`echo`, or the provider's model id).
    pub model: String,
    /// Unix seconds.
    pub created: i64,
    /// The client's id for this run (AG-UI).
    pub run_id: Option<String>,
    /// The turn goes on from client tools' results: its reply continues the client's last
    /// assistant message.
    pub continuation: bool,
}

#[cfg(test)]
impl TurnMeta {
    /// The facts of a turn in conversation `c` with reply `m`, for unit tests.
    pub fn for_tests() -> Self {
        Self {
            conversation_id: "c".into(),
            message_id: "m".into(),
            model: "echo".into(),
            created: 0,
            run_id: None,
            continuation: false,
        }
    }
}

/// A whole (non-streamed) reply.
#[derive(Debug, Clone)]
pub struct Whole {
    pub text: String,
    /// The client tools the model called (the turn ended for the client to run them).
    pub tool_calls: Vec<ToolCall>,
    pub reason: FinishReason,
    pub usage: Usage,
}

/// Writes one turn's events in a format. Streamed frames are complete events of the format's
/// framing (SSE `data: …\n\n` for all but the AI SDK 4 data stream); an empty frame is not
/// sent.
pub trait Encoder: Send + 'static {
    /// Extra response headers of this format's stream.
    fn stream_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
    /// What to send while the model is silent, so proxies keep the connection open; `None` where
    /// the framing has no room for it.
    fn keep_alive(&self) -> Option<&'static str> {
        Some(": keep-alive\n\n")
    }
    /// Frames sent before any text.
    fn start(&mut self) -> String;
    fn delta(&mut self, text: &str) -> String;
    /// The model began a tool call (`server`: the server runs it).
    fn tool_call_start(&mut self, id: &str, name: &str, server: bool) -> String;
    /// More of a tool call's arguments.
    fn tool_call_delta(&mut self, id: &str, delta: &str, server: bool) -> String;
    /// A tool call whose arguments are complete.
    fn tool_call(&mut self, call: &ToolCall, server: bool) -> String;
    /// The result of a tool the server ran.
    fn tool_result(&mut self, call: &ToolCall, output: &str, error: bool) -> String;
    /// A model call ended with server tools; the next one begins with `step_start`.
    fn step_finish(&mut self) -> String {
        String::new()
    }
    fn step_start(&mut self) -> String {
        String::new()
    }
    /// Frames that end a complete reply, including the terminator.
    fn finish(&mut self, reason: FinishReason, usage: Usage) -> String;
    /// Frames reporting a failure mid-stream, or `None` when the format has no error event and
    /// the body must be aborted instead.
    fn error(&mut self, message: &str) -> Option<String>;
    /// The whole (non-streamed) response body.
    fn whole(&self, reply: &Whole) -> serde_json::Value;
}

/// A tool call's arguments as JSON (the text itself when the model wrote invalid JSON).
pub fn arguments_json(call: &ToolCall) -> serde_json::Value {
    if call.arguments.trim().is_empty() {
        return serde_json::json!({});
    }
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()))
}

/// A tool result's output as JSON when it is JSON, else its text.
pub fn output_json(output: &str) -> serde_json::Value {
    serde_json::from_str(output).unwrap_or_else(|_| serde_json::Value::String(output.to_owned()))
}

/// One SSE event carrying `data`.
pub fn sse_data(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// One SSE event carrying `value` as JSON, written in one buffer. A text delta is encoded once
/// per chunk the model sends: it is a struct of borrowed fields here rather than a `json!` tree
/// (which allocates every key and value, sorts the keys and is then written out again). Such a
/// struct declares its fields in alphabetical order, so its JSON is the same as the tree's.
pub fn sse_json(value: &impl serde::Serialize) -> String {
    framed_json("data: ", value, "\n\n")
}

/// `value` as JSON between `prefix` and `suffix`, in one buffer (an SSE event, an AI SDK 4 line).
pub fn framed_json(prefix: &str, value: &impl serde::Serialize, suffix: &str) -> String {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(prefix.as_bytes());
    // Writing plain structs of strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut out, value).is_err() {
        return String::new();
    }
    out.extend_from_slice(suffix.as_bytes());
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod delta_tests {
    use serde_json::{Value, json};

    use super::{Format, TurnMeta, sse_data};

    /// What each format's delta was when it was built as a `json!` tree: the typed deltas must
    /// write the same bytes (keys in the same order, the same escapes).
    fn as_tree(format: Format, meta: &TurnMeta, text: &str) -> String {
        let tree = |value: Value| sse_data(&value.to_string());
        match format {
            Format::OpenAi => tree(json!({
                "id": format!("chatcmpl-{}", meta.message_id),
                "object": "chat.completion.chunk",
                "created": meta.created,
                "model": meta.model,
                "conversation_id": meta.conversation_id,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
            })),
            Format::AiSdk => tree(json!({"type": "text-delta", "id": "text-0", "delta": text})),
            Format::AgUi => tree(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": meta.message_id, "delta": text})),
            Format::DeltaKit => tree(json!({"type": "text_delta", "delta": text})),
            Format::AiSdk4 => format!("0:{}\n", Value::String(text.to_owned())),
        }
    }

    #[test]
    fn a_typed_delta_writes_what_its_json_tree_wrote() {
        let meta = TurnMeta {
            created: 1_765_000_000,
            model: "gpt \"4\"".into(),
            ..TurnMeta::for_tests()
        };
        let texts = [
            "plain ",
            "quote \" and \\ back",
            "new\nline\ttab \u{1}",
            "é 漢字 🦀",
            "",
        ];
        for format in [
            Format::OpenAi,
            Format::AiSdk,
            Format::AgUi,
            Format::DeltaKit,
            Format::AiSdk4,
        ] {
            let mut encoder = format.encoder(meta.clone());
            encoder.start();
            // The first delta may open a text part first; the ones after are deltas alone.
            encoder.delta("first");
            for text in texts {
                let frame = encoder.delta(text);
                if format == Format::AgUi && text.is_empty() {
                    assert_eq!(frame, "", "AG-UI sends no empty content");
                    continue;
                }
                assert_eq!(frame, as_tree(format, &meta, text), "{format:?} {text:?}");
            }
        }
    }
}
