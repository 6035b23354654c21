"""Shared vocabulary: job states, item states and error codes, job kinds, queues and task names, defined once."""

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


class ItemErrorCode(StrEnum):
    """Why an item failed, for programs; the item's `error` says it for people. docs/api.md lists them."""

    DECODE_FAILED = "decode_failed"  # not a photo, video or archive we can read: corrupt, truncated, empty, unknown
    TOO_LARGE = "too_large"  # over a limit: pixels, bytes, duration, frame rate, an archive's size or members
    INPUT_MISSING = "input_missing"  # the input, or an archive or style image the job names, is not in storage
    REFUSED = "refused"  # an archive entry never extracted: a link, a special file, an unsafe path
    UNSUPPORTED = "unsupported"  # readable, but not something this job does (gatys on a video, a one-frame video)
    MODEL_UNAVAILABLE = "model_unavailable"  # the worker lacks the weights or the device the job's model needs
    GAVE_UP = "gave_up"  # the worker crashed or timed out on it `worker.max_attempts` times
    CANCELLED = "cancelled"  # the job was cancelled before the item finished
    INTERNAL = "internal"  # an unexpected error, logged with its traceback


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
