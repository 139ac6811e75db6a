//! Browsers and limits: allowed origins with CORS on the data plane, per-user rate limits, daily
//! token quotas, and the usage they are counted from.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::db_tests;
use crate::harness::{Reply, Tenant, TestApp, user_token};

db_tests!(
    a_preflight_echoes_the_origin_on_the_data_plane_only,
    browser_requests_are_checked_against_the_allowed_origins,
    an_agents_own_origins_replace_the_applications,
    origins_and_limits_are_validated,
    a_user_over_the_per_minute_limit_gets_429_until_it_recovers,
    completions_have_a_per_minute_limit_of_their_own,
    a_user_over_the_daily_token_quota_gets_quota_exceeded,
    usage_is_reported_per_day_user_and_agent_exported_and_erased
);

const APP_ORIGIN: &str = "https://app.example.com";

/// Sends a request with an `Origin` (and optionally a bearer token and a JSON body).
async fn from_origin(
    app: &TestApp,
    method: Method,
    path: &str,
    origin: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = app.client.request(method, app.url(path)).header("origin", origin);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    TestApp::read(request.send().await.unwrap()).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn set_application(app: &TestApp, owner: &str, tenant: &Tenant, changes: Value) -> Value {
    app.patch(&format!("/v1/applications/{}", tenant.app_id), owner, changes)
        .await
        .assert_status(200)
        .clone()
}

/// An application with one agent and these limits.
async fn limited(app: &TestApp, limits: Value) -> (String, Tenant) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    set_application(app, &owner, &tenant, limits).await;
    (owner, tenant)
}

fn turn_body(text: &str, conversation: &str) -> Value {
    json!({"message": text, "stream": false, "conversation_id": conversation})
}

async fn a_preflight_echoes_the_origin_on_the_data_plane_only(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = &tenant.agents[0];
    set_application(&app, &owner, &tenant, json!({"allowed_origins": [APP_ORIGIN]})).await;
    let preflight = |path: String, origin: &'static str| {
        let app = &app;
        async move {
            let response = app
                .client
                .request(Method::OPTIONS, app.url(&path))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization, content-type")
                .send()
                .await
                .unwrap();
            TestApp::read(response).await
        }
    };
    for path in [
        format!("/v1/agents/{agent}/completions"),
        format!("/v1/agents/{agent}/conversations"),
        "/v1/memories".into(),
    ] {
        let reply = preflight(path.clone(), APP_ORIGIN).await;
        assert_eq!(reply.status.as_u16(), 204, "{path}");
        assert_eq!(header(&reply, "access-control-allow-origin"), Some(APP_ORIGIN));
        assert!(header(&reply, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));
        let methods = header(&reply, "access-control-allow-methods").unwrap();
        assert!(methods.contains("POST") && methods.contains("DELETE"), "{methods}");
        let allowed = header(&reply, "access-control-allow-headers").unwrap();
        for needed in [
            "authorization",
            "content-type",
            "x-secure-user-token",
            "x-conversation-id",
        ] {
            assert!(allowed.contains(needed), "{allowed}");
        }
    }
    // The admin plane speaks no CORS at all.
    let admin = preflight(format!("/v1/applications/{}/agents", tenant.app_id), APP_ORIGIN).await;
    assert!(
        header(&admin, "access-control-allow-origin").is_none(),
        "{:?}",
        admin.headers
    );
    let admin = from_origin(&app, Method::GET, "/v1/applications", APP_ORIGIN, Some(&owner), None).await;
    admin.assert_status(200);
    assert!(header(&admin, "access-control-allow-origin").is_none());
}

async fn browser_requests_are_checked_against_the_allowed_origins(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = &tenant.agents[0];
    let token = user_token(&tenant.all_key, "alice");
    let list = format!("/v1/agents/{agent}/conversations");
    // No list: any origin.
    let open = from_origin(&app, Method::GET, &list, "https://anywhere.test", Some(&token), None).await;
    open.assert_status(200);
    assert_eq!(
        header(&open, "access-control-allow-origin"),
        Some("https://anywhere.test")
    );

    set_application(
        &app,
        &owner,
        &tenant,
        json!({"allowed_origins": [APP_ORIGIN, "https://*.example.org"]}),
    )
    .await;
    let allowed = from_origin(&app, Method::GET, &list, APP_ORIGIN, Some(&token), None).await;
    allowed.assert_status(200);
    assert_eq!(header(&allowed, "access-control-allow-origin"), Some(APP_ORIGIN));
    let exposed = header(&allowed, "access-control-expose-headers").unwrap();
    for name in ["x-conversation-id", "retry-after", "x-ratelimit-remaining"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    from_origin(
        &app,
        Method::GET,
        &list,
        "https://shop.eu.example.org",
        Some(&token),
        None,
    )
    .await
    .assert_status(200);
    // Foreign origins are refused, with the CORS headers that let the page read why.
    for foreign in [
        "https://evil.test",
        "http://app.example.com",
        "https://example.org",
        "null",
    ] {
        let refused = from_origin(&app, Method::GET, &list, foreign, Some(&token), None).await;
        refused.assert_error(403, "origin_not_allowed");
        assert_eq!(header(&refused, "access-control-allow-origin"), Some(foreign));
    }
    // A turn and the memory routes alike; nothing is stored by a refused turn.
    let turn = format!("/v1/agents/{agent}/completions");
    from_origin(
        &app,
        Method::POST,
        &turn,
        "https://evil.test",
        Some(&token),
        Some(turn_body("hi", "c1")),
    )
    .await
    .assert_error(403, "origin_not_allowed");
    from_origin(
        &app,
        Method::POST,
        &turn,
        APP_ORIGIN,
        Some(&token),
        Some(turn_body("hi", "c1")),
    )
    .await
    .assert_status(200);
    let stored = app.get(&format!("/v1/agents/{agent}/conversations/c1"), &token).await;
    assert_eq!(stored.assert_status(200)["messages"].as_array().unwrap().len(), 2);
    from_origin(
        &app,
        Method::GET,
        "/v1/memories",
        "https://evil.test",
        Some(&token),
        None,
    )
    .await
    .assert_error(403, "origin_not_allowed");
    from_origin(&app, Method::GET, "/v1/memories", APP_ORIGIN, Some(&token), None)
        .await
        .assert_status(200);
    // Servers (no Origin) are not subject to it.
    app.get(&list, &token).await.assert_status(200);
}

async fn an_agents_own_origins_replace_the_applications(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 2).await;
    set_application(&app, &owner, &tenant, json!({"allowed_origins": [APP_ORIGIN]})).await;
    let widget = &tenant.agents[0];
    let patched = app
        .patch(
            &format!("/v1/applications/{}/agents/{widget}", tenant.app_id),
            &owner,
            json!({"allowed_origins": ["https://widget.example.net/"]}),
        )
        .await;
    assert_eq!(
        patched.assert_status(200)["allowed_origins"],
        json!(["https://widget.example.net"])
    );
    let token = user_token(&tenant.all_key, "alice");
    let widget_list = format!("/v1/agents/{widget}/conversations");
    from_origin(
        &app,
        Method::GET,
        &widget_list,
        "https://widget.example.net",
        Some(&token),
        None,
    )
    .await
    .assert_status(200);
    from_origin(&app, Method::GET, &widget_list, APP_ORIGIN, Some(&token), None)
        .await
        .assert_error(403, "origin_not_allowed");
    // The other agent keeps the application's list.
    let other = format!("/v1/agents/{}/conversations", tenant.agents[1]);
    from_origin(&app, Method::GET, &other, APP_ORIGIN, Some(&token), None)
        .await
        .assert_status(200);
    from_origin(
        &app,
        Method::GET,
        &other,
        "https://widget.example.net",
        Some(&token),
        None,
    )
    .await
    .assert_error(403, "origin_not_allowed");
}

async fn origins_and_limits_are_validated(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let one = format!("/v1/applications/{}", tenant.app_id);
    for (bad, field) in [
        (json!({"allowed_origins": ["app.example.com"]}), "allowed_origins"),
        (
            json!({"allowed_origins": ["https://app.example.com/path"]}),
            "allowed_origins",
        ),
        (json!({"allowed_origins": ["*"]}), "allowed_origins"),
        (
            json!({"limits": {"user_requests_per_minute": 0}}),
            "limits.user_requests_per_minute",
        ),
    ] {
        let reply = app.patch(&one, &owner, bad.clone()).await;
        reply.assert_error(422, "validation_failed");
        assert!(
            reply.body["details"]["fields"][field].is_string(),
            "{bad}: {}",
            reply.text
        );
    }
    // Not a number of the right type: the body is malformed.
    app.patch(&one, &owner, json!({"limits": {"user_tokens_per_day": -1}}))
        .await
        .assert_error(400, "invalid_request");
    app.patch(&one, &owner, json!({"limits": {"per_minute": 3}}))
        .await
        .assert_error(400, "invalid_request");
    let body = set_application(
        &app,
        &owner,
        &tenant,
        json!({"allowed_origins": ["HTTPS://App.Example.com:443"], "limits": {"user_requests_per_minute": 100, "user_tokens_per_day": null}}),
    )
    .await;
    assert_eq!(body["allowed_origins"], json!([APP_ORIGIN]));
    assert_eq!(
        body["limits"],
        json!({"user_requests_per_minute": 100, "user_completions_per_minute": null, "user_tokens_per_day": null})
    );
    let created = app
        .post(
            "/v1/applications",
            &owner,
            json!({"name": "Beta", "allowed_origins": ["http://localhost:3000"], "limits": {"user_completions_per_minute": 5}}),
        )
        .await;
    let created = created.assert_status(201);
    assert_eq!(created["allowed_origins"], json!(["http://localhost:3000"]));
    assert_eq!(created["limits"]["user_completions_per_minute"], 5);
}

async fn a_user_over_the_per_minute_limit_gets_429_until_it_recovers(app: TestApp) {
    // 120 a minute: a burst of 120, then one more every half second.
    let (owner, tenant) = limited(&app, json!({"limits": {"user_requests_per_minute": 120}})).await;
    let list = format!("/v1/agents/{}/conversations", tenant.agents[0]);
    let alice = user_token(&tenant.all_key, "alice");
    let first = app.get(&list, &alice).await;
    first.assert_status(200);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("120"));
    assert_eq!(header(&first, "x-ratelimit-remaining"), Some("119"));
    assert!(header(&first, "x-ratelimit-reset").unwrap().parse::<u64>().unwrap() <= 1);
    let (mut statuses, mut limited) = (Vec::new(), None);
    for _ in 0..125 {
        let reply = app.get(&list, &alice).await;
        statuses.push(reply.status.as_u16());
        if reply.status == 429 && limited.is_none() {
            limited = Some(reply);
        }
    }
    // 119 left, plus one more for each half second the loop took.
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (2..=6).contains(&refused),
        "{refused} refused of 125 after one: {statuses:?}"
    );
    let limited = limited.expect("a refusal");
    limited.assert_error(429, "rate_limited");
    assert_eq!(
        limited.body["details"],
        json!({"scope": "user_requests_per_minute", "limit": 120})
    );
    assert_eq!(header(&limited, "retry-after"), Some("1"));
    assert_eq!(header(&limited, "x-ratelimit-remaining"), Some("0"));
    // Another user of the same application is not affected.
    app.get(&list, &user_token(&tenant.all_key, "bob"))
        .await
        .assert_status(200);
    // A token comes back every half second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    app.get(&list, &alice).await.assert_status(200);
    // Lifting the limit lifts it at once on this instance.
    set_application(
        &app,
        &owner,
        &tenant,
        json!({"limits": {"user_requests_per_minute": null}}),
    )
    .await;
    let free = app.get(&list, &alice).await;
    free.assert_status(200);
    assert!(header(&free, "x-ratelimit-limit").is_none());
}

async fn completions_have_a_per_minute_limit_of_their_own(app: TestApp) {
    let (_, tenant) = limited(&app, json!({"limits": {"user_completions_per_minute": 2}})).await;
    let agent = &tenant.agents[0];
    let token = user_token(&tenant.all_key, "alice");
    let turn = format!("/v1/agents/{agent}/completions");
    let first = app.post(&turn, &token, turn_body("one", "c")).await;
    first.assert_status(200);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&first, "x-ratelimit-remaining"), Some("1"));
    app.post(&turn, &token, turn_body("two", "c")).await.assert_status(200);
    let limited = app.post(&turn, &token, turn_body("three", "c")).await;
    limited.assert_error(429, "rate_limited");
    assert_eq!(limited.body["details"]["scope"], "user_completions_per_minute");
    assert!(header(&limited, "retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // Reads are not turns.
    app.get(&format!("/v1/agents/{agent}/conversations"), &token)
        .await
        .assert_status(200);
    let stored = app.get(&format!("/v1/agents/{agent}/conversations/c"), &token).await;
    assert_eq!(stored.assert_status(200)["messages"].as_array().unwrap().len(), 4);
}

async fn a_user_over_the_daily_token_quota_gets_quota_exceeded(app: TestApp) {
    let (owner, tenant) = limited(&app, json!({"limits": {"user_tokens_per_day": 10}})).await;
    let turn = format!("/v1/agents/{}/completions", tenant.agents[0]);
    let alice = user_token(&tenant.all_key, "alice");
    // echo counts words: 6 in, 6 out.
    app.post(&turn, &alice, turn_body("one two three four five six", "c"))
        .await
        .assert_status(200);
    let over = app.post(&turn, &alice, turn_body("again", "c")).await;
    over.assert_error(429, "quota_exceeded");
    assert_eq!(
        over.body["details"],
        json!({"scope": "user_tokens_per_day", "limit": 10})
    );
    let retry: u64 = header(&over, "retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    // Still over once the counters are written (and read back from the database).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.post(&turn, &alice, turn_body("again", "c"))
        .await
        .assert_error(429, "quota_exceeded");
    // Reads go on; other users have their own quota.
    app.get(&format!("/v1/agents/{}/conversations", tenant.agents[0]), &alice)
        .await
        .assert_status(200);
    app.post(&turn, &user_token(&tenant.all_key, "bob"), turn_body("hi", "c"))
        .await
        .assert_status(200);
    // Raising the quota lets Alice go on.
    set_application(&app, &owner, &tenant, json!({"limits": {"user_tokens_per_day": 1000}})).await;
    app.post(&turn, &alice, turn_body("again", "c"))
        .await
        .assert_status(200);
}

/// Polls the usage report until `ready` holds (the counters are written about every second).
async fn usage_until(app: &TestApp, owner: &str, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let body = app.get(path, owner).await.assert_status(200).clone();
        if ready(&body) || started.elapsed() > Duration::from_secs(5) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn usage_is_reported_per_day_user_and_agent_exported_and_erased(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 2).await;
    let (a, b) = (&tenant.agents[0], &tenant.agents[1]);
    let alice = user_token(&tenant.all_key, "alice");
    let bob = user_token(&tenant.all_key, "bob");
    for (token, agent, text) in [
        (&alice, a, "one two three"),
        (&alice, a, "four five"),
        (&alice, b, "six"),
        (&bob, a, "seven eight"),
    ] {
        app.post(
            &format!("/v1/agents/{agent}/completions"),
            token,
            turn_body(text, &agent[agent.len() - 12..]),
        )
        .await
        .assert_status(200);
    }
    // A server's turn (completions API key, nothing stored) counts under the empty sub.
    let (_, server_key) = app.create_api_key(&owner, &tenant.app_id, json!(["completions"])).await;
    app.post(
        &format!("/v1/agents/{b}/completions"),
        &server_key,
        json!({"messages": [{"role": "user", "content": "nine"}]}),
    )
    .await
    .assert_status(200);
    let base = format!("/v1/applications/{}/usage", tenant.app_id);
    let by_day = usage_until(&app, &owner, &base, |b| b["data"][0]["turns"] == 5).await;
    let today = chrono::Utc::now().date_naive().to_string();
    let day = &by_day["data"][0];
    assert_eq!(by_day["data"].as_array().unwrap().len(), 1, "{by_day}");
    assert_eq!(
        (day["day"].as_str(), day["turns"].as_i64(), day["users"].as_i64()),
        (Some(today.as_str()), Some(5), Some(3))
    );
    // echo's replies repeat the user's words: output tokens are the words sent.
    assert_eq!(day["output_tokens"], 9);
    assert!(day["input_tokens"].as_i64().unwrap() >= 9);
    assert!(day.get("sub").is_none() && day.get("agent_id").is_none());

    let by_user = app.get(&format!("{base}?group_by=user"), &owner).await;
    let mut users: Vec<(String, i64)> = by_user.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["sub"].as_str().unwrap().to_owned(), e["turns"].as_i64().unwrap()))
        .collect();
    users.sort();
    assert_eq!(
        users,
        vec![(String::new(), 1), ("alice".to_owned(), 3), ("bob".to_owned(), 1)]
    );
    let by_agent = app.get(&format!("{base}?group_by=agent&sub=alice"), &owner).await;
    let agents: Vec<(String, i64)> = by_agent.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["agent_id"].as_str().unwrap().to_owned(),
                e["output_tokens"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(agents, vec![(a.clone(), 5), (b.clone(), 1)]);
    let one_agent = app.get(&format!("{base}?agent_id={b}"), &owner).await;
    assert_eq!(one_agent.body["data"][0]["turns"], 2);
    // Days outside the range: nothing.
    let old = app.get(&format!("{base}?from=2020-01-01&to=2020-01-31"), &owner).await;
    assert_eq!(old.body["data"], json!([]));
    for bad in [
        "?from=yesterday",
        "?from=2026-02-01&to=2026-01-01",
        "?from=2020-01-01&to=2026-01-01",
    ] {
        app.get(&format!("{base}{bad}"), &owner)
            .await
            .assert_error(422, "validation_failed");
    }
    app.get(&format!("{base}?group_by=month"), &owner)
        .await
        .assert_error(400, "invalid_request");
    // Another application's operator sees none of it.
    let stranger = app.other_operator("stranger@example.com").await;
    app.get(&base, &stranger).await.assert_error(403, "forbidden");

    // The export holds the user's usage; erasing the user erases it.
    let users = format!("/v1/applications/{}/users", tenant.app_id);
    let export = app.get(&format!("{users}/alice"), &owner).await;
    let usage = export.assert_status(200)["usage"].as_array().unwrap().clone();
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert_eq!(usage.iter().map(|u| u["turns"].as_i64().unwrap()).sum::<i64>(), 3);
    assert!(usage.iter().all(|u| u["day"] == today.as_str()));
    app.delete(&format!("{users}/alice"), &owner).await.assert_status(200);
    let after = app.get(&format!("{base}?group_by=user&sub=alice"), &owner).await;
    assert_eq!(after.body["data"], json!([]), "{}", after.text);
    let after = app.get(&format!("{base}?group_by=user&sub=bob"), &owner).await;
    assert_eq!(after.body["data"][0]["turns"], 1);
}
