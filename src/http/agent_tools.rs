//! An agent's tools in the admin API: client functions (JSON Schema checked when saved), the
//! memory tools, MCP servers (URLs under the address rules, header values write-only and sealed
//! under the master key) and `max_steps`.

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::providers::{origin_of, validate_outbound_url};
use crate::AppState;
use crate::completions::tools::{MCP_SEPARATOR, MEMORY_TOOL_NAMES, valid_tool_name};
use crate::error::{Error, Result};
use crate::store::agents::{self, AgentTools, FunctionTool, McpServer};
use crate::store::scope::ApplicationId;

const MAX_CLIENT_TOOLS: usize = 64;
const MAX_MCP_SERVERS: usize = 8;
const MAX_HEADERS: usize = 16;
const MAX_STEPS: u32 = 20;
const MAX_DESCRIPTION_CHARS: usize = 2048;
const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// Headers the MCP transport or HTTP itself sets.
const RESERVED_HEADERS: [&str; 8] = [
    "accept",
    "content-type",
    "content-length",
    "host",
    "connection",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// An MCP server as the API takes it: header values in plain text (stored sealed, never shown).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "docs", "url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer …"}, "allowed_tools": ["search"]}))]
pub struct McpServerInput {
    /// 1..32 of `A-Za-z0-9-` (the model sees its tools as `<name>__<tool>`).
    pub name: String,
    /// The server's Streamable HTTP endpoint.
    pub url: String,
    /// Sent with every request to the server. Write-only; left out on a change, the server's
    /// stored headers are kept (if its host and port stay the same).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Only these tools of the server reach the model (default: all).
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
}

/// An MCP server as the API shows it: the names of its headers, never their values.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpServerView {
    pub name: String,
    pub url: String,
    /// Names of the headers set (their values are write-only).
    pub headers: Vec<String>,
    pub allowed_tools: Option<Vec<String>>,
}

impl From<&McpServer> for McpServerView {
    fn from(server: &McpServer) -> Self {
        Self {
            name: server.name.clone(),
            url: server.url.clone(),
            headers: server.headers.keys().cloned().collect(),
            allowed_tools: server.allowed_tools.clone(),
        }
    }
}

/// The tool fields of a create or a change (each one left out stays as it is).
pub struct ToolsInput {
    pub tools: Option<Vec<FunctionTool>>,
    pub memory_tools: Option<bool>,
    pub mcp_servers: Option<Vec<McpServerInput>>,
    pub max_steps: Option<u32>,
}

impl ToolsInput {
    pub fn is_empty(&self) -> bool {
        self.tools.is_none() && self.memory_tools.is_none() && self.mcp_servers.is_none() && self.max_steps.is_none()
    }
}

/// Checks the input and builds the agent's stored tools from it and what it had (`current`).
pub async fn build(
    state: &AppState,
    app_id: ApplicationId,
    agent_id: Uuid,
    current: &AgentTools,
    input: ToolsInput,
) -> Result<AgentTools> {
    let mut tools = current.clone();
    if let Some(client) = input.tools {
        validate_client_tools(&client)?;
        tools.client = client;
    }
    if let Some(memory_tools) = input.memory_tools {
        tools.memory_tools = memory_tools;
    }
    if let Some(steps) = input.max_steps {
        if !(1..=MAX_STEPS).contains(&steps) {
            return Err(Error::invalid_field("max_steps", format!("must be 1 to {MAX_STEPS}")));
        }
        tools.max_steps = Some(steps);
    }
    if let Some(servers) = input.mcp_servers {
        if servers.len() > MAX_MCP_SERVERS {
            return Err(Error::invalid_field(
                "mcp_servers",
                format!("at most {MAX_MCP_SERVERS} servers"),
            ));
        }
        let mut stored = Vec::with_capacity(servers.len());
        for (i, server) in servers.into_iter().enumerate() {
            let field = format!("mcp_servers[{i}]");
            if stored.iter().any(|s: &McpServer| s.name == server.name) {
                return Err(Error::invalid_field(
                    format!("{field}.name"),
                    "two servers share this name",
                ));
            }
            let previous = current.mcp_servers.iter().find(|s| s.name == server.name);
            stored.push(mcp_server(state, app_id, agent_id, &field, server, previous).await?);
        }
        tools.mcp_servers = stored;
    }
    if tools.memory_tools
        && let Some(clash) = tools
            .client
            .iter()
            .find(|t| MEMORY_TOOL_NAMES.contains(&t.function.name.as_str()))
    {
        return Err(Error::invalid_field(
            "tools",
            format!("`{}` is the name of a memory tool", clash.function.name),
        ));
    }
    Ok(tools)
}

fn validate_client_tools(tools: &[FunctionTool]) -> Result<()> {
    if tools.len() > MAX_CLIENT_TOOLS {
        return Err(Error::invalid_field(
            "tools",
            format!("at most {MAX_CLIENT_TOOLS} tools"),
        ));
    }
    for (i, tool) in tools.iter().enumerate() {
        let field = format!("tools[{i}].function");
        let function = &tool.function;
        if !valid_tool_name(&function.name) || function.name.contains(MCP_SEPARATOR) {
            return Err(Error::invalid_field(
                format!("{field}.name"),
                "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', without `__` (which names MCP tools)",
            ));
        }
        if tools[..i].iter().any(|t| t.function.name == function.name) {
            return Err(Error::invalid_field(
                format!("{field}.name"),
                "two tools share this name",
            ));
        }
        if function
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return Err(Error::invalid_field(
                format!("{field}.description"),
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if let Some(schema) = &function.parameters {
            validate_parameters(schema).map_err(|why| Error::invalid_field(format!("{field}.parameters"), why))?;
        }
    }
    Ok(())
}

/// A tool's `parameters`: a valid JSON Schema (checked against its meta-schema) of an object.
pub fn validate_parameters(schema: &serde_json::Value) -> std::result::Result<(), String> {
    if schema.to_string().len() > MAX_SCHEMA_BYTES {
        return Err(format!("must be at most {MAX_SCHEMA_BYTES} bytes of JSON"));
    }
    if !schema.is_object() {
        return Err("must be a JSON Schema object".into());
    }
    if let Err(error) = jsonschema::meta::validate(schema) {
        return Err(format!("is not a valid JSON Schema: {error}"));
    }
    match schema.get("type") {
        Some(serde_json::Value::String(kind)) if kind == "object" => Ok(()),
        _ => Err("must describe an object (`\"type\": \"object\"`), as function arguments are".into()),
    }
}

async fn mcp_server(
    state: &AppState,
    app_id: ApplicationId,
    agent_id: Uuid,
    field: &str,
    server: McpServerInput,
    previous: Option<&McpServer>,
) -> Result<McpServer> {
    let name_ok = !server.name.is_empty()
        && server.name.len() <= 32
        && server.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !name_ok {
        return Err(Error::invalid_field(
            format!("{field}.name"),
            "must be 1 to 32 characters of A-Z, a-z, 0-9 or '-'",
        ));
    }
    let url = validate_outbound_url(state, &format!("{field}.url"), &server.url).await?;
    if let Some(allowed) = &server.allowed_tools
        && (allowed.len() > 256 || allowed.iter().any(|t| !valid_tool_name(t)))
    {
        return Err(Error::invalid_field(
            format!("{field}.allowed_tools"),
            "must be at most 256 tool names of 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'",
        ));
    }
    let headers = match server.headers {
        Some(headers) => {
            if headers.len() > MAX_HEADERS {
                return Err(Error::invalid_field(
                    format!("{field}.headers"),
                    format!("at most {MAX_HEADERS} headers"),
                ));
            }
            let mut sealed = BTreeMap::new();
            for (name, value) in headers {
                let valid = HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && HeaderValue::from_str(&value).is_ok()
                    && value.len() <= 8192;
                if RESERVED_HEADERS.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                    return Err(Error::invalid_field(
                        format!("{field}.headers"),
                        format!("`{name}` is set by the MCP protocol itself"),
                    ));
                }
                if !valid {
                    return Err(Error::invalid_field(
                        format!("{field}.headers"),
                        format!("`{name}` is not a valid header name and value"),
                    ));
                }
                let value = agents::seal_mcp_header(state.master_key(), app_id, agent_id, &server.name, &name, &value);
                sealed.insert(name, value);
            }
            sealed
        }
        None => match previous {
            // Stored headers stay only with the host and port they were given for.
            Some(previous) if !previous.headers.is_empty() => {
                let moved = url::Url::parse(&previous.url).map_or(true, |old| origin_of(&old) != origin_of(&url));
                if moved {
                    return Err(Error::invalid_field(
                        format!("{field}.headers"),
                        "the server moved to another host: send its headers again",
                    ));
                }
                previous.headers.clone()
            }
            _ => BTreeMap::new(),
        },
    };
    Ok(McpServer {
        name: server.name,
        url: url.as_str().to_owned(),
        headers,
        allowed_tools: server.allowed_tools,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::validate_parameters;

    #[test]
    fn parameters_are_object_schemas() {
        let ok = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        assert!(validate_parameters(&ok).is_ok());
        assert!(validate_parameters(&json!({"type": "string"})).is_err());
        assert!(validate_parameters(&json!({"type": "object", "properties": {"x": {"type": 5}}})).is_err());
        assert!(validate_parameters(&json!({"type": "object", "required": "city"})).is_err());
        assert!(validate_parameters(&json!([1])).is_err());
    }
}
