// The dashboard's feedback: toasts, dialogs, forms that mark their fields, buttons busy while
// their request runs, tables with empty states, tabs driven by the keyboard.

import { ApiError } from "/dashboard/api.js";
import { $, field, h, setFieldError, uid } from "/dashboard/dom.js";

/** A short message in the corner: successes vanish after a few seconds, errors stay until closed. */
export function toast(message, kind = "success") {
  const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss" }, "×");
  const node = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, h("span", { text: message }), close);
  close.addEventListener("click", () => node.remove());
  $("toasts").append(node);
  if (kind !== "error") setTimeout(() => node.remove(), 5000);
  return node;
}

export function clearToasts() {
  $("toasts").replaceChildren();
}

/** Runs `action` with `button` disabled and spinning; a second click meanwhile does nothing. */
export async function busy(button, action) {
  if (button.getAttribute("aria-busy") === "true") return undefined;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** The message an error shows; an error the page caused itself (bad JSON typed) keeps its own. */
const explain = (error) => error?.message || "Something went wrong.";

/**
 * Wires a form: on submit its fields' errors are cleared, its submit button is busy while
 * `action(form)` runs, and a failure marks the fields the API named (by their `data-field`) or
 * shows the message at the top of the form. `success` (a string or a function of the result)
 * becomes a toast. Returns the form.
 */
export function onSubmit(form, action, success) {
  const problem = h("div", { class: "form-error", role: "alert", hidden: true });
  form.prepend(problem);
  form.noValidate = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter ?? form.querySelector("button[type=submit]");
    if (form.dataset.busy) return;
    form.dataset.busy = "1";
    problem.hidden = true;
    for (const input of form.querySelectorAll("[aria-invalid]")) setFieldError(input, null);
    try {
      const result = await (button ? busy(button, () => action(form)) : action(form));
      if (result !== undefined && success) toast(typeof success === "function" ? success(result) : success);
    } catch (error) {
      showFormError(form, problem, error);
    } finally {
      delete form.dataset.busy;
    }
  });
  return form;
}

function showFormError(form, problem, error) {
  let marked = 0;
  if (error instanceof ApiError) {
    for (const [path, message] of Object.entries(error.fields)) {
      const input = [...form.querySelectorAll("[data-field]")].find((i) => i.dataset.field === path || path.startsWith(`${i.dataset.field}.`) || path.startsWith(`${i.dataset.field}[`));
      if (!input) continue;
      setFieldError(input, sentenceFor(path, message));
      if (!marked++) input.focus();
    }
  } else if (error?.field) {
    const input = form.querySelector(`[data-field="${error.field}"]`);
    if (input?.id && document.getElementById(`${input.id}-error`)) {
      setFieldError(input, error.message);
      input.focus();
      marked++;
    }
  }
  if (!marked || !(error instanceof ApiError) || error.code !== "validation_failed") {
    problem.textContent = marked ? "Some fields need a change: see below." : explain(error);
    problem.hidden = false;
  }
}

/** `name: must be 1 to 200 characters` → "Must be 1 to 200 characters." */
function sentenceFor(path, message) {
  const text = String(message).trim();
  const nested = path.includes(".") || path.includes("[") ? ` (${path})` : "";
  return text[0].toUpperCase() + text.slice(1) + nested + (/[.!?]$/.test(text) ? "" : ".");
}

/** An error the page found itself, tied to one field (`data-field`). */
export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

// ---------------------------------------------------------------------------------------------
// Dialogs

/**
 * A modal dialog; resolves to the value of the button that closed it ("cancel" on Escape).
 * `actions`: [label, value, class].
 */
export function showDialog(title, body, actions, { onOpen } = {}) {
  const dialog = $("dialog");
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...[body].flat());
  $("dialog-actions").replaceChildren(...actions.map(([label, value, cls]) => h("button", { value, class: cls, type: "button", onclick: () => dialog.close(value) }, label)));
  $("dialog-actions").hidden = !actions.length;
  dialog.returnValue = "cancel";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        $("dialog-body").replaceChildren();
        resolve(dialog.returnValue || "cancel");
      },
      { once: true },
    );
    dialog.showModal();
    onOpen?.(dialog);
  });
}

export async function confirmAction(title, message, confirmLabel) {
  const answer = await showDialog(title, h("p", { text: message }), [
    ["Cancel", "cancel"],
    [confirmLabel, "confirm", "danger"],
  ]);
  return answer === "confirm";
}

/** A destructive action confirmed by typing `word` (a name, a user's sub). */
export async function typedConfirm(title, message, word, confirmLabel) {
  const input = h("input", { type: "text", autocomplete: "off", spellcheck: "false" });
  const body = [h("p", { text: message }), field(`Type “${word}” to confirm`, input)];
  const answer = await showDialog(title, body, [["Cancel", "cancel"], [confirmLabel, "confirm", "danger"]], {
    onOpen: (dialog) => {
      const button = dialog.querySelector('button[value="confirm"]');
      button.disabled = true;
      input.addEventListener("input", () => { button.disabled = input.value !== word; });
      input.focus();
    },
  });
  return answer === "confirm" && input.value === word;
}

/** Shows a secret once, with a copy button. */
export async function showSecret(title, label, secret, extra = []) {
  const copied = h("span", { role: "status", class: "muted" });
  const copy = h("button", {
    type: "button",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(secret);
        copied.textContent = "Copied.";
      } catch {
        copied.textContent = "Copy failed: select the text and copy it by hand.";
      }
    },
  }, "Copy");
  const body = [
    h("p", { class: "warning", text: "Copy it now: you will not see this again." }),
    h("div", { class: "secret" }, h("div", { text: label, class: "muted" }), h("code", { id: "shown-secret", text: secret })),
    h("p", { class: "row" }, copy, copied),
    ...extra,
  ];
  await showDialog(title, body, [["I have stored it", "ok", "primary"]]);
}

// ---------------------------------------------------------------------------------------------
// Page parts

/** A page's title, an optional line under it, and actions on the right. */
export function pageHeader(title, subtitle, ...actions) {
  return h(
    "div",
    { class: "page-header" },
    h("div", { class: "titles" }, h("h1", { id: "page-title", text: title }), subtitle ? h("p", { class: "muted", text: subtitle }) : null),
    actions.length ? h("div", { class: "row" }, actions) : null,
  );
}

export function card(title, ...children) {
  const id = title ? uid("card") : null;
  return h("section", { class: "card", "aria-labelledby": id }, title ? h("h2", { id, text: title }) : null, children);
}

/** An empty state: what is missing, and what to do about it. */
export function empty(text, action) {
  return h("div", { class: "empty" }, h("p", { text }), action ?? null);
}

/** A table that scrolls inside its own box on a narrow screen; `rows` empty shows `emptyText`. */
export function table(headers, rows, emptyText, caption) {
  if (!rows.length && emptyText) return typeof emptyText === "string" ? empty(emptyText) : emptyText;
  return h(
    "div",
    // Focusable, so that a keyboard can scroll it when it is wider than the screen.
    { class: "table-wrap", tabindex: "0" },
    h(
      "table",
      {},
      caption ? h("caption", { text: caption }) : null,
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows),
    ),
  );
}

export function loading() {
  return h("p", { class: "loading muted", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Loading…");
}

/** What a page shows when it could not load, with a retry. */
export function failed(error, retry) {
  return h(
    "section",
    { class: "card problem", role: "alert" },
    h("h2", { text: error?.status === 404 ? "Not found" : "This page could not be loaded" }),
    h("p", { text: error?.status === 404 ? "It may have been deleted, or the link is wrong." : explain(error) }),
    retry ? h("button", { type: "button", onclick: retry }, "Try again") : null,
  );
}

/**
 * Tabs that follow the ARIA pattern: arrow keys, Home and End move between them; each controls
 * its panel. `items`: [[id, label]]; `select(id)` is called on activation. Returns
 * `{ list, panel }`.
 */
export function tabs(label, items, selected, select) {
  const base = uid("tab");
  const panel = h("div", { role: "tabpanel", id: `${base}-panel`, "aria-labelledby": `${base}-${selected}`, tabindex: "0" });
  const buttons = items.map(([id, text]) =>
    h("button", {
      type: "button",
      role: "tab",
      id: `${base}-${id}`,
      "aria-selected": String(id === selected),
      "aria-controls": panel.id,
      tabindex: id === selected ? "0" : "-1",
      onclick: () => select(id),
    }, text),
  );
  const list = h("div", { class: "tabs", role: "tablist", "aria-label": label }, buttons);
  list.addEventListener("keydown", (event) => {
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: buttons.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = buttons[(next + buttons.length) % buttons.length];
    target.focus();
    target.click();
  });
  return { list, panel };
}

/** A status badge. */
export const badge = (text, kind = "") => h("span", { class: `badge ${kind}`, text });
