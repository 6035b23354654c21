"""Job and item records in Redis, with atomic state transitions.

Layout (``<p>`` is the key prefix):
    <p>:job:<id>              hash: the job record (counts are HINCRBY'd atomically)
    <p>:item:<id>:<index>     hash: one item (state, attempts, error, outputs, info)
    <p>:jobs:<tenant>         sorted set of job ids by creation time
    <p>:idem:<tenant>:<key>   Idempotency-Key -> job id (24 h)
    <p>:names:<id>            hash: item names taken while a job's items are still being listed
    <p>:worker:<name>         a live worker's capabilities (JSON, expires unless its heartbeat renews it)
    <p>:workers               sorted set of worker names by the time their record expires
An item's terminal transition (done/failed/skipped/cancelled) happens once, in a Lua script
that also bumps the job's counters, so a redelivered chunk never counts an item twice.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from pydantic import BaseModel, Field, ValidationError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from storage import keys
from storage.config import Settings
from storage.errors import RecordNotFound, StoreUnavailable
from storage.names import FINISHED_STATES, ItemState, JobKind, JobState

TERMINAL_ITEM_STATES = (ItemState.DONE, ItemState.FAILED, ItemState.SKIPPED, ItemState.CANCELLED)

# KEYS: item, job. ARGV: state, error, outputs, info, now. Returns 0 if already terminal,
# 1 if recorded, 2 if recorded and it was the job's last outstanding item.
_FINISH_ITEM = """
local prev = redis.call('HGET', KEYS[1], 'state')
if prev == 'done' or prev == 'failed' or prev == 'skipped' or prev == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error', ARGV[2], 'outputs', ARGV[3], 'info', ARGV[4],
           'finished_at', ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local j = redis.call('HMGET', KEYS[2], 'total', 'done', 'failed', 'skipped', 'cancelled', 'ingested')
local sum = (tonumber(j[2]) or 0) + (tonumber(j[3]) or 0) + (tonumber(j[4]) or 0) + (tonumber(j[5]) or 0)
if j[6] == '1' and sum >= (tonumber(j[1]) or 0) then return 2 end
return 1
"""

# KEYS: the job's name hash. ARGV: ttl, then (index, stem, ext, folded stem) per item. Returns the names.
# An item keeps its name unless an earlier item took the same stem (compared case-folded, as on the disks
# results are downloaded to); then it becomes <stem>~2<ext>, ~3, ... Idempotent per index (a redelivered
# ingest gets the same names), and the last suffix per stem is remembered, so many copies stay linear.
_CLAIM_NAMES = """
local out = {}
for i = 2, #ARGV, 4 do
  local idx, stem, ext, folded = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local name = redis.call('HGET', KEYS[1], '@' .. idx)
  if not name then
    local n = tonumber(redis.call('HGET', KEYS[1], '#' .. folded)) or 1
    local key = folded
    name = stem .. ext
    if n > 1 then key = folded .. '~' .. n; name = stem .. '~' .. n .. ext end
    while redis.call('HSETNX', KEYS[1], '=' .. key, idx) == 0 do
      n = n + 1
      key = folded .. '~' .. n
      name = stem .. '~' .. n .. ext
    end
    redis.call('HSET', KEYS[1], '#' .. folded, n, '@' .. idx, name)
  end
  out[#out + 1] = name
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return out
"""

# KEYS: job. ARGV: now. queued -> running, once.
_MARK_RUNNING = """
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1])
  return 1
end
return 0
"""


def now() -> float:
    return time.time()


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_hex(8)


@dataclass
class Job:
    """A job record as stored in Redis."""

    id: str
    kind: JobKind
    tenant: str
    state: JobState
    params: dict[str, Any]
    inputs: dict[str, Any]
    label: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    ingested: bool = False
    cancel_requested: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished_items(self) -> int:
        return self.done + self.failed + self.skipped + self.cancelled

    @property
    def throughput(self) -> float | None:
        """Items per second since the job started."""
        if not self.started_at:
            return None
        end = self.finished_at or now()
        elapsed = max(end - self.started_at, 1e-6)
        return self.finished_items / elapsed

    @property
    def eta_s(self) -> float | None:
        rate = self.throughput
        if self.state in FINISHED_STATES:
            return 0.0
        if not rate or not self.ingested:
            return None
        return max(self.total - self.finished_items, 0) / rate

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": str(self.kind),
            "state": str(self.state),
            "label": self.label,
            "params": self.params,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "counts": {
                "total": self.total,
                "done": self.done,
                "failed": self.failed,
                "skipped": self.skipped,
                "cancelled": self.cancelled,
                "pending": max(self.total - self.finished_items, 0),
            },
            "inputs_complete": self.ingested,
            "cancel_requested": self.cancel_requested,
            "throughput_per_s": round(self.throughput, 3) if self.throughput is not None else None,
            "eta_s": round(self.eta_s, 1) if self.eta_s is not None else None,
            "error": self.error,
            **({"summary": self.extra} if self.extra else {}),
        }


@dataclass
class Item:
    index: int
    name: str
    key: str
    state: ItemState = ItemState.PENDING
    attempts: int = 0
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_ITEM_STATES


class WorkerInfo(BaseModel):
    """What a live worker can do, as it publishes it (read by the API: it cannot look at a worker's disk)."""

    name: str
    queues: list[str] = Field(default_factory=list)
    weights: dict[str, bool] = Field(default_factory=dict, description="weights name -> file present")
    modules: dict[str, bool] = Field(default_factory=dict, description="library -> importable")
    device: str = "cpu"
    started_at: float = 0.0
    seen_at: float = 0.0


def _f(v: Any) -> float | None:
    return float(v) if v not in (None, "") else None


class RecordStore:
    """Jobs, items, API keys, idempotency keys and rate limits in Redis."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.p = settings.key_prefix
        self.ttl = settings.job_ttl_days * 86400
        self.r: redis.Redis = client or redis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=3,
            socket_timeout=15,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=4, base=0.2), 12),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self._finish_item = self.r.register_script(_FINISH_ITEM)
        self._mark_running = self.r.register_script(_MARK_RUNNING)
        self._claim_names = self.r.register_script(_CLAIM_NAMES)

    def _wrap(self, exc: redis.RedisError) -> StoreUnavailable:
        return StoreUnavailable(f"redis unreachable: {type(exc).__name__}")

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    # -- keys ------------------------------------------------------------------------------
    def _job(self, job_id: str) -> str:
        return f"{self.p}:job:{job_id}"

    def _item(self, job_id: str, index: int) -> str:
        return f"{self.p}:item:{job_id}:{index}"

    def _names(self, job_id: str) -> str:
        return f"{self.p}:names:{job_id}"

    # -- jobs ------------------------------------------------------------------------------
    def create_job(self, job: Job, items: Sequence[Item] = ()) -> None:
        """Write a new job (and its first items) in one transaction."""
        created = job.created_at or now()
        items = self._unique_names(job.id, items)
        fields: dict[str, str | int | float] = {
            "id": job.id, "kind": str(job.kind), "tenant": job.tenant, "state": str(job.state),
            "params": json.dumps(job.params), "inputs": json.dumps(job.inputs), "label": job.label or "",
            "created_at": created, "total": len(items), "done": 0, "failed": 0,
            "skipped": 0, "cancelled": 0, "ingested": "1" if job.ingested else "0", "cancel_requested": "0",
        }
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self._job(job.id), mapping=fields)
            pipe.expire(self._job(job.id), self.ttl)
            pipe.zadd(f"{self.p}:jobs:{job.tenant}", {job.id: created})
            self._add_items(pipe, job.id, items)
            if job.ingested:  # no item will be added later: the names need not be kept
                pipe.delete(self._names(job.id))
            pipe.execute()
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def _unique_names(self, job_id: str, items: Sequence[Item]) -> list[Item]:
        """The items with clean names (`keys.item_name`), unique within the job (see _CLAIM_NAMES)."""
        if not items:
            return []
        args: list[str | int] = [self.ttl]
        for it in items:
            stem, ext = keys.split_name(keys.item_name(it.name, f"item-{it.index}"))
            args += [it.index, stem, ext, stem.casefold()]
        try:
            names = self._claim_names(keys=[self._names(job_id)], args=args)
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc
        return [replace(it, name=str(name)) for it, name in zip(items, names, strict=True)]

    def _add_items(self, pipe: Any, job_id: str, items: Iterable[Item]) -> None:
        for it in items:
            key = self._item(job_id, it.index)
            pipe.hset(key, mapping={"index": it.index, "name": it.name, "key": it.key, "state": str(it.state),
                                    "attempts": 0, "error": "", "outputs": "[]", "info": "{}"})
            pipe.expire(key, self.ttl)

    def add_items(self, job_id: str, items: Sequence[Item]) -> None:
        """Append items found while ingesting (archive members, prefix listing)."""
        if not items:
            return
        items = self._unique_names(job_id, items)
        try:
            pipe = self.r.pipeline(transaction=True)
            self._add_items(pipe, job_id, items)
            pipe.hincrby(self._job(job_id), "total", len(items))
            pipe.execute()
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def mark_ingested(self, job_id: str) -> bool:
        """All items are known. Returns True when every item is already finished."""
        try:
            self.r.hset(self._job(job_id), "ingested", "1")
            self.r.delete(self._names(job_id))
            job = self.get_job(job_id)
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc
        return job.finished_items >= job.total

    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        """Load a job; with `tenant`, another tenant's job is reported as not found."""
        try:
            h = self.r.hgetall(self._job(job_id))
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc
        if not h or (tenant is not None and h.get("tenant") != tenant):
            raise RecordNotFound(f"job {job_id} not found")
        return Job(
            id=h["id"], kind=JobKind(h["kind"]), tenant=h["tenant"], state=JobState(h["state"]),
            params=json.loads(h.get("params") or "{}"), inputs=json.loads(h.get("inputs") or "{}"),
            label=h.get("label") or None, created_at=float(h.get("created_at") or 0),
            started_at=_f(h.get("started_at")), finished_at=_f(h.get("finished_at")),
            total=int(h.get("total") or 0), done=int(h.get("done") or 0), failed=int(h.get("failed") or 0),
            skipped=int(h.get("skipped") or 0), cancelled=int(h.get("cancelled") or 0),
            ingested=h.get("ingested") == "1", cancel_requested=h.get("cancel_requested") == "1",
            error=h.get("error") or None, extra=json.loads(h.get("extra") or "{}"),
        )

    def list_jobs(self, tenant: str, *, state: str | None = None, kind: str | None = None,
                  limit: int = 50, before: float | None = None) -> list[Job]:
        """Newest first; `before` is the created_at cursor of the previous page."""
        out: list[Job] = []
        hi: float | str = f"({before}" if before is not None else "+inf"
        try:
            while len(out) < limit:
                ids = self.r.zrevrangebyscore(f"{self.p}:jobs:{tenant}", hi, "-inf", start=0, num=limit * 2,
                                              withscores=True)
                if not ids:
                    break
                for job_id, score in ids:
                    hi = f"({score}"
                    try:
                        job = self.get_job(job_id, tenant)
                    except RecordNotFound:
                        self.r.zrem(f"{self.p}:jobs:{tenant}", job_id)  # expired record
                        continue
                    if (state and job.state != state) or (kind and job.kind != kind):
                        continue
                    out.append(job)
                    if len(out) >= limit:
                        break
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc
        return out

    def mark_running(self, job_id: str) -> bool:
        try:
            return bool(self._mark_running(keys=[self._job(job_id)], args=[now()]))
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def request_cancel(self, job_id: str) -> None:
        try:
            self.r.hset(self._job(job_id), "cancel_requested", "1")
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def cancel_requested(self, job_id: str) -> bool:
        try:
            return self.r.hget(self._job(job_id), "cancel_requested") == "1"
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def set_job_fields(self, job_id: str, **fields: Any) -> None:
        enc = {k: (json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else str(v)))
               for k, v in fields.items()}
        try:
            self.r.hset(self._job(job_id), mapping=enc)
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def finish_job(self, job_id: str, state: JobState, error: str | None = None,
                   extra: dict[str, Any] | None = None) -> None:
        self.set_job_fields(job_id, state=str(state), finished_at=now(), error=error, extra=extra or {})

    # -- items -----------------------------------------------------------------------------
    def get_items(self, job_id: str, indices: Iterable[int]) -> list[Item]:
        idx = list(indices)
        try:
            pipe = self.r.pipeline(transaction=False)
            for i in idx:
                pipe.hgetall(self._item(job_id, i))
            rows = pipe.execute()
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc
        return [self._to_item(h) for h in rows if h]

    def iter_items(self, job_id: str, start: int = 0, page: int = 500) -> Iterator[Item]:
        total = self.get_job(job_id).total
        for lo in range(start, total, page):
            yield from self.get_items(job_id, range(lo, min(lo + page, total)))

    @staticmethod
    def _to_item(h: dict[str, str]) -> Item:
        return Item(
            index=int(h["index"]), name=h.get("name", ""), key=h.get("key", ""), state=ItemState(h["state"]),
            attempts=int(h.get("attempts") or 0), error=h.get("error") or None,
            outputs=json.loads(h.get("outputs") or "[]"), info=json.loads(h.get("info") or "{}"),
        )

    def claim_attempt(self, job_id: str, index: int) -> int:
        """Count one more delivery of an item; returns the attempt number."""
        try:
            key = self._item(job_id, index)
            pipe = self.r.pipeline(transaction=True)
            pipe.hincrby(key, "attempts", 1)
            pipe.hset(key, "state", str(ItemState.RUNNING))
            return int(pipe.execute()[0])
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def release_attempt(self, job_id: str, index: int) -> None:
        """Undo a claim when the attempt ended for a reason that is not the item's fault."""
        try:
            self.r.hincrby(self._item(job_id, index), "attempts", -1)
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def finish_item(self, job_id: str, index: int, state: ItemState, *, error: str | None = None,
                    outputs: Sequence[str] = (), info: dict[str, Any] | None = None) -> int:
        """Record an item's terminal state once. Returns 0 (already final), 1, or 2 (job complete)."""
        if state not in TERMINAL_ITEM_STATES:
            raise ValueError(f"{state} is not a terminal item state")
        try:
            return int(self._finish_item(
                keys=[self._item(job_id, index), self._job(job_id)],
                args=[str(state), error or "", json.dumps(list(outputs)), json.dumps(info or {}), now()],
            ))
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    # -- content-hash index (incremental face indexing) -----------------------------------
    def seen_hash(self, tenant: str, model: str, sha: str) -> str | None:
        try:
            return self.r.hget(f"{self.p}:hashes:{tenant}:{model}", sha)
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def remember_hash(self, tenant: str, model: str, sha: str, where: str) -> None:
        try:
            self.r.hsetnx(f"{self.p}:hashes:{tenant}:{model}", sha, where)
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    # -- idempotency -------------------------------------------------------------------------
    def claim_idempotency(self, tenant: str, key: str, job_id: str) -> str:
        """Bind an Idempotency-Key to a job id; returns the id it is bound to (maybe an earlier one)."""
        k = f"{self.p}:idem:{tenant}:{key}"
        try:
            if self.r.set(k, job_id, nx=True, ex=86400):
                return job_id
            return str(self.r.get(k) or job_id)
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def release_idempotency(self, tenant: str, key: str) -> None:
        try:
            self.r.delete(f"{self.p}:idem:{tenant}:{key}")
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    # -- live workers ------------------------------------------------------------------------
    def publish_worker(self, info: WorkerInfo, ttl_s: int) -> None:
        """Announce (or renew) a worker's capabilities for `ttl_s` seconds; its heartbeat calls this again."""
        info = info.model_copy(update={"seen_at": now()})
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.set(f"{self.p}:worker:{info.name}", info.model_dump_json(), ex=ttl_s)
            pipe.zadd(f"{self.p}:workers", {info.name: now() + ttl_s})
            pipe.execute()
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def withdraw_worker(self, name: str) -> None:
        """A worker that shuts down says so at once, rather than when its record expires."""
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(f"{self.p}:worker:{name}")
            pipe.zrem(f"{self.p}:workers", name)
            pipe.execute()
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc

    def live_workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is current, by name."""
        try:
            self.r.zremrangebyscore(f"{self.p}:workers", "-inf", now())
            names = sorted(self.r.zrange(f"{self.p}:workers", 0, -1))
            docs = self.r.mget([f"{self.p}:worker:{n}" for n in names]) if names else []
        except redis.RedisError as exc:
            raise self._wrap(exc) from exc
        out = []
        for doc in docs:
            if not doc:
                continue
            try:
                out.append(WorkerInfo.model_validate_json(doc))
            except ValidationError:  # a record from another version of the worker: not ours to judge
                continue
        return out
