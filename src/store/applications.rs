//! Applications (tenants) and the operators who are members of them.

use sea_query::{Expr, ExprTrait, LockType, Query};
use uuid::Uuid;

use super::notices::Notice;
use super::schema::{Applications, Memberships, Operators};
use super::scope::ApplicationId;
use super::{Db, PageRequest, StoreError, StoreResult, now_micros};

#[derive(Debug, Clone)]
pub struct Application {
    pub id: ApplicationId,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::from_row!(Application {
    id,
    name,
    created_at,
    updated_at
});

const COLUMNS: [Applications; 4] = [
    Applications::Id,
    Applications::Name,
    Applications::CreatedAt,
    Applications::UpdatedAt,
];

fn select() -> sea_query::SelectStatement {
    Query::select()
        .columns(COLUMNS.map(|c| (Applications::Table, c)))
        .from(Applications::Table)
        .to_owned()
}

/// Creates an application with `owner` as its first owner.
pub async fn create(db: &Db, name: &str, owner: Option<Uuid>) -> StoreResult<Application> {
    let now = now_micros();
    let app = Application {
        id: ApplicationId::generate(),
        name: name.to_owned(),
        created_at: now,
        updated_at: now,
    };
    let insert = Query::insert()
        .into_table(Applications::Table)
        .columns(COLUMNS)
        .values_panic([app.id.into(), app.name.clone().into(), now.into(), now.into()])
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

pub async fn rename(db: &Db, id: ApplicationId, name: &str) -> StoreResult<Option<Application>> {
    db.returning(
        Query::update()
            .table(Applications::Table)
            .value(Applications::Name, name)
            .value(Applications::UpdatedAt, now_micros())
            .and_where(Expr::col(Applications::Id).eq(id))
            .returning(Query::returning().columns(COLUMNS)),
    )
    .await
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
