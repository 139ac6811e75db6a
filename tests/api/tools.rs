//! Tools: agents' tool settings, client tools round-tripping in every format, the memory tools
//! (only ever the caller's own memory), and failed tools (the turn loop with a provider, and
//! stateless and private turns: tool_turns.rs).

use serde_json::{Value, json};

use crate::clients::{self, Assembled};
use crate::db_tests;
use crate::harness::{TestApp, user_token};

db_tests!(
    agents_keep_tool_settings_and_refuse_bad_ones,
    mcp_header_values_are_write_only_and_sealed,
    a_client_tool_round_trips_in_every_format,
    results_for_calls_never_made_are_refused,
    memory_tools_reach_only_the_callers_own_memory,
    a_failed_tool_is_a_result_the_model_reads,
);

const FORMATS: [&str; 5] = ["ai-sdk", "ai-sdk-4", "openai", "deltakit", "ag-ui"];

pub(crate) fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

/// An echo agent with these settings added.
pub(crate) async fn agent_with(app: &TestApp, owner: &str, app_id: &str, settings: Value) -> String {
    let mut body = json!({"name": format!("tools-{}", uuid::Uuid::new_v4().simple())});
    for (key, value) in settings.as_object().unwrap() {
        body[key] = value.clone();
    }
    let created = app
        .post(&format!("/v1/applications/{app_id}/agents"), owner, body)
        .await;
    created.assert_status(201)["id"].as_str().unwrap().to_owned()
}

/// Sends a streamed turn in a format and reads it as that format's client would.
pub(crate) async fn stream_turn(app: &TestApp, token: &str, agent: &str, format: &str, body: &Value) -> Assembled {
    let response = app
        .client
        .post(app.url(&format!("/v1/agents/{agent}/completions?format={format}&stream=true")))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{format}: {}",
        response.text().await.unwrap()
    );
    let text = response.text().await.unwrap();
    let read = match format {
        "ai-sdk" => clients::ai_sdk(&text),
        "ai-sdk-4" => clients::ai_sdk_4(&text),
        "openai" => clients::openai(&text),
        "ag-ui" => clients::ag_ui(&text),
        _ => clients::deltakit(&text),
    };
    read.unwrap_or_else(|e| panic!("{format} client rejected the stream: {e}\n{text}"))
}

pub(crate) fn user_turn(format: &str, text: &str, conversation: &str) -> Value {
    match format {
        "ai-sdk" => json!({"id": conversation, "trigger": "submit-message", "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}]}),
        "ai-sdk-4" => json!({"id": conversation, "messages": [{"id": "u1", "role": "user", "content": text}]}),
        "openai" => json!({"messages": [{"role": "user", "content": text}], "conversation_id": conversation}),
        "ag-ui" => json!({"threadId": conversation, "runId": "run-1", "state": {}, "tools": [], "context": [],
            "forwardedProps": {}, "messages": [{"id": "u1", "role": "user", "content": text}]}),
        _ => json!({"message": text, "conversation_id": conversation}),
    }
}

/// The turn that sends a client tool's result back, as each client does.
fn result_turn(
    format: &str,
    conversation: &str,
    asked: &str,
    reply_id: &str,
    call: &(String, String, Value),
    output: &str,
) -> Value {
    let (id, name, input) = call;
    match format {
        "ai-sdk" => json!({"id": conversation, "trigger": "submit-message", "messageId": reply_id, "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": asked}]},
            {"id": reply_id, "role": "assistant", "parts": [{"type": "step-start"},
                {"type": format!("tool-{name}"), "toolCallId": id, "state": "output-available", "input": input, "output": output}]}]}),
        "ai-sdk-4" => json!({"id": conversation, "messages": [
            {"id": "u1", "role": "user", "content": asked},
            {"id": reply_id, "role": "assistant", "content": "",
             "toolInvocations": [{"state": "result", "toolCallId": id, "toolName": name, "args": input, "result": output}]}]}),
        "openai" => json!({"conversation_id": conversation, "messages": [
            {"role": "user", "content": asked},
            {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}]},
            {"role": "tool", "tool_call_id": id, "content": output}]}),
        "ag-ui" => {
            json!({"threadId": conversation, "runId": "run-2", "state": {}, "tools": [], "context": [], "forwardedProps": {},
            "messages": [
                {"id": "u1", "role": "user", "content": asked},
                {"id": reply_id, "role": "assistant", "toolCalls": [{"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}]},
                {"id": "r1", "role": "tool", "toolCallId": id, "content": output}]})
        }
        _ => json!({"conversation_id": conversation, "tool_results": [{"tool_call_id": id, "output": output}]}),
    }
}

pub(crate) async fn stored(app: &TestApp, token: &str, agent: &str, conversation: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/v1/agents/{agent}/conversations/{conversation}"), token)
        .await;
    reply.assert_status(200)["messages"].as_array().unwrap().clone()
}

/// (role, content, tool call names or the answered call) of stored messages.
pub(crate) fn shape(messages: &[Value]) -> Vec<(String, String, String)> {
    messages
        .iter()
        .map(|m| {
            let tools = match (&m["tool_calls"], &m["tool_call_id"]) {
                (Value::Array(calls), _) => calls
                    .iter()
                    .map(|c| c["name"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(","),
                (_, Value::String(id)) => format!("answers {id}"),
                _ => String::new(),
            };
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
                tools,
            )
        })
        .collect()
}

async fn agents_keep_tool_settings_and_refuse_bad_ones(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let agents = format!("/v1/applications/{}/agents", tenant.app_id);
    let created = app
        .post(
            &agents,
            &owner,
            json!({"name": "Helper", "tools": [weather_tool()], "memory_tools": true, "max_steps": 3,
                   "mcp_servers": [{"name": "docs", "url": "http://127.0.0.1:9/mcp", "allowed_tools": ["search"]}]}),
        )
        .await;
    let body = created.assert_status(201);
    assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(body["memory_tools"], true);
    assert_eq!(body["max_steps"], 3);
    assert_eq!(body["mcp_servers"][0]["allowed_tools"], json!(["search"]));
    let id = body["id"].as_str().unwrap();
    let read = app.get(&format!("{agents}/{id}"), &owner).await;
    assert_eq!(read.assert_status(200)["tools"], body["tools"]);
    // A new agent has no tools and five steps.
    let plain = app.post(&agents, &owner, json!({"name": "Plain"})).await;
    assert_eq!(plain.assert_status(201)["tools"], json!([]));
    assert_eq!(plain.body["max_steps"], 5);
    assert_eq!(plain.body["memory_tools"], false);

    let bad = |tools: Value| json!({"name": format!("bad-{}", uuid::Uuid::new_v4().simple()), "tools": tools});
    let schema = |parameters: Value| json!([{"type": "function", "function": {"name": "f", "parameters": parameters}}]);
    let cases = [
        (
            bad(schema(json!({"type": "object", "properties": {"x": {"type": 7}}}))),
            "tools[0].function.parameters",
        ),
        (bad(schema(json!({"type": "string"}))), "tools[0].function.parameters"),
        (
            bad(json!([{"type": "function", "function": {"name": "has space"}}])),
            "tools[0].function.name",
        ),
        (
            bad(json!([{"type": "function", "function": {"name": "docs__search"}}])),
            "tools[0].function.name",
        ),
        (bad(json!([weather_tool(), weather_tool()])), "tools[1].function.name"),
        (
            json!({"name": "clash", "memory_tools": true, "tools": [{"type": "function", "function": {"name": "memorize"}}]}),
            "tools",
        ),
        (json!({"name": "steps", "max_steps": 0}), "max_steps"),
        (json!({"name": "steps", "max_steps": 21}), "max_steps"),
        (
            json!({"name": "mcp", "mcp_servers": [{"name": "a__b", "url": "http://127.0.0.1:9/mcp"}]}),
            "mcp_servers[0].name",
        ),
        (
            json!({"name": "mcp", "mcp_servers": [{"name": "inside", "url": "http://10.1.2.3/mcp"}]}),
            "mcp_servers[0].url",
        ),
        (
            json!({"name": "mcp", "mcp_servers": [{"name": "x", "url": "http://127.0.0.1:9/"}, {"name": "x", "url": "http://127.0.0.1:9/"}]}),
            "mcp_servers[1].name",
        ),
    ];
    for (body, field) in cases {
        let refused = app.post(&agents, &owner, body.clone()).await;
        refused.assert_error(422, "validation_failed");
        assert!(
            refused.body["details"]["fields"].get(field).is_some(),
            "{body} → {}",
            refused.body
        );
    }
    // Unknown fields in a tool are refused, as everywhere.
    let unknown = app
        .post(
            &agents,
            &owner,
            bad(json!([{"type": "function", "function": {"name": "f", "oops": 1}}])),
        )
        .await;
    assert_eq!(unknown.status.as_u16(), 400);

    // A change replaces what it names and keeps the rest.
    let changed = app
        .patch(
            &format!("{agents}/{id}"),
            &owner,
            json!({"memory_tools": false, "tools": []}),
        )
        .await;
    assert_eq!(changed.assert_status(200)["tools"], json!([]));
    assert_eq!(changed.body["max_steps"], 3);
    assert_eq!(changed.body["mcp_servers"][0]["name"], "docs");
}

async fn mcp_header_values_are_write_only_and_sealed(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let agents = format!("/v1/applications/{}/agents", tenant.app_id);
    const SECRET: &str = "Bearer mcp-secret-value-0123456789";
    let server = json!({"name": "docs", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": SECRET}});
    let created = app
        .post(&agents, &owner, json!({"name": "Sealed", "mcp_servers": [server]}))
        .await;
    let id = created.assert_status(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["mcp_servers"][0]["headers"], json!(["Authorization"]));
    assert!(!created.body.to_string().contains("mcp-secret"));
    let contents = crate::storage::database_contents(&app).await;
    assert!(
        !contents.windows(10).any(|w| w == b"mcp-secret"),
        "a header value is stored in plain text"
    );

    // A change that leaves headers out keeps them (same host and port); moving needs them again.
    let agent = format!("{agents}/{id}");
    let kept = app
        .patch(
            &agent,
            &owner,
            json!({"mcp_servers": [{"name": "docs", "url": "http://127.0.0.1:9/v2/mcp"}]}),
        )
        .await;
    assert_eq!(
        kept.assert_status(200)["mcp_servers"][0]["headers"],
        json!(["Authorization"])
    );
    let moved = app
        .patch(
            &agent,
            &owner,
            json!({"mcp_servers": [{"name": "docs", "url": "http://127.0.0.1:10/mcp"}]}),
        )
        .await;
    moved.assert_error(422, "validation_failed");
    assert!(moved.body["details"]["fields"].get("mcp_servers[0].headers").is_some());
    let cleared = app
        .patch(
            &agent,
            &owner,
            json!({"mcp_servers": [{"name": "docs", "url": "http://127.0.0.1:9/mcp", "headers": {}}]}),
        )
        .await;
    assert_eq!(cleared.assert_status(200)["mcp_servers"][0]["headers"], json!([]));
    let bad = app
        .patch(
            &agent,
            &owner,
            json!({"mcp_servers": [{"name": "docs", "url": "http://127.0.0.1:9/mcp", "headers": {"Bad Name": "x"}}]}),
        )
        .await;
    bad.assert_error(422, "validation_failed");
}

async fn a_client_tool_round_trips_in_every_format(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let agent = agent_with(&app, &owner, &tenant.app_id, json!({"tools": [weather_tool()]})).await;
    let token = user_token(&tenant.all_key, "alice");
    let asked = r#"/call get_weather {"city": "Paris"}"#;
    for format in FORMATS {
        let conversation = format!("weather-{format}");
        let called = stream_turn(&app, &token, &agent, format, &user_turn(format, asked, &conversation)).await;
        assert_eq!(called.tool_calls.len(), 1, "{format}: {called:?}");
        let call = called.tool_calls[0].clone();
        assert_eq!(call.1, "get_weather", "{format}");
        assert_eq!(call.2, json!({"city": "Paris"}), "{format}");
        assert!(called.text.is_empty(), "{format}: {}", called.text);
        match format {
            "openai" => assert_eq!(called.finish_reason.as_deref(), Some("tool_calls")),
            "ai-sdk-4" => assert_eq!(called.finish_reason.as_deref(), Some("tool-calls")),
            _ => {}
        }
        let messages = stored(&app, &token, &agent, &conversation).await;
        assert_eq!(
            shape(&messages),
            [
                ("user".into(), asked.into(), String::new()),
                ("assistant".into(), String::new(), "get_weather".into())
            ],
            "{format}"
        );
        assert_eq!(messages[1]["tool_calls"][0]["id"], call.0.as_str());
        let reply_id = messages[1]["id"].as_str().unwrap();

        // The client runs the tool and sends its result: the model goes on with it.
        let results = result_turn(format, &conversation, asked, reply_id, &call, "sunny in Paris");
        let answered = stream_turn(&app, &token, &agent, format, &results).await;
        assert_eq!(answered.text, "sunny in Paris", "{format}");
        assert!(answered.tool_calls.is_empty(), "{format}");
        let messages = stored(&app, &token, &agent, &conversation).await;
        assert_eq!(
            shape(&messages),
            [
                ("user".into(), asked.into(), String::new()),
                ("assistant".into(), String::new(), "get_weather".into()),
                ("tool".into(), "sunny in Paris".into(), format!("answers {}", call.0)),
                ("assistant".into(), "sunny in Paris".into(), String::new()),
            ],
            "{format}"
        );
        // The AI SDK shows the call, its result and the answer as one message (the one that
        // called): the next turn keeps them all.
        if format == "ai-sdk" {
            let next = json!({"id": conversation, "trigger": "submit-message", "messages": [
                {"id": "u1", "role": "user", "parts": [{"type": "text", "text": asked}]},
                {"id": reply_id, "role": "assistant", "parts": [{"type": "step-start"},
                    {"type": "tool-get_weather", "toolCallId": call.0, "state": "output-available", "input": call.2, "output": "sunny in Paris"},
                    {"type": "step-start"}, {"type": "text", "text": "sunny in Paris"}]},
                {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "thanks"}]}]});
            stream_turn(&app, &token, &agent, format, &next).await;
            let all = app
                .get(
                    &format!("/v1/agents/{agent}/conversations/{conversation}?include=superseded"),
                    &token,
                )
                .await;
            let states: Vec<&str> = all.assert_status(200)["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["status"].as_str().unwrap())
                .collect();
            assert_eq!(states, ["complete"; 6]);
        }
        // Sending the same result again stores nothing twice.
        if format == "deltakit" {
            stream_turn(&app, &token, &agent, format, &results).await;
            let again = stored(&app, &token, &agent, &conversation).await;
            assert_eq!(again.iter().filter(|m| m["role"] == "tool").count(), 1);
        }
    }
    // A whole (non-streamed) OpenAI reply carries the calls too.
    let whole = app
        .post(
            &format!("/v1/agents/{agent}/chat/completions"),
            &token,
            json!({"messages": [{"role": "user", "content": asked}]}),
        )
        .await;
    let choice = &whole.assert_status(200)["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city": "Paris"}"#
    );
}

async fn results_for_calls_never_made_are_refused(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let agent = agent_with(&app, &owner, &tenant.app_id, json!({"tools": [weather_tool()]})).await;
    let (alice, bob) = (user_token(&tenant.all_key, "alice"), user_token(&tenant.all_key, "bob"));
    let asked = r#"/call get_weather {"city": "Oslo"}"#;
    let called = stream_turn(&app, &alice, &agent, "deltakit", &user_turn("deltakit", asked, "mine")).await;
    let call_id = called.tool_calls[0].0.clone();
    let path = format!("/v1/agents/{agent}/completions");
    let send = |token: &str, conversation: &str, id: &str| {
        let body = json!({"conversation_id": conversation, "tool_results": [{"tool_call_id": id, "output": "cold"}]});
        let (token, path) = (token.to_owned(), path.clone());
        let app = &app;
        async move { app.post(&path, &token, body).await }
    };
    // A call the model never made.
    let never = send(&alice, "mine", "call_never_made").await;
    never.assert_error(422, "validation_failed");
    assert!(never.body["details"]["fields"].get("tool_results").is_some());
    // A call made in another conversation, of this user and of another.
    stream_turn(
        &app,
        &alice,
        &agent,
        "deltakit",
        &user_turn("deltakit", "hello", "other"),
    )
    .await;
    send(&alice, "other", &call_id)
        .await
        .assert_error(422, "validation_failed");
    stream_turn(&app, &bob, &agent, "deltakit", &user_turn("deltakit", "hello", "mine")).await;
    send(&bob, "mine", &call_id)
        .await
        .assert_error(422, "validation_failed");
    // Nothing was stored by the refusals; the right result is taken.
    let messages = stored(&app, &alice, &agent, "mine").await;
    assert_eq!(messages.len(), 2);
    let ok = send(&alice, "mine", &call_id).await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
}

async fn memory_tools_reach_only_the_callers_own_memory(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = agent_with(&app, &owner, &tenant.app_id, json!({"memory_tools": true})).await;
    let scoped_key = app
        .authentication_key(&owner, &tenant.app_id, json!({"agents": [agent]}))
        .await;
    let alice = user_token(&tenant.all_key, "alice");
    let alice_scoped = user_token(&scoped_key, "alice");
    let bob = user_token(&tenant.all_key, "bob");
    let other = app.tenant(&owner, "Other", 0).await;
    let other_agent = agent_with(&app, &owner, &other.app_id, json!({"memory_tools": true})).await;
    let other_alice = user_token(&other.all_key, "alice");

    let remembered = stream_turn(
        &app,
        &alice,
        &agent,
        "ai-sdk",
        &user_turn("ai-sdk", r#"/call memorize {"content": "likes green tea"}"#, "m1"),
    )
    .await;
    assert_eq!(remembered.tool_calls[0].1, "memorize");
    assert_eq!(remembered.tool_results.len(), 1);
    assert_eq!(remembered.tool_results[0].1["stored"], true);
    assert_eq!(remembered.steps, 2, "the result goes back to the model: a second step");
    let memories = app.get(&format!("/v1/memories?agent_id={agent}"), &alice).await;
    let data = memories.assert_status(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(
        (data[0]["content"].as_str(), data[0]["agent_id"].as_str()),
        (Some("likes green tea"), Some(agent.as_str()))
    );
    // An app-wide memory of alice's, stored by her app.
    app.post("/v1/memories", &alice, json!({"content": "prefers green window seats"}))
        .await
        .assert_status(201);

    let search = |token: String, agent: String, conversation: &'static str| {
        let app = &app;
        async move {
            let body = user_turn("deltakit", r#"/call search_memory {"query": "green"}"#, conversation);
            let found = stream_turn(app, &token, &agent, "deltakit", &body).await;
            let mut memories: Vec<String> = found.tool_results[0].1["memories"]
                .as_array()
                .unwrap_or_else(|| panic!("{found:?}"))
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
                .collect();
            memories.sort();
            memories
        }
    };
    assert_eq!(
        search(alice.clone(), agent.clone(), "s1").await,
        ["likes green tea", "prefers green window seats"]
    );
    // A key scoped to agents reaches the agent's memory only, never the app-wide records.
    assert_eq!(search(alice_scoped, agent.clone(), "s2").await, ["likes green tea"]);
    assert!(search(bob.clone(), agent.clone(), "s3").await.is_empty());
    assert!(search(other_alice, other_agent, "s4").await.is_empty());
    // Bob's memorize goes to Bob.
    stream_turn(
        &app,
        &bob,
        &agent,
        "deltakit",
        &user_turn(
            "deltakit",
            r#"/call memorize {"content": "green is bob's colour"}"#,
            "b1",
        ),
    )
    .await;
    let bobs = app.get("/v1/memories", &bob).await;
    assert_eq!(bobs.assert_status(200)["data"].as_array().unwrap().len(), 1);
    let alices = app.get("/v1/memories", &alice).await;
    assert_eq!(alices.assert_status(200)["data"].as_array().unwrap().len(), 2);
}

async fn a_failed_tool_is_a_result_the_model_reads(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let agent = agent_with(&app, &owner, &tenant.app_id, json!({"memory_tools": true})).await;
    let token = user_token(&tenant.all_key, "alice");
    for (asked, error) in [
        ("/call memorize {oops", "error: invalid arguments"),
        (
            r#"/call memorize {"content": 5}"#,
            "error: invalid arguments: `content` must be a non-empty string",
        ),
        ("/call no_such_tool {}", "error: there is no tool named `no_such_tool`"),
    ] {
        let conversation = format!("f-{}", uuid::Uuid::new_v4().simple());
        let turn = stream_turn(
            &app,
            &token,
            &agent,
            "ai-sdk",
            &user_turn("ai-sdk", asked, &conversation),
        )
        .await;
        assert!(turn.error.is_none(), "{turn:?}");
        assert!(turn.text.starts_with(error), "{asked}: {}", turn.text);
        let messages = stored(&app, &token, &agent, &conversation).await;
        assert_eq!(messages[2]["role"], "tool");
        assert!(messages[2]["content"].as_str().unwrap().starts_with(error));
    }
    let none = app.get("/v1/memories", &token).await;
    assert!(none.assert_status(200)["data"].as_array().unwrap().is_empty());
    // Operators see the failures counted.
    let metrics = app.call(reqwest::Method::GET, "/metrics", None, None).await;
    assert!(
        metrics
            .text
            .contains(r#"confidant_tool_calls_total{kind="memory",outcome="error"} 2"#),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains(r#"confidant_tool_calls_total{kind="unknown",outcome="error"} 1"#)
    );
}
