"""Temporal consistency for per-frame stylized video: a flow-guided, two-sided recursive filter.

A feed-forward style network sees each frame alone, so strokes and tones that should move with the
scene flicker from frame to frame. We average every output pixel with the outputs of the same scene
point in the neighbouring frames, found by optical flow on the *input* frames, with weights that fall
as a^|k| with the distance k in frames. Two recursions do that in O(1) warps per frame, however long
the support: a forward pass  A_t = S_t + a c_t W(A_{t-1})  and a backward pass  B_t = S_t + a c'_t W'(B_{t+1}),
with the same recursions on a weight plane, and out_t = (A_t + B_t - S_t) / (wA_t + wB_t - 1).

`c_t` is a per-pixel confidence that frame t-1's point really is frame t's: zero where the
forward-backward check finds an occlusion or a motion boundary (Sundaram et al. 2010), falling
with the photometric difference of the input frames along the flow, and zero across a scene cut.
Where it is zero the filter restarts from the per-frame output, so nothing is smeared across an
occlusion or a cut. `a` is the strength, per style (see `auto_strength`).

Memory: a window's frames, flows and backward sums are kept in a `Spill` (RAM up to a budget, then
memory-mapped temporary files), so a segment of any length at any size fits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.video.flow import FlowEstimator, consistent, resize_flow, warp

PHOTO_SIGMA = 0.15  # photometric difference (mean over RGB, in [0, 1]) at which the confidence is 1/e
MAX_STRENGTH = 0.95
MAX_AUTO = 0.8  # "auto" stops at about 9 frames averaged: beyond, strokes soften more than flicker falls


class Spill(Sequence[np.ndarray]):
    """An append-only list of arrays: in RAM up to `budget` bytes, then in memory-mapped temporary files."""

    def __init__(self, budget: int = 256 << 20, folder: str | None = None) -> None:
        self.budget = budget
        self.used = 0
        self._items: list[np.ndarray] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._folder = folder

    def append(self, array: np.ndarray) -> None:
        if self.used + array.nbytes <= self.budget:
            self._items.append(array)
            self.used += array.nbytes
            return
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nightshift-video-", dir=self._folder)
        path = Path(self._tmp.name) / f"{len(self._items)}.npy"
        mapped = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
        mapped[...] = array
        self._items.append(mapped)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        self._items.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@dataclass
class Motion:
    """What the filter needs from the input frames of a window, shared by every style rendered from them.

    `back[t]` is the flow t -> t-1 and `conf_prev[t]` the confidence of frame t-1's point at frame t;
    `fwd[t]` is the flow t -> t+1 and `conf_next[t]` its confidence (None across a cut or at the ends).
    Flows (float16) and confidences (float32) are kept at the flow estimator's resolution and resized when
    used, so a window of 1080p frames holds about as much motion data as one of 384 px frames.
    """

    size: tuple[int, int]  # (width, height) of the frames
    back: list[np.ndarray | None] = field(default_factory=list)
    fwd: list[np.ndarray | None] = field(default_factory=list)
    conf_prev: list[np.ndarray | None] = field(default_factory=list)
    conf_next: list[np.ndarray | None] = field(default_factory=list)
    input_flicker: list[float] = field(default_factory=list)  # per pair: the input's own warping error

    def __len__(self) -> int:
        return len(self.back)


def _photometric(a: np.ndarray, b_warped: np.ndarray) -> np.ndarray:
    """exp(-(d / sigma)^2) of the mean absolute RGB difference d in [0, 1]."""
    import cv2

    diff = cv2.absdiff(a, b_warped).astype(np.float32)
    d = (diff[..., 0] + diff[..., 1] + diff[..., 2]) * (1.0 / (3 * 255.0 * PHOTO_SIGMA))
    return np.exp(-(d * d))


class MotionAnalyser:
    """Builds `Motion` frame by frame as frames are decoded (so frames need not stay in memory)."""

    def __init__(self, size: tuple[int, int], flow: FlowEstimator | None = None) -> None:
        self.size = size
        self.flow = flow or FlowEstimator()
        self.motion = Motion(size)
        self._prev: np.ndarray | None = None

    def add(self, rgb: np.ndarray, cut_before: bool) -> None:
        """The next frame (upright RGB uint8 at `size`); `cut_before` when a new shot starts with it."""
        m = self.motion
        for column in (m.back, m.fwd, m.conf_prev, m.conf_next):
            column.append(None)
        t = len(m.back) - 1
        small = self.flow.shrink(rgb)
        prev, self._prev = self._prev, small
        if prev is None or cut_before:
            return
        # everything but the final confidences at the flow's resolution: the checks cost as much as the flow
        back, fwd = self.flow.raw(small, prev), self.flow.raw(prev, small)
        ok_t, ok_prev = consistent(back, fwd, False), consistent(fwd, back, False)
        prev_at_t, cur_at_prev = warp(prev, back), warp(small, fwd)
        conf_t = ok_t * _photometric(small, prev_at_t)
        conf_p = ok_prev * _photometric(prev, cur_at_prev)
        m.back[t], m.fwd[t - 1] = back.astype(np.float16), fwd.astype(np.float16)
        m.conf_prev[t] = conf_t.astype(np.float32)
        m.conf_next[t - 1] = conf_p.astype(np.float32)
        m.input_flicker.append(_masked_sq_error(small, prev_at_t, ok_t))


def _masked_sq_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray, step: int = 2) -> float:
    """Squared RGB error in [0, 1] units, summed over channels and averaged over `mask`, on every
    `step`-th pixel (an estimate: it only sets the auto strength)."""
    m = mask[::step, ::step]
    n = int(m.sum())
    if not n:
        return 0.0
    d = (a[::step, ::step][m].astype(np.float32) - b[::step, ::step][m].astype(np.float32)) / 255.0
    return float((d * d).sum() / n)


def _upsample(conf: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A confidence plane at `size` = (width, height)."""
    import cv2

    if conf.shape[::-1] != size:
        return np.asarray(cv2.resize(conf, size, interpolation=cv2.INTER_LINEAR))
    return conf


def flicker(stylized: Sequence[np.ndarray], motion: Motion, limit: int = 12) -> float:
    """Warping error of per-frame outputs along the window's own flow (first `limit` pairs), over the
    input's: how much more a style flickers than the video it was given (1: as steady as the input)."""
    out_err: list[float] = []
    in_err: list[float] = []
    for t in range(1, len(stylized)):
        conf, back = motion.conf_prev[t], motion.back[t]
        if conf is None or back is None:
            continue
        # the consistency check's pixels (the photometric factor is never that small)
        mask = _upsample(conf, motion.size) > 0.01
        prev = warp(stylized[t - 1], resize_flow(back.astype(np.float32), motion.size))
        out_err.append(_masked_sq_error(np.asarray(stylized[t]), prev, mask))
        in_err.append(motion.input_flicker[t - 1] if t - 1 < len(motion.input_flicker) else 0.0)
        if len(out_err) >= limit:
            break
    steady = [i for i in in_err if i > 0]
    if not out_err or not steady:
        return 1.0
    return float(np.mean(out_err) / max(float(np.mean(steady)), 1e-5))


def auto_strength(ratio: float) -> float:
    """The filter strength for a style that flickers `ratio` times as much as its input.

    The two-sided filter averages about (1 + a) / (1 - a) frames along each scene point; averaging N
    frames divides uncorrelated flicker energy by about N, so N = ratio brings the output's flicker down
    to the input's own level, and no further (which would blur what the style draws).
    """
    n = max(1.0, ratio)
    return float(min(MAX_AUTO, (n - 1.0) / (n + 1.0)))


def smooth(
    stylized: Sequence[np.ndarray], motion: Motion, strength: float, spill: Spill | None = None
) -> Iterator[np.ndarray]:
    """The filtered frames (uint8 RGB), in order, for per-frame outputs `stylized` of the window `motion`
    describes. The backward sums are computed first and kept in `spill`; the forward pass then yields
    each output as soon as it is known, so a caller can encode while the filter runs."""
    n = len(stylized)
    if n != len(motion):
        raise ValueError(f"{n} stylized frames for a window of {len(motion)}")
    a = float(np.clip(strength, 0.0, MAX_STRENGTH))
    if a <= 0.0 or n < 2:
        for s in stylized:
            yield np.asarray(s)
        return
    own = spill is None
    backward = spill if spill is not None else Spill()
    acc: np.ndarray | None = None
    for t in range(n - 1, -1, -1):
        acc = _step(stylized[t], acc, motion.fwd[t], motion.conf_next[t], a, motion.size)
        backward.append(acc.astype(np.float16))
    acc = None
    try:
        for t in range(n):
            acc = _step(stylized[t], acc, motion.back[t], motion.conf_prev[t], a, motion.size)
            s = np.asarray(stylized[t], dtype=np.float32) / 255.0
            total = backward[n - 1 - t].astype(np.float32) + acc
            value = (total[..., :3] - s) / (total[..., 3:] - 1.0)
            yield np.clip(value * 255.0 + 0.5, 0, 255).astype(np.uint8)
    finally:
        if own:
            backward.close()


def _step(
    frame: np.ndarray,
    acc: np.ndarray | None,
    flow: np.ndarray | None,
    conf: np.ndarray | None,
    a: float,
    size: tuple[int, int],
) -> np.ndarray:
    """One recursion step: the frame (weight 1) plus a x confidence x the warped running sum (4 channels:
    the weighted RGB sum and the total weight)."""
    s = np.asarray(frame, dtype=np.float32) / 255.0
    fresh = np.concatenate([s, np.ones(s.shape[:2] + (1,), np.float32)], axis=-1)
    if acc is None or flow is None or conf is None:
        return fresh
    carried = warp(acc, resize_flow(flow.astype(np.float32), size))
    return fresh + (a * _upsample(conf, size))[..., None] * carried
