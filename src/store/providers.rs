//! Model providers of an application (OpenAI-compatible servers). The API key is stored sealed.

use std::sync::Arc;
use std::time::Duration;

use sea_query::{Expr, ExprTrait, Query};
use uuid::Uuid;

use super::BoxError;
use super::cache::RowCache;
use super::notices::Notice;
use super::schema::Providers;
use super::scope::ApplicationId;
use super::{Db, PageRequest, StoreResult, now_micros};
use crate::crypto::MasterKey;

#[derive(Debug, Clone)]
pub struct Provider {
    pub id: Uuid,
    pub application_id: ApplicationId,
    pub name: String,
    pub kind: String,
    pub base_url: String,
    pub api_key_encrypted: Option<Vec<u8>>,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::from_row!(Provider {
    id,
    application_id,
    name,
    kind,
    base_url,
    api_key_encrypted,
    created_at,
    updated_at
});

const COLUMNS: [Providers; 8] = [
    Providers::Id,
    Providers::ApplicationId,
    Providers::Name,
    Providers::Kind,
    Providers::BaseUrl,
    Providers::ApiKeyEncrypted,
    Providers::CreatedAt,
    Providers::UpdatedAt,
];

/// The context a provider's API key is sealed under: a ciphertext moved to another row won't open.
fn seal_context(app_id: ApplicationId, provider_id: Uuid) -> String {
    format!("confidant/provider-api-key/{app_id}/{provider_id}")
}

/// A provider's API key, sealed under the master key for its row.
pub fn seal_api_key(master_key: &MasterKey, app_id: ApplicationId, provider_id: Uuid, api_key: &str) -> Vec<u8> {
    master_key.seal(&seal_context(app_id, provider_id), api_key.as_bytes())
}

/// The provider's API key, opened for one call (`None` if it has none).
pub fn open_api_key(master_key: &MasterKey, provider: &Provider) -> Result<Option<String>, BoxError> {
    let Some(sealed) = &provider.api_key_encrypted else {
        return Ok(None);
    };
    let bytes = master_key.open(&seal_context(provider.application_id, provider.id), sealed)?;
    Ok(Some(String::from_utf8(bytes)?))
}

/// Other instances cache providers by name: each change tells them when it commits.
pub async fn create(db: &Db, provider: &Provider) -> StoreResult<()> {
    let insert = Query::insert()
        .into_table(Providers::Table)
        .columns(COLUMNS)
        .values_panic([
            provider.id.into(),
            provider.application_id.into(),
            provider.name.clone().into(),
            provider.kind.clone().into(),
            provider.base_url.clone().into(),
            provider.api_key_encrypted.clone().into(),
            provider.created_at.into(),
            provider.updated_at.into(),
        ])
        .to_owned();
    let app_id = provider.application_id.uuid();
    db.transaction(move |tx| {
        Box::pin(async move {
            tx.execute(&insert).await?;
            tx.notify(Notice::Providers(app_id)).await
        })
    })
    .await
}

pub async fn find(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<Option<Provider>> {
    db.row(
        Query::select()
            .columns(COLUMNS)
            .from(Providers::Table)
            .and_where(Expr::col(Providers::ApplicationId).eq(app_id))
            .and_where(Expr::col(Providers::Id).eq(id)),
    )
    .await
}

pub async fn find_by_name(db: &Db, app_id: ApplicationId, name: &str) -> StoreResult<Option<Provider>> {
    db.row(
        Query::select()
            .columns(COLUMNS)
            .from(Providers::Table)
            .and_where(Expr::col(Providers::ApplicationId).eq(app_id))
            .and_where(Expr::col(Providers::Name).eq(name)),
    )
    .await
}

pub async fn list(db: &Db, app_id: ApplicationId, page: PageRequest) -> StoreResult<(Vec<Provider>, Option<Uuid>)> {
    let mut query = Query::select()
        .columns(COLUMNS)
        .from(Providers::Table)
        .and_where(Expr::col(Providers::ApplicationId).eq(app_id))
        .to_owned();
    page.apply(&mut query, Providers::Id);
    Ok(page.finish(db.rows(&query).await?, |p: &Provider| p.id))
}

#[derive(Default)]
pub struct ProviderChanges {
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// `Some(None)` removes the key; `Some(Some(sealed))` replaces it.
    pub api_key_encrypted: Option<Option<Vec<u8>>>,
}

pub async fn update(
    db: &Db,
    app_id: ApplicationId,
    id: Uuid,
    changes: ProviderChanges,
) -> StoreResult<Option<Provider>> {
    let mut update = Query::update();
    update.table(Providers::Table).value(Providers::UpdatedAt, now_micros());
    if let Some(name) = changes.name {
        update.value(Providers::Name, name);
    }
    if let Some(base_url) = changes.base_url {
        update.value(Providers::BaseUrl, base_url);
    }
    if let Some(key) = changes.api_key_encrypted {
        update.value(Providers::ApiKeyEncrypted, key);
    }
    update
        .and_where(Expr::col(Providers::ApplicationId).eq(app_id))
        .and_where(Expr::col(Providers::Id).eq(id))
        .returning(Query::returning().columns(COLUMNS));
    db.transaction(move |tx| {
        Box::pin(async move {
            let updated: Option<Provider> = tx.row(&update).await?;
            if updated.is_some() {
                tx.notify(Notice::Providers(app_id.uuid())).await?;
            }
            Ok(updated)
        })
    })
    .await
}

pub async fn delete(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<bool> {
    super::delete_in_application(
        db,
        Providers::Table,
        Providers::ApplicationId,
        Providers::Id,
        app_id,
        id,
        Some(Notice::Providers(app_id.uuid())),
    )
    .await
}

/// Providers by application and name, kept in memory for the turns that call them (every turn
/// of an agent on a provider names it). Entries live a few seconds, so a change made through
/// another instance is seen soon even if its notice (`invalidation`) is lost; a change through
/// this instance evicts the application's providers at once, names that were missing included.
pub struct ProviderCache(RowCache<Provider, (Uuid, String)>);

impl Default for ProviderCache {
    fn default() -> Self {
        Self(RowCache::new(100_000, Duration::from_secs(5), Duration::from_secs(1)))
    }
}

impl ProviderCache {
    /// The application's provider with this name, from memory or the database.
    pub async fn find_by_name(&self, db: &Db, app_id: ApplicationId, name: &str) -> StoreResult<Option<Arc<Provider>>> {
        self.0
            .get((app_id.uuid(), name.to_owned()), || find_by_name(db, app_id, name))
            .await
    }

    /// Forgets every provider of an application, and every name it lacked (one changed, was
    /// created or deleted, or the application went).
    pub async fn invalidate_application(&self, app_id: Uuid) {
        self.0.invalidate_keys(|(app, _)| *app == app_id).await;
    }

    /// Forgets everything (changes may have been missed).
    pub fn clear(&self) {
        self.0.clear();
    }
}
