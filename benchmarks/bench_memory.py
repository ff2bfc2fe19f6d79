"""Worker memory after a burst of large uploads: does it come back?

Starts a real gunicorn (``gunicorn.conf.py``, 2 workers, random weights)
over the demo catalogue, reads each worker's idle RSS (``VmRSS`` from
``/proc/PID/status``), then sends a burst: 20 concurrent ``POST
/api/search`` requests, each with 4 random-noise JPEGs sized so that the
request just fits the upload limit (``FASHION_MAX_UPLOAD_MB``). From the
moment the last answer arrives it samples every worker's RSS once a second
for 15 s. Target: within 10 s, every worker within 150 MB of its idle RSS.

The server runs once per condition:

- ``no_fix``: as before the fix: ``MALLOC_ARENA_MAX`` = 8 x cores (glibc's
  own default bound) and gunicorn.conf.py without its ``post_fork`` and
  ``post_request`` hooks (a copy of it in a temporary folder that deletes
  them);
- ``glibc_default``: the same arenas, with the malloc_trim after large
  requests (``post_request``);
- ``unset``: no ``MALLOC_ARENA_MAX`` (``gunicorn app:app`` by hand): each
  worker bounds itself to 2 arenas after the fork (``post_fork``);
- ``env_2``: ``MALLOC_ARENA_MAX=2`` in the environment, as the systemd unit
  sets it.

The last three have the trim on.

    python -m benchmarks.bench_memory [--conditions no_fix,glibc_default,unset,env_2]

Ends with one JSON line of every figure. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import load_average
from benchmarks.server import (
    ACCESS_LOG_FORMAT,
    OUT_DIR,
    ROOT,
    FilePart,
    Server,
    ServerError,
    _wait_ready,
    gunicorn_server,
    post_search,
    stop_server,
)
from tests.support.gunicorn import LOOPBACK, free_port, gunicorn_env, spawn_gunicorn

log = logging.getLogger("bench_memory")

CONCURRENT = 20
PHOTOS = 4
SAMPLE_S = 15
TARGET_AFTER_S = 10
TARGET_MB = 150.0
MULTIPART_SLACK = 16 * 1024  # headers of the parts and the form fields


def vm_rss_mb(pid: int) -> float:
    """``VmRSS`` of a process in MiB; 0.0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def noise_jpeg(max_bytes: int, seed: int, quality: int = 90) -> tuple[bytes, int]:
    """A random-noise JPEG as large as fits in ``max_bytes`` (noise hardly compresses), and its side in pixels."""
    rng = np.random.default_rng(seed)
    side = 2048
    best, best_side = b"", 0
    low, high = 64, 4096
    while low <= high:  # the largest square that fits
        side = (low + high) // 2
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        data = buffer.getvalue()
        if len(data) <= max_bytes:
            best, best_side, low = data, side, side + 1
        else:
            high = side - 1
        if best and max_bytes - len(best) < max_bytes * 0.02:
            break
    return best, best_side


def near_limit_photos(quality: int = 90) -> tuple[list[bytes], list[int], int]:
    """``PHOTOS`` noise JPEGs that together just fit the default upload limit: the photos, their sides in
    pixels, and the limit in bytes."""
    from indexer.config import Settings

    limit = Settings.from_env(env={}).max_upload_bytes
    per_photo = (limit - MULTIPART_SLACK) // PHOTOS
    made = [noise_jpeg(per_photo, seed, quality) for seed in range(PHOTOS)]
    return [data for data, _ in made], [side for _, side in made], limit


_NO_HOOKS_CONF = """\
# gunicorn.conf.py as it is, less the memory hooks (bench_memory's no_fix condition)
chdir = {root!r}
exec(compile(open({conf!r}).read(), {conf!r}, "exec"))
del post_fork, post_request
"""


@contextlib.contextmanager
def server_without_hooks(catalogue: Path, index_dir: Path, extra_env: dict, log_name: str):
    """Like ``gunicorn_server``, but gunicorn.conf.py runs without ``post_fork`` and ``post_request``."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-conf-") as conf_dir:
        conf = ROOT / "gunicorn.conf.py"
        Path(conf_dir, "gunicorn.conf.py").write_text(_NO_HOOKS_CONF.format(root=str(ROOT), conf=str(conf)))
        port = free_port()
        log_path = OUT_DIR / f"{log_name}.log"
        args = {"GUNICORN_CMD_ARGS": f"--access-logformat={shlex.quote(ACCESS_LOG_FORMAT)}"}
        env = gunicorn_env(catalogue, index_dir, f"{LOOPBACK}:{port}", workers=2, extra_env=args | extra_env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        spawned_at, spawned_wall = time.monotonic(), time.time()
        proc = spawn_gunicorn(env, log_path, cwd=Path(conf_dir))
        server = Server(proc, port, log_path, 2, spawned_at, spawned_wall, env=env)
        try:
            _wait_ready(server, 180.0)
            yield server
        finally:
            stop_server(proc)


def one_condition(label: str, arena_env: str | None, catalogue: Path, index_dir: Path, photos: list[bytes],
                  hooks: bool = True) -> dict:
    """Start the server with ``MALLOC_ARENA_MAX=arena_env`` (None: unset), burst, sample; the figures."""
    saved = os.environ.pop("MALLOC_ARENA_MAX", None)  # gunicorn_env copies our environment
    try:
        extra = {"MALLOC_ARENA_MAX": arena_env} if arena_env else {}
        if hooks:
            starting = gunicorn_server(catalogue, index_dir, workers=2, extra_env=extra, log_name=f"memory-{label}")
        else:
            starting = server_without_hooks(catalogue, index_dir, extra, f"memory-{label}")
        with starting as server:
            parts = [FilePart("image", f"noise-{n}.jpg", data) for n, data in enumerate(photos)]
            figures = burst_and_sample(
                server.worker_pids(), lambda: post_search(server.port, parts, {"k": "5"}, timeout=120.0).status
            )
    finally:
        if saved is not None:
            os.environ["MALLOC_ARENA_MAX"] = saved
    result = {"malloc_arena_max": arena_env or "unset", "trim_and_post_fork_hooks": hooks, **figures}
    log.info("%s: statuses %s, burst %.1f s; per worker idle/peak/after %d s: %s; target %s",
             label, result["statuses"], result["burst_s"], TARGET_AFTER_S,
             [(w["idle_mb"], w["peak_mb"], w[f"after_{TARGET_AFTER_S}s_mb"]) for w in result["workers"].values()],
             "met" if result["target_met"] else "missed")
    return result


def burst_and_sample(pids: list[int], post: Callable[[], int]) -> dict:
    """Each worker's idle RSS, then ``CONCURRENT`` calls of ``post`` at once (each one search; it returns the
    status), then every worker's RSS once a second for ``SAMPLE_S`` s: the figures and whether the target was met."""
    time.sleep(2.0)  # let start-up settle
    idle = {pid: vm_rss_mb(pid) for pid in pids}
    peak = dict(idle)
    stop = threading.Event()

    def sample_peak():
        while not stop.is_set():
            for pid in pids:
                peak[pid] = max(peak[pid], vm_rss_mb(pid))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample_peak, daemon=True)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        replies = list(pool.map(lambda _: post(), range(CONCURRENT)))
    burst_s = time.monotonic() - started
    samples: dict[int, list[float]] = {pid: [] for pid in pids}
    for _ in range(SAMPLE_S):
        time.sleep(1.0)
        for pid in pids:
            samples[pid].append(vm_rss_mb(pid))
    stop.set()
    sampler.join()
    statuses: dict[str, int] = {}
    for status in replies:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    workers = {}
    for pid in pids:
        after = samples[pid][TARGET_AFTER_S - 1]
        workers[str(pid)] = {
            "idle_mb": idle[pid],
            "peak_mb": peak[pid],
            f"after_{TARGET_AFTER_S}s_mb": after,
            "over_idle_after_mb": round(after - idle[pid], 1),
            "per_second_mb": samples[pid],
        }
    worst = max(w["over_idle_after_mb"] for w in workers.values())
    return {
        "burst_s": round(burst_s, 2),
        "statuses": statuses,
        "workers": workers,
        "worst_over_idle_after_mb": worst,
        "target_met": worst <= TARGET_MB,
    }


def main(argv: list[str] | None = None) -> int:
    """Run each condition and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conditions", default="no_fix,glibc_default,unset,env_2")
    parser.add_argument("--quality", type=int, default=90,
                        help="JPEG quality of the noise photos: lower means more pixels within the limit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from indexer.demo import generate_demo_catalogue

    photos, sides, limit = near_limit_photos(args.quality)
    log.info("upload limit %d bytes; %d photos of %s bytes, %s pixels square", limit, PHOTOS,
             [len(p) for p in photos], sides)
    load_before = load_average()
    conditions = {
        "no_fix": str(8 * (os.cpu_count() or 1)),
        "glibc_default": str(8 * (os.cpu_count() or 1)),
        "unset": None,
        "env_2": "2",
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        catalogue = Path(tmp) / "catalogue"
        generate_demo_catalogue(catalogue)
        index_dir = Path(tmp) / "index"
        # the first start builds the index; the worker that built it keeps the memory of the build
        try:
            with gunicorn_server(catalogue, index_dir, workers=2, log_name="memory-build", startup_timeout_s=60):
                pass
        except ServerError as exc:  # the worker that did not build may wait for a request to load it
            if not (index_dir / "current").exists() and not any(index_dir.iterdir()):
                raise
            log.info("build start: %s", str(exc).splitlines()[0])
        for label in args.conditions.split(","):
            results[label] = one_condition(label, conditions[label], catalogue, index_dir, photos,
                                           hooks=label != "no_fix")
    summary = {
        "benchmark": "memory",
        "cpus": os.cpu_count(),
        "concurrent": CONCURRENT,
        "photos_per_request": PHOTOS,
        "photo_bytes": [len(p) for p in photos],
        "photo_side_px": sides,
        "jpeg_quality": args.quality,
        "load_before": round(load_before, 2),
        "load_after": round(load_average(), 2),
        "upload_limit_bytes": limit,
        "target": f"every worker within {TARGET_MB:.0f} MB of idle {TARGET_AFTER_S} s after the burst",
        **results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
