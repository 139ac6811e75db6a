// The application's end users: find one by `sub`, see their conversations, memory, usage and
// votes, export all of it as JSON, or erase it.

import { api } from "/dashboard/api.js";
import { field, h, number, when } from "/dashboard/dom.js";
import { lastDays } from "/dashboard/chart.js";
import { badge, card, onSubmit, pageHeader, table, typedConfirm } from "/dashboard/ui.js";
import { loadAgents, run } from "/dashboard/pages/common.js";

export async function usersPage(ctx) {
  const days = lastDays(30);
  const usage = await api("GET", ctx.path(`/usage?from=${days[0]}&to=${days.at(-1)}&group_by=user`));
  const sub = h("input", { type: "search", required: true, maxlength: 256, placeholder: "user-123", spellcheck: "false", autocomplete: "off" });
  const find = onSubmit(
    h("form", { class: "row filters", role: "search" }, field("User id (sub)", sub, { hint: "The sub claim your backend puts in the user's token." }), h("button", { class: "primary", type: "submit" }, "Find user")),
    async () => {
      ctx.go(ctx.href("users", sub.value.trim()));
      return undefined;
    },
  );
  const rows = usage.data
    .filter((u) => u.sub)
    .sort((a, b) => b.turns - a.turns)
    .map((u) => h("tr", {}, h("td", {}, h("a", { href: ctx.href("users", u.sub), class: "mono" }, u.sub)), h("td", { class: "num", text: number(u.turns) }), h("td", { class: "num", text: number(u.input_tokens + u.output_tokens) })));
  return [
    pageHeader("Users", "Your end users, as the sub claim of their tokens names them. Their data is theirs: export or erase it here."),
    card("Find a user", find),
    card("Active in the last 30 days", table(["User (sub)", "Turns", "Tokens"], rows, "No user has made a turn in the last 30 days.")),
  ];
}

export async function userPage(ctx) {
  const sub = ctx.rest[0];
  const path = ctx.path(`/users/${encodeURIComponent(sub)}`);
  const [user, agents] = await Promise.all([api("GET", path), loadAgents(ctx)]);
  const agentName = (id) => (id ? agents.byId.get(id)?.name ?? "deleted agent" : "all agents");
  const exportButton = h("button", { type: "button" }, "Export JSON");
  exportButton.addEventListener("click", () =>
    run(exportButton, async () => {
      const data = await api("GET", path);
      const link = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" })), download: `user-${sub.replace(/[^\w.-]+/g, "_")}.json` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    }, "Export downloaded."),
  );
  const erase = h("button", { type: "button", class: "danger" }, "Erase user");
  erase.addEventListener("click", async () => {
    const sure = await typedConfirm(
      "Erase this user?",
      `Every conversation, message, memory record and vote of ${sub} in ${ctx.app.name} is deleted at once. Their usage counts stay, without content. This cannot be undone.`,
      sub,
      "Erase user",
    );
    if (!sure) return;
    const done = await run(erase, () => api("DELETE", path), (r) => `Erased ${r.conversations} conversation(s), ${r.messages} message(s) and ${r.memories} memory record(s) of ${sub}.`);
    if (done) ctx.go(ctx.href("users"));
  });
  const turns = user.usage.reduce((n, d) => n + d.turns, 0);
  const tokens = user.usage.reduce((n, d) => n + d.input_tokens + d.output_tokens, 0);
  const conversations = user.conversations.map((c) =>
    h("tr", {}, h("td", {}, h("a", { href: ctx.href("conversations", sub, c.id), class: "cell-title" }, c.title || "Untitled conversation")), h("td", { text: agentName(c.agent_id) }), h("td", { class: "num", text: number(c.messages.length) }), h("td", {}, when(c.updated_at))),
  );
  const memories = user.memories.map((m) => h("tr", {}, h("td", { class: "wrap", text: m.content || "(not stored)" }), h("td", { text: agentName(m.agent_id) }), h("td", {}, when(m.updated_at))));
  const feedback = user.feedback.map((f) =>
    h("tr", {}, h("td", {}, badge(f.vote === "up" ? "▲ helpful" : "▼ not helpful", f.vote)), h("td", {}, h("a", { href: ctx.href("conversations", sub, f.conversation_id) }, f.content.slice(0, 80) || "(reply not stored)")), h("td", { text: f.comment ?? "" }), h("td", {}, when(f.updated_at))),
  );
  const usage = user.usage.slice(0, 30).map((d) => h("tr", {}, h("td", { text: d.day }), h("td", { text: agentName(d.agent_id) }), h("td", { class: "num", text: number(d.turns) }), h("td", { class: "num", text: number(d.input_tokens) }), h("td", { class: "num", text: number(d.output_tokens) })));
  const nothing = !user.conversations.length && !user.memories.length && !user.usage.length && !user.feedback.length;
  return [
    h(
      "div",
      { class: "page-header" },
      h("div", { class: "titles" }, h("p", { class: "crumbs" }, h("a", { href: ctx.href("users") }, "Users"), " /"), h("h1", { id: "page-title", class: "mono", text: sub })),
      h("div", { class: "row" }, exportButton, erase),
    ),
    nothing ? card(null, h("p", { text: `${ctx.app.name} holds nothing for ${sub}: no conversation, memory, usage or vote. Check the spelling: a sub is matched exactly.` })) : null,
    h(
      "div",
      { class: "stats" },
      h("div", { class: "stat" }, h("strong", { id: "user-conversations", text: number(user.conversations.length) }), h("span", { text: "conversations" })),
      h("div", { class: "stat" }, h("strong", { text: number(user.memories.length) }), h("span", { text: "memory records" })),
      h("div", { class: "stat" }, h("strong", { text: number(turns) }), h("span", { text: "turns" })),
      h("div", { class: "stat" }, h("strong", { text: number(tokens) }), h("span", { text: "tokens" })),
    ),
    card("Conversations", table(["Conversation", "Agent", "Messages", "Last activity"], conversations, "No conversations.")),
    card("Memory", table(["Record", "Agent", "Updated"], memories, "No memory records.")),
    card("Feedback", table(["Vote", "Reply", "Comment", "When"], feedback, "No votes.")),
    card("Usage per day", table(["Day (UTC)", "Agent", "Turns", "Input tokens", "Output tokens"], usage, "No usage.")),
  ];
}
