//! Tokens used per application, user, UTC day and agent: added in batches by `crate::metering`,
//! read by the daily quota, the usage report and the user's export.

use sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Order, SimpleExpr};
use uuid::Uuid;

use super::tables::Usage;
use super::{count_users, insert, select, select_all_users};
use crate::store::scope::{AppAccess, UserScope};
use crate::store::{Db, StoreResult};

/// Days since 1970-01-01, UTC.
pub type Day = i32;

/// What one user spent on one agent on one day (or the sums a report groups).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub turns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl Spent {
    pub fn add(&mut self, other: Spent) {
        self.turns += other.turns;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// PostgreSQL sums `BIGINT`s as `NUMERIC`; both databases read a `BIGINT` back as `i64`.
fn bigint(sum: Expr) -> Expr {
    Func::cast_as(sum, "BIGINT").into()
}

/// A counter's columns besides its owner, in `UsageRow`'s order.
const ROW_COLUMNS: [Usage; 5] = [
    Usage::Day,
    Usage::AgentId,
    Usage::Turns,
    Usage::InputTokens,
    Usage::OutputTokens,
];

/// One user's spending to add: per day and agent.
pub type UserSpending<'a> = (&'a UserScope, Vec<(Day, Uuid, Spent)>);

/// Adds users' spending (per day and agent) to the counters: one statement per user, all in one
/// transaction (one commit for a whole batch).
pub async fn add_usage(db: &Db, batch: &[UserSpending<'_>]) -> StoreResult<()> {
    let statements: Vec<sea_query::InsertStatement> = batch
        .iter()
        .filter(|(_, spent)| !spent.is_empty())
        .map(|(scope, spent)| add_statement(scope, spent))
        .collect();
    db.execute_all(statements).await
}

fn add_statement(scope: &UserScope, spent: &[(Day, Uuid, Spent)]) -> sea_query::InsertStatement {
    let rows = spent
        .iter()
        .map(|(day, agent, s)| {
            vec![
                Expr::val(*day),
                Expr::val(*agent),
                Expr::val(s.turns),
                Expr::val(s.input_tokens),
                Expr::val(s.output_tokens),
            ]
        })
        .collect();
    let mut statement = insert::<Usage>(scope, &ROW_COLUMNS, rows);
    let sum = |column: Usage| -> SimpleExpr {
        Expr::col((Usage::Table, column)).add(Expr::col((Alias::new("excluded"), column)))
    };
    statement.on_conflict(
        OnConflict::columns(super::usage_key())
            .value(Usage::Turns, sum(Usage::Turns))
            .value(Usage::InputTokens, sum(Usage::InputTokens))
            .value(Usage::OutputTokens, sum(Usage::OutputTokens))
            .to_owned(),
    );
    statement
}

struct Total {
    n: Option<i64>,
}
crate::from_row!(Total { n });

/// Tokens (input and output) the user spent on `day`, on every agent.
pub async fn tokens_on_day(db: &Db, scope: &UserScope, day: Day) -> StoreResult<u64> {
    let total: Option<Total> = db.row(&tokens_statement(scope, day)).await?;
    Ok(u64::try_from(total.and_then(|t| t.n).unwrap_or(0)).unwrap_or(0))
}

fn tokens_statement(scope: &UserScope, day: Day) -> sea_query::SelectStatement {
    select::<Usage>(scope, &[])
        .expr_as(
            bigint(Expr::col(Usage::InputTokens).add(Expr::col(Usage::OutputTokens)).sum()),
            "n",
        )
        .and_where(Expr::col(Usage::Day).eq(day))
        .to_owned()
}

/// One row of the user's export.
#[derive(Debug, Clone)]
pub struct UsageRow {
    pub day: Day,
    pub agent_id: Uuid,
    pub turns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}
crate::from_row!(UsageRow {
    day,
    agent_id,
    turns,
    input_tokens,
    output_tokens
});

/// Everything the user spent (at most `limit` rows, newest days first).
pub async fn export_usage(db: &Db, scope: &UserScope, limit: u64) -> StoreResult<Vec<UsageRow>> {
    db.rows(
        select::<Usage>(scope, &ROW_COLUMNS)
            .order_by(Usage::Day, Order::Desc)
            .order_by(Usage::AgentId, Order::Asc)
            .limit(limit),
    )
    .await
}

/// How a usage report groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    User,
    Agent,
}

/// A usage report's filters: days `from..=to`, and optionally one user or agent.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub from: Day,
    pub to: Day,
    pub sub: Option<String>,
    pub agent_id: Option<Uuid>,
    pub group_by: GroupBy,
    pub limit: u64,
}

/// One group of a report: the key its grouping names, and the sums.
#[derive(Debug, Clone)]
pub struct UsageGroup {
    pub day: Option<Day>,
    pub sub: Option<String>,
    pub agent_id: Option<Uuid>,
    pub users: i64,
    pub spent: Spent,
}

struct GroupRow {
    day: Option<Day>,
    sub: Option<String>,
    agent_id: Option<Uuid>,
    users: i64,
    turns: Option<i64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}
crate::from_row!(GroupRow {
    day,
    sub,
    agent_id,
    users,
    turns,
    input_tokens,
    output_tokens
});

/// The application's usage, summed per day, user or agent. Takes the caller's `AppAccess`.
pub async fn usage_report(db: &Db, access: &AppAccess, query: &UsageQuery) -> StoreResult<Vec<UsageGroup>> {
    let rows: Vec<GroupRow> = db.rows(&report_statement(access, query)).await?;
    Ok(rows
        .into_iter()
        .map(|r| UsageGroup {
            day: r.day,
            sub: r.sub,
            agent_id: r.agent_id,
            users: r.users,
            spent: Spent {
                turns: r.turns.unwrap_or(0),
                input_tokens: r.input_tokens.unwrap_or(0),
                output_tokens: r.output_tokens.unwrap_or(0),
            },
        })
        .collect())
}

fn report_statement(access: &AppAccess, query: &UsageQuery) -> sea_query::SelectStatement {
    let mut statement = select_all_users::<Usage>(access);
    statement
        .and_where(Expr::col(Usage::Day).gte(query.from))
        .and_where(Expr::col(Usage::Day).lte(query.to));
    if let Some(sub) = &query.sub {
        statement.and_where(Expr::col(super::sub_column::<Usage>()).eq(sub.as_str()));
    }
    if let Some(agent) = query.agent_id {
        statement.and_where(Expr::col(Usage::AgentId).eq(agent));
    }
    // Untyped NULLs for the keys a grouping leaves out: both drivers read NULL whatever its type.
    let null = || Expr::cust("NULL");
    let sub = super::sub_column::<Usage>();
    let (day_expr, sub_expr, agent_expr) = match query.group_by {
        GroupBy::Day => (Expr::col(Usage::Day), null(), null()),
        GroupBy::User => (null(), Expr::col(sub), null()),
        GroupBy::Agent => (null(), null(), Expr::col(Usage::AgentId)),
    };
    let total = Expr::col(Usage::InputTokens).add(Expr::col(Usage::OutputTokens)).sum();
    statement
        .expr_as(day_expr, "day")
        .expr_as(sub_expr, "sub")
        .expr_as(agent_expr, "agent_id")
        .expr_as(count_users::<Usage>(), "users")
        .expr_as(bigint(Expr::col(Usage::Turns).sum()), "turns")
        .expr_as(bigint(Expr::col(Usage::InputTokens).sum()), "input_tokens")
        .expr_as(bigint(Expr::col(Usage::OutputTokens).sum()), "output_tokens");
    match query.group_by {
        GroupBy::Day => statement.group_by_col(Usage::Day).order_by(Usage::Day, Order::Asc),
        GroupBy::User => statement
            .group_by_col(sub)
            .order_by_expr(total, Order::Desc)
            .order_by(sub, Order::Asc),
        GroupBy::Agent => statement
            .group_by_col(Usage::AgentId)
            .order_by_expr(total, Order::Desc)
            .order_by(Usage::AgentId, Order::Asc),
    };
    statement.limit(query.limit);
    statement
}

#[cfg(test)]
mod tests {
    use sea_query::SqliteQueryBuilder;

    use super::super::tests::{assert_owned, user};
    use super::*;
    use crate::store::scope::{AgentAccess, Role};

    #[test]
    fn usage_statements_are_owned_and_reports_stay_in_their_application() {
        let scope = user(AgentAccess::Only(std::sync::Arc::from([Uuid::now_v7()])));
        let add = add_statement(&scope, &[(20_000, Uuid::now_v7(), Spent::default())]);
        assert_owned(&add, &scope);
        let (sql, _) = add.build(SqliteQueryBuilder);
        assert!(
            sql.contains("ON CONFLICT") && sql.contains("\"excluded\".\"turns\""),
            "{sql}"
        );
        let tokens = tokens_statement(&scope, 20_000);
        assert_owned(&tokens, &scope);
        // A quota is the user's, whichever agents their key reaches.
        assert!(!tokens.to_string(SqliteQueryBuilder).contains("agent_id"));
        let access = AppAccess::granted(scope.application_id().uuid(), Role::Owner);
        for group_by in [GroupBy::Day, GroupBy::User, GroupBy::Agent] {
            let query = UsageQuery {
                from: 1,
                to: 2,
                sub: Some("x".into()),
                agent_id: None,
                group_by,
                limit: 10,
            };
            let (sql, values) = report_statement(&access, &query).build(SqliteQueryBuilder);
            assert!(sql.contains("\"application_id\" = ?"), "{sql}");
            assert!(
                values
                    .0
                    .contains(&sea_query::Value::Uuid(Some(scope.application_id().uuid())))
            );
        }
    }
}
