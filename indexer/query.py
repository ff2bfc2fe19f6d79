"""The one query pipeline: photos and ``SearchOptions`` in, ranked hits with a match score and label out.

Every entry point searches through it: the site's form and "show more",
the JSON API, more-like-this, ``python -m indexer search`` and
``evaluate``. The steps, in order:

1. ``decode_photo``: the upload's bytes to a model-ready array (a shopper's
   crop applied), keeping the bytes to crop a located box from again;
2. regions: the crop, or the whole photo and the boxes where the product
   may be (``indexer.locate``);
3. vectors: each region through the model, then the index's catalogue
   tuning (``indexer.tuning``);
4. colour: each region's own descriptor (``indexer.colour``), so a box's
   colour is its product's;
5. candidates and exact re-rank: ``Searcher.search`` by the joined score,
   for each region; each product keeps its best score over the regions;
6. match: the calibrated score and its words, from the very number the
   list is ranked by, so a label never gets stronger further down.

A new ranking idea is one change here, and every entry point gets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw

from .calibration import EXACT_DISTANCE, match_label, match_score
from .colour import DIM as COLOUR_DIM
from .colour import colour_descriptor
from .decode_pool import DecodePool, upload_pool
from .embedder import Embedder
from .images import INPUT_SIZE, Crop, ImageError, is_image_path, load_for_model, load_with_size, preview_data_url
from .locate import Located, Photo, locate, to_square_box
from .options import FILTER_FIELDS, BadQuery, SearchOptions
from .search import ColourQuery, Hit, Searcher, UnknownItem

# What the web layer may use of the indexer, besides loading (see tests/test_structure.py).
__all__ = [
    "COLOUR_DIM", "FILTER_FIELDS", "WHOLE_PHOTO", "BadQuery", "Crop", "DecodePool", "Hit", "ImageError", "Match",
    "PhotoResult", "QueryPhoto", "QueryPipeline", "Ranked", "SearchOptions", "Searcher", "UnknownItem", "decode_photo",
    "is_image_path", "preview_data_url", "preview_with_box", "upload_pool",
]

WHOLE_PHOTO: Crop = (0.0, 0.0, 1.0, 1.0)


class Budget(Protocol):
    """A request's time limit: ``check()`` raises once it is spent, ``remaining()`` gives the seconds left."""

    def check(self) -> None: ...

    def remaining(self) -> float: ...


@dataclass(frozen=True)
class QueryPhoto:
    """One photo to search with, decoded and ready for the model.

    ``array`` is the whole upright photo fitted on the model's square, or
    the shopper's ``crop`` of it. Without a crop, ``source`` keeps the bytes
    (a located box is decoded again from them) and ``size`` the upright
    photo's (width, height). ``pool``: the decode processes the photo was
    decoded in, which decode its located boxes too (``None``: this process).
    """

    filename: str
    array: np.ndarray
    decode_ms: float = 0.0
    crop: Crop | None = None
    source: bytes | None = None
    size: tuple[int, int] | None = None
    pool: DecodePool | None = None

    def decode_box(self, size: int, box: Crop, wait_s: float | None) -> np.ndarray:
        """A located ``box`` of this photo, model-ready at ``size``, decoded where the photo was."""
        if self.source is None:
            raise ValueError("a shopper's crop has no source to decode boxes from")
        try:
            if self.pool is None:
                return load_for_model(self.source, size, crop=box, wait_s=wait_s)
            return self.pool.decode(self.source, size, box, wait_s)[0]
        except ImageError as exc:
            exc.filename = self.filename  # which photo's box failed, for the answer's message
            raise


def decode_photo(
    data: bytes,
    filename: str,
    crop: Crop | None = None,
    wait_s: float | None = None,
    size: int | None = None,
    pool: DecodePool | None = None,
) -> QueryPhoto:
    """Decode a photo's bytes for the pipeline (``crop`` applied); raises ``ImageError``.

    ``size`` is the side of the model's square (``embedder.input_size``;
    ``None``: the default model's). ``wait_s`` caps the wait for a share of
    the process's decode budget. With a ``pool`` (the web app's,
    ``upload_pool(settings)``) one of its processes decodes, under the
    operating system's memory and time limits, and ``wait_s`` caps the
    decode's time too; without one (the CLI's ``search``), this process does.
    """
    started = time.perf_counter()
    square = INPUT_SIZE if size is None else size
    if pool is None:
        array, photo_size = load_with_size(data, square, crop, wait_s)
    else:
        array, photo_size = pool.decode(data, square, crop, wait_s)
    if crop is not None:  # a shopper's crop is searched as it is: nothing is located in it
        photo_size, source = None, None
    else:
        source = data
    return QueryPhoto(filename, array, (time.perf_counter() - started) * 1000, crop, source, photo_size, pool)


@dataclass(frozen=True)
class Match:
    """How good a hit is, on the catalogue's own scale: ``score`` 0 to 100 and its ``label``."""

    score: float | None
    label: str | None


@dataclass(frozen=True)
class Ranked:
    """One result: the hit the searcher ranked and its match, from the same number."""

    hit: Hit
    match: Match

    @property
    def row(self) -> int:
        """The hit's row in the index."""
        return self.hit.row


@dataclass
class PhotoResult:
    """What one photo found, with what was searched.

    ``region`` is the model-ready array of the region that found the first
    result, ``box`` that region as fractions of the photo (found by locating
    when ``located``, else the shopper's crop or the whole photo).
    ``vectors`` and ``colours`` hold every region searched, the whole photo
    (or crop) first, in the index's space: "show more" searches them all again.
    """

    photo: QueryPhoto
    region: np.ndarray
    box: Crop
    located: bool
    vectors: np.ndarray
    colours: np.ndarray
    results: list[Ranked]

    @property
    def filename(self) -> str:
        """The photo's display name."""
        return self.photo.filename


def ranking_score(hit: Hit) -> float:
    """The number a list of hits is ranked by: the joined score, or shape similarity alone."""
    return hit.similarity if hit.score is None else hit.score


def matches(hits: Sequence[Hit], scale: dict | None, values: Sequence[float] | None = None) -> list[Ranked]:
    """Each hit with its match, computed from the score the list is ranked by (``values``, default each hit's own).

    The scale is monotonic, so a label never gets stronger down the list;
    "Same photo" is kept for a near-zero distance at the top of the list.
    """
    ranked, best = [], None
    for position, hit in enumerate(hits):
        value = ranking_score(hit) if values is None else values[position]
        best = value if best is None else best
        score = match_score(value, scale)
        same_photo = value >= best and hit.distance <= EXACT_DISTANCE  # only the top can be the same photo
        ranked.append(Ranked(hit, Match(score, match_label(score, same_photo))))
    return ranked


def fuse(
    candidate_hits: Sequence[list[Hit]], k: int, handicaps: Sequence[float] | None = None
) -> tuple[list[Hit], list[int], list[float]]:
    """The ``k`` best items over several regions' hits, each at its best score: the hits, their regions and scores.

    A region's scores are lowered by its entry in ``handicaps`` (a box must
    beat the whole photo by that much). Exact: an item among the fused best
    ``k`` is among the best ``k`` of the region where it scores best, so
    each region's own top ``k`` is enough.
    """
    best: dict[int, tuple[float, int, Hit]] = {}
    for region, hits in enumerate(candidate_hits):
        handicap = handicaps[region] if handicaps is not None else 0.0
        for hit in hits:
            value = ranking_score(hit) - handicap
            if hit.row not in best or value > best[hit.row][0]:
                best[hit.row] = (value, region, hit)
    order = sorted(best.values(), key=lambda entry: (-entry[0], entry[2].row))[:k]
    return [hit for _, _, hit in order], [region for _, region, _ in order], [value for value, _, _ in order]


# How much a located box must beat the whole photo by to rank its finds: a packshot's zoomed-in
# crop can match other items a little better than the whole photo does, a shopper's box by far more.
BOX_HANDICAP = 0.02


class QueryPipeline:
    """Searches one index with one model: the steps of the module docstring, for every entry point."""

    def __init__(self, embedder: Embedder, searcher: Searcher):
        self.embedder = embedder
        self.searcher = searcher

    # ------------------------------------------------------------ photos

    def _regions(
        self, photos: Sequence[QueryPhoto], options: SearchOptions, budget: Budget | None
    ) -> list[list[Located]]:
        """Each photo's regions to search: the whole photo (or crop) first, then any located boxes."""
        found = [i for i, p in enumerate(photos) if options.locate and p.crop is None and p.source is not None]
        out: list[list[Located]] = [[] for _ in photos]
        rest = [i for i in range(len(photos)) if i not in found]
        if rest:
            vectors = self.embedder.embed(np.stack([photos[i].array for i in rest]))
            for i, vector in zip(rest, vectors):
                out[i] = [Located(vector, None, photos[i].array)]  # the photo, or the shopper's crop, as it is
        if found:
            located = locate(
                self.embedder,
                [Photo(photos[i].source, photos[i].array, photos[i].size, photos[i].decode_box) for i in found],
                wait_s=budget.remaining() if budget is not None else None,
                objectness=getattr(self.searcher.projection, "objectness", None),
            )
            for i, regions in zip(found, located):
                out[i] = regions
        return out

    def search_photos(
        self,
        photos: Sequence[QueryPhoto],
        options: SearchOptions,
        *,
        model_slot: Callable[[], AbstractContextManager] = nullcontext,
        budget: Budget | None = None,
    ) -> tuple[list[PhotoResult], dict[str, float]]:
        """Search with each photo; one result per photo in order, and the timings in milliseconds.

        Each photo's regions (the whole photo and any located boxes) are
        searched, and each product keeps its best score over them; the box
        reported is the region that found the first result. ``model_slot()``
        is held while the model runs (the web app bounds concurrent forward
        passes with it); ``budget`` stops the work once a request's time is
        spent. Raises ``ImageError`` when a located box cannot be decoded again.
        """
        timing = {"decode": round(sum(p.decode_ms for p in photos), 3)}
        started = time.perf_counter()
        if budget is not None:
            budget.check()
        with model_slot():
            waited = time.perf_counter()
            regions = self._regions(photos, options, budget)
            done = time.perf_counter()
        timing["queue"] = round((waited - started) * 1000, 3)
        timing["embed"] = round((done - waited) * 1000, 3)  # with locating: every pass and the boxes' decodes
        # each region's own colour: a box's is its product's, the whole photo's that of all of it
        colours = [np.stack([colour_descriptor(region.array) for region in candidates]) for candidates in regions]
        timing["colour"] = round((time.perf_counter() - done) * 1000, 3)
        searched = time.perf_counter()
        results = []
        for photo, candidates, region_colours in zip(photos, regions, colours):
            # into the index's space: the catalogue tuning, when the index has one
            tuned = self.searcher.tune(np.stack([region.vector for region in candidates]))
            ranked, chosen = self._fused(tuned, region_colours, options)
            region = candidates[chosen]
            box = region.box or photo.crop or WHOLE_PHOTO
            results.append(
                PhotoResult(photo, region.array, tuple(box), region.box is not None, tuned, region_colours, ranked)
            )
        timing["search"] = round((time.perf_counter() - searched) * 1000, 3)
        return results, timing

    def _hits(self, vector: np.ndarray, colour: np.ndarray | None, options: SearchOptions) -> list[Hit]:
        query_colour = None if colour is None else ColourQuery(colour, options.colour_weight)
        return self.searcher.search(vector, options.k, options.filters, colour=query_colour)

    # ------------------------------------------------------------ vectors and items

    def _fused(self, vectors: np.ndarray, colours: np.ndarray, options: SearchOptions) -> tuple[list[Ranked], int]:
        """Search each region (the first the whole photo or crop, the rest boxes) and fuse: results, first's region."""
        handicaps = [0.0] + [BOX_HANDICAP] * (len(vectors) - 1)
        per_region = [self._hits(vector, colour, options) for vector, colour in zip(vectors, colours)]
        hits, origin, values = fuse(per_region, options.k, handicaps)
        # a box's finds are ranked by their joined score less the box's handicap: that is the score they report
        hits = [replace(hit, score=value) if hit.score is not None else hit for hit, value in zip(hits, values)]
        return matches(hits, self.searcher.manifest.get("match_scale"), values), (origin[0] if origin else 0)

    def search_vectors(self, vectors: np.ndarray, colours: np.ndarray, options: SearchOptions) -> list[Ranked]:
        """The best items for a photo's regions, already in the index's space ("show more" starts here).

        ``vectors`` and ``colours`` are a ``PhotoResult``'s, whole photo first:
        the same fusion as the first page, so "show more" continues it.
        """
        return self._fused(np.atleast_2d(vectors), np.atleast_2d(colours), options)[0]

    def similar(self, item_id: str, options: SearchOptions) -> tuple[int, list[Ranked]]:
        """More like this: a catalogue item's neighbours from its stored vector and colour, itself left out.

        Raises ``UnknownItem`` for an id the index does not have.
        """
        row, hits = self.searcher.similar(item_id, options.k, options.filters, colour_weight=options.colour_weight)
        return row, matches(hits, self.searcher.manifest.get("match_scale"))


# the found box on the query photo: a white line between dark halos reads on light, dark and busy photos
BOX_COLOUR, BOX_HALO = (255, 255, 255), (16, 18, 24)


def preview_with_box(result: PhotoResult) -> np.ndarray:
    """The photo (fitted on the model's square) with the located box drawn on it and the rest dimmed."""
    photo = result.photo
    if not result.located or photo.size is None:
        return photo.array
    square = photo.array.shape[0]  # the model's input size: the photo was fitted on its square
    left, top, width, height = (round(v) for v in to_square_box(result.box, photo.size, square))
    dimmed = (photo.array.astype(np.float32) * 0.55 + 255 * 0.1).astype(np.uint8)
    dimmed[top : top + height, left : left + width] = photo.array[top : top + height, left : left + width]
    image = Image.fromarray(dimmed)
    draw = ImageDraw.Draw(image)
    right, bottom = left + width - 1, top + height - 1
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), outline=BOX_HALO, width=5)
    draw.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=3)
    return np.asarray(image)
