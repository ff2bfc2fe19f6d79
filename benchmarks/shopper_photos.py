"""Seeded shopper-style photos made from catalogue packshots, with the product's true box.

A packshot's product is keyed out of its white background (a soft mask
with its holes filled, so a white shirt stays opaque), turned a little,
scaled so that its longer relative side covers 45 to 75% of the frame and
pasted at a random place on a busy background: a gradient, coloured noise,
stripes, or clutter of drawn shapes and heavily blurred other catalogue
photos (blurred past recognition, so no clutter is a right answer). The
frame gets a light and colour cast and is saved as a JPEG of quality 60 to
95; a quarter of the frames are not square.

``make_shopper_photo(rng, packshot, clutter)`` returns the JPEG bytes, the
true box as fractions ``(x, y, w, h)`` of the photo and the background's kind.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FRAMES = ((448, 448), (480, 640), (640, 480), (400, 400))
FRAME_WEIGHTS = (0.55, 0.15, 0.15, 0.15)
BACKGROUNDS = ("gradient", "noise", "stripes", "clutter")
_KEY_TOLERANCE = 18  # channel difference from white that counts as product


def cut_out(packshot: np.ndarray) -> Image.Image:
    """The product of a white-background packshot as an RGBA image cropped to it (soft edge, no holes)."""
    rgb = Image.fromarray(packshot)
    distance = 255 - packshot.min(axis=2).astype(np.int16)
    solid = Image.fromarray(np.where(distance > _KEY_TOLERANCE, 0, 255).astype(np.uint8), "L")
    # the background is what white reaches from outside: fill it from a padded border
    padded = Image.new("L", (solid.width + 2, solid.height + 2), 255)
    padded.paste(solid, (1, 1))
    ImageDraw.floodfill(padded, (0, 0), 128)
    outside = np.asarray(padded)[1:-1, 1:-1] == 128
    alpha = Image.fromarray(np.where(outside, 0, 255).astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(1.2))
    cut = rgb.convert("RGBA")
    cut.putalpha(alpha)
    box = alpha.point(lambda v: 255 if v > 128 else 0).getbbox()
    return cut.crop(box) if box else cut


def _random_colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _gradient(rng, size) -> Image.Image:
    width, height = size
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xx * np.cos(angle) + yy * np.sin(angle)) / (abs(width * np.cos(angle)) + abs(height * np.sin(angle)) + 1)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    a, b = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))


def _noise(rng, size) -> Image.Image:
    width, height = size
    grain = int(rng.choice([4, 8, 16, 32]))
    small = rng.integers(0, 256, (max(2, height // grain), max(2, width // grain), 3), dtype=np.uint8)
    base = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    fine = rng.normal(0, 18, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(base, np.float32) + fine, 0, 255).astype(np.uint8))


def _stripes(rng, size) -> Image.Image:
    width, height = size
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(12, 60)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = ((xx * np.cos(angle) + yy * np.sin(angle)) / period) % 1.0 < 0.5
    a, b = np.array(_random_colour(rng), np.uint8), np.array(_random_colour(rng), np.uint8)
    return Image.fromarray(np.where(phase[..., None], a, b)).filter(ImageFilter.GaussianBlur(0.8))


def _clutter(rng, size, clutter: list[np.ndarray]) -> Image.Image:
    width, height = size
    canvas = _gradient(rng, size)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(8, 20))):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * width, y0 + rng.uniform(0.05, 0.5) * height
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=_random_colour(rng))
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=_random_colour(rng))
        else:
            points = [(rng.uniform(x0, x1), rng.uniform(y0, y1)) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(points, fill=_random_colour(rng))
    for _ in range(int(rng.integers(1, 4)) if clutter else 0):
        photo = Image.fromarray(clutter[int(rng.integers(len(clutter)))])
        side = int(rng.uniform(0.3, 0.7) * min(size))
        photo = photo.resize((side, side)).filter(ImageFilter.GaussianBlur(rng.uniform(8, 14)))
        canvas.paste(photo, (int(rng.uniform(-0.2, 0.9) * width), int(rng.uniform(-0.2, 0.9) * height)))
    return canvas.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 4)))


def background(rng, size: tuple[int, int], clutter: list[np.ndarray]) -> tuple[Image.Image, str]:
    """A random busy background of ``size`` (width, height) and its kind; ``clutter``: photos to blur into it."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if kind == "gradient":
        return _gradient(rng, size), kind
    if kind == "noise":
        return _noise(rng, size), kind
    if kind == "stripes":
        return _stripes(rng, size), kind
    return _clutter(rng, size, clutter), kind


def _jitter(rng, frame: Image.Image) -> Image.Image:
    arr = np.asarray(frame, np.float32)
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, 3)
    contrast = rng.uniform(0.85, 1.15)
    mean = arr.mean()
    arr = (arr - mean) * contrast + mean
    arr = arr * gain + rng.normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_shopper_photo(
    rng: np.random.Generator, packshot: np.ndarray, clutter: list[np.ndarray]
) -> tuple[bytes, tuple[float, float, float, float], str]:
    """A shopper-style JPEG of ``packshot``'s product, its true box (fractions x, y, w, h) and the background kind."""
    size = FRAMES[int(rng.choice(len(FRAMES), p=FRAME_WEIGHTS))]
    width, height = size
    frame, kind = background(rng, size, clutter)
    frame = frame.convert("RGB")
    product = cut_out(packshot).rotate(rng.uniform(-10, 10), Image.Resampling.BICUBIC, expand=True)
    cover = rng.uniform(0.45, 0.75)
    scale = cover / max(product.width / width, product.height / height)
    product = product.resize(
        (max(8, round(product.width * scale)), max(8, round(product.height * scale))), Image.Resampling.LANCZOS
    )
    left = int(rng.integers(0, max(1, width - product.width + 1)))
    top = int(rng.integers(0, max(1, height - product.height + 1)))
    frame.paste(product, (left, top), product)
    alpha = np.zeros((height, width), np.uint8)
    alpha[top : top + product.height, left : left + product.width] = np.asarray(product.getchannel("A"))
    x0, y0, x1, y1 = Image.fromarray(np.where(alpha > 128, 255, 0).astype(np.uint8)).getbbox()
    out = io.BytesIO()
    _jitter(rng, frame).save(out, "JPEG", quality=int(rng.integers(60, 96)))
    return out.getvalue(), (x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height), kind
