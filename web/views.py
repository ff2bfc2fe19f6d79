"""HTML pages: upload form, results, more-like-this, images and the building page."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from indexer.images import preview_data_url
from indexer.search import UnknownItem

from . import context
from .files import send_catalogue_file, send_thumbnail
from .queries import BadQuery
from .searching import item_dict, result_dict, search_uploads, similar_items
from .service import READY

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


def _not_ready(svc):
    status = svc.status()
    template = "error.html" if status["state"] == "error" else "building.html"
    code = 500 if status["state"] == "error" else 503
    message = status["message"] if status["state"] == "error" else None
    response = render_template(template, status=status, code=code, message=message)
    return response, code, {"Retry-After": "5"} if code == 503 else {}


@bp.get("/")
def home():
    """The upload form, or the building page while the index is not ready."""
    svc = context.service()
    if svc.state != READY:
        return _not_ready(svc)
    return render_template("index.html", **_form_context(svc))


@bp.post("/search")
def search():
    """Search with one or more uploaded photos; re-show the form on bad input."""
    svc = context.service()
    if svc.state != READY:
        return _not_ready(svc)
    try:
        searcher, query, entries, timing = search_uploads(svc, context.gate(), request.form, request.files)
    except BadQuery as exc:
        selected = {k: v for k, v in request.form.items() if k != "k"}
        page = render_template(
            "index.html", **_form_context(svc, error=exc.message, selected=selected, k=request.form.get("k", ""))
        )
        return page, exc.status
    rows = [
        {
            "filename": entry["filename"],
            "preview": preview_data_url(entry["array"]),
            "results": [result_dict(searcher, hit) for hit in entry["hits"]],
        }
        for entry in entries
    ]
    return render_template(
        "results.html", queries=rows, timing=timing,
        **_form_context(svc, selected=query.filters, k=query.k),
    )


@bp.get("/items/<item_id>")
def item(item_id: str):
    """More like this: an item's neighbours from its stored vector."""
    svc = context.service()
    if svc.state != READY:
        return _not_ready(svc)
    try:
        searcher, row, hits, k, filters = similar_items(svc, item_id, request.args)
    except UnknownItem:
        return render_template("error.html", code=404, message="There is no product with that id."), 404
    except BadQuery as exc:
        return render_template("error.html", code=exc.status, message=exc.message), exc.status
    return render_template(
        "item.html", item=item_dict(searcher, row), results=[result_dict(searcher, h) for h in hits],
        **_form_context(svc, selected=filters, k=k),
    )


@bp.get("/catalogue/<path:relpath>")
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
