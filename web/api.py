"""The JSON API: search, similar items, status and health."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from indexer.search import UnknownItem

from . import context
from .queries import BadQuery
from .searching import item_dict, result_dict, search_uploads, similar_items
from .service import READY

bp = Blueprint("api", __name__)


def json_error(message: str, status: int, **extra):
    """A JSON error body with the right status code."""
    body = {"error": {"status": status, "message": message, **extra}}
    headers = {"Retry-After": "5"} if status == 503 else {}
    return jsonify(body), status, headers


def _require_ready(svc):
    if svc.state == READY:
        return None
    status = svc.status()
    return json_error(
        status["message"] or "The catalogue index is still being built.", 503, state=status["state"],
        done=status["done"], total=status["total"],
    )


@bp.post("/api/search")
def api_search():
    """Search with one or more ``image`` fields; one result list per photo."""
    started = time.perf_counter()
    svc = context.service()
    not_ready = _require_ready(svc)
    if not_ready:
        return not_ready
    try:
        searcher, query, entries, timing = search_uploads(svc, context.gate(), request.form, request.files)
    except BadQuery as exc:
        return json_error(exc.message, exc.status, field=exc.field)
    queries = [
        {"filename": e["filename"], "results": [result_dict(searcher, h) for h in e["hits"]]} for e in entries
    ]
    timing["total"] = round((time.perf_counter() - started) * 1000, 3)
    return jsonify({"queries": queries, "k": query.k, "filters": query.filters, "timing_ms": timing})


@bp.get("/api/items/<item_id>/similar")
def api_similar(item_id: str):
    """Neighbours of a catalogue item from its stored vector."""
    svc = context.service()
    not_ready = _require_ready(svc)
    if not_ready:
        return not_ready
    try:
        searcher, row, hits, _k, _filters = similar_items(svc, item_id, request.args)
    except UnknownItem:
        return json_error(f"No catalogue item has id {item_id!r}.", 404)
    except BadQuery as exc:
        return json_error(exc.message, exc.status, field=exc.field)
    return jsonify({"item": item_dict(searcher, row), "results": [result_dict(searcher, h) for h in hits]})


@bp.get("/api/status")
def api_status():
    """Index state and build progress, polled by the building page."""
    return jsonify(context.service().status())


@bp.get("/healthz")
def healthz():
    """200 when searches can be served, 503 otherwise."""
    svc = context.service()
    state = svc.state
    code = 200 if state == READY else 503
    return jsonify({"state": state, "items": len(svc.searcher) if svc.searcher else 0}), code
