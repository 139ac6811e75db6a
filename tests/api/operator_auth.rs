//! Operator login, refresh rotation with reuse detection, logout.

use reqwest::Method;
use serde_json::json;

use crate::db_tests;
use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};

db_tests!(
    login_returns_access_refresh_and_user,
    wrong_password_and_unknown_email_are_both_invalid_credentials,
    refresh_rotates_and_spends_the_old_token,
    reused_refresh_token_revokes_the_whole_family,
    concurrent_refreshes_with_one_token_let_exactly_one_win,
    logout_stops_the_access_token_at_once,
    unknown_refresh_token_is_invalid_token,
    tampered_access_token_is_invalid_token,
    me_lists_the_operators_applications,
);

async fn login_returns_access_refresh_and_user(app: TestApp) {
    let body = app.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert!(body["access"].as_str().unwrap().split('.').count() == 3);
    assert!(body["refresh"].as_str().unwrap().starts_with("cfr_"));
    assert_eq!(body["user"]["email"], ADMIN_EMAIL);
    assert!(body["user"]["id"].as_str().is_some());
    // Email matching ignores case and surrounding space.
    let reply = app
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": " OWNER@example.com ", "password": ADMIN_PASSWORD})),
        )
        .await;
    reply.assert_status(200);
}

async fn wrong_password_and_unknown_email_are_both_invalid_credentials(app: TestApp) {
    for (email, password) in [(ADMIN_EMAIL, "wrong password"), ("nobody@example.com", ADMIN_PASSWORD)] {
        let reply = app
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        reply.assert_error(401, "invalid_credentials");
        assert!(reply.body.get("access").is_none());
    }
}

async fn refresh(app: &TestApp, token: &str) -> crate::harness::Reply {
    app.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh": token})))
        .await
}

async fn refresh_rotates_and_spends_the_old_token(app: TestApp) {
    let login = app.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let first = login["refresh"].as_str().unwrap();
    let reply = refresh(&app, first).await;
    let rotated = reply.assert_status(200).clone();
    let second = rotated["refresh"].as_str().unwrap();
    assert_ne!(first, second);
    // The new access token works.
    app.get("/v1/auth/me", rotated["access"].as_str().unwrap())
        .await
        .assert_status(200);
    // And the new refresh token rotates again.
    refresh(&app, second).await.assert_status(200);
}

async fn reused_refresh_token_revokes_the_whole_family(app: TestApp) {
    let login = app.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let first = login["refresh"].as_str().unwrap().to_owned();
    let rotated = refresh(&app, &first).await.assert_status(200).clone();
    let (second, access) = (
        rotated["refresh"].as_str().unwrap(),
        rotated["access"].as_str().unwrap(),
    );

    refresh(&app, &first).await.assert_error(401, "refresh_token_reused");
    // Every descendant of that login is now dead: the live refresh token and the access token.
    refresh(&app, second).await.assert_error(401, "invalid_token");
    app.get("/v1/auth/me", access).await.assert_error(401, "invalid_token");
    app.get("/v1/auth/me", login["access"].as_str().unwrap())
        .await
        .assert_error(401, "invalid_token");
    // Other sessions of the same operator are untouched.
    let other = app.owner_token().await;
    app.get("/v1/auth/me", &other).await.assert_status(200);
}

async fn concurrent_refreshes_with_one_token_let_exactly_one_win(app: TestApp) {
    let login = app.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let token = login["refresh"].as_str().unwrap();
    let attempts = futures_join(&app, token, 6).await;
    let wins = attempts.iter().filter(|r| r.status.as_u16() == 200).count();
    assert_eq!(wins, 1, "exactly one refresh may win: {attempts:?}");
    for loser in attempts.iter().filter(|r| r.status.as_u16() != 200) {
        assert_eq!(loser.status.as_u16(), 401);
        let code = loser.body["error"].as_str().unwrap();
        assert!(code == "refresh_token_reused" || code == "invalid_token", "{code}");
    }
}

async fn futures_join(app: &TestApp, token: &str, n: usize) -> Vec<crate::harness::Reply> {
    let mut handles = Vec::new();
    for _ in 0..n {
        let client = app.client.clone();
        let url = app.url("/v1/auth/refresh");
        let token = token.to_owned();
        handles.push(tokio::spawn(async move {
            let response = client.post(url).json(&json!({"refresh": token})).send().await.unwrap();
            TestApp::read(response).await
        }));
    }
    let mut replies = Vec::new();
    for handle in handles {
        replies.push(handle.await.unwrap());
    }
    replies
}

async fn logout_stops_the_access_token_at_once(app: TestApp) {
    let login = app.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let access = login["access"].as_str().unwrap();
    app.get("/v1/auth/me", access).await.assert_status(200);
    let reply = app.call(Method::POST, "/v1/auth/logout", Some(access), None).await;
    assert_eq!(reply.status.as_u16(), 204);
    let after = app.get("/v1/auth/me", access).await;
    after.assert_error(401, "invalid_token");
    assert_eq!(after.headers["www-authenticate"], r#"Bearer error="invalid_token""#);
    refresh(&app, login["refresh"].as_str().unwrap())
        .await
        .assert_error(401, "invalid_token");
}

async fn unknown_refresh_token_is_invalid_token(app: TestApp) {
    refresh(&app, "cfr_not-a-real-token")
        .await
        .assert_error(401, "invalid_token");
    refresh(&app, "garbage").await.assert_error(401, "invalid_token");
}

async fn tampered_access_token_is_invalid_token(app: TestApp) {
    let access = app.owner_token().await;
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    app.get("/v1/auth/me", &parts.join("."))
        .await
        .assert_error(401, "invalid_token");
    app.get("/v1/auth/me", "not-a-jwt")
        .await
        .assert_error(401, "invalid_token");
    let reply = app.call(Method::GET, "/v1/auth/me", None, None).await;
    reply.assert_error(401, "missing_credentials");
}

async fn me_lists_the_operators_applications(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let me = app.get("/v1/auth/me", &token).await;
    let body = me.assert_status(200);
    assert_eq!(body["email"], ADMIN_EMAIL);
    let apps = body["applications"].as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["id"], app_id.as_str());
}
