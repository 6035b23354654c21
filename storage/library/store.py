"""Reading and committing a tenant's library in the object store.

A commit is optimistic and fenced: under the library's lock (redis-py, extended while held) the committer
reads the newest head, builds the next version's objects under fresh keys, and creates
``heads/v<n+1>.json`` with a conditional write (``If-None-Match: *``). Of two writers that both read
version n, only one can create n+1; the other starts again from the new head. A user's decision is
written to the decision log before anything else, and every commit first applies the decisions not
yet applied, so no commit can lose one, even one made while a long re-cluster held the lock.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from storage import keys
from storage.errors import ObjectNotFound, PreconditionFailed, StorageError
from storage.library.documents import (
    AssignDoc,
    Decision,
    Head,
    MembersDoc,
    PeopleDoc,
    SegmentDoc,
    SegmentRef,
)
from storage.library.vectors import from_rows, unpack
from storage.objects import ObjectStore
from storage.records import RecordStore

log = logging.getLogger("nightshift.library")
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
RECENT_DECISIONS = 2000  # ids a head remembers as applied (far more than happen between two commits)
COMMIT_ATTEMPTS = 5


class LibraryBusy(StorageError):
    """The library stayed locked (a long re-cluster or fold); a decision was logged and will apply later."""


class _Cache:
    """A small LRU of immutable documents (keys never change content), bounded by a cost per entry."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], Any], cost: Callable[[Any], int] = lambda _: 1) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        value = load()
        size = cost(value)
        with self._lock:
            self._items[key] = (value, size)
            self.used += size
            while self.used > self.budget and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self.used -= dropped
        return value


_documents = _Cache(budget=100_000)  # entries weigh a tenth of their face count (or 1): about 1M faces
_vectors = _Cache(budget=512 * 1024 * 1024)  # bytes of embedding matrices


def _doc_cost(doc: Any) -> int:
    if isinstance(doc, SegmentDoc):
        return max(1, len(doc.faces) // 10)
    if isinstance(doc, MembersDoc):
        return max(1, len(doc.faces) // 10)
    return 1


def photo_ids(shas: set[str] | list[str]) -> np.ndarray:
    """Photos as sorted unique 64-bit ids: the first 16 hex digits of their sha256 (collisions are
    negligible below billions of photos)."""
    return np.unique(np.array([int(s[:16], 16) for s in shas], dtype=np.uint64)).astype("<u8")


def gz_json(doc: BaseModel) -> bytes:
    return gzip.compress(doc.model_dump_json(exclude_none=False).encode(), compresslevel=5)


def writer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LibraryStore:
    """One tenant's library: heads, segments, state objects and the decision log."""

    def __init__(self, store: ObjectStore, records: RecordStore, tenant: str) -> None:
        self.store = store
        self.records = records
        self.tenant = tenant
        keys.check_tenant(tenant)

    def _where(self, key: str) -> str:
        """A cache key: the same object key on two stores (tests, benchmarks) is two objects."""
        return f"{self.store.settings.endpoint}/{self.store.bucket}/{key}"

    # -- reading -----------------------------------------------------------------------------------
    def head(self) -> Head | None:
        """The newest version (None for an empty library)."""
        start = None
        try:
            hint = json.loads(self.store.get_bytes(keys.library_head_hint(self.tenant)))
            start = keys.library_head(self.tenant, int(hint["version"]) - 1)
        except (ObjectNotFound, ValueError, KeyError):
            pass
        newest = None
        for obj in self.store.list(keys.library_heads(self.tenant), start_after=start):
            newest = obj.key
        if newest is None and start is not None:  # the hint is ahead of what exists: list everything
            for obj in self.store.list(keys.library_heads(self.tenant)):
                newest = obj.key
        if newest is None:
            return None
        return self.document(newest, Head, gz=False)

    def document(self, key: str, model: type[M], *, gz: bool = True) -> M:
        """An immutable document (cached per process)."""

        def load() -> M:
            data = self.store.get_bytes(key)
            return model.model_validate_json(gzip.decompress(data) if gz else data)

        return _documents.get(self._where(key), load, _doc_cost)  # type: ignore[no-any-return]

    def people(self, head: Head | None) -> PeopleDoc:
        if head is None or head.people is None:
            return PeopleDoc()
        return self.document(head.people, PeopleDoc)

    def members(self, key: str | None) -> MembersDoc:
        return self.document(key, MembersDoc) if key else MembersDoc(faces=[])

    def segment(self, ref: SegmentRef) -> SegmentDoc:
        return self.document(keys.library_segment(self.tenant, ref.id, "faces.json.gz"), SegmentDoc)

    def assignments(self, ref: SegmentRef) -> AssignDoc:
        if ref.assign is None:
            return AssignDoc(person=[None] * ref.faces)
        return self.document(ref.assign, AssignDoc)

    def embeddings(self, ref: SegmentRef) -> np.ndarray:
        """All of a segment's vectors, (faces, dim) float32 (cached per process, bounded in bytes)."""
        key = keys.library_segment(self.tenant, ref.id, "embeddings.f32")
        return _vectors.get(
            self._where(key),
            lambda: from_rows(self.store.get_bytes(key), ref.dim),  # type: ignore[no-any-return]
            lambda m: int(m.nbytes),
        )

    def embedding_rows(self, ref: SegmentRef, rows: list[int]) -> np.ndarray:
        """Some rows of a segment's vectors: ranged reads when they are few, else the whole object."""
        if len(rows) > 16:
            return self.embeddings(ref)[rows]
        key = keys.library_segment(self.tenant, ref.id, "embeddings.f32")
        width = ref.dim * 4
        return (
            np.stack([from_rows(self.store.get_range(key, r * width, width), ref.dim)[0] for r in rows])
            if rows
            else np.zeros((0, ref.dim), np.float32)
        )

    def photo_index(self, ref: SegmentRef) -> np.ndarray:
        """The segment's photos as sorted 64-bit ids (`photo_ids`): 8 bytes a photo, for duplicate checks."""
        key = keys.library_segment(self.tenant, ref.id, "photos.u64")
        return _vectors.get(
            self._where(key),
            lambda: np.frombuffer(self.store.get_bytes(key), dtype="<u8"),  # type: ignore[no-any-return]
            lambda a: int(a.nbytes) + 1,
        )

    def packed(self, key: str) -> tuple[dict[str, Any], np.ndarray]:
        return _vectors.get(
            self._where(key),
            lambda: unpack(self.store.get_bytes(key)),  # type: ignore[no-any-return]
            lambda v: int(v[1].nbytes) + 1,
        )

    # -- writing objects -------------------------------------------------------------------------------
    def put_doc(self, key: str, doc: BaseModel) -> str:
        self.store.put_bytes(key, gz_json(doc), "application/gzip")
        return key

    def put_segment(self, doc: SegmentDoc, matrix: np.ndarray) -> SegmentRef:
        """Write an immutable segment (its vectors first: a segment's faces file means it is whole)."""
        from storage.library.vectors import rows_bytes

        if matrix.shape != (len(doc.faces), doc.dim):
            raise ValueError(f"{len(doc.faces)} faces but vectors {matrix.shape}")
        self.store.put_bytes(keys.library_segment(self.tenant, doc.segment, "embeddings.f32"), rows_bytes(matrix))
        shas = set(doc.photos) | set(doc.faces.column("photo"))
        self.store.put_bytes(keys.library_segment(self.tenant, doc.segment, "photos.u64"), photo_ids(shas).tobytes())
        self.put_doc(keys.library_segment(self.tenant, doc.segment, "faces.json.gz"), doc)
        return SegmentRef(
            id=doc.segment, job=doc.job, model=doc.model, dim=doc.dim, faces=len(doc.faces), photos=len(doc.photos)
        )

    # -- intake: segments of finished jobs waiting to join ------------------------------------------
    def offer(self, job_id: str, refs: list[SegmentRef]) -> None:
        """Announce a finished job's segments; the next commit that folds takes them in."""
        body = json.dumps({"job": job_id, "segments": [r.model_dump() for r in refs]}).encode()
        self.store.put_bytes(keys.library_intake(self.tenant, job_id), body, "application/json")

    def waiting_keys(self) -> list[str]:
        """The intake keys of offered jobs (one listing, no reads)."""
        return [obj.key for obj in self.store.list(keys.library_intake_prefix(self.tenant))]

    def waiting(self) -> list[tuple[str, list[SegmentRef]]]:
        """(intake key, segments) of every offered job, oldest first."""
        out = []
        for obj in self.store.list(keys.library_intake_prefix(self.tenant)):
            try:
                doc = json.loads(self.store.get_bytes(obj.key))
            except ObjectNotFound:
                continue  # taken in by another commit meanwhile
            out.append((obj.key, [SegmentRef.model_validate(r) for r in doc["segments"]]))
        return out

    # -- decisions -------------------------------------------------------------------------------------
    def log_decision(self, decision: Decision) -> None:
        """Write a decision to the log (before it changes anything: it can never be lost)."""
        self.store.put_if_absent(keys.library_decision(self.tenant, decision.id), decision.model_dump_json().encode())

    def pending_decisions(self, head: Head | None) -> list[Decision]:
        """Decisions in the log that `head` has not applied, oldest first."""
        applied = set(head.decisions_applied) if head else set()
        start = keys.library_decision(self.tenant, min(applied)) if applied else None
        out = []
        for obj in self.store.list(keys.library_decisions(self.tenant), start_after=start):
            decision_id = obj.key.rsplit("/", 1)[-1].removesuffix(".json")
            if decision_id not in applied:
                out.append(Decision.model_validate_json(self.store.get_bytes(obj.key)))
        return out

    def decisions(self) -> list[Decision]:
        """The whole log, oldest first (what users said, for audits and rebuilds)."""
        return [
            Decision.model_validate_json(self.store.get_bytes(o.key))
            for o in self.store.list(keys.library_decisions(self.tenant))
        ]

    # -- commit ----------------------------------------------------------------------------------------
    def commit(self, change: Callable[[Any], T], *, wait: float = 20.0, lock_ttl: float = 60.0) -> tuple[Head, T]:
        """Apply pending decisions then `change(state)` to the newest version, and create the next one.

        Raises LibraryBusy when the lock is not free within `wait` seconds.
        """
        from storage.coordination import LockBusy
        from storage.library.decisions import apply_decision
        from storage.library.state import LibraryState

        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with self.records.hold_lock(f"library:{self.tenant}", ttl=lock_ttl, wait=wait) as held:
                    base = self.head()
                    state = LibraryState(self, base)
                    for decision in self.pending_decisions(base):
                        apply_decision(state, decision)
                    result = change(state)
                    head = state.finish(writer_id())
                    if not held.still_held():
                        raise PreconditionFailed("library lock lost before the commit")
                    self.store.put_if_absent(
                        keys.library_head(self.tenant, head.version), head.model_dump_json().encode()
                    )
            except LockBusy:
                raise LibraryBusy(
                    "the library is busy (a re-cluster or a night's faces are being added); "
                    "your change is saved and applies when that ends"
                ) from None
            except PreconditionFailed:
                log.warning("library commit of %s lost a race (attempt %d); retrying", self.tenant, attempt)
                continue
            self.store.put_bytes(
                keys.library_head_hint(self.tenant), json.dumps({"version": head.version}).encode(), "application/json"
            )
            return head, result
        raise LibraryBusy("the library changed under every attempt to commit; try again")
