// Confidant's operator dashboard: a small app on the public REST API, with the operator's access
// token (refreshed when it expires). Every element is built with DOM calls, never from HTML
// strings, so names and secrets from the API cannot inject markup.

import { $, field, h } from "/dashboard/dom.js";
import { callText, resumeTurn, toolSettings, toolTurn } from "/dashboard/tools.js";
import { renderWebhooks } from "/dashboard/webhooks.js";

const state = { access: null, refresh: null, me: null, appId: null, tab: "agents", agents: [], keys: [] };

function status(message, isError = false) {
  const el = $("status");
  el.textContent = message || "";
  el.className = isError ? "error" : "";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

// ---------------------------------------------------------------------------------------------
// API access with refresh

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error;
  }
}

function saveSession() {
  if (state.access) {
    sessionStorage.setItem("confidant.session", JSON.stringify({ access: state.access, refresh: state.refresh }));
  } else {
    sessionStorage.removeItem("confidant.session");
  }
}

async function refreshTokens() {
  if (!state.refresh) return false;
  const response = await fetch("/v1/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh: state.refresh }),
  });
  if (!response.ok) return false;
  const body = await response.json();
  state.access = body.access;
  state.refresh = body.refresh;
  saveSession();
  return true;
}

async function api(method, path, body, retried = false) {
  const headers = { authorization: `Bearer ${state.access}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && !retried && (await refreshTokens())) return api(method, path, body, true);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) {
      endSession();
      renderLogin("Your session has ended; log in again.");
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

/** Runs an action, reporting failures in the status line. */
async function attempt(action, done) {
  try {
    const result = await action();
    if (done) status(done);
    return result;
  } catch (error) {
    status(error.message, true);
    return undefined;
  }
}

function endSession() {
  state.access = state.refresh = state.me = state.appId = null;
  saveSession();
  $("logout").hidden = true;
  $("app-switch").hidden = true;
  $("who").textContent = "";
}

// ---------------------------------------------------------------------------------------------
// Dialogs

function showDialog(title, body, actions) {
  const dialog = $("dialog");
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...[body].flat());
  $("dialog-actions").replaceChildren(
    ...actions.map(([label, value, cls]) => h("button", { value, class: cls, type: value === "cancel" ? "submit" : "submit" }, label)),
  );
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        // Emptied so closed dialogs leave no fields behind (callers keep their own references).
        $("dialog-body").replaceChildren();
        resolve(dialog.returnValue);
      },
      { once: true },
    );
    dialog.showModal();
  });
}

async function confirmAction(title, message, confirmLabel) {
  const answer = await showDialog(title, h("p", { text: message }), [
    ["Cancel", "cancel"],
    [confirmLabel, "confirm", "danger"],
  ]);
  return answer === "confirm";
}

/** Shows a secret once, with a copy button. */
async function showSecret(title, label, secret, extra = []) {
  const copied = h("span", { role: "status", "aria-live": "polite", class: "muted" });
  const copy = h("button", {
    type: "button",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(secret);
        copied.textContent = "Copied.";
      } catch {
        copied.textContent = "Copy failed: select the text and copy it by hand.";
      }
    },
  }, "Copy");
  const body = [
    h("p", { class: "warning", text: "Copy it now: you will not see this again." }),
    h("div", { class: "secret" }, h("div", { text: label, class: "muted" }), h("code", { id: "shown-secret", text: secret })),
    h("p", { class: "row" }, copy, copied),
    ...extra,
  ];
  await showDialog(title, body, [["I have stored it", "ok", "primary"]]);
}

// ---------------------------------------------------------------------------------------------
// Login

function renderLogin(message) {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const response = await fetch("/v1/auth/login", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email: email.value, password: password.value }),
        });
        const body = await response.json().catch(() => null);
        if (!response.ok) {
          status(body?.message || "Login failed.", true);
          return;
        }
        state.access = body.access;
        state.refresh = body.refresh;
        saveSession();
        status("");
        await start();
      },
    },
    h("h1", { text: "Log in" }),
    field("Email", email),
    field("Password", password),
    h("button", { class: "primary", type: "submit" }, "Log in"),
  );
  $("main").replaceChildren(h("section", { class: "login" }, form));
  status(message || "");
  email.focus();
}

// ---------------------------------------------------------------------------------------------
// Frame: applications and tabs

async function start() {
  state.me = await attempt(() => api("GET", "/v1/auth/me"));
  if (!state.me) return;
  $("who").textContent = state.me.email;
  $("logout").hidden = false;
  $("app-switch").hidden = false;
  const select = $("application");
  select.replaceChildren(...state.me.applications.map((a) => h("option", { value: a.id }, a.name)));
  const remembered = sessionStorage.getItem("confidant.app");
  state.appId = state.me.applications.some((a) => a.id === remembered) ? remembered : state.me.applications[0]?.id ?? null;
  if (state.appId) select.value = state.appId;
  // A reload on an agent's page (its Try-it chat included) comes back to it.
  const agent = /^#agent\/([0-9a-f-]{36})$/.exec(location.hash)?.[1];
  if (agent && state.appId) {
    try {
      await renderAgent(agent);
      return;
    } catch {
      history.replaceState(null, "", location.pathname);
    }
  }
  await render();
}

async function render() {
  if (!state.appId) {
    $("main").replaceChildren(
      h("section", { class: "card" }, h("h1", { text: "No application yet" }), h("p", { text: "Create one to define agents and keys." })),
    );
    return;
  }
  sessionStorage.setItem("confidant.app", state.appId);
  if (location.hash) history.replaceState(null, "", location.pathname);
  const tabs = [
    ["agents", "Agents"],
    ["authentication-keys", "Authentication keys"],
    ["api-keys", "API keys"],
    ["providers", "Providers"],
    ["webhooks", "Webhooks"],
    ["conversations", "Conversations"],
    ["feedback", "Feedback"],
    ["settings", "Usage & limits"],
  ];
  const nav = h(
    "nav",
    { class: "tabs", role: "tablist", "aria-label": "Sections" },
    tabs.map(([id, label]) =>
      h("button", { type: "button", role: "tab", "aria-selected": String(state.tab === id), onclick: () => { state.tab = id; render(); } }, label),
    ),
  );
  const panel = h("div", { role: "tabpanel" });
  $("main").replaceChildren(nav, panel);
  const views = {
    agents: renderAgents,
    "authentication-keys": renderAuthenticationKeys,
    "api-keys": renderApiKeys,
    providers: renderProviders,
    webhooks: (panel) => renderWebhooks(panel, { api, attempt, appPath, showSecret, deleteButton, when, render }),
    conversations: renderConversations,
    feedback: renderFeedback,
    settings: renderSettings,
  };
  await views[state.tab](panel);
}

const appPath = (suffix = "") => `/v1/applications/${state.appId}${suffix}`;

// ---------------------------------------------------------------------------------------------
// Agents

async function loadProviders() {
  const page = await api("GET", appPath("/providers?limit=100"));
  return page.data;
}

function modelFields(providers, model = { provider: "echo" }) {
  const provider = h("select", {}, h("option", { value: "echo" }, "echo (built in)"), providers.map((p) => h("option", { value: p.name }, p.name)));
  provider.value = model.provider;
  const modelId = h("input", { type: "text", placeholder: "e.g. gpt-4o-mini", value: model.model ?? "" });
  const read = () => (provider.value === "echo" ? { provider: "echo" } : { provider: provider.value, model: modelId.value.trim() });
  return { nodes: [field("Model provider", provider), field("Model id (for a provider)", modelId)], read };
}

async function renderAgents(panel) {
  const [agents, providers] = await Promise.all([api("GET", appPath("/agents?limit=100")), loadProviders()]);
  state.agents = agents.data;
  const name = h("input", { type: "text", required: true });
  const instructions = h("textarea", {});
  const memory = h("input", { type: "checkbox" });
  const model = modelFields(providers);
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { name: name.value, instructions: instructions.value, memory: memory.checked, model: model.read() };
        if (await attempt(() => api("POST", appPath("/agents"), body), `Agent “${name.value}” created.`)) render();
      },
    },
    h("h2", { text: "New agent" }),
    field("Name", name),
    field("Instructions (system prompt)", instructions),
    model.nodes,
    field("Give the model the user's memory", memory, true),
    h("button", { class: "primary", type: "submit" }, "Create agent"),
  );
  const rows = state.agents.map((agent) =>
    h(
      "tr",
      {},
      h("td", {}, h("button", { type: "button", onclick: () => renderAgent(agent.id) }, agent.name)),
      h("td", { class: "mono", text: agent.model.provider + (agent.model.model ? ` / ${agent.model.model}` : "") }),
      h("td", { text: agent.memory ? "on" : "off" }),
      h("td", { text: when(agent.created_at) }),
      h(
        "td",
        {},
        h("button", {
          type: "button",
          class: "danger",
          "aria-label": `Delete agent ${agent.name}`,
          onclick: async () => {
            if (!(await confirmAction("Delete agent", `Delete “${agent.name}” with all its conversations?`, "Delete agent"))) return;
            if ((await attempt(() => api("DELETE", appPath(`/agents/${agent.id}`)), "Agent deleted.")) !== undefined) render();
          },
        }, "Delete"),
      ),
    ),
  );
  panel.append(
    h(
      "section",
      { class: "card" },
      h("h2", { text: "Agents" }),
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Model", "Memory", "Created", ""].map((t) => h("th", { text: t })))), h("tbody", {}, rows))
        : h("p", { class: "muted", text: "No agents yet." }),
    ),
    h("section", { class: "card" }, form),
  );
}

/** A bar chart of `{day, value}` points; `what` names the value ("conversations", "tokens"). */
function chart(points, what) {
  const perDay = points;
  const max = Math.max(1, ...perDay.map((d) => d.value));
  const width = 600;
  const bar = width / perDay.length;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} 100`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${what} per day over the last ${perDay.length} days`);
  perDay.forEach((day, i) => {
    const height = (day.value / max) * 95;
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", String(i * bar + 1));
    rect.setAttribute("y", String(100 - height));
    rect.setAttribute("width", String(Math.max(1, bar - 2)));
    rect.setAttribute("height", String(height));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${day.day}: ${day.value} ${what}`;
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

async function renderAgent(agentId) {
  const [agent, stats, providers, keys] = await Promise.all([
    api("GET", appPath(`/agents/${agentId}`)),
    api("GET", appPath(`/agents/${agentId}/stats?days=30`)),
    loadProviders(),
    api("GET", appPath("/authentication-keys?limit=100")),
  ]);
  const name = h("input", { type: "text", value: agent.name, required: true });
  const instructions = h("textarea", {});
  instructions.value = agent.instructions;
  const memory = h("input", { type: "checkbox", checked: agent.memory });
  const model = modelFields(providers, agent.model);
  const origins = originsField(agent.allowed_origins);
  const tools = toolSettings(agent);
  const edit = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        await attempt(() => {
          const body = { name: name.value, instructions: instructions.value, memory: memory.checked, model: model.read(), allowed_origins: origins.read(), ...tools.read() };
          return api("PATCH", appPath(`/agents/${agentId}`), body);
        }, "Agent saved.");
      },
    },
    h("h2", { text: "Settings" }),
    field("Name", name),
    field("Instructions (system prompt)", instructions),
    model.nodes,
    field("Give the model the user's memory", memory, true),
    origins.node("Allowed browser origins for this agent, one per line (empty: the application's)"),
    tools.nodes,
    h("button", { class: "primary", type: "submit" }, "Save"),
  );
  const usage = h(
    "section",
    { class: "card" },
    h("h2", { text: "Usage" }),
    h(
      "div",
      { class: "stats" },
      h("div", { class: "stat" }, h("strong", { id: "stat-conversations", text: stats.conversations }), "conversations"),
      h("div", { class: "stat" }, h("strong", { id: "stat-users", text: stats.users }), "users"),
    ),
    h("p", { class: "muted", text: "Conversations per day, last 30 days" }),
    chart(stats.per_day.map((d) => ({ day: d.day, value: d.conversations })), "conversations"),
  );
  const usable = keys.data.filter((k) => k.scope.all_agents || (k.scope.agents || []).includes(agentId));
  history.replaceState(null, "", `#agent/${agentId}`);
  $("main").replaceChildren(
    h("p", {}, h("button", { type: "button", onclick: () => { state.tab = "agents"; render(); } }, "← All agents")),
    h("h1", { text: agent.name }),
    h("div", { class: "grid2" }, h("section", { class: "card" }, edit), usage),
    tryIt(agentId, usable),
  );
}

/**
 * The try-it panel: a short-lived token for a test user, then a streamed chat. The conversation
 * is remembered for the tab's session: after a reload its transcript comes back, and a reply still
 * in progress (an application with `resumable` on) is picked up where it is.
 */
function tryIt(agentId, keys) {
  const section = h("section", { class: "card", "aria-labelledby": "try-title" }, h("h2", { id: "try-title", text: "Try it" }));
  if (!keys.length) {
    section.append(h("p", { class: "muted", text: "Create an authentication key that covers this agent to try it." }));
    return section;
  }
  const remembered = `confidant.try.${agentId}`;
  const saved = JSON.parse(sessionStorage.getItem(remembered) || "null");
  const key = h("select", {}, keys.map((k) => h("option", { value: k.id }, k.name)));
  if (saved && keys.some((k) => k.id === saved.key)) key.value = saved.key;
  const sub = h("input", { type: "text", value: saved?.sub ?? "dashboard-test-user", maxlength: 256 });
  const log = h("div", { class: "chat", id: "chat-log", "aria-live": "polite" });
  const message = h("input", { type: "text", placeholder: "Say something to the agent" });
  const send = h("button", { class: "primary", type: "submit" }, "Send");
  const stop = h("button", { type: "button", hidden: true }, "Stop");
  const fresh = h("button", { type: "button" }, "New conversation");
  let token = null;
  let expires = 0;
  let conversation = saved?.conversation ?? `dashboard-${Date.now()}`;
  const scroll = () => { log.scrollTop = log.scrollHeight; };
  const remember = () => sessionStorage.setItem(remembered, JSON.stringify({ conversation, key: key.value, sub: sub.value }));
  async function userToken() {
    if (!token || Date.now() > expires - 30_000) {
      const minted = await attempt(() => api("POST", appPath(`/authentication-keys/${key.value}/tokens`), { sub: sub.value, ttl_seconds: 600 }));
      if (!minted) return null;
      token = minted.token;
      expires = Date.parse(minted.expires_at);
    }
    return token;
  }
  // A new key or user is a new conversation (another user's is not theirs to read).
  const forget = () => {
    token = null;
    conversation = `dashboard-${Date.now()}`;
    sessionStorage.removeItem(remembered);
    log.replaceChildren();
  };
  key.addEventListener("change", forget);
  sub.addEventListener("change", forget);
  fresh.addEventListener("click", forget);
  const line = (who, node, cls = "msg") => log.append(h("div", { class: cls }, h("span", { class: "who", text: who }), node));
  /** What a reply's stream shows, as it comes. */
  function shown() {
    let reply = null;
    const agentLine = () => {
      if (!reply) {
        reply = h("span", { class: "reply" });
        line("Agent:", reply);
      }
      return reply;
    };
    return {
      delta: (delta) => { agentLine().textContent += delta; scroll(); },
      toolCall: (call) => {
        reply = null;
        const node = h("code", { text: callText(call.name, call.arguments) });
        line(call.server ? "Tool (server):" : "Tool (your app):", call.server ? node : h("span", {}, node, resultForm(call)), "msg tool");
        scroll();
      },
      toolResult: (result) => {
        line("Result:", h("code", { text: typeof result.output === "string" ? result.output : JSON.stringify(result.output) }), "msg tool");
        reply = null;
        scroll();
      },
    };
  }
  /** Runs a reply's stream (a new turn, or one resumed) with Send disabled and Stop shown. */
  async function streaming(run) {
    send.disabled = true;
    stop.hidden = false;
    try {
      await run();
      status("");
    } catch (error) {
      status(error.message, true);
    } finally {
      send.disabled = false;
      stop.hidden = true;
      message.focus();
    }
  }
  /** Runs one turn (a message, or a client tool's result) and shows what comes back. */
  async function turn(body) {
    if (!(await userToken())) return;
    remember();
    await streaming(() => toolTurn(agentId, token, { ...body, conversation_id: conversation }, shown(), ApiError));
  }
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    const path = `/v1/agents/${agentId}/conversations/${encodeURIComponent(conversation)}/stop`;
    await fetch(path, { method: "POST", headers: { "x-secure-user-token": token } }).catch(() => null);
    stop.disabled = false;
  });
  /** After a reload: the stored transcript, then the reply in progress, if any. */
  async function restore() {
    if (!(await userToken())) return;
    const path = `/v1/agents/${agentId}/conversations/${encodeURIComponent(conversation)}?limit=100`;
    const response = await fetch(path, { headers: { "x-secure-user-token": token } });
    if (!response.ok) return; // deleted, or never stored: start afresh
    const stored = await response.json();
    for (const m of stored.messages) {
      if (m.role === "user") line("You:", m.content);
      else if (m.role === "assistant") {
        for (const call of m.tool_calls ?? []) line("Tool:", h("code", { text: callText(call.name, call.arguments) }), "msg tool");
        if (m.content) line("Agent:", h("span", { class: "reply", text: m.status === "incomplete" ? `${m.content} (cut short)` : m.content }));
      } else if (m.role === "tool") line("Result:", h("code", { text: m.content }), "msg tool");
    }
    scroll();
    await streaming(async () => {
      const view = shown();
      let first = true;
      // The resumed reply comes from its start: it replaces the stored part of it, if any.
      const resumed = await resumeTurn(agentId, conversation, token, {
        ...view,
        delta: (delta) => {
          if (first) {
            first = false;
            const last = log.lastElementChild;
            if (last?.querySelector(".reply") && last.querySelector(".who")?.textContent === "Agent:") last.remove();
          }
          view.delta(delta);
        },
      }, ApiError);
      if (resumed) status("Picked up the reply in progress.");
    });
  }
  /** What the app would answer for one of its tools: typed here, sent as the tool's result. */
  function resultForm(call) {
    const output = h("input", { type: "text", placeholder: `Result of ${call.name}`, "aria-label": `Result of ${call.name}` });
    const submit = h("button", { type: "button" }, "Send result");
    submit.addEventListener("click", async () => {
      submit.disabled = output.disabled = true;
      await turn({ tool_results: [{ tool_call_id: call.id, output: output.value }] });
    });
    return h("span", { class: "row" }, output, submit);
  }
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const text = message.value.trim();
        if (!text) return;
        message.value = "";
        line("You:", text);
        await turn({ message: text });
      },
    },
    h("div", { class: "row" }, field("Key", key), field("Test user (sub)", sub), fresh),
    log,
    h("div", { class: "row grow" }, field("Message", message), send, stop),
  );
  section.append(form);
  if (saved) restore();
  return section;
}

// ---------------------------------------------------------------------------------------------
// Authentication keys

function scopeText(scope) {
  if (scope.all_agents) return "all agents";
  const names = (scope.agents || []).map((id) => state.agents.find((a) => a.id === id)?.name ?? id);
  return names.join(", ");
}

function agentChecklist(legend) {
  const boxes = state.agents.map((agent) => {
    const box = h("input", { type: "checkbox", value: agent.id });
    return { box, node: field(agent.name, box, true) };
  });
  const node = h("fieldset", {}, h("legend", { text: legend }), boxes.length ? boxes.map((b) => b.node) : h("p", { class: "muted", text: "No agents yet." }));
  return { node, chosen: () => boxes.filter((b) => b.box.checked).map((b) => b.box.value) };
}

function deleteButton(label, what, path) {
  return h("button", {
    type: "button",
    class: "danger",
    "aria-label": `Delete ${label}`,
    onclick: async () => {
      if (!(await confirmAction(`Delete ${what}`, `Delete ${label}? Anything using it stops working at once.`, `Delete ${what}`))) return;
      if ((await attempt(() => api("DELETE", appPath(path)), `Deleted ${label}.`)) !== undefined) render();
    },
  }, "Delete");
}

async function renderAuthenticationKeys(panel) {
  const [keys, agents] = await Promise.all([api("GET", appPath("/authentication-keys?limit=100")), api("GET", appPath("/agents?limit=100"))]);
  state.agents = agents.data;
  const rows = await Promise.all(
    keys.data.map(async (key) =>
      h(
        "tr",
        {},
        h("td", { text: key.name }),
        h("td", { class: "mono", text: key.id }),
        h("td", { text: scopeText(key.scope) }),
        h("td", { text: when(key.last_used_at) }),
        h("td", {}, deleteButton(`key ${key.name}`, "key", `/authentication-keys/${key.id}`)),
      ),
    ),
  );
  const name = h("input", { type: "text", required: true });
  const all = h("input", { type: "radio", name: "scope", value: "all", checked: true });
  const some = h("input", { type: "radio", name: "scope", value: "some" });
  const checklist = agentChecklist("Agents this key covers");
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const scope = all.checked ? { all_agents: true } : { agents: checklist.chosen() };
        const created = await attempt(() => api("POST", appPath("/authentication-keys"), { name: name.value, scope }));
        if (!created) return;
        await showSecret("Authentication key created", "Secret (sign secure user tokens with it; the key id is the token's kid)", created.secret, [
          h("p", {}, "Key id (kid): ", h("code", { text: created.id })),
        ]);
        render();
      },
    },
    h("h2", { text: "New authentication key" }),
    field("Name", name),
    h("fieldset", {}, h("legend", { text: "Scope" }), field("All agents", all, true), field("Chosen agents", some, true)),
    checklist.node,
    h("button", { class: "primary", type: "submit" }, "Create key"),
  );
  panel.append(
    h(
      "section",
      { class: "card" },
      h("h2", { text: "Authentication keys" }),
      h("p", { class: "muted", text: "Your backend signs secure user tokens (HS256 JWT, kid = key id) with a key's secret." }),
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Key id (kid)", "Scope", "Last used", ""].map((t) => h("th", { text: t })))), h("tbody", {}, rows))
        : h("p", { class: "muted", text: "No keys yet." }),
    ),
    h("section", { class: "card" }, form),
  );
}

// ---------------------------------------------------------------------------------------------
// API keys

async function renderApiKeys(panel) {
  const [keys, agents] = await Promise.all([api("GET", appPath("/api-keys?limit=100")), api("GET", appPath("/agents?limit=100"))]);
  state.agents = agents.data;
  const rows = await Promise.all(
    keys.data.map(async (key) =>
      h(
        "tr",
        {},
        h("td", { text: key.name }),
        h("td", { class: "mono", text: `${key.prefix}…` }),
        h("td", { text: key.acl.join(", ") }),
        h("td", { text: key.agents ? scopeText({ agents: key.agents }) : "all agents" }),
        h("td", { text: when(key.last_used_at) }),
        h("td", {}, deleteButton(`API key ${key.name}`, "API key", `/api-keys/${key.id}`)),
      ),
    ),
  );
  const name = h("input", { type: "text", required: true });
  const admin = h("input", { type: "checkbox", value: "admin" });
  const completions = h("input", { type: "checkbox", value: "completions", checked: true });
  const checklist = agentChecklist("Limit completions to these agents (none checked: all)");
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const acl = [admin, completions].filter((b) => b.checked).map((b) => b.value);
        const chosen = checklist.chosen();
        const body = { name: name.value, acl, agents: chosen.length ? chosen : null };
        const created = await attempt(() => api("POST", appPath("/api-keys"), body));
        if (!created) return;
        await showSecret("API key created", "API key (send as X-API-Key)", created.key);
        render();
      },
    },
    h("h2", { text: "New API key" }),
    field("Name", name),
    h("fieldset", {}, h("legend", { text: "Access" }), field("admin: manage this application", admin, true), field("completions: call agents without a user token", completions, true)),
    checklist.node,
    h("button", { class: "primary", type: "submit" }, "Create API key"),
  );
  panel.append(
    h(
      "section",
      { class: "card" },
      h("h2", { text: "API keys" }),
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Prefix", "Access", "Agents", "Last used", ""].map((t) => h("th", { text: t })))), h("tbody", {}, rows))
        : h("p", { class: "muted", text: "No API keys yet." }),
    ),
    h("section", { class: "card" }, form),
  );
}

// ---------------------------------------------------------------------------------------------
// Providers

async function renderProviders(panel) {
  const providers = await loadProviders();
  const rows = await Promise.all(
    providers.map(async (p) =>
      h(
        "tr",
        {},
        h("td", { text: p.name }),
        h("td", { class: "mono", text: p.base_url }),
        h("td", { text: p.has_api_key ? "stored" : "none" }),
        h("td", {}, deleteButton(`provider ${p.name}`, "provider", `/providers/${p.id}`)),
      ),
    ),
  );
  const name = h("input", { type: "text", required: true, placeholder: "openai" });
  const baseUrl = h("input", { type: "url", required: true, placeholder: "https://api.openai.com/v1" });
  const apiKey = h("input", { type: "password", autocomplete: "off" });
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { name: name.value, kind: "openai-compatible", base_url: baseUrl.value, api_key: apiKey.value || null };
        if (await attempt(() => api("POST", appPath("/providers"), body), `Provider “${name.value}” added.`)) render();
      },
    },
    h("h2", { text: "New provider (OpenAI-compatible)" }),
    field("Name (what agents name as their provider)", name),
    field("Base URL", baseUrl),
    field("API key (stored encrypted, never shown again)", apiKey),
    h("button", { class: "primary", type: "submit" }, "Add provider"),
  );
  panel.append(
    h(
      "section",
      { class: "card" },
      h("h2", { text: "Providers" }),
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Base URL", "API key", ""].map((t) => h("th", { text: t })))), h("tbody", {}, rows))
        : h("p", { class: "muted", text: "No providers yet: agents use the built-in echo model." }),
    ),
    h("section", { class: "card" }, form),
  );
}

// ---------------------------------------------------------------------------------------------
// Conversations and feedback, across the application's users

async function agentNames() {
  const agents = await api("GET", appPath("/agents?limit=100"));
  return new Map(agents.data.map((a) => [a.id, a.name]));
}

async function renderConversations(panel) {
  const names = await agentNames();
  const agent = h("select", {}, h("option", { value: "" }, "All agents"), [...names].map(([id, name]) => h("option", { value: id }, name)));
  const sub = h("input", { type: "text", placeholder: "any user", maxlength: "256" });
  const rows = h("tbody", {});
  const more = h("button", { type: "button", hidden: true }, "Load more");
  let cursor = null;
  const load = async (reset) => {
    if (reset) {
      rows.replaceChildren();
      cursor = null;
    }
    const query = new URLSearchParams({ limit: "50" });
    if (agent.value) query.set("agent_id", agent.value);
    if (sub.value.trim()) query.set("sub", sub.value.trim());
    if (cursor) query.set("cursor", cursor);
    const page = await attempt(() => api("GET", appPath(`/conversations?${query}`)));
    if (!page) return;
    for (const c of page.data) {
      rows.append(
        h(
          "tr",
          {},
          h("td", { text: when(c.updated_at) }),
          h("td", { class: "mono", text: c.sub }),
          h("td", { text: names.get(c.agent_id) ?? c.agent_id }),
          h("td", {}, h("button", { type: "button", onclick: () => renderTranscript(c.sub, c.id) }, c.title || c.id)),
        ),
      );
    }
    if (!rows.children.length) rows.append(h("tr", {}, h("td", { colspan: "4", class: "muted", text: "No conversations." })));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", () => load(false));
  const filters = h(
    "form",
    { class: "row", onsubmit: (event) => { event.preventDefault(); load(true); } },
    field("Agent", agent),
    field("User (sub)", sub),
    h("button", { type: "submit" }, "Search"),
  );
  const before = h("input", { type: "date", required: true });
  const purge = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const scope = agent.value ? `of “${names.get(agent.value)}” ` : "";
        if (!(await confirmAction("Delete conversations", `Delete every conversation ${scope}not updated since ${before.value}, with its messages?`, "Delete conversations"))) return;
        const query = new URLSearchParams({ before: before.value });
        if (agent.value) query.set("agent_id", agent.value);
        const done = await attempt(() => api("DELETE", appPath(`/conversations?${query}`)));
        if (done) {
          status(`${done.deleted} conversation(s) deleted.`);
          load(true);
        }
      },
    },
    h("h2", { text: "Delete old conversations" }),
    h("p", { class: "muted", text: "Deletes the conversations (of the agent chosen above, or all) not updated since the day you pick, with their messages and votes." }),
    field("Not updated since", before),
    h("button", { class: "danger", type: "submit" }, "Delete conversations"),
  );
  panel.append(
    h(
      "section",
      { class: "card" },
      h("h2", { text: "Conversations" }),
      filters,
      h("table", {}, h("thead", {}, h("tr", {}, ["Updated", "User (sub)", "Agent", "Title"].map((t) => h("th", { text: t })))), rows),
      more,
    ),
    h("section", { class: "card" }, purge),
  );
  await load(true);
}

async function renderTranscript(sub, conversationId) {
  const path = appPath(`/users/${encodeURIComponent(sub)}/conversations/${encodeURIComponent(conversationId)}?limit=1000&include=superseded`);
  const conversation = await attempt(() => api("GET", path));
  if (!conversation) return;
  const messages = conversation.messages.map((m) => {
    const notes = [m.role, when(m.created_at)];
    if (m.status === "incomplete") notes.push("incomplete");
    if (m.status === "superseded") notes.push("replaced by a regenerate or an edit");
    const vote = m.feedback
      ? h("div", { class: `vote ${m.feedback.vote}`, text: [m.feedback.vote === "up" ? "▲ rated helpful" : "▼ rated not helpful", m.feedback.comment, ...(m.feedback.tags || []).map((t) => `#${t}`)].filter(Boolean).join(" · ") })
      : null;
    if (m.tool_call_id) notes.push(`result of ${m.tool_call_id}`);
    const calls = (m.tool_calls || []).map((c) => h("div", { class: "tool mono", text: `calls ${callText(c.name, c.arguments)}` }));
    const empty = calls.length ? "" : m.role === "user" || m.role === "assistant" || m.role === "tool" ? "(text not stored: privacy mode)" : "";
    return h(
      "div",
      { class: `message ${m.role}${m.status === "superseded" ? " superseded" : ""}` },
      h("div", { class: "muted", text: notes.join(" · ") }),
      m.content || empty ? h("div", { class: "content", text: m.content || empty }) : null,
      calls,
      vote,
    );
  });
  $("main").replaceChildren(
    h("p", {}, h("button", { type: "button", onclick: () => render() }, "← Back")),
    h("h1", { text: conversation.title || conversation.id }),
    h("p", { class: "muted mono", text: `${sub} · ${conversation.id}` }),
    h("section", { class: "card transcript", id: "transcript" }, messages.length ? messages : h("p", { class: "muted", text: "No messages." })),
  );
}

async function renderFeedback(panel) {
  const vote = h("select", {}, h("option", { value: "" }, "All votes"), h("option", { value: "up" }, "Helpful (up)"), h("option", { value: "down" }, "Not helpful (down)"));
  const rows = h("tbody", {});
  const load = async () => {
    const query = new URLSearchParams({ limit: "100" });
    if (vote.value) query.set("vote", vote.value);
    const page = await attempt(() => api("GET", appPath(`/feedback?${query}`)));
    if (!page) return;
    rows.replaceChildren(
      ...page.data.map((f) =>
        h(
          "tr",
          {},
          h("td", { text: when(f.updated_at) }),
          h("td", { text: f.vote === "up" ? "▲ up" : "▼ down" }),
          h("td", { class: "mono", text: f.sub }),
          h("td", {}, h("button", { type: "button", onclick: () => renderTranscript(f.sub, f.conversation_id) }, f.content.slice(0, 80) || "(empty)")),
          h("td", { text: [f.comment, ...(f.tags || []).map((t) => `#${t}`)].filter(Boolean).join(" ") }),
        ),
      ),
    );
    if (!page.data.length) rows.append(h("tr", {}, h("td", { colspan: "5", class: "muted", text: "No feedback yet." })));
  };
  vote.addEventListener("change", load);
  panel.append(
    h(
      "section",
      { class: "card" },
      h("h2", { text: "Feedback" }),
      h("p", { class: "muted", text: "Votes your users gave the agents' replies (newest first). Open a reply to read its conversation." }),
      field("Show", vote),
      h("table", {}, h("thead", {}, h("tr", {}, ["When", "Vote", "User (sub)", "Reply", "Comment and tags"].map((t) => h("th", { text: t })))), rows),
    ),
  );
  await load();
}

// ---------------------------------------------------------------------------------------------
// Usage & limits

/** A textarea of origins, one per line. */
function originsField(current = []) {
  const input = h("textarea", { rows: 3, placeholder: "https://app.example.com\nhttps://*.example.com", spellcheck: "false" });
  input.value = current.join("\n");
  return {
    node: (label) => field(label, input),
    read: () => input.value.split(/\s+/).map((o) => o.trim()).filter(Boolean),
  };
}

/** The last `days` UTC days as YYYY-MM-DD, oldest first. */
function lastDays(days) {
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  return Array.from({ length: days }, (_, i) => new Date(today - (days - 1 - i) * 86_400_000).toISOString().slice(0, 10));
}

async function renderSettings(panel) {
  const days = lastDays(30);
  const [app, byDay, byUser] = await Promise.all([
    api("GET", appPath()),
    api("GET", appPath(`/usage?from=${days[0]}&to=${days[29]}`)),
    api("GET", appPath(`/usage?from=${days[0]}&to=${days[29]}&group_by=user`)),
  ]);
  const spent = new Map(byDay.data.map((d) => [d.day, d]));
  const total = (d) => (d ? d.input_tokens + d.output_tokens : 0);
  const sum = (key) => byDay.data.reduce((n, d) => n + d[key], 0);
  const usage = h(
    "section",
    { class: "card" },
    h("h2", { text: "Usage, last 30 days" }),
    h(
      "div",
      { class: "stats" },
      h("div", { class: "stat" }, h("strong", { id: "usage-turns", text: sum("turns") }), "turns"),
      h("div", { class: "stat" }, h("strong", { id: "usage-tokens", text: sum("input_tokens") + sum("output_tokens") }), "tokens"),
    ),
    h("p", { class: "muted", text: "Tokens per day (UTC)" }),
    chart(days.map((day) => ({ day, value: total(spent.get(day)) })), "tokens"),
    byUser.data.length
      ? h(
          "table",
          {},
          h("caption", { text: "Heaviest users" }),
          h("thead", {}, h("tr", {}, ["User (sub)", "Turns", "Input tokens", "Output tokens"].map((t) => h("th", { text: t })))),
          h(
            "tbody",
            {},
            byUser.data.slice(0, 10).map((u) =>
              h("tr", {}, h("td", { class: "mono", text: u.sub || "(server, API key)" }), h("td", { text: u.turns }), h("td", { text: u.input_tokens }), h("td", { text: u.output_tokens })),
            ),
          ),
        )
      : h("p", { class: "muted", text: "No turns yet." }),
  );
  const origins = originsField(app.allowed_origins);
  const limitInput = (value) => h("input", { type: "number", min: "1", step: "1", value: value ?? "", placeholder: "no limit" });
  const requests = limitInput(app.limits.user_requests_per_minute);
  const completions = limitInput(app.limits.user_completions_per_minute);
  const tokens = limitInput(app.limits.user_tokens_per_day);
  const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {
          allowed_origins: origins.read(),
          limits: { user_requests_per_minute: number(requests), user_completions_per_minute: number(completions), user_tokens_per_day: number(tokens) },
        };
        if (await attempt(() => api("PATCH", appPath(), body), "Settings saved.")) render();
      },
    },
    h("h2", { text: "Browsers and limits" }),
    h("p", { class: "muted", text: "Web pages on these origins may call your agents with a user's token; leave empty to allow any origin. An agent may have its own list." }),
    origins.node("Allowed browser origins, one per line"),
    h("p", { class: "muted", text: "Per end user (sub). Leave a limit empty for none." }),
    field("Requests per minute", requests),
    field("Completions per minute", completions),
    field("Tokens per day (UTC)", tokens),
    h("button", { class: "primary", type: "submit" }, "Save"),
  );
  panel.append(h("div", { class: "grid2" }, h("section", { class: "card" }, form), usage), retentionForm(app));
}

/** The application's retention policy and privacy mode, with what each does in plain words. */
function retentionForm(app) {
  const days = (value) => h("input", { type: "number", min: "0", max: "36500", step: "1", value: value ?? "", placeholder: "forever" });
  const conversations = days(app.retention.conversation_days);
  const memories = days(app.retention.memory_days);
  const keepText = h("input", { type: "checkbox" });
  keepText.checked = app.retention.store_content;
  const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
  return h(
    "section",
    { class: "card" },
    h(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          const retention = { conversation_days: number(conversations), memory_days: number(memories), store_content: keepText.checked };
          if (!retention.store_content && app.retention.store_content) {
            const sure = await confirmAction(
              "Turn on privacy mode?",
              "From now on, your users' message text and memory are never written to disk, and agents see only what each request carries. What is stored already stays until retention removes it.",
              "Turn on privacy mode",
            );
            if (!sure) return;
          }
          if (await attempt(() => api("PATCH", appPath(), { retention }), "Retention saved.")) render();
        },
      },
      h("h2", { text: "Retention and privacy" }),
      h("p", { class: "muted", text: "Conversations and memory older than these are deleted automatically, checked every few minutes. Leave a field empty to keep forever; 0 deletes everything at the next check." }),
      field("Delete conversations inactive for (days)", conversations),
      field("Delete memory not updated for (days)", memories),
      field("Store message text and memory", keepText, true),
      h("p", { class: "muted", text: "Unticked is privacy mode: conversations, message roles, times, token usage and feedback are kept, but what users and agents wrote is never stored, memory cannot be saved, and agents only see the messages each request sends." }),
      h("button", { class: "primary", type: "submit" }, "Save retention"),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Wiring

$("logout").addEventListener("click", async () => {
  await api("POST", "/v1/auth/logout").catch(() => null);
  endSession();
  renderLogin("Logged out.");
});

$("application").addEventListener("change", (event) => {
  state.appId = event.target.value;
  state.tab = "agents";
  render();
});

$("new-application").addEventListener("click", async () => {
  const name = h("input", { type: "text", required: true });
  const answer = await showDialog("New application", field("Name", name), [
    ["Cancel", "cancel"],
    ["Create", "create", "primary"],
  ]);
  if (answer !== "create" || !name.value.trim()) return;
  const app = await attempt(() => api("POST", "/v1/applications", { name: name.value }), "Application created.");
  if (!app) return;
  sessionStorage.setItem("confidant.app", app.id);
  await start();
});

const saved = JSON.parse(sessionStorage.getItem("confidant.session") || "null");
if (saved?.access) {
  state.access = saved.access;
  state.refresh = saved.refresh;
  start();
} else {
  renderLogin();
}
