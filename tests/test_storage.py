"""The object store and the records against a real S3 server and a real Redis-compatible server."""

from __future__ import annotations

import io
import time

import pytest
import requests

from storage import keys
from storage.config import S3Settings
from storage.errors import ObjectNotFound, RecordNotFound, StoreUnavailable
from storage.names import ItemErrorCode, ItemState, JobKind, JobState
from storage.objects import ObjectStore
from storage.records import Item, Job, RecordStore, new_id
from storage.redisdb import RedisKeys
from tests.conftest import Services


def test_put_get_stat_list_delete(services: Services) -> None:
    store = services.store
    prefix = f"test/{new_id()}/"
    for i in range(5):
        store.put_bytes(f"{prefix}{i}.txt", f"v{i}".encode(), "text/plain")
    assert store.get_bytes(f"{prefix}3.txt") == b"v3"
    info = store.stat(f"{prefix}3.txt")
    assert info.size == 2 and info.content_type == "text/plain"
    assert [o.key for o in store.list(prefix)] == [f"{prefix}{i}.txt" for i in range(5)]
    assert [o.key for o in store.list(prefix, start_after=f"{prefix}2.txt")] == [f"{prefix}3.txt", f"{prefix}4.txt"]
    assert store.delete_prefix(prefix) == 5
    with pytest.raises(ObjectNotFound):
        store.get_bytes(f"{prefix}0.txt")


def test_stream_multipart_upload_and_download(services: Services, tmp_path) -> None:
    store = ObjectStore(services.settings.s3.model_copy(update={"part_size": 5 * 1024 * 1024}))
    data = bytes(range(256)) * (12 * 1024 * 1024 // 256)  # 12 MiB -> 3 parts
    key = f"test/{new_id()}/big.bin"
    store.put_stream(key, io.BytesIO(data), len(data))
    assert store.stat(key).size == len(data)
    size = store.download(key, tmp_path / "big.bin")
    assert size == len(data) and (tmp_path / "big.bin").read_bytes() == data


def test_presigned_urls_work_and_expire(services: Services) -> None:
    store = services.store
    key = f"test/{new_id()}/p.txt"
    url, fields = store.presigned_post(key, max_bytes=100)
    assert requests.post(url, data=fields, files={"file": ("p.txt", b"presigned")}, timeout=10).ok
    assert requests.get(store.presigned_get(key), timeout=10).content == b"presigned"
    short = store.presigned_get(key, expires_s=1)
    time.sleep(2.2)
    assert requests.get(short, timeout=10).status_code == 403


def test_presigned_urls_are_signed_for_the_public_endpoint(services: Services) -> None:
    s = services.settings.s3.model_copy(update={"public_endpoint": "photos.example.com:443", "public_secure": True})
    url = ObjectStore(s).presigned_get("a/b.jpg")
    assert url.startswith("https://photos.example.com/") and "X-Amz-Signature" in url
    assert services.settings.s3.secret_key not in url


def test_unreachable_store_raises_store_unavailable_after_retries() -> None:
    store = ObjectStore(S3Settings(endpoint="127.0.0.1:1", retries=2, backoff_s=0.01))
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.put_bytes("x", b"y")
    assert time.monotonic() - t0 < 10


def test_key_layout_rejects_traversal_and_namespaces_tenants() -> None:
    assert keys.tenant_key("acme", "uploads/u1/a.jpg") == "t/acme/uploads/u1/a.jpg"
    for bad in ("../b/x.jpg", "/etc/passwd", "a/../../b", "a\\b"):
        with pytest.raises(keys.BadKey):
            keys.tenant_key("acme", bad)
    with pytest.raises(keys.BadKey):
        keys.tenant_root("../x")
    assert keys.safe_name("../../evil name\u0000.jpg") == "evil_name_.jpg"
    long = keys.safe_name("é" * 300 + ".jpeg")
    assert len(long) <= keys.MAX_NAME and long.endswith(".jpeg")
    # deterministic: a retried item writes the same keys
    assert keys.item_output("a", "j1", 7, "x.png") == "t/a/jobs/j1/items/0000007/x.png"


def _job(records: RecordStore, n: int, tenant: str = "acme") -> Job:
    job = Job(
        id=new_id("j"), kind=JobKind.STYLE, tenant=tenant, state=JobState.QUEUED, params={}, inputs={}, ingested=True
    )
    records.create_job(job, [Item(i, f"{i}.jpg", f"k/{i}") for i in range(n)])
    return job


def test_item_transitions_are_counted_once(services: Services) -> None:
    records = services.records
    job = _job(records, 3)
    assert records.finish_item(job.id, 0, ItemState.DONE, outputs=["a"]) == 1
    assert records.finish_item(job.id, 0, ItemState.DONE, outputs=["a"]) == 0  # redelivery: not counted twice
    assert records.finish_item(job.id, 1, ItemState.FAILED, error="bad", error_code=ItemErrorCode.DECODE_FAILED) == 1
    assert records.finish_item(job.id, 2, ItemState.DONE) == 2  # the last one completes the job
    got = records.get_job(job.id)
    assert (got.done, got.failed, got.total) == (2, 1, 3)
    item = records.get_items(job.id, [1])[0]
    assert item.state == ItemState.FAILED and item.error == "bad" and item.error_code == ItemErrorCode.DECODE_FAILED


def test_a_batch_of_transitions_is_counted_once_in_one_call(services: Services) -> None:
    from storage.records import ItemOutcome

    records = services.records
    job = _job(records, 4)
    assert records.finish_item(job.id, 1, ItemState.DONE) == 1
    outcomes = records.finish_items(
        job.id,
        [
            ItemOutcome(0, ItemState.DONE, outputs=["a"], info={"n": 1}),
            ItemOutcome(1, ItemState.FAILED, error="late"),  # already final
            ItemOutcome(2, ItemState.SKIPPED),
        ],
    )
    assert outcomes == [1, 0, 1]
    cancelled = ItemOutcome(3, ItemState.CANCELLED, error="job cancelled", error_code=ItemErrorCode.CANCELLED)
    assert records.finish_items(job.id, [ItemOutcome(2, ItemState.DONE), cancelled]) == [
        0,
        2,
    ]  # a redelivered batch: only the new item counts, and it completes the job
    assert records.get_items(job.id, [3])[0].error_code == ItemErrorCode.CANCELLED
    got = records.get_job(job.id)
    assert (got.done, got.failed, got.skipped, got.cancelled) == (2, 0, 1, 1)
    first = records.get_items(job.id, [0])[0]
    assert first.outputs == ["a"] and first.info == {"n": 1} and first.state == ItemState.DONE
    with pytest.raises(ValueError):
        records.finish_items(job.id, [ItemOutcome(0, ItemState.RUNNING)])
    fresh = _job(records, 3)
    assert records.claim_attempts(fresh.id, [0, 1]) == [1, 1]
    assert records.claim_attempts(fresh.id, [1]) == [2] and records.claim_attempts(fresh.id, []) == []
    assert records.cancel_pending_items(fresh.id) == 1  # item 2; 0 and 1 are running
    assert records.claim_attempts(fresh.id, [2, 0]) == [0, 2]  # a final item is never claimed (nor counted again)
    assert records.get_items(fresh.id, [2])[0].state == ItemState.CANCELLED
    assert records.get_items(fresh.id, [2])[0].error_code == ItemErrorCode.CANCELLED


def test_attempts_and_tenant_scoping(services: Services) -> None:
    records = services.records
    job = _job(records, 1)
    assert records.claim_attempt(job.id, 0) == 1
    assert records.claim_attempt(job.id, 0) == 2
    records.release_attempt(job.id, 0)
    assert records.get_items(job.id, [0])[0].attempts == 1
    with pytest.raises(RecordNotFound):
        records.get_job(job.id, tenant="other")


def test_list_jobs_paginates_newest_first(services: Services) -> None:
    records = services.records
    tenant = "lister" + new_id()
    ids = []
    for _ in range(5):
        ids.append(_job(records, 0, tenant).id)
        time.sleep(0.01)
    page1 = records.list_jobs(tenant, limit=3)
    page2 = records.list_jobs(tenant, limit=3, before=page1[-1].created_at)
    assert [j.id for j in page1 + page2] == ids[::-1]


def test_redis_outage_raises_store_unavailable() -> None:
    from storage.config import Settings

    records = RecordStore(
        Settings(redis_url="redis://127.0.0.1:1/0"),
    )
    records.client.connection_pool.connection_kwargs["retry"] = None
    with pytest.raises(StoreUnavailable):
        records.get_job("x")


def test_a_finalize_longer_than_its_lock_ttl_runs_once(services: Services) -> None:
    """The lock's TTL is 1 s and the finalize takes 3 s: the holder keeps extending it, so a second finalizer
    arriving meanwhile finds it held (the old SET NX EX lock expired and let the second one in)."""
    import threading

    from storage.coordination import LockBusy
    from storage.jobs import finalize_job, plain_summary

    records = services.records
    job = _job(records, 1)
    records.mark_ingested(job.id)
    records.finish_item(job.id, 0, ItemState.DONE)
    calls: list[float] = []

    def slow(job_: Job, items: list[Item]):
        calls.append(time.monotonic())
        time.sleep(3)
        return plain_summary(job_, items)

    results: list[object] = []

    def finalize() -> None:
        try:
            results.append(finalize_job(records, services.store, job.id, slow, lock_ttl=1.0))
        except LockBusy as exc:
            results.append(exc)

    first = threading.Thread(target=finalize)
    first.start()
    time.sleep(1.8)  # past the TTL of the first holder's lock
    finalize()
    first.join()
    assert len(calls) == 1
    assert sorted(map(type, results), key=str) == sorted([bool, LockBusy], key=str)
    assert records.get_job(job.id).state == "succeeded"


def test_a_lock_whose_extension_fails_says_so_and_frees_the_name(services: Services) -> None:
    records = services.records
    with records.hold_lock("held-then-lost", ttl=0.6) as held:
        time.sleep(1.0)
        assert held.still_held()  # extended past its TTL
        records.client.delete(RedisKeys(services.settings.key_prefix).lock("held-then-lost"))  # taken away
        time.sleep(0.5)
        assert held.lost and not held.still_held()
        with records.hold_lock("held-then-lost", ttl=5, wait=0):
            pass  # another holder may take it now


def test_throughput_counts_the_items_worked_through_not_the_cancelled() -> None:
    job = Job("j1", JobKind.STYLE, "t", JobState.CANCELLED, {}, {}, started_at=100.0, finished_at=108.0, total=40)
    job.done, job.cancelled = 4, 36
    assert job.throughput == 0.5 and job.to_public()["throughput_per_s"] == 0.5
