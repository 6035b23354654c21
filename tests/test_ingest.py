"""Archive expansion: safe paths, bounded sizes and counts, per-member errors."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from storage.config import Settings, WorkerSettings
from storage.names import ItemErrorCode
from tests.conftest import photo
from workers.context import WorkerContext
from workers.ingest import ArchiveError, Entry, iter_archive, member_name_ok


def _ctx(**worker: int) -> WorkerContext:
    return WorkerContext(Settings(worker=WorkerSettings(**worker)), None, None)  # type: ignore[arg-type]


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _code(entry: Entry) -> ItemErrorCode | None:
    return entry.error.code if entry.error is not None else None


def test_member_names() -> None:
    assert member_name_ok("a/b.jpg")
    for bad in ("../x.jpg", "/abs.jpg", "a/../../x.jpg", "__MACOSX/a.jpg", "a/.DS_Store", "a/._x.jpg"):
        assert not member_name_ok(bad), bad


def test_zip_slip_members_are_reported_not_written(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", {"ok.jpg": photo(1), "../../evil.jpg": photo(2), "__MACOSX/._ok.jpg": b"x"})
    entries = list(iter_archive(str(path), "a.zip", _ctx()))
    assert [(e.name, e.data is not None) for e in entries] == [("ok.jpg", True), ("../../evil.jpg", False)]
    assert "unsafe path" in str(entries[1].error) and _code(entries[1]) == ItemErrorCode.REFUSED


def test_zip_bomb_is_stopped_by_bytes_actually_read(tmp_path: Path) -> None:
    path = _zip(tmp_path / "bomb.zip", {f"z{i}.jpg": b"\0" * (4 * 1024 * 1024) for i in range(4)})
    assert path.stat().st_size < 100_000  # highly compressed
    with pytest.raises(ArchiveError, match="zip bomb"):
        list(iter_archive(str(path), "bomb.zip", _ctx(max_archive_bytes=10 * 1024 * 1024)))


def test_oversized_member_fails_alone(tmp_path: Path) -> None:
    path = _zip(tmp_path / "m.zip", {"big.jpg": b"\0" * 3_000_000, "ok.jpg": photo(3)})
    entries = list(iter_archive(str(path), "m.zip", _ctx(max_member_bytes=1_000_000)))
    assert "larger than" in str(entries[0].error) and entries[1].data == photo(3)
    assert _code(entries[0]) == ItemErrorCode.TOO_LARGE


def test_member_count_bound(tmp_path: Path) -> None:
    path = _zip(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(30)}, zipfile.ZIP_STORED)
    with pytest.raises(ArchiveError, match="more than 20 members") as err:
        list(iter_archive(str(path), "many.zip", _ctx(max_archive_members=20)))
    assert err.value.code == ItemErrorCode.TOO_LARGE


def test_tar_with_links_and_traversal(tmp_path: Path) -> None:
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in (("p/ok.jpg", photo(4)), ("../up.jpg", photo(5))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("p/link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    entries = list(iter_archive(str(path), "a.tar.gz", _ctx()))
    assert entries[0].data == photo(4)
    assert "unsafe path" in str(entries[1].error)
    assert "link" in str(entries[2].error) and _code(entries[2]) == ItemErrorCode.REFUSED


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is not an archive")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        list(iter_archive(str(path), "x.zip", _ctx()))
