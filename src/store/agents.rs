//! Agents: an application's configured assistants.

use sea_query::{Expr, ExprTrait, Query};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use std::sync::Arc;
use std::time::Duration;

use super::cache::RowCache;
use super::notices::Notice;
use super::schema::Agents;
use super::scope::ApplicationId;
use super::{Db, Json, PageRequest, StoreResult, now_micros};

/// Which model answers for an agent: `{"provider": "echo"}` (built in) or a provider of the
/// application by name, with a model id and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.2}))]
pub struct AgentModel {
    /// `echo`, or the name of one of the application's providers.
    pub provider: String,
    /// The provider's model id (required unless `provider` is `echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl AgentModel {
    pub const ECHO: &'static str = "echo";

    pub fn echo() -> Self {
        Self {
            provider: Self::ECHO.into(),
            model: None,
            temperature: None,
            max_tokens: None,
        }
    }
}

/// An agent's tools, stored as one JSON column: the client's functions, the memory tools, MCP
/// servers (header values sealed), and how many model calls one turn may make.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentTools {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client: Vec<FunctionTool>,
    #[serde(default)]
    pub memory_tools: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
}

impl AgentTools {
    pub const DEFAULT_MAX_STEPS: u32 = 5;

    /// Model calls one turn may make.
    pub fn max_steps(&self) -> u32 {
        self.max_steps.unwrap_or(Self::DEFAULT_MAX_STEPS)
    }
}

/// A tool the caller's app runs, in OpenAI's function shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}))]
pub struct FunctionTool {
    #[serde(rename = "type")]
    pub kind: FunctionKind,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    Function,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionDef {
    /// 1..64 of `A-Za-z0-9_-`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of the arguments (an object schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Value>,
    /// OpenAI's structured-outputs switch, passed on to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// An MCP server (Streamable HTTP) whose tools the server calls, as stored: header values sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    pub name: String,
    pub url: String,
    /// Header name → value sealed under the master key (base64).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Only these of the server's tools reach the model (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
}

/// The context an MCP header value is sealed under: it opens only for this agent, server and
/// header.
fn mcp_header_context(app_id: ApplicationId, agent_id: Uuid, server: &str, header: &str) -> String {
    format!("mcp-header:{}:{agent_id}:{server}:{header}", app_id.uuid())
}

/// An MCP header value sealed under the master key, as stored (base64).
pub fn seal_mcp_header(
    master_key: &crate::crypto::MasterKey,
    app_id: ApplicationId,
    agent_id: Uuid,
    server: &str,
    header: &str,
    value: &str,
) -> String {
    use base64::Engine as _;
    let sealed = master_key.seal(&mcp_header_context(app_id, agent_id, server, header), value.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sealed)
}

/// An agent's MCP server's headers in plain text, for one call.
pub fn open_mcp_headers(
    master_key: &crate::crypto::MasterKey,
    agent: &Agent,
    server: &McpServer,
) -> Result<Vec<(String, String)>, crate::crypto::DecryptError> {
    use base64::Engine as _;
    server
        .headers
        .iter()
        .map(|(name, sealed)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(sealed)
                .map_err(|_| crate::crypto::DecryptError)?;
            let context = mcp_header_context(agent.application_id, agent.id, &server.name, name);
            let plain = master_key.open(&context, &bytes)?;
            let value = String::from_utf8(plain).map_err(|_| crate::crypto::DecryptError)?;
            Ok((name.clone(), value))
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: Uuid,
    pub application_id: ApplicationId,
    pub name: String,
    pub instructions: String,
    pub model: Json<AgentModel>,
    pub memory: bool,
    /// Origins browsers may call this agent from; when not empty, replaces the application's.
    pub allowed_origins: Json<Vec<String>>,
    pub tools: Json<AgentTools>,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::from_row!(Agent {
    id,
    application_id,
    name,
    instructions,
    model,
    memory,
    allowed_origins,
    tools,
    created_at,
    updated_at
});

const COLUMNS: [Agents; 10] = [
    Agents::Id,
    Agents::ApplicationId,
    Agents::Name,
    Agents::Instructions,
    Agents::Model,
    Agents::Memory,
    Agents::AllowedOrigins,
    Agents::Tools,
    Agents::CreatedAt,
    Agents::UpdatedAt,
];

fn model_value(model: &AgentModel) -> sea_query::Value {
    serde_json::to_value(model).expect("AgentModel serializes").into()
}

pub struct NewAgent<'a> {
    /// Chosen by the caller, so secrets of the agent can be sealed to it before it is stored.
    pub id: Uuid,
    pub name: &'a str,
    pub instructions: &'a str,
    pub model: &'a AgentModel,
    pub memory: bool,
    pub allowed_origins: Vec<String>,
    pub tools: AgentTools,
}

fn tools_value(tools: &AgentTools) -> sea_query::Value {
    serde_json::to_value(tools).expect("AgentTools serializes").into()
}

fn origins_value(origins: &[String]) -> sea_query::Value {
    serde_json::to_value(origins).expect("strings serialize").into()
}

pub async fn create(db: &Db, app_id: ApplicationId, new: NewAgent<'_>) -> StoreResult<Agent> {
    let now = now_micros();
    let agent = Agent {
        id: new.id,
        application_id: app_id,
        name: new.name.to_owned(),
        instructions: new.instructions.to_owned(),
        model: Json(new.model.clone()),
        memory: new.memory,
        allowed_origins: Json(new.allowed_origins),
        tools: Json(new.tools),
        created_at: now,
        updated_at: now,
    };
    db.execute(
        Query::insert()
            .into_table(Agents::Table)
            .columns(COLUMNS)
            .values_panic([
                agent.id.into(),
                app_id.into(),
                agent.name.clone().into(),
                agent.instructions.clone().into(),
                model_value(new.model).into(),
                agent.memory.into(),
                origins_value(&agent.allowed_origins.0).into(),
                tools_value(&agent.tools.0).into(),
                now.into(),
                now.into(),
            ]),
    )
    .await?;
    Ok(agent)
}

/// The agent, if it belongs to this application.
pub async fn find(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<Option<Agent>> {
    db.row(
        Query::select()
            .columns(COLUMNS)
            .from(Agents::Table)
            .and_where(Expr::col(Agents::ApplicationId).eq(app_id))
            .and_where(Expr::col(Agents::Id).eq(id)),
    )
    .await
}

pub async fn list(db: &Db, app_id: ApplicationId, page: PageRequest) -> StoreResult<(Vec<Agent>, Option<Uuid>)> {
    let mut query = Query::select()
        .columns(COLUMNS)
        .from(Agents::Table)
        .and_where(Expr::col(Agents::ApplicationId).eq(app_id))
        .to_owned();
    page.apply(&mut query, Agents::Id);
    Ok(page.finish(db.rows(&query).await?, |a: &Agent| a.id))
}

/// Which of `ids` are agents of this application.
pub async fn existing_ids(db: &Db, app_id: ApplicationId, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
    struct Row {
        id: Uuid,
    }
    crate::from_row!(Row { id });
    let rows: Vec<Row> = db
        .rows(
            Query::select()
                .column(Agents::Id)
                .from(Agents::Table)
                .and_where(Expr::col(Agents::ApplicationId).eq(app_id))
                .and_where(Expr::col(Agents::Id).is_in(ids.iter().copied())),
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

#[derive(Default)]
pub struct AgentChanges<'a> {
    pub name: Option<&'a str>,
    pub instructions: Option<&'a str>,
    pub model: Option<&'a AgentModel>,
    pub memory: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
    pub tools: Option<AgentTools>,
}

pub async fn update(db: &Db, app_id: ApplicationId, id: Uuid, changes: AgentChanges<'_>) -> StoreResult<Option<Agent>> {
    let mut update = Query::update();
    update.table(Agents::Table).value(Agents::UpdatedAt, now_micros());
    if let Some(name) = changes.name {
        update.value(Agents::Name, name);
    }
    if let Some(instructions) = changes.instructions {
        update.value(Agents::Instructions, instructions);
    }
    if let Some(model) = changes.model {
        update.value(Agents::Model, model_value(model));
    }
    if let Some(memory) = changes.memory {
        update.value(Agents::Memory, memory);
    }
    if let Some(origins) = &changes.allowed_origins {
        update.value(Agents::AllowedOrigins, origins_value(origins));
    }
    if let Some(tools) = &changes.tools {
        update.value(Agents::Tools, tools_value(tools));
    }
    update
        .and_where(Expr::col(Agents::ApplicationId).eq(app_id))
        .and_where(Expr::col(Agents::Id).eq(id))
        .returning(Query::returning().columns(COLUMNS));
    // Other instances cache agents: they hear of the change when it commits.
    db.transaction(move |tx| {
        Box::pin(async move {
            let updated: Option<Agent> = tx.row(&update).await?;
            if updated.is_some() {
                tx.notify(Notice::Agent(id)).await?;
            }
            Ok(updated)
        })
    })
    .await
}

/// Deletes an agent; its conversations and agent-bound memory go with it (cascade).
pub async fn delete(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<bool> {
    super::delete_in_application(
        db,
        Agents::Table,
        Agents::ApplicationId,
        Agents::Id,
        app_id,
        id,
        Some(Notice::Agent(id)),
    )
    .await
}

/// Agents by id, kept in memory for the data plane (every user request names an agent).
///
/// Entries live a few seconds, so a change made through another instance is seen soon even if
/// its notice (`invalidation`) is lost; changes through this instance evict at once.
pub struct AgentCache(RowCache<Agent>);

impl Default for AgentCache {
    fn default() -> Self {
        Self(RowCache::new(100_000, Duration::from_secs(5), Duration::from_secs(1)))
    }
}

impl AgentCache {
    /// The agent, if it belongs to this application.
    pub async fn get(&self, db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<Option<Arc<Agent>>> {
        let agent = self.0.get(id, || find_by_id(db, id)).await?;
        Ok(agent.filter(|agent| agent.application_id == app_id))
    }

    pub async fn invalidate(&self, id: Uuid) {
        self.0.invalidate(id).await;
    }

    /// Forgets everything (changes may have been missed).
    pub fn clear(&self) {
        self.0.clear();
    }

    /// Forgets every agent of an application (it was deleted).
    pub async fn invalidate_application(&self, app_id: Uuid) {
        self.0
            .invalidate_where(|agent| agent.application_id.uuid() == app_id)
            .await;
    }
}

/// The agent with this id, whatever its application (the cache checks the application).
async fn find_by_id(db: &Db, id: Uuid) -> StoreResult<Option<Agent>> {
    db.row(
        Query::select()
            .columns(COLUMNS)
            .from(Agents::Table)
            .and_where(Expr::col(Agents::Id).eq(id)),
    )
    .await
}
