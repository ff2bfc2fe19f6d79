"""Facet counts, matching rows and paging over a searcher's catalogue metadata.

Works from the searcher's compact metadata (``indexer.metadata``: one
array of category codes per field), so counting under any combination of
filters is a few vector operations, cheap enough for every page view. The
codes are renumbered once per searcher so that values list alphabetically.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

from indexer.query import FILTER_FIELDS, Searcher

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
            metadata = searcher.metadata
            for name in FILTER_FIELDS:
                column = metadata.column(name)
                if column is None:
                    continue
                stored = metadata.values[name]
                order = sorted(range(len(stored)), key=stored.__getitem__)
                rank = np.empty(len(stored), dtype=np.int32)
                rank[order] = np.arange(len(stored), dtype=np.int32)
                codes = np.where(column >= 0, rank[np.maximum(column, 0)], -1).astype(np.int32)
                coded[name] = _Coded([stored[i] for i in order], codes)
            _cache[searcher] = coded
        return coded


def matching_rows(searcher: Searcher, filters: dict[str, str]) -> np.ndarray:
    """Boolean mask of the rows that match every filter exactly."""
    return searcher.metadata.mask(filters)


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
