"""Colour preservation: keep the photo's colours, take the painting's strokes.

Both methods work on 8-bit images through PIL (C loops, no float copy of a 50 MP photo):
`luminance` keeps the stylized luma and the content's chroma (Gatys et al. 2016, "Preserving
colour in neural artistic style transfer"); `histogram` remaps each channel of the output so its
histogram matches the content's, as a 256-entry lookup table per channel.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from workers.contract import PreserveColors

__all__ = ["PreserveColors", "keep_luminance", "match_histograms", "matching_lut", "preserve_colors"]
LEVELS = 256


def _reference(content: Image.Image, size: tuple[int, int]) -> Image.Image:
    content = content.convert("RGB")
    return content if content.size == size else content.resize(size, Image.Resampling.LANCZOS)


def keep_luminance(stylized: Image.Image, content: Image.Image) -> Image.Image:
    """Stylized Y with the content's Cb and Cr (content resized to the stylized size if needed)."""
    y, _, _ = stylized.convert("YCbCr").split()
    _, cb, cr = _reference(content, stylized.size).convert("YCbCr").split()
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


def matching_lut(source_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    """Lookup table (256 uint8) mapping source levels to reference levels at the same quantile.

    Each level stands for the middle of the quantile range its pixels occupy; levels absent from
    the reference are skipped so the mapping only lands on values the reference really has.
    """
    src = np.asarray(source_counts, dtype=np.float64)
    ref = np.asarray(reference_counts, dtype=np.float64)
    if src.sum() <= 0 or ref.sum() <= 0:
        return np.arange(LEVELS, dtype=np.uint8)
    src_mid = (np.cumsum(src) - src / 2) / src.sum()
    ref_mid = (np.cumsum(ref) - ref / 2) / ref.sum()
    present = ref > 0
    levels = np.arange(LEVELS, dtype=np.float64)[present]
    lut = np.interp(src_mid, ref_mid[present], levels)
    return np.clip(np.rint(lut), 0, LEVELS - 1).astype(np.uint8)


def match_histograms(image: Image.Image, reference: Image.Image) -> Image.Image:
    """`image` with each RGB channel's histogram matched to `reference`'s."""
    image = image.convert("RGB")
    src = np.asarray(image.histogram(), dtype=np.int64).reshape(3, LEVELS)
    ref = np.asarray(reference.convert("RGB").histogram(), dtype=np.int64).reshape(3, LEVELS)
    lut = np.concatenate([matching_lut(src[c], ref[c]) for c in range(3)])
    return image.point(lut.tolist())


def preserve_colors(stylized: Image.Image, content: Image.Image, mode: PreserveColors) -> Image.Image:
    """Apply a colour-preservation mode ("none", "luminance" or "histogram"); raises ValueError otherwise."""
    if mode == "none":
        return stylized
    if mode == "luminance":
        return keep_luminance(stylized, content)
    if mode == "histogram":
        return match_histograms(stylized, content)
    raise ValueError(f"unknown preserve_colors {mode!r}: use none, luminance or histogram")
