"""The library's two nights on real people (LFW dev folds), through the real pipeline and models.

Skipped when the LFW dev data is absent (a user's machine has none; ../shared/data/lfw-dev or
NIGHTSHIFT_LFW_DIR). The same draw as bench/library.py's scenario, but photos go through the API, real
workers, real detection and embedding, and the library's fold: after night 2, without any re-cluster,
faces that joined people who existed after night 1 are the right people (precision >= 0.99) and most of
the faces whose person existed joined them (recall >= 0.95); a re-cluster changes no name.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from api.client import Client
from tests.conftest import new_tenant_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LFW = Path(os.environ.get("NIGHTSHIFT_LFW_DIR", Path(__file__).resolve().parents[2] / "shared/data/lfw-dev"))


def _people() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for folder in sorted((LFW / "images").iterdir()):
        out[folder.name] = sorted(folder.glob("*.jpg"))
    return out


def _night(client: Client, tmp: Path, photos: list[tuple[str, Path]]) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, source in photos:
        target = tmp / name
        target.write_bytes(source.read_bytes())
        paths.append(target)
    job = client.submit("faces", files=paths)
    return client.wait(job["id"], timeout=900)


@pytest.mark.skipif(not (LFW / "images").exists(), reason="LFW dev data not present (../shared/data/lfw-dev)")
def test_two_nights_of_real_people_assign_right(workers, api_server, services, tmp_path: Path) -> None:
    _, key = new_tenant_key(services)
    client = Client(api_server.url, key)
    everyone = _people()
    rng = random.Random(7)
    regulars = sorted(p for p, files in everyone.items() if len(files) >= 6)
    chosen = rng.sample(regulars, 25)
    seen, new = chosen[:20], chosen[20:]
    strangers = rng.sample(sorted(p for p, files in everyone.items() if len(files) == 1), 8)
    night1 = [(f"n1-{f.name}", f) for p in seen for f in everyone[p][:3]]
    night1 += [(f"n1-{everyone[p][0].name}", everyone[p][0]) for p in strangers[:4]]
    night2 = [(f"n2-{f.name}", f) for p in seen[:10] for f in everyone[p][3:6]]
    night2 += [(f"n2-{f.name}", f) for p in new for f in everyone[p][:4]]
    night2 += [(f"n2-{everyone[p][0].name}", everyone[p][0]) for p in strangers[4:]]
    identity = {name: source.parent.name for name, source in night1 + night2}

    def members() -> dict[str, list[str]]:
        out = {}
        for person in client.people("all"):
            # stored inputs are named <item index>-<file name>
            out[person["id"]] = [
                identity[Path(ph["key"]).name.split("-", 1)[1]] for ph in client.person_photos(person["id"])
            ]
        return out

    assert _night(client, tmp_path / "n1", night1)["state"] in ("succeeded", "partial")
    after1 = members()
    owner = {Counter(ids).most_common(1)[0][0]: pid for pid, ids in after1.items()}
    assert len(owner) >= 16  # most of the 20 people (3 photos each) became someone
    for name in seen[:5]:
        if name in owner:
            client.update_person(owner[name], name=name.replace("_", " "))

    assert _night(client, tmp_path / "n2", night2)["state"] in ("succeeded", "partial")
    after2 = members()
    right = wrong = 0
    for pid, ids in after2.items():
        if pid not in after1:
            continue
        majority = Counter(after1[pid]).most_common(1)[0][0]
        new_faces = Counter(ids) - Counter(after1[pid])
        right += new_faces.get(majority, 0)
        wrong += sum(n for who, n in new_faces.items() if who != majority)
    expected = sum(3 for p in seen[:10] if p in owner)
    recall = sum(
        min(3, (Counter(after2[owner[p]]) - Counter(after1[owner[p]])).get(p, 0))
        for p in seen[:10]
        if p in owner and owner[p] in after2
    ) / max(expected, 1)
    precision = right / max(right + wrong, 1)
    assert precision >= 0.99, (precision, right, wrong)
    assert recall >= 0.95, recall
    named = {p["id"]: p["name"] for p in client.people("all") if p["name"]}
    job = client.recluster()
    assert client.wait(job["id"], timeout=600)["state"] == "succeeded"
    assert {p["id"]: p["name"] for p in client.people("all") if p["name"]} == named
