"""Facet counts, matching rows and paging over a searcher's catalogue metadata.

Works only from the searcher's public data (``metadata`` and the filter
fields), so it does not depend on how ``Searcher`` stores its own filter
columns. Each filter field is coded once per searcher (numpy codes per
row), so counting under any combination of filters is a few vector
operations, cheap enough for every page view.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

from indexer.search import FILTER_FIELDS, Searcher

# How the pages name catalogue columns (styles.csv headers are camelCase).
FIELD_LABELS = {
    "gender": "For",
    "masterCategory": "Category",
    "subCategory": "Subcategory",
    "articleType": "Product type",
    "baseColour": "Colour",
    "season": "Season",
    "year": "Year",
    "usage": "Usage",
    "productDisplayName": "Name",
    "price": "Price",
}
# Filter legends read better as nouns than the card labels ("For" -> "Gender").
FILTER_LABELS = dict(FIELD_LABELS, gender="Gender")


@dataclass(frozen=True)
class _Coded:
    """One filter field: sorted distinct values and each row's index into them (-1: no value)."""

    values: list[str]
    codes: np.ndarray


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _coded(searcher: Searcher) -> dict[str, _Coded]:
    with _cache_lock:
        coded = _cache.get(searcher)
        if coded is None:
            coded = {}
            for name in FILTER_FIELDS:
                raw = [meta.get(name) or "" for meta in searcher.metadata]
                values, codes = np.unique(np.array(raw, dtype=object), return_inverse=True) if raw else ([], [])
                values = [str(v) for v in values]
                codes = np.asarray(codes, dtype=np.int32)
                if "" in values:  # rows without this field match no value
                    empty = values.index("")
                    codes = np.where(codes == empty, -1, codes - (codes > empty))
                    values.remove("")
                if values:
                    coded[name] = _Coded(values, codes)
            _cache[searcher] = coded
        return coded


def matching_rows(searcher: Searcher, filters: dict[str, str]) -> np.ndarray:
    """Boolean mask of the rows that match every filter exactly."""
    coded = _coded(searcher)
    mask = np.ones(len(searcher), dtype=bool)
    for name, wanted in filters.items():
        field = coded.get(name)
        if field is None or wanted not in field.values:
            return np.zeros(len(searcher), dtype=bool)
        mask &= field.codes == field.values.index(wanted)
    return mask


def facet_counts(searcher: Searcher, selected: dict[str, str]) -> dict[str, list[tuple[str, int]]]:
    """For each filter field: the values still matching under the *other* selected filters, with counts.

    A value that would leave no product is not listed, so a shopper cannot
    pick a combination that matches nothing; the selected value is always
    listed, even when other filters now exclude it, so the form can show it.
    """
    coded = _coded(searcher)
    out: dict[str, list[tuple[str, int]]] = {}
    for name, field in coded.items():
        others = {k: v for k, v in selected.items() if k != name}
        mask = matching_rows(searcher, others) & (field.codes >= 0)
        counts = np.bincount(field.codes[mask], minlength=len(field.values))
        wanted = selected.get(name)
        out[name] = [(value, int(n)) for value, n in zip(field.values, counts) if n or value == wanted]
    return out


def facet_values(searcher: Searcher) -> dict[str, list[str]]:
    """Every value of every filter field (what a filter may be set to)."""
    return {name: list(field.values) for name, field in _coded(searcher).items()}


@dataclass
class Page:
    """One page of the browse grid."""

    rows: list[int]
    number: int
    pages: int
    matched: int


def page_of(searcher: Searcher, filters: dict[str, str], number: int, size: int) -> Page:
    """Rows of page ``number`` (from 1) of the catalogue, in catalogue order, under ``filters``."""
    rows = np.flatnonzero(matching_rows(searcher, filters))
    pages = max(1, -(-len(rows) // size))
    start = (number - 1) * size
    return Page([int(r) for r in rows[start : start + size]], number, pages, len(rows))
