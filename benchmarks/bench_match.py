"""The match label on fashion-dev: do a query's 1st and 50th results read differently?

Builds (or reuses) an index of the dev dataset, then uses 100 catalogue
photos as queries, each excluding itself (their stored vectors, which equal
a re-embedding of the photo: distance 0). For the rank-1 and the rank-50
result of every query it reports the raw cosine similarity, the old
display ("99.4% similar"), the calibrated 0-100 score and the label the
page shows, and how often the rank-1 label is better than the rank-50 one.

    python -m benchmarks.bench_match [--dataset DIR] [--index-dir DIR] [--queries 100] [--model M] [--weights auto]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATASET, REPO_ROOT, load_average

log = logging.getLogger("bench_match")

RANKS = (1, 50)


def _distribution(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": round(float(arr.min()), 4),
        "p10": round(float(np.quantile(arr, 0.1)), 4),
        "median": round(float(np.median(arr)), 4),
        "p90": round(float(np.quantile(arr, 0.9)), 4),
        "max": round(float(arr.max()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the index, run the queries, print figures and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--index-dir", type=Path, default=REPO_ROOT / "benchmarks" / "out" / "match-index")
    parser.add_argument("--queries", type=int, default=100)
    # not given: FASHION_MODEL / FASHION_WEIGHTS, read and checked by Settings
    parser.add_argument("--model", help="FASHION_MODEL name (default: FASHION_MODEL, else its default)")
    parser.add_argument("--weights", help="FASHION_WEIGHTS value (default: FASHION_WEIGHTS, else auto)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from indexer.build import build_index
    from indexer.calibration import EXACT_DISTANCE, LABELS, match_label, match_score
    from indexer.config import Settings
    from indexer.model import load_embedder
    from indexer.search import Searcher

    settings = Settings.from_env(
        catalogue=str(args.dataset), index_dir=str(args.index_dir), weights=args.weights, model=args.model
    )
    embedder = load_embedder(settings.weights, settings.random_seed, settings.tf_threads, settings.model)
    started = time.monotonic()
    report = build_index(settings, embedder)  # incremental: reuses a fresh index
    log.info("Index: %s (%.0f s)", report.summary(), time.monotonic() - started)

    searcher = Searcher.load(settings.index_dir)
    scale = searcher.manifest.get("match_scale")
    if scale is None:
        raise SystemExit("the index has no match_scale; rebuild it with `python -m indexer rebuild`")
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(len(searcher), size=min(args.queries, len(searcher)), replace=False)
    per_rank = {rank: {"similarity": [], "old_percent": [], "score": [], "labels": collections.Counter()}
                for rank in RANKS}
    label_order = {label: n for n, (_, label) in enumerate(LABELS)}
    better = 0
    for row in rows:
        hits = searcher.search(searcher.vector(int(row)), max(RANKS), exclude=int(row))
        labels = {}
        for rank in RANKS:
            hit = hits[rank - 1]
            score = match_score(hit.similarity, scale)
            label = match_label(score, hit.distance <= EXACT_DISTANCE)
            labels[rank] = label
            bucket = per_rank[rank]
            bucket["similarity"].append(hit.similarity)
            bucket["old_percent"].append(round(hit.similarity * 100, 1))
            bucket["score"].append(score)
            bucket["labels"][label] += 1
        better += label_order.get(labels[1], 99) < label_order.get(labels[50], 99)
    summary = {
        "benchmark": "match_label",
        "dataset": str(args.dataset),
        "items": len(searcher),
        "queries": len(rows),
        "model": settings.model,
        "weights": embedder.weights_id,
        "scale": scale,
        "load": round(load_average(), 2),
    }
    for rank in RANKS:
        bucket = per_rank[rank]
        summary[f"rank{rank}"] = {
            "similarity": _distribution(bucket["similarity"]),
            "old_display_percent": _distribution(bucket["old_percent"]),
            "score": _distribution(bucket["score"]),
            "labels": dict(bucket["labels"].most_common()),
        }
        log.info(
            "rank %d: cosine %s; old display %s%%; score %s; labels %s",
            rank, summary[f"rank{rank}"]["similarity"], summary[f"rank{rank}"]["old_display_percent"],
            summary[f"rank{rank}"]["score"], dict(bucket["labels"]),
        )
    scores1 = np.asarray(per_rank[1]["score"])
    scores50 = np.asarray(per_rank[50]["score"])
    summary["rank1_label_better_than_rank50"] = round(better / len(rows), 3)
    # how often a random rank-1 result scores above a random rank-50 one (1.0: never confused)
    summary["p_score_rank1_gt_rank50"] = round(float((scores1[:, None] > scores50[None, :]).mean()), 4)
    summary["old_display_identical_share"] = round(
        float(np.mean(np.asarray(per_rank[1]["old_percent"]) == np.asarray(per_rank[50]["old_percent"]))), 3
    )
    log.info(
        "rank-1 label better than rank-50 label for %.0f%% of queries; P(score1 > score50) = %.3f",
        100 * summary["rank1_label_better_than_rank50"], summary["p_score_rank1_gt_rank50"],
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
