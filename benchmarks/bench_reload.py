"""Reloads under traffic: HUP the gunicorn master while shoppers keep asking, through nginx.

The production shape (``tests/support/proxy.py``): gunicorn from
``gunicorn.conf.py`` with 2 workers on a unix socket behind Debian nginx
running ``deploy/nginx.conf``, over the demo catalogue (random weights;
indexed by the server's first start, before anything is measured). A paced
client sends ``/`` and ``/healthz`` in turn at 20 requests a second, open
loop, from 8 loopback addresses, while the master gets ``kill -HUP`` (what
``systemctl reload`` sends) a few times, 5 s after the previous reload's
new workers are in place.

Target: zero 5xx during HUP reloads at 20 requests/s through nginx.

Figures: requests sent, answers by status, 5xx (and no answer at all), the
slowest answer of the run and the slowest within 30 s after each reload,
and how long after each HUP the old workers were gone (they serve on until
the new ones have loaded the model and the index).

    python -m benchmarks.bench_reload [--reloads 3] [--rate 20] [--runtime tensorflow]

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import load_average
from indexer.demo import generate_demo_catalogue
from tests.support.proxy import deployment, nginx_binary
from tests.support.reloads import reload_under_load

AFTER_RELOAD_S = 5.0  # answers sent this long after a reload's old workers are gone still count as during it


def _wait_for_whole_site(site, workers: int, timeout: float = 300.0) -> None:
    """Wait until /healthz says every one of ``workers`` workers serves the published index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = site.request("GET", "/healthz", timeout=10)
        if status == 200 and json.loads(body)["workers"]["ready"] == workers:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the site never had {workers} ready workers\n{site.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="requests a second")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds from one reload to the next HUP")
    parser.add_argument("--runtime", default="tensorflow", help="FASHION_RUNTIME of the server")
    args = parser.parse_args(argv)
    if nginx_binary() is None:
        print("nginx is not installed (scripts/install.sh installs it)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        folder = Path(tmp)
        catalogue = folder / "catalogue"
        generate_demo_catalogue(catalogue)
        extra = {"FASHION_RESCAN_SECONDS": "0", "FASHION_RUNTIME": args.runtime}
        with deployment(folder / "site", catalogue, folder / "index", workers=2, extra_env=extra,
                        start_timeout=600) as site:
            _wait_for_whole_site(site, 2)
            master = site.processes[0].pid
            started = time.monotonic()
            run = reload_under_load(site, master, reloads=args.reloads, gap_s=args.gap, rate=args.rate)
            took = time.monotonic() - started
            log = (site.folder / "gunicorn.log").read_text(errors="replace")

    statuses = run.statuses()
    errors = run.server_errors()
    # from each HUP until its old workers were gone, and a little after
    reloads = zip(run.reloads_at_s, run.replaced_after_s, strict=True)
    windows = [(at, at + gone + AFTER_RELOAD_S) for at, gone in reloads]
    during = [a for a in run.answers if any(start <= a.sent_s <= end for start, end in windows)]
    figures = {
        "reloads": len(run.reloads_at_s),
        "rate_per_s": args.rate,
        "runtime": args.runtime,
        "seconds": round(took, 1),
        "requests": len(run.answers),
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "server_errors": len(errors),
        "max_latency_s": round(run.max_latency_s(), 3),
        "max_latency_during_reload_s": round(max((a.seconds for a in during), default=0.0), 3),
        "median_latency_s": round(statistics.median(a.seconds for a in run.answers), 4),
        "replaced_after_s": [round(s, 1) for s in run.replaced_after_s],
        "workers_replaced": not (run.workers_after & run.workers_before) and len(run.workers_after) == 2,
        "worker_timeouts": log.count("WORKER TIMEOUT"),
        "load_average": load_average(),
    }
    print(f"reloads: {figures['reloads']} HUPs at {args.rate:g} requests/s through nginx, runtime {args.runtime}")
    print(f"requests: {figures['requests']} over {figures['seconds']} s; statuses {figures['statuses']}")
    print(f"5xx or no answer: {figures['server_errors']}")
    print(f"slowest answer: {figures['max_latency_s']} s (during a reload: "
          f"{figures['max_latency_during_reload_s']} s); median {figures['median_latency_s']} s")
    print(f"workers replaced: {figures['workers_replaced']} ({sorted(run.workers_before)} -> "
          f"{sorted(run.workers_after)}); old workers gone {figures['replaced_after_s']} s after each HUP")
    print(json.dumps(figures))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
