"""Nearest-neighbour search over face embeddings: the `VectorIndex` interface and the exact `ExactIndex`.

Distances are Euclidean, as dlib's descriptors are compared. `ExactIndex` ranks with blocked matrix
products (||q||^2 + ||x||^2 - 2 q.x, float32) so memory stays bounded at millions of rows, then recomputes
the distances of the survivors directly, because the expanded form loses precision for near-identical
vectors. An approximate index (HNSW, IVF) can replace it behind the same interface.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

Hit = tuple[str, float]

# Extra candidates re-ranked with exact distances: the expanded form can swap neighbours whose squared
# distances differ by about float32 epsilon, never by more than a few places.
_RERANK_MARGIN = 8
_FORMAT = "nightshift.exact-index.v1"


class VectorIndex(ABC):
    """k-nearest-neighbour search over vectors with string ids."""

    @abstractmethod
    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Add (n, dim) vectors under `ids`. Raises ValueError on bad shapes or ids already present."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """For each query row, up to `k` (id, distance) pairs, nearest first."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def save(self) -> bytes:
        """The index as bytes that `load` reads back."""

    @classmethod
    @abstractmethod
    def load(cls, data: bytes) -> VectorIndex:
        """An index saved by `save`. Raises ValueError when `data` is not one."""


def as_matrix(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """`vectors` as a C-contiguous (n, dim) float32 matrix; a single vector becomes one row.

    Raises ValueError on the wrong dimension or non-finite values.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or (dim is not None and matrix.shape[1] != dim):
        raise ValueError(f"expected vectors of shape (n, {dim or 'dim'}), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinity")
    return np.ascontiguousarray(matrix)


def _top_k(d2: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the `k` smallest entries of each row, unordered."""
    if k >= d2.shape[1]:
        return np.broadcast_to(np.arange(d2.shape[1]), d2.shape).copy()
    return np.argpartition(d2, k - 1, axis=1)[:, :k]


class ExactIndex(VectorIndex):
    """Brute-force exact search in float32, blocked over queries and rows (~4 * block_queries * block_rows bytes)."""

    def __init__(self, dim: int = 128, *, block_rows: int = 65536, block_queries: int = 256) -> None:
        self.dim = dim
        self.block_rows = block_rows
        self.block_queries = block_queries
        self._ids: list[str] = []
        self._known: set[str] = set()
        self._pending: list[np.ndarray] = []
        self._matrix = np.zeros((0, dim), np.float32)
        self._norms = np.zeros(0, np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """The ids in insertion order (row i of `vectors` belongs to ``ids[i]``)."""
        return list(self._ids)

    @property
    def vectors(self) -> np.ndarray:
        """All vectors as one read-only (n, dim) float32 matrix."""
        self._consolidate()
        view = self._matrix.view()
        view.flags.writeable = False
        return view

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        matrix = as_matrix(vectors, self.dim)
        ids = [str(i) for i in ids]
        if len(ids) != len(matrix):
            raise ValueError(f"{len(matrix)} vectors but {len(ids)} ids")
        fresh = set(ids)
        if len(fresh) != len(ids) or not fresh.isdisjoint(self._known):
            raise ValueError("ids must be unique and not already in the index")
        if any("\n" in i for i in ids):
            raise ValueError("ids must not contain newlines")
        self._ids.extend(ids)
        self._known |= fresh
        self._pending.append(matrix)

    def _consolidate(self) -> None:
        if self._pending:
            self._matrix = np.concatenate([self._matrix, *self._pending])
            self._norms = np.einsum("ij,ij->i", self._matrix, self._matrix)
            self._pending = []

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        q = as_matrix(queries, self.dim)
        self._consolidate()
        k = min(k, len(self))
        if k <= 0:
            return [[] for _ in range(len(q))]
        hits: list[list[Hit]] = []
        for start in range(0, len(q), self.block_queries):
            rows, dists = self._search_block(q[start : start + self.block_queries], k)
            for row, dist in zip(rows.tolist(), dists.tolist(), strict=True):
                hits.append([(self._ids[r], d) for r, d in zip(row, dist, strict=True)])
        return hits

    def _search_block(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and distances of the `k` nearest rows for each query of a block."""
        wanted = min(k + _RERANK_MARGIN, len(self))
        q_norms = np.einsum("ij,ij->i", q, q)
        best_rows = np.zeros((len(q), 0), np.int64)
        best_d2 = np.zeros((len(q), 0), np.float32)
        for start in range(0, len(self), self.block_rows):
            block = self._matrix[start : start + self.block_rows]
            d2 = q_norms[:, None] + self._norms[None, start : start + len(block)] - 2 * (q @ block.T)
            cols = _top_k(d2, wanted)
            rows = np.concatenate([best_rows, cols + start], axis=1)
            d2 = np.concatenate([best_d2, np.take_along_axis(d2, cols, axis=1)], axis=1)
            keep = _top_k(d2, wanted)
            best_rows, best_d2 = np.take_along_axis(rows, keep, axis=1), np.take_along_axis(d2, keep, axis=1)
        exact = np.linalg.norm(self._matrix[best_rows] - q[:, None, :], axis=2)
        # distance first, then row: ties resolve to the earlier-added vector, like a stable argsort
        order = np.lexsort((best_rows, exact), axis=1)[:, :k]
        return np.take_along_axis(best_rows, order, axis=1), np.take_along_axis(exact, order, axis=1)

    def save(self) -> bytes:
        self._consolidate()
        sink = io.BytesIO()
        ids = np.frombuffer("\n".join(self._ids).encode(), dtype=np.uint8)
        np.savez(sink, format=np.array(_FORMAT), vectors=self._matrix, ids=ids)
        return sink.getvalue()

    @classmethod
    def load(cls, data: bytes) -> ExactIndex:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                if str(archive["format"]) != _FORMAT:
                    raise ValueError(f"not an exact index: {archive['format']}")
                vectors, raw_ids = archive["vectors"], archive["ids"].tobytes().decode()
        except (OSError, KeyError, EOFError) as error:
            raise ValueError(f"not a saved index: {error}") from error
        index = cls(dim=vectors.shape[1])
        if len(vectors):
            index.add(vectors, raw_ids.split("\n"))
        return index


def radius_pairs(
    vectors: np.ndarray, radius: float, *, max_neighbors: int | None = None, max_block_cells: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows closer than `radius`: (i, j, distance) arrays with i < j, sorted by (i, j).

    With `max_neighbors`, only pairs where one row is among the other's `max_neighbors` nearest, which bounds
    the pairs at ``n * max_neighbors`` when many rows crowd together (one person's thousands of faces).
    Blocked over rows so one block of distances holds at most `max_block_cells` floats; quadratic time,
    which is fine up to ~10^5 faces.
    """
    x = as_matrix(vectors)
    block = max(16, min(4096, max_block_cells // max(len(x), 1)))
    norms = np.einsum("ij,ij->i", x, x)
    # a little slack on the squared radius so float32 error never drops a pair the exact check keeps
    limit = radius * radius + 1e-4
    found_i, found_j = [], []
    for start in range(0, len(x), block):
        rows = x[start : start + block]
        if max_neighbors is None:
            i, j = _upper_pairs(rows, x[start:], norms[start : start + len(rows)], norms[start:], limit)
            j = j + start  # columns counted from `start`: j > i is the strict upper triangle
        else:
            i, j = _nearest_pairs(rows, x, norms[start : start + len(rows)], norms, limit, max_neighbors, start)
        found_i.append(i + start)
        found_j.append(j)
    i = np.concatenate(found_i) if found_i else np.zeros(0, np.int64)
    j = np.concatenate(found_j) if found_j else np.zeros(0, np.int64)
    if max_neighbors is not None:  # a pair can come from both of its rows
        unique = np.unique(np.minimum(i, j) * len(x) + np.maximum(i, j))
        i, j = unique // max(len(x), 1), unique % max(len(x), 1)
    d = np.linalg.norm(x[i] - x[j], axis=1) if len(i) else np.zeros(0, np.float32)
    keep = d < radius
    return i[keep], j[keep], d[keep].astype(np.float32)


def _upper_pairs(
    rows: np.ndarray, cols: np.ndarray, row_norms: np.ndarray, col_norms: np.ndarray, limit: float
) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the cells under `limit` with column > row (the block starts on the diagonal)."""
    d2 = row_norms[:, None] + col_norms[None, :] - 2 * (rows @ cols.T)
    i, j = np.nonzero(d2 < limit)
    upper = j > i
    return i[upper], j[upper]


def _nearest_pairs(
    rows: np.ndarray, x: np.ndarray, row_norms: np.ndarray, norms: np.ndarray, limit: float, k: int, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of each row's `k` nearest other columns that are under `limit`."""
    d2 = row_norms[:, None] + norms[None, :] - 2 * (rows @ x.T)
    d2[np.arange(len(rows)), start + np.arange(len(rows))] = np.inf  # not its own neighbour
    k = min(k, len(x) - 1)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cols = np.argpartition(d2, k - 1, axis=1)[:, :k]
    i, n = np.nonzero(np.take_along_axis(d2, cols, axis=1) < limit)
    return i, cols[i, n]


def distances(queries: np.ndarray, vectors: np.ndarray, *, max_block_cells: int = 1 << 24) -> np.ndarray:
    """The dense (n_queries, n_vectors) float32 matrix of Euclidean distances, blocked over queries.

    Computed in the expanded form, so a distance near zero can read up to ~sqrt(float32 eps) * |x| (~3e-4).
    """
    q, x = as_matrix(queries), as_matrix(vectors)
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]}, vectors {x.shape[1]}")
    out = np.empty((len(q), len(x)), np.float32)
    x_norms = np.einsum("ij,ij->i", x, x)
    step = max(1, max_block_cells // max(len(x), 1))
    for start in range(0, len(q), step):
        block = q[start : start + step]
        d2 = np.einsum("ij,ij->i", block, block)[:, None] + x_norms[None, :] - 2 * (block @ x.T)
        out[start : start + len(block)] = np.sqrt(np.maximum(d2, 0))
    return out
