"""The people engine on synthetic embeddings: search, constrained clustering, labels, identification, sheets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import cdist

from workers.people.cluster import ALGORITHMS, Algorithm, Cluster, cluster_faces, medoid
from workers.people.identify import Gallery, Prototype, identify, person_distances
from workers.people.labels import Labels, Person, carry_labels, cluster_people
from workers.people.search import ExactIndex, distances, radius_pairs
from workers.people.sheet import people_overview, person_sheet

DIM = 128
THRESHOLD = 0.6


def synthetic_people(people: int, per_person: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters scaled like dlib's descriptors: same person ~0.35 apart, different people ~0.9."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, DIM))
    centres *= 0.65 / np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(people), per_person)
    x = centres[labels] + rng.normal(scale=0.25 / np.sqrt(DIM), size=(len(labels), DIM))
    return x.astype(np.float32), labels


def face_names(n: int) -> list[str]:
    return [f"photo{k:04d}.jpg#0" for k in range(n)]


def as_sets(clusters: list[Cluster]) -> set[frozenset[str]]:
    return {frozenset(c.face_ids) for c in clusters}


# --- search -------------------------------------------------------------------------------------------------


def test_exact_search_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    x, q = rng.normal(size=(1000, DIM)).astype(np.float32), rng.normal(size=(37, DIM)).astype(np.float32)
    index = ExactIndex(DIM, block_rows=128, block_queries=10)
    index.add(x[:600], [f"v{i}" for i in range(600)])
    index.add(x[600:], [f"v{i}" for i in range(600, 1000)])
    hits = index.search(q, k=7)
    brute = cdist(q, x)
    for row, found in zip(brute, hits, strict=True):
        expected = np.argsort(row)[:7]
        assert [h[0] for h in found] == [f"v{i}" for i in expected]
        np.testing.assert_allclose([h[1] for h in found], row[expected], rtol=1e-5)
    assert len(index) == 1000


def test_index_save_load_and_edges() -> None:
    rng = np.random.default_rng(2)
    index = ExactIndex(DIM)
    assert index.search(rng.normal(size=DIM), k=3) == [[]]
    x = rng.normal(size=(20, DIM)).astype(np.float32)
    index.add(x, [f"id{i}" for i in range(20)])
    copy = ExactIndex.load(index.save())
    assert copy.ids == index.ids and copy.search(x[:3], 50) == index.search(x[:3], 50)
    assert copy.search(x[5], 1)[0] == [("id5", 0.0)]
    with pytest.raises(ValueError):
        index.add(x[:1], ["id3"])
    with pytest.raises(ValueError):
        index.add(x[:1, :10], ["new"])
    with pytest.raises(ValueError):
        ExactIndex.load(b"not an index")


def test_radius_pairs_and_distances_match_brute_force() -> None:
    x, _ = synthetic_people(20, 5)
    brute = cdist(x, x)
    i, j, d = radius_pairs(x, THRESHOLD, max_block_cells=1000)
    expected = {(a, b) for a, b in zip(*np.nonzero(brute < THRESHOLD), strict=True) if a < b}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
    np.testing.assert_allclose(d, brute[i, j], rtol=1e-5)
    k = 3
    i, j, _ = radius_pairs(x, THRESHOLD, max_neighbors=k, max_block_cells=1000)
    masked = np.where(np.eye(len(x), dtype=bool), np.inf, brute)
    nearest = {(a, b) for a in range(len(x)) for b in np.argsort(masked[a])[:k] if masked[a, b] < THRESHOLD}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(min(a, b), max(a, b)) for a, b in nearest}
    # the expanded form in float32: distances near zero are off by up to ~sqrt(eps) * |x|
    np.testing.assert_allclose(distances(x[:7], x, max_block_cells=300), brute[:7], atol=1e-3)


# --- clustering ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_clusters_recover_people_in_any_order(algorithm: Algorithm) -> None:
    x, truth = synthetic_people(30, 6)
    ids = face_names(len(x))
    clusters = cluster_faces(x, ids, ids, threshold=THRESHOLD, algorithm=algorithm)
    assert as_sets(clusters) == {frozenset(np.array(ids)[truth == p]) for p in range(30)}
    order = np.random.default_rng(3).permutation(len(x))
    shuffled = cluster_faces(
        x[order], [ids[k] for k in order], [ids[k] for k in order], threshold=THRESHOLD, algorithm=algorithm
    )
    assert shuffled == clusters  # same members, ids, representatives and order


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_ambiguous_data_is_order_independent(algorithm: Algorithm) -> None:
    # clusters overlapping at the threshold: where ties and visiting order would show
    x, _ = synthetic_people(25, 8, seed=4)
    x = x * 1.6
    ids, photos = face_names(len(x)), [f"p{k // 2}" for k in range(len(x))]
    clusters = cluster_faces(x, ids, photos, threshold=THRESHOLD, algorithm=algorithm)
    for seed in (5, 6):
        order = np.random.default_rng(seed).permutation(len(x))
        again = cluster_faces(
            x[order], [ids[k] for k in order], [photos[k] for k in order], threshold=THRESHOLD, algorithm=algorithm
        )
        assert again == clusters


def test_neighbour_cap_only_thins_the_graph() -> None:
    x, _ = synthetic_people(4, 30)
    ids = face_names(len(x))
    full = cluster_faces(x, ids, ids, threshold=THRESHOLD, max_neighbors=None)
    assert cluster_faces(x, ids, ids, threshold=THRESHOLD, max_neighbors=5) == full
    assert [c.size for c in full] == [30] * 4


def test_cluster_fields_are_stable_and_meaningful() -> None:
    x, _ = synthetic_people(3, 5)
    ids = face_names(len(x))
    photos = ["a"] * 3 + [f"p{k}" for k in range(len(x) - 3)]
    clusters = cluster_faces(x, ids, photos, threshold=THRESHOLD)
    for c in clusters:
        assert list(c.face_ids) == sorted(c.face_ids)
        members = [ids.index(f) for f in c.face_ids]
        assert c.representative == c.face_ids[medoid(x[members])]
        assert c.photo_count == c.size  # one photo never holds two faces of a cluster
    owner = {f: c.id for c in clusters for f in c.face_ids}
    assert len({owner[f] for f in ids[:3]}) == 3  # faces 0..2 are one person but share photo "a"
    assert len({c.id for c in clusters}) == len(clusters)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_faces_of_one_photo_never_share_a_cluster(algorithm: Algorithm) -> None:
    x, _ = synthetic_people(4, 5)
    x[1] = x[0]  # identical vectors, same photo: still apart
    ids = face_names(len(x))
    photos = [f"p{k}" for k in range(len(x))]
    photos[1] = photos[0]
    photos[7] = photos[2]  # two faces of different people in one photo: nothing to do
    clusters = cluster_faces(x, ids, photos, threshold=THRESHOLD, algorithm=algorithm)
    for c in clusters:
        members = [photos[ids.index(f)] for f in c.face_ids]
        assert len(members) == len(set(members))
    owner = {f: c.id for c in clusters for f in c.face_ids}
    assert owner[ids[0]] != owner[ids[1]]
    assert sum(len(c.face_ids) for c in clusters) == len(x)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_must_link_holds_and_yields_to_cannot_link(algorithm: Algorithm) -> None:
    x, _ = synthetic_people(4, 5)
    ids = face_names(len(x))
    photos = [f"p{k}" for k in range(len(x))]
    photos[16] = photos[5]  # face 16 shares a photo with face 5
    must = [[ids[0], ids[5]], [ids[5], ids[16]]]  # far apart, and a conflicting chain
    clusters = cluster_faces(x, ids, photos, threshold=THRESHOLD, algorithm=algorithm, must_link=must)
    owner = {f: c.id for c in clusters for f in c.face_ids}
    assert owner[ids[0]] == owner[ids[5]]
    assert owner[ids[16]] != owner[ids[5]]
    cannot = cluster_faces(x, ids, photos, threshold=THRESHOLD, algorithm=algorithm, cannot_link=[[ids[1], ids[2]]])
    owner = {f: c.id for c in cannot for f in c.face_ids}
    assert owner[ids[1]] != owner[ids[2]]


def test_min_faces_and_bad_input() -> None:
    x, _ = synthetic_people(3, 4)
    lone = np.random.default_rng(9).normal(size=(1, DIM)).astype(np.float32) * 0.1
    x = np.concatenate([x, lone])
    ids = face_names(len(x))
    assert len(cluster_faces(x, ids, ids, threshold=THRESHOLD)) == 4
    assert len(cluster_faces(x, ids, ids, threshold=THRESHOLD, min_faces=2)) == 3
    assert len(cluster_faces(x, ids, ids, threshold=THRESHOLD, min_faces=2, must_link=[[ids[-1]]])) == 4
    with pytest.raises(ValueError):
        cluster_faces(x, ids[:-1] + [ids[0]], ids, threshold=THRESHOLD)
    with pytest.raises(ValueError):
        cluster_faces(x, ids, ids, threshold=THRESHOLD, algorithm="kmeans")  # type: ignore[arg-type]


# --- labels -------------------------------------------------------------------------------------------------


def people_of(x: np.ndarray, ids: list[str], labels: Labels, old: list[Person] | None = None) -> list[Person]:
    return cluster_people(x, ids, ids, labels, threshold=THRESHOLD, old_people=old or [])


def test_names_survive_reclustering() -> None:
    x, truth = synthetic_people(12, 5)
    ids = face_names(len(x))
    people = people_of(x, ids, Labels())
    assert len(people) == 12 and all(p.name is None for p in people)
    labels = Labels()
    named = {}
    for person, name in zip(people[:3], ["Ada", "Grace", "Edsger"], strict=True):
        labels = labels.name(person, name)
        named[name] = set(person.face_ids)
    assert labels.version == 3
    # new photos arrive (two more faces per person), in a different order, and noise moves everything a bit
    more, more_truth = synthetic_people(12, 7, seed=0)
    rng = np.random.default_rng(8)
    x2 = np.concatenate([x, more[5::7], more[6::7]]) + rng.normal(scale=0.005, size=(len(x) + 24, DIM))
    ids2 = ids + [f"new{k:03d}.jpg#0" for k in range(24)]
    order = rng.permutation(len(ids2))
    again = people_of(x2[order].astype(np.float32), [ids2[k] for k in order], labels, old=people)
    by_name = {p.name: p for p in again if p.name}
    assert set(by_name) == set(named)
    for name, faces in named.items():
        assert faces <= set(by_name[name].face_ids)
        assert by_name[name].id == next(p.id for p in people if set(p.face_ids) == faces)
        assert len(by_name[name].face_ids) == 7  # and it picked up the person's two new faces
    assert {p.id for p in again} == {p.id for p in people}  # unnamed people keep their ids too


def test_merge_and_move_out() -> None:
    x, _ = synthetic_people(6, 4)
    ids = face_names(len(x))
    people = people_of(x, ids, Labels())
    a, b = people[0], people[1]
    labels = Labels().name(a, "Ada").merge(a, b)
    merged = people_of(x, ids, labels, old=people)
    ada = next(p for p in merged if p.name == "Ada")
    assert set(ada.face_ids) == set(a.face_ids) | set(b.face_ids) and ada.id == a.id
    assert labels.resolve(b.id) == a.id
    wrong = b.face_ids[0]
    labels = labels.move_out(wrong, ada)
    moved = people_of(x, ids, labels, old=merged)
    ada = next(p for p in moved if p.name == "Ada")
    assert wrong not in ada.face_ids and len(ada.face_ids) == 7
    assert Labels.from_json(labels.to_json()) == labels


def test_move_out_of_unlabelled_person_and_carry_without_labels() -> None:
    x, _ = synthetic_people(3, 4)
    ids = face_names(len(x))
    people = people_of(x, ids, Labels())
    person = people[0]
    labels = Labels().move_out(person.face_ids[1], person)
    again = people_of(x, ids, labels, old=people)
    owner = {f: p.id for p in again for f in p.face_ids}
    assert owner[person.face_ids[1]] != owner[person.representative]
    clusters = cluster_faces(x, ids, ids, threshold=THRESHOLD)
    assert [p.id for p in carry_labels([], clusters, Labels())] == [c.id for c in clusters]
    with pytest.raises(ValueError):
        Labels.from_json('{"format": "other"}')


# --- identification -----------------------------------------------------------------------------------------


def test_identify_known_unknown_and_explained() -> None:
    x, truth = synthetic_people(10, 4)
    gallery = Gallery.enrol({f"person{p}": x[truth == p][:1] for p in range(10)})
    queries = np.concatenate([x[truth == 3][1:], np.random.default_rng(7).normal(size=(1, DIM)).astype(np.float32)])
    matches = identify(queries, gallery, threshold=THRESHOLD)
    assert [m.person for m in matches] == ["person3"] * 3 + [None]
    assert all(m.distance < THRESHOLD < m.runner_up_distance and m.margin > 0 for m in matches[:3])
    assert matches[3].nearest is not None and matches[3].distance >= THRESHOLD
    assert identify(queries[:1], gallery, threshold=THRESHOLD, min_margin=10.0)[0].person is None
    bigger = gallery.add("person3", x[truth == 3][1:2])
    assert len(bigger) == 10 and (bigger.owners == bigger.people.index("person3")).sum() == 2
    kinds: tuple[Prototype, ...] = ("min", "mean")
    for prototype in kinds:
        d = person_distances(queries[:3], bigger, prototype)
        assert (d.argmin(axis=1) == bigger.people.index("person3")).all()
    assert identify(queries, Gallery.enrol({}))[0].person is None


# --- sheets -------------------------------------------------------------------------------------------------


def test_sheets_have_the_right_size() -> None:
    faces = [Image.new("RGB", (80 + k, 90), (k * 20, 100, 150)) for k in range(11)]
    sheet = person_sheet(faces, "Grandma — 11 faces", cols=4, tile=64, captions=[f"{k / 10:.2f}" for k in range(11)])
    assert sheet.size == (4 * 64, 16 + 3 * 64)
    assert person_sheet([], "nobody", cols=8, tile=112).size == (8 * 112, 28 + 112)
    overview = people_overview([("Ada", faces[:3]), ("Unknown person with a long name", faces)], cols=5, tile=50)
    assert overview.size == (100 + 5 * 50, 2 * 50)
    assert overview.getpixel((100 + 25, 25)) != overview.getpixel((100 + 4 * 50 + 25, 25))  # tile vs empty
