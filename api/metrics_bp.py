"""Prometheus `/metrics` of the API: submissions, and the depth of each queue at scrape time."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from api.context import svc
from api.errors import Forbidden
from storage.names import Queue

bp = Blueprint("metrics", __name__)
REGISTRY = CollectorRegistry()
JOBS_SUBMITTED = Counter("nightshift_jobs_submitted_total", "Jobs accepted by the API", ["kind"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("nightshift_queue_depth", "Messages waiting in each Celery queue", ["queue"], registry=REGISTRY)


def _allowed() -> bool:
    """Scrapers send `api.metrics_token` as a bearer token; without a configured token only this host may scrape."""
    token = svc().settings.api.metrics_token
    if token:
        return hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}")
    return request.remote_addr in ("127.0.0.1", "::1")


@bp.get("/metrics")
def metrics() -> Response:
    if not _allowed():
        raise Forbidden("metrics need the scrape token (api.metrics_token) or a local client")
    records = svc().records
    for queue in Queue:
        try:
            QUEUE_DEPTH.labels(queue=queue.value).set(records.queue_depth(queue.value))
        except Exception:  # Redis down: the scrape still answers, the gauge keeps its last value
            pass
    return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)
