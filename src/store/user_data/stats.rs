//! Aggregates for an application's administrators: counts over its users, no one's content.

use sea_query::{Expr, ExprTrait, Order};
use uuid::Uuid;

use super::tables::Conversations;
use super::{count_users, select_all_users};
use crate::store::scope::AppAccess;
use crate::store::{Db, MICROS_PER_DAY, StoreError, StoreResult};

/// How much one agent is used.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    pub conversations: i64,
    pub users: i64,
    /// (day number since the Unix epoch, conversations started that day), oldest first.
    pub per_day: Vec<(i64, i64)>,
}

struct Totals {
    conversations: i64,
    users: i64,
}
crate::from_row!(Totals { conversations, users });

struct Day {
    day: i64,
    n: i64,
}
crate::from_row!(Day { day, n });

fn statements(
    access: &AppAccess,
    agent_id: Uuid,
    since: i64,
) -> (sea_query::SelectStatement, sea_query::SelectStatement) {
    let of_agent = select_all_users::<Conversations>(access)
        .and_where(Expr::col(Conversations::AgentId).eq(agent_id))
        .to_owned();
    let totals = of_agent
        .clone()
        .expr_as(Expr::col(Conversations::Id).count(), "conversations")
        .expr_as(count_users::<Conversations>(), "users")
        .to_owned();
    // A literal divisor, not a bound parameter: PostgreSQL must see the same expression in
    // SELECT and GROUP BY.
    let day = Expr::cust(format!("created_at / {MICROS_PER_DAY}"));
    let per_day = of_agent
        .clone()
        .expr_as(day.clone(), "day")
        .expr_as(Expr::col(Conversations::Id).count(), "n")
        .and_where(Expr::col(Conversations::CreatedAt).gte(since))
        .add_group_by([day.clone()])
        .order_by_expr(day, Order::Asc)
        .to_owned();
    (totals, per_day)
}

/// Counts over every user of the agent. Takes the caller's `AppAccess`: only administrators of
/// the agent's application see them.
pub async fn agent_stats(db: &Db, access: &AppAccess, agent_id: Uuid, since: i64) -> StoreResult<AgentStats> {
    let (totals, per_day) = statements(access, agent_id, since);
    let totals: Totals = db.row(&totals).await?.ok_or(StoreError::NotFound)?;
    let per_day: Vec<Day> = db.rows(&per_day).await?;
    Ok(AgentStats {
        conversations: totals.conversations,
        users: totals.users,
        per_day: per_day.into_iter().map(|d| (d.day, d.n)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use sea_query::{SqliteQueryBuilder, Value};

    use super::*;
    use crate::store::scope::Role;

    #[test]
    fn stats_count_only_the_administrators_application() {
        let access = AppAccess::granted(Uuid::now_v7(), Role::Admin);
        let (totals, per_day) = statements(&access, Uuid::now_v7(), 0);
        for statement in [totals, per_day] {
            let (sql, values) = statement.build(SqliteQueryBuilder);
            assert!(sql.contains("\"application_id\" = ?"), "{sql}");
            assert!(values.0.contains(&Value::Uuid(Some(access.app_id().uuid()))));
        }
    }
}
