//! Starts Confidant on a fresh database and talks to it over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Once;

use confidant::completions::egress::{HostAllowlist, Resolver};
use confidant::crypto::MasterKey;
use confidant::store::{Db, DbOptions};
use confidant::{AppState, Settings};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_EMAIL: &str = "owner@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn(TestApp)` on both databases.
#[macro_export]
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::harness::TestApp::spawn($crate::harness::Backend::Sqlite).await.expect("sqlite is always available");
                super::$name(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::harness::TestApp::spawn($crate::harness::Backend::Postgres).await {
                    super::$name(app).await;
                }
            }
        }
    )*};
}

fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Silent unless asked for, as zero2prod does.
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug,sqlx=warn")
                .with_test_writer()
                .try_init();
        }
    });
}

/// A database made for one test, dropped with it.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    /// SQLite: the folder holding the file; PostgreSQL: the database name to drop.
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        confidant::store::sqlite_path(&self.url)
    }

    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("confidant.db").display());
                Some(Self {
                    url,
                    backend,
                    _dir: Some(dir),
                    pg_name: None,
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let connection = sqlx::PgPool::connect(&admin_url).await;
                let pool = match connection {
                    Ok(pool) => pool,
                    Err(e) => {
                        if std::env::var("CONFIDANT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                            panic!(
                                "PostgreSQL is required (CONFIDANT_REQUIRE_POSTGRES=1) but unreachable at {admin_url}: {e}"
                            );
                        }
                        eprintln!("SKIPPED: PostgreSQL unreachable at {admin_url}: {e}");
                        return None;
                    }
                };
                let name = format!("confidant_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let url = replace_database(&admin_url, &name);
                Some(Self {
                    url,
                    backend,
                    _dir: None,
                    pg_name: Some(name),
                })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        // Drop runs outside async code; a short-lived runtime on its own thread drops the database.
        let admin_url = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

fn postgres_admin_url() -> String {
    std::env::var("CONFIDANT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A running service and a client for it.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub database: TestDatabase,
    pub master_key: String,
    pub db: Db,
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts the contract's error body with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        assert_eq!(self.body["error"], code, "unexpected error code; body: {}", self.text);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.text
        );
    }

    /// Asserts the status; a JSON body must also say so (generated clients decode by it).
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        if !self.body.is_null() {
            let content_type = self.headers.get("content-type").and_then(|v| v.to_str().ok());
            assert!(
                content_type.is_some_and(|t| t.starts_with("application/json")),
                "a JSON body sent as {content_type:?}"
            );
        }
        &self.body
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, test_settings()).await
    }

    /// Starts the service with these settings on a fresh database of this kind.
    pub async fn spawn_with(backend: Backend, settings: Settings) -> Option<Self> {
        init_logging();
        let database = TestDatabase::create(backend).await?;
        let master_key = MasterKey::generate_base64();
        let (db, address, shutdown, server) = start(&database.url, &master_key, settings.clone()).await;
        confidant::ensure_operator(&db, ADMIN_EMAIL, ADMIN_PASSWORD)
            .await
            .expect("first operator");
        Some(Self {
            address,
            client: reqwest::Client::new(),
            database,
            master_key,
            db,
            settings,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    pub fn backend(&self) -> Backend {
        self.database.backend
    }

    /// Stops the server and closes the database, then starts both again on the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (db, address, shutdown, server) = start(&self.database.url, &self.master_key, self.settings.clone()).await;
        self.db = db;
        self.address = address;
        self.shutdown = Some(shutdown);
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.db.close().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Sends a request with optional bearer token and JSON body.
    pub async fn call(&self, method: Method, path: &str, bearer: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::read(request.send().await.expect("request sent")).await
    }

    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, bearer: &str) -> Reply {
        self.call(Method::GET, path, Some(bearer), None).await
    }

    pub async fn post(&self, path: &str, bearer: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(bearer), Some(body)).await
    }

    pub async fn patch(&self, path: &str, bearer: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(bearer), Some(body)).await
    }

    pub async fn delete(&self, path: &str, bearer: &str) -> Reply {
        self.call(Method::DELETE, path, Some(bearer), None).await
    }

    /// Logs in and returns the full login response.
    pub async fn login_as(&self, email: &str, password: &str) -> Value {
        let reply = self
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        reply.assert_status(200).clone()
    }

    /// An access token of the first operator.
    pub async fn owner_token(&self) -> String {
        self.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await["access"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// Creates another operator and returns an access token for them.
    pub async fn other_operator(&self, email: &str) -> String {
        confidant::ensure_operator(&self.db, email, ADMIN_PASSWORD)
            .await
            .expect("operator");
        self.login_as(email, ADMIN_PASSWORD).await["access"]
            .as_str()
            .expect("access")
            .to_owned()
    }

    /// Creates an application and returns its id.
    pub async fn create_application(&self, token: &str, name: &str) -> String {
        let reply = self.post("/v1/applications", token, json!({"name": name})).await;
        reply.assert_status(201)["id"].as_str().expect("id").to_owned()
    }

    pub async fn create_agent(&self, token: &str, app_id: &str, name: &str) -> String {
        let reply = self
            .post(
                &format!("/v1/applications/{app_id}/agents"),
                token,
                json!({"name": name}),
            )
            .await;
        reply.assert_status(201)["id"].as_str().expect("id").to_owned()
    }

    /// Creates an API key and returns (id, key).
    pub async fn create_api_key(&self, token: &str, app_id: &str, acl: Value) -> (String, String) {
        let name = format!("key-{}", uuid::Uuid::new_v4().simple());
        let reply = self
            .post(
                &format!("/v1/applications/{app_id}/api-keys"),
                token,
                json!({"name": name, "acl": acl}),
            )
            .await;
        let body = reply.assert_status(201);
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }
}

/// The server's defaults, with the fake providers' loopback address allowed.
pub fn test_settings() -> Settings {
    Settings {
        provider_hosts: HostAllowlist::new(["127.0.0.1"]),
        ..Settings::default()
    }
}

async fn start(
    url: &str,
    master_key: &str,
    mut settings: Settings,
) -> (Db, SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    // No test ever asks DNS: names resolve from a table the test gives, or not at all.
    if matches!(settings.resolver, Resolver::System) {
        settings.resolver = Resolver::fixed([]);
    }
    let db = Db::connect(url, &DbOptions::default()).await.expect("database opens");
    db.migrate().await.expect("migrations run");
    let state = AppState::new(db.clone(), MasterKey::from_base64(master_key).unwrap(), settings);
    let listener = confidant::listen(([127, 0, 0, 1], 0).into()).expect("listen");
    let address = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(async move {
        confidant::serve(listener, state, async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    (db, address, tx, server)
}

/// An application with agents and authentication keys, ready to mint user tokens.
pub struct Tenant {
    pub app_id: String,
    pub agents: Vec<String>,
    /// (kid, secret) of a key covering all agents.
    pub all_key: (String, String),
}

impl TestApp {
    /// Creates an application with `agents` agents and an all-agents authentication key.
    pub async fn tenant(&self, token: &str, name: &str, agents: usize) -> Tenant {
        let app_id = self.create_application(token, name).await;
        let mut ids = Vec::new();
        for i in 0..agents {
            ids.push(self.create_agent(token, &app_id, &format!("agent {i}")).await);
        }
        let all_key = self
            .authentication_key(token, &app_id, json!({"all_agents": true}))
            .await;
        Tenant {
            app_id,
            agents: ids,
            all_key,
        }
    }

    /// Creates an authentication key with this scope; returns (kid, secret).
    pub async fn authentication_key(&self, token: &str, app_id: &str, scope: Value) -> (String, String) {
        let name = format!("key-{}", uuid::Uuid::new_v4().simple());
        let reply = self
            .post(
                &format!("/v1/applications/{app_id}/authentication-keys"),
                token,
                json!({"name": name, "scope": scope}),
            )
            .await;
        let body = reply.assert_status(201);
        (
            body["id"].as_str().unwrap().to_owned(),
            body["secret"].as_str().unwrap().to_owned(),
        )
    }
}

/// (role, content) of each message of a JSON array of messages.
pub fn roles_and_contents(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .expect("an array of messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (role, content, status) of each message of a JSON array of messages.
pub fn message_states(messages: &Value) -> Vec<(String, String, String)> {
    messages
        .as_array()
        .expect("an array of messages")
        .iter()
        .map(|m| {
            let field = |name: &str| m[name].as_str().unwrap_or_else(|| panic!("no {name}: {m}")).to_owned();
            (field("role"), field("content"), field("status"))
        })
        .collect()
}

/// `message_states` as `&str`s, for comparing with literals.
pub fn as_strs(states: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    states
        .iter()
        .map(|(r, c, s)| (r.as_str(), c.as_str(), s.as_str()))
        .collect()
}

/// Signs a secure user token valid for an hour.
pub fn user_token(key: &(String, String), sub: &str) -> String {
    confidant::auth::mint_user_token(&key.0, &key.1, sub, std::time::Duration::from_secs(3600)).expect("token")
}

/// Encodes and signs a JWT from raw header and claims, for hostile cases.
pub fn raw_jwt(header: &Value, claims: &Value, secret: &[u8], algorithm: jsonwebtoken::Algorithm) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        algorithm,
    )
    .expect("sign");
    format!("{message}.{signature}")
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TestApp {
    /// How many rows a table holds (for checks that nothing was stored).
    pub async fn count_rows(&self, table: &str) -> i64 {
        let query = sea_query::Query::select()
            .expr_as(sea_query::Expr::cust("COUNT(*)"), "n")
            .from(sea_query::Alias::new(table))
            .to_owned();
        let count: Option<confidant::store::Count> = self.db.row(&query).await.unwrap();
        count.expect("a count").n
    }
}

impl TestApp {
    /// Runs raw SQL on the database (for putting it into states the API cannot reach).
    pub async fn execute_sql(&self, sql: &str) {
        self.db
            .run_script(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e}"));
    }

    /// Restarts the service on the same data with other settings.
    pub async fn reconfigure(&mut self, settings: Settings) {
        self.settings = settings;
        self.restart().await;
    }
}

/// Another server process's worth of state on the same database (as behind a load balancer).
pub struct OtherInstance {
    pub address: SocketAddr,
    db: Db,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl OtherInstance {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.db.close().await;
    }
}

impl TestApp {
    /// Starts a second instance of the service on this test's database.
    pub async fn other_instance(&self) -> OtherInstance {
        let (db, address, shutdown, server) = start(&self.database.url, &self.master_key, self.settings.clone()).await;
        OtherInstance {
            address,
            db,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }
}
