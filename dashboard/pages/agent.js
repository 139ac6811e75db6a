// One agent: its activity, settings (instructions, model, memory, tools, MCP servers, origins),
// conversations, users and Try it, each a tab with its own URL.

import { api } from "/dashboard/api.js";
import { field, h, number, textInput } from "/dashboard/dom.js";
import { barChart, lastDays } from "/dashboard/chart.js";
import { card, confirmAction, onSubmit, pageHeader, table, tabs } from "/dashboard/ui.js";
import { conversationList, loadProviders, modelFields, modelText, originsField, run } from "/dashboard/pages/common.js";
import { toolSettings } from "/dashboard/pages/tools.js";
import { tryPanel } from "/dashboard/pages/try.js";

const TABS = [
  ["activity", "Activity"],
  ["settings", "Settings"],
  ["conversations", "Conversations"],
  ["users", "Users"],
  ["try", "Try it"],
];

export async function agentPage(ctx) {
  const [agentId, tab = "activity"] = ctx.rest;
  const agent = await api("GET", ctx.path(`/agents/${agentId}`));
  const selected = TABS.some(([id]) => id === tab) ? tab : "activity";
  const title = h("h1", { id: "page-title", text: agent.name });
  const remove = h("button", { type: "button", class: "danger" }, "Delete agent");
  remove.addEventListener("click", async () => {
    if (!(await confirmAction("Delete agent?", `Delete “${agent.name}” with all its conversations and messages? Keys that cover only this agent stop working. This cannot be undone.`, "Delete agent"))) return;
    if ((await run(remove, () => api("DELETE", ctx.path(`/agents/${agent.id}`)), `Agent “${agent.name}” deleted.`)) !== undefined) ctx.go(ctx.href("agents"));
  });
  const header = h(
    "div",
    { class: "page-header" },
    h("div", { class: "titles" }, h("p", { class: "crumbs" }, h("a", { href: ctx.href("agents") }, "Agents"), " /"), title, h("p", { class: "muted mono", text: `${modelText(agent.model)} · ${agent.id}` })),
    h("div", { class: "row" }, remove),
  );
  const { list, panel } = tabs("Agent", TABS, selected, (id) => ctx.go(ctx.href("agents", agent.id, id)));
  const render = { activity, settings, conversations, users, try: tryTab }[selected];
  panel.append(...[await render(ctx, agent, title)].flat());
  return [header, list, panel];
}

async function activity(ctx, agent) {
  const days = lastDays(30);
  const [stats, usage] = await Promise.all([
    api("GET", ctx.path(`/agents/${agent.id}/stats?days=30`)),
    api("GET", ctx.path(`/usage?from=${days[0]}&to=${days.at(-1)}&agent_id=${agent.id}`)),
  ]);
  const tokens = usage.data.reduce((n, d) => n + d.input_tokens + d.output_tokens, 0);
  const turns = usage.data.reduce((n, d) => n + d.turns, 0);
  const perDay = new Map(stats.per_day.map((d) => [d.day, d.conversations]));
  return [
    h(
      "div",
      { class: "stats" },
      h("div", { class: "stat" }, h("strong", { id: "stat-conversations", text: number(stats.conversations) }), h("span", { text: "conversations, all time" })),
      h("div", { class: "stat" }, h("strong", { id: "stat-users", text: number(stats.users) }), h("span", { text: "users, all time" })),
      h("div", { class: "stat" }, h("strong", { text: number(turns) }), h("span", { text: "turns, last 30 days" })),
      h("div", { class: "stat" }, h("strong", { text: number(tokens) }), h("span", { text: "tokens, last 30 days" })),
    ),
    card(
      "Conversations started per day",
      barChart(days.map((day) => ({ day, value: perDay.get(day) ?? 0 })), "conversations", "No conversations in the last 30 days. Start one on the Try it tab."),
    ),
  ];
}

async function settings(ctx, agent, title) {
  const providers = await loadProviders(ctx);
  const name = textInput({ required: true, value: agent.name });
  const instructions = h("textarea", { rows: 8, maxlength: 65536 });
  instructions.value = agent.instructions;
  const memory = h("input", { type: "checkbox", checked: agent.memory });
  const model = modelFields(providers, agent.model);
  const origins = originsField(agent.allowed_origins, "Allowed browser origins", "One per line. Empty: the application's list applies.");
  const tools = toolSettings(agent);
  const form = onSubmit(
    h(
      "form",
      { id: "agent-settings" },
      field("Name", name, { name: "name" }),
      field("Instructions (system prompt)", instructions, { name: "instructions" }),
      model.nodes,
      field("Give the model the user's memory", memory, { inline: true, name: "memory" }),
      origins.node,
      tools.nodes,
      h("button", { class: "primary", type: "submit" }, "Save changes"),
    ),
    async () => {
      const body = { name: name.value, instructions: instructions.value, memory: memory.checked, model: model.read(), allowed_origins: origins.read(), ...tools.read() };
      const saved = await api("PATCH", ctx.path(`/agents/${agent.id}`), body);
      title.textContent = saved.name;
      document.title = `${saved.name} · ${ctx.app.name} · Confidant`;
      Object.assign(agent, saved);
      return saved;
    },
    "Agent saved.",
  );
  return card(null, form);
}

async function conversations(ctx, agent) {
  return card(null, await conversationList(ctx, { agentId: agent.id }));
}

async function users(ctx, agent) {
  const days = lastDays(30);
  const usage = await api("GET", ctx.path(`/usage?from=${days[0]}&to=${days.at(-1)}&agent_id=${agent.id}&group_by=user`));
  const rows = usage.data
    .filter((u) => u.sub)
    .sort((a, b) => b.turns - a.turns)
    .map((u) => h("tr", {}, h("td", {}, h("a", { href: ctx.href("users", u.sub), class: "mono" }, u.sub)), h("td", { class: "num", text: number(u.turns) }), h("td", { class: "num", text: number(u.input_tokens + u.output_tokens) })));
  return card("Users in the last 30 days", table(["User (sub)", "Turns", "Tokens"], rows, "No user has talked to this agent in the last 30 days."));
}

async function tryTab(ctx, agent) {
  const keys = await api("GET", ctx.path("/authentication-keys?limit=100"));
  const usable = keys.data.filter((k) => k.scope.all_agents || (k.scope.agents || []).includes(agent.id));
  return tryPanel(ctx, agent, usable);
}
