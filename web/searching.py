"""Running searches and shaping results; shared by the HTML views and the JSON API."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from flask import url_for

from indexer.calibration import match_label, match_score
from indexer.colour import colour_descriptor
from indexer.images import ImageError
from indexer.locate import Photo, locate
from indexer.search import ColourQuery, Hit, Searcher

from .deadline import Busy, Deadline
from .queries import (
    SIMILAR_FIELDS,
    BadQuery,
    Query,
    image_error,
    parse_colour_weight,
    parse_filters,
    parse_k,
    parse_query,
    reject_unknown,
)
from .workers import pool_wait_s


class ModelGate:
    """Bounds concurrent forward passes in one worker.

    More parallel passes than cores only slow each other down; a request
    that cannot get a slot within ``timeout_s`` of arriving gets a 503 with
    Retry-After instead of hanging until the client gives up.
    """

    def __init__(self, slots: int, timeout_s: float):
        self._semaphore = threading.BoundedSemaphore(max(1, slots))
        self.timeout_s = timeout_s

    @contextmanager
    def slot(self, already_waited_s: float = 0.0, max_wait_s: float | None = None):
        """Hold one slot for the duration of the block.

        ``already_waited_s`` is time the request spent queued before it
        reached the app (in gunicorn's thread pool); it counts against the
        timeout, and a request whose budget is spent only gets a slot that
        is free right now. ``max_wait_s`` (what is left of the request's
        deadline) caps the wait further.
        """
        budget = self.timeout_s - max(0.0, already_waited_s)
        if max_wait_s is not None:
            budget = min(budget, max_wait_s)
        acquired = self._semaphore.acquire(timeout=budget) if budget > 0 else self._semaphore.acquire(blocking=False)
        if not acquired:
            raise Busy("The server is busy; please try again in a moment.")
        try:
            yield
        finally:
            self._semaphore.release()


def _unit(value: float) -> float:
    return round(max(0.0, min(1.0, value)), 6)


def result_dict(searcher: Searcher, hit: Hit) -> dict:
    """One result as the API documents it.

    ``distance`` and ``similarity`` compare shapes (the embeddings); a
    search that weighed colour adds ``colour_similarity`` and the joined
    ``score`` it was ranked by.
    """
    row = searcher.describe(hit.row)
    result = {
        "id": row["id"],
        "filename": row["filename"],
        "distance": round(hit.distance, 6),
        "similarity": _unit(hit.similarity),
        "image_url": url_for("pages.catalogue_image", relpath=row["filename"]),
        "thumb_url": url_for("pages.thumbnail", name=row["thumb"]) if row["thumb"] else None,
        "metadata": row["metadata"],
    }
    if hit.score is not None:
        result.update(colour_similarity=_unit(hit.colour_similarity), score=round(hit.score, 6))
    return result


def card_dicts(
    searcher: Searcher, hits: list[Hit], first_rank: int = 1, colour_weight: float | None = None
) -> list[dict]:
    """Results for a page: the API's fields plus the rank, the calibrated match score and label,
    and the more-like-this link (carrying ``colour_weight`` when the search chose one).
    """
    scale = searcher.manifest.get("match_scale")
    extra = {} if colour_weight is None else {"colour_weight": f"{colour_weight:g}"}
    cards = []
    for rank, hit in enumerate(hits, start=first_rank):
        card = result_dict(searcher, hit)
        score = match_score(hit.similarity, scale)
        card.update(
            rank=rank,
            match_score=score,
            match_label=match_label(score, hit.distance),
            more_url=url_for("pages.item", item_id=card["id"], **extra),
        )
        cards.append(card)
    return cards


def item_dict(searcher: Searcher, row: int) -> dict:
    """A catalogue item (without distance), for more-like-this pages."""
    facts = searcher.describe(row)
    return {
        "id": facts["id"],
        "filename": facts["filename"],
        "image_url": url_for("pages.catalogue_image", relpath=facts["filename"]),
        "thumb_url": url_for("pages.thumbnail", name=facts["thumb"]) if facts["thumb"] else None,
        "metadata": facts["metadata"],
    }


WHOLE_PHOTO = (0.0, 0.0, 1.0, 1.0)


@dataclass
class QueryResult:
    """The hits for one uploaded photo, with what was searched for the results page.

    ``photo`` is the model-ready array of the photo as uploaded (cropped, when
    the shopper cropped it); ``array`` the region that was embedded; ``box``
    that region as fractions of the photo, found by locating (``located``),
    the shopper's crop, or the whole photo.
    """

    filename: str
    photo: np.ndarray
    array: np.ndarray
    hits: list[Hit]
    crop: tuple[float, float, float, float] | None = None
    vector: np.ndarray | None = None  # the region's embedding, for "show more"
    colour: np.ndarray | None = None  # the region's colour descriptor, likewise
    box: tuple[float, float, float, float] = WHOLE_PHOTO
    located: bool = False
    size: tuple[int, int] | None = None  # the upright photo's (width, height), when it was not cropped


@dataclass
class UploadSearch:
    """A whole upload search: the searcher that answered, the validated query, one result per photo."""

    searcher: Searcher
    query: Query
    results: list[QueryResult]
    timing_ms: dict[str, float]


@dataclass
class SimilarSearch:
    """More like this: the item's row, its neighbours and the validated ``k``, filters and colour weight."""

    searcher: Searcher
    row: int
    hits: list[Hit]
    k: int
    filters: dict[str, str]
    colour_weight: float = 0.0


@dataclass
class _Embedded:
    vector: np.ndarray
    array: np.ndarray
    box: tuple[float, float, float, float] | None = None  # found by locating


def _embed(embedder, query: Query, deadline: Deadline | None) -> list[_Embedded]:
    """Each photo's vector: through ``indexer.locate``, or whole when cropped or asked not to locate."""
    images = query.images
    found = [i for i, image in enumerate(images) if query.locate and image.crop is None and image.data is not None]
    out: list[_Embedded | None] = [None] * len(images)
    rest = [i for i in range(len(images)) if i not in found]
    if rest:
        vectors = embedder.embed(np.stack([images[i].array for i in rest]))
        for i, vector in zip(rest, vectors):
            out[i] = _Embedded(vector, images[i].array)
    if found:
        photos = [Photo(images[i].data, images[i].array, images[i].size) for i in found]
        try:
            located = locate(embedder, photos, wait_s=deadline.remaining() if deadline is not None else None)
        except ImageError as exc:  # decoding the box again failed (a busy decoder)
            raise image_error(images[found[0]].filename, exc) from None
        for i, result in zip(found, located):
            out[i] = _Embedded(result.vector, result.array, result.box)
    return out


def run_query(
    service, gate: ModelGate, query: Query, searcher: Searcher, deadline: Deadline | None = None
) -> tuple[list[QueryResult], dict]:
    """Embed every query image (finding the product in each, unless told not to) and search each in ``searcher``.

    Returns one result per image, in upload order, and the server-side
    timings in milliseconds. The wait for the model counts against
    ``deadline``; a request already past it stops before the forward pass.
    """
    timing = {"decode": round(sum(img.decode_ms for img in query.images), 3)}
    started = time.perf_counter()
    if deadline is not None:
        deadline.check()
    max_wait_s = deadline.remaining() if deadline is not None else None
    with gate.slot(already_waited_s=pool_wait_s(), max_wait_s=max_wait_s):
        waited = time.perf_counter()
        embedded = _embed(service.embedder, query, deadline)
        done = time.perf_counter()
    timing["queue"] = round((waited - started) * 1000, 3)
    timing["embed"] = round((done - waited) * 1000, 3)  # with locating: both passes and the box's decode
    # the colour of the region that was embedded, never of a background the box left out
    colours = [colour_descriptor(item.array) for item in embedded]
    timing["colour"] = round((time.perf_counter() - done) * 1000, 3)
    searched = time.perf_counter()
    results = []
    for image, item, colour in zip(query.images, embedded, colours):
        hits = searcher.search(item.vector, query.k, query.filters, colour=ColourQuery(colour, query.colour_weight))
        box = item.box or image.crop or WHOLE_PHOTO
        results.append(
            QueryResult(
                image.filename, image.array, item.array, hits, image.crop, item.vector, colour,
                tuple(box), item.box is not None, image.size,
            )
        )
    timing["search"] = round((time.perf_counter() - searched) * 1000, 3)
    return results, timing


def search_uploads(service, gate: ModelGate, form, files) -> UploadSearch:
    """Validate an upload request and run it: the shared core of ``/search`` and ``/api/search``.

    The answer names the searcher it used: a new index generation may be
    loaded while the request runs, and rows must be described by the
    searcher that found them. Raises ``NotReady`` without an index,
    ``BadQuery`` for invalid input and ``Busy`` when the request's deadline
    (``FASHION_REQUEST_DEADLINE_S``) passes first.
    """
    searcher = service.require_searcher()
    cfg = service.settings
    if len(searcher) == 0:
        raise BadQuery(
            f"The catalogue has no products yet. Add product photos to {cfg.catalogue.name}; "
            "the site indexes them on its next check, or run `python -m indexer build`.",
            status=503,
        )
    deadline = Deadline(cfg.request_deadline_s, already_waited_s=pool_wait_s())
    query = parse_query(
        form,
        files,
        facets=searcher.facets(),
        default_k=cfg.top_k,
        max_k=cfg.max_k,
        max_files=cfg.max_files,
        default_colour_weight=cfg.colour_weight,
        default_locate=cfg.locate,
        deadline=deadline,
    )
    results, timing = run_query(service, gate, query, searcher, deadline)
    if cfg.metrics:
        from .metrics import observe_search

        observe_search(timing)
    return UploadSearch(searcher, query, results, timing)


def similar_items(service, item_id: str, args) -> SimilarSearch:
    """More-like-this for a request.

    Raises ``NotReady`` without an index, ``BadQuery`` for a bad ``k`` or
    filter and ``UnknownItem`` for an unknown id.
    """
    searcher = service.require_searcher()
    cfg = service.settings
    reject_unknown(args.keys(), SIMILAR_FIELDS)
    k = parse_k(args.get("k"), cfg.top_k, cfg.max_k)
    filters = parse_filters(args, searcher.facets())
    colour_weight = parse_colour_weight(args.get("colour_weight"), cfg.colour_weight)
    row, hits = searcher.similar(item_id, k, filters, colour_weight=colour_weight)
    return SimilarSearch(searcher, row, hits, k, filters, colour_weight)
