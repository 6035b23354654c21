"""Job and item records in Redis, with atomic state transitions (key names: `storage.redisdb.RedisKeys`).

    job:<id>              hash: the job record (counts are HINCRBY'd atomically)
    item:<id>:<index>     hash: one item (state, attempts, error, error_code, outputs, info)
    jobs:<tenant>         sorted set of job ids by creation time
    live                  sorted set of jobs not yet finished (the watchdog's list)
    idem:<tenant>:<key>   Idempotency-Key -> job id and a fingerprint of the request (24 h)
    names:<id>            hash: item names taken while a job's items are still being listed
An item's terminal transition (done/failed/skipped/cancelled) happens once, in a Lua script that also
bumps the job's counters, so a redelivered chunk never counts an item twice; a job's terminal transition
happens once too, fenced the same way, whoever (worker, watchdog, cancel) gets there first.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from storage import keys as object_keys
from storage.apikeys import ApiKeys
from storage.config import Settings
from storage.coordination import Coordination
from storage.errors import RecordNotFound
from storage.names import FINISHED_STATES, ItemErrorCode, ItemState, JobKind, JobState
from storage.redisdb import RedisKeys, connect, connect_quick, unavailable_on_error

TERMINAL_ITEM_STATES = (ItemState.DONE, ItemState.FAILED, ItemState.SKIPPED, ItemState.CANCELLED)

# KEYS: item, job. ARGV: state, error, error code, outputs, info, now. Returns 0 if already terminal,
# 1 if recorded, 2 if recorded and it was the job's last outstanding item.
_FINISH_ITEM = """
local prev = redis.call('HGET', KEYS[1], 'state')
if prev == 'done' or prev == 'failed' or prev == 'skipped' or prev == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error', ARGV[2], 'error_code', ARGV[3], 'outputs', ARGV[4],
           'info', ARGV[5], 'finished_at', ARGV[6])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local j = redis.call('HMGET', KEYS[2], 'total', 'done', 'failed', 'skipped', 'cancelled', 'ingested')
local sum = (tonumber(j[2]) or 0) + (tonumber(j[3]) or 0) + (tonumber(j[4]) or 0) + (tonumber(j[5]) or 0)
if j[6] == '1' and sum >= (tonumber(j[1]) or 0) then return 2 end
return 1
"""

# KEYS: job, then one item key per result. ARGV: now, then (state, error, error code, outputs, info) per result.
# A batch's terminal transitions in one round trip, each item once as in _FINISH_ITEM. Returns one outcome
# per item (0 already terminal, 1 recorded, 2 recorded and the job's last outstanding item).
_FINISH_ITEMS = """
local out = {}
local last = 0
for i = 2, #KEYS do
  local a = 2 + (i - 2) * 5
  local prev = redis.call('HGET', KEYS[i], 'state')
  if prev == 'done' or prev == 'failed' or prev == 'skipped' or prev == 'cancelled' then
    out[i - 1] = 0
  else
    redis.call('HSET', KEYS[i], 'state', ARGV[a], 'error', ARGV[a + 1], 'error_code', ARGV[a + 2],
               'outputs', ARGV[a + 3], 'info', ARGV[a + 4], 'finished_at', ARGV[1])
    redis.call('HINCRBY', KEYS[1], ARGV[a], 1)
    out[i - 1] = 1
    last = i - 1
  end
end
if last > 0 then
  local j = redis.call('HMGET', KEYS[1], 'total', 'done', 'failed', 'skipped', 'cancelled', 'ingested')
  local sum = (tonumber(j[2]) or 0) + (tonumber(j[3]) or 0) + (tonumber(j[4]) or 0) + (tonumber(j[5]) or 0)
  if j[6] == '1' and sum >= (tonumber(j[1]) or 0) then out[last] = 2 end
end
return out
"""

# KEYS: one item key each. Counts a delivery of every item that is not final yet and marks it running;
# a final item (cancelled by the API meanwhile, say) is left alone, so it can never be counted twice.
# Returns the attempt number per item, 0 for one that is final (or gone).
_CLAIM_ITEMS = """
local out = {}
for i = 1, #KEYS do
  local s = redis.call('HGET', KEYS[i], 'state')
  if not s or s == 'done' or s == 'failed' or s == 'skipped' or s == 'cancelled' then
    out[i] = 0
  else
    out[i] = redis.call('HINCRBY', KEYS[i], 'attempts', 1)
    redis.call('HSET', KEYS[i], 'state', 'running')
  end
end
return out
"""

# KEYS: job, live jobs. ARGV: state, now, error, extra. The job's terminal transition, once: returns 1 for
# the caller that made it, 0 when the job had already finished.
_COMPLETE_JOB = """
local s = redis.call('HGET', KEYS[1], 'state')
if not s or s == 'succeeded' or s == 'failed' or s == 'cancelled' or s == 'partial' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished_at', ARGV[2], 'error', ARGV[3], 'extra', ARGV[4])
redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
return 1
"""

# KEYS: job, then one item key per index. Items still pending become cancelled (once each, counted);
# running ones are left to the worker that holds them. Returns how many were cancelled.
_CANCEL_PENDING = """
local n = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'pending' then
    redis.call('HSET', KEYS[i], 'state', 'cancelled', 'error', ARGV[1], 'error_code', 'cancelled',
               'finished_at', ARGV[2])
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[1], 'cancelled', n) end
return n
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
        """Items worked through (done, failed or skipped: not cancelled) per second since the job started."""
        if not self.started_at:
            return None
        end = self.finished_at or now()
        elapsed = max(end - self.started_at, 1e-6)
        return (self.done + self.failed + self.skipped) / elapsed

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
    error_code: ItemErrorCode | None = None  # set with `error` when the item failed or was cancelled

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_ITEM_STATES


@dataclass(frozen=True)
class ItemOutcome:
    """One item's terminal state, as `RecordStore.finish_items` records it."""

    index: int
    state: ItemState
    error: str | None = None
    outputs: Sequence[str] = ()
    info: dict[str, Any] | None = None
    error_code: ItemErrorCode | None = None


def _f(v: Any) -> float | None:
    return float(v) if v not in (None, "") else None


class RecordStore(Coordination):
    """Jobs, items and idempotency keys in Redis; locks, leases and workers through `Coordination`."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = RedisKeys(settings.key_prefix)
        self.ttl = settings.job_ttl_days * 86400
        self._r: redis.Redis = client or connect(settings.redis_url)
        self._quick: redis.Redis | None = None
        self._finish_item = self._r.register_script(_FINISH_ITEM)
        self._finish_items = self._r.register_script(_FINISH_ITEMS)
        self._claim_items = self._r.register_script(_CLAIM_ITEMS)
        self._mark_running = self._r.register_script(_MARK_RUNNING)
        self._complete_job = self._r.register_script(_COMPLETE_JOB)
        self._cancel_pending = self._r.register_script(_CANCEL_PENDING)
        self._claim_names = self._r.register_script(_CLAIM_NAMES)

    @property
    def apikeys(self) -> ApiKeys:
        """API keys and rate limits, on the same connection."""
        return ApiKeys(self._r, self.keys)

    @property
    def client(self) -> redis.Redis:
        """The raw client, for tests and fault injection only (production code asks this class)."""
        return self._r

    def ping(self) -> bool:
        """Whether Redis answers within a second (never waits out the reconnect backoff)."""
        if self._quick is None:
            self._quick = connect_quick(self.settings.redis_url)
        try:
            return bool(self._quick.ping())
        except redis.RedisError:
            return False

    # -- jobs ------------------------------------------------------------------------------
    def create_job(self, job: Job, items: Sequence[Item] = ()) -> None:
        """Write a new job (and its first items) in one transaction; it joins the live jobs."""
        created = job.created_at or now()
        items = self._unique_names(job.id, items)
        fields: dict[str, str | int | float] = {
            "id": job.id,
            "kind": str(job.kind),
            "tenant": job.tenant,
            "state": str(job.state),
            "params": json.dumps(job.params),
            "inputs": json.dumps(job.inputs),
            "label": job.label or "",
            "created_at": created,
            "total": len(items),
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "cancelled": 0,
            "ingested": "1" if job.ingested else "0",
            "cancel_requested": "0",
            "enqueued": len(items),
            "ingest_cursor": 0,
        }
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self.keys.job(job.id), mapping=fields)
            pipe.expire(self.keys.job(job.id), self.ttl)
            pipe.zadd(self.keys.tenant_jobs(job.tenant), {job.id: created})
            pipe.zadd(self.keys.live_jobs(), {job.id: created})
            self._add_items(pipe, job.id, items)
            if job.ingested:  # no item will be added later: the names need not be kept
                pipe.delete(self.keys.names(job.id))
            pipe.execute()

    def _unique_names(self, job_id: str, items: Sequence[Item]) -> list[Item]:
        """The items with clean names (`keys.item_name`), unique within the job (see _CLAIM_NAMES)."""
        if not items:
            return []
        args: list[str | int] = [self.ttl]
        for it in items:
            stem, ext = object_keys.split_name(object_keys.item_name(it.name, f"item-{it.index}"))
            args += [it.index, stem, ext, stem.casefold()]
        with unavailable_on_error():
            names = self._claim_names(keys=[self.keys.names(job_id)], args=args)
        return [replace(it, name=str(name)) for it, name in zip(items, names, strict=True)]

    def _add_items(self, pipe: Any, job_id: str, items: Iterable[Item]) -> None:
        for it in items:
            key = self.keys.item(job_id, it.index)
            pipe.hset(
                key,
                mapping={
                    "index": it.index,
                    "name": it.name,
                    "key": it.key,
                    "state": str(it.state),
                    "attempts": 0,
                    "error": "",
                    "outputs": "[]",
                    "info": "{}",
                },
            )
            pipe.expire(key, self.ttl)

    def add_items(self, job_id: str, items: Sequence[Item], *, ingest_cursor: int | None = None) -> None:
        """Append items found while ingesting (archive members, prefix listing), with the ingest position."""
        if not items:
            return
        items = self._unique_names(job_id, items)
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=True)
            self._add_items(pipe, job_id, items)
            pipe.hincrby(self.keys.job(job_id), "total", len(items))
            if ingest_cursor is not None:
                pipe.hset(self.keys.job(job_id), "ingest_cursor", ingest_cursor)
            pipe.execute()

    def ingest_progress(self, job_id: str) -> tuple[int, int]:
        """(source entries consumed, items enqueued) of a job's ingest, for a redelivered ingest to resume."""
        with unavailable_on_error():
            cursor, enqueued = self._r.hmget(self.keys.job(job_id), "ingest_cursor", "enqueued")
        return int(cursor or 0), int(enqueued or 0)

    def set_enqueued(self, job_id: str, enqueued: int) -> None:
        with unavailable_on_error():
            self._r.hset(self.keys.job(job_id), "enqueued", enqueued)

    def mark_ingested(self, job_id: str) -> bool:
        """All items are known. Returns True when every item is already finished."""
        with unavailable_on_error():
            self._r.hset(self.keys.job(job_id), "ingested", "1")
            self._r.delete(self.keys.names(job_id))
        job = self.get_job(job_id)
        return job.finished_items >= job.total

    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        """Load a job; with `tenant`, another tenant's job is reported as not found."""
        with unavailable_on_error():
            h = self._r.hgetall(self.keys.job(job_id))
        if not h or (tenant is not None and h.get("tenant") != tenant):
            raise RecordNotFound(f"job {job_id} not found")
        return Job(
            id=h["id"],
            kind=JobKind(h["kind"]),
            tenant=h["tenant"],
            state=JobState(h["state"]),
            params=json.loads(h.get("params") or "{}"),
            inputs=json.loads(h.get("inputs") or "{}"),
            label=h.get("label") or None,
            created_at=float(h.get("created_at") or 0),
            started_at=_f(h.get("started_at")),
            finished_at=_f(h.get("finished_at")),
            total=int(h.get("total") or 0),
            done=int(h.get("done") or 0),
            failed=int(h.get("failed") or 0),
            skipped=int(h.get("skipped") or 0),
            cancelled=int(h.get("cancelled") or 0),
            ingested=h.get("ingested") == "1",
            cancel_requested=h.get("cancel_requested") == "1",
            error=h.get("error") or None,
            extra=json.loads(h.get("extra") or "{}"),
        )

    def list_jobs(
        self,
        tenant: str,
        *,
        state: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Job]:
        """Newest first; `before` is the created_at cursor of the previous page."""
        out: list[Job] = []
        hi: float | str = f"({before}" if before is not None else "+inf"
        index = self.keys.tenant_jobs(tenant)
        with unavailable_on_error():
            while len(out) < limit:
                ids = self._r.zrevrangebyscore(index, hi, "-inf", start=0, num=limit * 2, withscores=True)
                if not ids:
                    break
                for job_id, score in ids:
                    hi = f"({score}"
                    try:
                        job = self.get_job(job_id, tenant)
                    except RecordNotFound:
                        self._r.zrem(index, job_id)  # expired record
                        continue
                    if (state and job.state != state) or (kind and job.kind != kind):
                        continue
                    out.append(job)
                    if len(out) >= limit:
                        break
        return out

    def mark_running(self, job_id: str) -> bool:
        with unavailable_on_error():
            return bool(self._mark_running(keys=[self.keys.job(job_id)], args=[now()]))

    def request_cancel(self, job_id: str) -> None:
        with unavailable_on_error():
            self._r.hset(self.keys.job(job_id), "cancel_requested", "1")

    def cancel_requested(self, job_id: str) -> bool:
        with unavailable_on_error():
            return self._r.hget(self.keys.job(job_id), "cancel_requested") == "1"

    def cancel_pending_items(self, job_id: str, reason: str = "job cancelled", page: int = 1000) -> int:
        """Cancel every item nobody has started (in pages, so Redis is never blocked long); returns how many."""
        total = self.get_job(job_id).total
        count = 0
        for lo in range(0, total, page):
            item_keys = [self.keys.item(job_id, i) for i in range(lo, min(lo + page, total))]
            with unavailable_on_error():
                count += int(self._cancel_pending(keys=[self.keys.job(job_id), *item_keys], args=[reason, now()]))
        return count

    def set_job_fields(self, job_id: str, **fields: Any) -> None:
        enc = {
            k: (json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else str(v)))
            for k, v in fields.items()
        }
        with unavailable_on_error():
            self._r.hset(self.keys.job(job_id), mapping=enc)

    def complete_job(
        self, job_id: str, state: JobState, error: str | None = None, extra: dict[str, Any] | None = None
    ) -> bool:
        """The job's terminal transition; True for the one caller that made it, False if it had finished."""
        if state not in FINISHED_STATES:
            raise ValueError(f"{state} is not a terminal job state")
        keys = [self.keys.job(job_id), self.keys.live_jobs()]
        args = [str(state), now(), error or "", json.dumps(extra or {})]
        with unavailable_on_error():
            return bool(self._complete_job(keys=keys, args=args))

    # -- items -----------------------------------------------------------------------------
    def get_items(self, job_id: str, indices: Iterable[int]) -> list[Item]:
        idx = list(indices)
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=False)
            for i in idx:
                pipe.hgetall(self.keys.item(job_id, i))
            rows = pipe.execute()
        return [self._to_item(h) for h in rows if h]

    def iter_items(self, job_id: str, start: int = 0, page: int = 500) -> Iterator[Item]:
        total = self.get_job(job_id).total
        for lo in range(start, total, page):
            yield from self.get_items(job_id, range(lo, min(lo + page, total)))

    @staticmethod
    def _to_item(h: dict[str, str]) -> Item:
        return Item(
            index=int(h["index"]),
            name=h.get("name", ""),
            key=h.get("key", ""),
            state=ItemState(h["state"]),
            attempts=int(h.get("attempts") or 0),
            error=h.get("error") or None,
            outputs=json.loads(h.get("outputs") or "[]"),
            info=json.loads(h.get("info") or "{}"),
            error_code=ItemErrorCode(h["error_code"]) if h.get("error_code") else None,
        )

    def claim_attempt(self, job_id: str, index: int) -> int:
        """Count one more delivery of an item; returns the attempt number."""
        key = self.keys.item(job_id, index)
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=True)
            pipe.hincrby(key, "attempts", 1)
            pipe.hset(key, "state", str(ItemState.RUNNING))
            return int(pipe.execute()[0])

    def claim_attempts(self, job_id: str, indices: Sequence[int]) -> list[int]:
        """Count one more delivery of each item in one round trip (one Lua call); the attempt numbers in order,
        0 for an item already final (it must not be processed or recorded again)."""
        if not indices:
            return []
        with unavailable_on_error():
            return [int(n) for n in self._claim_items(keys=[self.keys.item(job_id, i) for i in indices])]

    def release_attempt(self, job_id: str, index: int) -> None:
        """Undo a claim when the attempt ended for a reason that is not the item's fault."""
        with unavailable_on_error():
            self._r.hincrby(self.keys.item(job_id, index), "attempts", -1)

    def finish_item(
        self,
        job_id: str,
        index: int,
        state: ItemState,
        *,
        error: str | None = None,
        error_code: ItemErrorCode | None = None,
        outputs: Sequence[str] = (),
        info: dict[str, Any] | None = None,
    ) -> int:
        """Record an item's terminal state once. Returns 0 (already final), 1, or 2 (job complete)."""
        if state not in TERMINAL_ITEM_STATES:
            raise ValueError(f"{state} is not a terminal item state")
        keys = [self.keys.item(job_id, index), self.keys.job(job_id)]
        args = [str(state), error or "", error_code or "", json.dumps(list(outputs)), json.dumps(info or {}), now()]
        with unavailable_on_error():
            return int(self._finish_item(keys=keys, args=args))

    def set_item_outputs(self, job_id: str, index: int, outputs: Sequence[str]) -> None:
        """Replace a final item's outputs: a video's first item gets the joined video once its segments are
        joined (its segments' own files are parts, never results)."""
        with unavailable_on_error():
            self._r.hset(self.keys.item(job_id, index), "outputs", json.dumps(list(outputs)))

    # -- progress in units finer than items (frames of a video segment) ------------------
    def set_progress(self, job_id: str, index: int, done: int, total: int) -> None:
        """How far item `index` is, in its own units (a rewrite, so a redelivered item never counts twice)."""
        key = self.keys.progress(job_id)
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(key, str(index), f"{done}/{total}")
            pipe.expire(key, self.ttl)
            pipe.execute()

    def item_progress(self, job_id: str) -> dict[int, tuple[int, int]]:
        """(done, total) per item that reports progress."""
        with unavailable_on_error():
            raw = self._r.hgetall(self.keys.progress(job_id))
        out = {}
        for index, value in raw.items():
            d, _, t = str(value).partition("/")
            out[int(index)] = (int(d), int(t or 0))
        return out

    def progress(self, job_id: str) -> dict[str, int] | None:
        """Units done and planned over the job's items that report progress (None when none do)."""
        per_item = self.item_progress(job_id)
        if not per_item:
            return None
        return {"done": sum(d for d, _ in per_item.values()), "total": sum(t for _, t in per_item.values())}

    def finish_items(self, job_id: str, results: Sequence[ItemOutcome]) -> list[int]:
        """`finish_item` for a batch in one round trip (one Lua call, atomic): each item's terminal state is
        recorded once and counted once. Returns the outcome of each, in order (0, 1 or 2 as `finish_item`)."""
        if not results:
            return []
        args: list[str | float] = [now()]
        for res in results:
            if res.state not in TERMINAL_ITEM_STATES:
                raise ValueError(f"{res.state} is not a terminal item state")
            args += [
                str(res.state),
                res.error or "",
                res.error_code or "",
                json.dumps(list(res.outputs)),
                json.dumps(res.info or {}),
            ]
        keys = [self.keys.job(job_id), *(self.keys.item(job_id, res.index) for res in results)]
        with unavailable_on_error():
            return [int(n) for n in self._finish_items(keys=keys, args=args)]

    # -- idempotency -------------------------------------------------------------------------
    def claim_idempotency(self, tenant: str, key: str, job_id: str, fingerprint: str) -> tuple[str, str]:
        """Bind an Idempotency-Key to a job id and the request's fingerprint.

        Returns (job id, fingerprint) of the binding: this call's, or the one an earlier request made.
        """
        k = self.keys.idempotency(tenant, key)
        with unavailable_on_error():
            if self._r.set(k, json.dumps([job_id, fingerprint]), nx=True, ex=86400):
                return job_id, fingerprint
            raw = self._r.get(k)
        if not raw:
            return job_id, fingerprint
        bound_id, bound_fp = json.loads(raw)
        return str(bound_id), str(bound_fp)

    def release_idempotency(self, tenant: str, key: str) -> None:
        with unavailable_on_error():
            self._r.delete(self.keys.idempotency(tenant, key))
