//! Model providers of an application: OpenAI-compatible servers (OpenAI, OpenRouter, Ollama, vLLM,
//! LiteLLM, ...). The API key is write-only and sealed at rest under the master key.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Json, ListParams, Path, ProviderPage, Query, timestamp};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::completions::probe::{self, ProviderTest};
use crate::error::{Error, Result};
use crate::store::agents::AgentModel;
use crate::store::now_micros;
use crate::store::providers::{self, Provider, ProviderChanges, seal_api_key};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_provider, list_providers))
        .routes(routes!(get_provider, update_provider, delete_provider))
        .routes(routes!(test_provider))
}

/// The protocols a provider can speak.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub enum ProviderKind {
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderView {
    pub id: Uuid,
    /// What agents name in `model.provider`.
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// Whether an API key is stored (the key itself is never returned).
    pub has_api_key: bool,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Provider> for ProviderView {
    fn from(p: Provider) -> Self {
        Self {
            id: p.id,
            name: p.name,
            kind: ProviderKind::OpenAiCompatible,
            base_url: p.base_url,
            has_api_key: p.api_key_encrypted.is_some(),
            created_at: timestamp(p.created_at),
            updated_at: timestamp(p.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "openai", "kind": "openai-compatible", "base_url": "https://api.openai.com/v1", "api_key": "sk-..."}))]
pub struct CreateProvider {
    pub name: String,
    pub kind: ProviderKind,
    /// The server's base URL, up to and including `/v1` (Confidant appends `/chat/completions`).
    pub base_url: String,
    /// Write-only; encrypted at rest.
    pub api_key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// A new key, or `null` to remove the stored one; leave out to keep it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Option<String>>,
}

/// Tells `"field": null` (Some(None)) apart from a missing field (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Provider names: 1..=64 of `A-Za-z0-9._-`, and not `echo` (the built-in model).
fn validate_provider_name(name: &str) -> Result<String> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return Err(Error::invalid_field(
            "name",
            "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
        ));
    }
    if name.eq_ignore_ascii_case(AgentModel::ECHO) {
        return Err(Error::invalid_field("name", "`echo` is the built-in model"));
    }
    Ok(name.to_owned())
}

/// An outbound URL (a provider's `base_url`, an MCP server's `url`), after the address rules
/// (resolved once here; every connection checks again).
pub(super) async fn validate_outbound_url(state: &AppState, field: &str, text: &str) -> Result<url::Url> {
    if text.len() > 2048 {
        return Err(Error::invalid_field(field, "must be at most 2048 characters"));
    }
    let url =
        url::Url::parse(text.trim()).map_err(|_| Error::invalid_field(field, "must be an absolute http(s) URL"))?;
    state
        .egress()
        .check_resolved(&url)
        .await
        .map_err(|refusal| Error::invalid_field(field, refusal.to_string()))?;
    Ok(url)
}

fn stored_base_url(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Host and port, the part of a URL a stored API key is bound to.
pub(super) fn origin_of(url: &url::Url) -> (Option<String>, Option<u16>) {
    (url.host_str().map(str::to_ascii_lowercase), url.port_or_known_default())
}

fn validate_api_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 4096 || key.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            "api_key",
            "must be 1 to 4096 printable characters",
        ));
    }
    Ok(())
}

/// Add a model provider.
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/providers", tag = "providers",
    params(("app_id" = Uuid, Path, description = "Application id")),
    request_body = CreateProvider,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 201, description = "Created", body = ProviderView))
)]
async fn create_provider(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Json(body): Json<CreateProvider>,
) -> Result<(StatusCode, Json<ProviderView>)> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let name = validate_provider_name(&body.name)?;
    let base_url = stored_base_url(&validate_outbound_url(&state, "base_url", &body.base_url).await?);
    let id = Uuid::now_v7();
    let api_key_encrypted = match &body.api_key {
        Some(key) => {
            validate_api_key(key)?;
            Some(seal_api_key(state.master_key(), app_id, id, key))
        }
        None => None,
    };
    let now = now_micros();
    let provider = Provider {
        id,
        application_id: app_id,
        name,
        kind: "openai-compatible".into(),
        base_url,
        api_key_encrypted,
        created_at: now,
        updated_at: now,
    };
    providers::create(state.db(), &provider).await?;
    crate::invalidation::evict(&state, crate::invalidation::Notice::Providers(app_id.uuid())).await;
    tracing::info!(application.id = %app_id, provider.id = %id, "provider created");
    Ok((StatusCode::CREATED, Json(provider.into())))
}

/// List the application's providers.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/providers", tag = "providers",
    params(("app_id" = Uuid, Path, description = "Application id"), ListParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of providers", body = ProviderPage))
)]
async fn list_providers(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<ListParams>,
) -> Result<Json<ProviderPage>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let (rows, next) = providers::list(state.db(), app_id, params.page()?).await?;
    Ok(Json(ProviderPage::new(rows, next, ProviderView::from)))
}

/// Get a provider.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/providers/{provider_id}", tag = "providers",
    params(("app_id" = Uuid, Path, description = "Application id"), ("provider_id" = Uuid, Path, description = "Provider id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The provider", body = ProviderView))
)]
async fn get_provider(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, provider_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<ProviderView>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let provider = providers::find(state.db(), app_id, provider_id)
        .await?
        .ok_or_else(|| Error::not_found("provider"))?;
    Ok(Json(provider.into()))
}

/// Change a provider; fields left out stay as they are.
#[utoipa::path(
    patch, path = "/v1/applications/{app_id}/providers/{provider_id}", tag = "providers",
    params(("app_id" = Uuid, Path, description = "Application id"), ("provider_id" = Uuid, Path, description = "Provider id")),
    request_body = UpdateProvider,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The updated provider", body = ProviderView))
)]
async fn update_provider(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, provider_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateProvider>,
) -> Result<Json<ProviderView>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let api_key_encrypted = match body.api_key {
        None => None,
        Some(None) => Some(None),
        Some(Some(key)) => {
            validate_api_key(&key)?;
            Some(Some(seal_api_key(state.master_key(), app_id, provider_id, &key)))
        }
    };
    let base_url = match body.base_url.as_deref() {
        Some(text) => {
            let url = validate_outbound_url(&state, "base_url", text).await?;
            // A stored key never follows the URL to another host: moving it needs the key again.
            let current = providers::find(state.db(), app_id, provider_id)
                .await?
                .ok_or_else(|| Error::not_found("provider"))?;
            let moved = url::Url::parse(&current.base_url).map_or(true, |old| origin_of(&old) != origin_of(&url));
            if moved && current.api_key_encrypted.is_some() && !matches!(api_key_encrypted, Some(Some(_))) {
                return Err(Error::invalid_field(
                    "api_key",
                    "required when base_url moves to another host or port: a stored key never follows a URL",
                ));
            }
            Some(stored_base_url(&url))
        }
        None => None,
    };
    let changes = ProviderChanges {
        name: body.name.as_deref().map(validate_provider_name).transpose()?,
        base_url,
        api_key_encrypted,
    };
    let provider = providers::update(state.db(), app_id, provider_id, changes)
        .await?
        .ok_or_else(|| Error::not_found("provider"))?;
    // Turns use the change now, here and on every other instance.
    crate::invalidation::evict(&state, crate::invalidation::Notice::Providers(app_id.uuid())).await;
    Ok(Json(provider.into()))
}

/// Delete a provider.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/providers/{provider_id}", tag = "providers",
    params(("app_id" = Uuid, Path, description = "Application id"), ("provider_id" = Uuid, Path, description = "Provider id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_provider(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, provider_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    if !providers::delete(state.db(), app_id, provider_id).await? {
        return Err(Error::not_found("provider"));
    }
    crate::invalidation::evict(&state, crate::invalidation::Notice::Providers(app_id.uuid())).await;
    Ok(StatusCode::NO_CONTENT)
}

/// How long "test connection" waits for the provider.
const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Test a provider: `GET {base_url}/models` with its stored key (10 s at most). Answers 200 with
/// what happened whether or not the provider answered; the model ids it lists fill an agent's model.
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/providers/{provider_id}/test", tag = "providers",
    params(("app_id" = Uuid, Path, description = "Application id"), ("provider_id" = Uuid, Path, description = "Provider id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "How the provider answered", body = ProviderTest))
)]
async fn test_provider(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, provider_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<ProviderTest>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let provider = providers::find(state.db(), app_id, provider_id)
        .await?
        .ok_or_else(|| Error::not_found("provider"))?;
    let url = url::Url::parse(&provider.base_url).map_err(Error::internal)?;
    if let Err(refusal) = state.egress().check_url(&url) {
        return Ok(Json(ProviderTest {
            ok: false,
            status: None,
            message: format!("this server may not connect there: {refusal}"),
            models: Vec::new(),
            elapsed_ms: 0,
        }));
    }
    let api_key = providers::open_api_key(state.master_key(), &provider).map_err(Error::internal)?;
    let answer = probe::probe(state.http(), &provider.base_url, api_key.as_deref(), TEST_TIMEOUT).await;
    tracing::info!(application.id = %app_id, provider.id = %provider_id, ok = answer.ok, status = ?answer.status, "provider tested");
    Ok(Json(answer))
}
