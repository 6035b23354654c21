// Videos of a style job: each stylized video plays beside its original, the two players kept in step.
import { externalLink, h } from "./dom.js";

// A segment item of a video (its input is the segment's spec): the video is shown whole, in the Videos
// section, never as pictures; its first item's outputs are the joined videos.
export const isVideoPart = (item) => Boolean(item.input && /\/videos\/\d+\/segment-\d+\.json$/.test(item.input.key));

function player(url, caption, cls, download = true) {
  const video = h("video", { src: url, controls: true, preload: "metadata", playsinline: true, class: cls });
  return [video, h("figure", { class: cls }, video,
    h("figcaption", {}, caption, download ? [" · ", externalLink(url, "download")] : null))];
}

// Play, pause and seek one player and the others follow (an event we caused ourselves is not echoed back).
function inStep(players) {
  let leading = null;
  const follow = (source, act) => {
    if (leading && leading !== source) return;
    leading = source;
    for (const other of players) if (other !== source) act(other);
    setTimeout(() => { leading = null; }, 0);
  };
  for (const v of players) {
    v.addEventListener("play", () => follow(v, (o) => { o.currentTime = v.currentTime; o.play().catch(() => {}); }));
    v.addEventListener("pause", () => follow(v, (o) => o.pause()));
    v.addEventListener("seeked", () => follow(v, (o) => {
      if (Math.abs(o.currentTime - v.currentTime) > 0.05) o.currentTime = v.currentTime;
    }));
  }
}

// `links`: the results page's entry for this video (presigned URLs of the original and the outputs).
function videoCard(video, links) {
  const head = h("header", {}, h("span", { class: "mono", text: video.name }),
    h("span", { class: "muted small", text: `${video.frames} frames · ${video.segments} segment${video.segments === 1 ? "" : "s"}`
      + (video.audio ? ` · audio ${video.audio} kept` : " · no audio") }));
  if (video.error) return h("article", { class: "pair video-pair" }, head, h("p", { class: "bad", text: video.error }));
  const players = [];
  const figures = [];
  const urls = new Map((links ? links.outputs : []).map((o) => [o.key, o.url]));
  const original = links && links.source ? links.source.url : null;
  if (original) {
    const [v, fig] = player(original, "original", "original", false); // the user's own file: nothing to download
    players.push(v);
    figures.push(fig);
  }
  for (const out of video.outputs) {
    const url = urls.get(out.key);
    if (!url) continue;
    const [v, fig] = player(url, out.variant, "output");
    v.muted = true; // one soundtrack: the original's
    players.push(v);
    figures.push(fig);
  }
  inStep(players);
  return h("article", { class: "pair video-pair", dataset: { video: video.video } }, head, h("div", { class: "pair-row" }, figures));
}

export function videoSection(job, page) {
  const videos = (job.summary && job.summary.videos) || [];
  if (!videos.length) return null;
  const links = new Map((page.videos || []).map((v) => [v.video, v]));
  return h("section", { class: "panel", id: "videos" }, h("h2", { text: "Videos" }),
    h("div", { class: "gallery" }, videos.map((v) => videoCard(v, links.get(v.video)))));
}

// A person's videos: each with its best frame and the times they are on screen; a time opens the video there.
const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

function personVideoCard(v) {
  const player = h("video", { src: v.url, controls: true, preload: "metadata", playsinline: true });
  const times = v.ranges.map(([start, end], i) => {
    const jump = h("button", { type: "button", class: "small", text: `${clock(start)}–${clock(end)}` });
    jump.addEventListener("click", () => { player.currentTime = start; player.play().catch(() => {}); });
    return [i ? " " : "", jump];
  });
  return h("article", { class: "pair video-pair", dataset: { job: v.job, item: v.item } },
    h("header", {}, h("span", { class: "mono", text: v.name }),
      v.thumbnail_url ? h("img", { class: "chip", src: v.thumbnail_url, alt: "their face in it", loading: "lazy" }) : null),
    player, h("p", { class: "small" }, "On screen: ", times));
}

export function personVideos(videos) {
  if (!videos || !videos.length) return null;
  return h("section", { class: "panel", id: "person-videos" },
    h("h2", { text: `Videos (${videos.length})` }), h("div", { class: "gallery" }, videos.map(personVideoCard)));
}
