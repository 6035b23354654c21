"""Face protection in videos: the photo path's blend, on boxes that glide between key frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from storage.config import WorkerSettings
from workers.contract import VideoStyleParams
from workers.style.engine import StyleEngine, StyleVariant
from workers.style.faces import Box, default_protection, find_faces, protect_faces
from workers.video.clips import pan, write_clip
from workers.video.plan import plan_segments
from workers.video.protect import FaceKeyframes
from workers.video.render import render_segment
from workers.video.source import probe_path

STYLE_7 = StyleVariant(method="builtin", builtin=((7, 1.0),))  # paints faces over (docs/styles.md)
SPEED = 2  # pixels per frame: whole pixels, so frame t-1 shifted by SPEED is frame t


def _fake(boxes: dict[int, list[Box]]) -> tuple[FaceKeyframes, list[int]]:
    """Key frames every 4 frames (0.2 s at 20 frames/s) over 17 frames; the detector answers from `boxes`."""
    seen: list[int] = []

    def detect(_image: Image.Image) -> list[Box]:
        seen.append(len(seen))
        return boxes.get(len(seen) - 1, [])

    keys = FaceKeyframes(period_s=0.2, detect=detect)
    return keys, seen


def _feed(keys: FaceKeyframes, frames: int, cut_at: int | None = None) -> None:
    blank = np.zeros((8, 8, 3), np.uint8)
    for t in range(frames):
        keys.feed(blank, t / 20, t == cut_at)


def test_boxes_glide_between_key_frames_and_bridge_a_miss() -> None:
    # key frames 0, 4, 8, 12, 16 (detections 0-4); the detector misses the face at key frame 8
    moving = {0: [(0.0, 0.0, 10.0, 10.0)], 1: [(4.0, 0.0, 14.0, 10.0)], 3: [(12.0, 0.0, 22.0, 10.0)]}
    keys, seen = _fake(moving)
    _feed(keys, 17)
    assert keys.keys == [0, 4, 8, 12, 16] and len(seen) == 5
    assert len(keys.tracks) == 1  # one face, through the miss
    for t in range(0, 13):
        [box], [weight] = keys.at(t)
        assert weight == 1.0 and box[0] == pytest.approx(t), t  # one pixel a frame, no jump at the miss
    assert [keys.at(t)[1] for t in (13, 14, 15, 16)] == [[0.75], [0.5], [0.25], []]  # gone at 16: fades out


def test_a_face_that_appears_fades_in_and_nothing_crosses_a_cut() -> None:
    keys, _ = _fake({1: [(0.0, 0.0, 10.0, 10.0)], 2: [(0.0, 0.0, 10.0, 10.0)], 3: [(50.0, 0.0, 60.0, 10.0)]})
    _feed(keys, 12, cut_at=10)  # key frames 0, 4, 8 and 10 (a shot's first frame); 12 is past the end
    assert keys.keys == [0, 4, 8, 10]
    assert [keys.at(t)[1] for t in (0, 1, 2, 3, 4)] == [[], [0.25], [0.5], [0.75], [1.0]]
    assert keys.at(9) == ([(0.0, 0.0, 10.0, 10.0)], [1.0])  # held to the end of its shot
    assert keys.at(10) == ([(50.0, 0.0, 60.0, 10.0)], [1.0])  # the new shot's face only


@pytest.fixture(scope="module")
def engine() -> StyleEngine:
    e = StyleEngine(device="cpu", threads=1)
    e.load("builtin")
    return e


def face_clip(path: Path, frames: int = 30) -> Path:
    """The astronaut panned left by SPEED pixels a frame: her face crosses a 320x240 frame."""
    from skimage import data

    return write_clip(path, pan(frames, SPEED, (320, 240), picture=data.astronaut()), 25)


def _render(
    engine: StyleEngine, clip: Path, out: Path, protect: float, temporal: float = 0.6
) -> tuple[Any, list[np.ndarray]]:
    info = probe_path(str(clip), WorkerSettings())
    [spec] = plan_segments(info, str(clip), clip.name, 0, segment_seconds=None, context_frames=0).segments
    with av.open(str(clip)) as container:
        result = render_segment(
            container, spec, [STYLE_7], engine, VideoStyleParams(crf=4), [temporal], [out], protect=[protect]
        )
    with av.open(str(out)) as c:
        return result, [f.to_ndarray(format="rgb24").astype(float) for f in c.decode(video=0)]


def test_a_video_keeps_faces_as_the_photo_path_does_and_steadily(engine: StyleEngine, tmp_path: Path) -> None:
    clip = face_clip(tmp_path / "face.mp4")
    with av.open(str(clip)) as c:
        src = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    amount = default_protection(STYLE_7.builtin)
    kept, protected = _render(engine, clip, tmp_path / "kept.mp4", amount)
    painted, plain = _render(engine, clip, tmp_path / "painted.mp4", 0.0)
    assert (kept.faces, kept.face_frames) == (1, 30) and (painted.faces, painted.face_frames) == (0, 0)

    t = 15
    [box] = find_faces(Image.fromarray(src[t]))
    x1, y1, x2, y2 = (round(v) for v in box)
    face = (slice(y1, y2), slice(x1, x2))
    photo = np.asarray(
        protect_faces(
            engine.render_batch([Image.fromarray(src[t])], STYLE_7)[0], Image.fromarray(src[t]), [box], amount
        )
    )
    original = src[t][face].astype(float)
    photo_err = np.abs(photo[face] - original).mean()
    video_err = np.abs(protected[t][face] - original).mean()
    painted_err = np.abs(plain[t][face] - original).mean()
    assert video_err < 1.25 * photo_err + 3, (video_err, photo_err)  # as close to the photo as a photo's is
    assert painted_err > 1.8 * video_err, (painted_err, video_err)  # without protection it is painted over
    corner = (slice(0, 60), slice(0, 40))  # background, far from the face: stylized all the same
    assert np.abs(protected[t][corner] - plain[t][corner]).mean() < 1.0
    assert np.abs(protected[t][corner] - src[t][corner]).mean() > 20

    # steady: the face region of frame t against frame t-1 moved by the pan flickers no more than the
    # unprotected output does (key frames every 5 frames must not show as jumps of the mask)
    def flicker(frames: list[np.ndarray]) -> list[float]:
        steps = []
        for k in range(1, 30):
            x = x1 - (k - t) * SPEED  # the face's box in frame k
            now, before = frames[k][y1:y2, x : x + x2 - x1], frames[k - 1][y1:y2, x + SPEED : x + SPEED + x2 - x1]
            steps.append(float(np.abs(now - before).mean()))
        return steps

    kept_steps, plain_steps = flicker(protected), flicker(plain)
    assert max(kept_steps) < max(plain_steps) + 1.0, (kept_steps, plain_steps)
    assert np.mean(kept_steps) < np.mean(plain_steps), (kept_steps, plain_steps)
