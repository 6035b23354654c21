"""A full re-cluster of a library, on demand: every face grouped again, no user decision undone.

What users said becomes constraints (`workers.people.labels`): a person's confirmed faces (named, merged,
assigned) stay together, a face moved out of someone never rejoins them, and the anchors of different
people stay apart. New groups take the ids of the people they overlap most (`carry_labels`), so unnamed
people keep their ids too; names, hidden flags and covers live on those ids. Groups smaller than
`min_faces` that carry no one's id go back to the unassigned pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storage.library.state import LibraryState, person_id_for
from storage.library.vectors import choose_exemplars
from workers.faces.spaces import SPACES, Thresholds
from workers.library.fold import PersonIndex, choose
from workers.library.transform import transform_for
from workers.people.cluster import Algorithm
from workers.people.labels import Labels, PersonLabel, cluster_people
from workers.people.labels import Person as LabelledPerson


@dataclass(frozen=True)
class ReclusterReport:
    """What a re-cluster did (the job's summary): faces grouped, people after it, people it made, people whose
    faces changed, faces left unassigned."""

    faces: int
    people: int
    new_people: int
    changed_people: int
    unassigned: int


def _labels(state: LibraryState, rejected: dict[str, set[str]]) -> tuple[Labels, list[LabelledPerson]]:
    people: dict[str, PersonLabel] = {}
    old: list[LabelledPerson] = []
    for pid, person in state.people.items():
        members = state.members(pid)
        confirmed = {m.face for m in members if m.confirmed}
        said = person.name or person.hidden or person.cover or rejected.get(pid)
        if not confirmed and said and members:
            # something was said about this person: an anchor keeps its id (and the constraints) in place
            confirmed = {person.cover_face or members[0].face} & {m.face for m in members} or {members[0].face}
        if confirmed or rejected.get(pid) or person.name:
            people[pid] = PersonLabel(
                name=person.name, confirmed=frozenset(confirmed), rejected=frozenset(rejected.get(pid, set()))
            )
        old.append(
            LabelledPerson(pid, tuple(m.face for m in members), person.cover_face or "", person.photos, person.name)
        )
    return Labels(people=people, merged=dict(state.merged)), old


def recluster(
    state: LibraryState, *, algorithm: Algorithm = "average", threshold: float | None = None, min_faces: int = 3
) -> ReclusterReport:
    """Group every face of `state` again under the constraints of what users said (module docstring)."""
    if state.space is None:
        return ReclusterReport(0, 0, 0, 0, 0)
    t = SPACES[state.space].thresholds
    rows: list[tuple[str, int]] = []
    ids: list[str] = []
    photos: list[str] = []
    parts = []
    rejected: dict[str, set[str]] = {}
    for ref in state.segments.values():
        doc = state.assignments(ref.id)
        skip = set(doc.skip)
        take = [r for r in range(ref.faces) if r not in skip]
        face_ids, face_photos = state.segment_faces(ref.id).column("face"), state.segment_faces(ref.id).column("photo")
        rows += [(ref.id, r) for r in take]
        ids += [face_ids[r] for r in take]
        photos += [face_photos[r] for r in take]
        parts.append(state.lib.embeddings(ref)[take])
        for row, pids in doc.rejected.items():
            for pid in pids:
                rejected.setdefault(state.resolve(pid), set()).add(face_ids[int(row)])
    vectors = np.concatenate(parts) if parts else np.zeros((0, state.dim), np.float32)
    compared = transform_for(state.lib, state.adapter)(vectors)  # as the library compares faces; stored raw
    labels, old = _labels(state, rejected)
    people = (
        cluster_people(
            compared,
            ids,
            photos,
            labels,
            threshold=threshold or t.cluster,
            old_people=old,
            algorithm=algorithm,
            min_faces=1,
        )
        if ids
        else []
    )
    position = {face: n for n, face in enumerate(ids)}
    target: dict[tuple[str, int], str | None] = dict.fromkeys(rows)
    taken = set(state.people) | set(state.merged)
    new_people = 0
    for person in people:
        pid = person.id
        if pid not in state.people:
            if len(person.face_ids) < min_faces:
                continue  # too few to be somebody yet: they wait as unassigned
            pid = person_id_for(min(person.face_ids), taken)
            taken.add(pid)
            new_people += 1
        for face in person.face_ids:
            target[rows[position[face]]] = pid
    _assign_leftovers(state, target, rows, ids, photos, compared, rejected, t)
    by_face = {face: vectors[n] for n, face in enumerate(ids)}
    changed = state.reassign(target, by_face)
    return ReclusterReport(
        faces=len(ids),
        people=len({p for p in target.values() if p}),
        new_people=new_people,
        changed_people=len(changed),
        unassigned=sum(p is None for p in target.values()),
    )


def _assign_leftovers(
    state: LibraryState,
    target: dict[tuple[str, int], str | None],
    rows: list[tuple[str, int]],
    ids: list[str],
    photos: list[str],
    vectors: np.ndarray,
    rejected: dict[str, set[str]],
    t: Thresholds,
) -> None:
    """Faces the clustering left alone join a person by the nightly rule (their nearest exemplars, with a
    margin): a merged person's two looks attract new faces of either, as they did before the re-cluster."""
    groups: dict[str, list[int]] = {}
    for n, rc in enumerate(rows):
        pid = target[rc]
        if pid:
            groups.setdefault(pid, []).append(n)
    left = [n for n, rc in enumerate(rows) if target[rc] is None]
    if not groups or not left:
        return
    people: list[str] = []
    starts: list[int] = []
    parts: list[np.ndarray] = []
    for pid, members in sorted(groups.items()):
        chosen = choose_exemplars(vectors[members], np.zeros(len(members), bool))
        people.append(pid)
        starts.append(sum(len(p) for p in parts))
        parts.append(vectors[members][chosen])
    index = PersonIndex(people, np.array(starts, np.int64), np.concatenate(parts))
    not_them = [{pid for pid, faces in rejected.items() if ids[n] in faces} for n in left]
    picks = choose(index.scores(vectors[left]), people, not_them, t)
    taken = {(photos[n], target[rows[n]]) for n in range(len(rows)) if target[rows[n]]}
    for n, pid in zip(left, picks, strict=True):
        if pid and (photos[n], pid) not in taken:
            target[rows[n]] = pid
            taken.add((photos[n], pid))
