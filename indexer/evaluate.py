"""Retrieval quality: leave-one-out precision@k, and recall@k of what the site returns."""

from __future__ import annotations

import time

import numpy as np

from .loading import stored_rows
from .options import SearchOptions
from .query import QueryPipeline
from .search import Hit, Searcher


def exact_neighbours(searcher: Searcher, rows: np.ndarray, k: int, colour_weight: float = 0.0) -> list[list[Hit]]:
    """Exact ``k`` best rows of each query row, itself left out, ties by row (``Searcher.exact_many``).

    With a ``colour_weight``, by the joined shape and colour score, from the stored colour descriptors.
    """
    rows = np.asarray(rows)
    vectors = np.array(searcher.embeddings[rows], dtype=np.float32)
    colours = np.array(searcher.colours[rows], dtype=np.float32) if searcher.colours is not None else None
    answers: list[list[Hit]] = []
    for start in range(0, len(rows), QUERY_BLOCK):  # bounds the block of scores held at once
        chunk = slice(start, start + QUERY_BLOCK)
        answers += searcher.exact_many(
            vectors[chunk], k, None if colours is None else colours[chunk], colour_weight, exclude=rows[chunk]
        )
    return answers


QUERY_BLOCK = 512  # queries per pass: 512 x 4096 scores per block


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None

TIE_GAP = 1e-5  # neighbour distances closer than this are a tie for fp32 rounding


def evaluate(
    searcher: Searcher,
    label: str = "articleType",
    k: int = 5,
    sample: int = 0,
    seed: int = 0,
    colour_weight: float = 0.0,
) -> dict:
    """Evaluate ``searcher`` against its own catalogue.

    Each item (or a random ``sample`` of them) is used as a query with itself
    left out. ``recall_at_k`` compares what the site returns for it (more
    like this: Annoy candidates re-ranked exactly) with exact search;
    ``annoy_recall_at_k`` is Annoy asked for ``k`` alone, for comparison.
    Precision@k counts exact neighbours sharing the query's ``label``.
    ``colour_weight`` weighs colour in both, as a search with that weight does.
    """
    n = len(searcher)
    rows = np.arange(n)
    if sample and sample < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    labels = searcher.metadata.column(label)
    # Each kind of query in a pass of its own: timed between exact searches
    # they would also pay for BLAS threads of the previous matrix product
    # still spinning on the cores.
    pipeline = QueryPipeline(None, searcher)  # more like this needs no model: the vectors are stored
    options = SearchOptions(k=k, colour_weight=colour_weight)
    site_ms, site_rows = [], []
    for row in rows:
        started = time.perf_counter()
        _, results = pipeline.similar(searcher.ids[row], options)
        site_ms.append((time.perf_counter() - started) * 1000)
        site_rows.append([r.row for r in results])
    annoy_ms, annoy_rows = [], []
    for row in rows:
        vector = searcher.vector(int(row))
        started = time.perf_counter()
        ann = searcher.annoy_neighbours(vector, k + 1)
        annoy_ms.append((time.perf_counter() - started) * 1000)
        annoy_rows.append([r for r in ann if r != row][:k])
    exact = [[hit.row for hit in hits] for hits in exact_neighbours(searcher, rows, k, colour_weight)]
    # Annoy ranks by shape alone: judge it against exact search by shape alone
    by_shape = exact if colour_weight <= 0 else [[h.row for h in hits] for hits in exact_neighbours(searcher, rows, k)]
    recalls, annoy_recalls, precisions = [], [], []
    for row, site, ann, truth, shape_truth in zip(rows, site_rows, annoy_rows, exact, by_shape):
        if not truth:
            continue
        recalls.append(len(set(site) & set(truth)) / len(truth))
        annoy_recalls.append(len(set(ann) & set(shape_truth)) / max(1, len(shape_truth)))
        if labels is not None and labels[row] >= 0:
            precisions.append(sum(labels[r] == labels[row] for r in truth) / len(truth))
    # chance: probability that a random other item shares the query's label
    counts = np.bincount(labels[labels >= 0]) if labels is not None else np.zeros(0, np.int64)
    total = int(counts.sum())
    chance = float((counts * (counts - 1)).sum()) / max(1, total * (total - 1))
    return {
        "items": n,
        "queries": int(len(rows)),
        "k": k,
        "label": label,
        "colour_weight": colour_weight if searcher.colours is not None else None,
        "labelled_queries": len(precisions),
        "precision_at_k": round(float(np.mean(precisions)), 4) if precisions else None,
        "chance_precision": round(chance, 4),
        "recall_at_k": round(float(np.mean(recalls)), 4) if recalls else None,
        "search_ms_p50": _ms(site_ms, 50),
        "search_ms_p95": _ms(site_ms, 95),
        "candidates": searcher.candidates,
        "annoy_recall_at_k": round(float(np.mean(annoy_recalls)), 4) if annoy_recalls else None,
        "annoy_query_ms_p50": _ms(annoy_ms, 50),
        "annoy_query_ms_p95": _ms(annoy_ms, 95),
        "model": searcher.manifest.get("model"),
        "weights_id": searcher.manifest.get("weights_id"),
        "vector_space": searcher.manifest.get("vector_space"),
        "runtime": searcher.manifest.get("runtime"),
        "trees": searcher.manifest.get("trees"),
    }


def _names_and_gap(searcher: Searcher, hits: list[Hit], k: int) -> tuple[list[str], float]:
    """File names of the first ``k`` of ``hits`` (a leave-one-out top-(k+1)), and the smallest
    distance gap between consecutive hits: below about 1e-5 the order is a tie that rounding may flip.
    """
    distances = [h.distance for h in hits]
    gap = min((b - a for a, b in zip(distances, distances[1:])), default=float("inf"))
    return [searcher.filenames[h.row] for h in hits[:k]], gap


_DIFF_BLOCK = 4096  # rows compared at a time: the difference is taken without holding whole matrices


def _model_rows(searcher: Searcher):
    """A reader of the model's own vectors by row (``read(rows) -> array``), or None when the index lacks them.

    A tuned index searches projected vectors, and each build learns its
    projection afresh: two builds of the same vectors can agree up to the
    sign of an axis, so their searched vectors are not comparable element by
    element. The model's vectors are, and the generation keeps them (a
    generation from before colour descriptors does not: None).
    """
    if searcher.projection is None:  # untuned: the searched vectors are the model's
        return lambda rows: np.asarray(searcher.embeddings[np.asarray(rows)], dtype=np.float32)
    stored = stored_rows(searcher.index)
    if stored is None:
        return None
    return lambda rows: np.asarray(stored[0].open()[np.asarray(rows)], dtype=np.float32)


def _max_abs_diff(searcher: Searcher, rows, other: Searcher, other_rows) -> float | None:
    """The largest element-wise difference of the two indexes' model vectors for the same items, a block at a time.

    None when either index lacks its model's vectors or the two models' vectors differ in width.
    """
    mine, theirs = _model_rows(searcher), _model_rows(other)
    if mine is None or theirs is None:
        return None
    largest = 0.0
    for start in range(0, len(rows), _DIFF_BLOCK):
        block = slice(start, start + _DIFF_BLOCK)
        a, b = mine(rows[block]), theirs(other_rows[block])
        if a.shape != b.shape:
            return None
        largest = max(largest, float(np.abs(a - b).max()))
    return largest


def compare_indexes(searcher: Searcher, other: Searcher, k: int = 5) -> dict:
    """Top-k agreement between two indexes of the same catalogue (e.g. INT8 against fp32).

    For every item in both, the exact leave-one-out top-k lists (the ones
    ``evaluate`` judges) are compared by file name: ``top_k_agreement`` is
    the mean share of common neighbours, ``identical_lists`` the share of
    queries whose ordered lists are equal. ``max_abs_diff`` compares the
    model's own vectors (``_model_rows``; None when it cannot).
    """
    common = sorted(set(searcher.filenames) & set(other.filenames))
    if len(common) <= k:
        return {"common_items": len(common), "top_k_agreement": None}
    mine = {name: row for row, name in enumerate(searcher.filenames)}
    theirs = {name: row for row, name in enumerate(other.filenames)}
    my_rows = np.array([mine[name] for name in common])
    their_rows = np.array([theirs[name] for name in common])
    # one batched exact pass per index, as evaluate judges them
    my_hits = exact_neighbours(searcher, my_rows, k + 1)
    their_hits = exact_neighbours(other, their_rows, k + 1)
    overlap, identical, at_ties = [], 0, 0
    for mine_k, theirs_k in zip(my_hits, their_hits):
        (a, gap), (b, _) = _names_and_gap(searcher, mine_k, k), _names_and_gap(other, theirs_k, k)
        overlap.append(len(set(a) & set(b)) / k)
        identical += a == b
        at_ties += a != b and gap < TIE_GAP
    return {
        "common_items": len(common),
        "k": k,
        "top_k_agreement": round(float(np.mean(overlap)), 4),
        "identical_lists": round(identical / len(common), 4),
        "differing_lists_at_ties": at_ties,  # differing lists whose order had a gap below TIE_GAP
        "max_abs_diff": _max_abs_diff(searcher, my_rows, other, their_rows),
        "vector_space": other.manifest.get("vector_space"),
        "runtime": other.manifest.get("runtime"),
    }
