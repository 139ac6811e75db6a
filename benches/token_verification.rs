//! What verifying a secure user token costs: parse, cache lookup, HMAC-SHA256, claim checks.
//! The key is already decrypted in memory, as it is for every request after a key's first use.

use std::time::Duration;

use confidant::auth::user_token::{AuthenticationKeyCache, VerifyOptions, verify_token};
use confidant::crypto::MasterKey;
use criterion::{Criterion, criterion_group, criterion_main};

mod support;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes(&[7; 32]);
    let support::Fixture { db, key_id, secret, .. } = runtime.block_on(support::fixture(dir.path(), &master));
    let kid = key_id.to_string();
    let cache = AuthenticationKeyCache::new(Duration::from_secs(60));
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
