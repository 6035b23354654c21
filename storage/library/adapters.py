"""Adapters: heads learnt from a library's decisions, versioned per tenant (``adapters/v<n>.json``).

An adapter is a (dim, dim) matrix M over the library's raw vectors (a face is compared as ``x @ M``) and the
document that says how it was trained and validated. Vectors stay raw everywhere; a head's `adapter` field
names the one in use, so adopting one and rolling it back are one commit each and never rewrite data.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from storage import keys
from storage.errors import ObjectNotFound, PreconditionFailed
from storage.library.documents import AdapterDoc, Head
from storage.library.store import LibraryStore
from storage.library.vectors import pack

VERSION_ATTEMPTS = 20


class Adapters:
    """One tenant's adapters."""

    def __init__(self, lib: LibraryStore) -> None:
        self.lib = lib
        self.tenant = lib.tenant

    def put(self, doc: AdapterDoc, matrix: np.ndarray) -> AdapterDoc:
        """Store a new version: the matrix (content-addressed), then the document under the next free version
        (a conditional create: of two writers, each gets its own version). Returns the document as stored."""
        matrix = np.ascontiguousarray(matrix, dtype="<f4")
        if matrix.shape != (doc.dim, doc.dim):
            raise ValueError(f"an adapter of dim {doc.dim} needs a ({doc.dim}, {doc.dim}) matrix, not {matrix.shape}")
        data = pack({"space": doc.space}, matrix)
        weights = keys.library_adapter_weights(self.tenant, hashlib.sha256(data).hexdigest())
        self.lib.store.put_bytes(weights, data)
        version = self.newest_version() + 1
        for _ in range(VERSION_ATTEMPTS):
            stored = doc.model_copy(update={"version": version, "weights": weights})
            try:
                self.lib.store.put_if_absent(
                    keys.library_adapter(self.tenant, version), stored.model_dump_json().encode()
                )
                return stored
            except PreconditionFailed:
                version += 1
        raise PreconditionFailed("could not find a free adapter version")

    def newest_version(self) -> int:
        newest = 0
        for obj in self.lib.store.list(keys.library_adapters(self.tenant), recursive=False):
            name = obj.key.rsplit("/", 1)[-1]
            if name.startswith("v") and name.endswith(".json"):
                newest = max(newest, int(name[1:-5]))
        return newest

    def get(self, key: str) -> AdapterDoc:
        """An adapter's document by key; raises ObjectNotFound."""
        return self.lib.document(key, AdapterDoc, gz=False)

    def key(self, version: int) -> str:
        return keys.library_adapter(self.tenant, version)

    def version(self, key: str | None) -> int | None:
        """The version an adapter key names (None for None: the raw vectors)."""
        return None if key is None else keys.library_adapter_version(self.tenant, key)

    def matrix(self, doc: AdapterDoc) -> np.ndarray:
        """The adapter's (dim, dim) matrix (cached per process like every immutable object)."""
        _, matrix = self.lib.packed(doc.weights)
        return matrix

    def all(self) -> list[AdapterDoc]:
        """Every version, newest first."""
        out = []
        for obj in self.lib.store.list(keys.library_adapters(self.tenant), recursive=False):
            if obj.key.endswith(".json"):
                try:
                    out.append(AdapterDoc.model_validate_json(self.lib.store.get_bytes(obj.key)))
                except (ObjectNotFound, json.JSONDecodeError):
                    continue
        return sorted(out, key=lambda d: -d.version)

    def rollback_target(self, head: Head | None) -> tuple[AdapterDoc, str | None]:
        """(the adapter in use, the one a rollback returns to: the one in use before it, or None for raw
        vectors). Raises LookupError when no adapter is in use."""
        if head is None or head.adapter is None:
            raise LookupError("no learnt head is in use: nothing to roll back")
        current = self.get(head.adapter)
        return current, current.previous
