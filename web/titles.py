"""What a product is called on a page, and how numbers are written: shared by every template."""

from __future__ import annotations

import re
from collections.abc import Mapping

# the card's facts, in the order they are listed under its title
CARD_FACTS = ("articleType", "baseColour", "gender")
# a product without a name or any of these is still a product, never a file name
UNNAMED = "Product"
# a word, with any hyphens or apostrophes inside it ("T-Shirt", "Men's")
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


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
    """The card facts (``CARD_FACTS``) whose words the title already shows, so a card does not repeat them.

    For a product's own name that is every fact all of whose words are in
    it, singular and plural alike: "Nike Men Navy Blue Tshirt" states
    Tshirts, Navy Blue and Men, so its card lists none of them. For a title
    read from the facts it is the facts it was made of.
    """
    meta = metadata or {}
    named = _fact(meta, "productDisplayName")
    if named:
        in_name = _words(named)
        return {key for key in CARD_FACTS if (words := _words(_fact(meta, key))) and words <= in_name}
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


def _words(text: str) -> set[str]:
    """The words of ``text``, lower case and singular, so "T-Shirts" and "tshirt" count as the same word."""
    return {_singular(word.replace("-", "").replace("'", "")) for word in _WORD.findall(text.lower())}


def _singular(word: str) -> str:
    # enough English for product types: dresses, watches, accessories, shoes, jeans
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word
