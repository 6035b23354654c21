"""Shared vocabulary: job states, item states, job kinds, queues and task names, defined once."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    STYLE = "style"
    FACES = "faces"
    IDENTIFY = "identify"
    CLUSTER = "cluster"
    ADAPT = "adapt"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PARTIAL = "partial"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PARTIAL})


class ItemState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class Queue(StrEnum):
    """Celery queues; one worker service per queue."""

    STYLE = "style"
    FACES = "faces"


class TaskName(StrEnum):
    """Celery task names: the API enqueues by name and never imports task bodies."""

    INGEST = "nightshift.ingest"
    PROCESS_CHUNK = "nightshift.process_chunk"
    FINALIZE = "nightshift.finalize"
    LIBRARY_FOLD = "nightshift.library.fold"
    VERIFY = "nightshift.faces.verify"
    SEARCH = "nightshift.faces.search"
    ENROLL = "nightshift.faces.enroll"
    IDENTIFY_PHOTO = "nightshift.faces.identify_photo"
    STYLE_PREVIEWS = "nightshift.style.previews"
