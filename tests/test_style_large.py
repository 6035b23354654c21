"""A 4096x3072 photo stylized with the arbitrary method through the pipeline: exact size, no seams."""

from __future__ import annotations

import io

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from api.client import Client
from workers.style.tiling import seam_energy_ratio

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def big_photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee()).resize((4096, 3072), Image.Resampling.BICUBIC)


def test_4096x3072_arbitrary_has_exact_size_and_no_seams(workers, client: Client, tmp_path, capsys) -> None:
    from skimage import data

    big_photo().save(tmp_path / "big.jpg", quality=92)
    Image.fromarray(data.astronaut()).save(tmp_path / "style.jpg")
    params = {"method": "arbitrary", "format": "png", "tile_size": 1024, "tile_overlap": 128}
    job = client.submit("style", files=[tmp_path / "big.jpg"], styles=[tmp_path / "style.jpg"], params=params)
    proc = psutil.Process(workers["style"].proc.pid)
    peak = 0.0
    while job["state"] not in ("succeeded", "failed", "partial", "cancelled"):
        rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        peak = max(peak, rss / 2**20)
        job = client.job(job["id"])
    assert job["state"] == "succeeded", job
    out = next(iter(client.results(job["id"])))["outputs"][0]
    img = Image.open(io.BytesIO(requests.get(out["url"], timeout=60).content))
    assert img.size == (4096, 3072)
    ratio = seam_energy_ratio(np.asarray(img.convert("RGB")), 1024, 128)
    with capsys.disabled():
        print(f"\n4096x3072 arbitrary: seam energy ratio {ratio:.3f}, peak style-worker RSS {peak:.0f} MB")
    assert 0.9 <= ratio <= 1.1
