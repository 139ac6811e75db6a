//! The one error type of the HTTP API: every failure becomes the contract's JSON body
//! `{"error", "message", "details"?}` with its status.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::StoreError;
use crate::store::scope::ScopeError;

/// A boxed error kept as the source of an internal failure, for the log.
pub use crate::store::BoxError;

/// The contract's error body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "not_found", "message": "no such agent"}))]
pub struct ErrorBody {
    /// Machine-readable error code, fixed by the contract (`not_found`, `invalid_token`, ...).
    pub error: &'static str,
    /// A human sentence describing what went wrong.
    pub message: String,
    /// Extra, code-specific data (`fields` for `validation_failed`, `expired_at` for `token_expired`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Every failure the API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    MissingCredentials(String),
    /// A token was sent but rejected; `code` is one of the contract's 401 codes.
    #[error("{message}")]
    Unauthorized {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    AgentNotInScope(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the configured limit")]
    PayloadTooLarge,
    /// Well-formed but invalid values; `fields` maps a field name to what is wrong with it.
    #[error("{message}")]
    Validation {
        message: String,
        fields: serde_json::Map<String, Value>,
    },
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Over a per-minute limit: 429 with `Retry-After`.
    #[error("too many requests: {scope} allows {limit} per minute; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited {
        scope: &'static str,
        limit: u32,
        retry_after: std::time::Duration,
    },
    /// A daily quota used up: 429 with `Retry-After` until it resets (UTC midnight).
    #[error("quota used up: {scope} allows {limit} per day; it resets in {}s", retry_after.as_secs().max(1))]
    QuotaExceeded {
        scope: &'static str,
        limit: u64,
        retry_after: std::time::Duration,
    },
    /// A browser request from an origin the agent (or application) does not list.
    #[error("{0}")]
    OriginNotAllowed(String),
    #[error("{0}")]
    Upstream(String),
    #[error("the database is unavailable")]
    Unavailable,
    /// The request took longer than `CONFIDANT_REQUEST_TIMEOUT`.
    #[error("the request took longer than this server allows; try again")]
    TimedOut,
    /// A bug or an unexpected failure. The source is logged, never sent.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// A write of memory refused because the application is in privacy mode.
    pub fn privacy_mode() -> Self {
        Self::Forbidden(
            "this application is in privacy mode (retention.store_content is false): memory is not stored".into(),
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("no such {what}"))
    }

    pub fn internal(err: impl Into<BoxError>) -> Self {
        Self::Internal(err.into())
    }

    /// A validation failure on one field.
    pub fn invalid_field(field: impl AsRef<str>, problem: impl Into<String>) -> Self {
        let field = field.as_ref();
        let problem = problem.into();
        let mut fields = serde_json::Map::new();
        fields.insert(field.to_owned(), Value::String(problem.clone()));
        Self::Validation {
            message: format!("{field}: {problem}"),
            fields,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::MissingCredentials(_) | Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::AgentNotInScope(_) | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable | Self::TimedOut => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::MissingCredentials(_) => "missing_credentials",
            Self::Unauthorized { code, .. } => code,
            Self::AgentNotInScope(_) => "agent_not_in_scope",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Validation { .. } => "validation_failed",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::OriginNotAllowed(_) => "origin_not_allowed",
            Self::Upstream(_) => "upstream_error",
            Self::Unavailable | Self::TimedOut => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::Unauthorized { details, .. } => details.clone(),
            Self::Validation { fields, .. } => Some(serde_json::json!({ "fields": Value::Object(fields.clone()) })),
            Self::RateLimited { scope, limit, .. } => Some(serde_json::json!({ "scope": scope, "limit": limit })),
            Self::QuotaExceeded { scope, limit, .. } => Some(serde_json::json!({ "scope": scope, "limit": limit })),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(source) => tracing::error!(error = %source, "internal error"),
            Self::Unavailable => tracing::error!("database unavailable"),
            _ if status.is_server_error() => tracing::warn!(error = %self, "request failed"),
            _ => tracing::debug!(code = self.code(), "request rejected"),
        }
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            details: self.details(),
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::Unauthorized { .. } => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            Self::RateLimited { retry_after, .. } | Self::QuotaExceeded { retry_after, .. } => {
                // Whole seconds, rounded up: never 0, which would invite an immediate retry.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<ScopeError> for Error {
    fn from(err: ScopeError) -> Self {
        match err {
            ScopeError::UnknownAgent => Self::not_found("agent"),
            ScopeError::AgentNotInScope | ScopeError::AppWideMemory => Self::AgentNotInScope(err.to_string()),
            ScopeError::NotOwner => Self::Forbidden(err.to_string()),
            ScopeError::InvalidSub(problem) => Self::invalid_field("sub", problem),
            ScopeError::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound("not found".into()),
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Unavailable(source) => {
                tracing::error!(error = %source, "database unavailable");
                Self::Unavailable
            }
            StoreError::Other(source) => Self::Internal(source),
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::InvalidRequest("expected a request body with Content-Type: application/json".into())
            }
            JsonRejection::BytesRejection(inner) if inner.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::InvalidRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        // A malformed id names nothing that exists; the contract asks for the same answer as any
        // other unknown id.
        match rejection {
            PathRejection::FailedToDeserializePathParams(e) => Self::NotFound(e.body_text()),
            other => Self::Internal(other.body_text().into()),
        }
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Self::InvalidRequest(rejection.body_text())
    }
}
