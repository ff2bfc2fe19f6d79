"""Seeded synthetic scenes that put a catalogue product into shopper-style views, for catalogue tuning.

Catalogue tuning learns a projection from views of the shop's own products
composed onto varied backgrounds: the model then sees each product as a
shopper's photo would show it (somewhere in the frame, smaller, turned a
little, on something that is not white) rather than as the packshot.

* ``cut_out(packshot)`` keys the product out of its white background once.
* ``compose(rng, cut, family, clutter)`` makes one square view and the product's true box.
* ``crop_view(rng, cut, family, clutter)`` makes one view as a search embeds a located box: the
  product's box, with a margin, cut from a larger scene, JPEG-compressed and fitted on a white square.
* ``iter_tuning_views(rng, packshots, views_per_product)`` makes batches of views for a whole catalogue.
* ``draw_background(rng, family, size)`` draws one of the ``TUNING_FAMILIES`` backgrounds alone.

Everything is drawn from the ``numpy.random.Generator`` passed in, so a seed
gives the same views on every run. A view costs a couple of milliseconds: the
backgrounds are drawn small and enlarged, or sampled from one-row profiles
with an affine transform, and all per-pixel work is PIL or numpy.
"""

from __future__ import annotations

import colorsys
import io
import logging
import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .images import fitted_region, normalise
from .models import DEFAULT_INPUT_SIZE

log = logging.getLogger(__name__)

TUNING_FAMILIES: tuple[str, ...] = ("wall", "noise", "stripes", "clutter")
"""The background families views for tuning are drawn from."""

Box = tuple[float, float, float, float]

_KEY_TOLERANCE = 16  # channel difference from the paper colour that may still be paper (JPEG ringing)
_LIGHT_PAPER = 200  # a backdrop darker than this (any channel) is a scene, not a packshot's paper
_PLAIN_BORDER = 0.3  # share of the border that must be paper: models and shoes often touch an edge
_MIN_PRODUCT = 0.003  # a keyed product smaller than this share of the image means keying failed
_RINGING = 8  # pixels the backdrop may reach past its plainest part: a JPEG block
_MAX_HOLES = 24  # enclosed plain patches examined per packshot (a busy print may have more; the rest stay opaque)
_MIN_HOLE = 20  # pixels: smaller enclosed patches stay opaque
_HOLE_SHARE = 0.25  # an enclosed patch larger than this share of the product is its (white) inside
_HOLE_LEVEL = 0.6  # how much further from the paper colour than the border's paper a hole may be, on average
_FLOOD_PASSES = 64  # row/column passes of the flood fill; deeper spirals stay opaque, which is harmless
_CLUTTER_SIDE = 0.6  # clutter is at most this share of the frame, so its cut-outs can be kept this small
_NOISE_CELLS = (2, 4, 8, 16, 32, 64)  # pixel sizes of the noise octaves
_POOL = 12  # clutter cut-outs at hand while making views
_POOL_REFRESH = 3  # of which this many are replaced for each batch
_CROP_SCENE = 2  # a crop view's scene is this many times the model's side, so its box has pixels to spare
_CROP_MARGIN = 0.25  # a crop view's box grows by up to this share of the product's size, as located boxes do
_CROP_QUALITY = (60, 95)  # JPEG quality of the scene a crop view is cut from, as shoppers' uploads are


# --- keying -------------------------------------------------------------------------------------------------


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as a contiguous HxWx3 uint8 array (grey and RGBA packshots too)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def _runs(paper: np.ndarray) -> np.ndarray:
    """Ids of the horizontal runs of equal ``paper`` values, row by row (a run never crosses a row end)."""
    flat = paper.ravel()
    starts = np.ones(flat.size, bool)
    starts[1:] = flat[1:] != flat[:-1]
    starts[:: paper.shape[1]] = True
    return np.cumsum(starts) - 1


def _flood(paper: np.ndarray, seeds: np.ndarray, runs: tuple | None = None) -> np.ndarray:
    """The ``paper`` pixels 4-connected to the ``seeds`` pixels: a flood fill done with whole runs at a time.

    PIL's floodfill is a Python loop (about 0.1 s a packshot); spreading the
    fill along row runs, then column runs, until nothing changes takes a few
    numpy passes. ``runs``: ``(_runs(paper), _runs(paper.T))`` when already known.
    """
    height, width = paper.shape
    rows, cols = runs or (_runs(paper), _runs(paper.T))
    paper_rows, paper_cols = paper.ravel(), paper.T.ravel()
    reached = seeds & paper
    count = -1
    for _ in range(_FLOOD_PASSES):
        hit = np.zeros(rows[-1] + 1, bool)
        hit[rows[reached.ravel()]] = True
        reached = (hit[rows] & paper_rows).reshape(height, width)
        runs_hit = np.count_nonzero(hit)
        hit = np.zeros(cols[-1] + 1, bool)
        hit[cols[reached.T.ravel()]] = True
        reached = (hit[cols] & paper_cols).reshape(width, height).T
        if runs_hit == count:  # no new row run since the last pass: nothing more to reach
            break
        count = runs_hit
    return reached


def _from_border(paper: np.ndarray) -> np.ndarray:
    """The ``paper`` pixels 4-connected to the image border."""
    seeds = np.zeros_like(paper)
    seeds[[0, -1], :] = True
    seeds[:, [0, -1]] = True
    return _flood(paper, seeds)


def _holes(distance: np.ndarray, product: np.ndarray, strict: int, paper_level: float) -> np.ndarray:
    """Backdrop seen through the product: the loop of a bag's handle, the gap between an arm and a hip.

    An enclosed patch about as plain as the paper is a hole when it is small
    beside the product and as close to the paper colour, on average, as the
    border's paper is (``paper_level``): a white shirt's flat patches are off
    by a level or two, and its inside is most of the product.
    """
    flat = product & (distance <= strict)
    seeds = ~_grow(~flat, 1)  # specks and slivers are no holes
    runs = (_runs(flat), _runs(flat.T))
    holes = np.zeros_like(product)
    area = int(product.sum())
    for _ in range(_MAX_HOLES):
        if not seeds.any():
            break
        seed = np.zeros_like(seeds)
        seed.flat[int(np.argmax(seeds))] = True
        patch = _flood(flat, seed, runs)
        seeds &= ~patch
        size = int(patch.sum())
        if size < _MIN_HOLE or size > _HOLE_SHARE * area:
            continue
        if distance[patch].mean() <= paper_level + _HOLE_LEVEL:
            holes |= patch
    return holes


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` dilated by ``pixels`` (a square neighbourhood): shifted ORs, far faster than PIL's rank filter."""
    out = mask.copy()
    for shift in range(1, pixels + 1):
        out[shift:] |= mask[:-shift]
        out[:-shift] |= mask[shift:]
    rows = out.copy()
    for shift in range(1, pixels + 1):
        out[:, shift:] |= rows[:, :-shift]
        out[:, :-shift] |= rows[:, shift:]
    return out


def _distance(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Each pixel's largest channel difference from ``colour`` (uint8): PIL's C loops, ten times numpy's max."""
    difference = ImageChops.difference(Image.fromarray(rgb), Image.new("RGB", rgb.shape[1::-1], tuple(colour.tolist())))
    red, green, blue = difference.split()
    return np.asarray(ImageChops.lighter(ImageChops.lighter(red, green), blue))


def _opaque(rgb: np.ndarray) -> Image.Image:
    """The whole packshot as an opaque cut-out: what keying falls back to."""
    return Image.fromarray(rgb).convert("RGBA")


def cut_out(packshot: np.ndarray) -> Image.Image:
    """The product of a packshot as an RGBA image cropped to it.

    The backdrop is the light, plain colour most of the border shows (white or
    near white); the product is everything the backdrop cannot reach from the
    border, so the inside of a white shirt stays opaque. Only small enclosed
    patches exactly as plain as the backdrop (a handle's loop, the gap between
    an arm and a hip) become holes. The alpha edge is soft and pulled in by
    about a pixel, so no white fringe shows on dark scenes.
    A packshot without a plain light border (a product photographed on a
    scene) is returned whole and opaque, and so is an image where keying
    finds no product. An RGBA packshot with real transparency keeps its alpha.
    """
    arr = np.asarray(packshot)
    if arr.ndim == 3 and arr.shape[2] == 4 and arr[..., 3].min() < 250:
        cut = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "RGBA")
        return cut.crop(_opaque_box(cut))
    rgb = _as_rgb(arr)
    height, width = rgb.shape[:2]
    if height < 3 or width < 3:
        return _opaque(rgb)
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]]).astype(np.int16)
    light = border[border.min(axis=1) >= _LIGHT_PAPER]
    if len(light) < _PLAIN_BORDER * len(border):
        log.debug("no light border: the packshot is kept whole")
        return _opaque(rgb)
    paper = np.median(light, axis=0).astype(np.int16)
    border_distance = np.abs(border - paper).max(axis=1)
    near = border_distance[border_distance <= _KEY_TOLERANCE]
    if len(near) < _PLAIN_BORDER * len(border):
        log.debug("border not plain: the packshot is kept whole")
        return _opaque(rgb)
    # the flood runs only through pixels as plain as the border's paper, so an off-white shirt stops it...
    strict = int(np.clip(np.percentile(near, 95) + 2, 3, _KEY_TOLERANCE))
    distance = _distance(rgb, paper)
    solid = _grow(distance > strict, 2)  # ...and gaps under 5 px in its outline are closed
    background = _from_border(~solid)
    background = _grow(background, 2) & (distance <= strict)  # back out to the outline
    # then over the JPEG ringing next to it, which fills the 8x8 blocks an edge crosses
    loose = distance <= _KEY_TOLERANCE
    for _ in range(_RINGING):
        background = _grow(background, 1) & loose
    product = ~background
    holes = _holes(distance, product, strict, float(near[near <= strict].mean()))
    if holes.any():
        for _ in range(_RINGING):
            holes = _grow(holes, 1) & loose & product
        product &= ~holes
    if product.mean() < _MIN_PRODUCT:
        log.debug("keying found no product: the packshot is kept whole")
        return _opaque(rgb)
    # soft edge: blur the hard mask, then drop its outer half so edge pixels mixed with white fade out
    alpha = Image.fromarray(product.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1.0))
    alpha = alpha.point([0] * 80 + [round((v - 80) * 255 / 175) for v in range(80, 256)])
    ys, xs = np.nonzero(product.any(axis=1))[0], np.nonzero(product.any(axis=0))[0]
    box = (max(0, xs[0] - 1), max(0, ys[0] - 1), min(width, xs[-1] + 2), min(height, ys[-1] + 2))
    cut = Image.fromarray(rgb).convert("RGBA")
    cut.putalpha(alpha)
    return cut.crop(box)


def fit(cut: Image.Image, longest: int) -> Image.Image:
    """``cut`` shrunk (never enlarged) so its longer side is at most ``longest``: do it once, compose faster."""
    scale = longest / max(cut.size)
    if scale >= 1:
        return cut
    size = (max(1, round(cut.width * scale)), max(1, round(cut.height * scale)))
    return cut.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


# --- colours and small helpers --------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, saturation: float = 0.7, lightness: tuple[float, float] = (0.12, 1.0)) -> tuple:
    """A random colour: muted more often than loud, as walls, floors and things mostly are."""
    hue = rng.random()
    sat = saturation * rng.random() ** 1.5
    value = rng.uniform(*lightness)
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, value))


def _palette(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` colours, sometimes shades of one hue, sometimes unrelated."""
    if rng.random() < 0.4:
        hue, sat = rng.random(), rng.uniform(0.1, 0.8)
        values = rng.uniform(0.15, 1.0, count)
        return np.array([colorsys.hsv_to_rgb(hue, sat, v) for v in values]) * 255
    return np.array([_colour(rng) for _ in range(count)], np.float64)


@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] of a small grid, cached per shape."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return (xs + 0.5) / width, (ys + 0.5) / height


def _small(size: tuple[int, int], cells: int = 40) -> tuple[int, int]:
    """The shape of a low-resolution grid for smooth fields of a frame of ``size``, keeping its aspect."""
    width, height = size
    scale = cells / max(width, height)
    return max(2, round(width * scale)), max(2, round(height * scale))


def _enlarge(field: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A smooth low-resolution RGB float field as an RGB image of ``size``."""
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)


# --- background families ----------------------------------------------------------------------------------------


def _wall_field(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A small float RGB field: a plain colour or a two-colour gradient, maybe a vignette or a soft shadow."""
    width, height = _small(size)
    xs, ys = _grid(width, height)
    first = np.array(_colour(rng), np.float32)
    kind = rng.integers(3)
    if kind == 0:
        field = np.broadcast_to(first, (height, width, 3)).astype(np.float32)
    else:
        second = np.array(_colour(rng), np.float32)
        if kind == 1:
            angle = rng.uniform(0, 2 * math.pi)
            t = xs * math.cos(angle) + ys * math.sin(angle)
        else:
            cx, cy = rng.uniform(0.1, 0.9, 2)
            t = np.hypot(xs - cx, (ys - cy) * height / width)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        field = first + (second - first) * t[..., None]
    shade = rng.random()
    if shade < 0.3:  # vignette: corners darker, as a lens and room light make them
        strength = rng.uniform(0.2, 0.6)
        r2 = (xs - 0.5) ** 2 + (ys - 0.5) ** 2
        field = field * (1 - strength * r2 / 0.5)[..., None]
    elif shade < 0.55:  # a soft shadow blob, as a person or a shelf casts
        cx, cy = rng.uniform(0, 1, 2)
        spread = rng.uniform(0.1, 0.4)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * spread**2))
        field = field * (1 - rng.uniform(0.2, 0.55) * blob)[..., None]
    return field


def _wall(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return _enlarge(_wall_field(rng, size), size)


def _stretch(image: Image.Image) -> np.ndarray:
    """Per band, each level's place between the 2nd and 98th percentile of ``image``, in [0, 1] (bands x 256)."""
    hist = np.asarray(image.histogram(), np.float64).reshape(len(image.getbands()), 256)
    cdf = np.cumsum(hist, axis=1)
    levels = np.arange(256)
    ramps = []
    for band in cdf:
        low, high = np.searchsorted(band, 0.02 * band[-1]), np.searchsorted(band, 0.98 * band[-1])
        ramps.append(np.clip((levels - low) / max(1, high - low), 0, 1))
    return np.array(ramps)


def _noise(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Coloured noise or blotchy texture: one to three octaves of random grids enlarged and mixed.

    Half are coloured noise around a random colour; half are grey noise cut
    into a few colour levels (camouflage-like blotches, hard or soft edged).
    All mixing is done on a half-size frame by PIL, the colouring by one
    lookup table.
    """
    width, height = size
    work = (max(8, width // 2), max(8, height // 2))
    coloured = rng.random() < 0.5
    texture, total = None, 0.0
    for cell in sorted(rng.choice(_NOISE_CELLS, size=int(rng.integers(1, 4)), replace=False), reverse=True):
        shape = (max(2, math.ceil(height / cell) + 1), max(2, math.ceil(width / cell) + 1))
        grid = rng.integers(0, 256, shape + ((3,) if coloured else ()), dtype=np.uint8)
        layer = Image.fromarray(grid).resize(work, Image.Resampling.BICUBIC)
        weight = rng.uniform(0.3, 1.0)
        total += weight
        texture = layer if texture is None else Image.blend(texture, layer, weight / total)
    ramps = _stretch(texture)  # octaves average towards grey: stretch back to the full range
    if coloured:
        centre = _palette(rng, 1)[0]
        table = centre[:, None] + (ramps - 0.5) * rng.uniform(120, 320)
    else:
        levels = _palette(rng, int(rng.integers(2, 5)))
        t = ramps[0] * (len(levels) - 1)
        low = np.minimum(t.astype(np.intp), len(levels) - 2)
        frac = np.clip((t - low - 0.5) * rng.uniform(1, 6) + 0.5, 0, 1)[:, None]  # how hard blotch edges are
        table = (levels[low] * (1 - frac) + levels[low + 1] * frac).T
        texture = Image.merge("RGB", (texture, texture, texture))
    lut = np.clip(np.round(table), 0, 255).astype(np.int64).ravel().tolist()
    return texture.point(lut).resize(size, Image.Resampling.BILINEAR)


def _stripe_layer(rng: np.random.Generator, size: tuple[int, int], angle: float) -> Image.Image:
    """Stripes across ``size`` at ``angle``: a one-row colour profile swept over the frame by an affine map."""
    width, height = size
    reach = math.ceil(math.hypot(width, height)) * 2  # supersampled by 2 below
    colours = _palette(rng, int(rng.integers(2, 5))).astype(np.uint8)
    base = rng.uniform(2, 0.12 * max(size)) * 2
    regular = rng.random() < 0.5
    count = int(2 * reach / base) + 4
    widths = np.full(count, base) if regular else base * rng.uniform(0.25, 2.0, count)
    widths = np.maximum(1, np.round(widths)).astype(np.intp)
    order = np.arange(count) % len(colours) if rng.random() < 0.6 else rng.integers(0, len(colours), count)
    # np.resize repeats the stripes if random widths fell short of the sweep's length
    profile = np.resize(np.repeat(colours[order], widths, axis=0), (2 * reach + 8, 3))
    strip = Image.fromarray(np.ascontiguousarray(np.broadcast_to(profile[None], (2, len(profile), 3))))
    cos, sin = math.cos(angle), math.sin(angle)
    # NEAREST at twice the size, then a 2x2 box reduce: anti-aliased edges at a quarter of BILINEAR's cost
    layer = strip.transform(
        (2 * width, 2 * height),
        Image.Transform.AFFINE,
        (cos, sin, reach + 2, 0, 0, 1),
        Image.Resampling.NEAREST,
    )
    return layer.reduce(2)


def _stripes(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Stripes of random widths, angle and colours; a third are plaids made of two crossing stripe sets."""
    angle = rng.uniform(0, math.pi)
    first = _stripe_layer(rng, size, angle)
    if rng.random() < 0.35:
        second = _stripe_layer(rng, size, angle + math.pi / 2 + rng.normal(0, 0.05))
        return Image.blend(first, second, rng.uniform(0.35, 0.65))
    return first


def _shapes(rng: np.random.Generator, frame: Image.Image, count: int) -> None:
    """Rectangles and ellipses, filled or outlined, drawn onto ``frame``."""
    width, height = frame.size
    draw = ImageDraw.Draw(frame)
    for _ in range(count):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.08, 0.5) * width, y0 + rng.uniform(0.08, 0.5) * height
        colour = _colour(rng)
        outline = rng.random() < 0.3
        args = {"outline": colour, "width": int(rng.integers(2, 8))} if outline else {"fill": colour}
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), **args)
        else:
            draw.ellipse((x0, y0, x1, y1), **args)


def _clutter(
    rng: np.random.Generator,
    size: tuple[int, int],
    clutter: Sequence[Image.Image],
    focus: tuple[float, float, float, float] | None,
) -> Image.Image:
    """A plain or noisy base with drawn shapes and other products, several overlapping the target's place."""
    width, height = size
    frame = _wall(rng, size) if rng.random() < 0.6 else _noise(rng, size)
    _shapes(rng, frame, int(rng.integers(1, 5)))
    if focus is None:
        focus = (0.3 * width, 0.3 * height, 0.7 * width, 0.7 * height)
    fx0, fy0, fx1, fy1 = focus
    fw, fh = fx1 - fx0, fy1 - fy0
    count = min(len(clutter), int(rng.integers(2, 6)))
    for index in rng.choice(len(clutter), size=count, replace=False) if count else ():
        longest = rng.uniform(0.2, _CLUTTER_SIDE) * max(size)
        layer, _ = turned(clutter[int(index)], rng.uniform(-30, 30), longest)
        if rng.random() < 0.6:  # centred around the target's edges, so the target hides part of it
            cx, cy = rng.uniform(fx0 - 0.3 * fw, fx1 + 0.3 * fw), rng.uniform(fy0 - 0.3 * fh, fy1 + 0.3 * fh)
        else:
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        frame.paste(layer, (round(cx - layer.width / 2), round(cy - layer.height / 2)), layer)
    return frame


def draw_background(
    rng: np.random.Generator,
    family: str,
    size: tuple[int, int],
    clutter: Sequence[Image.Image] = (),
    focus: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """An RGB background of ``family`` (one of ``TUNING_FAMILIES``) and ``size`` (width, height).

    ``clutter``: RGBA cut-outs of other products for the "clutter" family;
    ``focus``: the pixel box (x0, y0, x1, y1) where the target will go, which
    clutter partly overlaps (the middle of the frame when not given).
    """
    if family == "wall":
        return _wall(rng, size)
    if family == "noise":
        return _noise(rng, size)
    if family == "stripes":
        return _stripes(rng, size)
    if family == "clutter":
        return _clutter(rng, size, clutter, focus)
    raise ValueError(f"unknown scene family {family!r}; expected one of {TUNING_FAMILIES}")


# --- the product ---------------------------------------------------------------------------------------------


def turned(cut: Image.Image, angle: float, longest: float) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """``cut`` turned by ``angle`` degrees and scaled so its turned box's longer side is ``longest`` pixels.

    Returns the RGBA layer and the box of its opaque pixels (alpha >= 128). One
    affine pass does both. Shrinking, it samples NEAREST at twice the size and
    box-reduces, which anti-aliases like a proper resample at a fraction of the
    cost; enlarging, it interpolates bilinearly.
    """
    theta = math.radians(angle)
    cos, sin = abs(math.cos(theta)), abs(math.sin(theta))
    src = cut.convert("RGBa")  # premultiplied, so the transparent white does not bleed into the edges
    turned_w = src.width * cos + src.height * sin
    turned_h = src.width * sin + src.height * cos
    scale = 2 * longest / max(turned_w, turned_h)
    if scale < 0.7:  # shrinking a lot: a cheap box reduce first, so NEAREST skips little detail
        factor = math.ceil(0.7 / scale)
        src = src.reduce(factor)
        scale *= factor
        turned_w, turned_h = turned_w / factor, turned_h / factor
    enlarging = scale > 2  # NEAREST would show blocks: interpolate at the final size instead
    if enlarging:
        scale /= 2
    out_w, out_h = max(2, 2 * math.ceil(turned_w * scale / 2)), max(2, 2 * math.ceil(turned_h * scale / 2))
    c, s = math.cos(theta) / scale, math.sin(theta) / scale
    # output pixel -> source pixel: rotate about the centres, undo the scale
    cx, cy = out_w / 2, out_h / 2
    data = (c, s, src.width / 2 - c * cx - s * cy, -s, c, src.height / 2 + s * cx - c * cy)
    if enlarging:
        layer = src.transform((out_w, out_h), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    else:
        layer = src.transform((out_w, out_h), Image.Transform.AFFINE, data, Image.Resampling.NEAREST).reduce(2)
    layer = layer.convert("RGBA")
    return layer, _opaque_box(layer)


def _opaque_box(layer: Image.Image) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) of ``layer``'s pixels with alpha of at least 128 (all of it if none)."""
    solid = np.asarray(layer.getchannel("A")) >= 128
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    if not len(rows):
        return 0, 0, layer.width, layer.height
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def place(
    rng: np.random.Generator, box: tuple[int, int, int, int], size: tuple[int, int], slip: float = 0.10
) -> tuple[int, int]:
    """Where (left, top) to paste a layer whose opaque box is ``box`` into a frame of ``size`` (width, height).

    Two thirds of the time the opaque box is wholly inside; otherwise up to
    ``slip`` of its width and height may fall past the frame's edges.
    """
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    width, height = size
    out = slip if rng.random() < 0.35 else 0.0
    low_x, high_x = -x0 - out * bw, width - x1 + out * bw
    low_y, high_y = -y0 - out * bh, height - y1 + out * bh
    left = rng.uniform(low_x, high_x) if high_x > low_x else (low_x + high_x) / 2
    top = rng.uniform(low_y, high_y) if high_y > low_y else (low_y + high_y) / 2
    return round(left), round(top)


@lru_cache(maxsize=1)
def _grain() -> np.ndarray:
    """A fixed bank of unit gaussian noise; views take random windows of it instead of drawing fresh noise."""
    return np.random.default_rng(20240601).standard_normal((640, 640, 3)).astype(np.float32)


def sensor_noise(rng: np.random.Generator, frame: np.ndarray, sigma: float) -> np.ndarray:
    """``frame`` (uint8 HxWx3) plus gaussian noise of ``sigma`` levels, from a random window of a fixed bank."""
    bank = _grain()
    height, width = frame.shape[:2]
    reps = (math.ceil(height / bank.shape[0]), math.ceil(width / bank.shape[1]), 1)
    if reps[0] > 1 or reps[1] > 1:
        bank = np.tile(bank, reps)
    top = int(rng.integers(0, bank.shape[0] - height + 1))
    left = int(rng.integers(0, bank.shape[1] - width + 1))
    noisy = frame + bank[top : top + height, left : left + width] * np.float32(sigma)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def light_table(gain: float, contrast: float, cast: Sequence[float], gamma: float = 1.0) -> list[int]:
    """A 768-entry lookup table for ``Image.point``: gamma, contrast about mid-grey, then gain and a colour cast."""
    levels = (np.arange(256) / 255.0) ** gamma
    levels = (levels - 0.5) * contrast + 0.5
    table = np.concatenate([levels * gain * float(c) for c in cast]) * 255
    return np.clip(np.round(table), 0, 255).astype(np.int64).tolist()


def _camera(rng: np.random.Generator, frame: Image.Image) -> np.ndarray:
    """Light and colour jitter (one lookup table), sometimes a mild blur, sometimes sensor noise."""
    cast = 1 + np.clip(rng.normal(0, 0.05, 3), -0.12, 0.12)
    gamma = rng.uniform(0.8, 1.25) if rng.random() < 0.4 else 1.0
    frame = frame.point(light_table(rng.uniform(0.75, 1.2), rng.uniform(0.75, 1.2), cast, gamma))
    if rng.random() < 0.25:
        frame = frame.filter(ImageFilter.BoxBlur(rng.uniform(0.4, 1.0)))
    arr = np.asarray(frame)
    if rng.random() < 0.4:
        arr = sensor_noise(rng, arr, rng.uniform(1.5, 7))
    return np.array(arr)


def compose(
    rng: np.random.Generator,
    product: Image.Image,
    family: str,
    clutter: Sequence[Image.Image] = (),
    size: int = DEFAULT_INPUT_SIZE,
) -> tuple[np.ndarray, Box]:
    """One ``size`` x ``size`` view of ``product`` (an RGBA cut-out) on a ``family`` background.

    The product is turned by up to 15 degrees, scaled so its longer side is 30
    to 85% of the frame, put at a random place (a third of the time up to 10%
    of it past an edge), then the frame gets light, contrast and colour-cast
    jitter, sometimes a mild blur, sometimes sensor noise. ``clutter``: RGBA
    cut-outs of other products, used by the "clutter" family. Cut-outs
    larger than ``size`` work but cost more: shrink them once with ``fit``.

    Returns the RGB uint8 view and the product's true box (x, y, w, h) as
    fractions of the frame: the box of its opaque pixels that are inside it.
    """
    if family not in TUNING_FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; expected one of {TUNING_FAMILIES}")
    frame_size = (size, size)
    layer, (x0, y0, x1, y1) = turned(product, rng.uniform(-15, 15), rng.uniform(0.30, 0.85) * size)
    left, top = place(rng, (x0, y0, x1, y1), frame_size, 0.10)
    focus = (left + x0, top + y0, left + x1, top + y1)
    frame = draw_background(rng, family, frame_size, clutter, focus)
    frame.paste(layer, (left, top), layer)
    view = _camera(rng, frame)
    bx0, by0 = max(0, focus[0]), max(0, focus[1])
    bx1, by1 = min(size, focus[2]), min(size, focus[3])
    return view, (bx0 / size, by0 / size, (bx1 - bx0) / size, (by1 - by0) / size)


def crop_view(
    rng: np.random.Generator,
    product: Image.Image,
    family: str,
    clutter: Sequence[Image.Image] = (),
    size: int = DEFAULT_INPUT_SIZE,
) -> tuple[np.ndarray, Box]:
    """One view of ``product`` as the search embeds a box located in a shopper's photo.

    A ``compose`` scene ``_CROP_SCENE`` times ``size``, saved as a JPEG of
    quality 60 to 95, is cut to the product's box grown by up to
    ``_CROP_MARGIN`` of its size, and that crop is fitted on a white square of
    ``size`` exactly as a shopper's crop is (``images.normalise``). Returns the
    RGB uint8 view and the product's box as fractions of the view.
    """
    scene, (x, y, w, h) = compose(rng, product, family, clutter, _CROP_SCENE * size)
    margin = rng.uniform(0.0, _CROP_MARGIN)
    left, top = max(0.0, x - margin * w), max(0.0, y - margin * h)
    right, bottom = min(1.0, x + w * (1 + margin)), min(1.0, y + h * (1 + margin))
    encoded = io.BytesIO()
    Image.fromarray(scene).save(encoded, "JPEG", quality=int(rng.integers(*_CROP_QUALITY, endpoint=True)))
    side = scene.shape[0]
    # a thin product (a belt) can be a few pixels across: no minimum side, unlike a shopper's crop
    x0, y0 = math.floor(left * side), math.floor(top * side)
    pixels = x0, y0, max(x0 + 1, math.ceil(right * side)), max(y0 + 1, math.ceil(bottom * side))
    with Image.open(encoded) as image:
        crop = image.convert("RGB").crop(pixels)
    view = np.asarray(normalise(crop, size))
    # the product's box in the crop, then where the crop lies on the square
    left, top = pixels[0] / side, pixels[1] / side
    width, height = crop.size[0] / side, crop.size[1] / side
    offset_x, offset_y, fitted_w, fitted_h = fitted_region(crop.size, size)
    return view, (
        (offset_x + (x - left) / width * fitted_w) / size,
        (offset_y + (y - top) / height * fitted_h) / size,
        w / width * fitted_w / size,
        h / height * fitted_h / size,
    )


# --- whole catalogues ------------------------------------------------------------------------------------------


def _refresh_pool(
    rng: np.random.Generator,
    pool: dict[int, Image.Image],
    packshots: Sequence[np.ndarray],
    avoid: set[int],
    side: int,
) -> None:
    """Swap the oldest clutter cut-outs of ``pool`` for new random products, none of them in ``avoid``.

    Keying costs more than a view, so the pool rolls: each batch keys only a
    few new products, yet over a build clutter comes from all over the catalogue.
    """
    for index in list(pool)[: _POOL_REFRESH if len(pool) >= _POOL else 0]:
        del pool[index]
    count = len(packshots)
    candidates = rng.choice(count, size=min(count, _POOL + len(avoid) + len(pool)), replace=False).tolist()
    for index in candidates:
        if len(pool) >= _POOL:
            break
        if index not in pool and index not in avoid:
            pool[index] = fit(cut_out(packshots[index]), side)


def iter_tuning_views(
    rng: np.random.Generator,
    packshots: Sequence[np.ndarray],
    views_per_product: int,
    batch: int = 32,
    size: int = DEFAULT_INPUT_SIZE,
    families: Sequence[str] = TUNING_FAMILIES,
    crops_per_product: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Views of every product of ``packshots``, ``views_per_product`` each, in batches.

    Yields ``(product_indices, views, boxes, whole)``: an int64 array, a uint8 array of
    shape (n, size, size, 3), n = ``batch`` except maybe for the last batch,
    each view's product box (n, 4: x, y, w, h as fractions of the view) and
    whether the view is a whole scene (``compose``) rather than a crop
    (``crop_view``: the last ``crops_per_product`` views of each product),
    products in order and each product's views next to each other. A product's
    views go through ``families`` from a random start, so four views of one
    product meet all four families. Clutter comes from a rolling pool of other
    products' cut-outs, never from the batch's own products when the
    catalogue has others. Only a batch's packshots and cut-outs and the pool
    are held at once, so ``packshots`` may be a lazy sequence that loads
    images on access.
    """
    if views_per_product < 1 or batch < 1:
        raise ValueError("views_per_product and batch must be at least 1")
    if not 0 <= crops_per_product <= views_per_product:
        raise ValueError("crops_per_product must be between 0 and views_per_product")
    families = tuple(families)
    total = len(packshots) * views_per_product
    clutter_side = max(8, round(_CLUTTER_SIDE * size))
    cuts: dict[int, Image.Image] = {}
    offsets: dict[int, int] = {}  # each product's first family; kept while its views span two batches
    pool: dict[int, Image.Image] = {}
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        indices = np.arange(start, stop, dtype=np.int64) // views_per_product
        members = sorted(set(indices.tolist()))
        cuts = {i: cuts[i] if i in cuts else fit(cut_out(packshots[i]), size) for i in members}
        offsets = {i: offsets[i] if i in offsets else int(rng.integers(len(families))) for i in members}
        _refresh_pool(rng, pool, packshots, set(members), clutter_side)
        outside = [cut for i, cut in pool.items() if i not in cuts]
        views = np.empty((stop - start, size, size, 3), np.uint8)
        boxes = np.empty((stop - start, 4), np.float64)
        whole = np.ones(stop - start, bool)
        for row, (flat, index) in enumerate(zip(range(start, stop), indices.tolist())):
            family = families[(offsets[index] + flat % views_per_product) % len(families)]
            clutter = outside or [fit(cut, clutter_side) for i, cut in cuts.items() if i != index]
            whole[row] = flat % views_per_product < views_per_product - crops_per_product
            make = compose if whole[row] else crop_view
            views[row], boxes[row] = make(rng, cuts[index], family, clutter, size)
        yield indices, views, boxes, whole
