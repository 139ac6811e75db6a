//! Conversation lifecycle: titles (data_plane.rs), and administrators browsing and purging an
//! application's conversations across its users.

use serde_json::{Value, json};

use crate::completions::provider_agent;
use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script};
use crate::harness::{TestApp, user_token};

db_tests!(
    administrators_browse_conversations_across_users_a_page_at_a_time,
    administrators_purge_old_conversations_with_their_messages,
    users_vote_on_replies_and_administrators_read_the_votes,
    regenerating_a_reply_supersedes_it,
    editing_a_message_supersedes_it_and_what_followed,
    a_history_the_store_cannot_compare_replaces_nothing,
    superseded_messages_are_never_given_to_the_model
);

async fn talk(app: &TestApp, token: &str, agent: &str, conversation: &str) {
    let body =
        json!({"message": format!("hello from {conversation}"), "stream": false, "conversation_id": conversation});
    app.post(&format!("/v1/agents/{agent}/completions"), token, body)
        .await
        .assert_status(200);
}

fn ids(page: &Value) -> Vec<(String, String)> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["sub"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn administrators_browse_conversations_across_users_a_page_at_a_time(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 2).await;
    let (a, b) = (&tenant.agents[0], &tenant.agents[1]);
    let (alice, bob) = (user_token(&tenant.all_key, "alice"), user_token(&tenant.all_key, "bob"));
    talk(&app, &alice, a, "a1").await;
    talk(&app, &bob, a, "b1").await;
    talk(&app, &alice, b, "a2").await;
    // Another application's conversations never show.
    let other = app.tenant(&owner, "Other", 1).await;
    talk(
        &app,
        &user_token(&other.all_key, "alice"),
        &other.agents[0],
        "elsewhere",
    )
    .await;

    let base = format!("/v1/applications/{}/conversations", tenant.app_id);
    let all = app.get(&base, &owner).await;
    assert_eq!(
        ids(all.assert_status(200)),
        vec![
            ("alice".into(), "a2".into()),
            ("bob".into(), "b1".into()),
            ("alice".into(), "a1".into())
        ]
    );
    assert_eq!(all.body["data"][0]["agent_id"], b.as_str());
    assert_eq!(all.body["data"][0]["title"], "hello from a2");
    let of_a = app.get(&format!("{base}?agent_id={a}"), &owner).await;
    assert_eq!(
        ids(&of_a.body),
        vec![("bob".into(), "b1".into()), ("alice".into(), "a1".into())]
    );
    let of_alice = app.get(&format!("{base}?sub=alice"), &owner).await;
    assert_eq!(
        ids(&of_alice.body),
        vec![("alice".into(), "a2".into()), ("alice".into(), "a1".into())]
    );
    // A page at a time.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app.get(&format!("{base}?limit=1&cursor={cursor}"), &owner).await;
        seen.extend(ids(page.assert_status(200)));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all.body));
    // Dates: nothing updated before 2020, everything today.
    let old = app.get(&format!("{base}?to=2020-01-01"), &owner).await;
    assert_eq!(old.body["data"], json!([]));
    let today = chrono::Utc::now().date_naive();
    let recent = app.get(&format!("{base}?from={today}&to={today}"), &owner).await;
    assert_eq!(recent.body["data"].as_array().unwrap().len(), 3);
    app.get(&format!("{base}?from=last-week"), &owner)
        .await
        .assert_error(422, "validation_failed");
    app.get(&format!("{base}?cursor=nope"), &owner)
        .await
        .assert_error(400, "invalid_request");
    // Any one of them, with its messages, by its user and id (whatever its agent).
    let users = format!("/v1/applications/{}/users", tenant.app_id);
    let read = app.get(&format!("{users}/alice/conversations/a2"), &owner).await;
    assert_eq!(read.assert_status(200)["agent_id"], b.as_str());
    let contents: Vec<&str> = read.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["hello from a2", "hello from a2"]);
    let paged = app
        .get(&format!("{users}/alice/conversations/a2?limit=1"), &owner)
        .await;
    assert_eq!(paged.body["messages"].as_array().unwrap().len(), 1);
    assert!(paged.body["messages_next_cursor"].is_string());
    for missing in [
        "bob/conversations/a2",
        "alice/conversations/elsewhere",
        "nobody/conversations/a1",
    ] {
        app.get(&format!("{users}/{missing}"), &owner)
            .await
            .assert_error(404, "not_found");
    }
    // Only the application's administrators.
    let stranger = app.other_operator("stranger@example.com").await;
    app.get(&base, &stranger).await.assert_error(403, "forbidden");
    app.get(&format!("{users}/alice/conversations/a2"), &stranger)
        .await
        .assert_error(403, "forbidden");
    app.get(&base, &alice).await.assert_error(401, "invalid_token");
}

async fn administrators_purge_old_conversations_with_their_messages(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 2).await;
    let (a, b) = (&tenant.agents[0], &tenant.agents[1]);
    let alice = user_token(&tenant.all_key, "alice");
    for (agent, conversation) in [(a, "old-a"), (a, "new-a"), (b, "old-b")] {
        talk(&app, &alice, agent, conversation).await;
    }
    // Two conversations last active in 2024.
    let last_year = chrono::DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z")
        .unwrap()
        .timestamp_micros();
    app.execute_sql(&format!(
        "UPDATE conversations SET updated_at = {last_year} WHERE external_id IN ('old-a', 'old-b')"
    ))
    .await;
    let messages_before = app.count_rows("messages").await;
    let base = format!("/v1/applications/{}/conversations", tenant.app_id);
    app.delete(&base, &owner).await.assert_error(422, "validation_failed");
    // One agent first, then the rest.
    let purged = app
        .delete(&format!("{base}?agent_id={a}&before=2025-01-01"), &owner)
        .await;
    assert_eq!(purged.assert_status(200)["deleted"], 1);
    let left: Vec<String> = ids(&app.get(&base, &owner).await.body)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(left, vec!["new-a", "old-b"]);
    let purged = app.delete(&format!("{base}?before=2025-01-01T00:00:00Z"), &owner).await;
    assert_eq!(purged.assert_status(200)["deleted"], 1);
    let left: Vec<String> = ids(&app.get(&base, &owner).await.body)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(left, vec!["new-a"]);
    // Their messages went with them; the user sees the purge too.
    assert_eq!(app.count_rows("messages").await, messages_before - 4);
    app.get(&format!("/v1/agents/{a}/conversations/old-a"), &alice)
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/v1/agents/{a}/conversations/new-a"), &alice)
        .await
        .assert_status(200);
}

/// The ids of a conversation's messages, oldest first, with their roles.
async fn message_ids(app: &TestApp, token: &str, agent: &str, conversation: &str) -> Vec<(String, String)> {
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
                m["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn users_vote_on_replies_and_administrators_read_the_votes(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 2).await;
    let (a, b) = (&tenant.agents[0], &tenant.agents[1]);
    let (alice, bob) = (user_token(&tenant.all_key, "alice"), user_token(&tenant.all_key, "bob"));
    talk(&app, &alice, a, "c1").await;
    talk(&app, &alice, b, "c2").await;
    talk(&app, &bob, a, "b1").await;
    let c1 = message_ids(&app, &alice, a, "c1").await;
    let (question, reply) = (&c1[0].1, &c1[1].1);
    assert_eq!((c1[0].0.as_str(), c1[1].0.as_str()), ("user", "assistant"));
    let vote = |agent: &str, conversation: &str, message: &str| {
        format!("/v1/agents/{agent}/conversations/{conversation}/messages/{message}/feedback")
    };

    let up = app
        .call(
            reqwest::Method::PUT,
            &vote(a, "c1", reply),
            Some(&alice),
            Some(json!({"vote": "up"})),
        )
        .await;
    assert_eq!(up.assert_status(200)["vote"], "up");
    assert_eq!(up.body["tags"], json!([]));
    // A second vote replaces the first.
    let down = app
        .call(
            reqwest::Method::PUT,
            &vote(a, "c1", reply),
            Some(&alice),
            Some(json!({"vote": "down", "comment": "Wrong link", "tags": ["inaccurate", "inaccurate", "links"]})),
        )
        .await;
    assert_eq!(down.assert_status(200)["vote"], "down");
    assert_eq!(down.body["tags"], json!(["inaccurate", "links"]));
    assert_eq!(down.body["created_at"], up.body["created_at"]);
    // The conversation shows the user's vote on its reply.
    let read = app.get(&format!("/v1/agents/{a}/conversations/c1"), &alice).await;
    let messages = read.assert_status(200)["messages"].clone();
    assert_eq!(messages[0]["feedback"], Value::Null);
    assert_eq!(
        messages[1]["feedback"],
        json!({"vote": "down", "comment": "Wrong link", "tags": ["inaccurate", "links"]})
    );
    // Only the assistant's messages, only in the user's own conversation with that agent.
    app.call(
        reqwest::Method::PUT,
        &vote(a, "c1", question),
        Some(&alice),
        Some(json!({"vote": "up"})),
    )
    .await
    .assert_error(422, "validation_failed");
    for (token, agent, conversation) in [(&bob, a, "c1"), (&alice, b, "c1"), (&alice, a, "c2")] {
        app.call(
            reqwest::Method::PUT,
            &vote(agent, conversation, reply),
            Some(token),
            Some(json!({"vote": "up"})),
        )
        .await
        .assert_error(404, "not_found");
    }
    app.call(
        reqwest::Method::PUT,
        &vote(a, "c1", reply),
        Some(&alice),
        Some(json!({"vote": "meh"})),
    )
    .await
    .assert_error(400, "invalid_request");
    app.call(
        reqwest::Method::PUT,
        &vote(a, "c1", reply),
        Some(&alice),
        Some(json!({"vote": "up", "comment": "x".repeat(2001)})),
    )
    .await
    .assert_error(422, "validation_failed");
    // Bob votes up on his own reply, Alice on her other conversation.
    let b1 = message_ids(&app, &bob, a, "b1").await;
    app.call(
        reqwest::Method::PUT,
        &vote(a, "b1", &b1[1].1),
        Some(&bob),
        Some(json!({"vote": "up"})),
    )
    .await
    .assert_status(200);
    let c2 = message_ids(&app, &alice, b, "c2").await;
    app.call(
        reqwest::Method::PUT,
        &vote(b, "c2", &c2[1].1),
        Some(&alice),
        Some(json!({"vote": "up"})),
    )
    .await
    .assert_status(200);

    // Administrators list them, newest first, with the reply and its conversation.
    let base = format!("/v1/applications/{}/feedback", tenant.app_id);
    let all = app.get(&base, &owner).await;
    let rows = all.assert_status(200)["data"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3);
    let downs = app.get(&format!("{base}?vote=down"), &owner).await;
    let down_rows = downs.body["data"].as_array().unwrap();
    assert_eq!(down_rows.len(), 1);
    assert_eq!(
        (
            down_rows[0]["sub"].as_str(),
            down_rows[0]["conversation_id"].as_str(),
            down_rows[0]["content"].as_str()
        ),
        (Some("alice"), Some("c1"), Some("hello from c1"))
    );
    assert_eq!(down_rows[0]["comment"], "Wrong link");
    let of_b = app.get(&format!("{base}?agent_id={b}"), &owner).await;
    assert_eq!(of_b.body["data"].as_array().unwrap().len(), 1);
    let page = app.get(&format!("{base}?limit=2"), &owner).await;
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let rest = app.get(&format!("{base}?limit=2&cursor={cursor}"), &owner).await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 1);
    assert!(rest.body["next_cursor"].is_null());
    let stranger = app.other_operator("stranger@example.com").await;
    app.get(&base, &stranger).await.assert_error(403, "forbidden");

    // Taken back; in the export; erased with the user.
    app.delete(&vote(b, "c2", &c2[1].1), &alice).await;
    app.delete(&vote(b, "c2", &c2[1].1), &alice)
        .await
        .assert_error(404, "not_found");
    let users = format!("/v1/applications/{}/users", tenant.app_id);
    let export = app.get(&format!("{users}/alice"), &owner).await;
    let exported = export.assert_status(200)["feedback"].as_array().unwrap().clone();
    assert_eq!(exported.len(), 1);
    assert_eq!(
        (exported[0]["message_id"].as_str(), exported[0]["vote"].as_str()),
        (Some(reply.as_str()), Some("down"))
    );
    app.delete(&format!("{users}/alice"), &owner).await.assert_status(200);
    assert_eq!(app.count_rows("feedback").await, 1, "only Bob's vote is left");
    // A purged conversation takes its votes along.
    app.delete(
        &format!("/v1/applications/{}/conversations?before=2999-01-01", tenant.app_id),
        &owner,
    )
    .await
    .assert_status(200);
    assert_eq!(app.count_rows("feedback").await, 0);
}

/// A message as `useChat` sends it.
fn ui(id: &str, role: &str, text: &str) -> Value {
    json!({"id": id, "role": role, "parts": [{"type": "text", "text": text}]})
}

/// One AI SDK turn (not streamed); returns the reply (its `id` is the assistant message's).
async fn ui_turn(app: &TestApp, token: &str, agent: &str, chat: &str, messages: Vec<Value>, extra: Value) -> Value {
    let mut body = json!({"id": chat, "stream": false, "trigger": "submit-message", "messages": messages});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let reply = app
        .post(&format!("/v1/agents/{agent}/completions?format=ai-sdk"), token, body)
        .await;
    reply.assert_status(200).clone()
}

async fn states(app: &TestApp, token: &str, agent: &str, chat: &str, query: &str) -> Vec<(String, String, String)> {
    let reply = app
        .get(&format!("/v1/agents/{agent}/conversations/{chat}{query}"), token)
        .await;
    crate::harness::message_states(&reply.assert_status(200)["messages"])
}

/// An application with one echo agent, and its user Alice's token.
async fn alice(app: &TestApp) -> (crate::harness::Tenant, String) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let token = user_token(&tenant.all_key, "alice");
    (tenant, token)
}

/// Two AI SDK turns ("one", "two") with the echo agent: the four messages as `useChat` holds them.
async fn two_turns(app: &TestApp, token: &str, agent: &str, chat: &str) -> [Value; 4] {
    let u1 = ui("u1", "user", "one");
    let a1 = ui_turn(app, token, agent, chat, vec![u1.clone()], json!({})).await;
    let a1 = ui(a1["id"].as_str().unwrap(), "assistant", "one");
    let u2 = ui("u2", "user", "two");
    let a2 = ui_turn(
        app,
        token,
        agent,
        chat,
        vec![u1.clone(), a1.clone(), u2.clone()],
        json!({}),
    )
    .await;
    let a2 = ui(a2["id"].as_str().unwrap(), "assistant", "two");
    [u1, a1, u2, a2]
}

async fn regenerating_a_reply_supersedes_it(app: TestApp) {
    let (tenant, token) = alice(&app).await;
    let agent = &tenant.agents[0];
    let [u1, a1, u2, a2] = two_turns(&app, &token, agent, "chat").await;
    let a2_id = a2["id"].as_str().unwrap().to_owned();

    // useChat's regenerate: the reply is dropped from the history and made again.
    let again = ui_turn(
        &app,
        &token,
        agent,
        "chat",
        vec![u1.clone(), a1.clone(), u2.clone()],
        json!({"trigger": "regenerate-message", "messageId": a2_id}),
    )
    .await;
    assert_ne!(again["id"], a2_id.as_str());
    let live = states(&app, &token, agent, "chat", "").await;
    assert_eq!(
        crate::harness::as_strs(&live),
        [
            ("user", "one", "complete"),
            ("assistant", "one", "complete"),
            ("user", "two", "complete"),
            ("assistant", "two", "complete")
        ]
    );
    let listed = app.get(&format!("/v1/agents/{agent}/conversations/chat"), &token).await;
    let ids: Vec<&str> = listed.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&a2_id.as_str()) && ids.contains(&again["id"].as_str().unwrap()));
    let all = states(&app, &token, agent, "chat", "?include=superseded").await;
    assert_eq!(
        crate::harness::as_strs(&all),
        [
            ("user", "one", "complete"),
            ("assistant", "one", "complete"),
            ("user", "two", "complete"),
            ("assistant", "two", "superseded"),
            ("assistant", "two", "complete")
        ]
    );

    // A client that still sends the reply it regenerates (naming it) gets the same.
    let a2b = ui(again["id"].as_str().unwrap(), "assistant", "two");
    ui_turn(
        &app,
        &token,
        agent,
        "chat",
        vec![u1, a1, u2, a2b],
        json!({"trigger": "regenerate-message", "messageId": again["id"]}),
    )
    .await;
    let live = states(&app, &token, agent, "chat", "").await;
    assert_eq!(live.len(), 4);
    let all = states(&app, &token, agent, "chat", "?include=superseded").await;
    assert_eq!(all.iter().filter(|m| m.2 == "superseded").count(), 2);
    let unknown = app
        .get(
            &format!("/v1/agents/{agent}/conversations/chat?include=everything"),
            &token,
        )
        .await;
    unknown.assert_error(400, "invalid_request");
}

async fn editing_a_message_supersedes_it_and_what_followed(app: TestApp) {
    let (tenant, token) = alice(&app).await;
    let agent = &tenant.agents[0];
    let [u1, a1, u2, a2] = two_turns(&app, &token, agent, "chat").await;
    ui_turn(
        &app,
        &token,
        agent,
        "chat",
        vec![u1.clone(), a1.clone(), u2, a2, ui("u3", "user", "three")],
        json!({}),
    )
    .await;

    // useChat's edit of u2: the same id with new text, the later messages dropped.
    ui_turn(
        &app,
        &token,
        agent,
        "chat",
        vec![u1.clone(), a1.clone(), ui("u2", "user", "TWO")],
        json!({"messageId": "u2"}),
    )
    .await;
    let live = states(&app, &token, agent, "chat", "").await;
    assert_eq!(
        crate::harness::as_strs(&live),
        [
            ("user", "one", "complete"),
            ("assistant", "one", "complete"),
            ("user", "TWO", "complete"),
            ("assistant", "TWO", "complete")
        ]
    );
    let all = states(&app, &token, agent, "chat", "?include=superseded").await;
    let superseded: Vec<&str> = all
        .iter()
        .filter(|m| m.2 == "superseded")
        .map(|m| m.1.as_str())
        .collect();
    assert_eq!(superseded, ["two", "two", "three", "three"]);
    // The edited message can be edited again (its id is free once replaced).
    ui_turn(
        &app,
        &token,
        agent,
        "chat",
        vec![u1, a1, ui("u2", "user", "deux")],
        json!({}),
    )
    .await;
    let live = states(&app, &token, agent, "chat", "").await;
    assert_eq!(live[2].1, "deux");
    assert_eq!(live.len(), 4);
}

async fn a_history_the_store_cannot_compare_replaces_nothing(app: TestApp) {
    let (tenant, token) = alice(&app).await;
    let agent = &tenant.agents[0];
    let u1 = ui("u1", "user", "one");
    ui_turn(&app, &token, agent, "chat", vec![u1.clone()], json!({})).await;
    // Replies under ids of the client's own making: nothing can be said to be dropped.
    ui_turn(
        &app,
        &token,
        agent,
        "chat",
        vec![u1.clone(), ui("my-own-id", "assistant", "one"), ui("u2", "user", "two")],
        json!({}),
    )
    .await;
    // Only the newest message, as some clients send.
    ui_turn(&app, &token, agent, "chat", vec![ui("u3", "user", "three")], json!({})).await;
    let all = states(&app, &token, agent, "chat", "?include=superseded").await;
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|m| m.2 == "complete"), "{all:?}");
    // Ids read back from the API name the same messages: nothing is stored twice.
    let listed = app.get(&format!("/v1/agents/{agent}/conversations/chat"), &token).await;
    let from_api: Vec<Value> = listed.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            ui(
                m["id"].as_str().unwrap(),
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    let mut next = from_api;
    next.push(ui("u4", "user", "four"));
    ui_turn(&app, &token, agent, "chat", next, json!({})).await;
    let live = states(&app, &token, agent, "chat", "").await;
    assert_eq!(live.len(), 8, "{live:?}");
}

async fn superseded_messages_are_never_given_to_the_model(app: TestApp) {
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["Hello".into()],
        delay: std::time::Duration::ZERO,
    })
    .await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    let a1 = ui_turn(&app, &token, &agent, "chat", vec![ui("u1", "user", "first")], json!({})).await;
    let a1 = ui(a1["id"].as_str().unwrap(), "assistant", "Hello");
    // Edit the only message, then go on from the edited history.
    let a1b = ui_turn(
        &app,
        &token,
        &agent,
        "chat",
        vec![ui("u1", "user", "changed")],
        json!({}),
    )
    .await;
    let a1b = ui(a1b["id"].as_str().unwrap(), "assistant", "Hello");
    ui_turn(
        &app,
        &token,
        &agent,
        "chat",
        vec![ui("u1", "user", "changed"), a1b, ui("u2", "user", "next")],
        json!({}),
    )
    .await;
    // Regenerate the last reply, useChat's way.
    ui_turn(
        &app,
        &token,
        &agent,
        "chat",
        vec![ui("u1", "user", "changed"), a1.clone(), ui("u2", "user", "next")],
        json!({"trigger": "regenerate-message"}),
    )
    .await;
    let requests = fake.requests();
    let prompt = |i: usize| crate::harness::roles_and_contents(&requests[i].1["messages"]);
    let system = ("system".to_owned(), "You are the test agent.".to_owned());
    let user = |t: &str| ("user".to_owned(), t.to_owned());
    let assistant = ("assistant".to_owned(), "Hello".to_owned());
    assert_eq!(prompt(1), vec![system.clone(), user("changed")]);
    assert_eq!(
        prompt(2),
        vec![system.clone(), user("changed"), assistant.clone(), user("next")]
    );
    assert_eq!(
        prompt(3),
        prompt(2),
        "the regenerated reply is made from the same history"
    );
}
