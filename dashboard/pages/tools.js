// Tools in the dashboard: an agent's tool settings, and the Try-it panel's turns with their tool
// calls and results (DeltaKit's stream: `text_delta`, `tool_call`, `tool_result`).

import { field, h } from "/dashboard/dom.js";
import { FieldError } from "/dashboard/ui.js";

/** Parses a JSON text field, marking the field when it is not JSON. */
function parseJson(name, text, empty) {
  if (!text.trim()) return empty;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new FieldError(name, `This is not valid JSON (${error.message}).`);
  }
}

/** The agent's tool settings: memory tools, steps per turn, client tools and MCP servers. */
export function toolSettings(agent) {
  const memoryTools = h("input", { type: "checkbox", checked: agent.memory_tools });
  const maxSteps = h("input", { type: "number", min: 1, max: 20, value: agent.max_steps });
  const tools = h("textarea", { class: "mono", rows: 6, spellcheck: "false", maxlength: 262144 });
  tools.value = agent.tools.length ? JSON.stringify(agent.tools, null, 2) : "";
  tools.placeholder = '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]';
  const servers = h("textarea", { class: "mono", rows: 4, spellcheck: "false", maxlength: 65536 });
  // Header values are write-only: left out, the stored ones stay.
  servers.value = agent.mcp_servers.length
    ? JSON.stringify(agent.mcp_servers.map(({ headers, ...server }) => server), null, 2)
    : "";
  servers.placeholder = '[{"name": "docs", "url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer …"}}]';
  const stored = agent.mcp_servers.filter((s) => s.headers.length).map((s) => `${s.name}: ${s.headers.join(", ")}`);
  return {
    nodes: [
      h("h3", { text: "Tools" }),
      field("Let the model save and search the user's own memory (memorize, search_memory)", memoryTools, { inline: true, name: "memory_tools" }),
      field("Most model calls in one turn", maxSteps, { name: "max_steps", hint: "1 to 20: each tool round trip is one more call." }),
      field("Client tools (JSON)", tools, { name: "tools", hint: "Functions your app runs, in OpenAI's function shape. The reply stops at a call; your app sends the result." }),
      field("MCP servers (JSON)", servers, {
        name: "mcp_servers",
        hint: stored.length
          ? `Servers the service calls: name, url, headers, allowed_tools. Header values are never shown; stored now: ${stored.join("; ")}. Leave "headers" out to keep them.`
          : 'Servers the service calls: name, url, headers, allowed_tools. Header values are write-only: add "headers": {"Authorization": "Bearer …"} to set them.',
      }),
    ],
    read() {
      return {
        memory_tools: memoryTools.checked,
        max_steps: Number(maxSteps.value) || 5,
        tools: parseJson("tools", tools.value, []),
        mcp_servers: parseJson("mcp_servers", servers.value, []),
      };
    },
  };
}

/** One streamed turn in DeltaKit's format, calling `on.delta`, `on.toolCall`, `on.toolResult`. */
export async function toolTurn(agentId, token, body, on, ApiError) {
  const response = await fetch(`/v1/agents/${agentId}/completions?format=deltakit`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-secure-user-token": token },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const error = await response.json().catch(() => null);
    throw new ApiError(response.status, error);
  }
  await readStream(response, on);
}

/**
 * Picks up the reply in progress in a conversation (after a reload): from its first event, then
 * live. `false` when nothing is in progress.
 */
export async function resumeTurn(agentId, conversationId, token, on, ApiError) {
  const path = `/v1/agents/${agentId}/conversations/${encodeURIComponent(conversationId)}/stream`;
  const response = await fetch(path, { headers: { "x-secure-user-token": token } });
  if (response.status === 204) return false;
  if (!response.ok) {
    const error = await response.json().catch(() => null);
    throw new ApiError(response.status, error);
  }
  await readStream(response, on);
  return true;
}

/** Reads a DeltaKit stream to its `[DONE]`. */
async function readStream(response, on) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        let parsed;
        try {
          parsed = JSON.parse(data);
        } catch {
          continue; // not JSON: skipped, as DeltaKit does
        }
        if (parsed.type === "text_delta") on.delta(parsed.delta);
        else if (parsed.type === "tool_call") on.toolCall(parsed);
        else if (parsed.type === "tool_result") on.toolResult(parsed);
      }
    }
  }
  throw new Error("The reply was cut short.");
}

/** How a tool call reads in the transcript: `name({"arg": …})`. */
export function callText(name, args) {
  return `${name}(${typeof args === "string" ? args : JSON.stringify(args)})`;
}
