"""Hostile clients against the shipped deployment: memory-hungry uploads, floods and slow clients.

One run starts the production shape: gunicorn from ``gunicorn.conf.py`` (2
workers x 4 threads, unix socket) behind Debian nginx running
``deploy/nginx.conf`` inside ``deploy/nginx-main.conf``
(``tests/support/proxy.py``), over an index of a catalogue (default: a
300-image subset of the shared fashion-dev set). Normal clients connect from
their own loopback addresses (127.0.x.y), so nginx's per-address limits see
them as the different people they stand for.

Target 1 - memory: for each worst-case image under the limits (64
megapixels: 16-bit grey PNG, float TIFF, RGBA PNG, a WebP that needs 1 GB
inside libwebp, and 2,000,000 x 32 strips: 16-bit wide and tall, float,
palette), four uploads are sent at once. Figures: the growth of the workers'
combined RSS (peak, sampled every 20 ms, over the RSS before the burst) and
each upload's status and answer time.

Target 2 - urlencoded flood: 10 MB of ``k=&k=...`` (3.3 million fields) to
``/search`` and ``/api/search``, four at once: status, answer time, worker
RSS growth.

Target 3 - connection flood: 1,600 slow-header connections from one address
(127.0.0.1); another address's ``/healthz``, 200 times: p99 and errors.

Target 4 - four-photo requests: four requests at once, each with four
near-cap photos: every answer (results or 503) must come before nginx's
``proxy_read_timeout`` (60 s), and within the app's request deadline plus
one step.

Also: ``/healthz`` latency and search time through nginx, first without,
then with 50 slowloris connections open (each sends one more header line
every 2 s and is reopened if closed), same run, same server.

    python -m benchmarks.bench_hostile [--catalogue DIR] [--images 300]

Two cases run on their own, each on deployments of its own:

``--too-large``: 200 multipart uploads just over 10 MB and 200 urlencoded
forms of 1 MB, then the same with ``FASHION_MAX_UPLOAD_MB=5`` and 9 MB
uploads (the app refuses them itself): status counts, and how many answers
were the site's own 413 (target: all 200, every time).

``--quick-requests``: ``GET /``, ``/healthz`` and ``/api/status`` one at a
time while 8 searches of four phone-sized photos run without pause, with
the default model and weights: p50/p95/max per route (target: p95 <= 0.5
s), and searches answered a second.

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
from tests.support.proxy import OTHER_CLIENT, Deployment, Slowloris, deployment, multipart_photos

log = logging.getLogger("bench_hostile")

WORST_CASES = (
    "png_16bit_huge",
    "tiff_float_huge",
    "webp_huge",
    "png_16bit_wide",
    "png_16bit_tall",
    "tiff_float_wide",
    "png_palette_wide",
)
PROXY_READ_TIMEOUT_S = 60.0  # deploy/nginx.conf
_client_numbers = iter(range(1, 1_000_000))


def next_client() -> str:
    """A fresh loopback source address (127.0.x.y), one normal client of the many nginx tells apart."""
    number = next(_client_numbers)
    return f"127.0.{1 + number // 250 % 250}.{1 + number % 250}"


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


def _search(site: Deployment, data: bytes, name: str, source: str | None = None) -> tuple[int, float]:
    body, headers = _multipart(data, name)
    started = time.perf_counter()
    status, _, _ = site.request(
        "POST", "/api/search", body=body, headers=headers, timeout=120, source=source or next_client()
    )
    return status, time.perf_counter() - started


def _workers(master: int) -> list[int]:
    return child_pids(master)


def memory_burst(site: Deployment, master: int, data: bytes, name: str, uploads: int = 4) -> dict:
    """``uploads`` concurrent searches with ``data``; combined worker RSS growth and answer times.

    One upload alone first gives the answer time without queueing, for
    comparison on a machine that is not idle.
    """
    alone_status, alone_s = _search(site, data, f"alone-{name}")
    with RssPeak(master) as rss, ThreadPoolExecutor(uploads) as pool:
        answers = list(pool.map(lambda i: _search(site, data, f"{i}-{name}"), range(uploads)))
    after = sum(worker_rss_mb(pid) for pid in rss.workers)
    return {
        "upload_kb": round(len(data) / 1024, 1),
        "alone": [alone_status, round(alone_s, 2)],
        "statuses": [status for status, _ in answers],
        "answer_s": [round(seconds, 2) for _, seconds in answers],
        "rss_before_mb": round(rss.before, 1),
        "rss_growth_peak_mb": rss.growth_mb,
        "rss_growth_after_mb": round(after - rss.before, 1),
    }


class RssPeak:
    """The peak of the workers' combined RSS while the block runs, sampled every 20 ms."""

    def __init__(self, master: int):
        self.workers = _workers(master)
        self.before = self.peak = sum(worker_rss_mb(pid) for pid in self.workers)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, sum(worker_rss_mb(pid) for pid in self.workers))
            time.sleep(0.02)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        """Peak growth over the RSS before the block."""
        return round(self.peak - self.before, 1)


def urlencoded_flood(site: Deployment, master: int, requests: int = 4) -> dict:
    """``requests`` concurrent 10 MB ``k=&k=...`` bodies to each search route."""
    body = b"k=&" * 3_300_000
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    figures = {"body_mb": round(len(body) / 1e6, 1)}
    for path in ("/search", "/api/search"):

        def post(_, path=path):
            started = time.perf_counter()
            status, _, _ = site.request("POST", path, body=body, headers=headers, timeout=60, source=next_client())
            return status, time.perf_counter() - started

        with RssPeak(master) as rss, ThreadPoolExecutor(requests) as pool:
            answers = list(pool.map(post, range(requests)))
        figures[path] = {
            "statuses": [status for status, _ in answers],
            "answer_s": [round(seconds, 3) for _, seconds in answers],
            "rss_growth_peak_mb": rss.growth_mb,
        }
    return figures


def connection_flood(site: Deployment, connections: int, checks: int = 200) -> dict:
    """``connections`` slow-header connections from 127.0.0.1; another address's ``/healthz``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections * 2 + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    times, errors = [], []
    with Slowloris(site.port, count=connections, interval=2.0) as attack:
        time.sleep(1.0)
        open_at_start = attack.open_connections()
        for _ in range(checks):
            started = time.perf_counter()
            try:
                status, _, _ = site.request("GET", "/healthz", timeout=10, source=OTHER_CLIENT)
            except OSError as exc:
                status = type(exc).__name__
            times.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
        open_at_end = attack.open_connections()
    times.sort()
    return {
        "connections": connections,
        "open_at_start": open_at_start,
        "open_at_end": open_at_end,
        "healthz_checks": checks,
        "errors": errors[:10],
        "error_count": len(errors),
        "healthz_ms_p50": round(times[len(times) // 2] * 1000, 1),
        "healthz_ms_p99": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 1),
        "healthz_ms_max": round(times[-1] * 1000, 1),
    }


def four_photo_requests(site: Deployment, photos: list[bytes], requests: int = 4) -> dict:
    """``requests`` concurrent searches, each carrying all of ``photos``."""
    boundary = uuid.uuid4().hex
    parts = []
    for index, data in enumerate(photos):
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p{index}.png\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def post(_):
        started = time.perf_counter()
        status, head, _ = site.request("POST", "/api/search", body=body, headers=headers, timeout=120,
                                       source=next_client())
        return status, time.perf_counter() - started, head.get("retry-after")

    with ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(post, range(requests)))
    return {
        "photos_per_request": len(photos),
        "body_mb": round(len(body) / 1e6, 2),
        "statuses": [status for status, _, _ in answers],
        "answer_s": [round(seconds, 2) for _, seconds, _ in answers],
        "retry_after": [retry for _, _, retry in answers],
    }


def _timed_healthz(site: Deployment) -> float:
    started = time.perf_counter()
    status, _, _ = site.request("GET", "/healthz", timeout=60, source=next_client())
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



# ---------------------------------------------------------------- quick requests behind searches; oversized bodies

QUICK_PATHS = ("/", "/healthz", "/api/status")
# the production default: Lite0 with its ImageNet weights from the pip package, OpenVINO fp32, catalogue tuning
REAL_MODEL_ENV = {
    "FASHION_MODEL": "efficientnet-lite0", "FASHION_WEIGHTS": "auto", "FASHION_RUNTIME": "auto", "FASHION_TUNING": "on",
}


def spread_ms(seconds: list[float]) -> dict:
    """p50, p95 and max of ``seconds``, in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50": None, "p95": None, "max": None}
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"p50": round(statistics.median(ordered) * 1000, 1), "p95": round(p95 * 1000, 1),
            "max": round(ordered[-1] * 1000, 1)}


def quick_requests_during_searches(site: Deployment, photos: list[bytes], searches: int = 8, probes: int = 150,
                                   pause_s: float = 0.1) -> dict:
    """``GET /``, ``/healthz`` and ``/api/status`` in turn, one at a time, while ``searches`` searches carrying
    all of ``photos`` run without pause (each from a fresh address, so nginx's per-address limits stay out of it).

    Figures: each quick route's p50/p95/max and statuses, and how many searches were answered, how.
    """
    body, headers = multipart_photos(photos)
    stop = threading.Event()
    answered: list[tuple[int, float]] = []

    def search_loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            status, _, _ = site.request("POST", "/api/search", body=body, headers=headers, timeout=120,
                                        source=next_client())
            answered.append((status, time.perf_counter() - started))

    loops = [threading.Thread(target=search_loop, daemon=True) for _ in range(searches)]
    for loop in loops:
        loop.start()
    time.sleep(2.0)  # every search under way before the first probe
    answered_before = len(answered)
    probing_started = time.perf_counter()
    times: dict[str, list[float]] = {path: [] for path in QUICK_PATHS}
    statuses: dict[str, dict] = {path: {} for path in QUICK_PATHS}
    for index in range(probes):
        path = QUICK_PATHS[index % len(QUICK_PATHS)]
        started = time.perf_counter()
        status, _, _ = site.request("GET", path, timeout=60, source=next_client())
        times[path].append(time.perf_counter() - started)
        statuses[path][status] = statuses[path].get(status, 0) + 1
        time.sleep(pause_s)
    searches_during = len(answered) - answered_before
    probing_s = time.perf_counter() - probing_started
    stop.set()
    for loop in loops:
        loop.join(timeout=180)
    search_statuses: dict[int, int] = {}
    for status, _ in answered:
        search_statuses[status] = search_statuses.get(status, 0) + 1
    return {
        "searches_at_once": searches,
        "photos_per_search": len(photos),
        "search_body_kb": round(len(body) / 1024, 1),
        "probes": probes,
        "quick_ms": {path: spread_ms(times[path]) for path in QUICK_PATHS},
        "quick_ms_all": spread_ms([s for path in QUICK_PATHS for s in times[path]]),
        "quick_statuses": statuses,
        "probing_s": round(probing_s, 1),
        "searches_answered_while_probing": searches_during,
        "searches_per_s": round(searches_during / probing_s, 2),
        "search_statuses": search_statuses,
        "search_s": {key: None if value is None else round(value / 1000, 2)
                     for key, value in spread_ms([s for _, s in answered]).items()},
    }


def _own_error_page(path: str, payload: bytes, status: int) -> bool:
    """Whether an answer is the site's own error: its JSON under /api/, its page elsewhere."""
    if path.startswith("/api/"):
        try:
            return json.loads(payload)["error"]["status"] == status
        except (ValueError, KeyError, TypeError):
            return False
    return b'class="error-page"' in payload and b"/static/style.css" in payload


def too_large_bodies(site: Deployment, upload_bytes: int, form_bytes: int = 1024 * 1024, tries: int = 200) -> dict:
    """``tries`` multipart uploads of ``upload_bytes`` and ``tries`` urlencoded forms of ``form_bytes``, through
    nginx, half to ``/search`` and half to ``/api/search``: status counts, and how many were the site's own page
    or JSON (with the security headers)."""
    upload, upload_headers = _multipart(b"\xff" * upload_bytes, "big.jpg")
    form, form_headers = b"k" * form_bytes, {"Content-Type": "application/x-www-form-urlencoded"}
    figures = {}
    for name, body, headers in (("upload", upload, upload_headers), ("form", form, form_headers)):
        statuses: dict[int, int] = {}
        own = 0
        started = time.perf_counter()
        for index in range(tries):
            path = ("/search", "/api/search")[index % 2]
            try:
                status, head, payload = site.request("POST", path, body=body, headers=headers, timeout=60,
                                                     source=next_client())
            except OSError as exc:
                status, head, payload = type(exc).__name__, {}, b""
            statuses[status] = statuses.get(status, 0) + 1
            own += _own_error_page(path, payload, 413) and "x-frame-options" in head
        figures[name] = {"body_bytes": len(body), "tries": tries, "statuses": statuses, "own_page": own,
                         "seconds": round(time.perf_counter() - started, 2)}
    return figures


def _build_index(catalogue: Path, index_dir: Path, env_changes: dict, log_name: str) -> None:
    """``python -m indexer build`` with the environment the served site will have (so it is found fresh)."""
    import subprocess

    from benchmarks.server import OUT_DIR
    from tests.support.gunicorn import REPO, gunicorn_env

    env = gunicorn_env(catalogue, index_dir, "unix:/nowhere", extra_env=env_changes)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with open(OUT_DIR / f"{log_name}.log", "wb") as log_file:
        subprocess.run([sys.executable, "-m", "indexer", "build"], cwd=REPO, env=env, check=True, timeout=3600,
                       stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)


def shopper_photos(catalogue: Path, count: int = 4, side: int = 1200) -> list[bytes]:
    """``count`` catalogue photos enlarged to ``side`` px with a little noise: phone-sized JPEGs to search with."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    photos = []
    for path in sorted(Path(catalogue).rglob("*.jpg"))[:count]:
        image = Image.open(path).convert("RGB").resize((side, side * 4 // 3), Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, size=(side * 4 // 3, side, 3))
        out = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
        photos.append(out.getvalue())
    return photos


def run_selected(args, catalogue: Path, tmp: Path) -> dict:
    """The cases chosen by ``--quick-requests`` and ``--too-large``, each on its own deployment."""
    results: dict = {"machine": {"cores": os.cpu_count(), "load_1min_start": round(load_average(), 2)}}
    quiet = {"FASHION_RESCAN_SECONDS": "0"}
    if args.too_large:
        index_dir = tmp / "index-random"
        _build_index(catalogue, index_dir, {}, "bench_hostile_too_large_build")
        with deployment(tmp / "deploy-large", catalogue, index_dir, extra_env=quiet) as site:
            # over nginx's limits (the app's own): nginx answers
            results["too_large"] = too_large_bodies(site, upload_bytes=10 * 1024 * 1024 + 1024, tries=args.tries)
        log.info("bodies over the limits: %s", results["too_large"])
        with deployment(tmp / "deploy-small-limit", catalogue, index_dir,
                        extra_env={**quiet, "FASHION_MAX_UPLOAD_MB": "5"}) as site:
            # under nginx's limit but over the app's: the app answers, then reads the body
            results["too_large_for_the_app"] = too_large_bodies(site, upload_bytes=9 * 1024 * 1024, tries=args.tries)
        log.info("bodies over the app's lower limit: %s", results["too_large_for_the_app"])
    if args.quick_requests:
        index_dir = tmp / "index-real"
        log.info("building the index with the default model and weights")
        _build_index(catalogue, index_dir, REAL_MODEL_ENV, "bench_hostile_quick_build")
        with deployment(tmp / "deploy-quick", catalogue, index_dir, extra_env={**quiet, **REAL_MODEL_ENV},
                        start_timeout=600) as site:
            photos = shopper_photos(catalogue)
            four_photo_requests(site, photos, requests=2)  # warm both workers
            results["quick_requests"] = quick_requests_during_searches(site, photos, searches=args.searches,
                                                                       probes=args.probes)
        log.info("quick requests during searches: %s", results["quick_requests"])
    results["machine"]["load_1min_end"] = round(load_average(), 2)
    return results


def print_selected(results: dict) -> None:
    """One line per target of the selected cases."""
    for key in ("too_large", "too_large_for_the_app"):
        if key in results:
            for name, figures in results[key].items():
                print(f"413 {key} {name} ({figures['body_bytes']} bytes): statuses {figures['statuses']}, "
                      f"own page {figures['own_page']}/{figures['tries']} (all 413, all own page)")
    if "quick_requests" in results:
        quick = results["quick_requests"]
        for path, spread in quick["quick_ms"].items():
            print(f"quick {path} during {quick['searches_at_once']} {quick['photos_per_search']}-photo searches: "
                  f"p50 {spread['p50']} ms, p95 {spread['p95']} ms (<= 500), max {spread['max']} ms")
        print(f"searches answered meanwhile: {quick['searches_answered_while_probing']} in {quick['probing_s']} s "
              f"({quick['searches_per_s']} a second), answered {quick['search_statuses']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogue", type=Path, default=None, help="catalogue to serve (default: fashion-dev subset)")
    parser.add_argument("--images", type=int, default=300, help="images of fashion-dev to index (default 300)")
    parser.add_argument("--rounds", type=int, default=15, help="health checks and searches per phase")
    parser.add_argument("--slow", type=int, default=50, help="slowloris connections")
    parser.add_argument("--flood", type=int, default=1600, help="connections of the connection flood")
    parser.add_argument("--quick-requests", action="store_true",
                        help="only: GET /, /healthz, /api/status during searches (default model and weights)")
    parser.add_argument("--searches", type=int, default=8, help="searches at once for --quick-requests")
    parser.add_argument("--probes", type=int, default=150, help="quick requests for --quick-requests")
    parser.add_argument("--too-large", action="store_true", help="only: uploads and forms over the body limits")
    parser.add_argument("--tries", type=int, default=200, help="requests of each kind for --too-large")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick_requests or args.too_large:
        with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
            catalogue = args.catalogue
            if catalogue is None:
                images = dataset_images(DEFAULT_DATASET)[: args.images]
                catalogue = make_catalogue(images, Path(tmp) / "catalogue", styles=DEFAULT_DATASET / "styles.csv")
            results = run_selected(args, Path(catalogue), Path(tmp))
        print_selected(results)
        print(json.dumps(results))
        return 0

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

            results["urlencoded"] = urlencoded_flood(site, master)
            log.info("urlencoded flood: %s", results["urlencoded"])
            near_cap = [corpus[name].data for name in ("png_16bit_huge", "tiff_float_huge", "png_16bit_wide")]
            results["four_photos"] = four_photo_requests(site, near_cap + [corpus["png_16bit_tall"].data])
            log.info("four-photo requests: %s", results["four_photos"])
            results["connection_flood"] = connection_flood(site, args.flood)
            log.info("connection flood: %s", results["connection_flood"])

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
    flood = results["urlencoded"]
    routes = [flood[path] for path in ("/search", "/api/search")]
    print(f"target 2: urlencoded {flood['body_mb']} MB: statuses {sorted({s for r in routes for s in r['statuses']})} "
          f"(413), slowest {max(max(r['answer_s']) for r in routes):.3f} s (<= 0.1), "
          f"RSS growth {max(r['rss_growth_peak_mb'] for r in routes):.0f} MB (< 50)")
    c = results["connection_flood"]
    print(f"target 3: {c['connections']} connections from one address: other address's healthz "
          f"p99 {c['healthz_ms_p99']:.0f} ms (< 1000), errors {c['error_count']} (0)")
    f = results["four_photos"]
    print(f"target 4: four-photo requests answered {f['statuses']} in at most {max(f['answer_s']):.1f} s "
          f"(< {PROXY_READ_TIMEOUT_S:.0f}, nginx's proxy_read_timeout)")
    s = results["slowloris"]
    print(f"slowloris: healthz max {s['with']['healthz_ms_max']:.0f} ms under attack (<= 1000), "
          f"search p50 ratio {s['search_ratio_p50']:.2f} (<= 2)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
