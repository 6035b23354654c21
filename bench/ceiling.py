"""The pipeline's own ceiling: one worker process's batch loop (`process_chunk`, no Celery) against a real
Redis and a real S3 server, with the model left out (an identity engine), and where the time goes per stage.

Used by bench/pipeline.py (CPU, this machine) and bench/gpu_report.py (the GPU machine). The identity
engines are real job settings or real classes: `style` with `strength` 0 (the engine returns the photo
itself, the network is skipped) and `faces` with a detector that finds nothing. Everything else — claims,
downloads, decode, encode, uploads, records, the overlap of the stages — is the production code.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

STAGES = ("download", "decode", "model", "encode", "upload", "records")
MODEL_STAGES = ("model", "detect", "embed")  # the faces handler times detection and embedding apart
SIZES = {1: (1224, 816), 12: (4032, 3024)}  # megapixels -> a camera's (width, height)


def photo_jpeg(mp: int, seed: int, *, faces: int = 1, quality: int = 90) -> bytes:
    """A synthetic camera-like JPEG of `mp` megapixels (smooth scene + sensor noise, so it compresses like a
    photo) with `faces` copies of the scikit-image astronaut's face pasted in."""
    from skimage import data

    width, height = SIZES.get(mp) or (int((mp * 1e6 * 1.5) ** 0.5), int((mp * 1e6 / 1.5) ** 0.5))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 180 + 40, yy / height * 160 + 50, (xx + yy) / (width + height) * 200 + 30], -1)
    base += rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    canvas = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    face = Image.fromarray(data.astronaut()).crop((130, 0, 330, 230))
    side = max(min(width, height) // 5, 96)
    for _ in range(faces):
        f = face.resize((side, int(side * 1.15)))
        canvas.paste(f, (int(rng.integers(0, width - f.width)), int(rng.integers(0, height - f.height))))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def stage_totals() -> dict[str, tuple[float, float]]:
    """{stage: (seconds, calls)} of this process's stage histogram so far."""
    from prometheus_client import REGISTRY

    out: dict[str, tuple[float, float]] = {}
    for metric in REGISTRY.collect():
        if metric.name != "nightshift_stage_seconds":
            continue
        for sample in metric.samples:
            stage = sample.labels.get("stage", "")
            seconds, calls = out.get(stage, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                out[stage] = (seconds + sample.value, calls)
            elif sample.name.endswith("_count"):
                out[stage] = (seconds, calls + sample.value)
    return out


def per_photo_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], photos: int
) -> dict[str, float]:
    """Milliseconds per photo spent in each of STAGES between two `stage_totals` (faces: model = detect+embed)."""
    spent = {s: after.get(s, (0.0, 0.0))[0] - before.get(s, (0.0, 0.0))[0] for s in set(before) | set(after)}
    out = {s: 1000 * spent.get(s, 0.0) / photos for s in STAGES if s != "model"}
    out["model"] = 1000 * sum(spent.get(s, 0.0) for s in MODEL_STAGES) / photos
    return {s: out[s] for s in STAGES}


@dataclass
class Stack:
    """A Redis-compatible server and an S3 server of our own, and a worker context on them."""

    root: Path
    servers: list[Any] = field(default_factory=list)
    settings: Any = None

    @classmethod
    def start(cls, root: Path, **worker: Any) -> Stack:
        from api.devstack.servers import start_redis, start_s3
        from storage.config import Settings, WorkerSettings

        redis = start_redis(root / "redis")
        s3, s3_settings = start_s3(root / "s3")
        redis_url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
        settings = Settings(redis_url=redis_url, s3=s3_settings, data_dir=root, worker=WorkerSettings(**worker))
        return cls(root, [redis, s3], settings)

    def context(self, **worker: Any) -> Any:
        from workers.context import WorkerContext

        settings = self.settings.model_copy(update={"worker": self.settings.worker.model_copy(update=worker)})
        return WorkerContext.from_settings(settings)

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


class FolderStore:
    """Objects as files under a folder: what stands in for the S3 server on the GPU machine, where SeaweedFS's
    48 MB wheel does not fit in what travels there. Only the calls the worker's batch loop makes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    def get_bytes(self, key: str) -> bytes:
        from storage.errors import ObjectNotFound

        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()


def folder_context(redis_url: str, root: Path, **worker: Any) -> Any:
    """A worker context on a real Redis and a `FolderStore`."""
    from storage.config import Settings, WorkerSettings
    from storage.records import RecordStore
    from workers.context import WorkerContext

    settings = Settings(redis_url=redis_url, data_dir=root, worker=WorkerSettings(**worker))
    return WorkerContext(settings, RecordStore(settings), FolderStore(root / "objects"))  # type: ignore[arg-type]


class NoFaces:
    """A face detector that finds nothing: the faces pipeline without its models."""

    name = "none"

    def load(self) -> None:
        pass

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Any]]:
        return [[] for _ in images]


def identity_faces(params: dict[str, Any], device: str = "cpu") -> Callable[[], None]:
    """Make the faces handler use an engine with no detector for `params`; returns the undo."""
    from workers.contract import FacesParams
    from workers.faces import handler
    from workers.faces.engine import FaceEngine

    p = FacesParams.model_validate(params)
    key = p.model_dump_json(exclude={"force", "thumbnails"})
    before = dict(handler._engines)
    handler._engines[key] = FaceEngine(p, device=device, mirror=p.mirror, detector=NoFaces())  # type: ignore[arg-type]

    def undo() -> None:
        handler._engines.clear()
        handler._engines.update(before)

    return undo


@dataclass
class Run:
    photos: int
    seconds: float
    stages_ms: dict[str, float]
    done: int
    cpu_seconds: float = 0.0  # this process's CPU time, all threads (the servers' excluded)

    @property
    def per_s(self) -> float:
        return self.photos / self.seconds

    def __add__(self, other: Run) -> Run:
        """Two runs as one (rounds of an interleaved comparison)."""
        n = self.photos + other.photos
        stages = {
            s: (self.stages_ms.get(s, 0) * self.photos + other.stages_ms.get(s, 0) * other.photos) / n for s in STAGES
        }
        return Run(
            n, self.seconds + other.seconds, stages, self.done + other.done, self.cpu_seconds + other.cpu_seconds
        )


def run_job(
    ctx: Any, kind: str, params: dict[str, Any], blobs: Sequence[bytes], *, tenant: str = "bench", chunk_size: int = 16
) -> Run:
    """Process a job of `blobs` chunk by chunk in this process, as one worker process would (the job is not
    finalized: its end-of-job outputs are not the steady state). Photos/s and per-stage ms per photo."""
    from storage import keys
    from storage.names import JobKind, JobState
    from storage.records import Item, Job, new_id
    from workers.pipeline import process_chunk

    job = Job(id=new_id("j"), kind=JobKind(kind), tenant=tenant, state=JobState.QUEUED, params=params, inputs={})
    items = []
    for i, blob in enumerate(blobs):
        key = keys.tenant_key(tenant, f"bench/{job.id}/p{i:05d}.jpg")
        ctx.store.put_bytes(key, blob, "image/jpeg")
        items.append(Item(i, f"p{i:05d}.jpg", key))
    ctx.records.create_job(job, items)
    before = stage_totals()
    t0, c0 = time.perf_counter(), time.process_time()
    for n in range(0, len(blobs), chunk_size):
        process_chunk(ctx, job.id, n // chunk_size, list(range(n, min(n + chunk_size, len(blobs)))))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    done = ctx.records.get_job(job.id).done
    return Run(len(blobs), seconds, per_photo_ms(before, stage_totals(), len(blobs)), done, cpu)


_ENGINES: dict[tuple[str, str, str], Any] = {}


def _engine(
    kind: str, params: dict[str, Any], device: str, build: Callable[[], Any], warm: Callable[[Any], None]
) -> Any:
    """One loaded engine per setting for the in-process references (rounds reuse it)."""
    key = (kind, repr(sorted(params.items())), device)
    if key not in _ENGINES:
        engine = build()
        warm(engine)  # model load, outside the timed runs
        _ENGINES[key] = engine
    return _ENGINES[key]


def in_process_style(blobs: Sequence[bytes], params: dict[str, Any], device: str = "cpu") -> Run:
    """The style engine called in-process on each photo: decode -> render -> encode, no services."""
    from workers.contract import StyleParams
    from workers.imaging import decode_image
    from workers.style.engine import StyleEngine, encode_image

    p = StyleParams.model_validate(params)
    # one onnxruntime thread, as a worker process runs it (worker.threads)
    engine = _engine(
        "style",
        params,
        device,
        lambda: StyleEngine(device=device, threads=1),
        lambda e: e.render(decode_image(blobs[0]), e.expand(p, {})[0]),
    )
    variant = engine.expand(p, {})[0]
    spent = dict.fromkeys(STAGES, 0.0)
    t0, c0 = time.perf_counter(), time.process_time()
    for blob in blobs:
        t = time.perf_counter()
        img = decode_image(blob)
        spent["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        out = engine.render(img, variant)
        spent["model"] += time.perf_counter() - t
        t = time.perf_counter()
        encode_image(out, p.format, p.quality)
        spent["encode"] += time.perf_counter() - t
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Run(len(blobs), seconds, {s: 1000 * v / len(blobs) for s, v in spent.items()}, len(blobs), cpu)


def in_process_faces(blobs: Sequence[bytes], params: dict[str, Any], device: str = "cpu", batch: int = 4) -> Run:
    """The face engine called in-process: reduced decode -> detect + embed (batched) -> face table and
    thumbnails encoded, no services."""
    from workers.contract import FacesParams
    from workers.faces.engine import FaceEngine
    from workers.faces.index import PhotoRecord, chunk_outputs, face_thumbnail
    from workers.imaging import decode_reduced

    p = FacesParams.model_validate(params)
    engine = _engine(
        "faces",
        params,
        device,
        lambda: FaceEngine(p, device=device, mirror=p.mirror),
        lambda e: e.index_batch([decode_reduced(blobs[0], p.detect_size)[0]]),
    )
    spent = dict.fromkeys(STAGES, 0.0)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(blobs), batch):
        t = time.perf_counter()
        images = [decode_reduced(b, p.detect_size)[0] for b in blobs[start : start + batch]]
        spent["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        found = engine.index_batch(images)
        spent["model"] += time.perf_counter() - t
        t = time.perf_counter()
        chunk_outputs([PhotoRecord(str(i), str(i), "0" * 64, f) for i, f in enumerate(found)])
        for image, f in zip(images, found, strict=True):
            for face in f.faces:
                face_thumbnail(image, face)
        spent["encode"] += time.perf_counter() - t
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Run(len(blobs), seconds, {s: 1000 * v / len(blobs) for s, v in spent.items()}, len(blobs), cpu)
