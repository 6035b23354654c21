"""Faults against real processes: nothing lost under crashes, restarts and outages.

Each test has its own Redis-compatible server (AOF), S3 server, API and worker processes, because
it kills or restarts them. Workers run `tests.fault_worker` (the real tasks plus injected faults).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.client import ApiError
from api.devstack.servers import start_redis, start_s3, wait_until
from api.devstack.stack import WorkerProcess
from storage import keys
from storage.config import WorkerSettings
from storage.records import RecordStore
from tests.conftest import OwnStack, own_stack, photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BUILTIN = {"method": "builtin", "builtin": [7]}
TENANT = "rel"


class Env(OwnStack):
    @property
    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, decode_responses=True)

    def worker(self, fault: str = "", sleep: float = 0.2, concurrency: int = 1) -> WorkerProcess:
        return self.add_worker(
            "style",
            "tests.fault_worker",
            concurrency,
            {"NIGHTSHIFT_FAULT": fault, "NIGHTSHIFT_FAULT_SLEEP": str(sleep)},
        )

    def photos(self, n: int, prefix: str = "in", names: dict[int, str] | None = None) -> list[str]:
        rels = []
        for i in range(n):
            rel = f"{prefix}/{(names or {}).get(i, f'p{i:04d}.jpg')}"
            self.store.put_bytes(keys.tenant_key(TENANT, rel), photo(i, (40, 32)), "image/jpeg")
            rels.append(rel)
        return rels

    def job(self, job_id: str) -> dict:
        return RecordStore(self.settings).get_job(job_id).to_public()

    def wait(self, job_id: str, timeout: float = 240) -> dict:
        """Poll the records directly (the API may be briefly unavailable during an outage)."""

        def finished() -> dict | None:
            try:
                job = self.job(job_id)
            except Exception:  # Redis restarting
                return None
            return job if job["state"] in ("succeeded", "failed", "cancelled", "partial") else None

        return wait_until(
            finished,
            timeout,
            0.3,
            error=lambda: TimeoutError(
                f"job {job_id} did not finish; worker log:\n{self.workers[-1].log_path.read_text()[-4000:]}"
            ),
        )

    def wait_done(self, job_id: str, at_least: int, timeout: float = 120) -> int:
        done = wait_until(
            lambda: (n := self.job(job_id)["counts"]["done"]) >= at_least and n,
            timeout,
            0.1,
            error=lambda: TimeoutError(f"fewer than {at_least} items done"),
        )
        return int(done)

    def outputs(self, job_id: str) -> list[str]:
        return [o.key for o in self.store.list(keys.job_root(TENANT, job_id) + "items/")]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    # the watchdog's clocks in seconds instead of minutes, so recoveries fit in a test
    worker = WorkerSettings(
        chunk_size=4,
        batch_size=2,
        max_attempts=3,
        heartbeat_s=0.5,
        lease_s=3,
        watchdog_interval_s=1,
        watchdog_grace_s=3,
    )
    with own_stack(Env, tmp_path, TENANT, worker, key_prefix="rel") as e:
        yield e


def test_kill_9_worker_child_mid_job_loses_nothing_and_duplicates_nothing(env: Env) -> None:
    worker = env.worker(fault="slow", sleep=0.1)
    job = env.client.submit("style", params=BUILTIN, inputs={"keys": env.photos(100)})
    env.wait_done(job["id"], 20)
    children = worker.children()
    assert children, "no pool child to kill"
    import os
    import signal

    for pid in children:
        os.kill(pid, signal.SIGKILL)
    final = env.wait(job["id"])
    assert final["state"] == "succeeded", final
    assert final["counts"]["done"] == 100 and final["counts"]["failed"] == 0
    outs = env.outputs(job["id"])
    assert len(outs) == 100 == len(set(outs))  # a redelivered item overwrote its own key
    assert worker.alive() and worker.children() and worker.children() != children  # a new child took over


def test_redis_restart_during_a_job_loses_no_accepted_job(env: Env) -> None:
    env.worker(fault="slow", sleep=0.15)
    first = env.client.submit("style", params=BUILTIN, inputs={"keys": env.photos(40, "a")})
    env.wait_done(first["id"], 6)
    second = env.client.submit("style", params=BUILTIN, inputs={"keys": env.photos(8, "b")})
    port = env.redis.ports["redis"]
    env.redis.stop()  # SIGTERM: the AOF is flushed, as in a restart
    time.sleep(1.0)
    env.redis = start_redis(env.root / "redis", port)
    for job in (first, second):
        final = env.wait(job["id"])
        assert final["state"] == "succeeded", [(i["name"], i["error"]) for i in env.client.results(job["id"], "failed")]
        assert final["counts"]["done"] == final["counts"]["total"]
    assert len(env.outputs(first["id"])) == 40


def test_s3_outage_of_20_seconds_is_ridden_out(env: Env) -> None:
    env.worker(fault="slow", sleep=0.1)
    job = env.client.submit("style", params=BUILTIN, inputs={"keys": env.photos(30)})
    env.wait_done(job["id"], 4)
    base = env.s3.ports["master"]
    env.s3.stop()
    stopped = env.job(job["id"])["counts"]
    time.sleep(20)
    during = env.job(job["id"])
    # the outage was real: no progress beyond the batch in flight, and nothing failed or finished meanwhile
    assert during["counts"]["done"] <= stopped["done"] + 2 and during["counts"]["failed"] == 0
    assert during["state"] == "running"
    env.s3, _ = start_s3(env.root / "s3", base)
    final = env.wait(job["id"])
    assert final["state"] == "succeeded", final
    assert final["counts"]["failed"] == 0 and final["counts"]["done"] == 30


def test_poison_item_fails_alone_after_k_attempts(env: Env) -> None:
    env.worker(fault="poison")
    rels = env.photos(10, names={5: "poison.jpg"})
    job = env.client.submit("style", params=BUILTIN, inputs={"keys": rels})
    final = env.wait(job["id"])
    assert final["state"] == "partial"
    assert final["counts"]["done"] == 9 and final["counts"]["failed"] == 1
    failed = list(env.client.results(job["id"], state="failed"))
    assert [f["name"] for f in failed] == ["in/poison.jpg"]
    assert "gave up after 3 attempts" in failed[0]["error"]
    calls = env.r.hgetall("fault:calls")
    assert int(calls["in/poison.jpg"]) <= 3  # no hot loop
    assert all(int(n) <= 2 for name, n in calls.items() if name != "in/poison.jpg")


def test_cancel_stops_within_one_batch_and_counts_stay_true(env: Env) -> None:
    env.worker(fault="slow", sleep=0.05)
    job = env.client.submit("style", params=BUILTIN, inputs={"keys": env.photos(500)})
    env.wait_done(job["id"], 10)
    env.client.cancel(job["id"])
    at_cancel = env.job(job["id"])["counts"]["done"]
    final = env.wait(job["id"])
    c = final["counts"]
    assert final["state"] == "cancelled"
    assert c["done"] + c["cancelled"] == 500 and c["failed"] == 0
    assert c["done"] - at_cancel <= 2  # at most the batch in flight (batch_size 2, one worker)
    assert len(env.outputs(job["id"])) == c["done"]
    with pytest.raises(ApiError) as err:
        env.client.cancel(job["id"])
    assert err.value.status == 409


def test_job_longer_than_the_visibility_timeout_runs_exactly_once(tmp_path: Path, env: Env) -> None:
    env.settings = env.settings.model_copy(
        update={
            "worker": env.settings.worker.model_copy(
                update={"soft_time_limit_s": 5, "time_limit_s": 6, "visibility_margin_s": 2}
            )
        }
    )
    assert env.settings.visibility_timeout_s == 8 > env.settings.worker.time_limit_s
    env.worker(fault="slow", sleep=1.0, concurrency=2)
    env.worker(fault="slow", sleep=1.0, concurrency=1)  # a second consumer that would take a redelivery
    rels = env.photos(60, "vis-" + secrets.token_hex(2))
    t0 = time.monotonic()
    job = env.client.submit("style", params=BUILTIN, inputs={"keys": rels})
    final = env.wait(job["id"])
    assert time.monotonic() - t0 > env.settings.visibility_timeout_s
    assert final["state"] == "succeeded"
    calls = env.r.hgetall("fault:calls")
    assert sorted(calls) == sorted(rels) and set(calls.values()) == {"1"}


def _processed(env: Env) -> dict[str, int]:
    return {name: int(n) for name, n in env.r.hgetall("fault:calls").items()}


def test_kill_9_of_a_workers_main_process_mid_job_finishes_in_seconds(env: Env) -> None:
    """The whole worker (main process and pool) dies holding a chunk: its message waits in Celery's unacked
    set for the visibility timeout (an hour), but the watchdog of the next worker re-queues the orphaned
    items as soon as the dead worker's lease lapses."""
    first = env.worker(fault="slow", sleep=0.2)
    job = env.client.submit("style", params=BUILTIN, inputs={"keys": env.photos(40)})
    env.wait_done(job["id"], 6)
    first.kill()  # SIGKILL to the process group: main process and children
    started = time.monotonic()
    env.worker(fault="slow", sleep=0.05)  # what `nightshift up` does: start a worker again
    final = env.wait(job["id"], timeout=120)
    assert final["state"] == "succeeded", final
    assert final["counts"]["done"] == 40 and final["counts"]["failed"] == 0
    assert time.monotonic() - started < 60  # seconds, not the 70 minutes of the visibility timeout
    outs = env.outputs(job["id"])
    assert len(outs) == 40 == len(set(outs))
    calls = _processed(env)
    assert set(calls) == {f"in/p{i:04d}.jpg" for i in range(40)}
    assert sum(n > 1 for n in calls.values()) <= 4  # only the batch in flight ran again


def test_kill_9_of_redis_mid_job_finishes_in_seconds(env: Env) -> None:
    """Redis dies without a clean shutdown (the last second of AOF may be lost) and comes back on its port:
    whatever message or record the crash lost, the job still ends, each item counted once."""
    env.worker(fault="slow", sleep=0.1)
    job = env.client.submit("style", params=BUILTIN, inputs={"keys": env.photos(40, "k")})
    env.wait_done(job["id"], 6)
    port = env.redis.ports["redis"]
    env.redis.kill()
    time.sleep(1.0)
    env.redis = start_redis(env.root / "redis", port)
    final = env.wait(job["id"], timeout=180)
    assert final["state"] in ("succeeded", "partial"), final
    c = final["counts"]
    assert c["total"] == 40 and c["done"] + c["failed"] == 40
    assert c["done"] >= 38  # at most an item or two may run out of attempts across the crash
    outs = env.outputs(job["id"])
    assert len(outs) == len(set(outs)) >= c["done"]
