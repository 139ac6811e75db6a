//! The contract's error body for every kind of failure, including the framework's own rejections.

use reqwest::Method;
use serde_json::json;

use crate::db_tests;
use crate::harness::TestApp;

db_tests!(
    malformed_json_is_invalid_request,
    missing_or_wrong_content_type_is_invalid_request,
    wrong_types_and_unknown_fields_are_invalid_request,
    invalid_values_are_validation_failed_with_fields,
    unknown_routes_and_bad_ids_are_not_found,
    wrong_method_is_a_json_405,
    oversized_body_is_payload_too_large,
    missing_credentials_are_401_with_a_body,
    bad_cursor_and_limit_are_invalid_request,
    responses_carry_a_request_id,
    health_and_readiness_answer,
);

async fn malformed_json_is_invalid_request(app: TestApp) {
    let token = app.owner_token().await;
    let response = app
        .client
        .post(app.url("/v1/applications"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    TestApp::read(response).await.assert_error(400, "invalid_request");
}

async fn missing_or_wrong_content_type_is_invalid_request(app: TestApp) {
    let token = app.owner_token().await;
    for content_type in [None, Some("text/plain")] {
        let mut request = app
            .client
            .post(app.url("/v1/applications"))
            .bearer_auth(&token)
            .body(r#"{"name":"x"}"#);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        TestApp::read(request.send().await.unwrap())
            .await
            .assert_error(400, "invalid_request");
    }
}

async fn wrong_types_and_unknown_fields_are_invalid_request(app: TestApp) {
    let token = app.owner_token().await;
    app.post("/v1/applications", &token, json!({"name": 42}))
        .await
        .assert_error(400, "invalid_request");
    app.post("/v1/applications", &token, json!({}))
        .await
        .assert_error(400, "invalid_request");
    app.post("/v1/applications", &token, json!({"name": "x", "colour": "red"}))
        .await
        .assert_error(400, "invalid_request");
    app.post("/v1/applications", &token, json!([1, 2]))
        .await
        .assert_error(400, "invalid_request");
}

async fn invalid_values_are_validation_failed_with_fields(app: TestApp) {
    let token = app.owner_token().await;
    let reply = app.post("/v1/applications", &token, json!({"name": ""})).await;
    reply.assert_error(422, "validation_failed");
    assert!(reply.body["details"]["fields"]["name"].is_string(), "{}", reply.text);
    let long = "x".repeat(201);
    app.post("/v1/applications", &token, json!({"name": long}))
        .await
        .assert_error(422, "validation_failed");
}

async fn unknown_routes_and_bad_ids_are_not_found(app: TestApp) {
    let token = app.owner_token().await;
    app.get("/v1/nothing-here", &token).await.assert_error(404, "not_found");
    app.call(Method::GET, "/nope", None, None)
        .await
        .assert_error(404, "not_found");
    app.get("/v1/applications/not-a-uuid", &token)
        .await
        .assert_error(404, "not_found");
    let app_id = app.create_application(&token, "Acme").await;
    app.get(&format!("/v1/applications/{app_id}/agents/12345"), &token)
        .await
        .assert_error(404, "not_found");
}

async fn wrong_method_is_a_json_405(app: TestApp) {
    let reply = app.call(Method::PUT, "/v1/auth/login", None, None).await;
    reply.assert_error(405, "method_not_allowed");
}

async fn oversized_body_is_payload_too_large(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let huge = "x".repeat(1024 * 1024 + 10);
    let reply = app
        .post(
            &format!("/v1/applications/{app_id}/agents"),
            &token,
            json!({"name": "big", "instructions": huge}),
        )
        .await;
    reply.assert_error(413, "payload_too_large");
}

async fn missing_credentials_are_401_with_a_body(app: TestApp) {
    let reply = app.call(Method::GET, "/v1/applications", None, None).await;
    reply.assert_error(401, "missing_credentials");
    let reply = app
        .call(Method::POST, "/v1/applications", None, Some(json!({"name": "x"})))
        .await;
    reply.assert_error(401, "missing_credentials");
    let response = app
        .client
        .get(app.url("/v1/applications"))
        .header("authorization", "Basic dXNlcjpwdw==")
        .send()
        .await
        .unwrap();
    TestApp::read(response).await.assert_error(401, "invalid_token");
}

async fn bad_cursor_and_limit_are_invalid_request(app: TestApp) {
    let token = app.owner_token().await;
    app.get("/v1/applications?cursor=%%%", &token)
        .await
        .assert_error(400, "invalid_request");
    app.get("/v1/applications?cursor=AAAA", &token)
        .await
        .assert_error(400, "invalid_request");
    app.get("/v1/applications?limit=0", &token)
        .await
        .assert_error(400, "invalid_request");
    app.get("/v1/applications?limit=101", &token)
        .await
        .assert_error(400, "invalid_request");
    app.get("/v1/applications?limit=ten", &token)
        .await
        .assert_error(400, "invalid_request");
    app.get("/v1/applications?limit=100", &token).await.assert_status(200);
}

async fn responses_carry_a_request_id(app: TestApp) {
    // Made by the server: a UUID, another for each request.
    let made = |reply: &crate::harness::Reply| -> uuid::Uuid {
        reply.headers["x-request-id"].to_str().unwrap().parse().unwrap()
    };
    let first = made(&app.call(Method::GET, "/healthz", None, None).await);
    let second = made(&app.call(Method::GET, "/healthz", None, None).await);
    assert_ne!(first, second);
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
}

async fn health_and_readiness_answer(app: TestApp) {
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.assert_status(200)["status"],
        "ok"
    );
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await.assert_status(200)["status"],
        "ok"
    );
}

#[tokio::test]
async fn unreachable_database_is_503_unavailable() {
    let app = TestApp::spawn(crate::harness::Backend::Sqlite).await.unwrap();
    let token = app.owner_token().await;
    // The server shares these pools: closing them is the database going away.
    app.db.close().await;
    app.call(Method::GET, "/readyz", None, None)
        .await
        .assert_error(503, "unavailable");
    app.get("/v1/applications", &token)
        .await
        .assert_error(503, "unavailable");
    // The process itself is still up.
    app.call(Method::GET, "/healthz", None, None).await.assert_status(200);
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_requests() {
    let app = TestApp::spawn(crate::harness::Backend::Sqlite).await.unwrap();
    app.call(Method::GET, "/healthz", None, None).await.assert_status(200);
    app.call(Method::GET, "/nope", None, None)
        .await
        .assert_error(404, "not_found");
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let count = |class: &str| -> u64 {
        let prefix = format!("confidant_http_requests_total{{status=\"{class}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(count("2xx") >= 1, "{text}");
    assert!(count("4xx") >= 1, "{text}");
    assert!(text.contains("# TYPE confidant_http_request_duration_seconds histogram"));
    assert!(text.contains("confidant_db_connections{pool=\"write\",state=\"open\"}"));
}

#[tokio::test]
async fn the_root_sends_people_to_the_dashboard() {
    let app = TestApp::spawn(crate::harness::Backend::Sqlite).await.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(app.url("/")).send().await.unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    assert_eq!(response.headers()["location"], "/dashboard");
}
