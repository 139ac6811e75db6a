//! Server-side request forgery: provider addresses are refused when saved and on every connection.
//!
//! No test here sends a packet anywhere but loopback, even if the code under test were wrong:
//! names resolve from a fixed table (never DNS), refused addresses are refused before connecting
//! (nothing listens there but loopback listeners that count who reaches them).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use confidant::completions::egress::{HostAllowlist, Resolver};
use serde_json::{Value, json};

use crate::db_tests;
use crate::fake_provider::{FakeProvider, Script, UPSTREAM_SECRET};
use crate::harness::{Reply, Tenant, TestApp, test_settings, user_token};

db_tests!(
    internal_addresses_are_refused_when_a_provider_is_saved,
    a_name_that_rebinds_to_loopback_is_refused_at_connection,
    a_listed_internal_host_is_reached_through_the_resolver,
    a_provider_that_moves_host_must_bring_its_key_again,
    a_provider_connection_is_tested_with_its_key
);

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn provider(name: &str, base_url: &str) -> Value {
    json!({"name": name, "kind": "openai-compatible", "base_url": base_url, "api_key": "sk-test-provider"})
}

/// An agent of `tenant` on a new provider at `base_url`; returns the agent's id.
async fn agent_on(app: &TestApp, owner: &str, tenant: &Tenant, base_url: &str) -> String {
    let providers = format!("/v1/applications/{}/providers", tenant.app_id);
    app.post(&providers, owner, provider("upstream", base_url))
        .await
        .assert_status(201);
    let agent = json!({"name": "Upstream", "model": {"provider": "upstream", "model": "m"}});
    app.post(&format!("/v1/applications/{}/agents", tenant.app_id), owner, agent)
        .await
        .assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn turn(app: &TestApp, tenant: &Tenant, agent: &str) -> Reply {
    let token = user_token(&tenant.all_key, "alice");
    let body = json!({"message": "hi", "stream": false, "conversation_id": "c"});
    app.post(&format!("/v1/agents/{agent}/completions"), &token, body).await
}

/// A loopback listener that counts the connections it accepts (and answers none).
async fn tripwire() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, reached)
}

async fn internal_addresses_are_refused_when_a_provider_is_saved(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        provider_hosts: HostAllowlist::default(),
        resolver: Resolver::fixed([
            ("loopback.test", loopback()),
            ("metadata.test", "169.254.169.254".parse().unwrap()),
        ]),
        ..test_settings()
    })
    .await;
    let owner = app.owner_token().await;
    let app_id = app.create_application(&owner, "Acme").await;
    let providers = format!("/v1/applications/{app_id}/providers");
    for (i, url) in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:11434/v1",
        "http://10.0.0.8/v1",
        "http://10.255.255.1:8080/v1",
        "http://[::1]:8080/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://localhost:11434/v1",
        "http://loopback.test/v1",
        "http://metadata.test/v1",
        "https://api.openai.com/v1?api-version=1",
        "https://api.openai.com/v1#x",
    ]
    .into_iter()
    .enumerate()
    {
        let reply = app.post(&providers, &owner, provider(&format!("p{i}"), url)).await;
        reply.assert_error(422, "validation_failed");
        assert!(
            reply.body["details"]["fields"]["base_url"].is_string(),
            "{url}: {}",
            reply.text
        );
    }
    // A public name that does not resolve now is accepted: every connection checks it again.
    app.post(&providers, &owner, provider("openai", "https://api.openai.com/v1"))
        .await
        .assert_status(201);
    // The same rules on PATCH.
    let id = app.get(&providers, &owner).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(
        &format!("{providers}/{id}"),
        &owner,
        json!({"base_url": "http://169.254.169.254/v1", "api_key": "sk-x"}),
    )
    .await
    .assert_error(422, "validation_failed");
}

/// DNS rebinding: the name was harmless when the provider was saved and points at loopback now.
async fn a_name_that_rebinds_to_loopback_is_refused_at_connection(mut app: TestApp) {
    let (port, reached) = tripwire().await;
    app.reconfigure(confidant::Settings {
        provider_hosts: HostAllowlist::default(),
        resolver: Resolver::fixed([]),
        ..test_settings()
    })
    .await;
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let agent = agent_on(&app, &owner, &tenant, &format!("http://rebind.test:{port}/v1")).await;
    app.reconfigure(confidant::Settings {
        provider_hosts: HostAllowlist::default(),
        resolver: Resolver::fixed([("rebind.test", loopback())]),
        ..test_settings()
    })
    .await;
    let reply = turn(&app, &tenant, &agent).await;
    reply.assert_error(502, "upstream_error");
    assert!(
        !reply.text.contains("127.0.0.1") && !reply.text.contains("rebind.test"),
        "{}",
        reply.text
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the refused address was connected to"
    );
}

/// The positive control for the test above: the same path reaches a listed host, so the refusal
/// there comes from the address rule and not from a resolver that never runs.
async fn a_listed_internal_host_is_reached_through_the_resolver(mut app: TestApp) {
    let fake = FakeProvider::start(Script::Reply {
        chunks: vec!["from ".into(), "ollama".into()],
        delay: Duration::ZERO,
    })
    .await;
    let port = fake.address.port();
    app.reconfigure(confidant::Settings {
        provider_hosts: HostAllowlist::new([format!("ollama.test:{port}").as_str()]),
        resolver: Resolver::fixed([("ollama.test", loopback())]),
        ..test_settings()
    })
    .await;
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 0).await;
    let providers = format!("/v1/applications/{}/providers", tenant.app_id);
    // Listed with a port: the host on another port is not.
    app.post(&providers, &owner, provider("other-port", "http://ollama.test:1/v1"))
        .await
        .assert_error(422, "validation_failed");
    let agent = agent_on(&app, &owner, &tenant, &format!("http://ollama.test:{port}/v1")).await;
    let reply = turn(&app, &tenant, &agent).await;
    let body = reply.assert_status(200);
    assert!(body.to_string().contains("from ollama"), "{body}");
    assert_eq!(fake.requests().len(), 1);
}

async fn a_provider_that_moves_host_must_bring_its_key_again(app: TestApp) {
    let owner = app.owner_token().await;
    let app_id = app.create_application(&owner, "Acme").await;
    let providers = format!("/v1/applications/{app_id}/providers");
    let id = app
        .post(&providers, &owner, provider("openai", "https://api.openai.com/v1"))
        .await
        .assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = format!("{providers}/{id}");
    // Same host, another path: the key stays.
    app.patch(&one, &owner, json!({"base_url": "https://api.openai.com/v2"}))
        .await
        .assert_status(200);
    // Another host (or port) without the key: refused, and nothing changed.
    for moved in ["https://attacker.example/v1", "https://api.openai.com:8443/v1"] {
        let reply = app.patch(&one, &owner, json!({"base_url": moved})).await;
        reply.assert_error(422, "validation_failed");
        assert!(reply.body["details"]["fields"]["api_key"].is_string(), "{}", reply.text);
    }
    assert_eq!(
        app.get(&one, &owner).await.body["base_url"],
        "https://api.openai.com/v2"
    );
    // With its key again, it moves.
    let moved = app
        .patch(
            &one,
            &owner,
            json!({"base_url": "https://openrouter.ai/api/v1", "api_key": "sk-or-new"}),
        )
        .await;
    assert_eq!(moved.assert_status(200)["base_url"], "https://openrouter.ai/api/v1");
}

/// "Test connection": the provider's /models with its key, and plain words when it fails.
async fn a_provider_connection_is_tested_with_its_key(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let fake = FakeProvider::start(Script::Status(200)).await;
    fake.set(Script::Reply {
        chunks: vec![],
        delay: Duration::ZERO,
    });
    let providers = format!("/v1/applications/{}/providers", tenant.app_id);
    let created = app
        .post(&providers, &owner, provider("upstream", &fake.base_url()))
        .await;
    let id = created.assert_status(201)["id"].as_str().unwrap().to_owned();
    let tested = app.post(&format!("{providers}/{id}/test"), &owner, json!({})).await;
    let tested = tested.assert_status(200);
    assert_eq!(tested["ok"], true, "{tested}");
    assert_eq!(tested["status"], 200);
    assert_eq!(tested["models"], json!(["fake-small", "fake-large"]));
    let (headers, _) = fake.requests().pop().unwrap();
    assert_eq!(headers["authorization"], "Bearer sk-test-provider");

    // A refused key is said in words, and the upstream body never comes back.
    fake.set(Script::Status(401));
    let refused = app.post(&format!("{providers}/{id}/test"), &owner, json!({})).await;
    assert_eq!(refused.assert_status(200)["ok"], false);
    assert_eq!(refused.body["status"], 401);
    assert!(
        refused.body["message"].as_str().unwrap().contains("API key"),
        "{}",
        refused.text
    );
    assert!(!refused.text.contains(UPSTREAM_SECRET));

    // Nothing listening that answers: unreachable, not a 500.
    let (port, reached) = tripwire().await;
    let moved = json!({"base_url": format!("http://127.0.0.1:{port}/v1"), "api_key": "sk-test-provider"});
    app.patch(&format!("{providers}/{id}"), &owner, moved)
        .await
        .assert_status(200);
    let broken = app.post(&format!("{providers}/{id}/test"), &owner, json!({})).await;
    assert_eq!(broken.assert_status(200)["ok"], false, "{}", broken.text);
    assert_eq!(broken.body["status"], Value::Null);
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    // Another application's provider is not found.
    let other = app.tenant(&owner, "Other", 1).await;
    app.post(
        &format!("/v1/applications/{}/providers/{id}/test", other.app_id),
        &owner,
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
}
