"""Folding new faces into a library version: the nightly path, incremental and bounded.

1. New segments join; faces of photos the library already had are left out (duplicates).
2. Each new face is compared with every person's exemplars. Its distance to a person is the mean of its two
   nearest exemplars of that person (the nearest alone when the person has one). It joins the nearest
   person when that distance is under the space's `assign` threshold AND the runner-up person is farther
   by `assign_margin` — a face between two people waits. Two faces of one photo never join one person.
3. Faces that joined nobody wait in the unassigned pool. The pool around the new faces is clustered
   (average linkage at the `cluster` threshold, faces of one photo kept apart); a group of at least
   `min_faces` that holds a new face becomes a new person.
4. Waiting faces near the people who changed are compared again, under the same rule.

Memory is bounded by the people (at most MAX_EXEMPLARS vectors each), the pool and the new faces — never by
the whole library. Merge suggestions are refreshed for the people who changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage.library.documents import SegmentRef, Suggestion, may_be_one
from storage.library.state import LibraryState
from storage.library.store import photo_ids
from workers.faces.spaces import Thresholds, space_of
from workers.library.transform import IDENTITY, Transform, transform_for
from workers.people.cluster import cluster_faces

log = logging.getLogger("nightshift.library")
BLOCK = 2048  # query rows per distance block: bounded memory for large nights
PRUNED_BLOCK = 64  # smaller blocks when people are ruled out by their centres: fewer people left per block
SLACK = 1e-3  # float32 rounding of the distances, so a bound never rules out a score just under a limit
SUGGESTIONS = 50


@dataclass
class FoldReport:
    """What a fold did, for the job summary and the CLI's last line."""

    segments: int = 0
    faces: int = 0
    photos: int = 0
    duplicates: int = 0
    assigned: int = 0
    new_people: list[str] = field(default_factory=list)
    grew: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    unassigned: int = 0
    people: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "photos": self.photos,
            "duplicates": self.duplicates,
            "assigned": self.assigned,
            "new_people": len(self.new_people),
            "grew": len(self.grew),
            "people": self.people,
            "unassigned": self.unassigned,
            "refused": self.refused,
        }


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)), float32, never negative."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0, dtype=np.float32), dtype=np.float32)


@dataclass
class PersonIndex:
    """Every person's exemplars grouped by person, to score faces against people. `vectors` are as compared
    (through the library's head, if it adopted one); `scores` takes raw queries and applies `transform`.

    Each person also has a centre (the mean of their exemplars) and a radius (their exemplar farthest from
    it). By the triangle inequality no face is nearer to any exemplar of a person than its distance to the
    centre less the radius, so a caller that only needs distances under a limit skips every person that
    bound rules out: exact below the limit, and a large library costs a few people per face, not all."""

    people: list[str]
    starts: np.ndarray
    vectors: np.ndarray
    transform: Transform = IDENTITY
    counts: np.ndarray = field(init=False, repr=False)
    centres: np.ndarray = field(init=False, repr=False)
    radii: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.counts = np.diff(np.append(self.starts, len(self.vectors))).astype(np.int64)
        if not self.people:
            self.centres = np.zeros((0, self.vectors.shape[1] if self.vectors.ndim == 2 else 0), np.float32)
            self.radii = np.zeros(0, np.float32)
            return
        self.centres = (np.add.reduceat(self.vectors, self.starts, axis=0) / self.counts[:, None]).astype(np.float32)
        spread = np.linalg.norm(self.vectors - np.repeat(self.centres, self.counts, axis=0), axis=1)
        self.radii = np.maximum.reduceat(spread, self.starts).astype(np.float32)

    @classmethod
    def of(cls, state: LibraryState, only: set[str] | None = None) -> PersonIndex:
        transform = transform_for(state.lib, state.adapter)
        owners, matrix = state.all_exemplars()
        keep = [n for n, o in enumerate(owners) if only is None or o in only]
        owners = [owners[n] for n in keep]
        matrix = matrix[keep]
        people: list[str] = []
        starts: list[int] = []
        for n, owner in enumerate(owners):
            if not people or people[-1] != owner:
                people.append(owner)
                starts.append(n)
        return cls(people, np.array(starts, np.int64), transform(matrix), transform)

    def scores(self, queries: np.ndarray, limit: float | None = None) -> np.ndarray:
        """(queries, people): mean of the two nearest exemplars of each person (the nearest if only one).
        With `limit`, scores of `limit` or more may be left at infinity (never one under it)."""
        if not self.people:
            return np.zeros((len(queries), 0), np.float32)
        queries = self.transform(queries)
        out = np.full((len(queries), len(self.people)), np.inf, np.float32)
        step = BLOCK if limit is None else PRUNED_BLOCK
        for lo in range(0, len(queries), step):
            block = queries[lo : lo + step]
            if limit is None:
                out[lo : lo + step] = self._exact(block, None)
                continue
            bound = distances(block, self.centres) - self.radii[None, :]
            near = np.flatnonzero((bound < limit + SLACK).any(axis=0))
            if len(near):
                out[lo : lo + step, near] = self._exact(block, near)
        return out

    def person_scores(self, person: int, limit: float) -> np.ndarray:
        """(people,): the score of each person against person `person`'s own exemplars, at the nearest of them
        (infinity where it is `limit` or more, as `scores`)."""
        lo = int(self.starts[person])
        mine = self.vectors[lo : lo + int(self.counts[person])]
        bound = np.linalg.norm(self.centres - self.centres[person], axis=1) - self.radii - self.radii[person]
        near = np.flatnonzero(bound < limit + SLACK)
        out = np.full(len(self.people), np.inf, np.float32)
        if len(near):
            out[near] = self._exact(mine, near).min(axis=0)
        return out

    def _exact(self, queries: np.ndarray, people: np.ndarray | None) -> np.ndarray:
        """(queries, people): the two-nearest score against the exemplars of `people` (None: everyone),
        queries already transformed."""
        if people is None:
            vectors, starts, counts = self.vectors, self.starts, self.counts
        else:
            counts = self.counts[people]
            starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
            rows = np.repeat(self.starts[people] - starts, counts) + np.arange(int(counts.sum()))
            vectors = self.vectors[rows]
        d = distances(queries, vectors)
        first = np.minimum.reduceat(d, starts, axis=1)
        masked = np.where(d <= np.repeat(first, counts, axis=1), np.inf, d)
        second = np.minimum.reduceat(masked, starts, axis=1)
        return np.where(np.isfinite(second), (first + second) / 2, first)


def choose(scores: np.ndarray, people: list[str], forbidden: list[set[str]], t: Thresholds) -> list[str | None]:
    """Per face: the person it clearly is (nearest under `assign`, runner-up `assign_margin` farther), or None."""
    out: list[str | None] = []
    index = {p: n for n, p in enumerate(people)}
    for row, banned in zip(scores, forbidden, strict=True):
        if not len(row):
            out.append(None)
            continue
        row = row.copy()
        for p in banned:
            if p in index:
                row[index[p]] = np.inf
        order = np.argsort(row)[:2]
        best = float(row[order[0]])
        runner = float(row[order[1]]) if len(order) > 1 else np.inf
        out.append(people[order[0]] if best < t.assign and runner - best >= t.assign_margin else None)
    return out


def fold(
    state: LibraryState, new: list[SegmentRef], *, min_faces: int = 3, thresholds: Thresholds | None = None
) -> FoldReport:
    """Fold segments into `state` (see the module docstring); `thresholds` default to the space's."""
    report = FoldReport()
    accepted = _admit(state, new, report)
    if state.space is None:
        return report
    thresholds = thresholds or space_of_state(state).thresholds
    known = PersonIndex.of(state)
    rows: list[tuple[str, int]] = []
    vectors = []
    for ref in accepted:
        doc = state.assignments(ref.id)
        skip = set(doc.skip)
        take = [r for r in range(ref.faces) if r not in skip]
        rows += [(ref.id, r) for r in take]
        vectors.append(state.lib.embeddings(ref)[take])
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, state.dim), np.float32)
    report.faces = len(rows)
    placed = _assign(state, rows, matrix, known, thresholds, report)
    waiting = [(rows[n], matrix[n]) for n in range(len(rows)) if not placed[n]]
    touched = _new_people(state, waiting, thresholds, min_faces, report)
    state.refresh_exemplars(touched | report.grew)
    _recheck_pool(state, touched | report.grew, thresholds, report)
    state.refresh_exemplars(report.grew)
    _suggest(state, touched | report.grew, thresholds)
    report.people = len(state.people)
    report.unassigned = state.stats()["unassigned"]
    return report


def space_of_state(state: LibraryState) -> Any:
    from workers.faces.spaces import SPACES

    return SPACES[state.space or ""]


def _admit(state: LibraryState, new: list[SegmentRef], report: FoldReport) -> list[SegmentRef]:
    """Add the segments whose model fits the library's space; mark faces of photos seen before as skipped."""
    known = [state.lib.photo_index(ref) for ref in state.segments.values()]
    seen = np.unique(np.concatenate(known)) if known else np.zeros(0, np.uint64)
    accepted = []
    for ref in new:
        if ref.id in state.segments:
            continue
        space = space_of(ref.model).id
        if state.space not in (None, space):
            report.refused.append(
                f"{ref.job}: made with {ref.model} ({space}); the library uses {state.space}: "
                "re-embed the library or index with the same model"
            )
            continue
        state.space = space
        index = state.lib.photo_index(ref)
        new_photos = int(np.setdiff1d(index, seen).size)  # photos (with faces or not) the library did not have
        update = {"assign": None, "unassigned": ref.faces, "skipped": 0, "new_photos": new_photos}
        state.segments[ref.id] = ref.model_copy(update=update)
        doc = state.assignments(ref.id)
        faces = state.segment_faces(ref.id)
        photos, items = faces.column("photo"), faces.column("item")
        ids = photo_ids(photos) if photos else np.zeros(0, np.uint64)
        old = set(ids[np.isin(ids, seen)].tolist())
        first_item: dict[str, int] = {}
        for photo, item in zip(photos, items, strict=True):
            first_item.setdefault(photo, item)
        # a photo the library had, or a second copy of a photo within this job, adds no faces
        doc.skip = [
            n
            for n, (photo, item) in enumerate(zip(photos, items, strict=True))
            if int(photo[:16], 16) in old or first_item[photo] != item
        ]
        seen = np.union1d(seen, index)
        state._dirty_segments.add(ref.id)
        report.segments += 1
        report.duplicates += len(doc.skip)
        skipped = set(doc.skip)
        report.photos += len({p for n, p in enumerate(photos) if n not in skipped})
        accepted.append(ref)
    return accepted


def _assign(
    state: LibraryState,
    rows: list[tuple[str, int]],
    matrix: np.ndarray,
    known: PersonIndex,
    t: Thresholds,
    report: FoldReport,
) -> list[bool]:
    if not rows or not known.people:
        return [False] * len(rows)
    forbidden = [set(state.rejected(s, r)) for s, r in rows]
    scores = known.scores(matrix, limit=t.assign + t.assign_margin)  # farther never changes a choice
    picks = choose(scores, known.people, forbidden, t)
    # faces of one photo never share a person: the closest keeps it, the others wait
    best: dict[tuple[str, str], int] = {}
    index = {p: n for n, p in enumerate(known.people)}
    for n, pid in enumerate(picks):
        if pid is None:
            continue
        photo = state.segment_faces(rows[n][0])[rows[n][1]].photo
        key = (photo, pid)
        if key not in best or scores[n, index[pid]] < scores[best[key], index[pid]]:
            best[key] = n
    winners = set(best.values())
    placed = [False] * len(rows)
    for n, pid in enumerate(picks):
        if pid is not None and n in winners:
            segment, row = rows[n]
            state.place(segment, row, pid, vector=matrix[n])
            placed[n] = True
            report.assigned += 1
            report.grew.add(pid)
    return placed


def _pool(state: LibraryState) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Every unassigned face of the library (not skipped), with its vector."""
    rows: list[tuple[str, int]] = []
    parts = []
    for ref in state.segments.values():
        doc = state.assignments(ref.id)
        skip = set(doc.skip)
        take = [r for r, p in enumerate(doc.person) if p is None and r not in skip]
        if take:
            rows += [(ref.id, r) for r in take]
            parts.append(state.vectors(ref.id, take))
    return rows, np.concatenate(parts) if parts else np.zeros((0, state.dim), np.float32)


def _new_people(
    state: LibraryState,
    waiting: list[tuple[tuple[str, int], np.ndarray]],
    t: Thresholds,
    min_faces: int,
    report: FoldReport,
) -> set[str]:
    if not waiting:
        return set()
    pool_rows, pool = _pool(state)
    compared = transform_for(state.lib, state.adapter)(pool)  # groups form as the library compares faces
    new_rows = {rc for rc, _ in waiting}
    near = _neighbourhood(pool_rows, compared, new_rows, t.cluster)
    ids = [state.segment_faces(s).column("face")[r] for s, r in (pool_rows[n] for n in near)]
    photos = [state.segment_faces(s).column("photo")[r] for s, r in (pool_rows[n] for n in near)]
    clusters = cluster_faces(compared[near], ids, photos, threshold=t.cluster, min_faces=min_faces)
    position = {fid: near[n] for n, fid in enumerate(ids)}
    made: set[str] = set()
    for cluster in clusters:
        members = [position[f] for f in cluster.face_ids]
        if not new_rows.intersection(pool_rows[m] for m in members):
            continue  # it could have formed before: nothing new joined it
        pid = state.new_person([pool_rows[m] for m in members], pool[members])
        made.add(pid)
        report.new_people.append(pid)
    return made


def _neighbourhood(
    rows: list[tuple[str, int]], vectors: np.ndarray, new: set[tuple[str, int]], radius: float
) -> list[int]:
    """Indices of the new faces and of pool faces within two hops (`radius`) of them: every group the new
    faces could complete, without clustering the whole pool every night."""
    chosen = np.array([rc in new for rc in rows])
    frontier = chosen.copy()
    for _ in range(2):
        if not frontier.any():
            break
        reach = np.zeros(len(rows), bool)
        sources = vectors[frontier]
        for lo in range(0, len(rows), BLOCK):
            d = distances(vectors[lo : lo + BLOCK], sources)
            reach[lo : lo + BLOCK] = (d < radius).any(axis=1)
        frontier = reach & ~chosen
        chosen |= reach
    return [int(i) for i in np.flatnonzero(chosen)]


def _recheck_pool(state: LibraryState, changed: set[str], t: Thresholds, report: FoldReport) -> None:
    """Waiting faces near people who changed may now be clear: same rule, against everyone."""
    if not changed:
        return
    pool_rows, pool = _pool(state)
    if not pool_rows:
        return
    local = PersonIndex.of(state, only=changed)
    near = (
        np.flatnonzero(local.scores(pool, limit=t.assign).min(axis=1) < t.assign) if local.people else np.array([], int)
    )
    if not len(near):
        return
    everyone = PersonIndex.of(state)
    candidates = [pool_rows[n] for n in near]
    forbidden = [set(state.rejected(s, r)) for s, r in candidates]
    picks = choose(everyone.scores(pool[near], limit=t.assign + t.assign_margin), everyone.people, forbidden, t)
    for n, pid in zip(near, picks, strict=True):
        if pid is None:
            continue
        segment, row = pool_rows[n]
        photo = state.segment_faces(segment)[row].photo
        if any(m.photo == photo for m in state.members(pid)):
            continue
        state.place(segment, row, pid, vector=pool[n])
        report.assigned += 1
        report.grew.add(pid)


def _suggest(state: LibraryState, changed: set[str], t: Thresholds) -> None:
    """Pairs of people whose nearest faces are as close as `verify` calls one person, best first: likely one
    person split in two. Never two people a user named differently."""
    everyone = PersonIndex.of(state)
    position = {p: n for n, p in enumerate(everyone.people)}
    limit = t.verify

    def wanted(a: str, b: str) -> bool:
        return a in state.people and b in state.people and may_be_one(state.people[a], state.people[b])

    found = {(s.a, s.b): s for s in state.suggestions if s.distance < limit and wanted(s.a, s.b)}
    for pid in sorted(changed):
        if pid not in state.people or pid not in position:
            continue
        scores = everyone.person_scores(position[pid], limit)
        for n in np.flatnonzero(scores < limit):
            other = everyone.people[n]
            a, b = sorted((pid, other))
            if other != pid and wanted(a, b):
                found[(a, b)] = Suggestion(a=a, b=b, distance=round(float(scores[n]), 4))
    state.suggestions = sorted(found.values(), key=lambda s: (s.distance, s.a, s.b))[:SUGGESTIONS]
