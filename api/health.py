"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = current_app.extensions["nightshift"]
    checks = {"redis": svc.records.ping(), "s3": svc.store.ping()}
    ok = all(checks.values())
    return jsonify({"status": "ready" if ok else "unavailable", "checks": checks}), 200 if ok else 503
