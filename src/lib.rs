//! Confidant: a self-hostable, multi-tenant store for AI-agent conversations and per-user memory.
//!
//! `app(state)` builds the whole HTTP service; the binary and the tests serve the same router.

pub mod auth;
pub mod completions;
pub mod config;
pub mod crypto;
pub mod edge;
pub mod error;
pub mod http;
pub mod invalidation;
pub mod metering;
pub mod metrics;
pub mod resident;
pub mod retention;
pub mod store;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::AccessTokens;
use crate::auth::usage::KeyUsage;
use crate::auth::user_token::{AuthenticationKeyCache, VerifyOptions};
pub use crate::config::Settings;
use crate::crypto::MasterKey;
use crate::store::Db;

/// What a reply's log may hold beyond its text (tool calls and results).
const LIVE_LOG_EXTRA_BYTES: usize = 4 << 20;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

struct StateInner {
    db: Db,
    master_key: MasterKey,
    access_tokens: AccessTokens,
    usage: KeyUsage,
    user_keys: AuthenticationKeyCache,
    api_keys: store::keys::ApiKeyCache,
    agents: store::agents::AgentCache,
    providers: store::providers::ProviderCache,
    applications: store::applications::ApplicationCache,
    user_limiters: edge::limits::UserLimiters,
    metering: Arc<metering::Metering>,
    logins: auth::throttle::LoginGuard,
    metrics: metrics::Metrics,
    provider_lanes: completions::lanes::ProviderLanes,
    egress: completions::egress::Egress,
    mcp: completions::mcp::McpTools,
    live: Arc<completions::live::LiveReplies>,
    relay: completions::relay::Relay,
    settings: Settings,
}

impl AppState {
    pub fn new(db: Db, master_key: MasterKey, settings: Settings) -> Self {
        let access_tokens = AccessTokens::new(&master_key, settings.access_token_ttl);
        let egress = completions::egress::Egress::new(settings.provider_hosts.clone(), settings.resolver.clone());
        let provider_lanes = completions::lanes::ProviderLanes::new(
            settings.provider_connect_timeout,
            &egress,
            settings.provider_streams_per_connection as usize,
        );
        let shared = db.backend() == store::Backend::Postgres;
        Self(Arc::new(StateInner {
            db,
            master_key,
            access_tokens,
            usage: KeyUsage::default(),
            user_keys: AuthenticationKeyCache::new(settings.key_cache_ttl),
            api_keys: store::keys::ApiKeyCache::new(settings.key_cache_ttl),
            agents: store::agents::AgentCache::default(),
            providers: store::providers::ProviderCache::default(),
            applications: store::applications::ApplicationCache::default(),
            user_limiters: edge::limits::UserLimiters::default(),
            metering: Arc::new(metering::Metering::default()),
            logins: auth::throttle::LoginGuard::new(
                settings.login_per_address_per_minute,
                settings.login_per_email_per_minute,
                // Argon2 at once: one per core (each holds ~20 MiB while it runs).
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            metrics: metrics::Metrics::default(),
            mcp: completions::mcp::McpTools::default(),
            // A reply's log: its text and what its tools carried, within bounds of their own.
            live: Arc::new(completions::live::LiveReplies::new(
                shared,
                settings.max_reply_bytes + LIVE_LOG_EXTRA_BYTES,
            )),
            relay: completions::relay::Relay::default(),
            provider_lanes,
            egress,
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

    /// API keys by hash, for the completions API and the admin API.
    pub fn api_keys(&self) -> &store::keys::ApiKeyCache {
        &self.0.api_keys
    }

    /// Agents by id, for the data plane.
    pub fn agents(&self) -> &store::agents::AgentCache {
        &self.0.agents
    }

    /// Providers by application and name, for turns.
    pub fn providers(&self) -> &store::providers::ProviderCache {
        &self.0.providers
    }

    /// Applications by id (origins and limits), for the data plane.
    pub fn applications(&self) -> &store::applications::ApplicationCache {
        &self.0.applications
    }

    /// Per-user per-minute limits.
    pub fn user_limiters(&self) -> &edge::limits::UserLimiters {
        &self.0.user_limiters
    }

    /// Tokens used, counted in memory and written in batches.
    pub fn metering(&self) -> &Arc<metering::Metering> {
        &self.0.metering
    }

    /// Login throttling.
    pub fn logins(&self) -> &auth::throttle::LoginGuard {
        &self.0.logins
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.0.metrics
    }

    /// The HTTP client for short outgoing requests (webhooks, MCP servers, provider tests), with
    /// the provider lanes' TLS configuration and address rules.
    pub fn http(&self) -> &reqwest::Client {
        self.0.provider_lanes.short()
    }

    /// The provider clients for model calls (`completions::lanes`).
    pub fn provider_lanes(&self) -> &completions::lanes::ProviderLanes {
        &self.0.provider_lanes
    }

    /// Where outgoing requests may go.
    pub fn egress(&self) -> &completions::egress::Egress {
        &self.0.egress
    }

    /// MCP servers' tool lists and calls.
    pub fn mcp(&self) -> &completions::mcp::McpTools {
        &self.0.mcp
    }

    /// This instance's replies in progress (resume, stop).
    pub fn live(&self) -> &Arc<completions::live::LiveReplies> {
        &self.0.live
    }

    /// Requests to other instances about their replies (PostgreSQL).
    pub fn relay(&self) -> &completions::relay::Relay {
        &self.0.relay
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

/// Connections the kernel completes and queues for `serve` to accept. Linux caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// The listening socket, with a backlog for bursts: a queue full when a client connects drops its
/// handshake, and the client waits a second or more to try again (or, when its handshake was
/// complete on its side, sends into a connection the server never made, until its own timeout).
/// tokio's own `bind` asks for 1,024, which 5,000 streams opened at once overflow while the
/// server is busy.
pub fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind`: a restarted server may listen while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains requests and writes pending
/// key usage.
///
/// Served through hyper-util rather than `axum::serve`, which runs hyper without a timer and so
/// without a header-read timeout (a client trickling headers would hold a connection forever):
/// headers must arrive within `CONFIDANT_HEADER_TIMEOUT`, at most `CONFIDANT_MAX_CONNECTIONS` are
/// served at once (more wait in the kernel's listen queue), and every accepted socket has
/// `TCP_NODELAY` (small stream writes otherwise wait ~40 ms for the peer's delayed ACK).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let flusher = state.usage().spawn_flusher(state.db().clone(), Duration::from_secs(5));
    let metering = state
        .metering()
        .spawn_flusher(state.db().clone(), Duration::from_secs(1));
    let forgetter = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                state.logins().forget_idle();
                state.user_limiters().forget_idle();
            }
        })
    };
    let invalidations = invalidation::spawn_listener(state.clone());
    let purge = retention::spawn(state.clone(), state.settings().purge_interval);
    let deliveries = webhooks::spawn(state.clone());
    let router = app(state.clone());
    // Everything that only starting runs has run (the router holds the OpenAPI document).
    let released = resident::release_startup_code();
    tracing::debug!(released_kib = released, "gave back the startup code's pages");
    // HTTP/1 only, served by hyper's own connection: hyper-util's `auto` connection first reads
    // 24 bytes to tell HTTP/2 from HTTP/1, and the request read after them grows each
    // connection's buffer to 16 KiB where one read needs 8.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings().header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(state.settings().max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(remote));
                request
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    flusher.abort();
    metering.abort();
    forgetter.abort();
    purge.abort();
    deliveries.abort();
    if let Some(listener) = invalidations {
        listener.abort();
    }
    state.usage().flush(state.db()).await;
    state.metering().flush(state.db()).await;
    Ok(())
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
