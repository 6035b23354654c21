"""How a library compares faces: its raw vectors, or through the head it adopted (`storage.library.adapters`).

The one place that answers "what transform does this library version use": fold (scoring faces against
people, clustering the pool), re-cluster, search and identification all call `transform_for`. Vectors are
stored raw; a head is applied when faces are compared, so adopting one and rolling it back rewrite nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from storage.library import LibraryStore
from storage.library.adapters import Adapters

_CACHE_SIZE = 32


@dataclass(frozen=True)
class Transform:
    """x -> x @ matrix (matrix None: the identity). `key` names the adapter, for reports."""

    key: str | None = None
    matrix: np.ndarray | None = None

    @property
    def identity(self) -> bool:
        return self.matrix is None

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors as the library compares them (float32; the input itself when there is no head)."""
        if self.matrix is None or not len(vectors):
            return vectors
        if vectors.shape[-1] != self.matrix.shape[0]:
            raise ValueError(
                f"vectors of dim {vectors.shape[-1]} cannot go through a head of dim {self.matrix.shape[0]}"
            )
        return np.asarray(vectors, np.float32) @ self.matrix


IDENTITY = Transform()
_cache: OrderedDict[str, Transform] = OrderedDict()
_lock = threading.Lock()


def transform_for(lib: LibraryStore, adapter: str | None) -> Transform:
    """The transform of an adapter key (a head's or a state's `adapter`), loaded once per process."""
    if adapter is None:
        return IDENTITY
    where = f"{lib.store.settings.endpoint}/{lib.store.bucket}/{adapter}"
    with _lock:
        hit = _cache.get(where)
        if hit is not None:
            _cache.move_to_end(where)
            return hit
    adapters = Adapters(lib)
    found = Transform(adapter, adapters.matrix(adapters.get(adapter)))
    with _lock:
        _cache[where] = found
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return found
