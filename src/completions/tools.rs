//! The tools of one turn: what the model is offered (the agent's client functions, the memory
//! tools, MCP servers' tools), who runs each call, and running the server's own.
//!
//! Server tools run with the caller's `AgentScope` and nothing else (MCP servers get no user data
//! but the arguments the model wrote): `memorize` writes the
//! agent's memory of this user, `search_memory` reads this user's memory (app-wide records only
//! when the token's key covers all agents). A failed tool (bad arguments, an error, a timeout) is
//! a result the model reads, never an error of the turn.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::mcp::McpTool;
use super::{PromptMessage, ToolCall};
use crate::AppState;
use crate::store::agents::Agent;
use crate::store::scope::{AgentScope, MemoryOwner};
use crate::store::user_data::{self, MemoryFilter};

/// What separates an MCP server's name from its tool's in the name the model sees.
pub const MCP_SEPARATOR: &str = "__";
pub const MEMORIZE: &str = "memorize";
pub const SEARCH_MEMORY: &str = "search_memory";
pub const MEMORY_TOOL_NAMES: [&str; 2] = [MEMORIZE, SEARCH_MEMORY];

/// Longest tool result kept (and given to the model), in bytes.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest memory a `memorize` call may store, in bytes (as `POST /v1/memories`).
const MAX_MEMORY_BYTES: usize = 16 * 1024;
/// Memories one `search_memory` call returns.
const SEARCH_RESULTS: u64 = 8;
/// How long one memory tool call may take.
const MEMORY_TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// OpenAI's rule for function names: 1..64 of `A-Za-z0-9_-`.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Who runs a tool.
#[derive(Debug, Clone)]
enum Runner {
    /// The caller's app: the turn ends with the call.
    Client,
    Memorize,
    SearchMemory,
    Mcp(McpTool),
}

/// A tool the model is offered.
#[derive(Debug, Clone)]
struct ToolDef {
    name: String,
    description: Option<String>,
    parameters: Value,
    strict: Option<bool>,
    runner: Runner,
}

/// The tools of one turn.
#[derive(Debug, Clone)]
pub struct ToolSet {
    agent: Arc<Agent>,
    defs: Vec<ToolDef>,
}

/// What running a server tool gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    pub output: String,
    pub error: bool,
}

impl ToolOutcome {
    pub(super) fn ok(output: impl Into<String>) -> Self {
        Self {
            output: cap(output.into()),
            error: false,
        }
    }

    pub(super) fn failed(message: impl std::fmt::Display) -> Self {
        Self {
            output: cap(format!("error: {message}")),
            error: true,
        }
    }
}

/// A result cut to `MAX_RESULT_BYTES`, at a character boundary.
pub fn cap(mut text: String) -> String {
    if text.len() > MAX_RESULT_BYTES {
        let mut end = MAX_RESULT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl ToolSet {
    /// The agent's tools for a turn: its client functions, the memory tools when it has them and
    /// the turn has a user (a stateless turn has no memory to reach), and its MCP servers' tools.
    pub async fn for_turn(state: &AppState, agent: &Arc<Agent>, has_user: bool) -> Self {
        let mut set = Self::without_mcp(agent, has_user);
        if !agent.tools.0.mcp_servers.is_empty() {
            for tool in state.mcp().tools_of(state, agent).await {
                // A client tool of the same name wins (names with `__` are refused for them).
                if set.defs.iter().any(|d| d.name == tool.name) {
                    continue;
                }
                set.defs.push(ToolDef {
                    name: tool.name.clone(),
                    description: tool.description.clone(),
                    parameters: tool.parameters.clone(),
                    strict: None,
                    runner: Runner::Mcp(tool),
                });
            }
        }
        set
    }

    fn without_mcp(agent: &Arc<Agent>, has_user: bool) -> Self {
        let tools = &agent.tools.0;
        let mut defs: Vec<ToolDef> = tools
            .client
            .iter()
            .map(|tool| ToolDef {
                name: tool.function.name.clone(),
                description: tool.function.description.clone(),
                parameters: tool
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                strict: tool.function.strict,
                runner: Runner::Client,
            })
            .collect();
        if tools.memory_tools && has_user {
            defs.push(ToolDef {
                name: MEMORIZE.into(),
                description: Some(
                    "Store a short fact about the user (a preference, a detail they shared) to recall in later \
                     conversations."
                        .into(),
                ),
                parameters: json!({"type": "object", "properties": {"content": {"type": "string", "description": "The fact, in one sentence"}}, "required": ["content"]}),
                strict: None,
                runner: Runner::Memorize,
            });
            defs.push(ToolDef {
                name: SEARCH_MEMORY.into(),
                description: Some("Search the facts stored about the user.".into()),
                parameters: json!({"type": "object", "properties": {"query": {"type": "string", "description": "Words to look for"}}, "required": ["query"]}),
                strict: None,
                runner: Runner::SearchMemory,
            });
        }
        Self {
            agent: agent.clone(),
            defs,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// Whether the server runs this call (memory, MCP, or a tool it does not know, which it
    /// answers with an error); else the client does.
    pub fn is_server(&self, name: &str) -> bool {
        !matches!(self.runner(name), Some(Runner::Client))
    }

    /// Who runs a call, for the metrics.
    pub fn kind(&self, name: &str) -> crate::metrics::ToolKind {
        use crate::metrics::ToolKind;
        match self.runner(name) {
            Some(Runner::Client) => ToolKind::Client,
            Some(Runner::Mcp(_)) => ToolKind::Mcp,
            Some(Runner::Memorize | Runner::SearchMemory) => ToolKind::Memory,
            None => ToolKind::Unknown,
        }
    }

    fn runner(&self, name: &str) -> Option<&Runner> {
        self.defs.iter().find(|d| d.name == name).map(|d| &d.runner)
    }

    /// The tools in OpenAI's request shape.
    pub fn to_openai(&self) -> Vec<Value> {
        self.defs
            .iter()
            .map(|def| {
                let mut function = json!({"name": def.name, "parameters": def.parameters});
                if let Some(description) = &def.description {
                    function["description"] = description.as_str().into();
                }
                if let Some(strict) = def.strict {
                    function["strict"] = strict.into();
                }
                json!({"type": "function", "function": function})
            })
            .collect()
    }

    /// Runs a server tool for the caller (`None`: a stateless turn, no user).
    pub async fn run(&self, state: &AppState, scope: Option<&AgentScope>, call: &ToolCall) -> ToolOutcome {
        let runner = match self.runner(&call.name) {
            None => return ToolOutcome::failed(format!("there is no tool named `{}`", call.name)),
            Some(Runner::Client) => return ToolOutcome::failed("this tool is run by the client"),
            Some(runner) => runner,
        };
        let arguments = match parse_arguments(&call.arguments) {
            Ok(arguments) => arguments,
            Err(why) => return ToolOutcome::failed(why),
        };
        if let Runner::Mcp(tool) = runner {
            // Its own timeout (the server's `tool_timeout`) is inside.
            return state.mcp().call(state, &self.agent, tool, arguments).await;
        }
        let Some(scope) = scope else {
            return ToolOutcome::failed("this tool needs a user");
        };
        let work = async {
            match runner {
                Runner::Memorize => memorize(state, scope, &arguments).await,
                Runner::SearchMemory => search_memory(state, scope, &arguments).await,
                Runner::Client | Runner::Mcp(_) => unreachable!("run above"),
            }
        };
        match tokio::time::timeout(MEMORY_TOOL_TIMEOUT, work).await {
            Ok(outcome) => outcome,
            Err(_) => ToolOutcome::failed("the tool took too long"),
        }
    }
}

/// A call's arguments: a JSON object (empty text counts as `{}`).
fn parse_arguments(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("invalid arguments: expected a JSON object".into()),
        Err(e) => Err(format!("invalid arguments: {e}")),
    }
}

fn string_argument<'a>(arguments: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, ToolOutcome> {
    match arguments.get(name) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        _ => Err(ToolOutcome::failed(format!(
            "invalid arguments: `{name}` must be a non-empty string"
        ))),
    }
}

async fn memorize(state: &AppState, scope: &AgentScope, arguments: &serde_json::Map<String, Value>) -> ToolOutcome {
    let content = match string_argument(arguments, "content") {
        Ok(content) => content.trim(),
        Err(outcome) => return outcome,
    };
    if content.len() > MAX_MEMORY_BYTES {
        return ToolOutcome::failed(format!("a memory may be at most {MAX_MEMORY_BYTES} bytes"));
    }
    if !scope.user().stores_content() {
        return ToolOutcome::failed("this application is in privacy mode: memory is not stored");
    }
    let owner = MemoryOwner::Agent(scope.clone());
    match user_data::create_memory(state.db(), &owner, content, &json!({"source": "memorize"})).await {
        Ok(memory) => ToolOutcome::ok(json!({"stored": true, "id": memory.id}).to_string()),
        Err(error) => {
            tracing::error!(%error, "memorize failed");
            ToolOutcome::failed("the memory could not be stored")
        }
    }
}

async fn search_memory(
    state: &AppState,
    scope: &AgentScope,
    arguments: &serde_json::Map<String, Value>,
) -> ToolOutcome {
    let query = match string_argument(arguments, "query") {
        Ok(query) => query,
        Err(outcome) => return outcome,
    };
    // App-wide records only for a key that reaches them (the contract's rule for memory).
    let filter = if scope.user().covers_all_agents() {
        MemoryFilter::AgentOrShared(scope.agent_id())
    } else {
        MemoryFilter::Agent(scope.agent_id())
    };
    let terms = user_data::search_terms(query);
    match user_data::search_memories(state.db(), scope.user(), filter, &terms, SEARCH_RESULTS).await {
        Ok(found) => {
            let memories: Vec<&str> = found.iter().map(|m| m.content.as_str()).collect();
            ToolOutcome::ok(json!({"memories": memories}).to_string())
        }
        Err(error) => {
            tracing::error!(%error, "search_memory failed");
            ToolOutcome::failed("memory could not be searched")
        }
    }
}

/// Makes a history the providers accept: every assistant message's tool calls are answered by
/// the tool messages right after it (a call with no result, because the user moved on, is
/// answered "no result"), and a tool message that answers no call just before it (the start of a
/// history window, a result that came after another message) is dropped.
pub fn well_formed(history: Vec<PromptMessage>) -> Vec<PromptMessage> {
    let mut out: Vec<PromptMessage> = Vec::with_capacity(history.len());
    let mut open: Vec<String> = Vec::new();
    for message in history {
        if message.role == "tool" {
            let answers = message
                .tool_call_id
                .as_ref()
                .and_then(|id| open.iter().position(|o| o == id));
            if let Some(at) = answers {
                open.remove(at);
                out.push(message);
            }
            continue;
        }
        close(&mut out, &mut open);
        if message.role == "assistant" {
            open = message.tool_calls.iter().map(|c| c.id.clone()).collect();
        }
        out.push(message);
    }
    close(&mut out, &mut open);
    out
}

fn close(out: &mut Vec<PromptMessage>, open: &mut Vec<String>) {
    for id in open.drain(..) {
        out.push(PromptMessage {
            role: "tool",
            content: "no result: the tool was not run".into(),
            tool_call_id: Some(id),
            ..PromptMessage::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: "{}".into(),
        }
    }

    fn tool(id: &str) -> PromptMessage {
        PromptMessage {
            role: "tool",
            content: format!("result {id}"),
            tool_call_id: Some(id.into()),
            ..PromptMessage::default()
        }
    }

    fn calls(ids: &[&str]) -> PromptMessage {
        PromptMessage {
            role: "assistant",
            tool_calls: ids.iter().map(|id| call(id)).collect(),
            ..PromptMessage::default()
        }
    }

    fn shape(history: &[PromptMessage]) -> Vec<String> {
        history
            .iter()
            .map(|m| match (&m.tool_call_id, m.tool_calls.len()) {
                (Some(id), _) if m.content.starts_with("no result") => format!("none:{id}"),
                (Some(id), _) => format!("tool:{id}"),
                (None, 0) => m.role.to_owned(),
                (None, n) => format!("calls:{n}"),
            })
            .collect()
    }

    #[test]
    fn every_call_is_answered_right_after_it() {
        let history = vec![
            tool("orphan"),
            PromptMessage::text("user", "hi"),
            calls(&["a", "b"]),
            tool("b"),
            PromptMessage::text("user", "never mind"),
            tool("a"),
            calls(&["c"]),
        ];
        assert_eq!(
            shape(&well_formed(history)),
            ["user", "calls:2", "tool:b", "none:a", "user", "calls:1", "none:c"]
        );
    }

    #[test]
    fn a_complete_history_is_unchanged() {
        let history = vec![
            PromptMessage::text("user", "hi"),
            calls(&["a"]),
            tool("a"),
            PromptMessage::text("assistant", "done"),
        ];
        assert_eq!(well_formed(history.clone()), history);
    }

    #[test]
    fn arguments_are_an_object() {
        assert!(parse_arguments("").unwrap().is_empty());
        assert!(parse_arguments("{\"q\": 1}").is_ok());
        assert!(parse_arguments("[1]").is_err());
        assert!(parse_arguments("{oops").is_err());
    }
}
