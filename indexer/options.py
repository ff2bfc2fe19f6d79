"""Search options: one value, checked once per entry point with the same validators everywhere.

A search's choices (how many results, filters, the crop of each photo,
whether to find the product, how much colour counts) arrive as form fields
from the site, as multipart fields from the API and as flags from the CLI.
Each entry point turns them into one ``SearchOptions`` with one function
here; all of them share the validators below, so the same bad value gets
the same message wherever it was sent. ``BadQuery`` carries a message fit
for a shopper, the HTTP status, and the field it is about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .images import Crop

if TYPE_CHECKING:
    from .config import Settings

# Fields offered as filters when styles.csv provides them, in display order.
FILTER_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour")


class BadQuery(ValueError):
    """A search request that cannot be served; ``message`` is fit for the shopper."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search needs besides the photos (or the vector) it starts from.

    ``crops`` holds one entry per photo, in upload order (``None``: the
    whole photo); ``locate`` finds the product in each photo that has no
    crop; ``colour_weight`` is colour's share of the score (0: shape alone).
    """

    k: int = 5
    filters: dict[str, str] = field(default_factory=dict)
    colour_weight: float = 0.0
    locate: bool = True
    crops: tuple[Crop | None, ...] = ()

    def crop_for(self, position: int) -> Crop | None:
        """The crop of the photo at ``position`` (from 0), or ``None`` for the whole photo."""
        return self.crops[position] if position < len(self.crops) else None

    def with_k(self, k: int) -> SearchOptions:
        """The same options asking for ``k`` results."""
        return replace(self, k=k)

    @classmethod
    def defaults(cls, settings: Settings) -> SearchOptions:
        """The site's defaults: ``FASHION_TOP_K``, ``FASHION_COLOUR_WEIGHT`` and ``FASHION_LOCATE``."""
        return cls(k=settings.top_k, colour_weight=settings.colour_weight, locate=settings.locate)


# ---------------------------------------------------------------- validators (shared by every entry point)

_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
# ASCII digits and at most one decimal point: no signs, exponents, underscores or other scripts' digits
_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{0,9})?|\.[0-9]{1,9}")


def whole_number(text: str) -> int | None:
    """``text`` as an integer when it is 1 to 9 ASCII digits, else ``None``.

    Stricter than ``int()``, which also takes signs, underscores and other
    scripts' digits, and than ``str.isdigit()``, which takes superscripts
    and circled digits that ``int()`` then refuses.
    """
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def decimal(text: str) -> float | None:
    """``text`` as a float when it is ASCII digits with at most one decimal point, else ``None``."""
    return float(text) if _DECIMAL.fullmatch(text) else None


def check_k(raw: object, default: int, maximum: int) -> int:
    """The number of results: a whole number from 1 to ``maximum`` (empty: ``default``)."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return default
    k = whole_number(text)
    if k is None:
        raise BadQuery(f"The number of results must be a whole number from 1 to {maximum}.", field="k")
    if not 1 <= k <= maximum:
        raise BadQuery(f"The number of results must be from 1 to {maximum}; got {k}.", field="k")
    return k


def check_colour_weight(raw: object, default: float) -> float:
    """How much colour counts against shape: a decimal from 0 (shape alone) to 1 (colour alone)."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return default
    value = decimal(text)
    if value is None or not 0 <= value <= 1:
        raise BadQuery(
            f"colour_weight must be a number from 0 (shape alone) to 1 (colour alone), e.g. 0.2; got {text[:20]!r}.",
            field="colour_weight",
        )
    return value


_YES, _NO = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


def check_locate(raw: object, default: bool = True) -> bool:
    """Whether to find the product in each photo: true or false (also 1/0, on/off, yes/no)."""
    text = ("" if raw is None else str(raw)).strip().lower()
    if not text:
        return default
    if text in _YES or text in _NO:
        return text in _YES
    raise BadQuery(f"locate must be true or false; got {text[:20]!r}.", field="locate")


_CROP_HELP = "Give it as four fractions x,y,w,h of the photo, e.g. 0.25,0,0.5,1, or leave it empty for the whole photo."


def check_crop(raw: object, position: int) -> Crop | None:
    """One crop: ``x,y,w,h`` as fractions of the photo, or empty for the whole photo (``position`` from 1)."""
    text = ("" if raw is None else str(raw)).strip()
    if not text:
        return None
    values = tuple(decimal(part.strip()) for part in text.split(","))
    if len(values) != 4 or any(v is None for v in values):
        raise BadQuery(f"The crop of photo {position} ({text[:40]!r}) is not understood. {_CROP_HELP}", field="crop")
    x, y, w, h = values
    slack = 1e-6  # fractions rounded by the browser may overshoot 1 by a hair
    if w <= 0 or h <= 0 or x + w > 1 + slack or y + h > 1 + slack:
        raise BadQuery(
            f"The crop of photo {position} ({text[:40]!r}) does not lie inside the photo: "
            "x and y must be at least 0, w and h above 0, x+w and y+h at most 1.",
            field="crop",
        )
    return x, y, min(w, 1 - x), min(h, 1 - y)


def reject_repeated(fields, names: Iterable[str]) -> None:
    """A 400 naming a single-valued field sent more than once (``k=5&k=50``: which one was meant?)."""
    getlist = getattr(fields, "getlist", None)
    if getlist is None:
        return
    for name in names:
        count = len(getlist(name))
        if count > 1:
            raise BadQuery(f"The field {name!r} was sent {count} times; send it once.", field=name)


def check_filters(values: Mapping[str, object], facets: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The filter fields of ``values``; a value the catalogue does not have is an error naming the choices."""
    reject_repeated(values, FILTER_FIELDS)
    filters: dict[str, str] = {}
    for name in FILTER_FIELDS:
        value = ("" if values.get(name) is None else str(values.get(name))).strip()
        if not value:
            continue
        allowed = list(facets.get(name, []))
        if value not in allowed:
            shown = 20
            choices = ", ".join(allowed[:shown]) or "none in this catalogue"
            if len(allowed) > shown:
                choices += f", … ({len(allowed) - shown} more)"
            raise BadQuery(f"Unknown {name} {value!r}. Choose one of: {choices}.", field=name)
        filters[name] = value
    return filters


def reject_unknown(names: Iterable[str], allowed: frozenset[str]) -> None:
    """A 400 naming every field the entry point does not take (a typo would otherwise be ignored silently)."""
    unknown = sorted({name for name in names if name not in allowed})
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:10])
        plural = "s" if len(unknown) > 1 else ""
        raise BadQuery(
            f"Unknown field{plural} {listed}. This address takes: {', '.join(sorted(allowed))}.", field=unknown[0]
        )


# ---------------------------------------------------------------- one parser per kind of entry point

SEARCH_FIELDS = frozenset({"image", "crop", "k", "colour_weight", "locate", *FILTER_FIELDS})
SIMILAR_FIELDS = frozenset({"k", "colour_weight", *FILTER_FIELDS})


def from_fields(
    fields, settings: Settings, facets: Mapping[str, Sequence[str]], allowed: frozenset[str] = SEARCH_FIELDS
) -> SearchOptions:
    """Options from request fields (the search form, the API, show more and more-like-this alike).

    ``fields`` is a multi-valued mapping (``getlist`` gives every value of
    a field, as Werkzeug's ``MultiDict`` does); ``allowed`` names the fields
    the entry point takes, any other is a 400. Only ``crop`` may repeat
    (one per photo, in upload order).
    """
    reject_unknown(fields.keys(), allowed)
    reject_repeated(fields, ("k", "colour_weight", "locate"))
    return SearchOptions(
        k=check_k(fields.get("k"), settings.top_k, settings.max_k),
        filters=check_filters(fields, facets),
        colour_weight=check_colour_weight(fields.get("colour_weight"), settings.colour_weight),
        locate=check_locate(fields.get("locate"), settings.locate),
        crops=tuple(check_crop(raw, n) for n, raw in enumerate(fields.getlist("crop"), start=1)),
    )


def from_arguments(
    settings: Settings,
    *,
    k: object = None,
    crop: object = None,
    locate: bool = True,
    colour_weight: object = None,
    filters: Mapping[str, object] | None = None,
    facets: Mapping[str, Sequence[str]] | None = None,
) -> SearchOptions:
    """Options from the command line's flags, through the same validators as a request's fields.

    ``k`` and ``colour_weight`` are the flags' text (``None``: the site's
    default); ``locate`` is False with ``--no-locate``, which a crop makes moot.
    """
    return SearchOptions(
        k=check_k(k, settings.top_k, settings.max_k),
        filters=check_filters(filters or {}, facets or {}),
        colour_weight=check_colour_weight(colour_weight, settings.colour_weight),
        locate=bool(locate) and settings.locate,
        crops=(check_crop(crop, 1),) if crop else (),
    )
