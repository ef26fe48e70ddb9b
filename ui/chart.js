// Small SVG charts: a sparkline of recent samples, and a timeline of a
// drill's phases.

import { h, s, ms } from "./dom.js";

/** A line of the last samples (numbers), scaled to their maximum. */
export function sparkline(values, { width = 160, height = 36, label = "" } = {}) {
  const max = Math.max(1, ...values);
  // One sample is drawn as a flat line until the next arrives.
  const vs = values.length === 1 ? [values[0], values[0]] : values;
  const n = Math.max(vs.length - 1, 1);
  const pts = vs.map((v, i) => `${((i / n) * (width - 2) + 1).toFixed(1)},${(height - 2 - (v / max) * (height - 6)).toFixed(1)}`);
  return s("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, "data-samples": values.length },
    s("title", {}, label),
    s("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "axis" }),
    vs.length > 1 ? s("polyline", { points: pts.join(" "), class: "line" }) : null,
    s("text", { x: width - 2, y: 10, "text-anchor": "end", class: "spark-max" }, `max ${ms(max)}`));
}

/** The phases of a drill as consecutive bars on one time axis, with labels. */
export function timeline(phases, { width = 720 } = {}) {
  const total = phases.reduce((a, p) => a + p.ms, 0) || 1;
  const row = 22;
  const top = 8;
  const height = top + phases.length * row + 26;
  const label = 180;
  const span = width - label - 70;
  let t = 0;
  const bars = phases.map((p, i) => {
    const x = label + (t / total) * span;
    const w = Math.max(2, (p.ms / total) * span);
    t += p.ms;
    const y = top + i * row;
    return s("g", { class: "phase" },
      s("text", { x: label - 8, y: y + 14, "text-anchor": "end" }, p.name),
      s("rect", { x, y: y + 3, width: w, height: row - 8, class: `bar bar-${i % 6}` },
        s("title", {}, `${p.name}: ${ms(p.ms)}`)),
      s("text", { x: x + w + 6, y: y + 14, class: "val" }, ms(p.ms)));
  });
  const axisY = top + phases.length * row + 4;
  return h("div", { class: "timeline" },
    s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "drill timeline" },
      bars,
      s("line", { x1: label, y1: axisY, x2: label + span, y2: axisY, class: "axis" }),
      s("text", { x: label, y: axisY + 16 }, "0"),
      s("text", { x: label + span, y: axisY + 16, "text-anchor": "end" }, ms(total))));
}
