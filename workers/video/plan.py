"""What ingest learns about a video and how it splits the work: typed documents, no FFmpeg.

`VideoInfo` is the probe of one video (written into its plan); `SegmentSpec` is the input object of
one segment item (a style job renders a video as segments that run as separate chunks; a faces job
has one segment spanning the whole video). Both are written once at ingest under deterministic keys
(storage/keys.py `video_plan`, `video_segment`) and read by the worker, so a redelivered chunk sees
exactly the plan the first delivery saw.
"""

from __future__ import annotations

import math
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AudioInfo(_Doc):
    codec: str
    sample_rate: int = 0
    channels: int = 0


class VideoInfo(_Doc):
    """The probe of a video: its stream as stored, plus how to show it."""

    container: str
    codec: str
    width: int = Field(description="stored (coded) width, before rotation")
    height: int
    rotation: int = Field(0, description="display rotation, degrees counter-clockwise (PyAV's frame.rotation)")
    time_base: tuple[int, int] = Field(description="the video stream's time base as (numerator, denominator)")
    start_pts: int = 0
    duration_s: float
    frames: int = Field(description="frame count: exact when the container indexes every frame, else estimated")
    frames_exact: bool = False
    fps: float = Field(description="average frame rate")
    variable_rate: bool = False
    audio: AudioInfo | None = None
    size_bytes: int = 0

    @property
    def tb(self) -> Fraction:
        return Fraction(*self.time_base)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, after the rotation."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)

    def pts_at(self, seconds: float) -> int:
        """The stream timestamp `seconds` after the video's start."""
        return self.start_pts + round(Fraction(seconds).limit_denominator(1_000_000) / self.tb)

    def seconds_at(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.tb)


class SegmentSpec(_Doc):
    """One unit of video work: frames with start_pts <= pts < end_pts (end None: to the end)."""

    kind: str = "nightshift.video.segment"
    source_key: str
    name: str
    video: int = Field(description="index of the video's first item: names the video within its job")
    segment: int
    segments: int
    start_pts: int
    end_pts: int | None
    context_frames: int = Field(0, description="frames decoded before and after the segment for its filters")
    frames_estimate: int
    info: VideoInfo

    @property
    def last(self) -> bool:
        return self.segment == self.segments - 1

    def contains(self, pts: int) -> bool:
        return pts >= self.start_pts and (self.end_pts is None or pts < self.end_pts)


class VideoPlan(_Doc):
    """A video and the items it became: `first_item` + n is segment n."""

    source_key: str
    name: str
    first_item: int
    info: VideoInfo
    segments: list[SegmentSpec]

    @property
    def items(self) -> list[int]:
        return [self.first_item + s.segment for s in self.segments]


def plan_segments(
    info: VideoInfo, source_key: str, name: str, first_item: int, *, segment_seconds: float | None, context_frames: int
) -> VideoPlan:
    """Split a video into segments of about `segment_seconds` (None: one segment for the whole video).

    A remainder shorter than half a segment joins the last segment, so no segment is a sliver.
    """
    count = 1
    if segment_seconds is not None and info.duration_s > segment_seconds:
        count = max(1, math.floor(info.duration_s / segment_seconds + 0.5))
    bounds = [info.start_pts] + [info.pts_at(k * info.duration_s / count) for k in range(1, count)] + [None]
    per_segment = info.frames / count
    specs = [
        SegmentSpec(
            source_key=source_key,
            name=name,
            video=first_item,
            segment=k,
            segments=count,
            start_pts=int(bounds[k] or 0),
            end_pts=bounds[k + 1],
            context_frames=context_frames if count > 1 else 0,
            frames_estimate=max(1, round(per_segment)),
            info=info,
        )
        for k in range(count)
    ]
    return VideoPlan(source_key=source_key, name=name, first_item=first_item, info=info, segments=specs)
