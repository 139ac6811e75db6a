// DOM helpers shared by the dashboard's modules. Every element is built with DOM calls, never
// from HTML strings, so names and secrets from the API cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An SVG element (the chart). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  return el;
}

export const $ = (id) => document.getElementById(id);
let ids = 0;
export const uid = (prefix = "f") => `${prefix}${++ids}`;

/**
 * A labelled form field with a hint and a slot for its error (tied to the input with
 * `aria-describedby`). `name` is the API's field path (`limits.user_tokens_per_day`), which is how
 * a `validation_failed` answer finds the field to mark.
 */
export function field(label, input, { hint, inline = false, name } = {}) {
  input.id ||= uid();
  if (name) input.dataset.field = name;
  const error = h("p", { class: "field-error", id: `${input.id}-error`, hidden: true });
  const described = [error.id];
  let hintNode = null;
  if (hint) {
    hintNode = h("p", { class: "hint", id: `${input.id}-hint`, text: hint });
    described.unshift(hintNode.id);
  }
  input.setAttribute("aria-describedby", described.join(" "));
  const labelNode = h("label", { for: input.id, text: label });
  return inline
    ? h("div", { class: "field inline" }, input, h("div", {}, labelNode, hintNode, error))
    : h("div", { class: "field" }, labelNode, input, hintNode, error);
}

/** Marks `input` invalid with `message` (or clears it). */
export function setFieldError(input, message) {
  const error = document.getElementById(`${input.id}-error`);
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  if (error) {
    error.textContent = message || "";
    error.hidden = !message;
  }
}

/** A text input with the API's length limit. */
export function textInput(attrs = {}) {
  return h("input", { type: "text", maxlength: 200, ...attrs });
}

/** "3 minutes ago" style dates, with the full date as a tooltip. */
export function when(iso) {
  if (!iso) return "never";
  const date = new Date(iso);
  const seconds = (Date.now() - date.getTime()) / 1000;
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  let text;
  if (Math.abs(seconds) < 60) text = "just now";
  else if (Math.abs(seconds) < 3600) text = rtf.format(-Math.round(seconds / 60), "minute");
  else if (Math.abs(seconds) < 86_400) text = rtf.format(-Math.round(seconds / 3600), "hour");
  else if (Math.abs(seconds) < 30 * 86_400) text = rtf.format(-Math.round(seconds / 86_400), "day");
  else text = date.toLocaleDateString();
  return h("time", { datetime: iso, title: date.toLocaleString() }, text);
}

export const number = (n) => Number(n ?? 0).toLocaleString();
