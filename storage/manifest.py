"""A finished job's record in the object store, so it outlives Redis: manifest.json plus items.jsonl.

One typed document, written by whoever ends the job (a worker, or the API ending a cancelled job) and
read by the API when the Redis records have expired (`GET /v1/jobs/{id}`, `/results`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field

from storage import keys
from storage.errors import ObjectNotFound
from storage.names import ItemErrorCode, ItemState, JobKind, JobState
from storage.objects import ObjectStore
from storage.records import Item, Job

ITEMS_NAME = "items.jsonl"


class Counts(BaseModel):
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    pending: int = 0


class ItemRecord(BaseModel):
    """One line of items.jsonl."""

    index: int
    name: str
    key: str = ""
    state: ItemState
    error: str | None = None
    error_code: ItemErrorCode | None = None
    attempts: int = 0
    outputs: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, item: Item) -> ItemRecord:
        return cls.model_validate(item, from_attributes=True)

    def to_item(self) -> Item:
        return Item(**self.model_dump())


class JobManifest(BaseModel):
    """manifest.json: what the job was, how it ended, and where its items are listed."""

    id: str
    kind: JobKind
    tenant: str
    state: JobState
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    counts: Counts = Field(default_factory=Counts)
    error: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    items_key: str

    def to_job(self) -> Job:
        """The job as records would hold it (the API falls back to this once they expired)."""
        own = self.model_dump(exclude={"counts", "summary", "items_key"})
        return Job(**own, **self.counts.model_dump(exclude={"pending"}), inputs={}, ingested=True, extra=self.summary)


def write_manifest(
    store: ObjectStore, job: Job, state: JobState, items: Iterable[Item], summary: dict[str, Any], error: str | None
) -> JobManifest:
    """Write items.jsonl (streamed) and manifest.json for a job ending in `state`."""
    items_key = keys.job_artifact(job.tenant, job.id, ITEMS_NAME)
    with tempfile.TemporaryFile() as fh:
        for item in items:
            fh.write(ItemRecord.of(item).model_dump_json().encode() + b"\n")
        size = fh.tell()
        fh.seek(0)
        store.put_stream(items_key, fh, size, "application/x-ndjson")
    manifest = JobManifest(
        id=job.id,
        kind=job.kind,
        tenant=job.tenant,
        state=state,
        label=job.label,
        params=job.params,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=time.time(),
        counts=Counts(total=job.total, done=job.done, failed=job.failed, skipped=job.skipped, cancelled=job.cancelled),
        error=error,
        summary=summary,
        items_key=keys.strip_tenant(job.tenant, items_key),
    )
    store.put_bytes(keys.manifest(job.tenant, job.id), manifest.model_dump_json(indent=1).encode(), "application/json")
    return manifest


def read_manifest(store: ObjectStore, tenant: str, job_id: str) -> JobManifest:
    """The manifest of a finished job; raises ObjectNotFound (also for a malformed job id)."""
    try:
        raw = store.get_bytes(keys.manifest(tenant, job_id))
    except keys.BadKey:
        raise ObjectNotFound(f"job {job_id}") from None
    return JobManifest.model_validate_json(raw)


def iter_manifest_items(store: ObjectStore, tenant: str, manifest: JobManifest) -> Iterator[Item]:
    """The items of a finished job, from items.jsonl, in index order."""
    for line in store.get_bytes(keys.tenant_key(tenant, manifest.items_key)).splitlines():
        if line.strip():
            yield ItemRecord.model_validate(json.loads(line)).to_item()
