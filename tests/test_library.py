"""The library over two nights, through the API, with real Redis, S3, API and a real faces worker process.

The worker runs `tests.library_worker`: the real pipeline and library with a synthetic face engine (see
its docstring), so photos of 25 different people can be made here. `tests/test_library_lfw.py` runs the
same nights with the real models on LFW people when that data is present.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.config import LibrarySettings, WorkerSettings
from storage.library import Decision, LibraryStore
from storage.library.documents import Person, Suggestion, may_be_one
from storage.redisdb import RedisKeys
from tests.browser import failure_screenshot, images_loaded, shot
from tests.conftest import OwnStack, own_stack
from tests.library_worker import identity_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TENANT = "family"


class LibEnv(OwnStack):
    @property
    def library(self) -> LibraryStore:
        return LibraryStore(self.store, self.records, TENANT)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibEnv]:
    worker = WorkerSettings(chunk_size=8, batch_size=4, heartbeat_s=1, watchdog_interval_s=2)
    root, password = tmp_path_factory.mktemp("library"), secrets.token_urlsafe(12)
    library = LibrarySettings(min_faces=3)
    with own_stack(LibEnv, root, TENANT, worker, password=password, key_prefix="lib", library=library) as e:
        e.add_worker("faces", "tests.library_worker")
        yield e


def night(env: LibEnv, tmp: Path, photos: dict[str, list[tuple[int, int]]]) -> dict:
    """Index these photos (name -> (person, look) faces) as one faces job; returns the finished job."""
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, faces in photos.items():
        path = tmp / name
        path.write_bytes(identity_photo(faces))
        paths.append(path)
    job = env.client.submit("faces", files=paths, params={"thumbnails": True})
    return env.client.wait(job["id"], timeout=300)


_identity: dict[str, int] = {}  # face id -> the synthetic person in it


def learn(env: LibEnv, job: dict, photos: dict[str, list[tuple[int, int]]]) -> None:
    """Remember who is in every face the job found (face ids are <job>:<item>:<face>)."""
    for item in env.client.results(job["id"]):
        for k, (person, _) in enumerate(photos.get(item["name"], [])):
            _identity[f"{job['id']}:{item['index']}:{k}"] = person


def who(env: LibEnv, person_id: str) -> set[int]:
    """The synthetic people whose faces a library person holds."""
    shown = env.client.request("GET", f"/v1/people/{person_id}", params={"limit": 1000})
    return {_identity.get(f["face"], -1) for photo in shown["photos"] for f in photo["faces"]}


def people(env: LibEnv, which: str = "all") -> dict[str, dict]:
    return {
        p["id"]: p for p in env.client.request("GET", "/v1/people", params={"filter": which, "limit": 1000})["people"]
    }


NIGHT_ONE = {f"n1-p{p:02d}-{k}.png": [(p, k)] for p in range(1, 21) for k in range(4)}
NIGHT_ONE.update({"n1-group-1-2.png": [(1, 7), (2, 7)], "n1-group-3-4-5.png": [(3, 8), (4, 8), (5, 8)]})
NIGHT_ONE.update({f"n1-split-a-{k}.png": [(28, k)] for k in range(3)})  # one human the engine sees as 28 and 29
NIGHT_ONE.update({f"n1-split-b-{k}.png": [(29, k)] for k in range(3)})


def test_two_nights_grow_one_library_and_a_recluster_keeps_every_decision(env: LibEnv, tmp_path: Path) -> None:
    first = night(env, tmp_path / "n1", NIGHT_ONE)
    assert first["state"] == "succeeded", first
    learn(env, first, NIGHT_ONE)
    summary = first["summary"]["library"]
    assert summary["new_people"] == 22 and summary["unassigned"] == 0, summary
    by_identity: dict[int, str] = {}
    for pid in people(env):
        ids = who(env, pid)
        assert len(ids) == 1, ids  # nobody holds two people's faces
        by_identity[ids.pop()] = pid
    assert set(by_identity) == {*range(1, 21), 28, 29}

    # a user names five people, hides one, chooses a cover, and merges the two halves of one human
    names = {p: f"Person {p}" for p in (1, 2, 3, 4, 5)}
    for p, name in names.items():
        env.client.request("PATCH", f"/v1/people/{by_identity[p]}", json={"name": name})
    env.client.request("PATCH", f"/v1/people/{by_identity[6]}", json={"hidden": True})
    shown = env.client.request("GET", f"/v1/people/{by_identity[7]}")
    cover = shown["photos"][-1]["faces"][0]["face"]
    env.client.request("PATCH", f"/v1/people/{by_identity[7]}", json={"cover": cover})
    merged = env.client.request("POST", "/v1/people/merge", json={"into": by_identity[28], "from": by_identity[29]})
    assert merged["person"]["faces"] == 6
    assert by_identity[6] not in people(env, "visible") and by_identity[6] in people(env, "hidden")

    # night two: the named, the unnamed seen before, the merged human, and five new people
    night_two = {f"n2-p{p:02d}-{k}.png": [(p, 10 + k)] for p in (*range(1, 11), 29) for k in range(2)}
    night_two.update({f"n2-new{p:02d}-{k}.png": [(p, k)] for p in range(21, 26) for k in range(3)})
    night_two["n2-strangers.png"] = [(30, 0), (31, 0)]  # seen once each: they wait, unassigned
    second = night(env, tmp_path / "n2", night_two)
    learn(env, second, night_two)
    s2 = second["summary"]["library"]
    assert s2["new_people"] == 5 and s2["grew"] == 11 and s2["unassigned"] == 2, s2
    everyone = people(env)
    for p in range(1, 11):  # the same ids as before, holding their new photos
        assert by_identity[p] in everyone and who(env, by_identity[p]) == {p}
        assert everyone[by_identity[p]]["faces"] == (5 if p <= 5 else 4) + 2  # 4 alone (+1 in a group) + 2 new
    for p, name in names.items():
        assert everyone[by_identity[p]]["name"] == name
    assert who(env, by_identity[28]) == {28, 29} and everyone[by_identity[28]]["faces"] == 8
    new_ids = set(everyone) - set(by_identity.values())
    assert len(new_ids) == 5 and {next(iter(who(env, pid))) for pid in new_ids} == set(range(21, 26))
    for pid in everyone:
        assert len(who(env, pid) - {28, 29}) <= 1  # no face in a wrong person
    unassigned = env.client.request("GET", "/v1/faces", params={"unassigned": "true"})
    assert unassigned["total"] == 2

    # a face moved out of a person, another assigned to one
    shown = env.client.request("GET", f"/v1/people/{by_identity[8]}")
    out = shown["photos"][0]["faces"][0]["face"]
    env.client.request("POST", f"/v1/faces/{out}/person", json={"person": None})
    stranger = unassigned["faces"][0]["face"]
    env.client.request("POST", f"/v1/faces/{stranger}/person", json={"person": by_identity[9]})
    before = {
        pid: (p["name"], p["hidden"], p["cover"]["face"] if p["cover"]["chosen"] else None, p["faces"])
        for pid, p in people(env).items()
    }

    job = env.client.request("POST", "/v1/people/recluster")
    done = env.client.wait(job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    after = {
        pid: (p["name"], p["hidden"], p["cover"]["face"] if p["cover"]["chosen"] else None, p["faces"])
        for pid, p in people(env).items()
    }
    assert after == before  # no name, merge, move-out, assignment, hidden flag or cover undone; ids kept
    moved = env.client.request("GET", "/v1/faces", params={"unassigned": "true", "limit": 100})["faces"]
    assert out in {f["face"] for f in moved}
    assert by_identity[8] in next(f for f in moved if f["face"] == out)["not"]


def test_two_jobs_finishing_together_both_land(env: LibEnv, tmp_path: Path) -> None:
    photos_a = {f"race-a-{k}.png": [(47, k)] for k in range(3)}
    photos_b = {f"race-b-{k}.png": [(48, k)] for k in range(3)}
    results: dict[str, dict] = {}
    threads = [
        threading.Thread(target=lambda n=n, ph=ph: results.__setitem__(n, night(env, tmp_path / n, ph)))
        for n, ph in (("a", photos_a), ("b", photos_b))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    head = env.library.head()
    assert head is not None
    jobs = {ref.job for ref in head.segments}
    assert results["a"]["id"] in jobs and results["b"]["id"] in jobs
    faces = {p["faces"] for p in people(env).values()}
    assert 3 in faces


def test_a_decision_made_while_the_library_is_locked_is_applied_by_the_lock_holder(env: LibEnv) -> None:
    lib = env.library
    someone = next(iter(people(env)))
    decision = Decision(kind="name", person=someone, name="Named while busy")
    with env.records.hold_lock(f"library:{TENANT}", ttl=30):
        lib.log_decision(decision)  # what the API does when the library is busy: log, answer 202
        time.sleep(0.2)
    head, _ = lib.commit(lambda state: None)  # the next holder (a fold, a re-cluster) applies it first
    assert decision.id in head.decisions_applied
    assert people(env)[someone]["name"] == "Named while busy"


def test_the_library_outlives_expired_job_records(env: LibEnv, tmp_path: Path) -> None:
    """Search and duplicate checks read the library in the store: job records expiring changes nothing."""
    photos = {f"kept-{k}.png": [(46, 40 + k)] for k in range(3)}
    first = night(env, tmp_path / "first", photos)
    learn(env, first, photos)
    pid = next(p for p in people(env) if who(env, p) == {46})
    env.client.request("PATCH", f"/v1/people/{pid}", json={"name": "Kept"})
    keys_ = RedisKeys(env.settings.key_prefix)
    client = env.records.client
    for key in client.scan_iter(match=keys_.job("*")):
        client.delete(key)
    for key in client.scan_iter(match=keys_.item("*", 0).rsplit(":", 2)[0] + ":*"):
        client.delete(key)
    before = env.client.library()["stats"]
    again = night(env, tmp_path / "again", {"kept-0.png": [(46, 40)], "new.png": [(46, 49)]})
    assert again["counts"]["skipped"] == 1  # the same photo bytes are known to the library, not to Redis
    after = env.client.library()["stats"]
    assert (after["photos"], after["faces"]) == (before["photos"] + 1, before["faces"] + 1)  # a known photo counts once
    query = tmp_path / "q.png"
    query.write_bytes(identity_photo([(46, 50)]))
    result = env.client.search(query, k=3)
    assert [m["name"] for m in result["matches"]] == ["Kept"] * 3 and result["matches"][0]["same_person"]
    assert all(m["person"] == pid and m["thumbnail_url"] for m in result["matches"])


def test_the_cli_works_the_library(env: LibEnv, tmp_path: Path, capsys) -> None:
    from api import cli

    base = ["--url", env.api.url, "--api-key", env.client.session.headers["Authorization"].split(" ", 1)[1]]
    photos = {f"cli-{p}-{k}.png": [(p, 60 + k)] for p in (43, 44) for k in range(3)}
    paths = []
    for name, faces in photos.items():
        (tmp_path / name).write_bytes(identity_photo(faces))
        paths.append(str(tmp_path / name))
    assert cli.main([*base, "faces", str(tmp_path), "--wait"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("6 faces in 6 photos; ") and "(2 new, 0 grew)" in last and "unassigned" in last
    learn(env, next(env.client.jobs(kind="faces")), photos)
    assert cli.main([*base, "people"]) == 0
    listing = capsys.readouterr().out
    person = next(line.split()[0] for line in listing.splitlines()[1:] if who(env, line.split()[0]) == {43})
    assert cli.main([*base, "people", "name", person, "Ada", "Lovelace"]) == 0
    assert "is now Ada Lovelace" in capsys.readouterr().out
    assert cli.main([*base, "people", "show", person, "--download", str(tmp_path / "dl")]) == 0
    shown = capsys.readouterr().out
    assert "Ada Lovelace" in shown and len(list((tmp_path / "dl" / "Ada Lovelace").iterdir())) >= 3
    assert {"cli-43-0.png", "cli-43-1.png", "cli-43-2.png"} <= {
        p.name for p in (tmp_path / "dl" / "Ada Lovelace").iterdir()
    }
    assert "  cli-43-0.png  face j" in shown  # the photo's own name, not where the store keeps it
    face_ids = [line.rsplit("face ", 1)[1] for line in shown.splitlines() if line.startswith("  ") and "face j" in line]
    assert len(face_ids) >= 3 and "nightshift assign FACE none" in shown  # what "not them" needs is on screen
    assert cli.main([*base, "search", str(tmp_path / "cli-43-0.png")]) == 0
    found = capsys.readouterr().out.splitlines()
    assert "same person" in found[0] and "Ada Lovelace" in found[0], found
    query = tmp_path / "who.png"
    query.write_bytes(identity_photo([(43, 99), (45, 99)]))
    assert cli.main([*base, "identify", str(query)]) == 0
    said = capsys.readouterr().out
    assert "face 1" in said and "Ada Lovelace" in said and "unknown" in said
    assert cli.main([*base, "faces", "--unassigned"]) == 0
    assert "belong to nobody yet (assign one: nightshift assign FACE PERSON)" in capsys.readouterr().out


def test_the_people_page_in_a_real_browser(env: LibEnv, tmp_path: Path, page) -> None:
    """The library's People view in Chromium: covers, a person's page, rename, "not them", merge by face,
    unassigned faces and search by name (screenshots in test-artifacts/)."""
    key = env.client.session.headers["Authorization"].split(" ", 1)[1]
    photos = {f"web-{p}-{k}.png": [(p, 70 + k)] for p in (40, 41) for k in range(3)}
    photos["web-lone.png"] = [(42, 70)]
    job = night(env, tmp_path, photos)
    learn(env, job, photos)
    fourteen = next(pid for pid in people(env) if who(env, pid) == {40})
    fifteen = next(pid for pid in people(env) if who(env, pid) == {41})
    with failure_screenshot(page, "web-library-failure.png"):
        page.goto(f"{env.api.url}/ui#key={key}")
        page.goto(f"{env.api.url}/ui#/people")
        page.wait_for_selector(f".person[data-person-id={fourteen}]")
        assert page.locator(".person").count() == len(people(env, "visible"))
        assert images_loaded(page, ".person img") == page.locator(".person img").count() >= 2
        page.wait_for_selector("#unassigned .face img")
        shot(page, "web-library-people.png")

        page.click(f".person[data-person-id={fourteen}]")
        page.wait_for_selector("#person-photos .photo")
        assert page.locator("#person-photos .photo").count() == 3
        page.fill(".person-head input[name=name]", "Grace Hopper")
        page.click(".person-head button[type=submit]")
        page.wait_for_selector(".person-head h1 >> text=Grace Hopper")
        page.locator("#person-photos .photo").first.locator("button", has_text="Not them").click()
        page.wait_for_function("() => document.querySelectorAll('#person-photos .photo').length === 2")
        page.click(".person-head button >> text=Merge with…")
        page.wait_for_selector(f"dialog.picker .pick[data-person-id={fifteen}] img")
        shot(page, "web-library-merge-picker.png")
        page.click(f"dialog.picker .pick[data-person-id={fifteen}]")
        page.wait_for_function("() => document.querySelectorAll('#person-photos .photo').length === 5")
        shot(page, "web-library-person.png")

        query = tmp_path / "find.png"
        query.write_bytes(identity_photo([(40, 90)]))
        page.goto(f"{env.api.url}/ui#/people")
        page.set_input_files("#face-search input[name=photo]", str(query))
        page.click("#face-search button[type=submit]")
        page.wait_for_selector("#search-results .match")
        names = page.locator("#search-results .match-name").all_inner_texts()
        # the three faces of that person, nearest: two still hers, the one moved out belongs to nobody
        assert sorted(names[:3]) == ["Grace Hopper", "Grace Hopper", "Nobody yet"]
        assert "library/" not in page.locator("#search-results").inner_text()  # never raw storage keys
        shot(page, "web-library-search.png")
    after = env.client.request("GET", f"/v1/people/{fourteen}")["person"]
    assert after["name"] == "Grace Hopper" and after["faces"] == 5
    assert fifteen not in people(env)


def test_people_named_apart_are_never_suggested_as_one(env: LibEnv, tmp_path: Path) -> None:
    """A suggestion stands until a user names the two people differently; the same name suggests them again."""
    photos = {f"sg-{p}-{k}.png": [(p, 70 + k)] for p in (52, 53) for k in range(3)}
    learn(env, night(env, tmp_path, photos), photos)
    a, b = sorted(p for p in people(env) if who(env, p) & {52, 53})
    env.library.commit(lambda state: setattr(state, "suggestions", [Suggestion(a=a, b=b, distance=0.3)]))

    def suggested() -> list[tuple[str, str]]:
        answer = env.client.request("GET", "/v1/people/suggestions")["suggestions"]
        return [(s["a"]["id"], s["b"]["id"]) for s in answer]

    assert suggested() == [(a, b)]
    env.client.update_person(a, name="Ada")
    env.client.update_person(b, name="Grace")
    assert suggested() == []  # a decision: two people
    env.client.update_person(b, name=" ada ")
    assert suggested() == [(a, b)]  # one person named twice
    assert not may_be_one(Person(id="x", name="Ada"), Person(id="y", name="Grace"))
    assert may_be_one(Person(id="x", name="Ada"), Person(id="y")) and may_be_one(Person(id="x"), Person(id="y"))
