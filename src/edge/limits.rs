//! Per-user limits: requests and completions per minute (GCRA in memory, per instance, with
//! `governor`), and tokens per day (from the durable usage counters, `crate::metering`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::Settings;
use crate::error::{Error, Result};

/// An application's per-user limits as stored: a field left out follows the server's default
/// (`CONFIDANT_USER_*`); `null` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub user_requests_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub user_completions_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub user_tokens_per_day: Option<Option<u64>>,
}

/// Tells `"field": null` (Some(None)) apart from a missing field (None).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl LimitsOverride {
    /// Refuses zero (use `null` for no limit) and absurd values.
    pub fn validate(&self) -> Result<()> {
        let check = |field: &str, value: Option<Option<u64>>, max: u64| match value {
            Some(Some(n)) if n == 0 || n > max => Err(Error::invalid_field(
                format!("limits.{field}"),
                format!("must be between 1 and {max}, or null for no limit"),
            )),
            _ => Ok(()),
        };
        let widen = |v: Option<Option<u32>>| v.map(|v| v.map(u64::from));
        check(
            "user_requests_per_minute",
            widen(self.user_requests_per_minute),
            1_000_000,
        )?;
        check(
            "user_completions_per_minute",
            widen(self.user_completions_per_minute),
            1_000_000,
        )?;
        check("user_tokens_per_day", self.user_tokens_per_day, 1_000_000_000_000)
    }

    /// The limits in force: these overrides over the server's defaults.
    pub fn effective(&self, settings: &Settings) -> Limits {
        Limits {
            user_requests_per_minute: self
                .user_requests_per_minute
                .unwrap_or(settings.user_requests_per_minute),
            user_completions_per_minute: self
                .user_completions_per_minute
                .unwrap_or(settings.user_completions_per_minute),
            user_tokens_per_day: self.user_tokens_per_day.unwrap_or(settings.user_tokens_per_day),
        }
    }
}

/// The per-user limits in force for an application (`null`: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Limits {
    #[schema(required = true)]
    pub user_requests_per_minute: Option<u32>,
    #[schema(required = true)]
    pub user_completions_per_minute: Option<u32>,
    #[schema(required = true)]
    pub user_tokens_per_day: Option<u64>,
}

/// What the `X-RateLimit-*` headers say about the limit a request counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the limit is whole again.
    pub reset: u64,
}

/// The limiters' hash: foldhash, seeded per process (SipHash, the standard one, was a fortieth of
/// what the guard cost a list under callgrind). The keys are users of one application, named by
/// tokens its own backend signs.
type Hasher = foldhash::fast::RandomState;

type UserLimiter = RateLimiter<Arc<str>, DashMapStateStore<Arc<str>, Hasher>, DefaultClock, StateInformationMiddleware>;

/// One application's limiter of one kind, for the limit it was built with.
struct AppLimiter {
    per_minute: u32,
    limiter: UserLimiter,
}

impl AppLimiter {
    fn check(&self, kind: Kind, sub: &Arc<str>) -> Result<RateState> {
        let per_minute = self.per_minute;
        match self.limiter.check_key(sub) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = per_minute.saturating_sub(remaining);
                let per_token = Duration::from_secs(60) / per_minute.max(1);
                Ok(RateState {
                    limit: per_minute.into(),
                    remaining: remaining.into(),
                    reset: (per_token * used).as_secs_f64().ceil() as u64,
                })
            }
            Err(not_until) => Err(Error::RateLimited {
                scope: kind.scope(),
                limit: per_minute,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
        }
    }
}

/// Which per-minute limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Completions,
}

impl Kind {
    fn scope(self) -> &'static str {
        match self {
            Self::Requests => "user_requests_per_minute",
            Self::Completions => "user_completions_per_minute",
        }
    }
}

/// Every application's per-user limiters on this instance.
#[derive(Default)]
pub struct UserLimiters {
    requests: RwLock<HashMap<Uuid, Arc<AppLimiter>, Hasher>>,
    completions: RwLock<HashMap<Uuid, Arc<AppLimiter>, Hasher>>,
}

impl UserLimiters {
    /// Counts one request of `sub` against `per_minute`; `rate_limited` when it is used up.
    pub fn check(&self, kind: Kind, app_id: Uuid, sub: &Arc<str>, per_minute: u32) -> Result<RateState> {
        let map = self.map(kind);
        // Counted under the map's read lock, the usual case: no reference taken and dropped.
        if let Some(app) = map.read().expect("limiter map").get(&app_id)
            && app.per_minute == per_minute
        {
            return app.check(kind, sub);
        }
        // New, or the application's limit changed: start it afresh.
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least one"));
        let fresh = Arc::new(AppLimiter {
            per_minute,
            limiter: RateLimiter::dashmap_with_hasher(quota, Hasher::default())
                .with_middleware::<StateInformationMiddleware>(),
        });
        let app = {
            let mut map = map.write().expect("limiter map");
            let entry = map.entry(app_id).or_insert_with(|| fresh.clone());
            if entry.per_minute != per_minute {
                *entry = fresh;
            }
            entry.clone()
        };
        app.check(kind, sub)
    }

    fn map(&self, kind: Kind) -> &RwLock<HashMap<Uuid, Arc<AppLimiter>, Hasher>> {
        match kind {
            Kind::Requests => &self.requests,
            Kind::Completions => &self.completions,
        }
    }

    /// Forgets users whose limits are whole again (bounds the memory many users take).
    pub fn forget_idle(&self) {
        for map in [&self.requests, &self.completions] {
            let limiters: Vec<Arc<AppLimiter>> = map.read().expect("limiter map").values().cloned().collect();
            for app in limiters {
                app.limiter.retain_recent();
                app.limiter.shrink_to_fit();
            }
            map.write()
                .expect("limiter map")
                .retain(|_, app| !app.limiter.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_limited_and_others_are_not() {
        let limiters = UserLimiters::default();
        let app = Uuid::now_v7();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let first = limiters.check(Kind::Requests, app, &alice, 3).unwrap();
        assert_eq!((first.limit, first.remaining), (3, 2));
        assert_eq!(first.reset, 20);
        limiters.check(Kind::Requests, app, &alice, 3).unwrap();
        let last = limiters.check(Kind::Requests, app, &alice, 3).unwrap();
        assert_eq!((last.remaining, last.reset), (0, 60));
        match limiters.check(Kind::Requests, app, &alice, 3) {
            Err(Error::RateLimited {
                scope,
                limit,
                retry_after,
            }) => {
                assert_eq!((scope, limit), ("user_requests_per_minute", 3));
                assert!(retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20));
            }
            other => panic!("{other:?}"),
        }
        assert!(limiters.check(Kind::Requests, app, &bob, 3).is_ok());
        assert!(limiters.check(Kind::Completions, app, &alice, 3).is_ok());
        // A changed limit starts afresh.
        assert!(limiters.check(Kind::Requests, app, &alice, 4).is_ok());
    }

    #[test]
    fn overrides_fall_back_to_the_defaults() {
        let settings = Settings::default();
        let stored: LimitsOverride =
            serde_json::from_str(r#"{"user_requests_per_minute": null, "user_tokens_per_day": 5000}"#).unwrap();
        let limits = stored.effective(&settings);
        assert_eq!(limits.user_requests_per_minute, None);
        assert_eq!(limits.user_completions_per_minute, settings.user_completions_per_minute);
        assert_eq!(limits.user_tokens_per_day, Some(5000));
        assert_eq!(
            serde_json::to_string(&stored).unwrap(),
            r#"{"user_requests_per_minute":null,"user_tokens_per_day":5000}"#
        );
        assert!(
            serde_json::from_str::<LimitsOverride>(r#"{"user_requests_per_minute": 0}"#)
                .unwrap()
                .validate()
                .is_err()
        );
        assert!(serde_json::from_str::<LimitsOverride>(r#"{"requests": 1}"#).is_err());
    }
}
