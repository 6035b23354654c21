"""End to end on real services: HTTP -> Redis/Celery -> a real worker process -> S3."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import requests
from PIL import Image

from api.client import Client, InvalidRequest
from storage import keys
from storage.manifest import iter_manifest_items, read_manifest
from storage.names import ItemErrorCode
from tests.browser import ARTIFACTS
from tests.conftest import Services, photo
from tests.corpus import CASES

pytestmark = [pytest.mark.integration]
BUILTIN = {"method": "builtin", "builtin": [7]}


def upload_photos(services: Services, tenant: str, n: int, prefix: str, size: tuple[int, int] = (64, 48)) -> list[str]:
    rels = []
    for i in range(n):
        rel = f"{prefix}/p{i:04d}.jpg"
        services.store.put_bytes(keys.tenant_key(tenant, rel), photo(i, size), "image/jpeg")
        rels.append(rel)
    return rels


def test_style_job_end_to_end_over_http(workers, client: Client, services: Services, tenant_key, tmp_path) -> None:
    files = []
    for i in range(3):
        path = tmp_path / f"photo{i}.jpg"
        path.write_bytes(photo(i, (160, 120)))
        files.append(path)
    job = client.submit("style", files=files, params={"method": "builtin", "builtin": [7, "3:0.5,12:0.5"]})
    # a worker may pick the first chunk up before the 202 is written
    assert job["state"] in ("queued", "running") and job["counts"]["total"] == 3
    job = client.wait(job["id"], timeout=180)
    assert job["state"] == "succeeded", job
    assert job["counts"] == {"total": 3, "done": 3, "failed": 0, "skipped": 0, "cancelled": 0, "pending": 0}
    items = list(client.results(job["id"]))
    assert len(items) == 3 and all(len(it["outputs"]) == 2 for it in items)
    names = sorted(o["name"] for it in items for o in it["outputs"])
    assert names[0].startswith("photo0__builtin-b") and names[0].endswith(".png")
    out = items[0]["outputs"][0]
    img = Image.open(io.BytesIO(requests.get(out["url"], timeout=10).content))
    assert img.size == (160, 120)
    # objects are where the key layout says, under the tenant
    tenant = tenant_key[0]
    first_item = next(it for it in items if it["index"] == 0)
    for output in first_item["outputs"]:
        assert output["key"].startswith(f"jobs/{job['id']}/items/0000000/")
        assert services.store.exists(keys.tenant_key(tenant, output["key"]))
    manifest = services.store.get_json(keys.manifest(tenant, job["id"]))
    assert manifest["state"] == "succeeded" and manifest["counts"]["done"] == 3
    lines = services.store.get_bytes(keys.job_artifact(tenant, job["id"], "items.jsonl")).splitlines()
    assert [json.loads(line)["state"] for line in lines] == ["done"] * 3
    arts = {a["name"] for a in client.artifacts(job["id"])}
    assert {"manifest.json", "contact-sheet.jpg"} <= arts
    sheet = next(a for a in client.artifacts(job["id"]) if a["name"] == "contact-sheet.jpg")
    grid = Image.open(io.BytesIO(requests.get(sheet["url"], timeout=10).content))
    assert grid.width >= 3 * 200 and grid.height >= 3 * 150  # 3 rows x (original + 2 styles)


def test_contact_sheet_heads_columns_with_the_style_images_and_fits_landscape_rows(
    workers, client: Client, tmp_path
) -> None:
    from workers.style import sheet as sh

    (tmp_path / "wide.jpg").write_bytes(photo(11, (160, 90)))
    paintings = []
    for n, colour in enumerate(((230, 40, 40), (40, 40, 230))):
        path = tmp_path / f"painting{n}.png"
        Image.new("RGB", (64, 64), colour).save(path)
        paintings.append(path)
    job = client.submit(
        "style",
        files=[tmp_path / "wide.jpg"],
        styles=paintings,
        params={"method": "arbitrary", "size": 160, "grid": {"strength": [0.5, 1.0]}},
    )
    job = client.wait(job["id"], timeout=180)
    assert job["state"] == "succeeded", job
    art = next(a for a in client.artifacts(job["id"]) if a["name"] == "contact-sheet.jpg")
    picture = Image.open(io.BytesIO(requests.get(art["url"], timeout=10).content)).convert("RGB")
    ARTIFACTS.mkdir(exist_ok=True)
    picture.save(ARTIFACTS / "contact-sheet-arbitrary.png")  # to look at
    sheet = np.asarray(picture)
    tile = 256
    header = tile // 2 + sh.LINE_H + sh.PAD
    row = sh.LINE_H + 4 + round(tile * 90 / 160) + 4 + 2 * sh.LINE_H + sh.PAD  # no band above or below the photo
    assert sheet.shape[:2] == (sh.PAD + header + row, sh.PAD + 5 * (tile + sh.PAD))  # original + 2 styles x 2
    # each style column is headed by its painting: red over the first two, blue over the last two
    mids = [sh.PAD + c * (tile + sh.PAD) + tile // 2 for c in range(5)]
    heads = [sheet[sh.PAD + tile // 4, x].astype(int) for x in mids]
    assert (heads[0] > 240).all()  # the original's column has no header image
    assert heads[1][0] > 200 > heads[1][2] and heads[2][0] > 200 > heads[2][2]
    assert heads[3][2] > 200 > heads[3][0] and heads[4][2] > 200 > heads[4][0]


def test_two_hundred_items_complete_with_correct_counts(
    workers, client: Client, services: Services, tenant_key
) -> None:
    rels = upload_photos(services, tenant_key[0], 200, "batch200", (40, 32))
    job = client.submit("style", params=BUILTIN, inputs={"keys": rels})
    job = client.wait(job["id"], timeout=300)
    assert job["state"] == "succeeded"
    assert job["counts"]["done"] == 200 and job["counts"]["failed"] == 0
    assert sum(len(it["outputs"]) for it in client.results(job["id"])) == 200
    assert job["throughput_per_s"] > 0


def test_three_corrupt_among_twenty_ends_partial(workers, client: Client, services: Services, tenant_key) -> None:
    rels = upload_photos(services, tenant_key[0], 17, "mixed", (48, 40))
    bad = {"mixed/zero.jpg": b"", "mixed/text.jpg": b"hello, not a jpeg", "mixed/cut.jpg": photo(99, (300, 200))[:700]}
    for rel, data in bad.items():
        services.store.put_bytes(keys.tenant_key(tenant_key[0], rel), data)
    job = client.submit("style", params=BUILTIN, inputs={"keys": rels + list(bad)})
    job = client.wait(job["id"], timeout=180)
    assert job["state"] == "partial"
    assert job["counts"]["done"] == 17 and job["counts"]["failed"] == 3
    failed = {it["name"]: it["error"] for it in client.results(job["id"], state="failed")}
    assert failed == {
        "mixed/zero.jpg": "empty file (0 bytes)",
        "mixed/text.jpg": "not a supported image (JPEG, PNG, WebP, HEIC, TIFF, GIF, BMP)",
        "mixed/cut.jpg": failed["mixed/cut.jpg"],
    }
    assert failed["mixed/cut.jpg"].startswith("corrupt or truncated")
    assert sum(len(it["outputs"]) for it in client.results(job["id"])) == 17


def test_failed_items_carry_their_error_code_next_to_their_reason(
    workers, client: Client, services: Services, tenant_key, tmp_path
) -> None:
    """A corrupt photo, a key that names nothing and an archive member over the pixel limit (refused at ingest):
    each item says why for people (`error`, as before) and for programs (`error_code`), in the results and in
    the manifest that outlives Redis."""
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo(99, (300, 200))[:700])
    bomb = io.BytesIO()
    Image.new("1", (12_000, 10_000)).save(bomb, "PNG")  # 120 MP from a few kB
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("bomb.png", bomb.getvalue())
    job = client.submit("style", files=[cut], archives=[archive], params=BUILTIN, inputs={"keys": ["nowhere/gone.jpg"]})
    job = client.wait(job["id"], timeout=120)
    items = {it["name"]: it for it in client.results(job["id"])}
    assert job["state"] == "failed"
    assert {name: it["error_code"] for name, it in items.items()} == {
        "cut.jpg": "decode_failed",
        "nowhere/gone.jpg": "input_missing",
        "bomb.png": "too_large",
    }
    assert items["cut.jpg"]["error"].startswith("corrupt or truncated")
    assert items["nowhere/gone.jpg"]["error"] == "input object is missing: nowhere/gone.jpg"
    assert items["bomb.png"]["error"].startswith("image too large: 12000x10000")
    manifest = read_manifest(services.store, tenant_key[0], job["id"])
    stored = {it.name: it.error_code for it in iter_manifest_items(services.store, tenant_key[0], manifest)}
    assert stored == {name: ItemErrorCode(it["error_code"]) for name, it in items.items()}


def test_archive_of_the_bad_input_corpus(workers, client: Client, tmp_path) -> None:
    path = tmp_path / "corpus.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for case in CASES:
            zf.writestr(f"corpus/{case.name}", case.build())
        zf.writestr("../escape.jpg", photo(1))
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as z2:
            z2.writestr("x.jpg", photo(2))
        zf.writestr("corpus/nested.zip", inner.getvalue())
    job = client.submit("style", archives=[path], params={**BUILTIN, "size": 64})
    job = client.wait(job["id"], timeout=300)
    assert job["state"] == "partial", job
    got = {it["name"]: it for it in client.results(job["id"])}
    for case in CASES:
        item = got[keys.item_name(f"corpus/{case.name}", "")]  # names are cleaned relative paths (bounded)
        if case.expect is None:
            assert item["state"] == "done", (case.name, item["error"])
        else:
            assert item["state"] == "failed" and case.expect in item["error"], (case.name, item["error"])
    assert "unsafe path in archive: '../escape.jpg'" in got["escape.jpg"]["error"]
    assert "archive" in got["corpus/nested.zip"]["error"]
    assert job["counts"]["total"] == len(CASES) + 2


def test_prefix_job_streams_the_listing(workers, client: Client, services: Services, tenant_key) -> None:
    upload_photos(services, tenant_key[0], 9, "album/2019", (40, 32))
    job = client.submit("style", params=BUILTIN, inputs={"prefix": "album/"})
    job = client.wait(job["id"], timeout=180)
    assert job["state"] == "succeeded" and job["counts"]["done"] == 9


def test_empty_prefix_is_refused_at_submit(client: Client) -> None:
    with pytest.raises(InvalidRequest, match="no objects under 'nothing-here/'"):
        client.submit("style", params=BUILTIN, inputs={"prefix": "nothing-here/"})


def test_retried_submission_with_idempotency_key_runs_once(
    workers, client: Client, services: Services, tenant_key
) -> None:
    rels = upload_photos(services, tenant_key[0], 2, "idem", (40, 32))
    a = client.submit("style", params=BUILTIN, inputs={"keys": rels}, idempotency_key="nightly-2026-11-28")
    b = client.submit("style", params=BUILTIN, inputs={"keys": rels}, idempotency_key="nightly-2026-11-28")
    assert a["id"] == b["id"]
    assert sum(1 for j in client.jobs() if j["id"] == a["id"]) == 1


def test_output_pixels_are_stylized_not_copied(workers, client: Client, tmp_path) -> None:
    path = tmp_path / "c.jpg"
    path.write_bytes(photo(5, (128, 96)))
    job = client.wait(client.submit("style", files=[path], params=BUILTIN)["id"], timeout=120)
    out = next(iter(client.results(job["id"])))["outputs"][0]
    styl = np.asarray(Image.open(io.BytesIO(requests.get(out["url"], timeout=10).content)).convert("RGB"), float)
    orig = np.asarray(Image.open(path).convert("RGB"), float)
    assert np.abs(styl - orig).mean() > 10


def test_ten_thousand_item_job_is_accepted_counted_and_cancelled(workers, client: Client) -> None:
    rels = [f"big/{i:05d}.jpg" for i in range(10_000)]
    job = client.submit("style", params=BUILTIN, inputs={"keys": rels})
    assert job["counts"]["total"] == 10_000 and job["state"] in ("queued", "running")
    client.cancel(job["id"])
    job = client.wait(job["id"], timeout=300)
    c = job["counts"]
    assert job["state"] == "cancelled" and c["cancelled"] + c["failed"] == 10_000
    assert c["cancelled"] > 5_000 and c["done"] == 0  # items that ran before the cancel failed: no such object
    first = client.results_page(job["id"], offset=9_990, limit=20)
    assert len(first["items"]) == 10 and first["next_offset"] is None
