"""Contact sheets of face thumbnails: one person's faces in a labelled grid, or one row per person."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
CAPTION_BAND = (0, 0, 0)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit_text(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int
) -> str:
    """`text`, cut with an ellipsis so that it is at most `width` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _tile(image: Image.Image, tile: int) -> Image.Image:
    return ImageOps.fit(image.convert("RGB"), (tile, tile), Image.Resampling.LANCZOS)


def person_sheet(
    thumbnails: Sequence[Image.Image],
    title: str,
    cols: int = 8,
    tile: int = 112,
    captions: Sequence[str] | None = None,
) -> Image.Image:
    """A grid of `thumbnails` (`cols` wide, square tiles of `tile` px) under a title band.

    Size: ``(cols * tile, header + rows * tile)`` with ``header = max(16, tile // 4)`` and at least one row.
    `captions`, one per thumbnail, are written along each tile's bottom edge (e.g. a distance).
    """
    if cols < 1 or tile < 8:
        raise ValueError(f"need cols >= 1 and tile >= 8, got {cols} and {tile}")
    header = max(16, tile // 4)
    rows = max(1, math.ceil(len(thumbnails) / cols))
    sheet = Image.new("RGB", (cols * tile, header + rows * tile), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(max(10, header * 2 // 3))
    draw.text((4, header // 2), _fit_text(draw, title, font, cols * tile - 8), fill=TEXT, font=font, anchor="lm")
    small = _font(max(8, tile // 9))
    for k, thumbnail in enumerate(thumbnails):
        x, y = (k % cols) * tile, header + (k // cols) * tile
        sheet.paste(_tile(thumbnail, tile), (x, y))
        if captions is not None and k < len(captions) and captions[k]:
            band = max(10, tile // 7)
            draw.rectangle((x, y + tile - band, x + tile - 1, y + tile - 1), fill=CAPTION_BAND)
            text = _fit_text(draw, captions[k], small, tile - 4)
            draw.text((x + 2, y + tile - band // 2), text, fill=TEXT, font=small, anchor="lm")
    return sheet


def people_overview(
    people: Sequence[tuple[str, Sequence[Image.Image]]],
    cols: int = 8,
    tile: int = 112,
    label_width: int | None = None,
) -> Image.Image:
    """One row per (label, thumbnails) pair: the label on the left, then up to `cols` thumbnails.

    Size: ``(label_width + cols * tile, max(1, len(people)) * tile)``; `label_width` defaults to ``2 * tile``.
    """
    if cols < 1 or tile < 8:
        raise ValueError(f"need cols >= 1 and tile >= 8, got {cols} and {tile}")
    label_width = 2 * tile if label_width is None else label_width
    sheet = Image.new("RGB", (label_width + cols * tile, max(1, len(people)) * tile), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(max(10, tile // 6))
    for row, (label, thumbnails) in enumerate(people):
        y = row * tile
        draw.text((6, y + tile // 2), _fit_text(draw, label, font, label_width - 12), fill=TEXT, font=font, anchor="lm")
        for k, thumbnail in enumerate(thumbnails[:cols]):
            sheet.paste(_tile(thumbnail, tile), (label_width + k * tile, y))
    return sheet
