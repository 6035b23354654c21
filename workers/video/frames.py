"""Frames in and out of containers, through PyAV: decode a window, encode a segment, join segments.

Timestamps are the source's own (its time base, its pts), so a variable frame rate survives the
round trip; rotation stays metadata (`set_display_rotation`) while the pixels the models see are
turned upright. Encoding uses no B-frames: every segment's DTS then equals its PTS, so segments
encoded apart concatenate into one stream with monotonic timestamps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workers.video.plan import VideoInfo
from workers.video.source import VideoError

Codec = Literal["h264", "h265"]
ENCODERS: dict[str, str] = {"h264": "libx264", "h265": "libx265"}
# audio codecs an MP4 holds as they are; anything else goes into Matroska, still without re-encoding
MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})


@dataclass
class Frame:
    """One decoded frame: the source pts and RGB pixels (upright, at the size asked for)."""

    pts: int
    rgb: np.ndarray
    own: bool = True  # False for context frames decoded around a segment


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Stored pixels as shown: the display matrix turns them `rotation` degrees counter-clockwise."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def stored(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Upright pixels back in the stored orientation (the inverse of `upright`)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, -k)) if k else rgb


def even_size(width: int, height: int, long_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the long side is `long_side` (None: unchanged), rounded to even numbers
    (4:2:0 video needs them)."""
    if long_side is not None and long_side != max(width, height):
        scale = long_side / max(width, height)
        width, height = round(width * scale), round(height * scale)
    return max(2, width // 2 * 2), max(2, height // 2 * 2)


def iter_window(
    container: Any,
    info: VideoInfo,
    *,
    start_pts: int | None = None,
    end_pts: int | None = None,
    before: int = 0,
    after: int = 0,
    size: tuple[int, int] | None = None,
    threads: int = 1,
) -> Iterator[Frame]:
    """Frames with start_pts <= pts < end_pts (`own`), plus up to `before` frames just before and `after`
    frames just after (context), in presentation order. `size` is the stored (unrotated) size to
    decode to; frames come out upright. Raises VideoError when the data ends in the middle.
    """
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"
    stream.codec_context.thread_count = threads
    if start_pts is not None and start_pts > info.start_pts:
        margin = int((before + 2) / max(info.fps, 1.0) / float(info.tb)) + 1
        container.seek(max(info.start_pts, start_pts - margin), stream=stream, backward=True)
    width, height = size or (info.width, info.height)
    history: deque[Frame] = deque(maxlen=max(before, 1))
    own_seen = tail = 0
    last_pts: int | None = None
    step = max(1, round(1 / max(info.fps, 1e-3) / float(info.tb)))
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                pts = frame.pts if frame.pts is not None else (last_pts + step if last_pts is not None else 0)
                if last_pts is not None and pts <= last_pts:
                    continue  # a frame repeated after the seek
                last_pts = pts
                rgb = upright(frame.to_ndarray(format="rgb24", width=width, height=height), info.rotation)
                if start_pts is not None and pts < start_pts:
                    if before:
                        history.append(Frame(pts, rgb, own=False))
                    continue
                if end_pts is not None and pts >= end_pts:
                    if not own_seen and before:  # an empty segment still yields its context
                        yield from _drain(history)
                        own_seen = -1
                    if tail >= after:
                        return
                    tail += 1
                    yield Frame(pts, rgb, own=False)
                    continue
                if not own_seen and before:
                    yield from _drain(history)
                own_seen += 1
                yield Frame(pts, rgb)
    except av.FFmpegError as exc:
        raise VideoError(
            f"the video breaks off at {info.seconds_at(last_pts or info.start_pts):.2f} s: "
            f"{getattr(exc, 'strerror', None) or exc} (corrupt or truncated?)"
        ) from None


def _drain(history: deque[Frame]) -> Iterator[Frame]:
    while history:
        yield history.popleft()


class SegmentWriter:
    """Encodes RGB frames (upright) with their source pts into a video-only file."""

    def __init__(
        self,
        path: Path,
        info: VideoInfo,
        size: tuple[int, int],
        *,
        codec: Codec = "h264",
        crf: int = 20,
        preset: str = "medium",
        threads: int = 1,
    ) -> None:
        import av

        self.info = info
        self.container = av.open(str(path), mode="w", format="mp4" if path.suffix == ".mp4" else None)
        fps = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
        stream: Any = self.container.add_stream(ENCODERS[codec], rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = info.tb
        stream.codec_context.time_base = info.tb
        stream.thread_count = threads
        if codec == "h264":
            stream.options = {"crf": str(crf), "preset": preset, "bframes": "0"}
        else:
            stream.options = {
                "crf": str(crf),
                "preset": preset,
                "x265-params": f"bframes=0:log-level=error:pools={threads}",
            }
            stream.codec_tag = "hvc1"  # Apple's players need this tag for HEVC in MP4
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self.stream = stream
        self.frames = 0

    def write(self, rgb_upright: np.ndarray, pts: int) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(stored(rgb_upright, self.info.rotation), format="rgb24")
        frame.pts = pts
        frame.time_base = self.info.tb
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def join_segments(parts: Sequence[Path], source: Any | None, out: Path) -> dict[str, Any]:
    """Concatenate segment files (video only, same encoder settings) and copy the source's first audio
    stream as it is (no re-encoding). `source` is an open input container or None.

    Timestamps are kept as they are (segments carry the source's pts). Raises VideoError when the
    segments do not fit together (different sizes or codec headers).
    """
    import av

    out_container = av.open(str(out), mode="w")
    try:
        inputs = [av.open(str(p)) for p in parts]
        try:
            template = inputs[0].streams.video[0]
            for other in inputs[1:]:
                s = other.streams.video[0]
                if s.codec_context.extradata != template.codec_context.extradata or (s.width, s.height) != (
                    template.width,
                    template.height,
                ):
                    raise VideoError(f"segment {other.name} does not match the first segment's stream")
            vout = out_container.add_stream_from_template(template)
            if template.codec_context.name == "hevc":
                vout.codec_tag = "hvc1"  # the template does not carry the tag; the muxer would write hev1
            _copy_rotation(template, vout)
            audio_in = source.streams.audio[0] if source is not None and source.streams.audio else None
            aout = out_container.add_stream_from_template(audio_in) if audio_in is not None else None
            frames = audio_packets = 0
            last_dts: int | None = None
            for container in inputs:
                for packet in container.demux(container.streams.video[0]):
                    if packet.dts is None:
                        continue
                    if last_dts is not None and packet.dts <= last_dts:
                        raise VideoError("segments overlap in time: a frame would be written twice")
                    last_dts = packet.dts
                    packet.stream = vout
                    out_container.mux(packet)
                    frames += 1
            if source is not None and audio_in is not None and aout is not None:
                source.seek(0)
                for packet in source.demux(audio_in):
                    if packet.dts is None:
                        continue
                    packet.stream = aout
                    out_container.mux(packet)
                    audio_packets += 1
        finally:
            for container in inputs:
                container.close()
    finally:
        out_container.close()
    return {"frames": frames, "audio_packets": audio_packets}


def _copy_rotation(template: Any, out: Any) -> None:
    """Stream templates do not carry the display matrix; read it from a frame and set it again."""
    container = template.container
    try:
        for frame in container.decode(template):
            if getattr(frame, "rotation", 0):
                out.set_display_rotation(int(frame.rotation))
            break
    finally:
        container.seek(0)


def output_container(audio_codec: str | None) -> str:
    """The file extension the joined video gets: MP4 unless its audio only fits Matroska."""
    return "mp4" if audio_codec is None or audio_codec in MP4_AUDIO else "mkv"
