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
from indexer.search import ColourQuery, Hit, Searcher

from .deadline import Busy, Deadline
from .queries import (
    SIMILAR_FIELDS,
    BadQuery,
    Query,
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


@dataclass
class QueryResult:
    """The hits for one uploaded photo, with the decoded (cropped) photo for the results page."""

    filename: str
    array: np.ndarray
    hits: list[Hit]
    crop: tuple[float, float, float, float] | None = None
    vector: np.ndarray | None = None  # the photo's embedding, for "show more"
    colour: np.ndarray | None = None  # the colour descriptor of the region embedded, likewise
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # the region embedded, fractions of the photo
    located: bool = False  # the box was found automatically

    def __post_init__(self):
        if self.crop is not None and not self.located:
            self.box = tuple(self.crop)


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


def run_query(
    service, gate: ModelGate, query: Query, searcher: Searcher, deadline: Deadline | None = None
) -> tuple[list[QueryResult], dict]:
    """Embed every query image in one batch and search each in ``searcher``.

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
        vectors = service.embedder.embed(np.stack([img.array for img in query.images]))
        embedded = time.perf_counter()
    timing["queue"] = round((waited - started) * 1000, 3)
    timing["embed"] = round((embedded - waited) * 1000, 3)
    # the colour of the region that was embedded, never of a background the crop left out
    colours = [colour_descriptor(image.array) for image in query.images]
    timing["colour"] = round((time.perf_counter() - embedded) * 1000, 3)
    searched = time.perf_counter()
    results = [
        QueryResult(
            image.filename,
            image.array,
            searcher.search(vector, query.k, query.filters, colour=ColourQuery(colour, query.colour_weight)),
            image.crop,
            vector,
            colour,
        )
        for image, vector, colour in zip(query.images, vectors, colours)
    ]
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
