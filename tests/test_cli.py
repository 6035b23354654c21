"""The command line, as a user runs it: progress bars, downloads, exit codes, and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.cli import main
from api.devstack.servers import free_port
from api.devstack.stack import ApiServer
from tests.conftest import photo

pytestmark = [pytest.mark.integration]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_style_folder_wait_and_download(workers, api_server: ApiServer, tenant_key, tmp_path, capsys) -> None:
    folder = tmp_path / "shoot"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(photo(i, (80, 60)))
    (folder / "broken.jpg").write_bytes(b"not a photo")
    code, out, err = run(capsys, "--url", api_server.url, "--api-key", tenant_key[1], "style", str(folder),
                         "--builtin", "7", "--download", str(tmp_path / "out"))
    assert code == 1  # partial: one photo failed
    assert "broken.jpg: not a supported image" in out
    assert "upload 4 files" in err and "photo/s" in err  # the progress bars
    job_id = out.strip().splitlines()[-1].split()[0]
    files = sorted(p.name for p in (tmp_path / "out" / job_id).iterdir())
    assert [f for f in files if f.endswith(".png")] == [f"p{i}__builtin-b7-s1.0-none-x1.0.png" for i in range(3)]
    assert "contact-sheet.jpg" in files and "manifest.json" in files


def test_faces_json_status_and_usage_errors(workers, api_server: ApiServer, tenant_key, tmp_path, capsys) -> None:
    (tmp_path / "a.jpg").write_bytes(photo(1, (64, 48)))
    base = ["--url", api_server.url, "--api-key", tenant_key[1], "--json"]
    code, out, _ = run(capsys, *base, "faces", str(tmp_path), "--detector", "hog", "--wait")
    job = json.loads(out[out.index("{"):])  # the final job document
    assert code == 0 and job["kind"] == "faces" and job["state"] == "succeeded"
    code, out, _ = run(capsys, *base, "status", job["id"])
    assert code == 0 and json.loads(out)["id"] == job["id"]
    code, _, err = run(capsys, "--url", api_server.url, "--api-key", "nsk_wrong", "jobs")
    assert code == 2 and "unknown or revoked API key (401" in err
    code, _, err = run(capsys, "--url", api_server.url, "--api-key", tenant_key[1], "style", str(tmp_path),
                       "--builtin", "99")
    assert code == 2 and "0-25" in err


def test_demo_runs_the_main_job_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    """The README's first command: embedded stack, sample photos over HTTP, results on disk."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "demo", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                         "--out", str(tmp_path / "results"))
    assert code == 0, out + err
    assert "results in object storage: s3://nightshift/t/local/jobs/" in out
    pngs = list((tmp_path / "results").rglob("*.png"))
    assert len(pngs) == 8  # 4 sample photos x 2 styles
    assert (tmp_path / "data" / "api-key").exists() and (tmp_path / "data" / "s3" / "s3-credentials.json").exists()
