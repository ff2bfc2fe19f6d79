"""HTML pages: upload form, results, show more, more-like-this, browse, images and the building page."""

from __future__ import annotations

import re

from flask import Blueprint, render_template, request

from indexer.options import BadQuery, check_colour_weight, check_filters, from_fields, reject_unknown
from indexer.query import FILTER_FIELDS, WHOLE_PHOTO, preview_data_url, preview_with_box

from . import context, facets
from .context import requires_index
from .errors import count_bad_query, error_response
from .files import send_catalogue_file, send_thumbnail
from .queries import BROWSE_FIELDS, parse_page
from .searching import card_dicts, item_dict, search_uploads, similar_items

bp = Blueprint("pages", __name__)

BROWSE_PAGE_SIZE = 24
MORE_FIELDS = frozenset({"query", "filename", "preview", "k", "colour_weight", *FILTER_FIELDS})
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
        "colour_steps": colour_steps(cfg.colour_weight),
        "colour_weight": cfg.colour_weight,
        "error": None,
    }
    values.update(extra)
    return values


# The search form's "Match" choices: colour weights a shopper can pick, and what each means.
COLOUR_STEPS = ((0.0, "Shape"), (0.2, "Shape, then colour"), (0.4, "Shape and colour"), (0.7, "Colour first"))


def colour_steps(default: float) -> list[tuple[str, str]]:
    """``(value, label)`` of each "Match" choice; the site's default is always one of them."""
    steps = dict(COLOUR_STEPS)
    steps.setdefault(default, "Default")
    return [(f"{weight:g}", label) for weight, label in sorted(steps.items())]


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


def _results_page(svc, rows, k, filters, colour_weight, timing=None):
    return render_template(
        "results.html", queries=rows, timing=timing, next_k=_next_k(svc.settings, k),
        **_form_context(svc, selected=filters, k=k, colour_weight=colour_weight),
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
        form["colour_weight"] = _chosen_weight(request.form.get("colour_weight"), svc.settings.colour_weight)
        # through error_response, so a 503 (busy decoder) carries Retry-After like any other
        return error_response(exc.status, exc.message, template="index.html", **form)
    options = outcome.options
    links_weight = _in_links(svc, options.colour_weight)
    rows = [
        {
            "filename": result.filename,
            "cropped": result.photo.crop is not None,
            # the photo as uploaded (or cropped), with the box that was searched drawn into it,
            # so it shows without scripts or inline styles
            "preview": preview_data_url(preview_with_box(result)),
            "found_box": result.located,
            "box": ",".join(f"{v:.4g}" for v in result.box) if result.box != WHOLE_PHOTO else "",
            "vector": context.carried().dumps(result.vectors, result.colours, outcome.searcher.manifest),
            "results": card_dicts(outcome.searcher, result.results, colour_weight=links_weight),
        }
        for result in outcome.results
    ]
    return _results_page(svc, rows, options.k, options.filters, options.colour_weight, outcome.timing_ms)


def _in_links(svc, colour_weight: float) -> float | None:
    """The colour weight more-like-this links carry: none when it is the site's default (shorter links)."""
    return None if colour_weight == svc.settings.colour_weight else colour_weight


def _chosen_weight(raw: str | None, default: float) -> float:
    """The colour weight to show again on a form that was refused (the default when it was the bad field)."""
    try:
        return check_colour_weight(raw, default)
    except BadQuery:
        return default


@bp.post("/search/more")
@requires_index
def search_more():
    """Show more: the same photos' next results, from the vectors the results page carried."""
    svc = context.service()
    pipeline = svc.pipeline()
    searcher = pipeline.searcher
    form = request.form
    options = from_fields(form, svc.settings, searcher.facets(), MORE_FIELDS)
    vectors = form.getlist("query")
    names, previews = form.getlist("filename"), form.getlist("preview")
    if not vectors or len(vectors) > svc.settings.max_files or not (len(vectors) == len(names) == len(previews)):
        raise BadQuery("The search to continue is not understood; please search again.", field="query")
    rows = []
    for vector_text, name, preview in zip(vectors, names, previews):
        vectors, colours = context.carried().loads(vector_text, searcher.manifest, searcher.embeddings.shape[1])
        rows.append({
            "filename": name[:120],
            "cropped": False,
            "preview": preview if _PREVIEW.match(preview) else None,
            "vector": vector_text,
            "results": card_dicts(
                searcher, pipeline.search_vectors(vectors, colours, options),
                colour_weight=_in_links(svc, options.colour_weight),
            ),
        })
    return _results_page(svc, rows, options.k, options.filters, options.colour_weight)


@bp.get("/items/<item_id>")
@requires_index
def item(item_id: str):
    """More like this: an item's neighbours from its stored vector."""
    svc = context.service()
    outcome = similar_items(svc, item_id, request.args)
    searcher = outcome.searcher
    options = outcome.options
    link_weight = _in_links(svc, options.colour_weight)
    return render_template(
        "item.html", item=item_dict(searcher, outcome.row),
        results=card_dicts(searcher, outcome.results, colour_weight=link_weight),
        next_k=_next_k(svc.settings, options.k), link_weight=link_weight,
        **_form_context(svc, selected=options.filters, k=options.k, colour_weight=options.colour_weight),
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
    filters = check_filters(request.args, searcher.facets())
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
    indexed = svc.searcher.filenames if svc.searcher else ()
    return send_catalogue_file(svc.settings.catalogue, relpath, indexed)


@bp.get("/thumbs/<name>")
def thumbnail(name: str):
    """A thumbnail from the index dir, by its content-derived name."""
    cfg = context.settings()
    return send_thumbnail(cfg.index_dir / "thumbs", name)
