"""Catalogue tuning: a projection of the model's vectors learned from the shop's own products.

ImageNet features of a product on white and of the same product in a
shopper's photo are often further apart than two different products. At
build time a sample of the catalogue's products is composed onto varied
synthetic scenes (``indexer.scenes``), every view is embedded, and a
regularised linear discriminant analysis with one class per product learns
a projection that pulls the views of one product together and pushes
different products apart:

* within-product scatter ``Sw`` from each product's views (on white, on two
  scenes, and a crop of its box from a third, as a located search embeds it)
  around their mean;
* between-product scatter ``Sb`` from the products' means;
* ``W`` solves ``Sb w = lambda (Sw + r) w`` for the largest ``lambda``,
  where ``r`` shrinks ``Sw`` towards its mean variance (``REGULARISATION``)
  so that directions the sample never saw vary in keep their weight.

Where styles.csv gives the sampled products' ``articleType``, a second
discriminant over the same views, with kinds of product as classes, adds
up to ``LABEL_DIMS`` columns to ``W`` at ``LABEL_WEIGHT`` of the product
part's length; without labels the product part is all of it.

A vector is tuned as ``normalise((x - mean) @ W)``: catalogue vectors once
when an index is published, query vectors on every search. The same views
teach where this shop's products are in a photo: the whole scene views'
feature layers, with the box each product was pasted in, give channel
weights for locating (``indexer.objectness``). ``projection.npy`` in
a generation holds ``mean`` as its first column, ``W`` beside it and those
weights as its last column; its checksum is in the manifest like every artifact's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import DEFAULT_INPUT_SIZE
from .objectness import ObjectnessStats
from .read_ahead import read_ahead

log = logging.getLogger(__name__)

TUNING_VERSION = 2  # 2: the projection carries the objectness weights
# What a projection is learned from, recorded in the manifest: a build relearns an older one once.
# 3: a crop of each product's box among its views, and the catalogue's kinds;
# 4: the objectness learned on the model's map layer (Lite0's 14 x 14 detail layer)
RECIPE = 4
DIMS = 256  # tuned dimensions: smaller and faster to search than the model's 1280 or 2048
SCENE_VIEWS = 3  # views of each sampled product on scenes, besides its packshot
# of which the last is a crop of the product's box, as a located search embeds it: the same forward
# passes (composing one costs 7.5 ms against 1.8), and the tuning learns the views the search
# compares (held-back true boxes +0.03 to +0.06 recall@5)
CROP_VIEWS = 1
REGULARISATION = 0.5  # share of Sw replaced by its mean variance (0.1 tuned tighter and lost type precision)
RETUNE_SHARE = 0.1  # an incremental build that changes more of the catalogue than this learns it again
SEED = 20261206
MIN_PRODUCTS = 16  # fewer products than this teach nothing that holds: vectors stay as the model gives them
# Where styles.csv names each product's kind, the tuning also learns what products of a kind share:
LABEL_FIELD = "articleType"
LABEL_DIMS = 64  # at most this many directions for kinds, beside the DIMS for products
# weight of the kind directions against the product ones (benchmarks/bench_labels.py, on items whose
# labels the tuning never saw): 0.4 raised type precision by 0.0066 and cost instance recall 0.0075;
# 0.5 gave 0.0083 for 0.019, 0.3 gave 0.0058 for 0.0066
LABEL_WEIGHT = 0.4
MIN_LABEL_CLASSES = 3


@dataclass(frozen=True)
class Projection:
    """A learned projection: ``mean`` (model dims) and ``matrix`` (model dims x tuned dims).

    ``objectness`` (one weight per dimension of the model's vectors; the map
    layer's channels are their last dimensions, and the weights of any
    dimensions before them are 0: ``objectness.product_maps``) says where
    the shop's products are in a photo (``indexer.objectness``); ``None`` for
    a projection learned without it. ``learned_from`` is how many items the
    catalogue had when it was learned (recorded in the manifest, not part of
    the projection's id): a catalogue that has since grown or shrunk by
    ``RETUNE_SHARE`` learns it again.
    """

    mean: np.ndarray
    matrix: np.ndarray
    learned_from: int | None = None
    objectness: np.ndarray | None = None
    kind_dims: int = 0  # the last columns of ``matrix`` that separate kinds, not products (manifest)
    recipe: int = RECIPE  # how it was learned (manifest): an older recipe is learned again

    @property
    def dim(self) -> int:
        """Dimensions of the tuned vectors."""
        return int(self.matrix.shape[1])

    @property
    def model_dim(self) -> int:
        """Dimensions of the model's vectors it takes."""
        return int(self.matrix.shape[0])

    @property
    def tuning_id(self) -> str:
        """A short id of this exact projection, recorded in the manifest."""
        parts = self.mean.tobytes() + self.matrix.tobytes()
        if self.objectness is None:
            return f"lda-v1-{hashlib.sha256(parts).hexdigest()[:16]}"
        digest = hashlib.sha256(parts + self.objectness.tobytes()).hexdigest()[:16]
        return f"lda-v{TUNING_VERSION}-{digest}"

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Tuned unit vectors for ``(n, model_dim)`` (or one ``(model_dim,)``) model vectors."""
        vectors = np.asarray(vectors, dtype=np.float32)
        tuned = (vectors - self.mean) @ self.matrix
        norms = np.linalg.norm(tuned, axis=-1, keepdims=True)
        return (tuned / np.maximum(norms, 1e-12)).astype(np.float32)

    def to_array(self) -> np.ndarray:
        """The one array ``projection.npy`` holds: ``mean`` as its first column, ``matrix``, then ``objectness``."""
        columns = [self.mean[:, None], self.matrix]
        if self.objectness is not None:
            columns.append(self.objectness[:, None])
        return np.concatenate(columns, axis=1).astype(np.float32)

    @classmethod
    def from_array(cls, array: np.ndarray, dim: int | None = None) -> Projection:
        """The projection ``to_array`` wrote, to ``dim`` tuned dimensions; ``ValueError`` for another shape.

        ``dim`` (the manifest's) tells whether the last column is the
        objectness: ``None`` reads every column after the mean as the matrix.
        """
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] < 2 or not np.isfinite(array).all():
            raise ValueError(f"a projection is a finite (model dims, 1 + tuned dims) array, got {array.shape}")
        if dim is None or array.shape[1] == dim + 1:
            return cls(np.ascontiguousarray(array[:, 0]), np.ascontiguousarray(array[:, 1:]))
        if array.shape[1] != dim + 2:
            raise ValueError(f"a projection to {dim} dims has {dim + 1} or {dim + 2} columns, not {array.shape[1]}")
        matrix, objectness = array[:, 1:-1], array[:, -1]
        return cls(np.ascontiguousarray(array[:, 0]), np.ascontiguousarray(matrix), objectness=objectness.copy())

    def save(self, path: Path) -> None:
        """Write ``projection.npy`` (callers write it atomically and checksum it)."""
        np.save(path, self.to_array(), allow_pickle=False)

    @classmethod
    def load(cls, path: Path, dim: int | None = None) -> Projection:
        """Read a ``projection.npy`` to ``dim`` tuned dimensions (see ``from_array``)."""
        return cls.from_array(np.load(path, allow_pickle=False), dim)


def _discriminant(vectors: np.ndarray, classes: np.ndarray, dims: int, regularisation: float):
    """``(centre, matrix)`` of the regularised LDA that separates ``classes`` (one per row of ``vectors``).

    The centre is the mean of the class means; ``matrix`` keeps the
    ``min(dims, classes - 1, model dims)`` strongest directions.
    """
    labels, inverse = np.unique(classes, return_inverse=True)
    dim = vectors.shape[1]
    counts = np.bincount(inverse).astype(np.float64)
    means = np.zeros((len(labels), dim))
    np.add.at(means, inverse, vectors)
    means /= counts[:, None]
    centre = means.mean(axis=0)
    within = vectors - means[inverse]
    scatter_within = within.T @ within / len(vectors)
    between = means - centre
    scatter_between = between.T @ between / len(labels)
    # shrink towards the mean variance: directions the sample saw little of keep their weight
    spread = np.trace(scatter_within) / dim
    scatter_within = (1 - regularisation) * scatter_within + regularisation * spread * np.eye(dim)
    # whiten the within-class scatter, then take the between-class scatter's main axes there
    values, axes = np.linalg.eigh(scatter_within)
    whiten = axes / np.sqrt(np.maximum(values, 1e-12 * values.max()))
    between_white = whiten.T @ scatter_between @ whiten
    strengths, directions = np.linalg.eigh(between_white)
    keep = min(dims, len(labels) - 1, dim)
    order = np.argsort(strengths)[::-1][:keep]
    return centre, whiten @ directions[:, order]


def usable_labels(labels: Sequence[str]) -> np.ndarray | None:
    """``labels`` (one per product, ``""`` for none) with those of fewer than 2 products blanked; ``None`` if
    fewer than ``MIN_LABEL_CLASSES`` kinds are left, or fewer than half the products have one.

    A kind seen on one product says nothing about what products of a kind share.
    """
    labels = np.asarray([str(label or "").strip() for label in labels], dtype=object)
    kinds, counts = np.unique(labels[labels != ""], return_counts=True)
    shared = set(kinds[counts >= 2])
    labels = np.array([label if label in shared else "" for label in labels], dtype=object)
    if len(shared) < MIN_LABEL_CLASSES or (labels != "").sum() * 2 < len(labels):
        return None
    return labels


def learn(
    vectors: np.ndarray,
    products: np.ndarray,
    dims: int = DIMS,
    regularisation: float = REGULARISATION,
    labels: Sequence[str] | None = None,
    label_weight: float = LABEL_WEIGHT,
    input_scale: np.ndarray | None = None,
):
    """The projection that separates ``products`` (one label per row of ``vectors``) best.

    ``vectors`` are the model's unit vectors of every view; rows with the
    same entry in ``products`` are views of one product. Returns a
    ``Projection`` to ``min(dims, products - 1, model dims)`` dimensions,
    and its ``kind_dims`` more with ``labels``.

    ``labels`` (one per product, ``labels[p]`` for the views whose entry in
    ``products`` is ``p``; the catalogue's ``LABEL_FIELD``) adds up to ``LABEL_DIMS`` directions that
    separate kinds of product, from a second LDA over the labelled views,
    weighed at ``label_weight`` of the instance part (``usable_labels``
    decides whether the labels are enough to learn from).

    ``input_scale`` (one factor per dimension, the model's ``tuning_scale``)
    multiplies the vectors before learning; the projection returned applies
    to the vectors as they are, the factors folded into it.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if input_scale is not None:
        vectors = vectors * np.asarray(input_scale, dtype=np.float64)
    products = np.asarray(products)
    if len(np.unique(products)) < 3:
        raise ValueError("tuning needs views of at least 3 products")
    centre, matrix = _discriminant(vectors, products, dims, regularisation)
    kinds = usable_labels(labels) if labels is not None else None
    if kinds is not None:
        view_kinds = kinds[products]
        labelled = view_kinds != ""
        _, kind_matrix = _discriminant(vectors[labelled], view_kinds[labelled], LABEL_DIMS, regularisation)
        # the kind part's typical length, a label_weight share of the instance part's, around one centre
        centred = vectors - centre
        lengths = np.linalg.norm(centred @ matrix, axis=1).mean(), np.linalg.norm(centred @ kind_matrix, axis=1).mean()
        share = lengths[0] / max(1e-12, lengths[1])
        matrix = np.concatenate([matrix, kind_matrix * (label_weight * share)], axis=1)
        kind_dims = kind_matrix.shape[1]
    else:
        kind_dims = 0
    if input_scale is not None:  # (x * s - c) @ M  ==  (x - c / s) @ (s M)
        scale = np.asarray(input_scale, dtype=np.float64)
        centre, matrix = centre / scale, matrix * scale[:, None]
    return Projection(centre.astype(np.float32), matrix.astype(np.float32), kind_dims=kind_dims, recipe=RECIPE)


def tuning_views(
    embed: Callable[[np.ndarray], np.ndarray],
    packshots: Sequence[np.ndarray],
    *,
    views: int = SCENE_VIEWS,
    crops: int = CROP_VIEWS,
    seed: int = SEED,
    batch: int = 32,
    size: int = DEFAULT_INPUT_SIZE,
    progress: Callable[[int, int], None] | None = None,
    embed_features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    objectness: ObjectnessStats | None = None,
    packshot_vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every product's vectors: its packshot and ``views`` scenes (``indexer.scenes``), with product labels.

    The last ``crops`` of each product's views are crops of its box (``scenes.crop_view``).

    ``embed`` maps a uint8 batch to unit vectors; scenes are drawn ``size``
    x ``size``, the model's input size, like the packshots; ``progress(done,
    total)`` is told after each batch. With ``embed_features`` (the
    embedder's ``embed_with_features``) and ``objectness``, the scene views'
    feature layers and product boxes are added to ``objectness`` from the
    same pass, until it has its ``max_views``. ``packshot_vectors`` (one
    row per packshot, as ``embed`` gives them) saves embedding the packshots again.
    """
    from .scenes import iter_tuning_views

    total = len(packshots) * (views + (packshot_vectors is None))
    out_vectors, out_products, done = [], [], 0
    if packshot_vectors is not None:
        out_vectors.append(np.asarray(packshot_vectors, np.float32).reshape(len(packshots), -1))
        out_products.append(np.arange(len(packshots)))
    for start in range(0, len(packshots) if packshot_vectors is None else 0, batch):
        clean = np.stack([packshots[i] for i in range(start, min(len(packshots), start + batch))])
        out_vectors.append(embed(clean))
        out_products.append(np.arange(start, start + len(clean)))
        done += len(clean)
        if progress:
            progress(done, total)
    rng = np.random.default_rng(seed)
    crops = min(crops, views)
    # the next batch is composed while this one is embedded; closed (its thread stopped) on any way out
    made = iter_tuning_views(rng, packshots, views, batch=batch, size=size, crops_per_product=crops)
    with contextlib.closing(read_ahead(made)) as batches:
        for products, scene_views, boxes, whole in batches:
            if embed_features is not None and objectness is not None and objectness.wants_more:
                vectors, features = embed_features(scene_views)
                # where products are in a photo: learned from whole scenes, which is what it is asked of
                objectness.add(features[whole], boxes[whole])
                out_vectors.append(vectors)
            else:
                out_vectors.append(embed(scene_views))
            out_products.append(products)
            done += len(products)
            if progress:
                progress(done, total)
    return np.concatenate(out_vectors).astype(np.float32), np.concatenate(out_products)


def sample_rows(count: int, limit: int, seed: int = SEED) -> np.ndarray:
    """Which of ``count`` catalogue items to learn from: all, or an even random ``limit`` of them, sorted."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def learn_from_catalogue(
    embed: Callable[[np.ndarray], np.ndarray],
    packshots: Sequence[np.ndarray],
    *,
    progress: Callable[[int, int], None] | None = None,
    size: int = DEFAULT_INPUT_SIZE,
    embed_features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    packshot_vectors: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    input_scale: np.ndarray | None = None,
) -> Projection:
    """Learn the catalogue's projection from ``packshots`` (model-ready arrays of sampled products).

    ``size`` is the model's input size (the packshots' side): the scenes are
    drawn at it. With ``embed_features`` (the embedder's
    ``embed_with_features``) the projection also carries the objectness
    weights learned from the same views. ``packshot_vectors``: the
    packshots' vectors when the catalogue already has them. ``labels``: each
    packshot's ``LABEL_FIELD`` (``""`` for none), and ``input_scale``: see ``learn``.
    """
    started = time.perf_counter()
    stats = ObjectnessStats() if embed_features is not None else None
    vectors, products = tuning_views(
        embed,
        packshots,
        progress=progress,
        size=size,
        embed_features=embed_features,
        objectness=stats,
        packshot_vectors=packshot_vectors,
    )
    embedded = time.perf_counter()
    projection = learn(vectors, products, labels=labels, input_scale=input_scale)
    weights = stats.solve() if stats is not None else None
    if weights is not None and len(weights) < projection.model_dim:
        # the map layer is the vector's last dimensions (Lite0's detail layer): stored aligned with them
        weights = np.concatenate([np.zeros(projection.model_dim - len(weights), np.float32), weights])
    if weights is not None and len(weights) == projection.model_dim:
        projection = dataclasses.replace(projection, objectness=weights)
    log.info(
        "Catalogue tuning learned from %d products (%d views): embedding %.1f s, solving %.1f s, %d dims%s%s",
        len(packshots), len(vectors), embedded - started, time.perf_counter() - embedded, projection.dim,
        f", with the kinds of {LABEL_FIELD}" if projection.kind_dims else "",
        ", with objectness" if projection.objectness is not None else "",
    )
    return projection
