//! The data plane's CORS and rate-limit headers (what `crate::edge` decided, on the wire).
//!
//! Data-plane routes (`/v1/agents/…`, `/v1/memories…`) speak CORS: a preflight is answered here
//! (204, the origin echoed, never `*`), and every response to a request with an `Origin` carries
//! `Access-Control-Allow-Origin` for it, refusals included, so a page can read why it was refused.
//! Whether the origin is allowed is decided once the caller is known (`edge::admit`): a preflight
//! carries no credentials. The admin plane sends no CORS headers (the dashboard is same-origin).

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::edge::RateSlot;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOW_HEADERS: &str = "authorization, content-type, x-secure-user-token, x-conversation-id";
const EXPOSE_HEADERS: &str = "x-conversation-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, \
     x-ratelimit-reset, x-vercel-ai-ui-message-stream, x-vercel-ai-data-stream, x-request-id";
const RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATE_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// How long a browser may reuse a preflight's answer.
const MAX_AGE_SECONDS: &str = "600";

fn is_data_plane(path: &str) -> bool {
    path.starts_with("/v1/agents/") || path == "/v1/memories" || path.starts_with("/v1/memories/")
}

/// Runs `inner` on the request, with the data plane's CORS and rate-limit headers around it.
pub async fn data_plane<F, Fut>(mut request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if !is_data_plane(request.uri().path()) {
        return inner(request).await;
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    if let Some(origin) = &origin
        && request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow_origin(headers, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECONDS),
        );
        return response;
    }
    let slot = RateSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = inner(request).await;
    let headers = response.headers_mut();
    let rate = slot.get();
    // Room for all of them at once, rather than the map growing while they are added.
    headers.reserve(if rate.is_some() { 3 } else { 0 } + if origin.is_some() { 3 } else { 1 });
    if let Some(rate) = rate {
        headers.insert(RATE_LIMIT, number(rate.limit));
        headers.insert(RATE_REMAINING, number(rate.remaining));
        headers.insert(RATE_RESET, number(rate.reset));
    }
    match origin {
        Some(origin) => {
            allow_origin(headers, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
        // Caches must not serve a response without CORS headers to a browser that needs them.
        None => {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
    response
}

/// A number as a header's value; below 100 (a reset is at most 60 seconds) from a static table,
/// without the allocation `HeaderValue::from` makes.
fn number(n: u64) -> HeaderValue {
    const UNITS: &str = "0123456789";
    const TENS: &str = concat!(
        "10111213141516171819",
        "20212223242526272829",
        "30313233343536373839",
        "40414243444546474849",
        "50515253545556575859",
        "60616263646566676869",
        "70717273747576777879",
        "80818283848586878889",
        "90919293949596979899",
    );
    match n as usize {
        n @ 0..=9 => HeaderValue::from_static(&UNITS[n..=n]),
        n @ 10..=99 => HeaderValue::from_static(&TENS[2 * (n - 10)..2 * (n - 10) + 2]),
        _ => HeaderValue::from(n),
    }
}

fn allow_origin(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_decimals() {
        for n in (0..=1_000).chain([u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(number(n).to_str().unwrap(), n.to_string(), "{n}");
        }
    }
}
