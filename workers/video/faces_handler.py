"""The `faces` job kind with videos: photos go the photo way; a video becomes tracks of faces.

Per video item (one item per video: its tracks span the whole video), written under the item's prefix:
`tracks.parquet` (a row per track: time ranges, detections, best frame and box, person when attached,
`embedding_row`), `tracks.npy` (float32 embeddings, rows in table order), `tracks.vtt` (WebVTT: who is
on screen) and one best-frame thumbnail per track. Only the best `crops_per_track` crops of each track
are embedded.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from storage import keys
from storage.names import ItemState
from storage.records import Item, Job
from workers import metrics
from workers.contract import VideoFacesParams
from workers.faces.engine import FaceEngine
from workers.faces.handler import FacesHandler
from workers.faces.index import face_thumbnail
from workers.faces.spaces import space_of
from workers.handlers import ItemInput, ItemResult
from workers.video.attach import Appearance, Attachment, TrackVector, attach_tracks, record_appearances
from workers.video.frames import upright
from workers.video.plan import SegmentSpec, VideoInfo
from workers.video.scenes import CutDetector
from workers.video.source import VideoError, open_video
from workers.video.tracks import Crop, Track, Tracker, join_tracklets, webvtt

log = logging.getLogger("nightshift.video.faces")
DETECT_BATCH = 4
TRACK_SCHEMA = pa.schema(
    [
        pa.field("video_key", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("track", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field(
            "ranges", pa.list_(pa.field("element", pa.list_(pa.field("element", pa.float64()), 2))), nullable=False
        ),
        pa.field("detections", pa.int32(), nullable=False),
        pa.field("embedded", pa.int32(), nullable=False),
        pa.field("best_s", pa.float64(), nullable=False),
        pa.field("quality", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("thumbnail", pa.string(), nullable=True),
        pa.field("person_id", pa.string(), nullable=True),
        pa.field("person_name", pa.string(), nullable=True),
        pa.field("model", pa.string(), nullable=False),
        pa.field("embedding_row", pa.int32(), nullable=False),
    ],
    metadata={"nightshift.video.tracks.schema": "1"},
)


@dataclass
class Scan:
    """What one pass over a video found."""

    tracker: Tracker
    frames: int
    sampled: int
    duration: float


def _frames(container: Any, info: VideoInfo) -> Iterator[tuple[int, float, Any]]:
    """(frame number, seconds from the start, PyAV frame) for every frame, in order."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    n = 0
    last = None
    for packet in container.demux(stream):
        for frame in packet.decode():
            pts = frame.pts if frame.pts is not None else (last or 0) + 1
            if last is not None and pts <= last:
                continue
            last = pts
            yield n, info.seconds_at(pts), frame
            n += 1


def scan_video(
    container: Any, info: VideoInfo, engine: FaceEngine, params: VideoFacesParams, progress: Any = None
) -> Scan:
    """Decode every frame (cut detection), detect faces on samples, link them into tracklets."""
    import av

    tracker = Tracker(link_iou=params.link_iou, max_gap_s=params.max_gap_s, keep=params.crops_per_track)
    cuts = CutDetector()
    thumb_w = 96
    thumb_h = max(2, round(thumb_w * info.height / max(1, info.width)))
    batch: list[tuple[int, float, np.ndarray, bool]] = []
    next_sample = 0.0
    frames = sampled = 0
    duration = 0.0

    def flush() -> None:
        found = engine.detect_batch([Image.fromarray(rgb) for _, _, rgb, _ in batch])
        for (n, t, rgb, cut), faces in zip(batch, found, strict=True):
            if cut:
                tracker.cut()
            tracker.feed(t, n, rgb, faces)
        batch.clear()

    try:
        for n, t, frame in _frames(container, info):
            frames, duration = n + 1, t
            cut = cuts.feed(frame.to_ndarray(format="rgb24", width=thumb_w, height=thumb_h)) if n else False
            if cut or t >= next_sample:
                next_sample = (np.floor(t * params.sample_fps + 1e-6) + 1) / params.sample_fps
                batch.append((n, t, upright(frame.to_ndarray(format="rgb24"), info.rotation), cut))
                sampled += 1
                if len(batch) >= DETECT_BATCH:
                    flush()
                    if progress is not None:
                        progress(frames)
    except av.FFmpegError as exc:
        raise VideoError(f"the video breaks off at {duration:.2f} s: {exc} (corrupt or truncated?)") from None
    if batch:
        flush()
    return Scan(tracker, frames, sampled, duration + 1.0 / max(info.fps, 1.0))


def embed_tracklets(engine: FaceEngine, tracklets: list[Any]) -> tuple[list[np.ndarray], list[int], int]:
    """The mean embedding of each tracklet's best crops (only those are embedded), how many crops went into
    each, and how many distinct frames were embedded."""
    crops: list[tuple[int, Crop]] = [(i, c) for i, tr in enumerate(tracklets) for c in tr.best]
    sums: list[np.ndarray | None] = [None] * len(tracklets)
    counts = [0] * len(tracklets)
    for start in range(0, len(crops), 8):
        part = crops[start : start + 8]
        vectors = engine.embed_batch([c.image for _, c in part], [[c.face] for _, c in part])
        for (i, _), v in zip(part, vectors, strict=True):
            if len(v):
                sums[i] = v[0].astype(np.float64) + (sums[i] if sums[i] is not None else 0.0)
                counts[i] += 1
    dim = next((len(x) for x in sums if x is not None), 128)
    means = [
        (x / c).astype(np.float32) if x is not None else np.zeros(dim, np.float32)
        for x, c in zip(sums, counts, strict=True)
    ]
    return means, counts, len({c.frame for _, c in crops})


class FacesMediaHandler(FacesHandler):
    """`faces` for photos and videos alike."""

    def process_video(self, item: ItemInput) -> ItemResult:
        """Track the faces of one whole video, embed each track's best crops and attach tracks to people."""
        spec = SegmentSpec.model_validate_json(item.data)
        params = self.params.video
        started = time.perf_counter()

        def progress(done: int) -> None:
            self.ctx.records.set_progress(self.job.id, item.index, done, max(done, spec.frames_estimate))
            self.check_cancel()

        try:
            with open_video(self.ctx.store, spec.source_key, self.ctx.settings.worker, spec.info.size_bytes) as c:
                with metrics.STAGE.labels(stage="detect").time():
                    scan = scan_video(c, spec.info, self.engine, params, progress)
        except VideoError as exc:
            return ItemResult.failed_by(item.index, exc)
        tracklets = scan.tracker.finish()
        with metrics.STAGE.labels(stage="embed").time():
            vectors, counts, embedded_frames = embed_tracklets(self.engine, tracklets)
        space = space_of(self.model_id)
        tracks = join_tracklets(tracklets, vectors, counts, scan.tracker.samples, space.thresholds.cluster)
        attached = attach_tracks(
            self.ctx,
            self.job.tenant,
            self.model_id,
            [TrackVector(f"{item.index}:{n}", t.embedding, t.embedded, t.best.quality) for n, t in enumerate(tracks)],
        )
        pad = 0.5 / params.sample_fps
        outputs = self._write(item, spec, tracks, attached, pad, scan.duration)
        thumbs = {
            n: keys.strip_tenant(self.job.tenant, k)
            for n, k in enumerate(k for k in outputs if PurePosixPath(k).name.startswith("track-"))
        }
        people = record_appearances(
            self.ctx,
            self.job.tenant,
            self.job.id,
            item.index,
            spec.name,
            keys.strip_tenant(self.job.tenant, spec.source_key),
            scan.duration,
            [Appearance(n, t.ranges(pad, scan.duration), thumbs.get(n)) for n, t in enumerate(tracks)],
            attached,
        )
        self.ctx.records.set_progress(self.job.id, item.index, scan.frames, scan.frames)
        info = {
            "video": spec.video,
            "outcome": f"tracks: {len(tracks)}" if tracks else "no_face",
            "tracks": len(tracks),
            "frames": scan.frames,
            "sampled": scan.sampled,
            "embedded_frames": embedded_frames,
            "embedded_crops": int(sum(counts)),
            "attached": sum(a is not None for a in attached),
            "people": people,
            "duration_s": round(scan.duration, 3),
            "seconds": round(time.perf_counter() - started, 3),
        }
        return ItemResult(item.index, ItemState.DONE, outputs, info=info)

    def _write(
        self,
        item: ItemInput,
        spec: SegmentSpec,
        tracks: list[Track],
        attached: list[Attachment | None],
        pad: float,
        duration: float,
    ) -> list[str]:
        tenant, job = self.job.tenant, self.job.id
        rows, thumbs = [], []
        for n, track in enumerate(tracks):
            thumb = None
            if self.params.thumbnails:
                thumb = keys.item_output(tenant, job, item.index, f"track-{n:03d}.jpg")
                self.ctx.store.put_bytes(
                    thumb, face_thumbnail(Image.fromarray(track.best.image), track.best.face), "image/jpeg"
                )
                thumbs.append(thumb)
            person = attached[n]
            rows.append(
                {
                    "video_key": keys.strip_tenant(tenant, spec.source_key),
                    "item_id": str(item.index),
                    "track": n,
                    "start_s": track.ranges(pad, duration)[0][0],
                    "end_s": track.ranges(pad, duration)[-1][1],
                    "ranges": [list(r) for r in track.ranges(pad, duration)],
                    "detections": track.detections,
                    "embedded": track.embedded,
                    "best_s": track.best.t,
                    "quality": track.best.quality,
                    "score": track.best.face.score,
                    "thumbnail": keys.strip_tenant(tenant, thumb) if thumb else None,
                    "person_id": person.person_id if person else None,
                    "person_name": person.name if person else None,
                    "model": self.model_id,
                    "embedding_row": n,
                }
            )
        table = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=TRACK_SCHEMA), table, compression="zstd")
        matrix = io.BytesIO()
        np.save(
            matrix,
            np.stack([t.embedding for t in tracks]).astype(np.float32) if tracks else np.zeros((0, 128), np.float32),
            allow_pickle=False,
        )
        labels = [(a.name or a.person_id) if a else f"Person {n + 1}" for n, a in enumerate(attached)]
        outs = {
            "tracks.parquet": (table.getvalue(), "application/vnd.apache.parquet"),
            "tracks.npy": (matrix.getvalue(), "application/octet-stream"),
            "tracks.vtt": (webvtt(tracks, labels, pad, duration).encode(), "text/vtt"),
        }
        written = []
        for name, (data, ctype) in outs.items():
            key = keys.item_output(tenant, job, item.index, name)
            self.ctx.store.put_bytes(key, data, ctype)
            written.append(key)
        return written + thumbs

    def after_commit(self, results: list[ItemResult]) -> None:
        super().after_commit([r for r in results if "video" not in r.info])

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        summary = super().finalize(job, [it for it in items if not keys.is_video_segment(it.key)])
        videos = [
            {
                "name": it.name,
                "item": it.index,
                "tracks": it.info.get("tracks", 0),
                "frames": it.info.get("frames"),
                "embedded_frames": it.info.get("embedded_frames"),
                "outputs": [
                    keys.strip_tenant(job.tenant, k) for k in it.outputs if PurePosixPath(k).name.startswith("tracks.")
                ],
            }
            for it in items
            if it.state == ItemState.DONE and "video" in it.info
        ]
        if videos:
            summary["videos"] = videos
        return summary
