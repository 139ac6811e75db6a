//! The edge of the service: what a client can hold without sending a request.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::json;

use crate::db_tests;
use crate::harness::{TestApp, user_token};

db_tests!(
    a_client_that_trickles_its_headers_is_dropped,
    connections_over_the_cap_wait_until_one_closes,
    text_holding_nul_is_validation_failed_on_every_path,
    metrics_need_the_metrics_token_when_one_is_set
);

/// A complete request on a raw connection; returns the response's first bytes.
async fn request(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: confidant\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).await.unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

/// Slowloris: headers that never finish must not hold a connection (and a task) forever.
async fn a_client_that_trickles_its_headers_is_dropped(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        header_timeout: Duration::from_millis(300),
        ..confidant::Settings::default()
    })
    .await;
    let mut slow = TcpStream::connect(app.address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: confidant\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let outcome = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer))
        .await
        .expect("the server kept a connection whose headers never ended");
    // Closed (end of stream or reset), or told off with a 408 before closing.
    if let Ok(read) = outcome {
        let text = String::from_utf8_lossy(&buffer[..read]);
        assert!(
            read == 0 || text.starts_with("HTTP/1.1 408"),
            "unexpected answer: {text}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "dropped after {:?}",
        started.elapsed()
    );
    // Everyone else is still served.
    let mut fine = TcpStream::connect(app.address).await.unwrap();
    assert!(request(&mut fine).await.starts_with("HTTP/1.1 200"));
}

async fn connections_over_the_cap_wait_until_one_closes(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        max_connections: 1,
        ..confidant::Settings::default()
    })
    .await;
    // The only slot: a kept-alive connection.
    let mut first = TcpStream::connect(app.address).await.unwrap();
    assert!(request(&mut first).await.starts_with("HTTP/1.1 200"));
    // A second connection is accepted by the kernel but not served while the first lives.
    let mut second = TcpStream::connect(app.address).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), request(&mut second)).await;
    assert!(waiting.is_err(), "a connection over the cap was served");
    drop(first);
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buffer))
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
}

/// U+0000 cannot be stored in PostgreSQL text; SQLite would store it. Both refuse it alike, and
/// nothing is stored.
async fn text_holding_nul_is_validation_failed_on_every_path(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "A", 1).await;
    let agent = &tenant.agents[0];
    let user = user_token(&tenant.all_key, "alice");
    let nul = "before\u{0}after";
    let cases = [
        (
            "/v1/auth/login".to_owned(),
            "",
            json!({"email": format!("a{nul}@example.com"), "password": "whatever-long"}),
        ),
        ("/v1/applications".to_owned(), owner.as_str(), json!({"name": nul})),
        (
            format!("/v1/applications/{}/agents", tenant.app_id),
            owner.as_str(),
            json!({"name": "x", "instructions": nul}),
        ),
        ("/v1/memories".to_owned(), user.as_str(), json!({"content": nul})),
        (
            "/v1/memories".to_owned(),
            user.as_str(),
            json!({"content": "fine", "metadata": {"k": nul}}),
        ),
        (
            format!("/v1/agents/{agent}/completions"),
            user.as_str(),
            json!({"messages": [{"role": "user", "content": nul}]}),
        ),
        (
            format!("/v1/agents/{agent}/completions?format=deltakit"),
            user.as_str(),
            json!({"message": nul, "conversation_id": "c"}),
        ),
    ];
    for (path, token, body) in cases {
        let reply = app.post(&path, token, body).await;
        reply.assert_error(422, "validation_failed");
        assert!(reply.body["details"]["fields"].is_object(), "{path}: {}", reply.text);
    }
    for table in ["memories", "messages", "conversations"] {
        assert_eq!(app.count_rows(table).await, 0, "{table} got a row");
    }
}

async fn metrics_need_the_metrics_token_when_one_is_set(mut app: TestApp) {
    app.call(reqwest::Method::GET, "/metrics", None, None)
        .await
        .assert_status(200);
    app.reconfigure(confidant::Settings {
        metrics_token: Some("metrics-secret-0123".into()),
        ..confidant::Settings::default()
    })
    .await;
    app.call(reqwest::Method::GET, "/metrics", None, None)
        .await
        .assert_error(401, "missing_credentials");
    let wrong = app.get("/metrics", "not-the-token").await;
    wrong.assert_error(401, "invalid_token");
    assert!(wrong.headers.contains_key("www-authenticate"));
    let right = app.get("/metrics", "metrics-secret-0123").await;
    assert!(right.text.contains("confidant_http_requests_total"), "{}", right.text);
}
