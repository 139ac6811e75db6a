// A bar chart of values per day: axes, dates, gridlines, the value of the bar under the pointer
// (or the keyboard), an empty state, and the same numbers as a table for screen readers.

import { h, s, uid } from "/dashboard/dom.js";
import { empty } from "/dashboard/ui.js";

const W = 640;
const H = 220;
const PAD = { left: 46, right: 8, top: 10, bottom: 26 };

/** Rounds `max` up to a "nice" axis top (1, 2, 2.5 or 5 times a power of ten). */
function niceTop(max) {
  if (max <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(max));
  const step = [1, 2, 2.5, 5, 10].find((m) => m * power >= max / 4) * power;
  return step * 4;
}

const short = (n) => (n >= 1e6 ? `${+(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${+(n / 1e3).toFixed(1)}k` : n.toLocaleString());
const dayLabel = (day) => new Date(`${day}T00:00:00Z`).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

/**
 * `points`: [{ day: "YYYY-MM-DD", value }], oldest first; `what`: the unit ("turns").
 * `emptyText` is shown instead when every value is zero.
 */
export function barChart(points, what, emptyText) {
  if (!points.some((p) => p.value > 0)) return empty(emptyText);
  const top = niceTop(Math.max(...points.map((p) => p.value)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / points.length;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const tip = h("div", { class: "chart-tip", hidden: true, "aria-hidden": "true" });
  const box = h("div", { class: "chart-box" });
  const grid = [0, 1, 2, 3, 4].map((i) => {
    const v = (top / 4) * i;
    return [
      s("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", text: short(v) }),
    ];
  });
  const every = Math.ceil(points.length / 6);
  const labels = points.map((p, i) =>
    i % every === 0 || i === points.length - 1 ? s("text", { x: PAD.left + slot * (i + 0.5), y: H - 8, "text-anchor": "middle", text: dayLabel(p.day) }) : null,
  );
  const show = (bar, p, i) => {
    for (const other of box.querySelectorAll(".bar.on")) other.classList.remove("on");
    bar.classList.add("on");
    tip.textContent = `${dayLabel(p.day)}: ${p.value.toLocaleString()} ${what}`;
    tip.hidden = false;
    const rect = box.getBoundingClientRect();
    const scale = rect.width / W;
    const x = Math.min(Math.max((PAD.left + slot * (i + 0.5)) * scale, 60), rect.width - 60);
    tip.style.left = `${x}px`;
    tip.style.top = `${y(p.value) * scale}px`;
  };
  const hide = () => {
    tip.hidden = true;
    for (const other of box.querySelectorAll(".bar.on")) other.classList.remove("on");
  };
  const bars = points.map((p, i) => {
    const height = Math.max(p.value > 0 ? 1.5 : 0, PAD.top + plotH - y(p.value));
    // The whole day's column answers the pointer, so a short bar is easy to hover.
    const hit = s("rect", { x: PAD.left + slot * i, y: PAD.top, width: slot, height: plotH, fill: "transparent" });
    const bar = s("rect", { class: "bar", x: PAD.left + slot * i + slot * 0.15, y: PAD.top + plotH - height, width: Math.max(1, slot * 0.7), height, rx: 2 });
    const group = s("g", { onmouseenter: () => show(bar, p, i), onmouseleave: hide }, hit, bar);
    return group;
  });
  const titleId = uid("chart");
  const svg = s(
    "svg",
    { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": titleId },
    s("title", { id: titleId, text: `${what} per day, ${dayLabel(points[0].day)} to ${dayLabel(points.at(-1).day)}` }),
    grid,
    s("line", { class: "grid", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: PAD.top + plotH }),
    bars,
    labels,
  );
  const data = h(
    "table",
    { class: "visually-hidden" },
    h("caption", { text: `${what} per day` }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Day" }), h("th", { scope: "col", text: what }))),
    h("tbody", {}, points.map((p) => h("tr", {}, h("td", { text: p.day }), h("td", { text: p.value })))),
  );
  box.append(svg, tip, data);
  return box;
}

/** The last `days` UTC days as YYYY-MM-DD, oldest first. */
export function lastDays(days) {
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return Array.from({ length: days }, (_, i) => new Date(today - (days - 1 - i) * 86_400_000).toISOString().slice(0, 10));
}
