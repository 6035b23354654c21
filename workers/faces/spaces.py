"""Embedding spaces: which face vectors may be compared, and the thresholds calibrated for each.

A stored face vector carries the id of the model that made it (``<embedder>@<version>``, e.g.
``dlib-resnet@v1+mirror``). Models whose vectors are numerically interchangeable (dlib's ResNet and its
torch port) share one *space*; search, verification, clustering and the library compare vectors only
within one space, always by Euclidean distance. Each space records its thresholds with the data they were
calibrated on. Pure data: importing this module imports nothing heavy (the API uses it).
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownSpace(ValueError):
    """A model id whose embedding space is not registered."""


@dataclass(frozen=True)
class Thresholds:
    """Distances (same person: smaller) that decide, for one embedding space.

    - `verify`: 1:1, same person when the distance is below it.
    - `cluster`: average-linkage clustering joins groups whose mean distance is below it.
    - `identify` / `identify_margin`: open-set identification names the nearest enrolled person when closer
      than `identify` and clearer than the runner-up by `identify_margin`.
    - `assign` / `assign_margin`: the library puts a new face into the nearest known person when that person
      is closer than `assign` and closer than the runner-up person by `assign_margin`; otherwise the face
      waits as unassigned.
    """

    verify: float
    cluster: float
    identify: float
    identify_margin: float
    assign: float
    assign_margin: float


@dataclass(frozen=True)
class EmbeddingSpace:
    """One comparable space of face vectors: its id, dimension, thresholds and where they come from."""

    id: str
    dim: int
    thresholds: Thresholds
    models: tuple[str, ...]
    calibration: str


# dlib's ResNet and its torch port: (verify, cluster, identify, identify margin, assign, assign margin)
DLIB_MIRROR = EmbeddingSpace(
    "dlib-resnet-v1+mirror",
    128,
    Thresholds(0.61, 0.50, 0.50, 0.03, 0.50, 0.04),
    ("dlib-resnet@v1+mirror", "dlib-resnet-torch@v1+mirror"),
    "lfw-dev (first five LFW folds), MTCNN + dlib 5-point alignment, mirror averaging; "
    "see workers/people/calibration.py and docs/api.md",
)
DLIB = EmbeddingSpace(
    "dlib-resnet-v1",
    128,
    Thresholds(0.62, 0.50, 0.50, 0.03, 0.50, 0.04),
    ("dlib-resnet@v1", "dlib-resnet-torch@v1"),
    "lfw-dev (first five LFW folds), HOG + dlib 5-point alignment; see workers/people/calibration.py",
)

# The spaces below were calibrated with bench/lfw.py, bench/cluster.py and bench/search.py on the vectors of all
# 3,811 lfw-dev faces (MTCNN landmarks, docs/benchmarks.md "Choosing the embedder"; the default detector, YuNet
# with MTCNN's landmarks, gives the same thresholds to 0.01): verify is the threshold
# of the LFW protocol over all 3,000 pairs; cluster the average-linkage threshold that keeps pairwise
# precision >= 0.995 short of the cliff where it falls; identify the threshold where one enrolled photo per
# person names 94-95 % of queries with 0.06 % wrong and < 1 % of strangers named; assign / assign_margin
# are first values (the cluster threshold and the identify margin) for the library to tune.
_LFW_DEV = "lfw-dev (first five LFW folds: 3,000 pairs, 3,811 faces), MTCNN landmarks, "


def _lfw_space(
    id: str, model: str, dim: int, verify: float, cluster: float, identify: float, margin: float, vectors: str
) -> EmbeddingSpace:
    """A space calibrated on lfw-dev as above; the library assigns at the cluster threshold and the identify
    margin until it tunes them."""
    return EmbeddingSpace(
        id=id,
        dim=dim,
        thresholds=Thresholds(verify, cluster, identify, margin, cluster, margin),
        models=(model,),
        calibration=_LFW_DEV + vectors,
    )


# LFW protocol 99.57 % +- 0.25 (fold thresholds 1.150-1.152); cluster 1.00: P 0.9965 / R 0.9633;
# identify 1.00 / 0.05: 95.2 % right, 0.06 % wrong, 0.75 % of strangers named
SFACE_MIRROR = _lfw_space(
    "sface-2021dec+mirror",
    "sface@2021dec+mirror",
    128,
    1.15,
    1.00,
    1.00,
    0.05,
    "ArcFace alignment, unit vectors averaged with the flipped chip's",
)
# LFW protocol 99.37 % +- 0.36 (fold thresholds 1.156-1.171); cluster 1.00: P 0.9969 / R 0.9574;
# identify 1.00 / 0.05: 94.4 % right, 0.06 % wrong, 0.9 % of strangers named
SFACE = _lfw_space("sface-2021dec", "sface@2021dec", 128, 1.16, 1.00, 1.00, 0.05, "ArcFace alignment, unit vectors")
# [dlib, 0.7 x sface]: LFW protocol 99.67 % +- 0.24 (fold thresholds 1.031-1.034); TAR 99.1 % at FAR 1e-3;
# cluster 0.89: P 0.9958 / R 0.9678; identify 0.88 / 0.04: 95.1 % right, 0.06 % wrong, 0.75 % strangers named.
# With the default detector: 99.70 % +- 0.22 (1.027-1.028); cluster 0.89: P 0.9963 / R 0.9690; identify
# 0.88 / 0.04: 95.0 % right, 0.06 % wrong, 0.6 % of strangers named
FUSED_MIRROR = _lfw_space(
    "dlib+sface-v1+mirror",
    "dlib+sface@v1+mirror",
    256,
    1.03,
    0.89,
    0.88,
    0.04,
    "dlib descriptor (mirror-averaged) and 0.7 x SFace unit vector (flip-averaged)",
)
# LFW protocol 99.63 % +- 0.32 (fold thresholds 1.044-1.045); cluster 0.90: P 0.9951 / R 0.9594;
# identify 0.88 / 0.04: 93.7 % right, 0.06 % wrong, 0.6 % of strangers named
FUSED = _lfw_space(
    "dlib+sface-v1", "dlib+sface@v1", 256, 1.04, 0.90, 0.88, 0.04, "dlib descriptor and 0.7 x SFace unit vector"
)

SPACES: dict[str, EmbeddingSpace] = {s.id: s for s in (DLIB_MIRROR, DLIB, SFACE_MIRROR, SFACE, FUSED_MIRROR, FUSED)}
_BY_MODEL: dict[str, EmbeddingSpace] = {m: s for s in SPACES.values() for m in s.models}


def register_space(space: EmbeddingSpace) -> EmbeddingSpace:
    """Add a space (and its model ids); an id already taken by a different space raises ValueError."""
    current = SPACES.get(space.id)
    if current is not None and current != space:
        raise ValueError(f"embedding space {space.id!r} is already registered")
    SPACES[space.id] = space
    for model in space.models:
        _BY_MODEL[model] = space
    return space


def space_of(model_id: str) -> EmbeddingSpace:
    """The space of vectors made by `model_id` (``<embedder>@<version>``); raises UnknownSpace."""
    try:
        return _BY_MODEL[model_id]
    except KeyError:
        raise UnknownSpace(
            f"no calibrated embedding space for model {model_id!r}; known: {', '.join(sorted(_BY_MODEL))}"
        ) from None


def comparable(model_a: str, model_b: str) -> bool:
    """Whether vectors of the two models may be compared (same space)."""
    try:
        return space_of(model_a).id == space_of(model_b).id
    except UnknownSpace:
        return model_a == model_b
