//! Authentication keys (sign secure user tokens; secret sealed at rest) and API keys
//! (server-to-server; stored only as a SHA-256 hash).

use std::sync::Arc;
use std::time::Duration;

use sea_query::{Expr, ExprTrait, Query};
use uuid::Uuid;

use super::BoxError;
use super::cache::RowCache;
use super::notices::Notice;
use super::schema::{ApiKeys, AuthenticationKeys};
use super::scope::ApplicationId;
use super::{Db, Json, PageRequest, StoreResult};
use crate::crypto::MasterKey;

#[derive(Debug, Clone)]
pub struct AuthenticationKey {
    pub id: Uuid,
    pub application_id: ApplicationId,
    pub name: String,
    /// `None`: the key covers all agents of the application.
    pub agent_ids: Option<Json<Vec<Uuid>>>,
    pub secret_encrypted: Vec<u8>,
    pub master_key_version: i32,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

crate::from_row!(AuthenticationKey {
    id,
    application_id,
    name,
    agent_ids,
    secret_encrypted,
    master_key_version,
    created_at,
    last_used_at
});

const AUTH_KEY_COLUMNS: [AuthenticationKeys; 8] = [
    AuthenticationKeys::Id,
    AuthenticationKeys::ApplicationId,
    AuthenticationKeys::Name,
    AuthenticationKeys::AgentIds,
    AuthenticationKeys::SecretEncrypted,
    AuthenticationKeys::MasterKeyVersion,
    AuthenticationKeys::CreatedAt,
    AuthenticationKeys::LastUsedAt,
];

/// The context an authentication key's secret is sealed under: a ciphertext moved to another row
/// won't open.
fn seal_context(app_id: ApplicationId, key_id: Uuid) -> String {
    format!("confidant/authentication-key/{app_id}/{key_id}")
}

/// An authentication key's secret, sealed under the master key for its row.
pub fn seal_secret(master_key: &MasterKey, app_id: ApplicationId, key_id: Uuid, secret: &str) -> Vec<u8> {
    master_key.seal(&seal_context(app_id, key_id), secret.as_bytes())
}

/// The key's secret, opened to verify or sign tokens with it.
pub fn open_secret(master_key: &MasterKey, key: &AuthenticationKey) -> Result<String, BoxError> {
    let bytes = master_key.open(&seal_context(key.application_id, key.id), &key.secret_encrypted)?;
    Ok(String::from_utf8(bytes)?)
}

fn agent_ids_value(agent_ids: &Option<Json<Vec<Uuid>>>) -> sea_query::Value {
    match agent_ids {
        Some(ids) => serde_json::to_value(&ids.0).expect("uuids serialize").into(),
        None => sea_query::Value::Json(None),
    }
}

pub async fn create_authentication_key(db: &Db, key: &AuthenticationKey) -> StoreResult<()> {
    db.execute(
        Query::insert()
            .into_table(AuthenticationKeys::Table)
            .columns(AUTH_KEY_COLUMNS)
            .values_panic([
                key.id.into(),
                key.application_id.into(),
                key.name.clone().into(),
                agent_ids_value(&key.agent_ids).into(),
                key.secret_encrypted.clone().into(),
                key.master_key_version.into(),
                key.created_at.into(),
                key.last_used_at.into(),
            ]),
    )
    .await?;
    Ok(())
}

pub async fn list_authentication_keys(
    db: &Db,
    app_id: ApplicationId,
    page: PageRequest,
) -> StoreResult<(Vec<AuthenticationKey>, Option<Uuid>)> {
    let mut query = Query::select()
        .columns(AUTH_KEY_COLUMNS)
        .from(AuthenticationKeys::Table)
        .and_where(Expr::col(AuthenticationKeys::ApplicationId).eq(app_id))
        .to_owned();
    page.apply(&mut query, AuthenticationKeys::Id);
    Ok(page.finish(db.rows(&query).await?, |k: &AuthenticationKey| k.id))
}

/// A live authentication key by id (the token's `kid`), whatever its application.
pub async fn find_authentication_key(db: &Db, id: Uuid) -> StoreResult<Option<AuthenticationKey>> {
    db.row(
        Query::select()
            .columns(AUTH_KEY_COLUMNS)
            .from(AuthenticationKeys::Table)
            .and_where(Expr::col(AuthenticationKeys::Id).eq(id)),
    )
    .await
}

pub async fn delete_authentication_key(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<bool> {
    super::delete_in_application(
        db,
        AuthenticationKeys::Table,
        AuthenticationKeys::ApplicationId,
        AuthenticationKeys::Id,
        app_id,
        id,
        Some(Notice::AuthenticationKey(id)),
    )
    .await
}

crate::text_enum! {
    /// What an API key may do.
    #[derive(PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Acl {
        /// Manage its application (the admin plane).
        Admin = "admin",
        /// Call completions without a user token (stateless).
        Completions = "completions",
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub application_id: ApplicationId,
    pub name: String,
    pub acl: Json<Vec<Acl>>,
    pub agent_ids: Option<Json<Vec<Uuid>>>,
    pub prefix: String,
    pub key_hash: Vec<u8>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

crate::from_row!(ApiKey {
    id,
    application_id,
    name,
    acl,
    agent_ids,
    prefix,
    key_hash,
    created_at,
    last_used_at
});

const API_KEY_COLUMNS: [ApiKeys; 9] = [
    ApiKeys::Id,
    ApiKeys::ApplicationId,
    ApiKeys::Name,
    ApiKeys::Acl,
    ApiKeys::AgentIds,
    ApiKeys::Prefix,
    ApiKeys::KeyHash,
    ApiKeys::CreatedAt,
    ApiKeys::LastUsedAt,
];

pub async fn create_api_key(db: &Db, key: &ApiKey) -> StoreResult<()> {
    db.execute(
        Query::insert()
            .into_table(ApiKeys::Table)
            .columns(API_KEY_COLUMNS)
            .values_panic([
                key.id.into(),
                key.application_id.into(),
                key.name.clone().into(),
                serde_json::to_value(&key.acl.0).expect("ACLs serialize").into(),
                agent_ids_value(&key.agent_ids).into(),
                key.prefix.clone().into(),
                key.key_hash.clone().into(),
                key.created_at.into(),
                key.last_used_at.into(),
            ]),
    )
    .await?;
    Ok(())
}

pub async fn list_api_keys(
    db: &Db,
    app_id: ApplicationId,
    page: PageRequest,
) -> StoreResult<(Vec<ApiKey>, Option<Uuid>)> {
    let mut query = Query::select()
        .columns(API_KEY_COLUMNS)
        .from(ApiKeys::Table)
        .and_where(Expr::col(ApiKeys::ApplicationId).eq(app_id))
        .to_owned();
    page.apply(&mut query, ApiKeys::Id);
    Ok(page.finish(db.rows(&query).await?, |k: &ApiKey| k.id))
}

/// How long a hash that named no API key is remembered, so a flood of made-up keys does not
/// reach the database each time.
const UNKNOWN_API_KEY_TTL: Duration = Duration::from_secs(2);
/// Most API keys kept in memory.
const MAX_CACHED_API_KEYS: u64 = 100_000;

/// API keys by the SHA-256 of their secret, kept in memory: every call of the completions API
/// presents one. Deleting a key evicts it at once (here, and on other instances through
/// `invalidation`); `CONFIDANT_KEY_CACHE_TTL` bounds how long an instance that missed the notice
/// keeps it. A hash that named nothing cannot name a key later: a new key's secret is random.
pub struct ApiKeyCache(RowCache<ApiKey, [u8; 32]>);

impl ApiKeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self(RowCache::new(MAX_CACHED_API_KEYS, ttl, UNKNOWN_API_KEY_TTL))
    }

    /// The API key whose SHA-256 is `hash`, from memory or the database.
    pub async fn find(&self, db: &Db, hash: [u8; 32]) -> StoreResult<Option<Arc<ApiKey>>> {
        self.0.get(hash, || find_api_key_by_hash(db, hash)).await
    }

    /// Forgets a key (deleted).
    pub async fn invalidate(&self, id: Uuid) {
        self.0.invalidate_where(|key| key.id == id).await;
    }

    /// Forgets every key of an application (it was deleted).
    pub async fn invalidate_application(&self, app_id: Uuid) {
        self.0.invalidate_where(|key| key.application_id.uuid() == app_id).await;
    }

    /// Forgets everything (changes may have been missed).
    pub fn clear(&self) {
        self.0.clear();
    }
}

/// The API key whose SHA-256 is `hash` (looked up through the unique index).
async fn find_api_key_by_hash(db: &Db, hash: [u8; 32]) -> StoreResult<Option<ApiKey>> {
    db.row(
        Query::select()
            .columns(API_KEY_COLUMNS)
            .from(ApiKeys::Table)
            .and_where(Expr::col(ApiKeys::KeyHash).eq(hash.to_vec())),
    )
    .await
}

pub async fn delete_api_key(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<bool> {
    super::delete_in_application(
        db,
        ApiKeys::Table,
        ApiKeys::ApplicationId,
        ApiKeys::Id,
        app_id,
        id,
        Some(Notice::ApiKey(id)),
    )
    .await
}

/// Records when keys were last used, many at once (see `auth::usage`).
pub async fn record_last_used(db: &Db, table: KeyTable, uses: &[(Uuid, i64)]) -> StoreResult<()> {
    if uses.is_empty() {
        return Ok(());
    }
    let statements: Vec<_> = uses
        .iter()
        .map(|(id, at)| match table {
            KeyTable::Authentication => Query::update()
                .table(AuthenticationKeys::Table)
                .value(AuthenticationKeys::LastUsedAt, *at)
                .and_where(Expr::col(AuthenticationKeys::Id).eq(*id))
                .to_owned(),
            KeyTable::Api => Query::update()
                .table(ApiKeys::Table)
                .value(ApiKeys::LastUsedAt, *at)
                .and_where(Expr::col(ApiKeys::Id).eq(*id))
                .to_owned(),
        })
        .collect();
    db.execute_all(statements).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyTable {
    Authentication,
    Api,
}
