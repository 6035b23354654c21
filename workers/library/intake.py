"""From faces jobs to the library: a finished job's faces become a segment, offered and then folded in.

`offer_job` runs in the job's finalize (every face a job committed joins, even from a partial or
cancelled job); `fold_waiting` folds every offered segment under the library's commit protocol (the job's
finalize calls it, and so does the on-demand fold task). An offer that could not be folded (the library
was busy with a re-cluster) stays offered and joins with the next fold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import numpy as np

from storage import keys
from storage.errors import ObjectNotFound
from storage.library import LibraryBusy, LibraryStore
from storage.library.documents import SegmentDoc, SegmentFace, SegmentRef
from storage.names import ItemState
from storage.records import Item, Job
from workers.context import WorkerContext
from workers.faces.index import read_embeddings, read_table
from workers.faces.spaces import space_of
from workers.library.fold import FoldReport, fold
from workers.library.recluster import ReclusterReport, recluster
from workers.people.cluster import Algorithm

log = logging.getLogger("nightshift.library")
SEGMENT_FACES = 100_000  # faces per segment: a huge night is split, a small one is one object


def library(ctx: WorkerContext, tenant: str) -> LibraryStore:
    return LibraryStore(ctx.store, ctx.records, tenant)


class KnownPhotos:
    """The photos a tenant's library holds for one embedding space, as 64-bit ids (duplicate checks)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids

    def has(self, sha: str) -> bool:
        key = np.uint64(int(sha[:16], 16))
        at = int(np.searchsorted(self.ids, key))
        return at < len(self.ids) and self.ids[at] == key


_known: dict[tuple[str, str], tuple[tuple[int, tuple[str, ...]], KnownPhotos]] = {}


def known_photos(ctx: WorkerContext, tenant: str, model: str) -> KnownPhotos:
    """Photos already indexed with `model`'s space: in the library, or offered to it and not folded yet.

    Cached per process for one library version and set of waiting offers (two small listings tell whether
    either moved), so a job that starts right after another sees the photos that one brought.
    """
    lib = library(ctx, tenant)
    head = lib.head()
    version = (head.version if head else 0, tuple(sorted(lib.waiting_keys())))
    cached = _known.get((tenant, model))
    if cached and cached[0] == version:
        return cached[1]
    waiting = lib.waiting()
    space = space_of(model).id
    refs = [r for r in head.segments if space_of(r.model).id == space] if head else []
    refs += [r for _, offered in waiting for r in offered if space_of(r.model).id == space]
    parts = [lib.photo_index(r) for r in refs]
    known = KnownPhotos(np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64))
    _known[(tenant, model)] = (version, known)
    return known


def job_segments(
    ctx: WorkerContext, job: Job, items: Iterable[Item], model: str, dim: int, thumbnails: bool
) -> list[tuple[SegmentDoc, np.ndarray]]:
    """The faces a job committed, as segments (faces in item order, with their vectors)."""
    done = {it.index: it for it in items if it.state in (ItemState.DONE, ItemState.SKIPPED)}
    photos = {it.info["sha256"]: keys.strip_tenant(job.tenant, it.key) for it in done.values() if "sha256" in it.info}
    parts = sorted({it.info["part"] for it in done.values() if it.state == ItemState.DONE and "part" in it.info})
    faces: list[SegmentFace] = []
    vectors: list[np.ndarray] = []
    for part in parts:
        try:
            table = read_table(ctx.store.get_bytes(keys.part(job.tenant, job.id, part, "parquet"))).to_pylist()
            matrix = read_embeddings(ctx.store.get_bytes(keys.part(job.tenant, job.id, part, "npy")))
        except ObjectNotFound:
            continue
        for row in table:
            item = done.get(int(row["item_id"]))
            if item is None or item.info.get("part") != part:
                continue  # a part left by a delivery that died: its item was redone in another part
            index = int(row["face_index"])
            thumb = keys.face_thumbnail(job.tenant, job.id, item.index, index) if thumbnails else None
            faces.append(
                SegmentFace(
                    face=f"{job.id}:{item.index}:{index}",
                    job=job.id,
                    item=item.index,
                    photo=row["photo_sha256"],
                    photo_key=row["photo_key"],
                    thumb=keys.strip_tenant(job.tenant, thumb) if thumb else None,
                    box=(row["x1"], row["y1"], row["x2"], row["y2"]),
                    score=row["score"],
                    taken=item.info.get("taken"),
                    width=row["photo_width"],
                    height=row["photo_height"],
                    name=item.name,
                )
            )
            vectors.append(matrix[int(row["embedding_row"])])
    order = sorted(range(len(faces)), key=lambda n: (faces[n].item, faces[n].face))
    faces = [faces[n] for n in order]
    stacked = np.stack([vectors[n] for n in order]).astype(np.float32) if faces else np.zeros((0, dim), np.float32)
    out = []
    for n, lo in enumerate(range(0, max(len(faces), 1), SEGMENT_FACES)):
        chunk = faces[lo : lo + SEGMENT_FACES]
        if not chunk and n:
            break
        out.append(
            (
                SegmentDoc.of(f"{job.id}-{n:03d}", job.id, model, dim, chunk, photos if n == 0 else {}),
                stacked[lo : lo + SEGMENT_FACES],
            )
        )
    return out


def offer_job(
    ctx: WorkerContext, job: Job, items: Iterable[Item], model: str, dim: int, thumbnails: bool
) -> list[SegmentRef]:
    """Write the job's segments and offer them to its tenant's library."""
    lib = library(ctx, job.tenant)
    refs = [lib.put_segment(doc, matrix) for doc, matrix in job_segments(ctx, job, items, model, dim, thumbnails)]
    lib.offer(job.id, refs)
    return refs


def fold_waiting(ctx: WorkerContext, tenant: str, *, wait: float = 30.0) -> dict[str, Any]:
    """Fold every offered segment into the library; returns the fold's summary (or why it waits)."""
    lib = library(ctx, tenant)
    waiting = lib.waiting()
    min_faces = ctx.settings.library.min_faces

    def change(state: Any) -> FoldReport:
        return fold(state, [ref for _, refs in waiting for ref in refs], min_faces=min_faces)

    try:
        head, report = lib.commit(change, wait=wait)
    except LibraryBusy as exc:
        return {"pending": True, "reason": str(exc)}
    for key, _ in waiting:
        try:
            ctx.store.delete(key)
        except ObjectNotFound:
            pass
    return {**report.summary(), "version": head.version}


def recluster_library(
    ctx: WorkerContext, tenant: str, *, algorithm: Algorithm = "average", threshold: float | None = None
) -> dict[str, Any]:
    """Re-cluster the whole library (holding its lock: decisions made meanwhile are logged, then applied)."""
    lib = library(ctx, tenant)
    min_faces = ctx.settings.library.min_faces

    def change(state: Any) -> ReclusterReport:
        return recluster(state, algorithm=algorithm, threshold=threshold, min_faces=min_faces)

    head, report = lib.commit(change, wait=600, lock_ttl=120)
    return {**asdict(report), "version": head.version}
