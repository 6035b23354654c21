"""The library's person index: scores under a limit are exact when people are ruled out by their centres."""

from __future__ import annotations

import numpy as np

from workers.faces.spaces import Thresholds
from workers.library.fold import PersonIndex, choose


def _index(rng: np.random.Generator, people: int = 300, dim: int = 64) -> tuple[PersonIndex, np.ndarray]:
    centres = rng.normal(size=(people, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shift = rng.normal(size=(20, dim)) * 0.45 / np.sqrt(dim)
    centres[1:40:2] = centres[0:40:2] + shift  # twenty pairs of near people: one person split in two
    sizes = rng.integers(1, 9, size=people)  # one to eight exemplars, some people with a single one
    spread = rng.uniform(0.05, 0.3, size=people) / np.sqrt(dim)  # tight and loose people (radius ~0.05-0.3)
    sizes[40:60] = 6
    parts = [c + rng.normal(scale=s, size=(n, dim)) for c, n, s in zip(centres, sizes, spread, strict=True)]
    for p in range(40, 60):  # people seen two ways (young and old): exemplars in two groups 1.0 apart
        way = rng.normal(size=dim) * 0.5 / np.sqrt(dim)
        parts[p][::2] += way
        parts[p][1::2] -= way
        centres[p] += way  # queries of them look like the first group, far from the middle of the two
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    index = PersonIndex(
        [f"p{n}" for n in range(people)], starts.astype(np.int64), np.concatenate(parts).astype(np.float32)
    )
    return index, centres


def test_scores_under_a_limit_are_the_exact_scores() -> None:
    rng = np.random.default_rng(7)
    index, centres = _index(rng)
    owners = np.concatenate([rng.integers(0, len(centres), size=400), rng.integers(40, 60, size=100)])
    queries = (centres[owners] + rng.normal(scale=0.3 / 8, size=(500, centres.shape[1]))).astype(np.float32)
    exact = index.scores(queries)
    for limit in (0.3, 0.6, 0.9):
        pruned = index.scores(queries, limit=limit)
        under = exact < limit
        assert under.sum() > 20  # the limit matters on this data
        # nothing under the limit is lost (float32 distances: the root of a difference, ~3e-4 near 0)
        np.testing.assert_allclose(pruned[under], exact[under], atol=1e-3)
        assert np.isinf(pruned[~under]).mean() > 0.5  # and most of the rest was never computed
        finite = np.isfinite(pruned)
        np.testing.assert_allclose(pruned[finite], exact[finite], atol=1e-3)  # float32 distances: sqrt of a difference
    t = Thresholds(verify=1.0, cluster=0.6, identify=0.6, identify_margin=0.04, assign=0.6, assign_margin=0.05)
    banned = [set() for _ in queries]
    assert choose(index.scores(queries, limit=t.assign + t.assign_margin), index.people, banned, t) == choose(
        exact, index.people, banned, t
    )  # every face goes where it went without the shortcut


def test_a_persons_nearest_people_are_found_without_comparing_everyone() -> None:
    rng = np.random.default_rng(11)
    index, _ = _index(rng, people=200)
    for person in (0, 1, 6, 17, 199):
        lo, n = int(index.starts[person]), int(index.counts[person])
        exact = index.scores(index.vectors[lo : lo + n]).min(axis=0)
        got = index.person_scores(person, limit=0.6)
        under = exact < 0.6
        np.testing.assert_allclose(got[under], exact[under], atol=1e-3)  # float32 distances: sqrt of a difference
        finite = np.isfinite(got)
        np.testing.assert_allclose(got[finite], exact[finite], atol=1e-3)  # float32 distances: sqrt of a difference
        assert finite[person] and finite.sum() < len(got) / 2  # themselves, and few of the others
        if person < 40:
            assert under[person ^ 1]  # the other half of their pair is found
