//! Secure user tokens: HS256 JWTs that a company's backend signs with one of its authentication
//! keys (`kid`). Verifying one yields the `UserScope` that every user-data query needs.
//!
//! The header is parsed here, strictly, before any key is looked up: only `alg: HS256`, a `kid`,
//! no `crit`. The signature is checked with jsonwebtoken's HMAC, then the claims are checked here
//! so each failure gets its own contract code. Keys are decrypted once and kept in memory
//! (`AuthenticationKeyCache`); deleting a key evicts it at once.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::credentials::Credentials;
use crate::AppState;
use crate::crypto::MasterKey;
use crate::edge;
use crate::error::{Error, Result};
use crate::store::cache::RowCache;
use crate::store::keys::{self, KeyTable};
use crate::store::scope::{AgentAccess, ApplicationId, UserScope, validate_sub};
use crate::store::{Db, StoreResult};

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: i64 = 30;
/// How long an unknown `kid` is remembered, so a flood of made-up ids does not reach the database.
const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(2);
/// Most keys kept decrypted in memory.
const MAX_CACHED_KEYS: u64 = 100_000;

/// A decrypted authentication key, ready to verify signatures.
pub struct VerifyingKey {
    pub id: Uuid,
    pub application_id: ApplicationId,
    pub agents: AgentAccess,
    decoding: DecodingKey,
}

/// Decrypted authentication keys by id, loaded on first use. Deleting a key evicts it at once
/// (here, and on other instances through `invalidation`); `CONFIDANT_KEY_CACHE_TTL` bounds how long
/// an instance that missed the notice keeps using it.
pub struct AuthenticationKeyCache(RowCache<VerifyingKey>);

impl AuthenticationKeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self(RowCache::new(MAX_CACHED_KEYS, ttl, UNKNOWN_KEY_TTL))
    }

    /// The live key with this id, from memory or the database.
    pub async fn get(&self, db: &Db, master_key: &MasterKey, id: Uuid) -> StoreResult<Option<Arc<VerifyingKey>>> {
        self.0.get(id, || load_key(db, master_key, id)).await
    }

    /// Forgets a key (deleted, or changed): the next token naming it goes to the database.
    pub async fn invalidate(&self, id: Uuid) {
        self.0.invalidate(id).await;
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

/// Reads and decrypts one authentication key.
async fn load_key(db: &Db, master_key: &MasterKey, id: Uuid) -> StoreResult<Option<VerifyingKey>> {
    let Some(row) = keys::find_authentication_key(db, id).await? else {
        return Ok(None);
    };
    let secret = keys::open_secret(master_key, &row).map_err(crate::store::StoreError::Other)?;
    let agents = match row.agent_ids {
        None => AgentAccess::All,
        Some(ids) => {
            let mut ids = ids.0;
            ids.sort();
            AgentAccess::Only(ids.into())
        }
    };
    Ok(Some(VerifyingKey {
        id: row.id,
        application_id: row.application_id,
        agents,
        decoding: DecodingKey::from_secret(secret.as_bytes()),
    }))
}

fn invalid(message: &str) -> Error {
    Error::unauthorized("invalid_token", message.to_owned())
}

#[derive(Deserialize)]
struct Header {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
}

/// A NumericDate (RFC 7519): a JSON number of seconds. Fractions are allowed and truncated.
fn numeric_date(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f as i64)),
        _ => None,
    }
}

/// Settings of verification that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    pub max_ttl: Duration,
}

/// Verifies a secure user token and returns the scope it grants, or the contract's error.
pub async fn verify(state: &AppState, token: &str) -> Result<UserScope> {
    let (key, sub) = verify_token(
        state.db(),
        state.master_key(),
        state.user_keys(),
        token,
        state.verify_options(),
    )
    .await?;
    state.usage().record(KeyTable::Authentication, key.id);
    Ok(UserScope::from_verified_token(
        key.application_id,
        &sub,
        key.agents.clone(),
    ))
}

/// The verification itself, apart from the application state (benchmarks call it directly).
pub async fn verify_token(
    db: &Db,
    master_key: &MasterKey,
    cache: &AuthenticationKeyCache,
    token: &str,
    options: VerifyOptions,
) -> Result<(Arc<VerifyingKey>, String)> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("the token is larger than 8 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("the token is not a JWT (header.payload.signature)"));
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| invalid("the token header is not base64url"))?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| invalid("the token header is not a JSON object"))?;
    if header.alg.as_ref().and_then(Value::as_str) != Some("HS256") {
        return Err(invalid("the token's alg must be HS256"));
    }
    if header.crit.is_some() {
        return Err(invalid("the token has a crit header, which is not supported"));
    }
    let kid = match header.kid {
        None | Some(Value::Null) => return Err(invalid("the token header has no kid")),
        Some(Value::String(kid)) => kid,
        Some(_) => return Err(invalid("the token's kid is not a string")),
    };
    let unknown_key = || Error::unauthorized("unknown_key", "the token's kid names no live authentication key");
    let key_id = if kid.len() == 36 {
        Uuid::try_parse(&kid).map_err(|_| unknown_key())?
    } else {
        return Err(unknown_key());
    };
    let key = cache.get(db, master_key, key_id).await?.ok_or_else(unknown_key)?;

    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    let verified = jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &key.decoding, Algorithm::HS256)
        .map_err(|_| invalid("the token signature is not base64url"))?;
    if !verified {
        return Err(Error::unauthorized(
            "invalid_signature",
            "the token's signature does not verify with its key",
        ));
    }

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| invalid("the token payload is not base64url"))?;
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|_| invalid("the token payload is not a JSON object"))?;
    let now = chrono::Utc::now().timestamp();
    let exp = match &claims.exp {
        None | Some(Value::Null) => return Err(invalid("the token has no exp")),
        Some(value) => numeric_date(value).ok_or_else(|| invalid("the token's exp is not a number"))?,
    };
    if exp
        > now
            .saturating_add(options.max_ttl.as_secs() as i64)
            .saturating_add(LEEWAY_SECONDS)
    {
        return Err(invalid(
            "the token's exp is further ahead than the maximum token lifetime",
        ));
    }
    if now > exp.saturating_add(LEEWAY_SECONDS) {
        let expired_at = chrono::DateTime::from_timestamp(exp, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        return Err(Error::Unauthorized {
            code: "token_expired",
            message: "the token has expired".into(),
            details: Some(serde_json::json!({ "expired_at": expired_at })),
        });
    }
    if let Some(nbf) = claims.nbf.as_ref().filter(|v| !v.is_null()) {
        let nbf = numeric_date(nbf).ok_or_else(|| invalid("the token's nbf is not a number"))?;
        if nbf > now.saturating_add(LEEWAY_SECONDS) {
            return Err(Error::unauthorized(
                "token_not_yet_valid",
                "the token is not valid yet (nbf is in the future)",
            ));
        }
    }
    let sub = match claims.sub {
        Some(Value::String(sub)) => sub,
        None | Some(Value::Null) => return Err(invalid("the token has no sub")),
        Some(_) => return Err(invalid("the token's sub is not a string")),
    };
    validate_sub(&sub).map_err(|problem| invalid(&format!("the token's sub {problem}")))?;
    Ok((key, sub))
}

/// The data plane's user: the verified secure user token, then the door (`edge::admit`: allowed
/// origins of the path's agent or the application, the user's limits).
impl FromRequestParts<AppState> for UserScope {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = Credentials::read(&parts.headers).user_token()?.ok_or_else(|| {
            Error::MissingCredentials("send a secure user token (X-Secure-User-Token or Authorization: Bearer)".into())
        })?;
        let scope = verify(state, token).await?;
        // The path's agent, if it names one of the application's (its origins replace the
        // application's); whether the key covers it is `AgentScope`'s check.
        let agent_id = path_agent_id(parts, state).await;
        let agent = match agent_id {
            Some(id) => state.agents().get(state.db(), scope.application_id(), id).await?,
            None => None,
        };
        let caller = edge::Caller {
            application_id: scope.application_id(),
            agent: agent.as_deref(),
            user: Some(&scope),
        };
        let application = edge::admit(state, parts, caller).await?;
        let scope = scope.with_policy(
            application.retention.0.store_content,
            application.resumable,
            application.webhook_events,
        );
        if let Some(id) = agent_id {
            // `AgentScope` checks this agent next: no second parse, no second cache lookup.
            parts.extensions.insert(PathAgent { id, agent });
        }
        Ok(scope)
    }
}

/// The agent the route names, as the user's extractor read it for this request (`None`: no
/// agent of the user's application has that id).
#[derive(Clone)]
pub struct PathAgent {
    pub id: Uuid,
    pub agent: Option<Arc<crate::store::agents::Agent>>,
}

/// The `{agent_id}` of the matched route, when it has one and it is a UUID. The raw parameter,
/// not `Path<…>`: deserializing a struct from the path builds a map.
pub async fn path_agent_id(parts: &mut Parts, state: &AppState) -> Option<Uuid> {
    let params = axum::extract::RawPathParams::from_request_parts(parts, state)
        .await
        .ok()?;
    params
        .iter()
        .find(|(name, _)| *name == "agent_id")
        .and_then(|(_, value)| Uuid::try_parse(value).ok())
}
