//! A crash loses nothing that was acknowledged: `kill -9` in the middle of concurrent turns, then a
//! restart on the same database, and every turn that was answered is there, both messages.

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

async fn killed_in_the_middle_of_concurrent_turns_loses_no_acknowledged_message(backend: Backend) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let master_key = confidant::crypto::MasterKey::generate_base64();
    let mut server = Server::start(&database.url, &master_key).await;
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
    let app_id = app["id"].as_str().unwrap();
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

    // Sixteen clients take turns in their own conversations until the server dies under them.
    let path = format!("/v1/agents/{agent}/chat/completions");
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (base, path, user) = (server.base.clone(), path.clone(), user.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acknowledged = Vec::new();
                for turn in 0.. {
                    let text = format!("client {client} turn {turn}");
                    let body = json!({"messages": [{"role": "user", "content": text}], "conversation_id": format!("c{client}")});
                    let reply = http.post(format!("{base}{path}")).bearer_auth(&user).json(&body).send().await;
                    let Ok(reply) = reply else { break };
                    if reply.status() != 200 {
                        break;
                    }
                    // Acknowledged: the whole answer arrived, and it echoes the message.
                    let Ok(answer) = reply.json::<Value>().await else { break };
                    assert_eq!(answer["choices"][0]["message"]["content"], text.as_str());
                    acknowledged.push(text);
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
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(total >= 16, "too few turns before the kill to prove anything: {total}");

    let server = Server::start(&database.url, &master_key).await;
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_turns_loses_no_acknowledged_message() {
    killed_in_the_middle_of_concurrent_turns_loses_no_acknowledged_message(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_turns_loses_no_acknowledged_message() {
    killed_in_the_middle_of_concurrent_turns_loses_no_acknowledged_message(Backend::Postgres).await;
}
