//! MCP servers' tools, against a real MCP server: the official Python SDK's `MCPServer` over
//! Streamable HTTP (`tests/mcp/server.py`, its environment made by `tests/mcp/setup`), on
//! loopback. Its tools add, report the Authorization header they got, fail, and hang.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::completions::provider_agent;
use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script};
use crate::harness::{TestApp, test_settings, user_token};

db_tests!(
    an_agent_calls_an_mcp_servers_tools_with_its_headers,
    a_failing_or_hanging_mcp_tool_is_a_result_the_model_reads,
    the_model_is_offered_the_allowed_mcp_tools_under_prefixed_names,
    an_unreachable_mcp_server_leaves_the_turn_working,
);

/// The MCP server process; killed when dropped.
struct McpServer {
    child: Child,
    port: u16,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl McpServer {
    /// Starts the server, or `None` (with a notice) when its environment is missing, unless the
    /// real-client tests are required.
    async fn start() -> Option<Self> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
        let python = dir.join(".venv/bin/python");
        if !python.exists() {
            if std::env::var("CONFIDANT_REQUIRE_CLIENTS").is_ok_and(|v| v == "1") {
                panic!("the MCP test server's environment is missing: run tests/mcp/setup");
            }
            eprintln!("SKIPPED: the MCP tests need tests/mcp/.venv (run tests/mcp/setup)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python)
            .arg(dir.join("server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the MCP test server starts");
        let server = Self { child, port };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the MCP test server did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

fn calc(url: &str) -> Value {
    json!({"name": "calc", "url": url, "headers": {"Authorization": "Bearer mcp-test-token"},
           "allowed_tools": ["add", "whoami", "fail", "hang"]})
}

/// An echo agent with the MCP server; returns (agent, alice's token).
async fn mcp_agent(app: &TestApp, url: &str) -> (String, String) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let created = app
        .post(
            &format!("/v1/applications/{}/agents", tenant.app_id),
            &owner,
            json!({"name": "Calculator", "mcp_servers": [calc(url)]}),
        )
        .await;
    let agent = created.assert_status(201)["id"].as_str().unwrap().to_owned();
    (agent, user_token(&tenant.all_key, "alice"))
}

/// One DeltaKit turn, whole: (reply text, stored messages).
async fn ask(app: &TestApp, token: &str, agent: &str, text: &str) -> (String, Vec<Value>) {
    let conversation = format!("c-{}", uuid::Uuid::new_v4().simple());
    let reply = app
        .post(
            &format!("/v1/agents/{agent}/completions?format=deltakit"),
            token,
            json!({"message": text, "conversation_id": conversation, "stream": false}),
        )
        .await;
    let text = reply.assert_status(200)["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = app
        .get(&format!("/v1/agents/{agent}/conversations/{conversation}"), token)
        .await;
    (text, stored.assert_status(200)["messages"].as_array().unwrap().clone())
}

async fn an_agent_calls_an_mcp_servers_tools_with_its_headers(app: TestApp) {
    let Some(server) = McpServer::start().await else { return };
    let (agent, token) = mcp_agent(&app, &server.url()).await;
    let (text, messages) = ask(&app, &token, &agent, r#"/call calc__add {"a": 2, "b": 40}"#).await;
    assert_eq!(text, "42");
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(messages[1]["tool_calls"][0]["name"], "calc__add");
    assert_eq!(messages[2]["content"], "42");
    assert_eq!(messages[2]["tool_call_id"], messages[1]["tool_calls"][0]["id"]);
    // The configured header reached the server, opened from its sealed form.
    let (text, _) = ask(&app, &token, &agent, "/call calc__whoami {}").await;
    assert_eq!(text, "Bearer mcp-test-token");
}

async fn a_failing_or_hanging_mcp_tool_is_a_result_the_model_reads(mut app: TestApp) {
    let Some(server) = McpServer::start().await else { return };
    app.reconfigure(confidant::config::Settings {
        tool_timeout: Duration::from_secs(2),
        ..test_settings()
    })
    .await;
    let (agent, token) = mcp_agent(&app, &server.url()).await;
    let (text, messages) = ask(&app, &token, &agent, r#"/call calc__fail {"reason": "testing"}"#).await;
    // The server reports the failure (MCPServer names the tool, not the exception).
    assert!(text.starts_with("error: ") && text.contains("fail"), "{text}");
    assert_eq!(messages[2]["role"], "tool");
    // Bad arguments: the server's own validation, read by the model.
    let (text, _) = ask(&app, &token, &agent, r#"/call calc__add {"a": "two"}"#).await;
    assert!(text.starts_with("error:"), "{text}");
    let started = Instant::now();
    let (text, messages) = ask(&app, &token, &agent, "/call calc__hang {}").await;
    assert_eq!(text, "error: the MCP server did not answer in time");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(messages.last().unwrap()["status"], "complete");
    // A tool the agent does not allow cannot be called.
    let (text, _) = ask(&app, &token, &agent, "/call calc__hidden {}").await;
    assert_eq!(text, "error: there is no tool named `calc__hidden`");
}

async fn the_model_is_offered_the_allowed_mcp_tools_under_prefixed_names(app: TestApp) {
    let Some(server) = McpServer::start().await else { return };
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["ok".into()],
        delay: Duration::ZERO,
    })
    .await;
    let (owner, tenant, agent) = provider_agent(&app, &fake, false).await;
    app.patch(
        &format!("/v1/applications/{}/agents/{agent}", tenant.app_id),
        &owner,
        json!({"mcp_servers": [calc(&server.url())]}),
    )
    .await
    .assert_status(200);
    let token = user_token(&tenant.all_key, "alice");
    ask(&app, &token, &agent, "what can you do?").await;
    let tools = fake.requests()[0].1["tools"].clone();
    let mut names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["calc__add", "calc__fail", "calc__hang", "calc__whoami"]);
    let add = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "calc__add")
        .unwrap();
    assert_eq!(add["function"]["description"], "Adds two numbers.");
    assert_eq!(add["function"]["parameters"]["properties"]["a"]["type"], "integer");
}

async fn an_unreachable_mcp_server_leaves_the_turn_working(app: TestApp) {
    // A loopback "server" that hangs up on every connection, counting them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let (agent, token) = mcp_agent(&app, &format!("http://127.0.0.1:{port}/mcp")).await;
    let (text, _) = ask(&app, &token, &agent, "hello there").await;
    assert_eq!(text, "hello there");
    let tried = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(tried >= 1);
    // The failure is remembered for a while: the next turns do not wait on the server again.
    let (text, _) = ask(&app, &token, &agent, r#"/call calc__add {"a": 1, "b": 1}"#).await;
    assert_eq!(text, "error: there is no tool named `calc__add`");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), tried);
}
