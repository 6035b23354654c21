"""Ingest of one video: probe it, plan its items, write the plan (called by workers.ingest).

A style job renders a video as segments of about `video_segment_seconds`, one item each, so a long
video runs as several chunks on several workers; a faces job keeps a video as one item (its tracks
span the whole video). Every item's input object is its `SegmentSpec` (small JSON), written under a
deterministic key before the items are recorded, so a redelivered ingest writes the same plan again.
A video that fails its probe becomes one failed item with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import keys
from storage.names import JobKind
from storage.records import Item, Job
from workers.context import WorkerContext
from workers.contract import is_video_name
from workers.video.plan import VideoPlan, plan_segments
from workers.video.source import VideoError, probe

# container signatures, for archive members whose names do not say "video"
_MAGIC = (
    (4, b"ftyp"),
    (0, b"\x1a\x45\xdf\xa3"),
    (0, b"RIFF"),
    (0, b"\x00\x00\x01\xba"),
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"YUV4MPEG2"),
)


def looks_like_video(name: str, head: bytes | None = None) -> bool:
    """A video by its name, or (for bytes in hand) by its container's signature."""
    if is_video_name(name):
        return True
    if not head:
        return False
    if head[:4] == b"RIFF" and head[8:12] != b"AVI ":
        return False  # RIFF is also WebP and WAV
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"heim", b"heis"):
        return False  # HEIF photos share the ISO container
    return any(head[at : at + len(sig)] == sig for at, sig in _MAGIC)


@dataclass
class VideoIntake:
    """The items one video became, or why it became one failed item."""

    items: list[Item]
    plan: VideoPlan | None = None
    error: VideoError | None = None


def take_video(ctx: WorkerContext, job: Job, name: str, key: str, first: int) -> VideoIntake:
    """Probe the video at `key` and plan its items from index `first`; writes the plan and the specs."""
    w = ctx.settings.worker
    try:
        info = probe(ctx.store, key, w)
    except VideoError as exc:
        return VideoIntake([Item(first, name, key)], error=exc)
    segment_s = w.video_segment_seconds if job.kind == JobKind.STYLE else None
    plan = plan_segments(info, key, name, first, segment_seconds=segment_s, context_frames=w.video_context_frames)
    items = []
    for spec in plan.segments:
        spec_key = keys.video_segment(job.tenant, job.id, first, spec.segment)
        ctx.store.put_bytes(spec_key, spec.model_dump_json().encode(), "application/json")
        label = keys.segment_label(name, spec.segment, spec.segments)
        items.append(Item(first + spec.segment, label, spec_key))
    ctx.store.put_bytes(keys.video_plan(job.tenant, job.id, first), plan.model_dump_json().encode(), "application/json")
    for spec, item in zip(plan.segments, items, strict=True):
        ctx.records.set_progress(job.id, item.index, 0, spec.frames_estimate)
    return VideoIntake(items, plan)
