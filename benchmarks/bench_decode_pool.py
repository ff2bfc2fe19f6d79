"""Hostile JPEGs against a real gunicorn: decoding stays inside its budget, and other shoppers are served.

The server is the shipped shape (``gunicorn.conf.py``: 2 workers, each
decoding uploads in ``FASHION_DECODE_SLOTS`` decode processes) over an index
of a fashion-dev subset. Four hostile uploads are sent at once, burst after
burst, for ``--seconds``:

* ``many_scans``: an 830 KB progressive 2000 x 2000 JPEG of 60,000 scans;
* ``progressive_8000``: a progressive 8000 x 8000 colour photo (4:4:4, as
  Pillow writes it): 370 MB of full-size coefficients behind a 4 MB draft;
* ``cmyk_8000``: the same photo in CMYK: 492 MB;
* ``scans_100_8000``: a progressive 8000 x 8000 grey JPEG of 100 scans, the
  slowest JPEG still accepted (priced 126 MB, about 1.5 s to decode).

Meanwhile one shopper searches with an ordinary catalogue photo, one search
after another. Quiet and attacked windows take turns (``--windows`` of each,
``--seconds`` of attack in all), so that the shopper's two p50s are taken
under the same background load. Figures: each case's statuses and slowest
answer; the growth of the workers' combined RSS (peak during the run over
the RSS before it) and the decode processes' combined peak RSS; the
shopper's p50 alone and under attack, and their ratio (target: under 2). Then, in this process: an ordinary upload
decoded in-process and through a decode process (p50 of 50), and the
marker walk over 10 MB of its worst bytes. ``--unbounded`` also decodes
each case with Pillow alone in a fresh process, without any of these
limits: seconds and peak RSS growth. ``--no-locate`` sends the hostile
uploads with ``locate=false``, so that the boxes found in an accepted photo
are not decoded again in the worker.

    python -m benchmarks.bench_decode_pool [--images 300] [--seconds 60] [--windows 6] [--unbounded] [--no-locate]

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import DEFAULT_DATASET, dataset_images, load_average, make_catalogue
from benchmarks.server import FilePart, build_index_cli, child_pids, gunicorn_server, post_search, worker_rss_mb
from tests.corpus import make_image
from tests.support.hostile_jpeg import progressive_jpeg

SAMPLE_S = 0.02


def hostile_cases() -> dict[str, bytes]:
    """The four uploads, by name (the two Pillow-made photos take about 15 s to encode)."""
    photo = make_image((8000, 8000))
    colour, cmyk = io.BytesIO(), io.BytesIO()
    photo.save(colour, "JPEG", progressive=True, quality=90, subsampling=0)
    photo.convert("CMYK").save(cmyk, "JPEG", progressive=True, quality=90)
    return {
        "many_scans": progressive_jpeg(2000, 2000, scans=60_000),
        "progressive_8000": colour.getvalue(),
        "cmyk_8000": cmyk.getvalue(),
        "scans_100_8000": progressive_jpeg(8000, 8000, scans=100),
    }


def _decoders(workers: list[int]) -> list[int]:
    return [pid for worker in workers for pid in child_pids(worker)]


class Memory:
    """Samples the workers' combined RSS and their decode processes' combined RSS every 20 ms."""

    def __init__(self, master: int):
        self.master = master
        self.workers = child_pids(master)
        self.before_mb = sum(worker_rss_mb(pid) for pid in self.workers)
        self.workers_peak_mb = self.before_mb
        self.decoders_peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.workers_peak_mb = max(self.workers_peak_mb, sum(worker_rss_mb(pid) for pid in self.workers))
            decoders = sum(worker_rss_mb(pid) for pid in _decoders(self.workers))
            self.decoders_peak_mb = max(self.decoders_peak_mb, decoders)
            time.sleep(SAMPLE_S)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# One search with one photo: (data, file name, form fields) -> (status, milliseconds). Direct to gunicorn
# here; bench_hostile passes one that goes through nginx from a fresh address each time.
Search = Callable[[bytes, str, dict[str, str] | None], tuple[int, float]]


def direct_search(port: int) -> Search:
    """A ``Search`` that posts to gunicorn on ``port``."""

    def search(data: bytes, name: str, fields: dict[str, str] | None = None) -> tuple[int, float]:
        reply = post_search(port, [FilePart("image", name, data)], fields, timeout=120)
        return reply.status, reply.elapsed_ms

    return search


def shopper(search: Search, photo: bytes, until: float | None = None, rounds: int = 0) -> list[float]:
    """Milliseconds of ordinary searches, one after another (``rounds`` of them, or until ``until``)."""
    times = []
    while (until is not None and time.monotonic() < until) or len(times) < rounds:
        status, elapsed = search(photo, "shopper.jpg", None)
        if status != 200:
            raise RuntimeError(f"an ordinary search answered {status}")
        times.append(elapsed)
    return times


def attack(search: Search, cases: dict[str, bytes], until: float, fields: dict[str, str] | None = None
           ) -> dict[str, dict]:
    """Bursts of every case at once until ``until``: each case's statuses and slowest answer."""
    seen: dict[str, dict] = {name: {"statuses": {}, "slowest_s": 0.0} for name in cases}

    def send(item):
        return (item[0], *search(item[1], item[0] + ".jpg", fields))

    with ThreadPoolExecutor(len(cases)) as pool:
        while time.monotonic() < until:
            answers = pool.map(send, cases.items())
            for name, status, elapsed in answers:
                statuses = seen[name]["statuses"]
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                seen[name]["slowest_s"] = round(max(seen[name]["slowest_s"], elapsed / 1000), 2)
    return seen


def _merged(windows: list[dict[str, dict]]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for window in windows:
        for name, seen in window.items():
            into = merged.setdefault(name, {"statuses": {}, "slowest_s": 0.0})
            for status, count in seen["statuses"].items():
                into["statuses"][status] = into["statuses"].get(status, 0) + count
            into["slowest_s"] = max(into["slowest_s"], seen["slowest_s"])
    return merged


def under_attack(search: Search, master: int, photo: bytes, cases: dict[str, bytes], seconds: float, windows: int,
                 fields: dict[str, str] | None = None) -> dict:
    """Quiet and attacked windows in turn (``seconds`` of attack in all) against the gunicorn whose master is
    ``master``: each case's statuses, the memory figures and the shopper's p50s (their keys ``cases``,
    ``memory`` and ``shopper``)."""
    quiet, busy, seen = [], [], []
    window_s = seconds / windows
    with Memory(master) as memory, ThreadPoolExecutor(1) as background:
        # quiet and attacked windows in turn, so that both see the same background load
        for _ in range(windows):
            quiet += shopper(search, photo, until=time.monotonic() + window_s)
            until = time.monotonic() + window_s
            attacked = background.submit(attack, search, cases, until, fields)
            busy += shopper(search, photo, until=until)
            seen.append(attacked.result())  # its last burst ends before the next quiet window
    results = {
        "cases": _merged(seen),
        "memory": {
            "workers_before_mb": round(memory.before_mb),
            "workers_peak_growth_mb": round(memory.workers_peak_mb - memory.before_mb),
            "decode_processes_peak_mb": round(memory.decoders_peak_mb),
            "decode_processes": len(_decoders(memory.workers)),
        },
        "shopper": {
            "alone_p50_ms": round(statistics.median(quiet), 1),
            "under_attack_p50_ms": round(statistics.median(busy), 1),
            "alone_searches": len(quiet),
            "under_attack_searches": len(busy),
        },
    }
    results["shopper"]["ratio_p50"] = round(
        results["shopper"]["under_attack_p50_ms"] / results["shopper"]["alone_p50_ms"], 2
    )
    return results


def print_attack(results: dict) -> None:
    """The lines of ``under_attack``'s figures (``results`` also holds ``sizes_kb``)."""
    for name, seen in results["cases"].items():
        print(f"{name:17s} {results['sizes_kb'][name]:5d} KB: statuses {seen['statuses']}, "
              f"slowest answer {seen['slowest_s']:.2f} s")
    m = results["memory"]
    print(f"workers' RSS: {m['workers_before_mb']} MB before, peak growth {m['workers_peak_growth_mb']} MB "
          f"(budget 256 MB per worker); {m['decode_processes']} decode processes, combined peak "
          f"{m['decode_processes_peak_mb']} MB")
    s = results["shopper"]
    print(f"shopper p50: {s['alone_p50_ms']} ms alone ({s['alone_searches']} searches), "
          f"{s['under_attack_p50_ms']} ms under attack ({s['under_attack_searches']}): ratio {s['ratio_p50']} (< 2)")


_UNBOUNDED = """
import io, sys, time
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
data = sys.stdin.buffer.read()
def peak():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
before = peak()
started = time.perf_counter()
img = Image.open(io.BytesIO(data))
img.draft("RGB", (224, 224))
img.load()
print(round(time.perf_counter() - started, 1), peak() - before)
"""


def unbounded(cases: dict[str, bytes], timeout_s: float = 300.0) -> dict[str, dict]:
    """Each case decoded by Pillow alone in a fresh process, without any of these limits: seconds, peak RSS growth."""
    found = {}
    for name, data in cases.items():
        try:
            done = subprocess.run(
                [sys.executable, "-c", _UNBOUNDED], input=data, capture_output=True, timeout=timeout_s, check=True
            )
            seconds, grown_mb = done.stdout.split()
            found[name] = {"decode_s": float(seconds), "peak_rss_growth_mb": int(grown_mb)}
        except subprocess.TimeoutExpired:
            found[name] = {"decode_s": f"> {timeout_s:.0f}"}
    return found


def overheads(photo: bytes, rounds: int = 50) -> dict:
    """What the decode processes add to an ordinary upload, and the marker walk's worst 10 MB (milliseconds)."""
    from indexer.decode_pool import DecodePool
    from indexer.images import load_with_size
    from indexer.jpeg_layout import read_layout

    def p50_ms(call) -> float:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 2)

    pool = DecodePool(1, 256 * 1024 * 1024, 10.0)
    try:
        pool.decode(photo, 224)  # started and warm
        figures = {
            "in_process_ms_p50": p50_ms(lambda: load_with_size(photo, 224)),
            "decode_process_ms_p50": p50_ms(lambda: pool.decode(photo, 224)),
        }
    finally:
        pool.close()
    for name, body in (("ff", b"\xff" * 10_000_000), ("ff00", b"\xff\x00" * 5_000_000), ("zeros", bytes(10_000_000))):
        figures[f"marker_walk_10mb_{name}_ms"] = p50_ms(lambda body=body: read_layout(b"\xff\xd8" + body))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="images of fashion-dev to index (default 300)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the attack lasts (default 60)")
    parser.add_argument("--windows", type=int, default=6, help="quiet and attacked windows in turn (default 6)")
    parser.add_argument("--unbounded", action="store_true", help="also decode each case with Pillow alone")
    parser.add_argument(
        "--no-locate", action="store_true",
        help="the hostile uploads ask for locate=false: no box is decoded again in the worker",
    )
    args = parser.parse_args(argv)

    cases = hostile_cases()
    results: dict = {
        "machine": {"cores": os.cpu_count(), "load_1min_start": round(load_average(), 2)},
        "hostile_locate": not args.no_locate,
        "sizes_kb": {name: round(len(data) / 1024) for name, data in cases.items()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-decode-pool-") as tmp:
        tmp = Path(tmp)
        images = dataset_images(DEFAULT_DATASET)[: args.images]
        catalogue = make_catalogue(images, tmp / "catalogue", styles=DEFAULT_DATASET / "styles.csv")
        build_index_cli(catalogue, tmp / "index", log_name="bench_decode_pool_build")
        photo = images[0].read_bytes()
        with gunicorn_server(catalogue, tmp / "index", log_name="bench_decode_pool") as server:
            search = direct_search(server.port)
            shopper(search, photo, rounds=10)  # both workers warm, each with its decode processes
            fields = {"locate": "false"} if args.no_locate else None
            results.update(under_attack(search, server.proc.pid, photo, cases, args.seconds, args.windows, fields))
    results["overheads"] = overheads(photo)
    if args.unbounded:
        results["unbounded"] = unbounded(cases)
    results["machine"]["load_1min_end"] = round(load_average(), 2)

    print_attack(results)
    o = results["overheads"]
    print(f"an ordinary upload: {o['in_process_ms_p50']} ms decoded in the worker, "
          f"{o['decode_process_ms_p50']} ms through a decode process; marker walk of 10 MB: "
          f"{o['marker_walk_10mb_ff_ms']} / {o['marker_walk_10mb_ff00_ms']} / {o['marker_walk_10mb_zeros_ms']} ms "
          "(0xFF, 0xFF00, zeros)")
    for name, figures in results.get("unbounded", {}).items():
        print(f"Pillow alone, {name}: {figures}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
