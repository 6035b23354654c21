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
from storage.records import RecordStore
from workers import metrics, pipeline, watchdog
from workers.capabilities import Heartbeat
from workers.celery_app import create_celery
from workers.context import WorkerContext
from workers.dispatch import enqueue_chunks
from workers.gpu import share_gpu
from workers.ingest import ingest
from workers.models.base import set_cpu_threads

log = logging.getLogger("nightshift.tasks")
app = create_celery()
_ctx: WorkerContext | None = None
_heartbeat: Heartbeat | None = None


def context() -> WorkerContext:
    """One context per worker process, built lazily (never in the prefork parent before fork)."""
    global _ctx
    if _ctx is None:
        settings = get_settings()
        set_cpu_threads(settings.worker.threads)  # every model this process loads runs on its share of cores
        _ctx = WorkerContext.from_settings(settings, celery=app)
    return _ctx


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    global _ctx
    _ctx = None  # sockets must not be shared with the parent
    # before torch is first imported in this child: its thread pool size is read at import
    os.environ.setdefault("OMP_NUM_THREADS", str(get_settings().worker.threads))
    share_gpu(get_settings().worker.gpu_memory_fraction)  # several pool processes on one GPU
    set_cpu_threads(get_settings().worker.threads)


@worker_ready.connect
def _start_background(sender: Any = None, **_: Any) -> None:
    port = get_settings().worker.metrics_port
    if port:
        metrics.serve(port)
    threading.Thread(target=_sweeping, daemon=True, name="watchdog").start()


def _queues_of(consumer: Any) -> list[str]:
    try:
        return sorted(q.name for q in consumer.task_consumer.queues)
    except AttributeError:
        return sorted(app.amqp.queues.consume_from or [])


@worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    """Publish what this worker can run (and keep it current); a style worker asks for the style previews."""
    global _heartbeat
    settings = get_settings()
    queues = _queues_of(sender)
    _heartbeat = Heartbeat(RecordStore(settings), getattr(sender, "hostname", "worker"), queues, settings).start()
    if Queue.STYLE.value in queues:
        app.send_task(TaskName.STYLE_PREVIEWS.value, queue=Queue.STYLE.value)


@worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def _sweeping() -> None:
    """In the worker's main process: sweep for orphaned work (`workers.watchdog`) at start and periodically."""
    ctx = WorkerContext.from_settings(get_settings(), celery=app)  # its own connections, not the pool's
    while True:
        try:
            watchdog.sweep(ctx, grace_s=ctx.settings.worker.watchdog_grace_s)
        except Exception:  # an outage or a bug must not end the thread: try again next time
            log.exception("watchdog sweep failed; retrying")
        time.sleep(ctx.settings.worker.watchdog_interval_s)


# Store outages are retried with Celery's own exponential backoff; a busy finalize lock a few seconds later.
_RETRY = {
    "autoretry_for": (StoreUnavailable,),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 50,
}


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


@app.task(name=TaskName.STYLE_PREVIEWS.value, **_RETRY)
def style_previews_task() -> dict[str, Any]:
    """Render the built-in styles' previews once per deployment (the API lists them, it never renders)."""
    from workers.style.handler import engine
    from workers.style.previews import ensure_previews

    ctx = context()
    return {"rendered": ensure_previews(ctx, engine(ctx))}


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
