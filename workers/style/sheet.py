"""Contact sheets: one row per photo, one column per style variant, labelled, to compare at a glance."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PAD = 8
LABEL_H = 18
BACKGROUND = "white"
INK = (20, 20, 20)

Cell = tuple[str, Image.Image]
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int = 12) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType has only the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font: Font) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def contact_sheet(rows: Sequence[tuple[str, Sequence[Cell]]], tile: int = 256) -> Image.Image:
    """A grid of thumbnails (each fits in `tile` x `tile`), a title line per row and a label under each cell.

    `rows` is ``[(row label, [(column label, image), ...]), ...]``; by convention the first cell of a
    row is the original photo. Raises ValueError when there is nothing to draw.
    """
    if not rows or not any(cells for _, cells in rows):
        raise ValueError("a contact sheet needs at least one image")
    if tile < 16:
        raise ValueError(f"tile must be at least 16 px, got {tile}")
    columns = max(len(cells) for _, cells in rows)
    cell_w, cell_h = tile + PAD, LABEL_H + tile + LABEL_H + PAD
    sheet = Image.new("RGB", (PAD + columns * cell_w, PAD + len(rows) * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for r, (title, cells) in enumerate(rows):
        top = PAD + r * cell_h
        draw.text((PAD, top + 2), _fit_text(draw, title, columns * cell_w - PAD, font), fill=INK, font=font)
        for c, (label, image) in enumerate(cells):
            left = PAD + c * cell_w
            thumb = image.convert("RGB")
            thumb.thumbnail((tile, tile), Image.Resampling.LANCZOS)
            # centre the thumbnail in its square so columns line up whatever the aspect ratio
            sheet.paste(thumb, (left + (tile - thumb.width) // 2, top + LABEL_H + (tile - thumb.height) // 2))
            draw.text((left, top + LABEL_H + tile + 2), _fit_text(draw, label, tile, font), fill=INK, font=font)
    return sheet
