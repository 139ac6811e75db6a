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
    /// Tool calls the client would see: (id, name, arguments), in order.
    pub tool_calls: Vec<(String, String, Value)>,
    /// Results of server tools: (call id, output).
    pub tool_results: Vec<(String, Value)>,
    /// Model calls (steps) the stream showed.
    pub steps: usize,
    /// The finish reason, where the format has one.
    pub finish_reason: Option<String>,
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
    let mut open_tools: Vec<String> = Vec::new();
    let mut started = false;
    for data in sse_events(body) {
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).map_err(|e| format!("invalid JSON chunk {data}: {e}"))?;
        let id = chunk["id"].as_str().map(str::to_owned);
        match chunk["type"].as_str().ok_or("chunk without type")? {
            "start" => started = true,
            "start-step" => out.steps += 1,
            "finish-step" => {}
            "tool-input-start" => {
                let call = chunk["toolCallId"]
                    .as_str()
                    .ok_or("tool-input-start without toolCallId")?;
                open_tools.push(call.to_owned());
            }
            "tool-input-delta" => {
                let call = chunk["toolCallId"]
                    .as_str()
                    .ok_or("tool-input-delta without toolCallId")?;
                if !open_tools.iter().any(|c| c == call) {
                    return Err(format!("tool-input-delta for {call} without tool-input-start"));
                }
            }
            "tool-input-available" => out.tool_calls.push((
                chunk["toolCallId"].as_str().ok_or("no toolCallId")?.to_owned(),
                chunk["toolName"].as_str().ok_or("no toolName")?.to_owned(),
                chunk["input"].clone(),
            )),
            "tool-output-available" => out.tool_results.push((
                chunk["toolCallId"].as_str().ok_or("no toolCallId")?.to_owned(),
                chunk["output"].clone(),
            )),
            "tool-output-error" => out.tool_results.push((
                chunk["toolCallId"].as_str().ok_or("no toolCallId")?.to_owned(),
                chunk["errorText"].clone(),
            )),
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
            "f" => out.steps += 1,
            "e" => {}
            "b" | "c" => {}
            "9" => out.tool_calls.push((
                value["toolCallId"].as_str().ok_or("no toolCallId")?.to_owned(),
                value["toolName"].as_str().ok_or("no toolName")?.to_owned(),
                value["args"].clone(),
            )),
            "a" => out.tool_results.push((
                value["toolCallId"].as_str().ok_or("no toolCallId")?.to_owned(),
                value["result"].clone(),
            )),
            "0" => out.text.push_str(value.as_str().ok_or("text part is not a string")?),
            "3" => out.error = Some(value.as_str().ok_or("error part is not a string")?.to_owned()),
            "d" => {
                out.finished = true;
                out.finish_reason = value["finishReason"].as_str().map(str::to_owned);
            }
            other => return Err(format!("unknown part code {other}")),
        }
    }
    Ok(out)
}

/// OpenAI chat.completion.chunk stream, as the OpenAI SDKs read it (an `error` chunk raises).
pub fn openai(body: &str) -> Result<Assembled, String> {
    let mut out = Assembled::default();
    let mut calls: Vec<(String, String, String)> = Vec::new();
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
        // Tool calls come in fragments keyed by index: the first names the call.
        for fragment in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = fragment["index"].as_u64().ok_or("a tool call fragment without index")? as usize;
            if index == calls.len() {
                calls.push((
                    fragment["id"].as_str().ok_or("a new tool call without id")?.to_owned(),
                    fragment["function"]["name"]
                        .as_str()
                        .ok_or("a new tool call without name")?
                        .to_owned(),
                    String::new(),
                ));
            }
            let call = calls.get_mut(index).ok_or("a tool call fragment out of order")?;
            call.2
                .push_str(fragment["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
            out.finish_reason = Some(reason.to_owned());
        }
    }
    for (id, name, arguments) in calls {
        let arguments = serde_json::from_str(&arguments).map_err(|e| format!("tool arguments are not JSON: {e}"))?;
        out.tool_calls.push((id, name, arguments));
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
        match event["type"].as_str() {
            Some("text_delta") => out.text.push_str(event["delta"].as_str().unwrap_or_default()),
            Some("tool_call") => out.tool_calls.push((
                event["id"].as_str().unwrap_or_default().to_owned(),
                event["name"].as_str().unwrap_or_default().to_owned(),
                event["arguments"].clone(),
            )),
            Some("tool_result") => out.tool_results.push((
                event["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                event["output"].clone(),
            )),
            _ => {}
        }
    }
    Ok(out)
}

/// AG-UI's SSE events, checked in order as `@ag-ui/client` verifies them: one run, text content
/// only inside its message, tool arguments only inside their call.
pub fn ag_ui(body: &str) -> Result<Assembled, String> {
    let mut out = Assembled::default();
    let mut run_started = false;
    let mut text: Option<String> = None;
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut open_call: Option<String> = None;
    for data in sse_events(body) {
        let event: Value = serde_json::from_str(&data).map_err(|e| format!("invalid JSON event {data}: {e}"))?;
        let kind = event["type"].as_str().ok_or("event without type")?;
        if !run_started && kind != "RUN_STARTED" {
            return Err(format!("{kind} before RUN_STARTED"));
        }
        if out.finished {
            return Err(format!("{kind} after the run finished"));
        }
        let field = |name: &str| {
            event[name]
                .as_str()
                .map(str::to_owned)
                .ok_or(format!("{kind} without {name}"))
        };
        match kind {
            "RUN_STARTED" => {
                field("threadId")?;
                field("runId")?;
                run_started = true;
            }
            "TEXT_MESSAGE_START" => {
                if text.is_some() {
                    return Err("a text message started inside another".into());
                }
                text = Some(field("messageId")?);
                out.steps += 1;
            }
            "TEXT_MESSAGE_CONTENT" => {
                if text.as_deref() != Some(field("messageId")?.as_str()) {
                    return Err("content outside its text message".into());
                }
                let delta = field("delta")?;
                if delta.is_empty() {
                    return Err("an empty delta".into());
                }
                out.text.push_str(&delta);
            }
            "TEXT_MESSAGE_END" => text = None,
            "TOOL_CALL_START" => {
                if open_call.is_some() || text.is_some() {
                    return Err("a tool call started inside another message".into());
                }
                open_call = Some(field("toolCallId")?);
                calls.push((field("toolCallId")?, field("toolCallName")?, String::new()));
            }
            "TOOL_CALL_ARGS" => {
                let id = field("toolCallId")?;
                if open_call.as_deref() != Some(id.as_str()) {
                    return Err("arguments outside their call".into());
                }
                calls.last_mut().unwrap().2.push_str(&field("delta")?);
            }
            "TOOL_CALL_END" => open_call = None,
            "TOOL_CALL_RESULT" => {
                field("messageId")?;
                out.tool_results
                    .push((field("toolCallId")?, Value::String(field("content")?)));
            }
            "RUN_FINISHED" => out.finished = true,
            "RUN_ERROR" => {
                out.error = Some(field("message")?);
                out.finished = true;
            }
            other => return Err(format!("unknown event {other}")),
        }
    }
    for (id, name, arguments) in calls {
        let arguments = serde_json::from_str(&arguments).map_err(|e| format!("tool arguments are not JSON: {e}"))?;
        out.tool_calls.push((id, name, arguments));
    }
    Ok(out)
}
