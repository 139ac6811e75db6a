//! "Test connection" for a provider: one `GET {base_url}/models` with its key, bounded in time and
//! size, reported in words an operator can act on. Nothing of the upstream body is passed on but
//! the model ids.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

/// The most of a `/models` answer read (a long model list is a few hundred KiB).
const MAX_BODY: usize = 1 << 20;
/// The most model ids reported.
const MAX_MODELS: usize = 100;

/// How a provider answered a test.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderTest {
    /// Whether the provider answered `GET {base_url}/models` with a success.
    pub ok: bool,
    /// The provider's HTTP status, when it answered at all.
    pub status: Option<u16>,
    /// What happened, in a sentence.
    pub message: String,
    /// Model ids the provider listed (at most 100), for an agent's `model.model`.
    pub models: Vec<String>,
    /// How long the test took, in milliseconds.
    pub elapsed_ms: u64,
}

/// Asks `{base_url}/models`; `timeout` bounds the whole exchange.
pub async fn probe(client: &reqwest::Client, base_url: &str, api_key: Option<&str>, timeout: Duration) -> ProviderTest {
    let started = Instant::now();
    let (ok, status, message, models) = match tokio::time::timeout(timeout, ask(client, base_url, api_key)).await {
        Ok(answer) => answer,
        Err(_) => (
            false,
            None,
            format!("the provider did not answer within {} s", timeout.as_secs()),
            Vec::new(),
        ),
    };
    ProviderTest {
        ok,
        status,
        message,
        models,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

async fn ask(
    client: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
) -> (bool, Option<u16>, String, Vec<String>) {
    let mut request = client.get(format!("{}/models", base_url.trim_end_matches('/')));
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            let connect = error.is_connect();
            tracing::info!(error = %error.without_url(), "provider test: unreachable");
            let message = if connect {
                "the provider could not be reached (connection refused, or its address is not allowed)"
            } else {
                "the connection to the provider failed"
            };
            return (false, None, message.into(), Vec::new());
        }
    };
    let status = response.status();
    if !status.is_success() {
        let message = match status.as_u16() {
            401 | 403 => format!("the provider refused the API key ({})", status.as_u16()),
            404 => "the provider has no /models here: check that the base URL ends at /v1".into(),
            code => format!("the provider answered {code}"),
        };
        return (false, Some(status.as_u16()), message, Vec::new());
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let problem = match chunk {
            Ok(chunk) if body.len() + chunk.len() <= MAX_BODY => {
                body.extend_from_slice(&chunk);
                continue;
            }
            Ok(_) => "connected, but its model list is longer than 1 MiB and was not read",
            Err(_) => "connected, but the connection broke while it listed its models",
        };
        return (true, Some(status.as_u16()), problem.into(), Vec::new());
    }
    let models = model_ids(&body);
    let message = if models.is_empty() {
        "connected; the provider listed no models".to_owned()
    } else {
        format!("connected; the provider lists {} model(s)", models.len())
    };
    (true, Some(status.as_u16()), message, models)
}

/// The ids of OpenAI's `{"data": [{"id": …}]}` (others answer `{"models": [...]}`, tried too).
fn model_ids(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let list = value
        .get("data")
        .or_else(|| value.get("models"))
        .and_then(|v| v.as_array());
    list.into_iter()
        .flatten()
        .filter_map(|m| m.get("id").or_else(|| m.get("name")).and_then(|id| id.as_str()))
        .filter(|id| id.len() <= 256)
        .take(MAX_MODELS)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{MAX_BODY, model_ids, probe};

    #[tokio::test]
    async fn a_model_list_over_the_bound_is_not_read_and_says_so() {
        let big = format!("{{\"data\": [{{\"id\": \"{}\"}}]}}", "m".repeat(MAX_BODY));
        let app = axum::Router::new().route("/v1/models", axum::routing::get(move || async move { big }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let answer = probe(&client, &base, None, std::time::Duration::from_secs(5)).await;
        assert!(answer.ok);
        assert!(answer.models.is_empty());
        assert!(answer.message.contains("longer than 1 MiB"), "{}", answer.message);
    }

    #[test]
    fn model_ids_are_read_from_openai_and_ollama_shapes() {
        assert_eq!(
            model_ids(br#"{"data": [{"id": "gpt-4o"}, {"id": "o3"}]}"#),
            ["gpt-4o", "o3"]
        );
        assert_eq!(model_ids(br#"{"models": [{"name": "llama3"}]}"#), ["llama3"]);
        assert!(model_ids(b"not json").is_empty());
        assert!(model_ids(br#"{"data": "nope"}"#).is_empty());
    }
}
