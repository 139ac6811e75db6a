//! Conversations, memory, completions (echo model, openai format) and the admin's export/erase.

use serde_json::{Value, json};

use crate::db_tests;
use crate::harness::{Reply, TestApp, user_token};

db_tests!(
    a_new_conversation_is_titled_by_its_first_message_until_renamed,
    whole_completion_stores_both_messages_and_names_the_conversation,
    streamed_completion_sends_chunks_then_done_and_stores_the_reply,
    chat_completions_path_is_the_openai_format,
    completion_without_a_conversation_id_starts_a_new_one,
    conversation_ids_are_validated_and_bound_to_their_agent,
    completion_with_an_unknown_format_or_no_user_message_is_refused,
    memory_is_given_to_the_model_unless_turned_off,
    conversations_list_newest_first_with_keyset_pagination,
    conversations_can_be_renamed_and_deleted_with_their_messages,
    memory_has_full_crud_and_validates_input,
    memory_search_ranks_matches_and_survives_query_syntax,
    memory_filter_by_agent_and_scoped_keys,
    export_returns_everything_and_erase_reports_counts,
    deleting_an_agent_deletes_its_conversations,
);

async fn setup(app: &TestApp) -> (String, crate::harness::Tenant, String) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 2).await;
    let token = user_token(&tenant.all_key, "alice");
    (owner, tenant, token)
}

/// The `content` of each item of a listing's `data`.
fn contents_of(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

fn ask(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

async fn whole_completion_stores_both_messages_and_names_the_conversation(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let mut body = ask("hello there");
    body["conversation_id"] = json!("chat-1");
    let reply = app.post(&format!("/v1/agents/{agent}/completions"), &token, body).await;
    let answer = reply.assert_status(200);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(answer["choices"][0]["message"]["content"], "hello there");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["conversation_id"], "chat-1");
    assert!(answer["created"].is_i64() && answer["usage"]["total_tokens"].is_u64());
    assert_eq!(reply.headers["x-conversation-id"], "chat-1");

    let conversation = app
        .get(&format!("/v1/agents/{agent}/conversations/chat-1"), &token)
        .await;
    let messages = conversation.assert_status(200)["messages"].as_array().unwrap().clone();
    let states = crate::harness::message_states(&Value::Array(messages.clone()));
    let summary = crate::harness::as_strs(&states);
    assert_eq!(
        summary,
        vec![
            ("user", "hello there", "complete"),
            ("assistant", "hello there", "complete")
        ]
    );
    assert_eq!(conversation.body["title"], "hello there");
    // The completion's id names the stored reply.
    assert_eq!(
        answer["id"].as_str().unwrap(),
        format!("chatcmpl-{}", messages[1]["id"].as_str().unwrap())
    );

    // A second turn continues the same conversation.
    let mut body = ask("again");
    body["conversation_id"] = json!("chat-1");
    app.post(&format!("/v1/agents/{agent}/completions"), &token, body)
        .await
        .assert_status(200);
    let conversation = app
        .get(&format!("/v1/agents/{agent}/conversations/chat-1"), &token)
        .await;
    assert_eq!(conversation.body["messages"].as_array().unwrap().len(), 4);
}

/// Reads an SSE body into its `data:` payloads, as an SSE client does.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .filter_map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.trim_start().to_owned())
                .reduce(|a, b| a + "\n" + &b)
        })
        .collect()
}

async fn streamed_completion_sends_chunks_then_done_and_stores_the_reply(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let mut body = ask("one two three");
    body["conversation_id"] = json!("streamed");
    let response = app
        .client
        .post(app.url(&format!("/v1/agents/{agent}/completions?stream=true")))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(response.headers()["x-conversation-id"], "streamed");
    let text = response.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["created"].is_i64())
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["conversation_id"], "streamed");
    let assembled: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(assembled, "one two three");
    assert!(
        chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty()))
            .count()
            >= 3,
        "a word at a time"
    );
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

    // The reply was stored before the stream ended.
    let conversation = app
        .get(&format!("/v1/agents/{agent}/conversations/streamed"), &token)
        .await;
    let messages = conversation.assert_status(200)["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["content"], "one two three");
    assert_eq!(messages[1]["status"], "complete");

    // `stream` in the body works too.
    let mut body = ask("body stream");
    body["stream"] = json!(true);
    let response = app
        .client
        .post(app.url(&format!("/v1/agents/{agent}/completions")))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
}

async fn chat_completions_path_is_the_openai_format(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let body = json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "ignored"}, {"role": "user", "content": "via the SDK path"}]});
    let reply = app
        .post(&format!("/v1/agents/{agent}/chat/completions"), &token, body)
        .await;
    assert_eq!(
        reply.assert_status(200)["choices"][0]["message"]["content"],
        "via the SDK path"
    );
    assert_eq!(reply.body["model"], "echo");
}

async fn completion_without_a_conversation_id_starts_a_new_one(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let first = app
        .post(&format!("/v1/agents/{agent}/completions"), &token, ask("a"))
        .await;
    let second = app
        .post(&format!("/v1/agents/{agent}/completions"), &token, ask("b"))
        .await;
    let (a, b) = (
        first.assert_status(200)["conversation_id"].as_str().unwrap().to_owned(),
        second.body["conversation_id"].as_str().unwrap().to_owned(),
    );
    assert_ne!(a, b);
    assert!(uuid::Uuid::parse_str(&a).is_ok());
    let list = app.get(&format!("/v1/agents/{agent}/conversations"), &token).await;
    assert_eq!(list.assert_status(200)["data"].as_array().unwrap().len(), 2);
}

async fn conversation_ids_are_validated_and_bound_to_their_agent(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let (x, y) = (&tenant.agents[0], &tenant.agents[1]);
    for bad in ["", "has space", "slash/inside", &"x".repeat(129)] {
        let mut body = ask("hi");
        body["conversation_id"] = json!(bad);
        app.post(&format!("/v1/agents/{x}/completions"), &token, body)
            .await
            .assert_error(422, "validation_failed");
    }
    let mut body = ask("hi");
    body["conversation_id"] = json!("Chat_ID-".to_owned() + &"9".repeat(120));
    app.post(&format!("/v1/agents/{x}/completions"), &token, body)
        .await
        .assert_status(200);
    let mut body = ask("hi");
    body["conversation_id"] = json!("bound");
    app.post(&format!("/v1/agents/{x}/completions"), &token, body.clone())
        .await
        .assert_status(200);
    app.post(&format!("/v1/agents/{y}/completions"), &token, body)
        .await
        .assert_error(409, "conflict");
    app.get(&format!("/v1/agents/{y}/conversations/bound"), &token)
        .await
        .assert_error(404, "not_found");
}

async fn completion_with_an_unknown_format_or_no_user_message_is_refused(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    app.post(
        &format!("/v1/agents/{agent}/completions?format=smoke-signals"),
        &token,
        ask("hi"),
    )
    .await
    .assert_error(400, "invalid_request");
    app.post(
        &format!("/v1/agents/{agent}/completions"),
        &token,
        json!({"messages": []}),
    )
    .await
    .assert_error(422, "validation_failed");
    app.post(
        &format!("/v1/agents/{agent}/completions"),
        &token,
        json!({"messages": "hi"}),
    )
    .await
    .assert_error(400, "invalid_request");
    let unknown = uuid::Uuid::now_v7();
    app.post(&format!("/v1/agents/{unknown}/completions"), &token, ask("hi"))
        .await
        .assert_error(404, "not_found");
    // Nothing was stored by the refused calls.
    let list = app.get(&format!("/v1/agents/{agent}/conversations"), &token).await;
    assert_eq!(list.assert_status(200)["data"], json!([]));
}

async fn memory_is_given_to_the_model_unless_turned_off(app: TestApp) {
    let (owner, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    app.patch(
        &format!("/v1/applications/{}/agents/{agent}", tenant.app_id),
        &owner,
        json!({"memory": true}),
    )
    .await
    .assert_status(200);
    let prompt_tokens = |reply: &crate::harness::Reply| reply.body["usage"]["prompt_tokens"].as_u64().unwrap();
    let without = app
        .post(
            &format!("/v1/agents/{agent}/completions"),
            &token,
            ask("green tea please"),
        )
        .await;
    app.post(
        "/v1/memories",
        &token,
        json!({"content": "alice drinks green tea with five extra words"}),
    )
    .await
    .assert_status(201);
    let with = app
        .post(
            &format!("/v1/agents/{agent}/completions"),
            &token,
            ask("green tea please"),
        )
        .await;
    let mut off = ask("green tea please");
    off["memory"] = json!(false);
    let switched_off = app.post(&format!("/v1/agents/{agent}/completions"), &token, off).await;
    // The echo model counts the words of its context: the memory record adds to it.
    assert!(
        prompt_tokens(&with) > prompt_tokens(&without),
        "{} vs {}",
        with.text,
        without.text
    );
    assert_eq!(prompt_tokens(&switched_off), prompt_tokens(&without));
}

async fn conversations_list_newest_first_with_keyset_pagination(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = ask("hi");
        body["conversation_id"] = json!(format!("c{i}"));
        app.post(&format!("/v1/agents/{agent}/completions"), &token, body)
            .await
            .assert_status(200);
        ids.push(format!("c{i}"));
    }
    // Activity moves a conversation to the top.
    let mut body = ask("bump");
    body["conversation_id"] = json!("c1");
    app.post(&format!("/v1/agents/{agent}/completions"), &token, body)
        .await
        .assert_status(200);
    let expected = vec!["c1", "c4", "c3", "c2", "c0"];

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/agents/{agent}/conversations?limit=2&cursor={c}"),
            None => format!("/v1/agents/{agent}/conversations?limit=2"),
        };
        let page = app.get(&path, &token).await.assert_status(200).clone();
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    app.get(&format!("/v1/agents/{agent}/conversations?cursor=bogus"), &token)
        .await
        .assert_error(400, "invalid_request");
}

async fn conversations_can_be_renamed_and_deleted_with_their_messages(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let mut body = ask("hi");
    body["conversation_id"] = json!("c");
    app.post(&format!("/v1/agents/{agent}/completions"), &token, body)
        .await
        .assert_status(200);
    let path = format!("/v1/agents/{agent}/conversations/c");
    let renamed = app.patch(&path, &token, json!({"title": "Shipping"})).await;
    assert_eq!(renamed.assert_status(200)["title"], "Shipping");
    app.patch(&path, &token, json!({"title": ""}))
        .await
        .assert_error(422, "validation_failed");
    assert_eq!(app.get(&path, &token).await.body["title"], "Shipping");
    assert_eq!(app.delete(&path, &token).await.status.as_u16(), 204);
    app.get(&path, &token).await.assert_error(404, "not_found");
    app.delete(&path, &token).await.assert_error(404, "not_found");
    // The messages went with it.
    let export = app
        .get(
            &format!("/v1/applications/{}/users/alice", tenant.app_id),
            &app.owner_token().await,
        )
        .await;
    assert_eq!(export.assert_status(200)["conversations"], json!([]));
}

async fn memory_has_full_crud_and_validates_input(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let created = app
        .post(
            "/v1/memories",
            &token,
            json!({"content": "likes tea", "metadata": {"source": "chat"}}),
        )
        .await;
    let created = created.assert_status(201).clone();
    assert!(created["agent_id"].is_null());
    assert_eq!(created["metadata"], json!({"source": "chat"}));
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/memories/{id}");
    assert_eq!(app.get(&path, &token).await.assert_status(200)["content"], "likes tea");
    let updated = app.patch(&path, &token, json!({"content": "likes coffee"})).await;
    assert_eq!(updated.assert_status(200)["content"], "likes coffee");
    assert_eq!(updated.body["metadata"], json!({"source": "chat"}));
    assert_eq!(app.delete(&path, &token).await.status.as_u16(), 204);
    app.get(&path, &token).await.assert_error(404, "not_found");

    app.post("/v1/memories", &token, json!({"content": ""}))
        .await
        .assert_error(422, "validation_failed");
    app.post("/v1/memories", &token, json!({"content": "x".repeat(17 * 1024)}))
        .await
        .assert_error(422, "validation_failed");
    app.post("/v1/memories", &token, json!({"content": "x", "metadata": [1]}))
        .await
        .assert_error(422, "validation_failed");
    app.post("/v1/memories", &token, json!({"content": 5}))
        .await
        .assert_error(400, "invalid_request");
    let other_app_agent = uuid::Uuid::now_v7();
    app.post(
        "/v1/memories",
        &token,
        json!({"content": "x", "agent_id": other_app_agent}),
    )
    .await
    .assert_error(404, "not_found");
    app.get("/v1/memories/not-a-uuid", &token)
        .await
        .assert_error(404, "not_found");
    let _ = tenant;
}

async fn memory_search_ranks_matches_and_survives_query_syntax(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    for content in [
        "alice likes green tea",
        "green tea and green tea again with tea",
        "bob likes coffee",
        "unrelated note",
    ] {
        app.post("/v1/memories", &token, json!({"content": content}))
            .await
            .assert_status(201);
    }
    let found = app.get("/v1/memories?q=green%20tea", &token).await;
    let contents = contents_of(found.assert_status(200));
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(contents.iter().all(|c| c.contains("tea")));
    assert!(found.body["next_cursor"].is_null());
    let coffee = app.get("/v1/memories?q=COFFEE", &token).await;
    assert_eq!(coffee.assert_status(200)["data"][0]["content"], "bob likes coffee");
    // Query syntax of either database is just text.
    for hostile in [
        "\"",
        "tea*",
        "NEAR(tea",
        "-tea",
        "tea OR",
        "a:b",
        "'); DROP TABLE memories; --",
        "%",
        "tea & | !",
    ] {
        let url = url::Url::parse_with_params(&app.url("/v1/memories"), [("q", hostile)]).unwrap();
        let reply = app.client.get(url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), 200, "{hostile}");
    }
    let all = app.get("/v1/memories", &token).await;
    assert_eq!(all.assert_status(200)["data"].as_array().unwrap().len(), 4);
    // Ranking: the record about the term beats one that mentions it in passing, whatever the
    // order they were stored in.
    app.post("/v1/memories", &token, json!({"content": "oolong oolong oolong"}))
        .await
        .assert_status(201);
    app.post(
        "/v1/memories",
        &token,
        json!({"content": "a long note about many things that names oolong once among other words"}),
    )
    .await
    .assert_status(201);
    let ranked = app.get("/v1/memories?q=oolong", &token).await;
    let contents = contents_of(ranked.assert_status(200));
    assert_eq!(contents.first(), Some(&"oolong oolong oolong"), "{contents:?}");
    assert_eq!(contents.len(), 2);
    // A user whose sub is not ASCII (SQLite's index keys memories by the hex of the owner's
    // bytes): their search finds their memory, and only theirs; alice's is unchanged.
    let zoe = user_token(&tenant.all_key, "Zoë 🚀 \"quoted\" x");
    app.post("/v1/memories", &zoe, json!({"content": "green tea forever"}))
        .await
        .assert_status(201);
    let theirs = app.get("/v1/memories?q=green%20tea", &zoe).await;
    assert_eq!(contents_of(theirs.assert_status(200)), ["green tea forever"]);
    let mine = app.get("/v1/memories?q=green%20tea", &token).await;
    assert_eq!(contents_of(mine.assert_status(200)).len(), 2);
}

async fn memory_filter_by_agent_and_scoped_keys(app: TestApp) {
    let (owner, tenant, token) = setup(&app).await;
    let (x, y) = (&tenant.agents[0], &tenant.agents[1]);
    app.post("/v1/memories", &token, json!({"content": "shared"}))
        .await
        .assert_status(201);
    app.post("/v1/memories", &token, json!({"content": "for x", "agent_id": x}))
        .await
        .assert_status(201);
    app.post("/v1/memories", &token, json!({"content": "for y", "agent_id": y}))
        .await
        .assert_status(201);
    let only_x = app.get(&format!("/v1/memories?agent_id={x}"), &token).await;
    let contents = contents_of(only_x.assert_status(200));
    assert_eq!(contents, vec!["for x"]);

    let key = app
        .authentication_key(&owner, &tenant.app_id, json!({"agents": [x]}))
        .await;
    let scoped = user_token(&key, "alice");
    let visible = app.get("/v1/memories", &scoped).await;
    let contents = contents_of(visible.assert_status(200));
    assert_eq!(contents, vec!["for x"]);
    app.get(&format!("/v1/memories?agent_id={y}"), &scoped)
        .await
        .assert_error(403, "agent_not_in_scope");
    app.post("/v1/memories", &scoped, json!({"content": "app-wide"}))
        .await
        .assert_error(403, "agent_not_in_scope");
    app.post("/v1/memories", &scoped, json!({"content": "for y", "agent_id": y}))
        .await
        .assert_error(403, "agent_not_in_scope");
    app.post("/v1/memories", &scoped, json!({"content": "x again", "agent_id": x}))
        .await
        .assert_status(201);
}

async fn export_returns_everything_and_erase_reports_counts(app: TestApp) {
    let (owner, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let bob = user_token(&tenant.all_key, "bob");
    for user in [&token, &bob] {
        app.post(&format!("/v1/agents/{agent}/completions"), user, ask("one"))
            .await
            .assert_status(200);
        app.post(&format!("/v1/agents/{agent}/completions"), user, ask("two"))
            .await
            .assert_status(200);
        app.post("/v1/memories", user, json!({"content": "note"}))
            .await
            .assert_status(201);
    }
    let users = format!("/v1/applications/{}/users", tenant.app_id);
    let export = app.get(&format!("{users}/alice"), &owner).await;
    let export = export.assert_status(200).clone();
    assert_eq!(export["sub"], "alice");
    assert_eq!(export["conversations"].as_array().unwrap().len(), 2);
    assert_eq!(export["conversations"][0]["messages"].as_array().unwrap().len(), 2);
    assert_eq!(export["memories"].as_array().unwrap().len(), 1);

    let erased = app.delete(&format!("{users}/alice"), &owner).await;
    assert_eq!(
        erased.assert_status(200).clone(),
        json!({"sub": "alice", "conversations": 2, "messages": 4, "memories": 1})
    );
    let after = app.get(&format!("{users}/alice"), &owner).await;
    assert_eq!(after.assert_status(200)["conversations"], json!([]));
    assert_eq!(after.body["memories"], json!([]));
    // Alice's token now sees nothing; Bob keeps everything.
    assert_eq!(
        app.get(&format!("/v1/agents/{agent}/conversations"), &token).await.body["data"],
        json!([])
    );
    let bobs = app.get(&format!("{users}/bob"), &owner).await;
    assert_eq!(bobs.assert_status(200)["conversations"].as_array().unwrap().len(), 2);
    // A sub with characters that need encoding.
    let odd = user_token(&tenant.all_key, "user@example.com/ü");
    app.post("/v1/memories", &odd, json!({"content": "odd"}))
        .await
        .assert_status(201);
    let export = app.get(&format!("{users}/user%40example.com%2F%C3%BC"), &owner).await;
    assert_eq!(export.assert_status(200)["memories"].as_array().unwrap().len(), 1);
    // Strangers cannot export.
    let stranger = app.other_operator("stranger@example.com").await;
    app.get(&format!("{users}/bob"), &stranger)
        .await
        .assert_error(403, "forbidden");
    app.delete(&format!("{users}/bob"), &stranger)
        .await
        .assert_error(403, "forbidden");
    let (_, completions_only) = app.create_api_key(&owner, &tenant.app_id, json!(["completions"])).await;
    app.get(&format!("{users}/bob"), &completions_only)
        .await
        .assert_error(403, "forbidden");
}

async fn deleting_an_agent_deletes_its_conversations(app: TestApp) {
    let (owner, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    app.post(&format!("/v1/agents/{agent}/completions"), &token, ask("hi"))
        .await
        .assert_status(200);
    app.post("/v1/memories", &token, json!({"content": "bound", "agent_id": agent}))
        .await
        .assert_status(201);
    app.delete(&format!("/v1/applications/{}/agents/{agent}", tenant.app_id), &owner)
        .await
        .assert_status(204);
    app.get(&format!("/v1/agents/{agent}/conversations"), &token)
        .await
        .assert_error(404, "not_found");
    let export = app
        .get(&format!("/v1/applications/{}/users/alice", tenant.app_id), &owner)
        .await;
    assert_eq!(export.assert_status(200)["conversations"], json!([]));
    assert_eq!(export.body["memories"], json!([]));
}

async fn a_new_conversation_is_titled_by_its_first_message_until_renamed(app: TestApp) {
    let (_, tenant, token) = setup(&app).await;
    let agent = &tenant.agents[0];
    let completions = format!("/v1/agents/{agent}/completions");
    let turn = |text: &str| {
        let mut body = ask(text);
        body["conversation_id"] = json!("titled");
        app.post(&completions, &token, body)
    };
    turn("I ordered a pair of walking boots last Tuesday and they still have not arrived")
        .await
        .assert_status(200);
    let path = format!("/v1/agents/{agent}/conversations/titled");
    let title = |reply: &Reply| reply.body["title"].as_str().unwrap().to_owned();
    assert_eq!(
        title(&app.get(&path, &token).await),
        "I ordered a pair of walking boots last Tuesday and they"
    );
    // Later messages do not change it; a rename does, and stays.
    turn("Order 1234").await.assert_status(200);
    assert_eq!(
        title(&app.get(&path, &token).await),
        "I ordered a pair of walking boots last Tuesday and they"
    );
    app.patch(&path, &token, json!({"title": "Late boots"}))
        .await
        .assert_status(200);
    turn("Any news?").await.assert_status(200);
    assert_eq!(title(&app.get(&path, &token).await), "Late boots");
}
