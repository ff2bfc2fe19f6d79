"""HTML pages: upload form, results, more-like-this, images and the building page."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from indexer.images import preview_data_url

from . import context
from .context import requires_index
from .errors import RETRY_AFTER_S
from .files import send_catalogue_file, send_thumbnail
from .queries import BadQuery
from .searching import card_dicts, item_dict, search_uploads, similar_items

bp = Blueprint("pages", __name__)


def _form_context(svc, **extra) -> dict:
    cfg = svc.settings
    searcher = svc.searcher
    values = {
        "facets": searcher.facets() if searcher else {},
        "default_k": cfg.top_k,
        "max_k": cfg.max_k,
        "max_files": cfg.max_files,
        "max_upload_mb": cfg.max_upload_mb,
        "selected": {},
        "k": cfg.top_k,
        "error": None,
    }
    values.update(extra)
    return values


@bp.get("/")
@requires_index
def home():
    """The upload form (the building page while the index is not ready)."""
    return render_template("index.html", **_form_context(context.service()))


@bp.post("/search")
@requires_index
def search():
    """Search with one or more uploaded photos; re-show the form on bad input."""
    svc = context.service()
    try:
        outcome = search_uploads(svc, context.gate(), request.form, request.files)
    except BadQuery as exc:
        # the form again, with the shopper's choices and the message beside it
        selected = {k: v for k, v in request.form.items() if k != "k"}
        page = render_template(
            "index.html", **_form_context(svc, error=exc.message, selected=selected, k=request.form.get("k", ""))
        )
        # a busy decoder is a 503 like any other: tell the browser when to retry
        return page, exc.status, {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else {}
    rows = [
        {
            "filename": result.filename,
            "cropped": result.crop is not None,
            "preview": preview_data_url(result.array),
            "results": card_dicts(outcome.searcher, result.hits),
        }
        for result in outcome.results
    ]
    return render_template(
        "results.html", queries=rows, timing=outcome.timing_ms,
        **_form_context(svc, selected=outcome.query.filters, k=outcome.query.k),
    )


@bp.get("/items/<item_id>")
@requires_index
def item(item_id: str):
    """More like this: an item's neighbours from its stored vector."""
    svc = context.service()
    outcome = similar_items(svc, item_id, request.args)
    searcher = outcome.searcher
    return render_template(
        "item.html", item=item_dict(searcher, outcome.row), results=card_dicts(searcher, outcome.hits),
        **_form_context(svc, selected=outcome.filters, k=outcome.k),
    )


@bp.get("/catalogue/<anypath:relpath>")
def catalogue_image(relpath: str):
    """A catalogue original; only files the index lists, only from inside the catalogue."""
    svc = context.service()
    indexed = svc.searcher.filename_set if svc.searcher else set()
    return send_catalogue_file(svc.settings.catalogue, relpath, indexed)


@bp.get("/thumbs/<name>")
def thumbnail(name: str):
    """A thumbnail from the index dir, by its content-derived name."""
    cfg = context.settings()
    return send_thumbnail(cfg.index_dir / "thumbs", name)
