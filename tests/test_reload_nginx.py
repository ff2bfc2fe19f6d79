"""Reloads and /healthz on the shipped deployment: real gunicorn (2 workers) behind real nginx.

* ``kill -HUP`` to the master (``systemctl reload``) while a client asks
  for ``/`` and ``/healthz`` at 20 requests a second: no 5xx, and the
  workers really are replaced. New workers used to answer at once with the
  starting page (503) while they loaded the model, and after loading first
  the old ones stopped before the new ones could accept, so nginx's
  connects failed once the socket's backlog was full.
* ``/healthz`` answers for both workers: it counts them, and says 503 while
  one of them still serves the previous generation (that worker is stopped
  with SIGSTOP while a new index is published, so it cannot pick it up).
  When a published generation fails verification, both keep serving the
  last good one and ``/healthz`` says so with a 200.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time

import pytest

from tests.support.generations import publish_a_damaged_copy
from tests.support.proxy import deployment, nginx_binary
from tests.support.reloads import reload_under_load, worker_pids

pytestmark = [
    pytest.mark.slow,  # real nginx and gunicorn, workers loading the real model
    pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed: run scripts/install.sh"),
]

RATE = 20.0  # requests a second


def _health(site) -> tuple[int, dict]:
    status, _, body = site.request("GET", "/healthz", timeout=10)
    return status, json.loads(body)


def _wait_for_health(site, check, what: str, timeout: float = 180.0) -> dict:
    """Poll /healthz until ``check(status, body)``; returns the body."""
    deadline = time.monotonic() + timeout
    status, body = _health(site)
    while not check(status, body):
        assert time.monotonic() < deadline, f"{what}; last /healthz: {status} {body}\n{site.log_tail()}"
        time.sleep(0.2)
        status, body = _health(site)
    return body


def _all_ready(workers: int):
    return lambda status, body: status == 200 and body["workers"]["ready"] == workers


def test_hup_reloads_under_traffic_answer_no_5xx(built_index, tmp_path):
    extra = {"FASHION_RESCAN_SECONDS": "0"}
    with deployment(tmp_path / "site", built_index.catalogue, built_index.index_dir, workers=2,
                    extra_env=extra) as site:
        _wait_for_health(site, _all_ready(2), "both workers never served the index")
        master = site.processes[0].pid
        run = reload_under_load(site, master, reloads=2, gap_s=3.0, rate=RATE, settle_s=3.0)
    log = (site.folder / "gunicorn.log").read_text(errors="replace")

    sent_for = run.answers[-1].sent_s if run.answers else 0.0
    assert len(run.answers) >= RATE * sent_for * 0.9 and sent_for > 10, "the client did not keep up its rate"
    assert {a.path for a in run.answers} == {"/", "/healthz"}
    errors = run.server_errors()
    assert not errors, f"{len(errors)} of {len(run.answers)} answers were 5xx or none: {errors[:5]}\n{log[-6000:]}"
    assert set(run.statuses()) == {200}, run.statuses()
    assert len(run.workers_after) == 2 and not run.workers_after & run.workers_before, (run.workers_before, log[-6000:])
    assert log.count("Handling signal: hup") == 2


def test_healthz_counts_every_worker_and_waits_for_the_last_one(small_settings, embedder, demo_catalogue, tmp_path):
    from indexer.build import build_index

    settings = small_settings.replace(rescan_s=0)
    build_index(settings, embedder)
    extra = {"FASHION_RESCAN_SECONDS": "0"}
    with deployment(tmp_path / "site", settings.catalogue, settings.index_dir, workers=2, extra_env=extra) as site:
        first = _wait_for_health(site, _all_ready(2), "both workers never served the index")
        assert first["state"] == "ready" and first["items"] == 24
        assert first["workers"] == {"live": 2, "ready": 2, "booting": 0, "generations": {first["generation"]: 2}}

        # one worker cannot follow: it is stopped while a new generation is published
        lagging = min(worker_pids(site.processes[0].pid))
        os.kill(lagging, signal.SIGSTOP)
        try:
            shutil.copy2(demo_catalogue / "100.jpg", settings.catalogue / "100.jpg")
            build_index(settings, embedder)
            # the answering worker serves the new index (25 items) once it has loaded it; the other cannot
            behind = _wait_for_health(
                site, lambda status, body: status == 503 and body["items"] == 25,
                "/healthz never said 503 while a worker served the previous generation",
            )
            new = behind["generation"]
            assert behind["reason"] == "workers_not_ready" and behind["state"] == "ready"
            assert behind["workers"] == {
                "live": 2, "ready": 1, "booting": 0, "generations": {new: 1, first["generation"]: 1},
            }
            assert new != first["generation"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(lagging, signal.SIGCONT)
        # let go, it picks the new generation up by itself, without a request
        after = _wait_for_health(site, _all_ready(2), "the stopped worker never caught up")
        assert after["generation"] == new and after["workers"]["generations"] == {new: 2}

        # a published generation that fails verification: both workers keep the last good one, and say so
        damaged = publish_a_damaged_copy(settings.index_dir)
        refused = _wait_for_health(
            site, lambda status, body: status == 200 and body.get("refused") == damaged,
            "/healthz never said that the workers refused the damaged generation",
        )
        assert refused["reason"] == "published_index_refused" and refused["generation"] == new
        assert refused["workers"] == {"live": 2, "ready": 2, "booting": 0, "generations": {new: 2}}
