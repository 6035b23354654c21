"""Robust photo decoding: the one place bytes become an RGB image.

Handles EXIF orientation, CMYK/palette/16-bit/alpha, HEIC (pillow-heif), animated images
(first frame), decompression bombs (a pixel cap checked from the header, before decoding),
and JPEG draft mode so a detector that needs 1024 px does not decode 12 MP.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from storage.names import ItemErrorCode
from workers.contract import ItemFailure

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera photo, smaller than a bomb
log = logging.getLogger("nightshift.imaging")
ORIENTATION = 0x0112
PIXEL_X, PIXEL_Y = 0xA002, 0xA003  # in the Exif IFD: the size of the image the metadata describes
IMAGE_WIDTH, IMAGE_LENGTH = 0x0100, 0x0101
_heif_registered = False


class ImageDecodeError(ItemFailure, ValueError):
    """The bytes are not a photo we can read (or one too large to); the message says why, for the item's error."""

    code = ItemErrorCode.DECODE_FAILED


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except ImportError:  # HEIC then fails per item with "not a supported image"
            pass
        _heif_registered = True


def _looks_like_archive(data: bytes) -> bool:
    return (
        data[:4] == b"PK\x03\x04"
        or data[:2] == b"\x1f\x8b"
        or data[257:262] == b"ustar"
        or data[:3] == b"BZh"
        or data[:6] == b"\xfd7zXZ\x00"
    )


def probe(data: bytes) -> tuple[str, int, int]:
    """Return (format, width, height) from the header without decoding pixels."""
    _register_heif()
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return str(img.format), img.width, img.height
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large: {exc}", ItemErrorCode.TOO_LARGE) from None
    except UnidentifiedImageError:
        if _looks_like_archive(data):
            raise ImageDecodeError(
                "an archive, not an image: nested archives are not expanded; submit it as an archive of its own"
            ) from None
        raise ImageDecodeError("not a supported image (JPEG, PNG, WebP, HEIC, TIFF, GIF, BMP)") from None
    except OSError as exc:
        raise ImageDecodeError(f"corrupt or truncated image header: {exc}") from None


def decode_image(data: bytes, *, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes into an upright RGB image.

    `max_side` asks for at most that many pixels on the long side (JPEG decodes in draft mode,
    others are resized after decoding). Raises ImageDecodeError with a readable reason.
    """
    _register_heif()
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    fmt, width, height = probe(data)
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image too large: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the "
            f"{max_pixels / 1e6:.0f} MP limit",
            ItemErrorCode.TOO_LARGE,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            if max_side and fmt == "JPEG" and max(width, height) > max_side:
                # draft() picks a DCT scale >= the requested size: decoding is 2-8x cheaper
                scale = max_side / max(width, height)
                opened.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            opened.seek(0)
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)  # no copy of an upright photo (12 MP: 50 ms)
            img = to_rgb(opened)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large: {exc}", ItemErrorCode.TOO_LARGE) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated {fmt.lower()} image: {exc}") from None
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def draft_scale(width: int, height: int, min_side: int) -> int:
    """The largest JPEG DCT reduction (8, 4, 2; 1: none) whose long side, rounded up as PIL's draft rounds
    it, is still at least `min_side`."""
    long = max(width, height)
    return next((scale for scale in (8, 4, 2) if -(-long // scale) >= min_side), 1)


def reduced_side(width: int, height: int, min_side: int) -> int | None:
    """The long side of the cheapest JPEG decode that is still at least `min_side`; None: only the full size."""
    scale = draft_scale(width, height, min_side)
    return -(-max(width, height) // scale) if scale > 1 else None


def decode_reduced(
    data: bytes, min_side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode a photo at the cheapest resolution whose long side is still >= `min_side` (JPEG draft mode: a
    12 MP photo for a 1024 px detector decodes at 3 MP, about 3x faster); other formats decode in full.

    Returns the upright RGB image and the photo's full upright (width, height), so that coordinates found
    in the image map back to the photo. Raises ImageDecodeError as `decode_image`.
    """
    fmt, width, height = probe(data)
    side = reduced_side(width, height, min_side) if fmt == "JPEG" else None
    img = decode_image(data, max_side=side, max_pixels=max_pixels)
    turned = (img.width >= img.height) != (width >= height) and img.width != img.height
    return img, ((height, width) if turned else (width, height))


def is_jpeg(data: bytes) -> bool:
    """Whether the bytes start like a JPEG (SOI marker), without parsing them."""
    return data[:3] == b"\xff\xd8\xff"


def decode_jpegs(
    blobs: Sequence[bytes], min_side: int, *, device: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[tuple[Image.Image, tuple[int, int]] | None]:
    """JPEGs decoded together on `device` by torchvision (nvJPEG on CUDA, one batched call), each reduced on
    the device to the size `decode_reduced` gives. Per photo (image, full upright size), or None for one
    it did not take (not a JPEG, too large, a decoder error): decode that one with `decode_reduced`, which
    also says what is wrong with it. torch is imported here only."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[tuple[Image.Image, tuple[int, int]] | None] = [None] * len(blobs)
    fit = []
    for i, data in enumerate(blobs):
        try:
            fmt, width, height = probe(data)
        except ImageDecodeError:
            continue
        if fmt == "JPEG" and width * height <= max_pixels:
            fit.append(i)
    if not fit:
        return out
    tensors = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in fit]
    try:
        decoded: list[Any] = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    except RuntimeError:  # one bad photo fails the batched call: try them one by one
        decoded = []
        for tensor in tensors:
            try:
                decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
            except RuntimeError:
                decoded.append(None)
    for i, img in zip(fit, decoded, strict=True):
        if img is None:
            continue
        height, width = int(img.shape[1]), int(img.shape[2])
        scale = draft_scale(width, height, min_side)
        if scale > 1:  # the size PIL's draft would give, smoothed as a DCT reduction is (area average)
            size = (-(-height // scale), -(-width // scale))
            img = F.interpolate(img[None].float(), size=size, mode="area")[0].round().clamp(0, 255).to(torch.uint8)
        array = img.permute(1, 2, 0).contiguous().cpu().numpy()
        out[i] = (Image.fromarray(array, "RGB"), (width, height))
    return out


def encode_jpegs(images: Sequence[Image.Image], quality: int, *, device: str) -> list[bytes]:
    """JPEG bytes of RGB images, encoded together on `device` by torchvision (nvJPEG on CUDA)."""
    import torch
    from torchvision.io import encode_jpeg

    tensors = [
        torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous().to(device) for img in images
    ]
    encoded = encode_jpeg(tensors, quality=quality)
    return [bytes(e.cpu().numpy().tobytes()) for e in encoded]


def to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any PIL mode to 8-bit RGB (alpha composited on white, 16-bit scaled down)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK (PIL's JPEG decoder already undoes Adobe's inverted CMYK), palette without transparency, grey
    return img.convert("RGB")


_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 36867
_DATE_TIME = 306


def date_taken(data: bytes) -> float | None:
    """When the photo was taken, from EXIF (DateTimeOriginal, else DateTime), as epoch seconds read as UTC
    (cameras record local time without a zone); None when the photo does not say."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
            raw = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME)
    except Exception:  # a photo we can decode but whose metadata is broken: no date, not an error
        return None
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.strptime(raw.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return when.replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class PhotoMetadata:
    """What a rendered copy of a photo keeps from it: EXIF (date taken, camera, GPS...) and an RGB ICC profile."""

    exif: bytes | None = None
    icc: bytes | None = None

    def exif_for(self, size: tuple[int, int]) -> bytes | None:
        """The EXIF block for an upright output of `size`: orientation 1 (decoding already turned the pixels),
        the pixel dimensions of the output, and no embedded thumbnail (it would show the unstylized photo)."""
        if not self.exif:
            return None
        exif = Image.Exif()
        exif.load(self.exif)
        exif[ORIENTATION] = 1
        for tag in (IMAGE_WIDTH, IMAGE_LENGTH):
            exif.pop(tag, None)
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        if sub:
            sub[PIXEL_X], sub[PIXEL_Y] = size
        # Exif.tobytes writes IFD0 and its sub-IFDs (Exif, GPS) but not IFD1, where the thumbnail lives
        return exif.tobytes()


def read_metadata(data: bytes) -> PhotoMetadata:
    """The EXIF and ICC profile of a photo, read from its header (no pixels decoded).

    Never raises: a photo whose metadata cannot be read is still a photo, its outputs just carry none.
    A profile for another colour space (CMYK, grey) is dropped, since outputs are always RGB.
    """
    _register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                exif = img.getexif()
                icc = img.info.get("icc_profile") or None
                raw = exif.tobytes() if len(exif) else None
    except Exception as exc:  # noqa: BLE001 - metadata is a nicety: any failure means "none"
        log.info("metadata unreadable (%s: %s): outputs carry none", type(exc).__name__, exc)
        return PhotoMetadata()
    if icc is not None and (len(icc) < 20 or icc[16:20] != b"RGB "):
        icc = None
    return PhotoMetadata(exif=raw, icc=icc)
