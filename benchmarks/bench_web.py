"""Web targets, measured against a real gunicorn server (2 workers) on loopback.

For the demo catalogue and for the fashion-dev dataset:

1. server-side time of ``POST /api/search`` (the JSON's ``timing_ms.total``),
   p50 over sequential searches with distinct catalogue photos, against a bare
   single-image forward pass (``Embedder.embed_one`` on a preprocessed image)
   measured in this process with the same TensorFlow thread count as one
   worker; plus the nearest-neighbour step (``timing_ms.search``);
2. startup: spawning gunicorn to the first ``/healthz`` 200, with the
   artifacts already built;
3. 4 concurrent clients sending 200 searches: errors and searches/s, next to
   the model-bound figure (a bare batched forward pass using every core).

Run from the project root::

    python benchmarks/bench_web.py                      # demo + ../shared/datasets/fashion-dev
    python benchmarks/bench_web.py --skip-dataset       # demo catalogue only

The fashion-dev index is built once into ``benchmarks/out/fashion-dev-index``
(about 4 minutes) and reused by later runs. Plain lines go to stdout; the
last line is JSON with pass/fail per target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.server import (  # noqa: E402
    DEFAULT_DATASET,
    OUT_DIR,
    ROOT,
    FilePart,
    build_index_cli,
    gunicorn_server,
    index_is_fresh,
    load_average,
    post_search,
    request,
    summary_ms,
)
from indexer.config import tf_threads_per_worker  # noqa: E402

TARGET_RATIO = 1.5
TARGET_NN_MS = 5.0
TARGET_STARTUP_S = 15.0
WORKERS = 2
DATASET_INDEX = OUT_DIR / "fashion-dev-index"


def log(line: str = "") -> None:
    """One plain output line, flushed at once."""
    print(line, flush=True)


def worker_tf_threads(workers: int = WORKERS) -> int:
    """The intra-op thread count gunicorn.conf.py gives each worker (cores // workers)."""
    return tf_threads_per_worker(workers)


def catalogue_images(catalogue: Path, limit: int) -> list[Path]:
    """Up to ``limit`` JPEGs of the catalogue, spread evenly over its sorted file list."""
    files = sorted(p for p in catalogue.rglob("*.jpg") if not any(part.startswith(".") for part in p.parts))
    if len(files) <= limit:
        return files
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


# ---------------------------------------------------------------- bare forward passes


class BarePass:
    """A bare single-image forward pass in this process: ``Embedder.embed_one`` on preprocessed images.

    TensorFlow's pools are sized by the first load in a process, so this
    process runs with ``threads`` intra-op threads, the share one worker gets.
    """

    def __init__(self, images: list[Path], threads: int):
        from indexer.images import load_for_model
        from indexer.model import load_embedder

        self.threads = threads
        self.embedder = load_embedder("none", 1234, threads)
        self.embedder.warm_up()
        self.arrays = [load_for_model(path) for path in images[:8]]
        self._next = 0
        for _ in range(3):
            self.time_one()

    def time_one(self) -> float:
        """Milliseconds of one forward pass of one preprocessed image."""
        array = self.arrays[self._next % len(self.arrays)]
        self._next += 1
        started = time.perf_counter()
        self.embedder.embed_one(array)
        return (time.perf_counter() - started) * 1000

    def block(self, reps: int) -> dict:
        """``reps`` passes back to back, summarised."""
        return summary_ms([self.time_one() for _ in range(reps)])


def _bare_batched_child(threads: int, batch: int, reps: int) -> None:
    """Child process entry: print the batched forward-pass throughput as JSON."""
    import numpy as np

    from indexer.model import load_embedder

    embedder = load_embedder("none", 1234, threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(batch, 224, 224, 3), dtype=np.uint8)
    embedder.embed(images)  # warm-up at this batch size
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        embedder.embed(images)
        times.append(time.perf_counter() - started)
    best = min(times)
    median = sorted(times)[len(times) // 2]
    print(
        json.dumps(
            {
                "threads": threads,
                "batch": batch,
                "reps": reps,
                "images_per_s_median": round(batch / median, 2),
                "images_per_s_best": round(batch / best, 2),
            }
        )
    )


def bare_batched_pass(threads: int, batch: int = 32, reps: int = 3, timeout_s: float = 300.0) -> dict:
    """Batched forward-pass throughput in a fresh process with ``threads`` intra-op threads.

    A separate process, because TensorFlow's pool size is fixed once it has
    run, and this process runs its single-image pass with one worker's share.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--bare-child", str(threads), str(batch), str(reps)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the server side


def sequential_searches(port: int, payloads: list[tuple[str, bytes]], bare: BarePass, deadline: float) -> dict:
    """One search at a time, each right after a bare pass, so both see the same machine load."""
    timings: dict[str, list[float]] = {}
    client_ms: list[float] = []
    bare_ms: list[float] = []
    errors = []
    for name, data in payloads:
        if time.monotonic() > deadline:
            errors.append("time limit reached")
            break
        bare_ms.append(bare.time_one())
        reply = post_search(port, [FilePart("image", name, data)], timeout=60)
        body = reply.json() if reply.status == 200 else None
        if reply.status != 200 or not body or not body.get("queries"):
            errors.append(f"{name}: status {reply.status} {reply.error or reply.body[:120]!r}")
            continue
        client_ms.append(reply.elapsed_ms)
        for key, value in body["timing_ms"].items():
            timings.setdefault(key, []).append(float(value))
    return {
        "timing": {k: summary_ms(v) for k, v in timings.items()},
        "client_ms": summary_ms(client_ms),
        "bare_interleaved_ms": summary_ms(bare_ms),
        "errors": errors,
        "n_ok": len(client_ms),
    }


def concurrent_searches(
    port: int, payloads: list[tuple[str, bytes]], total: int, clients: int, deadline: float
) -> dict:
    """``clients`` threads sending ``total`` searches between them; bounded in count and time."""
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    server_ms: dict[str, list[float]] = {}
    errors: list[str] = []

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next_index[0]
                if i >= total:
                    return
                next_index[0] += 1
            name, data = payloads[i % len(payloads)]
            reply = post_search(port, [FilePart("image", name, data)], timeout=60)
            body = reply.json() if reply.status == 200 else None
            with lock:
                if reply.status == 200 and body and body.get("queries"):
                    latencies.append(reply.elapsed_ms)
                    for key, value in body["timing_ms"].items():
                        server_ms.setdefault(key, []).append(float(value))
                else:
                    errors.append(f"{name}: status {reply.status} {reply.error or reply.body[:120]!r}")

    threads = [threading.Thread(target=client, name=f"client-{n}", daemon=True) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 70)
    wall = time.perf_counter() - started
    sent = next_index[0]
    if sent < total:
        errors.append(f"only {sent} of {total} searches sent before the time limit")
    return {
        "total": total,
        "sent": sent,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 2),
        "searches_per_s": round(len(latencies) / wall, 2) if wall else 0.0,
        "client_ms": summary_ms(latencies),
        "server_ms": {key: summary_ms(values) for key, values in server_ms.items()},
    }


def run_catalogue(label: str, catalogue: Path, index_dir: Path, args, threads: int) -> dict:
    """Every measurement for one catalogue, with an already built index."""
    log(f"== {label}: {catalogue} (index {index_dir})")
    log(f"1-min load average before: {load_average():.2f}")
    images = catalogue_images(catalogue, max(args.requests, 60))
    payloads = [(p.name, p.read_bytes()) for p in images]
    bare_pass = BarePass(images, threads)
    bare = bare_pass.block(args.bare_reps)
    log(
        f"bare single-image forward pass ({threads} intra-op thread, in the benchmark process, server not "
        f"running): p50 {bare['p50']} ms, p95 {bare['p95']} ms over {bare['n']} passes"
    )

    deadline = time.monotonic() + args.time_limit
    with gunicorn_server(catalogue, index_dir, workers=WORKERS, log_name=f"bench_web-{label}") as server:
        log(
            f"startup: first /healthz 200 after {server.ready_s:.2f} s; "
            f"all {WORKERS} workers serving after {server.all_ready_s:.2f} s (port {server.port})"
        )
        phases = server.startup_phases()
        log(
            f"startup phases (s from spawn, per worker): TensorFlow imported / model loading starts at "
            f"{phases['model_loading_s']}; model warm and index served at {phases['index_served_s']}"
        )
        # one warm-up search per worker thread, so no first-request cost is measured
        for name, data in payloads[-8:]:
            post_search(server.port, [FilePart("image", name, data)], timeout=60)
        seq = sequential_searches(server.port, payloads[: args.requests], bare_pass, deadline)
        before = server.requests_per_worker()
        conc = concurrent_searches(server.port, payloads, args.concurrent_total, args.clients, deadline)
        after = server.requests_per_worker()
        conc["per_worker"] = {pid: after.get(pid, 0) - before.get(pid, 0) for pid in sorted(after)}
        health = request(server.port, "GET", "/healthz", timeout=5)
        rss = server.worker_rss_mb()
    startups = [(server.ready_s, server.all_ready_s)]
    for run in range(2, args.startup_runs + 1):  # more start-ups: one sample is at the mercy of the machine's load
        with gunicorn_server(catalogue, index_dir, workers=WORKERS, log_name=f"bench_web-{label}-start{run}") as again:
            startups.append((again.ready_s, again.all_ready_s))
    startup_s = statistics.median(first for first, _ in startups)
    bare_ms = seq["bare_interleaved_ms"].get("p50", float("nan"))
    batched = bare_batched_pass(os.cpu_count() or 1, args.batch)
    total_p50 = seq["timing"].get("total", {}).get("p50", float("nan"))
    ratio = total_p50 / bare_ms if bare_ms else float("nan")
    nn = seq["timing"].get("search", {})
    ceiling = WORKERS * 1000.0 / bare_ms if bare_ms else float("nan")
    log(
        f"startup over {len(startups)} starts: first /healthz 200 after "
        f"{', '.join(f'{first:.2f}' for first, _ in startups)} s (median {startup_s:.2f} s); all workers serving "
        f"after {', '.join(f'{every:.2f}' for _, every in startups)} s"
    )
    log(
        f"bare single pass interleaved with the sequential searches (the reference): p50 {bare_ms} ms, "
        f"p95 {seq['bare_interleaved_ms'].get('p95')} ms"
    )
    for key in ("decode", "queue", "embed", "search", "total"):
        t = seq["timing"].get(key)
        if t:
            log(f"server timing_ms.{key:<6}: p50 {t['p50']:>8} ms  p95 {t['p95']:>8} ms  (n={t['n']})")
    log(f"client round trip       : p50 {seq['client_ms'].get('p50')} ms  p95 {seq['client_ms'].get('p95')} ms")
    log(f"ratio server total p50 / bare pass p50 = {total_p50} / {bare_ms} = {ratio:.3f} (target <= {TARGET_RATIO})")
    log(f"nearest-neighbour step: p50 {nn.get('p50')} ms, p95 {nn.get('p95')} ms (target <= {TARGET_NN_MS} ms)")
    log(
        f"{args.clients} concurrent clients, {conc['total']} searches: {conc['ok']} ok, {conc['errors']} errors, "
        f"{conc['searches_per_s']} searches/s in {conc['wall_s']} s; client p50 {conc['client_ms'].get('p50')} ms "
        f"p95 {conc['client_ms'].get('p95')} ms"
    )
    cq, ce = conc["server_ms"].get("queue", {}), conc["server_ms"].get("embed", {})
    log(
        f"  under concurrency: server queue (model gate) p50 {cq.get('p50')} ms p95 {cq.get('p95')} ms, "
        f"embed p50 {ce.get('p50')} ms; searches per worker {conc['per_worker']}"
    )
    log(
        f"model-bound: bare batched pass (batch {batched['batch']}, {batched['threads']} threads) "
        f"{batched['images_per_s_median']} images/s; per-request ceiling of {WORKERS} workers x 1 image "
        f"= {ceiling:.2f} searches/s"
    )
    for line in conc["error_samples"] + seq["errors"][:5]:
        log(f"  error: {line}")
    log(f"worker RSS at the end: {', '.join(f'{pid}: {mb:.0f} MiB' for pid, mb in rss.items())}")
    log(f"1-min load average after: {load_average():.2f}")
    targets = {
        "latency_ratio": {"value": round(ratio, 3), "target": TARGET_RATIO, "pass": ratio <= TARGET_RATIO},
        "nn_step_p95_ms": {
            "value": nn.get("p95"),
            "target": TARGET_NN_MS,
            "pass": bool(nn) and nn["p95"] <= TARGET_NN_MS,
        },
        "startup_s": {
            "value": round(startup_s, 2),
            "target": TARGET_STARTUP_S,
            "pass": startup_s <= TARGET_STARTUP_S,
        },
        "concurrent_errors": {
            "value": conc["errors"] + len(seq["errors"]),
            "target": 0,
            "pass": conc["errors"] == 0 and not seq["errors"] and health.status == 200,
        },
    }
    return {
        "catalogue": str(catalogue),
        "items": len(list(catalogue.rglob("*.jpg"))),
        "tf_threads_per_worker": threads,
        "bare_single_ms": bare,
        "bare_single_interleaved_ms": seq["bare_interleaved_ms"],
        "bare_reference_ms": bare_ms,
        "sequential": seq,
        "startup_s": [round(first, 2) for first, _ in startups],
        "all_workers_ready_s": [round(every, 2) for _, every in startups],
        "startup_phases_s": phases,
        "concurrent": conc,
        "bare_batched": batched,
        "per_request_ceiling_searches_per_s": round(ceiling, 2),
        "worker_rss_mb": rss,
        "targets": targets,
    }


def ensure_index(catalogue: Path, index_dir: Path, label: str) -> None:
    """Build ``index_dir`` for ``catalogue`` unless it is already current."""
    if index_is_fresh(catalogue, index_dir):
        log(f"index {index_dir} is current; reusing it")
        return
    log(f"building {index_dir} (python -m indexer build) ...")
    seconds = build_index_cli(catalogue, index_dir, log_name=f"bench_web-{label}-build")
    log(f"built in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when every target passes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="real catalogue (fashion-dev)")
    parser.add_argument("--skip-dataset", action="store_true", help="only the demo catalogue")
    parser.add_argument("--skip-demo", action="store_true", help="only the dataset")
    parser.add_argument("--requests", type=int, default=60, help="sequential searches (distinct photos)")
    parser.add_argument("--concurrent-total", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--bare-reps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--startup-runs", type=int, default=3, help="server starts timed (median judged)")
    parser.add_argument("--time-limit", type=float, default=420.0, help="seconds of requests per catalogue")
    parser.add_argument("--bare-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_child:
        _bare_batched_child(*args.bare_child)
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = worker_tf_threads()
    log(
        f"bench_web: {os.cpu_count()} cores, {WORKERS} gunicorn workers, FASHION_TF_THREADS={threads} per worker "
        f"(gunicorn.conf.py: cores // workers); random weights (FASHION_WEIGHTS=none)"
    )
    results: dict[str, dict] = {}
    demo_dir = Path(tempfile.mkdtemp(prefix="bench-web-demo-"))
    try:
        if not args.skip_demo:
            from indexer.demo import generate_demo_catalogue

            catalogue = demo_dir / "catalogue"
            count = generate_demo_catalogue(catalogue)
            log(f"demo catalogue: {count} images in {catalogue}")
            ensure_index(catalogue, demo_dir / "index", "demo")
            results["demo"] = run_catalogue("demo", catalogue, demo_dir / "index", args, threads)
        if not args.skip_dataset:
            dataset = args.dataset.resolve()
            if not dataset.is_dir():
                log(f"dataset {dataset} not found; skipping it")
            else:
                ensure_index(dataset, DATASET_INDEX, dataset.name)
                results[dataset.name] = run_catalogue(dataset.name, dataset, DATASET_INDEX, args, threads)
    finally:
        shutil.rmtree(demo_dir, ignore_errors=True)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "bench_web.json").write_text(json.dumps(results, indent=2))
    verdict = {label: {name: t["pass"] for name, t in r["targets"].items()} for label, r in results.items()}
    all_pass = bool(results) and all(all(v.values()) for v in verdict.values())
    summary = {
        "benchmark": "web",
        "all_pass": all_pass,
        "targets": {label: r["targets"] for label, r in results.items()},
        "throughput": {
            label: {
                "searches_per_s": r["concurrent"]["searches_per_s"],
                "model_bound_batched_images_per_s": r["bare_batched"]["images_per_s_median"],
                "per_request_ceiling_searches_per_s": r["per_request_ceiling_searches_per_s"],
            }
            for label, r in results.items()
        },
        "server_total_p50_ms": {
            label: r["sequential"]["timing"].get("total", {}).get("p50") for label, r in results.items()
        },
        "bare_single_p50_ms": {label: r["bare_reference_ms"] for label, r in results.items()},
    }
    log(json.dumps(summary))
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
