// The dashboard's shell: routes (/ui/, /ui/runs, /ui/runs/<id>, /ui/queues,
// /ui/schedules, /ui/drills[/<id>]), the token prompt, the error banner and
// the refresh timers of the page shown.

import { api, whoami, setToken, token, served, ApiError } from "./api.js";
import { h } from "./dom.js";
import * as overview from "./overview.js";
import * as runs from "./runs.js";
import * as run from "./run.js";
import * as queues from "./queues.js";
import * as schedules from "./schedules.js";
import * as drills from "./drills.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const login = document.getElementById("login");
let timers = [];
let generation = 0;

function route(path) {
  const p = path.replace(/^\/ui\/?/, "").replace(/\/$/, "");
  let parts;
  try {
    parts = p ? p.split("/").map(decodeURIComponent) : [];
  } catch {
    return null; // a malformed escape: no such page
  }
  if (parts.length === 0) return { page: overview, name: "overview", args: [] };
  if (parts[0] === "runs" && parts.length === 2) return { page: run, name: "runs", args: [parts[1]] };
  if (parts[0] === "runs" && parts.length === 1) return { page: runs, name: "runs", args: [] };
  if (parts[0] === "queues" && parts.length === 1) return { page: queues, name: "queues", args: [] };
  if (parts[0] === "schedules" && parts.length === 1) return { page: schedules, name: "schedules", args: [] };
  if (parts[0] === "drills" && parts.length <= 2) return { page: drills, name: "drills", args: parts.slice(1) };
  return null;
}

/** Shows an error above the page (or hides the banner with null). A
 * refresh's error (`fromRefresh`) goes when a later refresh succeeds; an
 * action's stays until the page changes. */
export function showError(e, fromRefresh = false) {
  if (!e) {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  banner.dataset.fromRefresh = fromRefresh ? "1" : "";
  banner.textContent = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e.message || e);
}

/** Where an ApiError goes: 401 to the token prompt, anything else to the banner. */
export function handle(e, fromRefresh = false) {
  if (e instanceof ApiError && e.status === 401) {
    askToken(token() ? "the node refused this token" : "");
    return;
  }
  showError(e, fromRefresh);
}

function askToken(why) {
  stop();
  main.replaceChildren();
  login.hidden = false;
  document.getElementById("login-error").textContent = why;
  document.getElementById("login-token").focus();
}

function stop() {
  for (const t of timers) clearInterval(t);
  timers = [];
  generation += 1;
}

/** What a page gets: its arguments, a timer that stops when the page is left, navigation. */
function context(args) {
  const mine = generation;
  return {
    args,
    live: () => mine === generation,
    every(msInterval, fn) {
      timers.push(setInterval(() => {
        if (mine !== generation) return;
        fn()
          .then(() => {
            if (!banner.hidden && banner.dataset.fromRefresh) showError(null);
          })
          .catch((e) => handle(e, true));
      }, msInterval));
    },
    go: navigate,
    handle,
  };
}

async function render() {
  stop();
  showError(null);
  const r = route(location.pathname);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", !!r && a.dataset.page === r.name);
  }
  if (!r) {
    main.replaceChildren(h("p", { class: "error" }, `No page at ${location.pathname}.`));
    return;
  }
  try {
    const who = await whoami();
    login.hidden = true;
    document.getElementById("who").textContent = who.auth ? `token ${who.token} (${who.scopes.join(", ")})` : "auth off";
    const ctx = context(r.args);
    const el = h("div", { class: "page" });
    main.replaceChildren(el);
    await r.page.render(el, ctx);
  } catch (e) {
    handle(e);
  }
  document.getElementById("served").textContent = served.node ? `served by ${served.node} in ${served.region}` : "";
}

/** Shows `path` (a /ui/ URL) without reloading the page. */
export function navigate(path) {
  history.pushState(null, "", path);
  render();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  const href = a.getAttribute("href") || "";
  if (!href.startsWith("/ui")) return;
  ev.preventDefault();
  navigate(href);
});
window.addEventListener("popstate", render);

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const t = document.getElementById("login-token").value.trim();
  if (!t) return;
  setToken(t);
  document.getElementById("login-token").value = "";
  try {
    await api("/v1/whoami");
  } catch (e) {
    setToken(null);
    askToken(e instanceof ApiError && e.status === 401 ? "the node refused this token" : e.message);
    return;
  }
  login.hidden = true;
  render();
});

render();
