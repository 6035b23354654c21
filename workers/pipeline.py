"""The logic of a chunk: plain functions, called by thin Celery tasks and by tests directly.

A chunk is a list of item indices. Items are taken in model batches; while one batch is on the model the
next one downloads and decodes and the previous one is encoded, uploaded and recorded (workers/overlap.py);
cancel is checked between batches; every item ends in exactly one terminal state
(done/failed/skipped/cancelled), recorded a batch at a time in one round trip.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from itertools import islice
from typing import Any

from storage.coordination import LockBusy
from storage.errors import RecordNotFound, StoreUnavailable
from storage.jobs import FinalizeLost, final_state, finalize_job, job_error
from storage.names import ItemErrorCode, ItemState, JobState
from storage.records import Item, Job
from workers import metrics
from workers.context import WorkerContext
from workers.handlers import DeferredWrite, ItemInput, ItemResult, JobCancelled, JobHandler, handler_for
from workers.overlap import Stages, commit_batch, finish_batch, load_batch

log = logging.getLogger("nightshift.pipeline")


class FinalizeBusy(Exception):
    """Another worker is finalizing this job right now; try again shortly."""


def holder_id() -> str:
    """Who holds a lease: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def batched(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def plan_batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    """Model batches; items seen before (a delivery that died with them) run alone first.

    A poison item that kills its worker then takes down no batch-mates on its next delivery, so it
    alone reaches the attempt cap.
    """
    suspects = [it for it in items if it.attempts > 0]
    for item in suspects:
        yield [item]
    yield from batched([it for it in items if it.attempts == 0], size)


def _run_batch(
    handler: JobHandler,
    inputs: list[ItemInput],
    chunk_index: int,
    start_early: Callable[[DeferredWrite], Future[None]] | None = None,
) -> tuple[list[ItemResult], list[DeferredWrite]]:
    """Run a batch on the model; if the handler fails as a whole, retry item by item so only the bad one
    fails. Returns the results and the writes of the items that are done (the others' are dropped; one
    started early may have landed, and is overwritten by the item's next attempt)."""
    with handler.deferring(start_early) as writes:
        try:
            results = handler.process_items(inputs, chunk_index)
        except JobCancelled:
            return [ItemResult.cancelled(one.index) for one in inputs], []
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(inputs) == 1:
                log.exception("item %s failed", inputs[0].name)
                return [
                    ItemResult.failed(
                        inputs[0].index, ItemErrorCode.INTERNAL, f"processing failed: {type(exc).__name__}: {exc}"
                    )
                ], []
        else:
            done = {r.index for r in results if r.state == ItemState.DONE}
            return results, [w for w in writes if (w.item in done) or (w.item is None and done)]
    results = []
    all_writes: list[DeferredWrite] = []
    for one in inputs:
        got, kept = _run_batch(handler, [one], chunk_index, start_early)
        results.extend(got)
        all_writes.extend(kept)
    return results, all_writes


def process_chunk(ctx: WorkerContext, job_id: str, chunk_index: int, indices: Sequence[int]) -> dict[str, Any]:
    """Process the not-yet-final items of one chunk. Raises StoreUnavailable for a retry later."""
    try:
        job = ctx.records.get_job(job_id)
    except RecordNotFound:
        log.warning("chunk %s of unknown job %s dropped", chunk_index, job_id)
        return {"dropped": True}
    if job.state.finished:
        return {"finished": True}
    ctx.records.mark_running(job_id)
    with ctx.records.lease(job_id, f"{holder_id()}:{chunk_index}", ttl=ctx.settings.worker.lease_s):
        counts = _process_items(ctx, job, chunk_index, indices)
    metrics.record_gpu_memory()
    maybe_finalize(ctx, job_id)
    return counts


def _process_items(ctx: WorkerContext, job: Job, chunk_index: int, indices: Sequence[int]) -> dict[str, int]:
    pending = [it for it in ctx.records.get_items(job.id, indices) if not it.terminal]
    if not pending:
        return {"processed": 0, "cancelled": 0}
    stages = Stages(ctx.settings.worker.io_threads)
    chunk = _Chunk(ctx, job, chunk_index, handler_for(job, ctx), stages)
    try:
        chunk.run(pending, list(plan_batches(pending, ctx.settings.worker.batch_size)))
    finally:
        stages.close()
    return chunk.counts


def _suspect(batch: Sequence[Item]) -> bool:
    return any(it.attempts > 0 for it in batch)


class _Chunk:
    """One chunk's batch loop; the timeline is in workers/overlap.py.

    Attempts are claimed just before a batch is fetched, so a crash while batch n is on the model also
    counts an attempt for the prefetched batch n+1: its items come back as suspects and run alone, and
    suspects run with nothing beside them (no prefetch, writes awaited), so a bystander is counted at
    most once more than the items it really ran with.
    """

    def __init__(self, ctx: WorkerContext, job: Job, chunk_index: int, handler: JobHandler, stages: Stages) -> None:
        self.ctx, self.job, self.chunk_index, self.handler, self.stages = ctx, job, chunk_index, handler, stages
        self.claimed: set[int] = set()  # attempts counted, item not recorded yet
        self.counts = {"processed": 0, "cancelled": 0}
        self._writing: Future[list[ItemResult]] | None = None
        self._loading: Future[list[ItemInput | ItemResult]] | None = None

    def run(self, pending: list[Item], batches: list[list[Item]]) -> None:
        try:
            self._run(pending, batches)
        except StoreUnavailable:
            # An outage is not the items' fault: give their attempts back before the task retries.
            self._drain()
            for index in sorted(self.claimed):
                try:
                    self.ctx.records.release_attempt(self.job.id, index)
                except StoreUnavailable:
                    break
            raise

    def _run(self, pending: list[Item], batches: list[list[Item]]) -> None:
        overlap = self.ctx.settings.worker.overlap
        for n, batch in enumerate(batches):
            loading, self._loading = self._loading or self._load(batch), None
            loaded = loading.result()
            serial = not overlap or _suspect(batch)
            if not serial and n + 1 < len(batches) and not _suspect(batches[n + 1]):
                self._loading = self._load(batches[n + 1])
            if n == 0 and self._cancelled():
                self._cancel(pending)
                return
            inputs = [one for one in loaded if isinstance(one, ItemInput)]
            results, writes = (
                _run_batch(self.handler, inputs, self.chunk_index, self.stages.start_early(self.ctx))
                if inputs
                else ([], [])
            )
            results = [one for one in loaded if isinstance(one, ItemResult)] + results
            if self._cancelled():  # between batches: this batch's writes never start
                self._cancel(pending)
                return
            self._wait_writer()
            self._writing = self.stages.write(finish_batch, self.ctx, self.job.id, results, writes, self.stages.io)
            if serial:
                self._wait_writer()
        self._wait_writer()

    def _load(self, batch: list[Item]) -> Future[list[ItemInput | ItemResult]]:
        """Claim the batch's attempts (items past the cap fail here) and fetch the rest in the background."""
        cap = self.ctx.settings.worker.max_attempts
        with metrics.STAGE.labels(stage="records").time():
            attempts = self.ctx.records.claim_attempts(self.job.id, [it.index for it in batch])
        self.claimed.update(it.index for it, n in zip(batch, attempts, strict=True) if n)
        over = [it for it, n in zip(batch, attempts, strict=True) if n > cap]
        if over:
            self._record(
                [
                    ItemResult.failed(
                        it.index,
                        ItemErrorCode.GAVE_UP,
                        f"gave up after {cap} attempts: the worker crashed or timed out while processing this item",
                    )
                    for it in over
                ]
            )
        todo = [it for it, n in zip(batch, attempts, strict=True) if 0 < n <= cap]  # 0: final meanwhile
        return self.stages.prefetch(load_batch, self.ctx, self.handler, todo, self.stages.io)

    def _record(self, results: list[ItemResult]) -> None:
        self.claimed.difference_update(r.index for r in commit_batch(self.ctx, self.job.id, results))

    def _wait_writer(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            results = writing.result()
            self.claimed.difference_update(r.index for r in results)
            self.counts["processed"] += len(results)
            self.handler.after_commit(results)

    def _cancelled(self) -> bool:
        return self.ctx.records.cancel_requested(self.job.id)

    def _cancel(self, pending: list[Item]) -> None:
        """Every item of the chunk not recorded yet ends cancelled (a batch already with the writer ends as
        it was going to)."""
        if self._loading is not None:
            self._loading.result()
            self._loading = None
        self._wait_writer()
        final = {
            it.index for it in self.ctx.records.get_items(self.job.id, [it.index for it in pending]) if it.terminal
        }
        rest = [ItemResult.cancelled(it.index) for it in pending if it.index not in final]
        self._record(rest)
        self.counts["cancelled"] += len(rest)

    def _drain(self) -> None:
        """Wait for the background stages after a failure (their own failures are the same outage)."""
        for future in (self._loading, self._writing):
            if future is None:
                continue
            try:
                results = future.result()
            except Exception:
                continue
            if future is self._writing:
                self.claimed.difference_update(r.index for r in results)  # type: ignore[union-attr]
        self._loading = self._writing = None


def maybe_finalize(ctx: WorkerContext, job_id: str) -> bool:
    """Finish the job if every item is final: handler outputs, manifest, state. Idempotent; True if this
    call ended it. Raises FinalizeBusy when another worker is finalizing it (the task retries)."""

    def summarize(job: Job, items: list[Item]) -> tuple[JobState, dict[str, Any], str | None]:
        state = final_state(job)
        error = job_error(job, items)
        summary: dict[str, Any] = {}
        if state in (JobState.SUCCEEDED, JobState.PARTIAL) or (state == JobState.CANCELLED and job.done):
            try:
                summary = handler_for(job, ctx).finalize(job, items)
            except StoreUnavailable:
                raise
            except Exception as exc:  # job-level extras must not lose the items' results
                log.exception("finalize of %s failed", job_id)
                summary = {"finalize_error": f"{type(exc).__name__}: {exc}"}
        return state, summary, error

    try:
        ended = finalize_job(ctx.records, ctx.store, job_id, summarize)
    except (LockBusy, FinalizeLost) as exc:
        raise FinalizeBusy(job_id) from exc
    if ended:
        job = ctx.records.get_job(job_id)
        metrics.JOBS_FINISHED.labels(kind=str(job.kind), state=str(job.state)).inc()
        log.info("job %s finished: %s", job_id, job.state, extra={"job_id": job_id})
    return ended
