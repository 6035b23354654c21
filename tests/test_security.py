"""The attacks of the second security round (issue 16), each against the real stack: one test per attack.

docs/reliability.md has the table: attack, expected answer, the test here that covers it.
"""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
import redis
import requests
from PIL import Image

from api.client import Client
from api.devstack.servers import wait_until
from storage import keys
from storage.names import ItemState, JobKind, JobState
from storage.records import Item, Job, new_id
from storage.redisdb import RedisKeys
from tests.conftest import Services, new_tenant_key, photo
from workers.celery_app import create_celery
from workers.context import WorkerContext
from workers.ingest import ingest

pytestmark = [pytest.mark.integration]


def _objects(services: Services, prefix: str) -> list[str]:
    return [o.key for o in services.store.list(prefix)]


def test_long_names_never_make_outputs_overwrite_each_other(
    workers, client: Client, services: Services, tenant_key, tmp_path
) -> None:
    """A 150-character stem with three built-in variants and a two-value strength grid: six outputs, six objects."""
    path = tmp_path / ("a" * 150 + ".jpg")
    path.write_bytes(photo(1, (64, 48)))
    blend = ",".join(f"{i}:1" for i in range(26))  # the longest label a blend can have
    params = {"method": "builtin", "builtin": [7, 3, blend], "grid": {"strength": [0.5, 1.0]}, "size": 64}
    job = client.wait(client.submit("style", files=[path], params=params)["id"], timeout=180)
    assert job["state"] == "succeeded", job
    items = list(client.results(job["id"]))
    outputs = [o["key"] for o in items[0]["outputs"]]
    assert len(outputs) == 6 and len(set(outputs)) == 6
    stored = _objects(services, keys.item_prefix(tenant_key[0], job["id"], 0))
    assert len(stored) == 6


def test_grid_values_that_round_alike_each_get_their_render(workers, client: Client, tenant_key, tmp_path) -> None:
    path = tmp_path / "p.jpg"
    path.write_bytes(photo(2, (48, 40)))
    params = {"method": "builtin", "builtin": [7], "grid": {"strength": [0.501, 0.502]}, "size": 48}
    job = client.wait(client.submit("style", files=[path], params=params)["id"], timeout=180)
    assert job["state"] == "succeeded"
    assert len({o["key"] for o in next(client.results(job["id"]))["outputs"]}) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"method": "builtin", "builtin": [True]},
        {"method": "builtin", "builtin": ["3:nan"]},
        {"method": "builtin", "builtin": [{"3": "Infinity"}]},
        {"method": "builtin", "builtin": [7], "strength": "NaN"},
    ],
)
def test_non_finite_numbers_and_booleans_are_refused(http, params) -> None:
    resp = http.post("/v1/jobs", json={"kind": "style", "params": params, "inputs": {"keys": ["x.jpg"]}})
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["code"] == "invalid_request"


# -- 1. every key a request names is resolved inside the caller's tenant ---------------------------------


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _queued_style_job(tenant: str, inputs: dict, ingested: bool = False) -> Job:
    """A style job record as the API would queue it (written around the API)."""
    params = {"method": "builtin", "builtin": [7]}
    return Job(
        new_id("j"), JobKind.STYLE, tenant, JobState.QUEUED, params, inputs, created_at=time.time(), ingested=ingested
    )


def _ctx(services: Services) -> WorkerContext:
    return WorkerContext.from_settings(services.settings, celery=create_celery(services.settings))


def test_another_tenants_archive_is_a_missing_name_and_cannot_be_probed(services: Services, api_server) -> None:
    a_tenant, a_key = new_tenant_key(services)
    _, b_key = new_tenant_key(services)
    a, b = api_server.app.test_client(), api_server.app.test_client()
    a.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {a_key}"
    b.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {b_key}"
    archive = (io.BytesIO(_zip_of({"secret.jpg": photo(3)})), "family.zip")
    job = a.post(
        "/v1/jobs",
        data={"kind": "style", "params": '{"method": "builtin", "builtin": [7]}', "archive": archive},
        content_type="multipart/form-data",
    ).get_json()
    stored = [o.key for o in services.store.list(keys.job_root(a_tenant, job["id"]) + "inputs/")]
    assert stored and stored[0].endswith("family.zip")
    answers = []
    for name in (stored[0], stored[0] + ".nope"):  # one of A's keys that exists, one that does not
        resp = b.post(
            "/v1/jobs",
            json={"kind": "style", "params": {"method": "builtin", "builtin": [7]}, "inputs": {"archives": [name]}},
        )
        answers.append((resp.status_code, resp.get_json()["error"]["message"].replace(".nope", "")))
    assert answers[0] == answers[1] and answers[0][0] == 422 and "not found in your storage" in answers[0][1]


def test_ingest_resolves_archive_keys_inside_the_jobs_tenant(services: Services) -> None:
    """Even a job record naming another tenant's key (written around the API) reads nothing of theirs."""
    ctx = _ctx(services)
    victim = "victim" + new_id()
    services.store.put_bytes(keys.tenant_key(victim, "private.zip"), _zip_of({"x.jpg": photo(4)}))
    job = _queued_style_job("thief" + new_id(), {"archives": [keys.tenant_key(victim, "private.zip")]})
    ctx.records.create_job(job)
    ingest(ctx, job.id)
    items = ctx.records.get_items(job.id, range(ctx.records.get_job(job.id).total))
    assert [it.state for it in items] == [ItemState.FAILED] and "not found" in (items[0].error or "")
    assert not list(services.store.list(keys.job_root(job.tenant, job.id) + "inputs/"))  # nothing was copied
    final = ctx.records.get_job(job.id)
    assert final.state == JobState.FAILED and "not found" in (final.error or "")


# -- 5. every job reaches a terminal state -----------------------------------------------------------------


def test_an_ingest_that_breaks_fails_the_job_with_its_reason(services: Services, monkeypatch) -> None:
    import workers.ingest as ingest_module

    def broken(*_args, **_kwargs):
        raise RuntimeError("listing went wrong")
        yield  # pragma: no cover - a generator

    monkeypatch.setattr(ingest_module, "iter_sources", broken)
    ctx = _ctx(services)
    job = _queued_style_job("t" + new_id(), {"prefix": "x/"})
    ctx.records.create_job(job)
    ingest(ctx, job.id)
    final = ctx.records.get_job(job.id)
    assert final.state == JobState.FAILED and "listing went wrong" in (final.error or "")
    assert services.store.exists(keys.manifest(job.tenant, job.id))


def test_cancel_ends_a_job_that_no_worker_holds(services: Services, api_server, http, tenant_key) -> None:
    """Its messages were lost (a Redis crash): cancel must still end it, at once, with a manifest."""
    job = _queued_style_job(tenant_key[0], {}, ingested=True)
    services.records.create_job(job, [Item(i, f"{i}.jpg", "x") for i in range(5)])  # nothing enqueued
    resp = http.post(f"/v1/jobs/{job.id}/cancel")
    assert resp.status_code == 202
    body = http.get(f"/v1/jobs/{job.id}").get_json()
    assert body["state"] == "cancelled" and body["counts"]["cancelled"] == 5
    assert services.store.exists(keys.manifest(job.tenant, job.id))
    assert http.post(f"/v1/jobs/{job.id}/cancel").status_code == 409


# -- 10, 11, 12: hostile bodies, ids, idempotency, uploads ------------------------------------------------


def test_deeply_nested_json_is_a_400_on_every_json_endpoint(http) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/v1/jobs", "/v1/uploads", "/v1/faces/verify", "/v1/galleries"):
        resp = http.post(path, data=deep, content_type="application/json")
        assert resp.status_code == 400, (path, resp.status_code)


@pytest.mark.parametrize("job_id", ["..", ".", "%2E%2E", "..%2F..", "j" + "0" * 15 + "g"])
def test_odd_job_ids_are_404s_never_500s(api_server, tenant_key, job_id) -> None:
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/results"):
        resp = requests.get(api_server.url + path, headers={"Authorization": f"Bearer {tenant_key[1]}"}, timeout=10)
        assert resp.status_code == 404, (path, resp.status_code)


def test_an_idempotency_key_reused_with_another_body_is_refused(http) -> None:
    first = {"kind": "faces", "inputs": {"keys": ["a.jpg"]}}
    r1 = http.post("/v1/jobs", json=first, headers={"Idempotency-Key": "night-1"})
    assert r1.status_code == 202
    r2 = http.post("/v1/jobs", json={**first, "inputs": {"keys": ["b.jpg"]}}, headers={"Idempotency-Key": "night-1"})
    assert r2.status_code == 422 and r2.get_json()["error"]["code"] == "idempotency_mismatch"
    r3 = http.post("/v1/jobs", json=first, headers={"Idempotency-Key": "night-1"})
    assert r3.status_code == 202 and r3.get_json()["id"] == r1.get_json()["id"]


def test_upload_names_that_sanitise_alike_get_their_own_keys(http, services: Services, tenant_key) -> None:
    grants = http.post("/v1/uploads", json={"names": ["a b.zip", "a_b.zip", "x/a_b.zip"]}).get_json()["uploads"]
    assert len({g["key"] for g in grants}) == 3
    for n, grant in enumerate(grants):
        resp = requests.post(
            grant["url"], data=grant["fields"], files={"file": ("f", f"file {n}".encode())}, timeout=10
        )
        assert resp.ok
    assert [services.store.get_bytes(keys.tenant_key(tenant_key[0], g["key"])) for g in grants] == [
        b"file 0",
        b"file 1",
        b"file 2",
    ]


# -- 7, 8: bounded work per request ---------------------------------------------------------------------


def test_the_job_record_does_not_hold_a_huge_key_list_and_bodies_are_bounded(http, services: Services) -> None:
    names = [f"big/{'x' * 480}{i:06d}.jpg" for i in range(20_000)]  # ~10 MB of keys
    resp = http.post(
        "/v1/jobs", json={"kind": "style", "params": {"method": "builtin", "builtin": [7]}, "inputs": {"keys": names}}
    )
    assert resp.status_code == 202
    job_id = resp.get_json()["id"]
    http.post(f"/v1/jobs/{job_id}/cancel")
    record = services.records.get_job(job_id)
    assert record.total == 20_000 and "keys" not in record.inputs
    huge = {
        "kind": "style",
        "params": {"method": "builtin", "builtin": [7]},
        "inputs": {"keys": [f"k/{'y' * 900}{i}.jpg" for i in range(20_000)]},
    }  # ~18 MB
    resp = http.post("/v1/jobs", data=json.dumps(huge), content_type="application/json")
    assert resp.status_code == 413 and "prefix" in resp.get_json()["error"]["message"]


def test_too_many_renders_per_photo_are_refused(http) -> None:
    params = {"method": "builtin", "builtin": list(range(16)), "grid": {"strength": [0.2, 0.4, 0.6, 0.8, 1.0]}}
    resp = http.post("/v1/jobs", json={"kind": "style", "params": params, "inputs": {"keys": ["a.jpg"]}})
    assert resp.status_code == 422 and "at most 64" in resp.get_json()["error"]["message"]


def test_an_output_size_over_the_pixel_limit_fails_the_item(workers, client: Client, tmp_path) -> None:
    path = tmp_path / "tiny.jpg"
    path.write_bytes(photo(6, (64, 64)))  # 16384 x 16384 asked = 268 MP
    job = client.wait(
        client.submit("style", files=[path], params={"method": "builtin", "builtin": [7], "size": 16384})["id"],
        timeout=120,
    )
    item = next(client.results(job["id"]))
    assert job["state"] == "failed" and item["state"] == "failed" and "MP limit" in item["error"]


def test_archive_members_are_checked_by_header_before_they_are_stored(
    workers, client: Client, services: Services, tenant_key, tmp_path
) -> None:
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")  # 400 MP from a few kB
    archive = tmp_path / "mixed.zip"
    archive.write_bytes(_zip_of({"ok.jpg": photo(7), "bomb.png": bomb.getvalue(), "notes.jpg": b"not a photo"}))
    job = client.wait(
        client.submit("style", archives=[archive], params={"method": "builtin", "builtin": [7]})["id"], timeout=120
    )
    by_name = {it["name"]: it for it in client.results(job["id"])}
    assert by_name["ok.jpg"]["state"] == "done"
    assert by_name["bomb.png"]["state"] == "failed" and "too large" in by_name["bomb.png"]["error"]
    assert by_name["notes.jpg"]["state"] == "failed"
    stored = [o.key for o in services.store.list(keys.job_root(tenant_key[0], job["id"]) + "inputs/")]
    assert not any(k.endswith(("bomb.png", "notes.jpg")) for k in stored)


def test_cancel_is_seen_between_the_renders_of_one_photo(
    workers, client: Client, services: Services, tenant_key, tmp_path
) -> None:
    path = tmp_path / "p.jpg"
    path.write_bytes(photo(8, (384, 288)))
    params = {"method": "builtin", "builtin": list(range(16)), "grid": {"strength": [0.4, 0.7, 1.0]}}  # 48 renders
    job = client.submit("style", files=[path], params=params)
    prefix = keys.item_prefix(tenant_key[0], job["id"], 0)
    wait_until(lambda: _objects(services, prefix), timeout=120, poll=0.05)
    client.cancel(job["id"])
    final = client.wait(job["id"], timeout=120)
    assert final["state"] == "cancelled" and final["counts"]["cancelled"] == 1
    assert len(_objects(services, prefix)) < 24  # far from the 48 a batch-level check would render


# -- 14: answers after the records expire ------------------------------------------------------------------


def test_results_answer_from_the_manifest_after_redis_records_expire(
    workers, client: Client, services: Services, tmp_path
) -> None:
    path = tmp_path / "keep.jpg"
    path.write_bytes(photo(9, (48, 40)))
    job = client.wait(
        client.submit("style", files=[path], params={"method": "builtin", "builtin": [7]})["id"], timeout=120
    )
    before = list(client.results(job["id"]))
    rk = RedisKeys(services.settings.key_prefix)
    services.records.client.delete(rk.job(job["id"]), rk.item(job["id"], 0))  # what the TTL does after 30 days
    assert client.job(job["id"])["state"] == "succeeded"
    after = list(client.results(job["id"]))
    assert [(it["name"], it["state"], [o["key"] for o in it["outputs"]]) for it in after] == [
        (it["name"], it["state"], [o["key"] for o in it["outputs"]]) for it in before
    ]
    assert requests.get(after[0]["outputs"][0]["url"], timeout=10).status_code == 200


# -- 15: the embedded servers need credentials -------------------------------------------------------------


def test_embedded_servers_refuse_anonymous_access(services: Services) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=services.redis.ports["redis"], socket_timeout=2).ping()
    services.store.put_bytes("t/x/secret.txt", b"secret")
    for port_name in ("filer", "volume"):
        url = f"http://127.0.0.1:{services.s3.ports[port_name]}/buckets/{services.settings.s3.bucket}/t/x/secret.txt"
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.put(url, data=b"evil", timeout=5).status_code in (400, 401)
    assert services.store.get_bytes("t/x/secret.txt") == b"secret"


def test_a_nan_cursor_is_a_400(http) -> None:
    for value in ("nan", "inf", "-inf"):
        resp = http.get(f"/v1/jobs?before={value}")
        assert resp.status_code == 400, value


def test_presigned_uploads_cap_their_size(services: Services) -> None:
    store = services.store
    url, fields = store.presigned_post("t/cap/uploads/u/0000-a.zip", max_bytes=1000)
    too_big = requests.post(url, data=fields, files={"file": ("a.zip", b"x" * 5000)}, timeout=10)
    assert too_big.status_code == 400 and "EntityTooLarge" in too_big.text
    assert not store.exists("t/cap/uploads/u/0000-a.zip")
    other = requests.post(
        url, data={**fields, "key": "t/cap/uploads/u/other.zip"}, files={"file": ("a", b"x")}, timeout=10
    )
    assert other.status_code == 403  # the form writes its own key and no other
    assert requests.post(url, data=fields, files={"file": ("a.zip", b"x" * 500)}, timeout=10).ok
