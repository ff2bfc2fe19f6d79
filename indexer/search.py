"""Searcher: nearest catalogue items for a vector: Annoy candidates re-ranked exactly, exact filters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .artifacts import LoadedIndex, load_index
from .ids import recorded_ids

if TYPE_CHECKING:
    from .config import Settings

# Fields offered as filters when styles.csv provides them, in display order.
FILTER_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour")
EXACT_BLOCK = 4096  # rows per matrix product in exact search (32 MB of 2048-dim float32 vectors)


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
    """Nearest-neighbour search over one loaded, verified index generation.

    Every search (plain, filtered, more-like-this) takes the same path: a
    generous pool of candidates from Annoy, re-ranked by exact distance
    against the stored vectors, or exact search over the allowed rows when a
    filter leaves few enough of them. Annoy's default effort is about
    ``trees x k`` nodes whatever the catalogue size, so asking it for only
    ``k`` results loses recall as the catalogue grows; a pool of
    ``candidates`` (and Annoy's ``search_k`` of ``trees x pool``) holds it.
    """

    def __init__(self, index: LoadedIndex, search_k: int = -1, candidates: int = 200):
        # The manifest's per-item lists (about 0.3 KB an item as Python
        # objects) are not all kept: file fingerprints are dropped, thumbnail
        # names become one bytes array, and "ids" is the list the searcher uses.
        self.ids = recorded_ids(index.manifest, index.filenames)
        manifest = dict(index.manifest)
        manifest.pop("items", None)
        thumbs = manifest.pop("thumbs", None)
        if "ids" in manifest:
            manifest["ids"] = self.ids
        index.manifest = manifest
        self.index = index
        self.manifest = manifest
        self.embeddings = index.embeddings
        self.filenames = index.filenames
        self.metadata = index.metadata
        self._thumbs = np.array([t.encode("ascii") for t in thumbs], dtype=np.bytes_) if thumbs else None
        self._row_of = {item_id: row for row, item_id in enumerate(self.ids)}
        self.filename_set = frozenset(index.filenames)
        self._facets: dict[str, list[str]] | None = None
        self._annoy = index.annoy
        self._search_k = search_k
        self.candidates = max(1, candidates)
        trees = int(index.manifest.get("trees") or 1)
        # Exact search over the allowed rows costs about their number; Annoy
        # with a filter keeping a fraction f of n rows needs ~trees x pool / f
        # nodes. They cost the same at allowed = sqrt(n x trees x pool).
        self.exact_limit = math.isqrt(len(self.filenames) * trees * self.candidates)

    @classmethod
    def load(
        cls, index_dir: Path, *, expect: dict | None = None, search_k: int = -1, candidates: int = 200
    ) -> Searcher:
        """Load and verify the current index in ``index_dir``."""
        return cls(load_index(index_dir, expect=expect), search_k=search_k, candidates=candidates)

    @classmethod
    def for_settings(cls, settings: Settings, index_dir: Path | None = None, *, expect: dict | None = None) -> Searcher:
        """Load the index in ``index_dir`` (default: the settings' own) as the site serves it.

        Annoy's effort and the candidate pool come from ``settings``, so the
        CLI, the evaluation and the web app all search the same way.
        """
        return cls.load(
            settings.index_dir if index_dir is None else index_dir,
            expect=expect,
            search_k=settings.annoy_search_k,
            candidates=settings.search_candidates,
        )

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
        return np.array(self.embeddings[row])

    def facets(self) -> dict[str, list[str]]:
        """Distinct values of each filter field present in the metadata (cached)."""
        if self._facets is None:
            found = {name: self.metadata.distinct(name) for name in FILTER_FIELDS}
            self._facets = {name: values for name, values in found.items() if values}
        return self._facets

    def _mask(self, filters: dict[str, str]) -> np.ndarray | None:
        # one comparison of a code array per field, no per-row Python
        return self.metadata.mask(filters) if filters else None

    # ------------------------------------------------------------ search

    def search(
        self, vector: np.ndarray, k: int, filters: dict[str, str] | None = None, exclude: int | None = None
    ) -> list[Hit]:
        """The ``k`` nearest items to ``vector`` that match every filter exactly.

        Selective filters are answered by exact search over the matching
        rows; otherwise Annoy's candidates (more of them the more a filter
        removes) are filtered and re-ranked exactly, and if too few pass,
        exact search over the matching rows answers. A filter with at least
        ``k`` matches therefore always yields ``k`` hits.
        """
        n = len(self.filenames)
        if n == 0 or k <= 0:
            return []
        vector = np.asarray(vector, dtype=np.float32)
        mask = self._mask(filters or {})
        if exclude is not None:
            mask = np.ones(n, dtype=bool) if mask is None else mask  # _mask returns a fresh array
            mask[exclude] = False
        allowed = n if mask is None else int(np.count_nonzero(mask))
        wanted = min(k, allowed)
        if wanted == 0:
            return []
        if allowed < n - (exclude is not None) and allowed <= self.exact_limit:
            return self.exact(vector, wanted, mask)
        pool = math.ceil(max(self.candidates, 2 * wanted) * n / allowed) + (exclude is not None)
        if pool > n // 2:
            return self.exact(vector, wanted, mask)
        rows = np.asarray(
            self._annoy.get_nns_by_vector(vector.tolist(), pool, search_k=self._search_k), dtype=np.int64
        )
        if mask is not None:
            rows = rows[mask[rows]]
        if len(rows) < wanted:
            return self.exact(vector, wanted, mask)
        return self.rank(vector, rows, wanted)

    def rank(self, vector: np.ndarray, rows: np.ndarray, k: int) -> list[Hit]:
        """The ``k`` of ``rows`` nearest to ``vector`` by exact distance, ties by row."""
        rows = np.sort(rows)  # ascending rows read the memory-mapped vectors in file order
        distances = np.linalg.norm(self.embeddings[rows] - vector, axis=1)
        order = np.lexsort((rows, distances))[:k]
        return [Hit(int(rows[i]), float(distances[i])) for i in order]

    def annoy_neighbours(self, vector: np.ndarray, n: int) -> list[int]:
        """Rows of Annoy's ``n`` nearest items alone (no filters, no fallback), for measuring recall."""
        return self._annoy.get_nns_by_vector(vector.tolist(), n, search_k=self._search_k)

    def exact(self, vector: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[Hit]:
        """Brute-force nearest neighbours with numpy, over the rows in ``mask``.

        Works through the rows in blocks, so its memory stays small when the
        vectors are a memory-mapped file of gigabytes.
        """
        vector = np.asarray(vector, dtype=np.float32)
        rows = np.arange(len(self.filenames)) if mask is None else np.flatnonzero(mask)
        k = min(k, len(rows))
        if k <= 0:
            return []
        # |a-b|^2 = 2 - 2 a.b for unit vectors: cheap, but it cancels badly near
        # 0, so each block keeps a margin of candidates that _rank recomputes
        keep = min(len(rows), k + 16)
        best_rows, best_scores = np.empty(0, np.int64), np.empty(0, np.float32)
        for start in range(0, len(rows), EXACT_BLOCK):
            block = rows[start : start + EXACT_BLOCK]
            vectors = self.embeddings[start : start + EXACT_BLOCK] if mask is None else self.embeddings[block]
            scores = -(vectors @ vector)
            best_rows = np.concatenate([best_rows, block])
            best_scores = np.concatenate([best_scores, scores])
            if len(best_rows) > keep:
                top = np.argpartition(best_scores, keep - 1)[:keep]
                best_rows, best_scores = best_rows[top], best_scores[top]
        return self.rank(vector, best_rows, k)

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
            "thumb": self.thumb(row),
        }

    def thumb(self, row: int) -> str | None:
        """Thumbnail file name of a row (None for an index without thumbnails)."""
        return None if self._thumbs is None else self._thumbs[row].decode("ascii")
