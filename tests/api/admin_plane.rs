//! Applications, members, agents, authentication keys, API keys and providers; membership and
//! tenant confinement.

use serde_json::json;

use crate::db_tests;
use crate::harness::TestApp;

db_tests!(
    applications_can_be_created_listed_renamed_and_deleted,
    listings_are_keyset_paginated,
    non_members_are_forbidden_and_unknown_applications_not_found,
    owners_manage_members_and_the_last_owner_cannot_leave,
    admins_cannot_manage_members_or_delete_the_application,
    agents_have_full_crud_and_unique_names,
    agent_model_must_name_echo_or_a_provider,
    agents_of_another_application_are_not_found,
    authentication_key_secret_is_shown_once,
    authentication_key_scope_must_name_agents_of_the_application,
    api_keys_are_shown_once_and_work_in_both_headers,
    api_keys_are_confined_to_their_application_and_acl,
    deleted_api_key_is_invalid_api_key,
    api_key_last_use_is_recorded_without_a_write_per_request,
    providers_keep_their_api_key_write_only,
    provider_names_and_urls_are_validated,
    agent_stats_count_conversations_users_and_days,
    keys_mint_short_lived_user_tokens_for_trying_agents,
);

async fn applications_can_be_created_listed_renamed_and_deleted(app: TestApp) {
    let token = app.owner_token().await;
    let id = app.create_application(&token, "Acme").await;
    let got = app.get(&format!("/v1/applications/{id}"), &token).await;
    assert_eq!(got.assert_status(200)["name"], "Acme");

    let renamed = app
        .patch(&format!("/v1/applications/{id}"), &token, json!({"name": "Acme Inc"}))
        .await;
    assert_eq!(renamed.assert_status(200)["name"], "Acme Inc");

    let list = app.get("/v1/applications", &token).await;
    let data = list.assert_status(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["name"], "Acme Inc");

    let deleted = app.delete(&format!("/v1/applications/{id}"), &token).await;
    assert_eq!(deleted.status.as_u16(), 204);
    app.get(&format!("/v1/applications/{id}"), &token)
        .await
        .assert_error(404, "not_found");
    app.delete(&format!("/v1/applications/{id}"), &token)
        .await
        .assert_error(404, "not_found");
}

async fn listings_are_keyset_paginated(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.create_agent(&token, &app_id, &format!("agent {i}")).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/applications/{app_id}/agents?limit=2&cursor={c}"),
            None => format!("/v1/applications/{app_id}/agents?limit=2"),
        };
        let page = app.get(&path, &token).await.assert_status(200).clone();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    created.reverse(); // newest first
    assert_eq!(seen, created);
}

async fn non_members_are_forbidden_and_unknown_applications_not_found(app: TestApp) {
    let owner = app.owner_token().await;
    let app_id = app.create_application(&owner, "Acme").await;
    let agent = app.create_agent(&owner, &app_id, "Support").await;
    let stranger = app.other_operator("stranger@example.com").await;

    for path in [
        format!("/v1/applications/{app_id}"),
        format!("/v1/applications/{app_id}/agents"),
        format!("/v1/applications/{app_id}/agents/{agent}"),
        format!("/v1/applications/{app_id}/authentication-keys"),
        format!("/v1/applications/{app_id}/api-keys"),
        format!("/v1/applications/{app_id}/providers"),
        format!("/v1/applications/{app_id}/members"),
    ] {
        let reply = app.get(&path, &stranger).await;
        reply.assert_error(403, "forbidden");
        assert!(reply.body.get("data").is_none() && reply.body.get("name").is_none());
    }
    app.post(
        &format!("/v1/applications/{app_id}/agents"),
        &stranger,
        json!({"name": "x"}),
    )
    .await
    .assert_error(403, "forbidden");
    app.delete(&format!("/v1/applications/{app_id}/agents/{agent}"), &stranger)
        .await
        .assert_error(403, "forbidden");
    let list = app.get("/v1/applications", &stranger).await;
    assert_eq!(list.assert_status(200)["data"], json!([]));
    let unknown = uuid::Uuid::now_v7();
    app.get(&format!("/v1/applications/{unknown}"), &owner)
        .await
        .assert_error(404, "not_found");
    // The owner's agent is intact.
    app.get(&format!("/v1/applications/{app_id}/agents/{agent}"), &owner)
        .await
        .assert_status(200);
}

async fn owners_manage_members_and_the_last_owner_cannot_leave(app: TestApp) {
    let owner = app.owner_token().await;
    let app_id = app.create_application(&owner, "Acme").await;
    let colleague = app.other_operator("colleague@example.com").await;
    let members = format!("/v1/applications/{app_id}/members");

    let added = app
        .post(
            &members,
            &owner,
            json!({"email": "colleague@example.com", "role": "admin"}),
        )
        .await;
    let colleague_id = added.assert_status(201)["operator_id"].as_str().unwrap().to_owned();
    app.post(
        &members,
        &owner,
        json!({"email": "colleague@example.com", "role": "admin"}),
    )
    .await
    .assert_error(409, "conflict");
    app.post(
        &members,
        &owner,
        json!({"email": "nobody@example.com", "role": "admin"}),
    )
    .await
    .assert_error(422, "validation_failed");
    app.post(
        &members,
        &owner,
        json!({"email": "colleague@example.com", "role": "king"}),
    )
    .await
    .assert_error(400, "invalid_request");

    // The colleague now reaches the application.
    app.get(&format!("/v1/applications/{app_id}"), &colleague)
        .await
        .assert_status(200);
    let list = app.get(&members, &owner).await;
    assert_eq!(list.assert_status(200)["data"].as_array().unwrap().len(), 2);

    let me = app.get("/v1/auth/me", &owner).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("{members}/{me}"), &owner)
        .await
        .assert_error(409, "conflict");
    assert_eq!(
        app.delete(&format!("{members}/{colleague_id}"), &owner)
            .await
            .status
            .as_u16(),
        204
    );
    app.get(&format!("/v1/applications/{app_id}"), &colleague)
        .await
        .assert_error(403, "forbidden");
}

async fn admins_cannot_manage_members_or_delete_the_application(app: TestApp) {
    let owner = app.owner_token().await;
    let app_id = app.create_application(&owner, "Acme").await;
    let admin = app.other_operator("admin@example.com").await;
    app.other_operator("third@example.com").await;
    let members = format!("/v1/applications/{app_id}/members");
    app.post(&members, &owner, json!({"email": "admin@example.com", "role": "admin"}))
        .await
        .assert_status(201);

    app.post(&members, &admin, json!({"email": "third@example.com", "role": "owner"}))
        .await
        .assert_error(403, "forbidden");
    app.delete(&format!("/v1/applications/{app_id}"), &admin)
        .await
        .assert_error(403, "forbidden");
    // But an admin manages agents.
    app.create_agent(&admin, &app_id, "Support").await;
    // And may leave.
    let admin_id = app.get("/v1/auth/me", &admin).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.delete(&format!("{members}/{admin_id}"), &admin)
            .await
            .status
            .as_u16(),
        204
    );
}

async fn agents_have_full_crud_and_unique_names(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let agents = format!("/v1/applications/{app_id}/agents");
    let created = app
        .post(
            &agents,
            &token,
            json!({"name": "Support", "instructions": "Be kind.", "memory": true}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(created["model"], json!({"provider": "echo"}));
    assert_eq!(created["memory"], true);
    assert_eq!(created["application_id"], app_id.as_str());
    let id = created["id"].as_str().unwrap();

    app.post(&agents, &token, json!({"name": "Support"}))
        .await
        .assert_error(409, "conflict");
    app.post(&agents, &token, json!({"name": "  "}))
        .await
        .assert_error(422, "validation_failed");

    let updated = app
        .patch(
            &format!("{agents}/{id}"),
            &token,
            json!({"instructions": "Be brief.", "memory": false}),
        )
        .await;
    let updated = updated.assert_status(200);
    assert_eq!(updated["instructions"], "Be brief.");
    assert_eq!(updated["memory"], false);
    assert_eq!(updated["name"], "Support");

    let got = app.get(&format!("{agents}/{id}"), &token).await;
    assert_eq!(got.assert_status(200)["instructions"], "Be brief.");
    assert_eq!(app.delete(&format!("{agents}/{id}"), &token).await.status.as_u16(), 204);
    app.get(&format!("{agents}/{id}"), &token)
        .await
        .assert_error(404, "not_found");
    app.patch(&format!("{agents}/{id}"), &token, json!({"name": "x"}))
        .await
        .assert_error(404, "not_found");
}

async fn agent_model_must_name_echo_or_a_provider(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let agents = format!("/v1/applications/{app_id}/agents");
    let reply = app
        .post(
            &agents,
            &token,
            json!({"name": "A", "model": {"provider": "openai", "model": "gpt-4o-mini"}}),
        )
        .await;
    reply.assert_error(422, "validation_failed");
    assert!(reply.body["details"]["fields"]["model.provider"].is_string());

    app.post(
        &format!("/v1/applications/{app_id}/providers"),
        &token,
        json!({"name": "openai", "kind": "openai-compatible", "base_url": "https://api.openai.com/v1"}),
    )
    .await
    .assert_status(201);
    let ok = app
        .post(
            &agents,
            &token,
            json!({"name": "A", "model": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.3}}),
        )
        .await;
    assert_eq!(ok.assert_status(201)["model"]["model"], "gpt-4o-mini");
    app.post(&agents, &token, json!({"name": "B", "model": {"provider": "openai"}}))
        .await
        .assert_error(422, "validation_failed");
    app.post(
        &agents,
        &token,
        json!({"name": "C", "model": {"provider": "echo", "temperature": 9}}),
    )
    .await
    .assert_error(422, "validation_failed");
    app.post(
        &agents,
        &token,
        json!({"name": "D", "model": {"provider": "echo", "colour": "red"}}),
    )
    .await
    .assert_error(400, "invalid_request");
}

async fn agents_of_another_application_are_not_found(app: TestApp) {
    let token = app.owner_token().await;
    let first = app.create_application(&token, "First").await;
    let second = app.create_application(&token, "Second").await;
    let agent = app.create_agent(&token, &first, "Support").await;
    app.get(&format!("/v1/applications/{second}/agents/{agent}"), &token)
        .await
        .assert_error(404, "not_found");
    app.delete(&format!("/v1/applications/{second}/agents/{agent}"), &token)
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/v1/applications/{first}/agents/{agent}"), &token)
        .await
        .assert_status(200);
}

async fn authentication_key_secret_is_shown_once(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let keys = format!("/v1/applications/{app_id}/authentication-keys");
    let created = app
        .post(&keys, &token, json!({"name": "backend", "scope": {"all_agents": true}}))
        .await;
    let created = created.assert_status(201).clone();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("sk-cfd-") && secret.len() >= 7 + 43, "{secret}");
    assert_eq!(created["scope"], json!({"all_agents": true}));

    let list = app.get(&keys, &token).await;
    let text = &list.text;
    assert!(!text.contains(secret), "the secret must not be listed");
    let item = &list.body["data"][0];
    assert_eq!(item["id"], created["id"]);
    assert!(item.get("secret").is_none());
    assert!(item["last_used_at"].is_null());

    app.post(&keys, &token, json!({"name": "backend", "scope": {"all_agents": true}}))
        .await
        .assert_error(409, "conflict");
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("{keys}/{id}"), &token).await.status.as_u16(), 204);
    app.delete(&format!("{keys}/{id}"), &token)
        .await
        .assert_error(404, "not_found");
}

async fn authentication_key_scope_must_name_agents_of_the_application(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let other_app = app.create_application(&token, "Other").await;
    let agent = app.create_agent(&token, &app_id, "Support").await;
    let foreign = app.create_agent(&token, &other_app, "Foreign").await;
    let keys = format!("/v1/applications/{app_id}/authentication-keys");

    let scoped = app
        .post(&keys, &token, json!({"name": "scoped", "scope": {"agents": [agent]}}))
        .await;
    assert_eq!(scoped.assert_status(201)["scope"], json!({"agents": [agent]}));
    app.post(
        &keys,
        &token,
        json!({"name": "foreign", "scope": {"agents": [foreign]}}),
    )
    .await
    .assert_error(422, "validation_failed");
    app.post(&keys, &token, json!({"name": "empty", "scope": {"agents": []}}))
        .await
        .assert_error(422, "validation_failed");
    app.post(&keys, &token, json!({"name": "none", "scope": {"all_agents": false}}))
        .await
        .assert_error(422, "validation_failed");
    app.post(&keys, &token, json!({"name": "bad", "scope": {"everything": true}}))
        .await
        .assert_error(400, "invalid_request");
    app.post(&keys, &token, json!({"name": "bad", "scope": {"agents": ["nope"]}}))
        .await
        .assert_error(400, "invalid_request");
}

async fn api_keys_are_shown_once_and_work_in_both_headers(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let (id, key) = app.create_api_key(&token, &app_id, json!(["admin"])).await;
    assert!(key.starts_with("cfd_"));

    let list = app.get(&format!("/v1/applications/{app_id}/api-keys"), &token).await;
    assert!(!list.text.contains(&key));
    let item = &list.body["data"][0];
    assert_eq!(item["id"], id.as_str());
    assert!(key.starts_with(item["prefix"].as_str().unwrap()));
    assert_eq!(item["acl"], json!(["admin"]));
    assert!(item.get("key").is_none());

    // Bearer.
    app.get(&format!("/v1/applications/{app_id}/agents"), &key)
        .await
        .assert_status(200);
    // X-API-Key.
    let response = app
        .client
        .get(app.url(&format!("/v1/applications/{app_id}/agents")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // An admin key manages its application.
    app.create_agent(&key, &app_id, "Made by a key").await;
    let apps = app.get("/v1/applications", &key).await;
    assert_eq!(apps.assert_status(200)["data"][0]["id"], app_id.as_str());
}

async fn api_keys_are_confined_to_their_application_and_acl(app: TestApp) {
    let token = app.owner_token().await;
    let first = app.create_application(&token, "First").await;
    let second = app.create_application(&token, "Second").await;
    let agent_of_second = app.create_agent(&token, &second, "Support").await;
    let (_, admin_key) = app.create_api_key(&token, &first, json!(["admin"])).await;
    let (_, completions_key) = app.create_api_key(&token, &first, json!(["completions"])).await;

    app.get(&format!("/v1/applications/{second}/agents"), &admin_key)
        .await
        .assert_error(403, "forbidden");
    app.get(
        &format!("/v1/applications/{second}/agents/{agent_of_second}"),
        &admin_key,
    )
    .await
    .assert_error(403, "forbidden");
    app.delete(&format!("/v1/applications/{second}"), &admin_key)
        .await
        .assert_error(403, "forbidden");
    app.get(&format!("/v1/applications/{first}/agents"), &completions_key)
        .await
        .assert_error(403, "forbidden");
    // Keys cannot create applications or manage members.
    app.post("/v1/applications", &admin_key, json!({"name": "Mine"}))
        .await
        .assert_error(403, "forbidden");
    app.post(
        &format!("/v1/applications/{first}/members"),
        &admin_key,
        json!({"email": "x@example.com", "role": "owner"}),
    )
    .await
    .assert_error(403, "forbidden");
    app.get(&format!("/v1/applications/{second}/agents/{agent_of_second}"), &token)
        .await
        .assert_status(200);
    app.post(
        &format!("/v1/applications/{first}/api-keys"),
        &token,
        json!({"name": "x", "acl": []}),
    )
    .await
    .assert_error(422, "validation_failed");
    app.post(
        &format!("/v1/applications/{first}/api-keys"),
        &token,
        json!({"name": "x", "acl": ["root"]}),
    )
    .await
    .assert_error(400, "invalid_request");
}

async fn deleted_api_key_is_invalid_api_key(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let (id, key) = app.create_api_key(&token, &app_id, json!(["admin"])).await;
    app.get(&format!("/v1/applications/{app_id}"), &key)
        .await
        .assert_status(200);
    assert_eq!(
        app.delete(&format!("/v1/applications/{app_id}/api-keys/{id}"), &token)
            .await
            .status
            .as_u16(),
        204
    );
    let reply = app.get(&format!("/v1/applications/{app_id}"), &key).await;
    reply.assert_error(401, "invalid_api_key");
    assert_eq!(reply.headers["www-authenticate"], r#"Bearer error="invalid_token""#);
    app.get(&format!("/v1/applications/{app_id}"), "cfd_made-up")
        .await
        .assert_error(401, "invalid_api_key");
}

async fn api_key_last_use_is_recorded_without_a_write_per_request(mut app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let (_, key) = app.create_api_key(&token, &app_id, json!(["admin"])).await;
    app.get(&format!("/v1/applications/{app_id}"), &key)
        .await
        .assert_status(200);
    // Uses are written in batches; a shutdown writes what is pending.
    app.restart().await;
    let token = app.owner_token().await;
    let list = app.get(&format!("/v1/applications/{app_id}/api-keys"), &token).await;
    assert!(list.body["data"][0]["last_used_at"].is_string(), "{}", list.text);
}

async fn providers_keep_their_api_key_write_only(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let providers = format!("/v1/applications/{app_id}/providers");
    let body = json!({"name": "openrouter", "kind": "openai-compatible", "base_url": "https://openrouter.ai/api/v1/", "api_key": "sk-or-very-secret"});
    let created = app.post(&providers, &token, body).await;
    let created = created.assert_status(201).clone();
    assert!(!created.to_string().contains("sk-or-very-secret"));
    assert_eq!(created["has_api_key"], true);
    assert_eq!(created["base_url"], "https://openrouter.ai/api/v1");
    let id = created["id"].as_str().unwrap();

    let got = app.get(&format!("{providers}/{id}"), &token).await;
    assert!(!got.text.contains("sk-or-very-secret"));
    let cleared = app
        .patch(&format!("{providers}/{id}"), &token, json!({"api_key": null}))
        .await;
    assert_eq!(cleared.assert_status(200)["has_api_key"], false);
    let renamed = app
        .patch(&format!("{providers}/{id}"), &token, json!({"name": "router"}))
        .await;
    assert_eq!(renamed.assert_status(200)["has_api_key"], false);
    assert_eq!(renamed.body["name"], "router");
    let list = app.get(&providers, &token).await;
    assert_eq!(list.assert_status(200)["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.delete(&format!("{providers}/{id}"), &token).await.status.as_u16(),
        204
    );
    app.get(&format!("{providers}/{id}"), &token)
        .await
        .assert_error(404, "not_found");
}

async fn provider_names_and_urls_are_validated(app: TestApp) {
    let token = app.owner_token().await;
    let app_id = app.create_application(&token, "Acme").await;
    let providers = format!("/v1/applications/{app_id}/providers");
    let make = |name: &str, url: &str| json!({"name": name, "kind": "openai-compatible", "base_url": url});
    app.post(&providers, &token, make("echo", "https://x.test/v1"))
        .await
        .assert_error(422, "validation_failed");
    app.post(&providers, &token, make("has space", "https://x.test/v1"))
        .await
        .assert_error(422, "validation_failed");
    app.post(&providers, &token, make("ok", "ftp://x.test"))
        .await
        .assert_error(422, "validation_failed");
    app.post(&providers, &token, make("ok", "https://user:pw@x.test"))
        .await
        .assert_error(422, "validation_failed");
    app.post(&providers, &token, make("ok", "not a url"))
        .await
        .assert_error(422, "validation_failed");
    let wrong_kind = json!({"name": "ok", "kind": "anthropic", "base_url": "https://x.test"});
    app.post(&providers, &token, wrong_kind)
        .await
        .assert_error(400, "invalid_request");
    app.post(&providers, &token, make("ok", "http://127.0.0.1:11434/v1"))
        .await
        .assert_status(201);
    app.post(&providers, &token, make("ok", "http://127.0.0.1:11434/v1"))
        .await
        .assert_error(409, "conflict");
}

async fn agent_stats_count_conversations_users_and_days(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 2).await;
    let (x, y) = (&tenant.agents[0], &tenant.agents[1]);
    for (sub, agent, n) in [("alice", x, 2), ("bob", x, 1), ("carol", y, 1)] {
        let token = crate::harness::user_token(&tenant.all_key, sub);
        for _ in 0..n {
            let body = json!({"messages": [{"role": "user", "content": "hi"}]});
            app.post(&format!("/v1/agents/{agent}/completions"), &token, body)
                .await
                .assert_status(200);
        }
    }
    let stats = app
        .get(
            &format!("/v1/applications/{}/agents/{x}/stats?days=7", tenant.app_id),
            &owner,
        )
        .await;
    let stats = stats.assert_status(200).clone();
    assert_eq!(stats["conversations"], 3);
    assert_eq!(stats["users"], 2);
    let days = stats["per_day"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(days[6]["day"], today.as_str());
    assert_eq!(days[6]["conversations"], 3);
    assert_eq!(
        days[..6]
            .iter()
            .map(|d| d["conversations"].as_i64().unwrap())
            .sum::<i64>(),
        0
    );
    app.get(
        &format!("/v1/applications/{}/agents/{x}/stats?days=0", tenant.app_id),
        &owner,
    )
    .await
    .assert_error(400, "invalid_request");
    let stranger = app.other_operator("stranger@example.com").await;
    app.get(
        &format!("/v1/applications/{}/agents/{x}/stats", tenant.app_id),
        &stranger,
    )
    .await
    .assert_error(403, "forbidden");
}

async fn keys_mint_short_lived_user_tokens_for_trying_agents(app: TestApp) {
    let owner = app.owner_token().await;
    let tenant = app.tenant(&owner, "Acme", 1).await;
    let agent = &tenant.agents[0];
    let path = format!(
        "/v1/applications/{}/authentication-keys/{}/tokens",
        tenant.app_id, tenant.all_key.0
    );
    let minted = app
        .post(&path, &owner, json!({"sub": "try-it", "ttl_seconds": 60}))
        .await;
    let token = minted.assert_status(201)["token"].as_str().unwrap().to_owned();
    let body = json!({"messages": [{"role": "user", "content": "trying"}]});
    app.post(&format!("/v1/agents/{agent}/completions"), &token, body)
        .await
        .assert_status(200);
    app.post(&path, &owner, json!({"sub": "x", "ttl_seconds": 3600}))
        .await
        .assert_error(422, "validation_failed");
    app.post(&path, &owner, json!({"sub": ""}))
        .await
        .assert_error(422, "validation_failed");
    let other = app.tenant(&owner, "Other", 0).await;
    let foreign = format!(
        "/v1/applications/{}/authentication-keys/{}/tokens",
        other.app_id, tenant.all_key.0
    );
    app.post(&foreign, &owner, json!({"sub": "x"}))
        .await
        .assert_error(404, "not_found");
    let stranger = app.other_operator("stranger@example.com").await;
    app.post(&path, &stranger, json!({"sub": "x"}))
        .await
        .assert_error(403, "forbidden");
}
