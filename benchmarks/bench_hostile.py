"""Hostile clients against the shipped deployment: memory-hungry uploads and slowloris.

One run starts the production shape: gunicorn from ``gunicorn.conf.py`` (2
workers x 4 threads, unix socket) behind Debian nginx running
``deploy/nginx.conf`` (``tests/support/proxy.py``), over an index of a
catalogue (default: a 300-image subset of the shared fashion-dev set).

Target 1 - memory: for each worst-case image under the limits (64
megapixels: 16-bit grey PNG, float TIFF, RGBA PNG; and a WebP that needs
1 GB inside libwebp), four uploads are sent at once. Figures: the growth of
the workers' combined RSS (peak, sampled every 20 ms, over the RSS before
the burst) and each upload's status and answer time.

Target 2 - slow clients: ``/healthz`` latency and search time through nginx,
first without, then with 50 slowloris connections open (each sends one more
header line every 2 s and is reopened if closed), same run, same server.

    python -m benchmarks.bench_hostile [--catalogue DIR] [--images 300]

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average, make_catalogue
from benchmarks.server import build_index_cli, child_pids, worker_rss_mb
from tests.corpus import build_corpus
from tests.support.proxy import Deployment, Slowloris, deployment

log = logging.getLogger("bench_hostile")

WORST_CASES = ("png_16bit_huge", "tiff_float_huge", "webp_huge")


def _rgba_png_huge() -> bytes:
    import io

    from PIL import Image

    from tests.corpus import HUGE_SIDE

    image = Image.new("RGBA", (HUGE_SIDE, HUGE_SIDE), (255, 255, 255, 0))
    image.paste((200, 40, 40, 255), (HUGE_SIDE // 6, HUGE_SIDE // 8, HUGE_SIDE * 3 // 5, HUGE_SIDE // 2))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _multipart(data: bytes, name: str) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _search(site: Deployment, data: bytes, name: str) -> tuple[int, float]:
    body, headers = _multipart(data, name)
    started = time.perf_counter()
    status, _, _ = site.request("POST", "/api/search", body=body, headers=headers, timeout=120)
    return status, time.perf_counter() - started


def _workers(master: int) -> list[int]:
    return child_pids(master)


def memory_burst(site: Deployment, master: int, data: bytes, name: str, uploads: int = 4) -> dict:
    """``uploads`` concurrent searches with ``data``; combined worker RSS growth and answer times.

    One upload alone first gives the answer time without queueing, for
    comparison on a machine that is not idle.
    """
    alone_status, alone_s = _search(site, data, f"alone-{name}")
    workers = _workers(master)
    before = sum(worker_rss_mb(pid) for pid in workers)
    peak = before
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(worker_rss_mb(pid) for pid in workers))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(uploads) as pool:
        answers = list(pool.map(lambda i: _search(site, data, f"{i}-{name}"), range(uploads)))
    done.set()
    sampler.join()
    after = sum(worker_rss_mb(pid) for pid in workers)
    return {
        "upload_kb": round(len(data) / 1024, 1),
        "alone": [alone_status, round(alone_s, 2)],
        "statuses": [status for status, _ in answers],
        "answer_s": [round(seconds, 2) for _, seconds in answers],
        "rss_before_mb": round(before, 1),
        "rss_growth_peak_mb": round(peak - before, 1),
        "rss_growth_after_mb": round(after - before, 1),
    }


def _timed_healthz(site: Deployment) -> float:
    started = time.perf_counter()
    status, _, _ = site.request("GET", "/healthz", timeout=60)
    if status != 200:
        raise RuntimeError(f"/healthz answered {status}")
    return time.perf_counter() - started


def latency_round(site: Deployment, photo: bytes, rounds: int) -> dict:
    """``rounds`` health checks and searches, one at a time."""
    health, search = [], []
    for index in range(rounds):
        health.append(_timed_healthz(site))
        status, seconds = _search(site, photo, f"q{index}.jpg")
        if status != 200:
            raise RuntimeError(f"search answered {status}")
        search.append(seconds)
    return {
        "healthz_ms_p50": round(statistics.median(health) * 1000, 1),
        "healthz_ms_max": round(max(health) * 1000, 1),
        "search_ms_p50": round(statistics.median(search) * 1000, 1),
        "search_ms_max": round(max(search) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogue", type=Path, default=None, help="catalogue to serve (default: fashion-dev subset)")
    parser.add_argument("--images", type=int, default=300, help="images of fashion-dev to index (default 300)")
    parser.add_argument("--rounds", type=int, default=15, help="health checks and searches per phase")
    parser.add_argument("--slow", type=int, default=50, help="slowloris connections")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        tmp = Path(tmp)
        catalogue = args.catalogue
        if catalogue is None:
            images = dataset_images(DEFAULT_DATASET)[: args.images]
            catalogue = make_catalogue(images, tmp / "catalogue", styles=DEFAULT_DATASET / "styles.csv")
        index_dir = tmp / "index"
        log.info("building the index of %s", catalogue)
        build_index_cli(catalogue, index_dir, log_name="bench_hostile_build")
        photo = sorted(p for p in Path(catalogue).rglob("*.jpg"))[0].read_bytes()
        corpus = {u.name: u for u in build_corpus()}
        cases = [(name, corpus[name].data, corpus[name].filename) for name in WORST_CASES]
        cases.insert(2, ("rgba_png_huge", _rgba_png_huge(), "rgba-huge.png"))
        results: dict = {"machine": {"cores": os.cpu_count(), "load_1min_start": round(load_average(), 2)}}
        with deployment(tmp / "deploy", catalogue, index_dir, extra_env={"FASHION_RESCAN_SECONDS": "0"}) as site:
            master = site.processes[0].pid
            log.info("workers: %s", _workers(master))
            latency_round(site, photo, 3)  # warm both workers
            results["memory"] = {}
            for name, data, filename in cases:
                figures = memory_burst(site, master, data, filename)
                results["memory"][name] = figures
                log.info("%-16s %s", name, figures)

            quiet = latency_round(site, photo, args.rounds)
            log.info("without attack: %s", quiet)
            with Slowloris(site.port, count=args.slow, interval=2.0) as attack:
                time.sleep(1.0)
                open_before = attack.open_connections()
                attacked = latency_round(site, photo, args.rounds)
                open_after = attack.open_connections()
                reopened = attack.reopened
            log.info("with %d slowloris: %s", args.slow, attacked)
            results["slowloris"] = {
                "connections": args.slow,
                "open_at_start": open_before,
                "open_at_end": open_after,
                "reopened": reopened,
                "without": quiet,
                "with": attacked,
                "search_ratio_p50": round(attacked["search_ms_p50"] / quiet["search_ms_p50"], 3),
            }
        results["machine"]["load_1min_end"] = round(load_average(), 2)
    worst_growth = max(r["rss_growth_peak_mb"] for r in results["memory"].values())
    worst_answer = max(max(r["answer_s"]) for r in results["memory"].values())
    print(f"target 1: worst combined worker RSS growth {worst_growth:.0f} MB (<= 1024), "
          f"slowest answer {worst_answer:.2f} s (<= 5)")
    s = results["slowloris"]
    print(f"target 2: healthz max {s['with']['healthz_ms_max']:.0f} ms under attack (<= 1000), "
          f"search p50 ratio {s['search_ratio_p50']:.2f} (<= 2)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
