//! The `confidant` command line: clear one-line failures on bad configuration, and the helpers.

use std::process::{Command, Output};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

const BIN: &str = env!("CARGO_BIN_EXE_confidant");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("CONFIDANT_MASTER_KEY")
        .env_remove("CONFIDANT_DATABASE_URL")
        .env("RUST_LOG", "error");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[track_caller]
fn assert_fails_with_one_line(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure");
    let text = stderr(output);
    assert_eq!(text.lines().count(), 1, "expected one line, got: {text}");
    assert!(text.contains(needle), "expected {needle:?} in: {text}");
}

#[test]
fn serve_refuses_a_malformed_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let output = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("CONFIDANT_DATABASE_URL", &url), ("CONFIDANT_MASTER_KEY", "short")],
    );
    assert_fails_with_one_line(&output, "CONFIDANT_MASTER_KEY");
}

#[test]
fn serve_requires_a_master_key_with_postgres() {
    let output = run(
        &["serve"],
        &[("CONFIDANT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")],
    );
    assert_fails_with_one_line(&output, "CONFIDANT_MASTER_KEY is required");
}

#[test]
fn serve_refuses_an_unreachable_database() {
    let key = confidant::crypto::MasterKey::generate_base64();
    let output = run(
        &["serve"],
        &[
            ("CONFIDANT_DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing"),
            ("CONFIDANT_MASTER_KEY", &key),
        ],
    );
    assert_fails_with_one_line(&output, "cannot open the database");
}

#[test]
fn serve_refuses_an_unknown_database_scheme() {
    let output = run(&["serve"], &[("CONFIDANT_DATABASE_URL", "mysql://localhost/x")]);
    assert_fails_with_one_line(&output, "CONFIDANT_DATABASE_URL");
}

#[test]
fn migrate_and_admin_create_work_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let env = [("CONFIDANT_DATABASE_URL", url.as_str())];
    assert!(run(&["migrate"], &env).status.success());
    let create = [
        "admin",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "long enough password",
    ];
    let first = run(&create, &env);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_fails_with_one_line(&run(&create, &env), "already exists");
    let weak = run(
        &["admin", "create", "--email", "b@example.com", "--password", "short"],
        &env,
    );
    assert_fails_with_one_line(&weak, "password");
}

#[test]
fn token_mint_signs_a_token_any_hs256_library_verifies() {
    let secret = "sk-cfd-test-secret-of-enough-length-0123456789";
    let output = run(
        &[
            "token", "mint", "--kid", "key-1", "--secret", secret, "--sub", "user-42", "--ttl", "15m",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let token = String::from_utf8(output.stdout).unwrap();
    let token = token.trim();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("key-1"));
    assert_eq!(header.alg, Algorithm::HS256);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
            .unwrap();
    assert_eq!(data.claims["sub"], "user-42");
    let lifetime = data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 900);
}

/// Runs `confidant serve` with every log target at `trace`, exercises every kind of secret (operator
/// password, access and refresh tokens, master key, authentication-key secret, user tokens, API
/// key, provider API key, and wrong ones), and reads the whole log: none of them may appear.
#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let password = "operator-password-never-logged-7d1f";
    let master_key = "bWFzdGVyLWtleS1uZXZlci1sb2dnZWQtMzItYnl0ZXM=";
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env(
            "CONFIDANT_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("db.sqlite").display()),
        )
        .env("CONFIDANT_MASTER_KEY", master_key)
        .env("CONFIDANT_PROVIDER_ALLOWED_HOSTS", "127.0.0.1:9")
        .env("CONFIDANT_ADMIN_EMAIL", "logs@example.com")
        .env("CONFIDANT_ADMIN_PASSWORD", password)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("the binary runs");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "the server did not start");

    let call = |method: reqwest::Method, path: String, auth: Option<(&'static str, String)>, body: Option<Value>| {
        let mut request = client.request(method, format!("{base}{path}"));
        if let Some((header, value)) = auth {
            request = request.header(header, value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let bearer = |token: &str| Some(("authorization", format!("Bearer {token}")));
    use reqwest::Method;

    let wrong_password = "wrong-password-also-never-logged";
    let (status, _) = call(
        Method::POST,
        "/v1/auth/login".into(),
        None,
        Some(json!({"email": "logs@example.com", "password": wrong_password})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, session) = call(
        Method::POST,
        "/v1/auth/login".into(),
        None,
        Some(json!({"email": "logs@example.com", "password": password})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let access = session["access"].as_str().unwrap().to_owned();
    let refresh = session["refresh"].as_str().unwrap().to_owned();
    let (_, app) = call(
        Method::POST,
        "/v1/applications".into(),
        bearer(&access),
        Some(json!({"name": "logs"})),
    )
    .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let (_, agent) = call(
        Method::POST,
        format!("/v1/applications/{app_id}/agents"),
        bearer(&access),
        Some(json!({"name": "echo", "instructions": "Repeat."})),
    )
    .await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let (_, key) = call(
        Method::POST,
        format!("/v1/applications/{app_id}/authentication-keys"),
        bearer(&access),
        Some(json!({"name": "backend", "scope": {"all_agents": true}})),
    )
    .await;
    let (kid, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap().to_owned());
    let (_, api_key) = call(
        Method::POST,
        format!("/v1/applications/{app_id}/api-keys"),
        bearer(&access),
        Some(json!({"name": "server", "acl": ["admin", "completions"]})),
    )
    .await;
    let api_key = api_key["key"].as_str().expect("api key").to_owned();
    let provider_key = "sk-provider-key-never-logged-5e2a";
    let (status, _) = call(
        Method::POST,
        format!("/v1/applications/{app_id}/providers"),
        bearer(&access),
        Some(json!({"name": "upstream", "kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": provider_key})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let token = confidant::auth::mint_user_token(kid, &secret, "user-1", std::time::Duration::from_secs(600)).unwrap();
    let (status, reply) = call(
        Method::POST,
        format!("/v1/agents/{agent_id}/completions"),
        bearer(&token),
        Some(json!({"message": "hello", "stream": false, "conversation_id": "c1"})),
    )
    .await;
    assert!(status.is_success(), "{status} {reply}");
    let (status, _) = call(
        Method::GET,
        format!("/v1/agents/{agent_id}/conversations"),
        Some(("x-secure-user-token", token.clone())),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A token signed with a wrong key, and the API key in both of its headers.
    let forged = confidant::auth::mint_user_token(
        kid,
        "sk-cfd-forged-secret-never-logged-000000000",
        "user-1",
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let (status, _) = call(
        Method::GET,
        format!("/v1/agents/{agent_id}/conversations"),
        bearer(&forged),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        Method::GET,
        format!("/v1/applications/{app_id}/agents"),
        Some(("x-api-key", api_key.clone())),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        Method::GET,
        format!("/v1/applications/{app_id}/agents"),
        bearer(&api_key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, rotated) = call(
        Method::POST,
        "/v1/auth/refresh".into(),
        None,
        Some(json!({"refresh": refresh})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let refreshed = rotated["refresh"].as_str().unwrap().to_owned();

    server.kill().unwrap();
    server.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The log is really there and verbose (every SQL statement is logged at debug): it names the
    // requests it saw.
    assert!(
        log.contains("/v1/auth/login") && log.contains("DEBUG confidant::store::sql"),
        "unexpected log:\n{log}"
    );
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap().to_owned();
    for (what, value) in [
        ("operator password", password.to_owned()),
        ("wrong password", wrong_password.to_owned()),
        ("master key", master_key.to_owned()),
        ("access token signature", signature(&access)),
        ("refresh token", refresh.clone()),
        ("rotated refresh token", refreshed),
        ("authentication key secret", secret.clone()),
        ("user token signature", signature(&token)),
        ("forged token signature", signature(&forged)),
        ("API key", api_key.clone()),
        ("provider API key", provider_key.to_owned()),
    ] {
        assert!(!log.contains(&value), "the {what} is in the log");
    }
}
