//! An application's usage: tokens and turns per day, user or agent.

use axum::extract::State;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Json, Path, Query};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::error::{Error, Result};
use crate::metering::today;
use crate::store::MICROS_PER_DAY;
use crate::store::scope::validate_sub;
use crate::store::user_data::{self, Day, GroupBy, UsageGroup, UsageQuery, UsageRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

/// The longest span one report covers, in days.
const MAX_DAYS: i32 = 366;
/// Most rows of a report grouped by user or agent (the heaviest first).
const MAX_GROUPS: u64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// First day (UTC, `YYYY-MM-DD`, inclusive); default 29 days before `to`.
    pub from: Option<String>,
    /// Last day (UTC, `YYYY-MM-DD`, inclusive); default today.
    pub to: Option<String>,
    /// Only this user.
    pub sub: Option<String>,
    /// Only this agent.
    pub agent_id: Option<Uuid>,
    /// `day` (default), `user` or `agent`.
    pub group_by: Option<String>,
}

/// One group of a usage report: the key of its grouping, and what was spent.
#[derive(Serialize, ToSchema)]
pub struct UsageEntry {
    /// The day (UTC), when grouped by day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
    /// The user, when grouped by user (empty for turns made with a completions API key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The agent, when grouped by agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    /// Distinct users in the group.
    pub users: i64,
    pub turns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    pub data: Vec<UsageEntry>,
}

/// One day's spending on one agent, in a user's export.
#[derive(Serialize, ToSchema)]
pub struct UsageDay {
    pub day: NaiveDate,
    pub agent_id: Uuid,
    pub turns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl From<UsageRow> for UsageDay {
    fn from(row: UsageRow) -> Self {
        Self {
            day: date_of(row.day),
            agent_id: row.agent_id,
            turns: row.turns,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
        }
    }
}

fn date_of(day: Day) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day + EPOCH_CE_DAYS).unwrap_or_default()
}

/// Days from 0001-01-01 to 1970-01-01.
const EPOCH_CE_DAYS: i32 = 719_163;

/// A day given as `YYYY-MM-DD` (or an RFC 3339 time: its day, UTC).
fn parse_day(field: &str, text: &str) -> Result<Day> {
    Ok((super::parse_time(field, text, false)?.div_euclid(MICROS_PER_DAY)) as Day)
}

impl UsageParams {
    fn query(self) -> Result<UsageQuery> {
        let to = self
            .to
            .as_deref()
            .map(|t| parse_day("to", t))
            .transpose()?
            .unwrap_or_else(today);
        let from = self
            .from
            .as_deref()
            .map(|f| parse_day("from", f))
            .transpose()?
            .unwrap_or(to - 29);
        if from > to {
            return Err(Error::invalid_field("from", "must not be after `to`"));
        }
        if to - from >= MAX_DAYS {
            return Err(Error::invalid_field(
                "from",
                format!("a report covers at most {MAX_DAYS} days"),
            ));
        }
        if let Some(sub) = &self.sub {
            validate_sub(sub).map_err(|problem| Error::invalid_field("sub", problem))?;
        }
        let group_by = match self.group_by.as_deref() {
            None | Some("day") => GroupBy::Day,
            Some("user") => GroupBy::User,
            Some("agent") => GroupBy::Agent,
            Some(_) => return Err(Error::InvalidRequest("group_by must be day, user or agent".into())),
        };
        Ok(UsageQuery {
            from,
            to,
            sub: self.sub,
            agent_id: self.agent_id,
            group_by,
            limit: MAX_GROUPS,
        })
    }
}

impl From<UsageGroup> for UsageEntry {
    fn from(group: UsageGroup) -> Self {
        Self {
            day: group.day.map(date_of),
            sub: group.sub,
            agent_id: group.agent_id,
            users: group.users,
            turns: group.spent.turns,
            input_tokens: group.spent.input_tokens,
            output_tokens: group.spent.output_tokens,
        }
    }
}

/// Tokens and turns of the application's users, per day (default), user or agent.
///
/// Counted from every stored turn (the provider's `usage`, estimated where it reports none and
/// for `echo`), and written a second or so after the turn. Grouped by user or agent, the heaviest
/// 1,000 groups come first.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/usage", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id"), UsageParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The usage, one entry per group", body = UsageReport))
)]
async fn usage(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<UsageParams>,
) -> Result<Json<UsageReport>> {
    let access = principal.access(&state, app_id).await?;
    let query = params.query()?;
    let groups = user_data::usage_report(state.db(), &access, &query).await?;
    Ok(Json(UsageReport {
        data: groups.into_iter().map(UsageEntry::from).collect(),
    }))
}
