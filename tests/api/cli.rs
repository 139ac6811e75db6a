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
