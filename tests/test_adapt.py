"""Learning a library's own head from users' decisions (issue 15).

Unit tests check the triplet loss and the mining on small tensors with known answers; library tests run on a
real Redis and S3 server with synthetic vectors (`tests.adapt_worker`: people whose glasses move them along
one direction); one test drives the whole path through the API and a real worker process.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from api.client import Client
from storage.config import WorkerSettings
from storage.library import Decision, LibraryState, LibraryStore
from storage.library.adapters import Adapters
from storage.library.documents import AdapterDoc, SegmentDoc, SegmentFace, SegmentRef
from tests.adapt_worker import GLASSES_FROM, face_vector
from tests.browser import failure_screenshot, shot
from tests.conftest import OwnStack, Services, own_stack
from tests.library_worker import DIM, SYNTHETIC, identity_photo
from workers.contract import AdaptParams
from workers.library.adapt import adapt_library, adopt, judge, keep_spread, labelled, others
from workers.library.fold import fold
from workers.library.recluster import recluster
from workers.library.transform import Transform, transform_for
from workers.library.triplets import FaceLabels, TrainConfig, mine_triplets, squared_distances, train_head, triplet_loss
from workers.library.validate import figures, structure

MODEL = SYNTHETIC.models[0]
T = SYNTHETIC.thresholds


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """What a worker does (`worker.threads`): small matrices on many threads of a busy machine crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the loss and the mining ----------------------------------------------------------------------------


def _line(points: list[float]) -> torch.Tensor:
    return torch.tensor([[p] for p in points], dtype=torch.float64)


def test_semi_hard_mining_and_the_loss_on_known_points() -> None:
    # a=0 and p=1 are one person; negatives at 0.5, 1.2 and 3 are three others
    x = _line([0.0, 1.0, 0.5, 1.2, 3.0])
    labels = FaceLabels(np.array([0, 0, 1, 2, 3]), np.ones(4, bool))
    pos, neg = (torch.as_tensor(m) for m in labels.masks())
    sq = squared_distances(x)
    triplets = mine_triplets(sq, pos, neg)
    # anchor 0, positive 1 (d²=1): the nearest negative farther than the positive is 1.2 (d²=1.44), not 0.5
    # anchor 1, positive 0 (d²=1): from 1, 0.5 and 1.2 are nearer than the positive; 3 (d²=4) is semi-hard
    assert triplets.tolist() == [[0, 1, 3], [1, 0, 4]]
    # (1 - 1.44 + 1) and max(1 - 4 + 1, 0), averaged
    assert triplet_loss(sq, triplets, alpha=1.0).item() == pytest.approx((0.56 + 0.0) / 2)


def test_the_hardest_negative_when_every_negative_is_nearer_than_the_positive() -> None:
    x = _line([0.0, 2.0, 0.5, 1.0])
    labels = FaceLabels(np.array([0, 0, 1, 2]), np.ones(3, bool))
    pos, neg = (torch.as_tensor(m) for m in labels.masks())
    triplets = mine_triplets(squared_distances(x), pos, neg)
    # from 0: d²(p)=4 beats both negatives (0.25, 1): the hardest, 0.5, is taken; from 2: 1.0 (d²=1) is hardest
    assert triplets.tolist() == [[0, 1, 2], [1, 0, 3]]


def test_negatives_come_only_from_names_and_moves() -> None:
    # groups 0 and 1 are unnamed (they may be one human): no negatives between them; row 4 was moved out of 0
    labels = FaceLabels(np.array([0, 0, 1, 1, -1]), np.array([False, False]), [set(), set(), set(), set(), {0}])
    pos, neg = labels.masks()
    assert pos.sum() == 4 and pos[0, 1] and pos[2, 3] and not pos[4].any()
    assert np.argwhere(neg).tolist() == [[0, 4], [1, 4], [4, 0], [4, 1]]
    named = FaceLabels(np.array([0, 0, 1, 1]), np.array([True, False]))
    assert named.masks()[1][0, 2] and named.masks()[1][3, 1]


def _glasses_data(people: int = 6) -> tuple[np.ndarray, FaceLabels]:
    rows = [(p, look) for p in range(people) for look in (0, 1, GLASSES_FROM, GLASSES_FROM + 1)]
    return np.stack([face_vector(p, k) for p, k in rows]), FaceLabels(
        np.array([p for p, _ in rows]), np.ones(people, bool)
    )


def test_training_starts_at_the_identity_is_deterministic_and_learns_what_names_say() -> None:
    vectors, labels = _glasses_data()
    config = TrainConfig(steps=60, alpha=3.0, weight=0.01, seed=3)
    a, b = train_head(vectors, labels, T.verify, config), train_head(vectors, labels, T.verify, config)
    assert np.array_equal(a.matrix, b.matrix)
    held = train_head(vectors, labels, T.verify, TrainConfig(steps=60, alpha=3.0, weight=1e4, seed=3))
    assert np.abs(held.matrix - np.eye(DIM)).max() < 1e-3  # held at the identity, it stays there
    glasses = face_vector(9, GLASSES_FROM) - face_vector(9, 0)  # a person the head never saw
    assert np.linalg.norm(glasses @ a.matrix) < 0.8 * np.linalg.norm(glasses)
    assert a.loss_last < a.loss_first


def test_keep_spread_keeps_impostor_distances_and_leaves_genuine_pulls() -> None:
    rng = np.random.default_rng(0)
    people = rng.normal(size=(30, 8)).astype(np.float32)
    sample = np.repeat(people, 4, axis=0) + 0.05 * rng.normal(size=(120, 8)).astype(np.float32)
    owners: list[str | None] = [f"p{n // 4}" for n in range(120)]
    stretch = np.diag(np.linspace(1.0, 4.0, 8)).astype(np.float32)  # a head that also grows every distance
    scaled = keep_spread(stretch, sample, owners)

    def near_impostor(v: np.ndarray) -> float:
        d = cdist(v, v)
        different = np.array(owners)[:, None] != np.array(owners)[None, :]
        return float(np.quantile(d[np.triu(different, 1)], 20 / np.triu(different, 1).sum()))

    assert near_impostor(sample @ scaled) == pytest.approx(near_impostor(sample), rel=1e-4)
    assert near_impostor(sample @ stretch) > 1.5 * near_impostor(sample)
    assert keep_spread(stretch, sample[:4], owners[:4]) is stretch  # one person: nothing to keep it by


# -- on a library (real Redis and S3) ---------------------------------------------------------------------


@pytest.fixture
def lib(services: Services) -> LibraryStore:
    return LibraryStore(services.store, services.records, "adapt-" + secrets.token_hex(4))


def _segment(
    lib: LibraryStore, faces: list[tuple[int, int]], night: int = 1
) -> tuple[SegmentRef, dict[str, tuple[int, int]]]:
    job = f"j{night:016x}"  # fixed: which faces are held out follows from their ids
    rows = [
        SegmentFace(
            face=f"{job}:{n}:0",
            job=job,
            item=n,
            photo=hashlib.sha256(f"{job}{n}".encode()).hexdigest(),
            photo_key=f"{job}/{n}.png",
            box=(0.0, 0.0, 80.0, 80.0),
            score=0.99,
        )
        for n in range(len(faces))
    ]
    ref = lib.put_segment(
        SegmentDoc.of(f"{job}-000", job, MODEL, DIM, rows), np.stack([face_vector(*f) for f in faces])
    )
    return ref, {r.face: f for r, f in zip(rows, faces, strict=True)}


def _who(lib: LibraryStore, identity: dict[str, tuple[int, int]]) -> dict[str, set[tuple[int, int]]]:
    head = lib.head()
    return {p.id: {identity[m.face] for m in lib.members(p.members).faces} for p in lib.people(head).people}


@pytest.fixture
def night(lib: LibraryStore) -> Iterator[tuple[LibraryStore, dict[str, tuple[int, int]], dict]]:
    """People 1-12 (four photos each), people 1-4 also with glasses; 1-4 named and merged with their glasses
    selves, 5 named. Yields (library, face -> (person, look), (person, glasses) -> library person id)."""
    faces = [(p, k) for p in range(1, 13) for k in range(4)] + [
        (p, GLASSES_FROM + k) for p in range(1, 5) for k in range(4)
    ]
    ref, identity = _segment(lib, faces)
    lib.commit(lambda state: fold(state, [ref]))
    by = {}
    for pid, members in _who(lib, identity).items():
        assert len({(p, k >= GLASSES_FROM) for p, k in members}) == 1  # one look of one person each
        p, k = next(iter(members))
        by[(p, k >= GLASSES_FROM)] = pid
    for p in range(1, 5):
        lib.log_decision(Decision(kind="name", person=by[(p, False)], name=f"P{p}"))
        lib.log_decision(Decision(kind="merge", person=by[(p, False)], other=by[(p, True)]))
    lib.log_decision(Decision(kind="name", person=by[(5, False)], name="P5"))
    lib.commit(lambda state: None)
    yield lib, identity, by


@pytest.mark.integration
def test_a_head_that_hurts_is_refused(night) -> None:
    lib, _, _ = night
    head = lib.head()
    state = LibraryState(lib, head)
    data = labelled(state, holdout=0.25, seed=0)
    covered = set().union(*data.people)
    assert data.held.sum() == 9 and len(covered) == 5  # 2 of 8 faces of P1-P4, 1 of 4 of P5
    basis = np.linalg.qr(np.random.default_rng(1).normal(size=(DIM, 4)))[0]
    collapse = Transform("collapse", (basis @ basis.T).astype(np.float32))  # everyone lands in 4 dimensions
    identity = transform_for(lib, head.adapter)
    distractors = others(state, covered)
    before, after = figures(data, distractors, identity, T), figures(data, distractors, collapse, T)
    assert before.right == 9 and before.far == 0.0
    assert after.far > 0.5 and after.verification < before.verification
    moved = structure(state, covered, identity, collapse, T, seed=0)
    assert moved.people == 7 and moved.changed > moved.limit
    accepted, reason = judge(before, after, moved)
    assert not accepted and "verification" in reason and "unlabelled people would change" in reason
    same, why = judge(
        before, figures(data, distractors, identity, T), structure(state, covered, identity, identity, T, seed=0)
    )
    assert not same and "no better" in why


@pytest.mark.integration
def test_learning_is_stored_refused_or_adopted_and_adapter_versions_never_collide(night) -> None:
    lib, _, _ = night
    timid = adapt_library(lib, AdaptParams(steps=60))  # the default margin is met at once on these people
    assert (timid["accepted"], timid["adopted"]) == (False, False) and "no better" in timid["reason"]
    assert lib.head().adapter is None
    bold = adapt_library(lib, AdaptParams(margin=3.0, weight=0.01))
    assert bold["accepted"] and bold["adopted"] and bold["adapter"] == 2, bold["reason"]
    assert bold["after"]["verification"] > bold["before"]["verification"] and bold["changed_people"] == 0
    adapters = Adapters(lib)
    assert lib.head().adapter == adapters.key(2) and [d.version for d in adapters.all()] == [2, 1]
    assert adapters.get(adapters.key(2)).previous is None and not adapters.get(adapters.key(1)).accepted
    # v1 was judged against the raw vectors; v2 is in use now, so v1 may not replace it (the adoption is fenced)
    assert not adopt(lib, adapters.get(adapters.key(1))) and lib.head().adapter == adapters.key(2)
    stored: list[int] = []
    doc = adapters.get(adapters.key(1))

    def put() -> None:
        stored.append(adapters.put(doc, np.eye(DIM, dtype=np.float32)).version)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(stored) == [3, 4, 5, 6]  # conditional creates: every writer gets its own version


@pytest.mark.integration
def test_rollback_restores_the_previous_assignments(night) -> None:
    lib, identity, by = night
    before = _who(lib, identity)
    # a head that cannot tell people 7 and 8 apart (the direction between them is gone)
    between = face_vector(7, 0) - face_vector(8, 0)
    between /= np.linalg.norm(between)
    matrix = np.eye(DIM, dtype=np.float32) - np.outer(between, between).astype(np.float32)
    doc = Adapters(lib).put(AdapterDoc(version=0, space=SYNTHETIC.id, dim=DIM, weights="", accepted=True), matrix)
    key = Adapters(lib).key(doc.version)

    def adopt_and_recluster(state: LibraryState) -> None:
        state.adopt(key)
        recluster(state)

    lib.commit(adopt_and_recluster)
    merged = _who(lib, identity)
    assert merged != before
    assert any({p for p, _ in members} == {7, 8} for members in merged.values())
    lib.log_decision(Decision(kind="adapter", adapter=None))  # what POST /v1/people/learn/rollback logs

    lib.commit(lambda state: recluster(state))
    assert lib.head().adapter is None
    assert _who(lib, identity) == before  # the same people, the same ids, the same faces
    assert by[(7, False)] in before


@pytest.mark.integration
def test_identification_search_and_folds_compare_through_the_adopted_head(night) -> None:
    lib, identity, by = night
    adapt_library(lib, AdaptParams(margin=3.0, weight=0.01))
    from storage.library.state import LibraryState as State
    from workers.library.faces import LibraryFaces
    from workers.library.fold import PersonIndex, choose

    def who_is(vectors: np.ndarray) -> list[str | None]:
        index = PersonIndex.of(State(lib, lib.head()))
        return choose(index.scores(vectors), index.people, [set()] * len(vectors), T)

    stranger_glasses = np.stack([face_vector(5, GLASSES_FROM + 9), face_vector(13, 0)])
    assert who_is(stranger_glasses) == [by[(5, False)], None]  # P5 was never seen with glasses
    faces = LibraryFaces.open(lib)
    assert faces is not None and not faces.transform.identity
    nearest = faces.search(face_vector(5, GLASSES_FROM + 9), k=1)[0]
    assert nearest["person"] == by[(5, False)] and nearest["distance"] < T.verify
    learnt = lib.head().adapter
    lib.log_decision(Decision(kind="adapter", adapter=None))
    lib.commit(lambda state: None)
    assert who_is(stranger_glasses) == [None, None]  # rolled back: the raw vectors again
    lib.log_decision(Decision(kind="adapter", adapter=learnt))
    lib.commit(lambda state: None)
    ref, more = _segment(lib, [(5, GLASSES_FROM + k) for k in range(2)], night=2)
    lib.commit(lambda state: fold(state, [ref]))  # a night with P5 in glasses: they join P5
    grown = _who(lib, {**identity, **more})[by[(5, False)]]
    assert {f for f in grown if f[1] >= GLASSES_FROM} == {(5, GLASSES_FROM), (5, GLASSES_FROM + 1)}


# -- through the API, the CLI and a real worker process -----------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str]]:
    """Redis, S3, the API and a faces worker running `tests.adapt_worker` (the synthetic engine, with glasses)."""
    worker = WorkerSettings(chunk_size=16, batch_size=8, heartbeat_s=1)
    root, password = tmp_path_factory.mktemp("adapt"), secrets.token_urlsafe(12)
    with own_stack(OwnStack, root, "glasses", worker, password=password, key_prefix="adapt") as s:
        s.add_worker("faces", "tests.adapt_worker")
        yield s.client, s.api.url


@pytest.mark.integration
@pytest.mark.slow
def test_learning_from_names_through_the_api_and_the_cli(stack, tmp_path: Path, capsys) -> None:
    from api import cli

    client, url = stack
    photos = {f"p{p:02d}-{k}.png": [(p, k)] for p in range(1, 13) for k in range(4)}
    photos.update({f"p{p:02d}-glasses-{k}.png": [(p, GLASSES_FROM + k)] for p in range(1, 5) for k in range(4)})
    for name, faces in photos.items():
        (tmp_path / name).write_bytes(identity_photo(faces))
    job = client.wait(client.submit("faces", files=sorted(tmp_path.iterdir()))["id"], timeout=300)
    assert job["state"] == "succeeded" and job["summary"]["library"]["new_people"] == 16, job
    identity = {
        f"{job['id']}:{item['index']}:0": (photos[item["name"]][0][0], photos[item["name"]][0][1] >= 50)
        for item in client.results(job["id"])
    }
    by: dict[tuple[int, bool], str] = {}
    for person in client.people("all"):
        shown = client.request("GET", f"/v1/people/{person['id']}", params={"limit": 1000})
        (seen,) = {identity[f["face"]] for photo in shown["photos"] for f in photo["faces"]}
        by[seen] = person["id"]
    for p in range(1, 5):
        client.update_person(by[(p, False)], name=f"P{p}")
        client.merge(by[(p, False)], by[(p, True)])
    client.update_person(by[(5, False)], name="P5")
    query = tmp_path / "p05-in-glasses.png"
    query.write_bytes(identity_photo([(5, GLASSES_FROM + 9)]))
    assert client.identify(query)["faces"][0]["name"] is None  # P5 was never seen in glasses

    learnt = client.wait(client.learn(margin=3.0, weight=0.01)["id"], timeout=300)
    assert learnt["state"] == "succeeded" and learnt["summary"]["adopted"], learnt
    assert client.identify(query)["faces"][0]["name"] == "P5"
    base = ["--url", url, "--api-key", client.session.headers["Authorization"].split(" ", 1)[1]]
    assert cli.main([*base, "people", "learned"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("in use: v1") and "held-out faces right" in listing
    assert cli.main([*base, "people", "rollback"]) == 0
    assert "stopped using v1; faces are compared with the raw face vectors again" in capsys.readouterr().out
    assert client.identify(query)["faces"][0]["name"] is None
    assert cli.main([*base, "people", "rollback"]) == 2  # nothing in use: a clear error, no traceback
    said = capsys.readouterr()
    assert "nothing to roll back" in said.err + said.out and "Traceback" not in said.err


@pytest.mark.integration
@pytest.mark.slow
def test_the_learn_button_in_a_real_browser(stack, page) -> None:
    """ "Learn from names" on the People page starts an adapt job; its page shows the verdict (after the test
    above, so the library has named people)."""
    client, url = stack
    key = client.session.headers["Authorization"].split(" ", 1)[1]
    before = {job["id"] for job in client.jobs(kind="adapt")}
    with failure_screenshot(page, "web-learn-failure.png"):
        page.goto(f"{url}/ui#key={key}")
        page.goto(f"{url}/ui#/people")
        page.click("#learn")
        page.click("[role=status] .notice a")
        page.wait_for_selector("#adapt-verdict", timeout=120_000)
        verdict = page.locator("#adapt-verdict").inner_text()
        shot(page, "web-learn-verdict.png")
    (job_id,) = {job["id"] for job in client.jobs(kind="adapt")} - before
    summary = client.job(job_id)["summary"]
    assert verdict == f"{'In use now' if summary['adopted'] else 'Not used'}: {summary['reason']}"
