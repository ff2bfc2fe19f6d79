"""The JSON API: search, similar items, status and health."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from indexer.options import FILTER_FIELDS, check_filters, reject_unknown

from . import context, facets
from .context import requires_index
from .errors import RETRY_AFTER_S
from .searching import item_dict, result_dict, search_uploads, similar_items
from .site_health import site_health

bp = Blueprint("api", __name__)


@bp.post("/api/search")
@requires_index
def api_search():
    """Search with one or more ``image`` fields; one result list per photo.

    Each photo's ``box`` is the region that was embedded, as fractions
    ``[x, y, w, h]`` of the photo: its ``crop``, the product found in it,
    or the whole photo.
    """
    started = time.perf_counter()
    outcome = search_uploads(context.service(), context.gate(), request.form, request.files)
    queries = [
        {
            "filename": r.filename,
            "crop": list(r.photo.crop) if r.photo.crop else None,
            "box": [round(v, 4) for v in r.box],
            "located": r.located,
            "results": [result_dict(outcome.searcher, ranked) for ranked in r.results],
        }
        for r in outcome.results
    ]
    query = outcome.options
    timing = dict(outcome.timing_ms, total=round((time.perf_counter() - started) * 1000, 3))
    colour_weight = query.colour_weight if outcome.searcher.colours is not None else 0.0
    return jsonify(
        {
            "queries": queries,
            "k": query.k,
            "filters": query.filters,
            "colour_weight": colour_weight,
            "locate": query.locate,
            "timing_ms": timing,
        }
    )


@bp.get("/api/items/<item_id>/similar")
@requires_index
def api_similar(item_id: str):
    """Neighbours of a catalogue item from its stored vector."""
    outcome = similar_items(context.service(), item_id, request.args)
    searcher = outcome.searcher
    return jsonify(
        {
            "item": item_dict(searcher, outcome.row),
            "colour_weight": outcome.options.colour_weight if searcher.colours is not None else 0.0,
            "results": [result_dict(searcher, ranked) for ranked in outcome.results],
        }
    )


@bp.get("/api/facets")
@requires_index
def api_facets():
    """Filter values still matching under the given filters, with counts (the search form updates from it)."""
    searcher = context.service().require_searcher()
    reject_unknown(request.args.keys(), frozenset(FILTER_FIELDS))
    selected = check_filters(request.args, searcher.facets())
    counts = facets.facet_counts(searcher, selected)
    return jsonify(
        {
            "filters": selected,
            "matched": int(facets.matching_rows(searcher, selected).sum()),
            "facets": {name: [{"value": v, "count": n} for v, n in pairs] for name, pairs in counts.items()},
        }
    )


@bp.get("/api/status")
def api_status():
    """Index state and build progress, polled by the building page."""
    return jsonify(context.service().status())


@bp.get("/healthz")
def healthz():
    """200 when the whole site can serve searches, 503 (with Retry-After) otherwise, with the reason in ``reason``.

    Under gunicorn, every worker taking requests must serve the published
    index (``web/site_health.py``), or all the same earlier one when the
    published one failed verification (200, ``reason`` says so); the JSON
    counts them. An index of an
    empty catalogue serves no search: 503 ``empty_catalogue``, so a load
    balancer does not send shoppers to a site with nothing to find.
    """
    status, body = site_health(context.service(), current_app.extensions.get("fashion.worker_states"))
    if status == 200:
        return jsonify(body), 200
    return jsonify(body), status, {"Retry-After": str(RETRY_AFTER_S)}
