//! What verifying a secure user token costs: parse, cache lookup, HMAC-SHA256, claim checks.
//! The key is already decrypted in memory, as it is for every request after a key's first use.

use std::time::Duration;

use confidant::auth::user_token::{AuthenticationKeyCache, VerifyOptions, verify_token};
use confidant::crypto::{MASTER_KEY_VERSION, MasterKey};
use confidant::store::keys::{self, AuthenticationKey, authentication_key_seal_context};
use confidant::store::{Db, DbOptions, applications, now_micros};
use criterion::{Criterion, criterion_group, criterion_main};
use uuid::Uuid;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes(&[7; 32]);
    let (db, kid, secret) = runtime.block_on(async {
        let db = Db::connect(
            &format!("sqlite://{}", dir.path().join("bench.db").display()),
            &DbOptions::default(),
        )
        .await
        .unwrap();
        db.migrate().await.unwrap();
        let app = applications::create(&db, "bench", None).await.unwrap();
        let secret = confidant::auth::new_authentication_secret();
        let id = Uuid::now_v7();
        let key = AuthenticationKey {
            id,
            application_id: app.id,
            name: "bench".into(),
            agent_ids: None,
            secret_encrypted: master.seal(&authentication_key_seal_context(app.id, id), secret.as_bytes()),
            master_key_version: MASTER_KEY_VERSION,
            created_at: now_micros(),
            last_used_at: None,
        };
        keys::create_authentication_key(&db, &key).await.unwrap();
        (db, id.to_string(), secret)
    });
    let cache = AuthenticationKeyCache::default();
    let options = VerifyOptions {
        max_ttl: Duration::from_secs(7 * 86_400),
    };
    let token = confidant::auth::mint_user_token(&kid, &secret, "user-42", Duration::from_secs(3600)).unwrap();
    // Warm the cache and check the token verifies at all.
    runtime
        .block_on(verify_token(&db, &master, &cache, &token, options))
        .expect("the token verifies");

    c.bench_function("secure user token: verify (key cached)", |b| {
        b.to_async(&runtime).iter(|| async {
            verify_token(&db, &master, &cache, std::hint::black_box(&token), options)
                .await
                .unwrap()
        })
    });
    let forged = format!("{}x", &token[..token.len() - 1]);
    c.bench_function("secure user token: reject a bad signature", |b| {
        b.to_async(&runtime).iter(|| async {
            assert!(
                verify_token(&db, &master, &cache, std::hint::black_box(&forged), options)
                    .await
                    .is_err()
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
