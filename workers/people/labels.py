"""What users said about people, and how it survives re-clustering.

`Labels` is an immutable, JSON-serialisable record: per person id a name, the faces confirmed as that
person and the faces rejected from it ("not this person"), plus which ids were merged into which. Each
operation (`name`, `confirm`, `merge`, `move_out`) returns a new version.

Re-clustering turns labels into constraints: a person's confirmed faces are a must-link group, a rejected
face cannot share a cluster with the person's anchor (its smallest confirmed face id), and the anchors of
different labelled people cannot share a cluster. `carry_labels` then gives each new cluster the id and
name of the labelled person whose confirmed faces it holds, else the id of the previous person it
overlaps most, else a fresh id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from storage.library.documents import resolve_merged
from workers.people.cluster import Algorithm, Cluster, cluster_faces

_FORMAT = "nightshift.labels.v1"


@dataclass(frozen=True)
class Person(Cluster):
    """A cluster as users see it: a stable person id, a name when someone gave one, and the faces."""

    name: str | None = None


@dataclass(frozen=True)
class PersonLabel:
    """What is known about one person: its name, faces confirmed as it, faces rejected from it."""

    name: str | None = None
    confirmed: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()

    @property
    def anchor(self) -> str | None:
        """The confirmed face that stands for the person in cannot-link constraints."""
        return min(self.confirmed) if self.confirmed else None


@dataclass(frozen=True)
class Labels:
    """All labels of one collection, at one `version`. Confirmed face sets of different people are disjoint."""

    people: Mapping[str, PersonLabel] = field(default_factory=dict)
    merged: Mapping[str, str] = field(default_factory=dict)  # merged-away person id -> the id it went into
    version: int = 0

    def resolve(self, person_id: str) -> str:
        """The current id of `person_id`, following merges."""
        return resolve_merged(dict(self.merged), person_id)

    def label(self, person_id: str) -> PersonLabel:
        """The label of a person (empty when nothing is known about it)."""
        return self.people.get(self.resolve(person_id), PersonLabel())

    def _with(self, updates: Mapping[str, PersonLabel | None], merged: Mapping[str, str] | None = None) -> Labels:
        """The next version: `updates` applied (None removes), each newly confirmed face removed elsewhere."""
        people = dict(self.people)
        for person_id, label in updates.items():
            if label is None:
                people.pop(person_id, None)
                continue
            for other_id, other in people.items():
                if other_id != person_id and not other.confirmed.isdisjoint(label.confirmed):
                    people[other_id] = replace(other, confirmed=other.confirmed - label.confirmed)
            people[person_id] = replace(label, rejected=label.rejected - label.confirmed)
        return Labels(people=people, merged={**self.merged, **(merged or {})}, version=self.version + 1)

    def name(self, person: Person, name: str, faces: Iterable[str] | None = None) -> Labels:
        """Name `person`, confirming `faces` (default: all its current faces, the ones the user looked at)."""
        person_id = self.resolve(person.id)
        label = self.label(person_id)
        confirmed = label.confirmed | frozenset(person.face_ids if faces is None else faces)
        return self._with({person_id: replace(label, name=name.strip() or None, confirmed=confirmed)})

    def confirm(self, person: Person, faces: Iterable[str]) -> Labels:
        """Confirm `faces` as `person` (taking them from whoever had them confirmed before)."""
        person_id = self.resolve(person.id)
        label = self.label(person_id)
        return self._with({person_id: replace(label, confirmed=label.confirmed | frozenset(faces))})

    def merge(self, a: Person, b: Person) -> Labels:
        """`a` and `b` are one person: all their faces are confirmed under a's id (b's if only b is labelled).

        The name is a's, else b's. The other id is recorded as merged into the surviving one.
        """
        a_id, b_id = self.resolve(a.id), self.resolve(b.id)
        if a_id == b_id:
            return self
        if b_id in self.people and a_id not in self.people:
            a, b, a_id, b_id = b, a, b_id, a_id
        la, lb = self.label(a_id), self.label(b_id)
        label = PersonLabel(
            name=la.name or lb.name,
            confirmed=la.confirmed | lb.confirmed | frozenset(a.face_ids) | frozenset(b.face_ids),
            rejected=la.rejected | lb.rejected,
        )
        return self._with({b_id: None, a_id: label}, merged={b_id: a_id})

    def move_out(self, face_id: str, person: Person) -> Labels:
        """`face_id` is not `person`: unconfirm it and keep it apart from the person from now on.

        A person without confirmed faces gets its representative (or, if that is the face, its first other
        face) confirmed as an anchor, so "not this person" has something to hold on to.
        """
        person_id = self.resolve(person.id)
        label = self.label(person_id)
        confirmed = label.confirmed - {face_id}
        if not confirmed:
            others = [f for f in person.face_ids if f != face_id]
            if person.representative != face_id:
                confirmed = frozenset([person.representative])
            elif others:
                confirmed = frozenset(others[:1])
        return self._with({person_id: replace(label, confirmed=confirmed, rejected=label.rejected | {face_id})})

    def must_link(self) -> list[list[str]]:
        """One group per labelled person: its confirmed faces."""
        return [sorted(label.confirmed) for _, label in sorted(self.people.items()) if label.confirmed]

    def cannot_link(self) -> list[list[str]]:
        """The anchors of all labelled people (pairwise apart), and each rejected face with its person's anchor."""
        anchors = {pid: label.anchor for pid, label in sorted(self.people.items()) if label.anchor is not None}
        groups = [sorted(anchors.values())] if len(anchors) > 1 else []
        for pid, anchor in anchors.items():
            groups.extend([face, anchor] for face in sorted(self.people[pid].rejected))
        return groups

    def to_json(self) -> str:
        """The labels as a JSON document (sorted, so equal labels give equal text)."""
        people = {
            pid: {"name": label.name, "confirmed": sorted(label.confirmed), "rejected": sorted(label.rejected)}
            for pid, label in sorted(self.people.items())
        }
        document = {"format": _FORMAT, "version": self.version, "people": people, "merged": dict(self.merged)}
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Labels:
        """Labels written by `to_json`. Raises ValueError on another document."""
        try:
            document = json.loads(text)
            if document.get("format") != _FORMAT:
                raise ValueError(f"not a labels document: format {document.get('format')!r}")
            people = {
                pid: PersonLabel(name=p["name"], confirmed=frozenset(p["confirmed"]), rejected=frozenset(p["rejected"]))
                for pid, p in document["people"].items()
            }
            return cls(people=people, merged=dict(document["merged"]), version=int(document["version"]))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a labels document: {error}") from error


def carry_labels(old_people: Sequence[Person], new_clusters: Sequence[Cluster], labels: Labels) -> list[Person]:
    """People for `new_clusters`: ids and names carried over from `labels` and `old_people`.

    A cluster holding a labelled person's confirmed faces takes that person's id and name (the cluster with
    most of them, if they got split); otherwise the id of the previous person it shares most faces with; else
    its own cluster id. Every id is used once. People come largest first, then by id.
    """
    owner = {face: pid for pid, label in labels.people.items() for face in label.confirmed}
    labelled = [
        (count, pid, k) for k, c in enumerate(new_clusters) for pid, count in _count_by(c.face_ids, owner).items()
    ]
    previous = {face: labels.resolve(p.id) for p in old_people for face in p.face_ids}
    overlapping = [
        (count, pid, k) for k, c in enumerate(new_clusters) for pid, count in _count_by(c.face_ids, previous).items()
    ]
    ids: dict[int, str] = {}
    used: set[str] = set(labels.people)
    _assign(labelled, ids, set())
    _assign(overlapping, ids, used | set(ids.values()))
    used |= set(ids.values())
    people = []
    for k, cluster in enumerate(new_clusters):
        person_id = ids.get(k) or _fresh_id(cluster.id, used)
        used.add(person_id)
        name = labels.people[person_id].name if person_id in labels.people else None
        people.append(Person(person_id, cluster.face_ids, cluster.representative, cluster.photo_count, name))
    return sorted(people, key=lambda p: (-p.size, p.id))


def _count_by(faces: Iterable[str], owner: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for face in faces:
        if face in owner:
            counts[owner[face]] = counts.get(owner[face], 0) + 1
    return counts


def _assign(candidates: list[tuple[int, str, int]], ids: dict[int, str], taken: set[str]) -> None:
    """Greedy one-to-one matching of clusters to person ids, largest overlap first (ties by id, cluster)."""
    taken = set(taken) | set(ids.values())
    for _, person_id, k in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if k not in ids and person_id not in taken:
            ids[k] = person_id
            taken.add(person_id)


def _fresh_id(base: str, used: set[str]) -> str:
    candidate, n = base, 0
    while candidate in used:
        n += 1
        candidate = "c" + hashlib.sha1(f"{base}#{n}".encode()).hexdigest()[:12]
    return candidate


def cluster_people(
    embeddings: np.ndarray,
    face_ids: Sequence[str],
    photo_ids: Sequence[str],
    labels: Labels,
    *,
    threshold: float,
    old_people: Sequence[Person] = (),
    algorithm: Algorithm = "average",
    min_faces: int = 1,
) -> list[Person]:
    """Cluster faces under the constraints of `labels`, then `carry_labels` from `old_people`."""
    clusters = cluster_faces(
        embeddings,
        face_ids,
        photo_ids,
        threshold=threshold,
        must_link=labels.must_link(),
        cannot_link=labels.cannot_link(),
        algorithm=algorithm,
        min_faces=min_faces,
    )
    return carry_labels(old_people, clusters, labels)
