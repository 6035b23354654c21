"""Ending a job: one procedure for every party that may end it (the worker that commits the last item, the
watchdog, the API cancelling a job no worker holds).

A job ends once: under its finalize lock (redis-py `Lock`, extended while the finalizer works, so a long
finalize is never run twice at once), the manifest is written, then the terminal transition is made by a
Lua script that only the first caller can make.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from storage.errors import StorageError
from storage.manifest import write_manifest
from storage.names import JobState
from storage.objects import ObjectStore
from storage.records import Item, Job, RecordStore

FINALIZE_LOCK_TTL_S = 60.0
# (job, items) -> (state, summary, error)
Summarize = Callable[[Job, list[Item]], tuple[JobState, dict[str, Any], str | None]]


class FinalizeLost(StorageError):
    """The finalize lock could not be kept; the job was left for another finalizer."""


def final_state(job: Job) -> JobState:
    """How a job whose items are all final ended."""
    if job.cancel_requested and job.cancelled:
        return JobState.CANCELLED
    if job.total == 0 or (job.done + job.skipped == 0 and job.failed > 0):
        return JobState.FAILED
    if job.error and not job.done:
        return JobState.FAILED
    if job.failed:
        return JobState.PARTIAL
    return JobState.SUCCEEDED


def job_error(job: Job, items: list[Item]) -> str | None:
    """Why a job failed, in one line: its own error, no inputs, or what its items say."""
    if job.error:
        return job.error
    if not job.total:
        return "no input photos found: check the uploaded files, keys or prefix"
    if final_state(job) == JobState.FAILED:
        reasons = [it.error for it in items if it.error]
        if reasons:
            return f"every item failed ({job.failed}); the first: {reasons[0]}"
    return None


def plain_summary(job: Job, items: list[Item]) -> tuple[JobState, dict[str, Any], str | None]:
    """The ending without job-level outputs (a cancelled or failed job; the API's own ending)."""
    return final_state(job), {}, job_error(job, items)


def ready_to_end(job: Job) -> bool:
    return not job.state.finished and job.ingested and job.finished_items >= job.total


def finalize_job(
    records: RecordStore,
    store: ObjectStore,
    job_id: str,
    summarize: Summarize = plain_summary,
    *,
    wait: float = 0.0,
    lock_ttl: float = FINALIZE_LOCK_TTL_S,
) -> bool:
    """End `job_id` if every item is final: True when this call ended it.

    Raises LockBusy when another process is finalizing it (after `wait` seconds), FinalizeLost when the
    lock was lost while summarizing (nothing was written; another finalizer takes over).
    """
    if not ready_to_end(records.get_job(job_id)):
        return False
    with records.hold_lock(f"finalize:{job_id}", ttl=lock_ttl, wait=wait) as held:
        job = records.get_job(job_id)
        if not ready_to_end(job):
            return False
        items = list(records.iter_items(job_id))
        state, summary, error = summarize(job, items)
        if not held.still_held():
            raise FinalizeLost(f"finalize lock of {job_id} lost while summarizing")
        write_manifest(store, job, state, items, summary, error)
        return records.complete_job(job_id, state, error=error, extra=summary)
