// Authentication keys (your backend signs user tokens with them) and API keys (server-to-server
// access), each with its secret shown once.

import { api } from "/dashboard/api.js";
import { field, h, textInput, when } from "/dashboard/dom.js";
import { badge, card, empty, FieldError, onSubmit, pageHeader, showSecret, table } from "/dashboard/ui.js";
import { deleteButton, loadAgents } from "/dashboard/pages/common.js";

/** What a key covers, in words; `missing` is true when none of its agents exists any more. */
function scope(agents, ids) {
  const names = ids.map((id) => agents.byId.get(id)?.name).filter(Boolean);
  const gone = ids.length - names.length;
  const parts = [names.join(", ")];
  if (gone) parts.push(`${gone} deleted agent${gone > 1 ? "s" : ""}`);
  return { text: parts.filter(Boolean).join(" + "), missing: names.length === 0 };
}

function scopeCell(agents, ids) {
  if (!ids) return h("td", { text: "All agents" });
  const { text, missing } = scope(agents, ids);
  return h(
    "td",
    {},
    text,
    missing ? h("div", {}, badge("covers no agent", "danger"), h("p", { class: "hint", text: "Its agents were deleted: every token signed with it is refused. Delete it, or create a key for the agents you have." })) : null,
  );
}

function agentChecklist(agents, legend, hint) {
  const boxes = agents.list.map((agent) => {
    const box = h("input", { type: "checkbox", value: agent.id });
    return { box, node: field(agent.name, box, { inline: true }) };
  });
  const node = h("fieldset", {}, h("legend", { text: legend }), hint ? h("p", { class: "hint", text: hint }) : null, boxes.length ? boxes.map((b) => b.node) : h("p", { class: "muted", text: "No agents yet." }));
  return { node, chosen: () => boxes.filter((b) => b.box.checked).map((b) => b.box.value), boxes };
}

export async function authenticationKeysPage(ctx) {
  const [keys, agents] = await Promise.all([api("GET", ctx.path("/authentication-keys?limit=100")), loadAgents(ctx)]);
  const rows = keys.data.map((key) =>
    h(
      "tr",
      {},
      h("td", { class: "cell-title", text: key.name }),
      h("td", { class: "mono", text: key.id }),
      scopeCell(agents, key.scope.all_agents ? null : key.scope.agents || []),
      h("td", {}, when(key.last_used_at)),
      h("td", { class: "actions" }, deleteButton(ctx, `key ${key.name}`, "key", `/authentication-keys/${key.id}`)),
    ),
  );
  const name = textInput({ required: true, placeholder: "Production backend" });
  const all = h("input", { type: "radio", name: "scope", value: "all", checked: true });
  const some = h("input", { type: "radio", name: "scope", value: "some" });
  const checklist = agentChecklist(agents, "Agents this key covers");
  const sync = () => { checklist.node.hidden = all.checked; };
  all.addEventListener("change", sync);
  some.addEventListener("change", sync);
  sync();
  const form = onSubmit(
    h(
      "form",
      { id: "new-key" },
      field("Name", name, { name: "name", hint: "Where it is used, so you know which to delete if it leaks." }),
      h("fieldset", { "data-field": "scope" }, h("legend", { text: "Scope" }), field("All agents", all, { inline: true }), field("Chosen agents only", some, { inline: true })),
      checklist.node,
      h("button", { class: "primary", type: "submit" }, "Create key"),
    ),
    async () => {
      const chosen = checklist.chosen();
      if (some.checked && !chosen.length) throw new FieldError("scope", "Choose at least one agent, or All agents.");
      const created = await api("POST", ctx.path("/authentication-keys"), { name: name.value, scope: all.checked ? { all_agents: true } : { agents: chosen } });
      await showSecret("Authentication key created", "Secret: sign secure user tokens (HS256 JWT) with it", created.secret, [
        h("p", {}, "Key id, the token's ", h("code", { text: "kid" }), " header: ", h("code", { id: "shown-kid", text: created.id })),
      ]);
      ctx.rerender();
      return created;
    },
    (created) => `Key “${created.name}” created.`,
  );
  return [
    pageHeader("Authentication keys", "Your backend signs each user's token (an HS256 JWT whose sub is the user, whose kid is the key id) with a key's secret."),
    card(null, table(["Name", "Key id (kid)", "Covers", "Last used", ""], rows, empty("No keys yet. Create one below, then mint user tokens with it from your backend."))),
    card("New authentication key", form),
  ];
}

export async function apiKeysPage(ctx) {
  const [keys, agents] = await Promise.all([api("GET", ctx.path("/api-keys?limit=100")), loadAgents(ctx)]);
  const rows = keys.data.map((key) =>
    h(
      "tr",
      {},
      h("td", { class: "cell-title", text: key.name }),
      h("td", { class: "mono", text: `${key.prefix}…` }),
      h("td", {}, key.acl.map((a) => badge(a))),
      scopeCell(agents, key.agents),
      h("td", {}, when(key.last_used_at)),
      h("td", { class: "actions" }, deleteButton(ctx, `API key ${key.name}`, "API key", `/api-keys/${key.id}`)),
    ),
  );
  const name = textInput({ required: true, placeholder: "Nightly export job" });
  const admin = h("input", { type: "checkbox", value: "admin" });
  const completions = h("input", { type: "checkbox", value: "completions", checked: true });
  const checklist = agentChecklist(agents, "Agents it may call", "None checked: all agents.");
  const form = onSubmit(
    h(
      "form",
      { id: "new-api-key" },
      field("Name", name, { name: "name" }),
      h(
        "fieldset",
        { "data-field": "acl" },
        h("legend", { text: "Access" }),
        field("admin: manage this application (agents, keys, users, usage)", admin, { inline: true }),
        field("completions: call agents without a user token", completions, { inline: true }),
      ),
      checklist.node,
      h("button", { class: "primary", type: "submit" }, "Create API key"),
    ),
    async () => {
      const acl = [admin, completions].filter((b) => b.checked).map((b) => b.value);
      if (!acl.length) throw new FieldError("acl", "Choose at least one kind of access.");
      const chosen = checklist.chosen();
      const created = await api("POST", ctx.path("/api-keys"), { name: name.value, acl, agents: chosen.length ? chosen : null });
      await showSecret("API key created", "API key: send it as the X-API-Key header, from servers only", created.key);
      ctx.rerender();
      return created;
    },
    (created) => `API key “${created.name}” created.`,
  );
  return [
    pageHeader("API keys", "For your servers: manage this application, or call agents without a user token. Never put one in a browser."),
    card(null, table(["Name", "Prefix", "Access", "Agents", "Last used", ""], rows, empty("No API keys yet."))),
    card("New API key", form),
  ];
}
