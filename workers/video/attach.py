"""Where video tracks meet the tenant's library of people.

A track with a clear match joins that person; every other track waits as unassigned. Tracks never
seed new people: a track's embedding comes from a few frames of a moving video, often small or
blurred, so forming people stays the library's job, from photos and from the user's decisions.

The library (per tenant, in object storage) is being built in `workers/library/`. Until it lands,
`attach_tracks` leaves every track unassigned; `match_tracks` is the rule it will apply, so the
benchmark can already grade it against enrolled people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workers.context import WorkerContext


@dataclass(frozen=True)
class TrackVector:
    """What the library needs of one track: its id within the job, its embedding and how it was made."""

    track_id: str
    embedding: np.ndarray
    crops: int  # how many crops were averaged into it
    quality: float  # of its best crop (0-1): the library may require more before trusting a track


@dataclass(frozen=True)
class Attachment:
    person_id: str
    name: str | None
    distance: float


def match_tracks(tracks: Sequence[np.ndarray], people: np.ndarray, person_ids: Sequence[str], *,
                 assign: float, margin: float) -> list[tuple[str, float] | None]:
    """For each track, (person id, distance) when its nearest person is closer than `assign` and closer than
    every other person by `margin`; None when no match is clear. `people` holds one or more vectors per
    person (rows aligned with `person_ids`); a person's distance is to its nearest vector."""
    if not len(tracks) or not len(people):
        return [None] * len(tracks)
    x = np.asarray(tracks, dtype=np.float32)
    d = np.linalg.norm(x[:, None, :] - np.asarray(people, dtype=np.float32)[None], axis=-1)
    names = sorted(set(person_ids))
    column = {p: i for i, p in enumerate(names)}
    per_person = np.full((len(x), len(names)), np.inf)
    for j, p in enumerate(person_ids):
        per_person[:, column[p]] = np.minimum(per_person[:, column[p]], d[:, j])
    out: list[tuple[str, float] | None] = []
    for row in per_person:
        order = np.argsort(row)
        best = float(row[order[0]])
        second = float(row[order[1]]) if len(order) > 1 else np.inf
        out.append((names[order[0]], best) if best < assign and second - best >= margin else None)
    return out


def attach_tracks(ctx: WorkerContext, tenant: str, model_id: str,
                  tracks: Sequence[TrackVector]) -> list[Attachment | None]:
    """Attach tracks to the tenant's people (None: the track waits as unassigned).

    Not wired yet: the library package is not on this branch, so every track is unassigned. When it is,
    this loads the tenant's people in `model_id`'s embedding space, applies `match_tracks` with the space's
    `assign` / `assign_margin` thresholds (workers.faces.spaces), and records the matches in the library.
    """
    return [None] * len(tracks)
