"""Faces in a video: sampled detections linked into tracks, the best crops of each track, who is on screen.

Frames are sampled (a rate, plus the first frame of every shot) and their faces detected. Within a
shot, a detection continues the track whose last box it overlaps most (IoU, one-to-one by the
Hungarian method); a track ends at a cut or after `max_gap_s` without a match. Each track keeps only
its best few crops, by a quality that favours confident, large, sharp, frontal faces, and only those
are embedded. Tracks of one person (seen again after a cut, or lost and found) are then joined by
embedding distance, never two tracks seen in the same frame (workers.people.cluster, cannot-link).

Pure logic: no storage, no models (the caller detects and embeds).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from workers.faces.types import Face

CROP_MARGIN = 0.6  # of the box side, kept around a face so alignment and thumbnails have context


@dataclass(order=True)
class Crop:
    """A candidate for embedding: the face cut out of its frame with a margin (the face in crop coordinates)."""

    quality: float
    t: float = field(compare=False)
    frame: int = field(compare=False)
    image: np.ndarray = field(compare=False, repr=False)
    face: Face = field(compare=False)


@dataclass
class Tracklet:
    """Detections of one face within one shot, linked by box overlap."""

    id: int
    shot: int
    times: list[float] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    best: list[Crop] = field(default_factory=list)  # a min-heap on quality, at most `keep` crops

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        return self.times[-1]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of a face crop at 64 x 64 (Pech-Pacheco et al. 2000), squashed into [0, 1)."""
    import cv2

    small = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
    v = float(cv2.Laplacian(small, cv2.CV_64F).var())
    return v / (v + 150.0)


def frontalness(face: Face) -> float:
    """1 for a face looking at the camera, toward 0 as it turns or tilts (from the five landmarks): the nose
    should sit midway between the eyes, and the eyes on a level line."""
    if face.landmarks is None:
        return 0.5
    p = np.asarray(face.landmarks, dtype=np.float64)
    left, right, nose = p[0], p[1], p[2]
    eye_dist = float(np.linalg.norm(right - left))
    if eye_dist < 1e-6:
        return 0.0
    yaw = abs(float(nose[0] - (left[0] + right[0]) / 2)) / eye_dist
    roll = abs(float(np.arctan2(right[1] - left[1], right[0] - left[0])))
    return float(max(0.0, 1.0 - 2.0 * yaw) * max(0.0, 1.0 - roll / (np.pi / 4)))


def quality(face: Face, gray_crop: np.ndarray, full_size: float = 96.0) -> float:
    """How good a crop is for recognising its face: score x size x sharpness x frontalness (each in [0, 1])."""
    size = min(1.0, min(face.width, face.height) / full_size)
    return float(max(0.0, min(1.0, face.score)) * size * sharpness(gray_crop) * (0.2 + 0.8 * frontalness(face)))


def cut_crop(rgb: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """The face with a margin, and the face moved into the crop's coordinates."""
    h, w = rgb.shape[:2]
    side = max(face.width, face.height)
    x1 = int(max(0, np.floor(face.box[0] - CROP_MARGIN * side)))
    y1 = int(max(0, np.floor(face.box[1] - CROP_MARGIN * side)))
    x2 = int(min(w, np.ceil(face.box[2] + CROP_MARGIN * side)))
    y2 = int(min(h, np.ceil(face.box[3] + CROP_MARGIN * side)))
    moved = Face(
        box=(face.box[0] - x1, face.box[1] - y1, face.box[2] - x1, face.box[3] - y1),
        score=face.score,
        landmarks=None
        if face.landmarks is None
        else (np.asarray(face.landmarks) - np.array([x1, y1], np.float32)).astype(np.float32),
        rotation=face.rotation,
    )
    return np.ascontiguousarray(rgb[y1:y2, x1:x2]), moved


class Tracker:
    """Links detections of consecutive samples into tracklets (one shot at a time)."""

    def __init__(self, *, link_iou: float = 0.3, max_gap_s: float = 1.5, keep: int = 3) -> None:
        self.link_iou, self.max_gap_s, self.keep = link_iou, max_gap_s, keep
        self.active: list[Tracklet] = []
        self.done: list[Tracklet] = []
        self.shot = 0
        self._ids = itertools.count()
        self.samples: list[tuple[float, list[int]]] = []  # per sample: its time and the tracklets seen in it

    def cut(self) -> None:
        """A new shot starts: no track continues across it."""
        self.done.extend(self.active)
        self.active = []
        self.shot += 1

    def feed(self, t: float, frame: int, rgb: np.ndarray, faces: Sequence[Face]) -> list[int]:
        """One sampled frame (upright RGB) and its detections; returns the tracklet id of each face."""
        import cv2
        from scipy.optimize import linear_sum_assignment

        stale = [tr for tr in self.active if t - tr.end > self.max_gap_s]
        self.done.extend(stale)
        self.active = [tr for tr in self.active if tr not in stale]
        assigned: list[Tracklet | None] = [None] * len(faces)
        if self.active and faces:
            overlap = np.array([[iou(tr.boxes[-1], f.box) for tr in self.active] for f in faces])
            rows, cols = linear_sum_assignment(-overlap)
            for r, c in zip(rows, cols, strict=True):
                if overlap[r, c] >= self.link_iou:
                    assigned[r] = self.active[c]
        ids = []
        for face, tracklet in zip(faces, assigned, strict=True):
            if tracklet is None:
                tracklet = Tracklet(next(self._ids), self.shot)
                self.active.append(tracklet)
            tracklet.times.append(t)
            tracklet.boxes.append(face.box)
            tracklet.scores.append(face.score)
            crop, moved = cut_crop(rgb, face)
            if crop.size:
                candidate = Crop(quality(moved, cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)), t, frame, crop, moved)
                if len(tracklet.best) < self.keep:
                    heapq.heappush(tracklet.best, candidate)
                elif candidate.quality > tracklet.best[0].quality:
                    heapq.heapreplace(tracklet.best, candidate)
            ids.append(tracklet.id)
        self.samples.append((t, ids))
        return ids

    def finish(self) -> list[Tracklet]:
        self.cut()
        return sorted(self.done, key=lambda tr: tr.id)


@dataclass
class Track:
    """One person's appearances in a video: tracklets joined by embedding distance."""

    tracklets: list[Tracklet]
    embedding: np.ndarray
    embedded: int  # crops embedded for it
    best: Crop

    @property
    def start(self) -> float:
        return min(tr.start for tr in self.tracklets)

    @property
    def end(self) -> float:
        return max(tr.end for tr in self.tracklets)

    @property
    def detections(self) -> int:
        return sum(len(tr.times) for tr in self.tracklets)

    def ranges(self, pad: float = 0.0, limit: float | None = None) -> list[tuple[float, float]]:
        """When it is on screen: its tracklets' spans, `pad` seconds wider, overlapping spans merged."""
        spans = sorted(
            (max(0.0, tr.start - pad), tr.end + pad if limit is None else min(limit, tr.end + pad))
            for tr in self.tracklets
        )
        merged: list[tuple[float, float]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        return merged


def join_tracklets(
    tracklets: Sequence[Tracklet],
    vectors: Sequence[np.ndarray],
    counts: Sequence[int],
    samples: Sequence[tuple[float, list[int]]],
    threshold: float,
) -> list[Track]:
    """Join tracklets of one person (average linkage under `threshold`); tracklets seen together never join.

    `vectors[i]` is the mean embedding of tracklet i's best crops and `counts[i]` how many were embedded.
    Tracks come in order of first appearance.
    """
    from workers.people.cluster import cluster_faces

    if not tracklets:
        return []
    # a tracklet none of whose crops could be embedded (no landmarks found) stays a track of its own
    known = [i for i, c in enumerate(counts) if c > 0]
    groups = [[i] for i, c in enumerate(counts) if c == 0]
    if known:
        ids = [f"{tracklets[i].id:06d}" for i in known]
        present = set(ids)
        together = {tuple(sorted({f"{t:06d}" for t in seen} & present)) for _, seen in samples}
        cannot = [list(group) for group in together if len(group) > 1]
        clusters = cluster_faces(
            np.stack([vectors[i] for i in known]).astype(np.float32), ids, ids, threshold=threshold, cannot_link=cannot
        )
        index = {f: i for f, i in zip(ids, known, strict=True)}
        groups += [[index[f] for f in cluster.face_ids] for cluster in clusters]
    tracks = []
    for members in groups:
        weights = np.array([counts[i] for i in members], np.float64)
        mean = (np.stack([vectors[i] for i in members]) * weights[:, None]).sum(0) / max(weights.sum(), 1.0)
        crops = [c for i in members for c in tracklets[i].best]
        tracks.append(
            Track(
                [tracklets[i] for i in members],
                mean.astype(np.float32),
                int(weights.sum()),
                max(crops, key=lambda c: c.quality),
            )
        )
    return sorted(tracks, key=lambda tr: (tr.start, tr.tracklets[0].id))


def webvtt(tracks: Sequence[Track], labels: Sequence[str], pad: float, duration: float) -> str:
    """A WebVTT file of who is on screen: one cue per span in which the same people are visible."""
    events: list[tuple[float, int, int]] = []
    for n, track in enumerate(tracks):
        for s, e in track.ranges(pad, duration):
            events += [(s, 1, n), (e, -1, n)]
    events.sort()
    lines = ["WEBVTT", ""]
    visible: dict[int, int] = {}
    last = 0.0
    cue = 1
    for time, kind, n in events:
        if visible and time > last:
            names = ", ".join(labels[i] for i in sorted(visible))
            lines += [str(cue), f"{_stamp(last)} --> {_stamp(time)}", names, ""]
            cue += 1
        visible[n] = visible.get(n, 0) + kind
        if visible[n] <= 0:
            del visible[n]
        last = time
    return "\n".join(lines)


def _stamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
