// People: the library of people every faces job feeds. A grid of covers (named first), faces that belong to
// nobody yet (with "who is this?"), people who may be one person, and a page per person (their photos,
// newest first; rename, hide, cover, "not this person", merge with someone chosen by their face). "Learn from
// names" starts an adapt job: a head learnt from the names, used only when it helps on held-out faces.
import { api, errorPanel } from "./api.js";
import { externalLink, h, replace } from "./dom.js";
import { personVideos } from "./videos.js";

const PAGE = 60;
const FILTERS = [["visible", "Everyone"], ["named", "Named"], ["unnamed", "Unnamed"], ["hidden", "Hidden"]];

export function renderPeople(view, personId) {
  if (personId) return renderPerson(view, personId);
  const stats = h("span", { class: "muted", id: "library-stats" });
  const status = h("div", { role: "status" });
  const grid = h("div", { class: "people-grid", id: "people" });
  const filterBar = h("div", { class: "filters", role: "tablist" });
  const unassigned = h("section", { class: "panel", id: "unassigned" });
  const suggestions = h("section", { class: "panel", id: "suggestions" });
  const recluster = h("button", { type: "button", text: "Re-cluster" });
  recluster.addEventListener("click", async () => {
    if (!window.confirm("Group every face again? Names, merges, faces you moved and hidden people are kept.")) return;
    await act(status, async () => {
      const job = await api("POST", "/v1/people/recluster", { json: {} });
      replace(status, h("p", { class: "notice" }, "Re-clustering the library: ",
        h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, text: "follow the job" })));
    }, "Re-clustering", false);
  });
  const learn = h("button", { type: "button", text: "Learn from names", id: "learn",
    title: "Learn how your named people look; used only when it measurably helps on faces held out" });
  learn.addEventListener("click", async () => {
    await act(status, async () => {
      const job = await api("POST", "/v1/people/learn", { json: {} });
      replace(status, h("p", { class: "notice" }, "Learning from your names (used only if it helps): ",
        h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, text: "follow the job" })));
    }, "Learning", false);
  });
  let filter = "visible";
  const load = async () => {
    replace(filterBar, FILTERS.map(([value, label]) => {
      const b = h("button", { type: "button", class: value === filter ? "tab active" : "tab", text: label,
        role: "tab", "aria-selected": String(value === filter) });
      b.addEventListener("click", () => { filter = value; load(); });
      return b;
    }));
    await Promise.all([loadGrid(grid, filter), loadStats(stats), loadUnassigned(unassigned, status, load),
      loadSuggestions(suggestions, status, load)]);
  };
  view.append(
    h("div", { class: "page-head" }, h("h1", { text: "People" }), stats, recluster, learn),
    status, filterBar, grid, suggestions, unassigned, searchSection());
  load();
  return null;
}

function count(n, one, many = `${one}s`) {
  return `${n ?? 0} ${n === 1 ? one : many}`;
}

async function loadStats(box) {
  try {
    const lib = await api("GET", "/v1/library");
    const s = lib.stats || {};
    replace(box, lib.version ? `${count(s.people, "person", "people")} · ${count(s.faces, "face")} in `
      + `${count(s.photos, "photo")} · ${s.unassigned ?? 0} unassigned`
      : "The library is empty: index faces (New job → Index faces).");
  } catch (err) {
    replace(box, "");
  }
}

async function loadGrid(grid, filter) {
  replace(grid, h("p", { class: "muted", text: "Loading people…" }));
  try {
    const page = await api("GET", `/v1/people?filter=${filter}&limit=500`);
    replace(grid, page.people.length ? page.people.map(personCard)
      : h("p", { class: "muted", text: filter === "visible"
        ? "Nobody yet: people appear when a few faces of the same person have been indexed."
        : "Nobody here." }));
  } catch (err) {
    replace(grid, errorPanel(err, "Loading people"));
  }
}

function cover(person, size = "cover") {
  const url = person.cover && person.cover.thumbnail_url;
  return url ? h("img", { class: size, src: url, alt: person.name || "unnamed person", loading: "lazy" })
    : h("div", { class: `${size} no-face`, "aria-hidden": "true" });
}

function personCard(p) {
  return h("a", { class: "person", href: `#/people/${encodeURIComponent(p.id)}`, dataset: { personId: p.id } },
    cover(p),
    h("div", { class: "person-name", text: p.name || "Unnamed" }),
    h("div", { class: "muted small", text: `${p.photos} photo${p.photos === 1 ? "" : "s"}${p.hidden ? " · hidden" : ""}` }));
}

// A dialog that shows people by their faces and resolves with the one picked (or null).
function choosePerson(title, exclude) {
  return new Promise((resolve) => {
    const list = h("div", { class: "picker-grid" }, h("p", { class: "muted", text: "Loading people…" }));
    const dialog = h("dialog", { class: "picker" },
      h("h2", { text: title }), list,
      h("form", { method: "dialog" }, h("button", { type: "submit", text: "Cancel" })));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue || null); });
    document.body.append(dialog);
    dialog.showModal();
    api("GET", "/v1/people?filter=all&limit=500").then(({ people }) => {
      const choices = people.filter((p) => p.id !== exclude);
      replace(list, choices.length ? choices.map((p) => {
        const b = h("button", { type: "button", class: "pick", dataset: { personId: p.id } }, cover(p, "thumb"),
          h("span", { text: p.name || "Unnamed" }), h("span", { class: "muted small", text: `${p.photos} photos` }));
        b.addEventListener("click", () => dialog.close(p.id));
        return b;
      }) : h("p", { class: "muted", text: "There is nobody else yet." }));
    }).catch((err) => replace(list, errorPanel(err, "Loading people")));
  });
}

async function loadUnassigned(box, status, reload) {
  try {
    const page = await api("GET", `/v1/faces?unassigned=true&limit=${PAGE}`);
    if (!page.total) { replace(box); box.hidden = true; return; }
    box.hidden = false;
    replace(box, h("h2", { text: `Unassigned faces (${page.total})` }),
      h("p", { class: "muted", text: "Faces that belong to nobody yet. They join someone when they clearly look "
        + "like them, or become a new person when a few of them agree. Click one to say who it is." }),
      h("div", { class: "face-grid" }, page.faces.map((f) => {
        const b = h("button", { type: "button", class: "face", title: "Who is this?", dataset: { face: f.face } },
          h("img", { src: f.thumbnail_url, alt: "an unassigned face", loading: "lazy" }));
        b.addEventListener("click", async () => {
          const person = await choosePerson("Who is this?", null);
          if (person) await act(status, () => api("POST", `/v1/faces/${encodeURIComponent(f.face)}/person`,
            { json: { person } }), "Assigning the face", true, reload);
        });
        return b;
      })),
      page.total > page.faces.length ? h("p", { class: "muted small", text: `and ${page.total - page.faces.length} more` })
        : null);
  } catch (err) {
    replace(box, errorPanel(err, "Loading unassigned faces"));
  }
}

async function loadSuggestions(box, status, reload) {
  try {
    const { suggestions } = await api("GET", "/v1/people/suggestions");
    if (!suggestions.length) { replace(box); box.hidden = true; return; }
    box.hidden = false;
    replace(box, h("h2", { text: "The same person?" }),
      h("div", { class: "suggestions" }, suggestions.slice(0, 12).map((s) => {
        const merge = h("button", { type: "button", class: "primary", text: "Merge" });
        merge.addEventListener("click", () => act(status, () => api("POST", "/v1/people/merge",
          { json: { into: s.a.name || !s.b.name ? s.a.id : s.b.id, from: s.a.name || !s.b.name ? s.b.id : s.a.id } }),
        "Merging", true, reload));
        return h("div", { class: "suggestion" }, cover(s.a, "thumb"), cover(s.b, "thumb"),
          h("span", { text: `${s.a.name || "Unnamed"} and ${s.b.name || "Unnamed"}` }), merge);
      })));
  } catch (err) {
    replace(box, errorPanel(err, "Loading suggestions"));
  }
}

async function act(status, call, what, reloadAfter = true, reload = null) {
  replace(status);
  try {
    await call();
  } catch (err) {
    replace(status, errorPanel(err, what));
    return;
  }
  if (reloadAfter && reload) await reload();
}

// -- a person's page ---------------------------------------------------------------------------------------

function renderPerson(view, personId) {
  const head = h("div", { class: "person-head" });
  const status = h("div", { role: "status" });
  const photos = h("div", { class: "photo-grid", id: "person-photos" });
  const videos = h("div");
  const more = h("button", { type: "button", text: "More photos", hidden: true });
  let offset = 0;
  const loadPage = async (reset) => {
    if (reset) { offset = 0; replace(photos); }
    try {
      const page = await api("GET", `/v1/people/${encodeURIComponent(personId)}?offset=${offset}&limit=${PAGE}`);
      if (reset) {
        renderHead(head, page.person, status, () => loadPage(true));
        replace(videos, personVideos(page.videos));
      }
      photos.append(...page.photos.map((p) => photoCard(p, page.person, status, () => loadPage(true))));
      offset = page.next_offset ?? offset;
      more.hidden = page.next_offset === null || page.next_offset === undefined;
    } catch (err) {
      replace(head, errorPanel(err, "Loading this person"));
    }
  };
  more.addEventListener("click", () => loadPage(false));
  view.append(h("div", { class: "page-head" }, h("a", { href: "#/people", class: "back", text: "← People" })),
    head, status, videos, photos, more);
  loadPage(true);
  return null;
}

function renderHead(box, p, status, reload) {
  const rename = h("form", { class: "inline-form" },
    h("input", { type: "text", name: "name", value: p.name || "", placeholder: "Who is this?", maxlength: "200",
      "aria-label": "name" }),
    h("button", { type: "submit", class: "primary", text: p.name ? "Rename" : "Name" }));
  rename.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(status, () => api("PATCH", `/v1/people/${encodeURIComponent(p.id)}`,
      { json: { name: rename.elements.name.value.trim() } }), "Naming", true, reload);
  });
  const hide = h("button", { type: "button", text: p.hidden ? "Show again" : "Hide" });
  hide.addEventListener("click", () => act(status, () => api("PATCH", `/v1/people/${encodeURIComponent(p.id)}`,
    { json: { hidden: !p.hidden } }), "Hiding", true, reload));
  const merge = h("button", { type: "button", text: "Merge with…" });
  merge.addEventListener("click", async () => {
    const other = await choosePerson(`Who else is ${p.name || "this person"}?`, p.id);
    if (other) await act(status, () => api("POST", "/v1/people/merge", { json: { into: p.id, from: other } }),
      "Merging", true, reload);
  });
  replace(box, cover(p, "cover large"),
    h("div", {}, h("h1", { text: p.name || "Unnamed person" }),
      h("p", { class: "muted", text: `${p.faces} faces in ${p.photos} photos${p.hidden ? " · hidden" : ""}` }),
      rename, h("div", { class: "actions" }, hide, merge)));
}

function photoCard(photo, person, status, reload) {
  const face = photo.faces[0];
  const when = photo.taken ? new Date(photo.taken * 1000).toISOString().slice(0, 10) : "date unknown";
  const notThem = h("button", { type: "button", class: "small danger", text: "Not them" });
  notThem.addEventListener("click", () => act(status, () => api("POST",
    `/v1/faces/${encodeURIComponent(face.face)}/person`, { json: { person: null } }), "Moving the face out", true,
  reload));
  const asCover = h("button", { type: "button", class: "small", text: "Cover" });
  asCover.addEventListener("click", () => act(status, () => api("PATCH", `/v1/people/${encodeURIComponent(person.id)}`,
    { json: { cover: face.face } }), "Setting the cover", true, reload));
  return h("figure", { class: "photo", dataset: { face: face.face } },
    h("a", { href: photo.url, target: "_blank", rel: "noopener noreferrer", title: "open the photo" },
      h("img", { src: photo.url, alt: `${person.name || "this person"}, ${when}`, loading: "lazy" })),
    h("figcaption", {}, h("img", { class: "chip", src: face.thumbnail_url, alt: "their face", loading: "lazy" }),
      h("span", { class: "small", text: when, title: photo.name || photo.key }), asCover, notThem));
}

// -- face search -------------------------------------------------------------------------------------------

function searchSection() {
  const results = h("div", { id: "search-results" });
  const form = h("form", { class: "inline-form search-form" },
    h("input", { type: "file", name: "photo", accept: "image/*", "aria-label": "photo with a face" }),
    h("label", { class: "inline" }, "matches", h("input", { type: "number", name: "k", value: "12", min: "1", max: "100" })),
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
    body.append("k", form.elements.k.value || "12");
    replace(results, h("p", { class: "muted", text: "Searching…" }));
    try {
      const { matches } = await api("POST", "/v1/faces/search", { form: body });
      replace(results, matches.length ? h("div", { class: "matches" }, matches.map(matchCard))
        : h("p", { class: "muted", text: "No similar face in your library." }));
    } catch (err) {
      replace(results, errorPanel(err, "Face search"));
    }
  });
  return h("section", { class: "panel", id: "face-search" }, h("h2", { text: "Find a face" }),
    h("p", { class: "muted", text: "Upload a photo of someone to find them in your library." }), form, results);
}

function matchCard(m) {
  const who = m.name || (m.person ? "Unnamed person" : "Nobody yet");
  const img = h("img", { src: m.thumbnail_url, alt: `a face of ${who}`, loading: "lazy" });
  return h("figure", { class: "match" },
    m.person ? h("a", { href: `#/people/${encodeURIComponent(m.person)}` }, img) : img,
    h("figcaption", {},
      h("div", { class: "match-name", text: who, title: who }),
      h("div", { class: "small muted" }, `distance ${Number(m.distance).toFixed(3)}${m.same_person ? " · same person" : ""} · `,
        externalLink(m.photo_url, "photo"))));
}
