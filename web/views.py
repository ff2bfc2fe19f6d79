"""HTML pages: upload form, results, show more, more-like-this, browse, images and the building page."""

from __future__ import annotations

import re

from flask import Blueprint, render_template, request

from indexer.images import preview_data_url
from indexer.search import FILTER_FIELDS

from . import context, facets
from .context import requires_index
from .errors import count_bad_query, error_response
from .files import send_catalogue_file, send_thumbnail
from .queries import BROWSE_FIELDS, BadQuery, parse_filters, parse_k, parse_page, reject_unknown
from .searching import card_dicts, item_dict, search_uploads, similar_items

bp = Blueprint("pages", __name__)

BROWSE_PAGE_SIZE = 24
MORE_FIELDS = frozenset({"query", "filename", "preview", "k", *FILTER_FIELDS})
_PREVIEW = re.compile(r"^data:image/jpeg;base64,[A-Za-z0-9+/=]{1,200000}$")


def _form_context(svc, **extra) -> dict:
    cfg = svc.settings
    searcher = svc.searcher
    known = searcher.facets() if searcher else {}
    # count under the valid choices only: a rejected value must not empty the other lists
    chosen = {k: v for k, v in (extra.get("selected") or {}).items() if v in known.get(k, ())}
    values = {
        "facets": facets.facet_counts(searcher, chosen) if searcher else {},
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


def _empty_catalogue_page():
    svc = context.service()
    # the folder's name only: a server path is nobody's business on a public page
    return render_template("empty.html", catalogue_name=svc.settings.catalogue.name), 200


@bp.get("/")
@requires_index
def home():
    """The upload form (the building page while the index is not ready)."""
    svc = context.service()
    if len(svc.searcher) == 0:
        return _empty_catalogue_page()
    return render_template("index.html", **_form_context(svc))


def _next_k(settings, k: int) -> int | None:
    """What "show more" asks for: k plus one page of results, up to the limit (None at the limit)."""
    more = min(k + settings.top_k, settings.max_k)
    return more if more > k else None


def _results_page(svc, rows, k, filters, timing=None):
    return render_template(
        "results.html", queries=rows, timing=timing, next_k=_next_k(svc.settings, k),
        **_form_context(svc, selected=filters, k=k),
    )


@bp.post("/search")
@requires_index
def search():
    """Search with one or more uploaded photos; re-show the form on bad input."""
    svc = context.service()
    try:
        outcome = search_uploads(svc, context.gate(), request.form, request.files)
    except BadQuery as exc:
        count_bad_query(exc)
        # the form again, with the shopper's choices and the message beside it
        selected = {k: v for k, v in request.form.items() if k in FILTER_FIELDS and v}
        form = _form_context(svc, error=exc.message, selected=selected, k=request.form.get("k", ""))
        # through error_response, so a 503 (busy decoder) carries Retry-After like any other
        return error_response(exc.status, exc.message, template="index.html", **form)
    rows = [
        {
            "filename": result.filename,
            "cropped": result.crop is not None,
            "preview": preview_data_url(result.array),
            "vector": context.carried().dumps(result.vector, outcome.searcher.manifest),
            "results": card_dicts(outcome.searcher, result.hits),
        }
        for result in outcome.results
    ]
    return _results_page(svc, rows, outcome.query.k, outcome.query.filters, outcome.timing_ms)


@bp.post("/search/more")
@requires_index
def search_more():
    """Show more: the same photos' next results, from the vectors the results page carried."""
    svc = context.service()
    searcher = svc.require_searcher()
    form = request.form
    reject_unknown(form.keys(), MORE_FIELDS)
    k = parse_k(form.get("k"), svc.settings.top_k, svc.settings.max_k)
    filters = parse_filters(form, searcher.facets())
    vectors = form.getlist("query")
    names, previews = form.getlist("filename"), form.getlist("preview")
    if not vectors or len(vectors) > svc.settings.max_files or not (len(vectors) == len(names) == len(previews)):
        raise BadQuery("The search to continue is not understood; please search again.", field="query")
    rows = []
    for vector_text, name, preview in zip(vectors, names, previews):
        vector = context.carried().loads(vector_text, searcher.manifest, searcher.embeddings.shape[1])
        rows.append({
            "filename": name[:120],
            "cropped": False,
            "preview": preview if _PREVIEW.match(preview) else None,
            "vector": vector_text,
            "results": card_dicts(searcher, searcher.search(vector, k, filters)),
        })
    return _results_page(svc, rows, k, filters)


@bp.get("/items/<item_id>")
@requires_index
def item(item_id: str):
    """More like this: an item's neighbours from its stored vector."""
    svc = context.service()
    outcome = similar_items(svc, item_id, request.args)
    searcher = outcome.searcher
    return render_template(
        "item.html", item=item_dict(searcher, outcome.row), results=card_dicts(searcher, outcome.hits),
        next_k=_next_k(svc.settings, outcome.k),
        **_form_context(svc, selected=outcome.filters, k=outcome.k),
    )


@bp.get("/browse")
@requires_index
def browse():
    """The catalogue as a paged grid, with the same filters as a search."""
    svc = context.service()
    searcher = svc.require_searcher()
    if len(searcher) == 0:
        return _empty_catalogue_page()
    reject_unknown(request.args.keys(), BROWSE_FIELDS)
    filters = parse_filters(request.args, searcher.facets())
    number = parse_page(request.args.get("page"))
    page = facets.page_of(searcher, filters, number, BROWSE_PAGE_SIZE)
    if number > page.pages:
        raise BadQuery(f"There are only {page.pages} pages; page {number} does not exist.", field="page")
    items = [item_dict(searcher, row) for row in page.rows]
    return render_template("browse.html", items=items, page=page, **_form_context(svc, selected=filters))


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
