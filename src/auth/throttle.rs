//! Logins that cannot be turned against the server: attempts are limited per client address and
//! per email (GCRA, `governor`), and Argon2 runs at most a few at a time (each costs ~20 MiB and
//! tens of milliseconds of a core). A flood gets fast 429s; the data plane keeps its cores.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// How long a login waits for a hashing slot before it is told to come back.
const HASHING_WAIT: Duration = Duration::from_millis(500);

/// The login limits of one instance.
pub struct LoginGuard {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    per_email: DefaultKeyedRateLimiter<String>,
    address_limit: u32,
    email_limit: u32,
    hashing: Arc<Semaphore>,
}

impl LoginGuard {
    /// `per_address` and `per_email` attempts a minute (bursts of as many); `hashing` hashes at
    /// once.
    pub fn new(per_address: u32, per_email: u32, hashing: usize) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least one"));
        Self {
            per_address: RateLimiter::keyed(quota(per_address)),
            per_email: RateLimiter::keyed(quota(per_email)),
            address_limit: per_address,
            email_limit: per_email,
            hashing: Arc::new(Semaphore::new(hashing.max(1))),
        }
    }

    /// Counts one attempt from `address` for `email`, then waits (briefly) for a hashing slot:
    /// `rate_limited` when either limit is used up or the slots stay busy.
    pub async fn admit(&self, address: Option<IpAddr>, email: &str) -> Result<OwnedSemaphorePermit> {
        let limited = |scope, limit, not_until: governor::NotUntil<_>| Error::RateLimited {
            scope,
            limit,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        };
        if let Some(address) = address {
            self.per_address
                .check_key(&address)
                .map_err(|n| limited("login_address", self.address_limit, n))?;
        }
        self.per_email
            .check_key(&email.to_owned())
            .map_err(|n| limited("login_email", self.email_limit, n))?;
        match tokio::time::timeout(HASHING_WAIT, self.hashing.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::RateLimited {
                scope: "login",
                limit: self.hashing.available_permits() as u32,
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Forgets addresses and emails whose limits have fully recovered (bounds the memory a flood
    /// of distinct keys can take).
    pub fn forget_idle(&self) {
        self.per_address.retain_recent();
        self.per_address.shrink_to_fit();
        self.per_email.retain_recent();
        self.per_email.shrink_to_fit();
    }
}
