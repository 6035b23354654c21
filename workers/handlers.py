"""The handler interface: what a job kind does with a batch of items, and the kind -> handler registry.

A handler is a plain object (no Celery): the pipeline hands it downloaded inputs, it returns one
result per item and never raises for a single bad item. Three optional hooks let the pipeline overlap
a batch's model with the I/O around it (workers/overlap.py): `prepare` (per item) and `prepare_batch`
run in the prefetch threads while the previous batch is on the model (decoding, hashing); `write`
hands the pipeline an object to encode and upload beside the next batch's model.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from storage import keys
from storage.names import ItemErrorCode, ItemState, JobKind
from storage.records import Item, Job
from workers.context import WorkerContext
from workers.contract import ItemFailure

HELD_WRITES = 8  # outputs a batch keeps in memory until it ends; more start writing at once


class JobCancelled(Exception):
    """Raised by a handler between renders when the job was cancelled: the batch's unfinished items end
    `cancelled` (the pipeline records them)."""


@dataclass
class ItemInput:
    index: int
    name: str
    key: str
    data: bytes
    # what the handler's `prepare` made of `data` ahead of the batch (a decoded image, or the reason it
    # could not be decoded); None when nothing was prepared and `process_batch` must do it itself
    prepared: Any = None


@dataclass
class DeferredWrite:
    """An object a batch writes once the pipeline lets it: `produce()` gives (bytes, content type), so
    encoding runs beside the next batch too. `item` is the item it belongs to (None: the whole batch)."""

    key: str
    produce: Callable[[], tuple[bytes, str]]
    item: int | None = None
    started: Future[None] | None = None  # set when it was started early (a batch with many outputs)


@dataclass
class ItemResult:
    index: int
    state: ItemState
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error_code: ItemErrorCode | None = None

    @classmethod
    def failed(cls, index: int, code: ItemErrorCode, error: str) -> ItemResult:
        """A failed item: `error` says why to a person, `code` to a program."""
        return cls(index, ItemState.FAILED, error=error, error_code=code)

    @classmethod
    def failed_by(cls, index: int, exc: ItemFailure) -> ItemResult:
        """The item failed with `exc` (its message and its code)."""
        return cls.failed(index, exc.code, str(exc))

    @classmethod
    def cancelled(cls, index: int) -> ItemResult:
        return cls(index, ItemState.CANCELLED, error="job cancelled", error_code=ItemErrorCode.CANCELLED)


class JobHandler(ABC):
    """Does one job kind's work. One instance per job per chunk; engines are cached per process."""

    def __init__(self, job: Job, ctx: WorkerContext) -> None:
        self.job = job
        self.ctx = ctx
        self._cancel_checked = float("-inf")
        self._deferred: list[DeferredWrite] | None = None
        self._start_early: Callable[[DeferredWrite], Future[None]] | None = None

    @property
    def batch_size(self) -> int:
        return self.ctx.settings.worker.batch_size

    def check_cancel(self) -> None:
        """Raise JobCancelled if the job was cancelled (asks Redis at most about once a second)."""
        now = time.monotonic()
        if now - self._cancel_checked < 1.0:
            return
        self._cancel_checked = now
        if self.ctx.records.cancel_requested(self.job.id):
            raise JobCancelled(self.job.id)

    def process_items(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        """What the pipeline calls: the batch's photos go to `process_batch` together, each video item (a
        segment spec, workers/video) to `process_video`; the results come back in the batch's order."""
        is_video = [keys.is_video_segment(it.key) for it in batch]
        photos = [it for it, video in zip(batch, is_video, strict=True) if not video]
        results = {r.index: r for r in self.process_batch(photos, chunk_index)} if photos else {}
        for item, video in zip(batch, is_video, strict=True):
            if video:
                results[item.index] = self.process_video(item)
        return [results[it.index] for it in batch]

    def process_video(self, item: ItemInput) -> ItemResult:
        """One video item; the kinds that take videos override this."""
        return ItemResult.failed(item.index, ItemErrorCode.UNSUPPORTED, f"{self.job.kind} jobs do not take videos")

    def prepare(self, item: ItemInput) -> None:  # noqa: B027 - an optional hook
        """Work on one downloaded item that needs no model (decode, hash), run in a prefetch thread while
        the previous batch is on the model; sets `item.prepared`. Must not raise for a bad item."""

    def prepare_batch(self, batch: list[ItemInput]) -> None:  # noqa: B027 - an optional hook
        """Like `prepare`, once per batch after every item's `prepare` (e.g. one GPU decode for all)."""

    def write(self, key: str, produce: Callable[[], tuple[bytes, str]], *, item: int | None = None) -> str:
        """Store `produce()`'s (bytes, content type) at `key`; returns `key`.

        Inside the pipeline's batch loop the write is deferred: it runs (encode and upload) beside the next
        batch's model, and the batch's items are recorded only once all of its writes landed; a write that
        fails fails its item. Outside the loop (finalize, tests) it runs now.
        """
        if self._deferred is None:
            data, content_type = produce()
            self.ctx.store.put_bytes(key, data, content_type)
        else:
            write = DeferredWrite(key, produce, item)
            self._deferred.append(write)
            if self._start_early is not None and len(self._deferred) > HELD_WRITES:
                # a batch of many outputs (a grid of styles) would hold them all in memory: these start now
                write.started = self._start_early(write)
        return key

    @contextmanager
    def deferring(
        self, start_early: Callable[[DeferredWrite], Future[None]] | None = None
    ) -> Iterator[list[DeferredWrite]]:
        """Collect the writes of the block instead of running them (the pipeline decides when they run).
        Past HELD_WRITES, `start_early` (when given) runs each new write at once, so memory stays bounded."""
        collected: list[DeferredWrite] = []
        self._deferred, self._start_early = collected, start_early
        try:
            yield collected
        finally:
            self._deferred, self._start_early = None, None

    @abstractmethod
    def process_batch(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        """Process a batch of items; one result per input, per-item errors as FAILED results."""

    def after_commit(self, results: list[ItemResult]) -> None:  # noqa: B027 - an optional hook
        """Called once a batch's results are recorded (e.g. to remember what was indexed)."""

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        """Job-level outputs once every item is final (contact sheets, indexes). Returns a summary."""
        return {}


_HANDLERS: dict[JobKind, str] = {
    JobKind.STYLE: "workers.video.style_handler:StyleMediaHandler",  # photos, and videos (workers/video)
    JobKind.FACES: "workers.video.faces_handler:FacesMediaHandler",
    JobKind.IDENTIFY: "workers.people.handlers:IdentifyHandler",
    JobKind.CLUSTER: "workers.people.handlers:ClusterHandler",
    JobKind.ADAPT: "workers.people.handlers:AdaptHandler",
}


def handler_for(job: Job, ctx: WorkerContext) -> JobHandler:
    """Import the kind's handler lazily (heavy modules load in the worker child only)."""
    module, _, name = _HANDLERS[job.kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(job, ctx)  # type: ignore[no-any-return]
