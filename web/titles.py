"""What a product is called on a page, and how numbers are written: shared by every template."""

from __future__ import annotations

from collections.abc import Mapping

# the card's facts, in the order they are listed under its title
CARD_FACTS = ("articleType", "baseColour", "gender")
# a product without a name or any of these is still a product, never a file name
UNNAMED = "Product"


def product_title(metadata: Mapping | None) -> str:
    """The product's name: ``productDisplayName``, else one read from its facts.

    "Navy Blue Tshirt, Men" is the colour and product type, then who it is
    for; a product with none of them falls back to its sub-category or
    master category, then to "Product". Never a file id or file name.
    """
    meta = metadata or {}
    named = str(meta.get("productDisplayName") or "").strip()
    if named:
        return named
    kind = _fact(meta, "articleType") or _fact(meta, "subCategory") or _fact(meta, "masterCategory")
    words = " ".join(part for part in (_fact(meta, "baseColour"), kind) if part) or UNNAMED
    gender = _fact(meta, "gender")
    return f"{words}, {gender}" if gender else words


def title_facts(metadata: Mapping | None) -> set[str]:
    """The fields ``product_title`` already shows, so a card does not list them a second time."""
    meta = metadata or {}
    if str(meta.get("productDisplayName") or "").strip():
        return set()
    shown = {key for key in ("baseColour", "gender") if _fact(meta, key)}
    for key in ("articleType", "subCategory", "masterCategory"):
        if _fact(meta, key):
            shown.add(key)
            break
    return shown


def number(value) -> str:
    """A count as every page writes it: ``3000`` -> ``"3,000"``; anything not a number as it is."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def _fact(meta: Mapping, key: str) -> str:
    return str(meta.get(key) or "").strip()
