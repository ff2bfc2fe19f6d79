"""Runtime benchmark: TensorFlow against OpenVINO fp32 (``auto``) and OpenVINO INT8, in one run.

Run from the repository root::

    python -m benchmarks.bench_runtime [--dataset DIR] [--limit N] [--rounds R] [--out FILE]

The machine is shared and its speed drifts, so every comparison is a ratio
of figures taken in the same run, interleaved:

* The parent never imports TensorFlow. It copies ``--limit`` dataset photos
  (default: all) into a throw-away catalogue, split into ``--rounds``
  chunks, and starts ONE child (``--child``) holding all three embedders,
  each loaded as the product loads it (``FASHION_WEIGHTS=none``, threads =
  ``FASHION_TF_THREADS`` or the cores), with its own index dir:

  1. conversion and INT8 calibration (300 catalogue photos) times;
  2. per round: the next chunk is added to the catalogue and each runtime
     runs an incremental ``build_index`` embedding just that chunk (the
     order rotates every round); between builds, forward-pass probes: one
     batch of 32 pre-decoded photos per runtime, ten single-image calls per
     runtime, and a numpy fp32 SGEMM (2048^3) for the ceiling. Build
     throughput is images / build seconds summed over the rounds;
  3. ``--probe-rounds`` paired rounds: one batch of 32 and three single
     photos per runtime, back to back, giving one ratio to TensorFlow per
     round; their median cancels the machine's drift, which the minutes
     between two builds do not;
  4. at the end every index holds the whole catalogue: ``compare_indexes``
     gives the max abs difference of ``auto`` against TensorFlow over every
     photo and the share of identical top-5 lists; ``evaluate`` gives
     precision@5 (articleType) of each.

  The fp32 ceiling is SGEMM GFLOP/s divided by the model's FLOPs per image,
  counted from the converted graph's convolutions (2 x MACs).

* Then ``python -m indexer evaluate --against`` runs as a CLI (TensorFlow
  index vs ``auto``; ``auto`` vs INT8).

* Then, for ``--server-rounds`` rounds, a real gunicorn with one worker is
  started with ``FASHION_RUNTIME=tensorflow`` and with ``auto`` (the
  converted model cached), alternately, on the same index: spawn to first
  ``/healthz`` 200, the worker's RSS, and ``--searches`` single-photo
  ``POST /api/search`` requests, of which the server-side ``timing_ms.total``
  p50 is the search latency.

Figures are printed as plain lines, then one JSON line with every figure and
a pass/fail per target; ``--out`` also writes that JSON to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    DEFAULT_DATASET,
    REPO_ROOT,
    add_images,
    dataset_images,
    emit,
    load_average,
    make_catalogue,
)

log = logging.getLogger("bench_runtime")
RUNTIMES = ("tensorflow", "auto", "openvino-int8")
TARGETS = {
    "build_speedup_auto": 1.45,  # at least
    "search_p50_ratio_auto": 0.7,  # at most
    "max_abs_diff_auto": 1e-5,  # at most
    "worker_start_ratio_auto": 0.5,  # at most
    "worker_rss_ratio_auto": 0.6,  # at most
    "build_speedup_int8": 2.5,  # at least
    "precision_gap_int8": 0.01,  # at most
    "fp32_of_ceiling": 0.9,  # at least
}


def _median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ---------------------------------------------------------------- child: models, builds, probes


def _conv_flops(model_xml: Path) -> float:
    """FLOPs of one image through the converted model: 2 x MACs of every convolution."""
    import openvino as ov

    flops = 0.0
    for op in ov.Core().read_model(model_xml).get_ordered_ops():
        if op.get_type_name() == "Convolution":
            out = op.get_output_partial_shape(0)
            kernel = op.input(1).get_partial_shape()
            c_out, h, w = (out[i].get_length() for i in (1, 2, 3))
            c_in, kh, kw = (kernel[i].get_length() for i in (1, 2, 3))
            flops += 2.0 * c_out * h * w * c_in * kh * kw
    return flops


def _sgemm_gflops(size: int = 2048, reps: int = 3) -> float:
    import numpy as np

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    best = 0.0
    for _ in range(reps):
        started = time.perf_counter()
        a @ a
        best = max(best, 2.0 * size**3 / (time.perf_counter() - started) / 1e9)
    return best


def _paired_probes(embedders: dict, probe, rounds: int) -> dict:
    """Ratios to TensorFlow from back-to-back calls, one ratio per round, so load drift cancels out.

    Each round times one batch of 32 and three single photos on every
    runtime (order rotating); the per-round ratios' median is the figure.
    """
    ratios: dict[str, list[float]] = {}
    for round_no in range(rounds):
        order = RUNTIMES[round_no % 3 :] + RUNTIMES[: round_no % 3]
        batch_s, single_ms = {}, {}
        for name in order:
            t0 = time.perf_counter()
            embedders[name].embed(probe)
            batch_s[name] = time.perf_counter() - t0
            times = []
            for image in probe[:3]:
                t0 = time.perf_counter()
                embedders[name].embed_one(image)
                times.append((time.perf_counter() - t0) * 1000)
            single_ms[name] = _median(times)
        for name in RUNTIMES[1:]:
            ratios.setdefault(f"batch32_speedup_{name}", []).append(batch_s["tensorflow"] / batch_s[name])
            ratios.setdefault(f"single_ms_ratio_{name}", []).append(single_ms[name] / single_ms["tensorflow"])
        ratios.setdefault("tensorflow_batch32_ips", []).append(len(probe) / batch_s["tensorflow"])
    return {
        key: {"p50": round(_median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3), "rounds": len(v)}
        for key, v in ratios.items()
    }


def _child(args) -> dict:
    import numpy as np

    from indexer.build import build_index
    from indexer.config import FIELDS, Settings
    from indexer.evaluate import compare_indexes, evaluate
    from indexer.images import load_for_model
    from indexer.model import load_embedder, resolve_weights
    from indexer.runtimes import cache_root, load_runtime
    from indexer.search import Searcher

    work = Path(args.workdir)
    catalogue = work / "catalogue"
    chunks = json.loads((work / "chunks.json").read_text())
    threads = FIELDS["tf_threads"].read(os.environ) or os.cpu_count() or 1
    choice = resolve_weights("none", 1234)
    started = time.perf_counter()
    tf_embedder = load_embedder("none", 1234, threads)
    tf_embedder.warm_up()
    load_s = {"tensorflow": time.perf_counter() - started}
    embedders = {"tensorflow": tf_embedder}
    for runtime in ("auto", "openvino-int8"):
        started = time.perf_counter()
        embedders[runtime] = load_runtime(
            choice,
            runtime,
            cache_dir=cache_root(work / f"index-{runtime}"),
            threads=threads,
            catalogue=Path(args.dataset),  # calibrate on the whole catalogue, as a finished shop would
            reference=tf_embedder,
        )
        embedders[runtime].warm_up()
        load_s[runtime] = time.perf_counter() - started
        emit(f"{runtime}: convert+check (and calibrate)", round(load_s[runtime], 1), "s")
    used = {name: emb.runtime for name, emb in embedders.items()}
    settings = {
        name: Settings.from_env(catalogue=str(catalogue), index_dir=str(work / f"index-{name}")) for name in RUNTIMES
    }
    probe = np.stack([load_for_model(p) for p in dataset_images(Path(args.dataset))[:32]])
    build_s = dict.fromkeys(RUNTIMES, 0.0)
    built = dict.fromkeys(RUNTIMES, 0)
    batch_ips = {name: [] for name in RUNTIMES}
    single_ms = {name: [] for name in RUNTIMES}
    sgemm = []
    for round_no, chunk in enumerate(chunks):
        add_images(catalogue, [Path(p) for p in chunk], subdir="")
        order = RUNTIMES[round_no % 3 :] + RUNTIMES[: round_no % 3]
        for name in order:
            report = build_index(settings[name], embedders[name])
            build_s[name] += report.elapsed_s
            built[name] += report.indexed
            emit(f"round {round_no + 1} build {name}", round(report.indexed / report.elapsed_s, 2), "img/s")
        for name in order:
            for _ in range(2):
                t0 = time.perf_counter()
                embedders[name].embed(probe)
                batch_ips[name].append(len(probe) / (time.perf_counter() - t0))
            for image in probe[:10]:
                t0 = time.perf_counter()
                embedders[name].embed_one(image)
                single_ms[name].append((time.perf_counter() - t0) * 1000)
        sgemm.append(_sgemm_gflops())
    paired = _paired_probes(embedders, probe, args.probe_rounds)
    searchers = {name: Searcher.load(settings[name].index_dir) for name in RUNTIMES}
    quality = {name: evaluate(searchers[name])["precision_at_k"] for name in RUNTIMES}
    auto_vs_tf = compare_indexes(searchers["tensorflow"], searchers["auto"])
    int8_vs_auto = compare_indexes(searchers["auto"], searchers["openvino-int8"])
    model_dir = embedders["auto"].resolved.model_dir
    flops = _conv_flops(Path(model_dir) / "model.xml") if model_dir else float("nan")
    return {
        "threads": threads,
        "runtime_used": used,
        "load_s": {k: round(v, 2) for k, v in load_s.items()},
        "build_images": built,
        "build_ips": {k: round(built[k] / build_s[k], 2) for k in RUNTIMES},
        "batch32_ips_p50": {k: round(_median(v), 2) for k, v in batch_ips.items()},
        "single_ms_p50": {k: round(_median(v), 1) for k, v in single_ms.items()},
        "sgemm_gflops_p50": round(_median(sgemm), 1),
        "paired": paired,
        "model_gflop_per_image": round(flops / 1e9, 3),
        "precision_at_5": quality,
        "auto_vs_tensorflow": auto_vs_tf,
        "int8_vs_auto": int8_vs_auto,
    }


# ---------------------------------------------------------------- parent: servers, CLI, report


def _servers(work: Path, args) -> dict:
    from benchmarks.server import FilePart, gunicorn_server, percentile, post_search

    photos = [p.read_bytes() for p in dataset_images(Path(args.dataset))[-args.searches :]]
    found = {name: {"start_s": [], "rss_mb": [], "search_ms": []} for name in ("tensorflow", "auto")}
    for round_no in range(args.server_rounds):
        for name in ("tensorflow", "auto") if round_no % 2 == 0 else ("auto", "tensorflow"):
            env = {"FASHION_RUNTIME": name, "FASHION_RESCAN_SECONDS": "0", "FASHION_THREADS": "2"}
            with gunicorn_server(
                work / "catalogue",
                work / "index-auto",
                workers=1,
                extra_env=env,
                log_name=f"runtime-{name}",
                startup_timeout_s=600,
            ) as server:
                found[name]["start_s"].append(server.ready_s)
                for photo in photos:
                    reply = post_search(server.port, [FilePart("image", "q.jpg", photo)], {"k": "5"})
                    if reply.status == 200:
                        found[name]["search_ms"].append(reply.json()["timing_ms"]["total"])
                found[name]["rss_mb"].append(sum(server.worker_rss_mb().values()))
            emit(f"server round {round_no + 1} {name} start", round(found[name]["start_s"][-1], 2), "s")
    return {
        name: {
            "start_s_p50": round(_median(v["start_s"]), 2),
            "rss_mb_p50": round(_median(v["rss_mb"]), 1),
            "search_ms_p50": round(percentile(v["search_ms"], 50), 1),
            "searches": len(v["search_ms"]),
        }
        for name, v in found.items()
    }


def _cli_evaluate(work: Path, index: str, against: str) -> dict:
    env = dict(os.environ, FASHION_WEIGHTS="none")
    done = subprocess.run(
        [sys.executable, "-m", "indexer", "evaluate", "--catalogue", str(work / "catalogue"),
         "--index-dir", str(work / index), "--against", str(work / against)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
    )
    result = json.loads(done.stdout)
    return {
        "precision_at_5": result["precision_at_k"],
        "against_precision_at_5": result["against"]["precision_at_k"],
        "top5_agreement": result["against"]["top_k_agreement"],
        "identical_top5_lists": result["against"]["identical_lists"],
    }


def _or_nan(value: float | None) -> float:
    """``value``, or NaN (a target it fails) when it could not be measured."""
    return float("nan") if value is None else value


def _targets(model: dict, servers: dict | None) -> dict:
    build, single = model["build_ips"], model["single_ms_p50"]
    nan = {"start_s_p50": float("nan"), "rss_mb_p50": float("nan"), "search_ms_p50": float("nan")}
    servers = servers or {"tensorflow": nan, "auto": nan}
    ceiling = model["sgemm_gflops_p50"] / model["model_gflop_per_image"]
    figures = {
        "build_speedup_auto": build["auto"] / build["tensorflow"],
        "search_p50_ratio_auto": servers["auto"]["search_ms_p50"] / servers["tensorflow"]["search_ms_p50"],
        "max_abs_diff_auto": _or_nan(model["auto_vs_tensorflow"]["max_abs_diff"]),
        "worker_start_ratio_auto": servers["auto"]["start_s_p50"] / servers["tensorflow"]["start_s_p50"],
        "worker_rss_ratio_auto": servers["auto"]["rss_mb_p50"] / servers["tensorflow"]["rss_mb_p50"],
        "build_speedup_int8": build["openvino-int8"] / build["tensorflow"],
        "precision_gap_int8": abs(model["precision_at_5"]["openvino-int8"] - model["precision_at_5"]["auto"]),
        "fp32_of_ceiling": model["batch32_ips_p50"]["auto"] / ceiling,
        "paired_batch32_speedup_auto": model["paired"]["batch32_speedup_auto"]["p50"],
        "paired_batch32_speedup_int8": model["paired"]["batch32_speedup_openvino-int8"]["p50"],
        "paired_single_ratio_auto": model["paired"]["single_ms_ratio_auto"]["p50"],
        "paired_single_ratio_int8": model["paired"]["single_ms_ratio_openvino-int8"]["p50"],
        "single_image_ratio_auto": single["auto"] / single["tensorflow"],
        "single_image_ratio_int8": single["openvino-int8"] / single["tensorflow"],
        "fp32_ceiling_ips": ceiling,
    }
    at_most = {"search_p50_ratio_auto", "max_abs_diff_auto", "worker_start_ratio_auto", "worker_rss_ratio_auto",
               "precision_gap_int8"}
    result = {}
    for key, value in figures.items():
        entry = {"value": float(f"{value:.4g}")}
        if key in TARGETS:
            entry["target"] = TARGETS[key]
            entry["met"] = bool(value <= TARGETS[key] if key in at_most else value >= TARGETS[key])
        result[key] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--limit", type=int, default=0, help="photos to index (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="catalogue chunks, one interleaved build round each")
    parser.add_argument("--probe-rounds", type=int, default=12, help="back-to-back forward-pass rounds")
    parser.add_argument("--server-rounds", type=int, default=2)
    parser.add_argument("--searches", type=int, default=30, help="single-photo searches per server")
    parser.add_argument("--workdir", help="keep the work here (default: a temporary folder, removed)")
    parser.add_argument("--out", help="also write the JSON line here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child:
        with contextlib.redirect_stdout(sys.stderr):  # progress lines show while the parent waits
            result = _child(args)
        print(json.dumps(result))
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images = dataset_images(Path(args.dataset))
    images = images[: args.limit] if args.limit else images
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    load_before = load_average()
    try:
        # the catalogue starts empty and grows by one chunk per round; styles.csv covers every photo
        make_catalogue([], work / "catalogue")
        if (Path(args.dataset) / "styles.csv").is_file():
            shutil.copy2(Path(args.dataset) / "styles.csv", work / "catalogue" / "styles.csv")
        chunks = [[str(p) for p in images[i :: args.rounds]] for i in range(args.rounds)]
        (work / "chunks.json").write_text(json.dumps(chunks))
        env = dict(os.environ, FASHION_WEIGHTS="none")
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_runtime", "--child", "--workdir", str(work),
             "--dataset", args.dataset, "--probe-rounds", str(args.probe_rounds)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, check=True,
        )
        lines = child.stdout.strip().splitlines()
        print("\n".join(lines[:-1]))
        model = json.loads(lines[-1])
        cli = {
            "auto_against_tensorflow": _cli_evaluate(work, "index-tensorflow", "index-auto"),
            "int8_against_auto": _cli_evaluate(work, "index-auto", "index-openvino-int8"),
        }
        servers = _servers(work, args) if args.server_rounds else None
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "photos": len(images),
        "cpus": os.cpu_count(),
        "load_average": [round(load_before, 2), round(load_average(), 2)],
        "model": model,
        "evaluate_cli": cli,
        "servers": servers,
        "targets": _targets(model, servers),
    }
    for key, entry in report["targets"].items():
        verdict = f"  (target {entry['target']}, met: {entry['met']})" if "met" in entry else ""
        print(f"{key}: {entry['value']:.4g}{verdict}", flush=True)
    line = json.dumps(report)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
