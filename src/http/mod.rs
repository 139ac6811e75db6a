//! The HTTP API: one module per resource, each exposing an `OpenApiRouter`, so the routes served and
//! the OpenAPI document come from the same source.
//!
//! Admin-plane handlers check the caller's access to the path's application first and shadow the
//! path's bare `app_id` with the `ApplicationId` that check proved; the store's admin functions
//! take only that type.

pub mod agent_tools;
pub mod agents;
pub mod applications;
pub mod auth;
pub mod browse;
pub mod completions;
pub mod conversations;
pub mod edge;
pub mod feedback;
pub mod keys;
pub mod memories;
pub mod openapi;
pub mod providers;
pub mod service;
pub mod streams;
pub mod usage;
pub mod users;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath};
use axum::http::{HeaderName, Request};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::AppState;
use crate::error::Error;
use crate::store::PageRequest;
use crate::store::scope::{AgentScope, UserScope};
use crate::store::user_data::RecentCursor;

/// `axum::Json` whose rejections are the contract's `invalid_request` / `payload_too_large`, and
/// which refuses text holding U+0000 (`validation_failed`) before it reaches either database
/// (PostgreSQL cannot store it in text; SQLite would, so both refuse it alike).
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request<axum::body::Body>, state: &S) -> Result<Self, Error> {
        if !json_content_type(request.headers()) {
            return Err(Error::InvalidRequest(
                "expected a request body with Content-Type: application/json".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| match rejection.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
                _ => Error::InvalidRequest(rejection.body_text()),
            })?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        if holds_nul(&bytes) {
            return Err(Error::invalid_field("body", "text must not contain U+0000"));
        }
        Ok(Self(value))
    }
}

/// `application/json`, or any `application/*+json`, as axum accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether a JSON document holds the escape `\u0000` (the only way JSON text can carry U+0000):
/// a `\` starting an escape, not one that is itself escaped.
fn holds_nul(json: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, byte) in json.iter().enumerate() {
        if *byte == b'\\' {
            backslashes += 1;
            continue;
        }
        if backslashes % 2 == 1 && *byte == b'u' && json.get(i + 1..i + 5) == Some(b"0000") {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// The buffer a JSON response is written into starts this large: a page of a list fits. axum's
/// starts at 128 bytes and doubles, and under the list load `perf` found those reallocations
/// waiting on glibc's arena locks (the other worker freeing into the same arena).
const JSON_BODY_CAPACITY: usize = 1024;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(JSON_BODY_CAPACITY);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => {
                let mut response = axum::body::Body::from(body).into_response();
                response.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => Error::internal(error).into_response(),
        }
    }
}

/// Every `/v1/agents/{agent_id}/…` route: the verified secure user token, and the path's agent
/// checked against it (`not_found` outside the token's application, `agent_not_in_scope` outside
/// its key's agents).
impl FromRequestParts<AppState> for AgentScope {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, Error> {
        let user = UserScope::from_request_parts(parts, state).await?;
        // The user's extractor read the path's agent already.
        if let Some(read) = parts.extensions.remove::<crate::auth::user_token::PathAgent>() {
            return Ok(AgentScope::of(user, read.agent)?);
        }
        let agent_id = crate::auth::user_token::path_agent_id(parts, state)
            .await
            .ok_or_else(|| Error::not_found("agent"))?;
        Ok(AgentScope::check(state.db(), state.agents(), user, agent_id).await?)
    }
}

/// `axum::extract::Path` whose rejection (a malformed id) is the contract's `not_found`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejection is `invalid_request`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

/// A timestamp in responses: RFC 3339, UTC.
pub fn timestamp(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Serializes a response's timestamp with the bytes chrono's `Serialize` writes (RFC 3339, `Z`,
/// a fraction of 0, 3, 6 or 9 digits, whichever is exact), into a stack buffer: chrono's goes
/// through `fmt` a character at a time and cost 3,300 instructions a timestamp, 12 % of a list
/// of three conversations (callgrind). Years outside 0–9999 and leap seconds are left to chrono.
pub fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 30];
    match write_rfc3339(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => at.serialize(serializer),
    }
}

/// [`rfc3339`] for an optional timestamp.
pub fn rfc3339_option<S: serde::Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

fn write_rfc3339<'a>(at: &DateTime<Utc>, out: &'a mut [u8; 30]) -> Option<&'a str> {
    use chrono::{Datelike, Timelike};
    /// Writes `value` as `N` decimal digits at `at`.
    fn digits<const N: usize>(out: &mut [u8], at: usize, mut value: u32) {
        for i in (0..N).rev() {
            out[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
    let nanos = at.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    digits::<4>(out, 0, year);
    out[4] = b'-';
    digits::<2>(out, 5, at.month());
    out[7] = b'-';
    digits::<2>(out, 8, at.day());
    out[10] = b'T';
    digits::<2>(out, 11, at.hour());
    out[13] = b':';
    digits::<2>(out, 14, at.minute());
    out[16] = b':';
    digits::<2>(out, 17, at.second());
    let mut end = 19;
    if nanos != 0 {
        out[19] = b'.';
        end = if nanos.is_multiple_of(1_000_000) {
            digits::<3>(out, 20, nanos / 1_000_000);
            23
        } else if nanos.is_multiple_of(1_000) {
            digits::<6>(out, 20, nanos / 1_000);
            26
        } else {
            digits::<9>(out, 20, nanos);
            29
        };
    }
    out[end] = b'Z';
    std::str::from_utf8(&out[..=end]).ok()
}

/// `?limit=&cursor=` of every listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1..100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    pub fn page(&self) -> Result<PageRequest, Error> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(Error::InvalidRequest("limit must be between 1 and 100".into()));
        }
        let before = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(decode_cursor(cursor)?),
        };
        Ok(PageRequest {
            limit: limit.into(),
            before,
        })
    }
}

fn decode_cursor(cursor: &str) -> Result<Uuid, Error> {
    let bad = || Error::InvalidRequest("the cursor is not one this server issued".into());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    Uuid::from_slice(&bytes).map_err(|_| bad())
}

fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// A time given as RFC 3339 or as a day; a day means its start (`end: false`) or its end.
pub fn parse_time(field: &str, text: &str, end: bool) -> Result<i64, Error> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc).timestamp_micros());
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::invalid_field(field, "must be an RFC 3339 time or a day as YYYY-MM-DD"))?;
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_micros();
    Ok(if end { start + 86_400_000_000 - 1 } else { start })
}

/// A newest-first listing's page: its size (1..100, default 20) and where it continues (`cursor`,
/// a `next_cursor` this server issued).
pub fn recent_page(limit: Option<u32>, cursor: Option<&str>) -> Result<(u64, Option<RecentCursor>), Error> {
    let limit = ListParams { limit, cursor: None }.page()?.limit;
    let after = cursor.filter(|c| !c.is_empty()).map(decode_recent_cursor).transpose()?;
    Ok((limit, after))
}

/// A newest-first listing's cursor: the last row's update time and id.
pub fn encode_recent_cursor(cursor: RecentCursor) -> String {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&cursor.updated_at.to_be_bytes());
    bytes.extend_from_slice(cursor.id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_recent_cursor(text: &str) -> Result<RecentCursor, Error> {
    let bad = || Error::InvalidRequest("the cursor is not one this server issued".into());
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    if bytes.len() != 24 {
        return Err(bad());
    }
    let updated_at = i64::from_be_bytes(bytes[..8].try_into().map_err(|_| bad())?);
    let id = Uuid::from_slice(&bytes[8..]).map_err(|_| bad())?;
    Ok(RecentCursor { updated_at, id })
}

/// Declares the page type of a listing: `{"data": [...], "next_cursor": "..." | null}`. Concrete
/// types (rather than a generic `Page<T>`) make the OpenAPI document reference the item schema, so
/// generated clients get one model per resource.
macro_rules! page_of {
    ($($page:ident => $item:ty),* $(,)?) => {$(
        #[doc = concat!("One page of a listing of `", stringify!($item), "`.")]
        #[derive(Serialize, ToSchema)]
        pub struct $page {
            pub data: Vec<$item>,
            /// Pass as `cursor` to get the next page; `null` on the last page.
            #[schema(required = true)]
            pub next_cursor: Option<String>,
        }

        impl $page {
            pub fn new<R>(rows: Vec<R>, next: Option<Uuid>, view: impl FnMut(R) -> $item) -> Self {
                Self { data: rows.into_iter().map(view).collect(), next_cursor: next.map(encode_cursor) }
            }
        }
    )*};
}

page_of! {
    ApplicationPage => applications::ApplicationView,
    MemberPage => applications::MemberView,
    AgentPage => agents::AgentView,
    AuthenticationKeyPage => keys::AuthenticationKeyView,
    ApiKeyPage => keys::ApiKeyView,
    ProviderPage => providers::ProviderView,
    MemoryPage => memories::MemoryView,
    DeliveryPage => webhooks::DeliveryView,
}

/// Checks a display name: 1..=200 characters, not blank.
pub fn validate_name(field: &str, name: &str) -> Result<String, Error> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    if trimmed.chars().count() > 200 {
        return Err(Error::invalid_field(field, "must be at most 200 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::invalid_field(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(auth::router())
        .merge(applications::router())
        .merge(agents::router())
        .merge(keys::router())
        .merge(providers::router())
        .merge(users::router())
        .merge(usage::router())
        .merge(conversations::router())
        .merge(browse::router())
        .merge(feedback::router())
        .merge(memories::router())
        .merge(completions::router())
        .merge(streams::router())
        .merge(webhooks::router())
        .merge(service::router())
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_routes().split_for_parts();
    openapi::finish(&mut doc);
    doc
}

async fn not_found() -> Error {
    Error::NotFound("no such route".into())
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// Counts every answered request for `/metrics` (time to the response head).
async fn count_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .metrics()
        .observe_request(response.status().as_u16(), started.elapsed());
    response
}

/// Bounds the time to a response head (`CONFIDANT_REQUEST_TIMEOUT`). Turns are bounded by the
/// turn timeout instead (a whole reply may take longer than an ordinary request), and streamed
/// bodies by the send timeout. A request cut here is dropped, with whatever it awaited.
async fn request_deadline(state: &AppState, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if crate::edge::is_turn(request.extensions()) {
        return next.run(request).await;
    }
    match tokio::time::timeout(state.settings().request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!("request timed out");
            Error::TimedOut.into_response()
        }
    }
}

/// One layer for the data plane's CORS and rate headers (`edge`) and every request's deadline:
/// each `from_fn` layer costs a boxed future per request.
async fn edge_and_deadline(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    edge::data_plane(request, |request| request_deadline(&state, request, next)).await
}

/// The `x-request-id` of a request that came without one: a UUID (version 8, a layout of our
/// own) made of a random number drawn once per process and a counter, so ids are unique within
/// an instance and, with overwhelming likelihood, across instances. tower-http's
/// `MakeRequestUuid` drew a random UUID per request, one `getrandom` system call each (strace:
/// 207 for 200 requests).
#[derive(Clone)]
struct RequestIds {
    prefix: u64,
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut prefix = [0u8; 8];
        getrandom::fill(&mut prefix).expect("the operating system's random source is available");
        Self {
            prefix: u64::from_ne_bytes(prefix),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next(&self) -> Uuid {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.prefix.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = self.next().hyphenated().encode_lower(&mut text);
        axum::http::HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// Answers a panic with the contract's `internal` body; the panic itself is logged.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    Error::Internal(format!("handler panicked: {}", detail.unwrap_or_default()).into()).into_response()
}

pub fn router(state: AppState) -> axum::Router {
    let request_id = HeaderName::from_static("x-request-id");
    let (routes, _) = api_routes().split_for_parts();
    let max_body = state.settings().max_body_bytes;
    routes
        .merge(service::docs_router())
        .merge(service::dashboard_router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge_and_deadline))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_request))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The route template, not the path: paths can hold user ids (`sub`).
                    let route = request.extensions().get::<MatchedPath>().map_or("-", |p| p.as_str());
                    tracing::info_span!("request", method = %request.method(), route, request_id = %id)
                })
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-secure-user-token"),
        ]))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RequestIds::new()))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::holds_nul;

    #[test]
    fn request_ids_are_distinct_uuids() {
        let ids = super::RequestIds::new();
        let other = super::RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = ids.next();
            assert_eq!(id.get_version_num(), 8);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(seen.insert(id), "{id} twice");
        }
        // Another process (here, another generator) starts from another random number.
        assert!(!seen.contains(&other.next()));
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        use chrono::{DateTime, TimeZone, Utc};
        #[derive(serde::Serialize)]
        struct Fast(#[serde(serialize_with = "super::rfc3339")] DateTime<Utc>);
        let mut cases: Vec<DateTime<Utc>> = vec![
            DateTime::UNIX_EPOCH,
            Utc.with_ymd_and_hms(2026, 12, 6, 4, 50, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            // The last nanosecond before a leap second.
            Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(999_999_999),
            // The leap second itself, which chrono writes as :60.
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        // Every kind of fraction: whole seconds, milliseconds, microseconds, nanoseconds, over a
        // spread of dates (a simple generator: the test needs variety, not randomness).
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let seconds = (seed % 253_402_300_800) as i64; // up to 9999-12-31
            let nanos = match i % 4 {
                0 => 0,
                1 => (seed >> 40) as u32 % 1000 * 1_000_000,
                2 => (seed >> 34) as u32 % 1_000_000 * 1000,
                _ => (seed >> 32) as u32 % 1_000_000_000,
            };
            cases.push(DateTime::from_timestamp(seconds, nanos).unwrap());
        }
        for at in cases {
            assert_eq!(
                serde_json::to_string(&Fast(at)).unwrap(),
                serde_json::to_string(&at).unwrap(),
                "{at:?}"
            );
        }
    }

    #[test]
    fn only_an_escaped_nul_counts() {
        assert!(holds_nul(br#"{"content":"a\u0000b"}"#));
        assert!(holds_nul(br#"{"content":"\\\u0000"}"#));
        // A backslash written out, then the letters u0000: no NUL.
        assert!(!holds_nul(br#"{"content":"\\u0000"}"#));
        assert!(holds_nul(br#"{"content":"\u00001"}"#));
        assert!(!holds_nul(br#"{"content":"\u0001 and u0000"}"#));
    }
}
