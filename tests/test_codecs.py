"""Cheaper bytes: reduced JPEG decodes for the detector, and the torchvision batch codec (nvJPEG on CUDA)
exercised here on the CPU through the same code path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.corpus import CASES, _exif_rotated, _photo, _save
from workers.imaging import (
    ImageDecodeError,
    decode_image,
    decode_jpegs,
    decode_reduced,
    draft_scale,
    encode_jpegs,
    is_jpeg,
    reduced_side,
)


def test_reduced_decode_is_the_cheapest_scale_at_least_the_asked_size() -> None:
    assert [draft_scale(4032, 3024, s) for s in (500, 504, 505, 1024, 2016, 2017)] == [8, 8, 4, 2, 2, 1]
    assert reduced_side(4032, 3024, 1024) == 2016 and reduced_side(1000, 800, 1024) is None
    image, full = decode_reduced(_save(_photo(4032, 3024), "JPEG"), 1024)
    assert image.size == (2016, 1512) and full == (4032, 3024)
    small, full = decode_reduced(_save(_photo(640, 480), "JPEG"), 1024)
    assert small.size == full == (640, 480)
    png, full = decode_reduced(_save(_photo(2400, 1200), "PNG"), 500)  # no draft mode: full size
    assert png.size == full == (2400, 1200)


def test_reduced_decode_reports_the_upright_full_size() -> None:
    big = _photo(2400, 1600)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    image, full = decode_reduced(_save(big, "JPEG", exif=exif.tobytes()), 500)
    assert image.size == (400, 600) and full == (1600, 2400)


def test_torchvision_batch_decode_matches_the_reduced_cpu_decode() -> None:
    pytest.importorskip("torchvision")
    photo = _photo(1600, 1200)
    blobs = [
        _save(photo, "JPEG"),
        _save(_photo(320, 240), "JPEG"),
        _exif_rotated(),
        _save(_photo(), "PNG"),
        b"\xff\xd8\xff\xe0" + b"\x13" * 600,
    ]
    got = decode_jpegs(blobs, 500, device="cpu")
    assert [g is None for g in got] == [False, False, False, True, True]  # PNG and the corrupt one: CPU's job
    for blob, one in zip(blobs[:3], got[:3], strict=True):
        assert one is not None
        ref, full = decode_reduced(blob, 500)
        assert one[0].size == ref.size and one[1] == full and one[0].mode == "RGB"
        assert np.abs(np.asarray(one[0], float) - np.asarray(ref, float)).mean() < 4  # same picture
    assert got[2] is not None and got[2][0].size == (60, 80)  # EXIF orientation applied
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_reduced(blobs[4], 500)


def test_torchvision_batch_decode_refuses_a_bomb() -> None:
    pytest.importorskip("torchvision")
    assert decode_jpegs([_save(_photo(800, 600), "JPEG")], 100, device="cpu", max_pixels=100_000) == [None]


def test_torchvision_batch_encode_round_trips() -> None:
    pytest.importorskip("torchvision")
    images = [_photo(96, 64), _photo(33, 17)]
    out = encode_jpegs(images, 90, device="cpu")
    assert all(is_jpeg(b) for b in out)
    for img, data in zip(images, out, strict=True):
        back = Image.open(io.BytesIO(data))
        assert back.format == "JPEG" and back.size == img.size
        assert np.abs(np.asarray(back.convert("RGB"), float) - np.asarray(img, float)).mean() < 8


@pytest.mark.parametrize("case", [c for c in CASES if c.expect is None], ids=lambda c: c.name[:20])
def test_every_decodable_corpus_case_decodes_reduced_as_in_full(case) -> None:
    image, full = decode_reduced(case.build(), 16)
    assert image.mode == "RGB" and full == case.size == decode_image(case.build()).size
