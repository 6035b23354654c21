"""The face-indexing engine: detect every face of a photo, align it and embed it.

Detection runs on a copy of the photo whose long side is at most ``detect_size`` (boxes are scaled
back); alignment and embedding use the full-resolution photo, so chips are as sharp as the photo
allows. Models load lazily, once per engine, in the process that uses them (never in the parent of a
prefork pool).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
from PIL import Image

from workers.contract import FacesParams
from workers.faces.detectors import Detector, HOGDetector, MTCNNDetector, YuNetDetector, detect_with_rotations
from workers.faces.embedders import TORCH_EMBEDDERS, Embedder, get_embedder, resolve_device, resolve_embedder
from workers.faces.types import Face, PhotoFaces

# A stage timer: called with "detect" or "embed", returns a context manager around that stage (metrics).
StageTimer = Callable[[str], AbstractContextManager[object]]


def _untimed(stage: str) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


def build_detector(params: FacesParams, device: str = "cpu") -> Detector:
    """The detector `params` ask for.

    `min_face_size` is in pixels of the image the detector sees (long side `detect_size`).
    `score_threshold` is MTCNN's face probability or YuNet's score (None: the detector's default); the HOG
    detector keeps dlib's own threshold (its score is an SVM margin, not a probability).
    """
    if params.detector == "hog":
        return HOGDetector(min_face_size=params.min_face_size)
    cls: type[MTCNNDetector] | type[YuNetDetector] = YuNetDetector if params.detector == "yunet" else MTCNNDetector
    threshold = cls.default_score_threshold if params.score_threshold is None else params.score_threshold
    return cls(min_face_size=params.min_face_size, score_threshold=threshold, device=device)


class FaceEngine:
    """Detect -> align -> embed for `FacesParams`. One engine per worker process (or thread): dlib's models
    keep per-call buffers, so calls into one engine are not meant to run concurrently."""

    def __init__(
        self,
        params: FacesParams | None = None,
        device: str = "auto",
        *,
        detector: Detector | None = None,
        embedder: Embedder | None = None,
        mirror: bool | None = None,
    ) -> None:
        self.params = params or FacesParams()
        # `mirror` overrides params.mirror (benches compare both on one parameter set)
        self.mirror = self.params.mirror if mirror is None else mirror
        self._device = device
        self._detector = detector
        self._embedder = embedder
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        """The resolved device ("auto" becomes "cuda" or "cpu" on first use)."""
        if self._device == "auto":
            uses_torch = self.params.detector in ("mtcnn", "yunet") or (
                resolve_embedder(self.params.embedder) in TORCH_EMBEDDERS
            )
            # a dlib-only pipeline (HOG + dlib ResNet) never imports torch just to ask about CUDA
            self._device = resolve_device("auto") if uses_torch else "cpu"
        return self._device

    @property
    def detector(self) -> Detector:
        with self._lock:
            if self._detector is None:
                self._detector = build_detector(self.params, self.device)
            return self._detector

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = get_embedder(self.params.embedder, self.device)
            return self._embedder

    def load(self) -> None:
        """Load every model now (a worker can warm up before its first chunk)."""
        self.detector.load()
        self.embedder.load()

    def index_photo(self, image: Image.Image) -> PhotoFaces:
        """Every face of `image` with its embedding; a photo without faces gives an empty result."""
        return self.index_batch([image])[0]

    def index_batch(self, images: Sequence[Image.Image], stage: StageTimer = _untimed) -> list[PhotoFaces]:
        """`index_photo` for several photos, batching detection and embedding across them; `stage` times the
        "detect" and "embed" stages (a worker passes its metrics)."""
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        with stage("detect"):
            faces = self.detect_batch(rgb)
        with stage("embed"):
            vectors = self.embed_batch([np.asarray(image) for image in rgb], faces)
        return [
            PhotoFaces(faces=fs, embeddings=vs, size=image.size, model=self.embedder.name, model_version=self.version)
            for image, fs, vs in zip(rgb, faces, vectors, strict=True)
        ]

    @property
    def version(self) -> str:
        """The embedder's version, marked when embeddings are mirror-averaged (same space, other values)."""
        return f"{self.embedder.version}+mirror" if self.mirror else self.embedder.version

    @property
    def model_id(self) -> str:
        """What every stored vector of this engine records: ``<embedder>@<version>`` (`workers.faces.spaces`)."""
        return self.embedder.model_id(self.mirror)

    def embed_batch(self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]]) -> list[np.ndarray]:
        """Embeddings of `faces` in RGB uint8 `images`; with `mirror`, each is combined with the embedding of
        the face in the image flipped left-right, both in the same batches. That test-time augmentation takes
        LFW verification from 98.70 % to 99.00 % with dlib's ResNet (bench/lfw.py, LFW dev folds) for twice
        the network work."""
        return self.embedder.embed_many(images, faces, jitter=self.params.jitter, mirror=self.mirror)

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """The faces of each image, in its own pixel coordinates (detected at `detect_size`)."""
        small, scales = zip(*(self._for_detector(image) for image in images), strict=True) if images else ((), ())
        if self.params.try_rotations:
            found = detect_with_rotations(self.detector, small)
        else:
            found = self.detector.detect_batch(small)
        return [[face.scaled(sx, sy) for face in fs] for fs, (sx, sy) in zip(found, scales, strict=True)]

    def _for_detector(self, image: Image.Image) -> tuple[Image.Image, tuple[float, float]]:
        """`image` shrunk to `detect_size` on its long side, and the factors that map back."""
        width, height = image.size
        factor = self.params.detect_size / max(width, height)
        if factor >= 1:
            return image, (1.0, 1.0)
        small = image.resize(
            (max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        return small, (width / small.width, height / small.height)
