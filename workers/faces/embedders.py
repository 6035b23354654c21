"""Face embedders: align each face to a dlib face chip, then map the chip to a 128-D vector.

The interface other engines plug into is `Embedder`: a subclass sets `name`, `version` (and `space`
when its vectors are not comparable with dlib's) and implements `_load()` and
``embed_chips(chips, jitter) -> (n, dim) float32``; alignment is shared (`DlibAligner`), so a port of
the dlib ResNet to another runtime sees exactly the chips dlib sees. Register a builder with
`register_embedder(name, builder)`, where ``builder(device=...)`` returns the embedder; the torch port
lives in ``workers.faces.torch_embedder`` and registers "dlib-resnet-torch" when imported.

dlib (and torch) are imported in `load()` / `resolve_device()`, never at module import.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from workers.faces.types import Face, rotate_points

CHIP_SIZE = 150
CHIP_PADDING = 0.25
DLIB_SPACE = "dlib-resnet-v1"

# dlib's shape predictor was trained from dlib detector rectangles; MTCNN boxes are taller and sit
# higher. From MTCNN's landmarks we rebuild the rectangle dlib's HOG detector would give:
# centre = eye midpoint + a*(right eye - left eye) + b*(mouth midpoint - eye midpoint),
# side = c*|eye vector| + d*|eye-to-mouth vector|. Fitted by least squares on 300 LFW images where
# both detectors found the face (geometry only, no identity labels); on 300 others it halves the
# descriptor change caused by using the raw MTCNN box (mean 0.079 -> 0.035).
_RECT_FROM_LANDMARKS = (-0.0958, 0.4164, 1.3766, 1.0251)

# (image turned upright for some faces, their indices, their dlib 5-point shapes (k, 5, 2) in that image)
UprightShapes = tuple[np.ndarray, list[int], np.ndarray]


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; anything else is returned unchanged."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def start_rectangle(face: Face) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) inclusive dlib rectangle the shape predictor starts from.

    `face` must be upright (rotation 0). With landmarks it is the dlib-style box rebuilt from them,
    without (HOG) the detector's own box.
    """
    if face.landmarks is None:
        x1, y1, x2, y2 = face.box
        return round(x1), round(y1), round(x2) - 1, round(y2) - 1
    a, b, c, d = _RECT_FROM_LANDMARKS
    pts = np.asarray(face.landmarks, dtype=np.float64)
    eyes = (pts[0] + pts[1]) / 2
    across = pts[1] - pts[0]
    down = (pts[3] + pts[4]) / 2 - eyes
    cx, cy = eyes + a * across + b * down
    half = (c * np.linalg.norm(across) + d * np.linalg.norm(down)) / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


class DlibAligner:
    """dlib's 5-point shape predictor on the face rectangle, then `dlib.get_face_chips` (150 px, padding 0.25):
    the alignment the dlib ResNet was trained with."""

    def __init__(self, *, chip_size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> None:
        self.chip_size = chip_size
        self.padding = padding
        self._predictor: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._predictor is None:
                import dlib

                from workers.faces.weights import DLIB_SHAPE_5, weights_path

                self._predictor = dlib.shape_predictor(str(weights_path(DLIB_SHAPE_5)))

    def upright_shapes(self, image: np.ndarray, faces: Sequence[Face]) -> list[UprightShapes]:
        """Per rotation among `faces`: (the image turned so those faces are upright, their indices in `faces`,
        dlib's 5-point shapes (k, 5, 2) float32 in that image). What a chip extractor of its own needs."""
        out = []
        for _, indices, upright, up_faces in _by_rotation(image, faces):
            shapes = self._shapes(upright, up_faces)
            points = np.array([[[p.x, p.y] for p in shape.parts()] for shape in shapes], dtype=np.float32)
            out.append((upright, indices, points.reshape(len(indices), 5, 2)))
        return out

    def shapes(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """dlib's 5-point shape of each face, (n, 5, 2) in original-image pixels: outer and inner corner of
        the image-right eye, the same of the image-left eye, nose base (as seen upright)."""
        out = np.zeros((len(faces), 5, 2), np.float32)
        for upright, indices, points in self.upright_shapes(image, faces):
            rotation = faces[indices[0]].rotation
            size = (upright.shape[1], upright.shape[0])
            for i, pts in zip(indices, points, strict=True):
                out[i] = rotate_points(pts, -rotation, size)
        return out

    def chips(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Aligned RGB uint8 chips, (n, chip_size, chip_size, 3), in the order of `faces`."""
        import dlib

        out = np.zeros((len(faces), self.chip_size, self.chip_size, 3), dtype=np.uint8)
        for _, indices, upright, up_faces in _by_rotation(image, faces):
            shapes = self._shapes(upright, up_faces)
            out[indices] = np.stack(dlib.get_face_chips(upright, shapes, self.chip_size, self.padding))
        return out

    def _shapes(self, upright: np.ndarray, faces: Sequence[Face]) -> Any:
        import dlib

        self.load()
        shapes = dlib.full_object_detections()
        for face in faces:
            shapes.append(self._predictor(upright, dlib.rectangle(*start_rectangle(face))))
        return shapes


def _by_rotation(image: np.ndarray, faces: Sequence[Face]) -> Iterator[tuple[int, list[int], np.ndarray, list[Face]]]:
    """Per rotation among `faces`: (rotation, face indices, the image turned upright, the faces in it)."""
    size = (image.shape[1], image.shape[0])
    groups: dict[int, list[int]] = {}
    for i, face in enumerate(faces):
        groups.setdefault(face.rotation, []).append(i)
    for rotation, indices in groups.items():
        yield rotation, indices, _upright(image, rotation), [faces[i].rotated(rotation, size) for i in indices]


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    # dlib wants C-contiguous arrays; np.rot90 returns a strided view
    return np.ascontiguousarray(np.rot90(image, rotation // 90)) if rotation else np.ascontiguousarray(image)


class Embedder(ABC):
    """Maps faces of an RGB uint8 image to `dim`-D float32 vectors (same person: small L2 distance).

    Subclasses implement `_load()` and `embed_chips()`. Vectors of embedders with equal `space` are
    comparable (a faithful port of a model keeps its `space`); `name` + `version` identify the model.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    space: ClassVar[str] = DLIB_SPACE
    dim: ClassVar[int] = 128

    def __init__(self, *, device: str = "cpu", max_batch_size: int = 32, aligner: DlibAligner | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.device = device
        self.max_batch_size = max_batch_size
        self.aligner = aligner or DlibAligner()
        self._loaded = False
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the aligner and the model (once)."""
        with self._lock:
            if not self._loaded:
                self.aligner.load()
                self._load()
                self._loaded = True

    def align(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """The aligned chips of `faces`, (n, 150, 150, 3) uint8."""
        self.load()
        return self.aligner.chips(_check_image(image), faces)

    def embed(self, image: np.ndarray, faces: Sequence[Face], jitter: int = 0) -> np.ndarray:
        """Embeddings of `faces` in `image` (RGB uint8, (h, w, 3)): (n, dim) float32."""
        return self.embed_many([image], [faces], jitter)[0]

    def embed_many(
        self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], jitter: int = 0
    ) -> list[np.ndarray]:
        """`embed` for several images, chips batched together across images (max_batch_size at a time)."""
        if len(images) != len(faces):
            raise ValueError(f"{len(images)} images but {len(faces)} face lists")
        chips = [self.align(image, fs) for image, fs in zip(images, faces, strict=True) if fs]
        all_chips = np.concatenate(chips) if chips else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        vectors = [self.embed_chips(all_chips[s : s + self.max_batch_size], jitter)
                   for s in range(0, len(all_chips), self.max_batch_size)]
        flat = np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        bounds = np.cumsum([0, *(len(fs) for fs in faces)])
        return [flat[bounds[i] : bounds[i + 1]] for i in range(len(faces))]

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def embed_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
        """(n, 150, 150, 3) uint8 RGB chips -> (n, dim) float32. `jitter` > 1 averages that many randomly
        jittered copies of each chip (dlib's num_jitters); an empty batch gives (0, dim)."""


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (h, w, 3) array, got {image.dtype} {image.shape}")
    return image


class DlibEmbedder(Embedder):
    """dlib's ResNet face descriptor (``dlib.face_recognition_model_v1``), batched over chips; CPU
    unless dlib was built with CUDA."""

    name = "dlib-resnet"
    version = "v1"

    def __init__(self, *, device: str = "cpu", max_batch_size: int = 32, aligner: DlibAligner | None = None) -> None:
        super().__init__(device=device, max_batch_size=max_batch_size, aligner=aligner)
        self._model: Any = None

    def _load(self) -> None:
        import dlib

        from workers.faces.weights import DLIB_RESNET, weights_path

        self._model = dlib.face_recognition_model_v1(str(weights_path(DLIB_RESNET)))

    def embed_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
        self.load()
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = [np.ascontiguousarray(chip) for chip in chips]
        return np.asarray(self._model.compute_face_descriptor(batch, jitter), dtype=np.float32)


EmbedderBuilder = Callable[..., Embedder]
DEFAULT_EMBEDDER = "dlib-resnet"
TORCH_EMBEDDER = "dlib-resnet-torch"

EMBEDDERS: dict[str, EmbedderBuilder] = {DEFAULT_EMBEDDER: DlibEmbedder}
# Embedders whose module registers them on import; imported on demand so that a missing optional
# dependency only matters to whoever asks for that embedder.
OPTIONAL_EMBEDDERS: dict[str, str] = {TORCH_EMBEDDER: "workers.faces.torch_embedder"}


def register_embedder(name: str, builder: EmbedderBuilder) -> None:
    """Make `builder(device=...)` available as `name` to `get_embedder`."""
    EMBEDDERS[name] = builder


def _import_optional(name: str) -> bool:
    module = OPTIONAL_EMBEDDERS.get(name)
    if name in EMBEDDERS or module is None:
        return name in EMBEDDERS
    if importlib.util.find_spec(module) is None:
        return False
    importlib.import_module(module)
    return name in EMBEDDERS


def torch_embedder_installed() -> bool:
    """Whether the torch port's module exists (found without importing it, or torch)."""
    return TORCH_EMBEDDER in EMBEDDERS or importlib.util.find_spec(OPTIONAL_EMBEDDERS[TORCH_EMBEDDER]) is not None


def available_embedders() -> list[str]:
    """Names `get_embedder` accepts (besides "auto"), importing the optional ones that exist."""
    return sorted(name for name in {*EMBEDDERS, *OPTIONAL_EMBEDDERS} if _import_optional(name))


def get_embedder(name: str = "auto", device: str = "auto", **options: Any) -> Embedder:
    """Build the embedder `name` for `device` (not loaded yet).

    "auto" picks "dlib-resnet-torch" on CUDA when it is registered, else "dlib-resnet". Raises
    ValueError for an unknown or unavailable name.
    """
    if name == "auto":
        if device != "cpu" and torch_embedder_installed() and _import_optional(TORCH_EMBEDDER) and (
            resolve_device(device).startswith("cuda")
        ):
            name = TORCH_EMBEDDER
        else:
            name = DEFAULT_EMBEDDER
    if not _import_optional(name):
        raise ValueError(f"unknown or unavailable embedder {name!r}; available: {', '.join(available_embedders())}")
    if name == DEFAULT_EMBEDDER and device == "auto":
        device = "cpu"  # dlib picks its device itself; no need to import torch to ask
    return EMBEDDERS[name](device=resolve_device(device), **options)
