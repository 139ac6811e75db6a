//! The end user's memory records (secure user token). A record with no `agent_id` is the user's,
//! app-wide, and only a token whose key covers all agents reaches it.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Json, ListParams, MemoryPage, Path, Query, timestamp};
use crate::AppState;
use crate::error::{Error, Result};
use crate::store::scope::{AgentScope, MemoryOwner, UserScope};
use crate::store::user_data::{self, Memory, MemoryFilter};

/// Longest memory record, in bytes.
const MAX_CONTENT_BYTES: usize = 16 * 1024;
/// Largest `metadata`, serialized.
const MAX_METADATA_BYTES: usize = 8 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_memory, list_memories))
        .routes(routes!(get_memory, update_memory, delete_memory))
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "01938f9e-6a4c-7a51-9b1e-2f0c7d1c2a10", "agent_id": null, "content": "Prefers answers in French.", "metadata": {"source": "settings"}, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}))]
pub struct MemoryView {
    pub id: Uuid,
    /// The agent this record belongs to; `null` for the user's app-wide memory.
    pub agent_id: Option<Uuid>,
    pub content: String,
    pub metadata: Value,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Memory> for MemoryView {
    fn from(m: Memory) -> Self {
        Self {
            id: m.id,
            agent_id: m.agent_id,
            content: m.content,
            metadata: m.metadata.0,
            created_at: timestamp(m.created_at),
            updated_at: timestamp(m.updated_at),
        }
    }
}

fn validate_content(content: &str) -> Result<()> {
    if content.trim().is_empty() {
        return Err(Error::invalid_field("content", "must not be empty"));
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(Error::invalid_field(
            "content",
            format!("must be at most {MAX_CONTENT_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn validate_metadata(metadata: &Value) -> Result<()> {
    if !metadata.is_object() {
        return Err(Error::invalid_field("metadata", "must be a JSON object"));
    }
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(Error::invalid_field(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        ));
    }
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"content": "Prefers answers in French.", "metadata": {"source": "settings"}}))]
pub struct CreateMemory {
    pub content: String,
    /// Bind the record to one agent; leave out for app-wide memory (needs an all-agents key).
    pub agent_id: Option<Uuid>,
    /// Any JSON object (default `{}`).
    pub metadata: Option<Value>,
}

/// Store a memory record for the user.
#[utoipa::path(
    post, path = "/v1/memories", tag = "memories",
    request_body = CreateMemory,
    security(("user_token" = []), ("user_token_header" = [])),
    responses(
        (status = 201, description = "Stored", body = MemoryView),
        (status = 403, description = "`agent_not_in_scope`: the key does not cover this agent, or app-wide memory without an all-agents key; `forbidden`: the application is in privacy mode (`retention.store_content: false`)", body = crate::error::ErrorBody),
    )
)]
async fn create_memory(
    State(state): State<AppState>,
    scope: UserScope,
    Json(body): Json<CreateMemory>,
) -> Result<(StatusCode, Json<MemoryView>)> {
    validate_content(&body.content)?;
    let metadata = body.metadata.unwrap_or_else(|| Value::Object(Default::default()));
    validate_metadata(&metadata)?;
    require_stored_content(&scope)?;
    let owner = match body.agent_id {
        Some(agent_id) => MemoryOwner::Agent(AgentScope::check(state.db(), state.agents(), scope, agent_id).await?),
        None => MemoryOwner::app_wide(scope)?,
    };
    let memory = user_data::create_memory(state.db(), &owner, &body.content, &metadata).await?;
    Ok((StatusCode::CREATED, Json(memory.into())))
}

/// Privacy mode stores no memory: writes are refused (reads and deletes of what was stored before
/// still work).
fn require_stored_content(scope: &UserScope) -> Result<()> {
    if scope.stores_content() {
        Ok(())
    } else {
        Err(Error::privacy_mode())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemoryParams {
    /// Only this agent's records.
    pub agent_id: Option<Uuid>,
    /// Full-text search: records matching any of these words, best match first (no cursor).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub q: Option<String>,
    /// Page size, 1..100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn empty_as_none<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|s| !s.trim().is_empty()))
}

/// List or search the user's memory records.
#[utoipa::path(
    get, path = "/v1/memories", tag = "memories",
    params(MemoryParams),
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 200, description = "A page of records (search: the best matches, `next_cursor` null)", body = MemoryPage))
)]
async fn list_memories(
    State(state): State<AppState>,
    scope: UserScope,
    Query(params): Query<MemoryParams>,
) -> Result<Json<MemoryPage>> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page()?;
    let filter = match params.agent_id {
        Some(agent_id) => {
            scope.require_agent(agent_id)?;
            MemoryFilter::Agent(agent_id)
        }
        None => MemoryFilter::All,
    };
    if let Some(q) = &params.q {
        if q.len() > 1024 {
            return Err(Error::invalid_field("q", "must be at most 1024 bytes"));
        }
        let terms = user_data::search_terms(q);
        let rows = user_data::search_memories(state.db(), &scope, filter, &terms, page.limit).await?;
        return Ok(Json(MemoryPage::new(rows, None, MemoryView::from)));
    }
    let (rows, next) = user_data::list_memories(state.db(), &scope, filter, page).await?;
    Ok(Json(MemoryPage::new(rows, next, MemoryView::from)))
}

/// One of the user's memory records.
#[utoipa::path(
    get, path = "/v1/memories/{memory_id}", tag = "memories",
    params(("memory_id" = Uuid, Path, description = "Memory id")),
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 200, description = "The record", body = MemoryView))
)]
async fn get_memory(
    State(state): State<AppState>,
    scope: UserScope,
    Path(memory_id): Path<Uuid>,
) -> Result<Json<MemoryView>> {
    let memory = user_data::find_memory(state.db(), &scope, memory_id)
        .await?
        .ok_or_else(|| Error::not_found("memory"))?;
    Ok(Json(memory.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"content": "Prefers answers in German."}))]
pub struct UpdateMemory {
    pub content: Option<String>,
    pub metadata: Option<Value>,
}

/// Change one of the user's memory records.
#[utoipa::path(
    patch, path = "/v1/memories/{memory_id}", tag = "memories",
    params(("memory_id" = Uuid, Path, description = "Memory id")),
    request_body = UpdateMemory,
    security(("user_token" = []), ("user_token_header" = [])),
    responses(
        (status = 200, description = "The updated record", body = MemoryView),
        (status = 403, description = "`forbidden`: the application is in privacy mode (`retention.store_content: false`)", body = crate::error::ErrorBody),
    )
)]
async fn update_memory(
    State(state): State<AppState>,
    scope: UserScope,
    Path(memory_id): Path<Uuid>,
    Json(body): Json<UpdateMemory>,
) -> Result<Json<MemoryView>> {
    if let Some(content) = &body.content {
        validate_content(content)?;
    }
    if let Some(metadata) = &body.metadata {
        validate_metadata(metadata)?;
    }
    require_stored_content(&scope)?;
    let memory = user_data::update_memory(
        state.db(),
        &scope,
        memory_id,
        body.content.as_deref(),
        body.metadata.as_ref(),
    )
    .await?
    .ok_or_else(|| Error::not_found("memory"))?;
    Ok(Json(memory.into()))
}

/// Delete one of the user's memory records.
#[utoipa::path(
    delete, path = "/v1/memories/{memory_id}", tag = "memories",
    params(("memory_id" = Uuid, Path, description = "Memory id")),
    security(("user_token" = []), ("user_token_header" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_memory(
    State(state): State<AppState>,
    scope: UserScope,
    Path(memory_id): Path<Uuid>,
) -> Result<StatusCode> {
    if !user_data::delete_memory(state.db(), &scope, memory_id).await? {
        return Err(Error::not_found("memory"));
    }
    Ok(StatusCode::NO_CONTENT)
}
