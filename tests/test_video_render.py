"""Rendering segments and joining them: the same video whole or in segments, timestamps and rotation kept."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from storage.config import WorkerSettings
from workers.contract import VideoStyleParams
from workers.style.engine import StyleEngine, StyleVariant
from workers.video.clips import pan, write_clip
from workers.video.frames import join_segments
from workers.video.plan import plan_segments
from workers.video.render import render_segment
from workers.video.source import probe_path

pytestmark = pytest.mark.slow
VARIANT = StyleVariant(method="builtin", builtin=((3, 1.0),))


@pytest.fixture(scope="module")
def engine() -> StyleEngine:
    e = StyleEngine(device="cpu", threads=1)
    e.load("builtin")
    return e


def render(
    engine: StyleEngine, clip: Path, out: Path, segment_seconds: float | None, context: int = 10, temporal: float = 0.8
) -> tuple[list[int], list[np.ndarray], int]:
    info = probe_path(str(clip), WorkerSettings())
    plan = plan_segments(info, str(clip), clip.name, 0, segment_seconds=segment_seconds, context_frames=context)
    parts = []
    for spec in plan.segments:
        part = out.parent / f"{out.stem}-{spec.segment}.mp4"
        with av.open(str(clip)) as container:
            render_segment(container, spec, [VARIANT], engine, VideoStyleParams(crf=0), [temporal], [part])
        parts.append(part)
    with av.open(str(clip)) as source:
        join_segments(parts, source, out)
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
        return [f.pts for f in frames], [f.to_ndarray(format="rgb24") for f in frames], int(frames[0].rotation or 0)


def test_segments_join_into_the_video_rendered_whole(engine: StyleEngine, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "pan.mp4", pan(60, 1.8, (160, 96)), 25, audio_seconds=2.4)
    whole_pts, whole, _ = render(engine, clip, tmp_path / "whole.mp4", None)
    parts_pts, parts, _ = render(engine, clip, tmp_path / "parts.mp4", 0.8)
    with av.open(str(clip)) as c:
        assert whole_pts == parts_pts == [f.pts for f in c.decode(video=0)]
    # lossless encoding (crf 0): what differs is only the filter's state, cut off at a segment's context
    diff = [float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(whole, parts, strict=True)]
    seams = [20, 40]  # first frames of segments 2 and 3
    assert max(diff) < 1.5, diff  # under 1.5 of 255 levels on average, where the encoder alone leaves ~3
    step = [float(np.abs(parts[t].astype(int) - parts[t - 1].astype(int)).mean()) for t in range(1, 60)]
    assert max(step[s - 1] for s in seams) < 1.5 * float(np.median(step)) + 1.0  # no jump at a seam


def test_variable_frame_rate_and_rotation_survive(engine: StyleEngine, tmp_path: Path) -> None:
    steps = [0, 1, 2, 4, 5, 8, 9, 10, 14, 15, 16, 17, 20, 24, 25, 26, 30, 31, 33, 34]
    clip = write_clip(
        tmp_path / "vfr.mp4", pan(len(steps), 2.0, (128, 80)), 25, pts=[s * 512 for s in steps], rotation=270
    )
    pts, frames, rotation = render(engine, clip, tmp_path / "out.mp4", 0.4, context=4)
    with av.open(str(clip)) as c:
        src = list(c.decode(video=0))
    assert pts == [f.pts for f in src] and rotation % 360 == 270
    assert frames[0].shape == src[0].to_ndarray(format="rgb24").shape  # stored the same way round


def test_an_arbitrary_style_below_full_strength_gets_one_style_vector_per_shot(
    engine: StyleEngine, tmp_path: Path
) -> None:
    from workers.video.clips import canvas

    frames = pan(12, 1.0, (128, 80)) + pan(12, 1.0, (128, 80), start=900.0)  # a cut after frame 12
    clip = write_clip(tmp_path / "two-shots.mp4", frames, 25)
    info = probe_path(str(clip), WorkerSettings())
    [spec] = plan_segments(info, str(clip), clip.name, 0, segment_seconds=None, context_frames=0).segments
    style = engine.style_vector(Image.fromarray(canvas(256)[:, :256]))
    variant = StyleVariant(method="arbitrary", style_key="s.jpg", style_vector=style, strength=0.5)
    calls = []
    original = engine.style_vector

    def counting(image: object) -> np.ndarray:
        calls.append(image)
        return original(image)  # type: ignore[arg-type]

    engine.style_vector = counting  # type: ignore[method-assign]
    try:
        with av.open(str(clip)) as container:
            result = render_segment(
                container, spec, [variant], engine, VideoStyleParams(), [0.0], [tmp_path / "out.mp4"]
            )
    finally:
        del engine.style_vector
    assert len(result.cuts) == 1 and result.frames == 24
    assert len(calls) == 2  # the shots' own style vectors, not one per frame (the photo path's way)
