//! Resuming and stopping a user's reply in progress: the domain of `GET …/conversations/{id}/stream`
//! and `POST …/conversations/{id}/stop`.
//!
//! The conversation is looked up in the caller's scope first (another user's is `not_found`,
//! whoever runs its reply). A reply produced on this instance is read from its log or stopped
//! here; on PostgreSQL, one that the conversation's row says another instance produces is asked
//! of that instance through `relay`.

use std::time::Duration;

use uuid::Uuid;

use super::formats::{Format, TurnMeta};
use super::live::EventSource;
use super::relay;
use crate::AppState;
use crate::error::{Error, Result};
use crate::store::scope::AgentScope;
use crate::store::user_data::{self, LiveState};

/// How long a stop waits for the reply to be stored.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// A reply being resumed: how to encode it, and its events from the first.
pub struct Resumed {
    pub format: Format,
    pub meta: TurnMeta,
    pub events: EventSource,
}

/// The reply in progress in the user's conversation, from its first event; `None` when no reply
/// is in progress.
pub async fn resume(state: &AppState, scope: &AgentScope, conversation_id: &str) -> Result<Option<Resumed>> {
    let conversation = find(state, scope, conversation_id).await?;
    if let Some(reply) = state.live().newest(conversation.id) {
        return Ok(Some(Resumed {
            format: reply.format,
            meta: reply.meta.clone(),
            events: EventSource::Log(reply.follow()),
        }));
    }
    match elsewhere(state, &conversation) {
        Some(instance) => relay::resume(state, instance, conversation.id).await,
        None => Ok(None),
    }
}

/// Stops the reply in progress in the user's conversation, wherever it runs, and waits (a
/// bounded time) until what it produced is stored. Nothing in progress: nothing to do.
pub async fn stop(state: &AppState, scope: &AgentScope, conversation_id: &str) -> Result<()> {
    let conversation = find(state, scope, conversation_id).await?;
    let here = stop_here(state, conversation.id).await;
    if here == 0
        && let Some(instance) = elsewhere(state, &conversation)
    {
        relay::stop(state, instance, conversation.id).await;
    }
    Ok(())
}

/// Stops this instance's replies of a conversation and waits for them to be stored; returns how
/// many there were.
pub async fn stop_here(state: &AppState, key: Uuid) -> usize {
    let replies = state.live().all(key);
    for reply in &replies {
        reply.request_stop();
    }
    for reply in &replies {
        if tokio::time::timeout(STOP_WAIT, reply.ended()).await.is_err() {
            tracing::warn!("a stopped reply was not stored within {STOP_WAIT:?}");
        }
    }
    replies.len()
}

async fn find(state: &AppState, scope: &AgentScope, conversation_id: &str) -> Result<LiveState> {
    user_data::live_state(state.db(), scope, conversation_id)
        .await?
        .ok_or_else(|| Error::not_found("conversation"))
}

/// The other instance the conversation's row says produces its reply, if any.
fn elsewhere(state: &AppState, conversation: &LiveState) -> Option<Uuid> {
    let instance = Uuid::try_parse(conversation.live_instance.as_deref()?).ok()?;
    (instance != state.live().instance() && state.db().postgres().is_some()).then_some(instance)
}
