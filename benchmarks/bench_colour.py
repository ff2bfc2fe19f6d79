"""Shape and colour together: leave-one-out precision@5 on fashion-dev for several colour weights.

Every photo of the dataset (default: the shared fashion-dev set, 3,000
photos) is decoded once as the site decodes it, embedded with the default
model and runtime (EfficientNet-Lite0, its ImageNet weights, OpenVINO when
installed), and given its colour descriptor (``indexer.colour``). For each
colour weight w, the score of a pair is (1 - w) x shape similarity + w x
colour similarity, and each photo's 5 best-scoring others (exact, no Annoy)
are judged by ``styles.csv``'s articleType and baseColour.

Target (with the default weight): P@5 by articleType within 0.03 of shape
alone, P@5 by baseColour at least 0.12 higher than shape alone; at the
strongest colour setting, P@5 by baseColour at least 0.48.

    python -m benchmarks.bench_colour [--dataset DIR] [--limit N] [--weights 0,0.1,...]

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

from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=0, help="use the first N photos (default: all)")
    parser.add_argument("--weights", default=",".join(str(w) for w in WEIGHTS), help="colour weights to try")
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
    results["load_1min_end"] = round(load_average(), 2)
    print(f"colour descriptor {results['colour_ms_per_photo']:.2f} ms a photo; "
          f"embedding {results['embed_ms_per_photo']:.2f} ms a photo ({results['model']})")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
