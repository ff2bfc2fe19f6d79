"""What ``/metrics`` costs a search: the same search on two servers, counting on and off, in one run.

Two real gunicorn servers (2 workers each, the default model and runtime,
with random weights: the same forward pass as the real ones) serve one
index of a catalogue (default: 300 fashion-dev photos), one with
``FASHION_METRICS=on`` (the default) and one with ``off``. Searches go to
them in turns, A B B A, one at a time, so both see the same machine; the
figure is the ratio of their p50 answer times. A scrape of ``/metrics``
after the run is timed too.

Target: metrics add at most 3% to search p50.

    python -m benchmarks.bench_metrics [--rounds 300] [--images 300]

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average, make_catalogue
from benchmarks.server import FilePart, build_index_cli, gunicorn_server, post_search, request, summary_ms

# the default model and runtime; random weights (as the index is built with) cost the same forward pass
SERVER_ENV = {"FASHION_RUNTIME": "auto", "FASHION_RESCAN_SECONDS": "0"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="searches per server")
    parser.add_argument("--images", type=int, default=300, help="fashion-dev photos in the catalogue")
    args = parser.parse_args(argv)
    results: dict = {"load_1min_start": round(load_average(), 2), "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        tmp = Path(tmp)
        images = dataset_images(DEFAULT_DATASET)[: args.images]
        catalogue = make_catalogue(images, tmp / "catalogue", styles=DEFAULT_DATASET / "styles.csv")
        index_dir = tmp / "index"
        build_index_cli(catalogue, index_dir, log_name="bench_metrics_build")
        queries = [FilePart("image", path.name, path.read_bytes()) for path in images[:50]]
        with contextlib.ExitStack() as stack:
            servers = {
                name: stack.enter_context(
                    gunicorn_server(catalogue, index_dir, extra_env=SERVER_ENV | {"FASHION_METRICS": name},
                                    log_name=f"bench_metrics_{name}")
                )
                for name in ("on", "off")
            }
            times: dict[str, list[float]] = {"on": [], "off": []}
            for server in servers.values():  # warm both workers of each
                for query in queries[:6]:
                    post_search(server.port, [query])
            for number in range(args.rounds):
                order = ("on", "off") if number % 2 == 0 else ("off", "on")
                query = queries[number % len(queries)]
                for name in order:
                    answer = post_search(servers[name].port, [query])
                    if answer.status != 200:
                        raise SystemExit(f"metrics {name}: search answered {answer.status}")
                    times[name].append(answer.elapsed_ms)
            scrape = [request(servers["on"].port, "GET", "/metrics").elapsed_ms for _ in range(20)]
            off_scrape = request(servers["off"].port, "GET", "/metrics").status
    results["search_ms"] = {name: summary_ms(values) for name, values in times.items()}
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    results["p50_ratio_on_over_off"] = round(ratio, 4)
    results["scrape_ms_p50"] = round(statistics.median(scrape), 1)
    results["metrics_off_status"] = off_scrape
    results["load_1min_end"] = round(load_average(), 2)
    print(f"search p50: metrics on {statistics.median(times['on']):.1f} ms, "
          f"off {statistics.median(times['off']):.1f} ms")
    print(f"target 4: p50 on / off = {ratio:.3f} (<= 1.03); a scrape takes {results['scrape_ms_p50']:.1f} ms p50; "
          f"/metrics with metrics off answers {off_scrape}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
