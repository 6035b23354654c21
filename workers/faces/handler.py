"""The `faces` job kind: index every face of every photo into object storage.

Per batch: one Parquet face table and one float32 .npy embedding matrix (a "part", keyed by chunk and
first item, so a retried batch overwrites its own part); per face, a JPEG thumbnail. A photo whose
content hash was already indexed with the same embedding model is skipped unless `force` is set.
At the end, parts that no committed item points to (left by a delivery that died) are deleted and
`faces-index.json` lists the parts.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

from PIL import Image

from storage import keys
from storage.names import ItemState
from storage.records import Item, Job
from workers import metrics
from workers.context import WorkerContext
from workers.contract import FacesParams
from workers.faces.engine import FaceEngine
from workers.faces.index import PhotoRecord, chunk_outputs, content_hash, face_thumbnail
from workers.faces.types import PhotoFaces
from workers.handlers import ItemInput, ItemResult, JobHandler
from workers.imaging import ImageDecodeError, date_taken, decode_jpegs, decode_reduced, is_jpeg
from workers.library.intake import fold_waiting, known_photos, offer_job
from workers.models.base import ModelCache

log = logging.getLogger("nightshift.faces")
INDEX_NAME = "faces-index.json"
_engines: ModelCache[FaceEngine] = ModelCache()


def engine_for(params: FacesParams, device: str) -> FaceEngine:
    """One engine per distinct model setting per worker process (models load once, lazily)."""
    key = params.model_dump_json(exclude={"force", "thumbnails"})
    return _engines.get(key, lambda: FaceEngine(params, device=device, mirror=params.mirror))


def _stage(name: str) -> AbstractContextManager[object]:
    return metrics.STAGE.labels(stage=name).time()  # type: ignore[no-any-return]


@dataclass
class _Photo:
    """A photo prepared ahead of the model: its hash and its image at the detector's resolution (or why it
    could not be decoded), with the photo's full size that face coordinates are reported in."""

    sha: str
    image: Image.Image | ImageDecodeError
    full: tuple[int, int] = (0, 0)


def _jpeg_thumbnail(image: Image.Image, face: Any) -> tuple[bytes, str]:
    return face_thumbnail(image, face), "image/jpeg"


def _at_full_size(found: PhotoFaces, image: Image.Image, full: tuple[int, int]) -> PhotoFaces:
    """`found` in the coordinates of the full photo (faces were found in its reduced decode `image`)."""
    if image.size == full:
        return found
    sx, sy = full[0] / image.width, full[1] / image.height
    return PhotoFaces([f.scaled(sx, sy) for f in found.faces], found.embeddings, full, found.model, found.model_version)


class FacesHandler(JobHandler):
    def __init__(self, job: Job, ctx: WorkerContext) -> None:
        super().__init__(job, ctx)
        self.params = FacesParams.model_validate(job.params)
        self.engine = engine_for(self.params, ctx.settings.worker.device)

    @property
    def model_id(self) -> str:
        """The embedding space: embedder name and version (marked when mirror-averaged)."""
        return self.engine.model_id

    def prepare(self, item: ItemInput) -> None:
        """Hash and decode in a prefetch thread, at the detector's resolution (JPEG draft mode): a 12 MP photo
        decodes at 3 MP. On CUDA, JPEGs are left for `prepare_batch` to decode on the GPU."""
        if not (self._gpu_decode and is_jpeg(item.data)):
            item.prepared = self._decode(item.data)

    def prepare_batch(self, batch: list[ItemInput]) -> None:
        todo = [item for item in batch if item.prepared is None]
        if not todo:
            return
        with metrics.STAGE.labels(stage="decode").time():
            decoded = decode_jpegs(
                [it.data for it in todo],
                self.params.detect_size,
                device=self.engine.device,
                max_pixels=self.ctx.settings.worker.max_pixels,
            )
        for item, got in zip(todo, decoded, strict=True):
            # a photo the GPU decoder would not take is decoded on the CPU (which also says what is wrong)
            item.prepared = _Photo(content_hash(item.data), *got) if got else self._decode(item.data)

    @property
    def _gpu_decode(self) -> bool:
        return getattr(self.engine, "device", "cpu") == "cuda"  # an engine without a device runs on the CPU

    def _decode(self, data: bytes) -> _Photo:
        sha = content_hash(data)
        try:
            with metrics.STAGE.labels(stage="decode").time():
                image, full = decode_reduced(
                    data, self.params.detect_size, max_pixels=self.ctx.settings.worker.max_pixels
                )
        except ImageDecodeError as exc:
            return _Photo(sha, exc)
        return _Photo(sha, image, full)

    def process_batch(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        results: dict[int, ItemResult] = {}
        todo: list[tuple[ItemInput, str, Image.Image]] = []
        full_size: dict[int, tuple[int, int]] = {}
        seen = None if self.params.force else known_photos(self.ctx, self.job.tenant, self.model_id)
        for item in batch:
            photo = item.prepared if isinstance(item.prepared, _Photo) else self._decode(item.data)
            sha = photo.sha
            if seen is not None and seen.has(sha):
                results[item.index] = ItemResult(
                    item.index, ItemState.SKIPPED, info={"outcome": "skipped", "duplicate_of": "library", "sha256": sha}
                )
                continue
            if isinstance(photo.image, ImageDecodeError):
                results[item.index] = ItemResult.failed_by(item.index, photo.image)
                continue
            image = photo.image
            full_size[item.index] = photo.full
            todo.append((item, sha, image))
        if todo:
            found = self.engine.index_batch([image for _, _, image in todo], stage=_stage)
            part_id = f"{chunk_index:05d}-{todo[0][0].index:07d}"
            records = [
                PhotoRecord(
                    keys.strip_tenant(self.job.tenant, item.key),
                    str(item.index),
                    sha,
                    _at_full_size(faces, image, full_size[item.index]),
                )
                for (item, sha, image), faces in zip(todo, found, strict=True)
            ]
            table, matrix = chunk_outputs(records, self.engine.embedder.dim)
            # written beside the next batch's model; the batch's items are recorded once these landed
            self.write(
                keys.part(self.job.tenant, self.job.id, part_id, "parquet"),
                lambda: (table, "application/vnd.apache.parquet"),
            )
            self.write(
                keys.part(self.job.tenant, self.job.id, part_id, "npy"), lambda: (matrix, "application/octet-stream")
            )
            for (item, sha, image), faces in zip(todo, found, strict=True):
                thumbs = self._thumbnails(item, image, faces.faces)
                n = len(faces.faces)
                info: dict[str, Any] = {
                    "outcome": f"faces: {n}" if n else "no_face",
                    "faces": n,
                    "part": part_id,
                    "sha256": sha,
                    "rotations": sorted({f.rotation for f in faces.faces if f.rotation}),
                }
                taken = date_taken(item.data)
                if taken is not None:
                    info["taken"] = taken
                results[item.index] = ItemResult(item.index, ItemState.DONE, thumbs, info=info)
        return [results[item.index] for item in batch]

    def _thumbnails(self, item: ItemInput, image: Image.Image, faces: list[Any]) -> list[str]:
        if not self.params.thumbnails:
            return []
        out = []
        for n, face in enumerate(faces):
            key = keys.face_thumbnail(self.job.tenant, self.job.id, item.index, n)
            out.append(self.write(key, partial(_jpeg_thumbnail, image, face), item=item.index))
        return out

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        """Drop orphan parts and write the index of this job's face tables and embeddings."""
        wanted = {it.info["part"] for it in items if it.state == ItemState.DONE and "part" in it.info}
        parts = []
        for obj in self.ctx.store.list(keys.parts_prefix(job.tenant, job.id)):
            part_id = obj.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if part_id not in wanted:
                self.ctx.store.delete(obj.key)
            elif obj.key.endswith(".parquet"):
                parts.append(part_id)
        faces = sum(int(it.info.get("faces", 0)) for it in items if it.state == ItemState.DONE)
        no_face = sum(1 for it in items if it.info.get("outcome") == "no_face")
        index: dict[str, Any] = {
            "job": job.id,
            "model": self.model_id,
            "detector": self.params.detector,
            "faces": faces,
            "photos": {
                "indexed": sum(1 for it in items if it.state == ItemState.DONE),
                "no_face": no_face,
                "skipped": job.skipped,
                "failed": job.failed,
            },
            "parts": [
                {
                    "id": p,
                    "table": keys.strip_tenant(job.tenant, keys.part(job.tenant, job.id, p, "parquet")),
                    "embeddings": keys.strip_tenant(job.tenant, keys.part(job.tenant, job.id, p, "npy")),
                }
                for p in sorted(parts)
            ],
        }
        key = keys.job_artifact(job.tenant, job.id, INDEX_NAME)
        self.ctx.store.put_json(key, index)
        offer_job(self.ctx, job, items, self.model_id, self.engine.embedder.dim, self.params.thumbnails)
        return {
            "artifacts": [keys.strip_tenant(job.tenant, key)],
            "faces": faces,
            "model": self.model_id,
            "photos": index["photos"]["indexed"],
            "no_face": no_face,
            "library": fold_waiting(self.ctx, job.tenant),
        }
