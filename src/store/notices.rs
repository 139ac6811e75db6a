//! Changes other server instances must hear about (their caches hold what changed), sent inside the
//! transaction that makes the change: PostgreSQL delivers a `NOTIFY` only if, and when, that
//! transaction commits, so a deletion can never commit without its notice nor the reverse. SQLite
//! serves one instance: nothing to send. `crate::invalidation` listens and evicts.

use sea_query::{Func, Query};
use uuid::Uuid;

use super::{Backend, StoreResult, Tx};

/// The PostgreSQL channel the notices travel on.
pub const CHANNEL: &str = "confidant_invalidate";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    AuthenticationKey(Uuid),
    Agent(Uuid),
    /// An application went, with all its keys and agents.
    Application(Uuid),
    /// An application's settings (origins, limits) changed.
    ApplicationChanged(Uuid),
    /// An API key was deleted.
    ApiKey(Uuid),
    /// An application's providers changed (one created, changed or deleted).
    Providers(Uuid),
}

impl Notice {
    pub fn encode(self) -> String {
        match self {
            Self::AuthenticationKey(id) => format!("key:{id}"),
            Self::Agent(id) => format!("agent:{id}"),
            Self::Application(id) => format!("application:{id}"),
            Self::ApplicationChanged(id) => format!("application-changed:{id}"),
            Self::ApiKey(id) => format!("api-key:{id}"),
            Self::Providers(id) => format!("providers:{id}"),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (kind, id) = text.split_once(':')?;
        let id = Uuid::try_parse(id).ok()?;
        match kind {
            "key" => Some(Self::AuthenticationKey(id)),
            "agent" => Some(Self::Agent(id)),
            "application" => Some(Self::Application(id)),
            "application-changed" => Some(Self::ApplicationChanged(id)),
            "api-key" => Some(Self::ApiKey(id)),
            "providers" => Some(Self::Providers(id)),
            _ => None,
        }
    }
}

impl Tx {
    /// Sends `notice` to every instance when this transaction commits (PostgreSQL).
    pub async fn notify(&mut self, notice: Notice) -> StoreResult<()> {
        if self.backend() == Backend::Postgres {
            let notify = Query::select()
                .expr(Func::cust("pg_notify").arg(CHANNEL).arg(notice.encode()))
                .to_owned();
            self.execute(&notify).await?;
        }
        Ok(())
    }
}

impl super::Db {
    /// Sends `payload` on `channel` at once, outside any transaction (PostgreSQL; nothing on
    /// SQLite).
    pub async fn notify_now(&self, channel: &str, payload: String) -> StoreResult<()> {
        if self.backend() == Backend::Postgres {
            let notify = Query::select()
                .expr(Func::cust("pg_notify").arg(channel).arg(payload))
                .to_owned();
            self.execute(notify).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let id = Uuid::now_v7();
        for notice in [
            Notice::AuthenticationKey(id),
            Notice::Agent(id),
            Notice::Application(id),
            Notice::ApplicationChanged(id),
            Notice::ApiKey(id),
            Notice::Providers(id),
        ] {
            assert_eq!(Notice::decode(&notice.encode()), Some(notice));
        }
        assert_eq!(Notice::decode("key:nope"), None);
        assert_eq!(Notice::decode("other:0191a4e0-0000-7000-8000-000000000000"), None);
    }
}
