"""Stylize one segment of a video: decode, find cuts, stylize every frame, filter over time, encode.

No storage and no Celery: the caller opens the video, gives the engine and the job's variants, and
gets one video-only file per variant (the join adds the audio). The segment's window is decoded
with `context_frames` on each side so its filter starts warm and ends with look-ahead, which is what
makes segments rendered apart join without a visible seam.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from workers.contract import VideoStyleParams
from workers.style.engine import StyleEngine, StyleVariant, _pixel_mix
from workers.video.flow import FlowEstimator
from workers.video.frames import SegmentWriter, even_size, iter_window
from workers.video.plan import SegmentSpec
from workers.video.protect import DETECT_EVERY_S, FaceKeyframes, protect_frame
from workers.video.scenes import CutDetector
from workers.video.temporal import MotionAnalyser, Spill, auto_strength, flicker, smooth

Progress = Callable[[int], None]  # frames of the segment done so far; may raise to stop the work


@dataclass
class SegmentResult:
    frames: int
    first_pts: int | None
    last_pts: int | None
    cuts: list[int] = field(default_factory=list)  # pts of the frames that start a new shot
    strengths: dict[str, float] = field(default_factory=dict)
    faces: int = 0  # faces protected in the segment's own frames (one per face track)
    face_frames: int = 0  # own frames with a protected face
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage


@dataclass
class _Window:
    pts: list[int] = field(default_factory=list)
    own: list[bool] = field(default_factory=list)
    shot: list[int] = field(default_factory=list)


def output_size(info_size: tuple[int, int], long_side: int | None) -> tuple[int, int]:
    """The stored (unrotated) size of the output frames for the job's `size` (long side)."""
    return even_size(info_size[0], info_size[1], long_side)


def render_segment(
    container: Any,
    spec: SegmentSpec,
    variants: Sequence[StyleVariant],
    engine: StyleEngine,
    video: VideoStyleParams,
    temporal: Sequence[float | Literal["auto"]],
    outputs: Sequence[Path],
    *,
    size: int | None = None,
    threads: int = 1,
    progress: Progress | None = None,
    spill_budget: int = 512 << 20,
    protect: Sequence[float] = (),
) -> SegmentResult:
    """Render `spec`'s frames in every variant into `outputs` (one file per variant, video only).

    `protect` is each variant's face protection (the photo path's `protect_faces` amount; empty: none): faces
    are found on key frames (workers.video.protect) and blended back after the temporal filter."""
    import cv2

    cv2.setNumThreads(threads)  # one process per core: OpenCV's own pool would fight the other workers
    info = spec.info
    stored_size = output_size((info.width, info.height), size)
    up_size = (stored_size[1], stored_size[0]) if info.rotation % 180 else stored_size
    clock: dict[str, float] = {
        "decode": 0.0,
        "cuts+flow": 0.0,
        "faces": 0.0,
        "stylize": 0.0,
        "filter": 0.0,
        "encode": 0.0,
    }
    motion = MotionAnalyser(up_size, FlowEstimator())
    cuts = CutDetector()
    window = _Window()
    amounts = list(protect) or [0.0] * len(variants)
    faces = FaceKeyframes(_detect_period(spec)) if any(a > 0 for a in amounts) else None
    share = spill_budget // (2 * (len(variants) + (faces is not None)))
    styled = [Spill(budget=share) for _ in variants]
    inputs = Spill(budget=share)  # the input frames, for the faces' blend after the filter
    shot_variants = [_ShotVariant(replace(v, size=None)) for v in variants]
    done = 0
    t0 = time.perf_counter()
    try:
        frames = iter_window(
            container,
            info,
            start_pts=spec.start_pts,
            end_pts=spec.end_pts,
            before=spec.context_frames,
            after=spec.context_frames,
            size=stored_size,
            threads=threads,
        )
        for frame in frames:
            t1 = time.perf_counter()
            clock["decode"] += t1 - t0
            cut = cuts.feed(frame.rgb)
            motion.add(frame.rgb, cut)
            new_shot = cut or not window.pts
            window.shot.append((window.shot[-1] + 1 if cut else window.shot[-1]) if window.shot else 0)
            window.pts.append(frame.pts)
            window.own.append(frame.own)
            t2 = time.perf_counter()
            clock["cuts+flow"] += t2 - t1
            if faces is not None:
                faces.feed(frame.rgb, info.seconds_at(frame.pts), new_shot)
                inputs.append(frame.rgb)
                t3 = time.perf_counter()
                clock["faces"] += t3 - t2
                t2 = t3
            if new_shot:
                shot_variants = [_for_shot(engine, v, frame.rgb) for v in variants]
            image = Image.fromarray(frame.rgb)
            for shot, store in zip(shot_variants, styled, strict=True):
                store.append(_stylize(engine, image, shot))
            t0 = time.perf_counter()
            clock["stylize"] += t0 - t2
            if frame.own:
                done += 1
                if progress is not None and done % 8 == 0:
                    progress(done)
        if not any(window.own):
            raise ValueError("no frame of the video falls in this segment")
        result = SegmentResult(
            frames=done,
            first_pts=_first(window),
            last_pts=_last(window),
            cuts=[
                p
                for p, s0, s1 in zip(window.pts[1:], window.shot[:-1], window.shot[1:], strict=True)
                if s1 != s0 and spec.contains(p)
            ],
        )
        protected = _Protection(faces, inputs) if faces is not None else None
        if faces is not None:
            own = [t for t, o in enumerate(window.own) if o]
            result.faces = len({id(tr) for tr in faces.tracks if any(faces.weight(tr, t) > 0 for t in own)})
            result.face_frames = sum(1 for t in own if faces.at(t)[0])
        for variant, store, strength, path, amount in zip(variants, styled, temporal, outputs, amounts, strict=True):
            a = auto_strength(flicker(store, motion.motion)) if strength == "auto" else float(strength)
            result.strengths[variant.slug] = round(a, 3)
            guard = protected if protected is not None and amount > 0 else None
            _encode(store, motion, a, window, path, info, up_size, video, threads, clock, guard, amount)
        result.seconds = {k: round(v, 3) for k, v in clock.items()}
        if progress is not None:
            progress(done)
        return result
    finally:
        for store in [*styled, inputs]:
            store.close()


def _detect_period(spec: SegmentSpec) -> float:
    """Seconds between key frames: `DETECT_EVERY_S`, or less so a segment's context (decoded on both sides)
    always holds a key frame, which is what makes two segments agree on the boxes at their seam."""
    if spec.context_frames <= 0 or spec.info.fps <= 0:
        return DETECT_EVERY_S
    return min(DETECT_EVERY_S, spec.context_frames / spec.info.fps)


@dataclass
class _Protection:
    faces: FaceKeyframes
    inputs: Spill


def _first(window: _Window) -> int | None:
    return next((p for p, o in zip(window.pts, window.own, strict=True) if o), None)


def _last(window: _Window) -> int | None:
    return next((p for p, o in zip(reversed(window.pts), reversed(window.own), strict=True) if o), None)


@dataclass(frozen=True)
class _ShotVariant:
    """A variant as rendered for one shot, and how much of it to keep over the frame (the photo path's
    pixel fade for arbitrary styles below half strength)."""

    variant: StyleVariant
    alpha: float = 1.0


def _for_shot(engine: StyleEngine, variant: StyleVariant, first_frame: np.ndarray) -> _ShotVariant:
    """An arbitrary style below full strength moves toward the shot's own style vector, computed once on
    the shot's first frame (the photo path computes it for every photo; per frame, it would flicker)."""
    variant = replace(variant, size=None)
    if variant.method != "arbitrary" or variant.strength >= 1.0 or variant.style_vector is None:
        return _ShotVariant(variant)
    own = engine.style_vector(Image.fromarray(first_frame))
    style = np.asarray(variant.style_vector, dtype=np.float32).reshape(-1)
    mixed = variant.strength * style + (1.0 - variant.strength) * own
    return _ShotVariant(replace(variant, style_vector=mixed, strength=1.0), _pixel_mix(variant))


def _stylize(engine: StyleEngine, image: Image.Image, shot: _ShotVariant) -> np.ndarray:
    out = engine.render_batch([image], shot.variant)[0].convert("RGB")
    if shot.alpha < 1.0:
        out = Image.blend(image.convert("RGB"), out, shot.alpha)
    return np.asarray(out)


def _encode(
    store: Spill,
    motion: MotionAnalyser,
    strength: float,
    window: _Window,
    path: Path,
    info: Any,
    size: tuple[int, int],
    video: VideoStyleParams,
    threads: int,
    clock: dict[str, float],
    protection: _Protection | None = None,
    amount: float = 0.0,
) -> None:
    writer = SegmentWriter(
        path, info, _stored(size, info.rotation), codec=video.codec, crf=video.crf, preset=video.preset, threads=threads
    )
    try:
        t0 = time.perf_counter()
        filtered = smooth([store[i] for i in range(len(store))], motion.motion, strength)
        for index, (out, pts, own) in enumerate(zip(filtered, window.pts, window.own, strict=True)):
            t1 = time.perf_counter()
            clock["filter"] += t1 - t0
            if own and protection is not None:
                out = protect_frame(out, protection.inputs[index], protection.faces.at(index), amount)
                t2 = time.perf_counter()
                clock["faces"] += t2 - t1
                t1 = t2
            if own:
                writer.write(out, pts)
            t0 = time.perf_counter()
            clock["encode"] += t0 - t1
    finally:
        writer.close()


def _stored(up_size: tuple[int, int], rotation: int) -> tuple[int, int]:
    return (up_size[1], up_size[0]) if rotation % 180 else up_size
