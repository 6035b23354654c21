"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in torch.

The network of dlib's ``dnn_face_recognition_ex.cpp``: a 7x7/2 convolution, 3x3/2 max pooling,
14 residual blocks (32, 64, 128, 256, 256 channels; the first block of each stage after the first
halves the size) with batch norm folded into per-channel ``affine`` layers, global average pooling
and a 128-D ``fc_no_bias``. The descriptor is the raw fc output: dlib does not L2-normalise it.

Two dlib behaviours matter for exact outputs: the input is ``(pixel - channel mean) / 256``, and
``add_prev`` adds tensors of different shapes by zero-padding the smaller one at the bottom/right
(the downsampling shortcut is a 2x2 average pool, which can be one pixel larger than the strided
convolution's output, e.g. 4x4 against 3x3).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.faces.dlib_format import TAG_OR_SKIP, DlibFormatError, DlibNet, Layer, read_dlib_net

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
# The input layer's per-channel means (R, G, B) as dlib's input_rgb_image defaults them; the
# weights file carries its own copy, which from_dlib() loads.
DLIB_RGB_MEANS = (122.782, 117.001, 104.298)


@dataclass(frozen=True)
class BlockSpec:
    """One residual block: output channels and whether it halves the spatial size."""

    channels: int
    down: bool


# alevel4 .. alevel0 of dnn_face_recognition_ex.cpp, input side first.
FACE_RESNET_BLOCKS: tuple[BlockSpec, ...] = (
    *(BlockSpec(32, False),) * 3,
    BlockSpec(64, True),
    *(BlockSpec(64, False),) * 3,
    BlockSpec(128, True),
    *(BlockSpec(128, False),) * 2,
    BlockSpec(256, True),
    *(BlockSpec(256, False),) * 2,
    BlockSpec(256, True),
)


class Affine(nn.Module):
    """dlib's ``affine`` layer: a per-channel scale and shift (inference-time batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, the smaller operand zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    channels, height, width = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2], 0, channels - t.shape[1]))

    return grow(a) + grow(b)


def _fold(conv: nn.Conv2d, affine: nn.Module) -> nn.Module:
    """Fold an Affine that directly follows `conv` into the convolution; returns its replacement."""
    if not isinstance(affine, Affine):
        return affine
    with torch.no_grad():
        conv.weight.mul_(affine.weight.view(-1, 1, 1, 1))
        assert conv.bias is not None
        conv.bias.mul_(affine.weight).add_(affine.bias)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """``ares`` / ``ares_down``: relu(add_prev(affine(con(relu(affine(con(x))))), shortcut(x)))."""

    def __init__(self, in_channels: int, spec: BlockSpec) -> None:
        super().__init__()
        stride, padding = (2, 0) if spec.down else (1, 1)
        self.down = spec.down
        self.conv1 = nn.Conv2d(in_channels, spec.channels, 3, stride=stride, padding=padding)
        self.affine1: nn.Module = Affine(spec.channels)
        self.conv2 = nn.Conv2d(spec.channels, spec.channels, 3, stride=1, padding=1)
        self.affine2: nn.Module = Affine(spec.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(y, shortcut))

    def fuse(self) -> None:
        self.affine1 = _fold(self.conv1, self.affine1)
        self.affine2 = _fold(self.conv2, self.affine2)


class DlibFaceResNet(nn.Module):
    """The descriptor network. Input: N x 3 x 150 x 150 RGB in 0..255 (uint8 or float); output: N x 128."""

    means: torch.Tensor

    def __init__(
        self, blocks: tuple[BlockSpec, ...] = FACE_RESNET_BLOCKS, stem_channels: int = 32, out_dim: int = DESCRIPTOR_DIM
    ) -> None:
        super().__init__()
        self.register_buffer("means", torch.tensor(DLIB_RGB_MEANS, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem_conv = nn.Conv2d(3, stem_channels, 7, stride=2, padding=0)
        self.stem_affine: nn.Module = Affine(stem_channels)
        layers, channels = [], stem_channels
        for spec in blocks:
            layers.append(ResidualBlock(channels, spec))
            channels = spec.channels
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 whatever the network's dtype: the means are not fp16-representable.
        x = ((x.float() - self.means.float()) / 256.0).to(self.stem_conv.weight.dtype)
        x = F.relu(self.stem_affine(self.stem_conv(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def fuse(self) -> DlibFaceResNet:
        """Fold every affine layer into its convolution (same outputs to float rounding, fewer kernels)."""
        self.stem_affine = _fold(self.stem_conv, self.stem_affine)
        for block in self.blocks:
            assert isinstance(block, ResidualBlock)
            block.fuse()
        return self

    @classmethod
    def from_dlib(cls, net: DlibNet) -> DlibFaceResNet:
        """The network with the weights of a parsed dlib file; raises DlibFormatError on another architecture."""
        model = cls()
        model.load_state_dict(state_dict_from_dlib(net))
        return model.eval()


_Geometry = dict[str, int]


def _con_geometry(stride: int, padding: int) -> _Geometry:
    return {"stride_y": stride, "stride_x": stride, "padding_y": padding, "padding_x": padding}


def _pool_geometry(size: int, stride: int) -> _Geometry:
    return {"nr": size, "nc": size, "stride_y": stride, "stride_x": stride, "padding_y": 0, "padding_x": 0}


def _expected_stack(blocks: tuple[BlockSpec, ...]) -> Iterator[tuple[str, str, _Geometry | None]]:
    """(kind, state_dict prefix, geometry to check) of each dlib layer, input side first, in the order
    the C++ template nests them."""
    yield "con", "stem_conv", _con_geometry(2, 0)
    yield "affine", "stem_affine", None
    yield "relu", "", None
    yield "max_pool", "", _pool_geometry(3, 2)
    for i, spec in enumerate(blocks):
        prefix = f"blocks.{i}."
        yield TAG_OR_SKIP, "", None  # tag1: the block input
        yield "con", prefix + "conv1", _con_geometry(2, 0) if spec.down else _con_geometry(1, 1)
        yield "affine", prefix + "affine1", None
        yield "relu", "", None
        yield "con", prefix + "conv2", _con_geometry(1, 1)
        yield "affine", prefix + "affine2", None
        if spec.down:  # tag2 on the block output, skip1 back to the input, avg_pool over it
            yield TAG_OR_SKIP, "", None
            yield TAG_OR_SKIP, "", None
            yield "avg_pool", "", _pool_geometry(2, 2)
        yield "add_prev", "", None
        yield "relu", "", None
    yield "avg_pool", "", _pool_geometry(0, 1)  # nr = nc = 0: average over everything
    yield "fc", "fc", None


def _params(layer: Layer, where: str) -> np.ndarray:
    if layer.params is None:
        raise DlibFormatError(f"{where}: {layer.tag} has no parameters")
    return layer.params


def _con_tensors(layer: Layer, prefix: str, where: str) -> dict[str, torch.Tensor]:
    params = _params(layer, where)
    shape = tuple(layer.attrs["filters_shape"])
    count = int(np.prod(shape))
    if params.size != count + shape[0]:
        raise DlibFormatError(f"{where}: {params.size} conv parameters for filters {shape} plus biases")
    return {
        f"{prefix}.weight": torch.from_numpy(params[:count].reshape(shape).copy()),
        f"{prefix}.bias": torch.from_numpy(params[count:].copy()),
    }


def _affine_tensors(layer: Layer, prefix: str, where: str) -> dict[str, torch.Tensor]:
    params = _params(layer, where)
    half = params.size // 2  # gamma then beta
    return {
        f"{prefix}.weight": torch.from_numpy(params[:half].copy()),
        f"{prefix}.bias": torch.from_numpy(params[half:].copy()),
    }


def _fc_tensors(layer: Layer, prefix: str, where: str) -> dict[str, torch.Tensor]:
    params = _params(layer, where)
    inputs, outputs = layer.attrs["num_inputs"], layer.attrs["num_outputs"]
    if layer.attrs.get("bias_mode") != 1 or params.size != inputs * outputs:
        raise DlibFormatError(f"{where}: expected fc_no_bias {inputs}x{outputs}, got {params.size} parameters")
    # dlib computes x @ W with W stored row-major as (inputs, outputs); torch's Linear wants W.T.
    return {f"{prefix}.weight": torch.from_numpy(params.reshape(inputs, outputs).T.copy())}


_TENSORS = {"con": _con_tensors, "affine": _affine_tensors, "fc": _fc_tensors}


def state_dict_from_dlib(net: DlibNet, blocks: tuple[BlockSpec, ...] = FACE_RESNET_BLOCKS) -> dict[str, torch.Tensor]:
    """Map a parsed dlib face-recognition network onto `DlibFaceResNet`'s state_dict keys.

    Checks the layer kinds, strides, paddings and pooling sizes against the architecture and raises
    DlibFormatError on the first mismatch.
    """
    expected = list(_expected_stack(blocks))
    stack = list(reversed(net.layers))
    if [kind for kind, _, _ in expected] != [layer.kind for layer in stack]:
        raise DlibFormatError(f"layer stack is not dlib's face ResNet ({len(stack)} layers, {len(expected)} expected)")
    rows, cols = net.input.attrs.get("rows", CHIP_SIZE), net.input.attrs.get("cols", CHIP_SIZE)
    if (rows, cols) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"input is {rows}x{cols}, not {CHIP_SIZE}x{CHIP_SIZE}")
    means = torch.tensor(net.input.attrs["means"], dtype=torch.float32).view(1, 3, 1, 1)
    state: dict[str, torch.Tensor] = {"means": means}
    for index, ((kind, prefix, geometry), layer) in enumerate(zip(expected, stack, strict=True)):
        where = f"layer {index} from the input ({prefix or kind})"
        if geometry is not None:
            got = {key: layer.attrs.get(key) for key in geometry}
            if got != geometry:
                raise DlibFormatError(f"{where}: {layer.tag} has {got}, this architecture needs {geometry}")
        if kind in _TENSORS:
            state.update(_TENSORS[kind](layer, prefix, where))
    return state


def load_face_resnet(path: str | Path, device: str | torch.device = "cpu", fp16: bool = False) -> DlibFaceResNet:
    """dlib's weights file as a fused, eval-mode network on `device` (channels-last on CUDA).

    `fp16` converts the network to half precision but keeps the input means in float32 (they are
    not fp16-representable). Raises WeightsNotAvailable / DlibFormatError from the reader.
    """
    model = DlibFaceResNet.from_dlib(read_dlib_net(path)).fuse().to(device)
    if fp16:
        means = model.means
        model = model.half()
        model.means = means
    if model.means.is_cuda:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def embed_chips(model: nn.Module, chips: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Descriptors (N x 128, float32, on the chips' device) of aligned 150x150 chips (N x 3 x 150 x 150, 0..255).

    Runs in batches of `batch_size` under inference mode, in the model's dtype; raises ValueError on
    a wrong shape.
    """
    if chips.ndim != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
        raise ValueError(f"chips must be N x 3 x {CHIP_SIZE} x {CHIP_SIZE}, got {tuple(chips.shape)}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    param = next(model.parameters())
    out = torch.empty((chips.shape[0], DESCRIPTOR_DIM), dtype=torch.float32, device=chips.device)
    with torch.inference_mode(), _exact_fp32_convolutions(param.device):
        for start in range(0, chips.shape[0], batch_size):
            batch = chips[start : start + batch_size].to(param.device, non_blocking=True)
            batch = batch.contiguous(memory_format=_memory_format(param))  # forward() normalises the dtype
            out[start : start + batch_size] = model(batch).float().to(out.device)
    return out


def _memory_format(param: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if param.is_cuda else torch.contiguous_format


@contextmanager
def _exact_fp32_convolutions(device: torch.device) -> Iterator[None]:
    """Turn off TF32 convolutions on CUDA for the duration, then restore the process setting: TF32's
    10-bit mantissa would spend much of the 1e-3 budget against dlib's float32 descriptors."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved
