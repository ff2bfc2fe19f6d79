"""Spawn-to-first-response: how soon every gunicorn worker answers HTTP after a start.

Starts ``gunicorn -c gunicorn.conf.py app:app`` (2 workers, random weights)
on a free loopback port, ``--starts`` times without an index (an empty index
dir: the site must build one) and ``--starts`` times with a prebuilt index,
over a copy of the demo catalogue. While it starts, a few client threads poll
``/healthz``; gunicorn's access log names the worker process of every answer
(``%(p)s``), and the log is read as it is written, so each worker's first
answer is timed without changing the app. Reported per start: the slowest
worker's first answer (the target), each worker's, and when ``/healthz``
first said 200 (the model loaded and an index served).

``--repo DIR`` runs the server from another checkout (for a before/after
comparison); the figures are only comparable within one run.

    python -m benchmarks.bench_start [--starts 3] [--workers 2] [--repo DIR]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.common import REPO_ROOT, load_average
from tests.support.gunicorn import free_port, gunicorn_env, log_tail, spawn_gunicorn, stop_gunicorn

log = logging.getLogger("bench_start")

ACCESS_FORMAT = "bench-access %(p)s %(s)s"
_ACCESS_LINE = re.compile(r"bench-access <(\d+)> (\d{3})")
TARGET_S = 2.0


def _poll(url: str, stop: threading.Event) -> None:
    """Ask ``/healthz`` again and again; answers are timed from the access log, not here."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.read()
        except OSError:
            time.sleep(0.02)  # not listening yet
            continue
        time.sleep(0.05)  # light polling: the workers share 2 cores with it


def one_start(repo: Path, catalogue: Path, index_dir: Path, workers: int, timeout_s: float, log_path: Path) -> dict:
    """Start gunicorn once; return each worker's first answer and the first 200, in seconds from spawn."""
    port = free_port()
    env = gunicorn_env(
        catalogue, index_dir, f"127.0.0.1:{port}", workers=workers,
        extra_env={"GUNICORN_CMD_ARGS": f"--access-logfile - --access-logformat '{ACCESS_FORMAT}'"},
    )
    first_answer: dict[int, float] = {}
    first_ok: list[float] = []
    stop = threading.Event()
    spawned = time.monotonic()
    process = spawn_gunicorn(env, log_path, cwd=repo)

    def read_log() -> None:
        # follow the log file as gunicorn writes it; each line is timed when it appears
        with open(log_path, "rb") as log_file:
            while not stop.is_set():
                raw = log_file.readline()
                if not raw:
                    time.sleep(0.005)
                    continue
                match = _ACCESS_LINE.search(raw.decode("utf-8", "replace"))
                if not match:
                    continue
                at = time.monotonic() - spawned
                first_answer.setdefault(int(match.group(1)), at)
                if match.group(2) == "200" and not first_ok:
                    first_ok.append(at)

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    pollers = [threading.Thread(target=_poll, args=(f"http://127.0.0.1:{port}/healthz", stop)) for _ in range(2)]
    for thread in pollers:
        thread.start()
    try:
        deadline = spawned + timeout_s
        while time.monotonic() < deadline and (len(first_answer) < workers or not first_ok):
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log_tail(log_path)}")
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in pollers:
            thread.join(timeout=10)
        stop_gunicorn(process)
        reader.join(timeout=5)
    answers = sorted(first_answer.values())
    return {
        "workers_answered": len(answers),
        "per_worker_first_answer_s": [round(a, 3) for a in answers],
        "all_workers_answer_s": round(answers[-1], 3) if len(answers) >= workers else None,
        "first_200_s": round(first_ok[0], 3) if first_ok else None,
    }


def _summary(runs: list[dict]) -> dict:
    slowest = [r["all_workers_answer_s"] for r in runs if r["all_workers_answer_s"] is not None]
    ready = [r["first_200_s"] for r in runs if r["first_200_s"] is not None]
    return {
        "runs": runs,
        "all_workers_answer_s_max": max(slowest) if len(slowest) == len(runs) else None,
        "all_workers_answer_s_median": round(statistics.median(slowest), 3) if slowest else None,
        "first_200_s_median": round(statistics.median(ready), 3) if ready else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the starts and print the figures, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout to run gunicorn from")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from indexer.demo import generate_demo_catalogue

    repo = args.repo.resolve()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        catalogue = Path(tmp) / "catalogue"
        generate_demo_catalogue(catalogue)
        results = {}
        for label, prebuilt in (("no_index", False), ("prebuilt_index", True)):
            runs = []
            for n in range(args.starts):
                index_dir = Path(tmp) / ("index-prebuilt" if prebuilt else f"index-{n}")
                log_path = Path(tmp) / f"gunicorn-{label}-{n}.log"
                run = one_start(repo, catalogue, index_dir, args.workers, args.timeout, log_path)
                runs.append(run)
                log.info(
                    "%s start %d: every worker answered after %s s (workers: %s), /healthz 200 after %s s",
                    label, n + 1, run["all_workers_answer_s"], run["per_worker_first_answer_s"], run["first_200_s"],
                )
                if not prebuilt:
                    shutil.rmtree(index_dir, ignore_errors=True)
            results[label] = _summary(runs)
            if not prebuilt:
                # one more start, not counted, builds the index the prebuilt starts find
                one_start(repo, catalogue, Path(tmp) / "index-prebuilt", args.workers, args.timeout,
                          Path(tmp) / "gunicorn-prebuild.log")
    summary = {
        "benchmark": "start",
        "repo": str(repo),
        "workers": args.workers,
        "starts": args.starts,
        "target_s": TARGET_S,
        "cpus": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(load_average(), 2),
        **results,
    }
    for label in ("no_index", "prebuilt_index"):
        worst = results[label]["all_workers_answer_s_max"]
        log.info(
            "%s: every worker answers within %s s (target %.0f s: %s); /healthz 200 after %s s (median)",
            label, worst, TARGET_S, "met" if worst is not None and worst <= TARGET_S else "missed",
            results[label]["first_200_s_median"],
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
