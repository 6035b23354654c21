"""Batched face-chip extraction in torch that reproduces ``dlib.get_face_chips`` pixel for pixel.

dlib aligns a face by fitting a similarity transform from its 5 landmarks to a mean-face template
(``get_face_chip_details(shape, 150, 0.25)``) and sampling the rotated, scaled rectangle with
bilinear interpolation (``extract_image_chips``). Details that decide the pixels, all kept here:

- the rectangle is chip-sized, scaled by the fitted scale and centred where the transform maps
  the chip centre; chip pixel (c, r) maps onto its corners with steps (width - 1) / (size - 1);
- a sample whose 2x2 neighbourhood leaves the image is black, and values are truncated to uint8;
- when the rectangle is more than about twice the chip size, dlib samples from a level of its
  ``pyramid_down<2>`` image pyramid (5-tap [1 4 6 4 1] filter, integer arithmetic) built over the
  bounding box of all the image's chips, with coordinates mapped by ``p / 2 - (1.25, 0.75)``.

The geometry is float64 numpy (a few numbers per face); the pyramid and the sampling run on the
device, batched over the faces of an image (one gather for all of them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# dlib's 5-point mean face (x, y in [0, 1]), in the order of shape_predictor_5_face_landmarks:
# two corners of the eye on the image's right, two of the other eye, then the base of the nose.
FIVE_POINT_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
_PYRAMID_OFFSET = np.array([1.25, 0.75])  # pyramid_down<2>::point_down(p) = p / 2 - offset


@dataclass(frozen=True)
class ChipDetails:
    """dlib's ``chip_details`` for N faces: rectangles (N x 4: left, top, right, bottom, in
    pixels, inclusive), rotation angles (N, radians) and the square chip size."""

    rects: np.ndarray
    angles: np.ndarray
    size: int


def face_chip_details(
    shapes5: np.ndarray | Sequence[np.ndarray], size: int = 150, padding: float = 0.25
) -> ChipDetails:
    """``dlib.get_face_chip_details`` for landmark arrays of shape (5, 2) (x, y), vectorised.

    Raises ValueError on another shape.
    """
    points = np.asarray(shapes5, dtype=np.float64).reshape(-1, 5, 2)
    if size < 2 or padding < 0:
        raise ValueError(f"size must be >= 2 and padding >= 0, got {size}, {padding}")
    template = (padding + FIVE_POINT_TEMPLATE) / (2 * padding + 1) * size
    # Least-squares similarity template -> landmarks, x' = [[a, -b], [b, a]] x + t: the same
    # minimiser as the Umeyama fit dlib's find_similarity_transform computes.
    src = template - template.mean(axis=0)
    dst = points - points.mean(axis=1, keepdims=True)
    norm = (src**2).sum()
    a = (src[None, :, 0] * dst[..., 0] + src[None, :, 1] * dst[..., 1]).sum(axis=1) / norm
    b = (src[None, :, 0] * dst[..., 1] - src[None, :, 1] * dst[..., 0]).sum(axis=1) / norm
    mean_t = template.mean(axis=0)
    mean_p = points.mean(axis=1)
    tx = mean_p[:, 0] - (a * mean_t[0] - b * mean_t[1])
    ty = mean_p[:, 1] - (b * mean_t[0] + a * mean_t[1])
    half = size / 2.0
    cx = a * half - b * half + tx
    cy = b * half + a * half + ty
    extent = (size * np.hypot(a, b) - 1) / 2  # centered_drect: width w spans w - 1
    rects = np.stack([cx - extent, cy - extent, cx + extent, cy + extent], axis=1)
    return ChipDetails(rects=rects, angles=np.arctan2(b, a), size=size)


def _rect_down(rects: np.ndarray) -> np.ndarray:
    off = np.concatenate([_PYRAMID_OFFSET, _PYRAMID_OFFSET])
    return rects / 2.0 - off


def _area(rects: np.ndarray) -> np.ndarray:
    return (rects[..., 2] - rects[..., 0] + 1) * (rects[..., 3] - rects[..., 1] + 1)


def pyramid_depths(details: ChipDetails) -> np.ndarray:
    """How many pyramid_down<2> levels dlib descends for each chip (0: sample the image itself)."""
    depths = np.zeros(len(details.rects), dtype=np.int64)
    rects = _rect_down(details.rects)
    chip_area = details.size * details.size
    while True:
        deeper = _area(rects) > chip_area
        if not deeper.any():
            return depths
        depths += deeper
        rects = np.where(deeper[:, None], _rect_down(rects), rects)


def _rotated_corners(rects: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Corners tl, tr, bl, br (N x 4 x 2) of each rectangle rotated by its angle about its centre."""
    left, top, right, bottom = rects.T
    corners = np.stack([np.stack(xy, 1) for xy in ((left, top), (right, top), (left, bottom), (right, bottom))], 1)
    centre = np.stack([(left + right) / 2, (top + bottom) / 2], 1)[:, None, :]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    d = corners - centre
    return np.stack([cos * d[..., 0] - sin * d[..., 1], sin * d[..., 0] + cos * d[..., 1]], -1) + centre


def _bounding_box(details: ChipDetails, depths: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """The integer box (left, top, right, bottom) around all rotated chips, grown by the pyramid
    filter's reach and clipped to the image, as dlib crops it before building the pyramid."""
    grow = 4.0 * 2.0**depths - 2  # 2 pixels, then twice as many plus 2 per level: 2, 6, 14, ...
    corners = _rotated_corners(details.rects, details.angles)
    lo = corners.min(axis=1) - grow[:, None]
    hi = corners.max(axis=1) + grow[:, None]
    lo = np.maximum(lo, 0.0)
    hi = np.minimum(hi, [width - 1.0, height - 1.0])
    lo, hi = np.floor(lo + 0.5).astype(np.int64), np.floor(hi + 0.5).astype(np.int64)
    keep = (lo <= hi).all(axis=1)
    if not keep.any():
        return 0, 0, -1, -1
    (left, top), (right, bottom) = lo[keep].min(axis=0), hi[keep].max(axis=0)
    return int(left), int(top), int(right), int(bottom)


def pyramid_down(image: torch.Tensor) -> torch.Tensor:
    """dlib's ``pyramid_down<2>`` of a C x H x W image holding integers 0..255 (float32 or float64).

    Output (H - 3) // 2 x (W - 3) // 2: a [1 4 6 4 1] filter along rows then columns, keeping every
    other sample, divided by 256 and floored. Plain adds on even/odd planes are exact in float32
    (sums stay below 2**16) where a convolution may run in TF32, and are several times faster on
    CPU than strided views.
    """
    channels, height, width = image.shape
    if height <= 8 or width <= 8:
        return image.new_zeros((channels, 0, 0))
    out_w, out_h = (width - 3) // 2, (height - 3) // 2
    even, odd = image[:, :, 0::2].contiguous(), image[:, :, 1::2].contiguous()
    across = (
        even[:, :, :out_w]
        + even[:, :, 2 : out_w + 2]
        + 4 * (odd[:, :, :out_w] + odd[:, :, 1 : out_w + 1])
        + 6 * even[:, :, 1 : out_w + 1]
    )
    even, odd = across[:, 0::2].contiguous(), across[:, 1::2].contiguous()
    down = (
        even[:, :out_h]
        + even[:, 2 : out_h + 2]
        + 4 * (odd[:, :out_h] + odd[:, 1 : out_h + 1])
        + 6 * even[:, 1 : out_h + 1]
    )
    return torch.floor(down / 256)


def chip_grids(corners: np.ndarray, size: int, device: torch.device | str) -> torch.Tensor:
    """Sample positions (N x size x size x 2, float64, x then y) mapping chip pixels onto the
    tl, tr, bl corners of each (rotated) source rectangle, as dlib's find_affine_transform does."""
    corners_t = torch.as_tensor(corners, dtype=torch.float64, device=device)
    tl, tr, bl = corners_t[:, 0], corners_t[:, 1], corners_t[:, 2]
    steps = torch.arange(size, dtype=torch.float64, device=device) / (size - 1)
    cols = steps.view(1, 1, size, 1) * (tr - tl).view(-1, 1, 1, 2)
    rows = steps.view(1, size, 1, 1) * (bl - tl).view(-1, 1, 1, 2)
    return tl.view(-1, 1, 1, 2) + rows + cols


def sample_bilinear(source: torch.Tensor, grids: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """dlib's ``interpolate_bilinear`` + ``transform_image``: chips (N x C x S x S, uint8) sampled at
    `grids` (N x S x S x 2) from ``source[index[n]]`` (source B x C x H x W, values 0..255).

    A sample whose 2x2 neighbourhood is not inside the source is black; values are truncated.
    """
    batch, channels, height, width = source.shape
    n, out_h, out_w, _ = grids.shape
    if index is None:
        index = torch.zeros(n, dtype=torch.long, device=grids.device)
    if height < 2 or width < 2 or n == 0:
        return torch.zeros((n, channels, out_h, out_w), dtype=torch.uint8, device=grids.device)
    x, y = grids[..., 0], grids[..., 1]
    left, top = torch.floor(x), torch.floor(y)
    fx, fy = x - left, y - top
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    xi = left.clamp(0, width - 2).long()
    yi = top.clamp(0, height - 2).long()
    base = index.view(-1, 1, 1) * (height * width) + yi * width + xi
    flat = source.permute(1, 0, 2, 3).reshape(channels, -1)

    def at(offset: int) -> torch.Tensor:
        return flat[:, base + offset].to(torch.float64)

    # Same expression and order as dlib, in double precision, so truncation lands the same way.
    value = (1 - fy) * ((1 - fx) * at(0) + fx * at(1)) + fy * ((1 - fx) * at(width) + fx * at(width + 1))
    value = torch.where(inside, value.clamp(0, 255), torch.zeros_like(value))
    return value.to(torch.uint8).permute(1, 0, 2, 3).contiguous()


def _chips_from_one_image(image: np.ndarray, details: ChipDetails, device: torch.device) -> torch.Tensor:
    """All chips of one image, dlib's way: one crop, one pyramid, one gather per pyramid level."""
    depths = pyramid_depths(details)
    left, top, right, bottom = _bounding_box(details, depths, image.shape[0], image.shape[1])
    crop = np.ascontiguousarray(image[top : bottom + 1, left : right + 1]) if right >= left else image[:0, :0]
    levels = [torch.from_numpy(crop).to(device).permute(2, 0, 1)]
    for _ in range(int(depths.max(initial=0))):
        levels.append(pyramid_down(levels[-1].float().contiguous()))
    rects = details.rects - np.array([left, top, left, top], dtype=np.float64)
    chips = torch.empty((len(depths), 3, details.size, details.size), dtype=torch.uint8, device=device)
    for depth in np.unique(depths):
        members = np.flatnonzero(depths == depth)
        level_rects = rects[members]
        for _ in range(int(depth)):
            level_rects = _rect_down(level_rects)
        corners = _rotated_corners(level_rects, details.angles[members])
        grids = chip_grids(corners, details.size, device)
        chips[torch.as_tensor(members, device=device)] = sample_bilinear(levels[int(depth)][None], grids)
    return chips


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be H x W x 3 uint8 RGB, got {image.dtype} {image.shape}")
    return image


def extract_chips(
    images: np.ndarray | Sequence[np.ndarray],
    shapes5: np.ndarray | Sequence[np.ndarray],
    *,
    image_index: Sequence[int] | None = None,
    size: int = 150,
    padding: float = 0.25,
    device: torch.device | str = "cpu",
    joint: bool = True,
) -> torch.Tensor:
    """Aligned face chips (N x 3 x size x size, uint8 RGB, on `device`) for N 5-point landmark sets.

    `images` is one H x W x 3 uint8 image holding every face, or a sequence of images: then
    `image_index[i]` names the image of face i (default: face i is in image i). With `joint`, the
    faces of an image are extracted together, as ``dlib.get_face_chips`` and
    ``compute_face_descriptor(img, faces)`` do; otherwise one by one, as ``dlib.get_face_chip``.
    The two differ only for faces large enough for the pyramid (chip box above ~2x the size).
    Raises ValueError on malformed inputs.
    """
    points = np.asarray(shapes5, dtype=np.float64).reshape(-1, 5, 2)
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite")
    image_list = [images] if isinstance(images, np.ndarray) else list(images)
    if isinstance(images, np.ndarray):
        owners = np.zeros(len(points), dtype=np.int64)
    else:
        owners = np.asarray(image_index if image_index is not None else range(len(points)), dtype=np.int64)
    if len(owners) != len(points) or (len(owners) and (owners.min() < 0 or owners.max() >= len(image_list))):
        raise ValueError(f"{len(points)} landmark sets do not map onto {len(image_list)} images")
    device = torch.device(device)
    details = face_chip_details(points, size, padding)
    chips = torch.empty((len(points), 3, size, size), dtype=torch.uint8, device=device)
    groups = (
        [[i] for i in range(len(points))]
        if not joint
        else [np.flatnonzero(owners == owner).tolist() for owner in np.unique(owners)]
    )
    for members in groups:
        part = ChipDetails(details.rects[members], details.angles[members], size)
        chips[members] = _chips_from_one_image(_as_rgb(image_list[owners[members[0]]]), part, device)
    return chips


def jitter_chips(chips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One randomly perturbed copy of each chip, with dlib's ``jitter_image`` recipe: the face box
    moved by up to 2 %, zoomed out by up to 3 %, rotated by up to 3 degrees, mirrored half the time.

    dlib draws from its own generator, so the jitters (not the recipe) differ from dlib's.
    """
    n, _, rows, cols = chips.shape
    u = torch.rand((n, 5), generator=generator, dtype=torch.float64).numpy()
    inner = rows - 6  # shrink_rect(get_rect(chip), 3)
    shift = np.rint((u[:, :2] * 2 - 1) * 0.02 * inner)
    box = np.floor(inner / (0.97 + u[:, 2] * (0.99999 - 0.97)))
    angle = (u[:, 3] * 2 - 1) * 3 * math.pi / 180
    centre = np.array([(cols - 1) / 2, (rows - 1) / 2]) + shift
    rects = np.concatenate([centre - (box[:, None] - 1) / 2, centre + (box[:, None] - 1) / 2], axis=1)
    corners = _rotated_corners(rects, angle)
    grids = chip_grids(corners, rows, chips.device)
    index = torch.arange(n, device=chips.device)
    out = sample_bilinear(chips, grids, index)
    flip = torch.as_tensor(u[:, 4] > 0.5, device=chips.device)
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
