"""Face embedders: align each face to a chip, then map the chip to a vector (same person: small L2 distance).

The interface other engines plug into is `Embedder` (an `InferenceModel`: lazy, load-once, thread-safe):
a subclass sets `name`, `version`, `dim`, and implements `_load()` and
``embed_chips(chips, jitter) -> (n, dim) float32``; alignment is the aligner's (`DlibAligner` here, so a port of
the dlib ResNet to another runtime sees exactly the chips dlib sees). `embed_many(..., mirror=True)` averages
each face with its mirror image, both embedded in one batch. Register a builder with
`register_embedder(name, builder)`, where ``builder(device=...)`` returns the embedder. Modules that
register on import: ``workers.faces.torch_embedder`` ("dlib-resnet-torch"), ``workers.faces.sface``
("sface") and ``workers.faces.fused`` ("dlib+sface").

A stored vector's model id is ``<name>@<version>`` (``+mirror`` when mirror-averaged, `Embedder.model_id`);
`workers.faces.spaces` says which ids compare and at which thresholds.

dlib (and torch) are imported in `load()` / `resolve_device()`, never at module import.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from workers.faces.types import Face, rotate_points
from workers.models.base import InferenceModel

CHIP_SIZE = 150
CHIP_PADDING = 0.25
MIRROR = "+mirror"

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
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; anything else is returned unchanged."""
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


class Aligner(InferenceModel):
    """Cuts the aligned chip of each face out of an image: the input an embedding network was trained on."""

    @abstractmethod
    def chips(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Aligned RGB uint8 chips, (n, size, size, 3), in the order of `faces`."""


class DlibAligner(Aligner):
    """dlib's 5-point shape predictor on the face rectangle, then `dlib.get_face_chips` (150 px, padding 0.25):
    the alignment the dlib ResNet was trained with."""

    name = "dlib-shape-predictor-5"

    def __init__(self, *, chip_size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> None:
        super().__init__()
        self.chip_size = chip_size
        self.padding = padding
        self._predictor: Any = None

    def _load(self) -> None:
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


class Embedder(InferenceModel):
    """Maps faces of an RGB uint8 image to `dim`-D float32 vectors (same person: small L2 distance).

    Subclasses implement `_load()` and `embed_chips()`; `name` + `version` identify the model (`model_id`).
    `max_batch_size` bounds the chips of one forward pass.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    dim: ClassVar[int] = 128
    chip_size: ClassVar[int] = CHIP_SIZE

    def __init__(self, *, device: str = "cpu", max_batch_size: int = 32, aligner: Aligner | None = None) -> None:
        super().__init__()
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.device = device
        self.max_batch_size = max_batch_size
        self.aligner = aligner or DlibAligner()

    def load(self) -> None:
        """Load the aligner and the model (once)."""
        self.aligner.load()
        super().load()

    def model_id(self, mirror: bool = False) -> str:
        """What a stored vector records: ``<name>@<version>``, ``+mirror`` when mirror-averaged."""
        return f"{self.name}@{self.version}{MIRROR if mirror else ''}"

    def align(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """The aligned chips of `faces`, (n, chip_size, chip_size, 3) uint8."""
        self.load()
        return self.aligner.chips(_check_image(image), faces)

    def embed(self, image: np.ndarray, faces: Sequence[Face], jitter: int = 0, mirror: bool = False) -> np.ndarray:
        """Embeddings of `faces` in `image` (RGB uint8, (h, w, 3)): (n, dim) float32."""
        return self.embed_many([image], [faces], jitter, mirror)[0]

    def embed_many(
        self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], jitter: int = 0, mirror: bool = False
    ) -> list[np.ndarray]:
        """`embed` for several images, chips batched together across images (max_batch_size at a time).

        With `mirror`, each vector is combined (`combine_mirror`) with that of the same face in the image
        flipped left-right; the mirror chips go through the network in the same batches as the others.
        """
        _check_lists(images, faces)
        chips = [self.align(image, fs) for image, fs in zip(images, faces, strict=True) if fs]
        size = self.chip_size
        all_chips = np.concatenate(chips) if chips else np.zeros((0, size, size, 3), np.uint8)
        n = len(all_chips)
        if mirror and n:
            all_chips = np.concatenate([all_chips, self.mirror_chips(images, faces, all_chips)])
        vectors = [
            self.embed_chips(all_chips[s : s + self.max_batch_size], jitter)
            for s in range(0, len(all_chips), self.max_batch_size)
        ]
        flat = np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        if mirror and n:
            flat = self.combine_mirror(flat[:n], flat[n:])
        return split_per_image(flat, faces)

    def mirror_chips(
        self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], chips: np.ndarray
    ) -> np.ndarray:
        """The chips of the faces in the mirror images, in the order of `chips`. dlib's way: the landmarks are
        found again in the mirror image, so the two chips differ by more than a flip (worth 0.3 points on LFW)."""
        images, faces = mirrored_inputs(images, faces)
        return np.concatenate([self.align(image, fs) for image, fs in zip(images, faces, strict=True)])

    def combine_mirror(self, vectors: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        """One vector from a face's and its mirror image's (default: their mean)."""
        return ((vectors + mirrored) / 2).astype(np.float32)

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def embed_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
        """(n, S, S, 3) uint8 RGB chips -> (n, dim) float32. `jitter` > 1 averages that many randomly
        jittered copies of each chip (dlib's num_jitters); an empty batch gives (0, dim)."""


def _check_lists(images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]]) -> None:
    if len(images) != len(faces):
        raise ValueError(f"{len(images)} images but {len(faces)} face lists")


def mirrored_inputs(
    images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]]
) -> tuple[list[np.ndarray], list[list[Face]]]:
    """The images (those with faces) flipped left-right, and their faces in the flipped images."""
    keep = [i for i, fs in enumerate(faces) if fs]
    flipped = [np.ascontiguousarray(images[i][:, ::-1]) for i in keep]
    return flipped, [[f.mirrored(images[i].shape[1]) for f in faces[i]] for i in keep]


def split_per_image(vectors: Any, faces: Sequence[Sequence[Face]]) -> list[Any]:
    """Rows of `vectors` (all faces of all images, in order) split into one block per image."""
    bounds = np.cumsum([0, *(len(fs) for fs in faces)])
    return [vectors[bounds[i] : bounds[i + 1]] for i in range(len(faces))]


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
DLIB_EMBEDDER = "dlib-resnet"
TORCH_EMBEDDER = "dlib-resnet-torch"
SFACE_EMBEDDER = "sface"
FUSED_EMBEDDER = "dlib+sface"
# What "auto" means, chosen by measurement on the LFW dev folds (docs/benchmarks.md, "Choosing the embedder").
DEFAULT_EMBEDDER = FUSED_EMBEDDER

EMBEDDERS: dict[str, EmbedderBuilder] = {DLIB_EMBEDDER: DlibEmbedder}
# Embedders whose module registers them on import; imported on demand so that a missing optional
# dependency only matters to whoever asks for that embedder.
OPTIONAL_EMBEDDERS: dict[str, str] = {
    TORCH_EMBEDDER: "workers.faces.torch_embedder",
    SFACE_EMBEDDER: "workers.faces.sface",
    FUSED_EMBEDDER: "workers.faces.fused",
}
# Embedders that run torch (the engine asks torch about CUDA only for these, or for MTCNN)
TORCH_EMBEDDERS = frozenset({TORCH_EMBEDDER, FUSED_EMBEDDER})


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


def resolve_embedder(name: str) -> str:
    """ "auto" -> `DEFAULT_EMBEDDER`; any other name unchanged."""
    return DEFAULT_EMBEDDER if name == "auto" else name


def available_embedders() -> list[str]:
    """Names `get_embedder` accepts (besides "auto"), importing the optional ones that exist."""
    return sorted(name for name in {*EMBEDDERS, *OPTIONAL_EMBEDDERS} if _import_optional(name))


def get_embedder(name: str = "auto", device: str = "auto", **options: Any) -> Embedder:
    """Build the embedder `name` ("auto": `DEFAULT_EMBEDDER`) for `device` (not loaded yet).

    Raises ValueError for an unknown or unavailable name.
    """
    name = resolve_embedder(name)
    if not _import_optional(name):
        raise ValueError(f"unknown or unavailable embedder {name!r}; available: {', '.join(available_embedders())}")
    if name == DLIB_EMBEDDER and device == "auto":
        device = "cpu"  # dlib picks its device itself; no need to import torch to ask
    return EMBEDDERS[name](device=resolve_device(device), **options)
