//! Several instances on one PostgreSQL database: a change made through one is seen by the others
//! at once (their caches are told), and agent and provider changes are seen at once on the same
//! instance.

use std::time::Duration;

use serde_json::json;

use crate::completions::provider_agent;
use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script};
use crate::harness::{Backend, TestApp, user_token};

db_tests!(
    agent_changes_are_seen_by_the_next_turn,
    provider_changes_are_seen_by_the_next_turn
);

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

/// A fake provider that answers every turn with `text`.
async fn answering(text: &str) -> FakeProvider {
    FakeProvider::start(Script::Reply {
        chunks: vec![text.to_owned()],
        delay: Duration::ZERO,
    })
    .await
}

/// Points the application's one provider at `to`; returns the providers' path and its id.
async fn move_provider(app: &TestApp, owner: &str, app_id: &str, to: &FakeProvider) -> (String, String) {
    let providers = format!("/v1/applications/{app_id}/providers");
    let id = app.get(&providers, owner).await.assert_status(200)["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(
        &format!("{providers}/{id}"),
        owner,
        json!({"base_url": to.base_url(), "api_key": "sk-fake-provider-key"}),
    )
    .await
    .assert_status(200);
    (providers, id)
}

/// Turns find their provider in memory, yet the very next turn uses a change made to it: a new
/// address, its deletion, and a new provider under the same name (which the cache had just
/// remembered as missing).
async fn provider_changes_are_seen_by_the_next_turn(app: TestApp) {
    let (first, second) = (answering("from the first").await, answering("from the second").await);
    let (owner, tenant, agent) = provider_agent(&app, &first, false).await;
    let token = user_token(&tenant.all_key, "alice");
    let path = format!("/v1/agents/{agent}/completions");
    let turn = async || {
        app.post(&path, &token, json!({"messages": [{"role": "user", "content": "hi"}]}))
            .await
    };
    // The text of a turn that was answered.
    let answered = async || {
        let reply = turn().await;
        reply.assert_status(200);
        reply.text
    };
    let reply = answered().await;
    assert!(reply.contains("from the first"), "{reply}");

    let (providers, id) = move_provider(&app, &owner, &tenant.app_id, &second).await;
    let reply = answered().await;
    assert!(reply.contains("from the second"), "the old address was used: {reply}");

    app.delete(&format!("{providers}/{id}"), &owner)
        .await
        .assert_status(204);
    turn().await.assert_error(502, "upstream_error");
    app.post(
        &providers,
        &owner,
        json!({"name": "fake", "kind": "openai-compatible", "base_url": first.base_url()}),
    )
    .await
    .assert_status(201);
    let reply = answered().await;
    assert!(
        reply.contains("from the first"),
        "the new provider was not found: {reply}"
    );
}

/// Another instance hears at once that an API key was deleted and that a provider moved, though
/// it keeps both in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_and_provider_changes_reach_every_instance() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let other = app.other_instance().await;
    let (first, second) = (answering("from the first").await, answering("from the second").await);
    let (owner, tenant, agent) = provider_agent(&app, &first, false).await;
    let (key_id, api_key) = app.create_api_key(&owner, &tenant.app_id, json!(["admin"])).await;
    let get_on_other = |path: String, token: String| {
        let (client, url) = (app.client.clone(), other.url(&path));
        async move {
            let reply = client.get(url).bearer_auth(token).send().await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        }
    };
    let application = format!("/v1/applications/{}", tenant.app_id);
    assert_eq!(get_on_other(application.clone(), api_key.clone()).await.0, 200);
    app.delete(&format!("{application}/api-keys/{key_id}"), &owner)
        .await
        .assert_status(204);
    assert!(
        eventually(async || get_on_other(application.clone(), api_key.clone()).await.0 == 401).await,
        "the other instance still accepts a deleted API key"
    );

    let token = user_token(&tenant.all_key, "alice");
    let turn_on_other = || {
        let (client, url, token) = (
            app.client.clone(),
            other.url(&format!("/v1/agents/{agent}/completions")),
            token.clone(),
        );
        async move {
            let body = json!({"messages": [{"role": "user", "content": "hi"}]});
            let reply = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            reply.text().await.unwrap()
        }
    };
    assert!(turn_on_other().await.contains("from the first"));
    move_provider(&app, &owner, &tenant.app_id, &second).await;
    assert!(
        eventually(async || turn_on_other().await.contains("from the second")).await,
        "the other instance still calls the provider's old address"
    );
    other.stop().await;
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
