"""Thin Celery tasks: parse the message, handle retries, call the plain functions in `pipeline`.

Run a worker with:  celery -A workers.tasks worker -Q style -c 1
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from storage.config import get_settings
from storage.errors import StoreUnavailable
from storage.names import JobKind, Queue, TaskName
from storage.records import RecordStore
from workers import metrics, pipeline
from workers.capabilities import Heartbeat
from workers.celery_app import QUEUE_OF_KIND, create_celery
from workers.context import WorkerContext
from workers.ingest import ingest

log = logging.getLogger("nightshift.tasks")
app = create_celery()
_ctx: WorkerContext | None = None
_heartbeat: Heartbeat | None = None


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


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    port = get_settings().worker.metrics_port
    if port:
        metrics.serve(port)


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


def _backoff(task: Task) -> int:
    return int(min(2 ** task.request.retries, get_settings().worker.retry_backoff_max_s))


@app.task(name=TaskName.PROCESS_CHUNK.value, bind=True, max_retries=None)
def process_chunk(self: Task, job_id: str, chunk_index: int, indices: list[int]) -> dict[str, Any]:
    ctx = context()
    try:
        return pipeline.process_chunk(ctx, job_id, chunk_index, indices)
    except StoreUnavailable as exc:
        log.warning("chunk %s/%s: store unavailable (%s); retrying", job_id, chunk_index, exc)
        raise self.retry(countdown=_backoff(self), max_retries=50) from exc
    except pipeline.FinalizeBusy as exc:
        raise self.retry(countdown=5, max_retries=100) from exc
    except SoftTimeLimitExceeded:
        # The chunk ran out of time: the unfinished items go back on the queue as a new message;
        # their attempt counts stand, so an item that always times out fails alone after K tries.
        job = ctx.records.get_job(job_id)
        rest = [it.index for it in ctx.records.get_items(job_id, indices) if not it.terminal]
        if rest:
            app.send_task(TaskName.PROCESS_CHUNK.value, args=[job_id, chunk_index, rest],
                          queue=QUEUE_OF_KIND[JobKind(job.kind)].value)
        return {"timed_out": True, "requeued": len(rest)}


@app.task(name=TaskName.INGEST.value, bind=True, max_retries=None)
def ingest_task(self: Task, job_id: str) -> dict[str, Any]:
    try:
        return ingest(context(), job_id)
    except StoreUnavailable as exc:
        raise self.retry(countdown=_backoff(self), max_retries=50) from exc
    except pipeline.FinalizeBusy as exc:
        raise self.retry(countdown=5, max_retries=100) from exc


@app.task(name=TaskName.STYLE_PREVIEWS.value, bind=True, max_retries=None)
def style_previews_task(self: Task) -> dict[str, Any]:
    from workers.style.handler import engine
    from workers.style.previews import ensure_previews

    ctx = context()
    try:
        return {"rendered": ensure_previews(ctx, engine(ctx))}
    except StoreUnavailable as exc:
        raise self.retry(countdown=_backoff(self), max_retries=50) from exc


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
