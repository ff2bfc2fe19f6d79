"""How fast the CLI refuses bad arguments, and whether every command's stdout is JSON.

Each bad-argument case runs ``python -m indexer ...`` as a fresh process
over a small index (the demo catalogue, built once with the default model)
and records the wall time, exit code and the lines on stderr. Then each
command that succeeds is piped into ``python -m json.tool``.

Target: every failure on bad arguments (an index of other weights or tuning
included) returns within 1 s with exit code 2, and ``build`` with nothing to
do answers within 1 s;
``python -m indexer <command> | python -m json.tool`` works for every command.

    python -m benchmarks.bench_cli

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import load_average

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "indexer", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=900
    )
    return done, time.perf_counter() - started


def main() -> int:
    results: dict = {"load_1min_start": round(load_average(), 2)}
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        tmp = Path(tmp)
        catalogue, index = tmp / "demo", tmp / "index"
        _cli("demo", "--out", str(catalogue))
        built, build_s = _cli("build", "--catalogue", str(catalogue), "--index-dir", str(index))
        if built.returncode != 0:
            raise SystemExit(built.stderr)
        results["build_s"] = round(build_s, 1)
        where = ("--catalogue", str(catalogue), "--index-dir", str(index))
        missing = str(tmp / "missing")
        bad = {
            "build --catalogue MISSING": ("build", "--catalogue", missing, "--index-dir", str(tmp / "i2")),
            "rebuild --catalogue MISSING": ("rebuild", "--catalogue", missing, "--index-dir", str(tmp / "i2")),
            "search MISSING.jpg": ("search", missing + ".jpg", *where),
            "search --k 0": ("search", str(next(catalogue.glob("*.jpg"))), "--k", "0", *where),
            "evaluate --against MISSING": ("evaluate", "--against", missing, *where),
            "evaluate --label colour": ("evaluate", "--label", "colour", *where),
            "FASHION_TOP_K=abc (build)": ("build", *where),
            # the index holds the default weights' vectors, tuned: refused before the model loads
            "search, FASHION_WEIGHTS=none": ("search", str(next(catalogue.glob("*.jpg"))), *where),
            "search, FASHION_TUNING=off": ("search", str(next(catalogue.glob("*.jpg"))), *where),
        }
        environments = {
            "FASHION_TOP_K=abc (build)": {"FASHION_TOP_K": "abc"},
            "search, FASHION_WEIGHTS=none": {"FASHION_WEIGHTS": "none"},
            "search, FASHION_TUNING=off": {"FASHION_TUNING": "off"},
        }
        failures = {}
        for name, args in bad.items():
            env = dict(os.environ, **environments[name]) if name in environments else None
            done, seconds = _cli(*args, env=env)
            failures[name] = {
                "exit": done.returncode,
                "seconds": round(seconds, 2),
                "stderr_lines": len(done.stderr.strip().splitlines()),
                "stdout_empty": done.stdout == "",
            }
            print(f"{name:32s} exit {done.returncode}  {seconds:5.2f} s  {failures[name]['stderr_lines']} line(s)")
        results["failures"] = failures
        # nothing to do: decided before the model loads
        done, seconds = _cli("build", *where)
        up_to_date = done.returncode == 0 and json.loads(done.stdout).get("up_to_date") is True
        results["build_up_to_date"] = {"exit": done.returncode, "seconds": round(seconds, 2), "up_to_date": up_to_date}
        print(f"{'build (nothing to do)':32s} exit {done.returncode}  {seconds:5.2f} s  up to date: {up_to_date}")
        piped = {}
        for name, args in {
            "demo": ("demo", "--out", str(tmp / "demo2")),
            "build (up to date)": ("build", *where),
            "search": ("search", str(next(catalogue.glob("*.jpg"))), *where),
            "evaluate": ("evaluate", *where),
            "runtime": ("runtime", *where),
        }.items():
            done, _ = _cli(*args)
            tool = subprocess.run(
                [sys.executable, "-m", "json.tool"], input=done.stdout, capture_output=True, text=True
            )
            piped[name] = done.returncode == 0 and tool.returncode == 0
            print(f"{name:32s} | python -m json.tool: {'ok' if piped[name] else 'FAILED'}")
        results["json_tool"] = piped
    results["load_1min_end"] = round(load_average(), 2)
    slowest = max(f["seconds"] for f in failures.values())
    all_two = all(f["exit"] == 2 for f in failures.values())
    print(f"target 2: slowest bad-argument failure {slowest:.2f} s (<= 1), all exit 2: {all_two}, "
          f"build with nothing to do {results['build_up_to_date']['seconds']:.2f} s (<= 1), "
          f"every command pipes into json.tool: {all(piped.values())}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
