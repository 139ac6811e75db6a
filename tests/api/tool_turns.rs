//! The turn loop with tools: a provider's streamed tool calls through server tools and back,
//! `max_steps` stopping a looping model, stateless calls with client tools, and privacy mode.

use serde_json::json;

use crate::completions::provider_agent;
use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script};
use crate::harness::{TestApp, user_token};
use crate::tools::{agent_with, shape, stored, stream_turn, user_turn, weather_tool};

db_tests!(
    a_provider_streaming_tool_calls_loops_through_server_tools,
    max_steps_stops_a_looping_model,
    stateless_turns_use_client_tools_and_store_nothing,
    privacy_mode_stores_which_tools_were_called_not_with_what,
);

async fn a_provider_streaming_tool_calls_loops_through_server_tools(app: TestApp) {
    let fake = FakeProvider::start(Script::Sequence(vec![
        Script::ToolCalls(vec![
            ("search_memory".into(), r#"{"query": "tea"}"#.into()),
            ("memorize".into(), r#"{"content": "asked about tea"}"#.into()),
        ]),
        Script::Reply {
            chunks: vec!["You like ".into(), "tea.".into()],
            delay: std::time::Duration::ZERO,
        },
    ]))
    .await;
    let (owner, tenant, agent) = provider_agent(&app, &fake, false).await;
    app.patch(
        &format!("/v1/applications/{}/agents/{agent}", tenant.app_id),
        &owner,
        json!({"memory_tools": true}),
    )
    .await
    .assert_status(200);
    let token = user_token(&tenant.all_key, "alice");
    let turn = stream_turn(
        &app,
        &token,
        &agent,
        "ai-sdk",
        &user_turn("ai-sdk", "what do I like?", "loop"),
    )
    .await;
    assert_eq!(turn.text, "You like tea.");
    assert_eq!(turn.steps, 2);
    let names: Vec<&str> = turn.tool_calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, ["search_memory", "memorize"]);
    assert_eq!(turn.tool_calls[0].2, json!({"query": "tea"}));
    assert_eq!(turn.tool_results.len(), 2);

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> = requests[0].1["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["memorize", "search_memory"]);
    // The second call carries the first's tool calls and their results, in OpenAI's shape.
    let second = requests[1].1["messages"].as_array().unwrap();
    let n = second.len();
    assert_eq!(second[n - 3]["role"], "assistant");
    assert_eq!(second[n - 3]["tool_calls"][0]["function"]["name"], "search_memory");
    assert_eq!(second[n - 3]["tool_calls"][1]["id"], "call_1_1");
    assert_eq!(
        (second[n - 2]["role"].as_str(), second[n - 2]["tool_call_id"].as_str()),
        (Some("tool"), Some("call_1_0"))
    );
    assert_eq!(second[n - 1]["tool_call_id"], "call_1_1");

    let messages = stored(&app, &token, &agent, "loop").await;
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "assistant"]);
    // The turn's last message has the id the client was told.
    assert_eq!(messages[4]["content"], "You like tea.");

    // A later turn gives the stored calls and results back to the model.
    fake.set(Script::Reply {
        chunks: vec!["ok".into()],
        delay: std::time::Duration::ZERO,
    });
    let body = json!({"id": "loop", "trigger": "submit-message", "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "what do I like?"}]},
        {"id": messages[4]["id"], "role": "assistant", "parts": [{"type": "text", "text": "You like tea."}]},
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "thanks"}]}]});
    stream_turn(&app, &token, &agent, "ai-sdk", &body).await;
    let third = fake.requests()[2].1["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = third.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "tool", "assistant", "user"]
    );
    // Nothing of the turn was superseded by the next one.
    let after = stored(&app, &token, &agent, "loop").await;
    assert!(after.iter().all(|m| m["status"] == "complete"), "{after:?}");
}

async fn max_steps_stops_a_looping_model(app: TestApp) {
    let fake = FakeProvider::start(Script::ToolCalls(vec![(
        "search_memory".into(),
        r#"{"query": "again"}"#.into(),
    )]))
    .await;
    let (owner, tenant, agent) = provider_agent(&app, &fake, false).await;
    app.patch(
        &format!("/v1/applications/{}/agents/{agent}", tenant.app_id),
        &owner,
        json!({"memory_tools": true, "max_steps": 3}),
    )
    .await
    .assert_status(200);
    let token = user_token(&tenant.all_key, "alice");
    let whole = app
        .post(
            &format!("/v1/agents/{agent}/chat/completions"),
            &token,
            json!({"messages": [{"role": "user", "content": "loop"}], "conversation_id": "loop"}),
        )
        .await;
    let body = whole.assert_status(200);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    // Server tools are the server's: an OpenAI client is never asked to run them.
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(fake.requests().len(), 3);
    // Usage is the sum of the three calls.
    assert_eq!(body["usage"]["prompt_tokens"], 60);
    let messages = stored(&app, &token, &agent, "loop").await;
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool"]
    );
}

async fn stateless_turns_use_client_tools_and_store_nothing(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let agent = agent_with(
        &app,
        &owner,
        &tenant.app_id,
        json!({"tools": [weather_tool()], "memory_tools": true}),
    )
    .await;
    let (_, key) = app.create_api_key(&owner, &tenant.app_id, json!(["completions"])).await;
    let path = format!("/v1/agents/{agent}/chat/completions");
    let asked = json!({"role": "user", "content": r#"/call get_weather {"city": "Lyon"}"#});
    let first = app.post(&path, &key, json!({"messages": [asked]})).await;
    let message = first.assert_status(200)["choices"][0]["message"].clone();
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    let id = message["tool_calls"][0]["id"].as_str().unwrap();
    let answered = app
        .post(
            &path,
            &key,
            json!({"messages": [asked, message, {"role": "tool", "tool_call_id": id, "content": "mild in Lyon"}]}),
        )
        .await;
    assert_eq!(
        answered.assert_status(200)["choices"][0]["message"]["content"],
        "mild in Lyon"
    );
    // No user, no memory: the memory tools are not offered to a server's stateless call.
    let memorize = app
        .post(
            &path,
            &key,
            json!({"messages": [{"role": "user", "content": r#"/call memorize {"content": "x"}"#}]}),
        )
        .await;
    assert_eq!(
        memorize.assert_status(200)["choices"][0]["message"]["content"],
        "error: there is no tool named `memorize`"
    );
    assert_eq!(app.count_rows("messages").await, 0);
    assert_eq!(app.count_rows("memories").await, 0);
}

async fn privacy_mode_stores_which_tools_were_called_not_with_what(mut app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    app.patch(
        &format!("/v1/applications/{}", tenant.app_id),
        &owner,
        json!({"retention": {"store_content": false}}),
    )
    .await
    .assert_status(200);
    let agent = agent_with(&app, &owner, &tenant.app_id, json!({"tools": [weather_tool()]})).await;
    let token = user_token(&tenant.all_key, "alice");
    let path = format!("/v1/agents/{agent}/chat/completions");
    let asked = json!({"role": "user", "content": r#"/call get_weather {"city": "Secret-City-7781"}"#});
    let first = app
        .post(
            &path,
            &token,
            json!({"messages": [asked], "conversation_id": "private"}),
        )
        .await;
    let message = first.assert_status(200)["choices"][0]["message"].clone();
    let id = message["tool_calls"][0]["id"].as_str().unwrap().to_owned();
    let result = json!({"role": "tool", "tool_call_id": id, "content": "Secret-Result-5521"});
    let answered = app
        .post(
            &path,
            &token,
            json!({"messages": [asked, message, result], "conversation_id": "private"}),
        )
        .await;
    // The model had the request's history: it answers from the result.
    assert_eq!(
        answered.assert_status(200)["choices"][0]["message"]["content"],
        "Secret-Result-5521"
    );
    let messages = stored(&app, &token, &agent, "private").await;
    assert_eq!(
        shape(&messages),
        [
            ("user".into(), String::new(), String::new()),
            ("assistant".into(), String::new(), "get_weather".into()),
            ("tool".into(), String::new(), format!("answers {id}")),
            ("assistant".into(), String::new(), String::new()),
        ]
    );
    assert_eq!(messages[1]["tool_calls"][0]["arguments"], "");
    app.stop().await;
    let contents = crate::storage::database_contents(&app).await;
    for marker in ["Secret-City-7781", "Secret-Result-5521"] {
        assert!(
            !contents.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{marker} was stored"
        );
    }
}
