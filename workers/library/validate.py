"""Judging a learnt head before a library uses it (numpy only).

Two questions, each asked of the comparison in use now ("before") and of the candidate head ("after"):

- On labelled faces held out of training: do genuine pairs fall under the space's `verify` threshold and
  impostor pairs over it (`Figures.verification`), and does the nightly rule put each held-out face into its
  own person, with people built from the training faces and every other person of the library as
  distractors (`right`, `wrong`, `waiting`)?
- On people nobody named or confirmed: would a face of theirs go to a different person, or would they lose
  more clear faces than they gain (each face scored by the nightly rule against every person's exemplars, its
  own vector left out)? Those people carry no labels to check the head against, so a head that changes more
  than a few of them is refused however well it does on the named.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from storage.library.documents import Figures
from storage.library.state import LibraryState
from storage.library.vectors import choose_exemplars
from workers.faces.spaces import Thresholds
from workers.library.fold import choose, distances
from workers.library.transform import Transform
from workers.library.triplets import FaceLabels

STRUCTURE_PEOPLE = 400  # unlabelled people scored both ways (a sample, chosen by id hash, when there are more)
STRUCTURE_FACES = 8  # faces per unlabelled person
MAX_HELD = 3000  # held-out faces verified (pairs are held-out x reference: memory stays bounded)
MAX_REFERENCE = 6000  # training faces they are paired with (every k-th when there are more)
CHANGED_SHARE = 0.05  # of them, at most this share (and at least one person) may change (see docs/library.md)


def stable_unit(seed: int, name: str) -> float:
    """A number in [0, 1) fixed by `seed` and `name` (the same face is held out at every training)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Labelled:
    """The faces a user's decisions label: their ids, places, raw vectors, labels and the held-out rows."""

    faces: list[str]
    places: list[tuple[str, int]]  # (segment, row)
    vectors: np.ndarray
    labels: FaceLabels
    people: list[set[str]]  # group -> the library person ids it covers
    held: np.ndarray  # bool per row


@dataclass
class Exemplars:
    """Vectors that stand for people, grouped by person (`starts`), with the face id of each vector."""

    people: list[str]
    starts: np.ndarray
    vectors: np.ndarray  # raw
    faces: list[str]

    @classmethod
    def build(cls, items: list[tuple[str, str, np.ndarray]], dim: int) -> Exemplars:
        """From (person, face id, raw vector) triples."""
        items = sorted(items, key=lambda it: (it[0], it[1]))
        people: list[str] = []
        starts: list[int] = []
        for n, (pid, _, _) in enumerate(items):
            if not people or people[-1] != pid:
                people.append(pid)
                starts.append(n)
        vectors = np.stack([v for _, _, v in items]).astype(np.float32) if items else np.zeros((0, dim), np.float32)
        return cls(people, np.array(starts, np.int64), vectors, [f for _, f, _ in items])

    def owners(self) -> list[str]:
        """The person of each vector."""
        sizes = np.diff(np.append(self.starts, len(self.vectors)))
        return [p for p, n in zip(self.people, sizes, strict=True) for _ in range(int(n))]

    def scores(self, transform: Transform, queries: np.ndarray, query_faces: list[str] | None = None) -> np.ndarray:
        """(queries, people): the nightly score (mean of the two nearest exemplars), through `transform`; a
        query's own vector, when it is an exemplar, is left out."""
        if not self.people or not len(queries):
            return np.zeros((len(queries), len(self.people)), np.float32)
        d = distances(transform(queries), transform(self.vectors))
        if query_faces is not None:
            column = {f: n for n, f in enumerate(self.faces)}
            for n, face in enumerate(query_faces):
                if face in column:
                    d[n, column[face]] = np.inf
        sizes = np.diff(np.append(self.starts, d.shape[1]))
        first = np.minimum.reduceat(d, self.starts, axis=1)
        masked = np.where(d <= np.repeat(first, sizes, axis=1), np.inf, d)
        second = np.minimum.reduceat(masked, self.starts, axis=1)
        return np.where(np.isfinite(second), (first + second) / 2, first).astype(np.float32)


def figures(data: Labelled, others: Exemplars, transform: Transform, t: Thresholds) -> Figures:
    """How `transform` does on the held-out faces of `data` (see the module docstring)."""
    out = Figures()
    held = np.flatnonzero(data.held)[:MAX_HELD]
    if not len(held):
        return out
    train = np.flatnonzero(~data.held)
    other = np.concatenate([held, train[:: max(1, len(train) // MAX_REFERENCE)]])
    genuine, impostor = data.labels.pair_masks(held, other)
    # each pair once: a held-out face with a training face, or two held-out faces in one order only
    once = ~((other[None, :] == held[:, None]) | (np.isin(other, held)[None, :] & (other[None, :] < held[:, None])))
    genuine, impostor = genuine & once, impostor & once
    under = distances(transform(data.vectors[held]), transform(data.vectors[other])) < t.verify
    out.genuine_pairs, out.impostor_pairs = int(genuine.sum()), int(impostor.sum())
    out.tar = float(under[genuine].mean()) if out.genuine_pairs else 0.0
    out.far = float(under[impostor].mean()) if out.impostor_pairs else 0.0
    out.verification = (out.tar + 1.0 - out.far) / 2
    _assignments(data, others, transform, t, out)
    return out


def _assignments(data: Labelled, others: Exemplars, transform: Transform, t: Thresholds, out: Figures) -> None:
    """Held-out faces against people made of the training faces (and everyone else), by the nightly rule."""
    train = ~data.held
    items = [(pid, f, v) for pid, f, v in zip(others.owners(), others.faces, others.vectors, strict=True)]
    for g in range(len(data.people)):
        rows = np.flatnonzero(train & (data.labels.group == g))
        if not len(rows):
            continue
        chosen = rows[choose_exemplars(data.vectors[rows], np.ones(len(rows), bool))]
        items += [(f"group:{g}", data.faces[r], data.vectors[r]) for r in chosen]
    index = Exemplars.build(items, data.vectors.shape[1])
    queries = np.flatnonzero(data.held)
    owner_of = {pid: g for g, pids in enumerate(data.people) for pid in pids}
    forbidden = [{f"group:{g}" for g in data.labels.rejected[r]} for r in queries]
    picks = choose(index.scores(transform, data.vectors[queries]), index.people, forbidden, t)
    for r, pick, banned in zip(queries, picks, forbidden, strict=True):
        group = int(data.labels.group[r])
        if pick is not None and pick.startswith("group:"):
            picked_group: int | None = int(pick.split(":", 1)[1])
        else:
            picked_group = owner_of.get(pick) if pick else None
        out.faces += 1
        if group < 0:  # a face only known as "not them": wrong if it went to someone it was moved out of
            out.wrong += int(picked_group is not None and f"group:{picked_group}" in banned)
        elif pick is None:
            out.waiting += 1
        elif picked_group == group:
            out.right += 1
        else:
            out.wrong += 1


@dataclass
class Structure:
    people: int
    faces: int
    changed: int
    limit: int


def structure(
    state: LibraryState, labelled_people: set[str], before: Transform, after: Transform, t: Thresholds, seed: int
) -> Structure:
    """How many of the people nobody labelled would lose a face, or see one go to someone else, under `after`."""
    everyone = Exemplars.build(
        [(pid, f, v) for pid in sorted(state.people) for f, v in zip(*state.exemplars(pid), strict=True)], state.dim
    )
    unlabelled = sorted(
        (pid for pid in state.people if pid not in labelled_people), key=lambda pid: stable_unit(seed, pid)
    )[:STRUCTURE_PEOPLE]
    places: list[tuple[str, int]] = []
    owners: list[str] = []
    faces: list[str] = []
    for pid in unlabelled:
        members = sorted(state.members(pid), key=lambda m: stable_unit(seed, m.face))[:STRUCTURE_FACES]
        places += [(m.segment, m.row) for m in members]
        owners += [pid] * len(members)
        faces += [m.face for m in members]
    if not places:
        return Structure(0, 0, 0, 0)
    vectors = vectors_at(state, places)
    forbidden = [set(state.rejected(s, r)) for s, r in places]
    was = choose(everyone.scores(before, vectors, faces), everyone.people, forbidden, t)
    now = choose(everyone.scores(after, vectors, faces), everyone.people, forbidden, t)
    changed = _changed(owners, was, now)
    people = len(set(owners))
    return Structure(people, len(places), len(changed), max(1, math.floor(CHANGED_SHARE * people)))


def _changed(owners: list[str], was: list[str | None], now: list[str | None]) -> set[str]:
    """People with a face that would go to someone else, or that would lose more clear faces (their own by the
    nightly rule) than they gain: a face at a margin's edge may tip either way under any head."""
    balance: dict[str, int] = {}
    moved = set()
    for own, a, b in zip(owners, was, now, strict=True):
        if b not in (own, None, a):
            moved.add(own)
        balance[own] = balance.get(own, 0) + (b == own) - (a == own)
    return moved | {own for own, n in balance.items() if n < 0}


def vectors_at(state: LibraryState, places: list[tuple[str, int]]) -> np.ndarray:
    """Raw vectors of (segment, row) faces, in order, read segment by segment."""
    out = np.zeros((len(places), state.dim), np.float32)
    by_segment: dict[str, list[int]] = {}
    for n, (segment, _) in enumerate(places):
        by_segment.setdefault(segment, []).append(n)
    for segment, ns in by_segment.items():
        out[ns] = state.vectors(segment, [places[n][1] for n in ns])
    return out
