//! Applications (tenants) and the operators who are members of them.

use sea_query::{Expr, ExprTrait, LockType, Query};
use uuid::Uuid;

use std::sync::Arc;
use std::time::Duration;

use super::cache::RowCache;
use super::notices::Notice;
use super::row::Json;
use super::schema::{Applications, Memberships, Operators};
use super::scope::ApplicationId;
use super::{Db, PageRequest, StoreError, StoreResult, now_micros};
use crate::edge::limits::LimitsOverride;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct Application {
    pub id: ApplicationId,
    pub name: String,
    /// Origins browsers may call the data plane from (normalised; empty: any).
    pub allowed_origins: Json<Vec<String>>,
    /// Per-user limits that override the server's defaults.
    pub limits: Json<LimitsOverride>,
    /// How long users' data is kept, and whether their words are kept at all.
    pub retention: Json<Retention>,
    /// Replies go on when their client leaves (it may resume them).
    pub resumable: bool,
    /// What its webhooks receive (kept by `webhooks`).
    pub webhook_events: crate::store::webhooks::EventSet,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::from_row!(Application {
    id,
    name,
    allowed_origins,
    limits,
    retention,
    resumable,
    webhook_events,
    created_at,
    updated_at
});

const COLUMNS: [Applications; 9] = [
    Applications::Id,
    Applications::Name,
    Applications::AllowedOrigins,
    Applications::Limits,
    Applications::Retention,
    Applications::Resumable,
    Applications::WebhookEvents,
    Applications::CreatedAt,
    Applications::UpdatedAt,
];

/// The most days a retention period may name (a hundred years; `null` is forever).
pub const MAX_RETENTION_DAYS: i64 = 36_500;

/// An application's retention policy: how long its users' conversations and memory are kept, and
/// whether their text is kept at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Retention {
    /// Days a conversation is kept after its last activity; `null`: forever; `0`: nothing past
    /// the next purge.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 36500)]
    pub conversation_days: Option<i64>,
    /// Days a memory record is kept after it was last written; `null`: forever; `0`: nothing
    /// past the next purge.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 36500)]
    pub memory_days: Option<i64>,
    /// `false` is privacy mode: conversations and message metadata (role, times, usage,
    /// feedback) are kept, message text and memory never are, and the model sees only what each
    /// request carries.
    #[serde(default = "keep_content")]
    pub store_content: bool,
}

fn keep_content() -> bool {
    true
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            conversation_days: None,
            memory_days: None,
            store_content: true,
        }
    }
}

impl Retention {
    /// Whether the purge has anything to do for this policy.
    pub fn purges(&self) -> bool {
        self.conversation_days.is_some() || self.memory_days.is_some()
    }
}

/// A change to a retention policy: a field left out stays as it is, `null` is forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionChange {
    #[serde(default, deserialize_with = "crate::edge::limits::present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 36500)]
    pub conversation_days: Option<Option<i64>>,
    #[serde(default, deserialize_with = "crate::edge::limits::present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 36500)]
    pub memory_days: Option<Option<i64>>,
    pub store_content: Option<bool>,
}

impl RetentionChange {
    /// Refuses negative and absurd day counts.
    pub fn validate(&self) -> crate::error::Result<()> {
        for (field, days) in [
            ("conversation_days", self.conversation_days),
            ("memory_days", self.memory_days),
        ] {
            if let Some(Some(days)) = days
                && !(0..=MAX_RETENTION_DAYS).contains(&days)
            {
                return Err(crate::error::Error::invalid_field(
                    format!("retention.{field}"),
                    format!("must be between 0 and {MAX_RETENTION_DAYS} days, or null to keep forever"),
                ));
            }
        }
        Ok(())
    }

    /// This change over `current`.
    pub fn apply(&self, current: Retention) -> Retention {
        Retention {
            conversation_days: self.conversation_days.unwrap_or(current.conversation_days),
            memory_days: self.memory_days.unwrap_or(current.memory_days),
            store_content: self.store_content.unwrap_or(current.store_content),
        }
    }
}

fn json_value<T: serde::Serialize>(value: &T) -> sea_query::Value {
    serde_json::to_value(value).expect("serializes").into()
}

fn select() -> sea_query::SelectStatement {
    Query::select()
        .columns(COLUMNS.map(|c| (Applications::Table, c)))
        .from(Applications::Table)
        .to_owned()
}

/// What an application is made with or changed to; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ApplicationSettings {
    pub name: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub limits: Option<LimitsOverride>,
    pub retention: Option<RetentionChange>,
    pub resumable: Option<bool>,
}

/// Creates an application with `owner` as its first owner.
pub async fn create(db: &Db, settings: ApplicationSettings, owner: Option<Uuid>) -> StoreResult<Application> {
    let now = now_micros();
    let app = Application {
        id: ApplicationId::generate(),
        name: settings.name.unwrap_or_default(),
        allowed_origins: Json(settings.allowed_origins.unwrap_or_default()),
        limits: Json(settings.limits.unwrap_or_default()),
        retention: Json(settings.retention.unwrap_or_default().apply(Retention::default())),
        resumable: settings.resumable.unwrap_or(false),
        webhook_events: Default::default(),
        created_at: now,
        updated_at: now,
    };
    let insert = Query::insert()
        .into_table(Applications::Table)
        .columns(COLUMNS)
        .values_panic([
            app.id.into(),
            app.name.clone().into(),
            json_value(&app.allowed_origins.0).into(),
            json_value(&app.limits.0).into(),
            json_value(&app.retention.0).into(),
            app.resumable.into(),
            String::new().into(),
            now.into(),
            now.into(),
        ])
        .to_owned();
    let membership = owner.map(|owner| insert_membership(app.id.uuid(), owner, MemberRole::Owner, now));
    db.transaction(move |tx| {
        Box::pin(async move {
            tx.execute(&insert).await?;
            if let Some(membership) = membership {
                tx.execute(&membership).await?;
            }
            Ok(())
        })
    })
    .await?;
    Ok(app)
}

pub async fn find(db: &Db, id: Uuid) -> StoreResult<Option<Application>> {
    db.row(select().and_where(Expr::col((Applications::Table, Applications::Id)).eq(id)))
        .await
}

/// The applications an operator is a member of.
pub async fn list_for_operator(
    db: &Db,
    operator_id: Uuid,
    page: PageRequest,
) -> StoreResult<(Vec<Application>, Option<Uuid>)> {
    let mut query = select()
        .inner_join(
            Memberships::Table,
            Expr::col((Memberships::Table, Memberships::ApplicationId)).equals((Applications::Table, Applications::Id)),
        )
        .and_where(Expr::col((Memberships::Table, Memberships::OperatorId)).eq(operator_id))
        .to_owned();
    page.apply(&mut query, (Applications::Table, Applications::Id));
    Ok(page.finish(db.rows(&query).await?, |a: &Application| a.id.uuid()))
}

/// Changes an application; other instances forget their copy when this commits.
pub async fn update(db: &Db, id: ApplicationId, changes: ApplicationSettings) -> StoreResult<Option<Application>> {
    let mut update = Query::update();
    update
        .table(Applications::Table)
        .value(Applications::UpdatedAt, now_micros());
    if let Some(name) = changes.name {
        update.value(Applications::Name, name);
    }
    if let Some(origins) = &changes.allowed_origins {
        update.value(Applications::AllowedOrigins, json_value(origins));
    }
    if let Some(limits) = &changes.limits {
        update.value(Applications::Limits, json_value(limits));
    }
    if let Some(resumable) = changes.resumable {
        update.value(Applications::Resumable, resumable);
    }
    update
        .and_where(Expr::col(Applications::Id).eq(id))
        .returning(Query::returning().columns(COLUMNS));
    // A retention change merges into the stored policy, read under a lock so two changes of
    // different fields both hold.
    let current = changes.retention.map(|change| {
        let read = select()
            .and_where(Expr::col((Applications::Table, Applications::Id)).eq(id))
            .lock(LockType::Update)
            .to_owned();
        (read, change)
    });
    db.transaction(move |tx| {
        Box::pin(async move {
            if let Some((read, change)) = current {
                let Some(app) = tx.row::<Application>(&read).await? else {
                    return Ok(None);
                };
                update.value(Applications::Retention, json_value(&change.apply(app.retention.0)));
            }
            let updated: Option<Application> = tx.row(&update).await?;
            if updated.is_some() {
                tx.notify(Notice::ApplicationChanged(id.uuid())).await?;
            }
            Ok(updated)
        })
    })
    .await
}

/// Every application's id and retention policy, for the purge.
pub async fn retention_policies(db: &Db) -> StoreResult<Vec<(ApplicationId, Retention)>> {
    struct Policy {
        id: ApplicationId,
        retention: Json<Retention>,
    }
    crate::from_row!(Policy { id, retention });
    let rows: Vec<Policy> = db
        .rows(
            &Query::select()
                .columns([Applications::Id, Applications::Retention])
                .from(Applications::Table),
        )
        .await?;
    Ok(rows.into_iter().map(|p| (p.id, p.retention.0)).collect())
}

/// Applications by id, kept in memory for the data plane (origins and limits on every request).
/// Entries live a few seconds, so a change through another instance is seen soon even if its
/// notice is lost.
pub struct ApplicationCache(RowCache<Application>);

impl Default for ApplicationCache {
    fn default() -> Self {
        Self(RowCache::new(100_000, Duration::from_secs(5), Duration::from_secs(1)))
    }
}

impl ApplicationCache {
    pub async fn get(&self, db: &Db, id: Uuid) -> StoreResult<Option<Arc<Application>>> {
        self.0.get(id, || find(db, id)).await
    }

    pub async fn invalidate(&self, id: Uuid) {
        self.0.invalidate(id).await;
    }

    pub fn clear(&self) {
        self.0.clear();
    }
}

/// Deletes an application and, by cascade, everything it holds; other instances forget its keys
/// and agents when this commits.
pub async fn delete(db: &Db, id: ApplicationId) -> StoreResult<bool> {
    let delete = Query::delete()
        .from_table(Applications::Table)
        .and_where(Expr::col(Applications::Id).eq(id))
        .to_owned();
    db.transaction(move |tx| {
        Box::pin(async move {
            let deleted = tx.execute(&delete).await? > 0;
            if deleted {
                tx.notify(Notice::Application(id.uuid())).await?;
            }
            Ok(deleted)
        })
    })
    .await
}

#[derive(Debug, Clone)]
pub struct Member {
    pub operator_id: Uuid,
    pub email: String,
    pub role: MemberRole,
    pub created_at: i64,
}

crate::from_row!(Member {
    operator_id,
    email,
    role,
    created_at
});

crate::text_enum! {
    /// An operator's role in an application.
    #[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum MemberRole {
        /// Manages everything, including members and deleting the application.
        Owner = "owner",
        /// Manages agents, keys and providers.
        Admin = "admin",
    }
}

fn insert_membership(app_id: Uuid, operator_id: Uuid, role: MemberRole, now: i64) -> sea_query::InsertStatement {
    Query::insert()
        .into_table(Memberships::Table)
        .columns([
            Memberships::ApplicationId,
            Memberships::OperatorId,
            Memberships::Role,
            Memberships::CreatedAt,
        ])
        .values_panic([app_id.into(), operator_id.into(), role.into(), now.into()])
        .to_owned()
}

/// The operator's role in the application, if they are a member.
pub async fn role_of(db: &Db, app_id: Uuid, operator_id: Uuid) -> StoreResult<Option<MemberRole>> {
    struct Row {
        role: MemberRole,
    }
    crate::from_row!(Row { role });
    let row: Option<Row> = db
        .row(
            Query::select()
                .column(Memberships::Role)
                .from(Memberships::Table)
                .and_where(Expr::col(Memberships::ApplicationId).eq(app_id))
                .and_where(Expr::col(Memberships::OperatorId).eq(operator_id)),
        )
        .await?;
    Ok(row.map(|r| r.role))
}

fn select_members() -> sea_query::SelectStatement {
    Query::select()
        .column((Memberships::Table, Memberships::OperatorId))
        .column((Operators::Table, Operators::Email))
        .column((Memberships::Table, Memberships::Role))
        .column((Memberships::Table, Memberships::CreatedAt))
        .from(Memberships::Table)
        .inner_join(
            Operators::Table,
            Expr::col((Operators::Table, Operators::Id)).equals((Memberships::Table, Memberships::OperatorId)),
        )
        .to_owned()
}

pub async fn list_members(
    db: &Db,
    app_id: ApplicationId,
    page: PageRequest,
) -> StoreResult<(Vec<Member>, Option<Uuid>)> {
    let mut query = select_members()
        .and_where(Expr::col((Memberships::Table, Memberships::ApplicationId)).eq(app_id))
        .to_owned();
    page.apply(&mut query, (Memberships::Table, Memberships::OperatorId));
    Ok(page.finish(db.rows(&query).await?, |m: &Member| m.operator_id))
}

pub async fn add_member(db: &Db, app_id: ApplicationId, operator_id: Uuid, role: MemberRole) -> StoreResult<Member> {
    db.execute(insert_membership(app_id.uuid(), operator_id, role, now_micros()))
        .await?;
    db.row::<Member>(
        select_members()
            .and_where(Expr::col((Memberships::Table, Memberships::ApplicationId)).eq(app_id))
            .and_where(Expr::col((Memberships::Table, Memberships::OperatorId)).eq(operator_id)),
    )
    .await?
    .ok_or(StoreError::NotFound)
}

/// Why a member could not be removed.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoveMember {
    Removed,
    NotAMember,
    LastOwner,
}

/// Removes a member, refusing to leave the application without an owner. Runs in one transaction
/// so two owners removing each other cannot both succeed.
pub async fn remove_member(db: &Db, app_id: ApplicationId, operator_id: Uuid) -> StoreResult<RemoveMember> {
    let owners = select_members()
        .and_where(Expr::col((Memberships::Table, Memberships::ApplicationId)).eq(app_id))
        .and_where(Expr::col((Memberships::Table, Memberships::Role)).eq(MemberRole::Owner))
        // PostgreSQL: hold the owners' rows until commit (SQLite has one writer anyway).
        .lock_with_tables(LockType::Update, [Memberships::Table])
        .to_owned();
    let remove = Query::delete()
        .from_table(Memberships::Table)
        .and_where(Expr::col(Memberships::ApplicationId).eq(app_id))
        .and_where(Expr::col(Memberships::OperatorId).eq(operator_id))
        .to_owned();
    db.transaction(move |tx| {
        Box::pin(async move {
            let owners: Vec<Member> = tx.rows(&owners).await?;
            let is_owner = owners.iter().any(|m| m.operator_id == operator_id);
            if is_owner && owners.len() == 1 {
                return Ok(RemoveMember::LastOwner);
            }
            Ok(if tx.execute(&remove).await? > 0 {
                RemoveMember::Removed
            } else {
                RemoveMember::NotAMember
            })
        })
    })
    .await
}
