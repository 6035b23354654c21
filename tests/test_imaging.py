"""Decoding every case of the bad-input corpus gives its exact answer."""

from __future__ import annotations

import pytest

from tests.corpus import CASES, Case
from workers.imaging import ImageDecodeError, decode_image


@pytest.mark.parametrize("case", CASES, ids=[c.name[:30] for c in CASES])
def test_corpus_case(case: Case) -> None:
    data = case.build()
    if case.expect is None:
        img = decode_image(data)
        assert img.mode == "RGB" and img.size == case.size
    else:
        with pytest.raises(ImageDecodeError) as err:
            decode_image(data)
        assert case.expect in str(err.value)


def test_cmyk_jpeg_keeps_its_colours() -> None:
    """PIL's decoder stores CMYK JPEGs the Adobe way (inverted); decoding must give the photo back, not its negative."""
    import numpy as np

    from tests.corpus import _photo, _save

    photo = _photo()
    img = decode_image(_save(photo.convert("CMYK"), "JPEG", quality=95))
    error = np.abs(np.asarray(img, dtype=np.int16) - np.asarray(photo, dtype=np.int16)).mean()
    assert error < 4, error


def test_draft_mode_decodes_small() -> None:
    from tests.corpus import _photo, _save

    data = _save(_photo(4000, 3000), "JPEG")
    img = decode_image(data, max_side=500)
    assert max(img.size) == 500


def test_pixel_cap_is_configurable() -> None:
    from tests.corpus import _photo, _save

    with pytest.raises(ImageDecodeError, match="exceeds the 0 MP limit"):
        decode_image(_save(_photo(800, 600), "JPEG"), max_pixels=100_000)


def _jpeg(mode: str = "RGB", **save: object) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (40, 20), 100 if mode != "RGB" else (200, 30, 30)).save(buf, "JPEG", **save)
    return buf.getvalue()


def test_metadata_for_outputs_keeps_the_camera_and_date_and_turns_upright() -> None:
    from PIL import Image, ImageCms

    from workers.imaging import read_metadata

    exif = Image.Exif()
    exif[0x010F], exif[0x0112], exif[0x0100] = "Nikon", 8, 40
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    meta = read_metadata(_jpeg(exif=exif.tobytes(), icc_profile=icc))
    assert meta.icc == icc
    out = Image.Exif()
    out.load(meta.exif_for((20, 40)) or b"")
    assert out[0x010F] == "Nikon" and out[0x0112] == 1 and 0x0100 not in out  # stale width dropped
    assert out.get_ifd(0x8769)[0x9003] == "2020:01:02 03:04:05"
    assert (out.get_ifd(0x8769)[0xA002], out.get_ifd(0x8769)[0xA003]) == (20, 40)


def test_metadata_that_does_not_fit_an_rgb_output_is_dropped() -> None:
    from PIL import ImageCms

    from workers.imaging import PhotoMetadata, read_metadata

    grey = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    grey = grey[:16] + b"GRAY" + grey[20:]  # a profile for another colour space than the RGB outputs
    assert read_metadata(_jpeg("L", icc_profile=grey)).icc is None
    assert read_metadata(b"not an image") == PhotoMetadata()
    assert read_metadata(_jpeg()) == PhotoMetadata()  # nothing to keep
