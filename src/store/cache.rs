//! Rows kept in memory by id (or another key), for the lookups behind every request (agents,
//! applications, authentication keys, API keys by hash, providers by name).
//!
//! A moka cache: bounded in size, each entry expiring after a time to live (a shorter one for ids
//! that named nothing, so a flood of made-up ids does not reach the database but a new row is seen
//! soon), and loaded once however many requests ask at the same time.
//!
//! Invalidation must win over a load that was already reading the database when the row was
//! deleted: a generation counter, bumped by every invalidation, makes such a load return what it
//! read without caching it.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use uuid::Uuid;

use super::{StoreError, StoreResult};

/// Rows of one kind by id (or by `K`); `None` remembers that a key names nothing.
pub struct RowCache<V, K = Uuid> {
    entries: Cache<K, Option<Arc<V>>>,
    generation: AtomicU64,
}

/// Why a load did not put its value in the cache.
enum Uncached<V> {
    /// An invalidation happened while it read: the value is right for this caller, maybe not later.
    Raced(Option<Arc<V>>),
    Failed(StoreError),
}

/// Found rows live `ttl`, missing ones `missing_ttl`.
struct Lifetimes {
    ttl: Duration,
    missing_ttl: Duration,
}

impl<K, V> Expiry<K, Option<Arc<V>>> for Lifetimes {
    fn expire_after_create(&self, _: &K, value: &Option<Arc<V>>, _: Instant) -> Option<Duration> {
        Some(if value.is_some() { self.ttl } else { self.missing_ttl })
    }
}

impl<V: Send + Sync + 'static, K: Hash + Eq + Clone + Send + Sync + 'static> RowCache<V, K> {
    pub fn new(capacity: u64, ttl: Duration, missing_ttl: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .expire_after(Lifetimes { ttl, missing_ttl })
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// The row with this id: from memory, or from `load` (once for all concurrent callers).
    pub async fn get<F>(&self, id: K, load: impl FnOnce() -> F) -> StoreResult<Option<Arc<V>>>
    where
        F: Future<Output = StoreResult<Option<V>>>,
    {
        if let Some(found) = self.entries.get(&id).await {
            return Ok(found);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = self
            .entries
            .try_get_with(id, async {
                let row = load().await.map_err(Uncached::Failed)?.map(Arc::new);
                if self.generation.load(Ordering::Acquire) != generation {
                    return Err(Uncached::Raced(row));
                }
                Ok(row)
            })
            .await;
        match loaded {
            Ok(found) => Ok(found),
            Err(uncached) => match Arc::try_unwrap(uncached) {
                Ok(Uncached::Raced(row)) => Ok(row),
                Ok(Uncached::Failed(error)) => Err(error),
                // Shared by callers that waited on the same load.
                Err(shared) => match &*shared {
                    Uncached::Raced(row) => Ok(row.clone()),
                    Uncached::Failed(error) => Err(error.shared()),
                },
            },
        }
    }

    /// Forgets one row (deleted, or changed): the next request for it reads the database.
    pub async fn invalidate(&self, id: K) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(&id).await;
    }

    /// Forgets every row that `matches`.
    pub async fn invalidate_where(&self, matches: impl Fn(&V) -> bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for (id, row) in &self.entries {
            if row.as_deref().is_some_and(&matches) {
                self.entries.invalidate(&*id).await;
            }
        }
    }

    /// Forgets every entry whose key `matches`, rows and remembered absences alike (a row
    /// created under a key that named nothing a moment ago).
    pub async fn invalidate_keys(&self, matches: impl Fn(&K) -> bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for (key, _) in &self.entries {
            if matches(&key) {
                self.entries.invalidate(&*key).await;
            }
        }
    }

    /// Forgets everything (changes may have been missed).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }
}

impl StoreError {
    /// The same kind of error, for a second caller (the original is not `Clone`).
    fn shared(&self) -> Self {
        match self {
            Self::NotFound => Self::NotFound,
            Self::Conflict(message) => Self::Conflict(message.clone()),
            Self::Unavailable(source) => Self::Unavailable(source.to_string().into()),
            Self::Other(source) => Self::Other(source.to_string().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_load_once_and_missing_ids_are_remembered_briefly() {
        let cache = Arc::new(RowCache::<u32>::new(
            100,
            Duration::from_secs(60),
            Duration::from_millis(50),
        ));
        let loads = Arc::new(AtomicUsize::new(0));
        let id = Uuid::now_v7();
        let callers = (0..20).map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get(id, || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(Some(7))
                    })
                    .await
            })
        });
        for caller in callers.collect::<Vec<_>>() {
            assert_eq!(caller.await.unwrap().unwrap().as_deref(), Some(&7));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        let missing = Uuid::now_v7();
        let load = || async { Ok(None) };
        assert!(cache.get(missing, load).await.unwrap().is_none());
        assert!(cache.get(missing, || async { Ok(Some(1)) }).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            cache.get(missing, || async { Ok(Some(1)) }).await.unwrap().as_deref(),
            Some(&1)
        );
    }

    #[tokio::test]
    async fn an_invalidation_during_a_load_keeps_the_loaded_row_out_of_the_cache() {
        let cache = Arc::new(RowCache::<u32>::new(
            100,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let id = Uuid::now_v7();
        let (started, start) = tokio::sync::oneshot::channel();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let loading = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get(id, || async move {
                        let _ = started.send(());
                        let _ = finished.await;
                        Ok(Some(1))
                    })
                    .await
            })
        };
        start.await.unwrap();
        // The row is deleted while the load holds what it read before.
        cache.invalidate(id).await;
        finish.send(()).unwrap();
        assert_eq!(loading.await.unwrap().unwrap().as_deref(), Some(&1));
        let after = cache.get(id, || async { Ok(None) }).await.unwrap();
        assert!(after.is_none(), "the stale row was cached");
    }

    #[tokio::test]
    async fn invalidating_by_key_forgets_rows_and_remembered_absences_alike() {
        let cache = RowCache::<u32, (u8, String)>::new(100, Duration::from_secs(60), Duration::from_secs(60));
        // What the cache answers for (app, name) when the database would load `row`.
        let get = async |app: u8, name: &str, row: Option<u32>| {
            let found = cache.get((app, name.to_owned()), || async move { Ok(row) }).await;
            found.unwrap().as_deref().copied()
        };
        assert_eq!(get(1, "a", Some(1)).await, Some(1));
        assert_eq!(get(1, "b", None).await, None);
        assert_eq!(get(2, "a", Some(3)).await, Some(3));
        cache.invalidate_keys(|(app, _)| *app == 1).await;
        // Application 1's row and its missing name are read again; application 2's is kept.
        assert_eq!(get(1, "a", Some(10)).await, Some(10));
        assert_eq!(get(1, "b", Some(20)).await, Some(20));
        assert_eq!(get(2, "a", Some(30)).await, Some(3));
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = RowCache::<u32>::new(100, Duration::from_secs(60), Duration::from_secs(60));
        let id = Uuid::now_v7();
        let failed = cache
            .get(id, || async { Err(StoreError::Unavailable("down".into())) })
            .await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))));
        assert_eq!(
            cache.get(id, || async { Ok(Some(2)) }).await.unwrap().as_deref(),
            Some(&2)
        );
    }
}
