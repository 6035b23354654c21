"""Keep the model busy: the I/O of the batches around it runs in threads while a batch is on the model.

    main thread   claim n+1 | model n | cancel? | n to the writer | claim n+2 | model n+1 | ...
    prefetch      download + prepare (decode) n+1, items in parallel on the io pool
    writer        encode + upload n on the io pool, then record n's items in one round trip

At most three batches are alive at once (one prefetched, one on the model, one being written), so memory
stays bounded by the batch size; a batch with many outputs (one photo in a grid of 48 styles) keeps only
the first `HELD_WRITES` for later and writes the rest at once, at most 2 x io_threads in flight.
Everything here is plain threads over the thread-safe clients of storage/ (redis-py's pool, the minio
SDK's urllib3 pool); decoding and encoding release the GIL in PIL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from storage.errors import ObjectNotFound, StoreUnavailable
from storage.names import ItemErrorCode, ItemState
from storage.records import Item, ItemOutcome
from workers import metrics
from workers.context import WorkerContext
from workers.handlers import DeferredWrite, ItemInput, ItemResult, JobHandler

log = logging.getLogger("nightshift.pipeline")
T = TypeVar("T")


class Stages:
    """The threads of one chunk: an io pool, one thread that assembles the next batch, one writer."""

    def __init__(self, io_threads: int) -> None:
        self.io = ThreadPoolExecutor(io_threads, thread_name_prefix="nightshift-io")
        self._early = threading.BoundedSemaphore(2 * io_threads)  # early writes in flight at once
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="nightshift-prefetch")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nightshift-writer")

    def prefetch(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._prefetch.submit(fn, *args)

    def write(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._writer.submit(fn, *args)

    def start_early(self, ctx: WorkerContext) -> Callable[[DeferredWrite], Future[None]]:
        """What a batch with many outputs uses to start a write at once on the io pool. The model thread waits
        while 2 x io_threads of them are in flight, so the outputs held in memory stay bounded."""

        def start(write: DeferredWrite) -> Future[None]:
            self._early.acquire()
            future = self.io.submit(_write_one, ctx, write)
            future.add_done_callback(lambda _: self._early.release())
            return future

        return start

    def close(self) -> None:
        """Let the writer finish (its uploads would otherwise land unrecorded), drop prefetches not begun."""
        self._prefetch.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)
        self.io.shutdown(wait=True, cancel_futures=True)


def load_batch(
    ctx: WorkerContext, handler: JobHandler, batch: Sequence[Item], io: ThreadPoolExecutor
) -> list[ItemInput | ItemResult]:
    """Download a batch's inputs in parallel and let the handler prepare them (decode). A missing input is
    a failed result; an outage raises StoreUnavailable once every download has ended."""

    def fetch(item: Item) -> ItemInput | ItemResult:
        if not item.key:  # job-level items (cluster, identify) have no input object
            return ItemInput(item.index, item.name, item.key, b"")
        try:
            with metrics.STAGE.labels(stage="download").time():
                data = ctx.store.get_bytes(item.key)
        except ObjectNotFound:
            return ItemResult.failed(item.index, ItemErrorCode.INPUT_MISSING, f"input object is missing: {item.name}")
        one = ItemInput(item.index, item.name, item.key, data)
        _ahead(handler.prepare, one)
        return one

    loaded = _all(io, fetch, batch)
    _ahead(handler.prepare_batch, [one for one in loaded if isinstance(one, ItemInput) and one.data])
    return loaded


def _ahead(prepare: Callable[[Any], None], what: Any) -> None:
    """Run a handler's prepare hook. It is only a head start: if it breaks, the item is left unprepared and
    `process_batch` does the work itself (where a failure fails that item, not the chunk)."""
    try:
        prepare(what)
    except StoreUnavailable:
        raise
    except Exception:
        log.exception("preparing ahead failed; the batch prepares its items itself")


def run_writes(ctx: WorkerContext, writes: Sequence[DeferredWrite], io: ThreadPoolExecutor) -> dict[int | None, str]:
    """Encode and upload a batch's writes in parallel. Returns why writes failed, by item (None: a write of
    the whole batch); raises StoreUnavailable on an outage once every write has ended."""

    errors: dict[int | None, str] = {}
    outage: StoreUnavailable | None = None
    for write, future in [(w, w.started or io.submit(_write_one, ctx, w)) for w in writes]:
        try:
            future.result()
        except StoreUnavailable as exc:
            outage = outage or exc
        except Exception as exc:
            log.exception("writing %s failed", write.key)
            errors.setdefault(write.item, f"processing failed: {type(exc).__name__}: {exc}")
    if outage is not None:
        raise outage
    return errors


def _write_one(ctx: WorkerContext, write: DeferredWrite) -> None:
    with metrics.STAGE.labels(stage="encode").time():
        data, content_type = write.produce()
    with metrics.STAGE.labels(stage="upload").time():
        ctx.store.put_bytes(write.key, data, content_type)


def _all(io: ThreadPoolExecutor, fn: Callable[[Any], T], args: Sequence[Any]) -> list[T]:
    """`fn` over `args` on the pool, in order; the first outage is raised only after every call ended."""
    futures = [io.submit(fn, a) for a in args]
    out: list[T] = []
    outage: BaseException | None = None
    for future in futures:
        try:
            out.append(future.result())
        except StoreUnavailable as exc:
            outage = outage or exc
    if outage is not None:
        raise outage
    return out


def commit_batch(ctx: WorkerContext, job_id: str, results: Sequence[ItemResult]) -> list[ItemResult]:
    """Record a batch's terminal states in one round trip, each item once. A result whose outputs share a
    key fails instead of losing one. Returns the results as recorded."""
    checked = [_unique_outputs(job_id, r) for r in results]
    if not checked:
        return []
    with metrics.STAGE.labels(stage="records").time():
        outcomes = ctx.records.finish_items(
            job_id, [ItemOutcome(r.index, r.state, r.error, r.outputs, r.info, r.error_code) for r in checked]
        )
    for result, outcome in zip(checked, outcomes, strict=True):
        if outcome:
            metrics.ITEMS.labels(state=str(result.state)).inc()
    return checked


def _unique_outputs(job_id: str, result: ItemResult) -> ItemResult:
    if len(set(result.outputs)) == len(result.outputs):
        return result
    dupes = sorted({k for k in result.outputs if result.outputs.count(k) > 1})
    log.error("item %s/%s wrote two outputs to one key: %s", job_id, result.index, dupes)
    return ItemResult.failed(
        result.index,
        ItemErrorCode.INTERNAL,
        f"internal error: two outputs would share the key "
        f"{dupes[0]!r}; nothing was overwritten silently, please report this",
    )


def finish_batch(
    ctx: WorkerContext,
    job_id: str,
    results: Sequence[ItemResult],
    writes: Sequence[DeferredWrite],
    io: ThreadPoolExecutor,
) -> list[ItemResult]:
    """The writer's work for one batch: its writes, then its records (an item whose write failed fails)."""
    errors = run_writes(ctx, writes, io)
    batch_error = errors.get(None)
    final = []
    for r in results:
        error = errors.get(r.index) or batch_error
        final.append(
            ItemResult.failed(r.index, ItemErrorCode.INTERNAL, error) if error and r.state == ItemState.DONE else r
        )
    return commit_batch(ctx, job_id, final)
