// People: the persons a cluster job found (rename, merge) and search by face.
import { api, errorPanel, isUnavailable } from "./api.js";
import { h, replace } from "./dom.js";

const FACES_SHOWN = 12;

function unavailable(err, what) {
  const missing = err.status === 501 || (err.message || "").startsWith("no such endpoint");
  return h("div", { class: "notice", role: "status", dataset: { unavailable: "true" } },
    h("strong", { text: missing ? `${what} is not available on this server yet` : `${what} is not available here` }),
    h("p", { text: `The API answered ${err.status} ${err.code}: ${err.message}` }),
    missing ? h("p", { class: "hint", text: "This server runs without the people endpoints; jobs and results work as usual." })
      : null);
}

function failure(err, what) {
  return isUnavailable(err) ? unavailable(err, what) : errorPanel(err, what);
}

export function renderPeople(view, jobId) {
  const main = h("div");
  view.append(
    h("div", { class: "page-head" },
      jobId ? h("a", { href: `#/jobs/${encodeURIComponent(jobId)}`, class: "back", text: "← Job" }) : null,
      h("h1", { text: "People" }), jobId ? h("span", { class: "mono muted", text: jobId }) : null),
    main, searchSection());
  if (jobId) loadPeople(main, jobId);
  else listClusterJobs(main);
}

async function listClusterJobs(box) {
  const open = h("form", { class: "inline-form" },
    h("input", { type: "text", name: "job", placeholder: "cluster job id", spellcheck: "false", required: true }),
    h("button", { type: "submit", text: "Open" }));
  open.addEventListener("submit", (ev) => {
    ev.preventDefault();
    window.location.hash = `#/people/${encodeURIComponent(open.elements.job.value.trim())}`;
  });
  const list = h("div", {}, h("p", { class: "muted", text: "Loading cluster jobs…" }));
  replace(box, h("section", { class: "panel" }, h("h2", { text: "Cluster jobs" }), list, open));
  try {
    const page = await api("GET", "/v1/jobs?kind=cluster&limit=20");
    replace(list, page.jobs.length
      ? h("ul", { class: "plain" }, page.jobs.map((j) => h("li", {},
        h("a", { href: `#/people/${encodeURIComponent(j.id)}`, class: "mono", text: j.label || j.id }),
        " ", h("span", { class: `pill pill-${j.state}`, text: j.state }))))
      : h("p", { class: "muted", text: "No cluster job yet: index faces (New job → Index faces), then press "
        + "“Group faces into people” on the finished job." }));
  } catch (err) {
    replace(list, errorPanel(err, "Loading cluster jobs"));
  }
}

async function loadPeople(box, jobId) {
  replace(box, h("p", { class: "muted", text: "Loading people…" }));
  let people;
  try {
    people = (await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}/people`)).people;
  } catch (err) {
    replace(box, failure(err, "The people view"));
    return;
  }
  const status = h("div", { role: "status" });
  const reload = () => loadPeople(box, jobId);
  replace(box, status, people.length
    ? h("div", { class: "people", id: "people" }, people.map((p) => personCard(p, people, status, reload)))
    : h("p", { class: "muted", text: "This job found no people." }));
}

function personCard(person, everyone, status, reload) {
  const name = person.name || "";
  const faces = person.faces || [];
  const rename = h("form", { class: "inline-form" },
    h("input", { type: "text", name: "name", value: name, placeholder: "name this person", maxlength: "200" }),
    h("button", { type: "submit", text: "Rename" }));
  rename.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await act(status, reload, "Renaming", () => api("PUT", `/v1/people/${encodeURIComponent(person.id)}`,
      { json: { name: rename.elements.name.value.trim() } }));
  });
  const others = everyone.filter((p) => p.id !== person.id);
  const merge = h("form", { class: "inline-form" },
    h("select", { name: "into", "aria-label": "merge into" }, h("option", { value: "", text: "Merge into…" }),
      others.map((p) => h("option", { value: p.id, text: p.name || p.id }))),
    h("button", { type: "submit", text: "Merge" }));
  merge.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const into = merge.elements.into.value;
    if (!into) return;
    await act(status, reload, "Merging", () => api("POST", "/v1/people/merge", { json: { into, from: person.id } }));
  });
  return h("article", { class: "person", dataset: { personId: person.id } },
    h("header", {}, h("strong", { text: name || "Unnamed" }),
      h("span", { class: "muted small", text: `${person.photo_count} photo${person.photo_count === 1 ? "" : "s"}` })),
    h("div", { class: "faces" }, faces.slice(0, FACES_SHOWN).map((f) =>
      h("img", { src: f.thumbnail_url, alt: `face ${f.id}`, title: f.id, loading: "lazy" })),
    faces.length > FACES_SHOWN ? h("span", { class: "more-faces", text: `+${faces.length - FACES_SHOWN}` }) : null),
    rename, others.length ? merge : null);
}

async function act(status, reload, what, call) {
  replace(status);
  try {
    await call();
  } catch (err) {
    replace(status, failure(err, what));
    return;
  }
  await reload();
}

function searchSection() {
  const results = h("div", { id: "search-results" });
  const form = h("form", { class: "inline-form search-form" },
    h("input", { type: "file", name: "photo", accept: "image/*", "aria-label": "photo with a face" }),
    h("label", { class: "inline" }, "matches", h("input", { type: "number", name: "k", value: "10", min: "1", max: "100" })),
    h("button", { type: "submit", class: "primary", text: "Search" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const photo = form.elements.photo.files[0];
    if (!photo) {
      replace(results, errorPanel({ code: "invalid_input", message: "choose a photo with a face first" }, "Searching"));
      return;
    }
    const body = new FormData();
    body.append("photo", photo, photo.name);
    body.append("k", form.elements.k.value || "10");
    replace(results, h("p", { class: "muted", text: "Searching…" }));
    try {
      const { matches } = await api("POST", "/v1/faces/search", { form: body });
      replace(results, matches.length ? h("div", { class: "matches" }, matches.map(matchCard))
        : h("p", { class: "muted", text: "No similar face in your indexed photos." }));
    } catch (err) {
      replace(results, failure(err, "Face search"));
    }
  });
  return h("section", { class: "panel", id: "face-search" }, h("h2", { text: "Find a face" }),
    h("p", { class: "muted", text: "Upload a photo of someone to find them in your indexed photos." }), form, results);
}

function matchCard(m) {
  return h("figure", { class: "match" },
    h("img", { src: m.thumbnail_url, alt: `face in ${m.photo}`, loading: "lazy" }),
    h("figcaption", {}, h("div", { class: "mono small", text: m.photo }),
      h("div", { class: "small" }, `distance ${Number(m.distance).toFixed(3)} · `,
        h("a", { href: `#/jobs/${encodeURIComponent(m.job)}`, text: "job" }))));
}
