//! Webhooks: registered with a secret shown once; every event written with its change and
//! delivered signed per Standard Webhooks (verified with the reference Python library); failed
//! deliveries retried; the deliveries log; nothing lost or invented across a `kill -9`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::db_tests;
use crate::harness::{Backend, TestApp, test_settings, user_token};

db_tests!(
    every_event_is_delivered_signed_to_the_webhooks_that_receive_it,
    webhooks_are_validated_and_kept_to_their_application,
    the_deliveries_log_keeps_finished_deliveries_a_week,
);

/// Retried after a fifth of a second (the default is five seconds).
fn quick_retries() -> confidant::Settings {
    let mut settings = test_settings();
    settings.webhook_retry_base = Duration::from_millis(200);
    settings.webhook_timeout = Duration::from_secs(5);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_hanging_receiver_holds_up_no_other() {
    let app = TestApp::spawn_with(Backend::Sqlite, quick_retries()).await.unwrap();
    a_hanging_receiver_holds_up_no_other(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_hanging_receiver_holds_up_no_other() {
    if let Some(app) = TestApp::spawn_with(Backend::Postgres, quick_retries()).await {
        a_hanging_receiver_holds_up_no_other(app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failed_deliveries_are_retried() {
    let app = TestApp::spawn_with(Backend::Sqlite, quick_retries()).await.unwrap();
    failed_deliveries_are_retried_with_the_same_id_until_taken(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failed_deliveries_are_retried() {
    if let Some(app) = TestApp::spawn_with(Backend::Postgres, quick_retries()).await {
        failed_deliveries_are_retried_with_the_same_id_until_taken(app).await;
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Captured {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Captured {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A loopback webhook receiver: answers 500 to the first `failing` requests (or all, while
/// `failing` is `usize::MAX`), then 204; keeps every request.
pub struct Receiver {
    pub url: String,
    captured: std::sync::Mutex<Vec<Captured>>,
    failing: AtomicUsize,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    pub async fn start(failing: usize) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/confidant", listener.local_addr().unwrap());
        Arc::new_cyclic(|weak: &std::sync::Weak<Receiver>| {
            let weak = weak.clone();
            let router = axum::Router::new()
                .route("/hooks/confidant", axum::routing::post(take))
                .with_state(weak);
            Receiver {
                url,
                captured: Default::default(),
                failing: AtomicUsize::new(failing),
                server: tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                }),
            }
        })
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }

    pub fn set_failing(&self, failing: usize) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Waits until `done` holds of what arrived (at most 30 s).
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Captured]) -> bool) -> Vec<Captured> {
        let started = Instant::now();
        loop {
            let captured = self.captured();
            if done(&captured) {
                return captured;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what} did not arrive; got {:?}",
                captured.iter().map(|c| c.json()["type"].clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn take(State(receiver): State<std::sync::Weak<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    let Some(receiver) = receiver.upgrade() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.captured.lock().unwrap().push(Captured {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    });
    let failing = receiver.failing.load(Ordering::SeqCst);
    if failing > 0 {
        if failing != usize::MAX {
            receiver.failing.store(failing - 1, Ordering::SeqCst);
        }
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

/// The bodies of deliveries as the Standard Webhooks library verified them with `secret`, or
/// `None` (with a notice) when its environment is missing, unless the real-client tests are
/// required. A delivery that does not verify fails the test.
pub fn verified_with_the_reference_library(secret: &str, deliveries: &[Captured]) -> Option<Vec<Value>> {
    let results = run_verifier(secret, deliveries)?;
    Some(
        results
            .into_iter()
            .zip(deliveries)
            .map(|(result, delivery)| {
                assert_eq!(result["ok"], true, "{} did not verify: {result}", delivery.body);
                result["payload"].clone()
            })
            .collect(),
    )
}

fn run_verifier(secret: &str, deliveries: &[Captured]) -> Option<Vec<Value>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let python = dir.join(".venv/bin/python");
    if !python.exists() {
        if std::env::var("CONFIDANT_REQUIRE_CLIENTS").is_ok_and(|v| v == "1") {
            panic!("the Standard Webhooks library's environment is missing: run tests/mcp/setup");
        }
        eprintln!("SKIPPED: verifying with standardwebhooks needs tests/mcp/.venv (run tests/mcp/setup)");
        return None;
    }
    let input = json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|d| json!({
            "headers": {"webhook-id": d.id, "webhook-timestamp": d.timestamp, "webhook-signature": d.signature},
            "body": d.body,
        })).collect::<Vec<_>>(),
    });
    let mut child = std::process::Command::new(python)
        .arg(dir.join("verify_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the verifier runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the verifier failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the verifier's JSON");
    assert_eq!(results.len(), deliveries.len());
    Some(results)
}

const ALL_EVENTS: [&str; 5] = [
    "conversation.created",
    "message.completed",
    "feedback.created",
    "memory.created",
    "user.erased",
];

fn types(captured: &[Captured]) -> Vec<String> {
    captured
        .iter()
        .map(|c| c.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn every_event_is_delivered_signed_to_the_webhooks_that_receive_it(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "hooked", 1).await;
    let agent = &tenant.agents[0];
    let hooks = format!("/v1/applications/{}/webhooks", tenant.app_id);
    let everything = Receiver::start(0).await;
    let erasures = Receiver::start(0).await;
    let created = app
        .post(&hooks, &owner, json!({"url": everything.url, "events": ALL_EVENTS}))
        .await;
    let created = created.assert_status(201).clone();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let only_erasures = app
        .post(&hooks, &owner, json!({"url": erasures.url, "events": ["user.erased"]}))
        .await;
    let only_erasures = only_erasures.assert_status(201).clone();
    // The secret is shown once: never in the listing.
    let listed = app.get(&hooks, &owner).await;
    let listed = listed.assert_status(200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert_eq!(listed["data"][0]["events"], json!(ALL_EVENTS));
    assert!(!listed.to_string().contains(&secret), "{listed}");

    // A turn, a vote on its reply, a memory, and the user erased.
    let alice = user_token(&tenant.all_key, "alice");
    app.post(
        &format!("/v1/agents/{agent}/chat/completions"),
        &alice,
        json!({"messages": [{"role": "user", "content": "hello hooks"}], "conversation_id": "c1"}),
    )
    .await
    .assert_status(200);
    // A second turn in the same conversation creates no conversation.
    app.post(
        &format!("/v1/agents/{agent}/chat/completions"),
        &alice,
        json!({"messages": [{"role": "user", "content": "again"}], "conversation_id": "c1"}),
    )
    .await
    .assert_status(200);
    let conversation = app.get(&format!("/v1/agents/{agent}/conversations/c1"), &alice).await;
    let stored = conversation.assert_status(200)["messages"].as_array().unwrap().clone();
    let first_reply = stored.iter().find(|m| m["role"] == "assistant").unwrap();
    let message_id = first_reply["id"].as_str().unwrap().to_owned();
    app.call(
        reqwest::Method::PUT,
        &format!("/v1/agents/{agent}/conversations/c1/messages/{message_id}/feedback"),
        Some(&alice),
        Some(json!({"vote": "up", "comment": "nice"})),
    )
    .await
    .assert_status(200);
    app.post(
        "/v1/memories",
        &alice,
        json!({"content": "likes hooks", "agent_id": agent}),
    )
    .await
    .assert_status(201);
    app.delete(&format!("/v1/applications/{}/users/alice", tenant.app_id), &owner)
        .await
        .assert_status(200);

    let got = everything
        .wait_for("six events", |c| {
            c.len() >= 6 && types(c).contains(&"user.erased".to_owned())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = {
        let again = everything.captured();
        assert_eq!(
            again.len(),
            got.len(),
            "more deliveries than events: {:?}",
            types(&again)
        );
        again
    };
    let mut kinds = types(&got);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "conversation.created",
            "feedback.created",
            "memory.created",
            "message.completed",
            "message.completed",
            "user.erased"
        ]
    );
    let event = |kind: &str| got.iter().map(Captured::json).find(|e| e["type"] == kind).unwrap();
    let conversation_created = event("conversation.created");
    assert_eq!(conversation_created["data"]["conversation_id"], "c1");
    assert_eq!(conversation_created["data"]["user"], "alice");
    assert_eq!(conversation_created["data"]["agent_id"], agent.as_str());
    assert!(conversation_created["timestamp"].as_str().unwrap().ends_with('Z'));
    let completed = got
        .iter()
        .map(Captured::json)
        .find(|e| e["type"] == "message.completed" && e["data"]["message_id"] == message_id.as_str())
        .expect("the first reply's event");
    assert_eq!(completed["data"]["status"], "complete");
    assert_eq!(completed["data"]["content"], "hello hooks");
    assert_eq!(completed["data"]["conversation_id"], "c1");
    let feedback = event("feedback.created");
    assert_eq!(feedback["data"]["vote"], "up");
    assert_eq!(feedback["data"]["replaced"], false);
    assert_eq!(event("memory.created")["data"]["content"], "likes hooks");
    assert_eq!(event("user.erased")["data"]["user"], "alice");
    // Each delivery has its own id, and the headers Standard Webhooks names.
    let mut ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len());
    assert!(
        got.iter()
            .all(|c| c.id.starts_with("msg_") && c.signature.starts_with("v1,"))
    );
    if let Some(payloads) = verified_with_the_reference_library(&secret, &got) {
        assert_eq!(payloads.len(), 6);
        // The library can refuse: a body changed in transit, or another secret, does not verify.
        let mut tampered = got[0].clone();
        tampered.body = tampered.body.replace("alice", "mallory");
        let refused = run_verifier(&secret, &[tampered]).unwrap();
        assert_eq!(refused[0]["ok"], false);
        let other = only_erasures["secret"].as_str().unwrap();
        assert_eq!(run_verifier(other, &got[..1]).unwrap()[0]["ok"], false);
    }

    // The other webhook received only what it asked for.
    let erased = erasures.wait_for("the erasure", |c| !c.is_empty()).await;
    assert_eq!(types(&erased), ["user.erased"]);

    // The deliveries log: each delivered on its first attempt.
    let log = app
        .get(
            &format!("{hooks}/{}/deliveries?limit=100", created["id"].as_str().unwrap()),
            &owner,
        )
        .await;
    let log = log.assert_status(200)["data"].as_array().unwrap().clone();
    assert_eq!(log.len(), 6);
    for delivery in &log {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        assert_eq!(delivery["attempts"], 1);
        assert_eq!(delivery["last_status"], 204);
        assert!(delivery["next_attempt_at"].is_null());
        assert!(delivery["delivered_at"].is_string());
    }
    assert_eq!(log[0]["event_type"], "user.erased", "newest first");
    assert_eq!(log[0]["payload"]["data"]["user"], "alice");

    // "Send test event": one `webhook.test`, to that webhook only.
    let test = app
        .post(
            &format!("{hooks}/{}/test", only_erasures["id"].as_str().unwrap()),
            &owner,
            json!({}),
        )
        .await;
    test.assert_status(202);
    let erased = erasures.wait_for("the test event", |c| c.len() >= 2).await;
    assert_eq!(types(&erased), ["user.erased", "webhook.test"]);
    assert_eq!(everything.captured().len(), 6);
}

async fn failed_deliveries_are_retried_with_the_same_id_until_taken(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "flaky", 1).await;
    let receiver = Receiver::start(2).await;
    let hooks = format!("/v1/applications/{}/webhooks", tenant.app_id);
    let hook = app
        .post(
            &hooks,
            &owner,
            json!({"url": receiver.url, "events": ["conversation.created"]}),
        )
        .await;
    let hook = hook.assert_status(201).clone();
    let alice = user_token(&tenant.all_key, "alice");
    app.post(
        &format!("/v1/agents/{}/chat/completions", tenant.agents[0]),
        &alice,
        json!({"messages": [{"role": "user", "content": "hi"}], "conversation_id": "c1"}),
    )
    .await
    .assert_status(200);
    let log_path = format!("{hooks}/{}/deliveries", hook["id"].as_str().unwrap());

    // Refused twice, taken the third time: one delivery, three attempts, one id.
    let first = receiver.wait_for("the first attempt", |c| !c.is_empty()).await;
    // Once the first refusal is recorded, the log says so: only the third attempt can deliver it.
    let started = Instant::now();
    let pending = loop {
        let log = app.get(&log_path, &owner).await;
        let delivery = log.assert_status(200)["data"][0].clone();
        if delivery["attempts"].as_i64().unwrap() >= 1 {
            break delivery;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{delivery}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if pending["attempts"].as_i64().unwrap() < 3 {
        assert_eq!(pending["status"], "pending", "{pending}");
        assert!(pending["last_error"].as_str().unwrap().contains("500"), "{pending}");
        assert_eq!(pending["last_status"], 500);
        assert!(pending["next_attempt_at"].is_string());
    }
    let got = receiver.wait_for("the third attempt", |c| c.len() >= 3).await;
    assert!(got.iter().all(|c| c.id == first[0].id && c.body == first[0].body));
    let started = Instant::now();
    let delivered = loop {
        let log = app.get(&log_path, &owner).await;
        let delivery = log.assert_status(200)["data"][0].clone();
        if delivery["status"] == "delivered" {
            break delivery;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{delivery}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivered["attempts"], 3);
    assert_eq!(delivered["last_status"], 204);
    assert!(delivered["last_error"].is_null());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.captured().len(), 3, "delivered, so never sent again");
}

async fn webhooks_are_validated_and_kept_to_their_application(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "strict", 1).await;
    let other = app.tenant(&owner, "another", 1).await;
    let hooks = format!("/v1/applications/{}/webhooks", tenant.app_id);
    let receiver = Receiver::start(0).await;
    app.post(&hooks, &owner, json!({"url": receiver.url, "events": []}))
        .await
        .assert_error(422, "validation_failed");
    app.post(
        &hooks,
        &owner,
        json!({"url": receiver.url, "events": ["message.deleted"]}),
    )
    .await
    .assert_error(400, "invalid_request");
    // The provider address rules: a private address not allowed here, checked without connecting.
    for url in ["http://10.1.2.3/hook", "ftp://127.0.0.1/hook", "not a url"] {
        let refused = app
            .post(&hooks, &owner, json!({"url": url, "events": ["user.erased"]}))
            .await;
        refused.assert_error(422, "validation_failed");
        assert!(refused.body["details"]["fields"]["url"].is_string(), "{}", refused.text);
    }
    let hook = app
        .post(&hooks, &owner, json!({"url": receiver.url, "events": ["user.erased"]}))
        .await;
    let hook_id = hook.assert_status(201)["id"].as_str().unwrap().to_owned();

    // Another application's webhooks are not reachable through this one.
    let elsewhere = format!("/v1/applications/{}/webhooks/{hook_id}", other.app_id);
    app.delete(&elsewhere, &owner).await.assert_error(404, "not_found");
    app.get(&format!("{elsewhere}/deliveries"), &owner)
        .await
        .assert_error(404, "not_found");
    app.post(&format!("{elsewhere}/test"), &owner, json!({}))
        .await
        .assert_error(404, "not_found");
    let stranger = app.other_operator("stranger@example.com").await;
    app.get(&hooks, &stranger).await.assert_error(403, "forbidden");

    // At most twenty per application.
    for _ in 1..20 {
        app.post(&hooks, &owner, json!({"url": receiver.url, "events": ["user.erased"]}))
            .await
            .assert_status(201);
    }
    app.post(&hooks, &owner, json!({"url": receiver.url, "events": ["user.erased"]}))
        .await
        .assert_error(409, "conflict");

    // Deleted: gone from the list, its log with it, and it hears nothing more.
    app.delete(&format!("{hooks}/{hook_id}"), &owner)
        .await
        .assert_status(204);
    app.delete(&format!("{hooks}/{hook_id}"), &owner)
        .await
        .assert_error(404, "not_found");
    app.get(&format!("{hooks}/{hook_id}/deliveries"), &owner)
        .await
        .assert_error(404, "not_found");
    let listed = app.get(&hooks, &owner).await;
    assert_eq!(listed.assert_status(200)["data"].as_array().unwrap().len(), 19);
    assert!(!listed.text.contains(&hook_id));
}

async fn the_deliveries_log_keeps_finished_deliveries_a_week(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "logged", 0).await;
    let receiver = Receiver::start(0).await;
    let hooks = format!("/v1/applications/{}/webhooks", tenant.app_id);
    let hook = app
        .post(&hooks, &owner, json!({"url": receiver.url, "events": ["user.erased"]}))
        .await;
    let hook_id = hook.assert_status(201)["id"].as_str().unwrap().to_owned();
    let log = format!("{hooks}/{hook_id}/deliveries");
    app.post(&format!("{hooks}/{hook_id}/test"), &owner, json!({}))
        .await
        .assert_status(202);
    receiver.wait_for("the first test event", |c| c.len() == 1).await;
    // The second is refused, so it stays pending.
    receiver.set_failing(usize::MAX);
    app.post(&format!("{hooks}/{hook_id}/test"), &owner, json!({}))
        .await
        .assert_status(202);
    receiver.wait_for("the second test event", |c| c.len() == 2).await;
    let started = Instant::now();
    while app.get(&log, &owner).await.body["data"][1]["status"] != "delivered" {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let now = confidant::store::now_micros();
    let week = 7 * 86_400_000_000;
    // Not a week old: kept.
    assert_eq!(
        confidant::store::webhooks::purge_deliveries(&app.db, now - week)
            .await
            .unwrap(),
        0
    );
    // Older than the cutoff: the delivered one goes, the pending one stays.
    assert_eq!(
        confidant::store::webhooks::purge_deliveries(&app.db, now + 1)
            .await
            .unwrap(),
        1
    );
    let kept = app.get(&log, &owner).await;
    let kept = kept.assert_status(200)["data"].as_array().unwrap().clone();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["status"], "pending");
}

/// A receiver that takes connections and never answers: its attempts wait out the timeout while
/// another webhook's events are delivered.
async fn a_hanging_receiver_holds_up_no_other(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "hung", 0).await;
    let hooks = format!("/v1/applications/{}/webhooks", tenant.app_id);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let hung = app
        .post(&hooks, &owner, json!({"url": silent_url, "events": ["user.erased"]}))
        .await;
    let hung = hung.assert_status(201)["id"].as_str().unwrap().to_owned();
    let receiver = Receiver::start(0).await;
    let live = app
        .post(&hooks, &owner, json!({"url": receiver.url, "events": ["user.erased"]}))
        .await;
    let live = live.assert_status(201)["id"].as_str().unwrap().to_owned();

    app.post(&format!("{hooks}/{hung}/test"), &owner, json!({}))
        .await
        .assert_status(202);
    // The hanging attempt is under way before the other event exists.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.post(&format!("{hooks}/{live}/test"), &owner, json!({}))
        .await
        .assert_status(202);
    receiver.wait_for("the live receiver's event", |c| !c.is_empty()).await;
    // Delivered while the hanging attempt still waits for its answer (5 s).
    let hung_log = app.get(&format!("{hooks}/{hung}/deliveries"), &owner).await;
    let hung_delivery = &hung_log.assert_status(200)["data"][0];
    assert_eq!(hung_delivery["attempts"], 0, "{hung_delivery}");
    assert_eq!(hung_delivery["status"], "pending");
    held.abort();
}

/// Two instances on one PostgreSQL: both workers take deliveries from the outbox, and each
/// delivery is attempted by one of them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_deliver_each_event_once() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let other = app.other_instance().await;
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "twice", 0).await;
    let receiver = Receiver::start(0).await;
    let hooks = format!("/v1/applications/{}/webhooks", tenant.app_id);
    let hook = app
        .post(&hooks, &owner, json!({"url": receiver.url, "events": ["user.erased"]}))
        .await;
    let hook_id = hook.assert_status(201)["id"].as_str().unwrap().to_owned();
    const EVENTS: usize = 40;
    for _ in 0..EVENTS {
        app.post(&format!("{hooks}/{hook_id}/test"), &owner, json!({}))
            .await
            .assert_status(202);
    }
    receiver.wait_for("every event", |c| c.len() >= EVENTS).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.captured();
    let mut ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS);
    assert_eq!(got.len(), EVENTS, "an event was delivered twice");
    let log = app
        .get(&format!("{hooks}/{hook_id}/deliveries?limit=100"), &owner)
        .await;
    let log = log.assert_status(200)["data"].as_array().unwrap().clone();
    assert_eq!(log.len(), EVENTS);
    assert!(
        log.iter().all(|d| d["attempts"] == 1 && d["status"] == "delivered"),
        "{log:?}"
    );
    other.stop().await;
}
