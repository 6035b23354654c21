"""The temporal filter on clips whose motion is known exactly: less flicker, no smearing, resets at cuts."""

from __future__ import annotations

import numpy as np
import pytest

from workers.video.clips import pan, pan_flow
from workers.video.flow import FlowEstimator, consistent, warp
from workers.video.quality import psnr, video_psnr, warping_error
from workers.video.scenes import CutDetector
from workers.video.temporal import MotionAnalyser, Spill, auto_strength, flicker, smooth

SIZE = (192, 112)


def analysed(frames: list[np.ndarray], cuts: list[bool] | None = None) -> MotionAnalyser:
    a = MotionAnalyser(SIZE, FlowEstimator())
    for i, f in enumerate(frames):
        a.add(f, bool(cuts and cuts[i]))
    return a


def flickering(frames: list[np.ndarray], seed: int = 0, amount: float = 18.0) -> list[np.ndarray]:
    """What a per-frame network does to a clip: the picture plus a tone shift and texture noise that change
    every frame."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        noise = rng.normal(0, amount, f.shape) + rng.normal(0, amount / 2, (1, 1, 3))
        out.append(np.clip(f.astype(np.float32) + noise, 0, 255).astype(np.uint8))
    return out


def ema(frames: list[np.ndarray], s: float) -> list[np.ndarray]:
    out, prev = [], None
    for f in frames:
        prev = f.astype(np.float32) if prev is None else s * prev + (1 - s) * f.astype(np.float32)
        out.append(prev.astype(np.uint8))
    return out


def test_dis_flow_finds_a_sub_pixel_pan_and_the_occluded_edge() -> None:
    a, b = pan(2, 3.4, SIZE)
    back = FlowEstimator()(b, a)  # flow from the second frame to the first: +3.4 px in x
    inner = back[8:-8, 8:-16]
    assert np.median(inner[..., 0]) == pytest.approx(3.4, abs=0.15) and abs(np.median(inner[..., 1])) < 0.15
    ok = consistent(back, FlowEstimator()(a, b))
    assert ok[:, : SIZE[0] // 2].mean() > 0.9  # most of the frame is seen in both
    assert ok[:, -2:].mean() < 0.5  # the strip that entered at the right edge has no match


def test_filter_cuts_flicker_along_the_true_motion_and_beats_the_moving_average() -> None:
    frames = pan(24, 2.3, SIZE)
    styled = flickering(frames)
    flows = pan_flow(2.3, len(frames), SIZE)  # graded with the exact flow, which the filter never saw
    before = warping_error(styled, flows)
    ours = list(smooth(styled, analysed(frames).motion, 0.7))
    after = warping_error(ours, flows)
    assert after < before / 4
    fidelity = video_psnr(ours, styled)
    moving = [ema(styled, s) for s in (0.3, 0.5, 0.7)]
    for out in moving:  # at any smoothing the moving average is either blurrier or flickers more
        assert video_psnr(out, styled) < fidelity or warping_error(out, flows) > after


def test_nothing_smears_into_what_was_hidden() -> None:
    """A square slides over a still background: where it just left, the filter must not paint it."""
    bg = pan(1, 0.0, SIZE)[0]
    frames = []
    for t in range(16):
        f = bg.copy()
        f[30:80, 20 + 6 * t : 70 + 6 * t] = (250, 30, 30)
        frames.append(f)
    out = list(smooth(frames, analysed(frames).motion, 0.9))
    t = 12
    uncovered = np.zeros(SIZE[::-1], bool)
    uncovered[32:78, 20 + 6 * (t - 3) : 20 + 6 * t - 2] = True  # covered three frames ago, background now
    diff = np.abs(out[t].astype(int) - frames[t].astype(int)).sum(-1)
    assert diff[uncovered].mean() < 12, "the square left a trail"
    trail = np.abs(ema(frames, 0.9)[t].astype(int) - frames[t].astype(int)).sum(-1)
    assert trail[uncovered].mean() > 60  # the moving average does leave one (the test can tell)


def test_a_scene_cut_resets_the_filter() -> None:
    red = [np.full((SIZE[1], SIZE[0], 3), (200, 40, 40), np.uint8)] * 6
    blue = [np.full((SIZE[1], SIZE[0], 3), (40, 40, 200), np.uint8)] * 6
    frames = pan(6, 1.0, SIZE) + pan(6, 1.0, SIZE, start=900.0)
    detector = CutDetector()
    cuts = [detector.feed(f) for f in frames]
    assert cuts == [False] * 6 + [True] + [False] * 5
    out = list(smooth(red + blue, analysed(frames, cuts).motion, 0.9))
    assert psnr(out[5], red[0]) > 45 and psnr(out[6], blue[0]) > 45  # nothing crosses the cut either way


def test_cut_detector_ignores_a_fast_pan() -> None:
    detector = CutDetector()
    assert not any(detector.feed(f) for f in pan(30, 14.0, SIZE))


def test_strength_zero_is_the_per_frame_output_and_auto_follows_the_flicker() -> None:
    frames = pan(8, 1.5, SIZE)
    styled = flickering(frames)
    motion = analysed(frames).motion
    assert all(np.array_equal(a, b) for a, b in zip(smooth(styled, motion, 0.0), styled, strict=True))
    steady = flicker(frames, motion)
    noisy = flicker(styled, motion)
    assert steady < 2 < noisy
    assert auto_strength(steady) < 0.4 < auto_strength(noisy) <= 0.8


def test_spill_keeps_big_windows_on_disk() -> None:
    spill = Spill(budget=3 * 1000)
    for i in range(10):
        spill.append(np.full(1000, i, np.uint8))
    assert spill.used == 3000 and len(spill) == 10
    assert [int(spill[i][0]) for i in range(10)] == list(range(10))
    assert isinstance(spill[9], np.memmap)
    spill.close()


def test_warp_brings_the_next_frame_into_this_one() -> None:
    a, b = pan(2, 4.0, SIZE)
    back = np.zeros((SIZE[1], SIZE[0], 2), np.float32)
    back[..., 0] = 4.0
    assert psnr(warp(a, back)[:, :-8], b[:, :-8]) > 35
