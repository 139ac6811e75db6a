//! Applications (tenants) and their members.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApplicationPage, Json, ListParams, MemberPage, Path, Query, timestamp, validate_name};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::edge::limits::{Limits, LimitsOverride};
use crate::edge::origins;
use crate::error::{Error, Result};
use crate::store::applications::{
    self, Application, ApplicationSettings, Member, MemberRole, RemoveMember, Retention, RetentionChange,
};
use crate::store::operators;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_application, list_applications))
        .routes(routes!(get_application, update_application, delete_application))
        .routes(routes!(add_member, list_members))
        .routes(routes!(remove_member))
}

#[derive(Serialize, ToSchema)]
pub struct ApplicationView {
    pub id: Uuid,
    pub name: String,
    /// Origins browsers may call the data plane from (`https://app.example.com`,
    /// `https://*.example.com`); empty: any origin. An agent's own list replaces it.
    pub allowed_origins: Vec<String>,
    /// The per-user limits in force (`null`: no limit): the application's own, else the
    /// server's defaults.
    pub limits: Limits,
    /// How long users' conversations and memory are kept, and whether their text is kept at all
    /// (`store_content: false`, privacy mode).
    pub retention: Retention,
    /// A reply goes on when its client disconnects, so the client can resume it after a reload
    /// (`GET …/conversations/{id}/stream`); `false`: it stops and is stored incomplete.
    pub resumable: bool,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl ApplicationView {
    pub fn new(app: Application, settings: &crate::Settings) -> Self {
        Self {
            id: app.id.uuid(),
            name: app.name,
            allowed_origins: app.allowed_origins.0,
            limits: app.limits.0.effective(settings),
            retention: app.retention.0,
            resumable: app.resumable,
            created_at: timestamp(app.created_at),
            updated_at: timestamp(app.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme support", "allowed_origins": ["https://app.acme.example"], "limits": {"user_completions_per_minute": 20, "user_tokens_per_day": 200000}, "retention": {"conversation_days": 30, "memory_days": 365}}))]
pub struct CreateApplication {
    pub name: String,
    /// Origins browsers may call the data plane from; empty or left out: any origin.
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    /// Per-user limits; a field left out follows the server's default, `null` is no limit.
    #[serde(default)]
    pub limits: Option<LimitsOverride>,
    /// Retention and privacy mode; a field left out keeps everything (forever, text included).
    #[serde(default)]
    pub retention: Option<RetentionChange>,
    /// Replies go on when their client leaves, to be resumed (default `false`).
    #[serde(default)]
    pub resumable: Option<bool>,
}

fn validate_retention(retention: Option<RetentionChange>) -> Result<Option<RetentionChange>> {
    if let Some(retention) = &retention {
        retention.validate()?;
    }
    Ok(retention)
}

/// Checks and normalises an allowed-origins list from a request body.
pub fn validate_origins(list: Option<Vec<String>>) -> Result<Option<Vec<String>>> {
    list.map(|list| origins::normalize(&list).map_err(|problem| Error::invalid_field("allowed_origins", problem)))
        .transpose()
}

fn validate_limits(limits: Option<LimitsOverride>) -> Result<Option<LimitsOverride>> {
    if let Some(limits) = &limits {
        limits.validate()?;
    }
    Ok(limits)
}

/// Create an application; the operator creating it becomes its owner.
#[utoipa::path(
    post, path = "/v1/applications", tag = "applications",
    request_body = CreateApplication,
    security(("operator" = [])),
    responses((status = 201, description = "Created", body = ApplicationView))
)]
async fn create_application(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateApplication>,
) -> Result<(StatusCode, Json<ApplicationView>)> {
    let operator = principal.operator()?;
    let settings = ApplicationSettings {
        name: Some(validate_name("name", &body.name)?),
        allowed_origins: validate_origins(body.allowed_origins)?,
        limits: validate_limits(body.limits)?,
        retention: validate_retention(body.retention)?,
        resumable: body.resumable,
    };
    let app = applications::create(state.db(), settings, Some(operator)).await?;
    tracing::info!(application.id = %app.id, operator.id = %operator, "application created");
    Ok((StatusCode::CREATED, Json(ApplicationView::new(app, state.settings()))))
}

/// List the applications the caller can administer (an API key sees its own).
#[utoipa::path(
    get, path = "/v1/applications", tag = "applications",
    params(ListParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of applications", body = ApplicationPage))
)]
async fn list_applications(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> Result<Json<ApplicationPage>> {
    let page = params.page()?;
    let (apps, next) = match &principal {
        Principal::Operator { id, .. } => applications::list_for_operator(state.db(), *id, page).await?,
        Principal::ApiKey(key) => {
            principal.access(&state, key.application_id.uuid()).await?;
            let app = applications::find(state.db(), key.application_id.uuid()).await?;
            let app = app.filter(|a| page.before.is_none_or(|before| a.id.uuid() < before));
            (app.into_iter().collect(), None)
        }
    };
    Ok(Json(ApplicationPage::new(apps, next, |app| {
        ApplicationView::new(app, state.settings())
    })))
}

/// Get an application.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The application", body = ApplicationView))
)]
async fn get_application(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
) -> Result<Json<ApplicationView>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let app = applications::find(state.db(), app_id.uuid())
        .await?
        .ok_or_else(|| Error::not_found("application"))?;
    Ok(Json(ApplicationView::new(app, state.settings())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"allowed_origins": ["https://app.acme.example", "https://*.acme.example"], "limits": {"user_requests_per_minute": 120, "user_completions_per_minute": 20, "user_tokens_per_day": null}, "retention": {"conversation_days": 30, "store_content": true}}))]
pub struct UpdateApplication {
    pub name: Option<String>,
    /// Replaces the allowed origins (`[]`: any origin).
    pub allowed_origins: Option<Vec<String>>,
    /// Replaces the application's limits: a field left out follows the server's default
    /// (`{}` returns to the defaults), `null` is no limit.
    pub limits: Option<LimitsOverride>,
    /// Changes the retention policy: a field left out stays as it is, a day count of `null`
    /// keeps forever.
    pub retention: Option<RetentionChange>,
    /// Replies go on when their client leaves, to be resumed.
    pub resumable: Option<bool>,
}

/// Change an application: its name, allowed origins, per-user limits or retention policy.
#[utoipa::path(
    patch, path = "/v1/applications/{app_id}", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id")),
    request_body = UpdateApplication,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The updated application", body = ApplicationView))
)]
async fn update_application(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Json(body): Json<UpdateApplication>,
) -> Result<Json<ApplicationView>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let changes = ApplicationSettings {
        name: body.name.map(|name| validate_name("name", &name)).transpose()?,
        allowed_origins: validate_origins(body.allowed_origins)?,
        limits: validate_limits(body.limits)?,
        retention: validate_retention(body.retention)?,
        resumable: body.resumable,
    };
    let app = applications::update(state.db(), app_id, changes)
        .await?
        .ok_or_else(|| Error::not_found("application"))?;
    // This instance forgets its copy at once; the others when they hear the notice.
    state.applications().invalidate(app_id.uuid()).await;
    Ok(Json(ApplicationView::new(app, state.settings())))
}

/// Delete an application and everything in it (owners only).
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id")),
    security(("operator" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_application(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
) -> Result<StatusCode> {
    let access = principal.access(&state, app_id).await?;
    access.require_owner()?;
    let app_id = access.app_id();
    if !applications::delete(state.db(), app_id).await? {
        return Err(Error::not_found("application"));
    }
    // Its keys and agents went with it (cascade): forget them here and on every other instance.
    crate::invalidation::evict(&state, crate::invalidation::Notice::Application(app_id.uuid())).await;
    tracing::info!(application.id = %app_id, "application deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    pub operator_id: Uuid,
    pub email: String,
    pub role: MemberRole,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            operator_id: m.operator_id,
            email: m.email,
            role: m.role,
            created_at: timestamp(m.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "colleague@example.com", "role": "admin"}))]
pub struct AddMember {
    /// An existing operator's email (operators are made with `confidant admin create`).
    pub email: String,
    pub role: MemberRole,
}

/// Add an existing operator to the application (owners only).
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/members", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id")),
    request_body = AddMember,
    security(("operator" = [])),
    responses((status = 201, description = "Added", body = MemberView))
)]
async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Json(body): Json<AddMember>,
) -> Result<(StatusCode, Json<MemberView>)> {
    let access = principal.access(&state, app_id).await?;
    access.require_owner()?;
    let app_id = access.app_id();
    let email = crate::auth::normalize_email(&body.email)?;
    let operator = operators::find_by_email(state.db(), &email).await?.ok_or_else(|| {
        Error::invalid_field(
            "email",
            "no operator has this email; create one with `confidant admin create`",
        )
    })?;
    let member = applications::add_member(state.db(), app_id, operator.id, body.role).await?;
    Ok((StatusCode::CREATED, Json(member.into())))
}

/// List the application's members.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/members", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id"), ListParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of members", body = MemberPage))
)]
async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<ListParams>,
) -> Result<Json<MemberPage>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let (members, next) = applications::list_members(state.db(), app_id, params.page()?).await?;
    Ok(Json(MemberPage::new(members, next, MemberView::from)))
}

/// Remove a member (owners only; any member may remove themselves). The last owner cannot leave.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/members/{operator_id}", tag = "applications",
    params(("app_id" = Uuid, Path, description = "Application id"), ("operator_id" = Uuid, Path, description = "Operator id")),
    security(("operator" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "`conflict`: the last owner cannot leave", body = crate::error::ErrorBody),
    )
)]
async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, operator_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let access = principal.access(&state, app_id).await?;
    let app_id = access.app_id();
    if principal.operator()? != operator_id {
        access.require_owner()?;
    }
    match applications::remove_member(state.db(), app_id, operator_id).await? {
        RemoveMember::Removed => Ok(StatusCode::NO_CONTENT),
        RemoveMember::NotAMember => Err(Error::not_found("member")),
        RemoveMember::LastOwner => Err(Error::Conflict(
            "the last owner cannot leave; make another member an owner first".into(),
        )),
    }
}
