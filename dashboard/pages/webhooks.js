// Webhooks: an application's receivers of events (the signing secret shown once), each with its
// deliveries log a page at a time and a "send test event" button.

import { api } from "/dashboard/api.js";
import { field, h, when } from "/dashboard/dom.js";
import { badge, card, empty, FieldError, onSubmit, pageHeader, showSecret, table } from "/dashboard/ui.js";
import { deleteButton, run } from "/dashboard/pages/common.js";

const EVENTS = [
  ["conversation.created", "A conversation was started"],
  ["message.completed", "An assistant reply was stored (incomplete ones too)"],
  ["feedback.created", "A user rated a reply"],
  ["memory.created", "A memory record was created"],
  ["user.erased", "A user's data was erased"],
];

export async function webhooksPage(ctx) {
  const webhooks = (await api("GET", ctx.path("/webhooks"))).data;
  const log = h("section", { class: "card", id: "deliveries", hidden: true, "aria-live": "polite" });
  const rows = webhooks.map((w) => {
    const test = h("button", { type: "button", "aria-label": `Send test event to ${w.url}` }, "Send test event");
    test.addEventListener("click", async () => {
      const sent = await run(test, () => api("POST", ctx.path(`/webhooks/${w.id}/test`)), "Test event queued: see its delivery below.");
      if (sent === undefined) return;
      await showDeliveries(ctx, log, w);
      // Delivered within a second or so: show how it went.
      setTimeout(() => showDeliveries(ctx, log, w).catch(() => null), 1500);
    });
    const deliveries = h("button", { type: "button", "aria-label": `Deliveries to ${w.url}` }, "Deliveries");
    deliveries.addEventListener("click", () => run(deliveries, () => showDeliveries(ctx, log, w)));
    return h(
      "tr",
      {},
      h("td", { class: "mono", text: w.url }),
      h("td", {}, w.events.map((e) => h("div", { class: "mono", text: e }))),
      h("td", {}, when(w.created_at)),
      h("td", { class: "actions" }, deliveries, test, deleteButton(ctx, `webhook ${w.url}`, "webhook", `/webhooks/${w.id}`)),
    );
  });
  return [
    pageHeader("Webhooks", "Your servers are told when conversations, replies, votes, memories and erasures happen: signed POSTs per Standard Webhooks, retried for 24 hours."),
    card(null, table(["URL", "Events", "Added", ""], rows, empty("No webhooks yet. Add one below to receive events."))),
    log,
    card("New webhook", webhookForm(ctx)),
  ];
}

function webhookForm(ctx) {
  const url = h("input", { type: "url", required: true, maxlength: 2048, placeholder: "https://example.com/hooks/confidant" });
  const boxes = EVENTS.map(([name]) => h("input", { type: "checkbox", checked: true, value: name }));
  return onSubmit(
    h(
      "form",
      { id: "new-webhook" },
      field("URL", url, { name: "url", hint: "Events are POSTed here, signed with the secret you will be shown." }),
      h("fieldset", { "data-field": "events" }, h("legend", { text: "Events" }), EVENTS.map(([name, what], i) => field(`${name}: ${what}`, boxes[i], { inline: true }))),
      h("button", { class: "primary", type: "submit" }, "Add webhook"),
    ),
    async () => {
      const events = boxes.filter((b) => b.checked).map((b) => b.value);
      if (!events.length) throw new FieldError("events", "Choose at least one event.");
      const created = await api("POST", ctx.path("/webhooks"), { url: url.value, events });
      await showSecret("Webhook added", "Signing secret: verify webhook-signature with any Standard Webhooks library", created.secret);
      ctx.rerender();
      return created;
    },
    "Webhook added.",
  );
}

/** The webhook's deliveries, newest first, a page at a time. */
async function showDeliveries(ctx, section, webhook) {
  let rows = [];
  const slot = h("div", {});
  const more = h("button", { type: "button", hidden: true }, "Older deliveries");
  let cursor = null;
  async function page() {
    const query = cursor ? `?limit=20&cursor=${encodeURIComponent(cursor)}` : "?limit=20";
    const got = await api("GET", ctx.path(`/webhooks/${webhook.id}/deliveries${query}`));
    for (const d of got.data) {
      const answer = d.last_error ?? (d.last_status ? `HTTP ${d.last_status}` : "");
      rows.push(
        h(
          "tr",
          {},
          h("td", {}, when(d.created_at)),
          h("td", { class: "mono", text: d.event_type }),
          h("td", {}, badge(d.status, d.status)),
          h("td", { class: "num", text: d.attempts }),
          h("td", { text: answer }),
          h("td", {}, d.status === "pending" ? when(d.next_attempt_at) : d.delivered_at ? when(d.delivered_at) : ""),
        ),
      );
    }
    cursor = got.next_cursor;
    more.hidden = !cursor;
    slot.replaceChildren(table(["Created", "Event", "Status", "Attempts", "Last answer", "Next attempt / delivered"], rows, "Nothing sent yet."));
  }
  more.addEventListener("click", () => run(more, page));
  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => run(refresh, () => showDeliveries(ctx, section, webhook)));
  await page();
  section.replaceChildren(
    h("div", { class: "page-header" }, h("div", { class: "titles" }, h("h2", { text: `Deliveries to ${webhook.url}` }), h("p", { class: "muted", text: "Pending deliveries are retried with growing waits for 24 hours; the log keeps a week." })), refresh),
    slot,
    h("p", {}, more),
  );
  section.hidden = false;
}
