"""The batch loop overlaps I/O with the model: proved by the order of events a handler and a spying store
record, never by timing. `process_chunk` is called directly (no Celery), against the real Redis and S3.

Each handler below waits, inside its model step, for what overlap promises to happen meanwhile (the next
batch fetched, the last batch written). With overlap the wait ends at once; run serially it could never end,
so it gives up after a bound and the recorded order shows the difference.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from storage import keys
from storage.errors import StoreUnavailable
from storage.names import ItemState, JobKind, JobState
from storage.objects import ObjectStore
from storage.records import Item, Job, RecordStore, new_id
from tests.conftest import Services
from workers import pipeline
from workers.context import WorkerContext
from workers.handlers import HELD_WRITES, ItemInput, ItemResult, JobHandler

pytestmark = [pytest.mark.integration]
TENANT = "overlap"
BOUND_S = 20.0  # how long a model step waits for what overlap promises; only reached when it is broken


class Log:
    """Events in the order they happened, from any thread; waits for an event to be logged."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._cond = threading.Condition()

    def add(self, event: str) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, event: str, bound: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: event in self.events, timeout=bound)

    def index(self, event: str) -> int:
        return self.events.index(event)


class SpyStore:
    """The real object store, logging each input download and output upload (it adds nothing else)."""

    def __init__(
        self, store: ObjectStore, log: Log, fail_on: str | None = None, hold: tuple[str, str] | None = None
    ) -> None:
        self._store, self._log, self._fail_on = store, log, fail_on
        self._hold = hold  # (key suffix, event): that upload waits until the event was logged

    def get_bytes(self, key: str) -> bytes:
        if self._fail_on and key.endswith(self._fail_on):
            raise StoreUnavailable("the store went away")
        self._log.add(f"download {key.rsplit('/', 1)[-1]}")
        return self._store.get_bytes(key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self._hold and key.endswith(self._hold[0]):
            self._log.wait_for(self._hold[1], BOUND_S)
        self._store.put_bytes(key, data, content_type)
        self._log.add(f"upload {key.rsplit('/', 1)[-1]}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class RecordingHandler(JobHandler):
    """Uppercases each input; in its model step it calls `on_model(batch number)` first."""

    log: Log
    on_model: Any = None
    outputs: int = 1  # per item

    def prepare(self, item: ItemInput) -> None:
        item.prepared = item.data.upper()
        self.log.add(f"prepare {item.name}")

    def process_batch(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        n = batch[0].index // self.batch_size
        self.log.add(f"model {n} start")
        if self.on_model:
            self.on_model(self, n)
        out = []
        for item in batch:
            assert item.prepared == item.data.upper()  # the pipeline handed over what `prepare` made
            names = [f"{item.name}.out"] + [f"{item.name}.{j}.out" for j in range(1, self.outputs)]
            written = [
                self.write(
                    keys.item_output(self.job.tenant, self.job.id, item.index, name),
                    lambda d=item.prepared: (d, "text/plain"),
                    item=item.index,
                )
                for name in names
            ]
            if self.outputs > HELD_WRITES:  # the writes past those held start at once: the last lands meanwhile
                self.log.wait_for(f"upload {names[-1]}", BOUND_S)
            out.append(ItemResult(item.index, ItemState.DONE, written))
        self.log.add(f"model {n} end")
        return out


@pytest.fixture
def run(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """run(n_items, on_model, overlap=True, fail_on=None) -> (job id, log, ctx)"""

    def go(
        n: int,
        on_model: Any,
        *,
        overlap: bool = True,
        fail_on: str | None = None,
        batch: int = 2,
        hold: tuple[str, str] | None = None,
        outputs: int = 1,
    ) -> tuple[str, Log, WorkerContext, Any]:
        log = Log()
        settings = services.settings.model_copy(
            update={"worker": services.settings.worker.model_copy(update={"batch_size": batch, "overlap": overlap})}
        )
        records = RecordStore(settings)
        store = services.store
        job = Job(
            id=new_id("j"),
            kind=JobKind.STYLE,
            tenant=TENANT,
            state=JobState.QUEUED,
            params={},
            inputs={},
            ingested=True,
        )
        items = []
        for i in range(n):
            key = keys.tenant_key(TENANT, f"{job.id}/p{i}")
            store.put_bytes(key, f"photo {i}".encode())
            items.append(Item(i, f"p{i}", key))
        records.create_job(job, items)
        handler_cls = type(
            "H",
            (RecordingHandler,),
            {"log": log, "outputs": outputs, "on_model": staticmethod(on_model) if on_model else None},
        )
        monkeypatch.setattr(pipeline, "handler_for", lambda job_, ctx_: handler_cls(job_, ctx_))
        ctx = WorkerContext(settings, records, SpyStore(store, log, fail_on, hold))  # type: ignore[arg-type]
        result = None
        try:
            result = pipeline.process_chunk(ctx, job.id, 0, list(range(n)))
        except StoreUnavailable as exc:
            result = exc
        return job.id, log, ctx, result

    yield go


def test_next_batch_downloads_and_decodes_while_a_batch_is_on_the_model(run: Any) -> None:
    def wait_for_next(handler: RecordingHandler, n: int) -> None:
        if n == 0:
            handler.log.wait_for("prepare p3", BOUND_S)

    job_id, log, ctx, _ = run(6, wait_for_next)
    ev = log.events
    # batch 1 (p2, p3) was downloaded and decoded before batch 0 came off the model
    assert log.index("download p2") < log.index("prepare p3") < log.index("model 0 end")
    # bounded memory: batch 2 is fetched only once batch 0 is off the model, never two batches ahead
    assert log.index("model 0 end") < log.index("download p4") and log.index("model 0 end") < log.index("download p5")
    assert ctx.records.get_job(job_id).done == 6, ev


def test_writes_and_records_of_a_batch_happen_while_the_next_is_on_the_model(run: Any) -> None:
    seen: dict[int, list[str]] = {}

    def wait_for_last(handler: RecordingHandler, n: int) -> None:
        if n == 1:  # on the model until batch 0 is recorded
            for _ in range(int(BOUND_S / 0.05)):
                seen[n] = [str(it.state) for it in handler.ctx.records.get_items(handler.job.id, [0, 1])]
                if seen[n] == ["done", "done"]:
                    break
                threading.Event().wait(0.05)

    # batch 0's first upload may start only once batch 1 is on the model
    job_id, log, ctx, _ = run(4, wait_for_last, hold=("p0.out", "model 1 start"))
    assert log.index("model 1 start") < log.index("upload p0.out") < log.index("model 1 end")
    assert seen[1] == ["done", "done"]  # and batch 0 was recorded while batch 1 was on the model
    assert ctx.records.get_job(job_id).done == 4


def test_serial_mode_shows_the_same_checks_fail(run: Any) -> None:
    """The control: with overlap off, the events the tests above wait for come only after the model step."""

    def wait_briefly(handler: RecordingHandler, n: int) -> None:
        if n == 0:
            handler.log.wait_for("prepare p3", 0.5)

    job_id, log, ctx, _ = run(4, wait_briefly, overlap=False)
    assert log.index("model 0 end") < log.index("upload p0.out") < log.index("download p2")
    assert ctx.records.get_job(job_id).done == 4


def test_a_batch_is_recorded_in_one_round_trip(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = RecordStore.finish_items

    def counting(self: RecordStore, job_id: str, results: Any) -> list[int]:
        calls.append(len(results))
        return real(self, job_id, results)

    monkeypatch.setattr(RecordStore, "finish_items", counting)
    monkeypatch.setattr(RecordStore, "finish_item", lambda *a, **k: pytest.fail("one item recorded alone"))
    job_id, _, ctx, _ = run(7, None, batch=3)
    assert calls == [3, 3, 1]
    job = ctx.records.get_job(job_id)
    assert job.done == 7 and job.state == JobState.SUCCEEDED


def test_cancel_between_batches_never_writes_the_batch_on_the_model(run: Any) -> None:
    def cancel_in_batch_1(handler: RecordingHandler, n: int) -> None:
        if n == 1:
            handler.ctx.records.request_cancel(handler.job.id)

    job_id, log, ctx, _ = run(6, cancel_in_batch_1)
    items = ctx.records.get_items(job_id, range(6))
    assert [str(it.state) for it in items] == ["done"] * 2 + ["cancelled"] * 4
    assert not any(e.startswith("upload p2") or e.startswith("upload p3") for e in log.events)
    job = ctx.records.get_job(job_id)
    assert (job.done, job.cancelled, job.state) == (2, 4, JobState.CANCELLED)


def test_an_outage_while_prefetching_gives_the_attempts_back(run: Any) -> None:
    job_id, _, ctx, raised = run(6, None, fail_on="/p3")
    assert isinstance(raised, StoreUnavailable)
    items = ctx.records.get_items(job_id, range(6))
    assert [str(it.state) for it in items[:2]] == ["done", "done"]  # batch 0 was with the writer: it lands
    assert [it.attempts for it in items[2:]] == [0, 0, 0, 0]  # nothing of the rest counts against the items
    assert ctx.records.get_job(job_id).done == 2


def test_a_prepare_hook_that_breaks_costs_only_the_head_start(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: RecordingHandler, item: ItemInput) -> None:
        if item.name == "p1":
            raise RuntimeError("a bug in a prepare hook")
        item.prepared = item.data.upper()

    def process(self: RecordingHandler, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        return [ItemResult(it.index, ItemState.DONE, info={"prepared": it.prepared is not None}) for it in batch]

    monkeypatch.setattr(RecordingHandler, "prepare", broken)
    monkeypatch.setattr(RecordingHandler, "process_batch", process)
    job_id, _, ctx, _ = run(3, None)
    items = ctx.records.get_items(job_id, range(3))
    assert [str(it.state) for it in items] == ["done"] * 3  # the chunk went on
    assert [it.info["prepared"] for it in items] == [True, False, True]  # p1 was left to process_batch


def test_a_batch_of_many_outputs_holds_only_a_few_in_memory(run: Any) -> None:
    """One photo in a grid of 20 styles: the first HELD_WRITES wait for the batch's end, the rest are written
    while the model still runs (held, they would all sit in memory until it ends)."""
    job_id, log, ctx, _ = run(1, None, batch=1, outputs=HELD_WRITES + 12)
    early = [e for e in log.events[: log.index("model 0 end")] if e.startswith("upload")]
    assert f"upload p0.{HELD_WRITES + 11}.out" in early and "upload p0.out" not in early, log.events
    assert len(early) <= 12
    [item] = ctx.records.get_items(job_id, [0])
    assert str(item.state) == "done" and len(set(item.outputs)) == HELD_WRITES + 12
    assert all(ctx.store.get_bytes(key) == b"PHOTO 0" for key in item.outputs)
