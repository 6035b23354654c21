"""What a process needs to do its work — settings, job records, the object store, the Celery app — as one
typed bundle, built once per process: the API's request handlers and the workers use the same one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.apikeys import ApiKeys
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

    @property
    def apikeys(self) -> ApiKeys:
        return self.records.apikeys
