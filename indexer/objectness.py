"""Where the product is in a photo: a weighing of the model's channels, learned from the catalogue's own composites.

The model's activation map (its last feature layer's mean over channels) is
high wherever the network sees any object: a person, a chair or a patterned
rug as much as the product. Catalogue tuning composes products onto scenes
(``indexer.scenes``) and knows where each was pasted, so it can learn which
channels fire on this shop's products and not on their surroundings: a
regularised linear discriminant over the map layer's cells (Lite0's 14 x
14 detail layer, else the last feature layer), cells whose centre lies
inside the product's box against the others. The product's map
is then ``features @ objectness`` (``product_maps``), and ``indexer.locate``
forms its boxes on it instead of the channel mean.

The statistics are summed batch by batch (``ObjectnessStats``), so the views
are never held at once. The weights are a unit vector with one entry per
channel of the map layer; the tuning projection carries them, aligned with
the model vector's last dimensions (``indexer.tuning``).
"""

from __future__ import annotations

import numpy as np

REGULARISATION = 0.5  # share of the within-class scatter replaced by its mean variance, as in the projection
MIN_CELLS = 16  # fewer cells of either kind than this teach nothing
# Views counted: 800 give about 157,000 cells of Lite0's map layer for one direction in 672, plenty; the
# scatter costs a product of cells x channels x channels, so counting every view of a build costs more
MAX_VIEWS = 800


def cell_labels(boxes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``(n, rows, cols)`` bools: whether each feature cell's centre lies in its view's box.

    ``boxes`` are ``(n, 4)`` fractions ``(x, y, w, h)`` of the square view.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre_y = (np.arange(rows) + 0.5) / rows
    centre_x = (np.arange(cols) + 0.5) / cols
    x0, y0 = boxes[:, 0, None], boxes[:, 1, None]
    x1, y1 = x0 + boxes[:, 2, None], y0 + boxes[:, 3, None]
    inside_y = (centre_y >= y0) & (centre_y <= y1)  # (n, rows)
    inside_x = (centre_x >= x0) & (centre_x <= x1)  # (n, cols)
    return inside_y[:, :, None] & inside_x[:, None, :]


class ObjectnessStats:
    """Running sums over feature cells, inside and outside the product, to solve for the channel weights."""

    def __init__(self, max_views: int = MAX_VIEWS) -> None:
        self.gram: np.ndarray | None = None  # sum of x x^T over every cell
        self.sums: np.ndarray | None = None  # (2, channels): outside, inside
        self.counts = np.zeros(2)
        self.views = 0
        self.max_views = max_views

    @property
    def wants_more(self) -> bool:
        """Whether more views would still be counted (``max_views`` caps the cost)."""
        return self.views < self.max_views

    def add(self, features: np.ndarray, boxes: np.ndarray) -> None:
        """Count ``features`` (``(n, h, w, channels)``) of views whose product lies in ``boxes`` (``(n, 4)``)."""
        n, rows, cols, channels = features.shape
        if self.gram is None:
            self.gram = np.zeros((channels, channels))
            self.sums = np.zeros((2, channels))
        inside = cell_labels(boxes, rows, cols).ravel()
        cells = np.ascontiguousarray(features.reshape(-1, channels), dtype=np.float32)
        self.gram += cells.T @ cells  # one batch in float32 (BLAS), summed over batches in float64
        cells = cells.astype(np.float64)
        self.sums[1] += cells[inside].sum(axis=0)
        self.sums[0] += cells[~inside].sum(axis=0)
        self.counts += (np.count_nonzero(~inside), np.count_nonzero(inside))
        self.views += n

    def solve(self, regularisation: float = REGULARISATION) -> np.ndarray | None:
        """The unit channel weights that best tell product cells from scene cells; ``None`` with too few of either."""
        if self.gram is None or self.counts.min() < MIN_CELLS:
            return None
        means = self.sums / self.counts[:, None]
        total = self.counts.sum()
        within = self.gram - sum(count * np.outer(mean, mean) for count, mean in zip(self.counts, means))
        within /= total
        channels = within.shape[0]
        spread = np.trace(within) / channels
        shrunk = (1 - regularisation) * within + regularisation * spread * np.eye(channels)
        weights = np.linalg.solve(shrunk, means[1] - means[0])
        norm = np.linalg.norm(weights)
        if not np.isfinite(norm) or norm == 0:
            return None
        return (weights / norm).astype(np.float32)


def product_maps(features: np.ndarray, objectness: np.ndarray) -> np.ndarray:
    """Each image's product map, ``(n, h, w)`` float32: its feature cells weighed by ``objectness``.

    ``objectness`` may be longer than the cells have channels: it is stored
    one weight per dimension of the model's vector, whose last dimensions
    are the pooled map layer's channels (``tuning.Projection``), so its last
    ``channels`` entries are the weights.
    """
    features = np.asarray(features, dtype=np.float32)
    return features @ np.asarray(objectness, dtype=np.float32)[-features.shape[-1] :]
