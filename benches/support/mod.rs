//! The setup the benchmark files share: a fresh SQLite database holding one application and one
//! authentication key that covers all its agents.

use std::path::Path;

use confidant::crypto::{MASTER_KEY_VERSION, MasterKey};
use confidant::store::keys::{self, AuthenticationKey};
use confidant::store::{Db, DbOptions, applications, now_micros};
use uuid::Uuid;

pub struct Fixture {
    pub db: Db,
    // Each benchmark file compiles this module on its own; not all of them need the application.
    #[allow(dead_code)]
    pub app_id: confidant::store::scope::ApplicationId,
    pub key_id: Uuid,
    pub secret: String,
}

pub async fn fixture(dir: &Path, master: &MasterKey) -> Fixture {
    let db = Db::connect(
        &format!("sqlite://{}", dir.join("bench.db").display()),
        &DbOptions::default(),
    )
    .await
    .unwrap();
    db.migrate().await.unwrap();
    let settings = applications::ApplicationSettings {
        name: Some("bench".into()),
        ..Default::default()
    };
    let app = applications::create(&db, settings, None).await.unwrap();
    let secret = confidant::auth::new_authentication_secret();
    let key_id = Uuid::now_v7();
    let key = AuthenticationKey {
        id: key_id,
        application_id: app.id,
        name: "bench".into(),
        agent_ids: None,
        secret_encrypted: keys::seal_secret(master, app.id, key_id, &secret),
        master_key_version: MASTER_KEY_VERSION,
        created_at: now_micros(),
        last_used_at: None,
    };
    keys::create_authentication_key(&db, &key).await.unwrap();
    Fixture {
        db,
        app_id: app.id,
        key_id,
        secret,
    }
}
