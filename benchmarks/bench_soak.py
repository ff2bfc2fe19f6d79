"""Load and soak plus an overload probe, against real gunicorn.

Starts ``gunicorn -c gunicorn.conf.py app:app`` with 2 workers on a free
loopback port over the demo catalogue, warms it up with ~20 searches, then
runs 4 concurrent clients through a shuffled mix of at least 300 requests:

* 60% valid uploads: demo catalogue photos and the "ok" cases of
  ``tests/corpus.py`` (odd formats that must still give results);
* 30% bad uploads: the "reject" cases of the corpus, plus malformed requests
  (no file field, a non-numeric ``k``, an unknown filter value, too many
  photos), which must all get a 4xx with a JSON error message;
* 10% more-like-this: ``GET /api/items/<id>/similar``.

Anything else (a 5xx, a wrong status class, a connection error, a worker
that was replaced) counts as unexpected, and there must be none. Worker RSS
is read after the warm-up and at the end; growth must stay within 10%.

Then a second server is started with a short ``FASHION_QUEUE_TIMEOUT_S``
(0.5 s) and hit with far more simultaneous uploads than it can serve in that
time (2 waves of 128): the overflow must get ``503`` with ``Retry-After``, and
every answer must come within the queue timeout plus a small allowance
(``--probe-slack``, 3 s), not after the whole backlog has been worked off.

Run from the project root::

    python benchmarks/bench_soak.py

Every loop is bounded in count and in time (``--time-limit``, default 8
minutes for the whole script); the script always stops its servers.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.server import (  # noqa: E402
    OUT_DIR,
    FilePart,
    Response,
    build_index_cli,
    gunicorn_server,
    load_average,
    post_search,
    request,
    summary_ms,
)

WORKERS = 2
MAX_RSS_GROWTH = 0.10


def log(line: str = "") -> None:
    """One plain output line, flushed at once."""
    print(line, flush=True)


# ---------------------------------------------------------------- the request mix


@dataclass(frozen=True)
class Case:
    """One request of the mix and the status class it must get."""

    kind: str  # "valid", "bad" or "similar"
    name: str
    expect: str  # "200" or "4xx"
    files: tuple[FilePart, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    item_id: str = ""

    def send(self, port: int, timeout: float) -> Response:
        """Send this request to the server on ``port``."""
        if self.kind == "similar":
            return request(port, "GET", f"/api/items/{self.item_id}/similar", timeout=timeout)
        return post_search(port, list(self.files), dict(self.fields), timeout=timeout)

    def check(self, reply: Response) -> str | None:
        """None when the answer is as expected, else what was wrong."""
        if reply.status == 0:
            return f"connection error: {reply.error}"
        body = reply.json()
        if self.expect == "200":
            if reply.status != 200:
                return f"status {reply.status}, expected 200: {reply.body[:160]!r}"
            if self.kind == "similar":
                return None if body and body.get("results") else "no results in the answer"
            queries = (body or {}).get("queries") or []
            if len(queries) != len(self.files) or not all(q.get("results") for q in queries):
                return "answer without one result list per photo"
            return None
        if not 400 <= reply.status < 500:
            return f"status {reply.status}, expected 4xx: {reply.body[:160]!r}"
        message = ((body or {}).get("error") or {}).get("message")
        return None if message else "4xx without a JSON error message"


def build_cases(catalogue: Path) -> tuple[list[Case], list[Case], list[Case]]:
    """The valid, bad and more-like-this request pools."""
    from tests.corpus import build_corpus

    corpus = build_corpus()
    photos = sorted(catalogue.glob("*.jpg"), key=lambda p: int(p.stem))
    valid = [Case("valid", f"demo:{p.name}", "200", (FilePart("image", p.name, p.read_bytes()),)) for p in photos]
    valid += [
        Case("valid", f"corpus:{u.name}", "200", (FilePart("image", u.filename, u.data, u.content_type),))
        for u in corpus
        if u.expect == "ok"
    ]
    bad = [
        Case("bad", f"corpus:{u.name}", "4xx", (FilePart("image", u.filename, u.data, u.content_type),))
        for u in corpus
        if u.expect == "reject"
    ]
    one = FilePart("image", photos[0].name, photos[0].read_bytes())
    bad += [
        Case("bad", "no_file_field", "4xx", (), (("k", "5"),)),
        Case("bad", "empty_filename", "4xx", (FilePart("image", "", b""),)),
        Case("bad", "k_not_a_number", "4xx", (one,), (("k", "five"),)),
        Case("bad", "k_negative", "4xx", (one,), (("k", "-3"),)),
        Case("bad", "k_huge", "4xx", (one,), (("k", "100000"),)),
        Case("bad", "unknown_filter", "4xx", (one,), (("gender", "Martian"),)),
        Case("bad", "too_many_files", "4xx", (one,) * 5),
    ]
    similar = [Case("similar", f"similar:{p.stem}", "200", item_id=p.stem) for p in photos]
    return valid, bad, similar


def schedule(valid: list[Case], bad: list[Case], similar: list[Case], total: int, seed: int = 4) -> list[Case]:
    """``total`` requests, 60/30/10 valid/bad/similar, every pool cycled, in a seeded shuffle."""
    n_bad = round(total * 0.3)
    n_similar = round(total * 0.1)
    n_valid = total - n_bad - n_similar
    rng = random.Random(seed)

    def take(pool: list[Case], n: int) -> list[Case]:
        shuffled = pool[:]
        rng.shuffle(shuffled)
        return [shuffled[i % len(shuffled)] for i in range(n)]

    mix = take(valid, n_valid) + take(bad, n_bad) + take(similar, n_similar)
    rng.shuffle(mix)
    return mix


# ---------------------------------------------------------------- running clients


def run_clients(port: int, cases: list[Case], clients: int, deadline: float, timeout: float = 60.0) -> dict:
    """Send every case from ``clients`` threads; stop early at ``deadline``."""
    lock = threading.Lock()
    position = [0]
    records: list[tuple[Case, Response, str | None]] = []

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                i = position[0]
                if i >= len(cases):
                    return
                position[0] += 1
            case = cases[i]
            reply = case.send(port, timeout=min(timeout, max(1.0, deadline - time.monotonic() + 5)))
            problem = case.check(reply)
            with lock:
                records.append((case, reply, problem))

    threads = [threading.Thread(target=client, name=f"client-{n}", daemon=True) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + timeout + 5)
    wall = time.perf_counter() - started
    return {"records": records, "wall_s": wall, "sent": position[0], "planned": len(cases)}


def overload_probe(catalogue: Path, index_dir: Path, args, deadline: float) -> dict:
    """More simultaneous uploads than a short-timeout server can take: expect prompt 503s with Retry-After."""
    photos = sorted(catalogue.glob("*.jpg"), key=lambda p: int(p.stem))
    extra_env = {"FASHION_QUEUE_TIMEOUT_S": str(args.probe_queue_timeout)}
    results: list[Response] = []
    lock = threading.Lock()
    with gunicorn_server(
        catalogue,
        index_dir,
        workers=WORKERS,
        extra_env=extra_env,
        log_name="bench_soak-probe",
        cmd_args=f"--worker-class={args.probe_worker_class}" if args.probe_worker_class else "",
    ) as server:
        for photo in photos[:4]:  # warm-up
            post_search(server.port, [FilePart("image", photo.name, photo.read_bytes())], timeout=60)
        for wave in range(args.probe_waves):
            if time.monotonic() > deadline:
                break
            barrier = threading.Barrier(args.probe_concurrency)

            def fire(n: int, wave: int = wave, barrier: threading.Barrier = barrier) -> None:
                photo = photos[(wave * args.probe_concurrency + n) % len(photos)]
                try:
                    barrier.wait(timeout=10)
                except threading.BrokenBarrierError:
                    pass
                reply = post_search(
                    server.port, [FilePart("image", photo.name, photo.read_bytes())], timeout=args.probe_client_timeout
                )
                with lock:
                    results.append(reply)

            threads = [threading.Thread(target=fire, args=(n,), daemon=True) for n in range(args.probe_concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=args.probe_client_timeout + 15)
        health = request(server.port, "GET", "/healthz", timeout=5)
    statuses = Counter(r.status for r in results)
    busy = [r for r in results if r.status == 503]
    unexpected = [r for r in results if r.status not in (200, 503)]
    missing_retry = [r for r in busy if not r.headers.get("retry-after")]
    bound_ms = (args.probe_queue_timeout + args.probe_slack) * 1000
    late = [r for r in results if r.elapsed_ms > bound_ms]
    return {
        "queue_timeout_s": args.probe_queue_timeout,
        "worker_class": args.probe_worker_class or "gunicorn.conf.py",
        "concurrency": args.probe_concurrency,
        "waves": args.probe_waves,
        "sent": len(results),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "busy_503": len(busy),
        "busy_with_retry_after": len(busy) - len(missing_retry),
        "retry_after_values": sorted({r.headers.get("retry-after", "") for r in busy}),
        "unexpected": len(unexpected) + len(missing_retry),
        "unexpected_samples": [f"{r.status} {r.error or r.body[:100]!r}" for r in unexpected[:5]],
        "latency_503_ms": summary_ms([r.elapsed_ms for r in busy]),
        "latency_200_ms": summary_ms([r.elapsed_ms for r in results if r.status == 200]),
        "latency_max_ms": round(max((r.elapsed_ms for r in results), default=0.0), 1),
        "latency_bound_ms": bound_ms,
        "late": len(late),
        "healthz_after": health.status,
        "pass": bool(busy) and not unexpected and not missing_retry and not late and health.status == 200,
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the soak and the overload probe; exit status 0 when everything passes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="requests in the soak (at least 300)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=480.0, help="hard cap for the whole script, seconds")
    parser.add_argument("--probe-concurrency", type=int, default=128)
    parser.add_argument("--probe-waves", type=int, default=2)
    parser.add_argument("--probe-queue-timeout", type=float, default=0.5)
    parser.add_argument("--probe-client-timeout", type=float, default=60.0)
    parser.add_argument("--probe-slack", type=float, default=3.0, help="allowance over the queue timeout, s")
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument(
        "--probe-worker-class", help="gunicorn worker class for the probe (default: gunicorn.conf.py's), e.g. gthread"
    )
    args = parser.parse_args(argv)
    if args.requests < 300:
        parser.error("--requests must be at least 300")

    script_start = time.monotonic()
    deadline = script_start + args.time_limit
    log(
        f"bench_soak: {WORKERS} gunicorn workers, {args.clients} clients, {args.requests} requests "
        f"(60% valid, 30% bad, 10% more-like-this), hard limit {args.time_limit:.0f} s; "
        f"1-min load {load_average():.2f}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    try:
        from indexer.demo import generate_demo_catalogue

        catalogue, index_dir = work / "catalogue", work / "index"
        count = generate_demo_catalogue(catalogue)
        seconds = build_index_cli(
            catalogue, index_dir, timeout_s=max(60.0, deadline - time.monotonic()), log_name="bench_soak-build"
        )
        log(f"demo catalogue: {count} images, index built in {seconds:.1f} s")
        valid, bad, similar = build_cases(catalogue)
        cases = schedule(valid, bad, similar, args.requests)
        log(
            f"pools: {len(valid)} valid, {len(bad)} bad, {len(similar)} more-like-this; "
            f"mix: {dict(Counter(c.kind for c in cases))}"
        )

        with gunicorn_server(catalogue, index_dir, workers=WORKERS, log_name="bench_soak") as server:
            log(f"server up in {server.ready_s:.2f} s on 127.0.0.1:{server.port}")
            pids_start = server.worker_pids()
            warm = run_clients(server.port, [valid[i % len(valid)] for i in range(args.warmup)], args.clients, deadline)
            warm_problems = [p for _, _, p in warm["records"] if p]
            time.sleep(1.0)
            rss_start = server.worker_rss_mb()
            log(
                f"warm-up: {len(warm['records'])} searches, {len(warm_problems)} problems; worker RSS "
                + ", ".join(f"{pid}: {mb:.1f} MiB" for pid, mb in rss_start.items())
            )
            before = server.requests_per_worker("/api/")
            soak = run_clients(server.port, cases, args.clients, deadline)
            time.sleep(1.0)
            rss_end = server.worker_rss_mb()
            pids_end = server.worker_pids()
            unhandled = server.log_count("Unhandled error")
            tracebacks = server.log_count("Traceback")
            boots = server.log_count("Booting worker")
            after = server.requests_per_worker("/api/")
            per_worker = {pid: after.get(pid, 0) - before.get(pid, 0) for pid in sorted(after)}

        records = soak["records"]
        problems = [(c, r, p) for c, r, p in records if p]
        by_kind: dict[str, list[float]] = {}
        statuses: dict[str, Counter] = {}
        for case, reply, _ in records:
            by_kind.setdefault(case.kind, []).append(reply.elapsed_ms)
            statuses.setdefault(case.kind, Counter())[str(reply.status)] += 1
        latency_all = summary_ms([r.elapsed_ms for _, r, _ in records])
        growth = {pid: (rss_end.get(pid, 0.0) - mb) / mb for pid, mb in rss_start.items() if mb}
        total_start, total_end = sum(rss_start.values()), sum(rss_end.get(pid, 0.0) for pid in rss_start)
        growth_total = (total_end - total_start) / total_start if total_start else float("nan")
        replaced = sorted(set(pids_start) ^ set(pids_end))
        incomplete = soak["planned"] - len(records)

        log(
            f"soak: {len(records)}/{soak['planned']} requests in {soak['wall_s']:.1f} s "
            f"({len(records) / soak['wall_s']:.2f} req/s); 1-min load {load_average():.2f}"
        )
        for kind in ("valid", "bad", "similar"):
            s = summary_ms(by_kind.get(kind, []))
            log(
                f"  {kind:<8} n={s.get('n', 0):>3}  p50 {s.get('p50')} ms  p95 {s.get('p95')} ms  "
                f"statuses {dict(statuses.get(kind, {}))}"
            )
        log(
            f"  all      n={latency_all.get('n', 0):>3}  p50 {latency_all.get('p50')} ms  "
            f"p95 {latency_all.get('p95')} ms  max {latency_all.get('max')} ms"
        )
        log(f"unexpected results: {len(problems)} (+{incomplete} not sent before the time limit)")
        for case, _, problem in problems[:10]:
            log(f"  {case.name}: {problem}")
        for pid, mb in rss_start.items():
            log(f"worker {pid}: RSS {mb:.1f} -> {rss_end.get(pid, 0.0):.1f} MiB ({growth[pid] * 100:+.1f}%)")
        log(
            f"workers total: {total_start:.1f} -> {total_end:.1f} MiB ({growth_total * 100:+.1f}%), "
            f"limit +{MAX_RSS_GROWTH * 100:.0f}%"
        )
        log(
            f"workers replaced during the run: {replaced or 'none'}; 'Booting worker' lines {boots}; "
            f"'Unhandled error' log lines {unhandled}; tracebacks {tracebacks}; requests per worker {per_worker}"
        )

        probe = None
        if not args.skip_probe:
            probe = overload_probe(catalogue, index_dir, args, deadline)
            log(
                f"overload probe ({probe['worker_class']} worker): {probe['waves']} waves of "
                f"{probe['concurrency']} simultaneous uploads, "
                f"FASHION_QUEUE_TIMEOUT_S={probe['queue_timeout_s']}: statuses {probe['statuses']}; "
                f"503 with Retry-After {probe['busy_with_retry_after']}/{probe['busy_503']} "
                f"(Retry-After {probe['retry_after_values']}); 503 latency p50 {probe['latency_503_ms'].get('p50')} "
                f"ms max {probe['latency_503_ms'].get('max')} ms; 200 latency max "
                f"{probe['latency_200_ms'].get('max')} ms; slowest answer {probe['latency_max_ms']} ms (bound "
                f"{probe['latency_bound_ms']:.0f} ms, {probe['late']} later); unexpected {probe['unexpected']}; "
                f"/healthz after {probe['healthz_after']}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - script_start
    targets = {
        "unexpected_results": {
            "value": len(problems) + len(warm_problems),
            "target": 0,
            "pass": not problems and not warm_problems,
        },
        "requests_completed": {"value": len(records), "target": args.requests, "pass": incomplete == 0},
        "rss_growth_max_worker": {
            "value": round(max(growth.values(), default=float("nan")), 4),
            "target": MAX_RSS_GROWTH,
            "pass": bool(growth) and max(growth.values()) <= MAX_RSS_GROWTH,
        },
        "workers_survived": {"value": len(replaced), "target": 0, "pass": not replaced and unhandled == 0},
    }
    if probe is not None:
        targets["overload_503_retry_after"] = {
            "value": probe["busy_with_retry_after"],
            "unexpected": probe["unexpected"],
            "latency_max_ms": probe["latency_max_ms"],
            "latency_bound_ms": probe["latency_bound_ms"],
            "pass": probe["pass"],
        }
    all_pass = all(t["pass"] for t in targets.values())
    summary = {
        "benchmark": "soak",
        "all_pass": all_pass,
        "elapsed_s": round(elapsed, 1),
        "requests": len(records),
        "mix": dict(Counter(c.kind for c, _, _ in records)),
        "latency_ms": latency_all,
        "latency_by_kind_ms": {k: summary_ms(v) for k, v in by_kind.items()},
        "statuses": {k: dict(v) for k, v in statuses.items()},
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "rss_growth_total": round(growth_total, 4),
        "requests_per_worker": per_worker,
        "overload_probe": probe,
        "targets": targets,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "bench_soak.json").write_text(json.dumps(summary, indent=2, default=str))
    log(json.dumps(summary, default=str))
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
