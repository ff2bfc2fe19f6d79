"""Loading and normalising one image, shared by the indexer and the web app.

The same function prepares catalogue photos and shoppers' uploads, so a
catalogue photo uploaded as a query lands on its own vector. Validation is
strict: anything that is not a decodable raster image of a sane size raises
``ImageError`` with a reason code and a message fit to show a person.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import Settings
from .jpeg_layout import JpegLayout, read_layout
from .models import DEFAULT_INPUT_SIZE

# Bump when anything below changes the pixels fed to the model: the manifest
# records it, and an index built with another version is rebuilt.
PREPROCESS_VERSION = "4"

# The side of the model's square. Every function below takes the size: callers pass their
# model's (``embedder.input_size``, ``ModelSpec.input_size``); this, the default model's,
# is only the default for callers that have no model (tools, tests).
INPUT_SIZE = DEFAULT_INPUT_SIZE
MIN_SIDE = 32
# 64 megapixels is far above any product photo; bigger is treated as a bomb
# and refused from the header alone, before any pixel is allocated.
MAX_PIXELS = 64_000_000

# Memory, not pixels, is what a hostile image exhausts: a 124 KB 16-bit PNG
# of 64 megapixels needs 128 MB decoded, a 2.5 KB WebP of the same size 1 GB.
# Each process (gunicorn worker, indexer) holds at most this many decoded
# bytes and this many decodes at once; one image that alone needs more is
# refused from its header, and a decode that cannot get its share in time
# is told to retry. The first two come from Settings (FASHION_DECODE_MEMORY_MB,
# FASHION_DECODE_SLOTS), applied to each process by ``configure_decode_budget``.
DECODE_BUDGET_BYTES = Settings.decode_memory_mb * 1024 * 1024
DECODE_SLOTS = Settings.decode_slots
DECODE_WAIT_S = 20.0
# A progressive JPEG is decoded once per scan over its full-size coefficients:
# libjpeg's scripts write 6 to 18 scans, more than this is refused unread.
MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 2000  # markers of any kind; a photo has a few dozen
# Images with a long side of this many pixels or more (after JPEG draft) are
# reduced strip by strip while they are converted to 8-bit, so conversion
# never holds a second full-size copy.
EARLY_REDUCE_SIDE = 2048
_REDUCED_SIDE = 1024  # the long side early reduction aims at (1024-2047 px)
_STRIP_BYTES = 1024 * 1024
# libwebp decodes into its own buffer before Pillow copies it (measured peak:
# 3.8x the image's own size)
_FORMAT_OVERHEAD = {"WEBP": 4}
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

# Decoders an upload may reach. Pillow knows more (EPS would run Ghostscript
# on attacker-supplied PostScript); only the formats we document are opened.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

log = logging.getLogger(__name__)

WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112

# Pillow's own bomb guard raises at 2x this; ours below triggers first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """An image could not be used. ``reason`` is a short machine code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


Source = str | os.PathLike | bytes | BinaryIO
Crop = tuple[float, float, float, float]  # x, y, width, height as fractions of the upright image


def _mb(nbytes: int) -> int:
    return max(1, round(nbytes / (1024 * 1024)))


def pixel_bytes(mode: str) -> int:
    """Bytes per pixel Pillow allocates for ``mode``.

    Channels x bytes per sample, except that Pillow pads every 8-bit image of
    two to four channels to 4 bytes a pixel.
    """
    if mode.startswith("I;16"):
        return 2
    if mode in ("I", "F") or Image.getmodebands(mode) > 1:
        return 4
    return 1


def decode_cost(img: Image.Image, layout: JpegLayout | None = None) -> int:
    """Bytes that decoding ``img`` at its current (drafted) size will hold at the peak.

    A multi-scan JPEG (``layout``: its markers) also holds its coefficients
    at full size, however small the draft: 2 bytes a sample, 370 MB for a
    progressive 8000 x 8000 colour photo whose pixels are drafted to 4 MB.
    """
    width, height = img.size
    cost = width * height * pixel_bytes(img.mode) * _FORMAT_OVERHEAD.get(img.format or "", 1)
    if layout is not None and layout.multi_scan:
        cost += layout.coefficient_bytes
    return cost


class DecodeBudget:
    """Bounds the decoded bytes and the number of decodes one process holds at once."""

    def __init__(self, limit_bytes: int, slots: int, wait_s: float):
        self.limit_bytes = limit_bytes
        self.slots = max(1, slots)
        self.wait_s = wait_s
        self.on_wait = None  # called with the seconds each reservation waited (the web app's metrics)
        self._used = 0
        self._running = 0
        self._cond = threading.Condition()

    def resize(self, limit_bytes: int, slots: int, wait_s: float) -> None:
        """Change the limits; decodes already running keep their share."""
        with self._cond:
            self.limit_bytes = limit_bytes
            self.slots = max(1, slots)
            self.wait_s = wait_s
            self._cond.notify_all()  # a larger budget may admit a waiting decode

    def check(self, nbytes: int, describe: str = "this image") -> None:
        """Raise ``ImageError("too_large")``, naming the limit, when ``nbytes`` alone exceeds the budget."""
        if nbytes > self.limit_bytes:
            raise ImageError(
                "too_large",
                f"Decoding {describe} would need about {_mb(nbytes)} MB of memory; "
                f"the limit is {_mb(self.limit_bytes)} MB per photo. Please send a smaller photo.",
            )

    @contextmanager
    def reserve(self, nbytes: int, describe: str = "this image", wait_s: float | None = None) -> Iterator[None]:
        """Hold ``nbytes`` of the budget and one decode slot for the block.

        Raises ``ImageError("too_large")`` when ``nbytes`` alone exceeds the
        budget, and ``ImageError("busy")`` when the share is not free within
        the budget's wait, or within ``wait_s`` when that is shorter (what is
        left of a request's deadline).
        """
        self.check(nbytes, describe)
        started = time.monotonic()
        with self._cond:
            free = self._cond.wait_for(
                lambda: self._running < self.slots and self._used + nbytes <= self.limit_bytes,
                timeout=self.wait_s if wait_s is None else max(0.0, min(self.wait_s, wait_s)),
            )
            if not free:
                raise ImageError("busy", "The server is busy decoding other photos; please try again in a moment.")
            self._used += nbytes
            self._running += 1
        try:
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - started)
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._running -= 1
                self._cond.notify_all()


# one budget per process: gunicorn workers and indexer builds each get their own
DECODE_BUDGET = DecodeBudget(DECODE_BUDGET_BYTES, DECODE_SLOTS, DECODE_WAIT_S)


def configure_decode_budget(limit_bytes: int, slots: int, on_wait=None) -> None:
    """Set this process's decode budget (from ``Settings``: the app factory, the CLI, Ray workers).

    The wait for a share stays ``DECODE_WAIT_S``: builds share the budget,
    and a shorter wait would skip catalogue photos as "busy". ``on_wait``
    is told how long each reservation waited.
    """
    DECODE_BUDGET.resize(limit_bytes, slots, DECODE_WAIT_S)
    DECODE_BUDGET.on_wait = on_wait


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
        log.debug("Image.open failed: %s", exc)
        raise ImageError("unreadable", "The file could not be read as an image.") from None


def _encoded_bytes(img: Image.Image, source: Source) -> bytes | memoryview:
    """The whole encoded file behind ``img``: the upload's bytes, or read again from its file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return memoryview(source)
    position = img.fp.tell()
    img.fp.seek(0)
    try:
        return img.fp.read()
    finally:
        img.fp.seek(position)


def _jpeg_layout(img: Image.Image, source: Source) -> JpegLayout | None:
    """A JPEG's markers (None for other formats); refuses one of implausibly many scans before decoding."""
    if img.format not in ("JPEG", "MPO"):
        return None
    layout = read_layout(_encoded_bytes(img, source), max_scans=MAX_JPEG_SCANS, max_segments=MAX_JPEG_SEGMENTS)
    if layout is not None and layout.scans > MAX_JPEG_SCANS:
        raise ImageError(
            "too_many_scans",
            f"This JPEG is made of more than {MAX_JPEG_SCANS} scans (a photo has about 10), and each scan makes "
            "it slower to decode. Please save it again as an ordinary JPEG.",
        )
    if layout is not None and not layout.complete:
        raise ImageError(
            "too_many_scans",
            f"This JPEG is made of more than {MAX_JPEG_SEGMENTS} segments (a photo has a few dozen). "
            "Please save it again as an ordinary JPEG.",
        )
    return layout


def _leading_bytes(source: Source, count: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:count])
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return handle.read(count)
    position = source.tell()
    try:
        return source.read(count)
    finally:
        source.seek(position)


def webp_canvas(head: bytes) -> tuple[int, int] | None:
    """A WebP file's canvas (width, height) from its first 30 bytes; None for anything else."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(
            "too_large",
            f"The image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels.",
        )


def _check_webp_before_opening(source: Source, budget: DecodeBudget) -> None:
    # Pillow opens a WebP by creating libwebp's decoder, which maps its whole
    # canvas at once: the price must be checked before, from the RIFF header.
    canvas = webp_canvas(_leading_bytes(source, 30))
    if canvas is not None:
        _check_pixels(*canvas)
        nbytes = canvas[0] * canvas[1] * pixel_bytes("RGBA") * _FORMAT_OVERHEAD["WEBP"]
        budget.check(nbytes, f"this {canvas[0]}x{canvas[1]} WEBP image")


def _inspect(source: Source, draft_size: int | None, budget: DecodeBudget) -> tuple[Image.Image, int, str]:
    """Open ``source`` and check its header: the image, not yet decoded (drafted), its decode cost and a description.

    Nothing is decoded: the size checks and the price come from the header
    (and a JPEG's markers), so a decompression bomb costs only its header;
    one that alone needs more than ``budget`` is refused here.
    """
    _check_webp_before_opening(source, budget)
    img = _open(source)
    try:
        return (img, *_price(img, source, draft_size, budget))
    except BaseException:
        img.close()  # a refused catalogue file is not left open
        raise


def _price(img: Image.Image, source: Source, draft_size: int | None, budget: DecodeBudget) -> tuple[int, str]:
    width, height = img.size
    _check_pixels(width, height)
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            "too_small",
            f"The image is {width}x{height} pixels; it must be at least {MIN_SIDE} pixels on each side.",
        )
    layout = _jpeg_layout(img, source)
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)  # first frame of a GIF/WebP animation
        if draft_size and img.format == "JPEG":
            # draft() keeps the image at least this big; EXIF rotation later
            # only swaps axes, so the short side stays >= draft_size.
            img.draft("RGB", (draft_size, draft_size))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        log.debug("Decoding failed: %s", exc)
        raise ImageError("unreadable", "The image data is damaged or truncated.") from None
    cost, describe = decode_cost(img, layout), f"this {width}x{height} {img.format} image ({img.mode})"
    budget.check(cost, describe)
    return cost, describe


@contextmanager
def open_validated(
    source: Source, draft_size: int | None = INPUT_SIZE, budget: DecodeBudget | None = None, wait_s: float | None = None
) -> Iterator[Image.Image]:
    """Open an image, check its header, decode it and yield it upright.

    The size checks happen before decoding, so a decompression bomb costs
    only its header; a JPEG of more than ``MAX_JPEG_SCANS`` scans is refused
    from its markers. ``draft_size`` lets large JPEGs decode at a reduced
    scale (Pillow's ``draft``), which is several times faster. The decoded
    bytes (a multi-scan JPEG's full-size coefficients included) are held
    against ``budget`` (default: the process's) until the block ends,
    waiting for that share at most ``wait_s`` when given; images with a long
    side of ``EARLY_REDUCE_SIDE`` or more, and 16-bit or float ones, come
    out already reduced and in 8 bits.
    """
    budget = budget or DECODE_BUDGET
    img, cost, describe = _inspect(source, draft_size, budget)
    with budget.reserve(cost, describe, wait_s):
        try:
            img.load()
            img = _upright(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError("too_large", "The image is too large to process.") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            log.debug("Decoding failed: %s", exc)
            raise ImageError("unreadable", "The image data is damaged or truncated.") from None
        yield img


def decode_price(source: Source, size: int = INPUT_SIZE, crop: Crop | None = None) -> tuple[int, str]:
    """What ``load_with_size(source, size, crop)`` will hold of the decode budget, and the image's description.

    Reads the header (and a JPEG's markers) only. Raises ``ImageError`` for
    anything ``load_with_size`` would refuse before decoding (against the
    process's budget). The decode processes answer with it first, so that
    the worker reserves the share before the pixels are decoded.
    """
    try:
        img, cost, describe = _inspect(source, _crop_draft_size(size, crop), DECODE_BUDGET)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - see _decode_failure
        raise _decode_failure(exc) from None
    img.close()
    return cost, describe


def _to_8bit(strip: Image.Image, top: float) -> Image.Image:
    """One strip in a mode ``reduce()`` and ``_to_rgb`` accept, 8 bits a sample."""
    if strip.mode.startswith("I;16") and top == 65535.0:
        # integer arithmetic: the same floor(v / 65535 * 255) as below, at a fraction of the cost
        arr = (np.asarray(strip).astype(np.uint32) * 255 // 65535).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if strip.mode in _WIDE_MODES:
        arr = np.asarray(strip, dtype=np.float64)
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if strip.mode == "P":
        return strip.convert("RGBA" if "transparency" in strip.info else "RGB")
    if strip.mode == "1":
        return strip.convert("L")
    if strip.mode in ("LA", "PA", "La", "RGBa"):
        return strip.convert("RGBA")
    if strip.mode not in ("L", "RGB", "RGBA"):
        return strip.convert("RGB")
    return strip


def _wide_top(img: Image.Image) -> float:
    # 16-bit: the full range; 32-bit int and float: the actual maximum, so a
    # dark image is not clipped to black nor a bright one to white
    if img.mode.startswith("I;16"):
        return 65535.0
    return max(float(img.getextrema()[1]), 1.0)


def _tiles(width: int, height: int, bytes_per_pixel: int, factor: int) -> Iterator[tuple[int, int, int, int]]:
    """Boxes covering the image, each about ``_STRIP_BYTES`` and aligned to ``factor``.

    Both sides of a box are multiples of ``factor`` (except at the right and
    bottom edges), so reducing box by box gives exactly the pixels of one
    whole-image ``reduce``. Tiling across as well as down is what bounds a
    very wide image: a 2,000,000 x 32 strip of full rows would be the whole image.
    """
    band = min(height, factor)  # the fewest rows a box can have
    cols = min(width, max(1, _STRIP_BYTES // (band * bytes_per_pixel * factor)) * factor)
    rows = min(height, max(1, _STRIP_BYTES // (cols * bytes_per_pixel * factor)) * factor)
    for top in range(0, height, rows):
        for left in range(0, width, cols):
            yield left, top, min(width, left + cols), min(height, top + rows)


def _reduce_early(img: Image.Image) -> Image.Image:
    """Big or high-bit-depth images: 8-bit and box-reduced, one tile at a time.

    Converting a full-size 16-bit or float image in one go costs several
    float64 copies of it (1.7 GB for 64 megapixels); tiles keep the extra
    memory at a few megabytes whatever the shape, and the result is at most
    2047 px long.
    """
    width, height = img.size
    factor = max(1, max(width, height) // _REDUCED_SIDE) if max(width, height) >= EARLY_REDUCE_SIDE else 1
    if factor == 1 and img.mode not in _WIDE_MODES:
        return img
    top_value = _wide_top(img) if img.mode in _WIDE_MODES else 1.0
    out = None
    for box in _tiles(width, height, pixel_bytes(img.mode), factor):
        tile = _to_8bit(img.crop(box), top_value)
        if factor > 1:
            tile = tile.reduce(factor)
        if out is None:
            out = Image.new(tile.mode, (-(-width // factor), -(-height // factor)))
        out.paste(tile, (box[0] // factor, box[1] // factor))
    return out


_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(img: Image.Image) -> Image.Image:
    """Reduce early if needed, then apply the EXIF orientation of the original."""
    reduced = _reduce_early(img)
    if reduced is img:
        return ImageOps.exif_transpose(img)
    # the reduced copy has no EXIF; take the orientation from the original
    method = _TRANSPOSE_FOR_ORIENTATION.get(img.getexif().get(EXIF_ORIENTATION, 1))
    return reduced.transpose(method) if method is not None else reduced


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency onto white."""
    if img.mode in _WIDE_MODES:
        img = _to_8bit(img, _wide_top(img))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, WHITE + (255,))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def fitted_region(photo_size: tuple[int, int], size: int = INPUT_SIZE) -> tuple[int, int, int, int]:
    """Where a photo of ``photo_size`` (width, height) lands on the model's square: left, top, width, height.

    In pixels of the ``size`` x ``size`` square; the rest of the square is
    white padding.
    """
    width, height = photo_size
    scale = size / max(width, height)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    return (size - fitted[0]) // 2, (size - fitted[1]) // 2, fitted[0], fitted[1]


def _fit_on_square(img: Image.Image, size: int) -> Image.Image:
    """Shrink to ``size`` on the long side, then centre on a white square.

    Resizing first keeps memory at ``size``x``size`` even for a very long,
    thin image, whose padded square could be terabytes.
    """
    left, top, *fitted = fitted_region(img.size, size)
    fitted = tuple(fitted)
    if fitted != img.size:
        img = img.resize(fitted, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if fitted == (size, size):
        return img
    canvas = Image.new("RGB", (size, size), WHITE)
    canvas.paste(img, (left, top))
    return canvas


def normalise(img: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """RGB on white, padded to a square (no squashing), ``size`` x ``size``."""
    return _fit_on_square(_to_rgb(img), size)


def crop_box(size: tuple[int, int], crop: Crop) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right, bottom)`` of a fractional crop of an image of ``size``.

    Raises ``ImageError`` when the box would be narrower than ``MIN_SIDE``
    pixels: too little of the photo is left to search with.
    """
    width, height = size
    x, y, w, h = crop
    left, top = round(x * width), round(y * height)
    right, bottom = min(width, round((x + w) * width)), min(height, round((y + h) * height))
    if min(right - left, bottom - top) < MIN_SIDE:
        raise ImageError(
            "bad_crop",
            f"The crop is {right - left}x{bottom - top} pixels of a {width}x{height} photo; "
            f"it must be at least {MIN_SIDE} pixels on each side.",
        )
    return left, top, right, bottom


def _crop_draft_size(size: int, crop: Crop | None) -> int:
    # A JPEG decoded at reduced scale must still leave ``size`` pixels across
    # the crop, or a small crop is upscaled from a blurred draft.
    if crop is None:
        return size
    return min(8 * size, math.ceil(size / max(min(crop[2], crop[3]), 1e-3)))


def _decode_failure(exc: Exception) -> ImageError:
    # Pillow's decoders raise many exception types on hostile input; none of
    # them may become a 500 or stop a build. The exception's text stays in
    # the server log: it may name paths or library internals.
    log.info("Decoder failure: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, MemoryError):  # in a decode process: its memory cap
        return ImageError("too_large", "Decoding this image needed more memory than a photo may use. "
                          "Please send a smaller photo.")
    return ImageError("unreadable", "The image could not be decoded.")


def load_for_model(
    source: Source, size: int = INPUT_SIZE, crop: Crop | None = None, wait_s: float | None = None
) -> np.ndarray:
    """Load any supported image as a ``(size, size, 3)`` uint8 RGB array.

    ``size`` is the model's input size (``embedder.input_size``).

    ``crop`` keeps only that part of the upright (EXIF-rotated) photo before
    the shared normalisation, so a shopper can point at one garment in a
    street photo. ``wait_s`` caps the wait for a decode share. Raises
    ``ImageError`` for anything that is not a usable image.
    """
    return load_with_size(source, size, crop, wait_s)[0]


def load_with_size(
    source: Source, size: int = INPUT_SIZE, crop: Crop | None = None, wait_s: float | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """``load_for_model``'s array, and the (width, height) of the upright photo (or crop) it was fitted from.

    With the size, ``fitted_region`` says where the photo lies on the square:
    what ``indexer.locate`` needs to turn a box on the array into fractions
    of the photo. The size is the decoded one (a JPEG may decode at a
    reduced scale), so only its proportions mean anything.
    """
    try:
        with open_validated(source, draft_size=_crop_draft_size(size, crop), wait_s=wait_s) as img:
            if crop is not None:
                img = img.crop(crop_box(img.size, crop))
            return np.asarray(normalise(img, size), dtype=np.uint8), img.size
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
        with open_validated(source, draft_size=size) as img:
            rgb = _to_rgb(img)
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
