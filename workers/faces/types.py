"""What the face engines exchange: a detected `Face`, a photo's `PhotoFaces`, and 90-degree rotation geometry.

Coordinates are continuous pixel coordinates of the image a face was found in (the "original" image
given to the engine): (0, 0) is the top-left corner of the top-left pixel, (width, height) the
bottom-right corner of the bottom-right pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

Box = tuple[float, float, float, float]
Size = tuple[int, int]  # (width, height), PIL's order

ROTATIONS = (0, 90, 180, 270)
_MIRROR_ORDER = (1, 0, 2, 4, 3)  # a mirror image's left eye is the original's right eye


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _check_angle(angle: int) -> int:
    angle %= 360
    if angle not in ROTATIONS:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {angle}")
    return angle


def rotated_size(size: Size, angle: int) -> Size:
    """The (width, height) of an image of `size` after rotating it by `angle` degrees."""
    width, height = size
    return (height, width) if _check_angle(angle) in (90, 270) else (width, height)


def rotate_points(points: np.ndarray, angle: int, size: Size) -> np.ndarray:
    """Map (n, 2) points of an image of `size` into that image rotated counter-clockwise by `angle`.

    Counter-clockwise matches ``np.rot90(a, k=angle // 90)`` and PIL's ``Transpose.ROTATE_90``.
    """
    out = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
    width, height = size
    for _ in range(_check_angle(angle) // 90):
        # one quarter turn counter-clockwise: the top-right corner (width, 0) becomes the top-left
        out = np.stack([out[:, 1], width - out[:, 0]], axis=1)
        width, height = height, width
    return out


def rotate_box(box: Box, angle: int, size: Size) -> Box:
    """Map an axis-aligned box (x1, y1, x2, y2) into the image rotated by `angle`; still axis-aligned."""
    x1, y1, x2, y2 = box
    corners = rotate_points(np.array([[x1, y1], [x2, y2]]), angle, size)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    - `box`: (x1, y1, x2, y2) in original-image pixels, axis-aligned.
    - `score`: the detector's confidence: a probability for MTCNN, the SVM margin for dlib's HOG detector.
    - `landmarks`: (5, 2) float32 (x, y) in original-image pixels, in MTCNN order — left eye centre, right
      eye centre, nose tip, left mouth corner, right mouth corner, where left/right are as seen in the
      upright face (image left). This is NOT dlib's 5-point shape (eye corners + nose base): the aligner
      computes that shape itself and uses these points only to place its start rectangle. None when the
      detector gives no landmarks (HOG).
    - `rotation`: degrees (0/90/180/270) the original image must be turned counter-clockwise for this face
      to be upright; non-zero only when found by `detect_with_rotations`.
    """

    box: Box
    score: float
    landmarks: np.ndarray | None = field(default=None, repr=False)
    rotation: int = 0

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def scaled(self, sx: float, sy: float | None = None) -> Face:
        """The same face in an image resized by (sx, sy)."""
        sy = sx if sy is None else sy
        x1, y1, x2, y2 = self.box
        landmarks = None if self.landmarks is None else (self.landmarks * np.array([sx, sy])).astype(np.float32)
        return replace(self, box=(x1 * sx, y1 * sy, x2 * sx, y2 * sy), landmarks=landmarks)

    def mirrored(self, width: int) -> Face:
        """The same face in the image flipped left-right (`width` wide): left and right landmarks swap
        roles, and the turn that makes it upright goes the other way."""
        x1, y1, x2, y2 = self.box
        landmarks = None
        if self.landmarks is not None:
            flipped = np.asarray(self.landmarks, dtype=np.float32)[list(_MIRROR_ORDER)]
            landmarks = np.stack([width - flipped[:, 0], flipped[:, 1]], axis=1).astype(np.float32)
        return replace(self, box=(width - x2, y1, width - x1, y2), landmarks=landmarks, rotation=-self.rotation % 360)

    def rotated(self, angle: int, size: Size) -> Face:
        """The same face in the image of `size` rotated counter-clockwise by `angle`.

        `rotation` is adjusted so it still says how far that image must turn for the face to be upright;
        ``face.rotated(face.rotation, size)`` gives the upright face (rotation 0).
        """
        landmarks = None
        if self.landmarks is not None:
            landmarks = rotate_points(self.landmarks, angle, size).astype(np.float32)
        return replace(
            self,
            box=rotate_box(self.box, angle, size),
            landmarks=landmarks,
            rotation=(self.rotation - _check_angle(angle)) % 360,
        )


@dataclass(eq=False)
class PhotoFaces:
    """Every face of one photo with its embedding: ``embeddings[i]`` belongs to ``faces[i]``.

    `size` is the (width, height) of the image the coordinates refer to; `model` and `model_version`
    name the embedder (embeddings of different models are not comparable).
    """

    faces: list[Face]
    embeddings: np.ndarray
    size: Size
    model: str
    model_version: str

    def __post_init__(self) -> None:
        if len(self.embeddings) != len(self.faces):
            raise ValueError(f"{len(self.faces)} faces but {len(self.embeddings)} embeddings")

    def __len__(self) -> int:
        return len(self.faces)
