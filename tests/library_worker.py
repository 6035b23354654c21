"""A Celery worker app for library tests: the real tasks and pipeline, with a synthetic face engine.

No face photos of many different people ship with any package, and tests may not need the LFW data, so
the library's behaviour over nights of photos is tested with synthetic people: a test photo is a PNG of
80 x 80 squares on black, one per face, coloured (8 * (person % 32) + 4, 4 * look + 2, 250 - 20 * (person // 32))
for people 0-95. This engine
"detects" each square and embeds it as that person's identity vector plus a small look-dependent
deviation, like a real embedder: the same person lands within ~0.3, different people ~1.4 apart. Every
other part (storage, Celery, the pipeline, the library, the API) is the real one.

    celery -A tests.library_worker worker -Q faces
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

import workers.faces.handler as faces_handler
import workers.people.service as people_service
from workers.faces.spaces import EmbeddingSpace, Thresholds, register_space
from workers.faces.types import Face, PhotoFaces
from workers.tasks import app

__all__ = ["app", "identity_photo", "SYNTHETIC"]
SIDE = 80  # one face square
DIM = 128
SYNTHETIC = register_space(
    EmbeddingSpace(
        id="synthetic-v1",
        dim=DIM,
        models=("synthetic@v1",),
        calibration="tests/library_worker.py",
        thresholds=Thresholds(
            verify=0.8, cluster=0.7, identify=0.7, identify_margin=0.05, assign=0.7, assign_margin=0.05
        ),
    )
)


def identity_photo(faces: list[tuple[int, int]], width_blocks: int | None = None) -> bytes:
    """A PNG showing (person, look) faces side by side."""
    blocks = width_blocks or max(len(faces), 1)
    img = Image.new("RGB", (SIDE * blocks + 20, SIDE + 20), (0, 0, 0))
    for n, (person, look) in enumerate(faces):
        if not 0 <= person < 96:
            raise ValueError(f"synthetic people are 0-95, got {person}")
        colour = (8 * (person % 32) + 4, (4 * look + 2) % 256, 250 - 20 * (person // 32))
        img.paste(colour, (10 + n * SIDE, 10, 10 + (n + 1) * SIDE - 8, SIDE + 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def identity_vector(person: int, look: int) -> np.ndarray:
    base = np.random.default_rng(person).normal(size=DIM)
    base /= np.linalg.norm(base)
    noise = np.random.default_rng(10_000 + 97 * person + look).normal(size=DIM)
    return (base + 0.011 * noise).astype(np.float32)


class _Embedder:
    name = "synthetic"
    version = "v1"
    dim = DIM


class SyntheticEngine:
    """Detects the coloured squares and embeds them (the interface the faces handler uses)."""

    embedder = _Embedder()
    version = "v1"
    model_id = "synthetic@v1"

    def index_batch(self, images: list[Image.Image], stage: Any = None) -> list[PhotoFaces]:
        return [self.index_photo(image) for image in images]

    def detect_batch(self, images: list[Image.Image]) -> list[list[Face]]:
        out = []
        for image in images:
            a = np.asarray(image.convert("RGB"))
            faces = []
            for x in range(10, a.shape[1] - SIDE // 2, SIDE):
                r, g, b = (int(v) for v in a[SIDE // 2, x + SIDE // 2])
                if b > 195:
                    faces.append(Face(box=(float(x), 10.0, float(x + SIDE - 8), float(SIDE + 2)), score=0.99))
            out.append(faces)
        return out

    def embed_batch(self, images: list[np.ndarray], faces: list[list[Face]]) -> list[np.ndarray]:
        out = []
        for image, fs in zip(images, faces, strict=True):
            vecs = []
            for f in fs:
                cx, cy = int((f.box[0] + f.box[2]) / 2), int((f.box[1] + f.box[3]) / 2)
                r, g, b = (int(v) for v in image[cy, cx])
                person = round((r - 4) / 8) + 32 * round((250 - b) / 20)
                vecs.append(identity_vector(person, round((g - 2) / 4)))
            out.append(np.array(vecs, np.float32).reshape(-1, DIM))
        return out

    def index_photo(self, image: Image.Image) -> PhotoFaces:
        faces = self.detect_batch([image])[0]
        vectors = self.embed_batch([np.asarray(image.convert("RGB"))], [faces])[0]
        return PhotoFaces(faces=faces, embeddings=vectors, size=image.size, model="synthetic", model_version="v1")


def _engine(*_: Any, **__: Any) -> SyntheticEngine:
    return SyntheticEngine()


faces_handler.engine_for = _engine  # type: ignore[assignment]
people_service.engine_for = _engine  # type: ignore[assignment]
