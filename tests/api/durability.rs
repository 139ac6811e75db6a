//! A crash loses nothing that was acknowledged: `kill -9` in the middle of concurrent turns, then a
//! restart on the same database, and every turn that was answered is there, both messages, and
//! its webhook events are delivered; no event names anything that was not stored.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase};

const BIN: &str = env!("CARGO_BIN_EXE_confidant");
const EMAIL: &str = "crash@example.com";
const PASSWORD: &str = "crash-test-password";

/// The `confidant` binary serving `url` on a free loopback port.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(url: &str, master_key: &str) -> Self {
        Self::start_with(url, master_key, &[]).await
    }

    /// With more settings (`CONFIDANT_*` variables).
    async fn start_with(url: &str, master_key: &str, settings: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("CONFIDANT_DATABASE_URL", url)
            .env("CONFIDANT_MASTER_KEY", master_key)
            .env("CONFIDANT_ADMIN_EMAIL", EMAIL)
            .env("CONFIDANT_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "error")
            // Webhooks to the test's loopback receiver, retried quickly.
            .env("CONFIDANT_PROVIDER_ALLOWED_HOSTS", "127.0.0.1")
            .env("CONFIDANT_WEBHOOK_RETRY_BASE", "1s")
            .env("CONFIDANT_WEBHOOK_TIMEOUT", "1s")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }

    async fn call(&self, path: &str, token: &str, body: Option<Value>) -> reqwest::Result<(u16, Value)> {
        let client = reqwest::Client::new();
        let request = match body {
            Some(body) => client.post(format!("{}{path}", self.base)).json(&body),
            None => client.get(format!("{}{path}", self.base)),
        };
        let response = request.bearer_auth(token).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn ok(&self, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(path, token, body).await.expect("request");
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }
}

/// A fresh database, the server on it, and an application with an agent and an all-agents key.
struct Setup {
    database: TestDatabase,
    master_key: String,
    server: Server,
    /// The operator's access token.
    token: String,
    app_id: String,
    agent: String,
    /// Alice's user token.
    user: String,
}

async fn set_up(backend: Backend, settings: &[(&str, &str)]) -> Option<Setup> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let database = TestDatabase::create(backend).await?;
    let master_key = confidant::crypto::MasterKey::generate_base64();
    let server = Server::start_with(&database.url, &master_key, settings).await;
    let login = server
        .ok(
            "/v1/auth/login",
            "",
            Some(json!({"email": EMAIL, "password": PASSWORD})),
        )
        .await;
    let token = login["access"].as_str().unwrap().to_owned();
    let app = server
        .ok("/v1/applications", &token, Some(json!({"name": "crash"})))
        .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let agent = server
        .ok(
            &format!("/v1/applications/{app_id}/agents"),
            &token,
            Some(json!({"name": "a"})),
        )
        .await;
    let agent = agent["id"].as_str().unwrap().to_owned();
    let key = server
        .ok(
            &format!("/v1/applications/{app_id}/authentication-keys"),
            &token,
            Some(json!({"name": "k", "scope": {"all_agents": true}})),
        )
        .await;
    let key = (
        key["id"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );
    let user = crate::harness::user_token(&key, "alice");
    Some(Setup {
        database,
        master_key,
        server,
        token,
        app_id,
        agent,
        user,
    })
}

/// `clients` clients post turns (`turn(client, n)`: the body, and what to remember of it) to the
/// agent until the server is killed 600 ms in; returns what each had acknowledged (answered with
/// 200 and a whole JSON body), with the answer.
async fn turns_until_killed(
    server: &mut Server,
    agent: &str,
    user: &str,
    clients: usize,
    turn: fn(usize, usize) -> (Value, String),
) -> Vec<Vec<(String, Value)>> {
    let url = format!("{}/v1/agents/{agent}/chat/completions", server.base);
    let clients: Vec<_> = (0..clients)
        .map(|client| {
            let (url, user) = (url.clone(), user.to_owned());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acknowledged = Vec::new();
                for n in 0.. {
                    let (body, remembered) = turn(client, n);
                    let Ok(reply) = http.post(&url).bearer_auth(&user).json(&body).send().await else {
                        break;
                    };
                    if reply.status() != 200 {
                        break;
                    }
                    let Ok(answer) = reply.json::<Value>().await else { break };
                    acknowledged.push((remembered, answer));
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.push(client.await.unwrap());
    }
    acknowledged
}

async fn killed_in_the_middle_of_concurrent_turns_loses_no_acknowledged_message(
    backend: Backend,
    settings: &[(&str, &str)],
) {
    let Some(Setup {
        database,
        master_key,
        mut server,
        agent,
        user,
        ..
    }) = set_up(backend, settings).await
    else {
        return;
    };
    if let Some(path) = database.sqlite_path() {
        // This test is another process than the server: it may open the file unless the server
        // holds it exclusively.
        let exclusive = settings.contains(&("CONFIDANT_SQLITE_LOCKING", "exclusive"));
        let connection = rusqlite::Connection::open(path).unwrap();
        connection.busy_timeout(Duration::ZERO).unwrap();
        let read = connection.query_row("SELECT count(*) FROM agents", [], |row| row.get::<_, i64>(0));
        assert_eq!(read.is_ok(), !exclusive, "{read:?}");
    }
    // Sixteen clients take turns in their own conversations until the server dies under them.
    let acknowledged = turns_until_killed(&mut server, &agent, &user, 16, |client, turn| {
        let text = format!("client {client} turn {turn}");
        let body = json!({"messages": [{"role": "user", "content": text}], "conversation_id": format!("c{client}")});
        (body, text)
    })
    .await;
    for (text, answer) in acknowledged.iter().flatten() {
        // Acknowledged: the whole answer arrived, and it echoes the message.
        assert_eq!(answer["choices"][0]["message"]["content"], text.as_str());
    }
    let acknowledged: Vec<Vec<String>> = acknowledged
        .into_iter()
        .map(|turns| turns.into_iter().map(|(text, _)| text).collect())
        .collect();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(total >= 16, "too few turns before the kill to prove anything: {total}");

    let server = Server::start_with(&database.url, &master_key, settings).await;
    for (client, turns) in acknowledged.iter().enumerate() {
        let conversation = server
            .ok(
                &format!("/v1/agents/{agent}/conversations/c{client}?limit=1000"),
                &user,
                None,
            )
            .await;
        let stored = crate::harness::roles_and_contents(&conversation["messages"]);
        for text in turns {
            let at = stored
                .iter()
                .position(|(role, content)| role == "user" && content == text)
                .unwrap_or_else(|| panic!("acknowledged turn lost: {text}"));
            assert_eq!(
                stored.get(at + 1),
                Some(&("assistant".to_owned(), text.clone())),
                "the reply of an acknowledged turn was lost: {text}"
            );
        }
    }
    drop(server);
}

async fn killed_with_webhook_deliveries_outstanding_loses_and_invents_none(backend: Backend) {
    let Some(Setup {
        database,
        master_key,
        mut server,
        token,
        app_id,
        agent,
        user,
    }) = set_up(backend, &[]).await
    else {
        return;
    };
    // The receiver refuses everything until the server has died and come back.
    let receiver = crate::webhooks::Receiver::start(usize::MAX).await;
    server
        .ok(
            &format!("/v1/applications/{app_id}/webhooks"),
            &token,
            Some(json!({"url": receiver.url, "events": ["conversation.created", "message.completed"]})),
        )
        .await;

    // Eight clients start a conversation per turn until the server dies under them.
    let acknowledged: Vec<String> = turns_until_killed(&mut server, &agent, &user, 8, |client, turn| {
        let conversation = format!("c{client}-{turn}");
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "conversation_id": conversation});
        (body, conversation)
    })
    .await
    .into_iter()
    .flatten()
    .map(|(conversation, _)| conversation)
    .collect();
    assert!(
        acknowledged.len() >= 8,
        "too few turns before the kill: {}",
        acknowledged.len()
    );
    assert!(!receiver.captured().is_empty(), "deliveries were tried before the kill");

    receiver.set_failing(0);
    let server = Server::start(&database.url, &master_key).await;
    // Every acknowledged turn's two events arrive (at least once: a delivery in flight at the
    // kill may come twice, under one `webhook-id`).
    let heard = |captured: &[crate::webhooks::Captured], kind: &str, conversation: &str| {
        captured.iter().any(|c| {
            let event = c.json();
            event["type"] == kind && event["data"]["conversation_id"] == conversation
        })
    };
    let started = Instant::now();
    let captured = loop {
        let captured = receiver.captured();
        let missing = acknowledged
            .iter()
            .find(|c| !heard(&captured, "conversation.created", c) || !heard(&captured, "message.completed", c));
        let Some(missing) = missing else { break captured };
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the events of acknowledged turn {missing} were lost"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // No event names a conversation or a message that is not stored.
    for delivery in &captured {
        let event = delivery.json();
        let conversation = event["data"]["conversation_id"].as_str().unwrap();
        let stored = server
            .ok(&format!("/v1/agents/{agent}/conversations/{conversation}"), &user, None)
            .await;
        if event["type"] == "message.completed" {
            let message = &event["data"]["message_id"];
            assert!(
                stored["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| &m["id"] == message),
                "an event for a message that was never stored: {event}"
            );
        }
    }
    // One webhook-id per event: its retries and redeliveries share it.
    for delivery in &captured {
        let same: Vec<_> = captured.iter().filter(|c| c.id == delivery.id).collect();
        assert!(same.iter().all(|c| c.body == delivery.body));
    }
    drop(server);
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_turns_loses_no_acknowledged_message() {
    killed_in_the_middle_of_concurrent_turns_loses_no_acknowledged_message(Backend::Sqlite, &[]).await;
}

/// The process's exclusive lock goes with it: the restart opens the file at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_exclusive_killed_mid_turns_loses_no_acknowledged_message() {
    let exclusive = [("CONFIDANT_SQLITE_LOCKING", "exclusive")];
    killed_in_the_middle_of_concurrent_turns_loses_no_acknowledged_message(Backend::Sqlite, &exclusive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_turns_loses_no_acknowledged_message() {
    killed_in_the_middle_of_concurrent_turns_loses_no_acknowledged_message(Backend::Postgres, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_with_webhooks_outstanding_loses_no_event() {
    killed_with_webhook_deliveries_outstanding_loses_and_invents_none(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_with_webhooks_outstanding_loses_no_event() {
    killed_with_webhook_deliveries_outstanding_loses_and_invents_none(Backend::Postgres).await;
}
