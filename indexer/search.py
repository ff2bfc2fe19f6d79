"""Searcher: nearest catalogue items for a vector: Annoy candidates re-ranked exactly, exact filters.

A search may weigh colour as well as shape: the score of an item is then
``(1 - w) x shape similarity + w x colour similarity`` (cosines of the
embeddings and of the colour descriptors, ``indexer.colour``). Annoy's
candidates come from shape alone; the joined score re-ranks them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .ids import recorded_ids
from .loading import LoadedIndex, load_index
from .memory import release_free_memory
from .options import FILTER_FIELDS
from .strings import StringColumn

if TYPE_CHECKING:
    from .config import Settings

EXACT_BLOCK = 4096  # rows per matrix product in exact search (32 MB of 2048-dim float32 vectors)
# Scattered rows (a filter's matches, Annoy's candidates) are copied this many
# at a time: a copy of about a megabyte stays in cache, while a copy of tens
# of megabytes page-faults on every fresh page and ran 2.4x slower.
GATHER_ROWS = 256


def gathered(matrix: np.ndarray, rows: np.ndarray, apply) -> np.ndarray:
    """``apply(matrix[chunk])`` for consecutive chunks of ``rows``, concatenated (float32)."""
    out = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), GATHER_ROWS):
        chunk = rows[start : start + GATHER_ROWS]
        out[start : start + len(chunk)] = apply(matrix[chunk])
    return out


def joined_score(shape_similarity, colour_similarity, weight: float):
    """The score a search that weighs colour ranks by: ``(1 - w) x shape + w x colour`` similarity.

    The one place the formula lives; the searcher, exact search and the
    evaluation all rank by it (works on scalars and numpy arrays alike).
    """
    return (1.0 - weight) * shape_similarity + weight * colour_similarity


class UnknownItem(KeyError):
    """No catalogue item has the requested id."""


@dataclass(frozen=True)
class Hit:
    """One neighbour: row in the index and euclidean distance between unit vectors.

    When the search weighed colour, ``colour_similarity`` is the cosine of
    the colour descriptors and ``score`` the joined score it was ranked by.
    """

    row: int
    distance: float
    colour_similarity: float | None = None
    score: float | None = None

    @property
    def similarity(self) -> float:
        """Shape (embedding) cosine similarity, recovered from the distance of unit vectors."""
        return 1.0 - self.distance * self.distance / 2.0


@dataclass(frozen=True)
class ColourQuery:
    """The colour part of a search: the query's colour descriptor and its weight ``w`` (0 to 1)."""

    descriptor: np.ndarray
    weight: float


class Searcher:
    """Nearest-neighbour search over one loaded, verified index generation.

    Every search (plain, filtered, more-like-this) takes the same path: a
    generous pool of candidates from Annoy, re-ranked by exact distance
    against the stored vectors, or exact search over the allowed rows when a
    filter leaves few enough of them. Annoy's default effort is about
    ``trees x k`` nodes whatever the catalogue size, so asking it for only
    ``k`` results loses recall as the catalogue grows; a pool of
    ``candidates`` (and Annoy's ``search_k`` of ``trees x pool``) holds it.
    A search that weighs colour by ``w`` takes a pool ``1 / (1 - w)^2`` times
    larger, since its best items may lie further away in shape.
    """

    def __init__(self, index: LoadedIndex, search_k: int = -1, candidates: int = 200):
        # Per-item strings are not kept as Python objects (about 0.3 KB an
        # item): file names and ids become string columns, thumbnail names
        # one bytes array, and the manifest's per-item lists are dropped.
        self.ids = StringColumn(recorded_ids(index.manifest, index.filenames))
        self.filenames = StringColumn(index.filenames)
        manifest = dict(index.manifest)
        for per_item in ("items", "ids"):
            manifest.pop(per_item, None)
        thumbs = manifest.pop("thumbs", None)
        index.manifest = manifest
        index.filenames = self.filenames
        self.index = index
        self.manifest = manifest
        self.embeddings = index.embeddings
        self.colours = index.colours  # None for an index written before colour descriptors
        self.metadata = index.metadata
        self.projection = index.projection  # the catalogue tuning queries go through; None: the model's vectors
        self._thumbs = np.array([t.encode("ascii") for t in thumbs], dtype=np.bytes_) if thumbs else None
        del thumbs
        release_free_memory()  # what parsing the per-item lists left in the heap
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
        row = self.ids.find(item_id)
        if row is None:
            raise UnknownItem(item_id)
        return row

    def tune(self, vectors: np.ndarray) -> np.ndarray:
        """Query vectors as the model gave them, in this index's space: through its catalogue tuning, if any."""
        return np.asarray(vectors, np.float32) if self.projection is None else self.projection.apply(vectors)

    def vector(self, row: int) -> np.ndarray:
        """Stored unit vector of a row (no re-embedding), as float32 whatever the stored dtype."""
        return np.array(self.embeddings[row], dtype=np.float32)

    def colour(self, row: int) -> np.ndarray | None:
        """Stored colour descriptor of a row (None for an index without them)."""
        return None if self.colours is None else np.array(self.colours[row])

    def _joined(self, colour: ColourQuery | None) -> ColourQuery | None:
        """``colour`` when it changes the ranking: a weight above 0 and an index with colour descriptors."""
        if colour is None or colour.weight <= 0 or self.colours is None:
            return None
        return ColourQuery(np.asarray(colour.descriptor, dtype=np.float32), float(min(1.0, colour.weight)))

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
        self,
        vector: np.ndarray,
        k: int,
        filters: dict[str, str] | None = None,
        exclude: int | None = None,
        colour: ColourQuery | None = None,
    ) -> list[Hit]:
        """The ``k`` best items for ``vector`` (and ``colour``, if weighed) that match every filter exactly.

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
            return self.exact(vector, wanted, mask, colour)
        pool = math.ceil(max(self.candidates, 2 * wanted) * n / allowed) + (exclude is not None)
        joined = self._joined(colour)
        if joined is not None:
            # the pool is chosen by shape: the more colour weighs, the deeper the
            # best joined scores can lie in it, so take more (colour alone: all)
            pool = n if joined.weight >= 1 else math.ceil(pool / (1.0 - joined.weight) ** 2)
        if pool > n // 2:
            return self.exact(vector, wanted, mask, colour)
        rows = np.asarray(
            self._annoy.get_nns_by_vector(vector.tolist(), pool, search_k=self._search_k), dtype=np.int64
        )
        if mask is not None:
            rows = rows[mask[rows]]
        if len(rows) < wanted:
            return self.exact(vector, wanted, mask, colour)
        return self.rank(vector, rows, wanted, colour)

    def rank(self, vector: np.ndarray, rows: np.ndarray, k: int, colour: ColourQuery | None = None) -> list[Hit]:
        """The ``k`` best of ``rows`` for ``vector``, ties by row.

        Best means nearest by exact distance, or with ``colour`` weighed, the
        highest joined score ``(1 - w) x shape + w x colour`` similarity.
        """
        rows = np.sort(rows)  # ascending rows read the memory-mapped vectors in file order
        distances = gathered(self.embeddings, rows, lambda block: np.linalg.norm(block - vector, axis=1))
        colour = self._joined(colour)
        if colour is None:
            order = np.lexsort((rows, distances))[:k]
            return [Hit(int(rows[i]), float(distances[i])) for i in order]
        colour_sims = gathered(self.colours, rows, lambda block: block @ colour.descriptor)
        scores = joined_score(1.0 - distances * distances / 2.0, colour_sims, colour.weight)
        order = np.lexsort((rows, -scores))[:k]
        return [Hit(int(rows[i]), float(distances[i]), float(colour_sims[i]), float(scores[i])) for i in order]

    def annoy_neighbours(self, vector: np.ndarray, n: int) -> list[int]:
        """Rows of Annoy's ``n`` nearest items alone (no filters, no fallback), for measuring recall."""
        return self._annoy.get_nns_by_vector(vector.tolist(), n, search_k=self._search_k)

    def exact(
        self, vector: np.ndarray, k: int, mask: np.ndarray | None = None, colour: ColourQuery | None = None
    ) -> list[Hit]:
        """Brute-force best items for one vector (shape, or the joined score with ``colour``) over ``mask``'s rows."""
        joined = self._joined(colour)
        descriptors = None if joined is None else joined.descriptor[None, :]
        return self.exact_many(
            np.asarray(vector, np.float32)[None, :], k, descriptors, 0.0 if joined is None else joined.weight, mask
        )[0]

    def exact_many(
        self,
        vectors: np.ndarray,
        k: int,
        colour_descriptors: np.ndarray | None = None,
        colour_weight: float = 0.0,
        mask: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """The exact ``k`` best items for each of ``vectors``: the one exact nearest-neighbour routine.

        Search, more like this, the evaluation and the benchmarks all use it.
        Scores are the shape similarity, or the joined score when
        ``colour_descriptors`` (one per vector) and a ``colour_weight`` above
        0 are given; only ``mask``'s rows are candidates, and ``exclude``
        (one row per vector) leaves that row out of its vector's answer. The
        vectors go through the catalogue a block of rows at a time (one
        matrix product per block for all queries), so memory stays small when
        the vectors are a memory-mapped file of gigabytes. Ties go by row.
        """
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        rows = np.arange(len(self.filenames)) if mask is None else np.flatnonzero(mask)
        k = min(k, len(rows))
        if k <= 0:
            return [[] for _ in vectors]
        joined = colour_descriptors is not None and colour_weight > 0 and self.colours is not None
        if joined:
            colour_descriptors = np.atleast_2d(np.asarray(colour_descriptors, dtype=np.float32))
        # |a-b|^2 = 2 - 2 a.b for unit vectors: cheap, but it cancels badly near
        # 0, so each block keeps a margin of candidates that rank() recomputes
        keep = min(len(rows), k + 16 + (exclude is not None))
        best_rows = np.empty((len(vectors), 0), np.int64)
        best_scores = np.empty((len(vectors), 0), np.float32)
        for start in range(0, len(rows), EXACT_BLOCK):
            block = rows[start : start + EXACT_BLOCK]
            scores = self._products(self.embeddings, block, vectors, consecutive=mask is None)
            if joined:
                colour_sims = self._products(self.colours, block, colour_descriptors, consecutive=mask is None)
                scores = joined_score(scores, colour_sims, colour_weight)
            best_rows = np.hstack([best_rows, np.broadcast_to(block, scores.shape)])
            best_scores = np.hstack([best_scores, -scores])  # argpartition keeps the smallest
            if best_rows.shape[1] > keep:
                top = np.argpartition(best_scores, keep - 1, axis=1)[:, :keep]
                best_rows = np.take_along_axis(best_rows, top, axis=1)
                best_scores = np.take_along_axis(best_scores, top, axis=1)
        answers = []
        for i, (vector, candidates) in enumerate(zip(vectors, best_rows)):
            if exclude is not None:
                candidates = candidates[candidates != exclude[i]]
            colour = ColourQuery(colour_descriptors[i], colour_weight) if joined else None
            answers.append(self.rank(vector, candidates, k, colour))
        return answers

    @staticmethod
    def _products(matrix: np.ndarray, rows: np.ndarray, queries: np.ndarray, consecutive: bool) -> np.ndarray:
        """``queries @ matrix[rows].T``; consecutive rows are a view of the mapped file, nothing is copied."""
        if consecutive:
            return queries @ np.asarray(matrix[rows[0] : rows[-1] + 1], dtype=np.float32).T
        out = np.empty((len(queries), len(rows)), np.float32)
        for start in range(0, len(rows), GATHER_ROWS):
            chunk = rows[start : start + GATHER_ROWS]
            out[:, start : start + len(chunk)] = queries @ np.asarray(matrix[chunk], dtype=np.float32).T
        return out

    def similar(
        self, item_id: str, k: int, filters: dict[str, str] | None = None, colour_weight: float = 0.0
    ) -> tuple[int, list[Hit]]:
        """Neighbours of a catalogue item from its stored vector (and colour), itself excluded."""
        row = self.row_of(item_id)
        stored = self.colour(row)
        colour = ColourQuery(stored, colour_weight) if stored is not None and colour_weight > 0 else None
        return row, self.search(self.vector(row), k, filters, exclude=row, colour=colour)

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
