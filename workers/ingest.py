"""Expanding a job's sources into items: an object-store prefix (streamed) and zip/tar archives.

Resumable: the job record keeps how many source entries were consumed (`ingest_cursor`) and how
many items were enqueued (`enqueued`), so a redelivered ingest neither loses nor duplicates items.
Archives are expanded safely: no absolute or `..` paths, no links or devices, bounded member
count, member size and total size (checked on the bytes actually read, not the declared sizes).
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from storage import keys
from storage.coordination import LockBusy
from storage.errors import ObjectNotFound, StoreUnavailable
from storage.names import ItemErrorCode
from storage.records import Item, Job
from workers.context import WorkerContext
from workers.contract import Inputs, ItemFailure
from workers.dispatch import enqueue_chunks
from workers.imaging import ImageDecodeError, probe

if TYPE_CHECKING:
    from workers.video.intake import VideoIntake

log = logging.getLogger("nightshift.ingest")
SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class ArchiveError(ItemFailure, ValueError):
    """The archive is unusable as a whole (corrupt, a bomb, too many members); one failed entry."""

    code = ItemErrorCode.DECODE_FAILED


@dataclass
class Entry:
    """One source entry: an object already in the store, or an archive member's bytes."""

    name: str
    key: str | None = None
    data: bytes | None = None
    error: ItemFailure | None = None  # why the entry is a failed item (its message and code)

    @classmethod
    def failed(cls, name: str, code: ItemErrorCode, message: str) -> Entry:
        return cls(name, error=ItemFailure(message, code))


def member_name_ok(name: str) -> bool:
    """A relative path without `..` segments, and not desktop metadata."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or any(p == ".." for p in path.parts) or not path.parts:
        return False
    return not _junk(name)


def _bounded_read(fh: IO[bytes], limit: int) -> bytes | None:
    data = fh.read(limit + 1)
    return None if len(data) > limit else data


def iter_archive(path: str, name: str, ctx: WorkerContext) -> Iterator[Entry]:
    """Yield the regular-file members of a zip or tar, in archive order, with per-member errors."""
    w = ctx.settings.worker
    total = 0
    count = 0

    def account(size: int) -> None:
        nonlocal total, count
        total += size
        count += 1
        if count > w.max_archive_members:
            raise ArchiveError(f"archive {name} has more than {w.max_archive_members} members", ItemErrorCode.TOO_LARGE)
        if total > w.max_archive_bytes:
            raise ArchiveError(
                f"archive {name} expands beyond {w.max_archive_bytes} bytes (zip bomb?)", ItemErrorCode.TOO_LARGE
            )

    def member(name: str, data: bytes | None) -> Entry:
        if data is None:
            account(w.max_member_bytes)
            return Entry.failed(name, ItemErrorCode.TOO_LARGE, f"archive member larger than {w.max_member_bytes} bytes")
        account(len(data))
        return Entry(name, data=data)

    if zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(f"corrupt zip archive {name}: {exc}") from None
        with zf:
            for info in zf.infolist():
                if info.is_dir() or _junk(info.filename):
                    continue
                if not member_name_ok(info.filename):
                    yield _unsafe(info.filename)
                elif (info.external_attr >> 16) & 0o170000 == 0o120000:
                    yield Entry.failed(info.filename, ItemErrorCode.REFUSED, "symbolic link in archive (skipped)")
                else:
                    try:
                        with zf.open(info) as fh:
                            yield member(info.filename, _bounded_read(fh, w.max_member_bytes))
                    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
                        yield Entry.failed(info.filename, ItemErrorCode.DECODE_FAILED, f"corrupt archive member: {exc}")
        return
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"{name} is not a zip or tar archive ({exc})") from None
    with tf:
        try:
            for tinfo in tf:
                if tinfo.isdir() or _junk(tinfo.name):
                    continue
                if not tinfo.isfile():
                    yield Entry.failed(tinfo.name, ItemErrorCode.REFUSED, "link or special file in archive (skipped)")
                elif not member_name_ok(tinfo.name):
                    yield _unsafe(tinfo.name)
                else:
                    member_fh = tf.extractfile(tinfo)
                    yield member(tinfo.name, _bounded_read(member_fh, w.max_member_bytes) if member_fh else b"")
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ArchiveError(f"corrupt tar archive {name}: {exc}") from None


def _junk(name: str) -> bool:
    """Desktop metadata that rides along in archives (macOS forks, Finder and Explorer files): skipped quietly."""
    path = PurePosixPath(name.replace("\\", "/"))
    return any(p.startswith("__MACOSX") for p in path.parts) or path.name in SKIP_NAMES or path.name.startswith("._")


def _unsafe(name: str) -> Entry:
    return Entry.failed(name, ItemErrorCode.REFUSED, f"unsafe path in archive: {name!r} (skipped)")


def iter_sources(ctx: WorkerContext, tenant: str, inputs: Inputs) -> Iterator[Entry]:
    """Every entry of a job's prefix and archives, in a deterministic order.

    Every key is resolved inside `tenant` (a name that looks like another tenant's key is just a name in
    this tenant's namespace). A missing or oversized archive is one failed entry, not the end of the job.
    """
    if inputs.prefix:
        root = keys.tenant_root(tenant)
        for obj in ctx.store.list(keys.tenant_key(tenant, inputs.prefix)):
            if obj.key.endswith("/.keep") or obj.size == 0 and obj.key.endswith("/"):
                continue
            yield Entry(obj.key[len(root) :], key=obj.key)
    for rel in inputs.videos:
        yield Entry(_video_name(rel), key=keys.tenant_key(tenant, rel))
    for rel in inputs.archives:
        name = PurePosixPath(rel).name
        key = keys.tenant_key(tenant, rel)
        try:
            size = ctx.store.stat(key).size
        except ObjectNotFound:
            yield Entry.failed(name, ItemErrorCode.INPUT_MISSING, f"archive {rel!r} not found in your storage")
            continue
        if size > ctx.settings.worker.max_archive_bytes:
            limit = ctx.settings.worker.max_archive_bytes
            yield Entry.failed(name, ItemErrorCode.TOO_LARGE, f"archive {name} is {size} bytes; the limit is {limit}")
            continue
        with tempfile.NamedTemporaryFile(suffix=".archive") as tmp:
            ctx.store.download(key, Path(tmp.name))
            members = 0
            try:
                for entry in iter_archive(tmp.name, name, ctx):
                    members += 1
                    yield entry
            except ArchiveError as exc:
                yield Entry(name, error=exc)
                continue
            if not members:
                yield Entry.failed(
                    name,
                    ItemErrorCode.DECODE_FAILED,
                    f"archive {name} holds no files (only folders or desktop metadata)",
                )


def checked_member(entry: Entry, max_pixels: int) -> Entry:
    """An archive member is stored only if its header is a photo within the pixel limit (a zip of huge
    blank images or of non-images must not fill the store); otherwise it becomes a failed entry."""
    if entry.data is None:
        return entry
    try:
        _, width, height = probe(entry.data)
    except ImageDecodeError as exc:
        return Entry(entry.name, error=exc)
    if width * height > max_pixels:
        return Entry.failed(
            entry.name,
            ItemErrorCode.TOO_LARGE,
            f"image too large: {width}x{height} = "
            f"{width * height / 1e6:.0f} MP exceeds the {max_pixels / 1e6:.0f} MP limit",
        )
    return entry


def _video_name(rel: str) -> str:
    """A video's item name: its key, or for an upload (``jobs/<job>/inputs/<n>-<name>``) the file's name."""
    parts = rel.split("/")
    if len(parts) == 4 and parts[0] == "jobs" and parts[2] == "inputs":
        return parts[3].split("-", 1)[-1]
    return rel


def ingest(ctx: WorkerContext, job_id: str) -> dict[str, int]:
    """Turn the job's sources into items and enqueue them in chunks (resumable).

    A failure that is not an outage (StoreUnavailable: the task retries) ends ingestion: the job keeps
    the items found so far and fails with the reason if none of them succeeds.
    """
    from workers.pipeline import (
        holder_id,
        maybe_finalize,  # local: pipeline imports handlers lazily too
    )

    job = ctx.records.get_job(job_id)
    if job.ingested or job.state.finished:
        return {"items": job.total}
    try:
        # one ingest per job at a time (a redelivery or the watchdog's repeat while the first still runs)
        with (
            ctx.records.hold_lock(f"ingest:{job_id}", ttl=60, wait=0),
            ctx.records.lease(job_id, f"{holder_id()}:ingest", ttl=ctx.settings.worker.lease_s),
        ):
            total = _ingest(ctx, ctx.records.get_job(job_id))
    except LockBusy:
        return {"items": job.total, "busy": 1}
    except StoreUnavailable:
        raise
    except Exception as exc:
        log.exception("ingest of %s failed", job_id)
        ctx.records.set_job_fields(job_id, error=f"reading the inputs failed: {type(exc).__name__}: {exc}")
        total = ctx.records.get_job(job_id).total
    ctx.records.mark_ingested(job_id)
    maybe_finalize(ctx, job_id)
    return {"items": total}


def _ingest(ctx: WorkerContext, job: Job) -> int:
    from workers.handlers import ItemResult
    from workers.overlap import commit_batch

    job_id = job.id
    cursor, enqueued = ctx.records.ingest_progress(job_id)
    chunk = ctx.settings.worker.chunk_size
    total = job.total
    if enqueued < total:  # a previous delivery added items but died before enqueueing them
        enqueue_chunks(ctx.celery, job_id, job.kind, range(enqueued, total), chunk, first_chunk=enqueued)
        ctx.records.set_enqueued(job_id, total)
    pending: list[Item] = []
    errors: list[tuple[int, ItemFailure]] = []
    alone: set[int] = set()  # video items: each runs as a chunk of its own
    position = 0

    def flush() -> None:
        nonlocal total, pending, errors
        if not pending:
            return
        first = total
        ctx.records.add_items(job_id, pending, ingest_cursor=position)
        total += len(pending)
        commit_batch(ctx, job_id, [ItemResult.failed_by(index, failure) for index, failure in errors])
        bad = {i for i, _ in errors}
        good = [it.index for it in pending if it.index not in bad and it.index not in alone]
        if good:
            enqueue_chunks(ctx.celery, job_id, job.kind, good, chunk, first_chunk=first)
        for index in sorted(alone - bad):
            enqueue_chunks(ctx.celery, job_id, job.kind, [index], 1, first_chunk=index)
        ctx.records.set_enqueued(job_id, total)
        pending, errors = [], []
        alone.clear()

    max_pixels = ctx.settings.worker.max_pixels
    for entry in iter_sources(ctx, job.tenant, Inputs.model_validate(job.inputs)):
        position += 1
        if position <= cursor:
            continue
        video = entry.error is None and _is_video(entry)
        if not video:
            entry = checked_member(entry, max_pixels)
        index = total + len(pending)
        if entry.error is not None:
            pending.append(Item(index, entry.name, ""))
            errors.append((index, entry.error))
        elif video:
            taken = _take_video(ctx, job, entry, index)
            pending.extend(taken.items)
            if taken.error is not None:
                errors.append((index, taken.error))
            alone.update(it.index for it in taken.items)
        elif entry.data is not None:
            key = keys.job_input(job.tenant, job_id, index, entry.name)
            ctx.store.put_bytes(key, entry.data)
            pending.append(Item(index, entry.name, key))
        else:
            pending.append(Item(index, entry.name, entry.key or ""))
        if len(pending) >= chunk:
            flush()
            if ctx.records.cancel_requested(job_id):
                log.info("ingest of %s stopped: the job was cancelled", job_id)
                return total
    flush()
    return total


def _is_video(entry: Entry) -> bool:
    from workers.video.intake import looks_like_video

    return looks_like_video(entry.name, entry.data[:16] if entry.data is not None else None)


def _take_video(ctx: WorkerContext, job: Job, entry: Entry, index: int) -> VideoIntake:
    """Probe and plan a video entry (an archive member is stored first: videos are read in ranges)."""
    from workers.video.intake import take_video

    key = entry.key or ""
    if entry.data is not None:
        key = keys.job_input(job.tenant, job.id, index, entry.name)
        ctx.store.put_bytes(key, entry.data)
    return take_video(ctx, job, entry.name, key, index)
