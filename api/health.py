"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint

from api.context import svc
from api.schemas import Answer
from storage.errors import StoreUnavailable
from storage.names import Queue

bp = APIBlueprint("health", __name__)
PUBLIC: dict[str, Any] = {"security": []}  # no API key (api.auth.PUBLIC_PATHS)


@bp.get("/healthz", responses={200: Answer}, openapi_extensions=PUBLIC)
def healthz() -> Response:
    """The process answers (what a container health check asks)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz", responses={200: Answer, 503: Answer}, openapi_extensions=PUBLIC)
def readyz() -> tuple[Response, int]:
    """Ready when Redis and S3 answer (within about a second each) and every queue has a live worker."""
    ctx = svc()
    checks = {"redis": ctx.records.ping(), "s3": ctx.store.ping()}
    workers: dict[str, int] = {}
    if checks["redis"]:
        try:
            live = ctx.records.live_workers()
        except StoreUnavailable:
            live = []
        workers = {q.value: sum(1 for w in live if q.value in w.queues) for q in Queue}
    missing = sorted(q for q, n in workers.items() if n == 0)
    ok = all(checks.values()) and not missing
    body: dict[str, Any] = {"status": "ready" if ok else "unavailable", "checks": checks, "workers": workers}
    if missing:
        body["missing_workers"] = missing
    return jsonify(body), 200 if ok else 503
