//! The data plane's door: where a browser may call from, and how much one user may ask.
//!
//! Every data-plane request passes [`admit`] once its caller is known (the user-token and
//! completions-key extractors call it, so no handler can forget it): the `Origin` against the
//! agent's allowed origins (or its application's), then the user's per-minute limits, then, for
//! a turn, their daily token quota. The HTTP side (`http::edge`) answers CORS preflights and puts
//! the CORS and `X-RateLimit-*` headers on the responses.

pub mod limits;
pub mod origins;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use crate::AppState;
use crate::error::{Error, Result};
use crate::store::agents::Agent;
use crate::store::applications::Application;
use crate::store::scope::{ApplicationId, UserScope};
use limits::{Kind, RateState};

/// Where [`admit`] leaves the rate state of the limit a request counted against, for the
/// response's `X-RateLimit-*` headers (put in the request by the HTTP layer).
#[derive(Debug, Clone, Default)]
pub struct RateSlot(Arc<OnceLock<RateState>>);

impl RateSlot {
    pub fn get(&self) -> Option<RateState> {
        self.0.get().copied()
    }

    fn set(&self, state: RateState) {
        let _ = self.0.set(state);
    }
}

/// Who is asking, as far as the door cares.
pub struct Caller<'a> {
    pub application_id: ApplicationId,
    /// The agent the route names, when it names one (its own origins replace the application's).
    pub agent: Option<&'a Agent>,
    /// The end user; `None` for a server with a completions API key (no per-user limits).
    pub user: Option<&'a UserScope>,
}

/// Lets the request in, or says why not: `origin_not_allowed`, `rate_limited`, `quota_exceeded`.
/// Returns the caller's application, read once here for the whole request.
pub async fn admit(state: &AppState, parts: &Parts, caller: Caller<'_>) -> Result<Arc<Application>> {
    let application = state
        .applications()
        .get(state.db(), caller.application_id.uuid())
        .await?
        .ok_or_else(|| Error::not_found("application"))?;
    if let Some(origin) = request_origin(&parts.headers) {
        let agent_list = caller.agent.map(|a| a.allowed_origins.0.as_slice()).unwrap_or_default();
        let allowed = if agent_list.is_empty() {
            application.allowed_origins.0.as_slice()
        } else {
            agent_list
        };
        if !allowed.is_empty() && !origins::allows(allowed, origin) {
            return Err(Error::OriginNotAllowed(format!(
                "the origin {} may not call this agent; add it to the allowed origins of the agent or application",
                origin.chars().take(200).collect::<String>()
            )));
        }
    }
    let Some(user) = caller.user else {
        return Ok(application);
    };
    let sub = user.sub_shared();
    let limits = application.limits.0.effective(state.settings());
    let completion = is_turn(&parts.extensions);
    let slot = parts.extensions.get::<RateSlot>();
    let app_id = caller.application_id.uuid();
    let mut shown = None;
    for (kind, per_minute) in [
        (Kind::Requests, limits.user_requests_per_minute),
        (
            Kind::Completions,
            limits.user_completions_per_minute.filter(|_| completion),
        ),
    ] {
        let Some(per_minute) = per_minute else { continue };
        match state.user_limiters().check(kind, app_id, sub, per_minute) {
            Ok(rate) => shown = Some(rate),
            Err(error) => {
                if let (Some(slot), Error::RateLimited { retry_after, .. }) = (slot, &error) {
                    slot.set(RateState {
                        limit: per_minute.into(),
                        remaining: 0,
                        reset: retry_after.as_secs_f64().ceil() as u64,
                    });
                }
                return Err(error);
            }
        }
    }
    if let (Some(slot), Some(rate)) = (slot, shown) {
        slot.set(rate);
    }
    if completion && let Some(per_day) = limits.user_tokens_per_day {
        let used = state.metering().used_today(state.db(), user).await?;
        if used >= per_day {
            return Err(Error::QuotaExceeded {
                scope: "user_tokens_per_day",
                limit: per_day,
                retry_after: until_utc_midnight(),
            });
        }
    }
    Ok(application)
}

/// The browser's `Origin`, when there is one (servers and curl send none).
pub fn request_origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Whether the matched route is a completion turn (both completion routes end so): it counts
/// against the completions limit and the token quota, and has the turn's deadline rather than the
/// request's.
pub fn is_turn(extensions: &axum::http::Extensions) -> bool {
    extensions
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| p.as_str().ends_with("/completions"))
}

fn until_utc_midnight() -> Duration {
    let now = chrono::Utc::now();
    let tomorrow = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    (tomorrow - now).to_std().unwrap_or(Duration::from_secs(1))
}
