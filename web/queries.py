"""Turning a search request into validated query images, k and filters.

Uploads are read into memory (bounded by ``MAX_CONTENT_LENGTH``) and never
written to disk, and their client-supplied file names are only ever
displayed, escaped, never used as paths.
"""

from __future__ import annotations

import io
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from flask import Request, current_app, has_app_context
from werkzeug.datastructures import FileStorage, MultiDict

from indexer.images import Crop, ImageError, load_for_model, load_with_size
from indexer.search import FILTER_FIELDS

from .deadline import Deadline

# HTTP status per ImageError reason
_STATUS_FOR_REASON = {
    "empty": 400,
    "bad_crop": 400,
    "not_an_image": 415,
    "unreadable": 422,
    "too_small": 422,
    "too_large": 413,
    "busy": 503,  # every decode slot stayed taken: try again, with Retry-After
}


SMALL_BODY_BYTES = 64 * 1024  # any body that is not a multipart upload: forms, JSON, anything else


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory.

    Werkzeug spools file parts over 500 KB to a temporary file; here the
    whole body is bounded by ``MAX_CONTENT_LENGTH``, so memory is the safer
    place and no upload byte ever reaches the disk.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()

    @property
    def max_content_length(self) -> int | None:
        """The upload limit for multipart bodies; ``SMALL_BODY_BYTES`` for every other body.

        Werkzeug's urlencoded parser ignores the form part and field limits:
        10 MB of ``k=&k=...`` cost seconds of CPU and hundreds of MB. Only a
        multipart upload carries photos, so anything else may be small.
        """
        limit = current_app.config.get("MAX_CONTENT_LENGTH") if has_app_context() else None
        if self.mimetype == "multipart/form-data":
            return limit
        return SMALL_BODY_BYTES if limit is None else min(limit, SMALL_BODY_BYTES)


class BadQuery(ValueError):
    """The request cannot be served; ``message`` is fit for the shopper."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass
class QueryImage:
    """One uploaded photo, decoded (and cropped) and ready for the model.

    Without a crop, ``size`` is the upright photo's (width, height) and
    ``data`` its bytes: locating the product crops it from them again.
    """

    filename: str
    array: np.ndarray
    decode_ms: float
    crop: Crop | None = None
    data: bytes | None = None
    size: tuple[int, int] | None = None


@dataclass
class Query:
    """Everything a search needs."""

    images: list[QueryImage] = field(default_factory=list)
    k: int = 5
    filters: dict[str, str] = field(default_factory=dict)
    colour_weight: float = 0.0  # share of colour in the score (0: shape alone)
    locate: bool = True  # find the product in each photo without a crop


def display_name(upload: FileStorage, position: int) -> str:
    """The client's file name reduced to something safe to show."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or f"photo {position}"


_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


def whole_number(text: str) -> int | None:
    """``text`` as an integer when it is 1 to 9 ASCII digits, else ``None``.

    Stricter than ``int()``, which also takes signs, underscores and other
    scripts' digits, and than ``str.isdigit()``, which takes superscripts
    and circled digits that ``int()`` then refuses.
    """
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def parse_k(raw: str | None, default: int, maximum: int) -> int:
    """Validate the number of results."""
    if raw is None or str(raw).strip() == "":
        return default
    k = whole_number(str(raw).strip())
    if k is None:
        raise BadQuery(f"The number of results must be a whole number from 1 to {maximum}.", field="k")
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
            shown = 20
            choices = ", ".join(allowed[:shown]) or "none in this catalogue"
            if len(allowed) > shown:
                choices += f", … ({len(allowed) - shown} more)"
            raise BadQuery(f"Unknown {name} {value!r}. Choose one of: {choices}.", field=name)
        filters[name] = value
    return filters


_DECIMAL = re.compile(r"(0|1)(\.[0-9]{0,6})?|\.[0-9]{1,6}")


def parse_colour_weight(raw: str | None, default: float) -> float:
    """How much colour counts against shape: a decimal from 0 (shape alone) to 1 (colour alone)."""
    text = (raw or "").strip()
    if not text:
        return default
    value = float(text) if _DECIMAL.fullmatch(text) else None
    if value is None or not 0 <= value <= 1:
        raise BadQuery(
            f"colour_weight must be a number from 0 (shape alone) to 1 (colour alone), e.g. 0.2; got {text[:20]!r}.",
            field="colour_weight",
        )
    return value


_YES, _NO = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


def parse_locate(raw: str | None, default: bool = True) -> bool:
    """Whether to find the product in each photo: true or false (also 1/0, on/off, yes/no)."""
    text = (raw or "").strip().lower()
    if not text:
        return default
    if text in _YES or text in _NO:
        return text in _YES
    raise BadQuery(f"locate must be true or false; got {text[:20]!r}.", field="locate")


_CROP_HELP = "Give it as four fractions x,y,w,h of the photo, e.g. 0.25,0,0.5,1, or leave it empty for the whole photo."


def parse_crop(raw: str | None, position: int) -> Crop | None:
    """One ``crop`` field: ``x,y,w,h`` as fractions of the photo, or empty for the whole photo."""
    text = (raw or "").strip()
    if not text:
        return None
    parts = text.split(",")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BadQuery(f"The crop of photo {position} ({text[:40]!r}) is not understood. {_CROP_HELP}", field="crop")
    x, y, w, h = values
    slack = 1e-6  # fractions rounded by the browser may overshoot 1 by a hair
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > 1 + slack or y + h > 1 + slack:
        raise BadQuery(
            f"The crop of photo {position} ({text[:40]!r}) does not lie inside the photo: "
            "x and y must be at least 0, w and h above 0, x+w and y+h at most 1.",
            field="crop",
        )
    return x, y, min(w, 1 - x), min(h, 1 - y)


def parse_crops(form: MultiDict) -> list[Crop | None]:
    """Every ``crop`` field, in order: the n-th belongs to the n-th photo."""
    return [parse_crop(raw, position) for position, raw in enumerate(form.getlist("crop"), start=1)]


SEARCH_FIELDS = frozenset({"image", "crop", "k", "colour_weight", "locate", *FILTER_FIELDS})
SIMILAR_FIELDS = frozenset({"k", "colour_weight", *FILTER_FIELDS})
BROWSE_FIELDS = frozenset({"page", *FILTER_FIELDS})


def reject_unknown(names, allowed: frozenset[str]) -> None:
    """A 400 naming every field the route does not take (a typo would otherwise be ignored silently)."""
    unknown = sorted({name for name in names if name not in allowed})
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:10])
        plural = "s" if len(unknown) > 1 else ""
        raise BadQuery(
            f"Unknown field{plural} {listed}. This address takes: {', '.join(sorted(allowed))}.", field=unknown[0]
        )


def parse_page(raw: str | None) -> int:
    """A browse page number (from 1)."""
    text = (raw or "1").strip()
    page = whole_number(text)
    if page is None or page < 1:
        raise BadQuery(f"The page must be a whole number from 1; got {text[:20]!r}.", field="page")
    return page


def read_images(
    files: MultiDict, max_files: int, crops: list[Crop | None] | None = None, deadline: Deadline | None = None
) -> list[QueryImage]:
    """Decode every uploaded ``image`` field, in upload order, each cropped by its ``crops`` entry.

    With a ``deadline``, each photo is started only while time is left and
    waits for its decode share at most that long; past it, ``Busy``.
    """
    crops = crops or []
    uploads = [f for f in files.getlist("image") if f is not None]
    if not uploads:
        raise BadQuery("No photo was uploaded. Choose an image file and try again.", field="image")
    if all(not (u.filename or "").strip() for u in uploads):
        raise BadQuery("No file was selected. Choose an image file and try again.", field="image")
    if len(uploads) > max_files:
        raise BadQuery(f"At most {max_files} photos per search; you sent {len(uploads)}.", field="image")
    if len(crops) > len(uploads):
        raise BadQuery(
            f"{len(crops)} crop fields for {len(uploads)} photos; send at most one crop per photo, in the same order.",
            field="crop",
        )
    crops = crops + [None] * (len(uploads) - len(crops))
    images = []
    for position, (upload, crop) in enumerate(zip(uploads, crops), start=1):
        name = display_name(upload, position)
        started = time.perf_counter()
        if deadline is not None:
            deadline.check()
        data = upload.read()
        wait_s = deadline.remaining() if deadline is not None else None
        try:
            if crop is None:
                array, size = load_with_size(data, wait_s=wait_s)
            else:
                array, size = load_for_model(data, crop=crop, wait_s=wait_s), None
        except ImageError as exc:
            raise image_error(name, exc) from None
        decode_ms = (time.perf_counter() - started) * 1000
        images.append(QueryImage(name, array, decode_ms, crop, data if crop is None else None, size))
    return images


def image_error(name: str, exc: ImageError) -> BadQuery:
    """The answer to a photo that cannot be used: its name, what is wrong, and the status for the reason."""
    return BadQuery(f"{name}: {exc.message}", status=_STATUS_FOR_REASON.get(exc.reason, 422), field="image")


def parse_query(
    form: MultiDict,
    files: MultiDict,
    *,
    facets,
    default_k: int,
    max_k: int,
    max_files: int,
    default_colour_weight: float = 0.0,
    default_locate: bool = True,
    deadline: Deadline | None = None,
) -> Query:
    """Validate a whole search request (form fields first: they are cheap)."""
    reject_unknown([*form.keys(), *files.keys()], SEARCH_FIELDS)
    k = parse_k(form.get("k"), default_k, max_k)
    filters = parse_filters(form, facets)
    colour_weight = parse_colour_weight(form.get("colour_weight"), default_colour_weight)
    locate = parse_locate(form.get("locate"), default_locate)
    crops = parse_crops(form)
    return Query(read_images(files, max_files, crops, deadline), k, filters, colour_weight, locate)
