// Conversations across the application's users, one transcript (tool calls, replaced versions
// and feedback marks included), and the users' feedback.

import { api } from "/dashboard/api.js";
import { field, h, when } from "/dashboard/dom.js";
import { badge, card, confirmAction, onSubmit, pageHeader, table } from "/dashboard/ui.js";
import { conversationList, loadAgents, run } from "/dashboard/pages/common.js";
import { callText } from "/dashboard/pages/tools.js";

export async function conversationsPage(ctx) {
  const agents = await loadAgents(ctx);
  return [
    pageHeader("Conversations", "Every user's conversations with your agents, newest activity first."),
    card(null, await conversationList(ctx, { agents: agents.byId })),
    card("Delete old conversations", purgeForm(ctx, agents.byId)),
  ];
}

function purgeForm(ctx, agents) {
  const agent = h("select", {}, h("option", { value: "" }, "All agents"), [...agents.values()].map((a) => h("option", { value: a.id }, a.name)));
  const before = h("input", { type: "date", required: true });
  return onSubmit(
    h(
      "form",
      {},
      h("p", { class: "muted", text: "Deletes the conversations not updated since the day you pick, with their messages and votes. To do this on a schedule, set a retention period in Settings." }),
      h("div", { class: "row filters" }, field("Agent", agent), field("Not updated since", before, { name: "before" }), h("button", { class: "danger", type: "submit" }, "Delete conversations")),
    ),
    async () => {
      const scope = agent.value ? `of “${agents.get(agent.value).name}” ` : "";
      if (!(await confirmAction("Delete conversations?", `Delete every conversation ${scope}not updated since ${before.value}, with its messages? This cannot be undone.`, "Delete conversations"))) return undefined;
      const query = new URLSearchParams({ before: before.value });
      if (agent.value) query.set("agent_id", agent.value);
      const done = await api("DELETE", ctx.path(`/conversations?${query}`));
      ctx.rerender();
      return done;
    },
    (done) => `${done.deleted} conversation(s) deleted.`,
  );
}

export async function transcriptPage(ctx) {
  const [sub, conversationId] = ctx.rest;
  const [conversation, agents] = await Promise.all([
    api("GET", ctx.path(`/users/${encodeURIComponent(sub)}/conversations/${encodeURIComponent(conversationId)}?limit=1000&include=superseded`)),
    loadAgents(ctx),
  ]);
  const agent = agents.byId.get(conversation.agent_id);
  const messages = conversation.messages.map((m) => message(m, agent));
  return [
    h(
      "div",
      { class: "page-header" },
      h(
        "div",
        { class: "titles" },
        h("p", { class: "crumbs" }, h("a", { href: ctx.href("conversations") }, "Conversations"), " / ", h("a", { href: ctx.href("users", sub), class: "mono" }, sub), " /"),
        h("h1", { id: "page-title", text: conversation.title || "Untitled conversation" }),
        h("p", { class: "muted" }, agent ? h("a", { href: ctx.href("agents", agent.id) }, agent.name) : "deleted agent", " · started ", when(conversation.created_at), " · ", h("span", { class: "mono", text: conversation.id })),
      ),
    ),
    h("section", { class: "card transcript", id: "transcript", "aria-label": "Transcript" }, messages.length ? messages : h("p", { class: "muted", text: "No messages." })),
    conversation.messages_next_cursor ? h("p", { class: "muted", text: "Only the newest 1,000 messages are shown." }) : null,
  ];
}

function message(m, agent) {
  const role = m.role === "assistant" ? agent?.name ?? "Agent" : m.role === "user" ? "User" : m.role === "tool" ? "Tool result" : m.role === "system" ? "System" : m.role;
  const marks = [];
  if (m.status === "incomplete") marks.push(badge("cut short", "warn"));
  if (m.status === "superseded") marks.push(badge("replaced by a regenerate or an edit"));
  if (m.feedback) marks.push(badge(m.feedback.vote === "up" ? "▲ rated helpful" : "▼ rated not helpful", m.feedback.vote));
  const vote = m.feedback && (m.feedback.comment || m.feedback.tags?.length)
    ? h("div", { class: `vote ${m.feedback.vote}`, text: [m.feedback.comment, ...(m.feedback.tags || []).map((t) => `#${t}`)].filter(Boolean).join(" · ") })
    : null;
  const calls = (m.tool_calls || []).map((c) => h("div", { class: "tool mono", text: `calls ${callText(c.name, c.arguments)}` }));
  const hidden = calls.length || m.role === "system" ? "" : "(text not stored: privacy mode)";
  return h(
    "article",
    { class: `message ${m.role}${m.status === "superseded" ? " superseded" : ""}` },
    h("div", { class: "meta" }, h("span", { class: "role", text: role }), when(m.created_at), m.tool_call_id ? h("span", { class: "mono", text: `for ${m.tool_call_id}` }) : null, marks),
    m.content || hidden ? h("div", { class: "content", text: m.content || hidden }) : null,
    calls,
    vote,
  );
}

export async function feedbackPage(ctx) {
  const vote = h("select", {}, h("option", { value: "" }, "All votes"), h("option", { value: "up" }, "Helpful (up)"), h("option", { value: "down" }, "Not helpful (down)"));
  const slot = h("div", {});
  const more = h("button", { type: "button", hidden: true }, "Load more");
  let cursor = null;
  let rows = [];
  const load = async (reset) => {
    if (reset) {
      cursor = null;
      rows = [];
    }
    const query = new URLSearchParams({ limit: "50" });
    if (vote.value) query.set("vote", vote.value);
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", ctx.path(`/feedback?${query}`));
    for (const f of page.data) {
      rows.push(
        h(
          "tr",
          {},
          h("td", {}, badge(f.vote === "up" ? "▲ helpful" : "▼ not helpful", f.vote)),
          h("td", {}, h("a", { href: ctx.href("conversations", f.sub, f.conversation_id) }, f.content.slice(0, 100) || "(reply not stored)")),
          h("td", { text: [f.comment, ...(f.tags || []).map((t) => `#${t}`)].filter(Boolean).join(" ") }),
          h("td", {}, h("a", { href: ctx.href("users", f.sub), class: "mono" }, f.sub)),
          h("td", {}, when(f.updated_at)),
        ),
      );
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    slot.replaceChildren(table(["Vote", "Reply", "Comment and tags", "User (sub)", "When"], rows, vote.value ? "No votes of this kind." : "No feedback yet. Users rate replies through the feedback endpoint; their votes appear here."));
  };
  vote.addEventListener("change", () => run(vote, () => load(true)));
  more.addEventListener("click", () => run(more, () => load(false)));
  await load(true);
  return [
    pageHeader("Feedback", "Votes your users gave the agents' replies, newest first. Open a reply to read its conversation."),
    card(null, h("div", { class: "row filters" }, field("Show", vote)), slot, h("p", {}, more)),
  ];
}
