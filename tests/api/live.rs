//! Replies in progress: resumed from their first event and followed live, in the format that
//! started them; stopped; going on after their client leaves when the application says so; and,
//! on PostgreSQL, resumed and stopped through another instance.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::completions::{body_for, messages, parse, post_turn, provider_agent, read_stream};
use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script};
use crate::harness::{Backend, TestApp, user_token};

db_tests!(
    a_reply_is_resumed_from_its_start_then_live_in_its_format,
    only_its_user_can_resume_or_stop_a_reply,
    a_stopped_reply_ends_its_stream_and_is_stored_incomplete,
    a_resumable_reply_finishes_after_its_client_leaves,
);

const WORDS: [&str; 5] = ["one ", "two ", "three ", "four ", "five"];

fn slow_reply(delay_ms: u64) -> Script {
    Script::Reply {
        chunks: WORDS.iter().map(|w| w.to_string()).collect(),
        delay: Duration::from_millis(delay_ms),
    }
}

/// A streamed body being read.
type Body = std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// Reads a stream until `marker` arrives; returns the stream and what was read.
async fn read_until(response: reqwest::Response, marker: &str) -> (Body, String) {
    assert_eq!(response.status(), 200);
    let mut stream: Body = Box::pin(response.bytes_stream());
    let mut seen = String::new();
    while !seen.contains(marker) {
        let chunk = stream.next().await.expect("the stream ended early").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    (stream, seen)
}

async fn rest_of(
    mut stream: impl futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin,
    mut seen: String,
) -> String {
    while let Some(chunk) = stream.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    seen
}

/// Starts a streamed turn and reads it until `marker`.
async fn begin(
    app: &TestApp,
    token: &str,
    agent: &str,
    format: &str,
    conversation: &str,
    marker: &str,
) -> (Body, String) {
    let body = body_for(format, "go", conversation);
    read_until(post_turn(app, token, agent, format, true, &body).await, marker).await
}

fn stream_path(agent: &str, conversation: &str) -> String {
    format!("/v1/agents/{agent}/conversations/{conversation}/stream")
}

async fn get_raw(app: &TestApp, url: String, token: &str) -> reqwest::Response {
    app.client.get(url).bearer_auth(token).send().await.unwrap()
}

/// Polls the stored messages until the conversation holds `count`.
async fn stored(
    app: &TestApp,
    token: &str,
    agent: &str,
    conversation: &str,
    count: usize,
) -> Vec<(String, String, String)> {
    let mut messages_now = Vec::new();
    for _ in 0..150 {
        messages_now = messages(app, token, agent, conversation).await;
        if messages_now.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    messages_now
}

async fn a_reply_is_resumed_from_its_start_then_live_in_its_format(app: TestApp) {
    let fake = FakeProvider::start(slow_reply(120)).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    for format in ["ai-sdk", "ai-sdk-4", "openai", "deltakit"] {
        let conversation = format!("resume-{format}");
        let (original, seen) = begin(&app, &token, &agent, format, &conversation, "two").await;
        // Resumed mid-reply: the whole reply, from its start, in the original's format.
        let resumed = get_raw(&app, app.url(&stream_path(&agent, &conversation)), &token).await;
        assert_eq!(resumed.status(), 200, "{format}");
        assert_eq!(resumed.headers()["x-conversation-id"], conversation.as_str());
        let (replayed, broken) = read_stream(resumed).await;
        assert!(!broken, "{format}: {replayed}");
        let first = rest_of(original, seen).await;
        assert_eq!(parse(format, &replayed).text, WORDS.concat(), "{format}: {replayed}");
        assert_eq!(parse(format, &first).text, WORDS.concat(), "{format}");
        if format == "ai-sdk" {
            // The same message: a client that resumes shows one reply, not two.
            let id = |body: &str| {
                crate::clients::sse_events(body)
                    .iter()
                    .find_map(|e| {
                        serde_json::from_str::<serde_json::Value>(e)
                            .ok()
                            .filter(|v| v["type"] == "start")
                    })
                    .map(|v| v["messageId"].clone())
            };
            assert_eq!(id(&replayed), id(&first));
            assert!(id(&first).is_some());
        }
        // Stored once, complete; nothing in progress any more.
        let messages_now = stored(&app, &token, &agent, &conversation, 2).await;
        assert_eq!(messages_now[1], ("assistant".into(), WORDS.concat(), "complete".into()));
        let after = get_raw(&app, app.url(&stream_path(&agent, &conversation)), &token).await;
        assert_eq!(after.status(), 204, "{format}");
    }
}

async fn only_its_user_can_resume_or_stop_a_reply(app: TestApp) {
    let fake = FakeProvider::start(Script::Hang(vec!["secret ".into(), "words".into()])).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let alice = user_token(&tenant.all_key, "alice");
    let bob = user_token(&tenant.all_key, "bob");
    let (original, _) = begin(&app, &alice, &agent, "ai-sdk", "private", "words").await;
    // Another user of the same application: no such conversation, running or not.
    app.get(&stream_path(&agent, "private"), &bob)
        .await
        .assert_error(404, "not_found");
    app.post(
        &format!("/v1/agents/{agent}/conversations/private/stop"),
        &bob,
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
    // Another application's user with the same sub and conversation id.
    let owner = app.owner_token().await;
    let other = app.tenant(&owner, "Other", 1).await;
    let twin = user_token(&other.all_key, "alice");
    let other_agent = &other.agents[0];
    app.get(&stream_path(other_agent, "private"), &twin)
        .await
        .assert_error(404, "not_found");
    // A conversation of Alice's with nothing in progress is 204; one she never had is 404.
    app.get(&stream_path(&agent, "never"), &alice)
        .await
        .assert_error(404, "not_found");
    // Alice's reply went on through all of that.
    assert!(!fake.client_gone());
    drop(original);
}

async fn a_stopped_reply_ends_its_stream_and_is_stored_incomplete(app: TestApp) {
    let fake = FakeProvider::start(Script::Hang(vec!["half ".into(), "done".into()])).await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    let (original, seen) = begin(&app, &token, &agent, "ai-sdk", "halted", "done").await;
    let resumed = get_raw(&app, app.url(&stream_path(&agent, "halted")), &token).await;
    assert_eq!(resumed.status(), 200);
    let stop = app
        .post(
            &format!("/v1/agents/{agent}/conversations/halted/stop"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(stop.status, 204);
    // Answered once stored: the reply is there, incomplete, at once.
    let messages_now = messages(&app, &token, &agent, "halted").await;
    assert_eq!(
        messages_now[1],
        ("assistant".into(), "half done".into(), "incomplete".into())
    );
    // Both readers see their stream end cleanly, and the upstream call is cancelled.
    let first = tokio::time::timeout(Duration::from_secs(5), rest_of(original, seen))
        .await
        .unwrap();
    assert_eq!(parse("ai-sdk", &first).text, "half done");
    let (replayed, broken) = tokio::time::timeout(Duration::from_secs(5), read_stream(resumed))
        .await
        .unwrap();
    assert!(!broken);
    assert_eq!(parse("ai-sdk", &replayed).text, "half done");
    let mut cancelled = false;
    for _ in 0..100 {
        cancelled = fake.client_gone();
        if cancelled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cancelled, "the upstream call went on after the stop");
    // Nothing in progress now: stopping again is harmless, resuming finds nothing.
    app.post(
        &format!("/v1/agents/{agent}/conversations/halted/stop"),
        &token,
        json!({}),
    )
    .await
    .assert_status(204);
    assert_eq!(
        get_raw(&app, app.url(&stream_path(&agent, "halted")), &token)
            .await
            .status(),
        204
    );
}

async fn a_resumable_reply_finishes_after_its_client_leaves(app: TestApp) {
    let fake = FakeProvider::start(slow_reply(100)).await;
    let (owner, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    let settings = app
        .patch(
            &format!("/v1/applications/{}", tenant.app_id),
            &owner,
            json!({"resumable": true}),
        )
        .await;
    assert_eq!(settings.assert_status(200)["resumable"], true);
    let (original, _) = begin(&app, &token, &agent, "ai-sdk", "reload", "one").await;
    drop(original); // the page reloads
    tokio::time::sleep(Duration::from_millis(150)).await;
    let resumed = get_raw(&app, app.url(&stream_path(&agent, "reload")), &token).await;
    assert_eq!(resumed.status(), 200);
    let (replayed, _) = read_stream(resumed).await;
    assert_eq!(parse("ai-sdk", &replayed).text, WORDS.concat());
    let messages_now = stored(&app, &token, &agent, "reload", 2).await;
    assert_eq!(messages_now[1], ("assistant".into(), WORDS.concat(), "complete".into()));
    assert!(!fake.client_gone(), "the model was cut off with its client");
}

/// Two instances on one PostgreSQL database: a reply running on A is resumed and stopped through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_reply_on_one_instance_is_resumed_and_stopped_through_another() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let other = app.other_instance().await;
    let fake = FakeProvider::start(Script::Sequence(vec![
        slow_reply(120),
        Script::Hang(vec!["stop ".into(), "zebra".into()]),
    ]))
    .await;
    let (_, tenant, agent) = provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");

    let (original, seen) = begin(&app, &token, &agent, "ai-sdk", "across", "two").await;
    let resumed = get_raw(&app, other.url(&stream_path(&agent, "across")), &token).await;
    assert_eq!(resumed.status(), 200);
    let (replayed, broken) = read_stream(resumed).await;
    assert!(!broken, "{replayed}");
    assert_eq!(parse("ai-sdk", &replayed).text, WORDS.concat());
    let first = rest_of(original, seen).await;
    assert_eq!(parse("ai-sdk", &first).text, WORDS.concat());
    // Ended: B finds nothing in progress (A answers, or the mark was cleared).
    assert_eq!(
        get_raw(&app, other.url(&stream_path(&agent, "across")), &token)
            .await
            .status(),
        204
    );

    let (original, seen) = begin(&app, &token, &agent, "ai-sdk", "halt-across", "zebra").await;
    let stop = app
        .client
        .post(other.url(&format!("/v1/agents/{agent}/conversations/halt-across/stop")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 204);
    let messages_now = messages(&app, &token, &agent, "halt-across").await;
    assert_eq!(
        messages_now[1],
        ("assistant".into(), "stop zebra".into(), "incomplete".into())
    );
    let first = tokio::time::timeout(Duration::from_secs(5), rest_of(original, seen))
        .await
        .unwrap();
    assert_eq!(parse("ai-sdk", &first).text, "stop zebra");
    other.stop().await;
}
