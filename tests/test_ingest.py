"""Archive expansion: safe paths, bounded sizes and counts, per-member errors."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from storage.config import Settings, WorkerSettings
from tests.conftest import photo
from workers.context import WorkerContext
from workers.ingest import ArchiveError, iter_archive, member_name_ok


def _ctx(**worker: int) -> WorkerContext:
    return WorkerContext(Settings(worker=WorkerSettings(**worker)), None, None)  # type: ignore[arg-type]


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_member_names() -> None:
    assert member_name_ok("a/b.jpg")
    for bad in ("../x.jpg", "/abs.jpg", "a/../../x.jpg", "__MACOSX/a.jpg", "a/.DS_Store", "a/._x.jpg"):
        assert not member_name_ok(bad), bad


def test_zip_slip_members_are_reported_not_written(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", {"ok.jpg": photo(1), "../../evil.jpg": photo(2), "__MACOSX/._ok.jpg": b"x"})
    entries = list(iter_archive(str(path), "a.zip", _ctx()))
    assert [(e.name, e.data is not None) for e in entries] == [("ok.jpg", True), ("../../evil.jpg", False)]
    assert "unsafe path" in (entries[1].error or "")


def test_zip_bomb_is_stopped_by_bytes_actually_read(tmp_path: Path) -> None:
    path = _zip(tmp_path / "bomb.zip", {f"z{i}.jpg": b"\0" * (4 * 1024 * 1024) for i in range(4)})
    assert path.stat().st_size < 100_000  # highly compressed
    with pytest.raises(ArchiveError, match="zip bomb"):
        list(iter_archive(str(path), "bomb.zip", _ctx(max_archive_bytes=10 * 1024 * 1024)))


def test_oversized_member_fails_alone(tmp_path: Path) -> None:
    path = _zip(tmp_path / "m.zip", {"big.jpg": b"\0" * 3_000_000, "ok.jpg": photo(3)})
    entries = list(iter_archive(str(path), "m.zip", _ctx(max_member_bytes=1_000_000)))
    assert "larger than" in (entries[0].error or "") and entries[1].data == photo(3)


def test_member_count_bound(tmp_path: Path) -> None:
    path = _zip(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(30)}, zipfile.ZIP_STORED)
    with pytest.raises(ArchiveError, match="more than 20 members"):
        list(iter_archive(str(path), "many.zip", _ctx(max_archive_members=20)))


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
    assert "unsafe path" in (entries[1].error or "")
    assert "link" in (entries[2].error or "")


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is not an archive")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        list(iter_archive(str(path), "x.zip", _ctx()))
