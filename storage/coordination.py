"""Coordination between processes, in Redis: locks, work leases, live jobs, and which workers are alive.

- `hold_lock`: redis-py's `Lock` (token-checked release in Lua) kept alive by a thread that `extend`s it
  while the holder works, so a long critical section is never taken over by another process while its
  holder lives; when the holder dies the lock expires. `HeldLock.lost` tells a holder, before it commits,
  that the lock could not be extended (then a conditional write must fence the commit).
- Leases say "a worker is processing part of job J right now" (refreshed by a heartbeat thread). Live jobs
  are the jobs not yet finished. Together they let a watchdog find work nobody holds (a killed worker, a
  message lost with a Redis crash) and hand it out again; redelivery is safe because items commit once.
- Worker presence: each worker heartbeats the queues it consumes, so readiness can say which are served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import LockError

from storage.errors import StorageError
from storage.redisdb import RedisKeys, unavailable_on_error


class LockBusy(StorageError):
    """Another process holds the lock and did not release it in time."""


@dataclass
class HeldLock:
    """A lock held by this process; `lost` becomes true if an extension failed (another may hold it now)."""

    name: str
    lock: Any
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def still_held(self) -> bool:
        """Whether this process still owns the lock (asks Redis: the token must be ours)."""
        if self.lost:
            return False
        try:
            return bool(self.lock.owned())
        except redis.RedisError:
            return False


class WorkerInfo(BaseModel):
    """A live worker as it publishes itself: the queues it consumes and what it can run (read by the API,
    which cannot look at a worker's disk: readiness, `GET /v1/models`, refusing jobs nobody can run)."""

    name: str
    queues: list[str] = Field(default_factory=list)
    weights: dict[str, bool] = Field(default_factory=dict, description="weights name -> file present")
    modules: dict[str, bool] = Field(default_factory=dict, description="library -> importable")
    device: str = "cpu"
    started_at: float = 0.0
    seen_at: float = 0.0


class Coordination:
    """Locks, leases, live jobs and worker presence over one Redis client."""

    _r: redis.Redis
    keys: RedisKeys

    # -- locks -------------------------------------------------------------------------------------
    @contextmanager
    def hold_lock(self, name: str, *, ttl: float = 30.0, wait: float = 10.0) -> Iterator[HeldLock]:
        """Hold the lock `name` for the block; raises LockBusy if it is not free within `wait` seconds.

        The lock expires `ttl` seconds after its last extension; a thread extends it every ttl/3.
        """
        lock = self._r.lock(
            self.keys.lock(name), timeout=ttl, blocking=wait > 0, blocking_timeout=wait or None, thread_local=False
        )
        with unavailable_on_error():
            acquired = lock.acquire()
        if not acquired:
            raise LockBusy(f"{name} is held by another process; try again shortly")
        held = HeldLock(name, lock)
        keeper = threading.Thread(target=self._keep, args=(held, ttl), daemon=True, name=f"lock-{name}")
        keeper.start()
        try:
            yield held
        finally:
            held._stop.set()
            keeper.join(timeout=5)
            try:
                lock.release()
            except (LockError, redis.RedisError):
                pass  # expired or taken over: nothing of ours to release

    @staticmethod
    def _keep(held: HeldLock, ttl: float) -> None:
        while not held._stop.wait(ttl / 3):
            try:
                held.lock.extend(ttl, replace_ttl=True)
            except (LockError, redis.RedisError):
                held.lost = True
                return

    # -- leases (who is working on a job) ----------------------------------------------------------
    @contextmanager
    def lease(self, job_id: str, holder: str, *, ttl: float = 60.0) -> Iterator[None]:
        """Mark `holder` as working on `job_id` for the block, refreshed every ttl/3 by a thread."""
        key = self.keys.leases(job_id)
        stop = threading.Event()

        def renew() -> None:
            with unavailable_on_error():
                pipe = self._r.pipeline(transaction=True)
                pipe.zadd(key, {holder: time.time() + ttl})
                pipe.expire(key, int(ttl * 4))
                pipe.execute()

        def keep() -> None:
            while not stop.wait(ttl / 3):
                try:
                    renew()
                except StorageError:
                    continue  # an outage: the next beat tries again; the lease may lapse meanwhile

        renew()
        beat = threading.Thread(target=keep, daemon=True, name=f"lease-{job_id}")
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join(timeout=5)
            try:
                with unavailable_on_error():
                    self._r.zrem(key, holder)
            except StorageError:
                pass  # it expires on its own

    def live_leases(self, job_id: str) -> int:
        """How many leases on `job_id` are unexpired."""
        with unavailable_on_error():
            return int(self._r.zcount(self.keys.leases(job_id), time.time(), "+inf"))

    # -- live jobs ---------------------------------------------------------------------------------
    def live_job_ids(self, older_than: float = 0.0) -> list[str]:
        """Jobs created more than `older_than` seconds ago that have not finished."""
        with unavailable_on_error():
            return list(self._r.zrangebyscore(self.keys.live_jobs(), "-inf", time.time() - older_than))

    def forget_live(self, job_id: str) -> None:
        with unavailable_on_error():
            self._r.zrem(self.keys.live_jobs(), job_id)

    def once(self, name: str, ttl: float) -> bool:
        """True for the first caller in `ttl` seconds (guards a repair so it is not repeated in a storm)."""
        with unavailable_on_error():
            return bool(self._r.set(self.keys.once(name), "1", nx=True, ex=max(1, int(ttl))))

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in a Celery queue."""
        with unavailable_on_error():
            return int(self._r.llen(RedisKeys.celery_queue(queue)))

    # -- live workers ------------------------------------------------------------------------------
    def publish_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        """Announce (or renew) a worker for `ttl_s` seconds; its heartbeat calls this again before then."""
        info = info.model_copy(update={"seen_at": time.time()})
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self.keys.worker(info.name), info.model_dump_json(), ex=max(1, int(ttl_s)))
            pipe.zadd(self.keys.workers(), {info.name: time.time() + ttl_s})
            pipe.execute()

    def withdraw_worker(self, name: str) -> None:
        """A worker that shuts down says so at once, rather than when its record expires."""
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self.keys.worker(name))
            pipe.zrem(self.keys.workers(), name)
            pipe.execute()

    def live_workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is current, by name."""
        with unavailable_on_error():
            self._r.zremrangebyscore(self.keys.workers(), "-inf", time.time())
            names = sorted(self._r.zrange(self.keys.workers(), 0, -1))
            docs = self._r.mget([self.keys.worker(n) for n in names]) if names else []
        out = []
        for doc in docs:
            if not doc:
                continue
            try:
                out.append(WorkerInfo.model_validate_json(doc))
            except ValidationError:  # a record from another version of the worker: not ours to judge
                continue
        return out
