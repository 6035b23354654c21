"""Scene cuts: where a new shot starts, so filters reset and styles are recomputed there.

The content score of PySceneDetect's ContentDetector (mean absolute change of hue, saturation and
value between consecutive frames, on a small copy), judged against the shot's own recent changes
(as its AdaptiveDetector does, but causal: one call per frame, in order), so a cut between two
similar-looking shots is found and a fast pan is not mistaken for a cut.
"""

from __future__ import annotations

from collections import deque

import numpy as np

THUMB_WIDTH = 96


class CutDetector:
    """`feed(frame)` is True when the frame starts a new shot (never for the first frame).

    A cut is a change at least `floor` and `relative` times the shot's usual change between frames (the
    mean of the last few), so a fast pan, which changes every frame a lot, is not a cut. With too little
    history to know what is usual (a shot's first frames), only a change above `threshold` counts.
    """

    def __init__(
        self, threshold: float = 54.0, relative: float = 3.0, floor: float = 12.0, min_frames: int = 4
    ) -> None:
        self.threshold, self.relative, self.floor, self.min_frames = threshold, relative, floor, min_frames
        self._prev: np.ndarray | None = None
        self._recent: deque[float] = deque(maxlen=8)
        self._since = 0

    @staticmethod
    def _thumb(rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL)
        return hsv.astype(np.float32)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """Mean absolute change of hue (wrapping around), saturation and value, 0-255."""
        diff = np.abs(a - b)
        hue = np.minimum(diff[..., 0], 256.0 - diff[..., 0])
        return float((hue.mean() + diff[..., 1].mean() + diff[..., 2].mean()) / 3.0)

    def feed(self, rgb: np.ndarray) -> bool:
        thumb = self._thumb(rgb)
        prev, self._prev = self._prev, thumb
        self._since += 1
        if prev is None:
            return False
        score = self.score(thumb, prev)
        if len(self._recent) < 2:
            cut = score >= self.threshold
        else:
            cut = score >= self.floor and score >= self.relative * max(float(np.mean(self._recent)), 2.0)
        if cut and self._since > self.min_frames:
            self._since = 0
            self._recent.clear()
            return True
        self._recent.append(score)
        return False
