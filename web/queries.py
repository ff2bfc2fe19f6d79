"""Turning a search request into validated query images, k and filters.

Uploads are read into memory (bounded by ``MAX_CONTENT_LENGTH``) and never
written to disk, and their client-supplied file names are only ever
displayed, escaped, never used as paths.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
from flask import Request
from werkzeug.datastructures import FileStorage, MultiDict

from indexer.images import ImageError, load_for_model
from indexer.search import FILTER_FIELDS

# HTTP status per ImageError reason
_STATUS_FOR_REASON = {
    "empty": 400,
    "not_an_image": 415,
    "unreadable": 422,
    "too_small": 422,
    "too_large": 413,
    "busy": 503,  # every decode slot stayed taken: try again, with Retry-After
}


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory.

    Werkzeug spools file parts over 500 KB to a temporary file; here the
    whole body is bounded by ``MAX_CONTENT_LENGTH``, so memory is the safer
    place and no upload byte ever reaches the disk.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


class BadQuery(ValueError):
    """The request cannot be served; ``message`` is fit for the shopper."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass
class QueryImage:
    """One uploaded photo, decoded and ready for the model."""

    filename: str
    array: np.ndarray
    decode_ms: float


@dataclass
class Query:
    """Everything a search needs."""

    images: list[QueryImage] = field(default_factory=list)
    k: int = 5
    filters: dict[str, str] = field(default_factory=dict)


def display_name(upload: FileStorage, position: int) -> str:
    """The client's file name reduced to something safe to show."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or f"photo {position}"


def parse_k(raw: str | None, default: int, maximum: int) -> int:
    """Validate the number of results."""
    if raw is None or str(raw).strip() == "":
        return default
    try:
        k = int(str(raw).strip())
    except ValueError:
        raise BadQuery(f"The number of results must be a whole number from 1 to {maximum}.", field="k") from None
    if not 1 <= k <= maximum:
        raise BadQuery(f"The number of results must be from 1 to {maximum}; got {k}.", field="k")
    return k


def parse_filters(form: MultiDict, facets: dict[str, list[str]]) -> dict[str, str]:
    """Read the filter fields; a value the catalogue does not have is an error."""
    filters: dict[str, str] = {}
    for name in FILTER_FIELDS:
        value = (form.get(name) or "").strip()
        if not value:
            continue
        allowed = facets.get(name, [])
        if value not in allowed:
            choices = ", ".join(allowed[:20]) or "none in this catalogue"
            raise BadQuery(f"Unknown {name} {value!r}. Choose one of: {choices}.", field=name)
        filters[name] = value
    return filters


def read_images(files: MultiDict, max_files: int) -> list[QueryImage]:
    """Decode every uploaded ``image`` field, in upload order."""
    uploads = [f for f in files.getlist("image") if f is not None]
    if not uploads:
        raise BadQuery("No photo was uploaded. Choose an image file and try again.", field="image")
    if all(not (u.filename or "").strip() for u in uploads):
        raise BadQuery("No file was selected. Choose an image file and try again.", field="image")
    if len(uploads) > max_files:
        raise BadQuery(f"At most {max_files} photos per search; you sent {len(uploads)}.", field="image")
    images = []
    for position, upload in enumerate(uploads, start=1):
        name = display_name(upload, position)
        started = time.perf_counter()
        data = upload.read()
        try:
            array = load_for_model(data)
        except ImageError as exc:
            status = _STATUS_FOR_REASON.get(exc.reason, 422)
            raise BadQuery(f"{name}: {exc.message}", status=status, field="image") from None
        images.append(QueryImage(name, array, (time.perf_counter() - started) * 1000))
    return images


def parse_query(form: MultiDict, files: MultiDict, *, facets, default_k: int, max_k: int, max_files: int) -> Query:
    """Validate a whole search request (form fields first: they are cheap)."""
    k = parse_k(form.get("k"), default_k, max_k)
    filters = parse_filters(form, facets)
    return Query(read_images(files, max_files), k, filters)
