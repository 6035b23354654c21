"""Real faces through the API: verify, search, galleries, identify, and the library of people."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from api.client import ApiError, Client
from tests.browser import images_loaded, shot
from tests.conftest import jpeg_bytes
from tests.test_faces_pipeline import astronaut, group_photo
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


def test_search_finds_the_same_face_first_with_its_person(indexed) -> None:
    client, job_id, folder = indexed
    res = client.search(folder / "a-small.jpg", k=3)
    assert res["searched"] >= 7 and len(res["matches"]) == 3
    top = res["matches"][0]
    assert top["distance"] < 0.1 and top["photo"].endswith("a-small.jpg") and top["job"] == job_id
    assert top["thumbnail_url"].startswith("http") and top["photo_url"].startswith("http")
    assert top["person"] and top["name"] is None  # in the library, not named yet
    assert [m["distance"] for m in res["matches"]] == sorted(m["distance"] for m in res["matches"])


def test_gallery_enrol_and_identify(indexed) -> None:
    client, job_id, folder = indexed
    gallery = client.request("POST", "/v1/galleries", json={"name": "crew"})
    with open(folder / "a-original.jpg", "rb") as fh:
        enrolled = client.request(
            "POST",
            f"/v1/galleries/{gallery['id']}/people",
            data={"name": "Eileen"},
            files=[("photos", ("a.jpg", fh, "image/jpeg"))],
        )
    assert enrolled["version"] == 1 and enrolled["people"] == [{"name": "Eileen", "photos": 1, "embeddings": 1}]
    job = client.submit("identify", params={"gallery": gallery["id"], "index_jobs": [job_id]})
    job = client.wait(job["id"], timeout=120)
    assert job["state"] == "succeeded", [it["error"] for it in client.results(job["id"])]
    assert job["summary"]["faces"] == 7 and job["summary"]["unknown"] == 0
    assert job["summary"]["photos_per_person"] == {"Eileen": 5}
    with pytest.raises(ApiError) as err:
        client.submit("identify", params={"gallery": "gnope"})
    assert err.value.status == 422 and "not found" in err.value.message


def test_real_faces_become_one_person_and_decisions_survive_a_recluster(indexed) -> None:
    """Seven faces of one astronaut: five in one person; the group photo's other two faces cannot share that
    person (one photo never shows a person twice), so they wait as unassigned."""
    client, job_id, _ = indexed
    people = client.request("GET", "/v1/people")["people"]
    assert len(people) == 1 and people[0]["faces"] == 5 and people[0]["photos"] == 5
    person = people[0]["id"]
    waiting = client.request("GET", "/v1/faces", params={"unassigned": "true"})
    assert waiting["total"] == 2 and all(f["photo_key"].endswith("group.jpg") for f in waiting["faces"])
    named = client.request("PATCH", f"/v1/people/{person}", json={"name": "Eileen Collins"})["person"]
    assert named["name"] == "Eileen Collins" and named["cover"]["thumbnail_url"].startswith("http")
    shown = client.request("GET", f"/v1/people/{person}")
    assert shown["total_photos"] == 5 and all(p["url"].startswith("http") for p in shown["photos"])
    out = next(f["face"] for p in shown["photos"] for f in p["faces"] if p["key"].endswith("a-crop.jpg"))
    client.request("POST", f"/v1/faces/{out}/person", json={"person": None})
    assert client.request("GET", "/v1/faces")["total"] == 3
    with pytest.raises(ApiError) as err:  # the group's faces: the person already has a face in that photo
        client.request("POST", f"/v1/faces/{waiting['faces'][0]['face']}/person", json={"person": person})
    assert err.value.status == 409 and "that photo" in err.value.message
    job = client.request("POST", "/v1/people/recluster")
    assert client.wait(job["id"], timeout=180)["state"] == "succeeded"
    after = client.request("GET", "/v1/people")["people"]
    assert [(p["id"], p["name"], p["faces"]) for p in after] == [(person, "Eileen Collins", 4)]
    assert out in {f["face"] for f in client.request("GET", "/v1/faces")["faces"]}  # still moved out
    client.request("POST", f"/v1/faces/{out}/person", json={"person": person})
    assert client.request("GET", f"/v1/people/{person}")["person"]["faces"] == 5
    with pytest.raises(ApiError) as err:
        client.request("PATCH", "/v1/people/nobody", json={"name": "x"})
    assert err.value.status == 404


def test_people_page_in_a_real_browser(indexed, api_server, page) -> None:
    """The web page's People view of the library: a card with the person's cover (screenshot)."""
    client, _, _ = indexed
    key = client.session.headers["Authorization"].split(" ", 1)[1]
    page.goto(f"{api_server.url}/ui#key={key}")
    page.goto(f"{api_server.url}/ui#/people")
    page.wait_for_selector(".person")
    assert page.locator(".person").count() == len(client.request("GET", "/v1/people")["people"])
    assert images_loaded(page, ".person img") >= 1
    shot(page, "web-people.png")
