"""Identify faces against a gallery of people enrolled from one photo or a few (one-shot enrolment).

A person's distance to a query is the distance to the mean of their enrolled embeddings (``"mean"``, the
default) or the smallest distance over them (``"min"``); with one photo they agree. Measured on lfw-dev
(`bench/search.py`), "mean" is better: with two enrolled photos per person top-1 96.5 % against 95.8 %, and
where 2 % of strangers get a name it names 80 % of queries right against 67 % (three photos: 89 % against
74 %), at about the same threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from workers.people.calibration import IDENTIFY_MIN_MARGIN, IDENTIFY_THRESHOLD
from workers.people.search import as_matrix, distances

Prototype = Literal["min", "mean"]


@dataclass(frozen=True)
class Gallery:
    """Enrolled embeddings: row i of `embeddings` belongs to ``people[owners[i]]``; people sorted by name."""

    people: tuple[str, ...]
    owners: np.ndarray
    embeddings: np.ndarray

    @classmethod
    def enrol(cls, enrolment: Mapping[str, np.ndarray | Sequence[np.ndarray]]) -> Gallery:
        """A gallery from person name -> one embedding or several. Raises ValueError on empty or mixed shapes."""
        people = tuple(sorted(enrolment))
        blocks = [as_matrix(np.asarray(enrolment[name], np.float32)) for name in people]
        if any(len(b) == 0 for b in blocks):
            raise ValueError("every enrolled person needs at least one embedding")
        if len({b.shape[1] for b in blocks}) > 1:
            raise ValueError("enrolled embeddings have different dimensions")
        owners = np.concatenate([np.full(len(b), k) for k, b in enumerate(blocks)]) if blocks else np.zeros(0, int)
        embeddings = np.concatenate(blocks) if blocks else np.zeros((0, 128), np.float32)
        return cls(people=people, owners=owners, embeddings=embeddings)

    def add(self, name: str, embeddings: np.ndarray) -> Gallery:
        """A new gallery with `embeddings` enrolled for `name` as well (added to what `name` has)."""
        enrolment: dict[str, list[np.ndarray]] = {p: [] for p in self.people}
        for row, owner in zip(self.embeddings, self.owners.tolist(), strict=True):
            enrolment[self.people[owner]].append(row)
        enrolment.setdefault(name, []).extend(as_matrix(embeddings))
        return Gallery.enrol({p: np.stack(rows) for p, rows in enrolment.items()})

    def __len__(self) -> int:
        return len(self.people)


@dataclass(frozen=True)
class Match:
    """The answer for one query, with what explains it.

    `person` is None for "unknown" (nearest person at or beyond the threshold); `nearest` names the closest
    person regardless; `margin` is how much farther the runner-up is (inf without one).
    """

    person: str | None
    nearest: str | None
    distance: float
    runner_up: str | None
    runner_up_distance: float

    @property
    def margin(self) -> float:
        return self.runner_up_distance - self.distance


def person_distances(queries: np.ndarray, gallery: Gallery, prototype: Prototype = "mean") -> np.ndarray:
    """(n_queries, n_people) distances from each query to each enrolled person."""
    if prototype not in ("min", "mean"):
        raise ValueError(f"prototype must be 'min' or 'mean', got {prototype!r}")
    q = as_matrix(queries)
    if not len(gallery):
        return np.zeros((len(q), 0), np.float32)
    if prototype == "mean":
        counts = np.bincount(gallery.owners, minlength=len(gallery))
        means = np.zeros((len(gallery), gallery.embeddings.shape[1]))
        np.add.at(means, gallery.owners, gallery.embeddings)
        return distances(q, (means / counts[:, None]).astype(np.float32))
    order = np.argsort(gallery.owners, kind="stable")
    starts = np.searchsorted(gallery.owners[order], np.arange(len(gallery)))
    return np.minimum.reduceat(distances(q, gallery.embeddings[order]), starts, axis=1)


def identify(
    queries: np.ndarray,
    gallery: Gallery,
    threshold: float = IDENTIFY_THRESHOLD,
    *,
    prototype: Prototype = "mean",
    min_margin: float = IDENTIFY_MIN_MARGIN,
) -> list[Match]:
    """Name each query row after the nearest enrolled person, or None when that person is `threshold` or
    farther away, or when the runner-up is within `min_margin` of them (an ambiguous answer)."""
    d = person_distances(queries, gallery, prototype)
    matches = []
    for row in d:
        if not len(row):
            matches.append(Match(None, None, float("inf"), None, float("inf")))
            continue
        order = np.argsort(row, kind="stable")[:2]
        best, best_d = gallery.people[order[0]], float(row[order[0]])
        second, second_d = (gallery.people[order[1]], float(row[order[1]])) if len(order) > 1 else (None, float("inf"))
        known = best_d < threshold and second_d - best_d >= min_margin
        matches.append(Match(best if known else None, best, best_d, second, second_d))
    return matches
