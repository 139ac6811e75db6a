//! A real OpenAI-compatible HTTP server on loopback, scripted by each test: it streams chunks,
//! fails, drops the connection, or hangs; it records every request and notices when the client
//! (Confidant) goes away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream;
use serde_json::{Value, json};

/// What the fake does with the next requests.
#[derive(Clone, Debug)]
pub enum Script {
    /// Streams these text chunks (each after `delay`), then a finish chunk, usage and `[DONE]`.
    Reply { chunks: Vec<String>, delay: Duration },
    /// Answers with this status and a body that must never reach a client.
    Status(u16),
    /// Streams these chunks, then breaks the connection.
    DropAfter(Vec<String>),
    /// Streams these chunks, then closes cleanly without a finish or `[DONE]`.
    EndWithoutFinish(Vec<String>),
    /// Streams these chunks, then stays silent forever.
    Hang(Vec<String>),
    /// Streams these chunks, then an event of 5 MiB (past any event a server should take; not
    /// JSON, so a server that read it whole would skip it), then a finish and `[DONE]`.
    Oversized(Vec<String>),
    /// Streams these tool calls (name, JSON arguments), each call's arguments in two fragments,
    /// with the finish reason `tool_calls`.
    ToolCalls(Vec<(String, String)>),
    /// Request n gets script n (the last one repeats).
    Sequence(Vec<Script>),
}

/// A body the fake puts in its error responses; finding it in a client reply is a leak.
pub const UPSTREAM_SECRET: &str = "upstream-body-with-sk-live-SECRET";

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    client_gone: Arc<AtomicBool>,
}

pub struct FakeProvider {
    pub address: SocketAddr,
    shared: Shared,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    pub async fn start(script: Script) -> Self {
        let shared = Shared {
            script: Arc::new(Mutex::new(script)),
            requests: Arc::new(Mutex::new(Vec::new())),
            client_gone: Arc::new(AtomicBool::new(false)),
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/models", axum::routing::get(models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            address,
            shared,
            _server: server,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    pub fn set(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// The requests received so far: (headers, JSON body).
    pub fn requests(&self) -> Vec<(HeaderMap, Value)> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Whether a streaming response was dropped before it ended (the client went away).
    pub fn client_gone(&self) -> bool {
        self.shared.client_gone.load(Ordering::SeqCst)
    }
}

/// `GET /v1/models`: two models, or the scripted status; the request is recorded (no body).
async fn models(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let script = shared.script.lock().unwrap().clone();
    shared.requests.lock().unwrap().push((headers, Value::Null));
    match script {
        Script::Status(code) => (StatusCode::from_u16(code).unwrap(), UPSTREAM_SECRET).into_response(),
        _ => {
            axum::Json(json!({"object": "list", "data": [{"id": "fake-small"}, {"id": "fake-large"}]})).into_response()
        }
    }
}

fn chunk(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "up-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    )
}

/// Sets its flag when dropped before being defused: the body stream was abandoned.
struct DropFlag(Arc<AtomicBool>, bool);

impl DropFlag {
    /// The stream ended normally: its drop is no sign of a client leaving.
    fn defuse(mut self) {
        self.1 = true;
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    let count = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push((headers, body.0));
        requests.len()
    };
    let mut script = shared.script.lock().unwrap().clone();
    if let Script::Sequence(scripts) = script {
        script = scripts[(count - 1).min(scripts.len() - 1)].clone();
    }
    let sse = |frames: Vec<Result<String, std::io::Error>>, delay: Duration, then_hang: bool, flag: Arc<AtomicBool>| {
        let guard = DropFlag(flag, false);
        let body = stream::unfold(
            (frames.into_iter(), guard, then_hang),
            move |(mut frames, guard, hang)| async move {
                match frames.next() {
                    Some(frame) => {
                        tokio::time::sleep(delay).await;
                        Some((frame, (frames, guard, hang)))
                    }
                    None if hang => {
                        std::future::pending::<()>().await;
                        None
                    }
                    None => {
                        guard.defuse();
                        None
                    }
                }
            },
        );
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap()
    };
    let ok = |s: String| Ok::<_, std::io::Error>(s);
    match script {
        Script::Status(code) => (StatusCode::from_u16(code).unwrap(), UPSTREAM_SECRET).into_response(),
        Script::Reply { chunks, delay } => {
            let mut frames: Vec<_> = chunks.iter().map(|c| ok(chunk(c))).collect();
            frames.push(ok(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            )));
            frames.push(ok(format!(
                "data: {}\n\n",
                json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": chunks.len()}})
            )));
            frames.push(ok("data: [DONE]\n\n".into()));
            sse(frames, delay, false, shared.client_gone.clone())
        }
        Script::DropAfter(chunks) => {
            let mut frames: Vec<_> = chunks.iter().map(|c| ok(chunk(c))).collect();
            frames.push(Err(std::io::Error::other("connection reset by the test")));
            sse(
                frames,
                Duration::from_millis(5),
                false,
                Arc::new(AtomicBool::new(false)),
            )
        }
        Script::EndWithoutFinish(chunks) => sse(
            chunks.iter().map(|c| ok(chunk(c))).collect(),
            Duration::from_millis(5),
            false,
            Arc::new(AtomicBool::new(false)),
        ),
        Script::Sequence(_) => (StatusCode::INTERNAL_SERVER_ERROR, "nested sequences").into_response(),
        Script::ToolCalls(calls) => {
            let mut frames = Vec::new();
            for (index, (name, arguments)) in calls.iter().enumerate() {
                let (first, rest) = arguments.split_at(arguments.len() / 2);
                let open = json!({"index": index, "id": format!("call_{count}_{index}"), "type": "function", "function": {"name": name, "arguments": first}});
                let more = json!({"index": index, "function": {"arguments": rest}});
                for fragment in [open, more] {
                    frames.push(ok(format!(
                        "data: {}\n\n",
                        json!({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": null}]})
                    )));
                }
            }
            frames.push(ok(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 20, "completion_tokens": 4}})
            )));
            frames.push(ok("data: [DONE]\n\n".into()));
            sse(frames, Duration::from_millis(1), false, shared.client_gone.clone())
        }
        Script::Oversized(chunks) => {
            let mut frames: Vec<_> = chunks.iter().map(|c| ok(chunk(c))).collect();
            frames.push(ok("data: ".into()));
            frames.extend(std::iter::repeat_n("x".repeat(64 * 1024), 80).map(ok));
            frames.push(ok("\n\n".into()));
            frames.push(ok(format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            )));
            sse(frames, Duration::ZERO, false, Arc::new(AtomicBool::new(false)))
        }
        Script::Hang(chunks) => sse(
            chunks.iter().map(|c| ok(chunk(c))).collect(),
            Duration::from_millis(5),
            true,
            shared.client_gone.clone(),
        ),
    }
}
