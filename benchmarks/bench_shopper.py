"""Shoppers' photos through the site's one query pipeline: recall per scene family, tuned-on and held-back.

What it measures. A real index of the dataset (default: the shared
fashion-dev set, 3,000 white-background packshots; ``--items N`` for an even
subset) is built with ``indexer.build.build_index`` as the site builds it:
the real pretrained weights (``FASHION_WEIGHTS=auto``), the default model
and runtime, every setting at its default except the catalogue tuning,
which ``--tuning on|off`` chooses. Then ``--photos N`` seeded shopper photos
are made from random catalogue products (``benchmarks.shopper_scenes``,
spread evenly over all its families; clutter from other packshots) and each
is searched through ``indexer.query.QueryPipeline.search_photos``, the path
every entry point takes, four ways:

* ``whole``: the whole photo, shape alone (colour weight 0, no locating);
* ``located``: the product found in the photo (``locate=True``), shape alone;
* ``located_colour``: located, with the site's default colour weight: what a
  shopper gets;
* ``true_box``: the photo cropped to where the product was pasted (the
  ceiling), shape alone.

Recall@1/5/20 is how often the product's own row is among the first 1, 5,
20 results; ``families`` gives recall@5 of every way per scene family and
the p50 of one ``located_colour`` search (decode included), in-process.
Catalogue packshots are searched as queries too (their own file bytes, the
query's own row dropped from k=6): P@5 by articleType with and without
locating, colour weight 0 (locating must leave packshots alone).

Tuned-on and held-back families. The tuned-on families ("wall", "noise",
"stripes", "clutter") are the kinds of scene catalogue tuning
(``indexer.scenes``) learns from. The held-back families ("fabric", "wood",
"people", "room") exist only in ``benchmarks/shopper_scenes.py`` and were
NEVER used to tune anything, neither the projection nor any setting; the
``heldback_*`` figures therefore say whether tuning learned shopper photos
or only its own backgrounds. Do not pick a setting by them and then report
them as held back.

Run it (10+ minutes at full size on two cores; the index in ``--work`` is
reused by the next run when the catalogue, model and tuning still match):

    python -m benchmarks.bench_shopper [--photos 600] [--items N] [--tuning on|off] [--work DIR] \\
        [--catalogue-queries 300] [--seed 7] [--dataset DIR]

Human-readable progress goes to stderr; the one line on stdout is a JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average, make_catalogue

log = logging.getLogger("bench_shopper")

KS = (1, 5, 20)
WAYS = ("whole", "located", "located_colour", "true_box")
CLUTTER_PACKSHOTS = 6  # other products a "clutter" scene may draw from
SUBSET_SEED = 0  # which items ``--items N`` keeps: the same N items whatever ``--seed`` says


def catalogue_for(dataset: Path, items: int | None, work: Path) -> Path:
    """The catalogue to index: the dataset itself, or a copy of an even, fixed subset of ``items`` in ``work``."""
    paths = dataset_images(dataset)
    if not items or items >= len(paths):
        return dataset
    keep = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(paths), size=items, replace=False))
    chosen = [paths[i] for i in keep]
    folder = work / f"catalogue-{items}"
    if folder.is_dir():
        present = {p.name for p in dataset_images(folder)}
        if present != {p.name for p in chosen}:
            raise SystemExit(f"{folder} holds other images than the {items}-item subset; use another --work")
        return folder
    log.info("copying a %d-item subset of %s to %s", items, dataset, folder)
    return make_catalogue(chosen, folder, dataset / "styles.csv")


def packshot(path: Path) -> np.ndarray:
    """A catalogue photo as an RGB uint8 array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def recall_at(ranks: list[int | None], k: int) -> float:
    """Share of queries whose product was among their first ``k`` results (``None``: not in the results)."""
    return float(np.mean([rank is not None and rank < k for rank in ranks])) if ranks else float("nan")


def rank_of(result, row: int) -> int | None:
    """Where ``row`` is in one photo's results (from 0), or ``None``."""
    for position, ranked in enumerate(result.results):
        if ranked.row == row:
            return position
    return None


def timed_search(pipeline, data: bytes, name: str, options, crop=None):
    """One photo from its bytes through the pipeline, as a request would: the result and the milliseconds."""
    from indexer.query import decode_photo

    side = getattr(pipeline.embedder, "input_size", None)  # the model's square (newer pipelines ask for it)
    started = time.perf_counter()
    photo = decode_photo(data, name, crop=crop) if side is None else decode_photo(data, name, crop=crop, size=side)
    results, timing = pipeline.search_photos([photo], options)
    return results[0], (time.perf_counter() - started) * 1000, timing


def shopper_searches(pipeline, searcher, settings, args) -> tuple[dict, dict]:
    """Make the shopper photos and search each four ways; per family, the rank of the truth and the timings."""
    from benchmarks.shopper_scenes import FAMILIES, make_shopper_photo
    from indexer.query import SearchOptions

    options = {
        "whole": SearchOptions(k=max(KS), colour_weight=0.0, locate=False),
        "located": SearchOptions(k=max(KS), colour_weight=0.0, locate=True),
        "located_colour": SearchOptions(k=max(KS), colour_weight=settings.colour_weight, locate=True),
        "true_box": SearchOptions(k=max(KS), colour_weight=0.0, locate=False),
    }
    families = list(FAMILIES)
    rng = np.random.default_rng(args.seed)
    count = len(searcher)
    ranks = {family: {way: [] for way in WAYS} for family in families}
    stats = {family: {"ms": [], "boxes": 0, "embed_ms": []} for family in families}
    warmed = False
    kept = []  # the first photos' bytes, for the cost comparison
    for number in range(args.photos):
        family = families[number % len(families)]  # round robin: every family gets the same share
        row = int(rng.integers(count))
        others = [int(r) for r in rng.choice(count, size=min(count, CLUTTER_PACKSHOTS + 1), replace=False) if r != row]
        clutter = [packshot(settings.catalogue / searcher.filenames[r]) for r in others[:CLUTTER_PACKSHOTS]]
        data, true_box = make_shopper_photo(
            rng, packshot(settings.catalogue / searcher.filenames[row]), family, clutter if family == "clutter" else ()
        )
        name = f"shopper-{number:04d}-{family}.jpg"
        if len(kept) < COST_PHOTOS:
            kept.append((data, name))
        if not warmed:  # the first searches pay for lazy set-up; keep them out of the timings
            for way in ("whole", "located_colour"):
                timed_search(pipeline, data, name, options[way])
            warmed = True
        for way in WAYS:
            crop = true_box if way == "true_box" else None
            result, ms, timing = timed_search(pipeline, data, name, options[way], crop)
            ranks[family][way].append(rank_of(result, row))
            if way == "located_colour":
                stats[family]["ms"].append(ms)
                stats[family]["embed_ms"].append(timing.get("embed", float("nan")))
                stats[family]["boxes"] += bool(result.located)
        if (number + 1) % 50 == 0 or number + 1 == args.photos:
            log.info("%d / %d shopper photos", number + 1, args.photos)
    stats["_kept"] = kept
    return ranks, stats


COST_PHOTOS = 64


@contextlib.contextmanager
def single_box():
    """Locating as the site did before it searched several regions: one box (half the map's range, 10% margin)."""
    from indexer import locate

    saved = locate.FIRST_BOX, locate.SECOND_BOX, locate.MAX_COVER
    locate.FIRST_BOX, locate.SECOND_BOX, locate.MAX_COVER = (0.5, 0.1), None, 0.8
    try:
        yield
    finally:
        locate.FIRST_BOX, locate.SECOND_BOX, locate.MAX_COVER = saved


def located_cost(pipeline, settings, kept) -> dict:
    """p50 of the site's located search against a single-box search, alternating on the same photos.

    A single box is what the previous rule cost at most (one forward pass for
    the map, one for the box); alternating photo by photo puts both under the
    same load.
    """
    from indexer.query import SearchOptions

    options = SearchOptions(k=5, colour_weight=settings.colour_weight, locate=True)
    now, before = [], []
    for data, name in kept:
        _, ms, _ = timed_search(pipeline, data, name, options)
        now.append(ms)
        with single_box():
            _, ms, _ = timed_search(pipeline, data, name, options)
        before.append(ms)
    p50_now, p50_before = float(np.median(now)), float(np.median(before))
    return {"located_p50_ms": round(p50_now, 2), "single_box_p50_ms": round(p50_before, 2),
            "located_over_single_box": round(p50_now / p50_before, 3), "cost_photos": len(kept)}


def catalogue_precision(pipeline, searcher, settings, args) -> dict:
    """P@5 by articleType of catalogue packshots as queries (own row dropped), with and without locating."""
    from indexer.query import SearchOptions

    rng = np.random.default_rng(args.seed + 1)
    count = len(searcher)
    types = [searcher.metadata[row].get("articleType", "") for row in range(count)]
    rows = rng.choice(count, size=min(count, args.catalogue_queries), replace=False)
    precision: dict[str, list[float]] = {"located": [], "whole": []}
    boxes = 0
    for row in (int(r) for r in rows):
        label = types[row]
        if not label:
            continue
        name = searcher.filenames[row]
        data = (settings.catalogue / name).read_bytes()
        for way, locate in (("located", True), ("whole", False)):
            result, _, _ = timed_search(pipeline, data, name, SearchOptions(k=6, colour_weight=0.0, locate=locate))
            found = [ranked.row for ranked in result.results if ranked.row != row][:5]
            precision[way].append(float(np.mean([types[r] == label for r in found])) if found else 0.0)
            boxes += locate and bool(result.located)
    log.info(
        "catalogue queries: %d with an articleType, %d whose first result a box found", len(precision["whole"]), boxes
    )
    return {way: float(np.mean(values)) if values else float("nan") for way, values in precision.items()}


def mean_of(values) -> float:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else float("nan")


def run(args, work: Path) -> dict:
    from benchmarks.shopper_scenes import FAMILIES
    from indexer.build import build_index
    from indexer.config import Settings
    from indexer.query import QueryPipeline
    from indexer.runtimes import load_for_settings
    from indexer.search import Searcher

    work.mkdir(parents=True, exist_ok=True)
    catalogue = catalogue_for(args.dataset, args.items, work)
    tuning = None if args.tuning is None else args.tuning == "on"
    settings = Settings.from_env(catalogue=catalogue, index_dir=work / "index", tuning=tuning, model=args.model)
    embedder = load_for_settings(settings)
    log.info(
        "model %s, weights %s, runtime %s; catalogue %s; tuning %s",
        embedder.choice.model,
        embedder.weights_id,
        embedder.runtime,
        catalogue,
        "on" if settings.tuning else "off",
    )
    if embedder.choice.random:
        log.warning("the model has random weights (FASHION_WEIGHTS=none): the figures mean nothing")
    started = time.perf_counter()
    report = build_index(settings, embedder)
    build_s = time.perf_counter() - started
    log.info("build: %s (%.1f s)%s", report.summary(), build_s, " - existing index reused" if report.up_to_date else "")

    searcher = Searcher.for_settings(settings)
    pipeline = QueryPipeline(embedder, searcher)
    embedder.warm_up()
    log.info("index: %d items, tuning %s", len(searcher), searcher.manifest.get("tuning"))

    ranks, stats = shopper_searches(pipeline, searcher, settings, args)
    cost = located_cost(pipeline, settings, stats.pop("_kept"))
    log.info("search p50 %.1f ms located, %.1f ms with a single box (%.2fx)", cost["located_p50_ms"],
             cost["single_box_p50_ms"], cost["located_over_single_box"])
    every = {way: [rank for family in ranks.values() for rank in family[way]] for way in WAYS}
    results: dict = {}
    for way in ("whole", "located", "true_box"):
        for k in KS:
            results[f"{way}_recall_at_{k}"] = round(recall_at(every[way], k), 4)
    results["located_colour_recall_at_5"] = round(recall_at(every["located_colour"], 5), 4)
    families = {}
    for family, spec in FAMILIES.items():
        entry: dict = {"tuned_on": bool(spec["tuned_on"])}
        entry.update({way: round(recall_at(ranks[family][way], 5), 4) for way in WAYS})
        entry["p50_ms"] = round(float(np.median(stats[family]["ms"])), 2) if stats[family]["ms"] else None
        families[family] = entry
        log.info(
            "%-8s %-9s recall@5 whole %.3f  located %.3f  located+colour %.3f  true box %.3f  "
            "(%d photos, %d boxes; p50 %.1f ms, embed p50 %.1f ms)",
            family,
            "tuned-on" if entry["tuned_on"] else "held-back",
            entry["whole"],
            entry["located"],
            entry["located_colour"],
            entry["true_box"],
            len(stats[family]["ms"]),
            stats[family]["boxes"],
            entry["p50_ms"] or float("nan"),
            float(np.median(stats[family]["embed_ms"] or [float("nan")])),
        )
    for way in ("whole", "located", "true_box"):
        log.info("%-8s recall@1 %.3f  @5 %.3f  @20 %.3f", way, *(results[f"{way}_recall_at_{k}"] for k in KS))
    log.info(
        "located, default colour weight %.2f: recall@5 %.3f",
        settings.colour_weight,
        results["located_colour_recall_at_5"],
    )

    precision = catalogue_precision(pipeline, searcher, settings, args)
    results["catalogue_p_at_5_located"] = round(precision["located"], 4)
    results["catalogue_p_at_5_whole"] = round(precision["whole"], 4)
    log.info(
        "catalogue P@5 by articleType: located %.4f, whole %.4f",
        results["catalogue_p_at_5_located"],
        results["catalogue_p_at_5_whole"],
    )

    held = [entry for entry in families.values() if not entry["tuned_on"]]
    tuned = [entry for entry in families.values() if entry["tuned_on"]]
    results["families"] = families
    results["heldback_located_recall_at_5"] = mean_of(entry["located"] for entry in held)
    results["heldback_located_colour_recall_at_5"] = mean_of(entry["located_colour"] for entry in held)
    results["heldback_whole_recall_at_5"] = mean_of(entry["whole"] for entry in held)
    results["tuned_on_located_recall_at_5"] = mean_of(entry["located"] for entry in tuned)
    log.info(
        "located recall@5: held-back families %.3f, tuned-on families %.3f",
        results["heldback_located_recall_at_5"],
        results["tuned_on_located_recall_at_5"],
    )
    results.update(cost)
    results.update(
        tuning="on" if settings.tuning else "off",
        tuning_id=searcher.manifest.get("tuning"),
        model=embedder.choice.model,
        runtime=embedder.runtime,
        photos=args.photos,
        items=len(searcher),
        build_s=round(build_s, 1),
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Held-back families were never used to tune anything; see the module docstring.",
    )
    parser.add_argument("--photos", type=int, default=600, help="shopper photos, spread evenly over the families")
    parser.add_argument("--items", type=int, default=None, help="index an even subset of N items (default: all)")
    parser.add_argument(
        "--tuning",
        choices=("on", "off"),
        default=None,
        help="catalogue tuning of the index (default: FASHION_TUNING, on)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where the catalogue subset and index go; an index there is reused (default: a temp dir)",
    )
    parser.add_argument("--catalogue-queries", type=int, default=300, help="catalogue packshots searched as queries")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default=None, help="FASHION_MODEL name (default: FASHION_MODEL, efficientnet-lite0)")
    args = parser.parse_args(argv)
    if args.photos < 1 or args.catalogue_queries < 0 or (args.items is not None and args.items < 2):
        parser.error("--photos must be at least 1, --catalogue-queries at least 0, --items at least 2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    started = time.perf_counter()
    log.info("load average %.2f at the start", load_average())
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="bench-shopper-") as tmp:
            results = run(args, Path(tmp))
    else:
        results = run(args, args.work.resolve())
    log.info("done in %.1f s; load average %.2f at the end", time.perf_counter() - started, load_average())
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
