"""Corpus of bad or odd uploads for hardening tests of the image-upload endpoint.

Everything is generated in code with Pillow / numpy (no binary blobs in the repo).
Each :class:`Upload` says what the endpoint is expected to do with it:

* ``"ok"``: a valid image in an unusual format / mode / filename / content type;
  the endpoint must decode it and return results.
* ``"reject"``: not an image, a broken image, too small, or a decompression bomb;
  the endpoint must answer with a 4xx status and a human-readable message.

Run ``python tests/corpus.py`` for a self-check that prints every case and verifies
that Pillow agrees with the expectations (exit status 1 if not).
"""

from __future__ import annotations

import functools
import io
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageOps

__all__ = [
    "BOMB_SIDE",
    "HUGE_SIDE",
    "MEGAPIXEL_CASES",
    "EXIF_ORIENTATION",
    "Upload",
    "build_corpus",
    "make_image",
    "make_jpeg",
]

#: Width and height claimed by the decompression-bomb PNG.
BOMB_SIDE = 20_000
#: Side of the memory-hungry cases: just under the 64-megapixel cap.
# a 64-megapixel strip shorter than the early reduction's factor (1953)
STRIP_LENGTH, STRIP_SIDE = 2_000_000, 32
HUGE_SIDE = 7_999
#: The "ok" cases of about 64 megapixels: each takes a second or more to decode, so tests
#: put them in the slow tier (``pytest -m "not slow"`` leaves them out).
MEGAPIXEL_CASES = frozenset(
    {"png_16bit_huge", "tiff_float_huge", "png_16bit_wide", "png_16bit_tall", "tiff_float_wide", "png_palette_wide"}
)
#: EXIF tag id of "Orientation".
EXIF_ORIENTATION = 0x0112

Expect = Literal["ok", "reject"]


@dataclass(frozen=True)
class Upload:
    """One upload case: the multipart file part plus the expected outcome."""

    name: str  # short kind name, e.g. "cmyk_jpeg"
    filename: str  # filename sent in the multipart upload
    # the bytes, or what makes them: the 64-megapixel cases take seconds to encode, so they are
    # made on first use of ``data`` (a run of the fast tier, which leaves them out, never pays)
    source: bytes | Callable[[], bytes] = field(repr=False)
    content_type: str  # Content-Type of the file part
    expect: Expect  # "ok" (must give results) or "reject" (4xx with a message)
    note: str  # human description

    @functools.cached_property
    def data(self) -> bytes:
        """The bytes of the file part."""
        return self.source() if callable(self.source) else self.source


# --------------------------------------------------------------------------- helpers


def make_image(
    size: tuple[int, int] = (96, 96),
    color: tuple[int, int, int] = (200, 30, 30),
    *,
    mode: str = "RGB",
) -> Image.Image:
    """Return a simple product-like picture: a coloured shape on a white background.

    The shape is an off-centre rectangle plus a circle so that rotations and flips
    are detectable. ``mode`` is applied with :meth:`PIL.Image.Image.convert`.
    """
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle(
        (width * 0.15, height * 0.10, width * 0.60, height * 0.55),
        fill=color,
    )
    radius = min(width, height) * 0.18
    cx, cy = width * 0.70, height * 0.75
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=color)
    return image if mode == "RGB" else image.convert(mode)


def _encode(image: Image.Image, fmt: str, **save_kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def make_jpeg(
    size: tuple[int, int] = (96, 96),
    color: tuple[int, int, int] = (200, 30, 30),
    **save_kwargs: Any,
) -> bytes:
    """Return the bytes of a valid RGB JPEG of a coloured shape on white.

    Extra keyword arguments go to :meth:`PIL.Image.Image.save` (e.g. ``quality``,
    ``progressive=True``, ``exif=...``); the default quality is 90.
    """
    save_kwargs.setdefault("quality", 90)
    return _encode(make_image(size, color), "JPEG", **save_kwargs)


def make_png(size: tuple[int, int] = (96, 96), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """Return the bytes of an RGB PNG of a coloured shape on white (small even when large: flat colours)."""
    return _encode(make_image(size, color), "PNG")


def _noise(size: tuple[int, int], seed: int = 1234) -> Image.Image:
    """Deterministic RGB noise (incompressible, so truncation hits scan data)."""
    width, height = size
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(array)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _bomb_png(side: int = BOMB_SIDE) -> bytes:
    """Return a *complete, valid* 1-bit grayscale PNG of ``side`` x ``side`` zeros.

    The IDAT stream is produced by compressing zero rows incrementally, so at no
    point are ``side**2`` pixels allocated; the result is ~50 KB for 20000 px.
    """
    row_bytes = 1 + (side + 7) // 8  # filter byte + packed 1-bit pixels
    block_rows = 1000
    block = b"\x00" * (row_bytes * block_rows)
    compressor = zlib.compressobj(9)
    parts = []
    remaining = side
    while remaining:
        rows = min(block_rows, remaining)
        parts.append(compressor.compress(block[: rows * row_bytes]))
        remaining -= rows
    parts.append(compressor.flush())
    idat = b"".join(parts)
    # width, height, bit depth 1, colour type 0 (gray), deflate, no filter, no interlace
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"IDAT", idat),
            _png_chunk(b"IEND", b""),
        )
    )


def _exif_rotated_jpeg() -> bytes:
    """Return a JPEG stored sideways whose EXIF orientation (6) makes it upright.

    Displayed upright the picture is 96x128 (portrait); the stored pixels are the
    upright picture rotated 90 degrees counter-clockwise (128x96). Orientation 6
    tells viewers to rotate 90 degrees clockwise, so ``ImageOps.exif_transpose``
    gives back the 96x128 portrait.
    """
    upright = make_image((96, 128), (30, 90, 200))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[EXIF_ORIENTATION] = 6
    return _encode(stored, "JPEG", quality=90, exif=exif.tobytes())


def _animated_gif() -> bytes:
    colours = ((200, 30, 30), (30, 160, 60), (30, 60, 200))
    frames = [make_image((96, 96), colour).convert("P") for colour in colours]
    return _encode(
        frames[0],
        "GIF",
        save_all=True,
        append_images=frames[1:],
        duration=120,
        loop=0,
    )


def _palette_png_transparency() -> bytes:
    image = make_image((96, 96), (120, 40, 160)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=8
    )
    # Make the palette entry of the white background fully transparent.
    background_index = image.getpixel((0, 0))
    return _encode(image, "PNG", transparency=background_index)


def _rgba_png() -> bytes:
    """RGBA with a fully transparent *black* background.

    A naive ``convert("RGB")`` turns the background black instead of white, which
    is exactly the kind of thing the endpoint should handle (alpha-composite).
    """
    shape = make_image((96, 96), (200, 120, 30))
    alpha = ImageOps.invert(make_image((96, 96), (0, 0, 0), mode="L"))
    rgba = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    rgba.paste(shape, (0, 0), alpha)
    return _encode(rgba, "PNG")


def _la_png() -> bytes:
    gray = make_image((96, 96), (60, 60, 60), mode="L")
    alpha = ImageOps.invert(make_image((96, 96), (0, 0, 0), mode="L")).point(
        lambda value: max(value, 64)
    )
    la = Image.merge("LA", (gray, alpha))
    return _encode(la, "PNG")


def _png_16bit() -> bytes:
    """16-bit grayscale PNG (Pillow mode ``I;16``) using the full 0..65535 range.

    Note: Pillow's ``convert("RGB")`` clips ``I;16`` values at 255, so a naive
    conversion turns almost the whole image white.
    """
    gray = np.asarray(make_image((96, 96), (40, 40, 40), mode="L"), dtype=np.uint16)
    ramp = np.linspace(0, 255, 96, dtype=np.uint16)[None, :]
    array = (gray * 192 + ramp).astype(np.uint16)  # spans ~0..49000
    image = Image.fromarray(array)
    if image.mode != "I;16":  # pragma: no cover - depends on the Pillow version
        image = image.convert("I;16")
    return _encode(image, "PNG")


def _huge(mode: str, fmt: str, **save_kwargs: Any) -> bytes:
    """A flat ``HUGE_SIDE`` square: a few KB compressed, 64 megapixels decoded.

    Memory, not pixel count, is what these exhaust: 16-bit grey needs 128 MB
    decoded, float or RGBA 256 MB, and a WebP about 1 GB inside libwebp.
    """
    background, shape = {"I;16": (65000, 10000), "F": (1.5, 0.2), "RGBA": ((255,) * 4, (200, 40, 40, 255))}[mode]
    left, top, right, bottom = HUGE_SIDE // 6, HUGE_SIDE // 8, HUGE_SIDE * 3 // 5, HUGE_SIDE // 2
    if mode == "I;16":  # Pillow's paste() mangles 16-bit values; numpy does not
        array = np.full((HUGE_SIDE, HUGE_SIDE), background, dtype=np.uint16)
        array[top:bottom, left:right] = shape
        image = Image.fromarray(array)
    else:
        image = Image.new(mode, (HUGE_SIDE, HUGE_SIDE), background)
        image.paste(shape, (left, top, right, bottom))
    return _encode(image, fmt, **save_kwargs)


def _long_strip(mode: str, fmt: str, wide: bool, **save_kwargs: Any) -> bytes:
    """A ``STRIP_LENGTH`` x ``STRIP_SIDE`` strip (or its transpose): 64 megapixels in a few KB.

    Shorter than the early reduction's factor, such a strip once became one
    full-size tile, converted whole: 16-bit grew a worker by 730 MB, float by 2 GB.
    """
    length, side = STRIP_LENGTH, STRIP_SIDE
    array = np.zeros((side, length), dtype={"I;16": np.uint16, "F": np.float32, "P": np.uint8}[mode])
    array[:, length // 3 : 2 * length // 3] = {"I;16": 40000, "F": 0.75, "P": 2}[mode]
    image = Image.fromarray(array if wide else np.ascontiguousarray(array.T))
    if mode == "P":
        image = image.convert("P")
        image.putpalette([20, 20, 20, 0, 0, 0, 200, 40, 40] + [0] * (3 * 253))
    return _encode(image, fmt, **save_kwargs)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("photo.jpg", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, make_jpeg())
        info = zipfile.ZipInfo("readme.txt", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, b"not an image\n")
    return buffer.getvalue()


_SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">'
    b'<rect x="10" y="10" width="60" height="50" fill="red"/>'
    b'<script>alert("svg")</script></svg>\n'
)


# --------------------------------------------------------------------------- corpus


@functools.cache
def _build() -> tuple[Upload, ...]:
    jpeg = make_jpeg()
    noisy_jpeg = _encode(_noise((128, 128)), "JPEG", quality=95)
    noisy_png = _encode(_noise((128, 128)), "PNG")

    ok = [
        Upload(
            "cmyk_jpeg",
            "cmyk.jpg",
            _encode(make_image((96, 96), (30, 140, 60), mode="CMYK"), "JPEG"),
            "image/jpeg",
            "ok",
            "CMYK JPEG (print workflow export), must be converted to RGB",
        ),
        Upload(
            "png_16bit",
            "gray16.png",
            _png_16bit(),
            "image/png",
            "ok",
            "16-bit grayscale PNG, Pillow mode I;16 (convert('RGB') clips at 255)",
        ),
        Upload(
            "png_16bit_huge",
            "gray16-huge.png",
            functools.partial(_huge, "I;16", "PNG"),
            "image/png",
            "ok",
            f"{HUGE_SIDE}x{HUGE_SIDE} 16-bit grey PNG (~140 KB): 128 MB decoded, once 1.7 GB converted",
        ),
        Upload(
            "tiff_float_huge",
            "float-huge.tif",
            functools.partial(_huge, "F", "TIFF", compression="tiff_deflate"),
            "image/tiff",
            "ok",
            f"{HUGE_SIDE}x{HUGE_SIDE} 32-bit float TIFF (~380 KB): 256 MB decoded, just inside the budget",
        ),
        Upload(
            "png_16bit_wide",
            "gray16-wide.png",
            functools.partial(_long_strip, "I;16", "PNG", wide=True),
            "image/png",
            "ok",
            f"{STRIP_LENGTH}x{STRIP_SIDE} 16-bit grey PNG: 128 MB decoded, once 730 MB converted in one strip",
        ),
        Upload(
            "png_16bit_tall",
            "gray16-tall.png",
            functools.partial(_long_strip, "I;16", "PNG", wide=False),
            "image/png",
            "ok",
            f"{STRIP_SIDE}x{STRIP_LENGTH} 16-bit grey PNG: the same pixels standing up",
        ),
        Upload(
            "tiff_float_wide",
            "float-wide.tif",
            functools.partial(_long_strip, "F", "TIFF", wide=True, compression="tiff_deflate"),
            "image/tiff",
            "ok",
            f"{STRIP_LENGTH}x{STRIP_SIDE} float TIFF: 256 MB decoded, once 2 GB converted in one strip",
        ),
        Upload(
            "png_palette_wide",
            "palette-wide.png",
            functools.partial(_long_strip, "P", "PNG", wide=True),
            "image/png",
            "ok",
            f"{STRIP_LENGTH}x{STRIP_SIDE} palette PNG (~7 KB): 64 MB decoded, once 370 MB converted to RGB",
        ),
        Upload(
            "palette_png_transparency",
            "palette.png",
            _palette_png_transparency(),
            "image/png",
            "ok",
            "palette (P) PNG whose background palette entry is transparent",
        ),
        Upload(
            "la_png",
            "gray_alpha.png",
            _la_png(),
            "image/png",
            "ok",
            "grayscale + alpha (LA) PNG",
        ),
        Upload(
            "grayscale_jpeg",
            "gray.jpg",
            _encode(make_image((96, 96), (50, 50, 50), mode="L"), "JPEG"),
            "image/jpeg",
            "ok",
            "single-channel (L) JPEG",
        ),
        Upload(
            "rgba_png",
            "transparent.png",
            _rgba_png(),
            "image/png",
            "ok",
            "RGBA PNG, transparent pixels are (0,0,0,0): naive RGB gives black bg",
        ),
        Upload(
            "animated_gif",
            "anim.gif",
            _animated_gif(),
            "image/gif",
            "ok",
            "animated GIF with 3 distinct frames (red, green, blue)",
        ),
        Upload(
            "webp",
            "photo.webp",
            _encode(make_image((96, 96), (200, 30, 120)), "WEBP", quality=80),
            "image/webp",
            "ok",
            "lossy WebP",
        ),
        Upload(
            "bmp",
            "photo.bmp",
            _encode(make_image((96, 96), (30, 30, 200)), "BMP"),
            "image/bmp",
            "ok",
            "Windows bitmap",
        ),
        Upload(
            "tiff",
            "photo.tiff",
            _encode(make_image((96, 96), (200, 160, 30)), "TIFF"),
            "image/tiff",
            "ok",
            "uncompressed TIFF",
        ),
        Upload(
            "exif_rotated_jpeg",
            "rotated.jpg",
            _exif_rotated_jpeg(),
            "image/jpeg",
            "ok",
            "stored 128x96 sideways with EXIF Orientation=6; upright it is 96x128",
        ),
        Upload(
            "jpeg_wrong_extension",
            "photo.png",
            jpeg,
            "image/png",
            "ok",
            "a real JPEG named .png and sent as image/png",
        ),
        Upload(
            "nonascii_filename",
            "фото 雨.jpg",
            jpeg,
            "image/jpeg",
            "ok",
            "valid JPEG with a non-ASCII filename containing a space",
        ),
        Upload(
            "traversal_filename",
            "../../etc/passwd",
            jpeg,
            "image/jpeg",
            "ok",
            "valid JPEG with a path-traversal filename (must never be used as path)",
        ),
        Upload(
            "wrong_content_type",
            "photo.jpg",
            jpeg,
            "text/plain",
            "ok",
            "valid JPEG sent with Content-Type text/plain",
        ),
        Upload(
            "progressive_jpeg",
            "progressive.jpg",
            make_jpeg(progressive=True, optimize=True),
            "image/jpeg",
            "ok",
            "progressive JPEG",
        ),
        Upload(
            "tall_narrow",
            "tall.jpg",
            make_jpeg((40, 400), (120, 60, 20)),
            "image/jpeg",
            "ok",
            "40x400 JPEG (aspect 1:10, still above the 32 px minimum side)",
        ),
        Upload(
            "large_jpeg",
            "large.jpg",
            make_jpeg((4000, 3000), (60, 120, 180), quality=85),
            "image/jpeg",
            "ok",
            "4000x3000 JPEG (12 MP phone photo size), must be downscaled",
        ),
    ]

    reject = [
        Upload(
            "empty_file",
            "empty.jpg",
            b"",
            "image/jpeg",
            "reject",
            "zero-byte upload",
        ),
        Upload(
            "text_as_jpg",
            "notes.jpg",
            b"Shopping list:\n- red dress\n- blue trousers\n",
            "image/jpeg",
            "reject",
            "plain text named .jpg",
        ),
        Upload(
            "html_as_png",
            "x.png",
            b"<html><script>alert(1)</script></html>",
            "image/png",
            "reject",
            "HTML/JS payload named .png (error message must not echo it unescaped)",
        ),
        Upload(
            "webp_huge",
            "huge.webp",
            functools.partial(_huge, "RGBA", "WEBP", lossless=True),
            "image/webp",
            "reject",
            f"{HUGE_SIDE}x{HUGE_SIDE} lossless WebP (~2.5 KB; libwebp would need ~1 GB): over the decode budget",
        ),
        Upload(
            "truncated_jpeg",
            "truncated.jpg",
            noisy_jpeg[: len(noisy_jpeg) * 40 // 100],
            "image/jpeg",
            "reject",
            "first 40% of a 128x128 noise JPEG: header OK, scan data cut",
        ),
        Upload(
            "truncated_png",
            "truncated.png",
            noisy_png[: len(noisy_png) // 2],
            "image/png",
            "reject",
            "first 50% of a 128x128 noise PNG: header OK, IDAT cut",
        ),
        Upload(
            "one_by_one",
            "pixel.png",
            _encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"),
            "image/png",
            "reject",
            "valid 1x1 PNG, below the 32 px minimum side",
        ),
        Upload(
            "decompression_bomb",
            "bomb.png",
            _bomb_png(),
            "image/png",
            "reject",
            f"valid {BOMB_SIDE}x{BOMB_SIDE} 1-bit PNG (~50 KB, 400 Mpx decoded)",
        ),
        Upload(
            "svg_as_image",
            "a.svg",
            _SVG,
            "image/svg+xml",
            "reject",
            "SVG document with a script (not a raster image)",
        ),
        Upload(
            "zip_as_jpg",
            "x.jpg",
            _zip_bytes(),
            "image/jpeg",
            "reject",
            "ZIP archive (containing a JPEG) named .jpg",
        ),
    ]
    return tuple(ok + reject)


def build_corpus() -> list[Upload]:
    """Return every upload case ("ok" cases first, then "reject" cases).

    The cases are deterministic and built once per process (cached); a fresh list
    is returned on each call.
    """
    return list(_build())


# --------------------------------------------------------------------------- self-check


def _check(upload: Upload) -> tuple[str, bool]:
    """Load ``upload`` with Pillow and return (description, matches expectation)."""
    if upload.name == "decompression_bomb":
        try:
            Image.open(io.BytesIO(upload.data))
        except Image.DecompressionBombError as exc:
            guarded = f"open() -> DecompressionBombError ({str(exc)[:40]}...)"
        else:
            guarded = "open() did NOT raise DecompressionBombError"
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(io.BytesIO(upload.data)) as image:
                size = image.size
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        good = size == (BOMB_SIDE, BOMB_SIDE) and len(upload.data) < 1_000_000
        return f"{guarded}; size without limit {size}", good

    try:
        with Image.open(io.BytesIO(upload.data)) as image:
            image.load()
            info = f"loads: {image.format} {image.mode} {image.size}"
            extra = _extra_checks(upload.name, image)
    except Exception as exc:  # noqa: BLE001 - any failure counts as "does not load"
        return f"fails: {type(exc).__name__}: {str(exc)[:60]}", (
            upload.expect == "reject" and upload.name != "one_by_one"
        )
    if upload.name == "one_by_one":
        return info, image.size == (1, 1)
    if upload.name == "webp_huge":  # valid, but over the decode budget
        return info, image.size == (HUGE_SIDE, HUGE_SIDE)
    if extra is None:
        return info, upload.expect == "ok"
    text, good = extra
    return f"{info}; {text}", upload.expect == "ok" and good


def _extra_checks(name: str, image: Image.Image) -> tuple[str, bool] | None:
    """Format-specific checks for some "ok" cases (None when there are none)."""
    if name == "png_16bit":
        return f"mode {image.mode}", image.mode == "I;16"
    if name == "animated_gif":
        frames = getattr(image, "n_frames", 1)
        return f"{frames} frames", frames >= 2
    if name == "exif_rotated_jpeg":
        orientation = image.getexif().get(EXIF_ORIENTATION)
        upright = ImageOps.exif_transpose(image).size
        return (
            f"orientation {orientation}, upright {upright}",
            orientation == 6 and upright == (96, 128),
        )
    if name == "progressive_jpeg":
        progressive = bool(image.info.get("progressive"))
        return f"progressive={progressive}", progressive
    if name == "cmyk_jpeg":
        return f"mode {image.mode}", image.mode == "CMYK"
    if name == "palette_png_transparency":
        transparency = image.info.get("transparency")
        return f"transparency={transparency}", transparency is not None
    if name in ("rgba_png", "la_png"):
        alpha = image.getchannel("A").getextrema()
        return f"alpha range {alpha}", alpha[0] < 255
    return None


def _self_check() -> int:
    """Print every case with its size and Pillow's verdict; return an exit status."""
    out = sys.stdout
    failures = 0
    corpus = build_corpus()
    for upload in corpus:
        text, good = _check(upload)
        failures += not good
        status = "OK " if good else "BAD"
        out.write(
            f"{status} {upload.expect:<6} {upload.name:<26} {len(upload.data):>9} B"
            f"  {text}\n"
        )
    out.write(f"{len(corpus)} cases, {failures} not matching expectations\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_self_check())
