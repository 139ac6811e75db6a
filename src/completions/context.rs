//! The model's context for one turn: the agent's instructions, then the user's memory records
//! that match the message (quoted as notes the user stored), then the conversation's history.

use super::PromptMessage;
use crate::AppState;
use crate::error::Result;
use crate::store::agents::Agent;
use crate::store::scope::AgentScope;
use crate::store::user_data::{self, Conversation, MemoryFilter};

/// Most memory records given to the model per turn, and most characters of them.
const MEMORY_RECORDS: u64 = 8;
const MEMORY_CHARS: usize = 4_000;

/// What a user turn's context is built from.
pub struct Context<'a> {
    pub conversation: &'a Conversation,
    /// The history ends at this turn's last message (later turns of concurrent calls stay out).
    pub up_to: Option<i64>,
    pub use_memory: bool,
    /// The text memory is searched with.
    pub query_text: &'a str,
}

/// The agent's instructions as the first system message, if it has any.
pub fn instructions(agent: &Agent) -> Vec<PromptMessage> {
    if agent.instructions.trim().is_empty() {
        Vec::new()
    } else {
        vec![PromptMessage {
            role: "system",
            content: agent.instructions.clone(),
        }]
    }
}

/// Instructions, then relevant memory, then the conversation's history.
pub async fn build(state: &AppState, scope: &AgentScope, context: Context<'_>) -> Result<Vec<PromptMessage>> {
    let Context {
        conversation,
        up_to,
        use_memory,
        query_text,
    } = context;
    let mut prompt = instructions(scope.agent());
    if use_memory {
        let terms = user_data::search_terms(query_text);
        let memories = user_data::search_memories(
            state.db(),
            scope.user(),
            MemoryFilter::AgentOrShared(scope.agent_id()),
            &terms,
            MEMORY_RECORDS,
        )
        .await?;
        if !memories.is_empty() {
            let mut text = String::from("What you know about the user:");
            for memory in memories {
                if text.len() + memory.content.len() + 3 > MEMORY_CHARS {
                    break;
                }
                text.push_str("\n- ");
                text.push_str(&memory.content);
            }
            prompt.push(PromptMessage {
                role: "system",
                content: text,
            });
        }
    }
    let history = user_data::recent_messages(
        state.db(),
        scope,
        conversation,
        up_to,
        state.settings().history_messages,
    )
    .await?;
    for message in history {
        let role = match message.role.as_str() {
            "assistant" => "assistant",
            "system" => "system",
            "tool" => "tool",
            _ => "user",
        };
        prompt.push(PromptMessage {
            role,
            content: message.content,
        });
    }
    Ok(prompt)
}
