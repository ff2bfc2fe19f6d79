"""A deterministic stand-in for the image model, for the fast test tier.

``FakeEmbedder`` has the interface of ``indexer.model.Embedder`` and
``indexer.runtimes.OpenVinoEmbedder`` (what ``indexer.build``,
``indexer.plan.key_for``, ``indexer.locate`` and ``web.service`` use) and
needs no TensorFlow or OpenVINO. Its vectors are a fixed function of the
pixels that behaves like a weak real model:

* the photo box-averaged to an 8 x 8 grid, as darkness (white counts as
  nothing, so a packshot's background adds little) and as chromaticity
  (colour without brightness), plus
* coarse histograms of gradient orientations (shape), 4 x 4 cells of a
  32 x 32 grey copy,

each group normalised, then pushed through a fixed seeded random
projection to ``dim`` and L2-normalised. The same pixels always give the
same vector, a re-encoded or slightly changed photo stays near, and
different products are far apart. The activation map is how far each cell
of the photo differs from its border colour: high on a product, low on a
plain background.

It lives in the tests only: production code never sees it.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from indexer.model import WeightsChoice
from indexer.models import DEFAULT_MODEL

FAKE_WEIGHTS_ID = "fake-v1"  # bump when the features change: an index of other fake vectors is incompatible
PROJECTION_SEED = 20240611
FINE_GRID = 32  # every image is first box-averaged to this many cells per side
COLOUR_GRID = 8  # cells per side of the colour features
GRADIENT_CELLS = 4  # cells per side of the orientation histograms (gradients of the fine grid)
ORIENTATIONS = 8
MAP_CELL = 32  # pixels per activation-map cell, as the real backbones downsample (224 -> 7, 260 -> 9)
# how much each group counts before the projection; the constant keeps a blank photo's vector finite
WEIGHTS = {"darkness": 1.0, "chroma": 0.6, "gradients": 0.8, "constant": 0.25}
FEATURES = 3 * COLOUR_GRID**2 + 2 * COLOUR_GRID**2 + ORIENTATIONS * GRADIENT_CELLS**2 + 1


def _edges(size: int, cells: int) -> np.ndarray:
    """Start index of each of ``cells`` nearly equal runs that cover ``size`` items."""
    return np.linspace(0, size, cells + 1).astype(np.intp)[:-1]


def pool(grids: np.ndarray, cells: int) -> np.ndarray:
    """``(n, h, w, ...)`` float grids averaged over ``cells`` x ``cells`` nearly equal blocks."""
    height, width = grids.shape[1:3]
    rows, cols = _edges(height, cells), _edges(width, cells)
    sums = np.add.reduceat(np.add.reduceat(grids, rows, axis=1), cols, axis=2)
    counts = np.outer(np.diff(np.append(rows, height)), np.diff(np.append(cols, width)))
    return sums / counts.reshape(1, cells, cells, *([1] * (grids.ndim - 3)))


def fine_grid(batch: np.ndarray) -> np.ndarray:
    """Each ``(size, size, 3)`` uint8 image box-averaged to ``FINE_GRID`` x ``FINE_GRID``: float32.

    Pillow's box filter: one pass over the pixels, a few ms for a batch of 32
    224-pixel images, for any input size.
    """
    side = (FINE_GRID, FINE_GRID)
    return np.stack([np.asarray(Image.fromarray(image).resize(side, Image.Resampling.BOX)) for image in batch]).astype(
        np.float32
    )


@functools.lru_cache(maxsize=4)
def _projection(dim: int) -> np.ndarray:
    """The fixed random projection from the features to ``dim`` (read-only, shared by every instance)."""
    rng = np.random.default_rng(PROJECTION_SEED)
    matrix = rng.standard_normal((FEATURES, dim)).astype(np.float32) / np.float32(np.sqrt(dim))
    matrix.flags.writeable = False
    return matrix


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def features(fine: np.ndarray) -> np.ndarray:
    """The unprojected features of images given as their ``fine_grid``: ``(n, FEATURES)`` float32."""
    n = len(fine)
    cells = pool(fine, COLOUR_GRID)  # (n, 8, 8, 3), 0-255
    darkness = (255.0 - cells).reshape(n, -1) / 255.0
    total = cells.sum(axis=3) + 3.0  # +3: black is grey, not undefined
    # opponent chromaticity: red-green and yellow-blue, independent of brightness
    chroma = np.stack(
        [(cells[..., 0] - cells[..., 1]) / total, (cells[..., 0] + cells[..., 1] - 2 * cells[..., 2]) / total],
        axis=-1,
    ).reshape(n, -1)

    grey = fine.mean(axis=3)
    dx = np.zeros_like(grey)
    dy = np.zeros_like(grey)
    dx[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
    dy[:, 1:-1, :] = grey[:, 2:, :] - grey[:, :-2, :]
    magnitude = np.hypot(dx, dy)
    # unsigned orientation (an edge and its mirror image count alike), in ORIENTATIONS bins
    bins = (np.mod(np.arctan2(dy, dx), np.pi) / np.pi * ORIENTATIONS).astype(np.intp) % ORIENTATIONS
    votes = np.zeros((*grey.shape, ORIENTATIONS), np.float32)
    np.put_along_axis(votes, bins[..., None], magnitude[..., None], axis=3)
    histograms = pool(votes, GRADIENT_CELLS)
    gradients = np.sqrt(histograms.reshape(n, -1))  # square root: a few strong edges do not drown the rest

    groups = [
        WEIGHTS["darkness"] * _unit_rows(darkness),
        WEIGHTS["chroma"] * _unit_rows(chroma),
        WEIGHTS["gradients"] * _unit_rows(gradients),
        np.full((n, 1), WEIGHTS["constant"], np.float32),
    ]
    return np.concatenate(groups, axis=1).astype(np.float32)


def activation_maps(batch: np.ndarray, fine: np.ndarray, cells: int) -> np.ndarray:
    """How far each of ``cells`` x ``cells`` cells differs from the photo's border colour: ``(n, cells, cells)``.

    The border colour is the median of the outermost pixels of ``batch``, so
    a product on a plain background lights up and the background stays near
    zero; the distance is taken on the ``fine`` grid's mean colours, so a
    noisy background averages out.
    """
    border = np.concatenate([batch[:, 0], batch[:, -1], batch[:, :, 0], batch[:, :, -1]], axis=1)
    background = np.median(border, axis=1).astype(np.float32)  # (n, 3)
    distance = np.abs(fine - background[:, None, None, :]).mean(axis=3)
    return (pool(distance, cells) / 255.0).astype(np.float32)


class FakeEmbedder:
    """A deterministic, TensorFlow-free embedder with the production interface (see the module docstring).

    ``choice`` is a ``WeightsChoice`` without a weights file (``random`` is
    true, as for ``FASHION_WEIGHTS=none``) and with its own weights id, so
    an index it builds is never mistaken for a real model's.
    """

    runtime = "fake"
    vector_space = "fp32"  # like every fp32 runtime; the weights id keeps fake indexes apart

    def __init__(self, model: str = DEFAULT_MODEL, weights_id: str = FAKE_WEIGHTS_ID):
        self.choice = WeightsChoice(None, weights_id, model)
        self.spec = self.choice.spec
        self.name = self.spec.name
        self.model_id = self.spec.model_id
        self.weights_id = weights_id
        self.dim = self.spec.dim
        self.input_size = self.spec.input_size
        self.map_cells = -(-self.input_size // MAP_CELL)  # rounded up, as a stride-32 backbone with padding
        if self.map_cells > FINE_GRID:
            raise ValueError(f"input size {self.input_size} needs a finer grid than FINE_GRID = {FINE_GRID}")
        self._projection = _projection(self.dim)
        self.warmed = False

    def _check(self, batch: np.ndarray) -> np.ndarray:
        # the real forward pass only takes model-ready uint8 squares; so does the fake
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        size = self.input_size
        if batch.dtype != np.uint8 or batch.shape[1:] != (size, size, 3):
            raise ValueError(f"expected (n, {size}, {size}, 3) uint8 images, got {batch.shape} {batch.dtype}")
        return batch

    def warm_up(self) -> None:
        """Embed one white image, as the real embedders do before their first request."""
        size = self.input_size
        self.embed(np.full((1, size, size, 3), 255, dtype=np.uint8))
        self.warmed = True

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed ``(n, size, size, 3)`` uint8 images to ``(n, dim)`` float32 unit vectors."""
        batch = self._check(batch)
        return self._vectors(fine_grid(batch)) if len(batch) else np.zeros((0, self.dim), np.float32)

    def embed_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors as ``embed`` gives them, and each image's ``(cells, cells)`` float32 activation map."""
        batch = self._check(batch)
        if not len(batch):
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.map_cells, self.map_cells), np.float32)
        fine = fine_grid(batch)
        return self._vectors(fine), activation_maps(batch, fine, self.map_cells)

    def embed_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors as ``embed`` gives them, and a ``(cells, cells, dim)`` feature layer per image.

        Like a real backbone's, its mean over channels is the activation map
        of ``embed_with_maps``; on top, each cell carries its mean colour
        through fixed channel weights that average to zero, so a learned
        weighing of the channels can tell a product's cells from a scene's.
        """
        batch = self._check(batch)
        cells = self.map_cells
        if not len(batch):
            return np.zeros((0, self.dim), np.float32), np.zeros((0, cells, cells, self.dim), np.float32)
        fine = fine_grid(batch)
        maps = activation_maps(batch, fine, cells)
        colours = pool(fine, cells) / 255.0
        mixing = np.random.default_rng(7).standard_normal((3, self.dim)).astype(np.float32)
        mixing -= mixing.mean(axis=1, keepdims=True)  # zero mean over channels: the map stays the mean
        features = maps[..., None] + np.einsum("nhwc,cd->nhwd", colours, mixing)
        return self._vectors(fine), features.astype(np.float32)

    def _vectors(self, fine: np.ndarray) -> np.ndarray:
        # einsum's own loops, not BLAS: the same vector for a photo alone or in a batch of any
        # size (a BLAS matmul rounds differently), and no BLAS threads to contend for the CPUs
        projected = np.einsum("nf,fd->nd", features(fine), self._projection)
        return _unit_rows(projected).astype(np.float32)

    def embed_one(self, image: np.ndarray) -> np.ndarray:
        """Embed one ``(size, size, 3)`` uint8 image to a ``(dim,)`` unit vector."""
        return self.embed(image[None])[0]
