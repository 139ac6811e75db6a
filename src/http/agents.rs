//! Agents of an application: name, instructions (system prompt), model and memory switch.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::agent_tools::{self, McpServerInput, McpServerView, ToolsInput};
use super::applications::validate_origins;
use super::{AgentPage, Json, ListParams, Path, Query, timestamp, validate_name};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::error::{Error, Result};
use crate::store::agents::{self, Agent, AgentChanges, AgentModel, AgentTools, FunctionTool, NewAgent};
use crate::store::providers;
use crate::store::scope::ApplicationId;

/// Longest accepted system prompt, in bytes.
const MAX_INSTRUCTIONS_BYTES: usize = 64 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(agent_stats))
}

#[derive(Serialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub application_id: Uuid,
    pub name: String,
    /// The system prompt.
    pub instructions: String,
    pub model: AgentModel,
    /// Whether the user's memory records are given to the model.
    pub memory: bool,
    /// Origins browsers may call this agent from; when not empty, replaces the application's.
    pub allowed_origins: Vec<String>,
    /// Functions the caller's app runs (OpenAI's function shape).
    pub tools: Vec<FunctionTool>,
    /// Whether the model may `memorize` and `search_memory` in the user's own memory.
    pub memory_tools: bool,
    /// MCP servers whose tools the server calls (header values are never shown).
    pub mcp_servers: Vec<McpServerView>,
    /// Model calls one turn may make.
    pub max_steps: u32,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Agent> for AgentView {
    fn from(a: Agent) -> Self {
        Self {
            id: a.id,
            application_id: a.application_id.uuid(),
            name: a.name,
            instructions: a.instructions,
            model: a.model.0,
            memory: a.memory,
            allowed_origins: a.allowed_origins.0,
            max_steps: a.tools.0.max_steps(),
            mcp_servers: a.tools.0.mcp_servers.iter().map(McpServerView::from).collect(),
            memory_tools: a.tools.0.memory_tools,
            tools: a.tools.0.client,
            created_at: timestamp(a.created_at),
            updated_at: timestamp(a.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Support", "instructions": "You answer questions about Acme's products.", "model": {"provider": "echo"}, "memory": true}))]
pub struct CreateAgent {
    pub name: String,
    /// The system prompt (default empty).
    #[serde(default)]
    pub instructions: String,
    /// Default `{"provider": "echo"}`.
    pub model: Option<AgentModel>,
    /// Default `false`.
    #[serde(default)]
    pub memory: bool,
    /// Origins browsers may call this agent from (default empty: the application's).
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    /// Functions the caller's app runs (default none).
    #[serde(default)]
    pub tools: Option<Vec<FunctionTool>>,
    /// Give the model `memorize` and `search_memory` (default `false`).
    #[serde(default)]
    pub memory_tools: Option<bool>,
    /// MCP servers whose tools the server calls (default none).
    #[serde(default)]
    pub mcp_servers: Option<Vec<McpServerInput>>,
    /// Model calls one turn may make, 1..20 (default 5).
    #[serde(default)]
    pub max_steps: Option<u32>,
}

fn validate_instructions(instructions: &str) -> Result<()> {
    if instructions.len() > MAX_INSTRUCTIONS_BYTES {
        return Err(Error::invalid_field(
            "instructions",
            format!("must be at most {MAX_INSTRUCTIONS_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks a model choice against the application's providers.
async fn validate_model(state: &AppState, app_id: ApplicationId, model: &AgentModel) -> Result<()> {
    if let Some(t) = model.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(Error::invalid_field("model.temperature", "must be between 0 and 2"));
    }
    if model.max_tokens == Some(0) {
        return Err(Error::invalid_field("model.max_tokens", "must be positive"));
    }
    if model.provider == AgentModel::ECHO {
        return Ok(());
    }
    if providers::find_by_name(state.db(), app_id, &model.provider)
        .await?
        .is_none()
    {
        return Err(Error::invalid_field(
            "model.provider",
            "must be `echo` or the name of one of the application's providers",
        ));
    }
    match model.model.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() && id.len() <= 200 => Ok(()),
        _ => Err(Error::invalid_field(
            "model.model",
            "a provider's model id is required (1..200 characters)",
        )),
    }
}

/// Create an agent.
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/agents", tag = "agents",
    params(("app_id" = Uuid, Path, description = "Application id")),
    request_body = CreateAgent,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 201, description = "Created", body = AgentView))
)]
async fn create_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Json(body): Json<CreateAgent>,
) -> Result<(StatusCode, Json<AgentView>)> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let name = validate_name("name", &body.name)?;
    validate_instructions(&body.instructions)?;
    let model = body.model.unwrap_or_else(AgentModel::echo);
    validate_model(&state, app_id, &model).await?;
    let id = Uuid::now_v7();
    let input = ToolsInput {
        tools: body.tools,
        memory_tools: body.memory_tools,
        mcp_servers: body.mcp_servers,
        max_steps: body.max_steps,
    };
    let tools = agent_tools::build(&state, app_id, id, &AgentTools::default(), input).await?;
    let agent = agents::create(
        state.db(),
        app_id,
        NewAgent {
            id,
            tools,
            name: &name,
            instructions: &body.instructions,
            model: &model,
            memory: body.memory,
            allowed_origins: validate_origins(body.allowed_origins)?.unwrap_or_default(),
        },
    )
    .await?;
    tracing::info!(application.id = %app_id, agent.id = %agent.id, "agent created");
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// List the application's agents, newest first.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/agents", tag = "agents",
    params(("app_id" = Uuid, Path, description = "Application id"), ListParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of agents", body = AgentPage))
)]
async fn list_agents(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Query(params): Query<ListParams>,
) -> Result<Json<AgentPage>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let (rows, next) = agents::list(state.db(), app_id, params.page()?).await?;
    Ok(Json(AgentPage::new(rows, next, AgentView::from)))
}

/// Get an agent.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/agents/{agent_id}", tag = "agents",
    params(("app_id" = Uuid, Path, description = "Application id"), ("agent_id" = Uuid, Path, description = "Agent id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The agent", body = AgentView))
)]
async fn get_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, agent_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<AgentView>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let agent = agents::find(state.db(), app_id, agent_id)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    Ok(Json(agent.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"instructions": "Be brief.", "memory": false}))]
pub struct UpdateAgent {
    pub name: Option<String>,
    pub instructions: Option<String>,
    pub model: Option<AgentModel>,
    pub memory: Option<bool>,
    /// Replaces the agent's allowed origins (`[]`: the application's apply).
    pub allowed_origins: Option<Vec<String>>,
    /// Replaces the agent's client tools.
    pub tools: Option<Vec<FunctionTool>>,
    pub memory_tools: Option<bool>,
    /// Replaces the agent's MCP servers; a server named as before keeps its headers when none are
    /// sent.
    pub mcp_servers: Option<Vec<McpServerInput>>,
    pub max_steps: Option<u32>,
}

/// Change an agent; fields left out stay as they are.
#[utoipa::path(
    patch, path = "/v1/applications/{app_id}/agents/{agent_id}", tag = "agents",
    params(("app_id" = Uuid, Path, description = "Application id"), ("agent_id" = Uuid, Path, description = "Agent id")),
    request_body = UpdateAgent,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The updated agent", body = AgentView))
)]
async fn update_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, agent_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateAgent>,
) -> Result<Json<AgentView>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let name = body.name.as_deref().map(|n| validate_name("name", n)).transpose()?;
    if let Some(instructions) = &body.instructions {
        validate_instructions(instructions)?;
    }
    if let Some(model) = &body.model {
        validate_model(&state, app_id, model).await?;
    }
    let input = ToolsInput {
        tools: body.tools,
        memory_tools: body.memory_tools,
        mcp_servers: body.mcp_servers,
        max_steps: body.max_steps,
    };
    let tools = if input.is_empty() {
        None
    } else {
        // Built on what is stored (the MCP headers kept), so read it first.
        let current = agents::find(state.db(), app_id, agent_id)
            .await?
            .ok_or_else(|| Error::not_found("agent"))?;
        Some(agent_tools::build(&state, app_id, agent_id, &current.tools.0, input).await?)
    };
    let changes = AgentChanges {
        tools,
        name: name.as_deref(),
        instructions: body.instructions.as_deref(),
        model: body.model.as_ref(),
        memory: body.memory,
        allowed_origins: validate_origins(body.allowed_origins)?,
    };
    let agent = agents::update(state.db(), app_id, agent_id, changes)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    crate::invalidation::evict(&state, crate::invalidation::Notice::Agent(agent_id)).await;
    Ok(Json(agent.into()))
}

/// Delete an agent, with its conversations and agent-bound memory.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/agents/{agent_id}", tag = "agents",
    params(("app_id" = Uuid, Path, description = "Application id"), ("agent_id" = Uuid, Path, description = "Agent id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, agent_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    if !agents::delete(state.db(), app_id, agent_id).await? {
        return Err(Error::not_found("agent"));
    }
    crate::invalidation::evict(&state, crate::invalidation::Notice::Agent(agent_id)).await;
    tracing::info!(application.id = %app_id, agent.id = %agent_id, "agent deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// How many days of `per_day` (1..=365, default 30), ending today (UTC).
    #[param(minimum = 1, maximum = 365)]
    pub days: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct DayCount {
    /// `YYYY-MM-DD` (UTC).
    #[schema(example = "2026-11-23")]
    pub day: String,
    pub conversations: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"conversations": 42, "users": 17, "per_day": [{"day": "2026-11-22", "conversations": 3}, {"day": "2026-11-23", "conversations": 5}]}))]
pub struct AgentStatsView {
    /// Conversations with this agent, all time.
    pub conversations: i64,
    /// Distinct end users who talked to it, all time.
    pub users: i64,
    /// Conversations started per day, every day of the window (zeros included).
    pub per_day: Vec<DayCount>,
}

/// Usage of an agent: conversations, users, and conversations started per day.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/agents/{agent_id}/stats", tag = "agents",
    params(("app_id" = Uuid, Path, description = "Application id"), ("agent_id" = Uuid, Path, description = "Agent id"), StatsParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The agent's usage", body = AgentStatsView))
)]
async fn agent_stats(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, agent_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<StatsParams>,
) -> Result<Json<AgentStatsView>> {
    let access = principal.access(&state, app_id).await?;
    let app_id = access.app_id();
    let days = i64::from(params.days.unwrap_or(30));
    if !(1..=365).contains(&days) {
        return Err(Error::InvalidRequest("days must be between 1 and 365".into()));
    }
    agents::find(state.db(), app_id, agent_id)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    let today = chrono::Utc::now().timestamp_micros().div_euclid(86_400_000_000);
    let first = today - days + 1;
    let stats = crate::store::user_data::agent_stats(state.db(), &access, agent_id, first * 86_400_000_000).await?;
    let per_day = (first..=today)
        .map(|day| DayCount {
            day: chrono::DateTime::from_timestamp(day * 86_400, 0)
                .unwrap_or_default()
                .format("%Y-%m-%d")
                .to_string(),
            conversations: stats.per_day.iter().find(|(d, _)| *d == day).map_or(0, |(_, n)| *n),
        })
        .collect();
    Ok(Json(AgentStatsView {
        conversations: stats.conversations,
        users: stats.users,
        per_day,
    }))
}
