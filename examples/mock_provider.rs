//! A fast OpenAI-compatible provider for `make bench`: `POST …/chat/completions` answers a
//! streamed reply of N chunks, either all at once or paced, with no model behind it.
//!
//! The path says what to send: `/{chunks}/{interval_ms}/v1/chat/completions`, so one mock serves
//! every workload (`/50/0/v1` for the fast 50-chunk stream, `/600/50/v1` for 20 chunks a second
//! for 30 s). Each paced chunk's text is `t<microseconds since the epoch> `, the moment it was
//! written, so a client behind Confidant can measure the delay Confidant adds to each chunk.
//!
//! Usage: `mock_provider 127.0.0.1:0` prints `listening on ADDR` and serves until killed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use futures_util::stream;

/// The most chunks and the longest pause a request may ask for.
const MAX_CHUNKS: usize = 100_000;
const MAX_INTERVAL_MS: u64 = 10_000;

fn chunk(content: &str) -> String {
    format!(
        "data: {{\"id\":\"mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\
         \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    )
}

fn ending(chunks: usize) -> String {
    format!(
        "data: {{\"id\":\"mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\
         \"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\
         \"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":{chunks},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
        chunks + 10
    )
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

async fn completions(Path((chunks, interval_ms)): Path<(usize, u64)>, body: Bytes) -> Response {
    if chunks == 0 || chunks > MAX_CHUNKS || interval_ms > MAX_INTERVAL_MS {
        return (StatusCode::BAD_REQUEST, "chunks 1..=100000, interval_ms 0..=10000").into_response();
    }
    drop(body);
    let body = if interval_ms == 0 {
        // All at once: one buffer, the fastest a provider can be.
        let mut all = String::with_capacity(chunks * 150);
        for i in 0..chunks {
            all.push_str(&chunk(&format!("w{i} ")));
        }
        all.push_str(&ending(chunks));
        Body::from(all)
    } else {
        let interval = Duration::from_millis(interval_ms);
        let pieces = stream::unfold(0usize, move |i| async move {
            if i > chunks {
                return None;
            }
            if i == chunks {
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(ending(chunks))), i + 1));
            }
            tokio::time::sleep(interval).await;
            Some((Ok(Bytes::from(chunk(&format!("t{} ", now_micros())))), i + 1))
        });
        Body::from_stream(pieces)
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let app = Router::new().route("/{chunks}/{interval_ms}/v1/chat/completions", post(completions));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on {}", listener.local_addr()?);
    // Small writes go out at once (no waiting for a delayed ACK).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
