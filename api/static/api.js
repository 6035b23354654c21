// The /v1 API from the page: the key, requests, and errors in the API's own shape.
import { h } from "./dom.js";

const KEY_STORAGE = "nightshift.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const apiKey = {
  get: () => window.localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => window.localStorage.setItem(KEY_STORAGE, key.trim()),
  clear: () => window.localStorage.removeItem(KEY_STORAGE),
};

function root() {
  return document.body.dataset.apiRoot || "";
}

function authHeaders() {
  const key = apiKey.get();
  if (!key) throw new ApiError(0, "no_key", "Enter your API key in the box at the top right to use the API.");
  return { Authorization: `Bearer ${key}`, Accept: "application/json" };
}

function errorFromBody(status, text) {
  try {
    const err = JSON.parse(text).error;
    if (err && err.message !== undefined) return new ApiError(status, err.code, err.message, err.details);
  } catch (_) {
    // not our JSON error shape: a proxy or a crash; show its text
  }
  return new ApiError(status, "http_error", text.slice(0, 300) || `HTTP ${status}`);
}

// One API call; resolves to the parsed JSON body, rejects with ApiError (never resolves on an error status).
export async function api(method, path, { json, form } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let resp;
  try {
    resp = await fetch(root() + path, { method, headers, body, cache: "no-store" });
  } catch (exc) {
    throw new ApiError(0, "network", `could not reach the API (${exc.message}); is the server running?`);
  }
  const text = await resp.text();
  if (!resp.ok) throw errorFromBody(resp.status, text);
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    throw new ApiError(resp.status, "bad_response", "the API answered something that is not JSON");
  }
}

// A multipart POST with upload progress (fetch cannot report it); same contract as api().
export function upload(path, form, onProgress) {
  const headers = authHeaders();
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", root() + path);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable && onProgress) onProgress(ev.loaded, ev.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch (_) {
          reject(new ApiError(xhr.status, "bad_response", "the API answered something that is not JSON"));
        }
      } else {
        reject(errorFromBody(xhr.status, xhr.responseText || ""));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "the upload could not reach the API")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was aborted")));
    xhr.send(form);
  });
}

// All pages of a job's results (optionally one item state), up to `max` items.
export async function allResults(jobId, { state, max = 2000 } = {}) {
  const items = [];
  let offset = 0;
  let last = null;
  while (offset !== null && offset !== undefined && items.length < max) {
    const q = new URLSearchParams({ offset: String(offset), limit: "500" });
    if (state) q.set("state", state);
    last = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}/results?${q}`);
    items.push(...last.items);
    offset = last.next_offset;
  }
  return { items, artifacts: last ? last.artifacts : [], truncated: offset !== null && offset !== undefined };
}

// An error as the user sees it: what failed, the API's code and message, and per-field details.
export function errorPanel(err, what) {
  const status = err.status ? ` (HTTP ${err.status})` : "";
  const panel = h("div", { class: "error", role: "alert" },
    h("strong", { text: what ? `${what} failed` : "Error" }),
    h("span", { class: "error-code", text: `${err.code || "error"}${status}` }),
    h("p", { text: err.message || String(err) }));
  // A lone detail that only repeats the message adds nothing.
  const details = (Array.isArray(err.details) ? err.details : [])
    .filter((d) => !(d && `${d.field}: ${d.message}` === err.message));
  if (details.length) {
    panel.append(h("ul", {}, details.map((d) =>
      h("li", {}, h("code", { text: d.field ?? "" }), " ", d.message ?? JSON.stringify(d)))));
  } else if (err.details && !Array.isArray(err.details) && typeof err.details === "object"
    && Object.keys(err.details).length) {
    panel.append(h("pre", { text: JSON.stringify(err.details, null, 2) }));
  }
  if (err.status === 401) panel.append(h("p", { class: "hint", text: "Check the API key at the top right." }));
  return panel;
}

// True when an endpoint is simply not there (yet) on this server, as opposed to a real error.
export function isUnavailable(err) {
  return err instanceof ApiError && (err.status === 404 || err.status === 501);
}
