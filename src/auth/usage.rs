//! `last_used_at` of keys without a write per request: uses are noted in memory and written in one
//! batch every few seconds (and at shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::store::keys::{self, KeyTable};
use crate::store::{Db, now_micros};

/// Pending "key was used at" notes, flushed to the database in batches.
#[derive(Clone, Default)]
pub struct KeyUsage {
    pending: Arc<Mutex<HashMap<(KeyTable, Uuid), i64>>>,
}

impl KeyUsage {
    /// Notes that a key was used now. Costs a map insert, no I/O.
    pub fn record(&self, table: KeyTable, id: Uuid) {
        self.pending
            .lock()
            .expect("usage map lock")
            .insert((table, id), now_micros());
    }

    /// Writes every pending note. Keys deleted meanwhile update nothing.
    pub async fn flush(&self, db: &Db) {
        let pending = std::mem::take(&mut *self.pending.lock().expect("usage map lock"));
        for table in [KeyTable::Authentication, KeyTable::Api] {
            let uses: Vec<(Uuid, i64)> = pending
                .iter()
                .filter(|((t, _), _)| *t == table)
                .map(|((_, id), at)| (*id, *at))
                .collect();
            if let Err(error) = keys::record_last_used(db, table, &uses).await {
                tracing::warn!(%error, count = uses.len(), "could not record key usage");
            }
        }
    }

    /// Flushes every `every` until the process ends.
    pub fn spawn_flusher(&self, db: Db, every: Duration) -> tokio::task::JoinHandle<()> {
        let usage = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                usage.flush(&db).await;
            }
        })
    }
}
