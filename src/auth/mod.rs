//! Who is calling: operators (password, then access and refresh tokens) and API keys.
//!
//! Operator access tokens are HS256 JWTs signed with a key derived from the master key, carrying
//! the session id (`sid`) so logout takes effect at once. Refresh tokens and API keys are opaque
//! random strings stored only as SHA-256 hashes.

pub mod credentials;
pub mod extract;
pub mod throttle;
pub mod usage;
pub mod user_token;

use std::sync::LazyLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};

/// Prefix of API keys, so they are recognisable in logs of secret scanners and in headers.
pub const API_KEY_PREFIX: &str = "cfd_";
/// Prefix of authentication-key secrets.
pub const AUTHENTICATION_SECRET_PREFIX: &str = "sk-cfd-";
/// Prefix of operator refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "cfr_";

const ACCESS_ISSUER: &str = "confidant";
const ACCESS_AUDIENCE: &str = "confidant-operator";
/// Distinguishes operator access tokens from every other JWT (RFC 8725 §3.11).
const ACCESS_TYP: &str = "at+jwt";

/// Lower-cases and checks an email address.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(Error::invalid_field("email", "must be an email address"));
    }
    Ok(email)
}

/// Passwords: 8 to 1024 bytes (the cap bounds the cost of hashing).
pub fn validate_password(password: &str) -> Result<()> {
    if password.chars().count() < 8 {
        return Err(Error::invalid_field("password", "must be at least 8 characters"));
    }
    if password.len() > 1024 {
        return Err(Error::invalid_field("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

/// Hashes a password with Argon2id (default parameters). CPU-heavy: runs off the async threads.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&crypto::random_bytes::<16>()).map_err(|e| Error::internal(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(e.to_string()))
    })
    .await
    .map_err(Error::internal)?
}

/// A real hash of a random password, so an unknown email costs as much as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::encode_b64(&crypto::random_bytes::<16>()).expect("16-byte salt encodes");
    Argon2::default()
        .hash_password(&crypto::random_bytes::<16>(), &salt)
        .expect("hashing succeeds")
        .to_string()
});

/// Checks a password against a stored hash (or against a dummy when there is none).
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let (hash, real) = match &stored {
            Some(hash) => (hash.as_str(), true),
            None => (DUMMY_HASH.as_str(), false),
        };
        let parsed = PasswordHash::new(hash).map_err(|e| Error::internal(e.to_string()))?;
        Ok(real && Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(Error::internal)?
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    aud: String,
    sub: Uuid,
    sid: Uuid,
    iat: i64,
    exp: i64,
}

/// The operator and session an access token was issued to.
#[derive(Debug, Clone, Copy)]
pub struct AccessToken {
    pub operator_id: Uuid,
    pub session_id: Uuid,
}

/// Signs and checks operator access tokens.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl AccessTokens {
    pub fn new(master_key: &MasterKey, ttl: Duration) -> Self {
        let secret = master_key.access_signing_key();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_issuer(&[ACCESS_ISSUER]);
        validation.set_audience(&[ACCESS_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, operator_id: Uuid, session_id: Uuid) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            iss: ACCESS_ISSUER.into(),
            aud: ACCESS_AUDIENCE.into(),
            sub: operator_id,
            sid: session_id,
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TYP.into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(Error::internal)
    }

    /// Verifies signature, type, issuer, audience and expiry. The session's state is checked by the
    /// caller (see `extract`).
    pub fn verify(&self, token: &str) -> Result<AccessToken> {
        let rejected = |message: &str| Error::unauthorized("invalid_token", message.to_owned());
        if token.len() > 8 * 1024 {
            return Err(rejected("the access token is too large"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| rejected("the access token is malformed"))?;
        if header.typ.as_deref() != Some(ACCESS_TYP) {
            return Err(rejected("this is not an operator access token"));
        }
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        Error::unauthorized("token_expired", "the access token has expired; refresh it")
                    }
                    _ => rejected("the access token is invalid"),
                }
            })?;
        Ok(AccessToken {
            operator_id: data.claims.sub,
            session_id: data.claims.sid,
        })
    }
}

/// A new refresh token and the hash stored for it.
pub fn new_refresh_token() -> (String, [u8; 32]) {
    let token = crypto::random_token::<32>(REFRESH_TOKEN_PREFIX);
    let hash = crypto::sha256(token.as_bytes());
    (token, hash)
}

/// A new API key, the hash stored for it, and the prefix shown in listings.
pub fn new_api_key() -> (String, [u8; 32], String) {
    let key = crypto::random_token::<32>(API_KEY_PREFIX);
    let hash = crypto::sha256(key.as_bytes());
    let prefix = key[..API_KEY_PREFIX.len() + 8].to_owned();
    (key, hash, prefix)
}

/// A new authentication-key secret: `sk-cfd-` and 32 random bytes (base64url). The HMAC key of
/// secure user tokens is this whole string's UTF-8 bytes.
pub fn new_authentication_secret() -> String {
    crypto::random_token::<32>(AUTHENTICATION_SECRET_PREFIX)
}

/// Signs a secure user token, as a company's backend would (for `confidant token mint` and tests).
pub fn mint_user_token(
    kid: &str,
    secret: &str,
    sub: &str,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    #[derive(Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        iat: i64,
        exp: i64,
    }
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &Claims {
            sub,
            iat: now,
            exp: now + ttl.as_secs() as i64,
        },
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify_password("wrong".into(), Some(hash)).await.unwrap());
        assert!(!verify_password("correct horse".into(), None).await.unwrap());
    }

    #[test]
    fn access_tokens_round_trip_and_refuse_other_keys() {
        let tokens = AccessTokens::new(&MasterKey::from_bytes(&[1; 32]), Duration::from_secs(60));
        let (operator, session) = (Uuid::now_v7(), Uuid::now_v7());
        let token = tokens.issue(operator, session).unwrap();
        let verified = tokens.verify(&token).unwrap();
        assert_eq!((verified.operator_id, verified.session_id), (operator, session));
        let other = AccessTokens::new(&MasterKey::from_bytes(&[2; 32]), Duration::from_secs(60));
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn a_user_token_is_not_an_access_token() {
        let master = MasterKey::from_bytes(&[1; 32]);
        let tokens = AccessTokens::new(&master, Duration::from_secs(60));
        let secret = std::str::from_utf8(master.access_signing_key())
            .unwrap_or("x")
            .to_owned();
        let user = mint_user_token("kid", &secret, "alice", Duration::from_secs(60)).unwrap();
        assert!(tokens.verify(&user).is_err());
    }
}
