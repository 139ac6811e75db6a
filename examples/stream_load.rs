//! Many simultaneous streaming turns for `make bench`: opens N streaming completions at once
//! (each with its own conversation, user tokens taken in turn from a file), reads every one to its
//! end, and prints one JSON line: how many completed, failed, the turn times, and the delay each
//! chunk took from the mock provider to here (the mock writes its clock into each paced chunk as
//! `t<microseconds>`; both run on this machine).
//!
//! Usage: `stream_load URL TOKENS_FILE STREAMS [BODY_JSON]` (BODY_JSON may hold `{i}`, the stream's
//! number, e.g. for its conversation id). Only for loopback benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

struct Outcome {
    ok: bool,
    /// Why a stream did not complete: its status, its error, or how its reply ended.
    failure: Option<String>,
    /// From sending the request to the response's headers.
    headers: Duration,
    turn: Duration,
    delays_us: Vec<u32>,
    chunks: usize,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// Finds each `t<16 digits>` stamp in `text` and records how long ago it was written.
fn stamps(text: &[u8], arrived: u64, delays: &mut Vec<u32>) {
    let mut i = 0;
    while i + 17 <= text.len() {
        if text[i] == b't' && text[i + 1..i + 17].iter().all(u8::is_ascii_digit) {
            let sent: u64 = std::str::from_utf8(&text[i + 1..i + 17])
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            delays.push(u32::try_from(arrived.saturating_sub(sent)).unwrap_or(u32::MAX));
            i += 17;
        } else {
            i += 1;
        }
    }
}

async fn one(client: reqwest::Client, url: Arc<str>, token: String, body: String) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        ok: false,
        failure: None,
        headers: Duration::ZERO,
        turn: Duration::ZERO,
        delays_us: Vec::new(),
        chunks: 0,
    };
    let response = client
        .post(&*url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            // The causes, without the URL (the same for every stream).
            let mut causes = Vec::new();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                causes.push(cause.to_string());
                source = cause.source();
            }
            outcome.failure = Some(format!("request failed: {}", causes.join(": ")));
            return outcome;
        }
    };
    outcome.headers = started.elapsed();
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        outcome.failure = Some(format!(
            "status {status}: {}",
            text.chars().take(160).collect::<String>()
        ));
        return outcome;
    }
    let mut body = response.bytes_stream();
    // A stamp may be split across two reads: keep the last few bytes of the previous one.
    let mut carry: Vec<u8> = Vec::new();
    let mut done = false;
    while let Some(piece) = body.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                outcome.failure = Some(format!("the reply broke: {e}"));
                return outcome;
            }
        };
        let arrived = now_micros();
        outcome.chunks += 1;
        carry.extend_from_slice(&piece);
        stamps(&carry, arrived, &mut outcome.delays_us);
        done |= carry.windows(6).any(|w| w == b"[DONE]");
        // Keep a tail too short to hold a whole stamp (17 bytes), so none is counted twice.
        if !done && piece.windows(6).any(|w| w == b"error") {
            // An error event: the reply's last words say why.
            outcome.failure = Some(String::from_utf8_lossy(&piece).chars().take(200).collect());
        }
        let keep = carry.len().saturating_sub(16);
        carry.drain(..keep);
    }
    outcome.ok = done;
    if !done && outcome.failure.is_none() {
        outcome.failure = Some("the reply ended without [DONE]".into());
    }
    outcome.turn = started.elapsed();
    outcome
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: stream_load URL TOKENS_FILE STREAMS [BODY_JSON]");
        std::process::exit(2);
    }
    let url: Arc<str> = args[1].clone().into();
    let tokens: Vec<String> = std::fs::read_to_string(&args[2])
        .expect("the tokens file")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let streams: usize = args[3].parse().expect("a number of streams");
    let body = args.get(4).cloned().unwrap_or_else(|| {
        r#"{"messages":[{"role":"user","content":"count"}],"conversation_id":"load-{i}","stream":true}"#.into()
    });
    // reqwest is built without a default TLS provider (loopback HTTP needs none, but it asks).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No TCP user timeout and no keepalive probes (reqwest's defaults are 30 s and 15 s): with both,
    // Linux ends a connection that has received nothing for 30 s, and under this load a reply's
    // headers can take longer than that to come (the turn's start waits for the machine).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .tcp_user_timeout(None)
        .tcp_keepalive(None)
        .build()
        .expect("an HTTP client");
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            tokio::spawn(one(
                client.clone(),
                url.clone(),
                token,
                body.replace("{i}", &i.to_string()),
            ))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(streams);
    for task in tasks {
        outcomes.push(task.await.expect("a stream task"));
    }
    let elapsed = started.elapsed();
    let completed = outcomes.iter().filter(|o| o.ok).count();
    let mut turns: Vec<f64> = outcomes.iter().filter(|o| o.ok).map(|o| o.turn.as_secs_f64()).collect();
    turns.sort_by(f64::total_cmp);
    let mut headers: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.ok)
        .map(|o| o.headers.as_secs_f64())
        .collect();
    headers.sort_by(f64::total_cmp);
    let mut delays: Vec<f64> = outcomes
        .iter()
        .flat_map(|o| o.delays_us.iter().map(|&d| f64::from(d) / 1000.0))
        .collect();
    delays.sort_by(f64::total_cmp);
    let reads: usize = outcomes.iter().map(|o| o.chunks).sum();
    let mut failures = std::collections::BTreeMap::<&str, usize>::new();
    for failure in outcomes.iter().filter_map(|o| o.failure.as_deref()) {
        *failures.entry(failure).or_default() += 1;
    }
    let failures = serde_json::to_string(&failures).expect("a map of strings to counts");
    println!(
        "{{\"streams\":{streams},\"failures\":{failures},\"completed\":{completed},\"failed\":{},\"elapsed_s\":{:.2},\"turn_p50_s\":{:.3},\
         \"turn_p99_s\":{:.3},\"headers_p50_s\":{:.3},\"headers_p99_s\":{:.3},\"chunks_stamped\":{},\"reads\":{reads},\"chunk_delay_p50_ms\":{:.2},\
         \"chunk_delay_p99_ms\":{:.2},\"chunk_delay_max_ms\":{:.2}}}",
        streams - completed,
        elapsed.as_secs_f64(),
        percentile(&turns, 0.5),
        percentile(&turns, 0.99),
        percentile(&headers, 0.5),
        percentile(&headers, 0.99),
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(0.0),
    );
}
