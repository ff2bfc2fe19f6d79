"""Retrieval quality: leave-one-out precision@k and Annoy recall@k."""

from __future__ import annotations

import time

import numpy as np

from .search import Searcher

TIE_GAP = 1e-5  # neighbour distances closer than this are a tie for fp32 rounding


def evaluate(searcher: Searcher, label: str = "articleType", k: int = 5, sample: int = 0, seed: int = 0) -> dict:
    """Evaluate ``searcher`` against its own catalogue.

    Each item (or a random ``sample`` of them) is used as a query with itself
    left out. Precision@k counts neighbours sharing the query's ``label``;
    recall@k compares Annoy's neighbours with exact search's.
    """
    n = len(searcher)
    rows = np.arange(n)
    if sample and sample < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    labels = [meta.get(label) for meta in searcher.metadata]
    # Annoy queries first, in a pass of their own: timed between exact
    # searches they would also pay for BLAS threads of the previous matrix
    # product still spinning on the cores (p95 4.9 ms instead of 0.6 ms).
    annoy_ms, annoy_rows = [], []
    for row in rows:
        vector = searcher.vector(int(row))
        started = time.perf_counter()
        ann = searcher.annoy_neighbours(vector, k + 1)
        annoy_ms.append((time.perf_counter() - started) * 1000)
        annoy_rows.append(ann)
    precisions, recalls = [], []
    for row, ann in zip(rows, annoy_rows):
        vector = searcher.vector(int(row))
        ann = [r for r in ann if r != row][:k]
        exact = [h.row for h in searcher.exact(vector, k + 1) if h.row != row][:k]
        if exact:
            recalls.append(len(set(ann) & set(exact)) / len(exact))
        if labels[row] is not None and exact:
            precisions.append(sum(labels[r] == labels[row] for r in exact) / len(exact))
    counts: dict = {}
    for value in labels:
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    # chance: probability that a random other item shares the query's label
    chance = sum(c * (c - 1) for c in counts.values()) / max(1, sum(counts.values()) * (sum(counts.values()) - 1))
    return {
        "items": n,
        "queries": int(len(rows)),
        "k": k,
        "label": label,
        "labelled_queries": len(precisions),
        "precision_at_k": round(float(np.mean(precisions)), 4) if precisions else None,
        "chance_precision": round(chance, 4),
        "annoy_recall_at_k": round(float(np.mean(recalls)), 4) if recalls else None,
        "annoy_query_ms_p50": round(float(np.percentile(annoy_ms, 50)), 3) if annoy_ms else None,
        "annoy_query_ms_p95": round(float(np.percentile(annoy_ms, 95)), 3) if annoy_ms else None,
        "weights_id": searcher.manifest.get("weights_id"),
        "vector_space": searcher.manifest.get("vector_space"),
        "runtime": searcher.manifest.get("runtime"),
        "trees": searcher.manifest.get("trees"),
    }


def _neighbours(searcher: Searcher, row: int, k: int) -> tuple[list[str], float]:
    """File names of the exact leave-one-out top-k of ``row``, as ``evaluate`` ranks them.

    Also returns the smallest distance gap between consecutive neighbours up to
    rank k + 1: below about 1e-5 the order is a tie that rounding may flip.
    """
    hits = [h for h in searcher.exact(searcher.vector(row), k + 2) if h.row != row][: k + 1]
    distances = [h.distance for h in hits]
    gap = min((b - a for a, b in zip(distances, distances[1:])), default=float("inf"))
    return [searcher.filenames[h.row] for h in hits[:k]], gap


def compare_indexes(searcher: Searcher, other: Searcher, k: int = 5) -> dict:
    """Top-k agreement between two indexes of the same catalogue (e.g. INT8 against fp32).

    For every item in both, the exact leave-one-out top-k lists (the ones
    ``evaluate`` judges) are compared by file name: ``top_k_agreement`` is
    the mean share of common neighbours, ``identical_lists`` the share of
    queries whose ordered lists are equal.
    """
    common = sorted(set(searcher.filenames) & set(other.filenames))
    if len(common) <= k:
        return {"common_items": len(common), "top_k_agreement": None}
    mine = {name: row for row, name in enumerate(searcher.filenames)}
    theirs = {name: row for row, name in enumerate(other.filenames)}
    overlap, identical, at_ties, max_diff = [], 0, 0, 0.0
    for name in common:
        (a, gap), (b, _) = _neighbours(searcher, mine[name], k), _neighbours(other, theirs[name], k)
        overlap.append(len(set(a) & set(b)) / k)
        identical += a == b
        at_ties += a != b and gap < TIE_GAP
        max_diff = max(max_diff, float(np.abs(searcher.vector(mine[name]) - other.vector(theirs[name])).max()))
    return {
        "common_items": len(common),
        "k": k,
        "top_k_agreement": round(float(np.mean(overlap)), 4),
        "identical_lists": round(identical / len(common), 4),
        "differing_lists_at_ties": at_ties,  # differing lists whose order had a gap below TIE_GAP
        "max_abs_diff": max_diff,
        "vector_space": other.manifest.get("vector_space"),
        "runtime": other.manifest.get("runtime"),
    }
