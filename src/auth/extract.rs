//! Extractors for the admin plane: who the caller is, and what they may do in an application.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use super::API_KEY_PREFIX;
use super::credentials::{AdminCredential, Credentials};
use crate::AppState;
use crate::crypto;
use crate::error::{Error, Result};
use crate::store::applications::{self, MemberRole};
use crate::store::keys::{Acl, KeyTable};
use crate::store::scope::{AppAccess, ApplicationId, Role};

/// An authenticated caller of the admin plane.
#[derive(Debug, Clone)]
pub enum Principal {
    Operator { id: Uuid, session_id: Uuid },
    ApiKey(ApiKeyPrincipal),
}

#[derive(Debug, Clone)]
pub struct ApiKeyPrincipal {
    pub id: Uuid,
    pub application_id: ApplicationId,
    pub acl: Vec<Acl>,
    pub agent_ids: Option<Vec<Uuid>>,
}

fn invalid_api_key() -> Error {
    Error::unauthorized("invalid_api_key", "the API key is unknown or was deleted")
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match Credentials::read(&parts.headers).admin()? {
            None => Err(Error::MissingCredentials(
                "send an operator access token or an API key".into(),
            )),
            Some(AdminCredential::ApiKey(key)) => authenticate_api_key(state, key).await.map(Principal::ApiKey),
            Some(AdminCredential::OperatorToken(token)) => {
                let access = state.access_tokens().verify(token)?;
                // Checked on every request so that logout and reuse detection take effect at once.
                let operator = crate::store::operators::live_session_operator(state.db(), access.session_id).await?;
                match operator {
                    Some(id) if id == access.operator_id => Ok(Principal::Operator {
                        id,
                        session_id: access.session_id,
                    }),
                    _ => Err(Error::unauthorized(
                        "invalid_token",
                        "this session has ended; log in again",
                    )),
                }
            }
        }
    }
}

/// Looks an API key up by its hash and confirms it in constant time.
pub async fn authenticate_api_key(state: &AppState, key: &str) -> Result<ApiKeyPrincipal> {
    if key.len() > 256 || !key.starts_with(API_KEY_PREFIX) {
        return Err(invalid_api_key());
    }
    let hash = crypto::sha256(key.as_bytes());
    let found = state
        .api_keys()
        .find(state.db(), hash)
        .await?
        .ok_or_else(invalid_api_key)?;
    if !crypto::constant_time_eq(&found.key_hash, &hash) {
        return Err(invalid_api_key());
    }
    state.usage().record(KeyTable::Api, found.id);
    Ok(ApiKeyPrincipal {
        id: found.id,
        application_id: found.application_id,
        acl: found.acl.0.clone(),
        agent_ids: found.agent_ids.as_ref().map(|ids| ids.0.clone()),
    })
}

impl Principal {
    /// What the caller may do in `app_id`: a member operator per their role, an `admin` API key of
    /// that application as `Role::ApiKey`. Unknown applications are 404; others' are 403.
    pub async fn access(&self, state: &AppState, app_id: Uuid) -> Result<AppAccess> {
        match self {
            Principal::Operator { id, .. } => match applications::role_of(state.db(), app_id, *id).await? {
                Some(MemberRole::Owner) => Ok(AppAccess::granted(app_id, Role::Owner)),
                Some(MemberRole::Admin) => Ok(AppAccess::granted(app_id, Role::Admin)),
                None if applications::find(state.db(), app_id).await?.is_none() => Err(Error::not_found("application")),
                None => Err(Error::Forbidden("you are not a member of this application".into())),
            },
            Principal::ApiKey(key) => {
                if key.application_id.uuid() != app_id {
                    return Err(Error::Forbidden("this API key belongs to another application".into()));
                }
                if !key.acl.contains(&Acl::Admin) {
                    return Err(Error::Forbidden("this API key lacks the `admin` ACL".into()));
                }
                Ok(AppAccess::granted(app_id, Role::ApiKey))
            }
        }
    }

    /// The operator behind the request, for operator-only endpoints.
    pub fn operator(&self) -> Result<Uuid> {
        match self {
            Principal::Operator { id, .. } => Ok(*id),
            Principal::ApiKey(_) => Err(Error::Forbidden(
                "this endpoint needs an operator, not an API key".into(),
            )),
        }
    }
}
