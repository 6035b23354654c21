"""The request handlers' view of the process's bundle (`workers.context.WorkerContext`), typed."""

from __future__ import annotations

from flask import current_app

from workers.context import WorkerContext

EXTENSION = "nightshift"


def svc() -> WorkerContext:
    """Settings, records, object store and Celery app of the running app."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
