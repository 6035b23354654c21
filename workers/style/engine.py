"""The style-transfer engine: job parameters in, stylized PIL images out (no storage, no Celery).

`expand_variants` turns one job's `StyleParams` into the list of renders it asks for (styles x
built-in blends x grid); `StyleEngine.render_batch` renders photos for one variant, tiling each photo
at a working resolution so the output keeps the photo's full size without upscaling blur.
Models load lazily, once per engine; torch is imported only when a Gatys variant is rendered.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from workers.contract import NUM_BUILTIN_STYLES, GatysParams, StyleGrid, StyleParams, parse_blend
from workers.imaging import PhotoMetadata
from workers.models.base import ModelCache, apply_torch_threads
from workers.style.colors import PreserveColors, preserve_colors
from workers.style.onnx_models import (
    STYLE_INPUT_SIZE,
    DeviceNotAvailable,
    MultiStyle,
    OnnxModel,
    StylePredictor,
    StyleTransformer,
    providers_for,
)
from workers.style.tiling import StripBlender, TileGrid, iter_tiles, to_uint8

if TYPE_CHECKING:
    from workers.style.gatys import GatysStylizer

log = logging.getLogger("nightshift.style")
Method = Literal["arbitrary", "builtin", "gatys"]
ImageFormat = Literal["png", "jpeg", "webp"]
MIN_WORKING_SIDE = 32  # the networks pad by reflection and downsample by 4: smaller sides break them
WEBP_MAX_SIDE = 16383


@dataclass(frozen=True)
class StyleVariant:
    """One way to render a photo: the method, its style and every knob (hashable, ids by `slug`)."""

    method: Method
    style_key: str | None = None
    builtin: tuple[tuple[int, float], ...] = ()
    strength: float = 1.0
    preserve_colors: PreserveColors = "none"
    style_scale: float = 1.0
    size: int | None = None
    tile_size: int = 1024
    tile_overlap: int = 128
    gatys: GatysParams | None = field(default=None, hash=False)  # holds a dict: equal, but not hashable
    label: str = ""
    # set when two variants of one job would otherwise share a slug (grid values that round alike)
    ordinal: int = 0
    style_vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    style_image: Image.Image | None = field(default=None, compare=False, repr=False)

    @property
    def slug(self) -> str:
        """Short stable name for output keys, e.g. ``arbitrary-starry-s0.8-lum-x1.0``."""
        label = self.label or _default_label(self)
        colors = {"none": "none", "luminance": "lum", "histogram": "hist"}[self.preserve_colors]
        slug = f"{self.method}-{label}-s{_num(self.strength)}-{colors}-x{_num(self.style_scale)}"
        return f"{slug}-{self.ordinal}" if self.ordinal else slug

    def blend_vector(self) -> np.ndarray:
        """The 26 built-in style weights of a `builtin` variant."""
        vec = np.zeros(NUM_BUILTIN_STYLES, dtype=np.float32)
        for index, weight in self.builtin:
            vec[index] = weight
        return vec


def _num(value: float) -> str:
    text = f"{round(value, 2):g}"
    return text if "." in text else f"{text}.0"


def _stem(key: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", PurePosixPath(key).stem.lower()).strip("-")
    return stem[:40] or "style"


def _default_label(variant: StyleVariant) -> str:
    if variant.method == "builtin":
        if len(variant.builtin) == 1:
            return f"b{variant.builtin[0][0]}"
        return "b" + "-".join(f"{i}w{round(w * 100)}" for i, w in variant.builtin)
    return _stem(variant.style_key or "style")


def _labels(keys: Sequence[str]) -> dict[str, str]:
    """Stem of each style key, plus a short hash where two keys share a stem (a/x.jpg, b/x.jpg)."""
    stems = {k: _stem(k) for k in keys}
    taken = list(stems.values())
    return {
        k: s if taken.count(s) == 1 else f"{s}-{hashlib.sha1(k.encode()).hexdigest()[:6]}" for k, s in stems.items()
    }


def expand_variants(
    params: StyleParams,
    style_images: Mapping[str, Image.Image] | None = None,
    style_vectors: Mapping[str, np.ndarray] | None = None,
) -> list[StyleVariant]:
    """Every render a job asks for: (styles or built-in blends) x strength x preserve_colors x style_scale.

    `style_images` maps the job's style keys to decoded images (needed for gatys, and for arbitrary
    unless `style_vectors` has the key). Raises ValueError naming a missing style. Exact duplicates
    collapse, in the order the job lists them; variants whose values only round alike keep distinct
    slugs (a numbered suffix), so every render has its own output.
    """
    images, vectors = style_images or {}, style_vectors or {}
    grid = params.grid or StyleGrid()
    knobs = list(
        itertools.product(
            grid.strength or [params.strength],
            grid.preserve_colors or [params.preserve_colors],
            grid.style_scale or [params.style_scale],
        )
    )
    base = StyleVariant(
        method=params.method,
        size=params.size,
        tile_size=params.tile_size,
        tile_overlap=params.tile_overlap,
        gatys=params.gatys if params.method == "gatys" else None,
    )
    sources: list[StyleVariant] = []
    if params.method == "builtin":
        for spec in params.builtin:
            sources.append(replace(base, builtin=tuple(parse_blend(spec).items())))
    else:
        labels = _labels(params.styles)
        for key in params.styles:
            if key not in images and not (params.method == "arbitrary" and key in vectors):
                raise ValueError(f"style image {key!r} was not provided")
            sources.append(
                replace(
                    base, style_key=key, label=labels[key], style_image=images.get(key), style_vector=vectors.get(key)
                )
            )
    variants: dict[tuple[Any, ...], StyleVariant] = {}
    for source, (strength, colors, scale) in itertools.product(sources, knobs):
        variant = replace(source, strength=strength, preserve_colors=colors, style_scale=scale)
        identity = (variant.style_key, variant.builtin, strength, colors, scale)
        variants.setdefault(identity, variant)
    return _numbered(list(variants.values()))


def _numbered(variants: list[StyleVariant]) -> list[StyleVariant]:
    """The same variants, those whose slugs collide numbered 2, 3, ... after the first."""
    seen: dict[str, int] = {}
    out = []
    for variant in variants:
        count = seen.get(variant.slug, 0) + 1
        seen[variant.slug] = count
        out.append(replace(variant, ordinal=count) if count > 1 else variant)
    return out


def output_size(size: tuple[int, int], long_side: int | None) -> tuple[int, int]:
    """(width, height) with the long side set to `long_side` (None keeps the size)."""
    w, h = size
    if long_side is None or long_side == max(w, h):
        return w, h
    scale = long_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def working_size(out: tuple[int, int], style_scale: float) -> tuple[int, int]:
    """Resolution the network runs at: the output divided by `style_scale` (2 = strokes twice as big).

    At style_scale 1 the network runs at the output resolution, so nothing is upscaled afterwards.
    """
    w, h = max(1, round(out[0] / style_scale)), max(1, round(out[1] / style_scale))
    if min(w, h) < MIN_WORKING_SIDE:
        grow = MIN_WORKING_SIDE / min(w, h)
        w, h = max(MIN_WORKING_SIDE, round(w * grow)), max(MIN_WORKING_SIDE, round(h * grow))
    return w, h


def _resized(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _style_input(img: Image.Image) -> np.ndarray:
    """Centre square crop at 256 x 256, floats in [0, 1] (the style predictor's preprocessing)."""
    img = img.convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    square = img.crop((left, top, left + side, top + side))
    return np.asarray(_resized(square, (STYLE_INPUT_SIZE, STYLE_INPUT_SIZE)), dtype=np.float32) / 255.0


class StyleEngine:
    """Renders style variants; one per worker process (models load lazily on first use)."""

    def __init__(
        self,
        device: str = "auto",
        threads: int | None = None,
        *,
        max_batch_size: int | None = None,
        vgg19_weights: Path | None = None,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
        self.device = device
        self.threads = threads
        self.vgg19_weights = vgg19_weights
        self._max_batch_size = max_batch_size
        self._providers: list[str] | None = None
        self._models: ModelCache[Any] = ModelCache()
        self.last_gatys_costs: list[tuple[float, float]] = []

    @property
    def providers(self) -> list[str]:
        """onnxruntime providers in use; raises DeviceNotAvailable for device="cuda" without CUDA."""
        if self._providers is None:
            self._providers = providers_for(self.device)
        return self._providers

    @property
    def max_batch_size(self) -> int:
        # measured on CPU: a batch of 4 tiles runs ~30% slower than 4 single passes; GPUs gain from batches
        if self._max_batch_size is not None:
            return self._max_batch_size
        return 8 if self.providers[0] == "CUDAExecutionProvider" else 1

    def _model(self, cls: type[OnnxModel]) -> Any:
        return self._models.get(
            cls, lambda: cls(self.providers, threads=self.threads, max_batch_size=self.max_batch_size)
        )

    def load(self, method: Method = "arbitrary") -> None:
        """Load the models of `method` now (a worker may warm up before its first item)."""
        if method == "gatys":
            self._gatys_features()
            return
        classes = (StylePredictor, StyleTransformer) if method == "arbitrary" else (MultiStyle,)
        for cls in classes:
            self._model(cls).load()

    def style_vector(self, style_img: Image.Image) -> np.ndarray:
        """The 100-number style vector of an image (compute once per style per job and reuse it)."""
        return self._model(StylePredictor).predict(_style_input(style_img)[None])[0]

    def expand(self, params: StyleParams, style_images: Mapping[str, Image.Image]) -> list[StyleVariant]:
        """`expand_variants`, with each arbitrary style's vector computed once here."""
        vectors = {k: self.style_vector(img) for k, img in style_images.items()} if params.method == "arbitrary" else {}
        return expand_variants(params, style_images, vectors)

    def render(self, content: Image.Image, variant: StyleVariant) -> Image.Image:
        """Render one photo (RGB) in one variant; the result has the output size exactly."""
        return self.render_batch([content], variant)[0]

    def render_batch(self, contents: Sequence[Image.Image], variant: StyleVariant) -> list[Image.Image]:
        """Render several photos in one variant; tiles of equal size share forward passes."""
        outs = [output_size(c.size, variant.size) for c in contents]
        if _pixel_mix(variant) <= 0.0:  # strength 0 is the photo itself: skip the network
            return [_resized(c, o) for c, o in zip(contents, outs, strict=True)]
        if variant.method == "gatys":
            stylized = [_resized(self._gatys(c, variant), o) for c, o in zip(contents, outs, strict=True)]
        else:
            stylized = self._feed_forward(contents, outs, variant)
        return [self._finish(img, c, variant) for img, c in zip(stylized, contents, strict=True)]

    def _finish(self, stylized: Image.Image, content: Image.Image, variant: StyleVariant) -> Image.Image:
        reference = _resized(content, stylized.size)
        result = preserve_colors(stylized, reference, variant.preserve_colors)
        alpha = _pixel_mix(variant)
        return result if alpha >= 1.0 else Image.blend(reference, result, alpha)

    def _feed_forward(
        self, contents: Sequence[Image.Image], outs: list[tuple[int, int]], variant: StyleVariant
    ) -> list[Image.Image]:
        working = [_resized(c, working_size(o, variant.style_scale)) for c, o in zip(contents, outs, strict=True)]
        run = self._runner(contents, variant)
        arrays = _run_tiled(
            [np.asarray(w) for w in working], variant.tile_size, variant.tile_overlap, run, self.max_batch_size
        )
        return [_resized(Image.fromarray(a), o) for a, o in zip(arrays, outs, strict=True)]

    def _runner(self, contents: Sequence[Image.Image], variant: StyleVariant) -> TileRunner:
        if variant.method == "builtin":
            model, blend = self._model(MultiStyle), variant.blend_vector()
            return lambda tiles, owners: model.predict(tiles, blend)
        vectors = self._style_vectors(contents, variant)
        transformer = self._model(StyleTransformer)
        return lambda tiles, owners: transformer.predict(tiles, vectors[owners])

    def _style_vectors(self, contents: Sequence[Image.Image], variant: StyleVariant) -> np.ndarray:
        """One style vector per photo: the style's, moved toward the photo's own by (1 - strength)."""
        if variant.style_vector is not None:
            style = np.asarray(variant.style_vector, dtype=np.float32).reshape(-1)
        elif variant.style_image is not None:
            style = self.style_vector(variant.style_image)
        else:
            raise ValueError(f"variant {variant.slug} has neither a style vector nor a style image")
        if variant.strength >= 1.0:
            return np.repeat(style[None], len(contents), axis=0)
        # Ghiasi et al. 2017: moving toward the content's own style vector weakens the style smoothly
        own = np.stack([self.style_vector(c) for c in contents])
        return variant.strength * style[None] + (1.0 - variant.strength) * own

    def _gatys(self, content: Image.Image, variant: StyleVariant) -> Image.Image:
        if variant.style_image is None:
            raise ValueError(f"variant {variant.slug} needs its style image")
        from workers.style.gatys import GatysStylizer

        stylizer: GatysStylizer = GatysStylizer(
            self._gatys_features(), variant.gatys or GatysParams(), self._torch_device()
        )
        result = stylizer.stylize(content.convert("RGB"), variant.style_image, style_scale=variant.style_scale)
        # per scale: the total cost J at the first and the last evaluation (callers report convergence)
        self.last_gatys_costs = [(h[0], h[-1]) for h in result.history if h]
        return result.image

    def _gatys_features(self) -> Any:
        from workers.style.gatys import VGG19Features

        model = self._models.get(VGG19Features, lambda: VGG19Features(self.vgg19_weights))
        model.load()
        return model.features

    def _torch_device(self) -> str:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        else:
            apply_torch_threads()
        if self.device == "cpu":
            return "cpu"
        if torch.cuda.is_available():
            return "cuda"
        if self.device == "cuda":
            raise DeviceNotAvailable("device 'cuda' requested but torch sees no CUDA device")
        return "cpu"


TileRunner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pixel_mix(variant: StyleVariant) -> float:
    """How much of the stylized pixels to keep over the photo for a strength.

    For arbitrary styles the strength already moves the style vector toward the photo's own, but the
    network never reproduces the photo exactly; fading pixels over the lower half of the range makes
    strength 0 give the photo itself.
    """
    if variant.method == "arbitrary":
        return min(1.0, 2.0 * variant.strength)
    return variant.strength


def _run_tiled(
    images: list[np.ndarray], tile: int, overlap: int, run: TileRunner, max_batch_size: int
) -> list[np.ndarray]:
    """Stylize H x W x 3 uint8 arrays tile by tile, batching consecutive tiles of equal shape.

    `run(tiles, owners)` gets N x h x w x 3 floats and the index of the image each tile belongs to.
    Each image's blender is dropped as soon as its last tile is in, so memory stays bounded by the
    outputs plus a strip per image in flight.
    """
    grids = [TileGrid.plan(a.shape[0], a.shape[1], tile, overlap) for a in images]
    blenders: list[StripBlender | None] = [StripBlender(g) if len(g) > 1 else None for g in grids]
    results: list[np.ndarray | None] = [None] * len(images)
    pending: list[tuple[int, int, int, np.ndarray]] = []

    def flush() -> None:
        owners = np.asarray([p[0] for p in pending])
        outputs = run(np.stack([p[3] for p in pending]), owners)
        for (index, row, col, _), out in zip(pending, outputs, strict=True):
            blender = blenders[index]
            if blender is None:  # a photo that fits in one tile: nothing to blend
                h, w = grids[index].height, grids[index].width
                results[index] = to_uint8(out[:h, :w])
                continue
            blender.add(row, col, out)
            if blender.done:
                results[index], blenders[index] = blender.finish(), None
        pending.clear()

    for index, (image, grid) in enumerate(zip(images, grids, strict=True)):
        for row, col, tile_array in iter_tiles(image, grid):
            if pending and (tile_array.shape != pending[0][3].shape or len(pending) >= max_batch_size):
                flush()
            pending.append((index, row, col, tile_array))
    if pending:
        flush()
    assert all(r is not None for r in results)  # every grid has at least one tile
    return [r for r in results if r is not None]


def encode_image(
    img: Image.Image, fmt: ImageFormat, quality: int = 92, metadata: PhotoMetadata | None = None
) -> tuple[bytes, str, str]:
    """Encode to (bytes, content type, file extension), with the photo's EXIF and ICC profile when given.

    Raises ValueError for sizes a format cannot hold. Metadata a format refuses (an EXIF block over a
    JPEG segment's 64 KB) is dropped rather than failing the output.
    """
    img = img.convert("RGB")
    if fmt == "webp" and max(img.size) > WEBP_MAX_SIDE:
        raise ValueError(f"webp holds at most {WEBP_MAX_SIDE} px per side, got {img.size}; use png or jpeg")
    if fmt not in ("png", "jpeg", "webp"):
        raise ValueError(f"unknown image format {fmt!r}: use png, jpeg or webp")
    extra: dict[str, Any] = {}
    if metadata is not None:
        exif = metadata.exif_for(img.size)
        if exif:
            extra["exif"] = exif
        if metadata.icc:
            extra["icc_profile"] = metadata.icc
    try:
        return _encode(img, fmt, quality, extra)
    except (ValueError, OSError) as exc:
        if not extra:
            raise
        log.warning("metadata not written (%s); the output has none", exc)
        return _encode(img, fmt, quality, {})


def _encode(img: Image.Image, fmt: ImageFormat, quality: int, extra: dict[str, Any]) -> tuple[bytes, str, str]:
    buf = io.BytesIO()
    if fmt == "png":
        # zlib level 4: level 6's size (within 0.5 %) in 60 % of its time on stylized photos (bench/pipeline.py)
        img.save(buf, "PNG", compress_level=4, **extra)
        return buf.getvalue(), "image/png", "png"
    if fmt == "jpeg":
        # no chroma subsampling at high quality: painted strokes have sharp colour edges
        img.save(
            buf,
            "JPEG",
            quality=quality,
            optimize=True,
            progressive=True,
            subsampling=0 if quality >= 90 else 2,
            **extra,
        )
        return buf.getvalue(), "image/jpeg", "jpg"
    img.save(buf, "WEBP", quality=quality, method=4, **extra)
    return buf.getvalue(), "image/webp", "webp"
