//! Authentication keys (they sign secure user tokens) and API keys (server-to-server). Both show
//! their secret once, in the create response.

use crate::store::Json as SqlJson;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiKeyPage, AuthenticationKeyPage, Json, ListParams, Path, Query, timestamp, validate_name};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::auth::{new_api_key, new_authentication_secret};
use crate::crypto::MASTER_KEY_VERSION;
use crate::error::{Error, Result};
use crate::store::keys::{self, Acl, ApiKey, AuthenticationKey};
use crate::store::scope::ApplicationId;
use crate::store::{agents, now_micros};

/// Most agents one key may list.
const MAX_SCOPED_AGENTS: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_authentication_key, list_authentication_keys))
        .routes(routes!(delete_authentication_key))
        .routes(routes!(mint_user_token))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(delete_api_key))
}

/// Which agents a key reaches: all of the application's, or the listed ones.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum KeyScope {
    AllAgents(AllAgentsScope),
    Agents(AgentsScope),
}

/// `{"all_agents": true}`: every agent of the application, present and future.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllAgentsScope {
    pub all_agents: bool,
}

/// `{"agents": [agent_id, ...]}`: only the listed agents.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentsScope {
    pub agents: Vec<Uuid>,
}

impl KeyScope {
    fn from_stored(agent_ids: Option<SqlJson<Vec<Uuid>>>) -> Self {
        match agent_ids {
            None => Self::AllAgents(AllAgentsScope { all_agents: true }),
            Some(ids) => Self::Agents(AgentsScope { agents: ids.0 }),
        }
    }
}

/// Checks a list of agent ids: 1..=100, no repeats, every one an agent of this application.
async fn validate_agents(state: &AppState, app_id: ApplicationId, field: &str, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    if ids.is_empty() || ids.len() > MAX_SCOPED_AGENTS {
        return Err(Error::invalid_field(
            field,
            format!("must list 1 to {MAX_SCOPED_AGENTS} agents"),
        ));
    }
    let existing = agents::existing_ids(state.db(), app_id, &ids).await?;
    if let Some(missing) = ids.iter().find(|id| !existing.contains(id)) {
        return Err(Error::invalid_field(
            field,
            format!("{missing} is not an agent of this application"),
        ));
    }
    Ok(ids)
}

#[derive(Serialize, ToSchema)]
pub struct AuthenticationKeyView {
    /// The key id: put it in the `kid` header of secure user tokens.
    pub id: Uuid,
    pub name: String,
    pub scope: KeyScope,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339_option")]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<AuthenticationKey> for AuthenticationKeyView {
    fn from(k: AuthenticationKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            scope: KeyScope::from_stored(k.agent_ids),
            created_at: timestamp(k.created_at),
            last_used_at: k.last_used_at.map(timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedAuthenticationKey {
    pub id: Uuid,
    pub name: String,
    pub scope: KeyScope,
    /// The HMAC secret (`sk-cfd-…`): sign HS256 tokens with this whole string. Shown only here.
    pub secret: String,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "production backend", "scope": {"all_agents": true}}))]
pub struct CreateAuthenticationKey {
    pub name: String,
    pub scope: KeyScope,
}

/// Create an authentication key. The response holds its secret; it is never shown again.
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/authentication-keys", tag = "authentication-keys",
    params(("app_id" = Uuid, Path, description = "Application id")),
    request_body = CreateAuthenticationKey,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 201, description = "Created; `secret` appears only in this response", body = CreatedAuthenticationKey))
)]
async fn create_authentication_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Json(body): Json<CreateAuthenticationKey>,
) -> Result<(StatusCode, Json<CreatedAuthenticationKey>)> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let name = validate_name("name", &body.name)?;
    let agent_ids = match &body.scope {
        KeyScope::AllAgents(AllAgentsScope { all_agents: true }) => None,
        KeyScope::AllAgents(AllAgentsScope { all_agents: false }) => {
            return Err(Error::invalid_field(
                "scope",
                "use {\"all_agents\": true} or {\"agents\": [...]}",
            ));
        }
        KeyScope::Agents(AgentsScope { agents }) => {
            Some(validate_agents(&state, app_id, "scope.agents", agents).await?)
        }
    };
    let id = Uuid::now_v7();
    let secret = new_authentication_secret();
    let key = AuthenticationKey {
        id,
        application_id: app_id,
        name,
        agent_ids: agent_ids.map(SqlJson),
        secret_encrypted: keys::seal_secret(state.master_key(), app_id, id, &secret),
        master_key_version: MASTER_KEY_VERSION,
        created_at: now_micros(),
        last_used_at: None,
    };
    keys::create_authentication_key(state.db(), &key).await?;
    tracing::info!(application.id = %app_id, key.id = %id, "authentication key created");
    let view = AuthenticationKeyView::from(key);
    Ok((
        StatusCode::CREATED,
        Json(CreatedAuthenticationKey {
            id: view.id,
            name: view.name,
            scope: view.scope,
            secret,
            created_at: view.created_at,
        }),
    ))
}

/// List the application's authentication keys (never their secrets).
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/authentication-keys", tag = "authentication-keys",
    params(("app_id" = Uuid, Path, description = "Application id"), ListParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of keys", body = AuthenticationKeyPage))
)]
async fn list_authentication_keys(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<ListParams>,
) -> Result<Json<AuthenticationKeyPage>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let (rows, next) = keys::list_authentication_keys(state.db(), app_id, params.page()?).await?;
    Ok(Json(AuthenticationKeyPage::new(
        rows,
        next,
        AuthenticationKeyView::from,
    )))
}

/// Delete an authentication key: tokens it signed stop verifying at once.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/authentication-keys/{key_id}", tag = "authentication-keys",
    params(("app_id" = Uuid, Path, description = "Application id"), ("key_id" = Uuid, Path, description = "Key id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_authentication_key(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, key_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    if !keys::delete_authentication_key(state.db(), app_id, key_id).await? {
        return Err(Error::not_found("authentication key"));
    }
    // Tokens signed with it stop verifying now, here and on every other instance.
    crate::invalidation::evict(&state, crate::invalidation::Notice::AuthenticationKey(key_id)).await;
    tracing::info!(application.id = %app_id, key.id = %key_id, "authentication key deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    pub acl: Vec<Acl>,
    /// The agents a `completions` key may call; `null` for all.
    pub agents: Option<Vec<Uuid>>,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339_option")]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            acl: k.acl.0,
            agents: k.agent_ids.map(|ids| ids.0),
            prefix: k.prefix,
            created_at: timestamp(k.created_at),
            last_used_at: k.last_used_at.map(timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    /// The API key (`cfd_…`). Shown only here; Confidant keeps only its hash.
    pub key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "backend", "acl": ["admin", "completions"]}))]
pub struct CreateApiKey {
    pub name: String,
    pub acl: Vec<Acl>,
    /// Limit a `completions` key to these agents (default: all).
    #[serde(default)]
    pub agents: Option<Vec<Uuid>>,
}

/// Create an API key. The response holds the key; it is never shown again.
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/api-keys", tag = "api-keys",
    params(("app_id" = Uuid, Path, description = "Application id")),
    request_body = CreateApiKey,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 201, description = "Created; `key` appears only in this response", body = CreatedApiKey))
)]
async fn create_api_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Json(body): Json<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let name = validate_name("name", &body.name)?;
    let mut acl = body.acl.clone();
    acl.sort();
    acl.dedup();
    if acl.is_empty() {
        return Err(Error::invalid_field("acl", "must hold `admin`, `completions` or both"));
    }
    let agents = match &body.agents {
        Some(ids) => Some(validate_agents(&state, app_id, "agents", ids).await?),
        None => None,
    };
    let (key, hash, prefix) = new_api_key();
    let row = ApiKey {
        id: Uuid::now_v7(),
        application_id: app_id,
        name,
        acl: SqlJson(acl),
        agent_ids: agents.map(SqlJson),
        prefix,
        key_hash: hash.to_vec(),
        created_at: now_micros(),
        last_used_at: None,
    };
    keys::create_api_key(state.db(), &row).await?;
    tracing::info!(application.id = %app_id, key.id = %row.id, "API key created");
    Ok((StatusCode::CREATED, Json(CreatedApiKey { view: row.into(), key })))
}

/// List the application's API keys (never the keys themselves).
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/api-keys", tag = "api-keys",
    params(("app_id" = Uuid, Path, description = "Application id"), ListParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of API keys", body = ApiKeyPage))
)]
async fn list_api_keys(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<ListParams>,
) -> Result<Json<ApiKeyPage>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let (rows, next) = keys::list_api_keys(state.db(), app_id, params.page()?).await?;
    Ok(Json(ApiKeyPage::new(rows, next, ApiKeyView::from)))
}

/// Delete an API key: it stops working at once.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/api-keys/{key_id}", tag = "api-keys",
    params(("app_id" = Uuid, Path, description = "Application id"), ("key_id" = Uuid, Path, description = "Key id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_api_key(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, key_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    if !keys::delete_api_key(state.db(), app_id, key_id).await? {
        return Err(Error::not_found("API key"));
    }
    // It stops working now, here and on every other instance.
    crate::invalidation::evict(&state, crate::invalidation::Notice::ApiKey(key_id)).await;
    tracing::info!(application.id = %app_id, key.id = %key_id, "API key deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Longest lifetime of a token minted by the server (for trying an agent out).
const MAX_MINTED_TTL_SECONDS: u64 = 900;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sub": "dashboard-test-user", "ttl_seconds": 600}))]
pub struct MintUserToken {
    /// The end user the token is for.
    pub sub: String,
    /// Lifetime in seconds, 1..=900 (default 600).
    pub ttl_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct MintedUserToken {
    /// A secure user token signed with this key.
    pub token: String,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// Sign a short-lived secure user token with this key, for trying an agent out (the dashboard's
/// "try it" panel). Production tokens are signed by your backend with the key's secret.
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/authentication-keys/{key_id}/tokens", tag = "authentication-keys",
    params(("app_id" = Uuid, Path, description = "Application id"), ("key_id" = Uuid, Path, description = "Key id")),
    request_body = MintUserToken,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 201, description = "A token valid for at most 15 minutes", body = MintedUserToken))
)]
async fn mint_user_token(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, key_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<MintUserToken>,
) -> Result<(StatusCode, Json<MintedUserToken>)> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    crate::store::scope::validate_sub(&body.sub).map_err(|problem| Error::invalid_field("sub", problem))?;
    let ttl = body.ttl_seconds.unwrap_or(600);
    if !(1..=MAX_MINTED_TTL_SECONDS).contains(&ttl) {
        return Err(Error::invalid_field("ttl_seconds", "must be between 1 and 900"));
    }
    let key = keys::find_authentication_key(state.db(), key_id)
        .await?
        .filter(|k| k.application_id == app_id)
        .ok_or_else(|| Error::not_found("authentication key"))?;
    let secret = keys::open_secret(state.master_key(), &key).map_err(Error::internal)?;
    let token = crate::auth::mint_user_token(
        &key_id.to_string(),
        &secret,
        &body.sub,
        std::time::Duration::from_secs(ttl),
    )
    .map_err(Error::internal)?;
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(ttl as i64);
    Ok((StatusCode::CREATED, Json(MintedUserToken { token, expires_at })))
}
