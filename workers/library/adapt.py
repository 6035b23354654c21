"""The `adapt` job: learn a library's own head from what its users said, and adopt it only when it helps.

1. `labelled`: a named person's faces, and an unnamed person's confirmed faces, form one group each (people
   given the same name are one group); a face moved out of someone is a negative for them.
2. In every group of at least three faces a share (`holdout`) is held out, chosen by a hash of the face id
   and the seed, so the same faces are held out at every training.
3. A head is trained on the rest (`triplets.train_head`), then scaled so that pairs of faces of two different
   people keep their 0.1 % quantile of distances (`keep_spread`): as many impostor pairs as before fall under
   a distance near the thresholds, so the space's thresholds keep their meaning.
4. It is judged (`validate`) against the comparison in use now, and accepted only when, on the held-out
   faces, verification and assignment are both at least as good and one of them better, and at most
   `CHANGED_SHARE` of the unlabelled people (at least one) would see a face go to someone else.
5. The adapter (matrix and document, with its figures and verdict) is stored either way; an accepted one is
   adopted by a commit fenced on the adapter that was in use when training began.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from storage.library import LibraryState, LibraryStore
from storage.library.adapters import Adapters
from storage.library.documents import AdapterDoc, Figures, Head, Validation
from workers.contract import AdaptParams
from workers.faces.spaces import SPACES
from workers.library.fold import distances
from workers.library.recluster import recluster
from workers.library.transform import Transform, transform_for
from workers.library.triplets import FaceLabels, TrainConfig, TrainResult, train_head
from workers.library.validate import (
    Exemplars,
    Labelled,
    Structure,
    figures,
    stable_unit,
    structure,
    vectors_at,
)

log = logging.getLogger("nightshift.library")
MIN_GROUP = 3  # faces a group needs to lend some to the held-out part
SPREAD_SAMPLE = 3000  # faces the distance scale is kept on
NEAR_SHARE = 1e-3  # the quantile of their pair distances kept (the FAR the thresholds are read at)


class NotEnoughLabels(ValueError):
    """The library's decisions cannot train or judge a head yet (the message says what to do)."""


def labelled(state: LibraryState, holdout: float, seed: int) -> Labelled:
    """The faces users' decisions label, grouped, with their vectors and the held-out rows."""
    groups: dict[str, int] = {}
    people: list[set[str]] = []
    named: list[bool] = []
    group_of: dict[str, int] = {}
    rows: dict[tuple[str, int], int] = {}
    faces: list[str] = []
    places: list[tuple[str, int]] = []
    group: list[int] = []
    for pid, person in sorted(state.people.items()):
        members = [m for m in state.members(pid) if person.name or m.confirmed]
        if not members:
            continue
        key = f"name:{person.name.casefold()}" if person.name else f"id:{pid}"
        if key not in groups:
            groups[key] = len(people)
            people.append(set())
            named.append(bool(person.name))
        g = groups[key]
        people[g].add(pid)
        group_of[pid] = g
        for m in members:
            rows[(m.segment, m.row)] = len(faces)
            faces.append(m.face)
            places.append((m.segment, m.row))
            group.append(g)
    rejected: dict[int, set[int]] = {}
    for segment in state.segments:
        for row, pids in state.assignments(segment).rejected.items():
            hit = {group_of[state.resolve(p)] for p in pids if state.resolve(p) in group_of}
            if not hit:
                continue
            place = (segment, int(row))
            if place not in rows:
                rows[place] = len(faces)
                faces.append(state.segment_faces(segment)[int(row)].face)
                places.append(place)
                group.append(-1)
            rejected.setdefault(rows[place], set()).update(hit)
    vectors = vectors_at(state, places)
    labels = FaceLabels(
        np.array(group, np.int64), np.array(named, bool), [rejected.get(n, set()) for n in range(len(faces))]
    )
    return Labelled(faces, places, vectors, labels, people, _held_out(faces, labels.group, holdout, seed))


def _held_out(faces: list[str], group: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    held = np.zeros(len(faces), bool)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        if g < 0:
            held[rows] = [stable_unit(seed, faces[r]) < holdout for r in rows]
        elif len(rows) >= MIN_GROUP:
            order = sorted(rows, key=lambda r: stable_unit(seed, faces[r]))
            held[order[: max(1, round(holdout * len(rows)))]] = True
    return held


def others(state: LibraryState, covered: set[str]) -> Exemplars:
    """The exemplars of every person no group covers (distractors when held-out faces are assigned)."""
    return Exemplars.build(
        [
            (pid, f, v)
            for pid in sorted(state.people)
            if pid not in covered
            for f, v in zip(*state.exemplars(pid), strict=True)
        ],
        state.dim,
    )


def keep_spread(
    matrix: np.ndarray, sample: np.ndarray, owners: list[str | None], share: float = NEAR_SHARE
) -> np.ndarray:
    """`matrix` scaled so that pairs of `sample` faces that belong to two different people keep their `share`
    quantile of distances through it (at least the 20th nearest such pair): as many impostor pairs as before
    fall under a distance near the thresholds, so the thresholds keep their meaning. Genuine pairs are left
    out: what the head learnt to pull together stays pulled together."""
    known = np.array([o is not None for o in owners])
    ids = np.array([o or "" for o in owners])
    rows = np.flatnonzero(known)
    i, j = np.triu_indices(len(rows), 1)
    impostor = ids[rows][i] != ids[rows][j]
    if impostor.sum() < 20:
        return matrix
    q = max(share, 20 / impostor.sum())
    before = float(np.quantile(distances(sample[rows], sample[rows])[i, j][impostor], q))
    moved = sample[rows] @ matrix
    after = float(np.quantile(distances(moved, moved)[i, j][impostor], q))
    return (matrix * (before / after)).astype(np.float32) if after > 0 else matrix


def judge(before: Figures, after: Figures, moved: Structure) -> tuple[bool, str]:
    """The adoption rule (module docstring, step 4): (accepted, why)."""
    worse = []
    if after.verification < before.verification:
        worse.append(f"verification {before.verification:.4f} -> {after.verification:.4f}")
    if after.right < before.right:
        worse.append(f"held-out faces assigned right {before.right} -> {after.right}")
    if after.wrong > before.wrong:
        worse.append(f"held-out faces assigned wrong {before.wrong} -> {after.wrong}")
    if moved.changed > moved.limit:
        worse.append(f"{moved.changed} of {moved.people} unlabelled people would change (at most {moved.limit})")
    if worse:
        return False, "refused: " + "; ".join(worse)
    if (after.verification, after.right, -after.wrong) == (before.verification, before.right, -before.wrong):
        return False, "refused: no better than the comparison in use on the held-out faces"
    return True, (
        f"accepted: verification {before.verification:.4f} -> {after.verification:.4f}, held-out faces "
        f"right {before.right} -> {after.right}, wrong {before.wrong} -> {after.wrong}; "
        f"{moved.changed} of {moved.people} unlabelled people change"
    )


def config_of(params: AdaptParams) -> TrainConfig:
    return TrainConfig(
        rank=params.rank, steps=params.steps, alpha=params.margin, weight=params.weight, seed=params.seed
    )


def learn(lib: LibraryStore, head: Head, params: AdaptParams, *, device: str = "cpu") -> AdapterDoc:
    """Train, judge and store an adapter for the library version `head` (nothing is adopted here); returns
    the stored document. Raises NotEnoughLabels."""
    if head.space is None:
        raise NotEnoughLabels("the library has no faces yet: index some photos first")
    if head.space not in SPACES:
        raise NotEnoughLabels(f"the library's embedding space {head.space} is not registered on this worker")
    t = SPACES[head.space].thresholds
    state = LibraryState(lib, head)
    data = labelled(state, params.holdout, params.seed)
    _check(data)
    train = ~data.held
    result = train_head(
        data.vectors[train], data.labels.subset(np.flatnonzero(train)), t.verify, config_of(params), device=device
    )
    current = transform_for(lib, head.adapter)
    covered = set().union(*data.people)
    matrix = keep_spread(result.matrix, *_library_sample(state, params.seed))
    candidate = Transform("candidate", matrix)
    distractors = others(state, covered)
    before, after = figures(data, distractors, current, t), figures(data, distractors, candidate, t)
    moved = structure(state, covered, current, candidate, t, params.seed)
    accepted, reason = judge(before, after, moved)
    doc = AdapterDoc(
        version=0,
        space=head.space,
        dim=state.dim,
        weights="",
        library_version=head.version,
        previous=head.adapter,
        accepted=accepted,
        reason=reason,
        params=params.model_dump(),
        training=_training(result, data),
        validation=Validation(
            held_out=int(data.held.sum()),
            people=len({int(g) for g in data.labels.group[data.held]}),
            before=before,
            after=after,
            unlabelled_people=moved.people,
            unlabelled_faces=moved.faces,
            changed_people=moved.changed,
            changed_limit=moved.limit,
        ),
    )
    return Adapters(lib).put(doc, matrix)


def _check(data: Labelled) -> None:
    big = {int(g) for g in np.unique(data.labels.group) if g >= 0 and (data.labels.group == g).sum() >= MIN_GROUP}
    named = [g for g in big if data.labels.named[g]]
    if len(big) < 2 or not named:
        raise NotEnoughLabels(
            f"not enough names yet to learn from: name at least two people who have {MIN_GROUP} "
            f"faces or more (now {len(named)} named, {len(big)} labelled with {MIN_GROUP}+ faces)"
        )


def _library_sample(state: LibraryState, seed: int) -> tuple[np.ndarray, list[str | None]]:
    """Raw vectors of a seeded sample of the library's faces (each segment in proportion to its faces), and
    the person each belongs to now."""
    rng = np.random.default_rng(seed)
    total = max(1, sum(ref.faces for ref in state.segments.values()))
    places = []
    for ref in state.segments.values():
        skip = set(state.assignments(ref.id).skip)
        rows = [r for r in range(ref.faces) if r not in skip]
        take = min(len(rows), math.ceil(SPREAD_SAMPLE * ref.faces / total))
        places += [(ref.id, int(r)) for r in sorted(rng.choice(rows, take, replace=False))] if take else []
    return vectors_at(state, places), [state.person_of(s, r) for s, r in places]


def _training(result: TrainResult, data: Labelled) -> dict[str, float]:
    train = ~data.held
    return {
        "faces": float(train.sum()),
        "groups": float(len(set(data.labels.group[train].tolist()) - {-1})),
        "not_them": float(sum(1 for n in np.flatnonzero(train) if data.labels.rejected[n])),
        "steps": float(result.steps),
        "loss_first": round(result.loss_first, 5),
        "loss_last": round(result.loss_last, 5),
        "active_first": round(result.active_first, 4),
        "active_last": round(result.active_last, 4),
        "change": round(result.change, 5),
        "seconds": round(result.seconds, 3),
    }


def adopt(lib: LibraryStore, doc: AdapterDoc, *, recluster_after: bool = False, min_faces: int = 3) -> bool:
    """Make the library use an accepted adapter, unless the adapter in use changed since it was trained (a
    rollback or another adapter meanwhile: its validation compared against something else). Returns whether
    it was adopted."""
    key = Adapters(lib).key(doc.version)

    def change(state: LibraryState) -> bool:
        if state.adapter != doc.previous:
            return False
        state.adopt(key)
        if recluster_after:
            recluster(state, min_faces=min_faces)
        return True

    _, adopted = lib.commit(change, wait=600, lock_ttl=120)
    return adopted


def adapt_library(lib: LibraryStore, params: AdaptParams, *, device: str = "cpu", min_faces: int = 3) -> dict[str, Any]:
    """The `adapt` job's work: learn, judge, store, and adopt when accepted. Returns the job summary."""
    start = time.perf_counter()
    head = lib.head()
    if head is None or not head.segments:
        raise NotEnoughLabels("the library has no faces yet: index some photos first")
    doc = learn(lib, head, params, device=device)
    adopted = adopt(lib, doc, recluster_after=params.recluster, min_faces=min_faces) if doc.accepted else False
    log.info("adapter v%d for %s: %s", doc.version, lib.tenant, doc.reason)
    return {
        "adapter": doc.version,
        "accepted": doc.accepted,
        "adopted": adopted,
        "reason": doc.reason
        if adopted or not doc.accepted
        else "accepted, but the adapter in use changed meanwhile: learn again",
        **doc.figures(),
        "seconds": round(time.perf_counter() - start, 2),
    }
