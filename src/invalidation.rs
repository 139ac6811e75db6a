//! Keeping every server instance's caches honest.
//!
//! Deleting an authentication key or an API key must stop it working at once on every instance,
//! and changes to agents, applications and providers should be seen everywhere. The store sends a
//! `Notice` inside the transaction that makes the change (`store::notices`), so a change never
//! commits without it; this instance evicts at once (`evict`), and on PostgreSQL every instance
//! listens and evicts what it hears. If the listening connection drops, notices may have been
//! missed, so the caches are emptied and refill from the database; each cache's time to live
//! bounds what a lost notice can cost (`CONFIDANT_KEY_CACHE_TTL` for keys, seconds for the rest).

use std::time::Duration;

use crate::AppState;
use crate::store::notices::CHANNEL;
pub use crate::store::notices::Notice;

/// Evicts what changed from this instance's caches.
pub async fn evict(state: &AppState, what: Notice) {
    match what {
        Notice::AuthenticationKey(id) => state.user_keys().invalidate(id).await,
        Notice::Agent(id) => state.agents().invalidate(id).await,
        Notice::Application(app_id) => {
            state.user_keys().invalidate_application(app_id).await;
            state.api_keys().invalidate_application(app_id).await;
            state.agents().invalidate_application(app_id).await;
            state.providers().invalidate_application(app_id).await;
            state.applications().invalidate(app_id).await;
        }
        Notice::ApplicationChanged(app_id) => state.applications().invalidate(app_id).await,
        Notice::ApiKey(id) => state.api_keys().invalidate(id).await,
        Notice::Providers(app_id) => state.providers().invalidate_application(app_id).await,
    }
}

/// Empties every cache the notices keep honest (some may have been missed).
fn clear_caches(state: &AppState) {
    state.user_keys().clear();
    state.api_keys().clear();
    state.agents().clear();
    state.providers().clear();
    state.applications().clear();
}

/// On PostgreSQL, listens for other instances' changes (and their questions about this
/// instance's replies in progress) until the process ends.
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
            // Cache invalidations for all, and this instance's own channel for replies in
            // progress (`completions::relay`).
            let own = crate::completions::relay::channel(state.live().instance());
            if let Err(error) = listener.listen_all([CHANNEL, own.as_str()]).await {
                tracing::warn!(%error, "cannot listen for cache invalidations; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tracing::debug!("listening for cache invalidations");
            // Anything said while we were not listening is lost: start from empty caches.
            clear_caches(&state);
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) if notice.channel() == own => {
                        crate::completions::relay::on_notice(&state, notice.payload());
                    }
                    Ok(Some(notice)) => match Notice::decode(notice.payload()) {
                        Some(what) => {
                            tracing::debug!(?what, "cache invalidation");
                            evict(&state, what).await;
                        }
                        None => tracing::warn!(payload = notice.payload(), "unknown cache invalidation"),
                    },
                    Ok(None) => {
                        tracing::warn!("the invalidation listener lost its connection; emptying caches");
                        clear_caches(&state);
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
