"""Edits to shipped ONNX graphs before onnxruntime loads them, with the `onnx` package.

The graphs we load were exported with fixed shapes (batch 1, sometimes a fixed image size) although the
networks accept any; one (SFace) also lists its original weights as graph inputs that no node reads, which
onnxruntime then demands at run time. Each function takes a `ModelProto` and edits it in place:

- `drop_unused_inputs`: remove graph inputs no node consumes, and initializers listed as inputs (so they
  are constants that onnxruntime may fold).
- `free_axes`: make named axes of graph inputs/outputs symbolic; stale intermediate shapes are dropped.
- `batch_free_reshapes`: constant ``Reshape`` targets ``[1, C, ...]`` become ``[-1, C, ...]``.
- `dequantize`: fold ``DequantizeLinear`` of constant weights (and the ``Reshape`` that follows) into float32
  initializers: the same values, computed once at load instead of on every run.

Importing this module is cheap; `onnx` is imported by the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


def load(path: Path | str) -> onnx.ModelProto:
    """Read an ONNX file (weights inline)."""
    import onnx

    return onnx.load(str(path))


def drop_unused_inputs(model: onnx.ModelProto, keep: Sequence[str] = ()) -> list[str]:
    """Remove graph inputs that are initializers or that no node reads (except `keep`); returns their names."""
    graph = model.graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output} | set(keep)
    constants = {init.name for init in graph.initializer}
    kept = [i for i in graph.input if i.name in read and i.name not in constants]
    dropped = [i.name for i in graph.input if i not in kept]
    del graph.input[:]
    graph.input.extend(kept)
    return dropped


def free_axes(model: onnx.ModelProto, axes: Mapping[str, Sequence[int]]) -> None:
    """Make the given axes of named graph inputs/outputs symbolic (``dim<k>``). Raises KeyError for a name
    that is neither an input nor an output."""
    graph = model.graph
    by_name = {v.name: v for v in [*graph.input, *graph.output]}
    for name, free in axes.items():
        if name not in by_name:
            raise KeyError(f"{name!r} is not a graph input or output; have {sorted(by_name)}")
        dims = by_name[name].type.tensor_type.shape.dim
        for axis in free:
            dims[axis].dim_param = f"dim{axis}"  # a oneof: clears dim_value
    # intermediate shapes recorded by the exporter still say batch 1; onnxruntime infers them again
    del graph.value_info[:]


def batch_free_reshapes(model: onnx.ModelProto) -> int:
    """Turn constant Reshape targets that start with 1 into -1 (per-sample statistics reshaped to [1, C, 1, 1]
    then work for a batch); returns how many were changed."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    targets = {node.input[1] for node in graph.node if node.op_type == "Reshape" and len(node.input) > 1}
    changed = 0
    for init in graph.initializer:
        if init.name not in targets or init.data_type != TensorProto.INT64:
            continue
        shape = numpy_helper.to_array(init)
        if shape.ndim != 1 or not len(shape) or shape[0] != 1 or -1 in shape:
            continue
        init.CopyFrom(numpy_helper.from_array(np.concatenate([[-1], shape[1:]]).astype(np.int64), init.name))
        changed += 1
    return changed


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return int(helper.get_attribute_value(attribute))
    return default


def _dequantized(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> np.ndarray:
    """``DequantizeLinear`` of constants: (x - zero_point) * scale, per tensor, per axis or per block."""
    x = constants[node.input[0]].astype(np.float32)
    scale: np.ndarray = constants[node.input[1]].astype(np.float32)
    zero: np.ndarray = (
        constants[node.input[2]].astype(np.float32)
        if len(node.input) > 2 and node.input[2]
        else (np.zeros(1, np.float32))
    )
    if scale.size > 1:
        axis = _attribute(node, "axis", 1) % x.ndim
        block = _attribute(node, "block_size", 0)
        if block:  # opset 21 blocked quantisation: one scale per `block` elements along `axis`
            index = np.arange(x.shape[axis]) // block
            scale, zero = np.take(scale, index, axis=axis), np.take(zero, index, axis=axis)
        else:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((x - zero) * scale).astype(np.float32)


def dequantize(model: onnx.ModelProto) -> int:
    """Fold every DequantizeLinear whose inputs are constants (and a Reshape of its result by a constant
    shape) into a float32 initializer; returns how many were folded. Unused initializers are removed."""
    from onnx import numpy_helper

    graph = model.graph
    constants: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    kept: list[Any] = []
    count = 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(not i or i in constants for i in node.input):
            folded[node.output[0]] = constants[node.output[0]] = _dequantized(node, constants)
            count += 1
        elif node.op_type == "Reshape" and node.input[0] in folded and node.input[1] in constants:
            value = folded[node.input[0]].reshape(constants[node.input[1]])
            folded[node.output[0]] = constants[node.output[0]] = value
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    initializers = [init for init in graph.initializer if init.name in read]
    initializers += [numpy_helper.from_array(value, name) for name, value in folded.items() if name in read]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return count


def to_float16(model: onnx.ModelProto) -> int:
    """Cast float32 initializers, constants and the graph's float inputs/outputs to float16 (for a GPU: every
    tensor between them follows); returns how many tensors were cast. Intermediate shapes are dropped."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    count = 0

    def cast(tensor: onnx.TensorProto) -> None:
        nonlocal count
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
            count += 1

    # Dropout's ratio stays float32 (its type is separate from the data's)
    ratios = {node.input[1] for node in graph.node if node.op_type == "Dropout" and len(node.input) > 1}
    for init in graph.initializer:
        if init.name not in ratios:
            cast(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in ratios:
            for attribute in node.attribute:
                if attribute.name == "value":
                    cast(attribute.t)
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    return count


def serialize(model: onnx.ModelProto) -> bytes:
    """The model's bytes, for ``onnxruntime.InferenceSession``."""
    return bytes(model.SerializeToString())
