"""A reader for dlib's serialized DNN files (``dlib::serialize(net)``), such as
``dlib_face_recognition_resnet_model_v1.dat``. Pure numpy: no dlib, no torch.

The stream is what dlib's nested layer templates write, outermost first:

- ``add_loss_layer``: version, the loss details, then the subnetwork;
- ``add_layer``: version, the subnetwork, *then* the layer's details and bookkeeping
  (flags and usually-empty tensors); the bottom one also holds the input layer;
- ``add_tag_layer`` / ``add_skip_layer``: version 1 and the subnetwork, nothing else, so the
  file cannot tell a tag from a skip nor their ids: the architecture supplies those.

Scalars use dlib's portable encodings (see `Stream`); tensors are raw little-endian float32.
"""

from __future__ import annotations

import bz2
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.models import WeightsNotAvailable

TAG_OR_SKIP = "tag_or_skip"

# dlib's float_details marks non-finite values with these exponents.
_SPECIAL_EXPONENTS = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}


class DlibFormatError(ValueError):
    """The bytes are not a dlib network this reader understands; the message says where it stopped."""


@dataclass(frozen=True)
class Layer:
    """One layer of the stack: its kind (``con``, ``affine``, ...), dlib's version tag (``con_4``),
    its hyperparameters and its parameter tensor (flat float32, as dlib stores it) if any."""

    kind: str
    tag: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    params: np.ndarray | None = None


@dataclass(frozen=True)
class DlibNet:
    """A parsed network: `layers` from the top (just under the loss) down to the input."""

    loss: Layer
    layers: list[Layer]
    input: Layer

    def count(self, kind: str) -> int:
        """How many layers of `kind` the stack holds."""
        return sum(layer.kind == kind for layer in self.layers)


class Stream:
    """A cursor over dlib's serialization primitives.

    Integers: one control byte (bit 7 = negative, low 4 bits = byte count) and then the magnitude,
    little-endian. Floats and doubles: a (mantissa, exponent) integer pair, value = m * 2**e.
    Strings: a length and the raw bytes. Bools: one ASCII ``'0'`` or ``'1'``.
    """

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of data at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read_int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte {control:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return float(np.ldexp(float(mantissa), exponent))

    def read_string(self) -> str:
        return bytes(self._take(self.read_int())).decode("latin-1")

    def read_bool(self) -> bool:
        flag = bytes(self._take(1))
        if flag not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {flag!r} at byte {self.pos - 1}")
        return flag == b"1"

    def read_tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: version 2, four dims (n, k, nr, nc), then raw float32 data."""
        version = self.read_int()
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version} at byte {self.pos}")
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor`` (a view's shape into a parameter tensor): version 1 and four dims."""
        version = self.read_int()
        if version != 1:
            raise DlibFormatError(f"unsupported alias_tensor version {version} at byte {self.pos}")
        n, k, nr, nc = (self.read_int() for _ in range(4))
        return n, k, nr, nc

    def peek_string_prefix(self, prefix: str) -> bool:
        """Whether a string starting with `prefix` comes next (without consuming anything)."""
        start = self.pos
        try:
            return self.read_string().startswith(prefix)
        except DlibFormatError:
            return False
        finally:
            self.pos = start


def _flat(tensor: np.ndarray) -> np.ndarray:
    return tensor.reshape(-1)


def _read_con(s: Stream) -> tuple[dict[str, Any], np.ndarray]:
    params = s.read_tensor()
    keys = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    attrs: dict[str, Any] = {key: s.read_int() for key in keys}
    attrs["filters_shape"] = s.read_alias()
    attrs["biases_shape"] = s.read_alias()
    attrs["multipliers"] = tuple(s.read_float() for _ in range(4))
    return attrs, _flat(params)


def _read_con5(s: Stream) -> tuple[dict[str, Any], np.ndarray]:
    attrs, params = _read_con(s)
    attrs["use_bias"] = s.read_bool()
    return attrs, params


def _read_affine(s: Stream) -> tuple[dict[str, Any], np.ndarray]:
    params = s.read_tensor()
    attrs = {"gamma_shape": s.read_alias(), "beta_shape": s.read_alias(), "mode": s.read_int()}
    return attrs, _flat(params)


def _read_pool(s: Stream) -> tuple[dict[str, Any], None]:
    keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return {key: s.read_int() for key in keys}, None


def _read_fc(s: Stream) -> tuple[dict[str, Any], np.ndarray]:
    attrs: dict[str, Any] = {"num_outputs": s.read_int(), "num_inputs": s.read_int()}
    params = s.read_tensor()
    attrs["weights_shape"] = s.read_alias()
    attrs["biases_shape"] = s.read_alias()
    attrs["bias_mode"] = s.read_int()
    attrs["multipliers"] = tuple(s.read_float() for _ in range(4))
    return attrs, _flat(params)


def _read_nothing(s: Stream) -> tuple[dict[str, Any], None]:
    return {}, None


def _read_input_rgb(s: Stream) -> tuple[dict[str, Any], None]:
    means = (s.read_float(), s.read_float(), s.read_float())
    return {"means": means, "rows": s.read_int(), "cols": s.read_int()}, None


def _read_loss_metric(s: Stream) -> tuple[dict[str, Any], None]:
    return {"margin": s.read_float(), "distance_threshold": s.read_float()}, None


_Reader = Callable[[Stream], tuple[dict[str, Any], "np.ndarray | None"]]

# dlib version tag -> (kind, reader). Only what dlib's metric and classification nets use.
LAYER_READERS: dict[str, tuple[str, _Reader]] = {
    "con_4": ("con", _read_con),
    "con_5": ("con", _read_con5),
    "affine_": ("affine", _read_affine),
    "relu_": ("relu", _read_nothing),
    "add_prev_": ("add_prev", _read_nothing),
    "max_pool_2": ("max_pool", _read_pool),
    "avg_pool_2": ("avg_pool", _read_pool),
    "fc_2": ("fc", _read_fc),
}
INPUT_READERS: dict[str, _Reader] = {
    "input_rgb_image_sized": _read_input_rgb,
}
LOSS_READERS: dict[str, _Reader] = {
    "loss_metric_2": _read_loss_metric,
}


def _read_details(s: Stream, readers: dict[str, tuple[str, _Reader]]) -> Layer:
    at = s.pos
    tag = s.read_string()
    if tag not in readers:
        raise DlibFormatError(f"unsupported layer {tag!r} at byte {at}")
    kind, reader = readers[tag]
    attrs, params = reader(s)
    return Layer(kind=kind, tag=tag, attrs=attrs, params=params)


def _skip_training_state(s: Stream, version: int, bottom: bool) -> None:
    """Skip an add_layer's training state: three flags and tensors that are empty in a saved net."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        s.read_bool()
    for _ in range(3):  # x_grad, cached_output, then params_grad (grad_final at the bottom)
        s.read_tensor()
    if bottom and version >= 3:
        s.read_int()  # sample_expansion_factor


def parse_dlib_net(data: bytes) -> DlibNet:
    """Parse a serialized dlib network (raw or bzip2-compressed bytes) into its layer stack.

    Raises DlibFormatError when the bytes hold something else.
    """
    if data[:3] == b"BZh":  # dlib's model downloads come as .dat.bz2
        try:
            data = bz2.decompress(data)
        except (OSError, ValueError) as exc:
            raise DlibFormatError(f"corrupt bzip2 data: {exc}") from exc
    s = Stream(data)
    if s.read_int() != 1:
        raise DlibFormatError("not a dlib network: add_loss_layer version 1 expected at byte 0")
    loss_at = s.pos
    loss_tag = s.read_string()
    if loss_tag not in LOSS_READERS:
        raise DlibFormatError(f"unsupported loss {loss_tag!r} at byte {loss_at}")
    loss = Layer(kind="loss", tag=loss_tag, attrs=LOSS_READERS[loss_tag](s)[0])

    # Versions come outermost first; a version followed by an input layer's name is the bottom.
    versions: list[int] = []
    while True:
        versions.append(s.read_int())
        if s.peek_string_prefix("input"):
            break
        if len(versions) > 100_000:
            raise DlibFormatError("no input layer found")
    input_tag = s.read_string()
    if input_tag not in INPUT_READERS:
        raise DlibFormatError(f"unsupported input layer {input_tag!r}")
    input_layer = Layer(kind="input", tag=input_tag, attrs=INPUT_READERS[input_tag](s)[0])

    # Details come innermost first, so unwind the version list from the bottom.
    layers: list[Layer] = []
    for depth, version in enumerate(reversed(versions)):
        bottom = depth == 0
        if version not in ((2, 3) if bottom else (1, 2)):
            raise DlibFormatError(f"unsupported layer version {version} at depth {depth} from the input")
        if version == 1:
            layers.append(Layer(kind=TAG_OR_SKIP))
            continue
        layers.append(_read_details(s, LAYER_READERS))
        _skip_training_state(s, version, bottom)
    if s.pos != len(s.data):
        raise DlibFormatError(f"{len(s.data) - s.pos} trailing bytes after the network")
    layers.reverse()
    return DlibNet(loss=loss, layers=layers, input=input_layer)


def read_dlib_net(path: str | Path) -> DlibNet:
    """Read a dlib network file; raises WeightsNotAvailable when it is missing, DlibFormatError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotAvailable(path.name, f"no such file: {path}")
    return parse_dlib_net(path.read_bytes())
