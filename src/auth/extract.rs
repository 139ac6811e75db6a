//! Extractors for the admin plane: who the caller is, and what they may do in an application.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use uuid::Uuid;

use super::API_KEY_PREFIX;
use crate::AppState;
use crate::crypto;
use crate::error::{Error, Result};
use crate::scope::{AppAccess, Role};
use crate::store::applications;
use crate::store::keys::{self, KeyTable};

/// ACL that lets an API key manage its application.
pub const ACL_ADMIN: &str = "admin";
/// ACL that lets an API key call completions without a user token.
pub const ACL_COMPLETIONS: &str = "completions";

/// An authenticated caller of the admin plane.
#[derive(Debug, Clone)]
pub enum Principal {
    Operator { id: Uuid, session_id: Uuid },
    ApiKey(ApiKeyPrincipal),
}

#[derive(Debug, Clone)]
pub struct ApiKeyPrincipal {
    pub id: Uuid,
    pub application_id: Uuid,
    pub acl: Vec<String>,
    pub agent_ids: Option<Vec<Uuid>>,
}

/// The credential a request carries, read without verifying it.
enum Credential<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
}

fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>> {
    if let Some(value) = headers.get("x-api-key") {
        let key = value.to_str().map_err(|_| invalid_api_key())?.trim();
        return Ok(Some(Credential::ApiKey(key)));
    }
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::unauthorized("invalid_token", "the Authorization header is not valid text"))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(Error::unauthorized(
            "invalid_token",
            "expected `Authorization: Bearer <token>`",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::unauthorized(
            "invalid_token",
            "expected `Authorization: Bearer <token>`",
        ));
    }
    let token = token.trim();
    Ok(Some(if token.starts_with(API_KEY_PREFIX) {
        Credential::ApiKey(token)
    } else {
        Credential::Bearer(token)
    }))
}

fn invalid_api_key() -> Error {
    Error::unauthorized("invalid_api_key", "the API key is unknown or was deleted")
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match credential(&parts.headers)? {
            None => Err(Error::MissingCredentials(
                "send an operator access token or an API key".into(),
            )),
            Some(Credential::ApiKey(key)) => authenticate_api_key(state, key).await.map(Principal::ApiKey),
            Some(Credential::Bearer(token)) => {
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
    let found = keys::find_api_key_by_hash(state.db(), &hash)
        .await?
        .ok_or_else(invalid_api_key)?;
    if !crypto::constant_time_eq(&found.key_hash, &hash) {
        return Err(invalid_api_key());
    }
    state.usage().record(KeyTable::Api, found.id);
    Ok(ApiKeyPrincipal {
        id: found.id,
        application_id: found.application_id,
        acl: found.acl.0,
        agent_ids: found.agent_ids.map(|ids| ids.0),
    })
}

impl Principal {
    /// What the caller may do in `app_id`: a member operator per their role, an `admin` API key of
    /// that application as `Role::ApiKey`. Unknown applications are 404; others' are 403.
    pub async fn access(&self, state: &AppState, app_id: Uuid) -> Result<AppAccess> {
        match self {
            Principal::Operator { id, .. } => match applications::role_of(state.db(), app_id, *id).await?.as_deref() {
                Some("owner") => Ok(AppAccess::granted(app_id, Role::Owner)),
                Some(_) => Ok(AppAccess::granted(app_id, Role::Admin)),
                None if applications::find(state.db(), app_id).await?.is_none() => Err(Error::not_found("application")),
                None => Err(Error::Forbidden("you are not a member of this application".into())),
            },
            Principal::ApiKey(key) => {
                if key.application_id != app_id {
                    return Err(Error::Forbidden("this API key belongs to another application".into()));
                }
                if !key.acl.iter().any(|a| a == ACL_ADMIN) {
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
