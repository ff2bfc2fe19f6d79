"""Running a request through the query pipeline and shaping its results; shared by the pages and the API."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

from flask import url_for

from indexer.options import SIMILAR_FIELDS, BadQuery, SearchOptions, from_fields
from indexer.query import ImageError, PhotoResult, Ranked, Searcher

from .deadline import Busy, Deadline
from .queries import image_error, parse_upload
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


def result_dict(searcher: Searcher, ranked: Ranked) -> dict:
    """One result as the API documents it.

    ``distance`` and ``similarity`` compare shapes (the embeddings); a
    search that weighed colour adds ``colour_similarity`` and the joined
    ``score`` it was ranked by (less ``query.BOX_HANDICAP`` for a located
    box's find); ``match`` is the calibrated score and label of that same
    number, as the pages show it.
    """
    hit = ranked.hit
    row = searcher.describe(hit.row)
    result = {
        "id": row["id"],
        "filename": row["filename"],
        "distance": round(hit.distance, 6),
        "similarity": _unit(hit.similarity),
        "match": {
            "score": None if ranked.match.score is None else round(ranked.match.score, 2),
            "label": ranked.match.label,
        },
        "image_url": url_for("pages.catalogue_image", relpath=row["filename"]),
        "thumb_url": url_for("pages.thumbnail", name=row["thumb"]) if row["thumb"] else None,
        "metadata": row["metadata"],
    }
    if hit.score is not None:
        result.update(colour_similarity=_unit(hit.colour_similarity), score=round(hit.score, 6))
    return result


def card_dicts(
    searcher: Searcher, results: list[Ranked], first_rank: int = 1, colour_weight: float | None = None
) -> list[dict]:
    """Results for a page: the API's fields plus the rank, the match score and label,
    and the more-like-this link (carrying ``colour_weight`` when the search chose one).
    """
    extra = {} if colour_weight is None else {"colour_weight": f"{colour_weight:g}"}
    cards = []
    for rank, ranked in enumerate(results, start=first_rank):
        card = result_dict(searcher, ranked)
        card.update(
            rank=rank,
            match_score=ranked.match.score,
            match_label=ranked.match.label,
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
class UploadSearch:
    """A whole upload search: the searcher that answered, the validated options, one result per photo."""

    searcher: Searcher
    options: SearchOptions
    results: list[PhotoResult]
    timing_ms: dict[str, float]


@dataclass
class SimilarSearch:
    """More like this: the item's row, its neighbours and the validated options."""

    searcher: Searcher
    row: int
    results: list[Ranked]
    options: SearchOptions


def search_uploads(service, gate: ModelGate, form, files) -> UploadSearch:
    """Validate an upload request and run it through the query pipeline: the core of ``/search`` and ``/api/search``.

    The answer names the searcher it used: a new index generation may be
    loaded while the request runs, and rows must be described by the
    searcher that found them. Raises ``NotReady`` without an index,
    ``BadQuery`` for invalid input and ``Busy`` when the request's deadline
    (``FASHION_REQUEST_DEADLINE_S``) passes first.
    """
    pipeline = service.pipeline()
    searcher = pipeline.searcher
    cfg = service.settings
    if len(searcher) == 0:
        raise BadQuery(
            f"The catalogue has no products yet. Add product photos to {cfg.catalogue.name}; "
            "the site indexes them on its next check, or run `python -m indexer build`.",
            status=503,
        )
    deadline = Deadline(cfg.request_deadline_s, already_waited_s=pool_wait_s())
    # photos are fitted on the square of the model that will embed them
    upload = parse_upload(form, files, cfg, searcher.facets(), deadline, size=pipeline.embedder.input_size)

    def model_slot():
        return gate.slot(already_waited_s=pool_wait_s(), max_wait_s=deadline.remaining())

    try:
        results, timing = pipeline.search_photos(upload.photos, upload.options, model_slot=model_slot, budget=deadline)
    except ImageError as exc:  # decoding a located box again failed (a busy decoder)
        raise image_error(getattr(exc, "filename", None) or upload.photos[0].filename, exc) from None
    if cfg.metrics:
        from .metrics import observe_search

        observe_search(timing)
    return UploadSearch(searcher, upload.options, results, timing)


def similar_items(service, item_id: str, args) -> SimilarSearch:
    """More-like-this for a request.

    Raises ``NotReady`` without an index, ``BadQuery`` for a bad ``k`` or
    filter and ``UnknownItem`` for an unknown id.
    """
    pipeline = service.pipeline()
    options = from_fields(args, service.settings, pipeline.searcher.facets(), SIMILAR_FIELDS)
    row, results = pipeline.similar(item_id, options)
    return SimilarSearch(pipeline.searcher, row, results, options)
