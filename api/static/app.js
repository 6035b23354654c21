// Nightshift's page: the API key box and a hash router over the views.
import { ApiError, api, apiKey } from "./api.js";
import { h, replace } from "./dom.js";
import { renderJobDetail, renderJobs } from "./jobs.js";
import { renderPeople } from "./people.js";
import { renderSubmit } from "./submit.js";

const ROUTES = [
  [/^#\/jobs\/([\w.-]+)$/, "jobs", (view, id) => renderJobDetail(view, id)],
  [/^#\/(jobs)?$/, "jobs", (view) => renderJobs(view)],
  [/^#\/submit$/, "submit", (view) => renderSubmit(view)],
  [/^#\/people\/([\w.-]+)$/, "people", (view, id) => renderPeople(view, id)],
  [/^#\/people$/, "people", (view) => renderPeople(view, null)],
];

let stopView = null;

// A key handed over as #key=... (e.g. printed by the CLI) is saved and removed from the address bar and history.
function pickUpKeyFromFragment() {
  const hash = window.location.hash;
  const match = hash.match(/(?:^#|[&?])key=([^&]*)/);
  if (!match) return;
  apiKey.set(decodeURIComponent(match[1]));
  let rest = hash.replace(match[0], "").replace(/^#?[&?]?/, "#");
  if (rest === "#") rest = "#/jobs";
  window.history.replaceState(null, "", window.location.pathname + window.location.search + rest);
}

function setKeyState(text, cls, title) {
  const state = document.getElementById("key-state");
  state.textContent = text;
  state.className = `key-state ${cls}`;
  state.title = title || "";
}

let keyCheck = 0;
let acceptedKey = null; // asked once per key, not on every navigation

// The key is only called good once the API has accepted it: a mistyped #key= says so instead.
async function showKeyState() {
  const key = apiKey.get();
  document.getElementById("api-key").value = "";
  document.getElementById("api-key").placeholder = key ? "•••••••• (saved)" : "paste your key";
  if (!key) {
    setKeyState("no key", "key-missing");
    return;
  }
  if (key === acceptedKey) return;
  const check = ++keyCheck;
  setKeyState("checking key…", "key-checking");
  try {
    await api("GET", "/v1/jobs?limit=1");
    if (check !== keyCheck) return;
    acceptedKey = key;
    setKeyState("key OK", "key-ok", "the API accepted this key");
  } catch (err) {
    if (check !== keyCheck) return;
    if (err instanceof ApiError && err.status === 401) {
      setKeyState("key refused", "key-bad", `the API refused this key: ${err.message}; paste the right one`);
      document.getElementById("api-key").placeholder = "paste the right key";
    } else {
      setKeyState("key not checked", "key-checking", `could not ask the API: ${err.message}`);
    }
  }
}

function setupKeyBox() {
  const form = document.getElementById("keybox");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = form.elements.key.value.trim();
    if (!value) return;
    apiKey.set(value);
    showKeyState();
    route();
  });
  document.getElementById("forget-key").addEventListener("click", () => {
    apiKey.clear();
    showKeyState();
    route();
  });
  showKeyState();
}

function route() {
  if (stopView) stopView();
  stopView = null;
  const hash = window.location.hash || "#/jobs";
  const view = document.getElementById("view");
  for (const [pattern, tab, render] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("[data-tab]")) {
      link.classList.toggle("active", link.dataset.tab === tab);
    }
    replace(view);
    stopView = render(view, ...match.slice(1).map(decodeURIComponent)) || null;
    window.scrollTo(0, 0);
    return;
  }
  replace(view, h("section", { class: "panel" },
    h("h1", { text: "Not found" }),
    h("p", {}, "There is no page at ", h("code", { text: hash }), ". ", h("a", { href: "#/jobs", text: "Go to jobs" }))));
}

pickUpKeyFromFragment();
setupKeyBox();
window.addEventListener("hashchange", () => {
  pickUpKeyFromFragment();
  showKeyState();
  route();
});
route();
