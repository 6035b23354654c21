"""Prometheus `/metrics` of the API: submissions, and the depth of each queue at scrape time."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from storage.names import Queue

bp = Blueprint("metrics", __name__)
REGISTRY = CollectorRegistry()
JOBS_SUBMITTED = Counter("nightshift_jobs_submitted_total", "Jobs accepted by the API", ["kind"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("nightshift_queue_depth", "Messages waiting in each Celery queue", ["queue"], registry=REGISTRY)


@bp.get("/metrics")
def metrics() -> Response:
    records = current_app.extensions["nightshift"].records
    for queue in Queue:
        try:
            QUEUE_DEPTH.labels(queue=queue.value).set(records.r.llen(queue.value))
        except Exception:  # Redis down: the scrape still answers, the gauge keeps its last value
            pass
    return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)
