"""The VGG19 weights record of the Gatys method, registered without importing torch.

Kept apart from `workers.style.gatys` (which imports torch) so that a worker can say whether it has the
file (`workers.capabilities`) in its main process, where torch must not be loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.models.registry import WeightsSpec, register

VGG19_WEIGHTS = "vgg19"
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
VGG19_ENV = "NIGHTSHIFT_WORKER__VGG19_WEIGHTS"


def hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, found the way torch.hub.get_dir() finds it (TORCH_HOME, XDG_CACHE_HOME)."""
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))).expanduser() / "hub" / "checkpoints"


def how_to_provide() -> str:
    return (
        f"VGG19_Weights.IMAGENET1K_V1: put {VGG19_FILE} in {hub_checkpoints()} or set "
        f"{VGG19_ENV}=/path/to/{VGG19_FILE} on the style workers and restart them; download it once from "
        f"{VGG19_URL} (548 MB): nothing is downloaded at run time"
    )


register(
    WeightsSpec(
        VGG19_WEIGHTS,
        lambda: hub_checkpoints() / VGG19_FILE,
        "dcbb9e9d",  # torchvision names its files after the sha256 prefix
        source=f"{VGG19_URL} (VGG19_Weights.IMAGENET1K_V1)",
        description="VGG19 trained on ImageNet; the Gatys method uses its convolutional features",
        hint=how_to_provide,
        preprocessing={
            "layout": "NCHW",
            "range": (0.0, 1.0),
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
        },
    )
)
