// Drills: the journal (newest first) and one drill's report: RTO, detection,
// lost, duplicate and stale counts, the phases as a timeline, the slowest
// writes and the failures seen. Admin tokens start one here.

import { api, can } from "./api.js";
import { h, badge, ms, time, json, table, link } from "./dom.js";
import { timeline } from "./chart.js";

function rto(d) {
  return d.report && typeof d.report.rto_ms === "number" ? ms(d.report.rto_ms) : "–";
}

function count(d, field) {
  return d.report && typeof d.report[field] === "number" ? d.report[field] : "–";
}

function figure(name, value, cls) {
  return h("div", { class: `card stat ${cls || ""}` }, h("div", { class: "muted" }, name), h("div", { class: "big" }, value));
}

function report(d) {
  const r = d.report || {};
  const parts = [
    h("div", { class: "toolbar" },
      h("h2", {}, d.kind === "partition" ? `partition of ${d.to_region} (primary ${d.from_region})` : `${d.kind} ${d.from_region} → ${d.to_region}`),
      badge(d.state),
      h("span", { class: "muted" }, `started ${time(d.started_at)}, finished ${time(d.finished_at)}, by ${d.node_id || "?"}`)),
  ];
  if (r.error) parts.push(h("p", { class: "error" }, `aborted: ${typeof r.error === "string" ? r.error : JSON.stringify(r.error)}`));
  if (typeof r.rto_ms === "number") {
    parts.push(h("div", { class: "summary" },
      figure("RTO", ms(r.rto_ms), "rto"),
      figure("detection", ms(r.detection_ms)),
      figure("lost writes", r.lost_writes, r.lost_writes ? "bad" : "good"),
      figure("duplicate writes", r.duplicate_writes, r.duplicate_writes ? "bad" : "good"),
      figure("stale reads", r.stale_reads, r.stale_reads ? "bad" : "good"),
      figure("acknowledged", r.acknowledged_writes),
      figure("failed / indeterminate", `${r.failed_writes} / ${r.indeterminate_writes}`),
      figure("epoch", `${r.epoch_before} → ${r.epoch_after}`),
      ...(r.partition
        ? [figure("links cut", `${r.partition.links_cut} for ${r.partition.secs} s`),
           figure("converged after healing", ms(r.partition.converge_ms)),
           figure("nodes agreeing", `${r.nodes_rerouted}/${r.nodes_total}`)]
        : [figure("old primary", r.old_primary || (r.old_primary_fenced ? "fenced" : "not fenced")),
           figure("nodes rerouted", `${r.nodes_rerouted}/${r.nodes_total}`)])));
  }
  if (Array.isArray(r.phases) && r.phases.length) {
    parts.push(h("section", { class: "card" }, h("h3", {}, "Timeline"), timeline(r.phases)));
  }
  if (Array.isArray(r.slowest_writes) && r.slowest_writes.length) {
    parts.push(h("section", { class: "card" }, h("h3", {}, "Slowest acknowledged writes"),
      table("slow", ["to", "sent at", "took", "retries"], r.slowest_writes.map((w) => h("tr", {},
        h("td", {}, w.target), h("td", { class: "num" }, ms(w.sent_at_ms)), h("td", { class: "num" }, ms(w.ms)), h("td", { class: "num" }, w.retries))))));
  }
  if (r.failures && Object.keys(r.failures).length) {
    parts.push(h("section", { class: "card" }, h("h3", {}, "Failed writes by answer"),
      table("failures", ["answer", "count"], Object.entries(r.failures).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, v))))));
  }
  if (Array.isArray(r.lost_run_ids) && r.lost_run_ids.length) {
    parts.push(h("section", { class: "card" }, h("h3", {}, "Lost runs"), json(r.lost_run_ids)));
  }
  if (r.recovery) parts.push(h("section", { class: "card" }, h("h3", {}, "Recovery"), json(r.recovery)));
  return h("section", { class: "drill-report", "data-drill": d.id }, parts);
}

function startForm(regions, ctx, onDone) {
  const kind = h("select", { id: "drill-kind", "aria-label": "kind" }, h("option", { value: "switchover" }, "switchover"), h("option", { value: "failover" }, "failover"));
  const targets = regions.regions.filter((r) => r.name !== regions.write_region);
  const to = h("select", { id: "drill-to", "aria-label": "target region" }, targets.map((r) => h("option", { value: r.name }, r.name)));
  const load = h("input", { id: "drill-load", type: "number", min: 0, step: 10, value: 20, "aria-label": "load" });
  const state = h("span", { class: "muted" });
  const go = h("button", { id: "drill-start" }, "Start drill");
  go.addEventListener("click", async () => {
    if (!go.dataset.armed) {
      go.dataset.armed = "1";
      go.textContent = `Move writes to ${to.value}: sure?`;
      return;
    }
    go.disabled = true;
    state.textContent = "running… (writes pause while the primary moves)";
    try {
      const r = await api("/v1/admin/drills", { method: "POST", body: { kind: kind.value, to: to.value, load: Number(load.value) || 0 } });
      state.textContent = `done: RTO ${ms(r.rto_ms)}, ${r.lost_writes} lost`;
    } catch (e) {
      state.textContent = "";
      ctx.handle(e);
    }
    go.disabled = false;
    delete go.dataset.armed;
    go.textContent = "Start drill";
    onDone();
  });
  if (targets.length === 0) return h("p", { class: "muted" }, "one region only: nothing to drill to");
  return h("section", { class: "card start-drill" },
    h("h3", {}, "Start a drill"),
    h("div", { class: "form-row" },
      h("label", {}, "kind ", kind),
      h("label", {}, "to ", to),
      h("label", {}, "load (runs/s) ", load),
      go, state));
}

export async function render(el, ctx) {
  const want = ctx.args[0] || null;
  if (!can("admin")) {
    el.replaceChildren(h("h2", {}, "Drills"), h("p", { class: "muted" }, "the drill journal needs a token with the admin scope"));
    return;
  }
  const regions = await api("/v1/regions");
  const list = h("div", {});
  const detail = h("div", {});
  const draw = async () => {
    const j = await api("/v1/admin/drills");
    if (!ctx.live()) return;
    const rows = j.drills.map((d) => h("tr", { "data-drill": d.id, class: d.id === want ? "selected" : "" },
      h("td", {}, link(`/ui/drills/${d.id}`, time(d.started_at))),
      h("td", {}, d.kind),
      h("td", {}, `${d.from_region} → ${d.to_region}`),
      h("td", {}, badge(d.state)),
      h("td", { class: "num rto" }, rto(d)),
      h("td", { class: "num" }, count(d, "lost_writes")),
      h("td", { class: "num" }, count(d, "duplicate_writes")),
      h("td", { class: "num" }, count(d, "stale_reads"))));
    list.replaceChildren(rows.length
      ? table("drills", ["started", "kind", "move", "state", "RTO", "lost", "duplicate", "stale"], rows)
      : h("p", { class: "muted" }, "no drill yet"));
    const shown = want ? j.drills.find((d) => d.id === want) : j.drills[0];
    if (want && !shown) {
      // Older than the journal page: ask for it alone.
      detail.replaceChildren(report(await api(`/v1/admin/drills/${encodeURIComponent(want)}`)));
    } else {
      detail.replaceChildren(shown ? report(shown) : "");
    }
  };
  el.replaceChildren(h("h2", {}, "Drills"), startForm(regions, ctx, () => draw().catch(ctx.handle)), list, detail);
  await draw();
  ctx.every(5000, draw);
}
