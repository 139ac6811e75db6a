//! Wire formats: how a client's request body reads, and how the reply is written back.
//!
//! Each format is one file with a `parse` function and an `Encoder`. The turn driver
//! (`http::completions`) knows only `TurnRequest` and `Encoder`, so adding a format touches
//! neither the driver nor the other formats.

pub mod openai;

use serde::Deserialize;
use utoipa::ToSchema;

use super::{FinishReason, Usage};
use crate::error::{Error, Result};

/// The formats the completions endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
pub enum Format {
    /// OpenAI chat completions (`chat.completion` / `chat.completion.chunk`).
    #[serde(rename = "openai")]
    OpenAi,
}

impl Format {
    /// Reads `?format=` (or Algolia's `compatibilityMode=`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "openai" => Ok(Self::OpenAi),
            other => Err(Error::InvalidRequest(format!(
                "unsupported format `{other}` (supported: openai)"
            ))),
        }
    }

    /// Infers the format from the body when the client did not name one.
    pub fn infer(_body: &serde_json::Value) -> Self {
        Self::OpenAi
    }

    /// Whether a turn streams when neither the query nor the body says.
    pub fn streams_by_default(self) -> bool {
        match self {
            Self::OpenAi => false,
        }
    }

    pub fn parse(self, body: serde_json::Value) -> Result<TurnRequest> {
        match self {
            Self::OpenAi => openai::parse(body),
        }
    }

    pub fn encoder(self, meta: TurnMeta) -> Box<dyn Encoder> {
        match self {
            Self::OpenAi => Box::new(openai::OpenAiEncoder::new(meta)),
        }
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
}

#[derive(Debug, Clone)]
pub struct IncomingMessage {
    pub content: String,
    /// The client's id for the message (AI SDK), so it is never stored twice.
    pub client_id: Option<String>,
}

/// Facts about the turn every encoder may need.
#[derive(Debug, Clone)]
pub struct TurnMeta {
    pub conversation_id: String,
    /// The id the assistant message will have.
    pub message_id: String,
    /// What to report as the model (`echo`, or the provider's model id).
    pub model: String,
    /// Unix seconds.
    pub created: i64,
}

/// Writes one turn's events in a format. Streamed frames are complete SSE events (`data: …\n\n`).
pub trait Encoder: Send + 'static {
    /// Extra response headers of this format's stream.
    fn stream_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Frames sent before any text.
    fn start(&mut self) -> String;
    fn delta(&mut self, text: &str) -> String;
    /// Frames that end a complete reply, including the terminator.
    fn finish(&mut self, reason: FinishReason, usage: Usage) -> String;
    /// Frames reporting a failure mid-stream, or `None` when the format has no error event and
    /// the body must be aborted instead.
    fn error(&mut self, message: &str) -> Option<String>;
    /// The whole (non-streamed) response body.
    fn whole(&self, text: &str, reason: FinishReason, usage: Usage) -> serde_json::Value;
}

/// One SSE event carrying `data`.
pub fn sse_data(data: &str) -> String {
    format!("data: {data}\n\n")
}
