"""Indexer benchmark: throughput, incremental cost, peak RSS, Annoy quality.

Run from the repository root::

    FASHION_WEIGHTS=none python -m benchmarks.bench_indexer [--dataset DIR] [--limit N] [--out FILE]

How it measures. The machine is shared and its speed can halve from one
minute to the next, so every comparison is a ratio of figures taken in the
same process, as close together in time as possible:

* The parent process never imports TensorFlow. It builds a throw-away
  catalogue with copies of the dataset's images (``--limit`` of them), then
  starts ONE child process (this module with ``--child``) that does all the
  measuring with one embedder, loaded exactly as ``python -m indexer`` loads it
  (same thread settings, same ``settings.batch_size``):

  0. the reference projects' loop: load, ``preprocess_input`` and one
     ``keras.Model.predict`` per image on a ``(1, 224, 224, 3)`` batch, on
     the first half of ``--reference-images`` files (after one untimed call);
  1. model-bound throughput: ``Embedder.embed`` on pre-decoded uint8 batches
     (``--batches`` batches after two warm-up batches);
  2. the full build: ``build_index(full=True)`` into a fresh index dir, wall
     time from the call to the published generation. After every
     ``--probe-every`` batches, the embedder the build uses also runs one
     timed bare forward pass on a pre-decoded batch (see
     ``_ProbingEmbedder``); the probes' time is taken out of the build's wall
     time, and their throughput is the model-bound figure of the target
     ratio, sampled at the same moments as the build. ``VmHWM`` is reset just
     before the build (``/proc/self/clear_refs``) so the peak RSS is the
     build's own;
  3. model-bound throughput again, then the reference loop on the second
     half of the files. The before/after pair brackets the build; the ratio
     from its mean is printed too. When before and after differ by more than
     15 %, the machine's speed changed during the run and the bracketed
     figures are unreliable (``model_bound_drift`` in the JSON);
  4. Annoy quality: ``indexer.evaluate.evaluate`` on the built index, with
     ``FASHION_ANNOY_SEARCH_K`` as the web app uses it;
  5. incremental: ``--added`` new files (copies under ``added/``) are put into
     the catalogue and ``build_index`` runs again; then they are deleted and
     it runs once more (the "remove" figure, informational).

  The build runs with a warm embedder, as in the web app, which warms up at
  start; what a cold ``python -m indexer`` pays on top (imports, model
  construction, tracing) is reported separately. The CPU-time ratio (images
  per CPU-second of the whole process, build vs. bare forward pass) hardly
  moves when other jobs load the machine: it shows the pipeline's own
  overhead.

* The parent then runs ``python -m indexer evaluate`` on the index (its JSON
  is included), adds the new files again and times ``python -m indexer build``
  as a whole process, start-up included (informational). A kept ``--workdir``
  therefore ends with an index of N + ``--added`` items.

Figures are printed as plain lines, then one JSON line with every figure and
a pass/fail per target; ``--out`` also writes that JSON to a file.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    DEFAULT_DATASET,
    REPO_ROOT,
    add_images,
    children_peak_rss_mb,
    dataset_images,
    emit,
    load_average,
    make_catalogue,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
)

log = logging.getLogger("bench_indexer")

NOISE_LIMIT = 0.15  # model-bound before vs after the build, relative

TARGETS = {
    "throughput_ratio": 0.9,  # full build / model-bound, at least
    "incremental_pct": 3.0,  # incremental build as % of full build wall time, at most
    "peak_rss_mb": 2.5 * 1024,  # peak RSS of a full build, at most
    "annoy_recall": 0.98,  # Annoy recall@5 vs exact search, at least
    "annoy_query_ms": 5.0,  # one Annoy query (p95), at most
}


# ---------------------------------------------------------------- child: the measurements


class _ProbingEmbedder:
    """Delegates to an ``Embedder``; times ``embed`` and interleaves model-bound probes.

    After every ``probe_every``-th batch of the build it also runs the bare
    forward pass on ``probe_batch`` (pre-decoded) and times that separately.
    The probes thus sample the model-bound speed at the same moments as the
    build runs, so the ratio of the two survives a machine whose speed
    changes by half from one minute to the next. The probes' time is
    subtracted from the build's wall time; while a probe runs, the decode
    threads are blocked on the full queue (the build is model-bound), so the
    build gains nothing from them.
    """

    def __init__(self, inner, probe_batch=None, probe_every: int = 0):
        self._inner = inner
        self._probe_batch = probe_batch
        self._probe_every = probe_every if probe_batch is not None else 0
        self.calls = 0
        self.seconds = 0.0
        self.images = 0
        self.probe_seconds = 0.0
        self.probe_cpu_seconds = 0.0
        self.probe_images = 0

    def embed(self, batch):
        started = time.perf_counter()
        vectors = self._inner.embed(batch)
        self.seconds += time.perf_counter() - started
        self.images += 1 if batch.ndim == 3 else len(batch)
        self.calls += 1
        if self._probe_every and self.calls % self._probe_every == 0:
            started, cpu_started = time.perf_counter(), time.process_time()
            self._inner.embed(self._probe_batch)
            self.probe_seconds += time.perf_counter() - started
            self.probe_cpu_seconds += time.process_time() - cpu_started
            self.probe_images += len(self._probe_batch)
        return vectors

    def embed_one(self, image):
        return self.embed(image[None])[0]

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _decoded_batches(files: list[Path], batch_size: int, count: int, size: int):
    """``count`` stacked uint8 batches decoded by the shared image pipeline, cycling over ``files``.

    ``size`` is the model's input size (``embedder.input_size``).
    """
    import numpy as np

    from indexer.images import load_for_model

    wanted = batch_size * count
    arrays = [load_for_model(files[i % len(files)], size) for i in range(wanted)]
    return [np.stack(arrays[i : i + batch_size]) for i in range(0, wanted, batch_size)]


def _model_bound(embedder, batches) -> tuple[float, float]:
    """Images per wall second and per CPU second of the bare batched forward pass over ``batches``."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for batch in batches:
        embedder.embed(batch)
    images = sum(len(b) for b in batches)
    return images / (time.perf_counter() - started), images / (time.process_time() - cpu_started)


def _timed_build(settings, embedder, *, full: bool):
    """Run ``build_index``; returns the report, wall seconds and first-seen time of each phase."""
    from indexer.build import build_index

    seen: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()

    def on_progress(snapshot):
        seen.setdefault(snapshot.phase, time.perf_counter() - started)

    report = build_index(settings, embedder, full=full, progress_callback=on_progress)
    wall = time.perf_counter() - started
    marks = [("scan", "scanning"), ("embed", "embedding"), ("publish", "indexing"), ("end", "done")]
    at = {name: seen.get(phase) for name, phase in marks}
    phases = {
        "scan_s": at["embed"] - at["scan"] if None not in (at["embed"], at["scan"]) else None,
        "embed_s": at["publish"] - at["embed"] if None not in (at["publish"], at["embed"]) else None,
        "publish_s": at["end"] - at["publish"] if None not in (at["end"], at["publish"]) else None,
    }
    return report, wall, dict(phases, cpu_s=time.process_time() - cpu_started)


def _reference_loop(embedder, files: list[Path]) -> float:
    """Images per second of the seeds' loop: load, preprocess, one ``model.predict`` per image."""
    import keras
    import numpy as np

    model = embedder.model  # the same network: float 0-255 RGB in (preprocessing inside), pooled features out

    def one(path):
        side = embedder.input_size  # the model's square (224 for Lite0 and ResNet50, 260 for Lite2)
        x = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(side, side)))
        feature = model.predict(np.expand_dims(x, 0), verbose=0).flatten()
        return feature / np.linalg.norm(feature)

    one(files[0])  # builds the predict function; not timed
    started = time.perf_counter()
    for path in files:
        one(path)
    return len(files) / (time.perf_counter() - started)


def run_child(config: dict) -> dict:
    """All in-process measurements; returns a JSON-ready dict (see the module docstring)."""
    process_started = time.perf_counter()
    from indexer.config import Settings
    from indexer.evaluate import evaluate
    from indexer.model import load_embedder
    from indexer.search import Searcher

    settings = Settings.from_env(catalogue=config["catalogue"], index_dir=config["index_dir"])
    catalogue = Path(config["catalogue"])
    files = sorted(p for p in catalogue.iterdir() if p.suffix.lower() == ".jpg")
    out: dict = {
        "batch_size": settings.batch_size,
        "tf_threads": settings.tf_threads,
        "annoy_search_k": settings.annoy_search_k,
    }

    embedder = load_embedder(settings.weights, settings.random_seed, settings.tf_threads, settings.model)
    out["weights_id"] = embedder.weights_id
    out["startup_s"] = time.perf_counter() - process_started  # imports + model construction

    # 0. the reference projects' loop, half of the images before the build and half after
    reference = files[: config["reference_images"]]
    half = len(reference) // 2
    out["reference_images"] = len(reference)
    out["reference_before"] = _reference_loop(embedder, reference[:half])
    gc.collect()

    # 1. model-bound, right before the build
    batches = _decoded_batches(files, settings.batch_size, config["batches"] + 2, embedder.input_size)
    started = time.perf_counter()
    for batch in batches[:2]:
        embedder.embed(batch)  # trace + first run at this batch shape
    out["warmup_s"] = time.perf_counter() - started
    out["model_bound_before"], out["model_bound_cpu_before"] = _model_bound(embedder, batches[2:])
    probe_batch = batches[2]
    del batches
    gc.collect()

    # 2. full build, with its own peak RSS
    out["peak_reset"] = reset_peak_rss()
    out["rss_before_build_mb"] = rss_mb()
    timed = _ProbingEmbedder(embedder, probe_batch, config["probe_every"])
    report, wall, phases = _timed_build(settings, timed, full=True)
    out["full_peak_rss_mb"] = peak_rss_mb()
    out["full"] = dict(report.to_dict(), wall_s=wall - timed.probe_seconds, wall_with_probes_s=wall, phases=phases)
    out["full"]["embed_s"] = timed.seconds
    out["full"]["embed_images"] = timed.images
    out["full"]["probe_s"] = timed.probe_seconds
    out["full"]["probe_images"] = timed.probe_images
    out["full"]["probe_cpu_s"] = timed.probe_cpu_seconds
    del probe_batch, timed
    if report.skipped:
        log.warning("%d files skipped in the full build", len(report.skipped))

    # 3. model-bound, after the build
    batches = _decoded_batches(files, settings.batch_size, config["batches"], embedder.input_size)
    out["model_bound_after"], out["model_bound_cpu_after"] = _model_bound(embedder, batches)
    del batches
    gc.collect()

    out["reference_after"] = _reference_loop(embedder, reference[half:])
    gc.collect()

    # 4. Annoy quality on the full build's index
    searcher = Searcher.for_settings(settings)
    out["evaluate"] = evaluate(searcher, k=5)
    searcher.index.annoy.unload()
    del searcher

    # 5. incremental: add, then remove, the new files
    added = add_images(catalogue, [Path(p) for p in config["added"]])
    report, wall, phases = _timed_build(settings, embedder, full=False)
    out["incremental"] = dict(report.to_dict(), wall_s=wall, phases=phases)
    for path in added:
        path.unlink()
    report, wall, phases = _timed_build(settings, embedder, full=False)
    out["incremental_remove"] = dict(report.to_dict(), wall_s=wall, phases=phases)

    out["child_peak_rss_mb"] = peak_rss_mb()
    return out


# ---------------------------------------------------------------- parent: orchestration and report


def _run_cli(args: list[str], env: dict, log_path: Path) -> tuple[float, str]:
    """Run ``python -m indexer ARGS``; returns (wall seconds, stdout). Logs go to ``log_path``."""
    started = time.perf_counter()
    with open(log_path, "ab") as err:
        done = subprocess.run(
            [sys.executable, "-m", "indexer", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"python -m indexer {' '.join(args)} failed ({done.returncode}); see {log_path}")
    return wall, done.stdout.decode("utf-8", "replace")


def _target(value, target, higher_is_better: bool) -> dict:
    ok = value is not None and (value >= target if higher_is_better else value <= target)
    return {
        "value": None if value is None else round(value, 4),
        "target": f"{'>=' if higher_is_better else '<='} {target}",
        "pass": bool(ok),
    }


def run_parent(args) -> int:
    """Prepare the catalogue, run the child and the CLI checks, print the figures."""
    dataset = Path(args.dataset).resolve()
    images = dataset_images(dataset)
    subset = images[: args.limit] if args.limit else images
    if len(subset) < 2 * 32:
        raise SystemExit(f"need at least 64 images, found {len(subset)} in {dataset}")
    rest = images[len(subset) :]
    # new files for the incremental build: unused dataset images if there are
    # enough, otherwise copies of catalogue images (same name, so same
    # styles.csv id, under added/)
    extra_sources = (rest if len(rest) >= args.added else subset)[: args.added]

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-indexer-"))
    workdir.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(subset, workdir / "catalogue", styles=dataset / "styles.csv")
    index_dir = workdir / "index"
    log_path = workdir / "child.log"
    config = {
        "catalogue": str(catalogue),
        "index_dir": str(index_dir),
        "added": [str(p) for p in extra_sources],
        "batches": args.batches,
        "probe_every": args.probe_every,
        "reference_images": args.reference_images,
    }
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    result_path = workdir / "result.json"
    env = dict(os.environ, FASHION_WEIGHTS=args.weights)
    env.pop("FASHION_CATALOGUE", None)
    env.pop("FASHION_INDEX_DIR", None)

    load_before = load_average()
    log.info(
        "Benchmarking %d images from %s in %s (load %.2f); child log: %s",
        len(subset),
        dataset,
        workdir,
        load_before,
        log_path,
    )
    started = time.perf_counter()
    with open(log_path, "wb") as err:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_indexer", "--child", str(config_path), "--out", str(result_path)],
            cwd=REPO_ROOT,
            env=env,
            stderr=err,
            check=False,
        )
    if child.returncode != 0:
        tail = log_path.read_text("utf-8", "replace").splitlines()[-30:]
        raise SystemExit(f"benchmark child failed ({child.returncode}):\n" + "\n".join(tail))
    child_rusage_mb = children_peak_rss_mb()
    r = json.loads(result_path.read_text())

    # the CLI on the same index: evaluate (3000-item index), then an incremental build as a whole process
    _, evaluate_out = _run_cli(
        ["evaluate", "--catalogue", str(catalogue), "--index-dir", str(index_dir)], env, workdir / "cli.log"
    )
    cli_evaluate = json.loads(evaluate_out)
    add_images(catalogue, extra_sources)
    cli_build_s, cli_build_out = _run_cli(
        ["build", "--catalogue", str(catalogue), "--index-dir", str(index_dir)], env, workdir / "cli.log"
    )
    load_after = load_average()

    full = r["full"]
    n = full["indexed"]
    build_ips = n / full["wall_s"]  # probes' time already subtracted
    bracket_ips = (r["model_bound_before"] + r["model_bound_after"]) / 2
    probe_ips = full["probe_images"] / full["probe_s"] if full["probe_s"] else None
    model_ips = probe_ips or bracket_ips
    reference_ips = (r["reference_before"] + r["reference_after"]) / 2
    drift = abs(r["model_bound_before"] - r["model_bound_after"]) / bracket_ips
    noisy = drift > NOISE_LIMIT
    model_cpu_ips = (r["model_bound_cpu_before"] + r["model_bound_cpu_after"]) / 2
    build_cpu_s = full["phases"]["cpu_s"] - full["probe_cpu_s"]
    inc_pct = 100 * r["incremental"]["wall_s"] / full["wall_s"]
    ev = r["evaluate"]
    figures = {
        "images": n,
        "batch_size": r["batch_size"],
        "tf_threads": r["tf_threads"] or "tensorflow default",
        "weights_id": r["weights_id"],
        "full_build_wall_s": full["wall_s"],
        "full_build_ips": build_ips,
        "full_build_phases_s": dict(
            full["phases"],
            embed_s=full["phases"]["embed_s"] - full["probe_s"],
            cpu_s=build_cpu_s,
        ),
        "forward_in_build_ips": full["embed_images"] / full["embed_s"],
        "share_of_build_in_forward_pass": full["embed_s"] / full["wall_s"],
        "model_bound_ips": model_ips,
        "model_bound_interleaved_ips": probe_ips,
        "interleaved_probes": full["probe_images"] // r["batch_size"],
        "model_bound_before_ips": r["model_bound_before"],
        "model_bound_after_ips": r["model_bound_after"],
        "throughput_ratio": build_ips / model_ips,
        "throughput_ratio_bracketed": build_ips / bracket_ips,
        "cpu_time_ratio": n / build_cpu_s / model_cpu_ips,
        "reference_predict_per_image_ips": reference_ips,
        "reference_before_ips": r["reference_before"],
        "reference_after_ips": r["reference_after"],
        "reference_images": r["reference_images"],
        "speedup_vs_reference": build_ips / reference_ips,
        "batched_vs_reference_bracketed": bracket_ips / reference_ips,
        "incremental_added": r["incremental"]["indexed"],
        "incremental_wall_s": r["incremental"]["wall_s"],
        "incremental_pct_of_full": inc_pct,
        "incremental_remove_wall_s": r["incremental_remove"]["wall_s"],
        "cli_incremental_build_wall_s": cli_build_s,
        "startup_s": r["startup_s"],
        "warmup_s": r["warmup_s"],
        "full_build_peak_rss_mb": r["full_peak_rss_mb"],
        "rss_before_build_mb": r["rss_before_build_mb"],
        "peak_rss_is_build_only": r["peak_reset"],
        "child_process_peak_rss_mb": child_rusage_mb,
        "annoy_recall_at_5": ev["annoy_recall_at_k"],
        "annoy_query_ms_p50": ev["annoy_query_ms_p50"],
        "annoy_query_ms_p95": ev["annoy_query_ms_p95"],
        "annoy_trees": ev["trees"],
        "annoy_search_k": r["annoy_search_k"],
        "precision_at_5": ev["precision_at_k"],
        "chance_precision": ev["chance_precision"],
        "cli_evaluate": cli_evaluate,
        "model_bound_drift": drift,
        "load_before": load_before,
        "load_after": load_after,
        "total_wall_s": time.perf_counter() - started,
    }
    targets = {
        "throughput_ratio": _target(figures["throughput_ratio"], TARGETS["throughput_ratio"], True),
        "incremental_pct": _target(inc_pct, TARGETS["incremental_pct"], False),
        "peak_rss_mb": _target(r["full_peak_rss_mb"], TARGETS["peak_rss_mb"], False),
        "annoy_recall": _target(ev["annoy_recall_at_k"], TARGETS["annoy_recall"], True),
        "annoy_query_ms": _target(ev["annoy_query_ms_p95"], TARGETS["annoy_query_ms"], False),
    }

    phases = figures["full_build_phases_s"]
    emit("images", n)
    emit("batch size", r["batch_size"])
    emit("full build wall time", full["wall_s"], "s")
    emit("full build throughput", build_ips, "images/s")
    emit(
        "full build phases (scan / embed / publish)",
        f"{phases['scan_s']:.2f} / {phases['embed_s']:.1f} / {phases['publish_s']:.2f}",
        "s",
    )
    emit("share of build wall time inside the forward pass", figures["share_of_build_in_forward_pass"])
    if probe_ips:
        emit(f"model-bound throughput, {figures['interleaved_probes']} probes during the build", probe_ips, "images/s")
    emit(
        "model-bound throughput, before/after the build",
        f"{bracket_ips:.2f} ({r['model_bound_before']:.2f}/{r['model_bound_after']:.2f})",
        "images/s",
    )
    emit("throughput ratio build/model-bound", figures["throughput_ratio"], "(target >= 0.9)")
    if probe_ips:
        emit("throughput ratio build/model-bound (before/after)", figures["throughput_ratio_bracketed"])
    emit("CPU-time ratio build/model-bound", figures["cpu_time_ratio"])
    emit(
        "reference loop, one predict per image (before/after build)",
        f"{reference_ips:.2f} ({r['reference_before']:.2f}/{r['reference_after']:.2f})",
        "images/s",
    )
    emit("full build vs reference loop", figures["speedup_vs_reference"], "x")
    emit("batched forward pass vs reference loop (both before/after)", figures["batched_vs_reference_bracketed"], "x")
    emit(f"incremental build (+{r['incremental']['indexed']} images)", r["incremental"]["wall_s"], "s")
    emit("incremental as % of full build", inc_pct, "% (target <= 3)")
    emit(f"incremental build (-{len(extra_sources)} images)", r["incremental_remove"]["wall_s"], "s")
    emit(f"incremental build (+{len(extra_sources)}) as a CLI process, start-up included", cli_build_s, "s")
    emit("process start-up (imports + model)", r["startup_s"], "s")
    emit("first two batches (trace + warm-up)", r["warmup_s"], "s")
    emit("full build peak RSS", r["full_peak_rss_mb"], "MB (target <= 2560)")
    emit("RSS before the build", r["rss_before_build_mb"], "MB")
    emit("Annoy recall@5 vs exact", ev["annoy_recall_at_k"], "(target >= 0.98)")
    emit("Annoy query p50 / p95", f"{ev['annoy_query_ms_p50']} / {ev['annoy_query_ms_p95']}", "ms (target <= 5)")
    emit("precision@5 by articleType (chance)", f"{ev['precision_at_k']} ({ev['chance_precision']})")
    emit("load average before / after", f"{load_before:.2f} / {load_after:.2f}")
    emit("model-bound drift before -> after the build", drift, "(noisy)" if noisy else "")
    if noisy:
        log.warning(
            "The machine's speed changed by %.0f%% between before and after the build: "
            "before/after figures are unreliable, the interleaved probes less so.",
            100 * drift,
        )
    line = json.dumps(
        {
            "benchmark": "indexer",
            "noisy": noisy,
            "figures": _rounded(figures),
            "targets": targets,
            "all_pass": all(t["pass"] for t in targets.values()),
        },
        sort_keys=False,
    )
    print(line, flush=True)
    if args.out:
        Path(args.out).write_text(line + "\n")
    if args.keep or args.workdir:
        log.info("Kept %s", workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the parent or (with ``--child``) the measuring child."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_indexer", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="folder of images with styles.csv")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (default: all)")
    parser.add_argument("--out", help="also write the JSON line to this file")
    from indexer.config import FIELDS

    weights = FIELDS["weights"]  # read as Settings reads it, with this benchmark's own default
    parser.add_argument(
        "--weights",
        default=weights.read(os.environ) if weights.given(os.environ) else "none",
        help="FASHION_WEIGHTS for the run (default: $FASHION_WEIGHTS, else none, i.e. seeded random weights)",
    )
    parser.add_argument("--batches", type=int, default=10, help="timed batches for the model-bound figure")
    parser.add_argument(
        "--probe-every", type=int, default=4, help="a model-bound probe after every N build batches (0: none)"
    )
    parser.add_argument("--reference-images", type=int, default=100, help="images for the predict-per-image loop")
    parser.add_argument("--added", type=int, default=30, help="new images for the incremental build")
    parser.add_argument("--workdir", help="keep the catalogue, index and logs here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="do not delete the temp dir at the end")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child:
        result = run_child(json.loads(Path(args.child).read_text()))
        Path(args.out).write_text(json.dumps(result))
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
