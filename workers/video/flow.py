"""Optical flow between video frames (OpenCV's DIS, no weights) and what it says about occlusions.

Conventions: a flow `f` from frame A to frame B gives, for every pixel x of A, the displacement to
where that point is in B: A(x) ~ B(x + f(x)). `warp(B, f)` samples B at x + f(x), so it brings B
into A's coordinates. Flows are (H, W, 2) float32 in pixels (x, y).
"""

from __future__ import annotations

import numpy as np

# Sundaram, Brox & Keutzer 2010 (used by Ruder et al. 2016 and Lai et al. 2018): a point is occluded
# when following the forward flow and then the backward flow does not bring it back.
FB_ALPHA, FB_BETA = 0.01, 0.5
# Lai et al.'s motion boundaries: a large flow gradient marks pixels whose flow is unreliable.
MB_ALPHA, MB_BETA = 0.01, 0.002


def to_gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class FlowEstimator:
    """DIS optical flow (Kroeger et al. 2016) on frames shrunk to at most `side` pixels on the long side.

    `raw` works on frames already shrunk by `shrink`; calling the estimator returns the flow at the size
    asked for. One per thread: OpenCV's DIS object keeps state between calls.
    """

    PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}

    def __init__(self, side: int = 384, preset: str = "medium") -> None:
        import cv2

        self.side = side
        self.dis = cv2.DISOpticalFlow.create(self.PRESETS[preset])

    def shrink(self, rgb: np.ndarray) -> np.ndarray:
        """A frame at the flow's working size (unchanged when small enough)."""
        import cv2

        h, w = rgb.shape[:2]
        scale = self.side / max(h, w)
        if scale >= 1.0:
            return rgb
        return cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)

    def raw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow from `a` to `b` (RGB or gray, same size), at their size."""
        a, b = (to_gray(x) if x.ndim == 3 else x for x in (a, b))
        return np.asarray(self.dis.calc(np.ascontiguousarray(a), np.ascontiguousarray(b), None))  # type: ignore[call-overload]

    def __call__(self, a: np.ndarray, b: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Flow from image `a` to `b`, scaled to `size` = (width, height) (default: a's)."""
        h, w = a.shape[:2]
        return resize_flow(self.raw(self.shrink(a), self.shrink(b)), size or (w, h))


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow field resampled to `size` = (width, height), its vectors scaled with it."""
    import cv2

    h, w = flow.shape[:2]
    if (w, h) == size:
        return flow
    out = cv2.resize(flow, size, interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= size[0] / w
    out[..., 1] *= size[1] / h
    return out


_GRIDS: dict[tuple[int, int], np.ndarray] = {}


def _grid(h: int, w: int) -> np.ndarray:
    """(h, w, 2) float32 pixel coordinates (x, y), cached per size."""
    grid = _GRIDS.get((h, w))
    if grid is None:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        grid = _GRIDS.setdefault((h, w), np.dstack([xs, ys]))
    return grid


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` sampled at x + flow(x) (bilinear, edges replicated): brings `image` into flow's source frame."""
    import cv2

    h, w = flow.shape[:2]
    where = _grid(h, w) + flow
    # map2 None: `where` holds x and y in one (h, w, 2) float map (the stubs do not know that form)
    return np.asarray(
        cv2.remap(
            image,
            where,
            None,
            cv2.INTER_LINEAR,  # type: ignore[call-overload]
            borderMode=cv2.BORDER_REPLICATE,
        )
    )


def _norm2(v: np.ndarray) -> np.ndarray:
    return v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]


def consistent(forward: np.ndarray, backward: np.ndarray, motion_boundaries: bool = True) -> np.ndarray:
    """Pixels of A whose forward flow (A -> B) the backward flow (B -> A) undoes: bool (H, W).

    False marks occlusions (the point is hidden or leaves the frame in B) and, with
    `motion_boundaries`, pixels on a motion boundary, where the flow is unreliable.
    """
    back = warp(backward, forward)
    ok = _norm2(forward + back) < FB_ALPHA * (_norm2(forward) + _norm2(back)) + FB_BETA
    h, w = forward.shape[:2]
    target = _grid(h, w) + forward
    ok &= (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
    if motion_boundaries:
        gy_u, gx_u = np.gradient(forward[..., 0])
        gy_v, gx_v = np.gradient(forward[..., 1])
        grad = gx_u**2 + gy_u**2 + gx_v**2 + gy_v**2
        ok &= grad < MB_ALPHA * _norm2(forward) + MB_BETA
    return ok
