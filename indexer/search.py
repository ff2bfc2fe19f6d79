"""Searcher: nearest catalogue items for a vector, with exact metadata filters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import LoadedIndex, load_index
from .ids import recorded_ids

# Fields offered as filters when styles.csv provides them, in display order.
FILTER_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour")


class UnknownItem(KeyError):
    """No catalogue item has the requested id."""


@dataclass(frozen=True)
class Hit:
    """One neighbour: row in the index and euclidean distance between unit vectors."""

    row: int
    distance: float

    @property
    def similarity(self) -> float:
        """Cosine similarity, recovered from the distance of unit vectors."""
        return 1.0 - self.distance * self.distance / 2.0


class Searcher:
    """Nearest-neighbour search over one loaded, verified index generation."""

    def __init__(self, index: LoadedIndex, search_k: int = -1):
        self.index = index
        self.manifest = index.manifest
        self.embeddings = index.embeddings
        self.filenames = index.filenames
        self.metadata = index.metadata
        self.thumbs = index.manifest.get("thumbs") or [None] * len(index.filenames)
        self.ids = recorded_ids(index.manifest, index.filenames)
        self._row_of = {item_id: row for row, item_id in enumerate(self.ids)}
        self.filename_set = frozenset(index.filenames)
        self._facets: dict[str, list[str]] | None = None
        self._columns: dict[str, np.ndarray] = {}  # filter field -> value per row
        self._annoy = index.annoy
        self._search_k = search_k

    @classmethod
    def load(cls, index_dir: Path, *, expect: dict | None = None, search_k: int = -1) -> Searcher:
        """Load and verify the current index in ``index_dir``."""
        return cls(load_index(index_dir, expect=expect), search_k=search_k)

    def __len__(self) -> int:
        return len(self.filenames)

    @property
    def generation(self) -> str:
        """Name of the generation folder this searcher serves."""
        return self.index.gen_dir.name

    # ------------------------------------------------------------ lookups

    def row_of(self, item_id: str) -> int:
        """Row of an item id; raises ``UnknownItem``."""
        try:
            return self._row_of[item_id]
        except KeyError:
            raise UnknownItem(item_id) from None

    def vector(self, row: int) -> np.ndarray:
        """Stored unit vector of a row (no re-embedding)."""
        return self.embeddings[row]

    def facets(self) -> dict[str, list[str]]:
        """Distinct values of each filter field present in the metadata (cached)."""
        if self._facets is None:
            self._facets = self._collect_facets()
        return self._facets

    def _collect_facets(self) -> dict[str, list[str]]:
        values: dict[str, set[str]] = {name: set() for name in FILTER_FIELDS}
        for meta in self.metadata:
            for name in FILTER_FIELDS:
                if meta.get(name):
                    values[name].add(meta[name])
        return {name: sorted(found) for name, found in values.items() if found}

    def _column(self, name: str) -> np.ndarray:
        # Built once per field, so a filtered search compares arrays instead
        # of walking every row's metadata dict on each request.
        column = self._columns.get(name)
        if column is None:
            column = np.array([meta.get(name) for meta in self.metadata], dtype=object)
            self._columns[name] = column
        return column

    def _mask(self, filters: dict[str, str]) -> np.ndarray | None:
        if not filters:
            return None
        mask = np.ones(len(self.metadata), dtype=bool)
        for name, wanted in filters.items():
            mask &= self._column(name) == wanted
        return mask

    # ------------------------------------------------------------ search

    def search(
        self, vector: np.ndarray, k: int, filters: dict[str, str] | None = None, exclude: int | None = None
    ) -> list[Hit]:
        """The ``k`` nearest items to ``vector`` that match every filter exactly.

        Annoy is asked for extra candidates; if too few of them pass the
        filters, the answer comes from exact search over the matching subset,
        so a filter with at least ``k`` matches always yields ``k`` hits.
        """
        n = len(self.filenames)
        if n == 0 or k <= 0:
            return []
        mask = self._mask(filters or {})
        if exclude is not None:
            mask = np.ones(n, dtype=bool) if mask is None else mask  # _mask returns a fresh array
            mask[exclude] = False
        allowed = n if mask is None else int(mask.sum())
        wanted = min(k, allowed)
        if wanted == 0:
            return []
        # Ask Annoy for more than needed when filtering; the fraction that
        # passes the filter predicts how many candidates that takes.
        fraction = allowed / n
        candidates = min(n, max(k, math.ceil(k / max(fraction, 1e-9) * 2)) + (1 if exclude is not None else 0))
        if candidates <= n // 2 or mask is None:
            rows, dists = self._annoy.get_nns_by_vector(
                vector.tolist(), candidates, search_k=self._search_k, include_distances=True
            )
            hits = [Hit(r, d) for r, d in zip(rows, dists) if mask is None or mask[r]]
            if len(hits) >= wanted:
                return hits[:wanted]
        return self.exact(vector, wanted, mask)

    def annoy_neighbours(self, vector: np.ndarray, n: int) -> list[int]:
        """Rows of Annoy's ``n`` nearest items alone (no filters, no fallback), for measuring recall."""
        return self._annoy.get_nns_by_vector(vector.tolist(), n, search_k=self._search_k)

    def exact(self, vector: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[Hit]:
        """Brute-force nearest neighbours with numpy, over the rows in ``mask``."""
        rows = np.arange(len(self.filenames)) if mask is None else np.flatnonzero(mask)
        if len(rows) == 0:
            return []
        subset = self.embeddings[rows]
        # |a-b|^2 = 2 - 2 a.b for unit vectors
        squared = np.maximum(2.0 - 2.0 * (subset @ vector.astype(np.float32)), 0.0)
        k = min(k, len(rows))
        best = np.argpartition(squared, k - 1)[:k]
        # 2 - 2 a.b cancels badly near 0 (an item's own distance came out as
        # ~3e-4 instead of 0); recompute the k winners from their differences
        distances = np.linalg.norm(subset[best] - vector.astype(np.float32), axis=1)
        order = np.argsort(distances, kind="stable")
        return [Hit(int(rows[best[i]]), float(distances[i])) for i in order]

    def similar(self, item_id: str, k: int, filters: dict[str, str] | None = None) -> tuple[int, list[Hit]]:
        """Neighbours of a catalogue item from its stored vector, itself excluded."""
        row = self.row_of(item_id)
        return row, self.search(self.vector(row), k, filters, exclude=row)

    def describe(self, row: int) -> dict:
        """Plain facts about a row: id, filename, metadata and thumbnail name."""
        return {
            "id": self.ids[row],
            "filename": self.filenames[row],
            "metadata": dict(self.metadata[row]),
            "thumb": self.thumbs[row],
        }
