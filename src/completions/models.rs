//! The models that answer: the built-in `echo` model now; OpenAI-compatible providers slot in
//! beside it as another `Model` variant producing the same `ModelEvent` stream.

use futures_util::Stream;
use futures_util::stream;

use super::{FinishReason, ModelEvent, PromptMessage, Usage};

/// A model ready to answer one turn.
#[derive(Debug, Clone)]
pub enum Model {
    /// Deterministic and offline: replies with the text of the user's last message, a word at a
    /// time.
    Echo,
}

impl Model {
    /// Streams the reply to `prompt`.
    pub fn stream(&self, prompt: &[PromptMessage]) -> impl Stream<Item = ModelEvent> + Send + 'static {
        match self {
            Model::Echo => echo(prompt),
        }
    }
}

fn echo(prompt: &[PromptMessage]) -> impl Stream<Item = ModelEvent> + Send + 'static {
    let text = prompt
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())
        .unwrap_or_default();
    let prompt_tokens = prompt.iter().map(|m| m.content.split_whitespace().count() as u64).sum();
    let words: Vec<String> = text.split_inclusive(char::is_whitespace).map(str::to_owned).collect();
    let usage = Usage {
        prompt_tokens,
        completion_tokens: text.split_whitespace().count() as u64,
    };
    stream::iter(words.into_iter().map(ModelEvent::Delta).chain([ModelEvent::Finish {
        reason: FinishReason::Stop,
        usage,
    }]))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn echo_repeats_the_last_user_message_word_by_word() {
        let prompt = vec![
            PromptMessage {
                role: "system",
                content: "Be kind.".into(),
            },
            PromptMessage {
                role: "user",
                content: "first".into(),
            },
            PromptMessage {
                role: "assistant",
                content: "first".into(),
            },
            PromptMessage {
                role: "user",
                content: "hello  there world".into(),
            },
        ];
        let events: Vec<ModelEvent> = Model::Echo.stream(&prompt).collect().await;
        let text: String = events
            .iter()
            .filter_map(|e| {
                if let ModelEvent::Delta(d) = e {
                    Some(d.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(text, "hello  there world");
        assert_eq!(events.iter().filter(|e| matches!(e, ModelEvent::Delta(_))).count(), 4);
        assert!(
            matches!(events.last(), Some(ModelEvent::Finish { reason: FinishReason::Stop, usage }) if usage.completion_tokens == 3)
        );
    }
}
