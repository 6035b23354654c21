// The submit form: photos plus a style (built-in index/blend or an uploaded painting), or a faces job.
import { errorPanel, upload } from "./api.js";
import { fmtBytes, h, replace } from "./dom.js";
import { rememberOriginals } from "./gallery.js";
import { loadStyles } from "./styles.js";

const BLEND = /^\d+(:\d*\.?\d+)?(,\d+(:\d*\.?\d+)?)*$/;
const PREVIEW_RETRY_MS = 3000;
const ARCHIVES = /\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$/i;

// "7 3:0.5,12:0.5" -> [7, "3:0.5,12:0.5"]; the API checks ranges and says what is wrong.
export function parseBuiltin(text) {
  const specs = text.split(/[\s;]+/).filter(Boolean);
  if (!specs.length) throw new Error("give a built-in style: an index 0–25 like 7, or a blend like 3:0.5,12:0.5");
  return specs.map((spec) => {
    if (!BLEND.test(spec)) throw new Error(`“${spec}” is not a built-in style: use an index like 7 or a blend like 3:0.5,12:0.5`);
    return /^\d+$/.test(spec) ? Number(spec) : spec;
  });
}

function radio(name, value, label, checked) {
  return h("label", { class: "choice" }, h("input", { type: "radio", name, value, checked }), h("span", { text: label }));
}

function field(label, control, hint) {
  return h("div", { class: "field" }, h("label", {}, h("span", { class: "field-label", text: label }), control),
    hint ? h("div", { class: "hint", text: hint }) : null);
}

function buildForm() {
  return h("form", { class: "panel submit-form", id: "submit-form", novalidate: true },
    field("Photos", h("input", { type: "file", name: "files", multiple: true,
      accept: "image/*,.heic,.heif,.zip,.tar,.tgz,.tar.gz" }), "JPEG, PNG, WebP, HEIC, TIFF… or a .zip/.tar of them"),
    h("div", { class: "field" }, h("span", { class: "field-label", text: "Job" }),
      h("div", { class: "segmented" }, radio("kind", "style", "Stylize", true), radio("kind", "faces", "Index faces"))),
    h("fieldset", { class: "kind-style" }, h("legend", { text: "Style" }),
      h("div", { class: "segmented" }, radio("source", "builtin", "Built-in style", true),
        radio("source", "image", "Style image", false)),
      h("div", { class: "source-builtin" },
        h("div", { class: "style-picker", id: "style-picker", role: "group", "aria-label": "built-in styles" },
          h("p", { class: "muted small", text: "Loading the styles…" })),
        field("Built-in style or blend",
          h("input", { type: "text", name: "builtin", value: "7", spellcheck: "false", autocomplete: "off" }),
          "pick styles above, or type an index 0–25 (7) or a blend (3:0.5,12:0.5); several separated by spaces "
          + "render one output each")),
      h("div", { class: "source-image", hidden: true }, field("Style image (a painting)",
        h("input", { type: "file", name: "style", accept: "image/*" }))),
      field("Preserve colours", h("select", { name: "preserve_colors" },
        ["none", "luminance", "histogram"].map((v) => h("option", { value: v, text: v }))))),
    h("fieldset", { class: "kind-faces", hidden: true }, h("legend", { text: "Faces" }),
      field("Detector", h("select", { name: "detector" }, ["yunet", "mtcnn", "hog"].map((v) => h("option", { value: v, text: v })))),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "try_rotations" }),
        " also try rotated photos (slower; finds faces in sideways scans)")),
    field("Label (optional)", h("input", { type: "text", name: "label", maxlength: "200", placeholder: "e.g. wedding, day 2" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Submit job" }),
      h("span", { class: "muted", role: "status", id: "submit-status" })));
}

function paramsOf(form, kind) {
  const el = form.elements;
  if (kind === "faces") return { detector: el.detector.value, try_rotations: el.try_rotations.checked };
  const params = { preserve_colors: el.preserve_colors.value };
  if (el.source.value === "image") return { ...params, method: "arbitrary" };
  return { ...params, method: "builtin", builtin: parseBuiltin(el.builtin.value) };
}

function syncVisibility(form) {
  const kind = form.elements.kind.value;
  form.querySelector(".kind-style").hidden = kind !== "style";
  form.querySelector(".kind-faces").hidden = kind !== "faces";
  const image = form.elements.source.value === "image";
  form.querySelector(".source-builtin").hidden = image;
  form.querySelector(".source-image").hidden = !image;
}

// The indices typed in the built-in field ("7 3:0.5,12:0.5" -> {7}); blends are left to the text.
function pickedIndices(text) {
  return new Set(text.split(/[\s;]+/).filter((s) => /^\d+$/.test(s)).map(Number));
}

function syncPicker(form) {
  const picked = pickedIndices(form.elements.builtin.value);
  for (const button of form.querySelectorAll(".style-choice")) {
    const on = picked.has(Number(button.dataset.index));
    button.classList.toggle("picked", on);
    button.setAttribute("aria-pressed", String(on));
  }
}

function toggleStyle(form, index) {
  const input = form.elements.builtin;
  const specs = input.value.split(/[\s;]+/).filter(Boolean);
  const at = specs.indexOf(String(index));
  if (at >= 0) specs.splice(at, 1);
  else specs.push(String(index));
  input.value = specs.join(" ");
  syncPicker(form);
}

// One button per built-in style, with its preview (rendered by a style worker) and its name.
async function fillPicker(form) {
  const box = form.querySelector("#style-picker");
  let body;
  try {
    body = await loadStyles({ fresh: true });
  } catch (err) {
    replace(box, h("p", { class: "muted small", text: `The style list is not available (${err.message}); `
      + "type an index below." }));
    return;
  }
  replace(box, body.styles.map((style) => {
    const button = h("button", { type: "button", class: "style-choice", title: `${style.index} · ${style.name}`,
      dataset: { index: style.index }, "aria-pressed": "false" },
    style.thumbnail_url ? h("img", { src: style.thumbnail_url, alt: "", loading: "lazy" })
      : h("span", { class: "style-placeholder", text: String(style.index) }),
    h("span", { class: "style-label" }, h("b", { text: String(style.index) }), ` ${style.name}`));
    button.addEventListener("click", () => toggleStyle(form, style.index));
    return button;
  }));
  if (body.previews !== "ready") {
    box.append(h("p", { class: "muted small", text: "Previews appear once a style worker has rendered them." }));
    setTimeout(() => { if (form.isConnected) fillPicker(form); }, PREVIEW_RETRY_MS);
  }
  syncPicker(form);
}

export function renderSubmit(view) {
  const form = buildForm();
  const errorBox = h("div", { id: "submit-error" });
  const status = form.querySelector("#submit-status");
  view.append(h("div", { class: "page-head" }, h("h1", { text: "New job" })), errorBox, form);
  form.addEventListener("change", () => {
    syncVisibility(form);
    const files = [...form.elements.files.files];
    status.textContent = files.length
      ? `${files.length} file${files.length > 1 ? "s" : ""}, ${fmtBytes(files.reduce((n, f) => n + f.size, 0))}` : "";
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit(form, errorBox, status);
  });
  form.elements.builtin.addEventListener("input", () => syncPicker(form));
  fillPicker(form);
}

async function submit(form, errorBox, status) {
  replace(errorBox);
  const el = form.elements;
  const kind = el.kind.value;
  const files = [...el.files.files];
  const style = kind === "style" && el.source.value === "image" ? el.namedItem("style").files[0] : null;
  let params;
  try {
    if (!files.length) throw new Error("choose one or more photos first");
    if (kind === "style" && el.source.value === "image" && !style) throw new Error("choose a style image, or use a built-in style");
    params = paramsOf(form, kind);
  } catch (err) {
    replace(errorBox, errorPanel({ code: "invalid_input", message: err.message }, "Checking the form"));
    return;
  }
  const body = new FormData();
  body.append("kind", kind);
  body.append("params", JSON.stringify(params));
  if (el.label.value.trim()) body.append("label", el.label.value.trim());
  for (const f of files) body.append("files", f, f.name);
  if (style) body.append("style", style, style.name);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const job = await upload("/v1/jobs", body, (sent, total) => {
      status.textContent = `uploading ${fmtBytes(sent)} of ${fmtBytes(total)}…`;
    });
    rememberOriginals(job.id, files.filter((f) => !ARCHIVES.test(f.name)));
    window.location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
  } catch (err) {
    replace(errorBox, errorPanel(err, "Submitting the job"));
    status.textContent = "";
  } finally {
    button.disabled = false;
  }
}
