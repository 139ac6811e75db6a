//! The isolation matrix: users of two applications, reached through keys of mixed scope, each try
//! every other user's conversations and memory on every verb, and through the agents' tools (the
//! memory tools, results for other users' tool calls). Nothing crosses; everything survives.

use reqwest::Method;
use serde_json::{Value, json};

use crate::db_tests;
use crate::harness::{TestApp, user_token};

db_tests!(
    no_user_reaches_another_users_data,
    reads_answered_together_reach_only_their_own_user,
    writes_stored_together_land_only_in_their_own_conversation
);

/// A user as seen through one token.
struct Caller {
    label: &'static str,
    token: String,
    /// The agents the token reaches.
    agents: Vec<String>,
    /// The owner whose data this caller may see (callers can share an owner: one user, two keys).
    owner: usize,
}

/// Everything one user stored.
#[derive(Default, Clone)]
struct Owned {
    marker: String,
    conversations: Vec<(String, String)>, // (agent, conversation id)
    memories: Vec<String>,
}

async fn no_user_reaches_another_users_data(app: TestApp) {
    let admin = app.owner_token().await;
    let a = app.tenant(&admin, "A", 2).await;
    let b = app.tenant(&admin, "B", 1).await;
    let (x, y, z) = (a.agents[0].clone(), a.agents[1].clone(), b.agents[0].clone());
    let only_x = app.authentication_key(&admin, &a.app_id, json!({"agents": [x]})).await;
    // Every agent has the memory tools and a client tool.
    for (app_id, agent) in [(&a.app_id, &x), (&a.app_id, &y), (&b.app_id, &z)] {
        let tools = json!({"memory_tools": true, "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
        app.patch(&format!("/v1/applications/{app_id}/agents/{agent}"), &admin, tools)
            .await
            .assert_status(200);
    }

    // Owners: 0 = alice@A, 1 = bob@A, 2 = alice@B (same sub as owner 0, other application).
    let callers = vec![
        Caller {
            label: "alice@A (all agents)",
            token: user_token(&a.all_key, "alice"),
            agents: vec![x.clone(), y.clone()],
            owner: 0,
        },
        Caller {
            label: "alice@A (only X)",
            token: user_token(&only_x, "alice"),
            agents: vec![x.clone()],
            owner: 0,
        },
        Caller {
            label: "bob@A (all agents)",
            token: user_token(&a.all_key, "bob"),
            agents: vec![x.clone(), y.clone()],
            owner: 1,
        },
        Caller {
            label: "bob@A (only X)",
            token: user_token(&only_x, "bob"),
            agents: vec![x.clone()],
            owner: 1,
        },
        Caller {
            label: "alice@B",
            token: user_token(&b.all_key, "alice"),
            agents: vec![z.clone()],
            owner: 2,
        },
    ];
    let mut owned: Vec<Owned> = (0..3)
        .map(|i| Owned {
            marker: format!("secret-of-owner-{i}"),
            ..Default::default()
        })
        .collect();

    // Each caller stores data: a conversation with the same client-chosen id on every agent it
    // reaches, one with a server-made id, and memory (app-wide where its key allows).
    for caller in &callers {
        let mine = &mut owned[caller.owner];
        for agent in &caller.agents {
            let body = json!({"messages": [{"role": "user", "content": format!("{} via {}", mine.marker, caller.label)}], "conversation_id": format!("shared-{}", &agent[agent.len() - 12..])});
            let reply = app
                .post(&format!("/v1/agents/{agent}/completions"), &caller.token, body)
                .await;
            let id = reply.assert_status(200)["conversation_id"].as_str().unwrap().to_owned();
            if !mine.conversations.contains(&(agent.clone(), id.clone())) {
                mine.conversations.push((agent.clone(), id));
            }
            let body = json!({"messages": [{"role": "user", "content": format!("{} fresh", mine.marker)}]});
            let reply = app
                .post(&format!("/v1/agents/{agent}/completions"), &caller.token, body)
                .await;
            mine.conversations.push((
                agent.clone(),
                reply.assert_status(200)["conversation_id"].as_str().unwrap().to_owned(),
            ));
            let memory = app
                .post(
                    "/v1/memories",
                    &caller.token,
                    json!({"content": format!("{} remembers tea", mine.marker), "agent_id": agent}),
                )
                .await;
            mine.memories
                .push(memory.assert_status(201)["id"].as_str().unwrap().to_owned());
        }
        let shared = app
            .post(
                "/v1/memories",
                &caller.token,
                json!({"content": format!("{} remembers tea everywhere", mine.marker)}),
            )
            .await;
        if caller.agents.len() > 1 || caller.owner == 2 {
            mine.memories
                .push(shared.assert_status(201)["id"].as_str().unwrap().to_owned());
        } else {
            shared.assert_error(403, "agent_not_in_scope");
        }
    }
    let before: Vec<Value> = export_all(&app, &admin, &a.app_id, &b.app_id).await;

    for caller in &callers {
        let foreign: Vec<&str> = owned
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != caller.owner)
            .map(|(_, o)| o.marker.as_str())
            .collect();
        let assert_clean = |what: &str, reply: &crate::harness::Reply| {
            for marker in &foreign {
                assert!(
                    !reply.text.contains(marker),
                    "{} saw {marker} in {what}: {}",
                    caller.label,
                    reply.text
                );
            }
        };
        // Listings and searches hold only the caller's own rows.
        for agent in [&x, &y, &z] {
            let reply = app
                .get(&format!("/v1/agents/{agent}/conversations?limit=100"), &caller.token)
                .await;
            assert_clean("a conversation list", &reply);
            if caller.agents.contains(agent) {
                for conversation in reply.assert_status(200)["data"].as_array().unwrap() {
                    let id = conversation["id"].as_str().unwrap();
                    assert!(
                        owned[caller.owner]
                            .conversations
                            .contains(&(agent.clone(), id.to_owned())),
                        "{} listed {id}",
                        caller.label
                    );
                }
            } else if agent == &z || caller.owner == 2 {
                reply.assert_error(404, "not_found");
            } else {
                reply.assert_error(403, "agent_not_in_scope");
            }
        }
        for query in [
            "/v1/memories?limit=100",
            "/v1/memories?q=tea&limit=100",
            "/v1/memories?q=secret+owner+remembers&limit=100",
        ] {
            let reply = app.get(query, &caller.token).await;
            assert_clean("memory", &reply);
            for memory in reply.assert_status(200)["data"].as_array().unwrap() {
                assert!(
                    owned[caller.owner]
                        .memories
                        .contains(&memory["id"].as_str().unwrap().to_owned())
                );
                if caller.agents.len() == 1 && caller.owner != 2 {
                    assert!(
                        !memory["agent_id"].is_null(),
                        "{} (agent-scoped key) saw app-wide memory",
                        caller.label
                    );
                }
            }
        }

        // Every other user's ids, on every verb.
        for (owner_index, other) in owned.iter().enumerate() {
            if owner_index == caller.owner {
                continue;
            }
            for (agent, id) in &other.conversations {
                let path = format!("/v1/agents/{agent}/conversations/{id}");
                // The same client-chosen id can name the caller's own conversation too: then only
                // reading it is probed (it must be the caller's own), as changing it is legitimate.
                let also_mine = caller.agents.contains(agent)
                    && owned[caller.owner].conversations.contains(&(agent.clone(), id.clone()));
                let verbs = if also_mine {
                    vec![(Method::GET, None)]
                } else {
                    vec![
                        (Method::GET, None),
                        (Method::PATCH, Some(json!({"title": "pwned"}))),
                        (Method::DELETE, None),
                    ]
                };
                for (method, body) in verbs {
                    let reply = app.call(method.clone(), &path, Some(&caller.token), body).await;
                    assert_clean(&format!("{method} {path}"), &reply);
                    let expected: &[u16] = if also_mine { &[200] } else { &[403, 404] };
                    assert!(
                        expected.contains(&reply.status.as_u16()),
                        "{} {method} {path}: {}",
                        caller.label,
                        reply.text
                    );
                    if reply.status.as_u16() != 200 {
                        assert!(reply.body.get("messages").is_none() && reply.body.get("title").is_none());
                    }
                }
            }
            for memory in &other.memories {
                let path = format!("/v1/memories/{memory}");
                for (method, body) in [
                    (Method::GET, None),
                    (Method::PATCH, Some(json!({"content": "pwned"}))),
                    (Method::DELETE, None),
                ] {
                    let reply = app.call(method.clone(), &path, Some(&caller.token), body).await;
                    reply.assert_error(404, "not_found");
                }
            }
        }
    }

    // Completions naming another user's conversation id make or continue the caller's own, and
    // answer with nothing of the other user's.
    for caller in &callers {
        for (owner_index, other) in owned.iter().enumerate() {
            if owner_index == caller.owner {
                continue;
            }
            for (agent, id) in other
                .conversations
                .iter()
                .filter(|(agent, _)| caller.agents.contains(agent))
            {
                let body = json!({"messages": [{"role": "user", "content": "probe"}], "conversation_id": id});
                let reply = app
                    .post(&format!("/v1/agents/{agent}/completions"), &caller.token, body)
                    .await;
                let status = reply.status.as_u16();
                assert!(status == 200 || status == 409, "{}: {}", caller.label, reply.text);
                assert!(
                    !reply.text.contains(&other.marker),
                    "{} saw another user's data: {}",
                    caller.label,
                    reply.text
                );
                if status == 200 {
                    let mine = app
                        .get(&format!("/v1/agents/{agent}/conversations/{id}"), &caller.token)
                        .await;
                    assert!(!mine.text.contains(&other.marker), "{}: {}", caller.label, mine.text);
                }
            }
        }
    }

    // Tools act for their caller alone: `search_memory` finds the caller's memory and nobody
    // else's, and a client tool's result for another user's call is refused.
    let mut calls: Vec<Vec<(String, String, String)>> = vec![Vec::new(); owned.len()]; // (agent, conversation, call)
    for caller in &callers {
        for agent in &caller.agents {
            let path = format!("/v1/agents/{agent}/completions?format=deltakit");
            let search =
                json!({"message": r#"/call search_memory {"query": "secret owner remembers tea"}"#, "stream": false});
            let found = app.post(&path, &caller.token, search).await;
            found.assert_status(200);
            assert!(
                found.text.contains(&owned[caller.owner].marker),
                "{}: {}",
                caller.label,
                found.text
            );
            for (i, other) in owned.iter().enumerate() {
                assert!(
                    i == caller.owner || !found.text.contains(&other.marker),
                    "{} found {}",
                    caller.label,
                    other.marker
                );
            }
            let conversation = format!("weather-{}-{}", caller.owner, &agent[agent.len() - 12..]);
            let asked = json!({"message": "/call get_weather {}", "conversation_id": conversation, "stream": false});
            let reply = app.post(&path, &caller.token, asked).await;
            let call = reply.assert_status(200)["message"]["tool_calls"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            calls[caller.owner].push((agent.clone(), conversation, call));
        }
    }
    for caller in &callers {
        for (owner_index, theirs) in calls.iter().enumerate() {
            if owner_index == caller.owner {
                continue;
            }
            for (agent, conversation, call) in theirs.iter().filter(|(agent, ..)| caller.agents.contains(agent)) {
                let result = json!({"conversation_id": conversation, "tool_results": [{"tool_call_id": call, "output": "forged"}], "stream": false});
                let reply = app
                    .post(
                        &format!("/v1/agents/{agent}/completions?format=deltakit"),
                        &caller.token,
                        result,
                    )
                    .await;
                reply.assert_error(422, "validation_failed");
            }
        }
    }

    // Afterwards every owner's data is intact: the probes above created new conversations for the
    // probing callers only, so compare what existed before, item by item.
    let after = export_all(&app, &admin, &a.app_id, &b.app_id).await;
    for (before, after) in before.iter().zip(&after) {
        for conversation in before["conversations"].as_array().unwrap() {
            let found = after["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == conversation["id"])
                .expect("conversation survived");
            assert_eq!(found["title"], conversation["title"]);
            assert_eq!(
                found["messages"].as_array().unwrap()[..conversation["messages"].as_array().unwrap().len()],
                conversation["messages"].as_array().unwrap()[..]
            );
        }
        assert_eq!(before["memories"], after["memories"]);
    }
}

/// The admin export of each owner, in owner order.
async fn export_all(app: &TestApp, admin: &str, a: &str, b: &str) -> Vec<Value> {
    let mut exports = Vec::new();
    for (app_id, sub) in [(a, "alice"), (a, "bob"), (b, "alice")] {
        exports.push(
            app.get(&format!("/v1/applications/{app_id}/users/{sub}"), admin)
                .await
                .assert_status(200)
                .clone(),
        );
    }
    exports
}

/// Many users list and open their conversations at the same moment. On PostgreSQL such reads go
/// to the database several to a statement (`Db::rows_batched`); each must still get its own
/// user's rows, in its own order, and nobody else's.
async fn reads_answered_together_reach_only_their_own_user(app: TestApp) {
    const USERS: usize = 24;
    let admin = app.owner_token().await;
    let tenant = app.tenant(&admin, "together", 1).await;
    let agent = tenant.agents[0].clone();
    let tokens: Vec<String> = (0..USERS)
        .map(|u| user_token(&tenant.all_key, &format!("user-{u}")))
        .collect();
    // User u has u % 3 + 1 conversations, c0 the oldest; each turn's text names its owner.
    let count = |u: usize| u % 3 + 1;
    for (u, token) in tokens.iter().enumerate() {
        for c in 0..count(u) {
            let body = json!({"messages": [{"role": "user", "content": format!("u{u} c{c}")}], "conversation_id": format!("c{c}")});
            app.post(&format!("/v1/agents/{agent}/completions"), token, body)
                .await
                .assert_status(200);
        }
    }
    let before = app.db.combined_reads();
    let reads = (0..8).flat_map(|round| {
        let (tokens, agent, app) = (&tokens, &agent, &app);
        (0..USERS).map(move |u| async move {
            let token = &tokens[u];
            let list = app.get(&format!("/v1/agents/{agent}/conversations"), token).await;
            let listed: Vec<(String, String)> = list.assert_status(200)["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["id"].as_str().unwrap().to_owned(),
                        c["title"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            let expected: Vec<(String, String)> = (0..count(u))
                .rev()
                .map(|c| (format!("c{c}"), format!("u{u} c{c}")))
                .collect();
            assert_eq!(listed, expected, "user {u}'s list");
            let c = round % count(u);
            let opened = app.get(&format!("/v1/agents/{agent}/conversations/c{c}"), token).await;
            let text = format!("u{u} c{c}");
            assert_eq!(
                crate::harness::roles_and_contents(&opened.assert_status(200)["messages"]),
                vec![("user".to_owned(), text.clone()), ("assistant".to_owned(), text)],
                "user {u}'s conversation c{c}"
            );
        })
    });
    futures_util::future::join_all(reads).await;
    // On PostgreSQL the reads above did go together (SQLite runs each alone).
    let combined = app.db.combined_reads() - before;
    match app.backend() {
        crate::harness::Backend::Postgres => assert!(combined > 0, "no read shared a statement"),
        crate::harness::Backend::Sqlite => assert_eq!(combined, 0),
    }
}

/// Many users' turns at once, two at a time in each conversation: on PostgreSQL their messages
/// go in statements they share (`write_batched`). Every message lands once, in its own user's
/// conversation, each reply after the message it answers.
async fn writes_stored_together_land_only_in_their_own_conversation(app: TestApp) {
    const USERS: usize = 24;
    const TURNS: usize = 4;
    let admin = app.owner_token().await;
    let tenant = app.tenant(&admin, "writes", 1).await;
    let agent = tenant.agents[0].clone();
    let tokens: Vec<String> = (0..USERS)
        .map(|u| user_token(&tenant.all_key, &format!("user-{u}")))
        .collect();
    let before = app.db.combined_writes();
    let turns = (0..USERS).flat_map(|u| {
        let (tokens, agent, app) = (&tokens, &agent, &app);
        (0..TURNS).map(move |t| async move {
            let body = json!({"messages": [{"role": "user", "content": format!("u{u} t{t}")}], "conversation_id": format!("c{}", t % 2)});
            app.post(&format!("/v1/agents/{agent}/completions"), &tokens[u], body)
                .await
                .assert_status(200);
        })
    });
    futures_util::future::join_all(turns).await;
    for (u, token) in tokens.iter().enumerate() {
        for c in 0..2 {
            let opened = app.get(&format!("/v1/agents/{agent}/conversations/c{c}"), token).await;
            let messages = crate::harness::roles_and_contents(&opened.assert_status(200)["messages"]);
            let mut stored: Vec<(String, String)> = messages.clone();
            stored.sort();
            let mut expected: Vec<(String, String)> = (0..TURNS)
                .filter(|t| t % 2 == c)
                .flat_map(|t| {
                    [
                        ("assistant".to_owned(), format!("u{u} t{t}")),
                        ("user".to_owned(), format!("u{u} t{t}")),
                    ]
                })
                .collect();
            expected.sort();
            assert_eq!(stored, expected, "user {u}'s conversation c{c}: {messages:?}");
            for (i, (role, text)) in messages.iter().enumerate() {
                if role == "assistant" {
                    assert!(
                        messages[..i].contains(&("user".to_owned(), text.clone())),
                        "user {u}'s conversation c{c}: a reply before its question: {messages:?}"
                    );
                }
            }
        }
    }
    let combined = app.db.combined_writes() - before;
    match app.backend() {
        crate::harness::Backend::Postgres => assert!(combined > 0, "no write shared a statement"),
        crate::harness::Backend::Sqlite => assert_eq!(combined, 0),
    }
}
