"""Joining a video's segments once every one of them is committed.

The join reads the segment outputs recorded in the *committed* item records (never a listing of the
store), so a segment rendered twice by a redelivered chunk is still one segment, and a segment that
never committed is never joined. It runs when the last segment commits (`after_commit`) and again
at finalize for any video still missing its result (the worker that committed the last segment may
have died before joining); the result is written under deterministic keys, so joining twice writes
the same objects. `video.json` (a `VideoResult`) is written next and marks the video as joined; then the
joined files become the outputs of the video's first item (a segment's own files are its `parts`, kept
under the item for a join again, never listed as results).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict

from storage import keys
from storage.errors import ObjectNotFound
from storage.names import ItemState
from storage.records import Item, Job
from workers.context import WorkerContext
from workers.video.plan import VideoPlan

log = logging.getLogger("nightshift.video")
RESULT_NAME = "video.json"
JOIN_BLOCK = 256 * 1024  # the audio pass reads interleaved packets: small range reads waste less


class VideoOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    variant: str
    key: str  # relative to the tenant
    frames: int
    audio_packets: int


class VideoResult(BaseModel):
    """What became of one video of a style job (job summary, web page, manifest)."""

    model_config = ConfigDict(frozen=True)

    name: str
    video: int
    source: str  # the original, relative to the tenant
    segments: int
    frames: int
    duration_s: float
    fps: float
    rotation: int
    audio: str | None
    outputs: list[VideoOutput] = []
    error: str | None = None


def result_key(job: Job, video: int) -> str:
    return keys.video_output(job.tenant, job.id, video, RESULT_NAME)


def load_plan(ctx: WorkerContext, job: Job, video: int) -> VideoPlan:
    return VideoPlan.model_validate_json(ctx.store.get_bytes(keys.video_plan(job.tenant, job.id, video)))


def existing_result(ctx: WorkerContext, job: Job, video: int) -> VideoResult | None:
    try:
        return VideoResult.model_validate_json(ctx.store.get_bytes(result_key(job, video)))
    except ObjectNotFound:
        return None


def variant_of(key: str) -> str:
    """The variant slug in a segment output's name ``<stem>__<slug>.seg<n>.mp4``."""
    return PurePosixPath(key).name.split("__", 1)[-1].split(".seg", 1)[0]


def segment_parts(item: Item) -> list[str]:
    """A segment item's files, one per variant (items recorded before parts moved to `info` held them as
    outputs)."""
    parts = item.info.get("parts")
    return [str(k) for k in parts] if isinstance(parts, list) else list(item.outputs)


def join_video(ctx: WorkerContext, job: Job, video: int, *, items: list[Item] | None = None) -> VideoResult | None:
    """Join `video` if all its segments are final; None while some are not. Idempotent."""
    plan = load_plan(ctx, job, video)
    segs = items if items is not None else ctx.records.get_items(job.id, plan.items)
    segs = sorted((it for it in segs if it.index in set(plan.items)), key=lambda it: it.index)
    if len(segs) != len(plan.items) or not all(it.terminal for it in segs):
        return None
    base = dict(
        name=plan.name,
        video=video,
        source=keys.strip_tenant(job.tenant, plan.source_key),
        segments=len(segs),
        frames=sum(int(it.info.get("frames", 0)) for it in segs),
        duration_s=plan.info.duration_s,
        fps=plan.info.fps,
        rotation=plan.info.rotation,
        audio=plan.info.audio.codec if plan.info.audio else None,
    )
    bad = [it for it in segs if it.state != ItemState.DONE]
    if bad:
        reason = f"segment {bad[0].index - video + 1} of {len(segs)}: {bad[0].error or bad[0].state}"
        result = VideoResult(**base, error=f"not joined: {reason}")  # type: ignore[arg-type]
    else:
        result = VideoResult(**base, outputs=_join_outputs(ctx, job, plan, segs))  # type: ignore[arg-type]
    ctx.store.put_bytes(result_key(job, video), result.model_dump_json().encode(), "application/json")
    if result.outputs:
        ctx.records.set_item_outputs(job.id, video, [keys.tenant_key(job.tenant, o.key) for o in result.outputs])
    return result


def _join_outputs(ctx: WorkerContext, job: Job, plan: VideoPlan, segs: list[Item]) -> list[VideoOutput]:
    from workers.style.handler import StyleHandler
    from workers.video.frames import join_segments, output_container
    from workers.video.source import open_video, upload_file

    params = StyleHandler(job, ctx).params.video
    by_variant: dict[str, list[str]] = {}
    for item in segs:
        for key in segment_parts(item):
            by_variant.setdefault(variant_of(key), []).append(key)
    ext = output_container(plan.info.audio.codec if plan.info.audio and params.audio else None)
    stem = PurePosixPath(plan.name).stem or f"video{plan.first_item}"
    w = ctx.settings.worker.model_copy(update={"video_read_block_bytes": JOIN_BLOCK})
    outputs = []
    with tempfile.TemporaryDirectory(prefix="nightshift-join-") as tmp:
        for variant, seg_keys in by_variant.items():
            if len(seg_keys) != len(segs):
                raise ValueError(f"variant {variant}: {len(seg_keys)} segment outputs for {len(segs)} segments")
            parts = []
            for n, key in enumerate(seg_keys):
                path = Path(tmp) / f"{n:05d}.mp4"
                ctx.store.download(key, path)
                parts.append(path)
            out = Path(tmp) / f"joined.{ext}"
            if params.audio and plan.info.audio:
                with open_video(ctx.store, plan.source_key, w) as source:
                    stats = join_segments(parts, source, out)
            else:
                stats = join_segments(parts, None, out)
            key = keys.video_output(job.tenant, job.id, plan.first_item, f"{stem}__{variant}.{ext}")
            upload_file(ctx.store, key, out, "video/mp4" if ext == "mp4" else "video/x-matroska")
            outputs.append(VideoOutput(variant=variant, key=keys.strip_tenant(job.tenant, key), **stats))
            for path in [*parts, out]:
                path.unlink(missing_ok=True)
    return outputs
