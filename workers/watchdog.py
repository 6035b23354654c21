"""The watchdog: every unfinished job either has someone working on it, work waiting for it, or gets it.

Celery redelivers a message whose worker died only after the visibility timeout (an hour and more, so a
long task is never run twice while it is alive), and a Redis crash can lose a message outright. A job must
not wait that long or forever. Every worker's main process sweeps the live jobs (one sweeper at a time,
under a lock): a job with no live lease (no worker is on it) while its queue is empty (no work waiting)
is orphaned, and gets back what it lacks: its ingest (resumable), its unfinished items as new chunks, or
its finalize. Redelivery is always safe: items commit once, outputs have deterministic keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from storage.coordination import LockBusy
from storage.errors import RecordNotFound
from storage.names import TaskName
from workers.celery_app import QUEUE_OF_KIND
from workers.context import WorkerContext
from workers.dispatch import enqueue_chunks, enqueue_ingest

log = logging.getLogger("nightshift.watchdog")


@dataclass
class SweepReport:
    """What one sweep did: job id -> the repair ("ingest", "items:<n>", "finalize")."""

    repaired: dict[str, str] = field(default_factory=dict)
    looked_at: int = 0


def sweep(ctx: WorkerContext, *, grace_s: float = 60.0) -> SweepReport:
    """Repair orphaned jobs older than `grace_s` (one sweeper at a time; a busy sweep lock skips this one)."""
    report = SweepReport()
    try:
        with ctx.records.hold_lock("watchdog", ttl=120, wait=0):
            for job_id in ctx.records.live_job_ids(older_than=grace_s):
                report.looked_at += 1
                action = _repair(ctx, job_id, grace_s)
                if action:
                    report.repaired[job_id] = action
    except LockBusy:
        return report
    if report.repaired:
        log.warning("watchdog re-queued orphaned work: %s", report.repaired)
    return report


def _repair(ctx: WorkerContext, job_id: str, grace_s: float) -> str | None:
    records = ctx.records
    try:
        job = records.get_job(job_id)
    except RecordNotFound:
        records.forget_live(job_id)
        return None
    if job.state.finished:
        records.forget_live(job_id)
        return None
    queue = QUEUE_OF_KIND[job.kind].value
    if records.live_leases(job_id) or records.queue_depth(queue):
        return None
    # the same orphan is repaired at most once per grace period, whichever worker sweeps
    if not records.once(f"watchdog:{job_id}", grace_s):
        return None
    if not job.ingested:
        enqueue_ingest(ctx.celery, job_id, job.kind)
        return "ingest"
    rest = [it.index for it in records.iter_items(job_id) if not it.terminal]
    if not rest:
        ctx.celery.send_task(TaskName.FINALIZE.value, args=[job_id], queue=queue)
        return "finalize"
    enqueue_chunks(ctx.celery, job_id, job.kind, rest, ctx.settings.worker.chunk_size)
    return f"items:{len(rest)}"
