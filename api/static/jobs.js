// Jobs: the live list and one job's detail page (counts, throughput, ETA, item errors, results).
import { ApiError, allResults, api, errorPanel } from "./api.js";
import { fmtDuration, fmtRate, fmtTime, h, poller, progressBar, replace, statePill } from "./dom.js";
import { renderGallery, renderOutputs } from "./gallery.js";

const POLL_MS = 2000;
const FINISHED = new Set(["succeeded", "failed", "cancelled", "partial"]);
const STATES = ["queued", "running", "succeeded", "partial", "failed", "cancelled"];
const KINDS = ["style", "faces", "identify", "cluster", "adapt"];

const jobLink = (id) => `#/jobs/${encodeURIComponent(id)}`;
const finishedCount = (c) => c.done + c.failed + c.skipped + c.cancelled;

function select(name, label, values) {
  return h("label", { class: "inline" }, label,
    h("select", { name }, h("option", { value: "", text: "all" }), values.map((v) => h("option", { value: v, text: v }))));
}

export function renderJobs(view) {
  const filters = h("form", { class: "filters" }, select("state", "State", STATES), select("kind", "Kind", KINDS));
  const status = h("span", { class: "muted small", role: "status" });
  const errorBox = h("div");
  const body = h("div");
  view.append(
    h("div", { class: "page-head" },
      h("h1", { text: "Jobs" }), filters, status,
      h("a", { class: "button primary", href: "#/submit", text: "New job" })),
    errorBox, body);

  const load = async () => {
    const q = new URLSearchParams({ limit: "50" });
    for (const name of ["state", "kind"]) if (filters.elements[name].value) q.set(name, filters.elements[name].value);
    try {
      const page = await api("GET", `/v1/jobs?${q}`);
      replace(errorBox);
      replace(body, jobsTable(page.jobs));
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      replace(errorBox, errorPanel(err, "Loading jobs"));
      status.textContent = "";
    }
  };
  filters.addEventListener("change", load);
  return poller(load, POLL_MS);
}

function jobsTable(jobs) {
  if (!jobs.length) {
    return h("div", { class: "empty" }, h("p", { text: "No jobs yet." }),
      h("a", { class: "button primary", href: "#/submit", text: "Submit photos" }));
  }
  return h("table", { class: "jobs" },
    h("thead", {}, h("tr", {}, ["Job", "Kind", "State", "Progress", "Created", "Time"].map((t) => h("th", { text: t })))),
    h("tbody", {}, jobs.map(jobRow)));
}

function jobRow(job) {
  const c = job.counts;
  const took = job.started_at ? (job.finished_at || Date.now() / 1000) - job.started_at : null;
  const row = h("tr", { class: "clickable", dataset: { jobId: job.id, state: job.state } },
    h("td", {}, h("a", { href: jobLink(job.id), class: job.label ? "job-id" : "job-id mono", text: job.label || job.id }),
      job.label ? h("div", { class: "muted small mono", text: job.id }) : null),
    h("td", {}, h("span", { class: "kind", text: job.kind })),
    h("td", {}, statePill(job.state)),
    h("td", { class: "progress-cell" }, progressBar(c),
      h("span", { class: "small muted", text: `${finishedCount(c)} / ${c.total}${c.failed ? ` · ${c.failed} failed` : ""}${c.cancelled ? ` · ${c.cancelled} cancelled` : ""}` })),
    h("td", { class: "small", text: fmtTime(job.created_at) }),
    h("td", { class: "small", text: fmtDuration(took) }));
  row.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return;
    window.location.hash = jobLink(job.id);
  });
  return row;
}

export function renderJobDetail(view, jobId) {
  const head = h("div", { class: "page-head" }, h("a", { href: "#/jobs", class: "back", text: "← Jobs" }),
    h("h1", { class: "mono", text: jobId }));
  const errorBox = h("div");
  const summary = h("div");
  const failedBox = h("div");
  const resultsBox = h("div");
  view.append(head, errorBox, summary, failedBox, resultsBox);
  let lastFailed = -1;
  let resultsLoaded = false;
  let stop = null;

  const load = async () => {
    let job;
    try {
      job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
      replace(errorBox);
    } catch (err) {
      replace(errorBox, errorPanel(err, "Loading the job"));
      if (err instanceof ApiError && err.status === 404 && stop) stop();
      return;
    }
    replace(summary, jobSummary(job, () => cancel(job, errorBox, load)));
    if (job.counts.failed !== lastFailed) {
      lastFailed = job.counts.failed;
      await loadFailed(job, failedBox);
    }
    if (FINISHED.has(job.state) && !resultsLoaded) {
      resultsLoaded = true;
      if (stop) stop();
      await loadResults(job, resultsBox);
    } else if (!FINISHED.has(job.state)) {
      replace(resultsBox, h("p", { class: "muted", text: "Results appear here when the job finishes." }));
    }
  };
  stop = poller(load, POLL_MS);
  return () => stop();
}

async function cancel(job, errorBox, reload) {
  try {
    await api("POST", `/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
  } catch (err) {
    replace(errorBox, errorPanel(err, "Cancelling"));
    return;
  }
  await reload();
}

function stat(label, value, cls, unit) {
  return h("div", { class: `stat ${cls || ""}` },
    h("div", { class: "stat-value" }, String(value), unit ? h("span", { class: "stat-unit", text: unit }) : null),
    h("div", { class: "stat-label", text: label }));
}

function jobSummary(job, onCancel) {
  const c = job.counts;
  const finished = FINISHED.has(job.state);
  const elapsed = job.started_at ? (job.finished_at || Date.now() / 1000) - job.started_at : null;
  const [rate, rateUnit] = fmtRate(job.throughput_per_s);
  const actions = h("div", { class: "actions" });
  if (!finished) {
    actions.append(h("button", { type: "button", class: "danger", disabled: job.cancel_requested, onclick: onCancel,
      text: job.cancel_requested ? "Cancelling…" : "Cancel job" }));
  }
  if ((job.kind === "faces" || job.kind === "cluster" || job.kind === "adapt") && finished) {
    actions.append(h("a", { class: "button primary", href: "#/people", text: "People" }));
  }
  return h("section", { class: "panel", id: "job-summary", dataset: { state: job.state } },
    h("div", { class: "summary-head" },
      statePill(job.state), h("span", { class: "kind", text: job.kind }),
      job.label ? h("strong", { text: job.label }) : null,
      h("span", { class: "muted small", text: `created ${fmtTime(job.created_at)}` }), actions),
    progressBar(c, { large: true }),
    h("div", { class: "stats" },
      stat("total", c.total), stat("done", c.done, "ok"), stat("failed", c.failed, c.failed ? "bad" : ""),
      stat("skipped", c.skipped), stat("cancelled", c.cancelled), stat("pending", c.pending),
      stat("throughput", rate, "", rateUnit),
      job.frames ? stat("video frames", `${job.frames.done} / ${job.frames.total}`) : null,
      stat(finished ? "took" : "ETA", finished ? fmtDuration(elapsed) : fmtDuration(job.eta_s))),
    job.inputs_complete === false ? h("p", { class: "muted", text: "Still listing the inputs (archive or prefix)…" }) : null,
    job.error ? h("div", { class: "error", role: "alert" }, h("strong", { text: "Job error" }), h("p", { text: job.error })) : null,
    job.kind === "adapt" && job.summary && job.summary.reason
      ? h("p", { class: "notice", id: "adapt-verdict",
        text: `${job.summary.adopted ? "In use now" : "Not used"}: ${job.summary.reason}` }) : null,
    h("details", {}, h("summary", { text: "Parameters" }), h("pre", { text: JSON.stringify(job.params, null, 2) })));
}

async function loadFailed(job, box) {
  if (!job.counts.failed) {
    replace(box);
    return;
  }
  try {
    const { items, truncated } = await allResults(job.id, { state: "failed", max: 500 });
    replace(box, h("section", { class: "panel", id: "item-errors" },
      h("h2", { text: `Item errors (${job.counts.failed})` }),
      h("table", { class: "errors" },
        h("thead", {}, h("tr", {}, ["#", "Item", "Error", "Attempts"].map((t) => h("th", { text: t })))),
        h("tbody", {}, items.map((it) => h("tr", {},
          h("td", { class: "mono small", text: it.index }), h("td", { class: "mono", text: it.name }),
          h("td", { class: "bad", text: it.error || "" }), h("td", { text: it.attempts }))))),
      truncated ? h("p", { class: "muted", text: "Showing the first 500 failed items." }) : null));
  } catch (err) {
    replace(box, errorPanel(err, "Loading item errors"));
  }
}

async function loadResults(job, box) {
  replace(box, h("p", { class: "muted", text: "Loading results…" }));
  try {
    if (job.kind === "style") await renderGallery(box, job);
    else await renderOutputs(box, job);
  } catch (err) {
    replace(box, errorPanel(err, "Loading results"));
  }
}
