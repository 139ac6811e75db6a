//! Confidant: a self-hostable, multi-tenant store for AI-agent conversations and per-user memory.
//!
//! `app(state)` builds the whole HTTP service; the binary and the tests serve the same router.

pub mod auth;
pub mod completions;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod invalidation;
pub mod metrics;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::AccessTokens;
use crate::auth::usage::KeyUsage;
use crate::auth::user_token::{AuthenticationKeyCache, VerifyOptions};
pub use crate::config::Settings;
use crate::crypto::MasterKey;
use crate::store::Db;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

struct StateInner {
    db: Db,
    master_key: MasterKey,
    access_tokens: AccessTokens,
    usage: KeyUsage,
    user_keys: AuthenticationKeyCache,
    agents: store::agents::AgentCache,
    metrics: metrics::Metrics,
    http: reqwest::Client,
    settings: Settings,
}

impl AppState {
    pub fn new(db: Db, master_key: MasterKey, settings: Settings) -> Self {
        let access_tokens = AccessTokens::new(&master_key, settings.access_token_ttl);
        let http = completions::provider_client(settings.provider_connect_timeout);
        Self(Arc::new(StateInner {
            db,
            master_key,
            access_tokens,
            usage: KeyUsage::default(),
            user_keys: AuthenticationKeyCache::new(settings.key_cache_ttl),
            agents: store::agents::AgentCache::default(),
            metrics: metrics::Metrics::default(),
            http,
            settings,
        }))
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.0.master_key
    }

    pub fn access_tokens(&self) -> &AccessTokens {
        &self.0.access_tokens
    }

    pub fn usage(&self) -> &KeyUsage {
        &self.0.usage
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// Decrypted authentication keys, for verifying secure user tokens.
    pub fn user_keys(&self) -> &AuthenticationKeyCache {
        &self.0.user_keys
    }

    /// Agents by id, for the data plane.
    pub fn agents(&self) -> &store::agents::AgentCache {
        &self.0.agents
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.0.metrics
    }

    /// The HTTP client for model providers (one connection pool for the process).
    pub fn http(&self) -> &reqwest::Client {
        &self.0.http
    }

    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            max_ttl: self.0.settings.max_token_ttl,
        }
    }
}

/// The whole HTTP service.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}

/// The OpenAPI document, generated from the same routes the service serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    http::openapi()
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains requests and writes pending
/// key usage.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flusher = state.usage().spawn_flusher(state.db().clone(), Duration::from_secs(5));
    let invalidations = invalidation::spawn_listener(state.clone());
    let result = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    flusher.abort();
    if let Some(listener) = invalidations {
        listener.abort();
    }
    state.usage().flush(state.db()).await;
    result
}

/// Creates an operator unless one with this email exists. Returns whether one was created.
pub async fn ensure_operator(db: &Db, email: &str, password: &str) -> error::Result<bool> {
    let email = auth::normalize_email(email)?;
    auth::validate_password(password)?;
    if store::operators::find_by_email(db, &email).await?.is_some() {
        return Ok(false);
    }
    let hash = auth::hash_password(password.to_owned()).await?;
    store::operators::create(db, &email, &hash).await?;
    Ok(true)
}
