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

Three more run on their own the same way (the first two on the deployment
above with random weights; their measurements are
``benchmarks/bench_decode_pool.py``'s and ``benchmarks/bench_memory.py``'s,
called with searches that go through nginx, each from a fresh address):

``--progressive-jpeg``: four of the worst JPEGs at once, burst after burst
(60,000 scans; a progressive 8000 x 8000 photo; the same in CMYK; the
slowest accepted, 100 scans of 8000 x 8000), while one shopper searches
with a catalogue photo, in quiet and attacked windows taken in turn
(``--attack-seconds`` in all, in ``--windows`` turns): each case's statuses
and slowest answer, the workers' RSS growth, and the shopper's p50 alone
and under attack with their ratio (target: under 2).

``--arena``: 20 searches at once, each with four noise JPEGs that together
just fit the 10 MB upload limit, with ``MALLOC_ARENA_MAX=2`` as the systemd
unit sets it; every worker's RSS each second for 15 s after (target: within
150 MB of its idle RSS 10 s after the burst).

``--full-disk`` (root: it mounts a 128 MB tmpfs as the index dir, and a
build's margin alone is 64 MB): ``python -m indexer build`` with random
weights onto the demo catalogue publishes a generation; then, with photos
added, (1) a ballast file leaves 32 MB free and a build runs; (2) and (3)
the disk fills once the publish's own space estimate has passed, leaving
almost nothing or all but half of Annoy's file (the build runs in a
``python -c`` wrapper of ``python -m indexer build`` that adds the ballast
right after that check); (4) the ballast goes and a build runs. Each:
exit status, seconds until it ended, ``status.json``'s state and reason,
any generation left beside the one served, and whether the served one is
untouched (the ``current`` link and every file's SHA-256). Without root it
says so and exits 1.

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import bench_decode_pool, bench_memory
from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average, make_catalogue
from benchmarks.server import FilePart, build_index_cli, child_pids, encode_multipart, worker_rss_mb
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


# ---------------------------------------------------------------- hostile JPEGs; memory after a burst


def nginx_search(site: Deployment) -> bench_decode_pool.Search:
    """A ``bench_decode_pool.Search`` through nginx, each search from a fresh address; 0 for a network error."""

    def search(data: bytes, name: str, fields: dict[str, str] | None = None) -> tuple[int, float]:
        body, content_type = encode_multipart([FilePart("image", name, data)], fields)
        started = time.perf_counter()
        try:
            status, _, _ = site.request("POST", "/api/search", body=body, headers={"Content-Type": content_type},
                                        timeout=120, source=next_client())
        except (OSError, http.client.HTTPException):
            status = 0
        return status, (time.perf_counter() - started) * 1000

    return search


def progressive_jpegs(site: Deployment, photo: bytes, seconds: float, windows: int) -> dict:
    """``bench_decode_pool``'s four hostile JPEGs against ``site``, while one shopper searches with ``photo``."""
    cases = bench_decode_pool.hostile_cases()
    search = nginx_search(site)
    bench_decode_pool.shopper(search, photo, rounds=10)  # both workers warm, each with its decode processes
    figures = bench_decode_pool.under_attack(search, site.processes[0].pid, photo, cases, seconds, windows)
    figures["sizes_kb"] = {name: round(len(data) / 1024) for name, data in cases.items()}
    figures["attack_s"], figures["windows"] = seconds, windows
    return figures


def arena_burst(site: Deployment) -> dict:
    """``bench_memory``'s burst (20 searches at once, four photos just fitting the upload limit) against ``site``."""
    photos, sides, limit = bench_memory.near_limit_photos()
    body, content_type = encode_multipart(
        [FilePart("image", f"noise-{n}.jpg", data) for n, data in enumerate(photos)], {"k": "5"}
    )

    def post() -> int:
        try:
            status, _, _ = site.request("POST", "/api/search", body=body, headers={"Content-Type": content_type},
                                        timeout=120, source=next_client())
        except (OSError, http.client.HTTPException):
            return 0
        return status

    figures = bench_memory.burst_and_sample(child_pids(site.processes[0].pid), post)
    return {"photo_bytes": [len(p) for p in photos], "photo_side_px": sides, "body_bytes": len(body),
            "upload_limit_bytes": limit, **figures}


# ---------------------------------------------------------------- a build onto a full disk

DISK_MB = 128  # a build's margin alone is 64 MB (indexer.publish.SPACE_MARGIN_BYTES): a 64 MB disk refuses every one
REFUSAL_LEAVE = 32 * 2**20  # free space left for the refused build: under that margin
FIRST_ITEMS = 120  # of the demo catalogue's 144: the rest are added between builds

# python -m indexer build, but once the publish's own estimate has passed, a ballast file takes the disk's
# space (another writer, say), as tests/test_disk_full.py does in-process
_FILL_MID_PUBLISH = """
import os, runpy, sys
import indexer.build  # first, so that the build's own up-front check stays the real one
import indexer.publish
ballast, leave = sys.argv[1], int(sys.argv[2])
estimate = indexer.publish.ensure_free_space

def estimate_then_fill(index_dir, needed):
    estimate(index_dir, needed)
    stats = os.statvfs(index_dir)
    with open(ballast, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(1, stats.f_bavail * stats.f_frsize - leave))

indexer.publish.ensure_free_space = estimate_then_fill
sys.argv = ["indexer", "build"]
runpy.run_module("indexer", run_name="__main__", alter_sys=True)
"""


def fill(disk: Path, leave: int) -> Path:
    """A ballast file taking all of ``disk``'s free space but ``leave`` bytes (tests/test_disk_full.py's way)."""
    stats = os.statvfs(disk)
    ballast = disk / "ballast"
    with open(ballast, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(1, stats.f_bavail * stats.f_frsize - leave))
    return ballast


def _generation_digest(gen: Path) -> dict[str, str]:
    return {str(path.relative_to(gen)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(gen.rglob("*")) if path.is_file()}


def _allocated(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _run_build(index_dir: Path, env: dict, log_name: str, served: Path | None, wrapper: list[str] | None = None
               ) -> dict:
    """One ``python -m indexer build`` (or ``wrapper``): exit status, seconds, status.json, what it left behind."""
    from benchmarks.server import OUT_DIR
    from indexer.generation import MANIFEST, STATUS, current_generation
    from tests.support.gunicorn import REPO

    digest = _generation_digest(served) if served is not None else None
    command = [sys.executable, *(wrapper or ["-m", "indexer", "build"])]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(OUT_DIR / f"{log_name}.log", "wb") as log_file:
        done = subprocess.run(command, cwd=REPO, env=env, timeout=1800, stdin=subprocess.DEVNULL, stdout=log_file,
                              stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    errors = [line for line in (OUT_DIR / f"{log_name}.log").read_text(errors="replace").splitlines()
              if " ERROR " in line]
    status = json.loads((index_dir / STATUS).read_text())
    current = current_generation(index_dir)
    others = sorted(p.name for p in index_dir.glob("gen-*") if served is None or p.name != served.name)
    figures = {
        "exit_status": done.returncode,
        "seconds": round(seconds, 1),
        "state": status.get("state"),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "other_generations": others,
        "half_written": [name for name in others if not (index_dir / name / MANIFEST).exists()],
        "last_error_logged": errors[-1].split(" ERROR ", 1)[1][:300] if errors else None,
    }
    if served is not None:
        figures["served_still_current"] = current == served
        figures["served_files_unchanged"] = served.is_dir() and _generation_digest(served) == digest
    figures["current"] = current.name if current is not None else None
    return figures


def full_disk(tmp: Path) -> dict:
    """Builds onto a 128 MB tmpfs: refused up front, failing mid-publish twice, then one with room (needs root)."""
    from indexer.demo import generate_demo_catalogue
    from indexer.generation import current_generation
    from tests.support.gunicorn import gunicorn_env

    catalogue, held = tmp / "disk-catalogue", tmp / "disk-held"
    generate_demo_catalogue(catalogue)
    held.mkdir()
    for path in sorted(catalogue.glob("*.jpg")):
        if int(path.stem) > FIRST_ITEMS:
            path.rename(held / path.name)

    def add_photos(count: int) -> None:
        for path in sorted(held.glob("*.jpg"), key=lambda p: int(p.stem))[:count]:
            path.rename(catalogue / path.name)

    disk = tmp / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        return {"error": f"mount failed: {mounted.stderr.strip()}"}
    results: dict = {"disk_mb": DISK_MB}
    try:
        index_dir = disk / "index"
        env = gunicorn_env(catalogue, index_dir, "unix:/nowhere")  # FASHION_WEIGHTS=none
        results["first"] = _run_build(index_dir, env, "bench_hostile_disk_first", None)
        served = current_generation(index_dir)
        annoy = (served / "index.ann").stat().st_blocks * 512
        results["served_generation_mb"] = round(_allocated(served) / 2**20, 2)

        add_photos(2)
        ballast = fill(disk, REFUSAL_LEAVE)
        results["refused_up_front"] = _run_build(index_dir, env, "bench_hostile_disk_refused", served)
        results["refused_up_front"]["free_mb"] = round(REFUSAL_LEAVE / 2**20)
        ballast.unlink()

        for name, leave in (("mid_publish_almost_nothing", 16 * 1024),
                            ("mid_publish_half_of_annoy", _allocated(served) - annoy // 2)):
            add_photos(2)
            wrapper = ["-c", _FILL_MID_PUBLISH, str(disk / "ballast"), str(leave)]
            results[name] = _run_build(index_dir, env, f"bench_hostile_disk_{name}", served, wrapper)
            results[name]["left_free_kb"] = round(leave / 1024)
            (disk / "ballast").unlink(missing_ok=True)

        results["with_room_again"] = _run_build(index_dir, env, "bench_hostile_disk_room", served)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    return results


def _random_index(catalogue: Path, tmp: Path) -> Path:
    """The index of ``catalogue`` with random weights, built once for the cases that share it."""
    index_dir = tmp / "index-random"
    if not (index_dir / "current").exists():
        _build_index(catalogue, index_dir, {}, "bench_hostile_random_build")
    return index_dir


def run_selected(args, catalogue: Path | None, tmp: Path) -> dict:
    """The cases chosen by ``--quick-requests``, ``--too-large``, ``--progressive-jpeg``, ``--arena`` and
    ``--full-disk``, each on its own deployment (``catalogue``: None when only ``--full-disk`` runs)."""
    results: dict = {"machine": {"cores": os.cpu_count(), "load_1min_start": round(load_average(), 2)}}
    quiet = {"FASHION_RESCAN_SECONDS": "0"}
    if args.too_large:
        index_dir = _random_index(catalogue, tmp)
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
    if args.progressive_jpeg:
        with deployment(tmp / "deploy-jpeg", catalogue, _random_index(catalogue, tmp), extra_env=quiet) as site:
            photo = sorted(catalogue.rglob("*.jpg"))[0].read_bytes()
            results["progressive_jpeg"] = progressive_jpegs(site, photo, args.attack_seconds, args.windows)
        log.info("progressive JPEGs: %s", results["progressive_jpeg"])
    if args.arena:
        # MALLOC_ARENA_MAX=2 as deploy/fashion-search.service sets it
        with deployment(tmp / "deploy-arena", catalogue, _random_index(catalogue, tmp),
                        extra_env={**quiet, "MALLOC_ARENA_MAX": "2"}) as site:
            results["arena"] = arena_burst(site)
        log.info("memory after a burst: %s", results["arena"])
    if args.full_disk:
        results["full_disk"] = full_disk(tmp) if os.geteuid() == 0 else {"error": "needs root (it mounts a tmpfs)"}
        log.info("full disk: %s", results["full_disk"])
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
    if "progressive_jpeg" in results:
        jpeg = results["progressive_jpeg"]
        print(f"progressive JPEGs through nginx, {jpeg['attack_s']:.0f} s of attack in {jpeg['windows']} windows:")
        bench_decode_pool.print_attack(jpeg)
    if "arena" in results:
        arena = results["arena"]
        after = [w[f"after_{bench_memory.TARGET_AFTER_S}s_mb"] for w in arena["workers"].values()]
        print(f"arena: {bench_memory.CONCURRENT} searches at once of {len(arena['photo_bytes'])} photos "
              f"({arena['body_bytes']} bytes) answered {arena['statuses']} in {arena['burst_s']} s; workers idle "
              f"{[w['idle_mb'] for w in arena['workers'].values()]} MB, peak "
              f"{[w['peak_mb'] for w in arena['workers'].values()]}, after {bench_memory.TARGET_AFTER_S} s {after}: "
              f"worst +{arena['worst_over_idle_after_mb']} MB (<= {bench_memory.TARGET_MB:.0f})")
    if "full_disk" in results:
        disk = results["full_disk"]
        if "error" in disk:
            print(f"full disk: {disk['error']}")
        for name in ("first", "refused_up_front", "mid_publish_almost_nothing", "mid_publish_half_of_annoy",
                     "with_room_again"):
            if name in disk:
                run = disk[name]
                print(f"full disk, {name}: exit {run['exit_status']} after {run['seconds']} s; status "
                      f"{run['state']}/{run['reason']}; other generations {run['other_generations']} "
                      f"(half-written {run['half_written']}); served still current "
                      f"{run.get('served_still_current', '-')}, its files unchanged "
                      f"{run.get('served_files_unchanged', '-')}")


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
    parser.add_argument("--progressive-jpeg", action="store_true",
                        help="only: four hostile progressive JPEGs at once while a shopper searches")
    parser.add_argument("--attack-seconds", type=float, default=60.0,
                        help="seconds of attack in all for --progressive-jpeg (default 60)")
    parser.add_argument("--windows", type=int, default=6,
                        help="quiet and attacked windows in turn for --progressive-jpeg (default 6)")
    parser.add_argument("--arena", action="store_true",
                        help="only: worker memory after 20 searches at once of four photos at the upload limit")
    parser.add_argument("--full-disk", action="store_true",
                        help="only: builds onto a full tmpfs (needs root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick_requests or args.too_large or args.progressive_jpeg or args.arena or args.full_disk:
        with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
            catalogue = args.catalogue
            if catalogue is None and (args.quick_requests or args.too_large or args.progressive_jpeg or args.arena):
                images = dataset_images(DEFAULT_DATASET)[: args.images]
                catalogue = make_catalogue(images, Path(tmp) / "catalogue", styles=DEFAULT_DATASET / "styles.csv")
            results = run_selected(args, Path(catalogue) if catalogue else None, Path(tmp))
        print_selected(results)
        print(json.dumps(results))
        return 1 if "error" in results.get("full_disk", {}) else 0

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
