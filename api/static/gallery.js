// Results of a finished job: the before/after gallery of a style job, plain output lists otherwise.
// Links to results are presigned and expire (urls_expire_in_s): a page left open asks for fresh ones before then.
import { api, errorPanel } from "./api.js";
import { externalLink, h, replace, safeUrl } from "./dom.js";
import { loadStyles, styleName } from "./styles.js";
import { isVideoPart, videoSection } from "./videos.js";

const PAGE = 12;
const CONTACT_SHEET = "contact-sheet.jpg";
const REFRESH_SHARE = 0.8; // refresh links when this share of their lifetime has passed
const MIN_REFRESH_S = 5;

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

// Elements showing a stored object carry its key, so fresh links can replace expired ones.
function keyed(key) {
  return key ? { key } : undefined;
}

function figure(url, caption, cls, size, key) {
  const img = h("img", { src: url, alt: caption, loading: cls === "sheet" ? "eager" : "lazy", decoding: "async",
    dataset: keyed(key) });
  // Reserve the box before the image arrives, so the page does not jump while it loads.
  if (size && size.width && size.height) img.style.aspectRatio = `${size.width} / ${size.height}`;
  img.addEventListener("error", () => fig.classList.add("broken"));
  img.addEventListener("load", () => fig.classList.remove("broken"));
  const fig = h("figure", { class: cls },
    h("a", { href: url, target: "_blank", rel: "noopener noreferrer", dataset: keyed(key) }, img),
    h("figcaption", { text: caption, title: caption }));
  return fig;
}

// "DCIM/IMG_0001__builtin-b7-s1.0-none-x1.0.png" -> "builtin-b7-s1.0-none-x1.0" (the item's path may hold "__")
function variantOf(outputName) {
  const stem = outputName.replace(/\.[^./]+$/, "");
  const at = stem.lastIndexOf("__");
  return at >= 0 ? stem.slice(at + 2) : stem;
}

// A built-in variant's caption names its style: "7 · Primary-colour blocks".
function caption(outputName) {
  const variant = variantOf(outputName);
  const single = variant.match(/^builtin-b(\d+)-s([\d.]+)/);
  if (!single) return variant;
  const name = styleName(Number(single[1]));
  const strength = single[2] === "1.0" ? "" : ` · strength ${single[2]}`;
  return name ? `${single[1]} · ${name}${strength}` : variant;
}

function originalUrl(jobId, item) {
  return (item.input && item.input.url) || localOriginals.get(jobId)?.get(item.name) || null;
}

function itemCard(jobId, item) {
  const original = originalUrl(jobId, item);
  return h("article", { class: "pair", dataset: { index: item.index } },
    h("header", {}, h("span", { class: "mono", text: item.name }),
      item.info && item.info.width ? h("span", { class: "muted small", text: `${item.info.width}×${item.info.height}` }) : null),
    h("div", { class: "pair-row" },
      original ? figure(original, "original", "original", item.info, item.input && item.input.key) : null,
      item.outputs.map((o) => figure(o.url, caption(o.name), "output", item.info, o.key))));
}

function downloads(artifacts) {
  if (!artifacts.length) return null;
  return h("p", { class: "downloads" }, "Job files: ",
    artifacts.map((a, i) => [i ? " · " : "", h("a", { href: a.url, target: "_blank", rel: "noopener noreferrer",
      text: a.name, dataset: keyed(a.key) })]));
}

function collectUrls(page, urls) {
  for (const item of page.items) {
    if (item.input) urls.set(item.input.key, item.input.url);
    for (const o of item.outputs) urls.set(o.key, o.url);
  }
  for (const a of page.artifacts) urls.set(a.key, a.url);
}

// Re-reads the result pages shown in `box` and swaps in fresh links, until `box` leaves the page.
export function keepLinksFresh(box, jobId, pages, expiresInS) {
  const every = Math.max(MIN_REFRESH_S, (expiresInS || 900) * REFRESH_SHARE) * 1000;
  let last = Date.now();
  const refresh = async () => {
    last = Date.now();
    const urls = new Map();
    try {
      for (const [offset, limit] of pages) collectUrls(await resultsPage(jobId, offset, limit), urls);
    } catch (_) {
      return; // the next round tries again; the links shown still work until they expire
    }
    for (const el of box.querySelectorAll("[data-key]")) {
      const url = urls.get(el.dataset.key);
      if (!url) continue;
      if (el.tagName === "IMG") el.src = safeUrl(url);
      else el.href = safeUrl(url);
    }
    box.dataset.linksRefreshed = String(Number(box.dataset.linksRefreshed || 0) + 1);
  };
  const timer = setInterval(() => {
    if (!box.isConnected) clearInterval(timer);
    else if (!document.hidden) refresh();
  }, every);
  // a tab that slept past the expiry refreshes as soon as it is seen again
  const onVisible = () => {
    if (!box.isConnected) document.removeEventListener("visibilitychange", onVisible);
    else if (!document.hidden && Date.now() - last > every) refresh();
  };
  document.addEventListener("visibilitychange", onVisible);
}

export async function renderGallery(box, job) {
  await loadStyles().catch(() => null); // names for the captions; without them captions show the variant
  const first = await resultsPage(job.id, 0, PAGE);
  const pages = [[0, PAGE]];
  const sheet = first.artifacts.find((a) => a.name === CONTACT_SHEET);
  const grid = h("div", { class: "gallery", id: "gallery" });
  const note = h("div");
  const more = h("div", { class: "more" });
  const videos = videoSection(job, first);
  const photos = first.items.some((it) => !isVideoPart(it)) || first.next_offset;
  replace(box, videos,
    photos || !videos ? h("section", { class: "panel" }, h("h2", { text: "Before / after" }), downloads(first.artifacts),
      note, grid, more) : h("section", { class: "panel" }, downloads(first.artifacts)),
    sheet ? h("section", { class: "panel", id: "contact-sheet" }, h("h2", { text: "Contact sheet" }),
      figure(sheet.url, sheet.name, "sheet", null, sheet.key)) : null);

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
          const next = await resultsPage(job.id, page.next_offset, PAGE);
          pages.push([page.next_offset, PAGE]);
          show(next);
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
  keepLinksFresh(box, job.id, pages, first.urls_expire_in_s);
}

const IMAGE = /\.(jpe?g|png|webp|gif)$/i;

function outputCell(outputs) {
  const images = outputs.filter((o) => IMAGE.test(o.name));
  const others = outputs.filter((o) => !IMAGE.test(o.name));
  return h("td", {},
    images.length ? h("div", { class: "thumbs" }, images.map((o) =>
      h("a", { href: o.url, target: "_blank", rel: "noopener noreferrer", title: o.name, dataset: keyed(o.key) },
        h("img", { src: o.url, alt: o.name, loading: "lazy", dataset: keyed(o.key) })))) : null,
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
  keepLinksFresh(box, job.id, [[0, 100]], page.urls_expire_in_s);
}
