"""A mutable view of one library version. Every change — a night's faces, a re-cluster, a user's decision —
goes through the few primitives here (`place`, `new_person`, `merge`, `rename`, ...), which keep the three
views of "who is who" in step: each segment's assignments (the truth), each person's member list (their
page) and each person's exemplar vectors (what new faces are compared with). `finish` writes only what
changed, under keys of the new version, and returns the next head.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from storage import keys
from storage.library.documents import (
    AssignDoc,
    FaceRows,
    Head,
    Member,
    MembersDoc,
    PeopleDoc,
    Person,
    SegmentRef,
    Suggestion,
    resolve_merged,
)
from storage.library.vectors import MAX_EXEMPLARS, choose_exemplars, pack

if TYPE_CHECKING:
    from storage.library.store import LibraryStore

SHARDS = 64  # exemplar vectors are stored in this many objects (a change rewrites one, not all)
RECENT_DECISIONS = 2000


class DecisionInvalid(ValueError):
    """A decision that does not fit the library as it is. `code`: "not_found" (an unknown person or face),
    "conflict" (it contradicts the library, e.g. a second face of one photo), "invalid" (a face not theirs)."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


def shard_of(person_id: str) -> str:
    return f"{zlib.crc32(person_id.encode()) % SHARDS:02x}"


def person_id_for(face_id: str, taken: set[str]) -> str:
    """A new person's id: derived from a face, so the same first face gives the same id."""
    base = "p" + hashlib.sha1(face_id.encode()).hexdigest()[:12]
    candidate, n = base, 0
    while candidate in taken:
        n += 1
        candidate = "p" + hashlib.sha1(f"{face_id}#{n}".encode()).hexdigest()[:12]
    return candidate


class LibraryState:
    """One version being changed; `finish()` makes it the next version."""

    def __init__(self, lib: LibraryStore, base: Head | None) -> None:
        self.lib = lib
        self.base = base
        self.version = (base.version if base else 0) + 1
        self.space = base.space if base else None
        self.adapter = base.adapter if base else None  # the adopted head's AdapterDoc key (None: raw vectors)
        self.segments: dict[str, SegmentRef] = {r.id: r.model_copy() for r in base.segments} if base else {}
        doc = lib.people(base)
        self.people: dict[str, Person] = {p.id: p.model_copy() for p in doc.people}
        self.merged: dict[str, str] = dict(doc.merged)
        self.applied: list[str] = list(base.decisions_applied) if base else []
        self.suggestions: list[Suggestion] = list(base.suggestions) if base else []
        self.events: Counter[str] = Counter()
        self.refused: dict[str, str] = {}  # decision id -> why it no longer applied
        self._shard_keys = dict(doc.exemplars)
        self._assign: dict[str, AssignDoc] = {}
        self._dirty_segments: set[str] = set()
        self._members: dict[str, list[Member]] = {}
        self._dirty_people: set[str] = set()
        self._exemplars: dict[str, tuple[list[str], np.ndarray]] = {}
        self._candidates: dict[str, list[tuple[str, np.ndarray]]] = {}
        self._loaded_shards: set[str] = set()
        self._dirty_shards: set[str] = set()
        self._rows: dict[str, dict[str, int]] = {}
        self._faces: dict[str, FaceRows] = {}

    # -- looking up --------------------------------------------------------------------------------
    def resolve(self, person_id: str) -> str:
        return resolve_merged(self.merged, person_id)

    def person(self, person_id: str) -> Person:
        pid = self.resolve(person_id)
        if pid not in self.people:
            raise DecisionInvalid(f"person {person_id} not found", "not_found")
        return self.people[pid]

    def assignments(self, segment: str) -> AssignDoc:
        if segment not in self._assign:
            self._assign[segment] = self.lib.assignments(self.segments[segment]).model_copy(deep=True)
        return self._assign[segment]

    def segment_faces(self, segment: str) -> FaceRows:
        """A segment's faces; held for the life of this change (not looked up in the process cache per face)."""
        rows = self._faces.get(segment)
        if rows is None:
            rows = self._faces[segment] = self.lib.segment(self.segments[segment]).faces
        return rows

    def locate(self, face_id: str) -> tuple[str, int]:
        """(segment, row) of a face id; raises DecisionInvalid."""
        job = face_id.split(":", 1)[0]
        for ref in self.segments.values():
            if ref.job != job:
                continue
            if ref.id not in self._rows:
                self._rows[ref.id] = {f: n for n, f in enumerate(self.segment_faces(ref.id).column("face"))}
            row = self._rows[ref.id].get(face_id)
            if row is not None:
                return ref.id, row
        raise DecisionInvalid(f"face {face_id} is not in the library", "not_found")

    def person_of(self, segment: str, row: int) -> str | None:
        return self.assignments(segment).person[row]

    def members(self, person_id: str) -> list[Member]:
        pid = self.resolve(person_id)
        if pid not in self._members:
            person = self.people.get(pid)
            self._members[pid] = list(self.lib.members(person.members if person else None).faces)
        return self._members[pid]

    def vectors(self, segment: str, rows: list[int]) -> np.ndarray:
        return self.lib.embedding_rows(self.segments[segment], rows)

    def exemplars(self, person_id: str) -> tuple[list[str], np.ndarray]:
        """The faces (and vectors) that stand for a person now."""
        pid = self.resolve(person_id)
        self._load_shard(shard_of(pid))
        found = self._exemplars.get(pid)
        return found if found is not None else ([], np.zeros((0, self.dim), np.float32))

    @property
    def dim(self) -> int:
        return next((r.dim for r in self.segments.values()), 128)

    def all_exemplars(self) -> tuple[list[str], np.ndarray]:
        """(owner person id per row, vectors) of every person's exemplars, for assigning new faces."""
        for shard in range(SHARDS):
            self._load_shard(f"{shard:02x}")
        owners: list[str] = []
        parts = []
        for pid, (_, matrix) in sorted(self._exemplars.items()):
            if pid in self.people and len(matrix):
                owners += [pid] * len(matrix)
                parts.append(matrix)
        return owners, np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def _load_shard(self, shard: str) -> None:
        if shard in self._loaded_shards:
            return
        self._loaded_shards.add(shard)
        key = self._shard_keys.get(shard)
        if key is None:
            return
        meta, matrix = self.lib.packed(key)
        start = 0
        for pid, faces in zip(meta["owners"], meta["faces"], strict=True):
            self._exemplars.setdefault(pid, (list(faces), matrix[start : start + len(faces)].copy()))
            start += len(faces)

    # -- the primitives ----------------------------------------------------------------------------
    def place(
        self,
        segment: str,
        row: int,
        to: str | None,
        *,
        confirmed: bool = False,
        reject: bool = False,
        vector: np.ndarray | None = None,
    ) -> None:
        """Make face (segment, row) belong to person `to` (None: unassigned).

        `reject` records that it is not the person it leaves (it never joins them again); `confirmed` that a
        user said it is `to`. `vector` saves a read when the caller has the face's embedding.
        """
        doc = self.assignments(segment)
        old = doc.person[row]
        to = self.resolve(to) if to else None
        face = self.segment_faces(segment)[row]
        if old == to:
            if to and confirmed and row not in doc.confirmed:
                doc.confirmed.append(row)
                self._set_confirmed(to, face.face)
                self._dirty_segments.add(segment)
            return
        if old:
            self._drop_member(old, face.face)
            if reject:
                doc.rejected.setdefault(str(row), [])
                if old not in doc.rejected[str(row)]:
                    doc.rejected[str(row)].append(old)
        if row in doc.confirmed and (not to or not confirmed):
            doc.confirmed.remove(row)
        if to:
            if to not in self.people:
                raise DecisionInvalid(f"person {to} not found")
            self.members(to).append(Member.of(segment, row, face, confirmed))
            if confirmed and row not in doc.confirmed:
                doc.confirmed.append(row)
            if str(row) in doc.rejected and confirmed:
                doc.rejected[str(row)] = [p for p in doc.rejected[str(row)] if p != to]
            self._candidates.setdefault(to, []).append(
                (face.face, vector if vector is not None else self.vectors(segment, [row])[0])
            )
            self._dirty_people.add(to)
        doc.person[row] = to
        self._dirty_segments.add(segment)

    def rejected(self, segment: str, row: int) -> list[str]:
        return self.assignments(segment).rejected.get(str(row), [])

    def new_person(
        self,
        faces: list[tuple[str, int]],
        vectors: np.ndarray | None = None,
        *,
        person_id: str | None = None,
        name: str | None = None,
    ) -> str:
        """A person made of these (segment, row) faces."""
        ids = [self.segment_faces(s)[r].face for s, r in faces]
        pid = person_id or person_id_for(min(ids), set(self.people) | set(self.merged))
        self.people[pid] = Person(id=pid, name=name)
        self._members[pid] = []
        self._dirty_people.add(pid)
        for n, (segment, row) in enumerate(faces):
            self.place(segment, row, pid, confirmed=name is not None, vector=None if vectors is None else vectors[n])
        return pid

    def rename(self, person_id: str, name: str | None) -> None:
        """Name a person (a decision about them: their faces are confirmed, see `reviewed`)."""
        person = self.person(person_id)
        person.name = (name or "").strip() or None
        self.reviewed(person.id)

    def hide(self, person_id: str, hidden: bool) -> None:
        """Hide (or show) a person; like every decision about a person, it confirms the faces they show."""
        person = self.person(person_id)
        person.hidden = hidden
        self.reviewed(person.id)

    def set_cover(self, person_id: str, face_id: str | None) -> None:
        person = self.person(person_id)
        if face_id is not None and face_id not in {m.face for m in self.members(person.id)}:
            raise DecisionInvalid(f"face {face_id} is not one of {person.id}'s faces")
        person.cover = face_id
        self.reviewed(person.id)

    def reviewed(self, person_id: str) -> None:
        """A user looked at this person to decide something: the faces they show now are confirmed, so a
        re-cluster keeps them together under this id (an unconfirmed rest could regroup under a new id)."""
        self.confirm(person_id, [m.face for m in self.members(person_id)])
        self._dirty_people.add(self.resolve(person_id))

    def confirm(self, person_id: str, face_ids: list[str]) -> None:
        pid = self.person(person_id).id
        mine = {m.face: m for m in self.members(pid)}
        for face_id in face_ids:
            if face_id in mine:
                segment, row = mine[face_id].segment, mine[face_id].row
                self.place(segment, row, pid, confirmed=True)

    def merge(self, into: str, other: str) -> None:
        """`other` is the same person as `into`: all faces of both become confirmed as `into`."""
        a, b = self.person(into), self.person(other)
        if a.id == b.id:
            return
        moved = self.members(b.id)
        for m in list(moved):
            doc = self.assignments(m.segment)
            doc.person[m.row] = a.id
            if m.row not in doc.confirmed:
                doc.confirmed.append(m.row)
            self._dirty_segments.add(m.segment)
        self.members(a.id).extend(m.model_copy(update={"confirmed": True}) for m in moved)
        self.confirm(a.id, [m.face for m in self.members(a.id)])
        faces, matrix = self.exemplars(b.id)
        self._candidates.setdefault(a.id, []).extend(zip(faces, matrix, strict=True))
        self._exemplars.pop(b.id, None)
        self._dirty_shards.add(shard_of(b.id))
        a.name = a.name or b.name
        a.cover = a.cover or b.cover
        a.hidden = a.hidden and b.hidden
        del self.people[b.id]
        self._members.pop(b.id, None)
        self._dirty_people.discard(b.id)
        self.merged[b.id] = a.id
        self._dirty_people.add(a.id)

    def move_out(self, face_id: str, person_id: str) -> None:
        """ "Not this person": the face leaves them (unassigned) and never joins them again. The user looked at
        this person to say so: the faces that stay are confirmed, so a re-cluster keeps them together and keeps
        the face out (an unconfirmed rest could regroup around the face under a new id)."""
        segment, row = self.locate(face_id)
        pid = self.person(person_id).id
        if self.person_of(segment, row) != pid:
            raise DecisionInvalid(f"face {face_id} is not one of {pid}'s faces")
        self.place(segment, row, None, reject=True)
        self.reviewed(pid)

    def assign_face(self, face_id: str, person_id: str) -> None:
        """ "This is that person": the face joins them, confirmed (it leaves whoever had it)."""
        segment, row = self.locate(face_id)
        pid = self.person(person_id).id
        photo = self.segment_faces(segment)[row].photo
        if any(m.photo == photo and m.face != face_id for m in self.members(pid)):
            raise DecisionInvalid(
                f"{pid} already has a face in that photo: one photo never shows a person twice", "conflict"
            )
        self.reviewed(pid)
        self.place(segment, row, pid, confirmed=True)

    def adopt(self, adapter: str | None) -> None:
        """Compare faces through this adapter from now on (None: the raw vectors). Nothing stored changes: vectors
        stay raw and the adapter applies when faces are compared."""
        if adapter is not None and not adapter.startswith(keys.library_adapters(self.lib.tenant)):
            raise DecisionInvalid(f"{adapter} is not one of this library's adapters", "not_found")
        self.adapter = adapter

    def reassign(self, target: dict[tuple[str, int], str | None], vectors: dict[str, np.ndarray]) -> set[str]:
        """Set who every listed face is at once (a re-cluster's result); returns the people that changed.

        A confirmed face keeps its confirmation only while it stays with the same person. `vectors` maps face
        ids to embeddings, so exemplars are chosen again without reading them back.
        """
        changed: set[str] = set()
        by_person: dict[str, list[Member]] = {}
        for (segment, row), pid in target.items():
            doc = self.assignments(segment)
            old = doc.person[row]
            if old != pid:
                doc.person[row] = pid
                if row in doc.confirmed:
                    doc.confirmed.remove(row)
                self._dirty_segments.add(segment)
                changed.update(p for p in (old, pid) if p)
            if pid:
                face = self.segment_faces(segment)[row]
                by_person.setdefault(pid, []).append(Member.of(segment, row, face, row in doc.confirmed))
        for pid in changed:
            if pid not in self.people:
                self.people[pid] = Person(id=pid)
            members = by_person.get(pid, [])
            self._members[pid] = members
            self._exemplars.pop(pid, None)
            self._load_shard(shard_of(pid))
            self._exemplars.pop(pid, None)
            self._candidates[pid] = [(m.face, vectors[m.face]) for m in members if m.face in vectors]
            self._dirty_people.add(pid)
        return changed

    def remove_person(self, person_id: str) -> None:
        """Drop a person with no faces and no name (nothing a user said is lost)."""
        person = self.people.pop(person_id)
        self._members.pop(person.id, None)
        self._exemplars.pop(person.id, None)
        self._dirty_shards.add(shard_of(person.id))
        self._dirty_people.discard(person.id)

    def _drop_member(self, person_id: str, face_id: str) -> None:
        members = self.members(person_id)
        self._members[person_id] = [m for m in members if m.face != face_id]
        faces, matrix = self.exemplars(person_id)
        if face_id in faces:
            keep = [n for n, f in enumerate(faces) if f != face_id]
            self._exemplars[person_id] = ([faces[n] for n in keep], matrix[keep])
            self._dirty_shards.add(shard_of(person_id))
        self._candidates[person_id] = [c for c in self._candidates.get(person_id, []) if c[0] != face_id]
        person = self.people.get(person_id)
        if person is not None and person.cover == face_id:
            person.cover = None
        self._dirty_people.add(person_id)

    def _set_confirmed(self, person_id: str, face_id: str) -> None:
        self._members[person_id] = [
            m.model_copy(update={"confirmed": True}) if m.face == face_id else m for m in self.members(person_id)
        ]
        self._dirty_people.add(person_id)

    # -- writing the next version ------------------------------------------------------------------
    def finish(self, writer: str) -> Head:
        for pid in sorted(self._dirty_people):
            if pid in self.people and not self.members(pid) and not self.people[pid].name:
                self.remove_person(pid)
        for pid in sorted(self._dirty_people | set(self._candidates)):
            if pid in self.people:
                self._refresh_exemplars(pid)
        for pid in sorted(self._dirty_people):
            if pid in self.people:
                self._write_person(pid)
        for segment in sorted(self._dirty_segments):
            self._write_assignments(segment)
        for shard in sorted(self._dirty_shards):
            self._write_shard(shard)
        people = sorted(self.people.values(), key=lambda p: (p.name is None, -p.faces, p.id))
        doc_key = self.lib.put_doc(
            keys.library_object(self.lib.tenant, self.version, "people.json.gz"),
            PeopleDoc(people=people, merged=self.merged, exemplars=self._shard_keys),
        )
        live = set(self.people)
        suggestions = [s for s in self.suggestions if s.a in live and s.b in live]
        return Head(
            version=self.version,
            writer=writer,
            space=self.space,
            segments=list(self.segments.values()),
            people=doc_key,
            suggestions=suggestions,
            decisions_applied=self.applied[-RECENT_DECISIONS:],
            stats=self.stats(),
            adapter=self.adapter,
        )

    def stats(self) -> dict[str, int]:
        for segment in self._dirty_segments:
            ref, doc = self.segments[segment], self._assign[segment]
            ref.unassigned, ref.skipped = doc.unassigned(), len(doc.skip)
        return {
            "faces": sum(r.faces - r.skipped for r in self.segments.values()),
            "photos": sum(r.photos if r.new_photos is None else r.new_photos for r in self.segments.values()),
            "people": len(self.people),
            "named": sum(1 for p in self.people.values() if p.name),
            "hidden": sum(1 for p in self.people.values() if p.hidden),
            "unassigned": sum(r.unassigned for r in self.segments.values()),
        }

    def refresh_exemplars(self, person_ids: set[str]) -> None:
        """Choose these people's exemplars now (from the faces they gained), so later comparisons in the same
        change see them (otherwise that happens in `finish`)."""
        for pid in sorted(person_ids):
            if pid in self.people:
                self._refresh_exemplars(pid)

    def _refresh_exemplars(self, pid: str) -> None:
        faces, matrix = self.exemplars(pid)
        present = {m.face for m in self.members(pid)}
        confirmed = {m.face for m in self.members(pid) if m.confirmed}
        pool = [(f, v) for f, v in zip(faces, matrix, strict=True) if f in present]
        seen = {f for f, _ in pool}
        pool += [(f, v) for f, v in self._candidates.pop(pid, []) if f in present and f not in seen]
        if not pool and present:  # every exemplar left: read a few of the person's faces again
            sample = self.members(pid)[:MAX_EXEMPLARS]
            for m in sample:
                pool.append((m.face, self.vectors(m.segment, [m.row])[0]))
        if not pool:
            self._exemplars.pop(pid, None)
        else:
            vecs = np.stack([v for _, v in pool]).astype(np.float32)
            chosen = choose_exemplars(vecs, np.array([f in confirmed for f, _ in pool]))
            self._exemplars[pid] = ([pool[i][0] for i in chosen], vecs[chosen])
        self._dirty_shards.add(shard_of(pid))

    def _write_person(self, pid: str) -> None:
        person = self.people[pid]
        members = sorted(self.members(pid), key=lambda m: (-(m.taken or 0.0), m.face))
        self._members[pid] = members
        person.faces = len(members)
        person.photos = len({m.photo for m in members})
        person.latest = max((m.taken for m in members if m.taken), default=None)
        best = max(
            members, key=lambda m: (m.score * min(m.box[2] - m.box[0], m.box[3] - m.box[1]), m.face), default=None
        )
        person.auto_cover = best.face if best else None
        if person.cover and person.cover not in {m.face for m in members}:
            person.cover = None
        person.updated_at = self._now()
        person.members = self.lib.put_doc(
            keys.library_object(self.lib.tenant, self.version, f"members/{pid}.json.gz"), MembersDoc(faces=members)
        )

    def _write_assignments(self, segment: str) -> None:
        ref = self.segments[segment]
        ref.unassigned = self._assign[segment].unassigned()
        ref.skipped = len(self._assign[segment].skip)
        ref.assign = self.lib.put_doc(
            keys.library_object(self.lib.tenant, self.version, f"assign/{segment}.json.gz"), self._assign[segment]
        )

    def _write_shard(self, shard: str) -> None:
        self._load_shard(shard)
        owners = sorted(pid for pid in self._exemplars if shard_of(pid) == shard and pid in self.people)
        faces = [self._exemplars[pid][0] for pid in owners]
        parts = [self._exemplars[pid][1] for pid in owners]
        matrix = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        key = keys.library_object(self.lib.tenant, self.version, f"exemplars/{shard}.bin")
        self.lib.store.put_bytes(key, pack({"owners": owners, "faces": faces}, matrix))
        self._shard_keys[shard] = key

    @staticmethod
    def _now() -> float:
        import time

        return time.time()
