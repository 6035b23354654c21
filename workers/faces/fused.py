"""``dlib+sface``: one vector per face whose Euclidean distance fuses dlib's ResNet and SFace.

The vector is ``[a * dlib, b * sface]`` (dlib's 128-D descriptor from the torch port, SFace's 128-D unit
vector), so ``|u - v|^2 = a^2 d_dlib^2 + b^2 d_sface^2``: search, clustering, verification and the library
compare these vectors like any other, by plain Euclidean distance, with the thresholds of their own space
(`workers.faces.spaces`). The two models make different mistakes (dlib's ResNet trained on ~3 M faces with
a metric loss, SFace on MS-Celeb with a margin loss), and the fused distance separates more pairs than
either (docs/benchmarks.md). `a` and `b` were chosen on the LFW dev folds; changing them makes another
model version.

Importing this module registers the embedder; the parts load with it (torch, onnxruntime, dlib).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.faces.embedders import FUSED_EMBEDDER, DlibAligner, Embedder, register_embedder
from workers.faces.sface import ArcFaceAligner, SFaceEmbedder
from workers.faces.torch_embedder import TorchDlibEmbedder
from workers.faces.types import Face

# Weights of the two distances, chosen on lfw-dev (bench/lfw.py --fuse): see FUSED spaces in spaces.py.
DLIB_WEIGHT = 1.0
SFACE_WEIGHT = 0.7


class FusedEmbedder(Embedder):
    """dlib's ResNet (torch) and SFace on the same faces; their vectors scaled and concatenated (256-D).

    `options` go to both parts (`max_batch_size`); `fp16` runs both in half precision (CUDA).
    """

    name = FUSED_EMBEDDER
    version = "v1"
    dim = 256

    def __init__(
        self,
        *,
        device: str = "auto",
        max_batch_size: int = 32,
        fp16: bool = False,
        dlib_weight: float = DLIB_WEIGHT,
        sface_weight: float = SFACE_WEIGHT,
        **options: Any,
    ) -> None:
        dlib_aligner = DlibAligner()  # one shape predictor for both parts
        self.dlib = TorchDlibEmbedder(
            device=device, max_batch_size=max_batch_size, aligner=dlib_aligner, fp16=fp16, **options
        )
        super().__init__(device=self.dlib.device, max_batch_size=max_batch_size, aligner=dlib_aligner)
        self.sface = SFaceEmbedder(
            device=self.dlib.device,
            max_batch_size=max_batch_size,
            fp16=fp16,
            aligner=ArcFaceAligner(dlib_aligner=dlib_aligner),
        )
        self.weights = (float(dlib_weight), float(sface_weight))

    def _load(self) -> None:
        self.dlib.load()
        self.sface.load()

    def embed_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
        raise NotImplementedError(
            "dlib+sface embeds faces of images (each part aligns them its own way), not chips: use embed_many"
        )

    def align(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """dlib's chips (150x150) of `faces`; SFace aligns its own (`self.sface.align`)."""
        return self.dlib.align(image, faces)

    def embed_many(
        self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], jitter: int = 0, mirror: bool = False
    ) -> list[np.ndarray]:
        """Both parts' vectors of every face, scaled and side by side: (n, 256) float32 per image."""
        self.load()
        dlib = self.dlib.embed_many(images, faces, jitter, mirror)
        sface = self.sface.embed_many(images, faces, jitter, mirror)
        a, b = self.weights
        return [np.concatenate([a * d, b * s], axis=1).astype(np.float32) for d, s in zip(dlib, sface, strict=True)]


register_embedder(FUSED_EMBEDDER, FusedEmbedder)
