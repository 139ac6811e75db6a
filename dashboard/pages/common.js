// What several pages share: loading the application's agents and providers, the model and
// origins fields, delete buttons, buttons that run one request, and the conversations list.

import { api } from "/dashboard/api.js";
import { field, h, textInput, when } from "/dashboard/dom.js";
import { busy, confirmAction, table, toast } from "/dashboard/ui.js";

/** The application's agents (up to 100), as a list and a map from id to agent. */
export async function loadAgents(ctx) {
  const page = await api("GET", ctx.path("/agents?limit=100"));
  return { list: page.data, byId: new Map(page.data.map((a) => [a.id, a])) };
}

export async function loadProviders(ctx) {
  return (await api("GET", ctx.path("/providers?limit=100"))).data;
}

/** Runs `action` with `button` busy; a failure is a toast, `success` (text) another. */
export async function run(button, action, success) {
  try {
    const result = await busy(button, action);
    if (success) toast(typeof success === "function" ? success(result) : success);
    return result;
  } catch (error) {
    toast(error.message || "Something went wrong.", "error");
    return undefined;
  }
}

/** A delete button: confirms, deletes `path`, says so, and calls `done`. */
export function deleteButton(ctx, label, what, path, done = () => ctx.rerender()) {
  const button = h("button", { type: "button", class: "danger", "aria-label": `Delete ${label}` }, "Delete");
  button.addEventListener("click", async () => {
    if (!(await confirmAction(`Delete ${what}?`, `Delete ${label}? Anything using it stops working at once. This cannot be undone.`, `Delete ${what}`))) return;
    if ((await run(button, () => api("DELETE", ctx.path(path)), `Deleted ${label}.`)) !== undefined) done();
  });
  return button;
}

/** The model fields: a provider (or the built-in echo model) and the model's id. */
export function modelFields(providers, model = { provider: "echo" }) {
  const provider = h("select", {}, h("option", { value: "echo" }, "echo (built in, repeats the message)"), providers.map((p) => h("option", { value: p.name }, p.name)));
  provider.value = model.provider;
  const modelId = textInput({ placeholder: "e.g. gpt-4o-mini", value: model.model ?? "" });
  const modelField = field("Model", modelId, { name: "model.model", hint: "The provider's model id." });
  const sync = () => { modelField.hidden = provider.value === "echo"; };
  provider.addEventListener("change", sync);
  sync();
  const read = () => (provider.value === "echo" ? { provider: "echo" } : { provider: provider.value, model: modelId.value.trim() });
  const hint = providers.length ? null : "Add a provider (OpenAI or any compatible API) on the Providers page to use a real model.";
  return { nodes: [field("Model provider", provider, { name: "model.provider", hint }), modelField], read };
}

/** A textarea of browser origins, one per line. */
export function originsField(current, label, hint) {
  const input = h("textarea", { rows: 3, placeholder: "https://app.example.com\nhttps://*.example.com", spellcheck: "false", maxlength: 20000 });
  input.value = (current ?? []).join("\n");
  return {
    node: field(label, input, { name: "allowed_origins", hint }),
    read: () => input.value.split(/\s+/).map((o) => o.trim()).filter(Boolean),
  };
}

/** `{ provider, model }` as one line. */
export const modelText = (model) => (model.model ? `${model.provider} · ${model.model}` : model.provider);

/**
 * The application's conversations, newest first, a page at a time, filtered by agent and user
 * (fixed by `agentId`/`sub`, or chosen in the filters). Rows open the transcript.
 */
export async function conversationList(ctx, { agentId = null, sub = null, agents = null } = {}) {
  const byId = agents ?? (await loadAgents(ctx)).byId;
  const agentFilter = h("select", {}, h("option", { value: "" }, "All agents"), [...byId.values()].map((a) => h("option", { value: a.id }, a.name)));
  const subFilter = h("input", { type: "search", placeholder: "Any user", maxlength: 256 });
  let rows = [];
  const wrap = h("div", {});
  const more = h("button", { type: "button", hidden: true }, "Load more");
  let cursor = null;
  const load = async (reset) => {
    if (reset) cursor = null;
    const query = new URLSearchParams({ limit: "25" });
    const agent = agentId ?? agentFilter.value;
    const user = sub ?? subFilter.value.trim();
    if (agent) query.set("agent_id", agent);
    if (user) query.set("sub", user);
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", ctx.path(`/conversations?${query}`));
    if (reset) rows = [];
    for (const c of page.data) {
      rows.push(
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: ctx.href("conversations", c.sub, c.id), class: "cell-title" }, c.title || "Untitled conversation")),
          sub ? null : h("td", {}, h("a", { href: ctx.href("users", c.sub), class: "mono" }, c.sub)),
          agentId ? null : h("td", { text: byId.get(c.agent_id)?.name ?? "deleted agent" }),
          h("td", {}, when(c.updated_at)),
        ),
      );
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const headers = ["Conversation", sub ? null : "User (sub)", agentId ? null : "Agent", "Last activity"].filter(Boolean);
    wrap.replaceChildren(
      table(headers, rows, user || agent ? "No conversations match." : "No conversations yet. They appear here once users talk to an agent (try one on its Try it tab)."),
    );
  };
  more.addEventListener("click", () => run(more, () => load(false)));
  const filters = agentId && sub ? null : h(
    "form",
    { class: "row filters", role: "search", onsubmit: (event) => { event.preventDefault(); run(event.submitter ?? searchButton, () => load(true)); } },
    agentId ? null : field("Agent", agentFilter),
    sub ? null : field("User (sub)", subFilter),
    h("button", { type: "submit" }, "Filter"),
  );
  const searchButton = filters?.querySelector("button");
  agentFilter.addEventListener("change", () => load(true).catch((e) => toast(e.message, "error")));
  await load(true);
  return h("div", { class: "conversation-list" }, filters, wrap, h("p", {}, more));
}
