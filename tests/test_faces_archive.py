"""A 500-photo archive indexed through the pipeline: single faces, group photos, rotated copies without
EXIF, photos without faces and corrupt files; then a second run that skips every photo."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from api.client import Client
from tests.conftest import jpeg_bytes
from tests.test_faces_pipeline import astronaut

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N = 500


def archive(path) -> dict[str, int | None]:
    """Writes the archive; returns the faces each photo holds (None: corrupt)."""
    rng = np.random.default_rng(7)
    face = astronaut().crop((140, 10, 320, 210))  # 180 x 200
    expected: dict[str, int | None] = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(N):
            kind = i % 10
            bg = Image.fromarray(rng.integers(60, 200, (12, 16, 3), dtype=np.uint8)).resize((480, 360))
            if kind == 9:
                name, data, n = f"corrupt/{i:03d}.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(300), None
            elif kind in (7, 8):  # no face: a blurred background
                name, data, n = f"empty/{i:03d}.jpg", jpeg_bytes(bg), 0
            else:
                count = 3 if kind == 6 else 1
                for k in range(count):
                    scale = rng.uniform(0.45, 0.6)
                    f = face.resize((int(180 * scale), int(200 * scale)))
                    if rng.random() < 0.5:
                        f = f.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                    bg.paste(f, (20 + k * 150 + int(rng.integers(0, 20)), int(rng.integers(20, 230))))
                if kind == 5:  # turned on its side, no EXIF to undo it
                    bg = bg.transpose(Image.Transpose.ROTATE_90)
                name, data, n = f"faces/{i:03d}.jpg", jpeg_bytes(bg), count
            zf.writestr(name, data)
            expected[name] = n
    return expected


def test_five_hundred_photo_archive_then_incremental_rerun(workers, client: Client, tmp_path) -> None:
    path = tmp_path / "family.zip"
    expected = archive(path)
    params = {"try_rotations": True, "detector": "mtcnn", "thumbnails": False}
    job = client.wait(client.submit("faces", archives=[path], params=params)["id"], timeout=900)
    assert job["counts"]["total"] == N
    items = {it["name"]: it for it in client.results(job["id"])}
    corrupt = [n for n, e in expected.items() if e is None]
    assert all(items[n]["state"] == "failed" and "corrupt" in items[n]["error"] for n in corrupt)
    found = {n: items[n]["info"].get("faces") for n, e in expected.items() if e is not None}
    exact = sum(found[n] == e for n, e in expected.items() if e is not None)
    missed = [n for n, e in expected.items() if e and (found[n] or 0) < e]
    assert exact >= 0.97 * len(found), (exact, missed[:10])
    rotated = [n for n in expected if n.startswith("faces/") and int(n[6:9]) % 10 == 5]
    assert sum(found[n] == 1 for n in rotated) >= 0.95 * len(rotated)
    assert job["summary"]["faces"] == sum(v or 0 for v in found.values())
    again = client.wait(client.submit("faces", archives=[path], params=params)["id"], timeout=600)
    assert again["counts"]["skipped"] == N - len(corrupt) and again["counts"]["done"] == 0
    assert again["counts"]["failed"] == len(corrupt)
