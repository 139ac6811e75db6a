//! The other hot pieces: each wire format's encoder, and the scoped "list my conversations" query.

use std::time::Duration;

use confidant::auth::user_token::verify;
use confidant::completions::formats::{Format, TurnMeta};
use confidant::completions::{FinishReason, Usage};
use confidant::crypto::MasterKey;
use confidant::store::agents;
use confidant::store::scope::AgentScope;
use confidant::store::user_data::{self, MessageStatus, NewMessage, OpenedConversation};
use confidant::{AppState, Settings};
use criterion::{Criterion, criterion_group, criterion_main};
use uuid::Uuid;

mod support;

fn encoders(c: &mut Criterion) {
    let meta = TurnMeta {
        conversation_id: "conversation-1".into(),
        message_id: Uuid::now_v7().to_string(),
        model: "echo".into(),
        created: 0,
        run_id: None,
        continuation: false,
    };
    for (name, format) in [
        ("ai-sdk", Format::AiSdk),
        ("ai-sdk-4", Format::AiSdk4),
        ("openai", Format::OpenAi),
        ("deltakit", Format::DeltaKit),
        ("ag-ui", Format::AgUi),
    ] {
        c.bench_function(&format!("encode a 50-delta reply: {name}"), |b| {
            b.iter(|| {
                let mut encoder = format.encoder(meta.clone());
                let mut bytes = encoder.start().len();
                for _ in 0..50 {
                    bytes += encoder.delta(std::hint::black_box("word ")).len();
                }
                bytes
                    + encoder
                        .finish(
                            FinishReason::Stop,
                            Usage {
                                prompt_tokens: 10,
                                completion_tokens: 50,
                            },
                        )
                        .len()
            })
        });
    }
}

fn scoped_list(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (db, scope) = runtime.block_on(async {
        // Scopes come from verified tokens, as in a request.
        let master = MasterKey::from_bytes(&[3; 32]);
        let support::Fixture {
            db,
            app_id,
            key_id,
            secret,
        } = support::fixture(dir.path(), &master).await;
        let state = AppState::new(db.clone(), master, Settings::default());
        let model = agents::AgentModel::echo();
        let agent = agents::create(
            &db,
            app_id,
            agents::NewAgent {
                id: Uuid::now_v7(),
                tools: Default::default(),
                name: "a",
                instructions: "",
                model: &model,
                memory: false,
                allowed_origins: Vec::new(),
            },
        )
        .await
        .unwrap();
        let mut chosen = None;
        for user in 0..100 {
            let token = confidant::auth::mint_user_token(
                &key_id.to_string(),
                &secret,
                &format!("user-{user}"),
                Duration::from_secs(3600),
            )
            .unwrap();
            let scope = AgentScope::check(&db, state.agents(), verify(&state, &token).await.unwrap(), agent.id)
                .await
                .unwrap();
            for c in 0..5 {
                let OpenedConversation::Created(conversation) =
                    user_data::open_conversation(&db, &scope, &format!("c{c}"), Some("title"))
                        .await
                        .unwrap()
                else {
                    unreachable!()
                };
                let message = |role| NewMessage::text(role, "hello".into(), MessageStatus::Complete, None);
                let both = [message("user"), message("assistant")];
                user_data::append_messages(&db, &scope, &conversation, &both, user_data::LiveMark::Keep)
                    .await
                    .unwrap();
            }
            chosen = Some(scope);
        }
        (db, chosen.unwrap())
    });
    let scope: AgentScope = scope;
    c.bench_function("list my conversations (SQLite, 100 users x 5)", |b| {
        b.to_async(&runtime)
            .iter(|| async { user_data::list_conversations(&db, &scope, 20, None).await.unwrap() })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = encoders, scoped_list
}
criterion_main!(benches);
