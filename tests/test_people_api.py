"""Faces become people through the API: verify, search, galleries, identify, cluster, labels."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from PIL import Image

from api.client import ApiError, Client
from tests.conftest import jpeg_bytes
from tests.test_faces_pipeline import astronaut, group_photo
from tests.test_web import browser, images_loaded, page, shot  # noqa: F401 - browser fixtures
from workers.faces.spaces import space_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LFW = Path(os.environ.get("NIGHTSHIFT_LFW_DIR", Path(__file__).resolve().parents[2] / "shared/data/lfw-dev"))


def variants() -> dict[str, bytes]:
    a = astronaut()
    return {
        "a-original.jpg": jpeg_bytes(a),
        "a-mirrored.jpg": jpeg_bytes(a.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        "a-small.jpg": jpeg_bytes(a.resize((320, 320))),
        "a-crop.jpg": jpeg_bytes(a.crop((60, 0, 460, 400))),
        "group.jpg": jpeg_bytes(group_photo()),
    }


@pytest.fixture(scope="module")
def indexed(workers, api_server, services, tmp_path_factory):
    from tests.conftest import new_tenant_key

    tenant, key = new_tenant_key(services)
    client = Client(api_server.url, key)
    folder = tmp_path_factory.mktemp("people")
    paths = []
    for name, data in variants().items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    job = client.wait(client.submit("faces", files=paths)["id"], timeout=300)
    assert job["state"] == "succeeded", job
    return client, job["id"], folder


def test_verify_same_person_and_no_face(indexed) -> None:
    client, _, folder = indexed
    res = client.verify(folder / "a-original.jpg", folder / "a-mirrored.jpg")
    assert res["same_person"] is True and res["distance"] < res["threshold"]
    assert res["model"] == "dlib+sface@v1+mirror"  # the default embedder, with its space's threshold
    assert res["threshold"] == space_of(res["model"]).thresholds.verify
    blank = folder / "blank.jpg"
    blank.write_bytes(jpeg_bytes(Image.new("RGB", (200, 200), (128, 128, 128))))
    with pytest.raises(ApiError) as err:
        client.verify(folder / "a-original.jpg", blank)
    assert err.value.status == 422 and err.value.code == "no_face" and "photo b" in err.value.message
    with pytest.raises(ApiError) as err:
        client.verify(folder / "group.jpg", folder / "a-original.jpg")
    assert err.value.code == "several_faces" and "3 faces" in err.value.message


@pytest.mark.skipif(not (LFW / "pairs.txt").exists(), reason="LFW dev data not present (../shared/data/lfw-dev)")
def test_verify_on_lfw_pairs(indexed) -> None:
    client, _, _ = indexed
    lines = (LFW / "pairs.txt").read_text().splitlines()[1:]
    same = lines[0].split("\t")
    diff = lines[300].split("\t")

    def img(name: str, n: str) -> Path:
        return LFW / "images" / name / f"{name}_{int(n):04d}.jpg"

    assert client.verify(img(same[0], same[1]), img(same[0], same[2]))["same_person"] is True
    assert client.verify(img(diff[0], diff[1]), img(diff[2], diff[3]))["same_person"] is False


def test_search_finds_the_same_face_first(indexed) -> None:
    client, job_id, folder = indexed
    res = client.search(folder / "a-small.jpg", k=3)
    assert res["searched"] >= 7 and len(res["matches"]) == 3
    top = res["matches"][0]
    assert top["distance"] < 0.1 and top["photo"].endswith("a-small.jpg") and top["job"] == job_id
    assert top["thumbnail_url"].startswith("http")
    assert [m["distance"] for m in res["matches"]] == sorted(m["distance"] for m in res["matches"])


def test_gallery_enrol_and_identify(indexed) -> None:
    client, job_id, folder = indexed
    gallery = client.request("POST", "/v1/galleries", json={"name": "crew"})
    with open(folder / "a-original.jpg", "rb") as fh:
        enrolled = client.request("POST", f"/v1/galleries/{gallery['id']}/people", data={"name": "Eileen"},
                                  files=[("photos", ("a.jpg", fh, "image/jpeg"))])
    assert enrolled["version"] == 1 and enrolled["people"] == [{"name": "Eileen", "photos": 1, "embeddings": 1}]
    job = client.submit("identify", params={"gallery": gallery["id"], "index_jobs": [job_id]})
    job = client.wait(job["id"], timeout=120)
    assert job["state"] == "succeeded", [it["error"] for it in client.results(job["id"])]
    assert job["summary"]["faces"] == 7 and job["summary"]["unknown"] == 0
    assert job["summary"]["photos_per_person"] == {"Eileen": 5}


def test_cluster_respects_photos_keeps_names_and_ignores_order(indexed) -> None:
    client, job_id, _ = indexed
    first = client.wait(client.submit("cluster", params={"index_jobs": [job_id]})["id"], timeout=120)
    assert first["state"] == "succeeded", first
    people = client.request("GET", f"/v1/jobs/{first['id']}/people")["people"]
    # the three faces of the group photo never share a person
    for person in people:
        items = [f["id"].split(":")[1] for f in person["faces"]]
        assert len(items) == len(set(items)), person
    assert sum(p["face_count"] for p in people) == 7
    assert len(people) >= 3  # one person, but the group photo's three faces cannot share one
    biggest = people[0]
    named = client.request("PUT", f"/v1/people/{biggest['id']}", json={"name": "Eileen Collins"})
    assert named["name"] == "Eileen Collins"
    again = client.wait(client.submit("cluster", params={"index_jobs": [job_id]})["id"], timeout=120)
    people2 = client.request("GET", f"/v1/jobs/{again['id']}/people")["people"]
    by_name = {p["name"]: p for p in people2}
    assert {f["id"] for f in by_name["Eileen Collins"]["faces"]} == {f["id"] for f in biggest["faces"]}
    assert sorted(p["id"] for p in people2) == sorted(p["id"] for p in people)
    sheet = Image.open(io.BytesIO(__import__("requests").get(by_name["Eileen Collins"]["sheet_url"],
                                                             timeout=10).content))
    assert sheet.width > 112


def test_merge_and_move_out(indexed) -> None:
    client, job_id, _ = indexed
    job = client.wait(client.submit("cluster", params={"index_jobs": [job_id]})["id"], timeout=120)
    people = client.request("GET", f"/v1/jobs/{job['id']}/people")["people"]
    assert len(people) >= 2
    a, b = people[0], people[-1]
    face = random.choice(a["faces"])["id"]
    client.request("POST", f"/v1/people/{a['id']}/remove", json={"face": face})
    after = {p["id"]: p for p in client.request("GET", f"/v1/jobs/{job['id']}/people")["people"]}
    assert face not in {f["id"] for f in after[a["id"]]["faces"]}
    client.request("POST", "/v1/people/merge", json={"into": a["id"], "from": b["id"]})
    merged = {p["id"]: p for p in client.request("GET", f"/v1/jobs/{job['id']}/people")["people"]}
    assert b["id"] not in merged and merged[a["id"]]["face_count"] == a["face_count"] - 1 + b["face_count"]
    with pytest.raises(ApiError) as err:
        client.request("PUT", "/v1/people/nobody", json={"name": "x"})
    assert err.value.status == 404


def test_people_page_in_a_real_browser(indexed, api_server, page) -> None:  # noqa: F811 - fixture
    """The web page's People view of a real cluster job: cards with face thumbnails (screenshot)."""
    client, job_id, _ = indexed
    job = client.wait(client.submit("cluster", params={"index_jobs": [job_id]})["id"], timeout=120)
    key = client.session.headers["Authorization"].split(" ", 1)[1]
    page.goto(f"{api_server.url}/ui#key={key}")
    page.goto(f"{api_server.url}/ui#/people/{job['id']}")
    page.wait_for_selector(".person")
    cards = page.locator(".person").count()
    assert cards == len(client.request("GET", f"/v1/jobs/{job['id']}/people")["people"])
    assert images_loaded(page, ".person img") >= 7
    shot(page, "web-people.png")
