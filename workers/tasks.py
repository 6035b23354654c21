"""Thin Celery tasks: parse the message, handle retries, call the plain functions in `pipeline`.

Run a worker with:  celery -A workers.tasks worker -Q style -c 1
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from storage.config import get_settings
from storage.errors import StoreUnavailable
from storage.names import Queue, TaskName
from workers import metrics, pipeline, watchdog
from workers.celery_app import create_celery
from workers.context import WorkerContext
from workers.dispatch import enqueue_chunks
from workers.gpu import share_gpu
from workers.ingest import ingest

log = logging.getLogger("nightshift.tasks")
app = create_celery()
_ctx: WorkerContext | None = None


def context() -> WorkerContext:
    """One context per worker process, built lazily (never in the prefork parent before fork)."""
    global _ctx
    if _ctx is None:
        _ctx = WorkerContext.from_settings(get_settings(), celery=app)
    return _ctx


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    global _ctx
    _ctx = None  # sockets must not be shared with the parent
    # before torch is first imported in this child: its thread pool size is read at import
    os.environ.setdefault("OMP_NUM_THREADS", str(get_settings().worker.threads))
    share_gpu(get_settings().worker.gpu_memory_fraction)  # several pool processes on one GPU


@worker_ready.connect
def _start_background(sender: Any = None, **_: Any) -> None:
    port = get_settings().worker.metrics_port
    if port:
        metrics.serve(port)
    node = getattr(sender, "hostname", None) or f"worker@{os.getpid()}"
    queues = sorted(getattr(getattr(app.amqp, "queues", None), "consume_from", None) or [q.value for q in Queue])
    threading.Thread(target=_housekeeping, args=(node, queues), daemon=True, name="housekeeping").start()


@worker_shutdown.connect
def _say_goodbye(sender: Any = None, **_: Any) -> None:
    try:
        context().records.worker_gone(getattr(sender, "hostname", "") or f"worker@{os.getpid()}")
    except StoreUnavailable:
        pass


def _housekeeping(node: str, queues: list[str]) -> None:
    """In the worker's main process: say it is alive (readiness counts workers per queue) and sweep for
    orphaned work, at start and then periodically."""
    ctx = WorkerContext.from_settings(get_settings(), celery=app)  # its own connections, not the pool's
    w = ctx.settings.worker
    last_sweep = float("-inf")
    while True:
        try:
            ctx.records.worker_heartbeat(node, queues, watchdog.worker_info(queues), ttl=w.heartbeat_s * 3)
            if time.monotonic() - last_sweep >= w.watchdog_interval_s:
                last_sweep = time.monotonic()
                watchdog.sweep(ctx, grace_s=w.watchdog_grace_s)
        except Exception:  # an outage or a bug must not end the thread: try again next beat
            log.exception("housekeeping failed; retrying")
        time.sleep(w.heartbeat_s)


# Store outages are retried with Celery's own exponential backoff; a busy finalize lock a few seconds later.
_RETRY = {"autoretry_for": (StoreUnavailable,), "retry_backoff": True, "retry_backoff_max": 60,
          "retry_jitter": True, "max_retries": 50}


@app.task(name=TaskName.PROCESS_CHUNK.value, bind=True, **_RETRY)
def process_chunk(self: Task, job_id: str, chunk_index: int, indices: list[int]) -> dict[str, Any]:
    ctx = context()
    try:
        return pipeline.process_chunk(ctx, job_id, chunk_index, indices)
    except pipeline.FinalizeBusy as exc:
        raise self.retry(countdown=5, max_retries=100) from exc
    except SoftTimeLimitExceeded:
        # The chunk ran out of time: the unfinished items go back on the queue as a new message;
        # their attempt counts stand, so an item that always times out fails alone after K tries.
        job = ctx.records.get_job(job_id)
        rest = [it.index for it in ctx.records.get_items(job_id, indices) if not it.terminal]
        if rest:
            enqueue_chunks(app, job_id, job.kind, rest, len(rest), first_chunk=chunk_index)
        return {"timed_out": True, "requeued": len(rest)}


@app.task(name=TaskName.INGEST.value, bind=True, **_RETRY)
def ingest_task(self: Task, job_id: str) -> dict[str, Any]:
    try:
        return ingest(context(), job_id)
    except pipeline.FinalizeBusy as exc:
        raise self.retry(countdown=5, max_retries=100) from exc


@app.task(name=TaskName.FINALIZE.value, bind=True, **_RETRY)
def finalize_task(self: Task, job_id: str) -> bool:
    """End a job whose items are all final (sent by the watchdog when nobody else did)."""
    try:
        return pipeline.maybe_finalize(context(), job_id)
    except pipeline.FinalizeBusy as exc:
        raise self.retry(countdown=5, max_retries=100) from exc


@app.task(name=TaskName.LIBRARY_FOLD.value, bind=True, **_RETRY)
def library_fold_task(self: Task, tenant: str) -> dict[str, Any]:
    """Fold every offered segment into a tenant's library (on demand; faces jobs do it when they end)."""
    from workers.library.intake import fold_waiting

    return fold_waiting(context(), tenant, wait=120)


# Synchronous questions: the API waits for these with a timeout (small inputs only).
@app.task(name=TaskName.VERIFY.value)
def verify_task(tenant: str, a: dict[str, str], b: dict[str, str], threshold: float | None = None) -> dict[str, Any]:
    from workers.people import service

    return service.verify(context(), tenant, a, b, threshold)


@app.task(name=TaskName.SEARCH.value)
def search_task(tenant: str, query: dict[str, str], k: int = 10, jobs: list[str] | None = None) -> dict[str, Any]:
    from workers.people import service

    return service.search(context(), tenant, query, k, jobs)


@app.task(name=TaskName.ENROLL.value)
def enroll_task(tenant: str, photo_keys: list[str]) -> dict[str, Any]:
    from workers.people import service

    return service.enroll(context(), tenant, photo_keys)


@app.task(name=TaskName.IDENTIFY_PHOTO.value)
def identify_photo_task(tenant: str, photo: dict[str, str]) -> dict[str, Any]:
    from workers.people import service

    return service.identify_photo(context(), tenant, photo)
