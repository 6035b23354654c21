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


DLIB_MIRROR = EmbeddingSpace(
    id="dlib-resnet-v1+mirror",
    dim=128,
    thresholds=Thresholds(verify=0.61, cluster=0.50, identify=0.50, identify_margin=0.03, assign=0.50,
                          assign_margin=0.04),
    models=("dlib-resnet@v1+mirror", "dlib-resnet-torch@v1+mirror"),
    calibration="lfw-dev (first five LFW folds), MTCNN + dlib 5-point alignment, mirror averaging; "
                "see workers/people/calibration.py and docs/api.md",
)
DLIB = EmbeddingSpace(
    id="dlib-resnet-v1",
    dim=128,
    thresholds=Thresholds(verify=0.62, cluster=0.50, identify=0.50, identify_margin=0.03, assign=0.50,
                          assign_margin=0.04),
    models=("dlib-resnet@v1", "dlib-resnet-torch@v1"),
    calibration="lfw-dev (first five LFW folds), HOG + dlib 5-point alignment; see workers/people/calibration.py",
)

SFACE_MIRROR = EmbeddingSpace(
    id="sface-2021dec+mirror",
    dim=128,
    thresholds=Thresholds(verify=1.10, cluster=0.95, identify=0.95, identify_margin=0.05, assign=0.95,
                          assign_margin=0.05),
    models=("sface@2021dec+mirror",),
    calibration="PLACEHOLDER",
)
SFACE = EmbeddingSpace(
    id="sface-2021dec",
    dim=128,
    thresholds=Thresholds(verify=1.10, cluster=0.95, identify=0.95, identify_margin=0.05, assign=0.95,
                          assign_margin=0.05),
    models=("sface@2021dec",),
    calibration="PLACEHOLDER",
)
FUSED_MIRROR = EmbeddingSpace(
    id="dlib+sface-v1+mirror",
    dim=256,
    thresholds=Thresholds(verify=0.80, cluster=0.70, identify=0.70, identify_margin=0.04, assign=0.70,
                          assign_margin=0.04),
    models=("dlib+sface@v1+mirror",),
    calibration="PLACEHOLDER",
)
FUSED = EmbeddingSpace(
    id="dlib+sface-v1",
    dim=256,
    thresholds=Thresholds(verify=0.80, cluster=0.70, identify=0.70, identify_margin=0.04, assign=0.70,
                          assign_margin=0.04),
    models=("dlib+sface@v1",),
    calibration="PLACEHOLDER",
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
        raise UnknownSpace(f"no calibrated embedding space for model {model_id!r}; known: "
                           f"{', '.join(sorted(_BY_MODEL))}") from None


def comparable(model_a: str, model_b: str) -> bool:
    """Whether vectors of the two models may be compared (same space)."""
    try:
        return space_of(model_a).id == space_of(model_b).id
    except UnknownSpace:
        return model_a == model_b
