//! What lands on disk: secrets never in plain text, everything kept across a restart; and the
//! committed OpenAPI document.

use serde_json::json;

use crate::db_tests;
use confidant::store::{Db, DbOptions};

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDatabase, user_token};

db_tests!(
    secrets_are_not_readable_from_the_database,
    restart_keeps_everything,
    later_migrations_upgrade_a_database_made_by_the_first,
    a_database_made_by_release_0_1_opens_with_nothing_lost
);

/// Every byte the database holds, as text we can search: the SQLite files, or a dump of every
/// table's rows from PostgreSQL.
pub(crate) async fn database_contents(app: &TestApp) -> Vec<u8> {
    match app.backend() {
        Backend::Sqlite => {
            let path = app.database.sqlite_path().unwrap();
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                if let Ok(content) = std::fs::read(&file) {
                    bytes.extend(content);
                }
            }
            bytes
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.database.url).await.unwrap();
            let tables: Vec<(String,)> =
                sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let mut bytes = Vec::new();
            for (table,) in tables {
                let rows: Vec<(String,)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT t::text FROM \"{table}\" t")))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                for (row,) in rows {
                    bytes.extend(row.into_bytes());
                }
            }
            pool.close().await;
            bytes
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn secrets_are_not_readable_from_the_database(mut app: TestApp) {
    let login = app.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let token = login["access"].as_str().unwrap().to_owned();
    let app_id = app.create_application(&token, "Acme").await;
    let created = app
        .post(
            &format!("/v1/applications/{app_id}/authentication-keys"),
            &token,
            json!({"name": "k", "scope": {"all_agents": true}}),
        )
        .await;
    let secret = created.assert_status(201)["secret"].as_str().unwrap().to_owned();
    let (_, api_key) = app.create_api_key(&token, &app_id, json!(["admin"])).await;
    let provider_key = "sk-provider-key-that-must-stay-sealed";
    app.post(
        &format!("/v1/applications/{app_id}/providers"),
        &token,
        json!({"name": "openai", "kind": "openai-compatible", "base_url": "https://api.openai.com/v1", "api_key": provider_key}),
    )
    .await
    .assert_status(201);
    app.stop().await;

    let contents = database_contents(&app).await;
    // The data really is there (the search would find plain text)...
    assert!(contains(&contents, "Acme"));
    assert!(contains(&contents, ADMIN_EMAIL));
    // ...but no secret is.
    for (what, needle) in [
        ("authentication-key secret", secret.as_str()),
        ("API key", api_key.as_str()),
        ("provider API key", provider_key),
        ("refresh token", login["refresh"].as_str().unwrap()),
        ("password", ADMIN_PASSWORD),
        ("master key", app.master_key.as_str()),
    ] {
        assert!(!contains(&contents, needle), "the {what} is readable in the database");
    }
    app.restart().await;
}

async fn restart_keeps_everything(mut app: TestApp) {
    let login = app.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let token = login["access"].as_str().unwrap().to_owned();
    let app_id = app.create_application(&token, "Acme").await;
    let agent = app.create_agent(&token, &app_id, "Support").await;
    let key = app
        .post(
            &format!("/v1/applications/{app_id}/authentication-keys"),
            &token,
            json!({"name": "k", "scope": {"agents": [agent]}}),
        )
        .await
        .assert_status(201)
        .clone();
    let (_, api_key) = app.create_api_key(&token, &app_id, json!(["admin"])).await;

    app.restart().await;

    // The session survives: the access token and the refresh token still work.
    app.get("/v1/auth/me", &token).await.assert_status(200);
    let refreshed = app
        .call(
            reqwest::Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh": login["refresh"]})),
        )
        .await;
    refreshed.assert_status(200);
    let agents = app.get(&format!("/v1/applications/{app_id}/agents"), &token).await;
    assert_eq!(agents.assert_status(200)["data"][0]["id"], agent.as_str());
    let keys = app
        .get(&format!("/v1/applications/{app_id}/authentication-keys"), &token)
        .await;
    assert_eq!(keys.assert_status(200)["data"][0]["id"], key["id"]);
    assert_eq!(keys.body["data"][0]["scope"], json!({"agents": [agent]}));
    app.get(&format!("/v1/applications/{app_id}"), &api_key)
        .await
        .assert_status(200);
}

#[test]
fn committed_openapi_document_matches_the_code() {
    let generated = confidant::openapi().to_pretty_json().unwrap();
    let committed = include_str!("../../openapi/openapi.json");
    assert!(
        generated.trim() == committed.trim(),
        "openapi/openapi.json is stale: run `make openapi` and commit the result"
    );
}

#[test]
fn openapi_document_covers_every_route_with_security_and_errors() {
    let doc: serde_json::Value = serde_json::from_str(&confidant::openapi().to_json().unwrap()).unwrap();
    assert_eq!(doc["openapi"].as_str().unwrap().get(..3), Some("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/me",
        "/v1/applications",
        "/v1/applications/{app_id}",
        "/v1/applications/{app_id}/members",
        "/v1/applications/{app_id}/members/{operator_id}",
        "/v1/applications/{app_id}/agents",
        "/v1/applications/{app_id}/agents/{agent_id}",
        "/v1/applications/{app_id}/authentication-keys",
        "/v1/applications/{app_id}/authentication-keys/{key_id}",
        "/v1/applications/{app_id}/api-keys",
        "/v1/applications/{app_id}/api-keys/{key_id}",
        "/v1/applications/{app_id}/providers",
        "/v1/applications/{app_id}/providers/{provider_id}",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is missing from the OpenAPI document");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["operator", "api_key", "api_key_bearer"] {
        assert!(schemes.contains_key(scheme));
    }
    let get_agent = &doc["paths"]["/v1/applications/{app_id}/agents/{agent_id}"]["get"];
    for status in ["200", "401", "403", "404", "500"] {
        assert!(get_agent["responses"].get(status).is_some(), "GET agent lacks {status}");
    }
}

#[tokio::test]
async fn served_openapi_document_is_the_committed_one_and_docs_work_offline() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let served = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, include_str!("../../openapi/openapi.json"));
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    // Its assets come from the binary, not a CDN.
    assert!(!html.contains("https://"), "the docs page must not load remote assets");
    let initializer = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"));
}

/// A database made by migration 0001 holding conversations and memory: 0002 (sequence numbers kept
/// on the conversation) must backfill them, 0003 (the messages index) must rebuild, and 0004
/// (SQLite: the owner in the full-text index) must index the memories already stored, so that the
/// next turn continues each conversation's numbering and old memories are still found.
async fn later_migrations_upgrade_a_database_made_by_the_first(mut app: TestApp) {
    let token = app.owner_token().await;
    let tenant = app.tenant(&token, "Old data", 1).await;
    let agent = &tenant.agents[0];
    let user = user_token(&tenant.all_key, "user-1");
    let turn = |text: &'static str| json!({"messages": [{"role": "user", "content": text}], "conversation_id": "kept"});
    let path = format!("/v1/agents/{agent}/completions");
    app.post(&path, &user, turn("one")).await.assert_status(200);
    app.post(&path, &user, turn("two")).await.assert_status(200);
    app.post("/v1/memories", &user, json!({"content": "prefers green tea"}))
        .await
        .assert_status(201);

    // Back to the schema of 0001, data kept: no last_seq, the old indexes, 0002.. unapplied.
    if app.backend() == Backend::Sqlite {
        app.execute_sql(
            "DROP TRIGGER memories_fts_insert; DROP TRIGGER memories_fts_delete; DROP TRIGGER memories_fts_update; \
             DROP TABLE memories_fts; ALTER TABLE memories DROP COLUMN search_owner; \
             CREATE VIRTUAL TABLE memories_fts USING fts5 (content, content = 'memories', content_rowid = 'rowid'); \
             INSERT INTO memories_fts (memories_fts) VALUES ('rebuild'); \
             CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN \
                 INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content); END; \
             CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN \
                 INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content); END; \
             CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN \
                 INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content); \
                 INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content); END;",
        )
        .await;
    } else {
        app.execute_sql(
            "DROP TRIGGER conversations_delete_messages ON conversations; \
             DROP FUNCTION conversations_delete_messages(); \
             ALTER TABLE messages ADD CONSTRAINT messages_conversation_id_fkey \
                 FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE;",
        )
        .await;
    }
    app.execute_sql(
        "DROP INDEX messages_user; CREATE INDEX messages_user ON messages (application_id, sub); \
         ALTER TABLE conversations DROP COLUMN last_seq; \
         ALTER TABLE applications DROP COLUMN allowed_origins; ALTER TABLE applications DROP COLUMN limits; \
         ALTER TABLE agents DROP COLUMN allowed_origins; DROP TABLE usage_daily; \
         DROP INDEX conversations_application_recent; DROP TABLE feedback; \
         DROP INDEX messages_conversation_client_id; ALTER TABLE messages DROP COLUMN superseded_at; \
         CREATE UNIQUE INDEX messages_conversation_client_id ON messages (conversation_id, client_id) \
             WHERE client_id IS NOT NULL; \
         ALTER TABLE applications DROP COLUMN retention; DROP INDEX memories_application_updated; \
         ALTER TABLE agents DROP COLUMN tools; ALTER TABLE messages DROP COLUMN tool_calls; \
         ALTER TABLE messages DROP COLUMN tool_call_id; \
         ALTER TABLE applications DROP COLUMN resumable; ALTER TABLE conversations DROP COLUMN live_instance; \
         DROP TABLE webhook_deliveries; DROP TABLE webhooks; ALTER TABLE applications DROP COLUMN webhook_events; \
         DELETE FROM _sqlx_migrations WHERE version >= 2;",
    )
    .await;
    app.restart().await;

    app.post(&path, &user, turn("three")).await.assert_status(200);
    let conversation = app.get(&format!("/v1/agents/{agent}/conversations/kept"), &user).await;
    let contents: Vec<&str> = conversation.assert_status(200)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["one", "one", "two", "two", "three", "three"]);
    let found = app.get("/v1/memories?q=tea", &user).await;
    assert_eq!(found.assert_status(200)["data"][0]["content"], "prefers green tea");
}

/// `tests/fixtures/release-0.1/` holds a database of each kind made by release 0.1 (the last one
/// that ran SQLite on sqlx), through its API: an operator, an application with an agent, an
/// authentication key, an API key, a provider with a sealed key, a conversation of two turns and a
/// memory; migrations recorded by sqlx's migrator. The JSON beside it holds the secrets it made.
async fn a_database_made_by_release_0_1_opens_with_nothing_lost(mut app: TestApp) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-0.1");
    let name = match app.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let made: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join(format!("{name}.json"))).unwrap()).unwrap();
    let field = |key: &str| made[key].as_str().unwrap().to_owned();
    app.stop().await;
    match app.backend() {
        Backend::Sqlite => {
            let path = app.database.sqlite_path().unwrap();
            for suffix in ["-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
            std::fs::copy(fixtures.join("sqlite.db"), &path).unwrap();
        }
        Backend::Postgres => {
            let dump = std::fs::read_to_string(fixtures.join("postgres.sql")).unwrap();
            let pool = sqlx::PgPool::connect(&app.database.url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA public CASCADE; CREATE SCHEMA public; {dump}"
            )))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
    }
    app.master_key = field("master_key");
    app.restart().await;

    // The operator logs in and finds the application, its agent, keys and provider.
    let login = app.login_as(&field("email"), &field("password")).await;
    let token = login["access"].as_str().unwrap().to_owned();
    let (app_id, agent) = (field("application_id"), field("agent_id"));
    let apps = app.get("/v1/applications", &token).await;
    assert_eq!(apps.assert_status(200)["data"][0]["id"], app_id.as_str());
    let agents = app.get(&format!("/v1/applications/{app_id}/agents"), &token).await;
    assert_eq!(agents.assert_status(200)["data"][0]["name"], "helper");
    let providers = app.get(&format!("/v1/applications/{app_id}/providers"), &token).await;
    assert_eq!(providers.assert_status(200)["data"][0]["name"], "local");
    // The API key still authenticates (its hash), the authentication key still verifies (its
    // secret opens under the master key).
    app.get(&format!("/v1/applications/{app_id}/agents"), &field("api_key"))
        .await
        .assert_status(200);
    let user = user_token(&(field("kid"), field("secret")), "alice");
    let path = format!("/v1/agents/{agent}/conversations/kept");
    let contents = |reply: &crate::harness::Reply| -> Vec<String> {
        reply.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };
    let stored = app.get(&path, &user).await;
    stored.assert_status(200);
    assert_eq!(
        contents(&stored),
        [
            "hello from the old release",
            "hello from the old release",
            "second turn",
            "second turn"
        ]
    );
    // The conversation goes on where it was, and memory search finds what was stored.
    app.post(
        &format!("/v1/agents/{agent}/completions?format=deltakit"),
        &user,
        json!({"message": "third turn", "conversation_id": "kept"}),
    )
    .await
    .assert_status(200);
    assert_eq!(
        contents(&app.get(&path, &user).await)[4..],
        ["third turn", "third turn"]
    );
    let found = app.get("/v1/memories?q=tea", &user).await;
    assert_eq!(found.assert_status(200)["data"][0]["content"], "prefers green tea");
}

/// A pooled PostgreSQL connection the server closed while it sat idle (a restart, a firewall's
/// idle timeout) is found dead and replaced when it is next taken, rather than failing the
/// request that takes it. No service runs here: nothing else touches the pool meanwhile.
#[tokio::test]
async fn a_postgres_connection_closed_while_idle_is_replaced_before_it_is_used() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let db = Db::connect(&database.url, &DbOptions::default()).await.unwrap();
    assert!(db.ping().await);
    let name = database
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin = sqlx::PgPool::connect(&database.url).await.unwrap();
    let closed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .fetch_all(&admin)
    .await
    .unwrap();
    admin.close().await;
    assert!(!closed.is_empty(), "the pool's connection was closed by the server");
    // Past the idle time after which a connection is checked before use.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    assert!(db.ping().await, "the dead connection was used instead of replaced");
    db.close().await;
}

/// A transaction whose future is dropped mid-way (a client gone, a timeout) is rolled back before
/// its connection serves anyone else: its change is not kept, its row lock is released, and the
/// next statement on that connection (the pool's only one here) runs outside any transaction.
#[tokio::test]
async fn a_postgres_transaction_dropped_mid_way_is_rolled_back_before_its_connection_is_reused() {
    use sea_query::{Expr, ExprTrait, Query};
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let options = DbOptions {
        max_connections: 1,
        ..DbOptions::default()
    };
    let db = Db::connect(&database.url, &options).await.unwrap();
    db.run_script(
        "CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO counters VALUES (1, 0);",
    )
    .await
    .unwrap();
    let read = Query::select()
        .expr_as(Expr::col("n"), "n")
        .from("counters")
        .and_where(Expr::col("id").eq(1))
        .to_owned();
    let (updated, mut changed) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn({
        let db = db.clone();
        async move {
            db.transaction(move |tx| {
                Box::pin(async move {
                    let bump = Query::update()
                        .table("counters")
                        .value("n", Expr::col("n").add(1))
                        .and_where(Expr::col("id").eq(1))
                        .to_owned();
                    tx.execute(&bump).await?;
                    let _ = updated.send(());
                    std::future::pending::<()>().await;
                    Ok(())
                })
            })
            .await
        }
    });
    (&mut changed).await.unwrap();
    holder.abort();
    let _ = holder.await;
    // The only connection is back once it is rolled back; the bump is gone.
    let rows: Vec<confidant::store::Count> = tokio::time::timeout(std::time::Duration::from_secs(10), db.rows(&read))
        .await
        .expect("the connection came back")
        .unwrap();
    assert_eq!(rows[0].n, 0, "the dropped transaction's change was rolled back");
    // Not inside a transaction any more: another session can take the row's lock at once.
    use sqlx::Connection as _;
    let mut other = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::query("SET lock_timeout = '2s'")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("UPDATE counters SET n = 10 WHERE id = 1")
        .execute(&mut other)
        .await
        .expect("the row lock was released");
    let rows: Vec<confidant::store::Count> = db.rows(&read).await.unwrap();
    assert_eq!(
        rows[0].n, 10,
        "the pool's connection sees committed changes (no transaction left open)"
    );
    other.close().await.unwrap();
    db.close().await;
}
