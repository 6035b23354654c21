"""Vectors in the store: a segment's embeddings as raw float32 rows (so one row is one ranged read), and
small packed objects (a JSON header plus a float32 matrix) for exemplars. Exemplar choice lives here too:
it is plain numpy, used by the API (merges, moves) as by the workers."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAX_EXEMPLARS = 24  # vectors that stand for a person when new faces are compared with them


def pack(meta: dict[str, Any], matrix: np.ndarray) -> bytes:
    """A JSON header and a float32 matrix in one object: 4-byte header length, header, rows."""
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    header = json.dumps({**meta, "shape": list(matrix.shape)}).encode()
    return struct.pack("<I", len(header)) + header + matrix.tobytes()


def unpack(data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """The header and matrix `pack` wrote. Raises ValueError on anything else."""
    if len(data) < 4:
        raise ValueError("not a packed vector object")
    (length,) = struct.unpack("<I", data[:4])
    meta = json.loads(data[4 : 4 + length])
    shape = tuple(meta.pop("shape"))
    matrix = np.frombuffer(data, dtype="<f4", offset=4 + length).reshape(shape)
    return meta, matrix.astype(np.float32)


def rows_bytes(matrix: np.ndarray) -> bytes:
    return np.ascontiguousarray(matrix, dtype="<f4").tobytes()


def from_rows(data: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").reshape(-1, dim).astype(np.float32)


def choose_exemplars(vectors: np.ndarray, confirmed: np.ndarray, limit: int = MAX_EXEMPLARS) -> np.ndarray:
    """Indices of at most `limit` rows that cover a person's looks: confirmed faces first (up to half), then a
    greedy k-center pass (each pick is the face farthest from those picked) over the faces nearest the centre,
    so one mistaken face far from the rest does not become a standard. Deterministic for the same input."""
    n = len(vectors)
    if n <= limit:
        return np.arange(n)
    centre = vectors.mean(axis=0)
    to_centre = np.linalg.norm(vectors - centre, axis=1)
    core = to_centre <= np.quantile(to_centre, 0.9)  # the outer tenth never stands for the person
    picked = [int(i) for i in np.flatnonzero(confirmed & core)[: limit // 2]]
    if not picked:
        picked = [int(np.argmin(to_centre))]
    nearest = np.min(np.linalg.norm(vectors[:, None, :] - vectors[picked][None, :, :], axis=2), axis=1)
    nearest[~core] = -1.0
    nearest[picked] = -1.0
    while len(picked) < limit and nearest.max() > 0:
        k = int(np.argmax(nearest))
        picked.append(k)
        nearest = np.minimum(nearest, np.linalg.norm(vectors - vectors[k], axis=1))
        nearest[picked] = -1.0
        nearest[~core] = -1.0
    return np.array(sorted(picked))
