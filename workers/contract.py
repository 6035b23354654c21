"""The job contract: every job kind and its parameters, defined once.

The API validates requests against these models and the workers parse the same models from
the job record. Importing this module imports neither Flask nor torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from storage.names import ItemErrorCode, JobKind

# archives a job accepts (the API and the CLI tell them from photos by these endings)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
MAX_OUTPUT_SIDE = 16384
MAX_VARIANTS = 64  # renders per photo: styles or blends x the grid
WEBP_MAX_SIDE = 16383
NUM_BUILTIN_STYLES = 26


# The package that ships the 26-style network names none of them ("the model I started from never came with
# any"); these names describe what each style does to a photo (docs/styles.md shows them).
BUILTIN_STYLE_NAMES: tuple[str, ...] = (
    "Pastel sky",
    "Yellow and black ink",
    "Grey charcoal",
    "Blue-red ribbons",
    "Red and ochre",
    "Expressionist patchwork",
    "Indigo cells",
    "Primary-colour blocks",
    "Coloured pencil",
    "Teal and crimson pattern",
    "Sepia oil",
    "Ink on parchment",
    "Lavender haze",
    "Lime and teal outlines",
    "Ice-blue wash",
    "Pastel stained glass",
    "Blue hatching",
    "Red brick weave",
    "Sand woodcut",
    "Starry blue swirls",
    "Ember red",
    "Pop-art cutout",
    "Ink wash on cream",
    "Dusky green oil",
    "Navy etching on cream",
    "Copper and slate mosaic",
)


class ItemFailure(Exception):
    """An input that fails its item, not the chunk: the message is the item's `error` (for people), `code` its
    `error_code` (for programs). Subclasses set the usual code; a raise site may name another."""

    code: ItemErrorCode = ItemErrorCode.INTERNAL

    def __init__(self, message: str, code: ItemErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class _Strict(BaseModel):
    # NaN and infinity are never valid parameters: they render black images and make invalid JSON
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def parse_blend(spec: str | int | dict[str, float], *, normalise: bool = True) -> dict[int, float]:
    """Parse a built-in style blend (``7``, ``"3:0.5,12:0.5"`` or ``{"3": 0.5}``) into weights that sum to 1
    (the weights as given with `normalise=False`).

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
    return {i: w / total if normalise else w for i, w in sorted(weights.items())}


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


VIDEO_SUFFIXES = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mts",
    ".m2ts",
    ".ts",
    ".3gp",
    ".3g2",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ogv",
    ".y4m",
)


def is_video_name(name: str) -> bool:
    """A file name that says "video" (how the API and ingest route inputs; the probe has the last word)."""
    return name.lower().endswith(VIDEO_SUFFIXES)


TemporalStrength = Annotated[float, Field(ge=0, le=0.95)] | Literal["auto"]


class VideoStyleParams(_Strict):
    """How a `style` job renders videos (photos ignore these)."""

    codec: Literal["h264", "h265"] = Field("h264", description="h265 is written with the `hvc1` tag")
    crf: int = Field(20, ge=0, le=51, description="x264/x265 constant rate factor: lower is better and larger")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"] = "medium"
    temporal: TemporalStrength | list[TemporalStrength] = Field(
        "auto",
        description="temporal filter strength 0-0.95 (0: every frame alone), 'auto' (from how much the "
        "style flickers on each shot), or one value per style, in the order of `styles` or `builtin`",
    )
    audio: bool = Field(True, description="copy the audio stream as it is (no re-encoding)")


class VideoFacesParams(_Strict):
    """How a `faces` job reads videos (photos ignore these)."""

    sample_fps: float = Field(
        2.0, gt=0, le=30, description="frames per second looked at (plus the first frame of every shot)"
    )
    crops_per_track: int = Field(
        3, ge=1, le=3, description="best crops embedded per track (score, size, sharpness, frontalness)"
    )
    link_iou: float = Field(0.3, gt=0, lt=1, description="box overlap that continues a track between samples")
    max_gap_s: float = Field(1.5, ge=0, le=30, description="a face may be missed this long and keep its track")


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
        None,
        ge=0,
        le=1,
        description="how much of the photo comes back inside each face (0: none; default: "
        "0.65, 0.8 for built-in styles 15 and 17): most styles paint faces over until nobody is recognisable "
        "(docs/styles.md)",
    )
    strip_metadata: bool = Field(
        False,
        description="drop the photo's EXIF (date taken, camera, GPS) and ICC "
        "profile from the outputs; by default they are kept, orientation reset to 1",
    )
    grid: StyleGrid | None = None
    gatys: GatysParams = Field(default_factory=GatysParams)
    video: VideoStyleParams = Field(default_factory=VideoStyleParams)

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
        sources = len(self.builtin) if self.method == "builtin" else len(self.styles)
        grid = self.grid or StyleGrid()
        variants = sources * len(grid.strength or [0]) * len(grid.preserve_colors or [0]) * len(grid.style_scale or [0])
        if variants > MAX_VARIANTS:
            raise ValueError(
                f"{variants} renders per photo ({sources} styles x the grid); at most {MAX_VARIANTS}: "
                "split the job or shrink the grid"
            )
        if self.format == "webp" and self.size is not None and self.size > WEBP_MAX_SIDE:
            raise ValueError(f"webp holds at most {WEBP_MAX_SIDE} px per side: use png or jpeg for size {self.size}")
        sources = len(self.builtin) if self.method == "builtin" else len(self.styles)
        if isinstance(self.video.temporal, list) and len(self.video.temporal) != sources:
            raise ValueError(
                f"video.temporal lists {len(self.video.temporal)} strengths for {sources} styles: "
                "give one per style, or one value for all"
            )
        return self

    def temporal_for(self, source: int) -> float | Literal["auto"]:
        """The temporal filter strength of the `source`-th style (in the order of `styles` or `builtin`)."""
        value = self.video.temporal
        return value[source] if isinstance(value, list) else value


class FacesParams(_Strict):
    """Parameters of a `faces` (index) job."""

    detector: Literal["yunet", "mtcnn", "hog"] = Field(
        "yunet",
        description="yunet: YuNet finds faces, MTCNN places their landmarks (the default: several times "
        "faster than mtcnn alone, as accurate); mtcnn; hog: dlib's HOG detector (no landmarks)",
    )
    embedder: Literal["auto", "dlib-resnet", "dlib-resnet-torch", "sface", "dlib+sface"] = Field(
        "auto",
        description="face embedding model; auto: dlib+sface (chosen on LFW, docs/benchmarks.md). Vectors of "
        "different models are not comparable",
    )
    min_face_size: int = Field(20, ge=8, le=2000)
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="score a detection needs; default: the detector's own (MTCNN probability 0.9, YuNet score 0.8)",
    )
    detect_size: int = Field(1024, ge=160, le=4096, description="long side the detector sees")
    try_rotations: bool = False
    jitter: int = Field(0, ge=0, le=100, description="dlib num_jitters")
    mirror: bool = Field(
        True,
        description="average each embedding with the mirror image's (more accurate, "
        "twice the embedding work; a different model id: not comparable with mirror=false)",
    )
    thumbnails: bool = True
    force: bool = False
    video: VideoFacesParams = Field(default_factory=VideoFacesParams)


class IdentifyParams(_Strict):
    """Parameters of an `identify` job: match the library's faces against an enrolled gallery."""

    gallery: str
    index_jobs: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="only faces these faces jobs brought (default: the whole library)",
    )
    threshold: float | None = Field(None, gt=0, le=2)


class ClusterParams(_Strict):
    """Parameters of a `cluster` job: re-cluster the whole library of people.

    Names, merges, faces moved out or assigned, hidden people and covers are kept; people keep their ids.
    """

    algorithm: Literal["average", "complete", "chinese_whispers"] = Field(
        "average", description="average/complete linkage or Chinese whispers, all with cannot-link constraints"
    )
    threshold: float | None = Field(
        None,
        gt=0,
        le=2,
        description="distance under which faces join; default: calibrated for the library's embedding space",
    )
    sheets: bool = Field(True, description="write a contact sheet of the people")

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, value: Any) -> Any:
        if isinstance(value, dict) and ("index_jobs" in value or "min_faces" in value):
            raise ValueError(
                "cluster jobs now re-cluster your whole library (people are no longer per job): "
                "drop index_jobs and min_faces (a setting: library.min_faces)"
            )
        return value


class AdaptParams(_Strict):
    """Parameters of an `adapt` job: learn a head for the library from its names and decisions (triplet loss),
    adopted only when it does better on held-out labelled faces and leaves unlabelled people as they were."""

    seed: int = Field(0, ge=0, le=2**31 - 1, description="the same seed and library give the same head")
    steps: int = Field(200, ge=1, le=5000)
    holdout: float = Field(0.25, ge=0.1, le=0.5, description="share of each person's labelled faces held out")
    rank: int = Field(32, ge=1, le=512, description="rank of the head's change to the identity")
    margin: float = Field(
        1.0, gt=0, le=10, description="the triplet margin alpha, in units of the space's verify threshold squared"
    )
    weight: float = Field(0.1, ge=0, le=100, description="how strongly the head is held near the identity")
    recluster: bool = Field(False, description="once adopted, re-cluster the library through the head")


PARAMS_MODELS: dict[JobKind, type[_Strict]] = {
    JobKind.STYLE: StyleParams,
    JobKind.FACES: FacesParams,
    JobKind.IDENTIFY: IdentifyParams,
    JobKind.CLUSTER: ClusterParams,
    JobKind.ADAPT: AdaptParams,
}

# Kinds whose items are photos (they take inputs); the others read earlier jobs' outputs.
PHOTO_KINDS = frozenset({JobKind.STYLE, JobKind.FACES})


class Inputs(_Strict):
    """Where a job's photos come from; uploaded files are added by the API as `keys`."""

    keys: list[str] = Field(default_factory=list, max_length=100_000)
    prefix: str | None = Field(None, min_length=1, max_length=1024)
    archives: list[str] = Field(default_factory=list, max_length=100)
    videos: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="videos (probed and planned by ingest; the API moves keys and uploads with a video suffix here)",
    )

    @property
    def empty(self) -> bool:
        return not (self.keys or self.prefix or self.archives or self.videos)


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
