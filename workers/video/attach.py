"""Where video tracks meet the tenant's library of people.

A track with a clear match joins that person; every other track waits as unassigned. Tracks never
seed new people: a track's embedding comes from a few frames of a moving video, often small or
blurred, so forming people stays the library's job, from photos and from the user's decisions.

`attach_tracks` reads the library's current version (never writes it): it scores each track against
every person's exemplars and applies the fold's own rule (`workers.library.fold.choose`: nearest person
under the space's `assign` threshold, the runner-up farther by `assign_margin`). The match is recorded
in the video's tracks table; the library itself does not hold video tracks yet (see docs/video.md).
`record_appearances` then writes, per person found, a `PersonVideo` document (the video, when they are
on screen) under the library's `videos/<person>/` prefix, which the person's page lists.
`match_tracks` is the same rule on plain vectors, for benchmarks with enrolled people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

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


def match_tracks(
    tracks: Sequence[np.ndarray], people: np.ndarray, person_ids: Sequence[str], *, assign: float, margin: float
) -> list[tuple[str, float] | None]:
    """For each track, (person id, distance) when its nearest person is closer than `assign` and closer than
    every other person by `margin`; None when no match is clear. `people` holds one or more vectors per
    person (rows aligned with `person_ids`); a track's distance to a person is the mean of its two nearest
    vectors of that person (the nearest alone when there is one), as the library's fold scores faces."""
    if not len(tracks) or not len(people):
        return [None] * len(tracks)
    x = np.asarray(tracks, dtype=np.float32)
    d = cdist(x, np.asarray(people, dtype=np.float32))
    names = sorted(set(person_ids))
    per_person = np.empty((len(x), len(names)))
    for j, p in enumerate(names):
        near = np.sort(d[:, [k for k, q in enumerate(person_ids) if q == p]], axis=1)[:, :2]
        per_person[:, j] = near.mean(axis=1)
    out: list[tuple[str, float] | None] = []
    for row in per_person:
        order = np.argsort(row)
        best = float(row[order[0]])
        second = float(row[order[1]]) if len(order) > 1 else np.inf
        out.append((names[order[0]], best) if best < assign and second - best >= margin else None)
    return out


def attach_tracks(
    ctx: WorkerContext, tenant: str, model_id: str, tracks: Sequence[TrackVector]
) -> list[Attachment | None]:
    """Attach tracks to the tenant's people (None: the track waits as unassigned). Tracks of another
    embedding space than the library's, or a tenant without a library yet, stay unassigned."""
    if not tracks:
        return []
    from storage.library.state import LibraryState
    from workers.faces.spaces import space_of
    from workers.library.fold import PersonIndex, choose
    from workers.library.intake import library

    lib = library(ctx, tenant)
    head = lib.head()
    space = space_of(model_id)
    if head is None or head.space != space.id:
        return [None] * len(tracks)
    state = LibraryState(lib, head)
    people = PersonIndex.of(state)
    if not people.people:
        return [None] * len(tracks)
    vectors = np.stack([np.asarray(t.embedding, dtype=np.float32) for t in tracks])
    scores = people.scores(vectors)
    picks = choose(scores, people.people, [set() for _ in tracks], space.thresholds)
    column = {p: n for n, p in enumerate(people.people)}
    out: list[Attachment | None] = []
    for row, pick in zip(scores, picks, strict=True):
        if pick is None or state.people[pick].hidden:
            out.append(None)
        else:
            out.append(Attachment(pick, state.people[pick].name, float(row[column[pick]])))
    return out


@dataclass(frozen=True)
class Appearance:
    """One track of a video as the person's page shows it."""

    track: int
    ranges: list[tuple[float, float]]
    thumb: str | None  # relative to the tenant


def record_appearances(
    ctx: WorkerContext,
    tenant: str,
    job_id: str,
    item: int,
    name: str,
    video_key: str,
    duration_s: float,
    tracks: Sequence[Appearance],
    attached: Sequence[Attachment | None],
) -> list[str]:
    """One `PersonVideo` per person the video's tracks joined (deterministic keys: a redone item rewrites
    them). Returns the people."""
    from storage import keys
    from storage.library.documents import PersonVideo

    by_person: dict[str, list[tuple[Appearance, Attachment]]] = {}
    for track, person in zip(tracks, attached, strict=True):
        if person is not None:
            by_person.setdefault(person.person_id, []).append((track, person))
    for person_id, found in by_person.items():
        spans = sorted(r for t, _ in found for r in t.ranges)
        closest = min(found, key=lambda f: f[1].distance)
        doc = PersonVideo(
            job=job_id,
            item=item,
            name=name,
            video_key=video_key,
            ranges=spans,
            tracks=[t.track for t, _ in found],
            thumb=closest[0].thumb,
            duration_s=duration_s,
            distance=closest[1].distance,
        )
        ctx.store.put_bytes(
            keys.library_person_video(tenant, person_id, job_id, item),
            doc.model_dump_json().encode(),
            "application/json",
        )
    return sorted(by_person)
