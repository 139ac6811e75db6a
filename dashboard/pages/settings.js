// The application's settings: its name, browsers and per-user limits, replies that outlive
// their client, retention and privacy mode, and deleting it.

import { api } from "/dashboard/api.js";
import { field, h, textInput } from "/dashboard/dom.js";
import { card, confirmAction, onSubmit, pageHeader, typedConfirm } from "/dashboard/ui.js";
import { originsField, run } from "/dashboard/pages/common.js";

const count = (input) => (input.value.trim() === "" ? null : Number(input.value));

export async function settingsPage(ctx) {
  const app = await api("GET", ctx.path());
  return [
    pageHeader("Settings", `${app.name} · created ${new Date(app.created_at).toLocaleDateString()}`),
    h("div", { class: "grid2" }, card("General", generalForm(ctx, app)), card("Replies", repliesForm(ctx, app))),
    card("Browsers and limits", limitsForm(ctx, app)),
    card("Retention and privacy", retentionForm(ctx, app)),
    dangerZone(ctx, app),
  ];
}

function generalForm(ctx, app) {
  const name = textInput({ required: true, value: app.name });
  const id = h("code", { text: app.id });
  return onSubmit(
    h("form", { id: "app-general" }, field("Name", name, { name: "name" }), h("p", { class: "hint" }, "Application id: ", id), h("button", { class: "primary", type: "submit" }, "Rename")),
    async () => {
      const saved = await api("PATCH", ctx.path(), { name: name.value });
      await ctx.applicationChanged();
      return saved;
    },
    (saved) => `Renamed to “${saved.name}”.`,
  );
}

function repliesForm(ctx, app) {
  const resumable = h("input", { type: "checkbox", checked: app.resumable });
  return onSubmit(
    h(
      "form",
      { id: "app-replies" },
      field("Replies go on when their client leaves", resumable, {
        inline: true,
        name: "resumable",
        hint: "A reply whose browser reloads or loses its connection is finished and stored anyway, and the client picks it up where it is. Off: a reply stops when its client leaves.",
      }),
      h("button", { class: "primary", type: "submit" }, "Save"),
    ),
    () => api("PATCH", ctx.path(), { resumable: resumable.checked }),
    "Saved.",
  );
}

function limitsForm(ctx, app) {
  const origins = originsField(app.allowed_origins, "Allowed browser origins", "Web pages on these origins may call your agents with a user's token, one per line. Empty: any origin. An agent may have its own list.");
  const limit = (value) => h("input", { type: "number", min: "1", step: "1", value: value ?? "", placeholder: "no limit" });
  const requests = limit(app.limits.user_requests_per_minute);
  const completions = limit(app.limits.user_completions_per_minute);
  const tokens = limit(app.limits.user_tokens_per_day);
  return onSubmit(
    h(
      "form",
      { id: "app-limits" },
      origins.node,
      h("fieldset", {}, h("legend", { text: "Per end user (sub)" }), h("p", { class: "hint", text: "A user past a limit is answered 429 with Retry-After. Empty: no limit." }),
        h("div", { class: "row filters" },
          field("Requests per minute", requests, { name: "limits.user_requests_per_minute" }),
          field("Completions per minute", completions, { name: "limits.user_completions_per_minute" }),
          field("Tokens per day (UTC)", tokens, { name: "limits.user_tokens_per_day" }))),
      h("button", { class: "primary", type: "submit" }, "Save"),
    ),
    () =>
      api("PATCH", ctx.path(), {
        allowed_origins: origins.read(),
        limits: { user_requests_per_minute: count(requests), user_completions_per_minute: count(completions), user_tokens_per_day: count(tokens) },
      }),
    "Browsers and limits saved.",
  );
}

function retentionForm(ctx, app) {
  const days = (value) => h("input", { type: "number", min: "0", max: "36500", step: "1", value: value ?? "", placeholder: "forever" });
  const conversations = days(app.retention.conversation_days);
  const memories = days(app.retention.memory_days);
  const keepText = h("input", { type: "checkbox", checked: app.retention.store_content });
  return onSubmit(
    h(
      "form",
      { id: "app-retention" },
      h("p", { class: "hint", text: "Older conversations and memory are deleted automatically, checked every few minutes. Empty: kept forever; 0: deleted at the next check." }),
      h("div", { class: "row filters" },
        field("Delete conversations inactive for (days)", conversations, { name: "retention.conversation_days" }),
        field("Delete memory not updated for (days)", memories, { name: "retention.memory_days" })),
      field("Store message text and memory", keepText, {
        inline: true,
        name: "retention.store_content",
        hint: "Unticked is privacy mode: conversations, roles, times, token usage and feedback are kept, but what users and agents wrote is never stored, memory cannot be saved, and agents only see the messages each request sends.",
      }),
      h("button", { class: "primary", type: "submit" }, "Save retention"),
    ),
    async () => {
      const retention = { conversation_days: count(conversations), memory_days: count(memories), store_content: keepText.checked };
      if (!retention.store_content && app.retention.store_content) {
        const sure = await confirmAction(
          "Turn on privacy mode?",
          "From now on, your users' message text and memory are never written to disk, and agents see only what each request carries. What is stored already stays until retention removes it.",
          "Turn on privacy mode",
        );
        if (!sure) return undefined;
      }
      const saved = await api("PATCH", ctx.path(), { retention });
      app.retention = saved.retention;
      return saved;
    },
    "Retention saved.",
  );
}

function dangerZone(ctx, app) {
  const remove = h("button", { type: "button", class: "danger" }, "Delete application");
  remove.addEventListener("click", async () => {
    const sure = await typedConfirm(
      "Delete this application?",
      `Deletes ${app.name} with all its agents, keys, providers, webhooks, and every user's conversations and memory, at once. This cannot be undone.`,
      app.name,
      "Delete application",
    );
    if (!sure) return;
    const done = await run(remove, () => api("DELETE", ctx.path()), `Application “${app.name}” deleted.`);
    if (done !== undefined) {
      sessionStorage.removeItem("confidant.app");
      await ctx.applicationChanged("#/");
    }
  });
  return h(
    "section",
    { class: "card danger-zone", "aria-labelledby": "danger-title" },
    h("h2", { id: "danger-title", text: "Danger zone" }),
    h("p", { text: "Deleting the application removes everything in it for every member." }),
    remove,
  );
}
