"""What a worker process needs to do its work: settings, records, object store, Celery app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.config import Settings
from storage.objects import ObjectStore
from storage.records import RecordStore


@dataclass
class WorkerContext:
    settings: Settings
    records: RecordStore
    store: ObjectStore
    celery: Any = None  # a celery.Celery, when the context may enqueue follow-up work

    @classmethod
    def from_settings(cls, settings: Settings, celery: Any = None) -> WorkerContext:
        return cls(settings, RecordStore(settings), ObjectStore(settings.s3), celery)
