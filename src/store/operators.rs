//! Operators (dashboard users), their login sessions and refresh tokens.

use sea_query::{Expr, ExprTrait, Query};
use uuid::Uuid;

use super::schema::{OperatorSessions, Operators, RefreshTokens};
use super::{Db, StoreError, StoreResult, now_micros};

#[derive(Debug, Clone)]
pub struct Operator {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub created_at: i64,
}

crate::from_row!(Operator {
    id,
    email,
    password_hash,
    created_at
});

const OPERATOR_COLUMNS: [Operators; 4] = [
    Operators::Id,
    Operators::Email,
    Operators::PasswordHash,
    Operators::CreatedAt,
];

pub async fn create(db: &Db, email: &str, password_hash: &str) -> StoreResult<Operator> {
    let operator = Operator {
        id: Uuid::now_v7(),
        email: email.to_owned(),
        password_hash: password_hash.to_owned(),
        created_at: now_micros(),
    };
    db.execute(
        Query::insert()
            .into_table(Operators::Table)
            .columns(OPERATOR_COLUMNS)
            .values_panic([
                operator.id.into(),
                operator.email.clone().into(),
                operator.password_hash.clone().into(),
                operator.created_at.into(),
            ]),
    )
    .await?;
    Ok(operator)
}

pub async fn find_by_email(db: &Db, email: &str) -> StoreResult<Option<Operator>> {
    db.row(
        Query::select()
            .columns(OPERATOR_COLUMNS)
            .from(Operators::Table)
            .and_where(Expr::col(Operators::Email).eq(email)),
    )
    .await
}

pub async fn find(db: &Db, id: Uuid) -> StoreResult<Option<Operator>> {
    db.row(
        Query::select()
            .columns(OPERATOR_COLUMNS)
            .from(Operators::Table)
            .and_where(Expr::col(Operators::Id).eq(id)),
    )
    .await
}

/// The operator behind a session that is neither revoked nor past its absolute expiry.
pub async fn live_session_operator(db: &Db, session_id: Uuid) -> StoreResult<Option<Uuid>> {
    struct Row {
        operator_id: Uuid,
    }
    crate::from_row!(Row { operator_id });
    let row: Option<Row> = db
        .row(
            Query::select()
                .column(OperatorSessions::OperatorId)
                .from(OperatorSessions::Table)
                .and_where(Expr::col(OperatorSessions::Id).eq(session_id))
                .and_where(Expr::col(OperatorSessions::RevokedAt).is_null())
                .and_where(Expr::col(OperatorSessions::ExpiresAt).gt(now_micros())),
        )
        .await?;
    Ok(row.map(|r| r.operator_id))
}

/// Opens a session (a refresh-token family) with its first refresh token.
pub async fn open_session(db: &Db, operator_id: Uuid, expires_at: i64, refresh_hash: &[u8]) -> StoreResult<Uuid> {
    let session_id = Uuid::now_v7();
    let now = now_micros();
    let session = Query::insert()
        .into_table(OperatorSessions::Table)
        .columns([
            OperatorSessions::Id,
            OperatorSessions::OperatorId,
            OperatorSessions::CreatedAt,
            OperatorSessions::ExpiresAt,
        ])
        .values_panic([session_id.into(), operator_id.into(), now.into(), expires_at.into()])
        .to_owned();
    let refresh = insert_refresh(session_id, refresh_hash, now);
    db.transaction(move |tx| {
        Box::pin(async move {
            tx.execute(&session).await?;
            tx.execute(&refresh).await?;
            Ok(())
        })
    })
    .await?;
    Ok(session_id)
}

fn insert_refresh(session_id: Uuid, hash: &[u8], now: i64) -> sea_query::InsertStatement {
    Query::insert()
        .into_table(RefreshTokens::Table)
        .columns([
            RefreshTokens::TokenHash,
            RefreshTokens::SessionId,
            RefreshTokens::CreatedAt,
        ])
        .values_panic([hash.to_vec().into(), session_id.into(), now.into()])
        .to_owned()
}

/// What presenting a refresh token led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now spent and `new_hash` replaces it in the same session.
    Rotated { session_id: Uuid, operator_id: Uuid },
    /// The token had already been spent: the whole session is now revoked.
    Reused,
    /// No such token, or its session was revoked or has expired.
    Invalid,
}

/// Spends a refresh token and stores its successor, atomically: of two racing refreshes with one
/// token exactly one wins, and the other counts as reuse.
pub async fn rotate_refresh(db: &Db, presented_hash: &[u8], new_hash: &[u8]) -> StoreResult<Rotation> {
    struct Spent {
        session_id: Uuid,
    }
    crate::from_row!(Spent { session_id });
    struct Session {
        operator_id: Uuid,
        expires_at: i64,
        revoked_at: Option<i64>,
    }
    crate::from_row!(Session {
        operator_id,
        expires_at,
        revoked_at
    });
    let now = now_micros();
    let presented = presented_hash.to_vec();
    let new_hash = new_hash.to_vec();
    db.transaction(move |tx| {
        Box::pin(async move {
            let spend = Query::update()
                .table(RefreshTokens::Table)
                .value(RefreshTokens::SpentAt, now)
                .and_where(Expr::col(RefreshTokens::TokenHash).eq(presented.clone()))
                .and_where(Expr::col(RefreshTokens::SpentAt).is_null())
                .returning_col(RefreshTokens::SessionId)
                .to_owned();
            let Some(spent) = tx.row::<Spent>(&spend).await? else {
                // Spent before, or never issued?
                let earlier = Query::select()
                    .column(RefreshTokens::SessionId)
                    .from(RefreshTokens::Table)
                    .and_where(Expr::col(RefreshTokens::TokenHash).eq(presented))
                    .to_owned();
                let Some(earlier) = tx.row::<Spent>(&earlier).await? else {
                    return Ok(Rotation::Invalid);
                };
                let revoke = Query::update()
                    .table(OperatorSessions::Table)
                    .value(OperatorSessions::RevokedAt, now)
                    .and_where(Expr::col(OperatorSessions::Id).eq(earlier.session_id))
                    .and_where(Expr::col(OperatorSessions::RevokedAt).is_null())
                    .to_owned();
                tx.execute(&revoke).await?;
                return Ok(Rotation::Reused);
            };
            let session = Query::select()
                .columns([
                    OperatorSessions::OperatorId,
                    OperatorSessions::ExpiresAt,
                    OperatorSessions::RevokedAt,
                ])
                .from(OperatorSessions::Table)
                .and_where(Expr::col(OperatorSessions::Id).eq(spent.session_id))
                .to_owned();
            let session: Session = tx.row(&session).await?.ok_or(StoreError::NotFound)?;
            if session.revoked_at.is_some() || session.expires_at <= now {
                // The session is dead either way; the token stays spent.
                return Ok(Rotation::Invalid);
            }
            tx.execute(&insert_refresh(spent.session_id, &new_hash, now)).await?;
            Ok(Rotation::Rotated {
                session_id: spent.session_id,
                operator_id: session.operator_id,
            })
        })
    })
    .await
}

/// Ends a session: its access and refresh tokens stop working.
pub async fn revoke_session(db: &Db, session_id: Uuid) -> StoreResult<()> {
    db.execute(
        Query::update()
            .table(OperatorSessions::Table)
            .value(OperatorSessions::RevokedAt, now_micros())
            .and_where(Expr::col(OperatorSessions::Id).eq(session_id))
            .and_where(Expr::col(OperatorSessions::RevokedAt).is_null()),
    )
    .await?;
    Ok(())
}
