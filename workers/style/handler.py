"""The `style` job kind: decode photos, render every variant, write outputs, a contact sheet per job."""

from __future__ import annotations

import io
import logging
import re
from collections import OrderedDict
from pathlib import PurePosixPath
from typing import Any

from PIL import Image

from storage import keys
from storage.errors import ObjectNotFound, StoreUnavailable
from storage.names import ItemErrorCode, ItemState
from storage.records import Item, Job
from workers import metrics
from workers.context import WorkerContext
from workers.contract import ItemFailure, StyleParams
from workers.handlers import ItemInput, ItemResult, JobHandler
from workers.imaging import ImageDecodeError, PhotoMetadata, decode_image, read_metadata
from workers.models.registry import WeightsNotAvailable
from workers.style.engine import StyleEngine, StyleVariant, encode_image, expand_variants, output_size
from workers.style.faces import Box, default_protection, find_faces, protect_faces
from workers.style.onnx_models import DeviceNotAvailable
from workers.style.sheet import Look, builtin_style

log = logging.getLogger("nightshift.style")
STYLE_SIDE = 1024  # style images are only ever seen at <= 512 px by the models; 1024 leaves room for style_scale
SHEET_ROWS = 8
SHEET_TILE = 256
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}  # what encode_image names each format
_engine: StyleEngine | None = None
_variants: OrderedDict[str, list[StyleVariant]] = OrderedDict()


def _renderable(
    photos: list[tuple[ItemInput, Image.Image]], variant: StyleVariant
) -> list[list[tuple[ItemInput, Image.Image]]]:
    """Batches for one variant: the optimisation method renders one photo at a time."""
    if variant.method == "gatys":
        return [[p] for p in photos]
    return [photos]


class StyleInputError(ItemFailure, ValueError):
    """A job's style image is unusable: every item fails with this reason."""


def engine(ctx: WorkerContext) -> StyleEngine:
    """One engine per worker process, created on first use (in the pool child, never the parent)."""
    global _engine
    if _engine is None:
        w = ctx.settings.worker
        _engine = StyleEngine(device=w.device, threads=w.threads, vgg19_weights=w.vgg19_weights)
    return _engine


class StyleHandler(JobHandler):
    def __init__(self, job: Job, ctx: WorkerContext) -> None:
        super().__init__(job, ctx)
        self.params = StyleParams.model_validate(job.params)

    def variants(self) -> list[StyleVariant]:
        """The job's renders; style images are fetched and style vectors computed once per job per process."""
        cached = _variants.get(self.job.id)
        if cached is not None:
            return cached
        images: dict[str, Image.Image] = {}
        for rel in self.params.styles:
            try:
                data = self.ctx.store.get_bytes(keys.tenant_key(self.job.tenant, rel))
                images[rel] = decode_image(data, max_side=STYLE_SIDE, max_pixels=self.ctx.settings.worker.max_pixels)
            except ObjectNotFound:
                raise StyleInputError(
                    f"style image {rel!r} is missing from storage", ItemErrorCode.INPUT_MISSING
                ) from None
            except ImageDecodeError as exc:
                raise StyleInputError(f"style image {PurePosixPath(rel).name!r} is unusable: {exc}", exc.code) from None
        variants = engine(self.ctx).expand(self.params, images)
        _variants[self.job.id] = variants
        while len(_variants) > 8:
            _variants.popitem(last=False)
        return variants

    def prepare(self, item: ItemInput) -> None:
        """Decode ahead of the model (in a prefetch thread); a bad photo keeps its reason for `process_batch`."""
        try:
            item.prepared = self._decode(item.data)
        except ImageDecodeError as exc:
            item.prepared = exc

    def _decode(self, data: bytes) -> Image.Image:
        with metrics.STAGE.labels(stage="decode").time():
            return decode_image(data, max_pixels=self.ctx.settings.worker.max_pixels)

    def _photo(self, item: ItemInput) -> Image.Image:
        if isinstance(item.prepared, ImageDecodeError):
            raise item.prepared
        return item.prepared if isinstance(item.prepared, Image.Image) else self._decode(item.data)

    def process_batch(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        results: dict[int, ItemResult] = {}
        photos: list[tuple[ItemInput, Image.Image]] = []
        max_pixels = self.ctx.settings.worker.max_pixels
        for item in batch:
            try:
                img = self._photo(item)
            except ImageDecodeError as exc:
                results[item.index] = ItemResult.failed_by(item.index, exc)
                continue
            width, height = output_size(img.size, self.params.size)
            if width * height > max_pixels:
                results[item.index] = ItemResult.failed(
                    item.index,
                    ItemErrorCode.TOO_LARGE,
                    f"output of {width}x{height} = {width * height / 1e6:.0f} MP "
                    f"exceeds the {max_pixels / 1e6:.0f} MP limit: ask for a smaller `size`",
                )
                continue
            photos.append((item, img))
        if photos:
            try:
                variants = self.variants()
            except (StyleInputError, WeightsNotAvailable, DeviceNotAvailable) as exc:
                return [results.get(i.index) or ItemResult.failed_by(i.index, exc) for i in batch]
            metadata = {item.index: self._metadata(item) for item, _ in photos}
            faces = {item.index: self._faces(img) for item, img in photos}
            outputs: dict[int, list[str]] = {item.index: [] for item, _ in photos}
            costs: dict[int, list[Any]] = {item.index: [] for item, _ in photos}
            try:
                for variant in variants:
                    self.check_cancel()
                    for chunk in _renderable(photos, variant):
                        with metrics.STAGE.labels(stage="model").time():
                            rendered = engine(self.ctx).render_batch([img for _, img in chunk], variant)
                        for (item, photo), img in zip(chunk, rendered, strict=True):
                            img = protect_faces(img, photo, faces[item.index], self._protection(variant))
                            outputs[item.index].append(self._write(item, variant, img, metadata[item.index]))
                            if variant.method == "gatys":
                                costs[item.index].append(engine(self.ctx).last_gatys_costs)
            except (WeightsNotAvailable, DeviceNotAvailable) as exc:
                return [results.get(i.index) or ItemResult.failed_by(i.index, exc) for i in batch]
            for item, img in photos:
                info: dict[str, Any] = {
                    "width": img.width,
                    "height": img.height,
                    "variants": len(variants),
                    "faces_protected": len(faces[item.index]),
                }
                if costs[item.index]:
                    info["gatys_costs"] = costs[item.index]  # per variant: [(J first, J last) per scale]
                results[item.index] = ItemResult(item.index, ItemState.DONE, outputs[item.index], info=info)
        return [results[i.index] for i in batch]

    def _protection(self, variant: StyleVariant) -> float:
        """How much of the photo comes back inside faces: the job's setting, or the variant's default."""
        if self.params.protect_faces is not None:
            return self.params.protect_faces
        return default_protection(variant.builtin)

    def _faces(self, photo: Image.Image) -> list[Box]:
        """The faces to protect in a photo (none are looked for when the job does not protect them)."""
        if self.params.protect_faces == 0:
            return []
        with metrics.STAGE.labels(stage="faces").time():
            return find_faces(photo)

    def _metadata(self, item: ItemInput) -> PhotoMetadata | None:
        """The photo's EXIF and ICC profile for its outputs, unless the job strips them."""
        return None if self.params.strip_metadata else read_metadata(item.data)

    def _write(self, item: ItemInput, variant: StyleVariant, img: Image.Image, metadata: PhotoMetadata | None) -> str:
        """The output's key; it is encoded and uploaded beside the next batch (JobHandler.write)."""
        fmt, quality = self.params.format, self.params.quality

        def produce() -> tuple[bytes, str]:
            data, ctype, _ = encode_image(img, fmt, quality, metadata)
            return data, ctype

        stem = PurePosixPath(item.name).stem or f"item{item.index}"
        key = keys.variant_output(self.job.tenant, self.job.id, item.index, stem, variant.slug, EXTENSIONS[fmt])
        return self.write(key, produce, item=item.index)

    def _looks(self) -> dict[str, tuple[Look, Image.Image | None]]:
        """Each variant's look and style image (small), by the variant part of its output key."""
        images: dict[str, Image.Image] = {}
        for rel in self.params.styles:
            try:
                data = self.ctx.store.get_bytes(keys.tenant_key(self.job.tenant, rel))
                images[rel] = decode_image(data, max_side=SHEET_TILE, max_pixels=self.ctx.settings.worker.max_pixels)
            except (ObjectNotFound, ImageDecodeError):
                images[rel] = Image.new("RGB", (SHEET_TILE, SHEET_TILE), "white")
        looks = {}
        for variant in expand_variants(self.params, images):  # no model: only names and settings are needed
            style = builtin_style(variant.builtin) if variant.method == "builtin" else _style_label(variant.label)
            look = Look(variant.method, style, variant.strength, variant.preserve_colors, variant.style_scale)
            looks[keys.bounded_variant(variant.slug)] = (look, images.get(variant.style_key or ""))
        return looks

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        """A contact sheet: the first photos (rows) x every variant (columns), originals first, each column headed
        by its style image when it has one, each tile captioned with what differs between the variants."""
        from workers.style.sheet import captions, contact_sheet

        looks = self._looks()
        words = dict(zip(looks, captions([look for look, _ in looks.values()]), strict=True))
        rows = []
        columns: list[str] = []
        for item in [it for it in items if it.state == ItemState.DONE][:SHEET_ROWS]:
            try:
                original = decode_image(self.ctx.store.get_bytes(item.key), max_side=SHEET_TILE)
                tiles = [("original", original)]
                variants = [_variant_of(key) for key in item.outputs]
                for key, variant in zip(item.outputs, variants, strict=True):
                    tiles.append(
                        (words.get(variant, variant), decode_image(self.ctx.store.get_bytes(key), max_side=SHEET_TILE))
                    )
            except StoreUnavailable:
                raise
            except (ObjectNotFound, ImageDecodeError):
                continue
            rows.append((item.name, tiles))
            columns = columns if len(columns) >= len(variants) else variants
        if not rows:
            return {}
        headers: list[tuple[str, Image.Image | None]] = [("original", None)]
        headers += [(looks[v][0].style, looks[v][1]) if v in looks else (v, None) for v in columns]
        sheet = contact_sheet(rows, tile=SHEET_TILE, headers=headers)
        buf = io.BytesIO()
        sheet.save(buf, "JPEG", quality=88)
        key = keys.job_artifact(job.tenant, job.id, "contact-sheet.jpg")
        self.ctx.store.put_bytes(key, buf.getvalue(), "image/jpeg")
        return {
            "artifacts": [keys.strip_tenant(job.tenant, key)],
            "variants": sorted({_variant_of(k) for it in items for k in it.outputs}),
            "outputs": sum(len(it.outputs) for it in items),
        }


def _variant_of(key: str) -> str:
    """The variant part of an output key (``<stem>__<variant>.<ext>``; the variant never holds "__")."""
    return PurePosixPath(key).stem.rsplit("__", 1)[-1]


def _style_label(label: str) -> str:
    """A style image's label without the prefix of an uploaded job input ("0000000-style-starry-night")."""
    return re.sub(r"^\d{7}-style-", "", label) or label or "style"
