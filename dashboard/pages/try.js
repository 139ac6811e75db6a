// Try it: a short-lived token for a test user, then a streamed chat with the agent. The
// conversation is remembered for the tab's session: after a reload or a visit elsewhere its
// transcript comes back, and a reply still in progress (`resumable` on) is picked up.

import { api, ApiError } from "/dashboard/api.js";
import { field, h } from "/dashboard/dom.js";
import { card, empty } from "/dashboard/ui.js";
import { callText, resumeTurn, toolTurn } from "/dashboard/pages/tools.js";

export function tryPanel(ctx, agent, keys) {
  if (!keys.length) {
    return card("Try it", empty("No authentication key covers this agent yet. Create one to mint a test user's token.", h("a", { href: ctx.href("keys") }, "Create an authentication key")));
  }
  const agentId = agent.id;
  const remembered = `confidant.try.${agentId}`;
  const saved = JSON.parse(sessionStorage.getItem(remembered) || "null");
  const key = h("select", {}, keys.map((k) => h("option", { value: k.id }, k.name)));
  if (saved && keys.some((k) => k.id === saved.key)) key.value = saved.key;
  const sub = h("input", { type: "text", value: saved?.sub ?? "dashboard-test-user", maxlength: 256, required: true, spellcheck: "false" });
  const placeholder = empty("Send a message to start a conversation as this test user. It is stored like any user's: find it afterwards under Users.");
  const log = h("div", { class: "chat", id: "chat-log", role: "log", "aria-label": "Conversation", tabindex: "0" }, placeholder);
  const message = h("textarea", { rows: 2, placeholder: "Say something to the agent", maxlength: 32768 });
  const send = h("button", { class: "primary", type: "submit" }, "Send");
  const stop = h("button", { type: "button", hidden: true }, "Stop");
  const fresh = h("button", { type: "button" }, "New conversation");
  const found = h("p", { class: "muted", hidden: true });
  let token = null;
  let expires = 0;
  let conversation = saved?.conversation ?? `dashboard-${Date.now()}`;
  const scroll = () => { log.scrollTop = log.scrollHeight; };
  const remember = () => {
    sessionStorage.setItem(remembered, JSON.stringify({ conversation, key: key.value, sub: sub.value }));
    found.replaceChildren("Stored as ", h("a", { href: ctx.href("conversations", sub.value, conversation) }, "this conversation"), " of ", h("a", { href: ctx.href("users", sub.value) }, `user ${sub.value}`), ".");
    found.hidden = false;
  };
  async function userToken() {
    if (!token || Date.now() > expires - 30_000) {
      const minted = await api("POST", ctx.path(`/authentication-keys/${key.value}/tokens`), { sub: sub.value, ttl_seconds: 600 });
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
    log.replaceChildren(placeholder);
    found.hidden = true;
    message.focus();
  };
  key.addEventListener("change", forget);
  sub.addEventListener("change", forget);
  fresh.addEventListener("click", forget);
  const line = (who, node, cls = "") => {
    placeholder.remove();
    const el = h("div", { class: `msg ${cls}` }, h("span", { class: "who", text: who }), node);
    log.append(el);
    return el;
  };
  const failure = (error) => { line("Not sent", h("span", { text: error.message || "Something went wrong." }), "failed"); scroll(); };
  /** What a reply's stream shows, as it comes. */
  function shown() {
    let reply = null;
    const agentLine = () => {
      if (!reply) {
        reply = h("span", { class: "reply" });
        line(agent.name, reply, "agent");
      }
      return reply;
    };
    return {
      delta: (delta) => { agentLine().textContent += delta; scroll(); },
      toolCall: (call) => {
        reply = null;
        const node = h("code", { text: callText(call.name, call.arguments) });
        line(call.server ? "Tool call (run by the service)" : "Tool call (your app runs it)", call.server ? node : h("span", {}, node, resultForm(call)), "tool");
        scroll();
      },
      toolResult: (result) => {
        line("Tool result", h("code", { text: typeof result.output === "string" ? result.output : JSON.stringify(result.output) }), "tool");
        reply = null;
        scroll();
      },
    };
  }
  /** Runs a reply's stream (a new turn, or one resumed) with Send busy and Stop shown. */
  async function streaming(runStream) {
    send.disabled = true;
    send.setAttribute("aria-busy", "true");
    stop.hidden = false;
    try {
      await runStream();
    } catch (error) {
      failure(error);
    } finally {
      send.disabled = false;
      send.removeAttribute("aria-busy");
      stop.hidden = true;
    }
  }
  /** Runs one turn (a message, or a client tool's result) and shows what comes back. */
  async function turn(body) {
    await streaming(async () => {
      await userToken();
      remember();
      await toolTurn(agentId, token, { ...body, conversation_id: conversation }, shown(), ApiError);
    });
    message.focus();
  }
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    const path = `/v1/agents/${agentId}/conversations/${encodeURIComponent(conversation)}/stop`;
    await fetch(path, { method: "POST", headers: { "x-secure-user-token": token } }).catch(() => null);
    stop.disabled = false;
  });
  /** After a reload: the stored transcript, then the reply in progress, if any. */
  async function restore() {
    try {
      await userToken();
    } catch (error) {
      return failure(error);
    }
    const path = `/v1/agents/${agentId}/conversations/${encodeURIComponent(conversation)}?limit=100`;
    const response = await fetch(path, { headers: { "x-secure-user-token": token } }).catch(() => null);
    if (!response?.ok) return; // deleted, or never stored: start afresh
    const stored = await response.json();
    remember();
    for (const m of stored.messages) {
      if (m.role === "user") line("You", h("span", { text: m.content }), "you");
      else if (m.role === "assistant") {
        for (const call of m.tool_calls ?? []) line("Tool call", h("code", { text: callText(call.name, call.arguments) }), "tool");
        if (m.content) line(agent.name, h("span", { class: "reply", text: m.status === "incomplete" ? `${m.content} (cut short)` : m.content }), "agent");
      } else if (m.role === "tool") line("Tool result", h("code", { text: m.content }), "tool");
    }
    scroll();
    await streaming(async () => {
      const view = shown();
      let first = true;
      // The resumed reply comes from its start: it replaces the stored part of it, if any.
      await resumeTurn(agentId, conversation, token, {
        ...view,
        delta: (delta) => {
          if (first) {
            first = false;
            const last = log.lastElementChild;
            if (last?.classList.contains("agent")) last.remove();
          }
          view.delta(delta);
        },
      }, ApiError);
    });
  }
  /** What the app would answer for one of its tools: typed here, sent as the tool's result. */
  function resultForm(call) {
    const output = h("input", { type: "text", placeholder: `Result of ${call.name}`, "aria-label": `Result of ${call.name}`, maxlength: 32768 });
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
      id: "try-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const text = message.value.trim();
        if (!text || send.disabled) return;
        message.value = "";
        line("You", h("span", { text }), "you");
        scroll();
        await turn({ message: text });
      },
    },
    h("div", { class: "row filters" }, field("Key", key), field("Test user (sub)", sub, { hint: "Any id: the conversation is stored as this user's." }), fresh),
    h("div", { class: "composer" }, field("Message", message), send, stop),
  );
  // Enter sends, Shift+Enter is a new line.
  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  if (saved) restore();
  return card("Try it", h("p", { class: "muted", text: `Chat with ${agent.name} as a test user: replies stream as the model writes them.` }), log, form, found);
}
