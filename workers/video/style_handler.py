"""The `style` job kind with videos: photos go the photo way, video segments are rendered here.

A segment item's input is its `SegmentSpec` (small JSON); the video itself is streamed from the store
in ranges. Each segment writes one video-only file per variant under its own item's prefix
(deterministic keys: a redelivered segment overwrites its own files), records them as its *parts*
(`info["parts"]`, not outputs: they are pieces without audio, not results), and reports its progress in
frames. When the last segment of a video commits, the video is joined (workers.video.join) and the joined
files (one per variant) become the outputs of the video's first item.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from storage import keys
from storage.errors import StoreUnavailable
from storage.names import ItemErrorCode, ItemState
from storage.records import Item, Job
from workers import metrics
from workers.handlers import ItemInput, ItemResult
from workers.models.registry import WeightsNotAvailable
from workers.style.handler import StyleHandler, StyleInputError, engine
from workers.style.onnx_models import DeviceNotAvailable
from workers.video.join import VideoResult, existing_result, join_video
from workers.video.plan import SegmentSpec
from workers.video.source import VideoError, open_video, upload_file

log = logging.getLogger("nightshift.video")


class StyleMediaHandler(StyleHandler):
    """`style` for photos and videos alike (one job for an archive that holds both)."""

    def process_video(self, item: ItemInput) -> ItemResult:
        """Render one segment in every variant; a bad video or a missing model fails this item alone."""
        spec = SegmentSpec.model_validate_json(item.data)
        try:
            variants = self.variants()
        except (StyleInputError, WeightsNotAvailable, DeviceNotAvailable) as exc:
            return ItemResult.failed_by(item.index, exc)
        if any(v.method == "gatys" for v in variants):
            return ItemResult.failed(
                item.index,
                ItemErrorCode.UNSUPPORTED,
                "the gatys method optimises each image for "
                "minutes: it does not render videos; use builtin or arbitrary styles",
            )
        temporal = [self.params.temporal_for(self._source_of(v)) for v in variants]
        stem = PurePosixPath(spec.name).stem or f"video{spec.video}"
        w = self.ctx.settings.worker
        watch = _ProgressWatch(self, item.index, spec.frames_estimate)
        with tempfile.TemporaryDirectory(prefix="nightshift-segment-") as tmp:
            paths = [Path(tmp) / f"{n}.mp4" for n in range(len(variants))]
            try:
                from workers.video.render import render_segment

                with open_video(self.ctx.store, spec.source_key, w, spec.info.size_bytes) as container:
                    with metrics.STAGE.labels(stage="video").time():
                        done = render_segment(
                            container,
                            spec,
                            variants,
                            engine(self.ctx),
                            self.params.video,
                            temporal,
                            paths,
                            size=self.params.size,
                            threads=w.threads,
                            progress=watch,
                            protect=[self._protection(v) for v in variants],
                        )
            except VideoError as exc:
                return ItemResult.failed_by(item.index, exc)
            except ValueError as exc:  # frames the renderer cannot take (PyAV's and numpy's complaints)
                return ItemResult.failed(item.index, ItemErrorCode.DECODE_FAILED, str(exc))
            parts = []
            for variant, path in zip(variants, paths, strict=True):
                key = keys.item_output(
                    self.job.tenant, self.job.id, item.index, f"{stem}__{variant.slug}.seg{spec.segment:05d}.mp4"
                )
                with metrics.STAGE.labels(stage="upload").time():
                    upload_file(self.ctx.store, key, path, "video/mp4")
                parts.append(key)
        self.ctx.records.set_progress(self.job.id, item.index, done.frames, done.frames)
        info: dict[str, Any] = {
            "video": spec.video,
            "segment": spec.segment,
            "segments": spec.segments,
            "frames": done.frames,
            "first_pts": done.first_pts,
            "last_pts": done.last_pts,
            "cuts": len(done.cuts),
            "temporal": done.strengths,
            "faces_protected": done.faces,
            "face_frames": done.face_frames,
            "seconds": done.seconds,
            "parts": parts,
        }
        return ItemResult(item.index, ItemState.DONE, [], info=info)

    def _source_of(self, variant: Any) -> int:
        """Which entry of `styles` / `builtin` a variant renders (the index `temporal` lists follow)."""
        if self.params.method == "builtin":
            from workers.contract import parse_blend

            blends = [tuple(parse_blend(b).items()) for b in self.params.builtin]
            return blends.index(variant.builtin)
        return self.params.styles.index(variant.style_key)

    def after_commit(self, results: list[ItemResult]) -> None:
        super().after_commit(results)
        for video in sorted({int(r.info["video"]) for r in results if "video" in r.info}):
            try:
                join_video(self.ctx, self.job, video)
            except StoreUnavailable:
                raise
            except Exception:  # finalize joins it again (and records the reason if it fails there too)
                log.exception("joining video %s of job %s failed", video, self.job.id)

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        photos = [it for it in items if not keys.is_video_segment(it.key)]
        summary = super().finalize(job, photos)
        starts = sorted(
            {int(it.info["video"]) for it in items if "video" in it.info}
            | {it.index for it in items if keys.is_video_segment(it.key) and it.key.endswith("segment-00000.json")}
        )
        if not starts:
            return summary
        by_index = {it.index: it for it in items}
        videos: list[VideoResult] = []
        for video in starts:
            result = existing_result(self.ctx, job, video)
            if result is None:
                try:
                    result = join_video(self.ctx, job, video, items=[it for i, it in by_index.items() if i >= video])
                except StoreUnavailable:
                    raise
                except Exception as exc:
                    log.exception("joining video %s of job %s failed", video, job.id)
                    result = VideoResult(
                        name=by_index[video].name,
                        video=video,
                        source="",
                        segments=0,
                        frames=0,
                        duration_s=0,
                        fps=0,
                        rotation=0,
                        audio=None,
                        error=f"join failed: {exc}",
                    )
            if result is not None:
                videos.append(result)
                if result.outputs and video in by_index:  # the manifest is written from these items
                    joined = [keys.tenant_key(job.tenant, o.key) for o in result.outputs]
                    by_index[video].outputs = joined
                    self.ctx.records.set_item_outputs(job.id, video, joined)
        # the joined videos are their first items' outputs (so `results` and downloads list them once); the
        # originals are the user's own files: neither is a job artifact
        summary.update(videos=[v.model_dump(mode="json") for v in videos])
        return summary


class _ProgressWatch:
    """The segment's progress callback: frames into the job's progress record, and the cancel check
    (`check_cancel` raises JobCancelled: the pipeline records the segment `cancelled`)."""

    def __init__(self, handler: StyleMediaHandler, index: int, total: int) -> None:
        self.handler, self.index, self.total = handler, index, total

    def __call__(self, done: int) -> None:
        self.handler.ctx.records.set_progress(self.handler.job.id, self.index, done, max(done, self.total))
        self.handler.check_cancel()
