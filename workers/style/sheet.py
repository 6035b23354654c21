"""Contact sheets: one row per photo, one column per style variant, to compare renders at a glance.

Each column is headed by what it shows (the style image of an arbitrary or Gatys variant, beside the
results), each tile is captioned with what differs between the tiles (`captions`), captions wrap onto two
lines rather than being cut, and each row is as tall as its photo's shape needs, so a landscape photo
leaves no blank bands above and below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

from workers.contract import BUILTIN_STYLE_NAMES

PAD = 10
FONT_SIZE = 14
LINE_H = 18
CAPTION_LINES = 2
BACKGROUND = "white"
INK = (20, 20, 20)
MUTED = (90, 96, 110)
# a row's height per unit of width: a landscape row is as tall as its photos; a portrait one is a square (tiles
# are decoded at most `tile` on the long side, so a taller row would only add white); panoramas are letterboxed
MIN_ASPECT, MAX_ASPECT = 0.3, 1.0

Cell = tuple[str, Image.Image]
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


@dataclass(frozen=True)
class Look:
    """What sets one variant apart, in words: its style, strength, colours and brush scale."""

    method: str
    style: str
    strength: float = 1.0
    preserve_colors: str = "none"
    style_scale: float = 1.0


def builtin_style(blend: Sequence[tuple[int, float]]) -> str:
    """``7 Primary-colour blocks``, or ``50% 3 Blue-red ribbons + 50% 12 Lavender haze`` for a blend."""
    if len(blend) == 1:
        index = blend[0][0]
        return f"{index} {BUILTIN_STYLE_NAMES[index]}"
    return " + ".join(f"{round(w * 100)}% {i} {BUILTIN_STYLE_NAMES[i]}" for i, w in blend)


def captions(looks: Sequence[Look]) -> list[str]:
    """One caption per variant naming its style and every setting that differs between the variants.

    Settings all variants share are left out (they say nothing about the difference between tiles).
    """

    def varies(attr: str) -> bool:
        return len({getattr(look, attr) for look in looks}) > 1

    out = []
    for look in looks:
        parts = [look.style if not varies("method") else f"{look.method}: {look.style}"]
        if varies("strength") or look.strength != 1.0:
            parts.append(f"strength {look.strength:g}")
        if varies("preserve_colors"):
            parts.append(f"colours {look.preserve_colors}")
        if varies("style_scale") or look.style_scale != 1.0:
            parts.append(f"strokes x{look.style_scale:g}")
        out.append(", ".join(parts))
    return out


def _font(size: int = FONT_SIZE) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType has only the fixed bitmap font
        return ImageFont.load_default()


def wrap(draw: ImageDraw.ImageDraw, text: str, width: int, font: Font, lines: int = CAPTION_LINES) -> list[str]:
    """`text` broken at spaces into at most `lines` lines of `width` pixels; only what still does not fit is
    shortened with an ellipsis (a single word wider than the tile is cut)."""
    words, out, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not line:
            line = candidate
        else:
            out.append(line)
            line = word
    if line:
        out.append(line)
    if len(out) > lines:
        out = out[: lines - 1] + [" ".join(out[lines - 1 :])]
    last = out[-1] if out else ""
    if draw.textlength(last, font=font) > width:
        while last and draw.textlength(last + "…", font=font) > width:
            last = last[:-1]
        out[-1] = last + "…"
    return out


def _row_height(tile: int, image: Image.Image) -> int:
    aspect = min(max(image.height / max(image.width, 1), MIN_ASPECT), MAX_ASPECT)
    return max(16, round(tile * aspect))


def contact_sheet(
    rows: Sequence[tuple[str, Sequence[Cell]]],
    tile: int = 256,
    headers: Sequence[tuple[str, Image.Image | None]] | None = None,
) -> Image.Image:
    """A grid of thumbnails `tile` px wide, a title line per row and a caption under each cell.

    `rows` is ``[(row title, [(caption, image), ...]), ...]``; by convention the first cell of a row is the
    original photo. `headers` (optional) heads the columns: ``[(label, style image or None), ...]``.
    Raises ValueError when there is nothing to draw.
    """
    if not rows or not any(cells for _, cells in rows):
        raise ValueError("a contact sheet needs at least one image")
    if tile < 16:
        raise ValueError(f"tile must be at least 16 px, got {tile}")
    font, small = _font(), _font(FONT_SIZE - 2)
    columns = max(len(cells) for _, cells in rows)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    header_h = 0
    if headers and any(img is not None for _, img in headers):
        header_h = tile // 2 + LINE_H + PAD
    heights = [_row_height(tile, cells[0][1]) if cells else tile // 2 for _, cells in rows]
    caption_h = CAPTION_LINES * LINE_H
    row_h = [LINE_H + 4 + h + 4 + caption_h + PAD for h in heights]
    sheet = Image.new("RGB", (PAD + columns * (tile + PAD), PAD + header_h + sum(row_h)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if header_h and headers:
        for c, (label, img) in enumerate(headers[:columns]):
            left = PAD + c * (tile + PAD)
            if img is not None:
                thumb = ImageOps.contain(img.convert("RGB"), (tile, tile // 2), Image.Resampling.LANCZOS)
                sheet.paste(thumb, (left + (tile - thumb.width) // 2, PAD))
            for n, line in enumerate(wrap(measure, label, tile, small, 1)):
                draw.text((left, PAD + tile // 2 + 2 + n * LINE_H), line, fill=MUTED, font=small)
    top = PAD + header_h
    for (title, cells), height, full in zip(rows, heights, row_h, strict=True):
        draw.text((PAD, top), wrap(measure, title, columns * (tile + PAD) - PAD, font, 1)[0], fill=INK, font=font)
        for c, (label, image) in enumerate(cells):
            left = PAD + c * (tile + PAD)
            # fitted to its cell (small photos are enlarged too), centred, so columns line up whatever the photo's shape
            thumb = ImageOps.contain(image.convert("RGB"), (tile, height), Image.Resampling.LANCZOS)
            y = top + LINE_H + 4 + (height - thumb.height) // 2
            sheet.paste(thumb, (left + (tile - thumb.width) // 2, y))
            for n, line in enumerate(wrap(measure, label, tile, small)):
                draw.text((left, top + LINE_H + 4 + height + 4 + n * LINE_H), line, fill=INK, font=small)
        top += full
    return sheet
