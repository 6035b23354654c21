"""Enqueue work by task name (the API uses this without importing any task body)."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from storage.names import JobKind, TaskName
from workers.celery_app import QUEUE_OF_KIND


def chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def enqueue_chunks(
    app: Celery, job_id: str, kind: JobKind, indices: Sequence[int], chunk_size: int, first_chunk: int = 0
) -> int:
    """Send one message per chunk of item indices; returns the number of chunks sent."""
    queue = QUEUE_OF_KIND[kind].value
    parts = chunks(indices, chunk_size)
    for n, part in enumerate(parts):
        app.send_task(TaskName.PROCESS_CHUNK.value, args=[job_id, first_chunk + n, part], queue=queue)
    return len(parts)


def enqueue_ingest(app: Celery, job_id: str, kind: JobKind) -> None:
    app.send_task(TaskName.INGEST.value, args=[job_id], queue=QUEUE_OF_KIND[kind].value)
