//! Usage accounting without a write per turn: each turn adds its tokens to a counter in memory,
//! and a flusher adds the counters to the durable ones (`usage_daily`) every second or so, one
//! statement per user, in the background. The daily quota reads the durable counters (what every
//! instance has flushed, cached for a moment) plus what this instance has not flushed yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::completions::Usage;
use crate::store::scope::{ApplicationId, UserScope};
use crate::store::user_data::{self, Day, Spent, UserSpending};
use crate::store::{Db, MICROS_PER_DAY, StoreError, StoreResult, now_micros};

/// How long the durable part of a user's daily total is reused before it is read again.
const TOTAL_TTL: Duration = Duration::from_secs(2);

/// Today, as a day number (UTC).
pub fn today() -> Day {
    (now_micros() / MICROS_PER_DAY) as Day
}

type UserKey = (ApplicationId, Arc<str>);

/// One user's unflushed spending.
struct Pending {
    scope: UserScope,
    spent: HashMap<(Day, Uuid), Spent>,
}

pub struct Metering {
    pending: Mutex<HashMap<UserKey, Pending>>,
    /// The durable part of today's total per user, with when it was read from the database
    /// (plus what this instance flushed since).
    totals: moka::future::Cache<(UserKey, Day), (u64, Instant)>,
}

impl Default for Metering {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            totals: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }
}

impl Metering {
    /// Notes one turn's tokens. Costs a map update, no I/O.
    pub fn record(&self, scope: &UserScope, agent_id: Uuid, usage: Usage) {
        let key = (scope.application_id(), scope.sub_shared().clone());
        let mut pending = self.pending.lock().expect("metering lock");
        let user = pending.entry(key).or_insert_with(|| Pending {
            scope: scope.clone(),
            spent: HashMap::new(),
        });
        user.spent.entry((today(), agent_id)).or_default().add(Spent {
            turns: 1,
            input_tokens: usage.prompt_tokens as i64,
            output_tokens: usage.completion_tokens as i64,
        });
    }

    /// The tokens the user spent today: durable counters plus this instance's unflushed ones.
    pub async fn used_today(&self, db: &Db, scope: &UserScope) -> StoreResult<u64> {
        let day = today();
        let key = (scope.application_id(), scope.sub_shared().clone());
        let unflushed: i64 = self
            .pending
            .lock()
            .expect("metering lock")
            .get(&key)
            .map(|p| {
                p.spent
                    .iter()
                    .filter(|((d, _), _)| *d == day)
                    .map(|(_, s)| s.input_tokens + s.output_tokens)
                    .sum()
            })
            .unwrap_or(0);
        let slot = (key, day);
        if self
            .totals
            .get(&slot)
            .await
            .is_some_and(|(_, read)| read.elapsed() > TOTAL_TTL)
        {
            // Read again, for what other instances flushed meanwhile.
            self.totals.invalidate(&slot).await;
        }
        // One read per user however many of their turns ask at once.
        let (durable, _) = self
            .totals
            .try_get_with(slot, async {
                let total = user_data::tokens_on_day(db, scope, day).await?;
                Ok::<_, StoreError>((total, Instant::now()))
            })
            .await
            .map_err(|error| StoreError::Other(error.to_string().into()))?;
        Ok(durable + unflushed.max(0) as u64)
    }

    /// Adds every pending counter to the durable ones, in one transaction. If it fails, the
    /// counters are kept for the next flush.
    pub async fn flush(&self, db: &Db) {
        let pending = std::mem::take(&mut *self.pending.lock().expect("metering lock"));
        if pending.is_empty() {
            return;
        }
        let batch: Vec<UserSpending<'_>> = pending
            .values()
            .map(|user| (&user.scope, user.spent.iter().map(|((d, a), s)| (*d, *a, *s)).collect()))
            .collect();
        if let Err(error) = user_data::add_usage(db, &batch).await {
            tracing::warn!(%error, users = pending.len(), "could not record usage; keeping it for the next flush");
            let mut current = self.pending.lock().expect("metering lock");
            for (key, user) in pending {
                let again = current.entry(key).or_insert_with(|| Pending {
                    scope: user.scope.clone(),
                    spent: HashMap::new(),
                });
                for (slot, s) in user.spent {
                    again.spent.entry(slot).or_default().add(s);
                }
            }
            return;
        }
        // Flushed: add today's part to the durable totals this instance holds (keeping when they
        // were read, so other instances' spending is still read back in time).
        let day = today();
        for (key, user) in pending {
            let flushed: i64 = user
                .spent
                .iter()
                .filter(|((d, _), _)| *d == day)
                .map(|(_, s)| s.input_tokens + s.output_tokens)
                .sum();
            let slot = (key, day);
            if let Some((total, read)) = self.totals.get(&slot).await {
                self.totals.insert(slot, (total + flushed.max(0) as u64, read)).await;
            }
        }
    }

    /// Flushes every `every` until the process ends.
    pub fn spawn_flusher(self: &Arc<Self>, db: Db, every: Duration) -> tokio::task::JoinHandle<()> {
        let metering = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                metering.flush(&db).await;
            }
        })
    }
}
