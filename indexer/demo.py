"""Deterministic demo catalogue of product-like images, drawn with Pillow alone.

The catalogue imitates the Kaggle "Fashion Product Images" dataset layout closely
enough for the indexer and the web app to run without downloading anything:
``out_dir/<id>.jpg`` images plus an ``out_dir/styles.csv`` metadata file.

Every image is a simple but recognisable garment / accessory silhouette (t-shirt,
shirt, trousers, skirt, dress, shoe, handbag, cap) filled with one of six colours
and one of three patterns on a white background, with small per-image jitter of
size, position and shade. Generation depends only on ``seed`` (no clock, no global
random state), so the same seed always yields byte-identical files.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from PIL import Image, ImageDraw, ImageFilter

from .checksums import atomic_write_bytes

__all__ = ["DEMO_VERSION", "MARKER_NAME", "STYLES_HEADER", "generate_demo_catalogue"]

logger = logging.getLogger(__name__)

#: Bump whenever the generated images or metadata change, so that existing demo
#: folders are regenerated.
DEMO_VERSION = "1"

#: Marker file written last; its presence (with DEMO_VERSION as content) means the
#: catalogue in the folder is complete.
MARKER_NAME = ".demo-version"

#: Column order of styles.csv (same as the Kaggle dataset).
STYLES_HEADER = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
)

_SUPERSAMPLE = 2
_JPEG_QUALITY = 90
_BACKGROUND = (255, 255, 255)
_SHADOW = (232, 232, 232)
_SEASONS = ("Summer", "Fall", "Winter", "Spring")

RGB = tuple[int, int, int]
Point = tuple[float, float]
# A shape draws its silhouette into the mask (fill=255) through ``to_px`` which maps
# unit-square coordinates to pixels; details are drawn afterwards on the RGB image.
ToPx = Callable[[Sequence[Point]], list[Point]]


@dataclass(frozen=True)
class _Category:
    article_type: str
    master: str
    sub: str
    noun: str
    genders: tuple[str, ...]


_CATEGORIES: tuple[_Category, ...] = (
    _Category("Tshirts", "Apparel", "Topwear", "Tshirt", ("Men", "Women", "Unisex")),
    _Category("Trousers", "Apparel", "Bottomwear", "Trousers", ("Men", "Women")),
    _Category("Dresses", "Apparel", "Dress", "Dress", ("Women",)),
    _Category(
        "Casual Shoes", "Footwear", "Shoes", "Casual Shoes", ("Men", "Women", "Unisex")
    ),
    _Category("Handbags", "Accessories", "Bags", "Handbag", ("Women",)),
    _Category("Caps", "Accessories", "Headwear", "Cap", ("Unisex", "Men")),
    _Category("Skirts", "Apparel", "Bottomwear", "Skirt", ("Women",)),
    _Category("Shirts", "Apparel", "Topwear", "Shirt", ("Men", "Women")),
)

_COLOURS: tuple[tuple[str, RGB], ...] = (
    ("Red", (200, 30, 40)),
    ("Navy Blue", (25, 40, 95)),
    ("Black", (30, 30, 30)),
    ("Green", (35, 135, 65)),
    ("Yellow", (240, 205, 45)),
    ("Pink", (240, 135, 175)),
)

# (label used in styles.csv names, internal pattern key)
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("Solid", "solid"),
    ("Striped", "stripes"),
    ("Polka Dot", "dots"),
)


# --------------------------------------------------------------------------- colours


def _clamp(value: float) -> int:
    return max(0, min(255, round(value)))


def _shade(colour: RGB, factor: float) -> RGB:
    r, g, b = colour
    return (_clamp(r * factor), _clamp(g * factor), _clamp(b * factor))


def _jitter_colour(colour: RGB, rng: random.Random, amount: int = 6) -> RGB:
    """Vary brightness by up to +-10% and each channel by up to +-``amount``."""
    factor = rng.uniform(0.9, 1.1)
    r, g, b = colour
    return (
        _clamp(r * factor + rng.randint(-amount, amount)),
        _clamp(g * factor + rng.randint(-amount, amount)),
        _clamp(b * factor + rng.randint(-amount, amount)),
    )


def _luminance(colour: RGB) -> float:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def _pattern_colour(base: RGB) -> RGB:
    """Return the stripe / dot colour: white on dark bases, darker on light ones."""
    if _luminance(base) < 140:
        return (245, 245, 245)
    return _shade(base, 0.45)


# --------------------------------------------------------------------------- patterns


def _pattern_layer(
    size: tuple[int, int], base: RGB, kind: str, rng: random.Random
) -> Image.Image:
    """Return a full-size RGB fabric layer; the silhouette mask clips it later."""
    layer = Image.new("RGB", size, base)
    if kind == "solid":
        return layer
    draw = ImageDraw.Draw(layer)
    width, height = size
    accent = _pattern_colour(base)
    unit = min(width, height)
    if kind == "stripes":
        period = max(4, round(unit * rng.uniform(0.055, 0.075)))
        thickness = max(2, round(period * rng.uniform(0.35, 0.5)))
        offset = rng.randrange(period)
        for y in range(-period + offset, height, period):
            draw.rectangle((0, y, width, y + thickness - 1), fill=accent)
    elif kind == "dots":
        period = max(6, round(unit * rng.uniform(0.075, 0.095)))
        radius = max(2, round(period * rng.uniform(0.2, 0.28)))
        offset = rng.randrange(period)
        for row, y in enumerate(range(-period + offset, height + period, period)):
            shift = period // 2 if row % 2 else 0
            for x in range(-period + offset + shift, width + period, period):
                draw.ellipse(
                    (x - radius, y - radius, x + radius, y + radius), fill=accent
                )
    else:  # pragma: no cover - guarded by _PATTERNS
        raise ValueError(f"unknown pattern {kind!r}")
    return layer


# --------------------------------------------------------------------------- shapes
# All shape coordinates live in a unit square (0..1, y pointing down) and are mapped
# to pixels by ``to_px``. ``mask`` receives the filled silhouette; ``details`` gets
# seams, collars, soles... drawn on top of the composited image.


def _silhouette(outline: list[Point]):
    """A shape drawn as one filled polygon; returns the outline for the details."""

    def draw(mask: ImageDraw.ImageDraw, to_px: ToPx, scale: float) -> list[Point]:
        mask.polygon(to_px(outline), fill=255)
        return outline

    return draw


def _shirt_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    width = max(2, round(3 * scale))
    collar_fill = (248, 248, 248)
    for collar in (
        [(0.41, 0.10), (0.50, 0.16), (0.46, 0.24), (0.36, 0.14)],
        [(0.59, 0.10), (0.50, 0.16), (0.54, 0.24), (0.64, 0.14)],
    ):
        draw.polygon(to_px(collar), fill=collar_fill, outline=dark, width=width)
    draw.line(to_px([(0.50, 0.18), (0.50, 0.92)]), fill=dark, width=width)
    radius = 4 * scale
    for y in (0.30, 0.45, 0.60, 0.75):
        ((cx, cy),) = to_px([(0.53, y)])
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            fill=collar_fill,
            outline=dark,
        )


def _trousers_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    width = max(2, round(3 * scale))
    draw.line(to_px([(0.305, 0.13), (0.695, 0.13)]), fill=dark, width=width)
    draw.line(to_px([(0.50, 0.13), (0.50, 0.30)]), fill=dark, width=width)


def _skirt_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    width = max(2, round(3 * scale))
    draw.line(to_px([(0.345, 0.25), (0.655, 0.25)]), fill=dark, width=width)
    for x_top, x_bottom in ((0.42, 0.36), (0.58, 0.64)):
        draw.line(
            to_px([(x_top, 0.26), (x_bottom, 0.80)]),
            fill=_shade(dark, 1.4),
            width=max(1, width // 2),
        )


def _dress_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    draw.line(
        to_px([(0.42, 0.42), (0.58, 0.42)]), fill=dark, width=max(2, round(4 * scale))
    )


_SHOE_SOLE = (
    (0.07, 0.63),
    (0.95, 0.63),
    (0.95, 0.68),
    (0.92, 0.72),
    (0.08, 0.72),
    (0.07, 0.68),
)


def _shoe(mask: ImageDraw.ImageDraw, to_px: ToPx, scale: float) -> list[Point]:
    upper = [
        (0.10, 0.64), (0.09, 0.38), (0.14, 0.32), (0.27, 0.30), (0.36, 0.36),
        (0.46, 0.39), (0.66, 0.45), (0.84, 0.51), (0.92, 0.57), (0.93, 0.64),
    ]  # fmt: skip
    mask.polygon(to_px(upper), fill=255)
    mask.polygon(to_px(_SHOE_SOLE), fill=255)
    return upper


def _shoe_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    width = max(2, round(3 * scale))
    draw.polygon(
        to_px(_SHOE_SOLE), fill=(238, 238, 238), outline=(120, 120, 120), width=width
    )
    lace = (245, 245, 245) if _luminance(dark) < 140 else (40, 40, 40)
    for i in range(4):
        x = 0.42 + i * 0.06
        y = 0.39 + i * 0.018
        draw.line(to_px([(x, y - 0.02), (x + 0.05, y + 0.04)]), fill=lace, width=width)
    draw.line(to_px([(0.14, 0.34), (0.30, 0.34)]), fill=dark, width=width)


def _handbag(mask: ImageDraw.ImageDraw, to_px: ToPx, scale: float) -> list[Point]:
    body = [(0.20, 0.40), (0.80, 0.40), (0.87, 0.88), (0.13, 0.88)]
    mask.polygon(to_px(body), fill=255)
    return body


def _handbag_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    width = max(2, round(3 * scale))
    (x0, y0), (x1, y1) = to_px([(0.31, 0.14), (0.69, 0.66)])
    draw.arc(
        (x0, y0, x1, y1), start=180, end=360, fill=dark, width=max(3, round(9 * scale))
    )
    draw.line(to_px([(0.19, 0.50), (0.81, 0.50)]), fill=dark, width=width)
    (x0, y0), (x1, y1) = to_px([(0.46, 0.47), (0.54, 0.56)])
    draw.rectangle(
        (x0, y0, x1, y1),
        fill=(212, 175, 55),
        outline=(120, 95, 20),
        width=max(1, width // 2),
    )


def _cap(mask: ImageDraw.ImageDraw, to_px: ToPx, scale: float) -> list[Point]:
    (x0, y0), (x1, y1) = to_px([(0.06, 0.24), (0.76, 1.10)])
    mask.chord((x0, y0, x1, y1), start=180, end=360, fill=255)
    brim = [(0.56, 0.62), (0.82, 0.62), (0.96, 0.67), (0.97, 0.72), (0.60, 0.72)]
    mask.polygon(to_px(brim), fill=255)
    return []


def _cap_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    width = max(2, round(3 * scale))
    thin = max(1, width // 2)
    (x0, y0), (x1, y1) = to_px([(0.06, 0.24), (0.76, 1.10)])
    draw.arc((x0, y0, x1, y1), start=180, end=360, fill=dark, width=thin)
    draw.line(to_px([(0.06, 0.67), (0.76, 0.67)]), fill=dark, width=width)
    draw.line(to_px([(0.62, 0.68), (0.96, 0.69)]), fill=dark, width=thin)
    (x0, y0), (x1, y1) = to_px([(0.24, 0.24), (0.58, 1.10)])
    draw.arc((x0, y0, x1, y1), start=180, end=270, fill=dark, width=thin)
    ((cx, top),) = to_px([(0.41, 0.24)])
    ((_, seam_bottom),) = to_px([(0.41, 0.67)])
    draw.line((cx, top, cx, seam_bottom), fill=dark, width=thin)
    radius = 6 * scale
    draw.ellipse((cx - radius, top - radius, cx + radius, top + radius), fill=dark)


def _tshirt_details(draw: ImageDraw.ImageDraw, to_px: ToPx, scale: float, dark: RGB) -> None:
    width = max(2, round(3 * scale))
    draw.line(
        to_px([(0.40, 0.12), (0.44, 0.18), (0.50, 0.20), (0.56, 0.18), (0.60, 0.12)]),
        fill=dark,
        width=width,
    )


# Silhouettes that are one polygon each.
_TSHIRT_OUTLINE = [
    (0.40, 0.12), (0.25, 0.16), (0.07, 0.36), (0.18, 0.47), (0.28, 0.40), (0.28, 0.92), (0.72, 0.92), (0.72, 0.40),
    (0.82, 0.47), (0.93, 0.36), (0.75, 0.16), (0.60, 0.12), (0.56, 0.18), (0.50, 0.20), (0.44, 0.18),
]  # fmt: skip
_SHIRT_OUTLINE = [
    (0.41, 0.10), (0.27, 0.14), (0.20, 0.30), (0.09, 0.86), (0.20, 0.88), (0.29, 0.42), (0.29, 0.92), (0.71, 0.92),
    (0.71, 0.42), (0.80, 0.88), (0.91, 0.86), (0.80, 0.30), (0.73, 0.14), (0.59, 0.10), (0.50, 0.16),
]  # fmt: skip
_TROUSERS_OUTLINE = [
    (0.30, 0.06), (0.70, 0.06), (0.76, 0.94), (0.55, 0.94), (0.50, 0.36), (0.45, 0.94), (0.24, 0.94),
]  # fmt: skip
_SKIRT_OUTLINE = [
    (0.34, 0.18), (0.66, 0.18), (0.84, 0.78), (0.67, 0.82), (0.50, 0.83), (0.33, 0.82), (0.16, 0.78),
]  # fmt: skip
_DRESS_OUTLINE = [
    (0.39, 0.05), (0.43, 0.05), (0.45, 0.19), (0.55, 0.19), (0.57, 0.05), (0.61, 0.05), (0.64, 0.26), (0.58, 0.42),
    (0.84, 0.92), (0.67, 0.95), (0.50, 0.96), (0.33, 0.95), (0.16, 0.92), (0.42, 0.42), (0.36, 0.26),
]  # fmt: skip


_Shape = Callable[[ImageDraw.ImageDraw, ToPx, float], list[Point]]
_Details = Callable[[ImageDraw.ImageDraw, ToPx, float, RGB], None]

_SHAPES: dict[str, tuple[_Shape, _Details]] = {
    "Tshirts": (_silhouette(_TSHIRT_OUTLINE), _tshirt_details),
    "Trousers": (_silhouette(_TROUSERS_OUTLINE), _trousers_details),
    "Dresses": (_silhouette(_DRESS_OUTLINE), _dress_details),
    "Casual Shoes": (_shoe, _shoe_details),
    "Handbags": (_handbag, _handbag_details),
    "Caps": (_cap, _cap_details),
    "Skirts": (_silhouette(_SKIRT_OUTLINE), _skirt_details),
    "Shirts": (_silhouette(_SHIRT_OUTLINE), _shirt_details),
}


# --------------------------------------------------------------------------- rendering


def _image_size(image_id: int) -> tuple[int, int]:
    """Mostly 300x300, with some portrait and landscape images to exercise padding."""
    if image_id % 8 == 3:
        return (240, 320)
    if image_id % 8 == 6:
        return (320, 240)
    return (300, 300)


def _render(
    category: _Category,
    colour: RGB,
    pattern: str,
    size: tuple[int, int],
    rng: random.Random,
) -> Image.Image:
    """Draw one product image (RGB, final size) deterministically from ``rng``."""
    ss = _SUPERSAMPLE
    width, height = size[0] * ss, size[1] * ss
    box = min(width, height) * rng.uniform(0.80, 0.92)
    cx = width / 2 + rng.uniform(-0.04, 0.04) * width
    cy = height / 2 + rng.uniform(-0.04, 0.04) * height
    stretch = rng.uniform(0.94, 1.06)  # slight aspect jitter
    scale = box / (300 * ss) * ss  # line widths are tuned for a 300 px image

    def to_px(points: Sequence[Point]) -> list[Point]:
        return [
            (cx + (u - 0.5) * box * stretch, cy + (v - 0.5) * box / stretch)
            for u, v in points
        ]

    shape, details = _SHAPES[category.article_type]
    base = _jitter_colour(colour, rng)
    dark = _shade(base, 0.55) if _luminance(base) > 60 else (90, 90, 90)

    mask = Image.new("L", (width, height), 0)
    outline = shape(ImageDraw.Draw(mask), to_px, scale)

    # Soft floor shadow under the silhouette, like a studio product photo.
    image = Image.new("RGB", (width, height), _BACKGROUND)
    left, _top, right, bottom = mask.getbbox() or (0, 0, width, height)
    inset = (right - left) * 0.08
    ImageDraw.Draw(image).ellipse(
        (left + inset, bottom - 8 * scale, right - inset, bottom + 8 * scale),
        fill=_SHADOW,
    )
    image = image.filter(ImageFilter.GaussianBlur(6 * scale))

    layer = _pattern_layer((width, height), base, pattern, rng)
    image.paste(layer, (0, 0), mask)
    draw = ImageDraw.Draw(image)
    if len(outline) >= 3:
        draw.polygon(to_px(outline), outline=dark, width=max(2, round(2 * scale)))
    details(draw, to_px, scale, dark)
    return image.resize(size, Image.Resampling.LANCZOS)


def _encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


# --------------------------------------------------------------------------- catalogue


def _catalogue_rows(seed: int) -> list[tuple[dict[str, str], _Category, RGB, str]]:
    """All catalogue entries in id order, ids starting at 1.

    The pattern is the outermost loop and the category the innermost, so the first
    few ids already cover every category.
    """
    rows = []
    combos = itertools.product(_PATTERNS, _COLOURS, _CATEGORIES)
    for image_id, ((pattern_label, pattern), (colour_name, rgb), category) in enumerate(
        combos, start=1
    ):
        rng = random.Random(seed * 100_003 + image_id)
        gender = rng.choice(category.genders)
        row = {
            "id": str(image_id),
            "gender": gender,
            "masterCategory": category.master,
            "subCategory": category.sub,
            "articleType": category.article_type,
            "baseColour": colour_name,
            "season": rng.choice(_SEASONS),
            "year": str(rng.randint(2011, 2018)),
            "usage": "Casual",
            "productDisplayName": (
                f"{gender} {colour_name} {pattern_label} {category.noun}"
            ),
        }
        rows.append((row, category, rgb, pattern))
    return rows


def _existing_count(out: Path) -> int | None:
    """Return the image count of a complete, current catalogue in ``out``, else None."""
    marker = out / MARKER_NAME
    styles = out / "styles.csv"
    try:
        if marker.read_text(encoding="utf-8").strip() != DEMO_VERSION:
            return None
        with styles.open(newline="", encoding="utf-8") as handle:
            ids = [row["id"] for row in csv.DictReader(handle)]
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return None
    if not ids or not all((out / f"{image_id}.jpg").is_file() for image_id in ids):
        return None
    return len(ids)


def generate_demo_catalogue(out_dir: str | os.PathLike[str], *, seed: int = 7) -> int:
    """Write the demo catalogue into ``out_dir`` and return the number of images.

    Images are written as ``out_dir/<id>.jpg`` (ids 1..N, JPEG quality 90, mostly
    300x300 with some 240x320 and 320x240), the metadata as ``out_dir/styles.csv`` in
    the Kaggle "Fashion Product Images" format. The same ``seed`` always yields
    byte-identical files.

    The call is idempotent: if ``out_dir`` already holds a complete catalogue whose
    ``.demo-version`` marker matches :data:`DEMO_VERSION`, nothing is written and the
    existing image count is returned. The marker is removed before and written after
    everything else, so an interrupted generation is redone on the next call. Note
    that the marker records the generator version, not the seed: to switch seeds use
    a fresh folder or delete the marker.
    """
    out = Path(out_dir)
    existing = _existing_count(out)
    if existing is not None:
        logger.debug("Demo catalogue already present in %s (%d images)", out, existing)
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    # Several gunicorn workers start at once; one generates, the others wait
    # a few seconds and find it complete, instead of rewriting every file.
    with FileLock(str(out.parent / f".{out.name}.lock")):
        existing = _existing_count(out)
        if existing is not None:
            return existing
        return _generate(out, seed)


def _generate(out: Path, seed: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER_NAME
    marker.unlink(missing_ok=True)

    rows = _catalogue_rows(seed)
    for row, category, rgb, pattern in rows:
        image_id = int(row["id"])
        # Separate stream from the metadata one so both stay stable if either changes.
        rng = random.Random(seed * 1_000_003 + image_id * 7919 + 1)
        image = _render(category, rgb, pattern, _image_size(image_id), rng)
        atomic_write_bytes(out / f"{image_id}.jpg", _encode_jpeg(image))

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=STYLES_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row for row, *_ in rows)
    atomic_write_bytes(out / "styles.csv", buffer.getvalue().encode("utf-8"))

    atomic_write_bytes(marker, DEMO_VERSION.encode("utf-8"))
    logger.info("Generated demo catalogue: %d images in %s", len(rows), out)
    return len(rows)
