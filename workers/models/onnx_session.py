"""ONNX models run by onnxruntime: providers for a device, and `OnnxModel`, the lifecycle base for them.

`OnnxModel` resolves (and checksums) its weights through the registry, lets a subclass edit the graph
(`prepare`, with `workers.models.onnx_graph`), and creates one session with the process's pinned CPU
threads. onnxruntime and onnx are imported on load only: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from storage.names import ItemErrorCode
from workers.contract import ItemFailure
from workers.models.base import InferenceModel, cpu_threads
from workers.models.registry import resolve

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"


class DeviceNotAvailable(ItemFailure, RuntimeError):
    """The requested device cannot run the model in this process (e.g. no CUDA provider)."""

    code = ItemErrorCode.MODEL_UNAVAILABLE


def providers_for(device: str) -> list[str]:
    """onnxruntime providers for "auto" (CUDA when available), "cpu" or "cuda"; raises DeviceNotAvailable."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU_PROVIDER]
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device != "auto":
        raise DeviceNotAvailable(
            f"device {device!r} requested but onnxruntime has no CUDA provider (found: {', '.join(available)}); "
            "install onnxruntime-gpu or use device 'cpu'"
        )
    return [CPU_PROVIDER]


class OnnxModel(InferenceModel):
    """One ONNX graph and its onnxruntime session.

    Subclasses set `weights` (a registry name) and optionally `free_axes` (axes of named inputs/outputs made
    symbolic) and `batch_reshapes`, or override `prepare` for other graph edits. `threads` None means the
    process's pinned count (`set_cpu_threads`), else onnxruntime's default.
    """

    weights: ClassVar[str]
    free_axes: ClassVar[Mapping[str, Sequence[int]]] = {}
    batch_reshapes: ClassVar[bool] = False

    def __init__(
        self, providers: Sequence[str] = (CPU_PROVIDER,), *, threads: int | None = None, max_batch_size: int = 1
    ) -> None:
        super().__init__()
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.providers = list(providers)
        self.threads = threads
        self.max_batch_size = max_batch_size
        self.session: ort.InferenceSession | None = None

    def prepare(self, model: onnx.ModelProto) -> None:
        """Edit the graph before the session is made (default: free the declared axes)."""
        from workers.models import onnx_graph

        if self.free_axes:
            onnx_graph.free_axes(model, self.free_axes)
        if self.batch_reshapes:
            onnx_graph.batch_free_reshapes(model)

    def graph_bytes(self) -> bytes:
        """The verified weights file, edited by `prepare` (the file itself when nothing needs editing)."""
        from workers.models import onnx_graph

        path = resolve(self.weights)
        if type(self).prepare is OnnxModel.prepare and not self.free_axes and not self.batch_reshapes:
            return path.read_bytes()
        model = onnx_graph.load(path)
        self.prepare(model)
        return onnx_graph.serialize(model)

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = self.threads or cpu_threads()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        session = ort.InferenceSession(self.graph_bytes(), opts, providers=self.providers)
        # onnxruntime silently falls back to CPU when the CUDA libraries do not load
        if self.providers[0] == CUDA_PROVIDER and session.get_providers()[0] != CUDA_PROVIDER:
            raise DeviceNotAvailable(f"{self.weights}: CUDA provider failed to start (check CUDA/cuDNN)")
        self.session = session

    def run(self, feeds: Sequence[np.ndarray]) -> list[Any]:
        """Run the session on inputs in graph order; returns every output."""
        self.load()
        assert self.session is not None
        names = [i.name for i in self.session.get_inputs()]
        return list(self.session.run(None, dict(zip(names, feeds, strict=True))))
