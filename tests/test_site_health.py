"""/healthz answers for the whole site, and old workers serve on while new ones boot.

Under gunicorn each worker keeps a state file (``web/worker_states.py``);
any worker's ``/healthz`` reads its siblings' files. Here a small stand-in
process plays the gunicorn master: its children (``sleep``) stand for the
other workers, whose files the test writes as those workers would, and the
test process is one more worker of it. (The test process itself is not the
master: other tests leave child processes of it running, such as the
decode pool's, which would count as workers.) A worker of another master,
a dead one and a zombie are not counted.

Fast, apart from the last test (the real model): no gunicorn here;
``tests/test_reload_nginx.py`` and ``tests/test_worker_lifecycle.py`` run
the real thing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.generations import publish_a_damaged_copy
from tests.support.gunicorn import load_gunicorn_conf
from web import worker_states
from web.boot_watchdog import BootWatchdog
from web.handover import ServerStop, serve_until_siblings_boot
from web.service import BUILDING, READY
from web.site_health import NOT_SERVING, REFUSED, site_health, worker_state
from web.worker_states import (
    BOOTING,
    EXITING,
    StateKeeper,
    WorkerStates,
    enable,
    parent_of,
    process_age_s,
    state_file,
)

# Reads commands on stdin: "spawn" starts a child and prints its pid; "close <fd>" closes
# a descriptor it was given (a listening socket), as gunicorn's master does when it stops.
STAND_IN_MASTER = """
import os, subprocess, sys
children = []
for line in sys.stdin:
    command, _, argument = line.strip().partition(" ")
    if command == "spawn":
        children.append(subprocess.Popen(["sleep", "60"]))
        print(children[-1].pid, flush=True)
    elif command == "close":
        os.close(int(argument))
        print("closed", flush=True)
for child in children:
    child.kill()
    child.wait()
"""


class StandInMaster:
    """A process that plays the gunicorn master: it starts "workers" and closes sockets when told."""

    def __init__(self, pass_fds=()):
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", STAND_IN_MASTER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, pass_fds=pass_fds,
        )
        self.pid = self.process.pid

    def _ask(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def spawn(self) -> int:
        """Start one more child (a sibling worker); returns its pid."""
        return int(self._ask("spawn"))

    def close(self, fd: int) -> None:
        """Close the master's copy of descriptor ``fd``."""
        assert self._ask(f"close {fd}") == "closed"

    def end(self) -> None:
        """Stop the master and its children."""
        self.process.stdin.close()
        self.process.wait(timeout=10)
        self.process.stdout.close()


@pytest.fixture
def master():
    stand_in = StandInMaster()
    yield stand_in
    stand_in.end()


@pytest.fixture
def children(master):
    """Start sibling workers (children of the stand-in master) on demand."""
    return master.spawn


@pytest.fixture
def states(tmp_path, master) -> WorkerStates:
    """This process as a worker of the stand-in master."""
    return WorkerStates(tmp_path, master_pid=master.pid, pid=os.getpid())


@pytest.fixture
def no_worker_sharing(monkeypatch):
    """Whatever a test enables, this process is no gunicorn worker again afterwards."""
    monkeypatch.setattr(worker_states, "_this_worker", None)


def _sibling(states: WorkerStates, pid: int, state: str, generation: str | None, items: int = 24,
             refused: str | None = None) -> None:
    WorkerStates(states.folder, states.master_pid, pid).write(
        {"state": state, "generation": generation, "items": items, "refused": refused}
    )


def _service(state: str = READY, generation: str | None = "gen-b", published: str | None = "gen-b", items: int = 24,
             refused: str | None = None):
    """The little of an ``IndexService`` that /healthz reads."""
    searcher = None
    if generation is not None:
        searcher = type("Searcher", (), {"generation": generation, "__len__": lambda self: items})()
    return SimpleNamespace(
        searcher=searcher,
        state=state,
        refused_generation=refused,
        status=lambda: {"message": "Indexing the catalogue."},
        published_generation=lambda: published,
    )


# ---------------------------------------------------------------- which processes count


def test_parent_of_a_live_a_reaped_and_a_zombie_process(master):
    assert parent_of(os.getpid()) == os.getppid()
    assert parent_of(master.spawn()) == master.pid
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    assert parent_of(reaped.pid) is None
    zombie = subprocess.Popen(["true"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    try:
        assert parent_of(zombie.pid) is None
    finally:
        zombie.wait()


def test_process_age(master):
    child = master.spawn()
    assert 0.0 <= process_age_s(child) <= process_age_s(master.pid) < 60  # seconds, not clock ticks
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    assert process_age_s(reaped.pid) is None


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
    assert states.others() == [{"state": READY, "generation": "gen-b", "items": 24, "refused": None, "pid": live}]


def test_a_write_replaces_the_whole_file_and_leaves_no_temporary(states):
    states.write({"state": BOOTING, "generation": None, "items": 0})
    states.write({"state": READY, "generation": "gen-b", "items": 24})
    assert sorted(p.name for p in states.folder.iterdir()) == [f"{os.getpid()}.json"]
    assert state_file(states.folder, os.getpid()).read_text().startswith('{"state": "ready"')


def test_an_exiting_worker_is_not_written_back_to_life(states):
    """worker_exit marks the file; a keeper round that comes later must not say ``ready`` again."""
    states.write({"state": READY, "generation": "gen-b", "items": 24})
    states.mark_exiting()
    states.write({"state": READY, "generation": "gen-c", "items": 25})
    assert '"state": "exiting"' in state_file(states.folder, os.getpid()).read_text()


def test_booting_siblings_include_one_forked_a_moment_ago(states, children):
    no_file_yet, booting, ready, exiting = children(), children(), children(), children()
    _sibling(states, booting, BOOTING, None)
    _sibling(states, ready, READY, "gen-b")
    _sibling(states, exiting, EXITING, None)  # left its request loop: nothing to wait for
    assert sorted(states.booting_siblings()) == sorted([no_file_yet, booting])


def test_an_older_child_without_a_file_is_not_a_booting_worker(states, children, monkeypatch):
    """A worker writes its file right after the fork: an older child without one is something else
    (the new master of a binary upgrade, a process the master ran), and nothing to wait for."""
    children()  # no file
    booting = children()
    _sibling(states, booting, BOOTING, None)
    monkeypatch.setattr(worker_states, "NEW_PROCESS_S", 0.0)  # every child is old by now
    assert states.booting_siblings() == [booting]


def test_the_test_process_own_children_are_no_siblings(states, children):
    """What broke the fast tier: children of the test process (a decode pool) counted as booting workers."""
    ours = subprocess.Popen(["sleep", "60"])
    try:
        assert states.booting_siblings() == []
    finally:
        ours.kill()
        ours.wait()


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


def test_a_state_file_that_cannot_be_written_never_stops_the_worker(tmp_path, master, caplog, no_worker_sharing):
    """A full /tmp, or a folder the worker may not write to: logged once, and tried again each round."""
    folder = tmp_path / "not-yet"
    enabled = enable(folder)  # post_fork's first write: no exception
    assert worker_states.this_worker() is enabled
    keeper = StateKeeper(enabled, read_state=lambda: {"state": READY}, pick_up=lambda: None)
    with caplog.at_level(logging.INFO, logger="web.worker_states"):
        keeper.keep()
        keeper.keep()
        folder.mkdir()
        keeper.keep()
    assert state_file(folder, os.getpid()).read_text().startswith('{"state": "ready"')
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 2  # enable's, then the keeper's: one line per outage, not one per round
    assert caplog.records[-1].getMessage() == "This worker's state file is written again"


def _require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("FASHION_REQUIRE_ROOT") == "1":
            pytest.fail("FASHION_REQUIRE_ROOT=1 but this test is not running as root")
        pytest.skip("needs root (set FASHION_REQUIRE_ROOT=1 to make this a failure)")


def test_files_written_as_root_belong_to_the_folder_owner(tmp_path, master):
    """Written before gunicorn drops to its --user: the workers must be able to read and replace them."""
    _require_root()
    nobody = 65534
    folder = tmp_path / "states"
    folder.mkdir()
    os.chown(folder, nobody, nobody)
    WorkerStates(folder, master.pid, os.getpid()).write({"state": BOOTING})
    owner = state_file(folder, os.getpid()).stat()
    assert (owner.st_uid, owner.st_gid) == (nobody, nobody)


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


def test_an_exiting_worker_takes_no_requests_and_does_not_count(states, children):
    _sibling(states, children(), EXITING, None, items=0)
    status, body = site_health(_service(), states)
    assert status == 200
    assert body["workers"] == {"live": 1, "ready": 1, "booting": 0, "generations": {"gen-b": 1}}


def test_a_refused_generation_leaves_the_site_healthy_on_the_previous_one(states, children):
    """Workers keep serving gen-a when the published gen-b fails verification: 200, saying so, not 503 forever."""
    sibling = children()
    _sibling(states, sibling, READY, "gen-a", refused="gen-b")
    status, body = site_health(_service(generation="gen-a", published="gen-b", refused="gen-b"), states)
    assert status == 200
    assert body["generation"] == "gen-a" and body["reason"] == REFUSED and body["refused"] == "gen-b"
    assert "gen-b" in body["message"]
    assert body["workers"] == {"live": 2, "ready": 2, "booting": 0, "generations": {"gen-a": 2}}

    # a worker that has not looked at gen-b yet serves gen-a too: the same answer
    _sibling(states, sibling, READY, "gen-a")
    assert site_health(_service(generation="gen-a", published="gen-b", refused="gen-b"), states)[0] == 200

    # one worker that could load it: the workers disagree, and the refusing one is behind
    _sibling(states, sibling, READY, "gen-b")
    status, body = site_health(_service(generation="gen-a", published="gen-b", refused="gen-b"), states)
    assert status == 503 and body["reason"] == NOT_SERVING and body["generation"] == "gen-b"


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
    assert worker_state(service) == {
        "state": READY, "generation": published, "items": len(service.searcher), "refused": None,
    }
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


def test_a_worker_refuses_a_damaged_generation_and_healthz_says_so(fake_index, make_fake_app, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(fake_index.index_dir, index_dir, symlinks=True)
    app = make_fake_app(fake_index.replace(index_dir=index_dir), autobuild=False)
    service = app.extensions["fashion.service"]
    good = service.searcher.generation
    damaged = publish_a_damaged_copy(index_dir)
    service.pick_up_published()
    assert service.searcher.generation == good and service.refused_generation == damaged
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["generation"], body["refused"], body["reason"]) == (good, damaged, REFUSED)


# ---------------------------------------------------------------- stopping during a reload


def _worker(stopped: threading.Event, master: StandInMaster, sockets=()) -> SimpleNamespace:
    """The parts of a gunicorn worker the handover uses."""
    return SimpleNamespace(handle_exit=lambda sig, frame: stopped.set(), ppid=master.pid, sockets=list(sockets))


@pytest.fixture
def sigterm():
    """Restore this process's SIGTERM handler after the test."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_stopping_worker_serves_until_its_siblings_have_booted(states, master, sigterm):
    """SIGTERM while a sibling boots: the stop waits for it; with none booting it is immediate."""
    stopped = threading.Event()
    sibling = master.spawn()
    _sibling(states, sibling, BOOTING, None)
    serve_until_siblings_boot(_worker(stopped, master), states, limit_s=60)
    os.kill(os.getpid(), signal.SIGTERM)
    assert not stopped.wait(0.3)  # still serving
    _sibling(states, sibling, READY, "gen-b")
    assert stopped.wait(10)

    stopped.clear()
    serve_until_siblings_boot(_worker(stopped, master), states, limit_s=60)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.wait(10)  # nobody to wait for


def test_the_handover_keeps_sigterm_from_interrupting_system_calls(states, master, sigterm):
    """gunicorn installs SIGTERM with SA_RESTART; replacing the handler must keep it."""

    class Sigaction(ctypes.Structure):  # glibc's struct sigaction
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                    ("restorer", ctypes.c_void_p)]

    sa_restart = 0x10000000
    libc = ctypes.CDLL(None, use_errno=True)
    serve_until_siblings_boot(_worker(threading.Event(), master), states, limit_s=60)
    action = Sigaction()
    assert libc.sigaction(signal.SIGTERM, None, ctypes.byref(action)) == 0
    assert action.flags & sa_restart


def test_the_worker_stops_even_when_looking_at_its_siblings_fails(master, sigterm):
    looks = iter([[12345]])

    def booting_siblings():
        return next(looks)  # StopIteration on the second look: something went wrong

    stopped = threading.Event()
    states = SimpleNamespace(booting_siblings=booting_siblings)
    serve_until_siblings_boot(_worker(stopped, master), states, limit_s=60)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.wait(10)


@pytest.fixture
def unix_listener(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "site.sock"))
    listener.listen()
    yield listener
    listener.close()


def test_a_stopping_master_is_told_by_the_listening_socket_it_closed(tcp_listener):
    """gunicorn's stop closes the master's listening sockets; a reload keeps them (TCP: no file to look at)."""
    master = StandInMaster(pass_fds=[tcp_listener.fileno()])
    try:
        server = ServerStop(master.pid, [tcp_listener])
        assert server.held and not server.stopping()
        master.close(tcp_listener.fileno())
        assert server.stopping()
    finally:
        master.end()


def test_a_stopping_master_is_told_by_the_unix_socket_file_it_removed(unix_listener):
    master = StandInMaster()  # holds no socket: only the file tells
    try:
        server = ServerStop(master.pid, [unix_listener])
        assert not server.held and not server.stopping()
        os.unlink(unix_listener.getsockname())
        assert server.stopping()
    finally:
        master.end()


@pytest.fixture
def tcp_listener():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener
    listener.close()


def test_a_waiting_worker_stops_once_the_server_stops(tmp_path, tcp_listener, sigterm):
    """systemctl stop during a reload: the old worker stops at once instead of waiting to be killed."""
    master = StandInMaster(pass_fds=[tcp_listener.fileno()])
    try:
        states = WorkerStates(tmp_path, master_pid=master.pid, pid=os.getpid())
        _sibling(states, master.spawn(), BOOTING, None)  # never finishes booting
        stopped = threading.Event()
        serve_until_siblings_boot(_worker(stopped, master, [tcp_listener]), states, limit_s=60)
        os.kill(os.getpid(), signal.SIGTERM)
        assert not stopped.wait(0.3)  # a reload: serving on
        master.close(tcp_listener.fileno())  # the master stops: it closes its sockets, then SIGTERMs the workers
        assert stopped.wait(10)
    finally:
        master.end()


# ---------------------------------------------------------------- the boot watchdog


def test_the_boot_watchdog_fires_unless_cancelled_in_time():
    fired = threading.Event()
    BootWatchdog(0.01, on_overrun=fired.set).start()
    assert fired.wait(10)

    fired.clear()
    watchdog = BootWatchdog(30, on_overrun=fired.set).start()
    watchdog.cancel()
    watchdog._thread.join(10)
    assert not watchdog._thread.is_alive() and not fired.is_set()


def test_the_boot_watchdog_ends_a_boot_that_was_told_to_stop():
    overrun, stopped, alive = threading.Event(), threading.Event(), threading.Event()
    alive.set()
    BootWatchdog(30, on_overrun=overrun.set, told_to_stop=lambda: not alive.is_set(), on_stop=stopped.set).start()
    assert not stopped.wait(0.3)
    alive.clear()  # gunicorn's SIGTERM handler ran
    assert stopped.wait(10) and not overrun.is_set()


# ---------------------------------------------------------------- gunicorn.conf.py's hooks


@pytest.fixture
def conf(monkeypatch):
    return load_gunicorn_conf(monkeypatch)


def _server(pid: int, folder=None, uid=None, gid=None) -> SimpleNamespace:
    cfg = SimpleNamespace(uid=os.geteuid() if uid is None else uid, gid=os.getegid() if gid is None else gid)
    return SimpleNamespace(pid=pid, cfg=cfg, fashion_worker_states=folder, log=logging.getLogger("test.gunicorn"))


def test_worker_exit_marks_the_file_in_a_worker_only(conf, states, no_worker_sharing):
    """gunicorn also runs worker_exit in the master, for a worker that was already gone."""
    states.write({"state": READY, "generation": "gen-b", "items": 24})
    worker_states._this_worker = states
    conf["worker_exit"](_server(pid=os.getpid()), None)  # called in the master
    assert '"state": "ready"' in state_file(states.folder, os.getpid()).read_text()
    conf["worker_exit"](_server(pid=states.master_pid), None)  # in the worker
    assert '"state": "exiting"' in state_file(states.folder, os.getpid()).read_text()


def test_post_fork_survives_a_state_folder_it_cannot_write(conf, tmp_path, monkeypatch, no_worker_sharing):
    """Any exception in post_fork is a worker that failed to boot, which stops the whole server."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # leave this process's malloc alone
    worker = SimpleNamespace(cfg=SimpleNamespace(timeout=0))
    conf["post_fork"](_server(pid=os.getppid(), folder=str(tmp_path / "gone")), worker)
    assert worker_states.this_worker() is not None


def test_when_ready_gives_the_folder_to_the_workers_user(conf):
    _require_root()
    server = _server(pid=os.getpid(), uid=65534, gid=65534)
    conf["when_ready"](server)
    try:
        owner = Path(server.fashion_worker_states).stat()
        assert (owner.st_uid, owner.st_gid) == (65534, 65534)
    finally:
        shutil.rmtree(server.fashion_worker_states)


# ---------------------------------------------------------------- loading before the first request


@pytest.mark.slow  # loads the real model
def test_with_a_published_index_the_app_is_ready_when_created(built_index):
    """A reload's new worker used to take requests at once and answer them with the starting page."""
    from web import create_app

    app = create_app(built_index, autobuild=False, TESTING=True)
    service = app.extensions["fashion.service"]
    assert service.state == READY and service.searcher.generation == service.published_generation()
    assert app.test_client().get("/").status_code == 200
