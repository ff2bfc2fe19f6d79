"""Ray engine vs local engine, same catalogue, same run.

Run from the repository root (needs ``pip install -r requirements-ray.txt``)::

    python benchmarks/bench_ray.py [--dataset DIR] [--limit N] [--order local,ray] [--rounds R]

What it does:

* the catalogue is ``--dataset`` itself (default ``../shared/datasets/fashion-dev``:
  photos under ``images/``, ``styles.csv`` at its root; the scan is recursive
  and styles rows match by file stem), or with ``--limit N`` a throw-away copy
  of its first N photos plus ``styles.csv``;
* each engine runs as a whole process, exactly as a user runs it:
  ``python -m indexer rebuild --engine ENGINE`` with ``FASHION_WEIGHTS=none``,
  into its own temporary index dir. The wall time includes start-up (imports,
  model load, and for Ray starting a local 2-CPU instance and its actor);
* with ``--rounds 2`` the pair runs again in reverse order (local, ray, ray,
  local), so a load that rises or falls during the run weighs on both
  engines alike; the ratios are of the summed times;
* then both indexes are loaded and compared: max abs difference of the
  embeddings and whether the file order is identical.

Targets: ray/local wall-time ratio <= 1.2; max abs diff <= 1e-5; same order.
Figures are printed as plain ``label: value`` lines, then one JSON line.
The machine's 1-minute load average before and after is printed too: on a
shared 2-core box a ratio taken under other load is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "datasets" / "fashion-dev"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def subset_catalogue(dataset: Path, dest: Path, limit: int) -> Path:
    """Copy the first ``limit`` photos of ``dataset`` (sorted) and its styles.csv into ``dest``."""
    from indexer.catalogue import scan

    files = scan(dataset)[:limit]
    for item in files:
        target = dest / item.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dataset / item.relpath, target)
    if (dataset / "styles.csv").is_file():
        shutil.copy2(dataset / "styles.csv", dest / "styles.csv")
    return dest


def run_engine(engine: str, catalogue: Path, index_dir: Path, log_path: Path) -> dict:
    """Time ``python -m indexer rebuild --engine ENGINE`` as one process."""
    env = dict(os.environ, FASHION_WEIGHTS="none", TF_CPP_MIN_LOG_LEVEL="2")
    command = [
        sys.executable,
        "-m",
        "indexer",
        "rebuild",
        "--engine",
        engine,
        "--catalogue",
        str(catalogue),
        "--index-dir",
        str(index_dir),
    ]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine} build failed (exit {done.returncode}); see {log_path}")
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise SystemExit(f"{engine} build printed no JSON report: {done.stdout!r}") from None
    return {
        "wall_s": round(wall, 2),
        "build_s": report["elapsed_s"],
        "indexed": report["indexed"],
        "images_per_s": report["images_per_s"],
    }


def compare(local_dir: Path, ray_dir: Path) -> dict:
    """Max abs difference of the embeddings and whether the file order matches."""
    import numpy as np

    from indexer.loading import load_index

    local, other = load_index(local_dir), load_index(ray_dir)
    try:
        same_order = list(local.filenames) == list(other.filenames)
        same_shape = local.embeddings.shape == other.embeddings.shape
        diff = float(np.abs(local.embeddings - other.embeddings).max()) if same_shape and len(local.filenames) else None
        return {"same_order": same_order, "max_abs_diff": diff, "count": len(local.filenames)}
    finally:
        local.annoy.unload()
        other.annoy.unload()


def _totals(engine_runs: list[dict]) -> dict:
    """Sum of wall and build times over the rounds, plus each run."""
    return {
        "wall_s": round(sum(r["wall_s"] for r in engine_runs), 2),
        "build_s": round(sum(r["build_s"] for r in engine_runs), 2),
        "runs": engine_runs,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both engines, print the figures and a JSON line; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="catalogue folder (default fashion-dev)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (default: all)")
    parser.add_argument("--order", default="local,ray", help="engines in run order (default local,ray)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat, reversing the order every other round (ABBA cancels drifts in load); ratios use the sums",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        catalogue = args.dataset.resolve()
        if args.limit:
            catalogue = subset_catalogue(catalogue, work / "catalogue", args.limit)
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict]] = {"local": [], "ray": []}
        order = args.order.split(",")
        for round_no in range(args.rounds):
            for engine in order if round_no % 2 == 0 else order[::-1]:
                run = run_engine(engine, catalogue, work / f"index-{engine}", work / f"{engine}.log")
                run["load"] = round(os.getloadavg()[0], 2)
                runs[engine].append(run)
                print(
                    f"{engine} wall: {run['wall_s']:.1f} s (build {run['build_s']:.1f} s, "
                    f"{run['images_per_s']:.1f} images/s, {run['indexed']} indexed, load {run['load']:.2f})"
                )
        load_after = os.getloadavg()[0]
        figures = compare(work / "index-local", work / "index-ray")
        results = {engine: _totals(engine_runs) for engine, engine_runs in runs.items()}
        ratio = results["ray"]["wall_s"] / results["local"]["wall_s"]
        build_ratio = results["ray"]["build_s"] / results["local"]["build_s"]
        print(f"ratio ray/local wall: {ratio:.3f} (target <= 1.2)")
        print(f"ratio ray/local build_index: {build_ratio:.3f}")
        print(f"max abs diff: {figures['max_abs_diff']} (target <= 1e-5)")
        print(f"same file order: {figures['same_order']}")
        print(f"load average: {load_before:.2f} before, {load_after:.2f} after")
        ok = ratio <= 1.2 and figures["same_order"] and (figures["max_abs_diff"] or 0.0) <= 1e-5
        print(
            json.dumps(
                {
                    "benchmark": "bench_ray",
                    "dataset": str(args.dataset),
                    "limit": args.limit,
                    "rounds": args.rounds,
                    "cpus": os.cpu_count(),
                    "images": figures["count"],
                    "local": results["local"],
                    "ray": results["ray"],
                    "ratio_wall": round(ratio, 3),
                    "ratio_build": round(build_ratio, 3),
                    "max_abs_diff": figures["max_abs_diff"],
                    "same_order": figures["same_order"],
                    "load_before": round(load_before, 2),
                    "load_after": round(load_after, 2),
                    "targets_met": ok,
                }
            )
        )
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
