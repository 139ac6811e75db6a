//! Retention: every `CONFIDANT_PURGE_INTERVAL`, each application's conversations not updated
//! within its `conversation_days` and memory records not written within its `memory_days` are
//! deleted, a bounded batch per transaction so turns go on between batches. Messages and their
//! feedback go with their conversation, full-text entries with their memory record. The webhook
//! deliveries log keeps `webhooks::LOG_DAYS` of finished deliveries. On
//! PostgreSQL one instance at a time purges (an advisory lock); the others skip that round.

use std::time::Duration;

use crate::AppState;
use crate::store::scope::AppAccess;
use crate::store::{Db, MICROS_PER_DAY, StoreResult, applications, now_micros, user_data, webhooks};

/// The advisory lock's key: "confidant purge", so no other application's lock collides with it.
pub const PURGE_LOCK: i64 = 0x636f_6e66_7075_7267;

/// What one purge deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub conversations: u64,
    pub memories: u64,
    pub deliveries: u64,
}

/// Carries out every application's retention policy once. `None`: another instance is purging.
pub async fn purge_once(db: &Db) -> StoreResult<Option<Purged>> {
    let Some(_lock) = db.exclusive(PURGE_LOCK).await? else {
        return Ok(None);
    };
    let mut purged = Purged::default();
    let now = now_micros();
    for (app_id, policy) in applications::retention_policies(db).await? {
        if !policy.purges() {
            continue;
        }
        let access = AppAccess::for_retention(app_id);
        if let Some(days) = policy.conversation_days {
            purged.conversations += user_data::purge_conversations(db, &access, None, cutoff(now, days)).await?;
        }
        if let Some(days) = policy.memory_days {
            purged.memories += user_data::purge_memories(db, &access, cutoff(now, days)).await?;
        }
    }
    purged.deliveries = webhooks::purge_deliveries(db, cutoff(now, webhooks::LOG_DAYS)).await?;
    Ok(Some(purged))
}

/// The oldest time a policy of `days` keeps: rows last written before it go (`0`: everything
/// written before this purge).
fn cutoff(now: i64, days: i64) -> i64 {
    now.saturating_sub(days.saturating_mul(MICROS_PER_DAY))
}

/// Runs the purge every `interval` until aborted; the first run comes one interval after start.
pub fn spawn(state: AppState, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match purge_once(state.db()).await {
                Ok(Some(purged)) if purged != Purged::default() => tracing::info!(
                    conversations = purged.conversations,
                    memories = purged.memories,
                    webhook_deliveries = purged.deliveries,
                    "retention purge"
                ),
                Ok(Some(_)) => tracing::debug!("retention purge: nothing to delete"),
                Ok(None) => tracing::debug!("retention purge: another instance is purging"),
                Err(error) => tracing::warn!(%error, "retention purge failed; it runs again next interval"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_keeps_exactly_the_policys_days() {
        assert_eq!(cutoff(10 * MICROS_PER_DAY, 3), 7 * MICROS_PER_DAY);
        assert_eq!(cutoff(5, 0), 5);
        // An absurd policy does not overflow: it keeps everything.
        assert!(cutoff(5, i64::MAX) < 0);
    }
}
