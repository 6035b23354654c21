"""The Celery app: queues per job family, at-least-once delivery settings.

Delivery is at least once (acks late, requeue when a worker child dies, visibility timeout
above the hard time limit); item writes are idempotent, so processing is effectively once.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue as KombuQueue

from storage.config import Settings, get_settings
from storage.names import JobKind, Queue

QUEUE_OF_KIND: dict[JobKind, Queue] = {
    JobKind.STYLE: Queue.STYLE,
    JobKind.FACES: Queue.FACES,
    JobKind.IDENTIFY: Queue.FACES,
    JobKind.CLUSTER: Queue.FACES,
    JobKind.ADAPT: Queue.FACES,
}


def create_celery(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (the API uses it to send tasks by name)."""
    settings = settings or get_settings()
    app = Celery("nightshift", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_queues=[KombuQueue(q.value) for q in Queue],
        task_default_queue=Queue.STYLE.value,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.worker.soft_time_limit_s,
        task_time_limit=settings.worker.time_limit_s,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_expires=3600,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        task_track_started=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    app.conf.nightshift_settings = settings
    return app
