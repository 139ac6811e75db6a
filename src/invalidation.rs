//! Keeping every server instance's caches honest.
//!
//! Deleting an authentication key must stop it verifying at once on every instance, and agent
//! changes should be seen everywhere. Each change is applied to this instance's caches and, on
//! PostgreSQL (the multi-instance setup), announced with `pg_notify`; every instance listens and
//! applies what it hears. If the listening connection drops, notices may have been missed, so
//! the caches are emptied and refill from the database.

use std::time::Duration;

use uuid::Uuid;

use crate::AppState;

const CHANNEL: &str = "confidant_invalidate";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    AuthenticationKey(Uuid),
    Agent(Uuid),
    /// An application went, with all its keys and agents.
    Application {
        app_id: Uuid,
    },
}

impl Invalidation {
    fn encode(self) -> String {
        match self {
            Self::AuthenticationKey(id) => format!("key:{id}"),
            Self::Agent(id) => format!("agent:{id}"),
            Self::Application { app_id } => format!("application:{app_id}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (kind, id) = text.split_once(':')?;
        let id = Uuid::try_parse(id).ok()?;
        match kind {
            "key" => Some(Self::AuthenticationKey(id)),
            "agent" => Some(Self::Agent(id)),
            "application" => Some(Self::Application { app_id: id }),
            _ => None,
        }
    }
}

/// Applies a change to this instance's caches.
async fn apply(state: &AppState, what: Invalidation) {
    match what {
        Invalidation::AuthenticationKey(id) => state.user_keys().invalidate(id).await,
        Invalidation::Agent(id) => state.agents().invalidate(id).await,
        Invalidation::Application { app_id } => {
            state.user_keys().invalidate_application(app_id).await;
            state.agents().invalidate_application(app_id).await;
        }
    }
}

/// Applies a change here and tells the other instances.
pub async fn publish(state: &AppState, what: Invalidation) {
    apply(state, what).await;
    if let Some(pool) = state.db().postgres() {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what.encode())
            .execute(pool)
            .await;
        if let Err(error) = sent {
            tracing::error!(%error, ?what, "could not tell other instances about a change; they see it when their cache entries expire");
        }
    }
}

/// On PostgreSQL, listens for other instances' changes until the process ends.
pub fn spawn_listener(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let pool = state.db().postgres().cloned()?;
    Some(tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for cache invalidations; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(CHANNEL).await {
                tracing::warn!(%error, "cannot listen for cache invalidations; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tracing::debug!("listening for cache invalidations");
            // Anything said while we were not listening is lost: start from empty caches.
            state.user_keys().clear();
            state.agents().clear();
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) => match Invalidation::decode(notice.payload()) {
                        Some(what) => {
                            tracing::debug!(?what, "cache invalidation");
                            apply(&state, what).await;
                        }
                        None => tracing::warn!(payload = notice.payload(), "unknown cache invalidation"),
                    },
                    Ok(None) => {
                        tracing::warn!("the invalidation listener lost its connection; emptying caches");
                        state.user_keys().clear();
                        state.agents().clear();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the invalidation listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let id = Uuid::now_v7();
        for what in [
            Invalidation::AuthenticationKey(id),
            Invalidation::Agent(id),
            Invalidation::Application { app_id: id },
        ] {
            assert_eq!(Invalidation::decode(&what.encode()), Some(what));
        }
        assert_eq!(Invalidation::decode("key:nope"), None);
        assert_eq!(Invalidation::decode("other:0191a4e0-0000-7000-8000-000000000000"), None);
    }
}
