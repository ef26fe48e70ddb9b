// Overview: the write region and epoch, each region's role, replay lag (with
// a live chart of the last samples) and nodes with their pools, and the
// queues' depths.

import { api } from "./api.js";
import { h, badge, ms, ago, table } from "./dom.js";
import { sparkline } from "./chart.js";

const SAMPLES = 60;
// Lag samples per region, kept while the tab lives.
const history = new Map();

function sample(regions) {
  for (const r of regions.regions) {
    const xs = history.get(r.name) || [];
    xs.push(Math.max(0, r.lag_ms));
    if (xs.length > SAMPLES) xs.shift();
    history.set(r.name, xs);
  }
}

function pools(n) {
  if (!n.pools || n.pools.length === 0) return h("span", { class: "muted" }, n.node_type === "edge" ? "no executor" : "–");
  return h("ul", { class: "pools" }, n.pools.map((p) =>
    h("li", {}, `${p.name} (${p.queue}) ${p.busy}/${p.size} busy, ${p.completed} done, ${p.failed} failed`)));
}

function regionCard(r, write) {
  const nodes = r.nodes.map((n) => h("tr", { "data-node": n.node_id },
    h("td", {}, n.node_id),
    h("td", {}, n.node_type),
    h("td", {}, badge(n.healthy ? "healthy" : "silent")),
    h("td", {}, pools(n)),
    h("td", { class: "muted" }, ago(n.last_heartbeat_at))));
  return h("section", { class: "card region", "data-region": r.name },
    h("div", { class: "region-head" },
      h("h3", {}, r.name),
      badge(r.role),
      r.name === write ? h("span", { class: "muted" }, "writes go here") : null),
    h("div", { class: "lag-row" },
      h("div", {},
        h("div", { class: "muted" }, "replay lag"),
        h("div", { class: "lag big" }, r.role === "primary" ? "0 ms (primary)" : ms(r.lag_ms))),
      sparkline(history.get(r.name) || [], { label: `lag of ${r.name}` })),
    nodes.length
      ? table("nodes", ["node", "type", "health", "pools", "heartbeat"], nodes)
      : h("p", { class: "muted" }, "no node heartbeats in this region"));
}

function queueTable(q) {
  if (q.queues.length === 0) return h("p", { class: "muted" }, "no queues yet");
  return table("queues", ["queue", "depth", "in flight", "oldest", "state"], q.queues.map((x) =>
    h("tr", { "data-queue": x.name },
      h("td", {}, x.name),
      h("td", { class: "num" }, x.depth),
      h("td", { class: "num" }, x.in_flight),
      h("td", { class: "num" }, x.oldest_age_ms === null ? "–" : ms(x.oldest_age_ms)),
      h("td", {}, x.paused ? badge("paused") : badge("active")))));
}

export async function render(el, ctx) {
  const draw = async () => {
    const [regions, queues] = await Promise.all([api("/v1/regions"), api("/v1/queues")]);
    if (!ctx.live()) return;
    sample(regions);
    el.replaceChildren(
      h("div", { class: "summary" },
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "write region"), h("div", { class: "big write-region" }, regions.write_region)),
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "epoch"), h("div", { class: "big epoch" }, regions.epoch)),
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "regions"), h("div", { class: "big" }, regions.regions.length)),
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "nodes"),
          h("div", { class: "big" }, regions.regions.reduce((a, r) => a + r.nodes.length, 0)))),
      h("h2", {}, "Regions"),
      h("div", { class: "regions" }, regions.regions.map((r) => regionCard(r, regions.write_region))),
      h("h2", {}, "Queues"),
      queueTable(queues));
  };
  await draw();
  ctx.every(2000, draw);
}
