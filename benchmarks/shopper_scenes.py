"""Seeded shopper photos of catalogue products, for measuring search quality on tuned-on and held-back scenes.

Catalogue tuning (``indexer.scenes``) learns from views of the shop's
products on four families of synthetic backgrounds. A benchmark that only
showed those families would measure how well tuning memorised them, so the
photos here come from two groups:

* tuned-on families, the ``indexer.scenes.TUNING_FAMILIES`` ("wall", "noise",
  "stripes", "clutter"), drawn with ``indexer.scenes`` itself;
* held-back families, written only in this module and unlike the tuning
  families: "fabric" (the product laid on a patterned cloth), "wood" (on
  boards, a floor or tiles), "people" (worn or held by a drawn person) and
  "room" (somewhere in a drawn room).

HELD-BACK FAMILIES MUST NEVER BE USED TO TUNE ANYTHING: not imported by
``indexer``, not used to pick a tuning setting. They are what tells whether
tuning learned shopper photos or only its own backgrounds.

Every photo, whatever its family, then gets the faults of a phone snapshot,
each drawn at random so that several may combine: low light, a warm, cool or
green colour cast, gaussian or motion blur, sensor noise; the product covers
25 to 75% of the frame's longer side, is turned by up to 20 degrees, and the
frame is 448x448, 480x640, 640x480 or 400x400, saved as a JPEG of quality 40
to 60.

``make_shopper_photo(rng, packshot, family, clutter)`` returns the JPEG bytes
and the product's true box: fractions (x, y, w, h) of the photo, the bounding
box of the product's opaque pixels after turning, clipped to the frame.
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from indexer import scenes

FRAMES = ((448, 448), (480, 640), (640, 480), (400, 400))  # (width, height)
FRAME_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
HELD_BACK = ("fabric", "wood", "people", "room")
FAMILIES: dict[str, dict[str, bool]] = {
    **{name: {"tuned_on": True} for name in scenes.TUNING_FAMILIES},
    **{name: {"tuned_on": False} for name in HELD_BACK},
}
"""Every family of shopper photo; ``tuned_on`` says whether catalogue tuning saw its kind of scene."""

Box = tuple[float, float, float, float]
Frame = tuple[int, int]
Focus = tuple[float, float, float, float]

SKIN = ((255, 224, 196), (241, 194, 157), (234, 192, 134), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 40))
HAIR = ((20, 16, 14), (45, 30, 22), (85, 55, 35), (130, 90, 55), (200, 165, 110), (150, 150, 150))
WOODS = ((222, 184, 135), (193, 140, 90), (160, 105, 60), (120, 75, 40), (90, 55, 35), (205, 170, 125), (170, 130, 95))


def _colour(rng: np.random.Generator, saturation: float = 0.7, lightness: tuple[float, float] = (0.15, 1.0)) -> tuple:
    """A random colour, muted more often than loud; ``saturation`` is its most, ``lightness`` its range."""
    hue, sat, value = rng.random(), saturation * rng.random() ** 1.5, rng.uniform(*lightness)
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, value))


def _jitter(rng: np.random.Generator, colour: Sequence[float], spread: float = 12) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.normal(0, spread), 0, 255)) for c in colour)


def _shade(colour: Sequence[float], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _smooth_field(rng: np.random.Generator, size: Frame, cells: int, amplitude: float) -> np.ndarray:
    """A smooth random field (height x width) of about ``cells`` blobs across, values in +-``amplitude``."""
    width, height = size
    grid = rng.uniform(-amplitude, amplitude, (cells + 2, cells + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((width, height), Image.Resampling.BICUBIC))


_CIRCLE = np.exp(1j * np.linspace(0, 2 * math.pi, 18, endpoint=False))
_DROP = np.linspace(0, 2 * math.pi, 40)


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, angle: float) -> list:
    x, y = rx * _CIRCLE.real, ry * _CIRCLE.imag
    ca, sa = math.cos(angle), math.sin(angle)
    return list(zip((cx + x * ca - y * sa).tolist(), (cy + x * sa + y * ca).tolist()))


# --- fabric -------------------------------------------------------------------------------------------------------


def _gingham(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Checks: a light ground crossed by equal bands of one colour, darker where bands cross (gingham)."""
    width, height = size
    period = rng.uniform(12, 60)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ground = np.array(_colour(rng, 0.15, (0.85, 1.0)), np.float32)
    ink = np.array(_colour(rng, 0.9, (0.25, 0.8)), np.float32)
    across = ((xs / period) % 1 < 0.5).astype(np.float32)
    down = ((ys / period) % 1 < 0.5).astype(np.float32)
    cover = (0.5 * (across + down))[..., None]  # 0 ground, 0.5 one band, 1 both
    return Image.fromarray((ground + (ink - ground) * cover).astype(np.uint8))


def _florals(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Florals: flowers of petal ellipses round a contrasting heart, with leaves, scattered over a ground."""
    width, height = size
    frame = Image.new("RGB", size, _colour(rng, 0.5, (0.3, 1.0)))
    draw = ImageDraw.Draw(frame)
    scale = rng.uniform(12, 40)
    petal, heart, leaf = _colour(rng, 0.9, (0.5, 1.0)), _colour(rng, 0.9, (0.6, 1.0)), _colour(rng, 0.6, (0.2, 0.6))
    for _ in range(int(width * height / (scale * scale * 5))):
        cx, cy = rng.uniform(-scale, width + scale), rng.uniform(-scale, height + scale)
        r = scale * rng.uniform(0.6, 1.2)
        turn = rng.uniform(0, 2 * math.pi)
        for k in range(2):  # leaves behind the flower
            a = turn + k * math.pi + rng.normal(0, 0.3)
            lx, ly = cx + 1.4 * r * math.cos(a), cy + 1.4 * r * math.sin(a)
            draw.polygon(_ellipse_points(lx, ly, r * 0.7, r * 0.3, a), fill=_jitter(rng, leaf, 8))
        petals = int(rng.integers(5, 9))
        colour = _jitter(rng, petal, 15)
        for k in range(petals):
            a = turn + 2 * math.pi * k / petals
            px, py = cx + 0.6 * r * math.cos(a), cy + 0.6 * r * math.sin(a)
            draw.polygon(_ellipse_points(px, py, 0.6 * r, 0.3 * r, a), fill=colour, outline=_shade(colour, 0.8))
        draw.ellipse((cx - 0.25 * r, cy - 0.25 * r, cx + 0.25 * r, cy + 0.25 * r), fill=heart)
    return frame


def _dots(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Polka dots: round dots on a staggered grid."""
    width, height = size
    frame = Image.new("RGB", size, _colour(rng, 0.8, (0.2, 1.0)))
    draw = ImageDraw.Draw(frame)
    step = rng.uniform(14, 60)
    radius = step * rng.uniform(0.15, 0.35)
    ink = _colour(rng, 0.6, (0.1, 1.0))
    for row, y in enumerate(np.arange(-step, height + step, step * 0.87)):
        for x in np.arange(-step + (row % 2) * step / 2, width + step, step):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=ink)
    return frame


def _teardrop(cx: float, cy: float, length: float, angle: float, bend: float) -> list:
    """A paisley outline: a round head tapering to a curled tail."""
    t = _DROP
    x = np.cos(t) * length * 0.5
    y = np.sin(t) * np.sin(t / 2) ** 1.6 * length * 0.32
    y = y + bend * (x / length + 0.5) ** 2 * length  # curl the tail
    ca, sa = math.cos(angle), math.sin(angle)
    return list(zip((cx + x * ca - y * sa).tolist(), (cy + x * sa + y * ca).tolist()))


def _paisley(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Paisley-like: curled teardrop blobs nested in two or three colours, with dots between them."""
    width, height = size
    frame = Image.new("RGB", size, _colour(rng, 0.8, (0.15, 0.7)))
    draw = ImageDraw.Draw(frame)
    length = rng.uniform(30, 110)
    colours = [_colour(rng, 0.9, (0.3, 1.0)) for _ in range(3)]
    for _ in range(int(width * height / (length * length * 0.6))):
        cx, cy = rng.uniform(-length, width + length), rng.uniform(-length, height + length)
        angle, bend = rng.uniform(0, 2 * math.pi), rng.uniform(-0.5, 0.5)
        for depth, colour in enumerate(colours):
            draw.polygon(_teardrop(cx, cy, length * (1 - 0.3 * depth), angle, bend), fill=colour)
        dot = length * 0.06
        for _ in range(6):
            dx, dy = rng.uniform(-length, length, 2)
            draw.ellipse((cx + dx - dot, cy + dy - dot, cx + dx + dot, cy + dy + dot), fill=colours[1])
    return frame


def _fabric(rng: np.random.Generator, size: Frame) -> Image.Image:
    """A patterned cloth the product lies on: gingham, florals, polka dots or paisley, with soft folds."""
    pattern = (_gingham, _florals, _dots, _paisley)[int(rng.integers(4))](rng, size)
    width, height = size
    # folds: a few long soft waves of light and shade, bent by a smooth field
    angle = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs * math.cos(angle) + ys * math.sin(angle) + _smooth_field(rng, size, 3, 40)
    folds = 1 + rng.uniform(0.06, 0.22) * np.sin(along / rng.uniform(30, 90))
    weave = 1 + 0.025 * rng.standard_normal((height, width), dtype=np.float32)  # the cloth's fine texture
    arr = np.asarray(pattern, np.float32) * (folds * weave)[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)


# --- wood ---------------------------------------------------------------------------------------------------------


def _grain(rng: np.random.Generator, along: np.ndarray, across: np.ndarray, board: np.ndarray) -> np.ndarray:
    """Wood grain in [0, 1]: rings along the board, wavered by a smooth field and shifted per board."""
    period = rng.uniform(4, 14)
    phase = rng.uniform(0, 100, int(board.max()) + 1).astype(np.float32)[board]
    waver = _smooth_field(rng, (along.shape[1], along.shape[0]), 6, rng.uniform(3, 12))
    rings = np.sin((across + waver + 0.02 * along + phase) * (2 * math.pi / period))
    return (0.5 + 0.5 * rings) ** rng.uniform(1.5, 4)


def _boards(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Planks or floor boards: rows of boards with grain, staggered seams and a tone per board."""
    width, height = size
    vertical = rng.random() < 0.35
    if vertical:  # wall cladding: draw it lying down, then stand it up
        width, height = height, width
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    board_h = rng.uniform(24, 90)
    row = (ys / board_h).astype(np.intp)
    length = rng.uniform(120, 600)
    offset = rng.uniform(0, length, row.max() + 1).astype(np.float32)[row]
    shifted = xs + offset
    segment = (shifted / length).astype(np.intp)
    board = row * 64 + segment % 64
    base = np.array(WOODS[int(rng.integers(len(WOODS)))], np.float32)
    tone = rng.uniform(0.75, 1.15, board.max() + 1).astype(np.float32)[board]
    grain = _grain(rng, xs, ys, board)
    arr = base * (tone * (1 - 0.35 * grain))[..., None]
    seam = ((ys % board_h) < 1.5) | ((shifted % length) < 1.5)
    arr[seam] *= 0.45
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return image.transpose(Image.Transpose.ROTATE_90) if vertical else image


def _parquet(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Parquet: square blocks of a few strips each, the strips' direction alternating block by block."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    block = rng.uniform(40, 110)
    strips = int(rng.integers(2, 5))
    bx, by = (xs / block).astype(np.intp), (ys / block).astype(np.intp)
    flip = (bx + by) % 2 == 1
    along = np.where(flip, ys, xs)
    across = np.where(flip, xs, ys)
    strip = (across / (block / strips)).astype(np.intp)
    board = (bx * 97 + by * 31) * 8 + strip % 8
    board -= board.min()
    base = np.array(WOODS[int(rng.integers(len(WOODS)))], np.float32)
    tone = rng.uniform(0.75, 1.2, board.max() + 1).astype(np.float32)[board]
    arr = base * (tone * (1 - 0.3 * _grain(rng, along, across, board)))[..., None]
    seam = ((across % (block / strips)) < 1.2) | ((xs % block) < 1.2) | ((ys % block) < 1.2)
    arr[seam] *= 0.5
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _tiles(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Tiles: square tiles, straight or on the diagonal, each a slightly different shade, maybe marbled."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.4:
        xs, ys = (xs + ys) / math.sqrt(2), (xs - ys) / math.sqrt(2)
    tile = rng.uniform(40, 140)
    tx, ty = np.floor(xs / tile).astype(np.intp), np.floor(ys / tile).astype(np.intp)
    cell = (tx - tx.min()) * 1000 + (ty - ty.min())
    base = np.array(_colour(rng, 0.35, (0.35, 1.0)), np.float32)
    tone = rng.uniform(0.9, 1.08, cell.max() + 1).astype(np.float32)[cell]
    arr = base * tone[..., None]
    if rng.random() < 0.5:  # marble veins
        turbulence = _smooth_field(rng, size, 5, 25) + _smooth_field(rng, size, 14, 6)
        veins = np.abs(np.sin((xs + ys + turbulence) / rng.uniform(20, 60)))
        arr *= (1 - 0.3 * (veins < 0.08))[..., None]
    grout = ((xs % tile) < 2.5) | ((ys % tile) < 2.5)
    arr[grout] = _colour(rng, 0.1, (0.4, 0.95))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _perspective(frame_points: Sequence, source_points: Sequence) -> tuple:
    """Coefficients for ``Image.transform(PERSPECTIVE)`` mapping four frame points onto four source points."""
    rows, values = [], []
    for (x, y), (u, v) in zip(frame_points, source_points):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    return tuple(np.linalg.solve(np.array(rows, np.float64), np.array(values, np.float64)).tolist())


def _wood(rng: np.random.Generator, size: Frame) -> Image.Image:
    """Wooden boards, floor boards, parquet or tiles; half of them seen at a slant, like a floor."""
    width, height = size
    surface = (_boards, _boards, _parquet, _tiles)[int(rng.integers(4))]
    if rng.random() >= 0.5:
        return surface(rng, size)
    # a floor seen at a slant: draw a bigger floor, then look at it in perspective (the far edge shows more of it)
    big = surface(rng, (width * 2, height * 2))
    squeeze = rng.uniform(0.25, 0.4) * width * 2
    corners = ((0, 0), (width, 0), (width, height), (0, height))
    source = ((0, 0), (width * 2, 0), (width * 2 - squeeze, height * 2), (squeeze, height * 2))
    floor = big.transform(size, Image.Transform.PERSPECTIVE, _perspective(corners, source), Image.Resampling.BILINEAR)
    far = np.linspace(0.75, 1.0, height, dtype=np.float32)[:, None, None]  # the far end is dimmer
    return Image.fromarray((np.asarray(floor, np.float32) * far).astype(np.uint8))


# --- people -------------------------------------------------------------------------------------------------------


def _person(rng: np.random.Generator, draw: ImageDraw.ImageDraw, torso: Focus, reach: tuple | None = None) -> None:
    """A person drawn around ``torso`` (x0, y0, x1, y1): head, hair, neck, arms, hands and legs.

    ``reach``: a point one hand reaches out to, as if holding something there.
    """
    x0, y0, x1, y1 = torso
    tw, th = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    skin, hair = SKIN[int(rng.integers(len(SKIN)))], HAIR[int(rng.integers(len(HAIR)))]
    shirt, trousers = _colour(rng, 0.7, (0.15, 0.95)), _colour(rng, 0.5, (0.1, 0.6))
    limb = max(3, round(tw * 0.2))
    head_w, head_h = tw * 0.36, tw * 0.46
    head_top = y0 - tw * 0.12 - head_h
    # legs first: the torso covers their tops
    for side in (-1, 1):
        hip = (cx + side * tw * 0.22, y1 - th * 0.05)
        knee = (hip[0] + side * tw * rng.uniform(0, 0.1), hip[1] + th * 0.75)
        foot = (knee[0] + side * tw * rng.uniform(-0.05, 0.1), knee[1] + th * 0.75)
        draw.line([hip, knee, foot], fill=trousers, width=round(limb * 1.3), joint="curve")
        draw.ellipse(
            (foot[0] - limb, foot[1] - limb * 0.5, foot[0] + limb * 1.2, foot[1] + limb * 0.6), fill=(30, 30, 30)
        )
    draw.rounded_rectangle((x0, y0, x1, y1), radius=tw * 0.18, fill=shirt)
    draw.rectangle((cx - tw * 0.08, y0 - tw * 0.14, cx + tw * 0.08, y0 + 2), fill=_shade(skin, 0.9))  # neck
    if rng.random() < 0.4:  # long hair falls behind the head
        draw.rounded_rectangle(
            (cx - head_w * 0.62, head_top, cx + head_w * 0.62, head_top + head_h * 1.7), radius=head_w * 0.4, fill=hair
        )
    draw.ellipse((cx - head_w / 2, head_top, cx + head_w / 2, head_top + head_h), fill=skin)
    draw.chord(
        (cx - head_w * 0.55, head_top - head_h * 0.08, cx + head_w * 0.55, head_top + head_h * 0.7), 180, 360, fill=hair
    )
    for side in (-1, 1):
        shoulder = (cx + side * tw * 0.45, y0 + th * 0.08)
        if reach is not None and (reach[0] - cx) * side > 0:
            elbow = ((shoulder[0] + reach[0]) / 2, (shoulder[1] + reach[1]) / 2 + th * 0.15)
            hand = reach
        else:
            elbow = (shoulder[0] + side * tw * rng.uniform(0.05, 0.2), shoulder[1] + th * 0.45)
            hand = (elbow[0] + side * tw * rng.uniform(-0.1, 0.15), elbow[1] + th * 0.45)
        draw.line([shoulder, elbow], fill=shirt, width=limb, joint="curve")
        draw.line([elbow, hand], fill=skin, width=round(limb * 0.8), joint="curve")
        draw.ellipse(
            (hand[0] - limb * 0.6, hand[1] - limb * 0.6, hand[0] + limb * 0.6, hand[1] + limb * 0.6), fill=skin
        )


def _bokeh(rng: np.random.Generator, size: Frame) -> Image.Image:
    """An out-of-focus backdrop: a dim gradient with blurred discs of light, as behind people in a street or party."""
    width, height = size
    top, bottom = np.array(_colour(rng, 0.5, (0.1, 0.6))), np.array(_colour(rng, 0.5, (0.1, 0.6)))
    ramp = np.linspace(0, 1, height)[:, None, None]
    frame = Image.fromarray(np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3)).astype(np.uint8))
    small = (max(1, width // 4), max(1, height // 4))  # drawn and blurred small: the discs are soft anyway
    lights = Image.new("RGB", small, (0, 0, 0))
    draw = ImageDraw.Draw(lights)
    for _ in range(int(rng.integers(10, 40))):
        r = rng.uniform(0.02, 0.08) * max(small)
        x, y = rng.uniform(0, small[0]), rng.uniform(0, small[1])
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rng, 0.6, (0.3, 0.8)))
    lights = lights.filter(ImageFilter.GaussianBlur(max(small) * 0.01)).resize(size, Image.Resampling.BILINEAR)
    return Image.fromarray(np.clip(np.asarray(frame, np.int16) + np.asarray(lights, np.int16), 0, 255).astype(np.uint8))


def _people(rng: np.random.Generator, size: Frame, focus: Focus) -> Image.Image:
    """Person-like shapes around the product: worn over the torso, or held in a hand beside the body.

    Sometimes a second person stands partly in frame at an edge. The backdrop
    is plain or an out-of-focus street; the product is pasted on top later.
    """
    width, height = size
    backdrop = _bokeh(rng, size) if rng.random() < 0.6 else Image.new("RGB", size, _colour(rng, 0.3, (0.5, 1.0)))
    draw = ImageDraw.Draw(backdrop)
    fx0, fy0, fx1, fy1 = focus
    fw, fh = fx1 - fx0, fy1 - fy0
    if rng.random() < 0.4:  # someone else, partly cut by an edge, behind
        tw = rng.uniform(0.2, 0.4) * width
        left = rng.choice([-0.6 * tw, width - 0.4 * tw])
        top = rng.uniform(0.2, 0.5) * height
        _person(rng, draw, (left, top, left + tw, top + tw * 1.3))
    if rng.random() < 0.6:  # worn: a torso behind the product
        tw, th = max(fw, fh * 0.6) * rng.uniform(1.0, 1.25), fh * rng.uniform(0.9, 1.15)
        cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
        _person(rng, draw, (cx - tw / 2, cy - th / 2, cx + tw / 2, cy + th / 2))
    else:  # held: a person beside the product, a hand reaching its near edge
        tw = rng.uniform(0.2, 0.35) * width
        th = tw * 1.3
        side = 1 if (fx0 + fx1) / 2 > width / 2 else -1
        cx = (fx0 - tw * 0.9) if side > 0 else (fx1 + tw * 0.9)
        top = np.clip((fy0 + fy1) / 2 - th * 0.4, 0.05 * height, 0.7 * height)
        hand = (fx0 + fw * 0.1, (fy0 + fy1) / 2) if side > 0 else (fx1 - fw * 0.1, (fy0 + fy1) / 2)
        _person(rng, draw, (cx - tw / 2, top, cx + tw / 2, top + th), reach=hand)
    return backdrop


# --- room ---------------------------------------------------------------------------------------------------------


def _box3d(draw: ImageDraw.ImageDraw, front: Focus, depth: tuple[float, float], colour: tuple) -> None:
    """A box seen from the front and a little above one side: front face, top face and side face."""
    x0, y0, x1, y1 = front
    dx, dy = depth
    draw.polygon([(x0, y0), (x1, y0), (x1 + dx, y0 - dy), (x0 + dx, y0 - dy)], fill=_shade(colour, 1.15))
    if dx > 0:
        draw.polygon([(x1, y0), (x1 + dx, y0 - dy), (x1 + dx, y1 - dy), (x1, y1)], fill=_shade(colour, 0.75))
    else:
        draw.polygon([(x0, y0), (x0 + dx, y0 - dy), (x0 + dx, y1 - dy), (x0, y1)], fill=_shade(colour, 0.75))
    draw.rectangle(front, fill=colour)


def _room(rng: np.random.Generator, size: Frame) -> Image.Image:
    """A room in one-point perspective: back wall, side walls, floor with boards running to the vanishing
    point, a bright window, furniture-like boxes and a lamp with its glow."""
    width, height = size
    bw, bh = rng.uniform(0.35, 0.65) * width, rng.uniform(0.3, 0.55) * height
    bx0, by0 = rng.uniform(0.1, 0.9) * (width - bw), rng.uniform(0.15, 0.35) * height
    bx1, by1 = bx0 + bw, by0 + bh
    wall = _colour(rng, 0.35, (0.55, 0.97))
    frame = Image.new("RGB", size, _shade(wall, 1.1))  # the ceiling
    draw = ImageDraw.Draw(frame)
    floor = WOODS[int(rng.integers(len(WOODS)))] if rng.random() < 0.6 else _colour(rng, 0.4, (0.2, 0.7))
    draw.polygon([(0, height), (width, height), (bx1, by1), (bx0, by1)], fill=floor)
    draw.polygon([(0, 0), (bx0, by0), (bx0, by1), (0, height)], fill=_shade(wall, 0.85))
    draw.polygon([(width, 0), (bx1, by0), (bx1, by1), (width, height)], fill=_shade(wall, 0.9))
    draw.rectangle((bx0, by0, bx1, by1), fill=wall)
    vx, vy = (bx0 + bx1) / 2, (by0 + by1) / 2
    for k in np.linspace(-1.5, 2.5, int(rng.integers(8, 18))):  # floor boards run to the vanishing point
        x = bx0 + k * bw
        ground_x = vx + (x - vx) * (height - vy) / (by1 - vy)
        draw.line([(x, by1), (ground_x, height)], fill=_shade(floor, 0.75), width=2)
    for edge in [
        ((0, 0), (bx0, by0)),
        ((width, 0), (bx1, by0)),
        ((0, height), (bx0, by1)),
        ((width, height), (bx1, by1)),
    ]:
        draw.line(edge, fill=_shade(wall, 0.7), width=2)
    glow = Image.new("L", size, 0)
    glow_draw = ImageDraw.Draw(glow)
    # a window on the back wall: bright panes behind a frame cross
    wx0 = rng.uniform(bx0 + 0.05 * bw, bx0 + 0.5 * bw)
    wy0 = rng.uniform(by0 + 0.05 * bh, by0 + 0.3 * bh)
    wx1, wy1 = wx0 + rng.uniform(0.2, 0.45) * bw, wy0 + rng.uniform(0.35, 0.6) * bh
    sky = _colour(rng, 0.25, (0.9, 1.0))
    draw.rectangle((wx0, wy0, wx1, wy1), fill=sky, outline=(240, 240, 235), width=3)
    draw.line([((wx0 + wx1) / 2, wy0), ((wx0 + wx1) / 2, wy1)], fill=(235, 235, 230), width=3)
    draw.line([(wx0, (wy0 + wy1) / 2), (wx1, (wy0 + wy1) / 2)], fill=(235, 235, 230), width=3)
    glow_draw.rectangle((wx0, wy0, wx1, wy1), fill=120)
    # furniture standing on the floor
    for _ in range(int(rng.integers(1, 4))):
        fw, fh = rng.uniform(0.15, 0.4) * width, rng.uniform(0.1, 0.3) * height
        fx = rng.uniform(-0.1, 0.9) * width
        fy1 = rng.uniform(by1 + 0.05 * (height - by1), height * 1.05)
        _box3d(
            draw,
            (fx, fy1 - fh, fx + fw, fy1),
            (rng.uniform(-0.15, 0.15) * fw, 0.15 * fh),
            _colour(rng, 0.5, (0.15, 0.8)),
        )
    # a floor lamp: pole, shade and a warm glow
    lx = rng.uniform(0.05, 0.95) * width
    ly = rng.uniform(by1, height * 0.95)
    shade_w = rng.uniform(0.05, 0.1) * width
    top = ly - rng.uniform(0.3, 0.5) * height
    draw.line([(lx, ly), (lx, top)], fill=(40, 40, 40), width=3)
    draw.polygon(
        [(lx - shade_w * 0.35, top - shade_w * 0.7), (lx + shade_w * 0.35, top - shade_w * 0.7),
         (lx + shade_w / 2, top), (lx - shade_w / 2, top)],
        fill=(250, 235, 190),
    )  # fmt: skip
    glow_draw.ellipse((lx - shade_w * 2, top - shade_w * 2, lx + shade_w * 2, top + shade_w * 1.5), fill=160)
    small = (max(1, width // 8), max(1, height // 8))  # a wide blur is as good done small
    glow = glow.resize(small, Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(max(small) * 0.04))
    glow = glow.resize(size, Image.Resampling.BILINEAR).point(lambda v: v // 2)
    frame = Image.composite(Image.new("RGB", size, (255, 230, 180)), frame, glow)
    # the room is behind the product, out of focus: a cheap blur by shrinking and enlarging
    factor = rng.uniform(1.3, 3.0)
    return frame.resize((round(width / factor), round(height / factor)), Image.Resampling.BOX).resize(
        size, Image.Resampling.BILINEAR
    )


# --- faults -------------------------------------------------------------------------------------------------------


CASTS = {"warm": (1.12, 1.0, 0.8), "cool": (0.85, 0.97, 1.15), "green": (0.9, 1.1, 0.88)}


def _motion_blur(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """A shaken-hand blur: the frame averaged over a short straight path of random length and direction."""
    length = rng.uniform(4, 14)
    angle = rng.uniform(0, math.pi)
    steps = max(2, round(length))
    pad = math.ceil(length / 2) + 1
    padded = np.pad(frame.astype(np.uint16), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = frame.shape[:2]
    total = np.zeros(frame.shape, np.uint32)
    for t in np.linspace(-length / 2, length / 2, steps):
        dx, dy = round(t * math.cos(angle)), round(t * math.sin(angle))
        total += padded[pad + dy : pad + dy + height, pad + dx : pad + dx + width]
    return (total // steps).astype(np.uint8)


def _faults(rng: np.random.Generator, frame: Image.Image) -> Image.Image:
    """Phone-snapshot faults, each drawn on its own: low light, a colour cast, blur, sensor noise."""
    dark = rng.random() < 0.35
    gain, gamma = (rng.uniform(0.55, 0.85), rng.uniform(1.1, 1.7)) if dark else (rng.uniform(0.9, 1.1), 1.0)
    cast = np.ones(3)
    if rng.random() < 0.5:
        tint = np.array(CASTS[("warm", "cool", "green")[int(rng.integers(3))]])
        cast = 1 + (tint - 1) * rng.uniform(0.4, 1.2)
    frame = frame.point(scenes.light_table(gain, rng.uniform(0.85, 1.1), cast, gamma))
    if rng.random() < 0.4:
        if rng.random() < 0.5:
            frame = frame.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.5)))
        else:
            frame = Image.fromarray(_motion_blur(rng, np.asarray(frame)))
    if dark or rng.random() < 0.5:  # dim light means high gain, so noise comes with it
        sigma = rng.uniform(3, 10) * (1.6 if dark else 1.0)
        frame = Image.fromarray(scenes.sensor_noise(rng, np.asarray(frame), sigma))
    return frame


# --- photos -------------------------------------------------------------------------------------------------------


def _background(
    rng: np.random.Generator, family: str, size: Frame, clutter: Sequence[Image.Image], focus: Focus
) -> Image.Image:
    if FAMILIES[family]["tuned_on"]:
        return scenes.draw_background(rng, family, size, clutter, focus)
    if family == "fabric":
        return _fabric(rng, size)
    if family == "wood":
        return _wood(rng, size)
    if family == "people":
        return _people(rng, size, focus)
    return _room(rng, size)


def make_shopper_photo(
    rng: np.random.Generator, packshot: np.ndarray, family: str, clutter: Sequence[np.ndarray] = ()
) -> tuple[bytes, Box]:
    """A shopper-style JPEG photo of ``packshot``'s product on a ``family`` scene, and the product's true box.

    ``family``: a key of ``FAMILIES``; ``clutter``: other catalogue packshots,
    used by the "clutter" family. The product is keyed out of its packshot,
    turned by up to 20 degrees and scaled so its longer side is 25 to 75% of
    the frame's longer side (less if it would not fit), then pasted on the
    scene, which gets the faults described in the module docstring. The box is
    (x, y, w, h) in fractions of the photo: the bounding box of the turned
    product's opaque pixels, clipped to the frame.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown shopper family {family!r}; expected one of {tuple(FAMILIES)}")
    size = FRAMES[int(rng.choice(len(FRAMES), p=FRAME_WEIGHTS))]
    width, height = size
    cut = scenes.cut_out(packshot)
    angle = rng.uniform(-20, 20)
    longest = rng.uniform(0.25, 0.75) * max(size)
    layer, (x0, y0, x1, y1) = scenes.turned(cut, angle, longest)
    fits = min(1.0, width / (x1 - x0), height / (y1 - y0))
    if fits < 1:  # too big for the frame's shorter side: shrink it to fit
        layer, (x0, y0, x1, y1) = scenes.turned(cut, angle, longest * fits * 0.98)
    left, top = scenes.place(rng, (x0, y0, x1, y1), size, 0.10)
    focus = (left + x0, top + y0, left + x1, top + y1)
    cuts = (
        [scenes.fit(scenes.cut_out(other), round(0.6 * max(size))) for other in clutter] if family == "clutter" else []
    )
    frame = _background(rng, family, size, cuts, focus).convert("RGB")
    frame.paste(layer, (left, top), layer)
    frame = _faults(rng, frame)
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=int(rng.integers(40, 61)))
    bx0, by0 = max(0, focus[0]), max(0, focus[1])
    bx1, by1 = min(width, focus[2]), min(height, focus[3])
    return out.getvalue(), (bx0 / width, by0 / height, (bx1 - bx0) / width, (by1 - by0) / height)
