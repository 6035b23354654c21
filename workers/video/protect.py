"""Face protection for video segments: the photo path's blend (workers.style.faces), steady over time.

Faces are detected with the photo path's detector (`find_faces`: dlib HOG at the same size and score) on
*key frames*: the first frame of every shot and then one frame every `period_s` on a grid of the video's own
clock (so two segments that overlap pick the same key frames). Between key frames each face's box is
interpolated, so the protected ellipse glides with the face instead of jumping with the detector's 8-px
window steps. Detections of consecutive key frames are linked into tracks by their overlap with where each
track's face is heading (a track may miss one key frame and go on); where a track starts or ends, its weight
fades in or out over one key-frame interval instead of popping. Nothing is carried across a scene cut.

The blend itself is applied after the temporal filter, to the filtered frame, with the *input* frame: the
input is steady, the filtered output is steady, and a mask that moves smoothly keeps their mix steady too.
(Blending before the filter would let the filter average the photo along the flow and soften the face.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from workers.faces.types import iou
from workers.style.faces import Box, find_faces, protect_faces

DETECT_EVERY_S = 0.2  # HOG costs about 25 ms a frame here: every 5th frame at 25 frames/s
LINK_IOU = 0.2  # detections of consecutive key frames overlapping this much are the same face
MAX_MISSED = 1  # a track goes on through this many key frames where the detector missed it

Detector = Callable[[Image.Image], list[Box]]


@dataclass
class _Track:
    points: list[tuple[int, Box]] = field(default_factory=list)  # (frame, box) at key frames
    shot: int = 0


def _lerp(a: Box, b: Box, t: float) -> Box:
    return (
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
        a[3] + (b[3] - a[3]) * t,
    )


def _predict(tr: _Track, t: int) -> Box:
    """Where the track's face is at frame `t`, moving on as it moved between its last two key frames."""
    (k1, b1) = tr.points[-1]
    if len(tr.points) < 2:
        return b1
    k0, b0 = tr.points[-2]
    return _lerp(b0, b1, (t - k0) / (k1 - k0))


class FaceKeyframes:
    """Feed every frame of a window in order; then `at(t)` gives the faces (box, weight) of frame t."""

    def __init__(self, period_s: float = DETECT_EVERY_S, detect: Detector = find_faces) -> None:
        self.period_s = period_s
        self.detect = detect
        self.keys: list[int] = []  # frames detected on
        self.key_shot: list[int] = []
        self.shots: list[int] = []  # shot of every frame fed
        self.tracks: list[_Track] = []
        self._slot: int | None = None

    def feed(self, rgb: np.ndarray, seconds: float, new_shot: bool) -> bool:
        """The next frame (upright RGB), its time in the video and whether it starts a shot; True when it was
        a key frame (detected on)."""
        t = len(self.shots)
        shot = (self.shots[-1] + 1 if new_shot else self.shots[-1]) if self.shots else 0
        self.shots.append(shot)
        slot = math.floor(seconds / self.period_s + 1e-6) if self.period_s > 0 else t
        key = new_shot or not self.keys or slot != self._slot
        self._slot = slot
        if not key:
            return False
        self._link(t, shot, self.detect(Image.fromarray(rgb)))
        self.keys.append(t)
        self.key_shot.append(shot)
        return True

    def _link(self, t: int, shot: int, boxes: list[Box]) -> None:
        """Continue the shot's recent tracks with the detections of key frame `t` (greedy by overlap)."""
        recent = self.keys[-(MAX_MISSED + 1) :]
        live = [tr for tr in self.tracks if tr.shot == shot and tr.points[-1][0] in recent]
        pairs = sorted(
            ((iou(_predict(tr, t), b), i, j) for i, tr in enumerate(live) for j, b in enumerate(boxes)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_b: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < LINK_IOU or i in used_t or j in used_b:
                continue
            used_t.add(i)
            used_b.add(j)
            live[i].points.append((t, boxes[j]))
        for j, b in enumerate(boxes):
            if j not in used_b:
                self.tracks.append(_Track([(t, b)], shot))

    def _key_after(self, t: int, shot: int) -> int | None:
        return next((k for k, s in zip(self.keys, self.key_shot, strict=True) if k > t and s == shot), None)

    def _key_before(self, t: int, shot: int) -> int | None:
        return next(
            (k for k, s in zip(reversed(self.keys), reversed(self.key_shot), strict=True) if k < t and s == shot), None
        )

    def at(self, t: int) -> tuple[list[Box], list[float]]:
        """Boxes and weights (0-1) of the faces in frame `t`."""
        boxes: list[Box] = []
        weights: list[float] = []
        shot = self.shots[t]
        for tr in self.tracks:
            if tr.shot != shot:
                continue
            face = self._track_at(tr, t)
            if face is not None and face[1] > 0:
                boxes.append(face[0])
                weights.append(face[1])
        return boxes, weights

    def weight(self, tr: _Track, t: int) -> float:
        """How much of its protection track `tr` gets in frame `t` (0: none)."""
        if tr.shot != self.shots[t]:
            return 0.0
        face = self._track_at(tr, t)
        return face[1] if face is not None else 0.0

    def _track_at(self, tr: _Track, t: int) -> tuple[Box, float] | None:
        first, last = tr.points[0], tr.points[-1]
        if first[0] <= t <= last[0]:
            for (k0, b0), (k1, b1) in zip(tr.points, tr.points[1:], strict=False):
                if k0 <= t <= k1:
                    return _lerp(b0, b1, (t - k0) / (k1 - k0)), 1.0
            return first[1], 1.0  # one point
        if t < first[0]:  # fade in from the key frame before (none: the shot starts with the face)
            before = self._key_before(first[0], tr.shot)
            if before is None or t < before:
                return None
            return first[1], (t - before) / (first[0] - before)
        after = self._key_after(last[0], tr.shot)  # fade out until the next key frame (none: held to the end)
        if after is None:
            return last[1], 1.0
        if t >= after:
            return None
        return last[1], (after - t) / (after - last[0])


def protect_frame(
    stylized: np.ndarray, photo: np.ndarray, faces: tuple[list[Box], list[float]], amount: float
) -> np.ndarray:
    """`stylized` (RGB uint8) with `amount` of `photo` back inside each face, as `protect_faces` does for photos."""
    boxes, weights = faces
    if amount <= 0 or not boxes:
        return stylized
    out = protect_faces(Image.fromarray(stylized), Image.fromarray(photo), boxes, amount, weights)
    return np.asarray(out)
