// A run's DAG as SVG: steps in layers (a step one layer right of its
// furthest dependency), ordered within a layer by the mean position of
// their dependencies to cut crossings; the items of a map step drawn as
// their map step, with the item count.

import { s } from "./dom.js";

const W = 176;
const H = 46;
const GAP_X = 64;
const GAP_Y = 18;
const PAD = 12;

/** The drawn vertices: map items folded into their map step. */
export function vertices(steps) {
  const byId = new Map();
  const items = new Map();
  for (const st of steps) {
    const m = st.index !== null && st.index !== undefined ? /^(.*)\[\d+\]$/.exec(st.id) : null;
    if (m) {
      const list = items.get(m[1]) || [];
      list.push(st);
      items.set(m[1], list);
    } else {
      byId.set(st.id, { step: st, deps: [], items: [] });
    }
  }
  for (const [parent, list] of items) {
    const v = byId.get(parent);
    if (v) v.items = list;
  }
  for (const v of byId.values()) {
    // Dependencies on the map's own items are not edges of the drawing.
    v.deps = v.step.depends_on.filter((d) => byId.has(d) && d !== v.step.id);
  }
  return byId;
}

function layers(byId) {
  const layer = new Map();
  const visit = (id, seen) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0; // a cycle cannot be stored; be safe anyway
    seen.add(id);
    const v = byId.get(id);
    const l = v.deps.length ? 1 + Math.max(...v.deps.map((d) => visit(d, seen))) : 0;
    layer.set(id, l);
    return l;
  };
  for (const id of byId.keys()) visit(id, new Set());
  const cols = [];
  for (const [id, l] of layer) (cols[l] = cols[l] || []).push(id);
  // Order each column by the mean row of its dependencies (two sweeps).
  const row = new Map();
  cols.forEach((c) => c.forEach((id, i) => row.set(id, i)));
  for (let sweep = 0; sweep < 2; sweep++) {
    for (const c of cols.slice(1)) {
      const key = (id) => {
        const d = byId.get(id).deps;
        return d.length ? d.reduce((a, x) => a + row.get(x), 0) / d.length : 0;
      };
      c.sort((a, b) => key(a) - key(b));
      c.forEach((id, i) => row.set(id, i));
    }
  }
  return cols;
}

function label(id) {
  return id.length > 22 ? `${id.slice(0, 21)}…` : id;
}

/** The SVG of `steps` (a status document's steps); `onPick(stepId)` on click. */
export function drawDag(steps, { selected, onPick } = {}) {
  const byId = vertices(steps);
  const cols = layers(byId);
  const tall = Math.max(1, ...cols.map((c) => c.length));
  const width = PAD * 2 + cols.length * W + (cols.length - 1) * GAP_X;
  const height = PAD * 2 + tall * H + (tall - 1) * GAP_Y;
  const pos = new Map();
  cols.forEach((c, x) => {
    const offset = ((tall - c.length) * (H + GAP_Y)) / 2;
    c.forEach((id, y) => pos.set(id, { x: PAD + x * (W + GAP_X), y: PAD + offset + y * (H + GAP_Y) }));
  });
  const edges = [];
  for (const [id, v] of byId) {
    const to = pos.get(id);
    for (const d of v.deps) {
      const from = pos.get(d);
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x - 2;
      const y2 = to.y + H / 2;
      const mx = (x1 + x2) / 2;
      edges.push(s("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)", "data-from": d, "data-to": id }));
    }
  }
  const nodes = [];
  for (const [id, v] of byId) {
    const p = pos.get(id);
    const st = v.step;
    const sub = v.items.length
      ? `map · ${v.items.filter((i) => i.status === "completed").length}/${v.items.length} items`
      : st.handler ? `${st.handler} · ${st.status}` : st.status;
    const g = s("g", { class: `step st-${st.status}${selected === id ? " selected" : ""}`, "data-step": id, tabindex: 0, role: "button" },
      s("title", {}, `${id}: ${st.status}`),
      s("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }),
      s("text", { x: p.x + 10, y: p.y + 19, class: "step-id" }, label(id)),
      s("text", { x: p.x + 10, y: p.y + 36, class: "step-sub" }, sub));
    if (onPick) {
      g.addEventListener("click", () => onPick(id));
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter") onPick(id);
      });
    }
    nodes.push(g);
  }
  return s("svg", { class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "workflow DAG" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))),
    edges, nodes);
}
