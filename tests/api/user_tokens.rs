//! The hostile-token suite: every way a secure user token can be wrong gets its own contract code
//! and no data.

use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{Value, json};

use crate::db_tests;
use crate::harness::{TestApp, now, raw_jwt, user_token};

db_tests!(
    hostile_tokens_are_refused_with_their_own_code_and_no_data,
    deleted_key_stops_verifying_at_once,
    a_key_whose_deletion_notice_is_lost_stops_verifying_after_the_cache_ttl,
    a_valid_token_reaches_the_users_data
);

struct Case {
    name: &'static str,
    token: String,
    status: u16,
    code: &'static str,
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + 600})
}

async fn hostile_tokens_are_refused_with_their_own_code_and_no_data(app: TestApp) {
    let owner = app.owner_token().await;
    let a = app.tenant(&owner, "A", 2).await;
    let b = app.tenant(&owner, "B", 1).await;
    let (x, y) = (a.agents[0].clone(), a.agents[1].clone());
    let scoped_to_y = app.authentication_key(&owner, &a.app_id, json!({"agents": [y]})).await;
    let deleted = app
        .authentication_key(&owner, &a.app_id, json!({"all_agents": true}))
        .await;
    app.delete(
        &format!("/v1/applications/{}/authentication-keys/{}", a.app_id, deleted.0),
        &owner,
    )
    .await
    .assert_status(204);
    let (api_key_id, api_key) = app.create_api_key(&owner, &a.app_id, json!(["completions"])).await;

    // Alice has data that no refused request may return.
    let alice = user_token(&a.all_key, "alice");
    let turn = json!({"messages": [{"role": "user", "content": "alice-private-words"}]});
    app.post(&format!("/v1/agents/{x}/completions"), &alice, turn)
        .await
        .assert_status(200);
    app.post("/v1/memories", &alice, json!({"content": "alice-private-memory"}))
        .await
        .assert_status(201);

    let (kid, secret) = (a.all_key.0.as_str(), a.all_key.1.as_bytes());
    let hs = |header: Value, claims: Value| raw_jwt(&header, &claims, secret, Algorithm::HS256);
    let with_kid = |extra: Value| {
        let mut header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        header
    };
    let unsigned = |alg: &str| {
        let t = hs(json!({"alg": alg, "kid": kid}), claims("alice"));
        format!("{}.", t.rsplit_once('.').unwrap().0)
    };
    let valid = hs(with_kid(json!({})), claims("alice"));
    let (valid_head, valid_sig) = valid.rsplit_once('.').unwrap();
    let tampered = {
        let mut parts: Vec<&str> = valid.split('.').collect();
        let forged = base64_url(&claims("bob").to_string());
        parts[1] = &forged;
        parts.join(".")
    };
    let huge_claims = json!({"sub": "alice", "exp": now() + 600, "padding": "x".repeat(9000)});
    let t = now();
    let access = app.owner_token().await;

    let cases = vec![
        Case {
            name: "alg none",
            token: unsigned("none"),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "alg None",
            token: unsigned("None"),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "alg NONE",
            token: unsigned("NONE"),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "alg nOnE",
            token: unsigned("nOnE"),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "alg none with a real signature",
            token: format!(
                "{}.{}.{}",
                base64_url(&json!({"alg": "none", "kid": kid}).to_string()),
                valid.split('.').nth(1).unwrap(),
                valid_sig
            ),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "HS384",
            token: raw_jwt(
                &json!({"alg": "HS384", "kid": kid}),
                &claims("alice"),
                secret,
                Algorithm::HS384,
            ),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "HS512",
            token: raw_jwt(
                &json!({"alg": "HS512", "kid": kid}),
                &claims("alice"),
                secret,
                Algorithm::HS512,
            ),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "RS256 header on an HS256 signature",
            token: hs(json!({"alg": "RS256", "kid": kid}), claims("alice")),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "no alg",
            token: hs(json!({"kid": kid}), claims("alice")),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "no kid",
            token: hs(json!({"alg": "HS256"}), claims("alice")),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "numeric kid",
            token: hs(json!({"alg": "HS256", "kid": 7}), claims("alice")),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "unknown kid",
            token: hs(
                json!({"alg": "HS256", "kid": uuid::Uuid::now_v7().to_string()}),
                claims("alice"),
            ),
            status: 401,
            code: "unknown_key",
        },
        Case {
            name: "deleted key",
            token: user_token(&deleted, "alice"),
            status: 401,
            code: "unknown_key",
        },
        Case {
            name: "SQL in kid",
            token: hs(json!({"alg": "HS256", "kid": "' OR '1'='1"}), claims("alice")),
            status: 401,
            code: "unknown_key",
        },
        Case {
            name: "path in kid",
            token: hs(json!({"alg": "HS256", "kid": "../../etc/passwd"}), claims("alice")),
            status: 401,
            code: "unknown_key",
        },
        Case {
            name: "huge kid",
            token: hs(json!({"alg": "HS256", "kid": "k".repeat(2000)}), claims("alice")),
            status: 401,
            code: "unknown_key",
        },
        Case {
            name: "API key id as kid",
            token: hs(json!({"alg": "HS256", "kid": api_key_id}), claims("alice")),
            status: 401,
            code: "unknown_key",
        },
        Case {
            name: "wrong secret",
            token: raw_jwt(
                &with_kid(json!({})),
                &claims("alice"),
                b"sk-cfd-not-the-secret",
                Algorithm::HS256,
            ),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "empty secret",
            token: raw_jwt(&with_kid(json!({})), &claims("alice"), b"", Algorithm::HS256),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "another application's secret",
            token: raw_jwt(
                &with_kid(json!({})),
                &claims("alice"),
                b.all_key.1.as_bytes(),
                Algorithm::HS256,
            ),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "tampered payload",
            token: tampered,
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "stripped signature",
            token: format!("{valid_head}."),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "two segments",
            token: valid_head.to_owned(),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "four segments",
            token: format!("{valid}.extra"),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "expired",
            token: hs(with_kid(json!({})), json!({"sub": "alice", "exp": t - 3600})),
            status: 401,
            code: "token_expired",
        },
        Case {
            name: "nbf in the future",
            token: hs(
                with_kid(json!({})),
                json!({"sub": "alice", "exp": t + 600, "nbf": t + 300}),
            ),
            status: 401,
            code: "token_not_yet_valid",
        },
        Case {
            name: "non-numeric nbf",
            token: hs(
                with_kid(json!({})),
                json!({"sub": "alice", "exp": t + 600, "nbf": "soon"}),
            ),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "missing sub",
            token: hs(with_kid(json!({})), json!({"exp": t + 600})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "empty sub",
            token: hs(with_kid(json!({})), json!({"sub": "", "exp": t + 600})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "numeric sub",
            token: hs(with_kid(json!({})), json!({"sub": 42, "exp": t + 600})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "object sub",
            token: hs(with_kid(json!({})), json!({"sub": {"id": "alice"}, "exp": t + 600})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "huge sub",
            token: hs(with_kid(json!({})), json!({"sub": "a".repeat(300), "exp": t + 600})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "control characters in sub",
            token: hs(with_kid(json!({})), json!({"sub": "alice\u{0}", "exp": t + 600})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "missing exp",
            token: hs(with_kid(json!({})), json!({"sub": "alice"})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "string exp",
            token: hs(
                with_kid(json!({})),
                json!({"sub": "alice", "exp": (t + 600).to_string()}),
            ),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "null exp",
            token: hs(with_kid(json!({})), json!({"sub": "alice", "exp": null})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "exp beyond the maximum lifetime",
            token: hs(with_kid(json!({})), json!({"sub": "alice", "exp": t + 30 * 86_400})),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "crit header",
            token: hs(with_kid(json!({"crit": ["exp"]})), claims("alice")),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "payload not JSON",
            token: raw_text_jwt(kid, "not json", secret),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "header not JSON",
            token: format!(
                "{}.{}.{}",
                base64_url("{nope"),
                valid.split('.').nth(1).unwrap(),
                valid_sig
            ),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "bad base64",
            token: "!!!.@@@.###".into(),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "not a JWT",
            token: "hello".into(),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "oversized token",
            token: hs(with_kid(json!({})), huge_claims),
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "operator access token",
            token: access,
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "API key as a user token",
            token: api_key,
            status: 401,
            code: "invalid_token",
        },
        Case {
            name: "key scoped to another agent",
            token: user_token(&scoped_to_y, "alice"),
            status: 403,
            code: "agent_not_in_scope",
        },
        Case {
            name: "key of another application",
            token: user_token(&b.all_key, "alice"),
            status: 404,
            code: "not_found",
        },
    ];
    assert!(cases.len() >= 30);

    for case in &cases {
        for (method, path) in [
            (Method::GET, format!("/v1/agents/{x}/conversations")),
            (Method::GET, format!("/v1/agents/{x}/conversations?limit=100")),
        ] {
            let reply = app.call(method, &path, Some(&case.token), None).await;
            check(case, &reply);
        }
        let reply = app
            .call(
                Method::POST,
                &format!("/v1/agents/{x}/completions"),
                Some(&case.token),
                Some(json!({"messages": [{"role": "user", "content": "hi"}]})),
            )
            .await;
        if case.name == "API key as a user token" {
            // On completions a `completions` API key is a stateless caller: answered, nothing stored.
            assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
            assert!(!reply.text.contains("alice-private"));
        } else {
            check(case, &reply);
        }
        // Memory has no agent in the path: a wrong key scope or application gives no error there,
        // but it must still hold none of alice's data.
        let reply = app.call(Method::GET, "/v1/memories", Some(&case.token), None).await;
        if case.status == 401 {
            check(case, &reply);
        }
        assert!(
            !reply.text.contains("alice-private"),
            "{}: memory leaked: {}",
            case.name,
            reply.text
        );
        // The header form is held to the same rules.
        let response = app
            .client
            .get(app.url(&format!("/v1/agents/{x}/conversations")))
            .header("x-secure-user-token", &case.token)
            .send()
            .await
            .unwrap();
        check(case, &TestApp::read(response).await);
    }

    let expired = app
        .call(
            Method::GET,
            &format!("/v1/agents/{x}/conversations"),
            Some(&cases.iter().find(|c| c.name == "expired").unwrap().token),
            None,
        )
        .await;
    let expired_at = expired.body["details"]["expired_at"]
        .as_str()
        .expect("details.expired_at");
    assert!(chrono::DateTime::parse_from_rfc3339(expired_at).is_ok(), "{expired_at}");

    // Leeway: a token that expired 10 s ago still works; none without credentials at all.
    let just_expired = hs(with_kid(json!({})), json!({"sub": "alice", "exp": t - 10}));
    app.call(
        Method::GET,
        &format!("/v1/agents/{x}/conversations"),
        Some(&just_expired),
        None,
    )
    .await
    .assert_status(200);
    app.call(Method::GET, &format!("/v1/agents/{x}/conversations"), None, None)
        .await
        .assert_error(401, "missing_credentials");
    app.call(Method::GET, "/v1/memories", None, None)
        .await
        .assert_error(401, "missing_credentials");
}

#[track_caller]
fn check(case: &Case, reply: &crate::harness::Reply) {
    assert_eq!(reply.status.as_u16(), case.status, "{}: {}", case.name, reply.text);
    assert_eq!(reply.body["error"], case.code, "{}: {}", case.name, reply.text);
    assert!(
        reply.body.get("data").is_none() && !reply.text.contains("alice-private"),
        "{}: data leaked: {}",
        case.name,
        reply.text
    );
    if case.status == 401 {
        assert_eq!(
            reply.headers["www-authenticate"], r#"Bearer error="invalid_token""#,
            "{}",
            case.name
        );
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn raw_text_jwt(kid: &str, payload: &str, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        base64_url(&json!({"alg": "HS256", "kid": kid}).to_string()),
        base64_url(payload)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

async fn deleted_key_stops_verifying_at_once(app: TestApp) {
    let owner = app.owner_token().await;
    let a = app.tenant(&owner, "A", 1).await;
    let agent = &a.agents[0];
    let token = user_token(&a.all_key, "alice");
    // Used once, so the key is in the verification cache.
    app.get(&format!("/v1/agents/{agent}/conversations"), &token)
        .await
        .assert_status(200);
    app.delete(
        &format!("/v1/applications/{}/authentication-keys/{}", a.app_id, a.all_key.0),
        &owner,
    )
    .await
    .assert_status(204);
    app.get(&format!("/v1/agents/{agent}/conversations"), &token)
        .await
        .assert_error(401, "unknown_key");

    // Deleting the application takes its keys with it, just as promptly.
    let b = app.tenant(&owner, "B", 1).await;
    let token = user_token(&b.all_key, "alice");
    app.get("/v1/memories", &token).await.assert_status(200);
    app.delete(&format!("/v1/applications/{}", b.app_id), &owner)
        .await
        .assert_status(204);
    app.get("/v1/memories", &token).await.assert_error(401, "unknown_key");
}

/// The backstop when a deletion notice never reaches an instance: its cached key expires after
/// `CONFIDANT_KEY_CACHE_TTL`. (The row is deleted behind the service's back, so no notice is sent.)
async fn a_key_whose_deletion_notice_is_lost_stops_verifying_after_the_cache_ttl(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        key_cache_ttl: std::time::Duration::from_millis(700),
        ..crate::harness::test_settings()
    })
    .await;
    let owner = app.owner_token().await;
    let a = app.tenant(&owner, "A", 1).await;
    let path = format!("/v1/agents/{}/conversations", a.agents[0]);
    let token = user_token(&a.all_key, "alice");
    app.get(&path, &token).await.assert_status(200);
    app.execute_sql(
        "DELETE FROM authentication_keys WHERE application_id IN (SELECT id FROM applications WHERE name = 'A')",
    )
    .await;
    // Still cached: nothing told this instance.
    app.get(&path, &token).await.assert_status(200);
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    app.get(&path, &token).await.assert_error(401, "unknown_key");
}

async fn a_valid_token_reaches_the_users_data(mut app: TestApp) {
    let owner = app.owner_token().await;
    let a = app.tenant(&owner, "A", 1).await;
    let agent = &a.agents[0];
    let token = user_token(&a.all_key, "alice");
    let reply = app
        .post(
            &format!("/v1/agents/{agent}/completions"),
            &token,
            json!({"messages": [{"role": "user", "content": "hello"}], "conversation_id": "c1"}),
        )
        .await;
    reply.assert_status(200);
    let list = app.get(&format!("/v1/agents/{agent}/conversations"), &token).await;
    assert_eq!(list.assert_status(200)["data"][0]["id"], "c1");
    let response = app
        .client
        .get(app.url(&format!("/v1/agents/{agent}/conversations/c1")))
        .header("x-secure-user-token", &token)
        .send()
        .await
        .unwrap();
    let body = TestApp::read(response).await;
    assert_eq!(body.assert_status(200)["messages"].as_array().unwrap().len(), 2);
    // Key usage is recorded in a batch (not a write per request), which a shutdown flushes.
    let path = format!("/v1/applications/{}/authentication-keys", a.app_id);
    app.restart().await;
    let owner = app.owner_token().await;
    let keys = app.get(&path, &owner).await;
    assert!(keys.body["data"][0]["last_used_at"].is_string(), "{}", keys.text);
}
