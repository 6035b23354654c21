"""Previews of the 26 built-in styles, rendered once per deployment by a style worker.

A style worker asks for them when it starts (`nightshift.style.previews`); the first to run the task
renders each style on a sample photo that ships with scikit-image, stores small JPEGs under `system/`
and writes the index last. The API serves them as presigned URLs (`GET /v1/styles`) and never renders
anything itself: it must not import onnxruntime. A new network (another checksum) renders them anew.
"""

from __future__ import annotations

import io
import logging
import time

from PIL import Image

from storage import keys
from storage.errors import ObjectNotFound
from workers.context import WorkerContext
from workers.contract import NUM_BUILTIN_STYLES, StyleParams, StylePreviews
from workers.models.registry import spec
from workers.style.engine import StyleEngine, expand_variants
from workers.style.faces import default_protection, find_faces, protect_faces
from workers.style.onnx_models import MULTISTYLE_WEIGHTS

log = logging.getLogger("nightshift.style.previews")
SIDE = 224
SAMPLE = "skimage.data.astronaut"
RECIPE = f"astronaut-{SIDE}-3"  # bump when the sample, the size or the rendering changes


def version() -> str:
    """What the previews depend on: the network's checksum and the recipe."""
    return f"{(spec(MULTISTYLE_WEIGHTS).sha256 or 'unknown')[:12]}-{RECIPE}"


def sample_photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def current(ctx: WorkerContext) -> StylePreviews | None:
    try:
        return StylePreviews.model_validate(ctx.store.get_json(keys.style_previews_index()))
    except ObjectNotFound:
        return None


def ensure_previews(ctx: WorkerContext, engine: StyleEngine) -> bool:
    """Render and store the previews unless the current ones are there; True when it rendered them."""
    want = version()
    found = current(ctx)
    if found is not None and found.version == want:
        return False
    photo = sample_photo()
    faces = find_faces(photo)
    stored = []
    for index in range(NUM_BUILTIN_STYLES):
        params = StyleParams(method="builtin", builtin=[index])
        variant = expand_variants(params)[0]
        buf = io.BytesIO()
        # as a job renders it by default: faces protected
        protected = protect_faces(engine.render(photo, variant), photo, faces, default_protection(variant.builtin))
        protected.save(buf, "JPEG", quality=85)
        key = keys.style_preview(want, index)
        ctx.store.put_bytes(key, buf.getvalue(), "image/jpeg")
        stored.append(key)
    index_doc = StylePreviews(version=want, keys=stored, sample=SAMPLE, rendered_at=time.time())
    ctx.store.put_json(keys.style_previews_index(), index_doc.model_dump(mode="json"))
    log.info("rendered previews of the %d built-in styles (%s)", NUM_BUILTIN_STYLES, want)
    return True
