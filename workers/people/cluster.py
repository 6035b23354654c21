"""Cluster faces into people: constrained, deterministic and independent of input order.

Constraints:
- cannot-link: two faces of one photo never share a cluster, nor two faces of any `cannot_link` group;
- must-link: the faces of a `must_link` group stay together (a face whose joining would break a
  cannot-link is left out of the group instead).

Both are handled as "exclusive keys": every face carries the keys of its photo and of its cannot-link
groups, and no cluster may hold a key twice. Must-link groups are merged first into nodes; the algorithms
then only join nodes whose key sets are disjoint, so no repair pass is needed afterwards.

Everything runs on the faces sorted by id, with ties and visiting orders derived from the ids, so the same
faces in any order give identical clusters and ids.

Algorithms:
- ``"average"`` (default): agglomerative average linkage on the sparse graph of pairs closer than
  `threshold` (each face's nearest `max_neighbors` of them), merging while the mean distance between two
  clusters is below it. Candidates are ranked by the mean over their known edges with missing pairs counted
  at `threshold` (a lower bound when the graph holds all pairs), and a candidate's true mean over all its
  face pairs is computed before it merges, so no merge ever breaks the threshold.
- ``"complete"``: the same with the largest distance (every pair of faces closer than `threshold`).
- ``"chinese_whispers"``: label propagation (Biemann 2006, as dlib's ``chinese_whispers_clustering``)
  over the same graph with weights ``1 - d / threshold``, visiting nodes in an order seeded from the ids.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial.distance import pdist, squareform

from workers.people.search import as_matrix, distances, radius_pairs

Algorithm = Literal["average", "complete", "chinese_whispers"]
ALGORITHMS: tuple[Algorithm, ...] = ("average", "complete", "chinese_whispers")

# Beyond this many faces the medoid is approximated by the face nearest the mean (the exact one is quadratic).
_MEDOID_EXACT_MAX = 2048
_CW_MAX_ITERATIONS = 100
# Edges kept per face: far more than any face needs to find its person, few enough that a person with
# thousands of faces does not make the graph quadratic. Average linkage still checks a merge on all pairs.
DEFAULT_MAX_NEIGHBORS = 64


@dataclass(frozen=True)
class Cluster:
    """One cluster: its stable id, member face ids (sorted), medoid face id and number of distinct photos."""

    id: str
    face_ids: tuple[str, ...]
    representative: str
    photo_count: int

    @property
    def size(self) -> int:
        return len(self.face_ids)


def cluster_id(face_id: str) -> str:
    """The id of the cluster whose smallest member face id is `face_id` (stable while that face stays in it)."""
    return "c" + hashlib.sha1(face_id.encode()).hexdigest()[:12]


def cluster_faces(
    embeddings: np.ndarray,
    face_ids: Sequence[str],
    photo_ids: Sequence[str],
    *,
    threshold: float,
    must_link: Sequence[Sequence[str]] = (),
    cannot_link: Sequence[Sequence[str]] = (),
    algorithm: Algorithm = "average",
    min_faces: int = 1,
    max_neighbors: int | None = DEFAULT_MAX_NEIGHBORS,
) -> list[Cluster]:
    """Group faces whose embeddings are within `threshold` into clusters, honouring the constraints.

    `cannot_link` groups: no two faces of a group share a cluster. Clusters smaller than `min_faces` are left
    out unless they hold a must-link face. Unknown face ids in the constraints are ignored. The graph keeps
    each face's `max_neighbors` nearest faces under the threshold (None: all pairs). Clusters come largest
    first, then by id. Raises ValueError on mismatched lengths, duplicate face ids or an unknown algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    x, ids, photos = _sorted_inputs(embeddings, face_ids, photo_ids)
    position = {face: i for i, face in enumerate(ids)}
    keys = _face_keys(photos, cannot_link, position)
    nodes = _must_link_nodes(len(ids), keys, must_link, position)
    node_of = np.empty(len(ids), np.int64)
    for n, members in enumerate(nodes):
        node_of[members] = n
    i, j, d = radius_pairs(x, threshold, max_neighbors=max_neighbors)
    pairs = _node_pairs(node_of[i], node_of[j], d, threshold)
    node_keys = [set().union(*(keys.get(f, ()) for f in members)) for members in nodes]
    if algorithm == "chinese_whispers":
        groups = _chinese_whispers(nodes, node_keys, pairs, ids)
    else:
        groups = _Agglomerative(x, nodes, node_keys, pairs, threshold, algorithm).run()
    linked = {position[f] for group in must_link for f in group if f in position}
    kept = [g for g in groups if len(g) >= min_faces or not linked.isdisjoint(g)]
    clusters = [_make_cluster(x, ids, photos, sorted(g)) for g in kept]
    return sorted(clusters, key=lambda c: (-c.size, c.id))


def _sorted_inputs(
    embeddings: np.ndarray, face_ids: Sequence[str], photo_ids: Sequence[str]
) -> tuple[np.ndarray, list[str], list[str]]:
    x = as_matrix(embeddings)
    if not len(x) == len(face_ids) == len(photo_ids):
        raise ValueError(f"{len(x)} embeddings, {len(face_ids)} face ids and {len(photo_ids)} photo ids")
    if len(set(face_ids)) != len(face_ids):
        raise ValueError("face ids must be unique")
    order = sorted(range(len(face_ids)), key=lambda k: face_ids[k])
    return x[order], [str(face_ids[k]) for k in order], [str(photo_ids[k]) for k in order]


def _face_keys(photos: list[str], cannot_link: Sequence[Sequence[str]], position: dict[str, int]) -> dict[int, set]:
    """Exclusive keys per face (only faces that have any): its photo when shared, its cannot-link groups."""
    keys: dict[int, set] = defaultdict(set)
    by_photo: dict[str, list[int]] = defaultdict(list)
    for face, photo in enumerate(photos):
        by_photo[photo].append(face)
    for photo, members in by_photo.items():
        if len(members) > 1:
            for member in members:
                keys[member].add(("photo", photo))
    for g, group in enumerate(cannot_link):
        for face_id in group:
            if face_id in position:
                keys[position[face_id]].add(("cannot", g))
    return keys


def _must_link_nodes(
    n: int, keys: dict[int, set], must_link: Sequence[Sequence[str]], position: dict[str, int]
) -> list[list[int]]:
    """Faces grouped into nodes by must-link, in sorted order; a face that would break a cannot-link stays alone."""
    parent = list(range(n))
    node_keys: dict[int, set] = {f: set(k) for f, k in keys.items()}

    def find(f: int) -> int:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    groups = sorted(sorted({position[f] for f in group if f in position}) for group in must_link)
    for group in groups:
        for face in group[1:]:
            a, b = find(group[0]), find(face)
            if a == b or not node_keys.get(a, set()).isdisjoint(node_keys.get(b, ())):
                continue
            a, b = min(a, b), max(a, b)
            parent[b] = a
            node_keys.setdefault(a, set()).update(node_keys.pop(b, ()))
    members: dict[int, list[int]] = defaultdict(list)
    for f in range(n):
        members[find(f)].append(f)
    return [members[root] for root in sorted(members)]


@dataclass
class _Pairs:
    """Node pairs (a < b) joined by at least one face pair under the threshold, with edge statistics."""

    a: np.ndarray
    b: np.ndarray
    total: np.ndarray  # sum of distances over the face pairs
    count: np.ndarray  # number of face pairs
    largest: np.ndarray  # largest distance among them
    weight: np.ndarray  # sum of 1 - d / threshold


def _node_pairs(ni: np.ndarray, nj: np.ndarray, d: np.ndarray, threshold: float) -> _Pairs:
    across = ni != nj
    a, b, d = np.minimum(ni, nj)[across], np.maximum(ni, nj)[across], d[across].astype(np.float64)
    pair_keys, inverse = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    largest = np.zeros(len(pair_keys))
    np.maximum.at(largest, inverse, d)
    return _Pairs(
        a=pair_keys[:, 0] if len(pair_keys) else np.zeros(0, np.int64),
        b=pair_keys[:, 1] if len(pair_keys) else np.zeros(0, np.int64),
        total=np.bincount(inverse, weights=d, minlength=len(pair_keys)),
        count=np.bincount(inverse, minlength=len(pair_keys)).astype(np.float64),
        largest=largest,
        weight=np.bincount(inverse, weights=1 - d / threshold, minlength=len(pair_keys)),
    )


class _Agglomerative:
    """Sparse agglomerative clustering (average or complete linkage) with exclusive keys."""

    def __init__(
        self, x: np.ndarray, nodes: list[list[int]], keys: list[set], pairs: _Pairs, threshold: float, linkage: str
    ) -> None:
        self.x = x
        self.members = [list(m) for m in nodes]
        self.keys = keys
        self.threshold = threshold
        self.linkage = linkage
        self.alive = [True] * len(nodes)
        self.stamp = [0] * len(nodes)
        self.neighbours: list[set[int]] = [set() for _ in nodes]
        self.stats: dict[tuple[int, int], list[float]] = {}
        for a, b, total, count, largest in zip(
            pairs.a.tolist(),
            pairs.b.tolist(),
            pairs.total.tolist(),
            pairs.count.tolist(),
            pairs.largest.tolist(),
            strict=True,
        ):
            self.stats[(a, b)] = [total, count, largest]
            self.neighbours[a].add(b)
            self.neighbours[b].add(a)
        self.heap: list[tuple[float, int, int, bool, int, int]] = []
        for a, b in self.stats:
            self._push(a, b)

    def _bound(self, a: int, b: int) -> tuple[float, bool]:
        """A lower bound of the linkage distance of nodes `a` and `b` (exact when the graph holds every pair of
        their faces), and whether it is exact."""
        total, count, largest = self.stats[(a, b)]
        cells = len(self.members[a]) * len(self.members[b])
        if self.linkage == "complete":
            return largest, count == cells
        return (total + (cells - count) * self.threshold) / cells, count == cells

    def _push(self, a: int, b: int) -> None:
        """Queue the pair keyed by its current bound (if it may and could still merge)."""
        if not self.keys[a].isdisjoint(self.keys[b]):
            return  # keys only grow, so this pair stays forbidden
        bound, exact = self._bound(a, b)
        if bound < self.threshold:
            heapq.heappush(self.heap, (bound, a, b, exact, self.stamp[a], self.stamp[b]))

    def _linkage_distance(self, a: int, b: int) -> float:
        """The mean (average linkage) or largest (complete) distance over all face pairs of `a` and `b`."""
        xa, xb = self.x[self.members[a]], self.x[self.members[b]]
        step = max(1, (1 << 22) // len(xb))  # bounded memory even for two clusters of thousands of faces
        blocks = [distances(xa[k : k + step], xb) for k in range(0, len(xa), step)]
        if self.linkage == "complete":
            return max(float(block.max()) for block in blocks)
        return sum(float(block.sum(dtype=np.float64)) for block in blocks) / (len(xa) * len(xb))

    def run(self) -> list[list[int]]:
        """Merge the closest allowed pair until none is under the threshold; the member lists that remain.

        Queue keys are lower bounds of the pairs' current linkage: a pair a merge left untouched only grew
        apart (its bound rises with the cluster sizes), so its entry is checked and requeued when popped
        instead of being refreshed on every merge; pairs whose edges a merge changed are queued afresh.
        """
        while self.heap:
            key, a, b, exact, stamp_a, stamp_b = heapq.heappop(self.heap)
            if not (self.alive[a] and self.alive[b]) or not self.keys[a].isdisjoint(self.keys[b]):
                continue
            unchanged = self.stamp[a] == stamp_a and self.stamp[b] == stamp_b
            if not (exact and unchanged):
                bound, exact = self._bound(a, b)
                if bound > key:
                    if bound < self.threshold:
                        heapq.heappush(self.heap, (bound, a, b, exact, self.stamp[a], self.stamp[b]))
                    continue
            if exact:
                self._merge(a, b)
                continue
            true = self._linkage_distance(a, b)
            if true < self.threshold:
                heapq.heappush(self.heap, (true, a, b, True, self.stamp[a], self.stamp[b]))
        return [m for m, alive in zip(self.members, self.alive, strict=True) if alive]

    def _merge(self, a: int, b: int) -> None:
        """Join the node with fewer neighbours into the other, folding its edge statistics in and queueing the
        pairs they changed (small into large keeps the total work near-linear)."""
        keep, gone = (a, b) if len(self.neighbours[a]) >= len(self.neighbours[b]) else (b, a)
        self.members[keep].extend(self.members[gone])
        self.keys[keep] |= self.keys[gone]
        self.alive[gone] = False
        self.stamp[keep] += 1
        del self.stats[(a, b)]
        self.neighbours[keep].discard(gone)
        for c in sorted(self.neighbours[gone]):
            if c == keep:
                continue
            moved = self.stats.pop((min(gone, c), max(gone, c)))
            self.neighbours[c].discard(gone)
            self.neighbours[c].add(keep)
            self.neighbours[keep].add(c)
            kept = self.stats.setdefault((min(keep, c), max(keep, c)), [0.0, 0.0, 0.0])
            kept[0] += moved[0]
            kept[1] += moved[1]
            kept[2] = max(kept[2], moved[2])
            self._push(min(keep, c), max(keep, c))
        self.neighbours[gone] = set()


def _visit_order(nodes: list[list[int]], ids: list[str]) -> list[int]:
    """Nodes ordered by a hash of their smallest face id: arbitrary-looking but fixed by the ids alone."""
    return sorted(range(len(nodes)), key=lambda n: hashlib.sha1(ids[nodes[n][0]].encode()).digest())


def _chinese_whispers(nodes: list[list[int]], keys: list[set], pairs: _Pairs, ids: list[str]) -> list[list[int]]:
    """Label propagation that never moves a node into a label whose nodes share one of its keys."""
    adjacency: list[list[tuple[int, float]]] = [[] for _ in nodes]
    for a, b, w in zip(pairs.a.tolist(), pairs.b.tolist(), pairs.weight.tolist(), strict=True):
        adjacency[a].append((b, w))
        adjacency[b].append((a, w))
    labels = list(range(len(nodes)))
    label_keys: dict[int, Counter] = {n: Counter(keys[n]) for n in range(len(nodes)) if keys[n]}
    order = _visit_order(nodes, ids)
    for iteration in range(_CW_MAX_ITERATIONS):
        # a fresh visiting order each round, seeded by the round: still a function of the ids only
        visit = [order[k] for k in np.random.default_rng(iteration).permutation(len(order))]
        changed = 0
        for node in visit:
            best = _best_label(node, adjacency[node], labels, keys[node], label_keys)
            if best != labels[node]:
                _relabel(node, best, labels, keys[node], label_keys)
                changed += 1
        if not changed:
            break
    groups: dict[int, list[int]] = defaultdict(list)
    for node, label in enumerate(labels):
        groups[label].extend(nodes[node])
    return [groups[label] for label in sorted(groups)]


def _best_label(
    node: int, edges: list[tuple[int, float]], labels: list[int], keys: set, label_keys: dict[int, Counter]
) -> int:
    """The label with the largest edge weight around `node` that it may join.

    Ties keep the current label (so rounds settle), else go to the smaller label.
    """
    weights: dict[int, float] = defaultdict(float)
    for other, w in edges:
        weights[labels[other]] += w
    current = labels[node]
    best, best_weight = current, weights.get(current, 0.0)
    for label, w in sorted(weights.items()):
        if label == current or w <= best_weight:
            continue
        if keys and any(label_keys.get(label, {}).get(k) for k in keys):
            continue
        best, best_weight = label, w
    return best


def _relabel(node: int, label: int, labels: list[int], keys: set, label_keys: dict[int, Counter]) -> None:
    if keys:
        label_keys[labels[node]].subtract(keys)
        label_keys.setdefault(label, Counter()).update(keys)
    labels[node] = label


def _make_cluster(x: np.ndarray, ids: list[str], photos: list[str], members: list[int]) -> Cluster:
    return Cluster(
        id=cluster_id(ids[members[0]]),
        face_ids=tuple(ids[m] for m in members),
        representative=ids[members[medoid(x[members])]],
        photo_count=len({photos[m] for m in members}),
    )


def medoid(x: np.ndarray) -> int:
    """Row index of the medoid of `x` (least total distance to the others; the first on ties).

    Above a few thousand rows, the row nearest the mean instead.
    """
    x = x.astype(np.float64)
    if len(x) > _MEDOID_EXACT_MAX:
        return int(np.argmin(np.linalg.norm(x - x.mean(axis=0), axis=1)))
    return int(np.argmin(squareform(pdist(x)).sum(axis=1)))
