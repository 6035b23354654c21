"""The handler interface: what a job kind does with a batch of items, and the kind -> handler registry.

A handler is a plain object (no Celery): the pipeline hands it decoded inputs, it returns one
result per item and never raises for a single bad item.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from storage.names import ItemState, JobKind
from storage.records import Item, Job
from workers.context import WorkerContext


class JobCancelled(Exception):
    """Raised by a handler between renders when the job was cancelled: the batch's unfinished items end
    `cancelled` (the pipeline records them)."""


@dataclass
class ItemInput:
    index: int
    name: str
    key: str
    data: bytes


@dataclass
class ItemResult:
    index: int
    state: ItemState
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, index: int, error: str) -> ItemResult:
        return cls(index, ItemState.FAILED, error=error)


class JobHandler(ABC):
    """Does one job kind's work. One instance per job per chunk; engines are cached per process."""

    def __init__(self, job: Job, ctx: WorkerContext) -> None:
        self.job = job
        self.ctx = ctx
        self._cancel_checked = float("-inf")

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
