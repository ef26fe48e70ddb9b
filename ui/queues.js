// Queues: depth, in flight, delayed, parked, oldest ready age, paused; admin
// tokens pause and resume them.

import { api, can } from "./api.js";
import { h, badge, ms, table } from "./dom.js";

export async function render(el, ctx) {
  const draw = async () => {
    const q = await api("/v1/queues");
    if (!ctx.live()) return;
    const act = async (name, what) => {
      try {
        await api(`/v1/queues/${encodeURIComponent(name)}/${what}`, { method: "POST" });
        await draw();
      } catch (e) {
        ctx.handle(e);
      }
    };
    const rows = q.queues.map((x) => h("tr", { "data-queue": x.name },
      h("td", {}, x.name),
      h("td", { class: "num" }, x.depth),
      h("td", { class: "num" }, x.in_flight),
      h("td", { class: "num" }, x.delayed),
      h("td", { class: "num" }, x.parked),
      h("td", { class: "num" }, x.oldest_age_ms === null ? "–" : ms(x.oldest_age_ms)),
      h("td", {}, x.paused ? badge("paused") : badge("active")),
      can("admin")
        ? h("td", {}, h("button", { class: "secondary", "data-action": x.paused ? "resume" : "pause", onclick: () => act(x.name, x.paused ? "resume" : "pause") }, x.paused ? "Resume" : "Pause"))
        : null));
    el.replaceChildren(
      h("h2", {}, "Queues"),
      rows.length
        ? table("queues", ["queue", "depth", "in flight", "delayed", "parked", "oldest ready", "state", can("admin") ? "" : null].filter((x) => x !== null), rows)
        : h("p", { class: "muted" }, "no queue holds tasks or is paused"),
      can("admin") ? null : h("p", { class: "muted" }, "pausing a queue needs a token with the admin scope"));
  };
  await draw();
  ctx.every(3000, draw);
}
