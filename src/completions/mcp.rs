//! MCP servers' tools, over Streamable HTTP with the official SDK (`rmcp`).
//!
//! A server's tool list is read once and kept per agent version (the agent's `updated_at` is in
//! the key, so saving the agent, on any instance, reads it again) for a few minutes; a server
//! that cannot be listed gives no tools (and is not asked again for 30 s), and the turn goes on.
//! A call opens a session, calls, and closes it, within `CONFIDANT_TOOL_TIMEOUT`. Every connection goes through
//! the providers' HTTP client: the same address rules, no redirects, no proxy. The agent's
//! configured headers (sealed at rest) are opened for each connection and sent with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;
use uuid::Uuid;

use super::tools::{MCP_SEPARATOR, ToolOutcome, cap, valid_tool_name};
use crate::AppState;
use crate::store::agents::{Agent, McpServer, open_mcp_headers};

/// How long a server's tool list is kept.
const LIST_TTL: Duration = Duration::from_secs(300);
/// How long a server that could not be listed is not asked again (so a hanging server does not
/// hold every turn for the tool timeout).
const FAILURE_TTL: Duration = Duration::from_secs(30);
/// Most tools taken from one server.
const MAX_TOOLS_PER_SERVER: usize = 128;
/// Largest JSON answer accepted from a server.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A tool of an MCP server, as the model is offered it.
#[derive(Debug, Clone)]
pub struct McpTool {
    /// The server's name in the agent's settings.
    pub server: String,
    /// The tool's own name on its server.
    pub tool: String,
    /// `<server>__<tool>`.
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

type ListKey = (Uuid, i64, String);

/// The MCP servers' tool lists, kept for a while.
pub struct McpTools {
    lists: moka::future::Cache<ListKey, Arc<Vec<McpTool>>>,
    failed: moka::future::Cache<ListKey, ()>,
}

impl Default for McpTools {
    fn default() -> Self {
        Self {
            lists: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(LIST_TTL)
                .build(),
            failed: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FAILURE_TTL)
                .build(),
        }
    }
}

type Session = RunningService<RoleClient, ClientConfig>;

impl McpTools {
    /// The tools of every MCP server of the agent, the servers asked at once (one that fails to
    /// list gives none, and is asked again after `FAILURE_TTL`).
    pub async fn tools_of(&self, state: &AppState, agent: &Agent) -> Vec<McpTool> {
        let lists = agent.tools.0.mcp_servers.iter().map(|server| async move {
            let key = (agent.id, agent.updated_at, server.name.clone());
            if self.failed.contains_key(&key) {
                return Vec::new();
            }
            let listed = self
                .lists
                .try_get_with(key.clone(), async { list(state, agent, server).await.map(Arc::new) })
                .await;
            match listed {
                Ok(list) => list.to_vec(),
                Err(error) => {
                    tracing::warn!(agent.id = %agent.id, mcp.server = %server.name, %error, "MCP server's tools unavailable");
                    self.failed.insert(key, ()).await;
                    Vec::new()
                }
            }
        });
        futures_util::future::join_all(lists)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Calls one tool of one of the agent's servers.
    pub async fn call(
        &self,
        state: &AppState,
        agent: &Agent,
        tool: &McpTool,
        arguments: serde_json::Map<String, Value>,
    ) -> ToolOutcome {
        let Some(server) = agent.tools.0.mcp_servers.iter().find(|s| s.name == tool.server) else {
            return ToolOutcome::failed("this MCP server is no longer configured");
        };
        let work = async {
            let session = connect(state, agent, server).await?;
            let params = CallToolRequestParams::new(tool.tool.clone()).with_arguments(arguments);
            let result = session.call_tool(params).await;
            // Close the session whatever the call gave.
            let _ = session.cancel().await;
            result.map_err(|e| format!("the MCP server failed: {e}"))
        };
        let result = match tokio::time::timeout(state.settings().tool_timeout, work).await {
            Err(_) => return ToolOutcome::failed("the MCP server did not answer in time"),
            Ok(Err(message)) => {
                tracing::warn!(agent.id = %agent.id, mcp.server = %server.name, tool = %tool.tool, message, "MCP call failed");
                return ToolOutcome::failed(message);
            }
            Ok(Ok(result)) => result,
        };
        let mut texts: Vec<String> = result
            .content
            .iter()
            .filter_map(|block| block.as_text().map(|t| t.text.clone()))
            .collect();
        if texts.is_empty()
            && let Some(structured) = &result.structured_content
        {
            texts.push(structured.to_string());
        }
        let output = cap(texts.join("\n"));
        if result.is_error == Some(true) {
            ToolOutcome::failed(output)
        } else {
            ToolOutcome::ok(output)
        }
    }
}

/// Opens a session with an agent's MCP server: address rules, then its headers, then MCP's
/// handshake.
async fn connect(state: &AppState, agent: &Agent, server: &McpServer) -> Result<Session, String> {
    let url = url::Url::parse(&server.url).map_err(|_| "the MCP server's address is invalid".to_owned())?;
    if let Err(refusal) = state.egress().check_url(&url) {
        tracing::warn!(agent.id = %agent.id, mcp.server = %server.name, "MCP server refused: {refusal}");
        return Err("the MCP server's address is not allowed by this server's configuration".into());
    }
    let headers = open_mcp_headers(state.master_key(), agent, server)
        .map_err(|_| "the MCP server's headers could not be opened".to_owned())?;
    let mut custom = HashMap::new();
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) else {
            return Err("the MCP server's headers are invalid".into());
        };
        custom.insert(name, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(server.url.clone())
        .custom_headers(custom)
        .max_json_response_size(MAX_RESPONSE_BYTES)
        .max_sse_event_size(MAX_RESPONSE_BYTES);
    let transport = StreamableHttpClientTransport::with_client(state.http().clone(), config);
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("confidant", env!("CARGO_PKG_VERSION")),
    );
    info.serve(transport)
        .await
        .map_err(|e| format!("could not connect to the MCP server: {e}"))
}

/// Reads a server's tools: those allowed, under names the model accepts.
async fn list(state: &AppState, agent: &Agent, server: &McpServer) -> Result<Vec<McpTool>, String> {
    let work = async {
        let session = connect(state, agent, server).await?;
        let listed = session.list_all_tools().await;
        let _ = session.cancel().await;
        listed.map_err(|e| format!("the MCP server failed to list its tools: {e}"))
    };
    let listed = tokio::time::timeout(state.settings().tool_timeout, work)
        .await
        .map_err(|_| "the MCP server did not list its tools in time".to_owned())??;
    let tools = listed
        .into_iter()
        .filter(|tool| {
            server
                .allowed_tools
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|a| a == tool.name.as_ref()))
        })
        .filter_map(|tool| {
            let name = format!("{}{MCP_SEPARATOR}{}", server.name, tool.name);
            if !valid_tool_name(&name) {
                tracing::info!(mcp.server = %server.name, tool = %tool.name, "MCP tool skipped: its name is not one a model accepts");
                return None;
            }
            Some(McpTool {
                server: server.name.clone(),
                tool: tool.name.to_string(),
                name,
                description: tool.description.map(|d| d.chars().take(2048).collect()),
                parameters: Value::Object((*tool.input_schema).clone()),
            })
        })
        .take(MAX_TOOLS_PER_SERVER)
        .collect();
    Ok(tools)
}
