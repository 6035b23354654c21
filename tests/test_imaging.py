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


def test_draft_mode_decodes_small() -> None:
    from tests.corpus import _photo, _save

    data = _save(_photo(4000, 3000), "JPEG")
    img = decode_image(data, max_side=500)
    assert max(img.size) == 500


def test_pixel_cap_is_configurable() -> None:
    from tests.corpus import _photo, _save

    with pytest.raises(ImageDecodeError, match="exceeds the 0 MP limit"):
        decode_image(_save(_photo(800, 600), "JPEG"), max_pixels=100_000)
