"""Reading a library's faces for questions: search by a vector, look a face up by id, all faces for
identification. Segment by segment, so memory stays bounded by the largest segment and the answer."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from storage.library import Head, LibraryStore
from storage.library.documents import SegmentFace, SegmentRef, resolve_merged
from workers.faces.spaces import space_of
from workers.library.transform import Transform, transform_for


class NotInLibrary(LookupError):
    """A face id that no segment of the library holds."""


@dataclass
class LibraryFaces:
    """One library version and what it knows about faces and people."""

    lib: LibraryStore
    head: Head

    @classmethod
    def open(cls, lib: LibraryStore) -> LibraryFaces | None:
        head = lib.head()
        return cls(lib, head) if head is not None and head.segments else None

    @property
    def space(self) -> str | None:
        return self.head.space

    @property
    def transform(self) -> Transform:
        """How this library compares faces (through its adopted head, if any)."""
        return transform_for(self.lib, self.head.adapter)

    def names(self) -> dict[str, str | None]:
        return {p.id: p.name for p in self.lib.people(self.head).people}

    def segments(self, jobs: set[str] | None = None) -> Iterator[tuple[SegmentRef, list[int]]]:
        """Each segment (of `jobs`, when given) with the rows that are part of the library."""
        for ref in self.head.segments:
            if jobs is not None and ref.job not in jobs:
                continue
            skip = set(self.lib.assignments(ref).skip)
            yield ref, [r for r in range(ref.faces) if r not in skip]

    def face(self, face_id: str) -> tuple[np.ndarray, SegmentFace, str | None]:
        """(vector, row, person id) of a face id; raises NotInLibrary."""
        job = face_id.split(":", 1)[0]
        for ref, rows in self.segments({job}):
            faces = self.lib.segment(ref).faces
            for r in rows:
                if faces[r].face == face_id:
                    return self.lib.embedding_rows(ref, [r])[0], faces[r], self.lib.assignments(ref).person[r]
        raise NotInLibrary(face_id)

    def search(self, query: np.ndarray, k: int, jobs: set[str] | None = None) -> list[dict[str, Any]]:
        """The k nearest faces to a raw `query` vector (exact; of `jobs` when given), nearest first, with person
        and name. Distances are the library's: through its adopted head, if any."""
        best: list[tuple[float, str, int]] = []  # min-heap of negated distances: the k nearest so far
        transform = self.transform
        query = transform(query[None, :])[0]
        for ref, rows in self.segments(jobs):
            if not rows:
                continue
            vectors = transform(self.lib.embeddings(ref)[rows])
            d = np.sqrt(np.maximum(((vectors - query[None, :]) ** 2).sum(axis=1), 0.0))
            for n in np.argsort(d)[:k]:
                item = (-float(d[n]), ref.id, rows[int(n)])
                if len(best) < k:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
        names = self.names()
        refs = {r.id: r for r in self.head.segments}
        merged = self.lib.people(self.head).merged
        out = []
        for neg, segment, row in sorted(best, key=lambda b: -b[0]):
            ref = refs[segment]
            face = self.lib.segment(ref).faces[row]
            person = self.lib.assignments(ref).person[row]
            person = resolve_merged(merged, person) if person else None
            out.append(
                {
                    "face": face.face,
                    "distance": round(-neg, 4),
                    "job": face.job,
                    "item": face.item,
                    "photo": face.photo_key,
                    "photo_name": face.name,
                    "box": list(face.box),
                    "thumb": face.thumb,
                    "person": person,
                    "name": names.get(person) if person else None,
                }
            )
        return out

    def all(self, jobs: set[str] | None = None) -> tuple[list[SegmentFace], np.ndarray]:
        """Every face (of `jobs`) and its vector, for identification (one question over all faces)."""
        faces: list[SegmentFace] = []
        parts = []
        for ref, rows in self.segments(jobs):
            doc = self.lib.segment(ref)
            faces += [doc.faces[r] for r in rows]
            parts.append(self.lib.embeddings(ref)[rows])
        dim = self.head.segments[0].dim
        return faces, np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def fits_library(model: str, library_space: str | None) -> bool:
    """Whether vectors of `model` may be compared with a library of `library_space` (an empty one takes any)."""
    return library_space is None or space_of(model).id == library_space
