"""The bad-input corpus: each case builds its bytes and states the exact answer it gets.

`expect` is None for inputs that must decode (to an RGB image of `size`), else a substring of the
per-item error. Built in code, so the repository carries no binary fixtures.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    expect: str | None  # None: decodes fine
    size: tuple[int, int] | None = None  # expected (w, h) after decoding, upright


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(w: int = 80, h: int = 60) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xx * 3 % 256, yy * 4 % 256, (xx + yy) % 256], -1).astype(np.uint8))


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _png_bomb() -> bytes:
    # 12000 x 12000 of zeros compresses to ~150 KB but decodes to 432 MB: over the 100 MP cap
    raw = zlib.compress(b"\0" * (1 + 12000 * 3) * 12000, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def _exif_rotated() -> bytes:
    img = _photo(80, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    return _save(img, "JPEG", exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [_photo().convert("P") for _ in range(3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _heic() -> bytes:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    return _save(_photo(), "HEIF")


def _sixteen_bit() -> bytes:
    arr = (np.arange(80 * 60, dtype=np.uint16).reshape(60, 80) * 13).astype(np.uint16)
    return _save(Image.fromarray(arr), "PNG")


def _alpha() -> bytes:
    img = _photo().convert("RGBA")
    img.putalpha(128)
    return _save(img, "PNG")


CASES: list[Case] = [
    Case("ok.jpg", lambda: _save(_photo(), "JPEG"), None, (80, 60)),
    Case("truncated.jpg", lambda: _save(_photo(400, 300), "JPEG")[:1500], "corrupt or truncated"),
    Case("corrupt.jpg", lambda: b"\xff\xd8\xff\xe0" + b"\x13" * 600, "corrupt or truncated"),
    Case("empty.jpg", lambda: b"", "empty file (0 bytes)"),
    Case("notes.jpg", lambda: b"these are my holiday notes, not a photo\n" * 5, "not a supported image"),
    Case("webp-named.jpg", lambda: _save(_photo(), "WEBP"), None, (80, 60)),
    Case("bomb.png", _png_bomb, "image too large"),
    Case("huge-header.png", lambda: _png_header_only(60000, 60000), "image too large"),
    Case("cmyk.jpg", lambda: _save(_photo().convert("CMYK"), "JPEG"), None, (80, 60)),
    Case("sixteen-bit.png", _sixteen_bit, None, (80, 60)),
    Case("palette.png", lambda: _save(_photo().convert("P"), "PNG"), None, (80, 60)),
    Case("alpha.png", _alpha, None, (80, 60)),
    Case("animated.gif", _animated_gif, None, (80, 60)),
    Case("phone.heic", _heic, None, (80, 60)),
    Case("exif-rotated.jpg", _exif_rotated, None, (60, 80)),
    Case("\u00e9t\u00e9 \U0001f3d6 " + "x" * 230 + ".jpg", lambda: _save(_photo(), "JPEG"), None, (80, 60)),
]
