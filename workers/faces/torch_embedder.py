"""``dlib-resnet-torch``: dlib's ResNet face descriptor run by torch, on the GPU when there is one, else on the
CPU (about 12x dlib-bin's speed there at batch 8 and more, one thread: docs/benchmarks.md).

Same landmarks as the dlib path (dlib's 5-point shape predictor on CPU, via `DlibAligner`), then
chips cut on the device (`workers.faces.chips`, pixel-identical to ``dlib.get_face_chips``) and the
network (`workers.faces.dlib_resnet`, weights read from dlib's own file) in batches. Its vectors are
dlib's to about 1e-6, so it shares dlib's embedding space.

Importing this module registers the embedder and imports neither torch nor dlib; `load()` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.faces.embedders import (
    CHIP_PADDING,
    CHIP_SIZE,
    TORCH_EMBEDDER,
    DlibAligner,
    Embedder,
    mirrored_inputs,
    register_embedder,
    resolve_device,
    split_per_image,
)
from workers.faces.types import Face
from workers.models.base import apply_torch_threads

if TYPE_CHECKING:
    import torch


class TorchDlibEmbedder(Embedder):
    """dlib's face descriptor in torch; `device` "auto" means CUDA when available, else CPU.

    `fp16` runs the network in half precision (CUDA only; about 1e-3 from the fp32 vectors);
    `max_batch_size` bounds the chips per forward pass; `seed` fixes the jitter draws.
    """

    name = TORCH_EMBEDDER
    version = "v1"

    def __init__(
        self,
        *,
        device: str = "auto",
        max_batch_size: int = 64,
        aligner: DlibAligner | None = None,
        fp16: bool = False,
        weights: Path | None = None,
        seed: int = 0,
    ) -> None:
        device = resolve_device(device)
        if fp16 and not device.startswith("cuda"):
            raise ValueError(f"fp16 needs a CUDA device, got {device!r}")
        self.dlib_aligner = aligner or DlibAligner()
        super().__init__(device=device, max_batch_size=max_batch_size, aligner=self.dlib_aligner)
        self.fp16 = fp16
        self.weights = weights
        self.seed = seed
        self._model: Any = None

    def _load(self) -> None:
        from workers.faces.dlib_resnet import load_face_resnet

        apply_torch_threads()
        if self.weights is not None:
            path = self.weights
        else:
            from workers.faces.weights import DLIB_RESNET, weights_path

            path = weights_path(DLIB_RESNET)
        self._model = load_face_resnet(path, self.device, self.fp16)

    def embed_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
        """(n, 150, 150, 3) uint8 RGB chips -> (n, 128) float32; `jitter` > 1 averages that many jittered copies."""
        import torch

        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(f"chips must be (n, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8, got {chips.dtype} {chips.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(chips)).to(self.device).permute(0, 3, 1, 2)
        return self.embed_tensor(tensor, jitter).cpu().numpy()

    def embed_tensor(self, chips: torch.Tensor, jitter: int = 0) -> torch.Tensor:
        """N x 3 x 150 x 150 chips (uint8 or float 0..255, any device) -> N x 128 float32 on this device."""
        import torch

        from workers.faces.chips import jitter_chips
        from workers.faces.dlib_resnet import embed_chips

        self.load()
        chips = chips.to(self.device)
        if jitter <= 1:  # dlib's rule: num_jitters 0 and 1 both mean "the chip as is"
            return embed_chips(self._model, chips, self.max_batch_size)
        generator = torch.Generator().manual_seed(self.seed)
        total = torch.zeros((chips.shape[0], self.dim), dtype=torch.float32, device=chips.device)
        for _ in range(jitter):
            total += embed_chips(self._model, jitter_chips(chips, generator), self.max_batch_size)
        return total / jitter

    def chip_tensor(self, image: np.ndarray, faces: Sequence[Face]) -> torch.Tensor:
        """The aligned chips of `faces` as N x 3 x 150 x 150 uint8 on this device (dlib's landmarks,
        chips cut on the device); faces found in a rotated image are cut from that image turned upright."""
        import torch

        from workers.faces.chips import extract_chips

        self.load()
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (h, w, 3) array, got {image.dtype} {image.shape}")
        chips = torch.zeros((len(faces), 3, CHIP_SIZE, CHIP_SIZE), dtype=torch.uint8, device=self.device)
        size = (image.shape[1], image.shape[0])
        for rotation in sorted({face.rotation for face in faces}):
            indices = [i for i, face in enumerate(faces) if face.rotation == rotation]
            upright = np.ascontiguousarray(np.rot90(image, rotation // 90)) if rotation else image
            shapes = self.dlib_aligner.shapes(upright, [faces[i].rotated(rotation, size) for i in indices])
            chips[indices] = extract_chips(upright, shapes, size=CHIP_SIZE, padding=CHIP_PADDING, device=self.device)
        return chips

    def align(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """The aligned chips of `faces`, (n, 150, 150, 3) uint8 (cut by torch, equal to dlib's)."""
        return np.ascontiguousarray(self.chip_tensor(image, faces).permute(0, 2, 3, 1).cpu().numpy())

    def embed_many(
        self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], jitter: int = 0, mirror: bool = False
    ) -> list[np.ndarray]:
        """Embeddings per image: the chips of all images (and with `mirror`, of the faces in the mirror images,
        landmarks found again there) cut and embedded on the device in the same batches."""
        import torch

        if len(images) != len(faces):
            raise ValueError(f"{len(images)} images but {len(faces)} face lists")
        parts = [self.chip_tensor(image, fs) for image, fs in zip(images, faces, strict=True) if fs]
        if not parts:
            return [np.zeros((0, self.dim), np.float32) for _ in faces]
        n = sum(len(p) for p in parts)
        if mirror:
            parts += [self.chip_tensor(image, fs) for image, fs in zip(*mirrored_inputs(images, faces), strict=True)]
        vectors = self.embed_tensor(torch.cat(parts), jitter).cpu().numpy()
        if mirror:
            vectors = self.combine_mirror(vectors[:n], vectors[n:])
        return split_per_image(vectors, faces)


register_embedder(TORCH_EMBEDDER, TorchDlibEmbedder)
