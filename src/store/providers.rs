//! Model providers of an application (OpenAI-compatible servers). The API key is stored sealed.

use sea_query::{Expr, ExprTrait, Query};
use uuid::Uuid;

use super::BoxError;
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

pub async fn create(db: &Db, provider: &Provider) -> StoreResult<()> {
    db.execute(
        Query::insert()
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
            ]),
    )
    .await?;
    Ok(())
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
    db.returning(update).await
}

pub async fn delete(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<bool> {
    super::delete_in_application(
        db,
        Providers::Table,
        Providers::ApplicationId,
        Providers::Id,
        app_id,
        id,
        None,
    )
    .await
}
