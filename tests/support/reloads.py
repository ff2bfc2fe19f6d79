"""Steady traffic through a deployment while its gunicorn master is reloaded with HUP.

Used by ``tests/test_reload_nginx.py`` and ``benchmarks/bench_reload.py``.
``PacedClient`` sends GETs at a fixed rate whatever the answers take (as
shoppers do: a slow answer does not hold the next shopper back), each from
one of a few loopback addresses so that nginx's per-address limits see
several visitors, and records every answer. ``reload_under_load`` runs it
while it sends ``kill -HUP`` to the master a given number of times.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.proxy import Deployment

NO_ANSWER = 0  # the status recorded when the connection failed or timed out


@dataclass(frozen=True)
class Answer:
    """One request: when it was sent (seconds since the start), what, the status and how long it took."""

    sent_s: float
    path: str
    status: int
    seconds: float


@dataclass
class ReloadRun:
    """Everything a reload run saw."""

    answers: list[Answer] = field(default_factory=list)
    reloads_at_s: list[float] = field(default_factory=list)
    replaced_after_s: list[float] = field(default_factory=list)  # from each HUP until no old worker was left
    workers_before: set[int] = field(default_factory=set)
    workers_after: set[int] = field(default_factory=set)

    def statuses(self) -> Counter:
        """How many answers had each status (``NO_ANSWER`` for none)."""
        return Counter(answer.status for answer in self.answers)

    def server_errors(self) -> list[Answer]:
        """Answers that were 5xx, or no answer at all."""
        return [a for a in self.answers if a.status >= 500 or a.status == NO_ANSWER]

    def max_latency_s(self) -> float:
        """The slowest answer of the run."""
        return max((a.seconds for a in self.answers), default=0.0)


class PacedClient:
    """GETs ``paths`` in turn at ``rate`` requests a second, open loop, until ``stop()``."""

    def __init__(self, site: Deployment, paths: tuple[str, ...], rate: float, *, addresses: int = 8,
                 timeout: float = 90.0):
        self.site, self.paths, self.rate, self.timeout = site, paths, rate, timeout
        self.sources = [f"127.0.77.{n + 1}" for n in range(addresses)]
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = 0.0
        # enough threads that a stall of a minute at this rate never queues a request here
        self._pool = ThreadPoolExecutor(max_workers=int(rate * 60) + 8, thread_name_prefix="paced")
        self._thread = threading.Thread(target=self._run, name="paced-client", daemon=True)

    def elapsed_s(self) -> float:
        """Seconds since the client started."""
        return time.monotonic() - self._started

    def start(self) -> PacedClient:
        """Start sending."""
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        """Stop sending, wait for the answers still due and return them all, in the order they were sent."""
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        return sorted(self.answers, key=lambda a: a.sent_s)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            due = self._started + number / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self._pool.submit(self._one, number)
            number += 1

    def _one(self, number: int) -> None:
        path = self.paths[number % len(self.paths)]
        source = self.sources[number % len(self.sources)]
        sent = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.site.port, timeout=self.timeout,
                                          source_address=(source, 0))
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = NO_ANSWER
        finally:
            conn.close()
        answer = Answer(sent - self._started, path, status, time.monotonic() - sent)
        with self._lock:
            self.answers.append(answer)


def worker_pids(master_pid: int) -> set[int]:
    """The master's child processes (its workers), from ``/proc``."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    try:
        return {int(pid) for pid in children.read_text().split()}
    except OSError:
        return set()


def wait_for_workers(master_pid: int, count: int, avoid: set[int], timeout: float) -> set[int]:
    """Wait until the master has exactly ``count`` workers, none of them in ``avoid``; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(master_pid)
        if len(pids) == count and not pids & avoid:
            return pids
        time.sleep(0.1)
    raise TimeoutError(f"gunicorn did not replace its workers within {timeout:.0f} s: {worker_pids(master_pid)}")


def reload_under_load(site: Deployment, master_pid: int, *, reloads: int = 2, gap_s: float = 5.0,
                      rate: float = 20.0, paths: tuple[str, ...] = ("/", "/healthz"), settle_s: float = 5.0,
                      worker_count: int = 2, replace_timeout_s: float = 120.0) -> ReloadRun:
    """Send ``rate`` requests a second through ``site`` while HUP-ing its master ``reloads`` times.

    Each HUP is sent ``gap_s`` seconds after the previous reload's new
    workers are all in place (the first after ``gap_s`` of traffic), and
    the traffic goes on for ``settle_s`` after the last.
    """
    run = ReloadRun(workers_before=worker_pids(master_pid))
    client = PacedClient(site, paths, rate).start()
    seen = set(run.workers_before)
    try:
        for _ in range(reloads):
            time.sleep(gap_s)
            run.reloads_at_s.append(client.elapsed_s())
            os.kill(master_pid, signal.SIGHUP)
            seen |= wait_for_workers(master_pid, worker_count, seen, replace_timeout_s)
            run.replaced_after_s.append(client.elapsed_s() - run.reloads_at_s[-1])
        time.sleep(settle_s)
    finally:
        run.answers = client.stop()
    run.workers_after = worker_pids(master_pid)
    return run
