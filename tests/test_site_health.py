"""/healthz answers for the whole site: every gunicorn worker taking requests serves the published index.

Under gunicorn each worker keeps a state file (``web/worker_states.py``);
any worker's ``/healthz`` reads its siblings' files. Here the test process
plays the gunicorn master: its child processes (``sleep``) stand for the
other workers, whose files the test writes as those workers would.
A worker of another master, a dead one and a zombie are not counted.

Fast, apart from the last test (the real model): no gunicorn here;
``tests/test_reload_nginx.py`` runs the real thing behind nginx.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from types import SimpleNamespace

import pytest

from web.handover import serve_until_siblings_boot
from web.service import BUILDING, READY
from web.site_health import NOT_SERVING, site_health, worker_state
from web.worker_states import BOOTING, StateKeeper, WorkerStates, parent_of, state_file


@pytest.fixture
def children():
    """Start child processes of this test process on demand (other "workers"); all are killed after."""
    started: list[subprocess.Popen] = []

    def start() -> int:
        child = subprocess.Popen(["sleep", "60"])
        started.append(child)
        return child.pid

    yield start
    for child in started:
        child.kill()
        child.wait()


@pytest.fixture
def states(tmp_path) -> WorkerStates:
    """This process as a worker of a master that is this process too (so its children are siblings)."""
    return WorkerStates(tmp_path, master_pid=os.getpid(), pid=os.getpid())


def _sibling(states: WorkerStates, pid: int, state: str, generation: str | None, items: int = 24) -> None:
    WorkerStates(states.folder, states.master_pid, pid).write(
        {"state": state, "generation": generation, "items": items}
    )


def _service(state: str = READY, generation: str | None = "gen-b", published: str | None = "gen-b", items: int = 24):
    """The little of an ``IndexService`` that /healthz reads."""
    searcher = None
    if generation is not None:
        searcher = type("Searcher", (), {"generation": generation, "__len__": lambda self: items})()
    return SimpleNamespace(
        searcher=searcher,
        state=state,
        status=lambda: {"message": "Indexing the catalogue."},
        published_generation=lambda: published,
    )


# ---------------------------------------------------------------- which processes count


def test_parent_of_a_live_a_reaped_and_a_zombie_process(children):
    assert parent_of(os.getpid()) == os.getppid()
    assert parent_of(children()) == os.getpid()
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    assert parent_of(reaped.pid) is None
    zombie = subprocess.Popen(["true"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    try:
        assert parent_of(zombie.pid) is None
    finally:
        zombie.wait()


def test_only_live_children_of_the_same_master_are_read(states, children):
    live = children()
    dead = subprocess.Popen(["true"])
    dead.wait()
    _sibling(states, live, READY, "gen-b")
    _sibling(states, dead.pid, READY, "gen-a")  # its file outlived it
    _sibling(states, os.getppid(), READY, "gen-a")  # alive, but not a child of this master
    (states.folder / "notes.json").write_text("{}")
    (states.folder / f".{live}.123.tmp").write_text("half")  # a write in progress
    states.write({"state": READY, "generation": "gen-b", "items": 24})  # our own file: not an "other"
    assert states.others() == [{"state": READY, "generation": "gen-b", "items": 24, "pid": live}]


def test_a_write_replaces_the_whole_file_and_leaves_no_temporary(states):
    states.write({"state": BOOTING, "generation": None, "items": 0})
    states.write({"state": READY, "generation": "gen-b", "items": 24})
    assert sorted(p.name for p in states.folder.iterdir()) == [f"{os.getpid()}.json"]
    assert state_file(states.folder, os.getpid()).read_text().startswith('{"state": "ready"')
    states.remove()
    assert list(states.folder.iterdir()) == []


def test_booting_siblings_include_one_forked_a_moment_ago(states, children):
    no_file_yet, booting, ready = children(), children(), children()
    _sibling(states, booting, BOOTING, None)
    _sibling(states, ready, READY, "gen-b")
    assert sorted(states.booting_siblings()) == sorted([no_file_yet, booting])


def test_the_keeper_writes_only_what_changed(states):
    current = {"state": BOOTING, "generation": None, "items": 0}
    keeper = StateKeeper(states, read_state=lambda: dict(current), pick_up=lambda: None)
    keeper.write_if_changed()
    path = state_file(states.folder, os.getpid())
    first = path.stat().st_ino
    keeper.write_if_changed()
    assert path.stat().st_ino == first  # unchanged: not rewritten
    current.update(state=READY, generation="gen-b", items=24)
    keeper.write_if_changed()
    assert path.stat().st_ino != first and '"generation": "gen-b"' in path.read_text()


# ---------------------------------------------------------------- the answer


def test_every_worker_on_the_published_generation_is_200(states, children):
    _sibling(states, children(), READY, "gen-b")
    status, body = site_health(_service(), states)
    assert status == 200
    assert body == {
        "state": READY, "items": 24, "generation": "gen-b",
        "workers": {"live": 2, "ready": 2, "booting": 0, "generations": {"gen-b": 2}},
    }


def test_a_worker_still_on_the_previous_generation_makes_it_503(states, children):
    """The bug: one worker said 200 while another still served something else."""
    _sibling(states, children(), READY, "gen-a")
    status, body = site_health(_service(), states)
    assert status == 503
    assert body["reason"] == NOT_SERVING and body["message"] == "1 of 2 workers serve the published index."
    assert body["workers"] == {"live": 2, "ready": 1, "booting": 0, "generations": {"gen-b": 1, "gen-a": 1}}


def test_a_worker_that_answers_while_building_makes_it_503_with_its_state(states, children):
    _sibling(states, children(), BUILDING, None, items=0)
    status, body = site_health(_service(), states)
    assert status == 503 and body["state"] == BUILDING and body["reason"] == NOT_SERVING
    assert body["workers"]["live"] == 2 and body["workers"]["ready"] == 1


def test_this_worker_behind_the_published_generation_is_503(states, children):
    _sibling(states, children(), READY, "gen-c")
    status, body = site_health(_service(published="gen-c"), states)
    assert status == 503 and body["generation"] == "gen-c" and body["workers"]["ready"] == 1


def test_a_booting_worker_takes_no_requests_and_does_not_count(states, children):
    """A reload's new worker loads before it accepts a connection: the serving ones answer for the site."""
    _sibling(states, children(), BOOTING, None, items=0)
    children()  # forked, no file yet: not a live worker either
    status, body = site_health(_service(), states)
    assert status == 200
    assert body["workers"] == {"live": 1, "ready": 1, "booting": 1, "generations": {"gen-b": 1}}


def test_this_worker_building_answers_with_its_own_reason(states, children):
    _sibling(states, children(), READY, "gen-b")
    status, body = site_health(_service(state=BUILDING, generation=None, published=None, items=0), states)
    assert status == 503 and body["reason"] == BUILDING and body["message"] == "Indexing the catalogue."


def test_outside_gunicorn_the_process_answers_for_itself():
    status, body = site_health(_service(generation="gen-a", published="gen-b"), None)
    assert status == 200  # one process: ready is ready, as it always was
    assert body["workers"] == {"live": 1, "ready": 1, "booting": 0, "generations": {"gen-a": 1}}
    status, body = site_health(_service(items=0), None)
    assert status == 503 and body["reason"] == "empty_catalogue"


def test_the_route_reads_the_siblings(fake_index, make_fake_app, states, children):
    app = make_fake_app(fake_index)
    service = app.extensions["fashion.service"]
    published = service.published_generation()
    assert worker_state(service) == {"state": READY, "generation": published, "items": len(service.searcher)}
    app.extensions["fashion.worker_states"] = states
    sibling = children()
    _sibling(states, sibling, READY, "gen-older")
    client = app.test_client()
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.get_json()["workers"]["generations"] == {published: 1, "gen-older": 1}
    _sibling(states, sibling, READY, published)
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.get_json()["workers"]["ready"] == 2


# ---------------------------------------------------------------- stopping during a reload


def test_a_stopping_worker_serves_until_its_siblings_have_booted(states, children):
    """SIGTERM while a sibling boots: the stop waits for it; with none booting it is immediate."""
    stopped = threading.Event()
    worker = SimpleNamespace(handle_exit=lambda sig, frame: stopped.set())
    sibling = children()
    _sibling(states, sibling, BOOTING, None)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        serve_until_siblings_boot(worker, states, limit_s=60)
        os.kill(os.getpid(), signal.SIGTERM)
        assert not stopped.wait(0.3)  # still serving
        _sibling(states, sibling, READY, "gen-b")
        assert stopped.wait(10)

        stopped.clear()
        serve_until_siblings_boot(worker, states, limit_s=60)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.wait(10)  # nobody to wait for
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- loading before the first request


@pytest.mark.slow  # loads the real model
def test_with_a_published_index_the_app_is_ready_when_created(built_index):
    """A reload's new worker used to take requests at once and answer them with the starting page."""
    from web import create_app

    app = create_app(built_index, autobuild=False, TESTING=True)
    service = app.extensions["fashion.service"]
    assert service.state == READY and service.searcher.generation == service.published_generation()
    assert app.test_client().get("/").status_code == 200
