"""Scale benchmark: a synthetic N-item catalogue index served by a real gunicorn.

    python -m benchmarks.bench_scale --items 1000000 --steps 250000

No image files are needed. The vectors grow from the real fashion-dev
embeddings (the default model with its pretrained weights, built once into a
cache folder outside the repo and reused) through
``benchmarks.synthetic.SyntheticCatalogue``: each synthetic item lies between
two real items of the same articleType, plus noise calibrated so that a
synthetic sample as large as the real catalogue has the real catalogue's
median distance to its nearest neighbour (``neighbour_distance`` in the
output puts both side by side). Each item takes its source photo's
``styles.csv`` row as metadata and colour descriptor, and a file name that
does not exist on disk. The vectors are written as build shards into
``work/`` and published by ``indexer.build.publish_plan``, the code path of a
real build after embedding, in a child process whose peak memory is
measured. Then a real gunicorn (``gunicorn.conf.py``, 2 workers) serves the
index and the benchmark measures:

- ``worker_start_s``: gunicorn spawn to the first ``/healthz`` 200;
- ``recall_at_5``: ``GET /api/items/<id>/similar?k=5`` (what the site
  returns) against exact search, over sampled items;
- ``search_ms_p50/p95``: ``timing_ms.search`` of ``POST /api/search`` with
  real fashion-dev photos (the nearest-neighbour step, without the forward
  pass); ``filtered_ms_p95`` the same with a filter keeping about 1% of items;
- ``worker_uss_mb``: each worker's private memory (USS, from
  ``/proc/<pid>/smaps_rollup``) after those requests, its anonymous part
  (heap) as ``worker_anon_mb``, and as ``worker_index_pages_mb`` the part
  that is pages of the mapped index files no other process has mapped yet
  (page cache that the other worker shares as soon as it reads them).

For the largest size it also publishes an incremental build that adds 1% of
items (the previous generation's rows are reused by reference, the new ones
come from shards) and reports its peak memory against the full publish's;
and it compares float16 re-ranking vectors with float32 on the same index:
recall@5 of the site's ranking, its latency, and the size of the file the
workers map.

The same figures for a 3,000-item catalogue, measured in the same run, are
under ``baseline``; each ``--steps`` size under ``steps``. The last output
line is one JSON object.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATASET, load_average, peak_rss_mb, reset_peak_rss, rss_mb
from benchmarks.server import FilePart, gunicorn_server, post_search, request
from benchmarks.synthetic import SyntheticCatalogue
from indexer.models import DEFAULT_MODEL, get_spec

log = logging.getLogger("bench_scale")

CACHE = Path(os.environ.get("FASHION_BENCH_CACHE", Path.home() / ".cache" / "fashion-bench"))
BASELINE_ITEMS = 3000
SHARD_ROWS = 4096
SEED = 20240611
SPEC = get_spec(DEFAULT_MODEL)  # the server's model: its id and vector size
INCREMENT = 0.01  # share of items an incremental build adds


# ---------------------------------------------------------------- source vectors


def source_index(dataset: Path) -> Path:
    """The fashion-dev index of the default model with pretrained weights, in the cache (built on first use)."""
    index_dir = CACHE / f"index-{SPEC.model_id}-pretrained"
    if not (index_dir / "manifest.json").exists() or not (index_dir / "colours.npy").exists():
        log.info("Embedding %s once into %s (several minutes)", dataset, index_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
        cmd = [sys.executable, "-m", "indexer", "build", "--catalogue", str(dataset), "--index-dir", str(index_dir)]
        subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)  # our stdout ends with one JSON line
    return index_dir


@dataclass
class Source:
    """The real catalogue the synthetic one grows from."""

    vectors: np.ndarray
    colours: np.ndarray
    labels: list[str]  # articleType of each row ("" when unknown)
    weights_id: str  # what the server must load to accept the index


def load_source(dataset: Path) -> Source:
    """The real fashion-dev vectors, colour descriptors and articleTypes."""
    from indexer.catalogue import read_styles
    from indexer.loading import load_index

    loaded = load_index(source_index(dataset))
    styles = read_styles(dataset)
    labels = [str(styles.get(Path(name).stem, {}).get("articleType") or "") for name in loaded.filenames]
    source = Source(
        np.array(loaded.embeddings, dtype=np.float32),
        np.array(loaded.colours, dtype=np.float32),
        labels,
        loaded.manifest["weights_id"],
    )
    loaded.annoy.unload()
    return source


def relpath(item: int) -> str:
    """File name of a synthetic item (no such file exists)."""
    return f"synthetic/{item:07d}.jpg"


def write_shards(
    index_dir: Path, synthetic: SyntheticCatalogue, colours: np.ndarray, start: int, stop: int, weights_id: str
) -> list[int]:
    """Write synthetic items ``start..stop`` as build shards, with their source's colours.

    Returns the source row of each item.
    """
    from indexer import checkpoints
    from indexer.plan import model_key

    key = model_key(SPEC.model_id, weights_id)
    work = checkpoints.work_dir(index_dir)
    sources: list[int] = []
    for first in range(start, stop, SHARD_ROWS):
        last = min(stop, first + SHARD_ROWS)
        rows, src = synthetic.rows(first, last)
        fingerprints = [[relpath(i), 1000, 0] for i in range(first, last)]
        checkpoints.write_shard(
            work, rows, fingerprints, colours=colours[src], model_key=key, name=f"shard-{first:09d}"
        )
        sources.extend(int(s) for s in src)
    return sources


# ---------------------------------------------------------------- publishing (child process)


def publish_child(index_dir: Path, sources_path: Path, dataset: Path, weights_id: str, incremental: bool) -> dict:
    """Publish ``index_dir`` through ``publish_plan``; measure time and peak RSS.

    Full: every item from the shards in ``work/``. Incremental: the items of
    the current generation are reused (by reference, as ``plan_build`` does)
    and the rest come from the shards.
    """
    from indexer.build import publish_plan
    from indexer.catalogue import CatalogueFile, read_styles
    from indexer.config import Settings
    from indexer.generation import read_current_manifest
    from indexer.ids import ids_by_relpath, take_previous_items
    from indexer.plan import BuildPlan, model_key, previous_rows

    source_index(dataset)
    sources = json.loads(sources_path.read_text())
    loaded_names = _source_filenames(dataset)
    real_styles = read_styles(dataset)
    source_rows = [dict(real_styles.get(Path(name).stem, {})) for name in loaded_names]
    files = [CatalogueFile(relpath(i), 1000, 0) for i in range(len(sources))]
    styles = {Path(relpath(i)).stem: source_rows[s] for i, s in enumerate(sources)}
    catalogue = index_dir.parent / "no-such-catalogue"
    settings = Settings.from_env(catalogue=str(catalogue), index_dir=str(index_dir))
    key = model_key(SPEC.model_id, weights_id)
    del sources
    reset_peak_rss()
    before = rss_mb()
    started = time.perf_counter()
    reuse = {}
    # the manifest is read once and its items taken into columns, as plan_build does
    current = read_current_manifest(index_dir)
    stored = take_previous_items(current)
    if incremental:
        previous = previous_rows(current, stored, key)
        # keyed by the scanned files' own names, as plan_build does
        reuse = {item.relpath: source for item in files if (source := previous.reference(item)) is not None}
        del previous
    to_embed = [item for item in files if item.relpath not in reuse]
    plan = BuildPlan(catalogue, files, styles, key, reuse, to_embed, 0, previous_ids=ids_by_relpath(stored))
    del current, stored
    reused = len(reuse)  # publish_plan empties the map once it holds the rows' references
    publish_plan(plan, settings, [], SPEC.dim)
    elapsed = time.perf_counter() - started
    return {
        "publish_s": round(elapsed, 2),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "reused": reused,
        "added": len(to_embed),
    }


def _source_filenames(dataset: Path) -> list[str]:
    from indexer.generation import current_generation
    from indexer.loading import safe_unpickle

    return safe_unpickle((current_generation(source_index(dataset)) / "filenames.pkl").read_bytes())


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


def private_file_pages_mb(pid: int, folder: Path) -> float:
    """MB of a process's USS that are pages of files under ``folder`` which no other process has mapped.

    These are clean page-cache pages of the memory-mapped index (Annoy's
    file, the vectors): USS counts them until another worker touches the
    same pages, and the kernel can drop them at any time.
    """
    prefix, inside, private_kb = str(folder.resolve()), False, 0
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split(None, 5)  # the path, the sixth field, may hold spaces
            if parts and "-" in parts[0] and not parts[0].endswith(":"):  # a mapping's header line
                inside = len(parts) == 6 and parts[5].rstrip("\n").startswith(prefix)
            elif inside and parts[0] in ("Private_Clean:", "Private_Dirty:"):
                private_kb += int(parts[1])
    return private_kb / 1024


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


def _publish(index_dir: Path, sources_path: Path, dataset: Path, source: Source, vectors_dtype: str,
             incremental: bool = False) -> dict:
    """Run ``publish_child`` in a fresh process (its peak RSS is its own) and return its figures."""
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--publish-child", str(index_dir),
           "--sources", str(sources_path), "--dataset", str(dataset), "--weights-id", source.weights_id]
    if incremental:
        cmd.append("--incremental")
    env = dict(os.environ, FASHION_VECTORS=vectors_dtype)
    child = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    published = json.loads(child.stdout.strip().splitlines()[-1])
    published["peak_over_baseline_mb"] = round(published["peak_rss_mb"] - published["rss_before_mb"], 1)
    return published


def _site_ranking(loaded, item_ids: list[str], truth: list[list[int]]) -> tuple[float, float]:
    """Recall@5 and p50 ms of ``Searcher.similar`` (the site's ranking) over one loaded generation."""
    from indexer.search import Searcher

    searcher = Searcher(loaded)
    hits, elapsed = [], []
    for item_id, exact in zip(item_ids, truth):
        started = time.perf_counter()
        _row, found = searcher.similar(item_id, 5)
        elapsed.append((time.perf_counter() - started) * 1000)
        hits.append(len({hit.row for hit in found} & set(exact)) / len(exact))
    return round(float(np.mean(hits)), 4), percentile(elapsed, 50)


def compare_float16(index_dir: Path, work_root: Path, item_ids: list[str], truth: list[list[int]]) -> dict:
    """The site's ranking with float32 and with float16 re-ranking vectors, on the same published index.

    Annoy's index is built from float32 vectors either way, so the stored
    re-ranking vectors are the only difference; the float16 file is written
    as a publish with ``FASHION_VECTORS=float16`` writes it. Run in this
    process, alternating, so both see the same machine.
    """
    import dataclasses

    from indexer.loading import load_index
    from indexer.vector_files import CHUNK_ROWS, iter_npy_rows

    wide = load_index(index_dir)
    compact_path = work_root / "embeddings-float16.npy"
    # plain writes: filling a fresh memory-mapped file page by page was a hundred times slower here
    with open(compact_path, "wb") as handle:
        header = {"descr": "<f2", "fortran_order": False, "shape": wide.embeddings.shape}
        np.lib.format.write_array_header_1_0(handle, header)
        for _start, chunk in iter_npy_rows(wide.gen_dir / "embeddings.npy", CHUNK_ROWS):
            handle.write(chunk.astype(np.float16).tobytes())
    compact = dataclasses.replace(
        load_index(index_dir), embeddings=np.load(compact_path, mmap_mode="r").view(np.ndarray)
    )
    figures = {}
    for name, loaded in (("float32", wide), ("float16", compact), ("float32_again", wide), ("float16_again", compact)):
        figures[name] = _site_ranking(loaded, item_ids, truth)
    wide.annoy.unload()
    compact.annoy.unload()
    result = {
        "float32_recall_at_5": figures["float32"][0],
        "float16_recall_at_5": figures["float16"][0],
        "float32_similar_ms_p50": min(figures["float32"][1], figures["float32_again"][1]),
        "float16_similar_ms_p50": min(figures["float16"][1], figures["float16_again"][1]),
        "float32_file_mb": round((wide.gen_dir / "embeddings.npy").stat().st_size / 2**20, 1),
        "float16_file_mb": round(compact_path.stat().st_size / 2**20, 1),
    }
    result["file_ratio"] = round(result["float16_file_mb"] / result["float32_file_mb"], 3)
    compact_path.unlink()
    return result


def measure(
    items: int,
    source: Source,
    synthetic: SyntheticCatalogue,
    dataset: Path,
    work_root: Path,
    queries: int,
    vectors_dtype: str,
    largest: bool = False,
) -> dict:
    """Build, publish, serve and measure one synthetic catalogue of ``items`` (and, for the largest, more)."""
    from indexer.config import Settings
    from indexer.evaluate import exact_neighbours
    from indexer.search import Searcher

    index_dir = work_root / f"index-{items}"
    sources = write_shards(index_dir, synthetic, source.colours, 0, items, source.weights_id)
    sources_path = work_root / f"sources-{items}.json"
    sources_path.write_text(json.dumps(sources))
    published = _publish(index_dir, sources_path, dataset, source, vectors_dtype)
    vectors_mb = items * SPEC.dim * 4 / 2**20
    result = {
        "items": items,
        "vectors": vectors_dtype,
        "publish_s": published["publish_s"],
        "publish_peak_rss_mb": published["peak_over_baseline_mb"],
        "publish_peak_over_vectors": round(published["peak_over_baseline_mb"] / vectors_mb, 2),
        "vectors_mb": round(vectors_mb, 1),
    }
    log.info("%d items published: %s", items, result)

    searcher = Searcher.load(index_dir)  # the parent's own view, for the exact answers
    rng = np.random.default_rng(SEED)
    sample = np.sort(rng.choice(items, min(queries, items), replace=False))
    # what the site ranks by default (shape and colour) and by shape alone
    weights = {"": Settings.from_env({}).colour_weight, "_shape": 0.0}
    truth = {
        suffix: [[hit.row for hit in hits] for hits in exact_neighbours(searcher, sample, 5, colour_weight=weight)]
        for suffix, weight in weights.items()
    }
    item_ids = [searcher.ids[row] for row in sample]
    filters, matching = one_percent_filter(searcher, items / 100)
    searcher.index.annoy.unload()
    del searcher
    photos = sorted(dataset.rglob("*.jpg"))
    photos = photos[:: max(1, len(photos) // queries)][:queries]
    catalogue = work_root / "no-such-catalogue"
    # the index holds pretrained vectors: the server loads the same weights (FASHION_WEIGHTS=auto)
    with gunicorn_server(
        catalogue, index_dir, log_name=f"bench-scale-{items}", startup_timeout_s=900,
        extra_env={"FASHION_WEIGHTS": "auto"},
    ) as server:
        result["worker_start_s"] = round(server.ready_s, 2)
        result["all_workers_ready_s"] = round(server.all_ready_s, 2)
        phases = server.startup_phases()  # per worker: model build + warm-up + index load
        result["worker_model_to_index_s"] = [
            round(served - loading, 2) for loading, served in zip(phases["model_loading_s"], phases["index_served_s"])
        ]
        for suffix, weight in weights.items():
            hits = []
            for item_id, exact in zip(item_ids, truth[suffix]):
                reply = request(server.port, "GET", f"/api/items/{item_id}/similar?k=5&colour_weight={weight}")
                got = [int(Path(r["filename"]).stem) for r in reply.json()["results"]]
                hits.append(len(set(got) & set(exact)) / len(exact))
            result[f"recall_at_5{suffix}"] = round(float(np.mean(hits)), 4)
            search_ms, filtered_ms = [], []
            for photo in photos:
                part = [FilePart("image", photo.name, photo.read_bytes())]
                reply = post_search(server.port, part, fields={"colour_weight": str(weight)})
                search_ms.append(reply.json()["timing_ms"]["search"])
                reply = post_search(server.port, part, fields=dict(filters, colour_weight=str(weight)))
                body = reply.json()
                if reply.status != 200 or len(body["queries"][0]["results"]) != 5:
                    raise RuntimeError(f"filtered search failed: {reply.status} {body}")
                filtered_ms.append(body["timing_ms"]["search"])
            result.update({
                f"search_ms_p50{suffix}": percentile(search_ms, 50),
                f"search_ms_p95{suffix}": percentile(search_ms, 95),
                f"filtered_ms_p50{suffix}": percentile(filtered_ms, 50),
                f"filtered_ms_p95{suffix}": percentile(filtered_ms, 95),
            })
        result.update(filter=filters, filter_matches=matching, colour_weight=weights[""])
        pids = server.worker_pids()
        memory = [uss_mb(pid) for pid in pids]
        result["worker_uss_mb"] = [round(uss, 1) for uss, _ in memory]
        result["worker_anon_mb"] = [round(anon, 1) for _, anon in memory]
        result["worker_index_pages_mb"] = [round(private_file_pages_mb(pid, index_dir), 1) for pid in pids]
    if largest:
        if vectors_dtype == "float32":
            result["float16"] = compare_float16(index_dir, work_root, item_ids, truth["_shape"])
            log.info("float16 against float32: %s", result["float16"])
        result["incremental"] = measure_incremental(index_dir, sources, source, synthetic, dataset, work_root,
                                                    vectors_dtype, published)
        log.info("incremental build: %s", result["incremental"])
    shutil.rmtree(index_dir, ignore_errors=True)
    return result


def measure_incremental(
    index_dir: Path, sources: list[int], source: Source, synthetic: SyntheticCatalogue, dataset: Path,
    work_root: Path, vectors_dtype: str, full: dict,
) -> dict:
    """Add ``INCREMENT`` of items as shards and publish incrementally; peak RSS against the full publish."""
    items = len(sources)
    added = max(1, round(items * INCREMENT))
    sources = sources + write_shards(index_dir, synthetic, source.colours, items, items + added, source.weights_id)
    sources_path = work_root / f"sources-{items}-incremental.json"
    sources_path.write_text(json.dumps(sources))
    published = _publish(index_dir, sources_path, dataset, source, vectors_dtype, incremental=True)
    if published["reused"] != items or published["added"] != added:
        raise RuntimeError(f"incremental publish reused {published['reused']} and added {published['added']}")
    return {
        "items_added": added,
        "publish_s": published["publish_s"],
        "publish_peak_rss_mb": published["peak_over_baseline_mb"],
        "peak_over_full_publish": round(published["peak_over_baseline_mb"] / full["peak_over_baseline_mb"], 3),
        # the incremental generation holds 1% more items than the full one it is compared with
        "peak_per_item_over_full_publish": round(
            (published["peak_over_baseline_mb"] / (items + added)) / (full["peak_over_baseline_mb"] / items), 3
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=250_000, help="synthetic catalogue size")
    parser.add_argument("--steps", default="", help="smaller sizes measured first in the same run, e.g. 250000")
    parser.add_argument("--baseline", type=int, default=BASELINE_ITEMS, help="size of the baseline catalogue")
    parser.add_argument("--queries", type=int, default=60, help="queries per measurement")
    parser.add_argument("--vectors", choices=("float32", "float16"), default="float32",
                        help="dtype of the re-ranking vectors (FASHION_VECTORS)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="fashion-dev folder")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--publish-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sources", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--weights-id", help=argparse.SUPPRESS)
    parser.add_argument("--incremental", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    if args.publish_child:
        figures = publish_child(args.publish_child, args.sources, args.dataset, args.weights_id, args.incremental)
        print(json.dumps(figures))
        return 0

    source = load_source(args.dataset)
    synthetic = SyntheticCatalogue(source.vectors, source.labels, SEED)
    neighbours = synthetic.report()
    neighbours["synthetic_over_real_nn1"] = round(neighbours["synthetic_nn1_median"] / neighbours["real_nn1_median"], 3)
    log.info("neighbour distances: %s", neighbours)
    steps = [int(step) for step in args.steps.split(",") if step.strip()]
    work_root = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.work))
    measured = []
    try:
        run = dict(source=source, synthetic=synthetic, dataset=args.dataset, work_root=work_root,
                   queries=args.queries, vectors_dtype=args.vectors)
        baseline = measure(args.baseline, **run)
        measured = [measure(step, **run) for step in steps]
        result = measure(args.items, largest=True, **run)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    for figures in [*measured, result]:
        figures.update(
            uss_growth_mb=round(max(figures["worker_uss_mb"]) - max(baseline["worker_uss_mb"]), 1),
            # USS without the mapped index pages only that worker has touched yet
            uss_outside_index_growth_mb=round(
                max(u - p for u, p in zip(figures["worker_uss_mb"], figures["worker_index_pages_mb"]))
                - max(u - p for u, p in zip(baseline["worker_uss_mb"], baseline["worker_index_pages_mb"])),
                1,
            ),
            anon_growth_mb=round(max(figures["worker_anon_mb"]) - max(baseline["worker_anon_mb"]), 1),
            start_ratio=round(figures["worker_start_s"] / baseline["worker_start_s"], 2),
        )
    result.update(
        neighbour_distance=neighbours,
        cpus=os.cpu_count(),
        load_average=round(load_average(), 2),
        baseline=baseline,
        steps=measured,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
