//! Stream readers that parse each wire format the way its real client library does, and fail
//! the way it would on anything it would reject.

use serde_json::Value;

/// What a client assembled from a stream.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Assembled {
    pub text: String,
    /// The error the client surfaced, if any.
    pub error: Option<String>,
    /// Whether the stream reached the format's terminator.
    pub finished: bool,
}

/// SSE events' `data` payloads (`\n\n` framing; comments and other fields skipped).
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The AI SDK 5 UI message stream, validated chunk by chunk as `useChat` does: unknown types
/// and a `text-delta` without its `text-start` are errors.
pub fn ai_sdk(body: &str) -> Result<Assembled, String> {
    let mut out = Assembled::default();
    let mut open_texts: Vec<String> = Vec::new();
    let mut started = false;
    for data in sse_events(body) {
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).map_err(|e| format!("invalid JSON chunk {data}: {e}"))?;
        let id = chunk["id"].as_str().map(str::to_owned);
        match chunk["type"].as_str().ok_or("chunk without type")? {
            "start" => started = true,
            "start-step" | "finish-step" => {}
            "text-start" => open_texts.push(id.ok_or("text-start without id")?),
            "text-delta" => {
                let id = id.ok_or("text-delta without id")?;
                if !open_texts.contains(&id) {
                    return Err(format!("text-delta for {id} without text-start"));
                }
                out.text
                    .push_str(chunk["delta"].as_str().ok_or("text-delta without delta")?);
            }
            "text-end" => {
                let id = id.ok_or("text-end without id")?;
                open_texts.retain(|open| open != &id);
            }
            "finish" => out.finished = true,
            "error" => out.error = Some(chunk["errorText"].as_str().ok_or("error without errorText")?.to_owned()),
            other => return Err(format!("unknown chunk type {other}")),
        }
    }
    if !started {
        return Err("no start chunk".into());
    }
    Ok(out)
}

/// The AI SDK 4 data stream: `code:json` lines.
pub fn ai_sdk_4(body: &str) -> Result<Assembled, String> {
    let mut out = Assembled::default();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let (code, json) = line
            .split_once(':')
            .ok_or_else(|| format!("not a data stream line: {line}"))?;
        let value: Value = serde_json::from_str(json).map_err(|e| format!("bad JSON in {line}: {e}"))?;
        match code {
            "f" | "e" => {}
            "0" => out.text.push_str(value.as_str().ok_or("text part is not a string")?),
            "3" => out.error = Some(value.as_str().ok_or("error part is not a string")?.to_owned()),
            "d" => out.finished = true,
            other => return Err(format!("unknown part code {other}")),
        }
    }
    Ok(out)
}

/// OpenAI chat.completion.chunk stream, as the OpenAI SDKs read it (an `error` chunk raises).
pub fn openai(body: &str) -> Result<Assembled, String> {
    let mut out = Assembled::default();
    for data in sse_events(body) {
        if data == "[DONE]" {
            out.finished = true;
            break;
        }
        let chunk: Value = serde_json::from_str(&data).map_err(|e| format!("invalid JSON chunk: {e}"))?;
        if let Some(error) = chunk.get("error") {
            out.error = Some(error["message"].as_str().unwrap_or("error").to_owned());
            break;
        }
        if chunk["object"] != "chat.completion.chunk" {
            return Err(format!("not a chunk: {data}"));
        }
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            out.text.push_str(text);
        }
    }
    Ok(out)
}

/// DeltaKit's reader: JSON `data:` events (others skipped), `text_delta`, stop at `[DONE]`.
pub fn deltakit(body: &str) -> Result<Assembled, String> {
    let mut out = Assembled::default();
    for data in sse_events(body) {
        if data == "[DONE]" {
            out.finished = true;
            break;
        }
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        if event["type"] == "text_delta" {
            out.text.push_str(event["delta"].as_str().unwrap_or_default());
        }
    }
    Ok(out)
}
