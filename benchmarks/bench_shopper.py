"""Shoppers' photos: does locating the product find the catalogue item more often than the whole photo?

Every photo of the dataset (default: the shared fashion-dev set, 3,000
white-background packshots) is embedded as the site embeds it
(``images.load_with_size``, the default model and runtime) into an exact
in-memory index. Then N seeded shopper-style photos are made from random
items (``benchmarks.shopper_photos``: the product keyed out and pasted at
45-75% of the frame on a busy background, turned, lit and JPEG-saved) and
each is searched three ways:

* the whole photo;
* located: ``indexer.locate.locate``, end to end as the site runs it;
* the true box: the photo cropped to where the product was pasted (the ceiling).

Recall@1/5/20 counts how often the original item is among the first 1, 5,
20. The catalogue's own photos are searched as queries too, leave-one-out,
with and without locating: P@5 by articleType must not drop (packshots
keep the whole photo).

Per photo cost: ``embed_ms_whole_p50`` is one photo's forward pass,
``embed_ms_located_p50`` the whole locating step for one photo (map pass,
box, crop decode and second pass when a box is found). On a real gunicorn
(one worker, the default model and runtime), ``search_ms_p50_located`` and
``search_ms_p50_whole`` are the client's time for ``POST /api/search`` with
one shopper photo, ``locate=true`` and ``locate=false`` alternating.

With ``--colour-weights``, results are also ranked by (1 - w) x shape +
w x colour similarity, the query's colour (``indexer.colour``) taken from
the region that was embedded.

Targets: located recall@5 at least 2.4x the whole photo's and at least
0.85x the true box's; catalogue P@5 drop at most 0.005; with the default
colour weight, located recall@5 no lower than by shape alone; search p50
with locating at most 2.5x without.

    python -m benchmarks.bench_shopper [--photos N] [--dataset DIR] [--seed S] [--colour-weights 0,0.1,0.2]

Human-readable lines go to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average

log = logging.getLogger("bench_shopper")

CACHE_DIR = Path.home() / ".cache" / "fashion-bench"
KS = (1, 5, 20)
BATCH = 32
CLUTTER_PHOTOS = 200  # catalogue photos the clutter backgrounds blur into shapes
SERVER_CATALOGUE = 300  # photos in the index the server cost is measured on


def rankings(
    queries: np.ndarray,
    catalogue: np.ndarray,
    k: int,
    *,
    query_colours: np.ndarray | None = None,
    catalogue_colours: np.ndarray | None = None,
    colour_weight: float = 0.0,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Each query's ``k`` best catalogue rows, best first: shape similarity, blended with colour when weighted.

    The score is (1 - w) x shape + w x colour similarity (dot products of unit
    vectors). ``exclude`` holds a row per query to leave out (leave-one-out).
    """
    scores = queries @ catalogue.T
    if colour_weight:
        scores = (1 - colour_weight) * scores + colour_weight * (query_colours @ catalogue_colours.T)
    if exclude is not None:
        scores[np.arange(len(queries)), exclude] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def recall(ranked: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of queries whose true row is among their first ``k``."""
    return float((ranked[:, :k] == truth[:, None]).any(axis=1).mean())


def precision_at_5(ranked: np.ndarray, labels: list[str]) -> float:
    """Mean share of each labelled query's first 5 results that have its label."""
    values = np.array(labels, dtype=object)
    known = np.array([bool(label) for label in labels])
    hits = (values[ranked[:, :5]] == values[:, None]).mean(axis=1)
    return float(hits[known].mean())


def _cache_key(paths: list[Path], embedder) -> str:
    from indexer.images import PREPROCESS_VERSION

    listing = "\n".join(f"{p.name}\0{p.stat().st_size}\0{p.stat().st_mtime_ns}" for p in paths)
    parts = [embedder.model_id, embedder.weights_id, embedder.vector_space, PREPROCESS_VERSION, listing]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def embed_catalogue(paths: list[Path], embedder, cache_dir: Path) -> dict[str, np.ndarray]:
    """Vectors, activation maps, photo sizes and colour descriptors of every catalogue photo (cached)."""
    from indexer.colour import colour_descriptor
    from indexer.images import load_with_size

    cache = cache_dir / f"catalogue-{_cache_key(paths, embedder)}.npz"
    if cache.is_file():
        log.info("catalogue vectors from %s", cache)
        with np.load(cache) as stored:
            return dict(stored)
    vectors, maps, sizes, colours = [], [], [], []
    for start in range(0, len(paths), BATCH):
        loaded = [load_with_size(path) for path in paths[start : start + BATCH]]
        batch = np.stack([array for array, _ in loaded])
        found = embedder.embed_with_maps(batch)
        vectors.append(found[0])
        maps.append(found[1])
        sizes.extend(size for _, size in loaded)
        colours.extend(colour_descriptor(array) for array in batch)
    result = {
        "vectors": np.concatenate(vectors),
        "maps": np.concatenate(maps),
        "sizes": np.array(sizes),
        "colours": np.stack(colours),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **result)
    tmp.replace(cache)
    return result


def catalogue_located(paths: list[Path], catalogue: dict[str, np.ndarray], embedder) -> tuple[np.ndarray, int]:
    """The catalogue photos' vectors as located queries, and how many got a box (the rest keep their vector)."""
    from indexer.images import load_for_model
    from indexer.locate import find_box

    vectors = catalogue["vectors"].copy()
    boxed = []
    for row, path in enumerate(paths):
        size = tuple(int(v) for v in catalogue["sizes"][row])
        box = find_box(load_for_model(path), catalogue["maps"][row], size)
        if box is not None:
            boxed.append((row, box))
    for start in range(0, len(boxed), BATCH):
        chunk = boxed[start : start + BATCH]
        crops = np.stack([load_for_model(paths[row], crop=box) for row, box in chunk])
        vectors[[row for row, _ in chunk]] = embedder.embed(crops)
    return vectors, len(boxed)


def _labels(dataset: Path, paths: list[Path]) -> list[str]:
    with open(dataset / "styles.csv", newline="", encoding="utf-8-sig") as handle:
        types = {row["id"].strip(): (row.get("articleType") or "").strip() for row in csv.DictReader(handle)}
    return [types.get(path.stem, "") for path in paths]


def search_shoppers(paths: list[Path], count: int, seed: int, embedder) -> dict:
    """Make ``count`` shopper photos and embed each three ways; returns vectors, arrays, truth and timings."""
    from PIL import Image

    from benchmarks.shopper_photos import make_shopper_photo
    from indexer.images import load_for_model, load_with_size
    from indexer.locate import Photo, locate

    rng = np.random.default_rng(seed)
    clutter_rows = rng.choice(len(paths), size=min(CLUTTER_PHOTOS, len(paths)), replace=False)
    clutter = [np.asarray(Image.open(paths[row]).convert("RGB")) for row in clutter_rows]
    truth = rng.choice(len(paths), size=count, replace=True)
    out = {name: [] for name in ("whole", "located", "true_box", "located_arrays", "whole_ms", "located_ms")}
    out["boxes"] = 0
    out["photos"], out["kinds"] = [], []
    for number, row in enumerate(truth, start=1):
        packshot = np.asarray(Image.open(paths[row]).convert("RGB"))
        data, true_box, kind = make_shopper_photo(rng, packshot, clutter)
        out["photos"].append(data)
        out["kinds"].append(kind)
        array, size = load_with_size(data)
        started = time.perf_counter()
        whole = embedder.embed(array[None])[0]
        out["whole_ms"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        found = locate(embedder, [Photo(data, array, size)])[0]
        out["located_ms"].append((time.perf_counter() - started) * 1000)
        out["whole"].append(whole)
        out["located"].append(found.vector)
        out["located_arrays"].append(found.array)
        out["boxes"] += found.box is not None
        out["true_box"].append(embedder.embed(load_for_model(data, crop=true_box)[None])[0])
        if number % 100 == 0:
            log.info("%d / %d shopper photos", number, count)
    out["truth"] = truth
    return out


def server_cost(dataset: Path, paths: list[Path], photos: list[bytes], tmp: Path) -> dict:
    """p50 of ``POST /api/search`` with one shopper photo, with and without locating, on a real gunicorn.

    One worker serves an index of ``SERVER_CATALOGUE`` fashion-dev photos
    (the search step is the same at any size; the forward passes are what
    locating adds). Requests alternate ``locate=true`` and ``locate=false``
    on the same photos, so both see the same machine.
    """
    from benchmarks.common import make_catalogue
    from benchmarks.server import FilePart, gunicorn_server, post_search
    from indexer.build import build_index
    from indexer.config import Settings
    from indexer.runtimes import load_for_settings

    catalogue = make_catalogue(paths[:SERVER_CATALOGUE], tmp / "catalogue", dataset / "styles.csv")
    settings = Settings.from_env(catalogue=catalogue, index_dir=tmp / "index")
    build_index(settings, load_for_settings(settings))
    times: dict[str, list[float]] = {"true": [], "false": []}
    env = {"FASHION_WEIGHTS": "auto", "FASHION_RUNTIME": "auto"}
    with gunicorn_server(catalogue, settings.index_dir, workers=1, extra_env=env, startup_timeout_s=300) as server:
        for data in photos[:3]:  # warm-up
            post_search(server.port, [FilePart("image", "warm.jpg", data)])
        for data in photos:
            for locate_flag in ("true", "false"):
                answer = post_search(server.port, [FilePart("image", "shopper.jpg", data)], {"locate": locate_flag})
                if answer.status != 200:
                    raise RuntimeError(f"search answered {answer.status}: {answer.body[:200]!r}")
                times[locate_flag].append(answer.elapsed_ms)
    located, whole = float(np.median(times["true"])), float(np.median(times["false"]))
    return {
        "server_queries": len(photos),
        "search_ms_p50_located": round(located, 2),
        "search_ms_p50_whole": round(whole, 2),
        "search_located_over_whole_p50": round(located / whole, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200, help="shopper photos to make and search")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where catalogue vectors are kept")
    parser.add_argument("--colour-weights", default="", help="e.g. 0,0.1,0.2: also rank by shape and colour")
    parser.add_argument(
        "--server-queries", type=int, default=60, help="shopper photos searched on a real gunicorn (0: skip)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from indexer.colour import colour_descriptor
    from indexer.config import Settings
    from indexer.runtimes import load_for_settings

    started = time.perf_counter()
    results: dict = {"photos": args.photos, "load_1min_start": round(load_average(), 2)}
    paths = dataset_images(args.dataset)
    settings = Settings.from_env(catalogue=args.dataset, index_dir=args.cache_dir / "index")
    embedder = load_for_settings(settings)
    embedder.warm_up()
    results["model"] = f"{embedder.choice.model} ({embedder.weights_id}, {embedder.runtime})"
    catalogue = embed_catalogue(paths, embedder, args.cache_dir)
    vectors = catalogue["vectors"]

    shoppers = search_shoppers(paths, args.photos, args.seed, embedder)
    truth = shoppers["truth"]
    for way in ("whole", "located", "true_box"):
        ranked = rankings(np.stack(shoppers[way]), vectors, max(KS))
        for k in KS:
            results[f"{way}_recall_at_{k}"] = round(recall(ranked, truth, k), 4)
        log.info("%-8s recall@1 %.3f  @5 %.3f  @20 %.3f", way, *(results[f"{way}_recall_at_{k}"] for k in KS))
    results["located_boxes"] = shoppers["boxes"]
    kinds = np.array(shoppers["kinds"])
    by_background = {}
    for kind in sorted(set(shoppers["kinds"])):
        chosen = kinds == kind
        by_background[kind] = {"photos": int(chosen.sum())}
        for way in ("whole", "located", "true_box"):
            ranked = rankings(np.stack(shoppers[way])[chosen], vectors, 5)
            by_background[kind][way] = round(recall(ranked, truth[chosen], 5), 4)
        log.info("recall@5 on %-8s backgrounds: %s", kind, by_background[kind])
    results["recall_at_5_by_background"] = by_background
    whole_ms, located_ms = np.median(shoppers["whole_ms"]), np.median(shoppers["located_ms"])
    results["embed_ms_whole_p50"] = round(float(whole_ms), 2)
    results["embed_ms_located_p50"] = round(float(located_ms), 2)
    results["embed_located_over_whole_p50"] = round(float(located_ms / whole_ms), 3)

    labels = _labels(args.dataset, paths)
    rows = np.arange(len(paths))
    results["catalogue_p_at_5_whole"] = round(precision_at_5(rankings(vectors, vectors, 5, exclude=rows), labels), 4)
    located_vectors, boxed = catalogue_located(paths, catalogue, embedder)
    located_ranked = rankings(located_vectors, vectors, 5, exclude=rows)
    results["catalogue_p_at_5_located"] = round(precision_at_5(located_ranked, labels), 4)
    results["catalogue_located_boxes"] = boxed

    weights = [float(w) for w in args.colour_weights.split(",") if w.strip()]
    if weights:
        query_colours = np.stack([colour_descriptor(array) for array in shoppers["located_arrays"]])
        by_weight = {}
        for weight in weights:
            ranked = rankings(
                np.stack(shoppers["located"]),
                vectors,
                5,
                query_colours=query_colours,
                catalogue_colours=catalogue["colours"],
                colour_weight=weight,
            )
            by_weight[str(weight)] = round(recall(ranked, truth, 5), 4)
        results["located_recall_at_5_by_colour_weight"] = by_weight
        log.info("located recall@5 by colour weight: %s", by_weight)

    if args.server_queries:
        with tempfile.TemporaryDirectory(prefix="bench-shopper-") as tmp:
            results.update(server_cost(args.dataset, paths, shoppers["photos"][: args.server_queries], Path(tmp)))
        log.info(
            "server, one photo: search p50 %.1f ms located, %.1f ms whole (x%.2f, target <= 2.5)",
            results["search_ms_p50_located"], results["search_ms_p50_whole"],
            results["search_located_over_whole_p50"],
        )
    results["load_1min_end"] = round(load_average(), 2)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    whole5 = results["whole_recall_at_5"]
    log.info(
        "located recall@5 %.3f = %.2fx the whole photo's (target >= 2.4), %.2fx the true box's (target >= 0.85); "
        "%d of %d photos got a box",
        results["located_recall_at_5"],
        results["located_recall_at_5"] / whole5 if whole5 else float("inf"),
        results["located_recall_at_5"] / max(results["true_box_recall_at_5"], 1e-9),
        shoppers["boxes"],
        args.photos,
    )
    log.info(
        "catalogue P@5 by articleType: whole %.4f, located %.4f (drop target <= 0.005; %d of %d got a box)",
        results["catalogue_p_at_5_whole"],
        results["catalogue_p_at_5_located"],
        boxed,
        len(paths),
    )
    log.info(
        "one photo: forward pass %.1f ms, locating %.1f ms (x%.2f)",
        whole_ms,
        located_ms,
        results["embed_located_over_whole_p50"],
    )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
