"""The job contract: every job kind and its parameters, defined once.

The API validates requests against these models and the workers parse the same models from
the job record. Importing this module imports neither Flask nor torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from storage.names import JobKind

# archives a job accepts (the API and the CLI tell them from photos by these endings)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
MAX_OUTPUT_SIDE = 16384
WEBP_MAX_SIDE = 16383
NUM_BUILTIN_STYLES = 26


# The package that ships the 26-style network names none of them ("the model I started from never came with
# any"); these names describe what each style does to a photo (docs/styles.md shows them).
BUILTIN_STYLE_NAMES: tuple[str, ...] = (
    "Pastel sky", "Yellow and black ink", "Grey charcoal", "Blue-red ribbons", "Red and ochre",
    "Expressionist patchwork", "Indigo cells", "Primary-colour blocks", "Coloured pencil", "Teal and crimson pattern",
    "Sepia oil", "Ink on parchment", "Lavender haze", "Lime and teal outlines", "Ice-blue wash",
    "Pastel stained glass", "Blue hatching", "Red brick weave", "Sand woodcut", "Starry blue swirls",
    "Ember red", "Pop-art cutout", "Ink wash on cream", "Dusky green oil", "Navy etching on cream",
    "Copper and slate mosaic",
)


class _Strict(BaseModel):
    # NaN and infinity are never valid parameters: they render black images and make invalid JSON
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def parse_blend(spec: str | int | dict[str, float]) -> dict[int, float]:
    """Parse a built-in style blend (``7``, ``"3:0.5,12:0.5"`` or ``{"3": 0.5}``) into normalised weights.

    Raises ValueError with a message that says what to fix.
    """
    weights: dict[int, float] = {}
    if isinstance(spec, bool) or (isinstance(spec, dict) and any(isinstance(w, bool) for w in spec.values())):
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
        if not math.isfinite(w):
            raise ValueError(f"built-in style weights must be finite numbers, got {wt!r}")
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
    protect_faces: float | None = Field(
        None, ge=0, le=1, description="how much of the photo comes back inside each face (0: none; default: "
        "0.65, 0.8 for built-in styles 15 and 17): most styles paint faces over until nobody is recognisable "
        "(docs/styles.md)")
    strip_metadata: bool = Field(False, description="drop the photo's EXIF (date taken, camera, GPS) and ICC "
                                 "profile from the outputs; by default they are kept, orientation reset to 1")
    grid: StyleGrid | None = None
    gatys: GatysParams = Field(default_factory=GatysParams)

    @field_validator("builtin", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # pydantic would read `true` as style 1
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError("a built-in style is an index 0-25 or a blend like '3:0.5,12:0.5', not true/false")
        return value

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

    detector: Literal["mtcnn", "hog"] = "mtcnn"
    embedder: Literal["auto", "dlib-resnet", "dlib-resnet-torch"] = "auto"
    min_face_size: int = Field(20, ge=8, le=2000)
    score_threshold: float = Field(0.9, ge=0, le=1)
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


def validation_messages(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, message) per error, in words a user reads: a validator's own message without pydantic's
    "Value error, " prefix, unknown fields named as such, and no input echoed back."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err.get("loc", ()))
        ctx = err.get("ctx") or {}
        if err.get("type") == "value_error" and "error" in ctx:
            msg = str(ctx["error"])
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field: remove it (see the API docs for the fields this kind accepts)"
        else:
            msg = str(err.get("msg", "invalid"))
        out.append((loc, msg))
    return out


class StylePreviews(BaseModel):
    """The index of the built-in styles' previews (written by a style worker, read by the API)."""

    version: str = Field(description="the network's checksum prefix and the preview recipe: a new one renders anew")
    keys: list[str] = Field(description="object key of each style's preview, by index")
    sample: str = ""
    rendered_at: float = 0.0
