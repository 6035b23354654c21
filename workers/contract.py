"""The job contract: every job kind and its parameters, defined once.

The API validates requests against these models and the workers parse the same models from
the job record. Importing this module imports neither Flask nor torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.names import JobKind

MAX_OUTPUT_SIDE = 16384
WEBP_MAX_SIDE = 16383
NUM_BUILTIN_STYLES = 26


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_blend(spec: str | int | dict[str, float]) -> dict[int, float]:
    """Parse a built-in style blend (``7``, ``"3:0.5,12:0.5"`` or ``{"3": 0.5}``) into normalised weights.

    Raises ValueError with a message that says what to fix.
    """
    weights: dict[int, float] = {}
    if isinstance(spec, bool):
        raise ValueError("a built-in style is an index 0-25 or a blend like '3:0.5,12:0.5'")
    if isinstance(spec, int):
        pairs: list[tuple[Any, Any]] = [(spec, 1.0)]
    elif isinstance(spec, str):
        pairs = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            idx, _, wt = part.partition(":")
            pairs.append((idx, wt or 1.0))
    else:
        pairs = list(spec.items())
    for idx, wt in pairs:
        try:
            i, w = int(idx), float(wt)
        except (TypeError, ValueError):
            raise ValueError(f"bad built-in style {spec!r}: use an index 0-25 or '3:0.5,12:0.5'") from None
        if not 0 <= i < NUM_BUILTIN_STYLES:
            raise ValueError(f"built-in style index must be 0-{NUM_BUILTIN_STYLES - 1}, got {i}")
        if w < 0:
            raise ValueError(f"built-in style weights must be >= 0, got {w}")
        weights[i] = weights.get(i, 0.0) + w
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("a built-in style blend needs at least one positive weight")
    return {i: w / total for i, w in sorted(weights.items())}


class GatysParams(_Strict):
    """The optimisation method of Gatys et al. (content + style cost on VGG19 activations)."""

    iterations: int = Field(200, ge=1, le=5000)
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    learning_rate: float = Field(0.02, gt=0, le=10)
    init: Literal["content", "noise"] = "content"
    content_weight: float = Field(10.0, ge=0, description="alpha")
    style_weight: float = Field(40.0, ge=0, description="beta")
    tv_weight: float = Field(0.0, ge=0)
    content_layer: str = "conv4_2"
    style_layers: dict[str, float] = Field(
        default_factory=lambda: {"conv1_1": 0.2, "conv2_1": 0.2, "conv3_1": 0.2, "conv4_1": 0.2, "conv5_1": 0.2},
        description="per-layer weights (lambda)",
    )
    scales: list[int] = Field(default_factory=lambda: [256, 512], min_length=1, max_length=4)
    seed: int = 0


PreserveColors = Literal["none", "luminance", "histogram"]


class StyleGrid(_Strict):
    """A small parameter grid: every combination is rendered for every content x style."""

    strength: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(None, min_length=1, max_length=8)
    preserve_colors: list[PreserveColors] | None = Field(None, min_length=1, max_length=3)
    style_scale: list[Annotated[float, Field(gt=0, le=4)]] | None = Field(None, min_length=1, max_length=8)


class StyleParams(_Strict):
    """Parameters of a `style` job."""

    method: Literal["arbitrary", "builtin", "gatys"] = "arbitrary"
    styles: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="style images (object keys in the tenant's namespace) for `arbitrary` and `gatys`",
    )
    builtin: list[str | int | dict[str, float]] = Field(
        default_factory=list, max_length=16, description="built-in styles or blends for `builtin`"
    )
    strength: float = Field(1.0, ge=0, le=1)
    preserve_colors: PreserveColors = "none"
    style_scale: float = Field(1.0, gt=0, le=4)
    size: int | None = Field(None, ge=32, le=MAX_OUTPUT_SIDE, description="long side of the output; default: input")
    tile_size: int = Field(1024, ge=256, le=4096)
    tile_overlap: int = Field(128, ge=16, le=1024)
    format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = Field(92, ge=1, le=100)
    grid: StyleGrid | None = None
    gatys: GatysParams = Field(default_factory=GatysParams)

    @field_validator("builtin")
    @classmethod
    def _check_blends(cls, value: list[str | int | dict[str, float]]) -> list[str | int | dict[str, float]]:
        for spec in value:
            parse_blend(spec)
        return value

    @model_validator(mode="after")
    def _check_method(self) -> StyleParams:
        if self.method == "builtin" and not self.builtin:
            raise ValueError("method 'builtin' needs `builtin`: a list of styles such as [7, '3:0.5,12:0.5']")
        if self.method in ("arbitrary", "gatys") and not self.styles:
            raise ValueError(f"method '{self.method}' needs `styles`: at least one style image")
        if self.tile_overlap * 2 >= self.tile_size:
            raise ValueError("tile_overlap must be less than half of tile_size")
        if self.format == "webp" and self.size is not None and self.size > WEBP_MAX_SIDE:
            raise ValueError(f"webp holds at most {WEBP_MAX_SIDE} px per side: use png or jpeg for size {self.size}")
        return self


class FacesParams(_Strict):
    """Parameters of a `faces` (index) job."""

    detector: Literal["yunet", "mtcnn", "hog"] = Field(
        "yunet", description="yunet: YuNet finds faces, MTCNN places their landmarks (the default: several times "
        "faster than mtcnn alone, as accurate); mtcnn; hog: dlib's HOG detector (no landmarks)")
    embedder: Literal["auto", "dlib-resnet", "dlib-resnet-torch", "sface", "dlib+sface"] = Field(
        "auto", description="face embedding model; auto: dlib+sface (chosen on LFW, docs/benchmarks.md). Vectors of "
        "different models are not comparable")
    min_face_size: int = Field(20, ge=8, le=2000)
    score_threshold: float | None = Field(None, ge=0, le=1, description="score a detection needs; default: the "
                                          "detector's own (MTCNN probability 0.9, YuNet score 0.8)")
    detect_size: int = Field(1024, ge=160, le=4096, description="long side the detector sees")
    try_rotations: bool = False
    jitter: int = Field(0, ge=0, le=100, description="dlib num_jitters")
    mirror: bool = Field(True, description="average each embedding with the mirror image's (more accurate, "
                         "twice the embedding work; a different model id: not comparable with mirror=false)")
    thumbnails: bool = True
    force: bool = False


class IdentifyParams(_Strict):
    """Parameters of an `identify` job: match indexed faces against an enrolled gallery."""

    gallery: str
    index_jobs: list[str] = Field(min_length=1, max_length=100)
    threshold: float | None = Field(None, gt=0, le=2)


class ClusterParams(_Strict):
    """Parameters of a `cluster` job: group indexed faces into people."""

    index_jobs: list[str] = Field(min_length=1, max_length=100)
    algorithm: Literal["average", "complete", "chinese_whispers"] = Field(
        "average", description="average/complete linkage or Chinese whispers, all with cannot-link constraints")
    threshold: float | None = Field(None, gt=0, le=2, description="distance under which faces join; default "
                                    "calibrated on LFW")
    min_faces: int = Field(1, ge=1, le=1000, description="smaller clusters are left out (unless named)")
    sheets: bool = Field(True, description="write a contact sheet per person")


PARAMS_MODELS: dict[JobKind, type[_Strict]] = {
    JobKind.STYLE: StyleParams,
    JobKind.FACES: FacesParams,
    JobKind.IDENTIFY: IdentifyParams,
    JobKind.CLUSTER: ClusterParams,
}

# Kinds whose items are photos (they take inputs); the others read earlier jobs' outputs.
PHOTO_KINDS = frozenset({JobKind.STYLE, JobKind.FACES})


class Inputs(_Strict):
    """Where a job's photos come from; uploaded files are added by the API as `keys`."""

    keys: list[str] = Field(default_factory=list, max_length=100_000)
    prefix: str | None = Field(None, min_length=1, max_length=1024)
    archives: list[str] = Field(default_factory=list, max_length=100)

    @property
    def empty(self) -> bool:
        return not (self.keys or self.prefix or self.archives)


class JobRequest(_Strict):
    """The JSON body of `POST /v1/jobs`."""

    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: Inputs = Field(default_factory=Inputs)
    label: str | None = Field(None, max_length=200)

    def parsed_params(self) -> BaseModel:
        return parse_params(self.kind, self.params)


def parse_params(kind: JobKind | str, params: dict[str, Any]) -> BaseModel:
    """Validate the parameters of a job kind; raises pydantic.ValidationError."""
    return PARAMS_MODELS[JobKind(kind)].model_validate(params)
