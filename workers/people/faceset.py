"""Loading the faces of finished index jobs (face tables + embedding matrices) into memory.

Finished jobs never change, so each job's faces are cached per worker process (bounded by face count).
Face ids are ``<job>:<item>:<face>``; a photo is identified by its content hash, so the same photo
indexed twice still counts as one photo for cannot-link constraints.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage import keys
from storage.errors import ObjectNotFound
from workers.context import WorkerContext
from workers.faces.index import read_embeddings, read_table
from workers.faces.spaces import comparable

INDEX_NAME = "faces-index.json"
CACHE_MAX_FACES = 5_000_000
_cache: OrderedDict[tuple[str, str], FaceSet] = OrderedDict()


class NoIndex(ValueError):
    """A job has no face index (not a finished faces job)."""


@dataclass
class FaceSet:
    """Faces and their embeddings: row i of `embeddings` is face `ids[i]`."""

    ids: list[str] = field(default_factory=list)
    photos: list[str] = field(default_factory=list)  # photo content hash
    rows: list[dict[str, Any]] = field(default_factory=list)  # job, item, face, photo_key, box, score
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))
    model: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, sets: list[FaceSet]) -> FaceSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            return cls()
        models = {s.model for s in sets}
        first = sets[0].model
        if any(not comparable(first, m) for m in models):
            raise ValueError(
                f"these indexes use embedding models of different spaces ({sorted(models)}); "
                "their distances are not comparable: re-index with one model"
            )
        return cls(
            [i for s in sets for i in s.ids],
            [p for s in sets for p in s.photos],
            [r for s in sets for r in s.rows],
            np.concatenate([s.embeddings for s in sets]),
            first,
        )


def face_id(job_id: str, item: int | str, face: int) -> str:
    return f"{job_id}:{item}:{face}"


def parse_face_id(fid: str) -> tuple[str, int, int]:
    """(job, item, face) of a face id; raises ValueError for a malformed one."""
    job, item, face = fid.split(":")
    return job, int(item), int(face)


def load_job(ctx: WorkerContext, tenant: str, job_id: str) -> FaceSet:
    """The faces of one finished index job (cached)."""
    cached = _cache.get((tenant, job_id))
    if cached is not None:
        _cache.move_to_end((tenant, job_id))
        return cached
    try:
        index = ctx.store.get_json(keys.job_artifact(tenant, job_id, INDEX_NAME))
    except ObjectNotFound:
        raise NoIndex(f"job {job_id} has no face index: it is not a finished faces job") from None
    parts = []
    for part in index["parts"]:
        table = read_table(ctx.store.get_bytes(keys.tenant_key(tenant, part["table"]))).to_pylist()
        matrix = read_embeddings(ctx.store.get_bytes(keys.tenant_key(tenant, part["embeddings"])))
        rows = [
            {
                "job": job_id,
                "item": int(r["item_id"]),
                "face": int(r["face_index"]),
                "photo_key": r["photo_key"],
                "box": [r["x1"], r["y1"], r["x2"], r["y2"]],
                "score": r["score"],
            }
            for r in table
        ]
        order = [int(r["embedding_row"]) for r in table]
        parts.append(
            FaceSet(
                [face_id(job_id, r["item"], r["face"]) for r in rows],
                [str(r["photo_sha256"]) for r in table],
                rows,
                matrix[order],
                index["model"],
            )
        )
    faces = FaceSet.concat(parts) if parts else FaceSet(model=index["model"])
    _cache[(tenant, job_id)] = faces
    while sum(len(s) for s in _cache.values()) > CACHE_MAX_FACES and len(_cache) > 1:
        _cache.popitem(last=False)
    return faces


def load_jobs(ctx: WorkerContext, tenant: str, job_ids: list[str]) -> FaceSet:
    return FaceSet.concat([load_job(ctx, tenant, j) for j in dict.fromkeys(job_ids)])


def tenant_index_jobs(ctx: WorkerContext, tenant: str, limit: int = 10_000) -> list[str]:
    """Every finished faces job of the tenant that has an index, newest first."""
    jobs = ctx.records.list_jobs(tenant, kind="faces", limit=limit)
    return [j.id for j in jobs if j.state in ("succeeded", "partial") and j.done]
