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
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);
let fieldIds = 0;

/** A labelled form field. */
export function field(label, input, inline = false) {
  const id = input.id || `f${++fieldIds}`;
  input.id = id;
  return inline ? h("div", { class: "field inline" }, input, h("label", { for: id }, label)) : h("div", { class: "field" }, h("label", { for: id }, label), input);
}
