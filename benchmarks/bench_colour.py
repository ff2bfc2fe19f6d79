"""Shape and colour together: leave-one-out precision@5 on fashion-dev for several colour weights.

Every photo of the dataset (default: the shared fashion-dev set, 3,000
photos) is decoded once as the site decodes it, embedded with the default
model and runtime (EfficientNet-Lite0, its ImageNet weights, OpenVINO when
installed), and given its colour descriptor (``indexer.colour``). For each
colour weight w, the score of a pair is (1 - w) x shape similarity + w x
colour similarity, and each photo's 5 best-scoring others (exact, no Annoy)
are judged by ``styles.csv``'s articleType and baseColour.

Then the same through the site's own code: the dataset is indexed by
``build_index`` (colour descriptors included) and ``indexer.evaluate`` judges
the Searcher's answers (Annoy's shape candidates re-ranked by the joined
score) for the form's colour choices, with their recall against exact search.

Last, the cost of colour in a build: full builds of ``--build-photos``
photos, alternately with the real descriptor and with the descriptor
replaced by a constant (in this process only), two of each, so the ratio of
images/s compares runs minutes apart on the same machine.

Target (with the default weight): P@5 by articleType within 0.03 of shape
alone, P@5 by baseColour at least 0.12 higher than shape alone; at the
strongest colour setting, P@5 by baseColour at least 0.48; build throughput
with colour at least 0.9x without.

    python -m benchmarks.bench_colour [--dataset DIR] [--limit N] [--weights 0,0.1,...] [--build-photos N]

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average, make_catalogue

LABELS = ("articleType", "baseColour")
WEIGHTS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)


def _labels(dataset: Path) -> dict[str, dict[str, str]]:
    with open(dataset / "styles.csv", newline="", encoding="utf-8-sig") as handle:
        return {row["id"].strip(): row for row in csv.DictReader(handle)}


def precision_at_5(scores: np.ndarray, labels: list[str]) -> float:
    """Leave-one-out P@5: each row's 5 best other columns, judged by the row's label."""
    scores = scores.copy()
    np.fill_diagonal(scores, -np.inf)
    top = np.argpartition(-scores, 5, axis=1)[:, :5]
    values = np.array(labels, dtype=object)
    known = np.array([bool(label) for label in labels])
    hits = (values[top] == values[:, None]).mean(axis=1)
    return float(hits[known].mean())


def site_precision(dataset: Path, paths: list[Path], tmp: Path) -> dict:
    """P@5 by both labels and recall@5 of the Searcher's answers, for each of the form's colour choices."""
    from indexer.build import build_index
    from indexer.config import Settings
    from indexer.evaluate import evaluate
    from indexer.runtimes import load_for_settings
    from indexer.search import Searcher
    from web.views import COLOUR_STEPS

    catalogue = make_catalogue(paths, tmp / "catalogue", dataset / "styles.csv")
    settings = Settings.from_env(catalogue=catalogue, index_dir=tmp / "index")
    report = build_index(settings, load_for_settings(settings))
    searcher = Searcher.for_settings(settings)
    out = {"indexed": report.total}
    for weight, name in COLOUR_STEPS:
        by_type = evaluate(searcher, label="articleType", colour_weight=weight)
        by_colour = evaluate(searcher, label="baseColour", colour_weight=weight)
        out[str(weight)] = {
            "choice": name,
            "articleType": by_type["precision_at_k"],
            "baseColour": by_colour["precision_at_k"],
            "recall_at_5": by_type["recall_at_k"],
            "search_ms_p50": by_type["search_ms_p50"],
        }
        print(f"site w={weight:<4} ({name}): P@5 articleType {by_type['precision_at_k']:.3f}  "
              f"baseColour {by_colour['precision_at_k']:.3f}  recall@5 {by_type['recall_at_k']:.3f}")
    searcher.index.annoy.unload()
    return out


def build_cost(dataset: Path, paths: list[Path], tmp: Path) -> dict:
    """Images/s of full builds with the colour descriptor and with a constant in its place (ABAB)."""
    from indexer import colour
    from indexer.build import build_index
    from indexer.config import Settings
    from indexer.engines import local
    from indexer.runtimes import load_for_settings

    catalogue = make_catalogue(paths, tmp / "build-catalogue", dataset / "styles.csv")
    settings = Settings.from_env(catalogue=catalogue, index_dir=tmp / "build-index")
    embedder = load_for_settings(settings)
    embedder.warm_up()
    real = local.colour_descriptor
    constant = np.full(colour.DIM, 1 / np.sqrt(colour.DIM), np.float32)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for kind in ("with", "without", "with", "without"):
            local.colour_descriptor = real if kind == "with" else (lambda _array: constant)
            report = build_index(settings, embedder, full=True)
            rates[kind].append(report.images_per_s)
            print(f"build {kind} colour: {report.images_per_s:.1f} images/s ({report.total} photos)")
    finally:
        local.colour_descriptor = real
    with_colour, without = float(np.mean(rates["with"])), float(np.mean(rates["without"]))
    return {
        "photos": len(paths),
        "images_per_s_with_colour": [round(r, 2) for r in rates["with"]],
        "images_per_s_without": [round(r, 2) for r in rates["without"]],
        "ratio": round(with_colour / without, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=0, help="use the first N photos (default: all)")
    parser.add_argument("--weights", default=",".join(str(w) for w in WEIGHTS), help="colour weights to try")
    parser.add_argument("--build-photos", type=int, default=600, help="photos per timed build (0: skip)")
    args = parser.parse_args(argv)
    from indexer.colour import colour_descriptor
    from indexer.config import Settings
    from indexer.images import load_for_model
    from indexer.runtimes import load_for_settings

    paths = dataset_images(args.dataset)[: args.limit or None]
    styles = _labels(args.dataset)
    results: dict = {"photos": len(paths), "load_1min_start": round(load_average(), 2)}
    with ThreadPoolExecutor(2) as pool:
        arrays = np.stack(list(pool.map(load_for_model, paths)))
    started = time.perf_counter()
    colours = np.stack([colour_descriptor(array) for array in arrays])
    results["colour_ms_per_photo"] = round((time.perf_counter() - started) / len(paths) * 1000, 3)
    with tempfile.TemporaryDirectory(prefix="bench-colour-") as tmp:
        embedder = load_for_settings(Settings.from_env(catalogue=args.dataset, index_dir=Path(tmp)))
        started = time.perf_counter()
        vectors = np.concatenate([embedder.embed(arrays[i : i + 32]) for i in range(0, len(arrays), 32)])
        results["embed_ms_per_photo"] = round((time.perf_counter() - started) / len(paths) * 1000, 3)
        results["model"] = f"{embedder.choice.model} ({embedder.weights_id}, {embedder.runtime})"
    shape, colour = vectors @ vectors.T, colours @ colours.T
    labels = {name: [styles.get(p.stem, {}).get(name, "").strip() for p in paths] for name in LABELS}
    table = {}
    for weight in (float(w) for w in args.weights.split(",")):
        scores = (1 - weight) * shape + weight * colour
        table[weight] = {name: round(precision_at_5(scores, labels[name]), 4) for name in LABELS}
        print(f"w={weight:<5} P@5 articleType {table[weight]['articleType']:.3f}  "
              f"baseColour {table[weight]['baseColour']:.3f}")
    results["precision_at_5"] = {str(w): v for w, v in table.items()}
    with tempfile.TemporaryDirectory(prefix="bench-colour-site-") as tmp:
        results["site"] = site_precision(args.dataset, paths, Path(tmp))
        if args.build_photos:
            results["build"] = build_cost(args.dataset, paths[: args.build_photos], Path(tmp))
    results["load_1min_end"] = round(load_average(), 2)
    print(f"colour descriptor {results['colour_ms_per_photo']:.2f} ms a photo; "
          f"embedding {results['embed_ms_per_photo']:.2f} ms a photo ({results['model']})")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
