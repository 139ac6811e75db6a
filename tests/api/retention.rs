//! Retention and privacy mode: what an application keeps, for how long, and what it never keeps.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::completions::provider_agent;
use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script};
use crate::harness::{Backend, TestApp, user_token};
use crate::storage::database_contents;

db_tests!(
    retention_settings_are_validated_and_merged,
    the_purge_deletes_what_the_policy_no_longer_keeps,
    a_purge_racing_turns_fails_no_turn,
    privacy_mode_keeps_metadata_and_never_the_text,
    one_instance_at_a_time_purges
);

const DAY_MICROS: i64 = 86_400_000_000;

/// Purges often, so a test sees two of them in well under a second.
async fn purging_every(app: &mut TestApp, interval: Duration) {
    let mut settings = app.settings.clone();
    settings.purge_interval = interval;
    app.reconfigure(settings).await;
}

async fn set_retention(app: &TestApp, owner: &str, app_id: &str, retention: Value) -> Value {
    let reply = app
        .patch(
            &format!("/v1/applications/{app_id}"),
            owner,
            json!({"retention": retention}),
        )
        .await;
    reply.assert_status(200)["retention"].clone()
}

async fn talk(app: &TestApp, token: &str, agent: &str, conversation: &str, text: &str) {
    let body = json!({"message": text, "stream": false, "conversation_id": conversation});
    app.post(&format!("/v1/agents/{agent}/completions"), token, body)
        .await
        .assert_status(200);
}

/// Waits (up to `within`) for `done` to hold.
async fn eventually<F, Fut>(within: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done().await
}

async fn retention_settings_are_validated_and_merged(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let path = format!("/v1/applications/{}", tenant.app_id);
    let fresh = app.get(&path, &owner).await;
    assert_eq!(
        fresh.assert_status(200)["retention"],
        json!({"conversation_days": null, "memory_days": null, "store_content": true})
    );
    let set = set_retention(&app, &owner, &tenant.app_id, json!({"conversation_days": 30})).await;
    assert_eq!(
        set,
        json!({"conversation_days": 30, "memory_days": null, "store_content": true})
    );
    // A field left out stays as it is.
    let set = set_retention(
        &app,
        &owner,
        &tenant.app_id,
        json!({"store_content": false, "memory_days": 0}),
    )
    .await;
    assert_eq!(
        set,
        json!({"conversation_days": 30, "memory_days": 0, "store_content": false})
    );
    let set = set_retention(&app, &owner, &tenant.app_id, json!({"conversation_days": null})).await;
    assert_eq!(
        set,
        json!({"conversation_days": null, "memory_days": 0, "store_content": false})
    );
    for (bad, field) in [
        (json!({"conversation_days": -1}), "retention.conversation_days"),
        (json!({"memory_days": 40_000}), "retention.memory_days"),
    ] {
        let refused = app.patch(&path, &owner, json!({"retention": bad})).await;
        refused.assert_error(422, "validation_failed");
        assert!(refused.body["details"]["fields"][field].is_string(), "{}", refused.body);
    }
    // Made with a policy.
    let made = app
        .post(
            "/v1/applications",
            &owner,
            json!({"name": "Strict", "retention": {"conversation_days": 7}}),
        )
        .await;
    assert_eq!(
        made.assert_status(201)["retention"],
        json!({"conversation_days": 7, "memory_days": null, "store_content": true})
    );
}

async fn the_purge_deletes_what_the_policy_no_longer_keeps(mut app: TestApp) {
    purging_every(&mut app, Duration::from_millis(200)).await;
    let owner = app.owner_token().await;
    let strict = app.tenant(&owner, "Strict", 1).await;
    let lenient = app.tenant(&owner, "Lenient", 1).await;
    let (alice, bob) = (
        user_token(&strict.all_key, "alice"),
        user_token(&lenient.all_key, "bob"),
    );
    let (agent, other_agent) = (&strict.agents[0], &lenient.agents[0]);
    for (token, agent) in [(&alice, agent), (&bob, other_agent)] {
        talk(&app, token, agent, "old", "an old question").await;
        talk(&app, token, agent, "recent", "a recent question").await;
        for content in ["zebrafish were discussed", "prefers tea"] {
            app.post("/v1/memories", token, json!({"content": content}))
                .await
                .assert_status(201);
        }
    }
    // Make the old rows two days old, in both applications.
    app.execute_sql(&format!(
        "UPDATE conversations SET updated_at = updated_at - {} WHERE external_id = 'old'; \
         UPDATE memories SET updated_at = updated_at - {} WHERE content LIKE 'zebrafish%';",
        2 * DAY_MICROS,
        2 * DAY_MICROS
    ))
    .await;
    set_retention(
        &app,
        &owner,
        &strict.app_id,
        json!({"conversation_days": 1, "memory_days": 1}),
    )
    .await;

    let conversation = |token: &str, agent: &str, id: &str| {
        let path = format!("/v1/agents/{agent}/conversations/{id}");
        let token = token.to_owned();
        let app = &app;
        async move { app.get(&path, &token).await.status }
    };
    let memory_count = || async {
        app.get("/v1/memories", &alice).await.body["data"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // A purge round deletes conversations, then memory: wait for both.
    assert!(
        eventually(Duration::from_secs(3), || async {
            conversation(&alice, agent, "old").await == 404 && memory_count().await == 1
        })
        .await,
        "the old conversation or memory outlived its retention"
    );
    assert_eq!(conversation(&alice, agent, "recent").await, 200);
    let memories = app.get("/v1/memories", &alice).await;
    let kept: Vec<&str> = memories.assert_status(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["prefers tea"]);
    // Their full-text entries went with them.
    let found = app.get("/v1/memories?q=zebrafish", &alice).await;
    assert_eq!(found.assert_status(200)["data"], json!([]));
    if app.backend() == Backend::Sqlite {
        let connection = rusqlite::Connection::open(app.database.sqlite_path().unwrap()).unwrap();
        let stale: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM memories_fts WHERE memories_fts MATCH 'zebrafish'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        // One entry: the other application's, which keeps everything.
        assert_eq!(stale, 1, "a purged memory left its full-text entry behind");
    }
    // The application without a policy keeps everything.
    assert_eq!(conversation(&bob, other_agent, "old").await, 200);
    let bobs = app.get("/v1/memories", &bob).await;
    assert_eq!(bobs.assert_status(200)["data"].as_array().unwrap().len(), 2);

    // 0 days: nothing survives the next purge.
    set_retention(
        &app,
        &owner,
        &strict.app_id,
        json!({"conversation_days": 0, "memory_days": 0}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            conversation(&alice, agent, "recent").await == 404 && memory_count().await == 0
        })
        .await,
        "a 0-day policy kept a conversation or memory past two purges"
    );
    let memories = app.get("/v1/memories", &alice).await;
    assert_eq!(memories.assert_status(200)["data"], json!([]));
}

async fn a_purge_racing_turns_fails_no_turn(mut app: TestApp) {
    let interval = Duration::from_millis(100);
    purging_every(&mut app, interval).await;
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Forgetful", 1).await;
    set_retention(&app, &owner, &tenant.app_id, json!({"conversation_days": 0})).await;
    let agent = tenant.agents[0].clone();
    let app = std::sync::Arc::new(app);
    let mut talkers = Vec::new();
    for user in 0..4 {
        let (app, agent) = (app.clone(), agent.clone());
        let token = user_token(&tenant.all_key, &format!("user-{user}"));
        talkers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut turns = 0;
            while started.elapsed() < Duration::from_millis(1500) {
                // Every format's way of naming a conversation, reused turn after turn while the
                // purge deletes it.
                let bodies = [
                    json!({"message": "hello", "conversation_id": "shared", "stream": false}),
                    json!({"id": "ui", "stream": false, "messages": [
                        {"id": format!("m{turns}"), "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}),
                ];
                for body in bodies {
                    let reply = app.post(&format!("/v1/agents/{agent}/completions"), &token, body).await;
                    assert_eq!(reply.status, 200, "a turn failed while the purge ran: {}", reply.body);
                    turns += 1;
                }
            }
            turns
        }));
    }
    let mut turns = 0;
    for talker in talkers {
        turns += talker.await.unwrap();
    }
    assert!(turns > 8, "only {turns} turns ran");
    // Nothing outside retention survives two purge intervals.
    tokio::time::sleep(interval * 2 + Duration::from_millis(150)).await;
    let left = app
        .get(&format!("/v1/applications/{}/conversations", tenant.app_id), &owner)
        .await;
    assert_eq!(
        left.assert_status(200)["data"],
        json!([]),
        "conversations outlived a 0-day policy"
    );
    assert_eq!(app.count_rows("messages").await, 0);
}

async fn privacy_mode_keeps_metadata_and_never_the_text(mut app: TestApp) {
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["REPLY-".into(), "MARKER-81f3".into()],
        delay: Duration::ZERO,
    })
    .await;
    let (owner, tenant, agent) = provider_agent(&app, &fake, true).await;
    let token = user_token(&tenant.all_key, "alice");
    // A record stored before privacy mode: it may be read and deleted, not changed.
    let earlier = app
        .post("/v1/memories", &token, json!({"content": "an earlier note"}))
        .await;
    let earlier = format!("/v1/memories/{}", earlier.assert_status(201)["id"].as_str().unwrap());
    set_retention(&app, &owner, &tenant.app_id, json!({"store_content": false})).await;
    let secret = "PRIVATE-MARKER-5d2c my card number";
    let turn = |body: Value| {
        let path = format!("/v1/agents/{agent}/completions");
        let token = token.clone();
        let app = &app;
        async move { app.post(&path, &token, body).await }
    };
    let first = turn(json!({"message": secret, "conversation_id": "private", "stream": false})).await;
    assert!(
        first.assert_status(200).to_string().contains("MARKER-81f3"),
        "{}",
        first.body
    );
    turn(json!({"message": "second PRIVATE-MARKER-5d2c", "conversation_id": "private", "stream": false}))
        .await
        .assert_status(200);
    turn(json!({"id": "private-ui", "stream": false, "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "ui PRIVATE-MARKER-5d2c"}]}]}))
    .await
    .assert_status(200);

    // The model saw only what each request carried: no stored history, no memory.
    let requests = fake.requests();
    let second = crate::harness::roles_and_contents(&requests[1].1["messages"]);
    assert_eq!(
        second,
        vec![
            ("system".to_owned(), "You are the test agent.".to_owned()),
            ("user".to_owned(), "second PRIVATE-MARKER-5d2c".to_owned())
        ]
    );

    // The metadata is kept: the conversation, its messages' roles, times and states.
    let stored = app
        .get(&format!("/v1/agents/{agent}/conversations/private"), &token)
        .await;
    let body = stored.assert_status(200);
    assert_eq!(body["title"], Value::Null, "a title would be the user's words");
    let messages = body["messages"].as_array().unwrap();
    let states = crate::harness::message_states(&Value::Array(messages.clone()));
    let shape = crate::harness::as_strs(&states);
    assert_eq!(
        shape,
        [
            ("user", "", "complete"),
            ("assistant", "", "complete"),
            ("user", "", "complete"),
            ("assistant", "", "complete")
        ]
    );
    // Feedback is metadata: kept.
    let reply_id = messages[1]["id"].as_str().unwrap();
    app.call(
        reqwest::Method::PUT,
        &format!("/v1/agents/{agent}/conversations/private/messages/{reply_id}/feedback"),
        Some(&token),
        Some(json!({"vote": "up"})),
    )
    .await
    .assert_status(200);
    // Memory is never stored.
    let refused = app
        .post("/v1/memories", &token, json!({"content": "PRIVATE-MARKER-5d2c"}))
        .await;
    refused.assert_error(403, "forbidden");
    assert!(refused.body["message"].as_str().unwrap().contains("privacy mode"));
    app.patch(&earlier, &token, json!({"content": "PRIVATE-MARKER-5d2c"}))
        .await
        .assert_error(403, "forbidden");
    app.get(&earlier, &token).await.assert_status(200);
    assert_eq!(app.delete(&earlier, &token).await.status, 204);

    // Privacy mode off again: text is stored as usual.
    set_retention(&app, &owner, &tenant.app_id, json!({"store_content": true})).await;
    fake.set(Script::Reply {
        chunks: vec!["a kept reply".into()],
        delay: Duration::ZERO,
    });
    turn(json!({"message": "now kept", "conversation_id": "private", "stream": false}))
        .await
        .assert_status(200);
    let stored = app
        .get(&format!("/v1/agents/{agent}/conversations/private"), &token)
        .await;
    assert_eq!(stored.assert_status(200)["messages"][4]["content"], "now kept");

    // Not hidden by the API: absent from the storage itself (every file, every table).
    app.stop().await;
    let contents = database_contents(&app).await;
    assert!(
        contents.windows(8).any(|w| w == b"now kept"),
        "the search would see stored text"
    );
    for needle in ["PRIVATE-MARKER", "MARKER-81f3"] {
        assert!(
            !contents.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} reached the database"
        );
    }
}

async fn one_instance_at_a_time_purges(app: TestApp) {
    let other = confidant::store::Db::connect(&app.database.url, &confidant::store::DbOptions::default())
        .await
        .unwrap();
    let held = other.exclusive(confidant::retention::PURGE_LOCK).await.unwrap();
    assert!(held.is_some(), "the lock is free at first");
    let skipped = confidant::retention::purge_once(&app.db).await.unwrap();
    match app.backend() {
        // Another instance holds the lock: this one skips its round.
        Backend::Postgres => assert_eq!(skipped, None),
        // One process serves a SQLite file.
        Backend::Sqlite => assert!(skipped.is_some()),
    }
    drop(held);
    // Released with its connection, even without an unlock.
    let mut ran = None;
    for _ in 0..50 {
        ran = confidant::retention::purge_once(&app.db).await.unwrap();
        if ran.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ran.is_some(), "the lock outlived its holder");
    other.close().await;
}
