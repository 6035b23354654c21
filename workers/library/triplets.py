"""Triplet loss over a small head on frozen face embeddings (FaceNet: Schroff, Kalenichenko and Philbin 2015).

The head is the identity plus a low-rank change, ``f(x) = x + (x A) B``: B starts at zero, so training starts
from the space as it is, and a penalty on ``|A B|²`` keeps it near the identity. Directions the user's
labels say nothing about stay as they were, so people never named keep their distances and thresholds.

Loss (FaceNet, eq. 1), on squared distances in units of the space's verification threshold:
``max(|f(a) - f(p)|² - |f(a) - f(n)|² + alpha, 0)``, with each batch brought back to its raw spread (FaceNet's
embedding lives on a hypersphere: growing every distance must not meet the margin). Triplets are chosen per
batch (FaceNet, section 3.2): for every anchor-positive pair, the semi-hard negative — the nearest negative
farther than the positive — or, when every negative is nearer than the positive, the hardest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class TrainConfig:
    """How a head is trained. `alpha` is in units of the space's verify threshold squared."""

    rank: int = 32
    steps: int = 200
    lr: float = 0.01
    alpha: float = 0.2
    weight: float = 1.0  # the pull towards the identity: weight * |A B|² (Frobenius)
    batch: int = 512  # faces per batch; larger sets are sampled P people x K faces per step
    per_person: int = 4
    seed: int = 0


@dataclass
class FaceLabels:
    """Who the training faces are, as the user said.

    `group[i]`: the person row i was confirmed or named as (-1: none; such a row only appears as a "not this
    person" negative). `named[g]`: whether group g carries a name (negatives are taken between two groups
    only when at least one is named: two unnamed people may still be one human). `rejected[i]`: the groups
    row i was moved out of.
    """

    group: np.ndarray
    named: np.ndarray
    rejected: list[set[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rejected:
            self.rejected = [set() for _ in range(len(self.group))]

    def subset(self, rows: np.ndarray) -> FaceLabels:
        return FaceLabels(self.group[rows], self.named, [self.rejected[int(r)] for r in rows])

    def masks(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) boolean matrices over `rows` (default: all); a row is never its own positive."""
        rows = np.arange(len(self.group)) if rows is None else rows
        positive, negative = self.pair_masks(rows, rows)
        return positive & ~np.eye(len(rows), dtype=bool), negative

    def pair_masks(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(same person, known different people) between rows `left` and rows `right`."""
        a, b = self.group[left], self.group[right]
        known = (a >= 0)[:, None] & (b >= 0)[None, :]
        same = (a[:, None] == b[None, :]) & known
        named_a = np.zeros(len(left), bool)
        named_a[a >= 0] = self.named[a[a >= 0]]
        named_b = np.zeros(len(right), bool)
        named_b[b >= 0] = self.named[b[b >= 0]]
        negative = known & ~same & (named_a[:, None] | named_b[None, :])
        for n, r in enumerate(left):
            for other in self.rejected[r]:
                negative[n, b == other] = True
        for n, r in enumerate(right):
            for other in self.rejected[r]:
                negative[a == other, n] = True
        return same, negative


def resolve_device(device: str = "auto") -> str:
    """ "auto": CUDA when torch sees a GPU, else the CPU; anything else as given."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _spread(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()).clamp(min=1e-6)


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """(n, n) squared Euclidean distances, never negative."""
    sq = (x * x).sum(1)
    return torch.clamp(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), min=0.0)


def mine_triplets(sq: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """(t, 3) rows of (anchor, positive, negative), one per anchor-positive pair that has any negative.

    The negative is semi-hard when one exists (the nearest negative farther from the anchor than the
    positive), else the hardest (the nearest negative). `sq` are squared distances; the masks are boolean.
    """
    anchors, positives = torch.nonzero(positive, as_tuple=True)
    if not len(anchors):
        return torch.zeros((0, 3), dtype=torch.long)
    d_an = sq[anchors]  # (pairs, n)
    d_ap = sq[anchors, positives][:, None]
    allowed = negative[anchors]
    inf = torch.tensor(float("inf"), dtype=sq.dtype)
    semi = torch.where(allowed & (d_an > d_ap), d_an, inf)
    hard = torch.where(allowed, d_an, inf)
    semi_best, semi_at = semi.min(1)
    hard_best, hard_at = hard.min(1)
    chosen = torch.where(torch.isfinite(semi_best), semi_at, hard_at)
    keep = torch.isfinite(hard_best)
    return torch.stack([anchors[keep], positives[keep], chosen[keep]], dim=1)


def triplet_loss(sq: torch.Tensor, triplets: torch.Tensor, alpha: float) -> torch.Tensor:
    """FaceNet's loss, averaged over the triplets (zero when there are none)."""
    if not len(triplets):
        return sq.sum() * 0.0
    a, p, n = triplets[:, 0], triplets[:, 1], triplets[:, 2]
    return torch.clamp(sq[a, p] - sq[a, n] + alpha, min=0.0).mean()


class LowRankHead(torch.nn.Module):
    """x -> x + (x A) B, starting at the identity (B = 0)."""

    def __init__(self, dim: int, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / np.sqrt(dim))
        self.b = torch.nn.Parameter(torch.zeros(rank, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x @ self.a) @ self.b

    def change(self) -> torch.Tensor:
        return self.a @ self.b

    def matrix(self) -> np.ndarray:
        """The head as one (dim, dim) matrix M: f(x) = x @ M."""
        with torch.no_grad():
            eye = torch.eye(self.a.shape[0], dtype=self.a.dtype, device=self.a.device)
            return (eye + self.change()).cpu().numpy().astype(np.float32)


@dataclass
class TrainResult:
    matrix: np.ndarray
    steps: int
    loss_first: float
    loss_last: float
    active_first: float  # share of mined triplets with a positive loss, first and last step
    active_last: float
    change: float  # |M - I| (Frobenius)
    seconds: float


def _batches(
    labels: FaceLabels, rows: np.ndarray, config: TrainConfig, rng: np.random.Generator
) -> Sequence[np.ndarray]:
    """Rows of each step: everything when it fits, else P people x K faces plus their "not them" faces."""
    if len(rows) <= config.batch:
        return [rows] * config.steps
    by_group: dict[int, list[int]] = {}
    loose = []
    for r in rows:
        g = int(labels.group[r])
        if g >= 0:
            by_group.setdefault(g, []).append(int(r))
        else:
            loose.append(int(r))
    groups = sorted(g for g, members in by_group.items() if len(members) >= 2)
    people = max(2, config.batch // config.per_person)
    out = []
    for _ in range(config.steps):
        chosen = rng.choice(groups, size=min(people, len(groups)), replace=False)
        picked = [
            int(r)
            for g in chosen
            for r in rng.choice(by_group[int(g)], size=min(config.per_person, len(by_group[int(g)])), replace=False)
        ]
        wanted = {int(g) for g in chosen}
        picked += [r for r in loose if labels.rejected[r] & wanted]
        out.append(np.array(sorted(picked)))
    return out


def train_head(
    vectors: np.ndarray, labels: FaceLabels, scale: float, config: TrainConfig | None = None, *, device: str = "cpu"
) -> TrainResult:
    """Train a head on labelled rows of `vectors` (raw embeddings); distances are measured in units of
    `scale` (the space's verify threshold). Deterministic for the same inputs, config and device."""
    import time

    config = config or TrainConfig()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    dim = vectors.shape[1]
    head = LowRankHead(dim, min(config.rank, dim), generator).to(device)
    x_all = torch.as_tensor(np.asarray(vectors, np.float32) / scale, device=device)
    rows = np.arange(len(vectors))
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr)
    masks: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
    history: list[tuple[float, float]] = []
    for batch in _batches(labels, rows, config, rng):
        key = batch.tobytes()
        if key not in masks:
            pos, neg = labels.masks(batch)
            masks = {key: (torch.as_tensor(pos, device=device), torch.as_tensor(neg, device=device))}
        pos_t, neg_t = masks[key]
        raw = x_all[torch.as_tensor(batch, device=device)]
        x = head(raw)
        # FaceNet keeps its embedding on a hypersphere, so the loss cannot be met by growing every distance;
        # here the batch keeps its spread (the head's scale is set afterwards, see `adapt.keep_spread`)
        x = x * (_spread(raw) / _spread(x))
        sq = squared_distances(x)
        with torch.no_grad():
            triplets = mine_triplets(sq.detach().cpu(), pos_t.cpu(), neg_t.cpu()).to(device)
        loss = triplet_loss(sq, triplets, config.alpha)
        total = loss + config.weight * (head.change() ** 2).sum()
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        with torch.no_grad():
            a, p, n = (triplets[:, k] for k in range(3)) if len(triplets) else (None, None, None)
            active = float(((sq[a, p] - sq[a, n] + config.alpha) > 0).float().mean()) if a is not None else 0.0
        history.append((float(loss.detach()), active))
    matrix = head.matrix()
    return TrainResult(
        matrix=matrix,
        steps=len(history),
        loss_first=history[0][0] if history else 0.0,
        loss_last=history[-1][0] if history else 0.0,
        active_first=history[0][1] if history else 0.0,
        active_last=history[-1][1] if history else 0.0,
        change=float(np.linalg.norm(matrix - np.eye(dim, dtype=np.float32))),
        seconds=time.perf_counter() - start,
    )
