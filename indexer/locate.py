"""Finding the product in a shopper's photo, so the search embeds the product and not the bed it lies on.

The model's forward pass also gives its map layer: Lite0's detail layer
(14 x 14 cells for a 224 x 224 input), or the last feature layer of the
other models (7 x 7, 9 x 9 for Lite2's 260). A tuned catalogue weighs its channels
with the objectness its tuning learned (``indexer.objectness``): a map high
where this shop's kind of product is, and low on people, furniture and
patterns; without tuning the map is the channels' mean, high wherever the
network sees any object. ``map_box`` smooths it up to the
photo's part of the model square, keeps the connected region around its
peak that is above a share of its range, and widens that region's bounding
box by a margin.

Two boxes, each one more forward pass. The first is found in the photo's
map (``FIRST_BOX``). Its own forward pass gives its own feature layer: the
same cells now cover only the box, so the map is several times finer
there, and the second box is found in it (``SECOND_BOX``), inside the first.
On a person or among other products the photo's coarse map often spans
more than the product; the finer one separates them. The search
(``indexer.query``) keeps for each product its best score over the whole
photo and both boxes: a photo where no box is right still has the whole
photo, and a box that hugs the product wins where the background would
mislead. There are no thresholds to veto a box: a catalogue photo uploaded
as a query is searched whole as well as boxed, and finds itself at distance
0. A box covering nearly all of the photo is dropped (the whole photo is
searched anyway), and so is a second box that repeats the first.

Boxes are fractions ``(x, y, w, h)`` of the upright photo, the same as a
shopper's ``crop``: a located region is cropped and prepared exactly like a
manual crop (``images.load_for_model(source, crop=box)``).

``locate(embedder, photos)`` is the whole step for the query pipeline: one
forward pass with maps for all photos, one with maps for their first
boxes, and one for their second boxes.

Pixels "of the square" are of the model's square, whatever its side: the
embedder's ``input_size``, which is also the side of each photo's array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .embedder import Embedder
from .images import INPUT_SIZE, Crop, ImageError, Source, crop_box, fitted_region, load_for_model
from .objectness import product_maps

# map_box's defaults: the share of the map's range (in the photo) above its minimum that counts as the
# product, and how much the box grows on every side (the model saw products with a margin)
THRESHOLD = 0.5
MARGIN = 0.1
# (threshold, margin) of the box around the peak of the photo's map, and of the box found again
# inside it from its own map; None: no second box. Chosen on the tuned-on scene families only
# (BENCHMARKS.md, "Shopper photos"); the held-back families were only reported.
FIRST_BOX: tuple[float, float] = (0.45, 0.08)
SECOND_BOX: tuple[float, float] | None = (0.5, 0.08)
MAX_COVER = 0.95  # a box covering more of the photo's area than this is the whole photo again
SAME_BOX = 0.85  # boxes overlapping more than this (intersection over union) are one candidate

STEP = 4  # pixels of the square per grid step when finding the region around the peak


@dataclass(frozen=True)
class Photo:
    """One photo to locate in: what ``images.load_with_size`` gave for it, and its source to crop from."""

    source: Source  # the upload's bytes or a file: a located box is decoded again from it
    array: np.ndarray  # the whole photo, model-ready (input size x input size x 3 uint8)
    size: tuple[int, int]  # the upright photo's (width, height), for where it lies on the square
    # decodes a box (size, box, wait_s) where the photo was decoded (an upload: in a decode process);
    # None: ``images.load_for_model`` in this process
    decode_box: Callable[[int, Crop, float | None], np.ndarray] | None = None

    def box_array(self, size: int, box: Crop, wait_s: float | None) -> np.ndarray:
        """The model-ready array of ``box``, cropped from the source exactly as a shopper's crop is."""
        if self.decode_box is not None:
            return self.decode_box(size, box, wait_s)
        return load_for_model(self.source, size, crop=box, wait_s=wait_s)


@dataclass(frozen=True)
class Located:
    """One region of a photo to search with."""

    vector: np.ndarray  # the model's unit vector of the region below
    box: Crop | None  # the region as fractions (x, y, w, h) of the photo; None: the whole photo
    array: np.ndarray  # the model-ready array that was embedded (for the colour descriptor)


def to_photo_box(
    square_box: tuple[float, float, float, float], photo_size: tuple[int, int], size: int = INPUT_SIZE
) -> Crop:
    """A box in pixels ``(left, top, width, height)`` of the ``size`` model square as fractions of the photo.

    Parts of the box on the white padding are cut off.
    """
    left, top, width, height = fitted_region(photo_size, size)
    x0 = min(max((square_box[0] - left) / width, 0.0), 1.0)
    y0 = min(max((square_box[1] - top) / height, 0.0), 1.0)
    x1 = min(max((square_box[0] + square_box[2] - left) / width, 0.0), 1.0)
    y1 = min(max((square_box[1] + square_box[3] - top) / height, 0.0), 1.0)
    return x0, y0, x1 - x0, y1 - y0


def to_square_box(
    box: Crop, photo_size: tuple[int, int], size: int = INPUT_SIZE
) -> tuple[float, float, float, float]:
    """Fractions ``(x, y, w, h)`` of the photo as pixels ``(left, top, width, height)`` of the ``size`` model square."""
    left, top, width, height = fitted_region(photo_size, size)
    return left + box[0] * width, top + box[1] * height, box[2] * width, box[3] * height


def _bilinear_rows(cells: int, size: int, pixels: np.ndarray) -> np.ndarray:
    """Weights that sample ``cells`` values, bilinearly stretched over ``size`` pixels, at ``pixels``.

    The same interpolation as resizing the map to ``size`` with Pillow's
    bilinear filter (pixel centres aligned, edges held), for only the pixels wanted.
    """
    source = np.clip((pixels + 0.5) * cells / size - 0.5, 0, cells - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((len(pixels), cells))
    rows = np.arange(len(pixels))
    np.add.at(weights, (rows, low), 1 - (source - low))
    np.add.at(weights, (rows, high), source - low)
    return weights


def _smooth_map(activation_map: np.ndarray, size: int, region: tuple[int, int, int, int]) -> np.ndarray:
    """The map smoothly stretched over the ``size`` model square, at every ``STEP``-th pixel of ``region``."""
    left, top, width, height = region
    rows, cols = activation_map.shape
    down = _bilinear_rows(rows, size, np.arange(top, top + height, STEP))
    across = _bilinear_rows(cols, size, np.arange(left, left + width, STEP))
    return (down @ np.asarray(activation_map, dtype=np.float64) @ across.T).astype(np.float32)


def _grow(allowed: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected part of ``allowed`` (a bool grid) that holds ``seed``."""
    parts, _ = ndimage.label(allowed)  # 4-connected by default; in C, a few dozen times faster than growing
    return parts == parts[seed] if allowed[seed] else np.zeros_like(allowed)


def map_box(
    activation_map: np.ndarray,
    region: tuple[int, int, int, int] | None = None,
    threshold: float = THRESHOLD,
    margin: float = MARGIN,
    size: int = INPUT_SIZE,
) -> tuple[int, int, int, int]:
    """The box ``(left, top, width, height)``, in pixels of the square, of the map's peak inside ``region``.

    The map is upsampled to the ``size`` x ``size`` model square (the
    embedder's ``input_size``). ``region`` (left, top, width, height) is
    where the photo lies on the square (``None``: all of it). The box bounds
    the connected pixels around the peak whose value is at least
    ``threshold`` of the way from the region's minimum to its maximum,
    widened by ``margin`` of its size on every side and kept inside ``region``.
    """
    left, top, width, height = region if region is not None else (0, 0, size, size)
    # every STEP-th pixel: the map is a smooth upsampling of a few cells
    values = _smooth_map(activation_map, size, (left, top, width, height))
    low, high = float(values.min()), float(values.max())
    above = values >= low + threshold * (high - low)
    rows, cols = np.nonzero(_grow(above, np.unravel_index(int(np.argmax(values)), values.shape)))
    x0, x1 = int(cols.min()) * STEP, min(width, (int(cols.max()) + 1) * STEP)
    y0, y1 = int(rows.min()) * STEP, min(height, (int(rows.max()) + 1) * STEP)
    grow_x, grow_y = margin * (x1 - x0), margin * (y1 - y0)
    x0, x1 = max(0, round(x0 - grow_x)), min(width, round(x1 + grow_x))
    y0, y1 = max(0, round(y0 - grow_y)), min(height, round(y1 + grow_y))
    return left + x0, top + y0, x1 - x0, y1 - y0


def _overlap(a: Crop, b: Crop) -> float:
    """Intersection over union of two boxes."""
    width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / max(1e-12, a[2] * a[3] + b[2] * b[3] - inter)


def _searchable(box: Crop, photo_size: tuple[int, int]) -> bool:
    """Whether ``box`` is worth a forward pass: not nearly the whole photo, and croppable (``images.crop_box``)."""
    if box[2] * box[3] > MAX_COVER:
        return False
    try:
        crop_box(photo_size, box)
    except ImageError:
        return False  # too few pixels across to search with
    return True


def first_box(activation_map: np.ndarray, photo_size: tuple[int, int], size: int = INPUT_SIZE) -> Crop | None:
    """The box around the peak of a photo's map (``FIRST_BOX``), or ``None`` when it is not worth searching.

    ``activation_map`` is the map of the photo's model-ready square of side
    ``size``, and ``photo_size`` the upright photo's (width, height).
    Packshots get a box too: their whole photo is searched beside it, so a
    catalogue photo still finds itself first.
    """
    threshold, margin = FIRST_BOX
    square = map_box(activation_map, fitted_region(photo_size, size), threshold, margin, size)
    box = to_photo_box(square, photo_size, size)
    return box if _searchable(box, photo_size) else None


def second_box(
    outer: Crop, outer_map: np.ndarray, photo_size: tuple[int, int], size: int = INPUT_SIZE
) -> Crop | None:
    """The box found again inside ``outer`` from its own map (``SECOND_BOX``), as fractions of the photo.

    ``outer_map`` is the map of ``outer``'s crop, prepared as a shopper's crop
    is (fitted on the model square). ``None`` without a ``SECOND_BOX``, or
    when the box is not worth searching or repeats ``outer``.
    """
    if SECOND_BOX is None:
        return None
    threshold, margin = SECOND_BOX
    width, height = photo_size
    crop_size = (max(1, round(outer[2] * width)), max(1, round(outer[3] * height)))
    square = map_box(outer_map, fitted_region(crop_size, size), threshold, margin, size)
    x, y, w, h = to_photo_box(square, crop_size, size)
    box = (outer[0] + x * outer[2], outer[1] + y * outer[3], w * outer[2], h * outer[3])
    if not _searchable(box, photo_size) or _overlap(box, outer) > SAME_BOX:
        return None
    return box


def _maps(embedder: Embedder, batch: np.ndarray, objectness: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass: the vectors of ``batch`` and their maps (the objectness's, or the channel mean)."""
    if objectness is None:
        return embedder.embed_with_maps(batch)
    vectors, features = embedder.embed_with_features(batch)
    return vectors, product_maps(features, objectness)


def _box_arrays(photos: Sequence[Photo], boxes: list[tuple[int, Crop]], size: int, wait_s: float | None) -> np.ndarray:
    """The model-ready arrays of ``boxes`` (each a photo's index and a box), cropped from their photos' sources."""
    return np.stack([photos[i].box_array(size, box, wait_s) for i, box in boxes])


def locate(
    embedder: Embedder,
    photos: Sequence[Photo],
    wait_s: float | None = None,
    objectness: np.ndarray | None = None,
) -> list[list[Located]]:
    """The regions to search for each photo: the whole photo first, then its first box and its second.

    Three forward passes at most, each for all photos at once: the photos
    with their maps, their first boxes with theirs, then their second boxes.
    Each box is cropped from its source exactly as a shopper's crop is
    (``Photo.box_array``: in the decode process an upload was decoded in, or
    ``images.load_for_model(source, crop=box)``; ``wait_s`` caps each
    decode's wait), at the embedder's ``input_size``. The map is the
    catalogue's product map (``objectness``: the channel weights its tuning
    learned, ``indexer.objectness``) or, without one, the channel mean.
    Raises ``ImageError`` when a source cannot be decoded again.
    """
    if not photos:
        return []
    size = embedder.input_size
    vectors, maps = _maps(embedder, np.stack([photo.array for photo in photos]), objectness)
    regions = [[Located(vector, None, photo.array)] for vector, photo in zip(vectors, photos)]
    boxes = [(i, first_box(maps[i], photo.size, size)) for i, photo in enumerate(photos)]
    boxes = [(i, box) for i, box in boxes if box is not None]
    if not boxes:
        return regions
    arrays = _box_arrays(photos, boxes, size, wait_s)
    if SECOND_BOX is None:
        vectors, box_maps = embedder.embed(arrays), [None] * len(boxes)
    else:
        vectors, box_maps = _maps(embedder, arrays, objectness)
    for (i, box), array, vector in zip(boxes, arrays, vectors):
        regions[i].append(Located(vector, box, array))
    inner = [(i, second_box(box, box_map, photos[i].size, size)) for (i, box), box_map in zip(boxes, box_maps)]
    inner = [(i, box) for i, box in inner if box is not None]
    if inner:
        arrays = _box_arrays(photos, inner, size, wait_s)
        for (i, box), array, vector in zip(inner, arrays, embedder.embed(arrays)):
            regions[i].append(Located(vector, box, array))
    return regions
