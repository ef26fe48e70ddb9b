// Building the page: elements are made with text content only (never HTML
// from data), so nothing the API returns can inject markup or script.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h("td", {class: "x"}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** A status as a coloured badge. */
export function badge(status) {
  return h("span", { class: `badge st-${status}` }, status);
}

/** Milliseconds, readable: 850 ms, 4.2 s, 3 min 5 s. */
export function ms(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
  const m = Math.floor(v / 60000);
  return `${m} min ${Math.round((v % 60000) / 1000)} s`;
}

/** A timestamp as local date and time. */
export function time(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

/** How long ago a timestamp was. */
export function ago(ts) {
  if (!ts) return "–";
  return `${ms(Date.now() - new Date(ts).getTime())} ago`;
}

/** JSON shown as text. */
export function json(v) {
  return h("pre", { class: "json" }, v === undefined ? "null" : JSON.stringify(v, null, 2));
}

/** A table with a header row and one row per item. */
export function table(cls, heads, rows) {
  return h("table", { class: cls },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

/** A link inside the dashboard (followed without reloading the page). */
export function link(href, text, cls) {
  return h("a", { href, class: cls, "data-internal": "1" }, text);
}
