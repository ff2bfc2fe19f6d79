"""The model gate counts time queued in gunicorn's thread pool against its timeout."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from gunicorn.workers.gthread import ThreadWorker

from web.searching import Busy, ModelGate
from web.workers import QueueTimedThreadWorker, pool_wait_s


def _hold(gate: ModelGate, release: threading.Event, held: threading.Event) -> None:
    with gate.slot():
        held.set()
        release.wait(5)


@pytest.fixture
def busy_gate():
    """A gate (1 slot, 2 s timeout) whose slot another thread holds for the test."""
    gate = ModelGate(slots=1, timeout_s=2.0)
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(gate, release, held), daemon=True)
    holder.start()
    assert held.wait(5)
    yield gate
    release.set()
    holder.join(5)


def test_request_that_queued_past_the_timeout_gets_busy_at_once(busy_gate):
    started = time.monotonic()
    with pytest.raises(Busy), busy_gate.slot(already_waited_s=2.5):
        pass
    assert time.monotonic() - started < 0.5


def test_time_already_queued_shortens_the_wait(busy_gate):
    started = time.monotonic()
    with pytest.raises(Busy), busy_gate.slot(already_waited_s=1.8):
        pass
    assert 0.1 <= time.monotonic() - started < 1.0


def test_free_slot_is_given_even_when_the_budget_is_spent():
    gate = ModelGate(slots=1, timeout_s=0.5)
    with gate.slot(already_waited_s=10.0):
        pass


def test_worker_exposes_the_pool_wait_to_the_handling_thread(monkeypatch):
    seen = {}
    monkeypatch.setattr(ThreadWorker, "handle", lambda self, conn: seen.setdefault("wait", pool_wait_s()))
    worker = object.__new__(QueueTimedThreadWorker)  # no gunicorn arbiter needed for this method
    # queued 3 s ago (tests/test_quick_requests.py checks that queueing notes the time)
    conn = SimpleNamespace(fashion_queued_at=time.monotonic() - 3.0)
    worker.handle(conn)
    assert seen["wait"] >= 3.0
    assert pool_wait_s() == 0.0  # reset once the request is done


def test_pool_wait_is_zero_outside_gunicorn():
    assert pool_wait_s() == 0.0
