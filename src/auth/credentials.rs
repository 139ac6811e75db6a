//! Where a request carries its credential: the one place the three headers are read.
//!
//! `X-API-Key: cfd_…`, `X-Secure-User-Token: <jwt>` and `Authorization: Bearer <token>` (an API
//! key when it has the `cfd_` prefix, else an operator access token or a secure user token,
//! depending on the plane). Each plane asks for what it accepts, in its order of preference; a
//! malformed header is an error only for a plane that reads it.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::API_KEY_PREFIX;
use crate::error::{Error, Result};

/// The header a secure user token may travel in instead of `Authorization`.
pub const USER_TOKEN_HEADER: &str = "x-secure-user-token";
const API_KEY_HEADER: &str = "x-api-key";

/// An admin-plane credential, read without verifying it.
pub enum AdminCredential<'a> {
    ApiKey(&'a str),
    OperatorToken(&'a str),
}

/// The credential headers of one request.
pub struct Credentials<'a> {
    api_key: Option<std::result::Result<&'a str, Error>>,
    user_token: Option<std::result::Result<&'a str, Error>>,
    bearer: Option<std::result::Result<&'a str, Error>>,
}

impl<'a> Credentials<'a> {
    pub fn read(headers: &'a HeaderMap) -> Self {
        let text = |name: &str, code: &'static str, what: &'static str| {
            headers.get(name).map(|value| {
                value
                    .to_str()
                    .map(str::trim)
                    .map_err(|_| Error::unauthorized(code, format!("the {what} header is not valid text")))
            })
        };
        let bearer = text(AUTHORIZATION.as_str(), "invalid_token", "Authorization").map(|value| {
            let value = value?;
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
                _ => Err(Error::unauthorized(
                    "invalid_token",
                    "expected `Authorization: Bearer <token>`",
                )),
            }
        });
        Self {
            api_key: text(API_KEY_HEADER, "invalid_api_key", "X-API-Key"),
            user_token: text(USER_TOKEN_HEADER, "invalid_token", "X-Secure-User-Token"),
            bearer,
        }
    }

    /// `X-API-Key`, else a bearer token with the API key prefix.
    fn api_key(&mut self) -> Result<Option<&'a str>> {
        if let Some(key) = self.api_key.take() {
            return key.map(Some);
        }
        match &self.bearer {
            Some(Ok(token)) if token.starts_with(API_KEY_PREFIX) => Ok(Some(*token)),
            _ => Ok(None),
        }
    }

    /// The admin plane: an API key, else an operator access token.
    pub fn admin(mut self) -> Result<Option<AdminCredential<'a>>> {
        if let Some(key) = self.api_key()? {
            return Ok(Some(AdminCredential::ApiKey(key)));
        }
        self.bearer
            .take()
            .transpose()
            .map(|token| token.map(AdminCredential::OperatorToken))
    }

    /// The data plane: `X-Secure-User-Token`, else the bearer token.
    pub fn user_token(mut self) -> Result<Option<&'a str>> {
        self.user_token.take().or(self.bearer.take()).transpose()
    }

    /// Completions: an API key where a user token could stand (an `X-Secure-User-Token` header
    /// means a user, unless an `X-API-Key` is sent too).
    pub fn completions_api_key(mut self) -> Result<Option<&'a str>> {
        if self.api_key.is_none() && self.user_token.is_some() {
            return Ok(None);
        }
        self.api_key()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn each_plane_reads_the_credential_it_accepts() {
        let key = headers(&[("authorization", "Bearer cfd_abc")]);
        assert!(matches!(
            Credentials::read(&key).admin(),
            Ok(Some(AdminCredential::ApiKey("cfd_abc")))
        ));
        assert_eq!(Credentials::read(&key).completions_api_key().unwrap(), Some("cfd_abc"));
        let operator = headers(&[("authorization", "bearer eyJ.x.y")]);
        assert!(matches!(
            Credentials::read(&operator).admin(),
            Ok(Some(AdminCredential::OperatorToken("eyJ.x.y")))
        ));
        assert_eq!(Credentials::read(&operator).user_token().unwrap(), Some("eyJ.x.y"));
        assert_eq!(Credentials::read(&operator).completions_api_key().unwrap(), None);
        let both = headers(&[("x-secure-user-token", "user.jwt"), ("authorization", "Bearer cfd_abc")]);
        assert_eq!(Credentials::read(&both).user_token().unwrap(), Some("user.jwt"));
        assert_eq!(Credentials::read(&both).completions_api_key().unwrap(), None);
        let explicit = headers(&[("x-secure-user-token", "user.jwt"), ("x-api-key", "cfd_k")]);
        assert_eq!(
            Credentials::read(&explicit).completions_api_key().unwrap(),
            Some("cfd_k")
        );
        assert!(Credentials::read(&HeaderMap::new()).admin().unwrap().is_none());
    }

    #[test]
    fn a_malformed_header_is_an_error_for_the_plane_that_reads_it() {
        let basic = headers(&[("authorization", "Basic dXNlcg==")]);
        assert!(Credentials::read(&basic).admin().is_err());
        assert!(Credentials::read(&basic).user_token().is_err());
        // The user token header wins on the data plane; the admin plane never reads it.
        let mut map = headers(&[("authorization", "Bearer op.jwt")]);
        map.insert(USER_TOKEN_HEADER, HeaderValue::from_bytes(b"\xff").unwrap());
        assert!(Credentials::read(&map).user_token().is_err());
        assert!(matches!(
            Credentials::read(&map).admin(),
            Ok(Some(AdminCredential::OperatorToken("op.jwt")))
        ));
    }
}
