"""The Redis connection, the one error translation, and the name of every Redis key.

Nothing outside `storage/` spells a Redis key or touches the client: `RecordStore` (jobs and items),
`Coordination` (locks, leases, workers) and `ApiKeys` are the owners, and they name keys only here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from storage.errors import StoreUnavailable


def connect(url: str) -> redis.Redis:
    """A client that rides out short outages (reconnects with backoff for about 30 s, then raises)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=3,
        socket_timeout=15,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=4, base=0.2), 12),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def redacted(url: str) -> str:
    """`url` with its password hidden, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connect_quick(url: str) -> redis.Redis:
    """A client that answers within a second or fails (health checks must not hang during an outage)."""
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=0.5, socket_timeout=0.5)


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Redis errors leave storage as StoreUnavailable (a transient outage: callers retry)."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class RedisKeys:
    """Every Redis key of the project, under one prefix."""

    prefix: str

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def item(self, job_id: str, index: int) -> str:
        return f"{self.prefix}:item:{job_id}:{index}"

    def names(self, job_id: str) -> str:
        return f"{self.prefix}:names:{job_id}"

    def tenant_jobs(self, tenant: str) -> str:
        return f"{self.prefix}:jobs:{tenant}"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{key}"

    def live_jobs(self) -> str:
        return f"{self.prefix}:live"

    def leases(self, job_id: str) -> str:
        return f"{self.prefix}:leases:{job_id}"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, node: str) -> str:
        return f"{self.prefix}:worker:{node}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    def once(self, name: str) -> str:
        return f"{self.prefix}:once:{name}"

    def api_key(self, digest: str) -> str:
        return f"{self.prefix}:apikey:{digest}"

    def rate(self, digest: str, window: int) -> str:
        return f"{self.prefix}:rate:{digest[:32]}:{window}"

    def cache(self, name: str) -> str:
        return f"{self.prefix}:cache:{name}"

    def progress(self, job_id: str) -> str:
        """Hash: item index -> "done/total" in the item's own units (frames of a video segment)."""
        return f"{self.prefix}:progress:{job_id}"

    @staticmethod
    def celery_queue(queue: str) -> str:
        """The list Celery's Redis transport keeps a queue's waiting messages in (kombu names it after the queue)."""
        return queue
