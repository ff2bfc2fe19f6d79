"""Scale benchmark: a synthetic N-item catalogue index served by a real gunicorn.

    python -m benchmarks.bench_scale --items 250000

No image files are needed. The vectors come from the real fashion-dev
embeddings (``FASHION_WEIGHTS=none``, built once into a cache folder outside
the repo and reused): each synthetic item is a real vector plus a small
Gaussian perturbation, re-normalised, so neighbourhoods look like real
ones. Each item takes its source photo's ``styles.csv`` row as metadata, and
a file name that does not exist on disk. The vectors are written as build
shards into ``work/`` and published by ``indexer.build.publish_plan``, the
code path of a real build after embedding, in a child process whose peak
memory is measured. Then a real gunicorn (``gunicorn.conf.py``, 2 workers)
serves the index and the benchmark measures:

- ``worker_start_s``: gunicorn spawn to the first ``/healthz`` 200;
- ``recall_at_5``: ``GET /api/items/<id>/similar?k=5`` (what the site
  returns) against exact search, over sampled items;
- ``search_ms_p50/p95``: ``timing_ms.search`` of ``POST /api/search`` with
  real fashion-dev photos (the nearest-neighbour step, without the forward
  pass); ``filtered_ms_p95`` the same with a filter keeping about 1% of items;
- ``worker_uss_mb``: each worker's private memory (USS, from
  ``/proc/<pid>/smaps_rollup``) after those requests, and its anonymous
  part (heap) as ``worker_anon_mb``.

The same figures for a 3,000-item catalogue, measured in the same run, are
under ``baseline``. The last output line is one JSON object.

The catalogue folder the server is given does not exist, so the site's
freshness check calls the index stale and its background build fails at
once (logged); the index already published keeps being served.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATASET, load_average, peak_rss_mb, reset_peak_rss, rss_mb
from benchmarks.server import FilePart, gunicorn_server, post_search, request
from indexer.models import DEFAULT_MODEL, get_spec

log = logging.getLogger("bench_scale")

CACHE = Path(os.environ.get("FASHION_BENCH_CACHE", Path.home() / ".cache" / "fashion-bench"))
BASELINE_ITEMS = 3000
SHARD_ROWS = 4096
SEED = 20240611
WEIGHTS_ID = "random-seed1234"  # what FASHION_WEIGHTS=none records; the server must accept the index
SPEC = get_spec(DEFAULT_MODEL)  # the server's model: its id and vector size


# ---------------------------------------------------------------- source vectors


def source_index(dataset: Path) -> Path:
    """The fashion-dev index in the cache, built with FASHION_WEIGHTS=none on first use (or without colours)."""
    index_dir = CACHE / "index"
    if not (index_dir / "manifest.json").exists() or not (index_dir / "colours.npy").exists():
        log.info("Embedding %s once into %s (several minutes)", dataset, index_dir)
        env = dict(os.environ, FASHION_WEIGHTS="none")
        cmd = [sys.executable, "-m", "indexer", "build", "--catalogue", str(dataset), "--index-dir", str(index_dir)]
        subprocess.run(cmd, check=True, env=env)
    return index_dir


def load_source(dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """The real fashion-dev vectors and colour descriptors."""
    from indexer.artifacts import load_index

    loaded = load_index(source_index(dataset))
    vectors = np.array(loaded.embeddings, dtype=np.float32)
    colours = np.array(loaded.colours, dtype=np.float32)
    loaded.annoy.unload()
    return vectors, colours


def noise_scale(vectors: np.ndarray) -> float:
    """Per-dimension sigma: the perturbation's norm is a third of the median nearest-neighbour distance."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.sqrt(np.maximum(2.0 - 2.0 * sims.max(axis=1), 0.0))
    return float(np.median(nearest)) / 3.0 / np.sqrt(vectors.shape[1])


def synthetic_rows(vectors: np.ndarray, start: int, stop: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start..stop`` of the synthetic catalogue and the real row each derives from."""
    rng = np.random.default_rng([SEED, start])
    sources = rng.integers(0, len(vectors), stop - start)
    rows = vectors[sources] + rng.normal(0.0, sigma, (stop - start, vectors.shape[1])).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32), sources


def relpath(item: int) -> str:
    """File name of a synthetic item (no such file exists)."""
    return f"synthetic/{item:07d}.jpg"


def write_shards(index_dir: Path, vectors: np.ndarray, colours: np.ndarray, items: int, sigma: float) -> list[int]:
    """Write the synthetic vectors as build shards (with their source's colours); returns each item's source row."""
    from indexer import checkpoints
    from indexer.plan import model_key

    key = model_key(SPEC.model_id, WEIGHTS_ID)
    work = checkpoints.work_dir(index_dir)
    sources: list[int] = []
    for start in range(0, items, SHARD_ROWS):
        stop = min(items, start + SHARD_ROWS)
        rows, src = synthetic_rows(vectors, start, stop, sigma)
        fingerprints = [[relpath(i), 1000, 0] for i in range(start, stop)]
        checkpoints.write_shard(
            work, rows, fingerprints, colours=colours[src], model_key=key, name=f"shard-{start:09d}"
        )
        sources.extend(int(s) for s in src)
    return sources


# ---------------------------------------------------------------- publishing (child process)


def publish_child(index_dir: Path, sources_path: Path, dataset: Path) -> dict:
    """Publish the shards in ``index_dir/work`` through ``publish_plan``; measure time and peak RSS."""
    from indexer.build import publish_plan
    from indexer.catalogue import CatalogueFile, read_styles
    from indexer.config import Settings
    from indexer.plan import BuildPlan, model_key

    source_index(dataset)
    sources = json.loads(sources_path.read_text())
    loaded_names = _source_filenames()
    real_styles = read_styles(dataset)
    source_rows = [dict(real_styles.get(Path(name).stem, {})) for name in loaded_names]
    files = [CatalogueFile(relpath(i), 1000, 0) for i in range(len(sources))]
    styles = {Path(relpath(i)).stem: source_rows[s] for i, s in enumerate(sources)}
    catalogue = index_dir.parent / "no-such-catalogue"
    plan = BuildPlan(catalogue, files, styles, model_key(SPEC.model_id, WEIGHTS_ID), {}, files, 0)
    settings = Settings.from_env(catalogue=str(catalogue), index_dir=str(index_dir))
    del sources
    reset_peak_rss()
    before = rss_mb()
    started = time.perf_counter()
    publish_plan(plan, settings, [], SPEC.dim)
    elapsed = time.perf_counter() - started
    return {"publish_s": round(elapsed, 2), "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def _source_filenames() -> list[str]:
    from indexer.artifacts import current_generation, safe_unpickle

    return safe_unpickle((current_generation(CACHE / "index") / "filenames.pkl").read_bytes())


# ---------------------------------------------------------------- measuring one size


def uss_mb(pid: int) -> tuple[float, float]:
    """USS (private clean + dirty) and the anonymous part of a process, in MB."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
    return (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024, fields["Anonymous"] / 1024


def one_percent_filter(searcher, target: float) -> tuple[dict[str, str], int]:
    """The (gender, articleType) or (articleType, baseColour) filter matching closest to ``target`` items."""
    best: tuple[float, dict, int] | None = None
    meta = searcher.metadata
    for first, second in (("gender", "articleType"), ("articleType", "baseColour")):
        a, b = meta.column(first), meta.column(second)
        if a is None or b is None:
            continue
        ok = (a >= 0) & (b >= 0)
        pairs, counts = np.unique(np.stack([a[ok], b[ok]]), axis=1, return_counts=True)
        for (ca, cb), count in zip(pairs.T, counts):
            score = abs(np.log(count / target))
            if best is None or score < best[0]:
                best = (score, {first: meta.values[first][ca], second: meta.values[second][cb]}, int(count))
    return best[1], best[2]


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def measure(
    items: int, vectors: np.ndarray, colours: np.ndarray, sigma: float, dataset: Path, work_root: Path, queries: int
) -> dict:
    """Build, publish, serve and measure one synthetic catalogue of ``items``."""
    from indexer.evaluate import exact_neighbours
    from indexer.search import Searcher

    index_dir = work_root / f"index-{items}"
    sources = write_shards(index_dir, vectors, colours, items, sigma)
    sources_path = work_root / f"sources-{items}.json"
    sources_path.write_text(json.dumps(sources))
    del sources
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scale", "--publish-child", str(index_dir),
         "--sources", str(sources_path), "--dataset", str(dataset)],
        check=True, capture_output=True, text=True,
    )
    published = json.loads(child.stdout.strip().splitlines()[-1])
    vectors_mb = items * vectors.shape[1] * 4 / 2**20
    result = {
        "items": items,
        "publish_s": published["publish_s"],
        "publish_peak_rss_mb": round(published["peak_rss_mb"] - published["rss_before_mb"], 1),
        "publish_peak_over_vectors": round((published["peak_rss_mb"] - published["rss_before_mb"]) / vectors_mb, 2),
        "vectors_mb": round(vectors_mb, 1),
    }
    log.info("%d items published: %s", items, result)

    searcher = Searcher.load(index_dir)  # the parent's own view, for the exact answers
    rng = np.random.default_rng(SEED)
    sample = np.sort(rng.choice(items, min(queries, items), replace=False))
    truth = [[hit.row for hit in hits] for hits in exact_neighbours(searcher, sample, 5)]
    item_ids = [searcher.ids[row] for row in sample]
    filters, matching = one_percent_filter(searcher, items / 100)
    searcher.index.annoy.unload()
    del searcher
    photos = sorted(dataset.rglob("*.jpg"))
    photos = photos[:: max(1, len(photos) // queries)][:queries]
    catalogue = work_root / "no-such-catalogue"
    with gunicorn_server(catalogue, index_dir, log_name=f"bench-scale-{items}", startup_timeout_s=600) as server:
        result["worker_start_s"] = round(server.ready_s, 2)
        result["all_workers_ready_s"] = round(server.all_ready_s, 2)
        phases = server.startup_phases()  # per worker: model build + warm-up + index load
        result["worker_model_to_index_s"] = [
            round(served - loading, 2) for loading, served in zip(phases["model_loading_s"], phases["index_served_s"])
        ]
        hits = []
        for item_id, exact in zip(item_ids, truth):
            reply = request(server.port, "GET", f"/api/items/{item_id}/similar?k=5")
            got = [int(Path(r["filename"]).stem) for r in reply.json()["results"]]
            hits.append(len(set(got) & set(exact)) / len(exact))
        result["recall_at_5"] = round(float(np.mean(hits)), 4)
        search_ms, filtered_ms = [], []
        for photo in photos:
            part = [FilePart("image", photo.name, photo.read_bytes())]
            reply = post_search(server.port, part)
            search_ms.append(reply.json()["timing_ms"]["search"])
            reply = post_search(server.port, part, fields=filters)
            body = reply.json()
            if reply.status != 200 or len(body["queries"][0]["results"]) != 5:
                raise RuntimeError(f"filtered search failed: {reply.status} {body}")
            filtered_ms.append(body["timing_ms"]["search"])
        result.update(
            search_ms_p50=percentile(search_ms, 50),
            search_ms_p95=percentile(search_ms, 95),
            filtered_ms_p50=percentile(filtered_ms, 50),
            filtered_ms_p95=percentile(filtered_ms, 95),
            filter=filters,
            filter_matches=matching,
        )
        memory = [uss_mb(pid) for pid in server.worker_pids()]
        result["worker_uss_mb"] = [round(uss, 1) for uss, _ in memory]
        result["worker_anon_mb"] = [round(anon, 1) for _, anon in memory]
    shutil.rmtree(index_dir, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=250_000, help="synthetic catalogue size")
    parser.add_argument("--baseline", type=int, default=BASELINE_ITEMS, help="size of the baseline catalogue")
    parser.add_argument("--queries", type=int, default=60, help="queries per measurement")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="fashion-dev folder")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--publish-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sources", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    if args.publish_child:
        print(json.dumps(publish_child(args.publish_child, args.sources, args.dataset)))
        return 0

    vectors, colours = load_source(args.dataset)
    sigma = noise_scale(vectors)
    work_root = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.work))
    try:
        baseline = measure(args.baseline, vectors, colours, sigma, args.dataset, work_root, args.queries)
        result = measure(args.items, vectors, colours, sigma, args.dataset, work_root, args.queries)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    result.update(
        sigma=sigma,
        cpus=os.cpu_count(),
        load_average=round(load_average(), 2),
        baseline=baseline,
        uss_growth_mb=round(max(result["worker_uss_mb"]) - max(baseline["worker_uss_mb"]), 1),
        start_ratio=round(result["worker_start_s"] / baseline["worker_start_s"], 2),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
