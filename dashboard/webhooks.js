// The webhooks page: an application's receivers of events (the signing secret shown once), each
// with its deliveries log and a "send test event" button.

import { field, h } from "/dashboard/dom.js";

const EVENTS = [
  ["conversation.created", "A conversation was started"],
  ["message.completed", "An assistant reply was stored (incomplete ones too)"],
  ["feedback.created", "A user rated a reply"],
  ["memory.created", "A memory record was created"],
  ["user.erased", "A user's data was erased"],
];

/**
 * Renders the page into `panel`. `ui` is the app's: `api`, `attempt`, `appPath`, `showSecret`,
 * `deleteButton`, `when`, `render`.
 */
export async function renderWebhooks(panel, ui) {
  const webhooks = (await ui.api("GET", ui.appPath("/webhooks"))).data;
  const log = h("section", { class: "card", id: "deliveries", hidden: true });
  const rows = webhooks.map((w) =>
    h(
      "tr",
      {},
      h("td", { class: "mono wrap", text: w.url }),
      h("td", { text: w.events.join(", ") }),
      h("td", { text: ui.when(w.created_at) }),
      h(
        "td",
        { class: "actions" },
        h("button", { type: "button", "aria-label": `Deliveries of ${w.url}`, onclick: () => showDeliveries(log, w, ui) }, "Deliveries"),
        h("button", {
          type: "button",
          "aria-label": `Send a test event to ${w.url}`,
          onclick: async (event) => {
            event.target.disabled = true;
            const sent = await ui.attempt(() => ui.api("POST", ui.appPath(`/webhooks/${w.id}/test`)), "Test event sent: see its delivery below.");
            event.target.disabled = false;
            if (sent) {
              await showDeliveries(log, w, ui);
              // Delivered within a second or so: show how it went.
              setTimeout(() => showDeliveries(log, w, ui), 1500);
            }
          },
        }, "Send test event"),
        ui.deleteButton(`webhook ${w.url}`, "webhook", `/webhooks/${w.id}`),
      ),
    ),
  );
  const url = h("input", { type: "url", required: true, maxlength: 2048, placeholder: "https://example.com/hooks/confidant" });
  const boxes = EVENTS.map(([name]) => h("input", { type: "checkbox", checked: true, value: name }));
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const events = boxes.filter((b) => b.checked).map((b) => b.value);
        const submit = event.submitter;
        if (submit) submit.disabled = true;
        const created = await ui.attempt(() => ui.api("POST", ui.appPath("/webhooks"), { url: url.value, events }));
        if (submit) submit.disabled = false;
        if (!created) return;
        await ui.showSecret("Webhook added", "Signing secret (verify webhook-signature with any Standard Webhooks library)", created.secret);
        ui.render();
      },
    },
    h("h2", { text: "New webhook" }),
    field("URL (events are POSTed here, signed)", url),
    h(
      "fieldset",
      {},
      h("legend", { text: "Events" }),
      EVENTS.map(([name, what], i) => field(`${name}: ${what}`, boxes[i], true)),
    ),
    h("button", { class: "primary", type: "submit" }, "Add webhook"),
  );
  panel.append(
    h(
      "section",
      { class: "card" },
      h("h2", { text: "Webhooks" }),
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["URL", "Events", "Created", ""].map((t) => h("th", { text: t })))), h("tbody", {}, rows))
        : h("p", { class: "muted", text: "No webhooks yet: add one below to be told when conversations, replies, votes, memories and erasures happen." }),
    ),
    log,
    h("section", { class: "card" }, form),
  );
}

/** The webhook's deliveries, newest first, a page at a time. */
async function showDeliveries(section, webhook, ui) {
  section.hidden = false;
  const body = h("tbody", {});
  const more = h("button", { type: "button", hidden: true }, "Older deliveries");
  let cursor = null;
  async function page() {
    const query = cursor ? `?limit=20&cursor=${encodeURIComponent(cursor)}` : "?limit=20";
    const got = await ui.attempt(() => ui.api("GET", ui.appPath(`/webhooks/${webhook.id}/deliveries${query}`)));
    if (!got) return;
    for (const d of got.data) {
      const answer = d.last_error ?? (d.last_status ? `HTTP ${d.last_status}` : "");
      body.append(
        h(
          "tr",
          {},
          h("td", { text: ui.when(d.created_at) }),
          h("td", { class: "mono", text: d.event_type }),
          h("td", {}, h("span", { class: `badge ${d.status}`, text: d.status })),
          h("td", { text: d.attempts }),
          h("td", { class: "wrap", text: answer }),
          h("td", { text: d.status === "pending" ? ui.when(d.next_attempt_at) : d.delivered_at ? ui.when(d.delivered_at) : "" }),
        ),
      );
    }
    cursor = got.next_cursor;
    more.hidden = !cursor;
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted", text: "Nothing sent yet." })));
  }
  more.addEventListener("click", page);
  section.replaceChildren(
    h("h2", { text: `Deliveries to ${webhook.url}` }),
    h("p", { class: "muted", text: "Pending deliveries are retried with growing waits for 24 hours; the log keeps a week." }),
    h("button", { type: "button", onclick: () => showDeliveries(section, webhook, ui) }, "Refresh"),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["Created", "Event", "Status", "Attempts", "Last answer", "Next attempt / delivered"].map((t) => h("th", { text: t })))),
      body,
    ),
    more,
  );
  await page();
}
