// One run: its DAG, its state and actions (cancel, retry, pause, resume, for
// tokens with the submit scope), and per step its attempts (node, region,
// pool, timing, outcome, error), input and output. Refreshed every 2 s,
// every 10 s once the run is finished.

import { api, can } from "./api.js";
import { h, badge, ms, time, json, table } from "./dom.js";
import { drawDag, vertices } from "./dag.js";

const TERMINAL = ["completed", "failed", "cancelled"];

function actions(st, act) {
  const b = (name, label, cls) => h("button", { class: cls || "", "data-action": name, onclick: () => act(name) }, label);
  if (!can("submit")) return h("span", { class: "muted" }, "read-only token: no actions");
  return h("span", { class: "actions" },
    st === "running" ? b("pause", "Pause") : null,
    st === "paused" ? b("resume", "Resume") : null,
    st === "failed" || st === "cancelled" ? b("retry", "Retry") : null,
    st === "running" || st === "paused" ? b("cancel", "Cancel", "danger") : null);
}

function duration(a, b) {
  if (!a) return "–";
  const end = b ? new Date(b) : new Date();
  return ms(end - new Date(a));
}

function attemptsTable(trace, ids) {
  const rows = trace.filter((a) => ids.includes(a.step_id)).map((a) => h("tr", {},
    h("td", {}, ids.length > 1 ? `${a.step_id} #${a.attempt}` : `#${a.attempt}`),
    h("td", {}, a.node_id),
    h("td", {}, a.region),
    h("td", {}, a.worker_pool),
    h("td", {}, time(a.started_at)),
    h("td", { class: "num" }, duration(a.started_at, a.finished_at)),
    h("td", {}, badge(a.outcome)),
    h("td", {}, a.error ? h("code", {}, JSON.stringify(a.error)) : "")));
  if (rows.length === 0) return h("p", { class: "muted" }, "no attempt yet");
  return table("attempts", ["attempt", "node", "region", "pool", "started", "took", "outcome", "error"], rows);
}

function stepDetail(v, trace) {
  const st = v.step;
  const ids = [st.id, ...v.items.map((i) => i.id)];
  return h("section", { class: "card step-detail", "data-step": st.id },
    h("div", { class: "region-head" }, h("h3", {}, st.id), badge(st.status)),
    h("dl", { class: "facts" },
      h("dt", {}, "handler"), h("dd", {}, st.handler || "–"),
      h("dt", {}, "queue"), h("dd", {}, st.queue || "–"),
      h("dt", {}, "region"), h("dd", {}, st.region || "any"),
      h("dt", {}, "depends on"), h("dd", {}, st.depends_on.filter((d) => !/\[\d+\]$/.test(d)).join(", ") || "–"),
      h("dt", {}, "started"), h("dd", {}, time(st.started_at)),
      h("dt", {}, "finished"), h("dd", {}, time(st.completed_at)),
      v.items.length ? [h("dt", {}, "items"), h("dd", {}, `${v.items.length} (${v.items.filter((i) => i.status === "completed").length} completed, ${v.items.filter((i) => i.status === "failed").length} failed)`)] : null),
    h("h4", {}, "Attempts"),
    attemptsTable(trace, ids),
    h("div", { class: "io" },
      h("div", {}, h("h4", {}, "Input"), json(st.input === undefined ? null : st.input)),
      h("div", {}, h("h4", {}, "Output"), json(st.output)),
      st.error ? h("div", {}, h("h4", {}, "Error"), json(st.error)) : null));
}

export async function render(el, ctx) {
  const id = ctx.args[0];
  let picked = null;
  const draw = async () => {
    const [doc, lineage] = await Promise.all([
      api(`/v1/workflows/${encodeURIComponent(id)}`),
      api(`/v1/workflows/${encodeURIComponent(id)}/lineage`),
    ]);
    if (!ctx.live()) return;
    const byId = vertices(doc.steps);
    if (!picked || !byId.has(picked)) {
      // The first failed step, else the first step.
      const failed = [...byId.values()].find((v) => v.step.status === "failed");
      picked = failed ? failed.step.id : [...byId.keys()][0] || null;
    }
    const act = async (name) => {
      try {
        await api(`/v1/workflows/${encodeURIComponent(id)}/${name}`, { method: "POST" });
        await draw();
      } catch (e) {
        ctx.handle(e);
      }
    };
    const m = doc.metrics;
    el.replaceChildren(
      h("div", { class: "toolbar" },
        h("h2", {}, "Run ", h("span", { class: "mono" }, doc.run_id)),
        badge(doc.status),
        actions(doc.status, act)),
      h("div", { class: "summary" },
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "goal"), h("div", { class: "big" }, doc.goal)),
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "steps"), h("div", { class: "big" }, `${m.completed_steps}/${m.total_steps} done, ${m.failed_steps} failed`)),
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "attempts"), h("div", { class: "big" }, m.total_attempts)),
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "duration"), h("div", { class: "big" }, ms(m.duration_ms))),
        h("div", { class: "card stat" }, h("div", { class: "muted" }, "created"), h("div", {}, time(doc.created_at))),
        doc.schedule ? h("div", { class: "card stat" }, h("div", { class: "muted" }, "schedule"), h("div", {}, doc.schedule)) : null),
      h("section", { class: "card dag-card" },
        drawDag(doc.steps, { selected: picked, onPick: (s) => { picked = s; draw().catch(ctx.handle); } })),
      picked && byId.has(picked) ? stepDetail(byId.get(picked), lineage.execution_trace) : null,
      doc.error ? h("section", { class: "card" }, h("h3", {}, "Run error"), json(doc.error)) : null,
      h("section", { class: "card" }, h("h3", {}, "Run input"), json(doc.input), h("h3", {}, "Run output"), json(doc.output)));
  };
  await draw();
  // A finished run can be retried from another tab or the CLI: keep
  // refreshing, slower once it is finished.
  let last = 0;
  ctx.every(2000, async () => {
    const st = el.querySelector(".toolbar .badge")?.textContent;
    if (TERMINAL.includes(st) && Date.now() - last < 10000) return;
    last = Date.now();
    await draw();
  });
}
