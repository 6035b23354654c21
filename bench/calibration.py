"""Choosing and judging a distance threshold on labelled pairs: accuracy, the threshold of best accuracy,
ROC AUC, the LFW k-fold protocol, and LFW's ``pairs.txt``.

Benchmark code: `bench.lfw` and `bench.search` measure with it, and the figures it gives are what
`workers/faces/spaces.py` records for each embedding space (production reads only those figures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold (same person when distance < threshold) and its accuracy on the pairs it was chosen on."""

    threshold: float
    accuracy: float


@dataclass(frozen=True)
class FoldReport:
    """The k-fold protocol: per fold the threshold chosen on the other folds and the accuracy on this one."""

    thresholds: tuple[float, ...]
    accuracies: tuple[float, ...]
    auc: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


def _checked(distances: Iterable[float], same: Iterable[bool]) -> tuple[np.ndarray, np.ndarray]:
    d, s = np.asarray(distances, np.float64).reshape(-1), np.asarray(same, bool).reshape(-1)
    if len(d) != len(s) or not len(d):
        raise ValueError(f"need as many labels as distances, and some: {len(d)} distances, {len(s)} labels")
    return d, s


def accuracy_at(distances: Iterable[float], same: Iterable[bool], threshold: float) -> float:
    """Fraction of pairs judged right when "same" means distance < threshold."""
    d, s = _checked(distances, same)
    return float(np.mean((d < threshold) == s))


def choose_threshold(distances: Iterable[float], same: Iterable[bool]) -> ThresholdChoice:
    """The threshold of highest accuracy: midway between two sorted distances, the middle one of tied best.

    Raises ValueError on empty or mismatched input.
    """
    d, s = _checked(distances, same)
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    # correct[k] = accuracy when exactly the k smallest distances are called "same"
    same_below = np.concatenate([[0], np.cumsum(s)])
    diff_below = np.concatenate([[0], np.cumsum(~s)])
    correct = same_below + (diff_below[-1] - diff_below)
    # only cut between distinct values (and before the first / after the last)
    valid = np.ones(len(d) + 1, bool)
    valid[1:-1] = d[1:] > d[:-1]
    best = np.flatnonzero(valid & (correct == correct[valid].max()))
    k = int(best[len(best) // 2])
    if k == 0:
        threshold = float(d[0]) - 1e-6
    elif k == len(d):
        threshold = float(d[-1]) + 1e-6
    else:
        threshold = float(d[k - 1] + d[k]) / 2
    return ThresholdChoice(threshold=threshold, accuracy=float(correct[k]) / len(d))


def roc_auc(distances: Iterable[float], same: Iterable[bool]) -> float:
    """Area under the ROC curve: the chance a random same pair is closer than a random different pair (ties 1/2).

    Raises ValueError unless both kinds of pairs are present.
    """
    d, s = _checked(distances, same)
    n_same, n_diff = int(s.sum()), int((~s).sum())
    if not n_same or not n_diff:
        raise ValueError("AUC needs both same and different pairs")
    _, inverse, counts = np.unique(d, return_inverse=True, return_counts=True)
    # average rank (1-based) of each distinct value, so ties count one half
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2)[inverse]
    # Mann-Whitney U of the different pairs' (larger) distances
    u = ranks[~s].sum() - n_diff * (n_diff + 1) / 2
    return float(u / (n_same * n_diff))


def kfold_verification(distances: Iterable[float], same: Iterable[bool], folds: Iterable[int]) -> FoldReport:
    """The LFW protocol: for each fold, choose the threshold on all other folds and measure accuracy on it."""
    d, s = _checked(distances, same)
    f = np.asarray(folds).reshape(-1)
    if len(f) != len(d):
        raise ValueError(f"{len(f)} fold numbers for {len(d)} pairs")
    thresholds, accuracies = [], []
    for fold in np.unique(f):
        test = f == fold
        choice = choose_threshold(d[~test], s[~test])
        thresholds.append(choice.threshold)
        accuracies.append(accuracy_at(d[test], s[test], choice.threshold))
    return FoldReport(thresholds=tuple(thresholds), accuracies=tuple(accuracies), auc=roc_auc(d, s))


@dataclass(frozen=True)
class Pair:
    """One line of an LFW ``pairs.txt``: two images (person name, 1-based image number) and the fold."""

    name_a: str
    image_a: int
    name_b: str
    image_b: int
    fold: int

    @property
    def same(self) -> bool:
        return self.name_a == self.name_b

    def files(self) -> tuple[str, str]:
        """Paths relative to the images folder: ``Name/Name_0001.jpg``."""
        return (
            f"{self.name_a}/{self.name_a}_{self.image_a:04d}.jpg",
            f"{self.name_b}/{self.name_b}_{self.image_b:04d}.jpg",
        )


def read_lfw_pairs(text: str, limit: int | None = None) -> list[Pair]:
    """Parse an LFW ``pairs.txt`` (header ``folds<TAB>n``, then per fold n same and n different lines);
    `limit` keeps about that many, the first ones of every fold and both kinds alike.

    Raises ValueError on a malformed file.
    """
    lines = [line.split() for line in text.strip().splitlines()]
    try:
        folds, per_kind = int(lines[0][0]), int(lines[0][1])
        pairs = []
        for k, fields in enumerate(lines[1:]):
            fold = k // (2 * per_kind)
            if len(fields) == 3:
                pairs.append(Pair(fields[0], int(fields[1]), fields[0], int(fields[2]), fold))
            elif len(fields) == 4:
                pairs.append(Pair(fields[0], int(fields[1]), fields[2], int(fields[3]), fold))
            else:
                raise ValueError(f"line {k + 2}: expected 3 or 4 fields, got {len(fields)}")
    except (IndexError, ValueError) as error:
        raise ValueError(f"not an LFW pairs file: {error}") from error
    if len(pairs) != folds * 2 * per_kind:
        raise ValueError(f"expected {folds * 2 * per_kind} pairs, found {len(pairs)}")
    keep = per_kind if limit is None else max(1, min(per_kind, limit // (2 * folds)))
    return [p for k, p in enumerate(pairs) if k % per_kind < keep]


def pair_distances(pairs: Sequence[Pair], vector: Callable[[str], np.ndarray]) -> np.ndarray:
    """The Euclidean distance (float64) between the two images of each pair; `vector(path)` is an image's embedding."""
    a = np.stack([vector(p.files()[0]) for p in pairs]).astype(np.float64)
    b = np.stack([vector(p.files()[1]) for p in pairs]).astype(np.float64)
    return np.asarray(np.linalg.norm(a - b, axis=1))
