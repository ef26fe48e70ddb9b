// Runs: newest first, filtered by status, a page at a time (the API's
// cursor), refreshed every few seconds.

import { api } from "./api.js";
import { h, badge, time, table, link } from "./dom.js";

const STATUSES = ["", "running", "paused", "completed", "failed", "cancelled"];
const PAGE = 25;

export async function render(el, ctx) {
  const q = new URLSearchParams(location.search);
  const status = STATUSES.includes(q.get("status") || "") ? q.get("status") || "" : "";
  const after = q.get("after") || "";
  // The cursors of the pages before this one, for "newer".
  const back = (q.get("back") || "").split(",").filter(Boolean);

  const go = (params) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v) p.set(k, v);
    const qs = p.toString();
    ctx.go(`/ui/runs${qs ? `?${qs}` : ""}`);
  };

  const filter = h("select", { id: "status-filter", "aria-label": "status" },
    STATUSES.map((st) => h("option", { value: st, selected: st === status }, st || "any status")));
  filter.addEventListener("change", () => go({ status: filter.value }));

  const body = h("div", {});
  el.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Runs"), filter),
    body);

  const draw = async () => {
    const p = new URLSearchParams({ limit: String(PAGE) });
    if (status) p.set("status", status);
    if (after) p.set("after", after);
    const list = await api(`/v1/workflows?${p}`);
    if (!ctx.live()) return;
    const rows = list.runs.map((r) => h("tr", { "data-run": r.run_id },
      h("td", {}, link(`/ui/runs/${r.run_id}`, r.run_id, "mono")),
      h("td", {}, r.goal),
      h("td", {}, badge(r.status)),
      h("td", {}, time(r.created_at))));
    const prev = back.length
      ? h("button", { class: "secondary", onclick: () => go({ status, after: back[back.length - 1] === "-" ? "" : back[back.length - 1], back: back.slice(0, -1).join(",") }) }, "← newer")
      : null;
    const next = list.next
      ? h("button", { class: "secondary", id: "next-page", onclick: () => go({ status, after: list.next, back: [...back, after || "-"].join(",") }) }, "older →")
      : null;
    body.replaceChildren(
      rows.length ? table("runs", ["run", "goal", "status", "created"], rows) : h("p", { class: "muted" }, "no runs"),
      h("div", { class: "pager" }, prev, next));
  };
  await draw();
  ctx.every(3000, draw);
}
