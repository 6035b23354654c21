"""The `style` job kind: decode photos, render every variant, write outputs, a contact sheet per job."""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from pathlib import PurePosixPath
from typing import Any

from PIL import Image

from storage import keys
from storage.errors import ObjectNotFound, StoreUnavailable
from storage.names import ItemState
from storage.records import Item, Job
from workers import metrics
from workers.context import WorkerContext
from workers.contract import StyleParams
from workers.handlers import ItemInput, ItemResult, JobHandler
from workers.imaging import ImageDecodeError, decode_image
from workers.models.registry import WeightsNotAvailable
from workers.style.engine import StyleEngine, StyleVariant, encode_image, output_size
from workers.style.onnx_models import DeviceNotAvailable

log = logging.getLogger("nightshift.style")
STYLE_SIDE = 1024  # style images are only ever seen at <= 512 px by the models; 1024 leaves room for style_scale
SHEET_ROWS = 8
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


class StyleInputError(ValueError):
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
                raise StyleInputError(f"style image {rel!r} is missing from storage") from None
            except ImageDecodeError as exc:
                raise StyleInputError(f"style image {PurePosixPath(rel).name!r} is unusable: {exc}") from None
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
                results[item.index] = ItemResult.failed(item.index, str(exc))
                continue
            width, height = output_size(img.size, self.params.size)
            if width * height > max_pixels:
                results[item.index] = ItemResult.failed(
                    item.index, f"output of {width}x{height} = {width * height / 1e6:.0f} MP exceeds the "
                                f"{max_pixels / 1e6:.0f} MP limit: ask for a smaller `size`")
                continue
            photos.append((item, img))
        if photos:
            try:
                variants = self.variants()
            except (StyleInputError, WeightsNotAvailable, DeviceNotAvailable) as exc:
                return [results.get(i.index) or ItemResult.failed(i.index, str(exc)) for i in batch]
            outputs: dict[int, list[str]] = {item.index: [] for item, _ in photos}
            costs: dict[int, list[Any]] = {item.index: [] for item, _ in photos}
            try:
                for variant in variants:
                    self.check_cancel()
                    for chunk in _renderable(photos, variant):
                        with metrics.STAGE.labels(stage="model").time():
                            rendered = engine(self.ctx).render_batch([img for _, img in chunk], variant)
                        for (item, _), img in zip(chunk, rendered, strict=True):
                            outputs[item.index].append(self._write(item, variant, img))
                            if variant.method == "gatys":
                                costs[item.index].append(engine(self.ctx).last_gatys_costs)
            except (WeightsNotAvailable, DeviceNotAvailable) as exc:
                return [results.get(i.index) or ItemResult.failed(i.index, str(exc)) for i in batch]
            for item, img in photos:
                info: dict[str, Any] = {"width": img.width, "height": img.height, "variants": len(variants)}
                if costs[item.index]:
                    info["gatys_costs"] = costs[item.index]  # per variant: [(J first, J last) per scale]
                results[item.index] = ItemResult(item.index, ItemState.DONE, outputs[item.index], info=info)
        return [results[i.index] for i in batch]

    def _write(self, item: ItemInput, variant: StyleVariant, img: Image.Image) -> str:
        """The output's key; it is encoded and uploaded beside the next batch (JobHandler.write)."""
        fmt, quality = self.params.format, self.params.quality

        def produce() -> tuple[bytes, str]:
            data, ctype, _ = encode_image(img, fmt, quality)
            return data, ctype

        stem = PurePosixPath(item.name).stem or f"item{item.index}"
        key = keys.variant_output(self.job.tenant, self.job.id, item.index, stem, variant.slug, EXTENSIONS[fmt])
        return self.write(key, produce, item=item.index)

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        """A contact sheet: the first photos (rows) x every variant (columns), originals first."""
        from workers.style.sheet import contact_sheet

        rows = []
        for item in [it for it in items if it.state == ItemState.DONE][:SHEET_ROWS]:
            try:
                original = decode_image(self.ctx.store.get_bytes(item.key), max_side=256)
                tiles = [("original", original)]
                for key in item.outputs:
                    label = PurePosixPath(key).stem.split("__", 1)[-1]
                    tiles.append((label, decode_image(self.ctx.store.get_bytes(key), max_side=256)))
            except StoreUnavailable:
                raise
            except (ObjectNotFound, ImageDecodeError):
                continue
            rows.append((PurePosixPath(item.name).stem, tiles))
        if not rows:
            return {}
        sheet = contact_sheet(rows, tile=256)
        buf = io.BytesIO()
        sheet.save(buf, "JPEG", quality=88)
        key = keys.job_artifact(job.tenant, job.id, "contact-sheet.jpg")
        self.ctx.store.put_bytes(key, buf.getvalue(), "image/jpeg")
        variants = sorted({PurePosixPath(k).stem.split("__", 1)[-1] for it in items for k in it.outputs})
        return {
            "artifacts": [keys.strip_tenant(job.tenant, key)],
            "variants": variants,
            "outputs": sum(len(it.outputs) for it in items),
        }
