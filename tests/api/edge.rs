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
    metrics_need_the_metrics_token_when_one_is_set,
    a_login_flood_gets_fast_429s_while_the_data_plane_answers,
    logins_for_one_email_are_limited_whatever_the_address,
    a_long_conversation_is_read_a_page_at_a_time,
    a_reply_over_the_size_cap_is_cut_and_stored_incomplete,
    a_turn_over_its_deadline_ends_and_is_stored_incomplete,
    a_streaming_client_that_stops_reading_is_dropped_and_its_reply_stored,
    a_user_export_streams_every_page_of_a_long_history,
    a_request_stalled_on_the_database_ends_at_the_request_timeout
);

/// A burst of clients connecting at once is queued by the kernel for the server to accept, not
/// dropped: 1,500 connections to a listener that accepts none yet all complete their handshake at
/// once. With tokio's own `bind` (a backlog of 1,024) those past the 1,025th have their handshake
/// dropped and wait a second for the retry.
#[tokio::test]
async fn a_burst_of_connections_waits_in_the_listen_queue() {
    const BURST: usize = 1_500;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4096);
    assert!(
        somaxconn > BURST,
        "net.core.somaxconn is {somaxconn}: the kernel caps every backlog there"
    );
    let listener = confidant::listen(([127, 0, 0, 1], 0).into()).unwrap();
    let address = listener.local_addr().unwrap();
    let started = Instant::now();
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        connecting.spawn(tokio::time::timeout(
            Duration::from_millis(900),
            TcpStream::connect(address),
        ));
    }
    let mut connected = Vec::with_capacity(BURST);
    while let Some(outcome) = connecting.join_next().await {
        match outcome.unwrap() {
            Ok(stream) => connected.push(stream.unwrap()),
            Err(_) => panic!("a handshake was dropped ({} of {BURST} connected)", connected.len()),
        }
    }
    assert_eq!(connected.len(), BURST, "in {:?}", started.elapsed());
    drop(listener);
}

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
        ..crate::harness::test_settings()
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
        ..crate::harness::test_settings()
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
        ..crate::harness::test_settings()
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

async fn a_login_flood_gets_fast_429s_while_the_data_plane_answers(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "A", 1).await;
    let user = user_token(&tenant.all_key, "alice");
    let list = format!("/v1/agents/{}/conversations", tenant.agents[0]);
    let flood = futures_util::future::join_all((0..60).map(|i| {
        app.post(
            "/v1/auth/login",
            "",
            json!({"email": format!("nobody-{i}@example.com"), "password": "wrong password"}),
        )
    }));
    let data_plane = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            app.get(&list, &user).await.assert_status(200);
            slowest = slowest.max(started.elapsed());
        }
        slowest
    };
    let (replies, slowest) = tokio::join!(flood, data_plane);
    let limited: Vec<_> = replies.iter().filter(|r| r.status.as_u16() == 429).collect();
    // 30 attempts a minute from one address (one was the owner's login).
    assert!(limited.len() >= 30, "only {} of 60 were limited", limited.len());
    for reply in &limited {
        reply.assert_error(429, "rate_limited");
        assert_eq!(reply.body["details"]["scope"], "login_address", "{}", reply.text);
        let retry: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1, "Retry-After {retry}");
    }
    assert!(replies.iter().all(|r| [401, 429].contains(&r.status.as_u16())));
    assert!(
        slowest < Duration::from_secs(2),
        "the data plane took {slowest:?} during the flood"
    );
}

async fn logins_for_one_email_are_limited_whatever_the_address(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        login_per_address_per_minute: 1000,
        login_per_email_per_minute: 3,
        ..crate::harness::test_settings()
    })
    .await;
    let attempt = || {
        app.post(
            "/v1/auth/login",
            "",
            json!({"email": crate::harness::ADMIN_EMAIL, "password": "not the password"}),
        )
    };
    for _ in 0..3 {
        attempt().await.assert_error(401, "invalid_credentials");
    }
    let limited = attempt().await;
    limited.assert_error(429, "rate_limited");
    assert_eq!(limited.body["details"]["scope"], "login_email");
    // The right password does not get around it either.
    app.post(
        "/v1/auth/login",
        "",
        json!({"email": crate::harness::ADMIN_EMAIL, "password": crate::harness::ADMIN_PASSWORD}),
    )
    .await
    .assert_error(429, "rate_limited");
}

/// `GET …/conversations/{id}` is bounded: the newest `limit` messages (default 100), oldest first,
/// and a cursor to page back through the rest.
async fn a_long_conversation_is_read_a_page_at_a_time(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "A", 1).await;
    let agent = &tenant.agents[0];
    let user = user_token(&tenant.all_key, "alice");
    // 60 turns: 120 messages, stored with their order.
    for i in 0..60 {
        app.post(
            &format!("/v1/agents/{agent}/completions"),
            &user,
            json!({"messages": [{"role": "user", "content": format!("turn {i}")}], "conversation_id": "long"}),
        )
        .await
        .assert_status(200);
    }
    let path = format!("/v1/agents/{agent}/conversations/long");
    let first = app.get(&path, &user).await;
    let messages = first.assert_status(200)["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 100, "the default page");
    assert_eq!(messages[0]["content"], "turn 10");
    assert_eq!(messages[99]["content"], "turn 59");
    // Page back, 25 at a time, to the beginning: every message once, in order.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=25&before={c}"),
            None => format!("{path}?limit=25"),
        };
        let page = app.get(&url, &user).await;
        let body = page.assert_status(200);
        let mut contents: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        contents.append(&mut seen);
        seen = contents;
        match body["messages_next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..60)
        .flat_map(|i| [format!("turn {i}"), format!("turn {i}")])
        .collect();
    assert_eq!(seen, expected);
    app.get(&format!("{path}?limit=1001"), &user)
        .await
        .assert_error(400, "invalid_request");
    app.get(&format!("{path}?before=not-a-cursor"), &user)
        .await
        .assert_error(400, "invalid_request");
}

/// The last stored message of a conversation: (role, content, status).
async fn last_message(app: &TestApp, user: &str, agent: &str, conversation: &str) -> (String, String, String) {
    let reply = app
        .get(&format!("/v1/agents/{agent}/conversations/{conversation}"), user)
        .await;
    let last = reply.assert_status(200)["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let text = |key: &str| last[key].as_str().unwrap().to_owned();
    (text("role"), text("content"), text("status"))
}

async fn a_reply_over_the_size_cap_is_cut_and_stored_incomplete(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        max_reply_bytes: 10,
        ..crate::harness::test_settings()
    })
    .await;
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "A", 1).await;
    let agent = &tenant.agents[0];
    let user = user_token(&tenant.all_key, "alice");
    // The echo model repeats the message a word at a time: 27 bytes against a 10-byte cap.
    let whole = app
        .post(
            &format!("/v1/agents/{agent}/completions"),
            &user,
            json!({"messages": [{"role": "user", "content": "one two three four five six"}], "conversation_id": "capped"}),
        )
        .await;
    let body = whole.assert_status(200);
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{}", whole.text);
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.len() <= 10 && "one two three".starts_with(content),
        "{content:?}"
    );
    let (role, stored, status) = last_message(&app, &user, agent, "capped").await;
    assert_eq!((role.as_str(), status.as_str()), ("assistant", "incomplete"));
    assert_eq!(stored, content);
}

async fn a_turn_over_its_deadline_ends_and_is_stored_incomplete(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        turn_timeout: Duration::from_millis(700),
        ..crate::harness::test_settings()
    })
    .await;
    let fake = crate::fake_provider::FakeProvider::start(crate::fake_provider::Script::Reply {
        chunks: ["slow ", "and ", "steady ", "never ", "ends"]
            .map(str::to_owned)
            .to_vec(),
        delay: Duration::from_millis(300),
    })
    .await;
    let (_, tenant, agent) = crate::completions::provider_agent(&app, &fake, false).await;
    let user = user_token(&tenant.all_key, "alice");
    let started = Instant::now();
    let reply = app
        .post(
            &format!("/v1/agents/{agent}/completions"),
            &user,
            json!({"messages": [{"role": "user", "content": "hello"}], "conversation_id": "slow"}),
        )
        .await;
    reply.assert_error(502, "upstream_error");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let (role, stored, status) = last_message(&app, &user, &agent, "slow").await;
    assert_eq!((role.as_str(), status.as_str()), ("assistant", "incomplete"));
    assert!(stored.starts_with("slow ") && !stored.contains("ends"), "{stored:?}");
}

/// A client that starts a streamed turn and never reads: once the socket buffers and the turn's
/// event buffer are full, the reply waits `CONFIDANT_SEND_TIMEOUT` at most, then stops the model
/// and is stored `incomplete`.
async fn a_streaming_client_that_stops_reading_is_dropped_and_its_reply_stored(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        send_timeout: Duration::from_millis(500),
        max_reply_bytes: 64 << 20,
        ..crate::harness::test_settings()
    })
    .await;
    // Far more than loopback's socket buffers hold: 2,000 chunks of 4 KB.
    let fake = crate::fake_provider::FakeProvider::start(crate::fake_provider::Script::Reply {
        chunks: vec!["x".repeat(4000); 2000],
        delay: Duration::ZERO,
    })
    .await;
    let (_, tenant, agent) = crate::completions::provider_agent(&app, &fake, false).await;
    let user = user_token(&tenant.all_key, "alice");
    let body = json!({"messages": [{"role": "user", "content": "go"}], "conversation_id": "stalled", "stream": true})
        .to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.address).await.unwrap();
    let request = format!(
        "POST /v1/agents/{agent}/completions HTTP/1.1\r\nHost: confidant\r\nAuthorization: Bearer {user}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    // Never read. The reply must end on its own, stored incomplete and shorter than the whole.
    let started = Instant::now();
    loop {
        let reply = app
            .get(&format!("/v1/agents/{agent}/conversations/stalled"), &user)
            .await;
        if reply.status.as_u16() == 200 {
            let messages = reply.body["messages"].as_array().unwrap();
            if let Some(last) = messages.last().filter(|m| m["role"] == "assistant") {
                assert_eq!(last["status"], "incomplete");
                assert!(last["content"].as_str().unwrap().len() < 2000 * 4000);
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reply to a client that stopped reading never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}

/// The export is written a page at a time (20 conversations, 200 messages per read) and streamed:
/// over several pages of each, nothing is lost or repeated.
async fn a_user_export_streams_every_page_of_a_long_history(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "A", 1).await;
    let agent = &tenant.agents[0];
    let user = user_token(&tenant.all_key, "alice");
    let path = format!("/v1/agents/{agent}/completions");
    let turn = |conversation: String, text: String| {
        app.post(
            &path,
            &user,
            json!({"messages": [{"role": "user", "content": text}], "conversation_id": conversation}),
        )
    };
    for c in 0..25 {
        turn(format!("c{c:02}"), format!("hello {c}")).await.assert_status(200);
    }
    for t in 0..110 {
        turn("c00".to_owned(), format!("more {t}")).await.assert_status(200);
    }
    app.post("/v1/memories", &user, json!({"content": "likes long chats"}))
        .await
        .assert_status(201);
    let response = app
        .client
        .get(app.url(&format!("/v1/applications/{}/users/alice", tenant.app_id)))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "the export was not streamed"
    );
    let export: serde_json::Value = response.json().await.unwrap();
    assert_eq!(export["sub"], "alice");
    let conversations = export["conversations"].as_array().unwrap();
    let ids: Vec<&str> = conversations.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..25).map(|c| format!("c{c:02}")).collect();
    assert_eq!(ids, expected);
    let long = crate::harness::roles_and_contents(&conversations[0]["messages"]);
    assert_eq!(long.len(), 2 + 220);
    let mut texts = vec!["hello 0".to_owned()];
    texts.extend((0..110).map(|t| format!("more {t}")));
    let stored: Vec<&str> = long.iter().step_by(2).map(|(_, content)| content.as_str()).collect();
    assert_eq!(stored, texts);
    assert_eq!(export["memories"][0]["content"], "likes long chats");
}

/// A write that waits on a lock someone else holds is answered `503 unavailable` at the request
/// timeout, and the service answers normally once the lock is gone.
async fn a_request_stalled_on_the_database_ends_at_the_request_timeout(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        request_timeout: Duration::from_millis(500),
        ..crate::harness::test_settings()
    })
    .await;
    let owner = app.owner_token().await;
    let app_id = app.create_application(&owner, "Acme").await;
    let agents = format!("/v1/applications/{app_id}/agents");
    // Someone else holds the write lock (a migration, a backup, a stuck session).
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (locked, is_locked) = tokio::sync::oneshot::channel::<()>();
    let holder = match app.database.sqlite_path() {
        Some(path) => tokio::task::spawn_blocking(move || {
            let connection = rusqlite::Connection::open(path).unwrap();
            connection.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            let _ = released.blocking_recv();
            connection.execute_batch("ROLLBACK").unwrap();
        }),
        None => {
            let url = app.database.url.clone();
            tokio::spawn(async move {
                use sqlx::Connection;
                let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut connection)
                    .await
                    .unwrap();
                locked.send(()).unwrap();
                let _ = released.await;
                sqlx::raw_sql("ROLLBACK").execute(&mut connection).await.unwrap();
            })
        }
    };
    is_locked.await.unwrap();
    let started = Instant::now();
    let stalled = app.post(&agents, &owner, json!({"name": "Stalled"})).await;
    stalled.assert_error(503, "unavailable");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    release.send(()).unwrap();
    holder.await.unwrap();
    app.post(&agents, &owner, json!({"name": "Fine"}))
        .await
        .assert_status(201);

    // A whole (unstreamed) turn slower than the request timeout is bounded by the turn's own
    // deadline instead, and answers.
    let fake = crate::fake_provider::FakeProvider::start(crate::fake_provider::Script::Reply {
        chunks: vec!["slow ".into(), "but ".into(), "whole".into()],
        delay: Duration::from_millis(300),
    })
    .await;
    let (_, tenant, agent) = crate::completions::provider_agent(&app, &fake, false).await;
    let token = user_token(&tenant.all_key, "alice");
    let started = Instant::now();
    let reply = app
        .post(
            &format!("/v1/agents/{agent}/completions"),
            &token,
            json!({"message": "take your time", "stream": false, "conversation_id": "slow"}),
        )
        .await;
    assert!(started.elapsed() > Duration::from_millis(500));
    assert!(
        reply.assert_status(200).to_string().contains("slow but whole"),
        "{}",
        reply.text
    );
}
