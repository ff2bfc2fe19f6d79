"""Loading and normalising one image, shared by the indexer and the web app.

The same function prepares catalogue photos and shoppers' uploads, so a
catalogue photo uploaded as a query lands on its own vector. Validation is
strict: anything that is not a decodable raster image of a sane size raises
``ImageError`` with a reason code and a message fit to show a person.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Bump when anything below changes the pixels fed to the model: the manifest
# records it, and an index built with another version is rebuilt.
PREPROCESS_VERSION = "3"

INPUT_SIZE = 224
MIN_SIDE = 32
# 64 megapixels is far above any product photo; bigger is treated as a bomb
# and refused from the header alone, before any pixel is allocated.
MAX_PIXELS = 64_000_000

# Decoders an upload may reach. Pillow knows more (EPS would run Ghostscript
# on attacker-supplied PostScript); only the formats we document are opened.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

WHITE = (255, 255, 255)

# Pillow's own bomb guard raises at 2x this; ours below triggers first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """An image could not be used. ``reason`` is a short machine code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


Source = str | os.PathLike | bytes | BinaryIO


def _open(source: Source) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty", "The file is empty.")
        source = io.BytesIO(bytes(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source, formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too_large", "The image is too large to process.") from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "The file is not an image in a supported format.") from None
    except OSError as exc:
        raise ImageError("unreadable", f"The file could not be read: {exc}") from None


def open_validated(source: Source, draft_size: int | None = INPUT_SIZE) -> Image.Image:
    """Open an image, check its header, decode it and return it upright.

    The size checks happen before decoding, so a decompression bomb costs
    only its header. ``draft_size`` lets large JPEGs decode at a reduced
    scale (Pillow's ``draft``), which is several times faster.
    """
    img = _open(source)
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            "too_large",
            f"The image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels.",
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            "too_small",
            f"The image is {width}x{height} pixels; it must be at least {MIN_SIDE} pixels on each side.",
        )
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)  # first frame of a GIF/WebP animation
        if draft_size and img.format == "JPEG":
            # draft() keeps the image at least this big; EXIF rotation later
            # only swaps axes, so the short side stays >= draft_size.
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too_large", "The image is too large to process.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("unreadable", f"The image data is damaged or truncated ({exc}).") from None
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits by the actual range
        # rather than clipping everything above 255 to white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if img.mode == "F":
            top = max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, WHITE + (255,))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _fit_on_square(img: Image.Image, size: int) -> Image.Image:
    """Shrink to ``size`` on the long side, then centre on a white square.

    Resizing first keeps memory at ``size``x``size`` even for a very long,
    thin image, whose padded square could be terabytes.
    """
    width, height = img.size
    scale = size / max(width, height)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    if fitted != img.size:
        img = img.resize(fitted, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if fitted == (size, size):
        return img
    canvas = Image.new("RGB", (size, size), WHITE)
    canvas.paste(img, ((size - fitted[0]) // 2, (size - fitted[1]) // 2))
    return canvas


def normalise(img: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """RGB on white, padded to a square (no squashing), ``size`` x ``size``."""
    return _fit_on_square(_to_rgb(img), size)


def _decode_failure(exc: Exception) -> ImageError:
    # Pillow's decoders raise many exception types on hostile input; none of
    # them may become a 500 or stop a build.
    return ImageError("unreadable", f"The image could not be decoded ({type(exc).__name__}).")


def load_for_model(source: Source, size: int = INPUT_SIZE) -> np.ndarray:
    """Load any supported image as a ``(size, size, 3)`` uint8 RGB array.

    Raises ``ImageError`` for anything that is not a usable image.
    """
    try:
        img = open_validated(source, draft_size=size)
        return np.asarray(normalise(img, size), dtype=np.uint8)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - see _decode_failure
        raise _decode_failure(exc) from None


def _jpeg_thumbnail(rgb: Image.Image, size: int) -> bytes:
    thumb = rgb.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()


def prepare(source: Source, thumb_size: int, size: int = INPUT_SIZE) -> tuple[np.ndarray, bytes]:
    """Decode once, returning the model array and a JPEG thumbnail.

    The model array is exactly what ``load_for_model`` gives for the same
    file; the thumbnail is at most ``thumb_size`` on its long side.
    """
    try:
        rgb = _to_rgb(open_validated(source, draft_size=size))
        array = np.asarray(normalise(rgb, size), dtype=np.uint8)
        return array, _jpeg_thumbnail(rgb, thumb_size)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - see _decode_failure
        raise _decode_failure(exc) from None


def preview_data_url(array: np.ndarray, size: int = 160) -> str:
    """A small inline JPEG of a model-ready array, for showing the query."""
    import base64

    img = Image.fromarray(array)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def is_image_path(path: str | Path) -> bool:
    """True when the file name has one of the catalogue image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
