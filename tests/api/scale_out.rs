//! Several instances on one PostgreSQL database: a change made through one is seen by the others
//! at once (their caches are told), and agent changes are seen at once on the same instance.

use std::time::Duration;

use serde_json::json;

use crate::db_tests;
use crate::harness::{Backend, TestApp, user_token};

db_tests!(agent_changes_are_seen_by_the_next_turn);

async fn agent_changes_are_seen_by_the_next_turn(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = &tenant.agents[0];
    let token = user_token(&tenant.all_key, "alice");
    let path = format!("/v1/agents/{agent}/completions");
    let turn = || app.post(&path, &token, json!({"messages": [{"role": "user", "content": "hi"}]}));
    let before = turn().await.assert_status(200)["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    let instructions = "one two three four five six seven eight nine ten";
    app.patch(
        &format!("/v1/applications/{}/agents/{agent}", tenant.app_id),
        &owner,
        json!({"instructions": instructions}),
    )
    .await
    .assert_status(200);
    let after = turn().await.assert_status(200)["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        after >= before + 10,
        "the new instructions were not used at once: {before} then {after}"
    );
}

/// Polls `check` for up to two seconds.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..40 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_stops_verifying_on_every_instance() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let other = app.other_instance().await;
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = tenant.agents[0].clone();
    let token = user_token(&tenant.all_key, "alice");
    let list_on_other = |token: String| {
        let (client, url) = (
            app.client.clone(),
            other.url(&format!("/v1/agents/{agent}/conversations")),
        );
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The other instance has the key (and the agent) in its caches now.
    assert_eq!(list_on_other(token.clone()).await, 200);
    app.delete(
        &format!(
            "/v1/applications/{}/authentication-keys/{}",
            tenant.app_id, tenant.all_key.0
        ),
        &owner,
    )
    .await
    .assert_status(204);
    assert!(
        eventually(async || list_on_other(token.clone()).await == 401).await,
        "the other instance still accepts a deleted key"
    );

    // Deleting a whole application reaches the other instance's caches too.
    let second = app.tenant(&owner, "Second", 1).await;
    let token = user_token(&second.all_key, "bob");
    let url = other.url("/v1/memories");
    let status = |token: String| {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(token.clone()).await, 200);
    app.delete(&format!("/v1/applications/{}", second.app_id), &owner)
        .await
        .assert_status(204);
    assert!(
        eventually(async || status(token.clone()).await == 401).await,
        "the other instance still accepts a deleted application's key"
    );
    other.stop().await;
}

/// Another instance hears of an application's new allowed origins at once (the change notifies
/// it), and counts a user's tokens spent through the first instance against their daily quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_and_quotas_hold_across_instances() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let other = app.other_instance().await;
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = tenant.agents[0].clone();
    let token = user_token(&tenant.all_key, "alice");
    let on_other = |method: reqwest::Method, path: String, origin: &'static str, body: Option<serde_json::Value>| {
        let (client, url, token) = (app.client.clone(), other.url(&path), token.clone());
        async move {
            let mut request = client.request(method, url).bearer_auth(token).header("origin", origin);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let list = format!("/v1/agents/{agent}/conversations");
    // The other instance caches the application (no origins: any) ...
    assert_eq!(
        on_other(reqwest::Method::GET, list.clone(), "https://shop.test", None)
            .await
            .0,
        200
    );
    let settings = json!({"allowed_origins": ["https://app.test"], "limits": {"user_tokens_per_day": 10}});
    app.patch(&format!("/v1/applications/{}", tenant.app_id), &owner, settings)
        .await
        .assert_status(200);
    // ... and refuses the origin as soon as it hears of the change.
    let mut refused = (0, serde_json::Value::Null);
    for _ in 0..50 {
        refused = on_other(reqwest::Method::GET, list.clone(), "https://shop.test", None).await;
        if refused.0 == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert_eq!(refused.1["error"], "origin_not_allowed");

    // 12 tokens spent through this instance...
    let body = json!({"message": "one two three four five six", "stream": false, "conversation_id": "c"});
    app.post(&format!("/v1/agents/{agent}/completions"), &token, body.clone())
        .await
        .assert_status(200);
    // ... reach the other instance's quota check once written (every second): its first turn for
    // this user is refused (it spent nothing there itself).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let turn = format!("/v1/agents/{agent}/completions");
    let last = on_other(reqwest::Method::POST, turn, "https://app.test", Some(body.clone())).await;
    assert_eq!(last.0, 429, "{}", last.1);
    assert_eq!(last.1["error"], "quota_exceeded");
}
