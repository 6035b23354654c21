"""Face protection: a style that paints faces over gets part of the photo back inside each face."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image
from skimage import data

from api.client import Client
from tests.conftest import jpeg_bytes
from workers.style.faces import find_faces, protect_faces

FACE = (175.0, 76.0, 266.0, 167.0)  # the astronaut's face in skimage's 512 x 512 photo


def test_protection_blends_the_photo_back_inside_faces_only() -> None:
    stylized, photo = Image.new("RGB", (400, 300), "black"), Image.new("RGB", (200, 150), "white")
    out = np.asarray(protect_faces(stylized, photo, [(80, 50, 120, 100)], 0.5))[..., 0]
    assert abs(int(out[150, 200]) - 128) <= 2  # the face's centre (boxes scale with the render): half the photo
    assert out[10, 10] == 0 and out[290, 390] == 0  # far from the face: the render untouched
    assert 0 < out[150, 200 + 75] < 128  # the edge is feathered, not a hard cut
    assert protect_faces(stylized, photo, [(80, 50, 120, 100)], 0.0) is stylized
    assert protect_faces(stylized, photo, [], 0.5) is stylized


def test_default_protection_is_the_measured_one() -> None:
    from workers.style.faces import default_protection

    assert default_protection(((7, 1.0),)) == 0.65 and default_protection() == 0.65  # a painting: no index
    assert default_protection(((17, 1.0),)) == 0.8 == default_protection(((3, 0.5), (17, 0.5)))


def test_faces_are_found_and_look_alikes_are_not() -> None:
    boxes = find_faces(Image.fromarray(data.astronaut()))
    assert len(boxes) == 1  # her face, not the mission badge HOG also scores (weakly)
    assert all(abs(a - b) < 30 for a, b in zip(boxes[0], FACE, strict=True))
    assert find_faces(Image.fromarray(data.coffee())) == []


@pytest.mark.integration
def test_a_style_job_keeps_the_face_recognisable(workers, client: Client, tmp_path) -> None:
    (tmp_path / "astronaut.jpg").write_bytes(jpeg_bytes(data.astronaut()))
    photo = np.asarray(Image.fromarray(data.astronaut()), dtype=float)
    x1, y1, x2, y2 = (int(v) for v in FACE)
    errors: dict[float | None, float] = {}
    for amount in (0.0, None):  # off, and the default
        params = {"method": "builtin", "builtin": [3]} | ({} if amount is None else {"protect_faces": amount})
        job = client.submit("style", files=[tmp_path / "astronaut.jpg"], params=params)
        job = client.wait(job["id"], timeout=180)
        item = next(iter(client.results(job["id"])))
        assert item["info"]["faces_protected"] == (0 if amount == 0 else 1)
        out = np.asarray(
            Image.open(io.BytesIO(requests.get(item["outputs"][0]["url"], timeout=10).content)), dtype=float
        )
        errors[amount] = float(np.abs(out[y1:y2, x1:x2] - photo[y1:y2, x1:x2]).mean())
        corner = float(np.abs(out[:60, :60] - photo[:60, :60]).mean())
        assert corner > 40  # away from the face the style is at full strength either way
    assert errors[None] < 0.5 * errors[0.0]
