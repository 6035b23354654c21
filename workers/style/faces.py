"""Face protection: some built-in styles paint over faces until nobody is recognisable (styles 2, 3, 7 and
17 at full strength: bench/style_faces.py, docs/styles.md); this gives part of the photo back inside each
face, feathered, so the person stays recognisable while the rest of the picture keeps the full style.

Faces are found with dlib's HOG detector (workers.faces.detectors): no torch in the style worker, 0.45 s to
load once per process, about 0.15 s per photo on one CPU core at the size used here, and a face it misses
is only styled like the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger("nightshift.style.faces")
Box = tuple[float, float, float, float]
DETECT_SIDE = 800  # photos are looked at this long: HOG's 80 px window then finds faces of 10 % of the long side
MAX_UPSCALE = 4.0  # small photos are enlarged at most this much: the time goes to pixels that hold no face
MIN_SCORE = 0.5  # dlib's SVM margin: faces score about 1-2, look-alikes (badges, patterns) about 0.1
MARGIN = 0.25  # the protected ellipse reaches this far beyond the box (forehead, chin)
FEATHER = 0.2  # blur radius of the mask's edge, as a share of the face size

# Measured on 80 LFW faces (bench/style_faces.py, docs/styles.md): at full strength every style leaves fewer
# than 90 % of people recognisable; 0.65 of the photo back keeps 97 % on average and at least 91 % for all
# styles but 15 and 17, which need 0.8 (96 % and 99 %).
DEFAULT_PROTECTION = 0.65
STRONGER_PROTECTION = {15: 0.8, 17: 0.8}

_detector: Any = None
_lock = threading.Lock()


def find_faces(image: Image.Image) -> list[Box]:
    """Face boxes in `image` coordinates; empty when there are none or dlib is not installed."""
    global _detector
    try:
        from workers.faces.detectors import HOGDetector

        with _lock:
            if _detector is None:
                _detector = HOGDetector(min_face_size=1, max_upsample=0)
                _detector.load()
    except ImportError as exc:  # a worker without dlib renders without protection, and says so
        log.warning("faces are not protected: %s", exc)
        return []
    scale = min(DETECT_SIDE / max(image.size), MAX_UPSCALE)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    faces = _detector.detect(image.resize(size, Image.Resampling.BILINEAR))
    return [
        (f.box[0] / scale, f.box[1] / scale, f.box[2] / scale, f.box[3] / scale) for f in faces if f.score >= MIN_SCORE
    ]


def default_protection(builtin: Sequence[tuple[int, float]] = ()) -> float:
    """The protection a variant gets when the job does not set one: the strongest any style of a blend needs."""
    return max([DEFAULT_PROTECTION] + [STRONGER_PROTECTION.get(index, DEFAULT_PROTECTION) for index, _ in builtin])


def _ellipse(box: Box) -> Box:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return (x1 - MARGIN * w, y1 - 1.4 * MARGIN * h, x2 + MARGIN * w, y2 + MARGIN * h)


def protect_faces(
    stylized: Image.Image,
    photo: Image.Image,
    boxes: Sequence[Box],
    amount: float,
    weights: Sequence[float] | None = None,
) -> Image.Image:
    """`stylized` with `amount` (0-1) of `photo` back inside each face; `boxes` are in `photo` coordinates.
    `weights` (0-1, one per box) scale the amount per face (video fades a face's protection in and out).

    Only the region around the faces is touched (masks of a whole 12 MP photo would cost more than the faces).
    """
    if amount <= 0 or not boxes:
        return stylized
    sx, sy = stylized.width / photo.width, stylized.height / photo.height
    ellipses = [_ellipse((x1 * sx, y1 * sy, x2 * sx, y2 * sy)) for x1, y1, x2, y2 in boxes]
    radius = max(FEATHER * max(e[2] - e[0], e[3] - e[1]) / (1 + 2 * MARGIN) for e in ellipses)
    pad = 3 * radius
    left = max(0, int(min(e[0] for e in ellipses) - pad))
    top = max(0, int(min(e[1] for e in ellipses) - pad))
    right = min(stylized.width, int(max(e[2] for e in ellipses) + pad) + 1)
    bottom = min(stylized.height, int(max(e[3] for e in ellipses) + pad) + 1)
    if right <= left or bottom <= top:
        return stylized
    mask = Image.new("L", (right - left, bottom - top), 0)
    draw = ImageDraw.Draw(mask)
    for (x1, y1, x2, y2), weight in zip(ellipses, weights or [1.0] * len(ellipses), strict=True):
        draw.ellipse((x1 - left, y1 - top, x2 - left, y2 - top), fill=round(255 * min(amount * weight, 1.0)))
    if radius >= 1:
        mask = mask.filter(ImageFilter.GaussianBlur(radius))
    region = (round(left / sx), round(top / sy), round(right / sx), round(bottom / sy))
    original = photo.convert("RGB").crop(region).resize(mask.size, Image.Resampling.LANCZOS)
    out = stylized.convert("RGB")
    out.paste(Image.composite(original, out.crop((left, top, right, bottom)), mask), (left, top))
    return out
