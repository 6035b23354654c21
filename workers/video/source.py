"""Reading videos from the object store: a seekable file over range reads, and the probe.

FFmpeg (through PyAV) reads containers by seeking around (an MP4's index may sit at the end), so a
video is opened through `RangeReader`, a read-only file whose reads become HTTP range requests of
`block` bytes, with a few blocks cached: memory stays at block x cache blocks per open video,
whatever the video's size.

`probe` checks a video before any work is planned on it and raises `VideoError` with a reason a
user can act on: not a container FFmpeg reads, no video stream, a codec without a decoder, absurd
size, duration or frame rate, a single frame, or a file cut short.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.config import WorkerSettings
from storage.errors import ObjectNotFound
from storage.names import ItemErrorCode
from storage.objects import ObjectStore
from workers.contract import ItemFailure
from workers.video.plan import AudioInfo, VideoInfo

if TYPE_CHECKING:
    import av.container

MIN_FRAMES = 2
_PROBE_FRAMES = 3  # decoded at the start (and at the end) to prove the codec and the data are really there


class VideoError(ItemFailure, ValueError):
    """The file is not a video we can process; the message says why (it becomes the item's error)."""

    code = ItemErrorCode.DECODE_FAILED


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over one object, read in cached blocks by HTTP range requests."""

    def __init__(
        self, store: ObjectStore, key: str, size: int | None = None, *, block: int = 1 << 20, cache_blocks: int = 16
    ) -> None:
        super().__init__()
        self.store, self.key = store, key
        self.size = store.stat(key).size if size is None else size
        self.block, self.cache_blocks = block, cache_blocks
        self.requests = 0  # range requests made (tests check that a probe reads little)
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _block(self, n: int) -> bytes:
        data = self._cache.get(n)
        if data is None:
            start = n * self.block
            data = self.store.get_range(self.key, start, min(self.block, self.size - start))
            self.requests += 1
            self._cache[n] = data
            while len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(n)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.size - self._pos)
        done = 0
        while done < want:
            n, offset = divmod(self._pos, self.block)
            data = self._block(n)[offset : offset + want - done]
            if not data:
                break
            view[done : done + len(data)] = data
            done += len(data)
            self._pos += len(data)
        return done


def upload_file(store: ObjectStore, key: str, path: Path, content_type: str) -> None:
    """Stream a local file (a rendered segment, a joined video) into the store."""
    with open(path, "rb") as fh:
        store.put_stream(key, fh, path.stat().st_size, content_type)


@contextmanager
def open_video(
    store: ObjectStore, key: str, settings: WorkerSettings, size: int | None = None
) -> Iterator[av.container.InputContainer]:
    """Open a stored video for demuxing and decoding (raises VideoError when FFmpeg cannot read it)."""
    import av

    reader = RangeReader(
        store, key, size, block=settings.video_read_block_bytes, cache_blocks=settings.video_read_cache_blocks
    )
    try:
        container = av.open(reader, mode="r", options={"probesize": str(5 << 20)})
    except av.FFmpegError as exc:
        raise VideoError(f"not a readable video: {_reason(exc)}") from None
    try:
        yield container
    finally:
        container.close()
        reader.close()


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.rstrip(".").replace("Invalid data found when processing input", "corrupt or truncated file")


def probe(store: ObjectStore, key: str, settings: WorkerSettings) -> VideoInfo:
    """What a stored video is, checked against the limits in `settings`; raises VideoError with a reason."""
    try:
        size = store.stat(key).size
    except ObjectNotFound:
        raise VideoError("input object is missing", ItemErrorCode.INPUT_MISSING) from None
    if size == 0:
        raise VideoError("empty file (0 bytes)")
    if size > settings.video_max_bytes:
        raise VideoError(
            f"video too large: {size} bytes exceeds the {settings.video_max_bytes}-byte limit", ItemErrorCode.TOO_LARGE
        )
    with open_video(store, key, settings, size) as container:
        return _probe_container(container, size, settings)


def probe_path(path: str, settings: WorkerSettings) -> VideoInfo:
    """`probe` for a local file (benchmarks, tools)."""
    import os

    import av

    size = os.path.getsize(path)
    try:
        container = av.open(path)
    except av.FFmpegError as exc:
        raise VideoError(f"not a readable video: {_reason(exc)}") from None
    with container:
        return _probe_container(container, size, settings)


def _probe_container(container: av.container.InputContainer, size: int, settings: WorkerSettings) -> VideoInfo:
    import av

    if not container.streams.video:
        kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["no"]
        raise VideoError(f"no video stream (the file has {', '.join(kinds)} streams only)")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    name = ctx.name if ctx is not None else "unknown"
    if ctx is None or name not in av.codecs_available:
        raise VideoError(f"unsupported video codec {name!r}: no decoder for it")
    width, height = ctx.width, ctx.height
    if width <= 0 or height <= 0:
        raise VideoError(f"not a readable video: its {name} stream has no frame size (corrupt, or not a video)")
    if width * height > settings.video_max_pixels:
        raise VideoError(
            f"video frames too large: {width}x{height} exceeds the {settings.video_max_pixels / 1e6:.1f} MP limit",
            ItemErrorCode.TOO_LARGE,
        )
    tb = stream.time_base
    if tb is None:
        raise VideoError("video stream without a time base")
    timestamps = _index_timestamps(stream)
    duration = _duration(container, stream, timestamps)
    fps = float(stream.average_rate or stream.guessed_rate or 0) or (len(timestamps) / duration if duration else 0)
    if duration > settings.video_max_seconds:
        raise VideoError(
            f"video too long: {duration:.0f} s exceeds the {settings.video_max_seconds:.0f} s limit",
            ItemErrorCode.TOO_LARGE,
        )
    if fps > settings.video_max_fps:
        raise VideoError(
            f"frame rate too high: {fps:.0f} frames/s exceeds the {settings.video_max_fps:.0f} limit",
            ItemErrorCode.TOO_LARGE,
        )
    _check_index(stream, size)
    first = _decode_some(container, stream, None)
    if not first:
        raise VideoError(f"no frame could be decoded ({name}): corrupt or truncated video")
    frames = stream.frames or len(timestamps)
    exact = bool(frames)
    if not frames:
        frames = max(len(first), round(duration * fps))
    if frames < MIN_FRAMES or len(first) < MIN_FRAMES:
        raise VideoError("a single frame, not a video: submit it as a photo", ItemErrorCode.UNSUPPORTED)
    if duration <= 0:
        raise VideoError("video without a duration")
    if len(first) == _PROBE_FRAMES and frames > 2 * _PROBE_FRAMES:
        _check_end(container, stream, first[0], duration)
    start = first[0].pts if stream.start_time is None else int(stream.start_time)
    diffs = {b - a for a, b in zip(sorted(timestamps), sorted(timestamps)[1:], strict=False)}
    audio = None
    if container.streams.audio:
        a = container.streams.audio[0].codec_context
        audio = AudioInfo(codec=a.name, sample_rate=int(a.sample_rate or 0), channels=int(a.channels or 0))
    return VideoInfo(
        container=container.format.name,
        codec=name,
        width=width,
        height=height,
        rotation=int(getattr(first[0], "rotation", 0) or 0) % 360,
        time_base=(tb.numerator, tb.denominator),
        start_pts=start,
        duration_s=duration,
        frames=int(frames),
        frames_exact=exact,
        fps=fps,
        variable_rate=len(diffs) > 2,
        audio=audio,
        size_bytes=size,
    )


def _index_timestamps(stream: Any) -> list[int]:
    try:
        return [int(e.timestamp) for e in stream.index_entries]
    except (AttributeError, TypeError):
        return []


def _duration(container: Any, stream: Any, timestamps: list[int]) -> float:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    if len(timestamps) > 1:
        return float((max(timestamps) - min(timestamps)) * stream.time_base)
    return 0.0


def _check_index(stream: Any, size: int) -> None:
    """The container's index (MP4, MOV) says where every packet is: a file cut short has packets past its end."""
    try:
        entries = stream.index_entries
        last = max((e.pos + e.size for e in entries), default=0) if len(entries) else 0
    except (AttributeError, TypeError):
        return
    if last > size:
        raise VideoError(
            f"truncated video: the file ends at byte {size} but its index needs {last} bytes "
            f"({100 * size / last:.0f} % present)"
        )


def _decode_some(container: Any, stream: Any, seek_pts: int | None) -> list[Any]:
    import av

    frames: list[Any] = []
    try:
        if seek_pts is not None:
            container.seek(seek_pts, stream=stream, backward=True)
        for packet in container.demux(stream):
            for frame in packet.decode():
                frames.append(frame)
                if seek_pts is None and len(frames) >= _PROBE_FRAMES:
                    return frames
    except (av.FFmpegError, EOFError) as exc:
        if not frames:
            raise VideoError(f"cannot decode the video: {_reason(exc)}") from None
    return frames


def _check_end(container: Any, stream: Any, first: Any, duration: float) -> None:
    """Decode the last second: a file cut short (without an index that says so) ends early or fails here."""
    target = int(first.pts + max(0.0, duration - 1.0) / float(stream.time_base))
    tail = _decode_some(container, stream, target)
    if not tail:
        raise VideoError("truncated video: nothing can be decoded near its end")
    end = max(float((f.pts - first.pts) * stream.time_base) for f in tail if f.pts is not None)
    if end < duration - 2.0:
        raise VideoError(f"truncated video: frames stop at {end:.1f} s of the {duration:.1f} s announced")
