"""Filtered search on a built index: mask cost and end-to-end search time.

    python benchmarks/bench_filters.py INDEX_DIR [--filter gender=Women --filter articleType=Tshirts]

Also times the previous implementation of the filter mask (a Python walk
over every row's metadata dict) in the same run, as the reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.search import Searcher  # noqa: E402


def per_row_mask(searcher: Searcher, filters: dict[str, str]) -> np.ndarray:
    """The previous mask: one dict lookup per row and field."""
    mask = np.ones(len(searcher.metadata), bool)
    for name, wanted in filters.items():
        mask &= np.fromiter((m.get(name) == wanted for m in searcher.metadata), bool, len(searcher.metadata))
    return mask


def mean_ms(fn, repeats: int) -> float:
    """Mean wall time of ``fn()`` in milliseconds."""
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> int:
    """Print the figures; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--filter", action="append", default=None, help="field=value (repeatable)")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    filters = dict(f.split("=", 1) for f in (args.filter or ["gender=Women", "articleType=Tshirts"]))
    searcher = Searcher.load(args.index_dir)
    if not (per_row_mask(searcher, filters) == searcher._mask(filters)).all():
        print("masks disagree", file=sys.stderr)
        return 1
    old = mean_ms(lambda: per_row_mask(searcher, filters), args.queries)
    new = mean_ms(lambda: searcher._mask(filters), args.queries)
    rows = np.random.default_rng(0).choice(len(searcher), min(args.queries, len(searcher)), replace=False)
    times = []
    for row in rows:
        started = time.perf_counter()
        searcher.search(searcher.vector(int(row)), 5, filters)
        times.append((time.perf_counter() - started) * 1000)
    print(f"items {len(searcher)}, filters {filters}, matching {int(searcher._mask(filters).sum())}")
    print(f"filter mask: per-row reference {old:.3f} ms, column arrays {new:.3f} ms ({old / new:.1f}x)")
    print(f"filtered search (k=5): p50 {np.percentile(times, 50):.2f} ms, p95 {np.percentile(times, 95):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
