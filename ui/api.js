// Calls to the node's /v1 API. The token lives in sessionStorage (this tab
// only); the consistency token of the last write goes with the next reads,
// so the page reads its own writes from a replica too.

const TOKEN_KEY = "swf-token";
let consistency = null;
let who = null;

/** An answer that was not a success: `status` and the API's error `code`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  who = null;
}

/** The node that served the last answer: {node, region}. */
export const served = { node: "", region: "" };

/** Calls `path`; resolves to the JSON body, throws ApiError otherwise. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (consistency && method === "GET") headers["swf-consistency-token"] = consistency;
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "unreachable", `the node did not answer (${e.message})`);
  }
  served.node = r.headers.get("swf-served-by") || served.node;
  served.region = r.headers.get("swf-region") || served.region;
  const written = r.headers.get("swf-consistency-token");
  if (written && method !== "GET") consistency = written;
  const text = await r.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!r.ok) {
    const err = (doc && doc.error) || {};
    throw new ApiError(r.status, err.code || `http_${r.status}`, err.message || text || r.statusText);
  }
  return doc;
}

/** What the token may do: {auth, token, scopes}, asked once per token. */
export async function whoami() {
  if (!who) who = await api("/v1/whoami");
  return who;
}

/** Whether the token has `scope` (known after whoami()). */
export function can(scope) {
  return !!who && who.scopes.includes(scope);
}
