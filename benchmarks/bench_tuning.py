"""What the catalogue tuning costs: build time, and the memory of a process that serves the index.

In one run, on one catalogue (default: fashion-dev):

1. a build with ``FASHION_TUNING=off`` from scratch: the time to embed the catalogue;
2. the same index built again with tuning on: nothing is embedded again,
   so its time is the tuning's (views composed and embedded, the LDA solved);
3. a first build with tuning on from scratch, between the untuned one and
   another untuned one from scratch (A B A, so a drifting machine load
   shows): the ratio a shop sees on its first build;
4. the tuning's share of a first build, here and extrapolated to a catalogue
   of ``--extrapolate`` items (the tuning's cost is fixed by
   ``FASHION_TUNING_PRODUCTS``, the embedding's grows with the catalogue);
5. the resident memory of a process that loads the model and the index and
   runs searches, for the raw and the tuned index (each in a fresh process).

    python -m benchmarks.bench_tuning [--dataset DIR] [--work DIR] [--extrapolate 44000]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEFAULT_DATASET, REPO_ROOT

log = logging.getLogger("bench_tuning")

# Run in a fresh process per index: load the model and the index, search 30 catalogue photos, report RSS.
_SERVE = """
import json, resource, sys
from pathlib import Path
from indexer.config import Settings
from indexer.options import SearchOptions
from indexer.plan import key_for
from indexer.query import QueryPipeline, decode_photo
from indexer.runtimes import load_for_settings
from indexer.search import Searcher
settings = Settings.from_env(catalogue=sys.argv[1], index_dir=sys.argv[2])
embedder = load_for_settings(settings)
pipeline = QueryPipeline(embedder, Searcher.for_settings(settings, expect=key_for(embedder)))
photos = sorted(Path(sys.argv[1]).rglob("*.jpg"))[:30]
for path in photos:
    pipeline.search_photos([decode_photo(path.read_bytes(), path.name)], SearchOptions.defaults(settings))
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
print(json.dumps({"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "hwm_mb": int(status["VmHWM"].split()[0]) / 1024}))
"""


def _build(catalogue: Path, index_dir: Path, tuning: str) -> float:
    """Seconds of ``python -m indexer build`` with ``FASHION_TUNING=tuning``."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "indexer", "build", "--catalogue", str(catalogue), "--index-dir", str(index_dir)],
        cwd=REPO_ROOT, check=True, env=_env(FASHION_TUNING=tuning), stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _env(**extra) -> dict:
    import os

    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), **extra)


def _serve(catalogue: Path, index_dir: Path, tuning: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SERVE, str(catalogue), str(index_dir)],
        cwd=REPO_ROOT, check=True, env=_env(FASHION_TUNING=tuning), capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--work", type=Path, help="where the index goes (default: a temp dir)")
    parser.add_argument("--extrapolate", type=int, default=44000, help="catalogue size to extrapolate the share to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    catalogue = args.dataset  # styles.csv at the top, photos found recursively
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    index_dir = work / "index"
    items = sum(1 for _ in catalogue.rglob("*.jpg"))
    embed_s = _build(catalogue, index_dir, "off")
    log.info("build without tuning: %.1f s for %d items", embed_s, items)
    raw_memory = _serve(catalogue, index_dir, "off")
    tuning_s = _build(catalogue, index_dir, "on")
    log.info("tuning the same index: %.1f s", tuning_s)
    tuned_memory = _serve(catalogue, index_dir, "on")
    first_tuned_s = _build(catalogue, work / "index-tuned", "on")
    again_s = _build(catalogue, work / "index-again", "off")
    log.info("first builds from scratch: tuned %.1f s, untuned %.1f and %.1f s", first_tuned_s, embed_s, again_s)
    per_item = embed_s / max(1, items)
    result = {
        "items": items,
        "build_untuned_s": round(embed_s, 1),
        "tuning_s": round(tuning_s, 1),
        "first_build_ratio": round((embed_s + tuning_s) / embed_s, 3),
        "build_untuned_again_s": round(again_s, 1),
        "first_build_tuned_s": round(first_tuned_s, 1),
        "first_build_tuned_ratio": round(first_tuned_s / ((embed_s + again_s) / 2), 3),
        "extrapolated_items": args.extrapolate,
        "extrapolated_tuning_share": round(tuning_s / (per_item * args.extrapolate), 3),
        "raw_rss_mb": round(raw_memory["rss_mb"], 1),
        "tuned_rss_mb": round(tuned_memory["rss_mb"], 1),
        "tuned_over_raw_rss": round(tuned_memory["rss_mb"] / raw_memory["rss_mb"], 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
