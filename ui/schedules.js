// Schedules: cron, next tick, last run; submit tokens pause, resume and
// delete them.

import { api, can } from "./api.js";
import { h, badge, time, table, link } from "./dom.js";

export async function render(el, ctx) {
  const draw = async () => {
    const list = await api("/v1/schedules");
    if (!ctx.live()) return;
    const act = async (name, what) => {
      try {
        const path = `/v1/schedules/${encodeURIComponent(name)}`;
        if (what === "delete") await api(path, { method: "DELETE" });
        else await api(`${path}/${what}`, { method: "POST" });
        await draw();
      } catch (e) {
        ctx.handle(e);
      }
    };
    // Deleting takes two clicks: the first arms the button.
    const del = (name) => {
      const b = h("button", { class: "danger", "data-action": "delete" }, "Delete");
      b.addEventListener("click", () => {
        if (b.dataset.armed) act(name, "delete");
        else {
          b.dataset.armed = "1";
          b.textContent = "Delete: sure?";
        }
      });
      return b;
    };
    const rows = list.schedules.map((x) => h("tr", { "data-schedule": x.name },
      h("td", {}, x.name),
      h("td", { class: "mono" }, x.cron),
      h("td", {}, x.paused ? badge("paused") : badge("active")),
      h("td", {}, time(x.next_run_at)),
      h("td", {}, x.last_run_id ? link(`/ui/runs/${x.last_run_id}`, x.last_run_id, "mono") : "–"),
      can("submit")
        ? h("td", { class: "actions" },
          h("button", { class: "secondary", "data-action": x.paused ? "resume" : "pause", onclick: () => act(x.name, x.paused ? "resume" : "pause") }, x.paused ? "Resume" : "Pause"),
          del(x.name))
        : null));
    el.replaceChildren(
      h("h2", {}, "Schedules"),
      rows.length
        ? table("schedules", ["name", "cron (UTC)", "state", "next run", "last run", can("submit") ? "" : null].filter((x) => x !== null), rows)
        : h("p", { class: "muted" }, "no schedules (create one with swf schedule create or POST /v1/schedules)"));
  };
  await draw();
  ctx.every(5000, draw);
}
