// Results of a finished job: the before/after gallery of a style job, plain output lists otherwise.
import { api, errorPanel } from "./api.js";
import { externalLink, h, replace } from "./dom.js";
import { isVideoPart, videoSection } from "./videos.js";

const PAGE = 12;
const CONTACT_SHEET = "contact-sheet.jpg";

// Photos submitted from this tab, by job id then item name: the "before" when the API does not link originals.
const localOriginals = new Map();

export function rememberOriginals(jobId, files) {
  const byName = new Map();
  for (const file of files) byName.set(file.name, URL.createObjectURL(file));
  localOriginals.set(jobId, byName);
}

function resultsPage(jobId, offset, limit) {
  const q = new URLSearchParams({ offset: String(offset), limit: String(limit) });
  return api("GET", `/v1/jobs/${encodeURIComponent(jobId)}/results?${q}`);
}

function figure(url, caption, cls, size) {
  const img = h("img", { src: url, alt: caption, loading: cls === "sheet" ? "eager" : "lazy", decoding: "async" });
  // Reserve the box before the image arrives, so the page does not jump while it loads.
  if (size && size.width && size.height) img.style.aspectRatio = `${size.width} / ${size.height}`;
  img.addEventListener("error", () => fig.classList.add("broken"));
  const fig = h("figure", { class: cls }, h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, img),
    h("figcaption", { text: caption }));
  return fig;
}

function variantOf(outputName) {
  const stem = outputName.replace(/\.[^.]+$/, "");
  const at = stem.indexOf("__");
  return at >= 0 ? stem.slice(at + 2) : stem;
}

function originalUrl(jobId, item) {
  return (item.input && item.input.url) || localOriginals.get(jobId)?.get(item.name) || null;
}

function itemCard(jobId, item) {
  const original = originalUrl(jobId, item);
  return h("article", { class: "pair", dataset: { index: item.index } },
    h("header", {}, h("span", { class: "mono", text: item.name }),
      item.info && item.info.width ? h("span", { class: "muted small", text: `${item.info.width}×${item.info.height}` }) : null),
    h("div", { class: "pair-row" }, original ? figure(original, "original", "original", item.info) : null,
      item.outputs.map((o) => figure(o.url, variantOf(o.name), "output", item.info))));
}

function downloads(artifacts) {
  if (!artifacts.length) return null;
  return h("p", { class: "downloads" }, "Job files: ",
    artifacts.map((a, i) => [i ? " · " : "", externalLink(a.url, a.name)]));
}

export async function renderGallery(box, job) {
  const first = await resultsPage(job.id, 0, PAGE);
  const sheet = first.artifacts.find((a) => a.name === CONTACT_SHEET);
  const grid = h("div", { class: "gallery", id: "gallery" });
  const note = h("div");
  const more = h("div", { class: "more" });
  const videos = videoSection(job, first.artifacts);
  const photos = first.items.some((it) => !isVideoPart(it)) || first.next_offset;
  replace(box, videos,
    photos || !videos ? h("section", { class: "panel" }, h("h2", { text: "Before / after" }), downloads(first.artifacts),
      note, grid, more) : h("section", { class: "panel" }, downloads(first.artifacts)),
    sheet ? h("section", { class: "panel", id: "contact-sheet" }, h("h2", { text: "Contact sheet" }),
      figure(sheet.url, sheet.name, "sheet")) : null);

  const show = (page) => {
    const done = page.items.filter((it) => it.outputs.length && !isVideoPart(it));
    grid.append(...done.map((it) => itemCard(job.id, it)));
    if (!note.childElementCount && done.some((it) => !originalUrl(job.id, it))) {
      note.append(h("p", { class: "muted small", text: "Originals are shown for photos submitted from this tab; "
        + "the contact sheet below has the originals of the first photos." }));
    }
    replace(more);
    if (page.next_offset !== null && page.next_offset !== undefined) {
      const button = h("button", { type: "button", text: "Show more" });
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          show(await resultsPage(job.id, page.next_offset, PAGE));
        } catch (err) {
          button.disabled = false;
          more.append(errorPanel(err, "Loading more results"));
        }
      });
      more.append(button);
    } else if (!grid.childElementCount && !(job.summary && job.summary.videos)) {
      more.append(h("p", { class: "muted", text: "No item produced an output." }));
    }
  };
  show(first);
}

const IMAGE = /\.(jpe?g|png|webp|gif)$/i;

function outputCell(outputs) {
  const images = outputs.filter((o) => IMAGE.test(o.name));
  const others = outputs.filter((o) => !IMAGE.test(o.name));
  return h("td", {},
    images.length ? h("div", { class: "thumbs" }, images.map((o) =>
      h("a", { href: o.url, target: "_blank", rel: "noopener noreferrer", title: o.name },
        h("img", { src: o.url, alt: o.name, loading: "lazy" })))) : null,
    others.map((o, i) => [i ? " · " : "", externalLink(o.url, o.name)]));
}

export async function renderOutputs(box, job) {
  const page = await resultsPage(job.id, 0, 100);
  const rows = page.items.filter((it) => it.state !== "failed");
  replace(box, h("section", { class: "panel", id: "outputs" }, h("h2", { text: "Results" }), downloads(page.artifacts),
    rows.length ? h("table", { class: "errors" },
      h("thead", {}, h("tr", {}, ["#", "Item", "State", "Outcome", "Outputs"].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows.map((it) => h("tr", {},
        h("td", { class: "mono small", text: it.index }), h("td", { class: "mono", text: it.name }),
        h("td", { text: it.state }), h("td", { class: "small", text: (it.info && it.info.outcome) || "" }),
        outputCell(it.outputs)))))
      : h("p", { class: "muted", text: "No item outputs." }),
    page.next_offset ? h("p", { class: "muted", text: "Showing the first 100 items." }) : null));
}
