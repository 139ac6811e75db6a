//! Completions: one internal event stream from the model, one encoder per wire format, and the
//! turn service between them.
//!
//! A turn goes: parse the client's body (the format's `parse`, in the HTTP handler), then
//! `turn::start`: store the new user message, build the model's context (`context`: instructions,
//! memory, history), run the model (`models`, through `egress`'s address rules); then the handler
//! encodes the turn's events for the client (`formats`).

pub mod context;
pub mod egress;
pub mod formats;
pub mod models;
pub mod turn;

use std::time::Duration;

use serde::Serialize;

/// The HTTP client for model providers: rustls (ring) with the system's roots, a connect timeout,
/// every name resolved through `egress` (internal addresses refused on every connection), no
/// redirects (a redirect could point a provider call at an internal host) and no proxy (the
/// address checked must be the address connected to).
pub fn provider_client(connect_timeout: Duration, egress: &egress::Egress) -> reqwest::Client {
    // Several callers (tests, benches) may build clients; only the first install counts.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .dns_resolver(std::sync::Arc::new(egress.clone()))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("confidant/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds with a TLS provider installed")
}

/// What a model produces, whatever the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// More text of the reply.
    Delta(String),
    /// The reply is complete.
    Finish { reason: FinishReason, usage: Usage },
    /// The model failed; what was produced so far is kept as incomplete.
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

/// Token counts, as the provider reports them (the echo model counts words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One message of the model's context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptMessage {
    pub role: &'static str,
    pub content: String,
}
