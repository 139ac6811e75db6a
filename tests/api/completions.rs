//! Completions in every wire format, in front of a real (fake) OpenAI-compatible provider over
//! HTTP: what goes upstream, what comes back, and every fault.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::clients::{self, Assembled};
use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script, UPSTREAM_SECRET};
use crate::harness::{Tenant, TestApp, user_token};

db_tests!(
    every_format_streams_and_answers_whole_from_the_provider,
    instructions_memory_and_history_go_upstream_in_order,
    upstream_error_before_streaming_is_502_and_keeps_the_user_message,
    upstream_dropping_mid_stream_gives_each_format_its_error_and_stores_incomplete,
    upstream_ending_without_finish_is_a_failure_too,
    an_upstream_event_past_the_bound_is_a_failure_too,
    client_disconnect_stops_the_upstream_and_stores_incomplete,
    concurrent_completions_keep_order_and_lose_nothing,
    ai_sdk_history_is_never_stored_twice,
    the_same_message_sent_several_times_at_once_is_stored_once,
    formats_are_inferred_from_the_body,
    silent_models_get_keep_alives,
    stateless_completions_store_nothing,
    provider_hosts_can_be_restricted,
    a_provider_silent_beyond_the_idle_timeout_fails_the_turn,
    history_sent_upstream_is_capped,
);

const FORMATS: [&str; 4] = ["ai-sdk", "ai-sdk-4", "openai", "deltakit"];

pub(crate) fn body_for(format: &str, text: &str, conversation: &str) -> Value {
    match format {
        "ai-sdk" => json!({"id": conversation, "trigger": "submit-message", "messages": [
            {"id": format!("u-{}", uuid::Uuid::new_v4().simple()), "role": "user", "parts": [{"type": "text", "text": text}]}
        ]}),
        "ai-sdk-4" => json!({"id": conversation, "messages": [{"role": "user", "content": text}]}),
        "openai" => json!({"messages": [{"role": "user", "content": text}], "conversation_id": conversation}),
        _ => json!({"message": text, "conversation_id": conversation}),
    }
}

pub(crate) fn parse(format: &str, body: &str) -> Assembled {
    let parsed = match format {
        "ai-sdk" => clients::ai_sdk(body),
        "ai-sdk-4" => clients::ai_sdk_4(body),
        "openai" => clients::openai(body),
        _ => clients::deltakit(body),
    };
    parsed.unwrap_or_else(|e| panic!("{format} client rejected the stream: {e}\n{body}"))
}

/// Reads a streamed body to its end; a broken body gives what arrived and `true`.
pub(crate) async fn read_stream(response: reqwest::Response) -> (String, bool) {
    let mut body = String::new();
    let mut stream = response.bytes_stream();
    while let Some(next) = stream.next().await {
        match next {
            Ok(bytes) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => return (body, true),
        }
    }
    (body, false)
}

/// An agent answering through the fake provider; returns (owner token, tenant, agent id).
pub(crate) async fn provider_agent(app: &TestApp, fake: &FakeProvider, memory: bool) -> (String, Tenant, String) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let providers = format!("/v1/applications/{}/providers", tenant.app_id);
    app.post(&providers, &owner, json!({"name": "fake", "kind": "openai-compatible", "base_url": fake.base_url(), "api_key": "sk-fake-provider-key"}))
        .await
        .assert_status(201);
    let agent = app
        .post(
            &format!("/v1/applications/{}/agents", tenant.app_id),
            &owner,
            json!({"name": "Upstream", "instructions": "You are the test agent.", "memory": memory,
                   "model": {"provider": "fake", "model": "test-model", "temperature": 0.5, "max_tokens": 100}}),
        )
        .await;
    let agent = agent.assert_status(201)["id"].as_str().unwrap().to_owned();
    (owner, tenant, agent)
}

pub(crate) async fn post_turn(
    app: &TestApp,
    token: &str,
    agent: &str,
    format: &str,
    stream: bool,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!(
            "/v1/agents/{agent}/completions?format={format}&stream={stream}"
        )))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn messages(
    app: &TestApp,
    token: &str,
    agent: &str,
    conversation: &str,
) -> Vec<(String, String, String)> {
    let reply = app
        .get(&format!("/v1/agents/{agent}/conversations/{conversation}"), token)
        .await;
    reply.assert_status(200)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn text_of_whole(format: &str, body: &Value) -> String {
    match format {
        "ai-sdk" => body["parts"][0]["text"].as_str().unwrap().to_owned(),
        "ai-sdk-4" => body["content"].as_str().unwrap().to_owned(),
        "openai" => body["choices"][0]["message"]["content"].as_str().unwrap().to_owned(),
        _ => body["message"]["content"].as_str().unwrap().to_owned(),
    }
}

async fn every_format_streams_and_answers_whole_from_the_provider(app: TestApp) {
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["Hel".into(), "lo, ".into(), "world".into()],
        delay: Duration::ZERO,
    })
    .await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    for format in FORMATS {
        for stream in [true, false] {
            let conversation = format!("{format}-{stream}");
            let response = post_turn(
                &app,
                &token,
                &agent,
                format,
                stream,
                &body_for(format, "hi", &conversation),
            )
            .await;
            assert_eq!(response.status().as_u16(), 200, "{format} stream={stream}");
            assert_eq!(response.headers()["x-conversation-id"], conversation.as_str());
            if stream {
                let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
                match format {
                    "ai-sdk" => assert_eq!(response.headers()["x-vercel-ai-ui-message-stream"], "v1"),
                    "ai-sdk-4" => assert_eq!(response.headers()["x-vercel-ai-data-stream"], "v1"),
                    _ => {}
                }
                assert!(content_type.starts_with(if format == "ai-sdk-4" {
                    "text/plain"
                } else {
                    "text/event-stream"
                }));
                let (body, broken) = read_stream(response).await;
                assert!(!broken);
                let assembled = parse(format, &body);
                assert_eq!(assembled.text, "Hello, world", "{format}: {body}");
                assert!(assembled.finished && assembled.error.is_none(), "{format}: {body}");
                if format != "ai-sdk-4" {
                    assert!(body.trim_end().ends_with("data: [DONE]"), "{format}: {body}");
                }
            } else {
                let body: Value = response.json().await.unwrap();
                assert_eq!(text_of_whole(format, &body), "Hello, world", "{format}: {body}");
            }
            let stored = messages(&app, &token, &agent, &conversation).await;
            assert_eq!(
                stored,
                vec![
                    ("user".into(), "hi".into(), "complete".into()),
                    ("assistant".into(), "Hello, world".into(), "complete".into())
                ]
            );
        }
    }
    // The provider saw the agent's model settings and its key.
    let (headers, request) = fake.requests().pop().unwrap();
    assert_eq!(headers["authorization"], "Bearer sk-fake-provider-key");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["accept"], "text/event-stream");
    assert!(
        headers["user-agent"].to_str().unwrap().starts_with("confidant/"),
        "{:?}",
        headers["user-agent"]
    );
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["temperature"], 0.5);
    assert_eq!(request["max_tokens"], 100);
    assert_eq!(request["stream"], true);
}

async fn instructions_memory_and_history_go_upstream_in_order(app: TestApp) {
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["Noted.".into()],
        delay: Duration::ZERO,
    })
    .await;
    let (_, tenant, agent) = provider_agent(&app, &fake, true).await;
    let token = user_token(&tenant.all_key, "alice");
    app.post(
        "/v1/memories",
        &token,
        json!({"content": "Alice is allergic to peanuts"}),
    )
    .await
    .assert_status(201);
    app.post("/v1/memories", &token, json!({"content": "Alice likes sailing"}))
        .await
        .assert_status(201);
    for text in ["first question", "is there peanuts in this?"] {
        let response = post_turn(&app, &token, &agent, "openai", false, &body_for("openai", text, "c1")).await;
        assert_eq!(response.status().as_u16(), 200);
    }
    let requests = fake.requests();
    let sent = crate::harness::roles_and_contents(&requests[1].1["messages"]);
    assert_eq!(sent[0], ("system".into(), "You are the test agent.".into()));
    assert_eq!(sent[1].0, "system");
    assert!(
        sent[1].1.contains("allergic to peanuts"),
        "relevant memory is given: {sent:?}"
    );
    assert!(!sent[1].1.contains("sailing"), "irrelevant memory is not: {sent:?}");
    assert_eq!(
        sent[2..].to_vec(),
        vec![
            ("user".into(), "first question".into()),
            ("assistant".into(), "Noted.".into()),
            ("user".into(), "is there peanuts in this?".into())
        ]
    );
    // memory=false leaves it out for one call.
    let mut body = body_for("openai", "peanuts again", "c1");
    body["memory"] = json!(false);
    post_turn(&app, &token, &agent, "openai", false, &body).await;
    let last = fake.requests().pop().unwrap().1;
    assert!(!last["messages"].to_string().contains("allergic"));
}

async fn upstream_error_before_streaming_is_502_and_keeps_the_user_message(app: TestApp) {
    let fake = FakeProvider::start(Script::Status(500)).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    for (format, stream) in [
        ("openai", false),
        ("openai", true),
        ("ai-sdk", true),
        ("deltakit", true),
    ] {
        let conversation = format!("failing-{format}-{stream}");
        let response = post_turn(
            &app,
            &token,
            &agent,
            format,
            stream,
            &body_for(format, "hello?", &conversation),
        )
        .await;
        let reply = TestApp::read(response).await;
        reply.assert_error(502, "upstream_error");
        assert!(
            !reply.text.contains(UPSTREAM_SECRET) && !reply.text.contains("sk-fake-provider-key"),
            "{}",
            reply.text
        );
        assert_eq!(
            messages(&app, &token, &agent, &conversation).await,
            vec![("user".into(), "hello?".into(), "complete".into())]
        );
    }
    fake.set(Script::Status(401));
    let reply =
        TestApp::read(post_turn(&app, &token, &agent, "openai", false, &body_for("openai", "x", "c401")).await).await;
    reply.assert_error(502, "upstream_error");
}

async fn upstream_dropping_mid_stream_gives_each_format_its_error_and_stores_incomplete(app: TestApp) {
    let fake = FakeProvider::start(Script::DropAfter(vec!["partial ".into(), "answer".into()])).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    check_failed_streams(&app, &token, &agent, "dropped").await;
}

async fn upstream_ending_without_finish_is_a_failure_too(app: TestApp) {
    let fake = FakeProvider::start(Script::EndWithoutFinish(vec!["partial ".into(), "answer".into()])).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    check_failed_streams(&app, &token, &agent, "unfinished").await;
}

async fn an_upstream_event_past_the_bound_is_a_failure_too(app: TestApp) {
    // The server reads a provider's event up to 4 MiB (twice the longest reply, at least), so a
    // provider cannot make it buffer without bound.
    let fake = FakeProvider::start(Script::Oversized(vec!["partial ".into(), "answer".into()])).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    check_failed_streams(&app, &token, &agent, "oversized").await;
}

async fn check_failed_streams(app: &TestApp, token: &str, agent: &str, label: &str) {
    for format in FORMATS {
        let conversation = format!("{label}-{format}");
        let response = post_turn(
            app,
            token,
            agent,
            format,
            true,
            &body_for(format, "tell me", &conversation),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200);
        let (body, broken) = read_stream(response).await;
        if format == "deltakit" {
            // No error event in DeltaKit's protocol: the body is aborted.
            assert!(broken, "deltakit: the body must abort: {body}");
            assert!(!body.contains("[DONE]"));
        } else {
            assert!(!broken, "{format}: {body}");
            let assembled = parse(format, &body);
            assert!(assembled.error.is_some(), "{format}: no error event: {body}");
            assert!(!assembled.finished || format == "openai", "{format}: {body}");
            assert_eq!(assembled.text, "partial answer");
        }
        let stored = messages(app, token, agent, &conversation).await;
        assert_eq!(
            stored[1],
            ("assistant".into(), "partial answer".into(), "incomplete".into()),
            "{format}"
        );
    }
    // Whole: a 502, and the partial reply kept as incomplete.
    let reply = TestApp::read(
        post_turn(
            app,
            token,
            agent,
            "openai",
            false,
            &body_for("openai", "whole", &format!("{label}-whole")),
        )
        .await,
    )
    .await;
    reply.assert_error(502, "upstream_error");
    let stored = messages(app, token, agent, &format!("{label}-whole")).await;
    assert_eq!(stored[1].2, "incomplete");
}

/// `confidant_provider_calls_running` from `/metrics`.
async fn provider_calls_running(app: &TestApp) -> u64 {
    let text = app.call(reqwest::Method::GET, "/metrics", None, None).await.text;
    text.lines()
        .find_map(|l| l.strip_prefix("confidant_provider_calls_running "))
        .unwrap_or_else(|| panic!("no provider gauge in {text}"))
        .parse()
        .unwrap()
}

async fn client_disconnect_stops_the_upstream_and_stores_incomplete(app: TestApp) {
    let fake = FakeProvider::start(Script::Hang(vec!["still ".into(), "thinking".into()])).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    let response = post_turn(
        &app,
        &token,
        &agent,
        "openai",
        true,
        &body_for("openai", "question", "gone"),
    )
    .await;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("thinking") {
        seen.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    // The call holds its place in a provider lane while the reply streams.
    assert_eq!(provider_calls_running(&app).await, 1);
    drop(stream); // the client goes away mid-reply
    let mut stopped = false;
    for _ in 0..100 {
        if fake.client_gone() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopped,
        "Confidant kept the upstream connection open after its client left"
    );
    // The upstream stream dropped, its lane's place is free again.
    assert_eq!(provider_calls_running(&app).await, 0);
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = messages(&app, &token, &agent, "gone").await;
        if stored.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stored[1],
        ("assistant".into(), "still thinking".into(), "incomplete".into())
    );
}

async fn concurrent_completions_keep_order_and_lose_nothing(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = tenant.agents[0].clone();
    let token = user_token(&tenant.all_key, "alice");
    let mut handles = Vec::new();
    for i in 0..10 {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/v1/agents/{agent}/completions")),
            token.clone(),
        );
        handles.push(tokio::spawn(async move {
            let body = json!({"messages": [{"role": "user", "content": format!("turn number {i}")}], "conversation_id": "busy"});
            client.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
        }));
    }
    for handle in handles {
        assert_eq!(handle.await.unwrap(), 200);
    }
    let stored = messages(&app, &token, &agent, "busy").await;
    assert_eq!(stored.len(), 20);
    for i in 0..10 {
        let text = format!("turn number {i}");
        let user_at = stored
            .iter()
            .position(|m| m.0 == "user" && m.1 == text)
            .expect("user message kept");
        let reply_at = stored
            .iter()
            .position(|m| m.0 == "assistant" && m.1 == text)
            .expect("reply kept");
        assert!(reply_at > user_at, "a reply comes after its question");
        assert_eq!(stored.iter().filter(|m| m.1 == text).count(), 2, "no duplicates");
    }
}

async fn ai_sdk_history_is_never_stored_twice(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = tenant.agents[0].clone();
    let token = user_token(&tenant.all_key, "alice");
    let user = |id: &str, text: &str| json!({"id": id, "role": "user", "parts": [{"type": "text", "text": text}]});
    let first = json!({"id": "chat", "trigger": "submit-message", "messages": [user("u1", "one")]});
    let (body, _) = read_stream(post_turn(&app, &token, &agent, "ai-sdk", true, &first).await).await;
    let message_id = clients::sse_events(&body)
        .iter()
        .find_map(|e| {
            serde_json::from_str::<Value>(e)
                .ok()
                .filter(|c| c["type"] == "start")
                .map(|c| c["messageId"].as_str().unwrap().to_owned())
        })
        .unwrap();
    let assistant = json!({"id": message_id, "role": "assistant", "parts": [{"type": "text", "text": "one"}]});
    let second = json!({"id": "chat", "trigger": "submit-message", "messages": [user("u1", "one"), assistant, user("u2", "two")]});
    read_stream(post_turn(&app, &token, &agent, "ai-sdk", true, &second).await).await;
    let stored = messages(&app, &token, &agent, "chat").await;
    let texts: Vec<(&str, &str)> = stored.iter().map(|m| (m.0.as_str(), m.1.as_str())).collect();
    assert_eq!(
        texts,
        vec![
            ("user", "one"),
            ("assistant", "one"),
            ("user", "two"),
            ("assistant", "two")
        ]
    );
    // The stored reply has the id the stream announced.
    let conversation = app.get(&format!("/v1/agents/{agent}/conversations/chat"), &token).await;
    assert_eq!(conversation.body["messages"][1]["id"], message_id.as_str());
}

/// A client retrying a message (the same id) while the first try is still being stored: the
/// appends race for the conversation's row, and only one of them stores it.
async fn the_same_message_sent_several_times_at_once_is_stored_once(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = tenant.agents[0].clone();
    let token = user_token(&tenant.all_key, "alice");
    let user = |id: &str, text: &str| json!({"id": id, "role": "user", "parts": [{"type": "text", "text": text}]});
    let first = json!({"id": "race", "trigger": "submit-message", "messages": [user("u1", "first")]});
    read_stream(post_turn(&app, &token, &agent, "ai-sdk", true, &first).await).await;
    let again = json!({"id": "race", "trigger": "submit-message", "messages": [user("u2", "same question")]});
    // On PostgreSQL, the conversation's row is held locked while the tries arrive, so they all
    // wait for it at once and then take turns: each after the first finds the message stored.
    let mut lock = None;
    if app.backend() == crate::harness::Backend::Postgres {
        use sqlx::Connection as _;
        let mut connection = sqlx::PgConnection::connect(&app.database.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
        sqlx::query("SELECT 1 FROM conversations WHERE external_id = 'race' FOR UPDATE")
            .execute(&mut connection)
            .await
            .unwrap();
        lock = Some(connection);
    }
    let tries = (0..6).map(|_| async { post_turn(&app, &token, &agent, "ai-sdk", true, &again).await.status() });
    let release = async {
        if let Some(mut connection) = lock {
            tokio::time::sleep(Duration::from_millis(500)).await;
            sqlx::query("COMMIT").execute(&mut connection).await.unwrap();
        }
    };
    let (statuses, ()) = tokio::join!(futures_util::future::join_all(tries), release);
    for status in statuses {
        assert!(status.is_success(), "{status}");
    }
    let stored = messages(&app, &token, &agent, "race").await;
    let asked = stored
        .iter()
        .filter(|m| m.0 == "user" && m.1 == "same question")
        .count();
    assert_eq!(asked, 1, "{stored:?}");
    assert_eq!(stored[0].1, "first");
}

async fn formats_are_inferred_from_the_body(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = tenant.agents[0].clone();
    let token = user_token(&tenant.all_key, "alice");
    let send = |body: Value, query: &'static str| {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/v1/agents/{agent}/completions{query}")),
            token.clone(),
        );
        async move { client.post(url).bearer_auth(token).json(&body).send().await.unwrap() }
    };
    let ui = send(
        json!({"id": "a", "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "hey you"}]}]}),
        "",
    )
    .await;
    assert_eq!(ui.headers()["x-vercel-ai-ui-message-stream"], "v1");
    assert_eq!(clients::ai_sdk(&ui.text().await.unwrap()).unwrap().text, "hey you");
    let delta = send(json!({"message": "hey you"}), "").await;
    assert_eq!(clients::deltakit(&delta.text().await.unwrap()).unwrap().text, "hey you");
    let openai = send(json!({"messages": [{"role": "user", "content": "hey you"}]}), "").await;
    assert_eq!(openai.json::<Value>().await.unwrap()["object"], "chat.completion");
    let v4 = send(
        json!({"id": "b", "messages": [{"role": "user", "content": "hey you"}]}),
        "?compatibilityMode=ai-sdk-4",
    )
    .await;
    assert_eq!(v4.headers()["x-vercel-ai-data-stream"], "v1");
    assert_eq!(clients::ai_sdk_4(&v4.text().await.unwrap()).unwrap().text, "hey you");
    let v5 = send(
        json!({"id": "c", "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}),
        "?compatibilityMode=ai-sdk-5",
    )
    .await;
    assert_eq!(v5.headers()["x-vercel-ai-ui-message-stream"], "v1");
}

async fn silent_models_get_keep_alives(mut app: TestApp) {
    let mut settings = app.settings.clone();
    settings.keepalive_interval = Duration::from_millis(100);
    app.reconfigure(settings).await;
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["slow".into(), " reply".into()],
        delay: Duration::from_millis(450),
    })
    .await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    for format in ["openai", "ai-sdk", "deltakit"] {
        let (body, _) = read_stream(
            post_turn(
                &app,
                &token,
                &agent,
                format,
                true,
                &body_for(format, "q", &format!("slow-{format}")),
            )
            .await,
        )
        .await;
        assert!(body.contains(": keep-alive\n\n"), "{format}: {body}");
        assert_eq!(parse(format, &body).text, "slow reply");
    }
    // The data stream protocol has no comments: none are sent there.
    let (body, _) = read_stream(
        post_turn(
            &app,
            &token,
            &agent,
            "ai-sdk-4",
            true,
            &body_for("ai-sdk-4", "q", "slow-v4"),
        )
        .await,
    )
    .await;
    assert!(!body.contains("keep-alive"));
    assert_eq!(parse("ai-sdk-4", &body).text, "slow reply");
}

async fn stateless_completions_store_nothing(app: TestApp) {
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["stateless".into()],
        delay: Duration::ZERO,
    })
    .await;
    let (owner, tenant, agent) = provider_agent(&app, &fake, true).await;
    let other_agent = app.create_agent(&owner, &tenant.app_id, "Other").await;
    let (_, key) = app.create_api_key(&owner, &tenant.app_id, json!(["completions"])).await;
    let body = json!({"messages": [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}, {"role": "user", "content": "now"}]});
    let reply = app
        .post(&format!("/v1/agents/{agent}/completions"), &key, body.clone())
        .await;
    assert_eq!(
        reply.assert_status(200)["choices"][0]["message"]["content"],
        "stateless"
    );
    // The client's history is the context (after the agent's instructions).
    let sent = fake.requests().pop().unwrap().1;
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    // X-API-Key works too, and streams.
    let response = app
        .client
        .post(app.url(&format!("/v1/agents/{agent}/completions?stream=true")))
        .header("x-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        clients::openai(&response.text().await.unwrap()).unwrap().text,
        "stateless"
    );
    assert_eq!(app.count_rows("conversations").await, 0);
    assert_eq!(app.count_rows("messages").await, 0);

    // A key limited to other agents, an admin-only key, another application's key.
    let limited = app
        .post(
            &format!("/v1/applications/{}/api-keys", tenant.app_id),
            &owner,
            json!({"name": "limited", "acl": ["completions"], "agents": [other_agent]}),
        )
        .await;
    let limited = limited.assert_status(201)["key"].as_str().unwrap().to_owned();
    app.post(&format!("/v1/agents/{agent}/completions"), &limited, body.clone())
        .await
        .assert_error(403, "agent_not_in_scope");
    let (_, admin_only) = app.create_api_key(&owner, &tenant.app_id, json!(["admin"])).await;
    app.post(&format!("/v1/agents/{agent}/completions"), &admin_only, body.clone())
        .await
        .assert_error(403, "forbidden");
    let other = app.tenant(&owner, "Other", 0).await;
    let (_, foreign) = app.create_api_key(&owner, &other.app_id, json!(["completions"])).await;
    app.post(&format!("/v1/agents/{agent}/completions"), &foreign, body.clone())
        .await
        .assert_error(404, "not_found");
    app.post(&format!("/v1/agents/{agent}/completions"), "cfd_not-a-key", body)
        .await
        .assert_error(401, "invalid_api_key");
}

async fn provider_hosts_can_be_restricted(mut app: TestApp) {
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["hi".into()],
        delay: Duration::ZERO,
    })
    .await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let mut settings = app.settings.clone();
    settings.provider_hosts = confidant::completions::egress::HostAllowlist::new(["api.openai.com"]);
    app.reconfigure(settings).await;
    let owner = app.owner_token().await;
    let providers = format!("/v1/applications/{}/providers", tenant.app_id);
    let internal = json!({"name": "internal", "kind": "openai-compatible", "base_url": "http://169.254.169.254/v1"});
    app.post(&providers, &owner, internal)
        .await
        .assert_error(422, "validation_failed");
    let allowed = json!({"name": "openai", "kind": "openai-compatible", "base_url": "https://api.openai.com/v1"});
    app.post(&providers, &owner, allowed).await.assert_status(201);
    // A provider stored before the restriction is refused at call time, without calling it.
    let token = user_token(&tenant.all_key, "alice");
    let before = fake.requests().len();
    let reply =
        TestApp::read(post_turn(&app, &token, &agent, "openai", false, &body_for("openai", "hi", "c")).await).await;
    reply.assert_error(502, "upstream_error");
    assert_eq!(fake.requests().len(), before);
}

async fn a_provider_silent_beyond_the_idle_timeout_fails_the_turn(mut app: TestApp) {
    let mut settings = app.settings.clone();
    settings.provider_idle_timeout = Duration::from_millis(300);
    app.reconfigure(settings).await;
    let fake = FakeProvider::start(Script::Hang(vec!["half".into()])).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    let started = std::time::Instant::now();
    let (body, _) =
        read_stream(post_turn(&app, &token, &agent, "ai-sdk", true, &body_for("ai-sdk", "q", "idle")).await).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let assembled = parse("ai-sdk", &body);
    assert_eq!(assembled.text, "half");
    assert!(assembled.error.is_some(), "{body}");
    assert_eq!(
        messages(&app, &token, &agent, "idle").await[1],
        ("assistant".into(), "half".into(), "incomplete".into())
    );
}

async fn history_sent_upstream_is_capped(mut app: TestApp) {
    let mut settings = app.settings.clone();
    settings.history_messages = 3;
    app.reconfigure(settings).await;
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["ok".into()],
        delay: Duration::ZERO,
    })
    .await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    for text in ["one", "two", "three"] {
        post_turn(&app, &token, &agent, "openai", false, &body_for("openai", text, "long")).await;
    }
    let sent = fake.requests().pop().unwrap().1;
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    // The instructions, then the three most recent messages ending with this turn's question.
    assert_eq!(contents, ["You are the test agent.", "two", "ok", "three"]);
}
