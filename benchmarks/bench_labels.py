"""Whether the catalogue's labels earn their place in the tuning, judged on products whose labels it never saw.

Catalogue tuning (``indexer.tuning``) learns from a sample of products on
scenes. Where styles.csv names each product's ``articleType``, it may also
learn directions that group products of a kind. That is worth it only if it
raises type precision on products whose labels the tuning never saw,
without costing the search for one product on a scene more than 0.02 of
recall. In one run, on one catalogue (default: fashion-dev):

1. the catalogue's packshots are embedded once with the site's model;
2. a sample of ``--products`` (the build's default) is composed onto
   scenes as a build does, and the tuning is learned twice from the same
   views: products alone, and products with their labels;
3. a disjoint sample of ``--held-out`` products is composed onto scenes of
   another seed: their scene views search the whole catalogue for their own
   packshot (instance recall@5);
4. every catalogue item the tuning did not learn from is a leave-one-out
   query against the whole catalogue: precision@5 of ``articleType`` and of
   ``baseColour``, by shape alone and at the default colour weight.

    python -m benchmarks.bench_labels [--dataset DIR] [--products 800] [--held-out 400] [--weights 0.3,0.4,0.5]

``--weights`` learns the kinds at each weight (``tuning.LABEL_WEIGHT`` is the
shipped one) from the same views, to show the trade-off it was chosen on.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATASET, dataset_images
from indexer import tuning
from indexer.catalogue import read_styles
from indexer.colour import colour_descriptors
from indexer.config import Settings
from indexer.images import load_for_model
from indexer.runtimes import load_for_settings

log = logging.getLogger("bench_labels")

BATCH = 32
HELD_OUT_SEED = 99  # the held-out products' scenes: another draw than the build's


def precision_at_5(similarity: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    """Leave-one-out precision@5 of ``labels`` for the query ``rows`` of a square similarity matrix."""
    scores = similarity[rows].copy()
    scores[np.arange(len(rows)), rows] = -np.inf
    top = np.argpartition(-scores, 5, axis=1)[:, :5]
    wanted = labels[rows]
    known = wanted != ""
    return float(np.mean(labels[top][known] == wanted[known][:, None]))


def instance_recall(projection: tuning.Projection, catalogue: np.ndarray, views: np.ndarray, products: np.ndarray,
                    rows: np.ndarray) -> float:
    """Recall@5 of each scene view's own packshot (``rows[products]``) among the whole catalogue."""
    tuned = projection.apply(catalogue)
    scores = projection.apply(views) @ tuned.T
    own = scores[np.arange(len(views)), rows[products]]
    return float(np.mean((scores > own[:, None]).sum(axis=1) < 5))


def main() -> None:
    """Run the comparison and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--products", type=int, default=None, help="products to learn from (default: the build's)")
    parser.add_argument("--held-out", type=int, default=400, help="other products searched for from scenes")
    parser.add_argument("--weights", default=str(tuning.LABEL_WEIGHT), help="comma-separated weights of the kinds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()

    settings = Settings.from_env(catalogue=args.dataset)
    embedder = load_for_settings(settings)
    size = embedder.input_size
    paths = dataset_images(args.dataset)
    styles = read_styles(args.dataset)
    kinds = np.array([styles.get(path.stem, {}).get(tuning.LABEL_FIELD, "") or "" for path in paths], dtype=object)
    colours = np.array([styles.get(path.stem, {}).get("baseColour", "") or "" for path in paths], dtype=object)
    arrays = [load_for_model(path, size) for path in paths]
    vectors = np.concatenate([embedder.embed(np.stack(arrays[i : i + BATCH])) for i in range(0, len(arrays), BATCH)])
    colour = colour_descriptors(np.stack(arrays))
    log.info("%d packshots embedded", len(paths))

    sample = tuning.sample_rows(len(paths), args.products or settings.tuning_products)
    rest = np.setdiff1d(np.arange(len(paths)), sample)
    held_out = np.sort(np.random.default_rng(HELD_OUT_SEED).choice(rest, min(args.held_out, len(rest)), replace=False))
    views, products = tuning.tuning_views(
        embedder.embed, [arrays[i] for i in sample], size=size, packshot_vectors=vectors[sample]
    )
    test_views, test_products = tuning.tuning_views(
        embedder.embed, [arrays[i] for i in held_out], size=size, packshot_vectors=vectors[held_out],
        seed=HELD_OUT_SEED,
    )
    scene = np.arange(len(test_views)) >= len(held_out)  # the packshots come first: search with scenes only
    log.info("%d views to learn from, %d held-out scene views", len(views), int(scene.sum()))

    weight = settings.colour_weight
    scale = embedder.choice.spec.tuning_scale()  # as the build learns it
    colour_similarity = colour @ colour.T
    results = {}
    weights = [float(w) for w in args.weights.split(",")]
    variants = [("products", None, tuning.LABEL_WEIGHT)]
    variants += [(f"products_and_kinds_{w:g}", list(kinds[sample]), w) for w in weights]
    for name, labels, label_weight in variants:
        projection = tuning.learn(views, products, labels=labels, label_weight=label_weight, input_scale=scale)
        tuned = projection.apply(vectors)
        shape = tuned @ tuned.T
        joined = (1 - weight) * shape + weight * colour_similarity
        results[name] = {
            "dims": projection.dim,
            "instance_recall_at_5": round(instance_recall(
                projection, vectors, test_views[scene], test_products[scene], held_out), 4),
            "unseen_type_p_at_5_shape": round(precision_at_5(shape, kinds, rest), 4),
            "unseen_type_p_at_5_default": round(precision_at_5(joined, kinds, rest), 4),
            "unseen_colour_p_at_5_default": round(precision_at_5(joined, colours, rest), 4),
            "all_type_p_at_5_default": round(precision_at_5(joined, kinds, np.arange(len(paths))), 4),
            "all_colour_p_at_5_default": round(precision_at_5(joined, colours, np.arange(len(paths))), 4),
        }
        log.info("%s: %s", name, results[name])
    plain = results["products"]
    gains = {
        name: {
            "type_gain_unseen": round(r["unseen_type_p_at_5_default"] - plain["unseen_type_p_at_5_default"], 4),
            "instance_cost": round(plain["instance_recall_at_5"] - r["instance_recall_at_5"], 4),
        }
        for name, r in results.items() if name != "products"
    }
    summary = {
        "items": len(paths),
        "learned_from": len(sample),
        "unseen_queries": len(rest),
        "held_out_products": len(held_out),
        "colour_weight": weight,
        "model": settings.model,
        **results,
        "gains": gains,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
