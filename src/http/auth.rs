//! Operator authentication: login, refresh (rotating, with reuse detection), logout, and `me`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;

use super::Json;
use super::applications::ApplicationView;
use crate::AppState;
use crate::auth::extract::Principal;
use crate::auth::{self, new_refresh_token};
use crate::crypto;
use crate::error::{Error, Result};
use crate::store::operators::{self, Rotation};
use crate::store::{PageRequest, applications, now_micros};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "ops@example.com", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct OperatorView {
    pub id: Uuid,
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Access token (JWT) for `Authorization: Bearer`; short-lived (1 h by default).
    pub access: String,
    /// Refresh token: single use, exchanged at `POST /v1/auth/refresh`.
    pub refresh: String,
    /// Seconds until `access` expires.
    pub expires_in: u64,
    pub user: OperatorView,
}

/// Log in with email and password.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: unknown email or wrong password", body = crate::error::ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts from this address or for this email (`Retry-After`)", body = crate::error::ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Json(body): Json<LoginRequest>,
) -> Result<Json<LoginResponse>> {
    let invalid = || Error::unauthorized("invalid_credentials", "the email or password is wrong");
    if body.password.len() > 1024 || body.email.len() > 254 {
        return Err(invalid());
    }
    let email = body.email.trim().to_lowercase();
    // Counted before any work, and hashing waits for one of a few slots.
    let _hashing = state.logins().admit(peer.map(|p| p.0.0.ip()), &email).await?;
    let operator = operators::find_by_email(state.db(), &email).await?;
    // Verify even when the email is unknown, so both failures take the same time.
    let ok = auth::verify_password(body.password, operator.as_ref().map(|o| o.password_hash.clone())).await?;
    let Some(operator) = operator.filter(|_| ok) else {
        tracing::info!("failed operator login");
        return Err(invalid());
    };
    let (refresh, refresh_hash) = new_refresh_token();
    let expires_at = now_micros() + state.settings().refresh_token_ttl.as_micros() as i64;
    let session_id = operators::open_session(state.db(), operator.id, expires_at, &refresh_hash).await?;
    let access = state.access_tokens().issue(operator.id, session_id)?;
    tracing::info!(operator.id = %operator.id, session.id = %session_id, "operator logged in");
    Ok(Json(LoginResponse {
        access,
        refresh,
        expires_in: state.access_tokens().ttl().as_secs(),
        user: OperatorView {
            id: operator.id,
            email: operator.email,
        },
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh: String,
}

#[derive(Serialize, ToSchema)]
pub struct RefreshResponse {
    pub access: String,
    /// The replacement refresh token; the one sent is now spent.
    pub refresh: String,
    pub expires_in: u64,
}

/// Exchange a refresh token for a new access token and a new refresh token.
///
/// The refresh token sent is spent. Sending a spent one again revokes the whole session (every
/// token descended from the same login) and answers `refresh_token_reused`.
#[utoipa::path(
    post, path = "/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = RefreshResponse),
        (status = 401, description = "`invalid_token` (unknown, expired or revoked) or `refresh_token_reused`", body = crate::error::ErrorBody),
    )
)]
async fn refresh(State(state): State<AppState>, Json(body): Json<RefreshRequest>) -> Result<Json<RefreshResponse>> {
    let invalid = || Error::unauthorized("invalid_token", "the refresh token is unknown, expired or revoked");
    if body.refresh.len() > 256 || !body.refresh.starts_with(auth::REFRESH_TOKEN_PREFIX) {
        return Err(invalid());
    }
    let presented = crypto::sha256(body.refresh.as_bytes());
    let (refresh, refresh_hash) = new_refresh_token();
    match operators::rotate_refresh(state.db(), &presented, &refresh_hash).await? {
        Rotation::Rotated {
            session_id,
            operator_id,
        } => {
            let access = state.access_tokens().issue(operator_id, session_id)?;
            Ok(Json(RefreshResponse {
                access,
                refresh,
                expires_in: state.access_tokens().ttl().as_secs(),
            }))
        }
        Rotation::Reused => {
            tracing::warn!("a spent refresh token was presented again; its session is revoked");
            Err(Error::unauthorized(
                "refresh_token_reused",
                "this refresh token was already used; the session has been revoked, log in again",
            ))
        }
        Rotation::Invalid => Err(invalid()),
    }
}

/// End this session: its access and refresh tokens stop working at once.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    security(("operator" = [])),
    responses((status = 204, description = "Logged out"))
)]
async fn logout(State(state): State<AppState>, principal: Principal) -> Result<StatusCode> {
    let Principal::Operator { session_id, .. } = principal else {
        return Err(Error::Forbidden("API keys have no session to end".into()));
    };
    operators::revoke_session(state.db(), session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub id: Uuid,
    pub email: String,
    /// The applications this operator is a member of (up to 100).
    pub applications: Vec<ApplicationView>,
}

/// The logged-in operator and their applications.
#[utoipa::path(
    get, path = "/v1/auth/me", tag = "auth",
    security(("operator" = [])),
    responses((status = 200, description = "The operator", body = MeResponse))
)]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<MeResponse>> {
    let id = principal.operator()?;
    let operator = operators::find(state.db(), id)
        .await?
        .ok_or_else(|| Error::unauthorized("invalid_token", "the operator no longer exists"))?;
    let (apps, _) = applications::list_for_operator(
        state.db(),
        id,
        PageRequest {
            limit: 100,
            before: None,
        },
    )
    .await?;
    Ok(Json(MeResponse {
        id,
        email: operator.email,
        applications: apps
            .into_iter()
            .map(|app| ApplicationView::new(app, state.settings()))
            .collect(),
    }))
}
