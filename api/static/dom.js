// DOM helpers. Text always goes in as text nodes (never parsed as HTML), URLs only when they are http(s).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = String(value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "href" || name === "src") el.setAttribute(name, safeUrl(value));
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  return append(clear(el), children);
}

// Same-origin paths and fragments, http(s) and blob: URLs pass; anything else (javascript:, data:) does not.
export function safeUrl(value) {
  const s = String(value);
  if (s.startsWith("#") || (s.startsWith("/") && !s.startsWith("//"))) return s;
  try {
    const url = new URL(s, window.location.href);
    if (["http:", "https:", "blob:"].includes(url.protocol)) return url.href;
  } catch (_) {
    // fall through: not a URL
  }
  return "about:blank";
}

export function externalLink(url, text, cls) {
  return h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: cls, text });
}

// A segmented progress bar: done, failed, skipped/cancelled, out of total.
export function progressBar(counts, { large = false } = {}) {
  const total = counts.total || 0;
  const pct = (n) => (total ? Math.min(100, (100 * n) / total) : 0);
  const finished = counts.done + counts.failed + counts.skipped + counts.cancelled;
  const bar = h("div", {
    class: large ? "bar bar-large" : "bar",
    role: "progressbar",
    "aria-valuemin": 0,
    "aria-valuemax": total,
    "aria-valuenow": finished,
    "aria-label": `${finished} of ${total} items finished`,
  });
  for (const [cls, n] of [["done", counts.done], ["failed", counts.failed],
    ["other", counts.skipped + counts.cancelled]]) {
    if (!n) continue;
    const seg = h("span", { class: `seg seg-${cls}` });
    seg.style.width = `${pct(n)}%`;
    bar.append(seg);
  }
  return bar;
}

export function statePill(state) {
  return h("span", { class: `pill pill-${state}`, text: state });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtTime(epoch) {
  if (!epoch) return "—";
  const d = new Date(epoch * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

// Items per second as [number, unit], per minute when slow.
export function fmtRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return ["—", ""];
  if (perSecond >= 1 || perSecond === 0) return [perSecond.toFixed(1), "/s"];
  return [(perSecond * 60).toFixed(1), "/min"];
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// Polls fn every `ms` while the tab is visible; stop() ends it. fn's errors are its own to show.
export function poller(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) await fn();
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
