"""The logic of a chunk: plain functions, called by thin Celery tasks and by tests directly.

A chunk is a list of item indices. Items are taken in model batches; cancel is checked between
batches; every item ends in exactly one terminal state (done/failed/skipped/cancelled).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from storage import keys
from storage.errors import ObjectNotFound, RecordNotFound, StoreUnavailable
from storage.names import ItemState, JobState
from storage.records import Item, Job
from workers import metrics
from workers.context import WorkerContext
from workers.handlers import ItemInput, ItemResult, JobHandler, handler_for

log = logging.getLogger("nightshift.pipeline")


class FinalizeBusy(Exception):
    """Another worker is finalizing this job right now; try again shortly."""


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
    metrics.record_gpu_memory()
    maybe_finalize(ctx, job_id)
    return counts


def final_state(job: Job) -> JobState:
    if job.cancel_requested and job.cancelled:
        return JobState.CANCELLED
    if job.total == 0 or (job.done + job.skipped == 0 and job.failed > 0):
        return JobState.FAILED
    if job.failed:
        return JobState.PARTIAL
    return JobState.SUCCEEDED


def maybe_finalize(ctx: WorkerContext, job_id: str) -> bool:
    """Finish the job if every item is final: handler outputs, manifest, state. Idempotent.

    Raises FinalizeBusy when another worker holds the finalize lock.
    """
    job = ctx.records.get_job(job_id)
    if job.state.finished or not job.ingested or job.finished_items < job.total:
        return False
    lock = f"{ctx.records.p}:finalize:{job_id}"
    if not ctx.records.r.set(lock, "1", nx=True, ex=120):
        raise FinalizeBusy(job_id)
    try:
        job = ctx.records.get_job(job_id)
        if job.state.finished:
            return False
        items = list(ctx.records.iter_items(job_id))
        state = final_state(job)
        summary: dict[str, Any] = {}
        error = None if job.total else "no input photos found: check the uploaded files, keys or prefix"
        if state in (JobState.SUCCEEDED, JobState.PARTIAL):
            try:
                summary = handler_for(job, ctx).finalize(job, items)
            except StoreUnavailable:
                raise
            except Exception as exc:  # job-level extras must not lose the items' results
                log.exception("finalize of %s failed", job_id)
                summary = {"finalize_error": f"{type(exc).__name__}: {exc}"}
        write_manifest(ctx, job, state, items, summary, error)
        ctx.records.finish_job(job_id, state, error=error, extra=summary)
        metrics.JOBS_FINISHED.labels(kind=str(job.kind), state=str(state)).inc()
        log.info("job %s finished: %s", job_id, state, extra={"job_id": job_id})
        return True
    finally:
        ctx.records.r.delete(lock)


def item_record(item: Item) -> dict[str, Any]:
    return {"index": item.index, "name": item.name, "state": str(item.state), "error": item.error,
            "attempts": item.attempts, "outputs": item.outputs, "info": item.info}


def write_manifest(ctx: WorkerContext, job: Job, state: JobState, items: list[Item], summary: dict[str, Any],
                   error: str | None) -> None:
    """The job's record in the store (outlives Redis): manifest.json plus items.jsonl."""
    items_key = keys.job_artifact(job.tenant, job.id, "items.jsonl")
    with tempfile.TemporaryFile() as fh:
        for item in items:
            fh.write(json.dumps(item_record(item), default=str).encode() + b"\n")
        size = fh.tell()
        fh.seek(0)
        ctx.store.put_stream(items_key, fh, size, "application/x-ndjson")
    public = job.to_public()
    public.update(state=str(state), error=error, summary=summary, finished_at=time.time())
    public["counts"] = {"total": job.total, "done": job.done, "failed": job.failed, "skipped": job.skipped,
                        "cancelled": job.cancelled, "pending": 0}
    public["items_key"] = keys.strip_tenant(job.tenant, items_key)
    public["tenant"] = job.tenant
    ctx.store.put_json(keys.manifest(job.tenant, job.id), public)
