"""A Celery worker app for fault tests: the real tasks, with faults injected around the style handler.

Used only by tests (`celery -A tests.fault_worker worker`); the fault comes from the environment
the test gives this process:
    NIGHTSHIFT_FAULT=poison   the worker process dies (os._exit) on any batch holding a `poison` item
    NIGHTSHIFT_FAULT=slow     every batch sleeps NIGHTSHIFT_FAULT_SLEEP seconds first
Every call is counted per item name in the Redis hash `fault:calls`, so tests can prove that an
item was processed exactly once, or at most K times.
"""

from __future__ import annotations

import os
import time

import redis

import workers.style.handler as style_handler
from storage.config import get_settings
from storage.errors import StoreUnavailable
from storage.records import RecordStore
from workers.handlers import ItemInput, ItemResult
from workers.tasks import app

__all__ = ["app"]
_original = style_handler.StyleHandler.process_batch


def _faulty(self: style_handler.StyleHandler, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
    # The counting rides on the product's own Redis client (with its retries): during a Redis restart
    # the harness must fail like the product does (an outage, retried), not as an item error.
    r = RecordStore(get_settings()).client
    try:
        for item in batch:
            r.hincrby("fault:calls", item.name, 1)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc
    mode = os.environ.get("NIGHTSHIFT_FAULT", "")
    if mode == "poison" and any("poison" in item.name for item in batch):
        os._exit(137)  # like a segfault or the OOM killer: no cleanup, no ack
    if mode == "slow":
        time.sleep(float(os.environ.get("NIGHTSHIFT_FAULT_SLEEP", "0.3")))
    return _original(self, batch, chunk_index)


style_handler.StyleHandler.process_batch = _faulty  # type: ignore[method-assign]
