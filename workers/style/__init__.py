"""Neural style transfer engines (feed-forward ONNX models and the Gatys optimisation).

Importing this package loads no model and imports neither onnxruntime nor torch; the names below
resolve lazily from their modules on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StyleEngine": "workers.style.engine",
    "StyleVariant": "workers.style.engine",
    "expand_variants": "workers.style.engine",
    "encode_image": "workers.style.engine",
    "DeviceNotAvailable": "workers.style.onnx_models",
    "contact_sheet": "workers.style.sheet",
    "seam_energy_ratio": "workers.style.tiling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
