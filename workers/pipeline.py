"""The logic of a chunk: plain functions, called by thin Celery tasks and by tests directly.

A chunk is a list of item indices. Items are taken in model batches; cancel is checked between
batches; every item ends in exactly one terminal state (done/failed/skipped/cancelled).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from storage.coordination import LockBusy
from storage.errors import ObjectNotFound, RecordNotFound, StoreUnavailable
from storage.jobs import FinalizeLost, final_state, finalize_job, job_error
from storage.names import ItemState, JobState
from storage.records import Item, Job
from workers import metrics
from workers.context import WorkerContext
from workers.handlers import ItemInput, ItemResult, JobCancelled, JobHandler, handler_for

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


def commit(ctx: WorkerContext, job_id: str, result: ItemResult) -> int:
    """Record an item's terminal state once; a result whose outputs share a key fails instead of losing one."""
    if len(set(result.outputs)) != len(result.outputs):
        dupes = sorted({k for k in result.outputs if result.outputs.count(k) > 1})
        log.error("item %s/%s wrote two outputs to one key: %s", job_id, result.index, dupes)
        result = ItemResult.failed(result.index, f"internal error: two outputs would share the key {dupes[0]!r}; "
                                                 "nothing was overwritten silently, please report this")
    outcome = ctx.records.finish_item(job_id, result.index, result.state, error=result.error,
                                      outputs=result.outputs, info=result.info)
    if outcome:
        metrics.ITEMS.labels(state=str(result.state)).inc()
    return outcome


def _load_inputs(ctx: WorkerContext, job: Job, batch: list[Item], claimed: list[int]) -> list[ItemInput]:
    cap = ctx.settings.worker.max_attempts
    inputs: list[ItemInput] = []
    for item in batch:
        attempt = ctx.records.claim_attempt(job.id, item.index)
        if attempt > cap:
            commit(ctx, job.id, ItemResult.failed(
                item.index, f"gave up after {cap} attempts: the worker crashed or timed out while processing "
                            "this item"))
            continue
        claimed.append(item.index)
        if not item.key:  # job-level items (cluster, identify) have no input object
            inputs.append(ItemInput(item.index, item.name, item.key, b""))
            continue
        try:
            with metrics.STAGE.labels(stage="download").time():
                data = ctx.store.get_bytes(item.key)
        except ObjectNotFound:
            commit(ctx, job.id, ItemResult.failed(item.index, f"input object is missing: {item.name}"))
            continue
        inputs.append(ItemInput(item.index, item.name, item.key, data))
    return inputs


def _run_batch(handler: JobHandler, inputs: list[ItemInput], chunk_index: int) -> list[ItemResult]:
    """Run a batch; if the handler fails as a whole, retry item by item so only the bad one fails."""
    try:
        results = handler.process_batch(inputs, chunk_index)
    except JobCancelled:
        return [ItemResult(one.index, ItemState.CANCELLED, error="job cancelled") for one in inputs]
    except StoreUnavailable:
        raise
    except Exception as exc:
        if len(inputs) == 1:
            log.exception("item %s failed", inputs[0].name)
            return [ItemResult.failed(inputs[0].index, f"processing failed: {type(exc).__name__}: {exc}")]
        results = []
        for one in inputs:
            results.extend(_run_batch(handler, [one], chunk_index))
    return results


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
    job_id = job.id
    pending = [it for it in ctx.records.get_items(job_id, indices) if not it.terminal]
    handler: JobHandler | None = None
    counts = {"processed": 0, "cancelled": 0}
    for batch in plan_batches(pending, ctx.settings.worker.batch_size):
        if ctx.records.cancel_requested(job_id):
            done = {it.index for it in ctx.records.get_items(job_id, indices) if it.terminal}
            for rest in pending:
                if rest.index not in done:
                    commit(ctx, job_id, ItemResult(rest.index, ItemState.CANCELLED, error="job cancelled"))
                    counts["cancelled"] += 1
            break
        claimed: list[int] = []
        try:
            inputs = _load_inputs(ctx, job, batch, claimed)
            if not inputs:
                continue
            handler = handler or handler_for(job, ctx)
            results = _run_batch(handler, inputs, chunk_index)
        except StoreUnavailable:
            # An outage is not the items' fault: give their attempts back before the task retries.
            for index in claimed:
                ctx.records.release_attempt(job_id, index)
            raise
        for result in results:
            commit(ctx, job_id, result)
            counts["processed"] += 1
        handler.after_commit(results)
    return counts


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
