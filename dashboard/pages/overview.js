// The application's overview: turns, users and tokens per day over 30 days, the busiest agents
// and users, the latest feedback, and the first steps while the application is new.

import { api } from "/dashboard/api.js";
import { h, number, when } from "/dashboard/dom.js";
import { barChart, lastDays } from "/dashboard/chart.js";
import { badge, card, pageHeader, table } from "/dashboard/ui.js";
import { loadAgents } from "/dashboard/pages/common.js";

const SERIES = [
  ["turns", "Turns", (d) => d.turns],
  ["users", "Users", (d) => d.users],
  ["tokens", "Tokens", (d) => d.input_tokens + d.output_tokens],
];

export async function overviewPage(ctx) {
  const days = lastDays(30);
  const range = `from=${days[0]}&to=${days.at(-1)}`;
  const [byDay, byAgent, byUser, feedback, agents, keys] = await Promise.all([
    api("GET", ctx.path(`/usage?${range}`)),
    api("GET", ctx.path(`/usage?${range}&group_by=agent`)),
    api("GET", ctx.path(`/usage?${range}&group_by=user`)),
    api("GET", ctx.path("/feedback?limit=5")),
    loadAgents(ctx),
    api("GET", ctx.path("/authentication-keys?limit=1")),
  ]);
  const perDay = new Map(byDay.data.map((d) => [d.day, d]));
  const zero = { turns: 0, users: 0, input_tokens: 0, output_tokens: 0 };
  const sum = (f) => byDay.data.reduce((n, d) => n + f(d), 0);
  const stats = h(
    "div",
    { class: "stats" },
    stat("overview-turns", number(sum((d) => d.turns)), "turns, last 30 days"),
    stat("overview-users", number(byUser.data.filter((u) => u.sub).length), "active users"),
    stat("overview-tokens", number(sum((d) => d.input_tokens + d.output_tokens)), "tokens"),
    stat("overview-agents", number(agents.list.length), agents.list.length === 1 ? "agent" : "agents"),
  );

  const chartSlot = h("div", {});
  const buttons = SERIES.map(([id, label]) => h("button", { type: "button", "aria-pressed": "false", onclick: () => show(id) }, label));
  const show = (id) => {
    const [, label, value] = SERIES.find(([s]) => s === id);
    buttons.forEach((b, i) => b.setAttribute("aria-pressed", String(SERIES[i][0] === id)));
    const points = days.map((day) => ({ day, value: value(perDay.get(day) ?? zero) }));
    chartSlot.replaceChildren(barChart(points, label.toLowerCase(), "Nothing yet in the last 30 days. Turns appear here as soon as users talk to your agents."));
  };
  show("turns");

  const topAgents = byAgent.data.slice().sort((a, b) => b.turns - a.turns).slice(0, 5).map((u) => {
    const agent = agents.byId.get(u.agent_id);
    return h("tr", {}, h("td", {}, agent ? h("a", { href: ctx.href("agents", agent.id) }, agent.name) : "deleted agent"), h("td", { class: "num", text: number(u.turns) }), h("td", { class: "num", text: number(u.users) }), h("td", { class: "num", text: number(u.input_tokens + u.output_tokens) }));
  });
  const topUsers = byUser.data.filter((u) => u.sub).sort((a, b) => b.turns - a.turns).slice(0, 5).map((u) =>
    h("tr", {}, h("td", {}, h("a", { href: ctx.href("users", u.sub), class: "mono" }, u.sub)), h("td", { class: "num", text: number(u.turns) }), h("td", { class: "num", text: number(u.input_tokens + u.output_tokens) })),
  );
  const votes = feedback.data.map((f) =>
    h(
      "tr",
      {},
      h("td", {}, badge(f.vote === "up" ? "▲ helpful" : "▼ not helpful", f.vote)),
      h("td", {}, h("a", { href: ctx.href("conversations", f.sub, f.conversation_id) }, f.content.slice(0, 80) || "(reply not stored)")),
      h("td", {}, when(f.updated_at)),
    ),
  );

  return [
    pageHeader("Overview", `${ctx.app.name}: the last 30 days (UTC)`),
    firstSteps(ctx, agents.list, keys.data.length > 0, byDay.data.length > 0),
    stats,
    card("Activity per day", h("div", { class: "legend", role: "group", "aria-label": "Show" }, buttons), chartSlot),
    h(
      "div",
      { class: "grid2" },
      card("Top agents", table(["Agent", "Turns", "Users", "Tokens"], topAgents, "No turns yet.")),
      card("Top users", table(["User (sub)", "Turns", "Tokens"], topUsers, "No users yet.")),
    ),
    card("Recent feedback", table(["Vote", "Reply", "When"], votes, "No votes yet: users rate replies with the feedback endpoint."), h("p", {}, h("a", { href: ctx.href("feedback") }, "All feedback"))),
  ];
}

function stat(id, value, label) {
  return h("div", { class: "stat" }, h("strong", { id, text: value }), h("span", { text: label }));
}

/** Until the application has an agent, a key and a turn: what to do next, in order. */
function firstSteps(ctx, agents, hasKey, hasTurns) {
  if (agents.length && hasKey && hasTurns) return null;
  const step = (done, text, link, label) =>
    h("li", {}, done ? badge("done", "ok") : badge("to do", "warn"), " ", text, " ", done || !link ? null : h("a", { href: link }, label));
  const first = agents[0];
  return card(
    "Get started",
    h(
      "ol",
      { class: "steps" },
      step(agents.length > 0, "Create an agent: its instructions and model.", ctx.href("agents"), "Create an agent"),
      step(hasKey, "Create an authentication key: your backend signs user tokens with it.", ctx.href("keys"), "Create a key"),
      step(hasTurns, "Talk to the agent as a test user.", first ? ctx.href("agents", first.id, "try") : null, "Try it"),
    ),
  );
}
