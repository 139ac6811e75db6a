//! Usage accounting without a write per turn: each turn adds its tokens to a counter in memory,
//! and a flusher adds the counters to the durable ones (`usage_daily`) every second or so, one
//! statement per user, in the background. The daily quota reads the durable counters (what every
//! instance has flushed, cached for a moment) plus what this instance has not flushed yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::completions::Usage;
use crate::store::scope::{ApplicationId, UserScope};
use crate::store::user_data::{self, Day, Spent};
use crate::store::{Db, StoreResult, now_micros};

/// How long the durable part of a user's daily total is reused before it is read again.
const TOTAL_TTL: Duration = Duration::from_secs(2);

const MICROS_PER_DAY: i64 = 86_400_000_000;

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
    /// The durable part of today's total per user, with when it was read.
    totals: moka::future::Cache<(UserKey, Day), u64>,
}

impl Default for Metering {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            totals: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TOTAL_TTL)
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
        let durable = match self.totals.get(&(key.clone(), day)).await {
            Some(total) => total,
            None => {
                let total = user_data::tokens_on_day(db, scope, day).await?;
                self.totals.insert((key, day), total).await;
                total
            }
        };
        Ok(durable + unflushed.max(0) as u64)
    }

    /// Adds every pending counter to the durable ones. A user whose write fails keeps theirs
    /// for the next flush.
    pub async fn flush(&self, db: &Db) {
        let pending = std::mem::take(&mut *self.pending.lock().expect("metering lock"));
        for (key, user) in pending {
            let spent: Vec<(Day, Uuid, Spent)> = user.spent.iter().map(|((d, a), s)| (*d, *a, *s)).collect();
            match user_data::add_usage(db, &user.scope, &spent).await {
                Ok(()) => {
                    // Flushed: today's durable total must be read again to include it.
                    self.totals.invalidate(&(key, today())).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not record usage; keeping it for the next flush");
                    let mut pending = self.pending.lock().expect("metering lock");
                    let again = pending.entry(key).or_insert_with(|| Pending {
                        scope: user.scope.clone(),
                        spent: HashMap::new(),
                    });
                    for (slot, s) in user.spent {
                        again.spent.entry(slot).or_default().add(s);
                    }
                }
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
