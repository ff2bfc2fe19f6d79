"""Booting and stopping gunicorn workers, with the real server hooks and a stand-in app.

The app (``tests/support/held_app.py``) boots for as long as a hold file
exists, so a test decides when a worker has finished creating its app:

* A stop (SIGTERM to the master, ``systemctl stop``) during a reload: the
  old workers, which serve on while new ones boot, stop at once, since the
  master has closed the listening sockets, and the new ones stop booting.
  The old ones used to wait for the new workers, and those to finish
  loading, until gunicorn killed them (SIGKILL after ``graceful_timeout``).
  Once with a unix socket (its file is removed) and once with TCP.
  gunicorn's master itself handles no signal during a reload until the old
  workers are gone or ``graceful_timeout`` has passed, so the stop is only
  acted on after that: the test sets it to 8 s instead of the shipped 30.
* A worker whose app is not created within the worker timeout ends itself
  and gunicorn starts another; gunicorn's own timeout does not cover a
  worker that has not booted, so it used to hang for good.

Slow: real gunicorn processes, several seconds each.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.gunicorn import LOOPBACK, REPO, free_port, gunicorn_env, log_tail, stop_gunicorn
from tests.support.reloads import worker_pids

pytestmark = pytest.mark.slow


GRACEFUL_S = 8  # gunicorn's graceful_timeout here: how long a reload and a stop wait for old workers


def _start(tmp_path: Path, bind: str, hold: Path, *, workers: int, extra_env: dict | None = None) -> subprocess.Popen:
    """gunicorn with gunicorn.conf.py over the held app; its temporary files (the state folder) under tmp_path."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = gunicorn_env(tmp_path / "catalogue", tmp_path / "index", bind, workers=workers,
                       extra_env={"FASHION_METRICS": "off", "HELD_APP_HOLD": str(hold), "TMPDIR": str(tmp_path / "tmp"),
                                  "GUNICORN_CMD_ARGS": f"--graceful-timeout {GRACEFUL_S}", **(extra_env or {})})
    with open(tmp_path / "gunicorn.log", "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "tests.support.held_app:app"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(check, what: str, log: Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}\n{log_tail(log)}"
        time.sleep(0.1)


def _states(tmp_path: Path) -> dict[int, str]:
    """The state each worker's file says, by pid."""
    found = {}
    for path in (tmp_path / "tmp").glob("fashion-workers-*/*.json"):
        with contextlib.suppress(OSError, ValueError):
            found[int(path.stem)] = json.loads(path.read_text())["state"]
    return found


def _two_in(tmp_path: Path, state: str) -> set[int] | None:
    """The pids of the two workers in ``state``, or None unless there are exactly two."""
    pids = {pid for pid, said in _states(tmp_path).items() if said == state}
    return pids if len(pids) == 2 else None


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


@pytest.mark.parametrize("listener", ["unix", "tcp"])
def test_a_stop_during_a_reload_does_not_wait_for_the_new_workers(tmp_path, listener):
    bind = f"unix:{tmp_path / 'site.sock'}" if listener == "unix" else f"{LOOPBACK}:{free_port()}"
    hold, log = tmp_path / "hold", tmp_path / "gunicorn.log"
    server = _start(tmp_path, bind, hold, workers=2)
    try:
        old = _wait(lambda: _two_in(tmp_path, "ready"), "the workers never booted", log)

        hold.touch()  # the reload's new workers stay booting
        server.send_signal(signal.SIGHUP)
        new = _wait(lambda: _two_in(tmp_path, "booting"), "the reload never forked new workers", log)
        assert _alive(old) == old  # told to stop, they serve on while the new ones boot

        server.send_signal(signal.SIGTERM)  # systemctl stop
        # everyone exits without the new workers ever finishing their boot (the hold stays)
        assert server.wait(timeout=60) == 0
        assert not _alive(old | new) and hold.exists()
    finally:
        hold.unlink(missing_ok=True)
        stop_gunicorn(server)
    text = log.read_text(errors="replace")
    assert "SIGKILL" not in text, log_tail(log)
    assert text.count("The server is stopping: not waiting for workers") == 2, log_tail(log)
    assert text.count("was told to stop while creating its app: exiting now") == 2, log_tail(log)
    assert not list((tmp_path / "tmp").glob("fashion-workers-*"))  # on_exit removed the state folder


def test_a_worker_that_does_not_boot_within_the_timeout_is_replaced(tmp_path):
    port = free_port()
    hold, log = tmp_path / "hold", tmp_path / "gunicorn.log"
    hold.touch()  # the first workers hang while creating their app
    server = _start(tmp_path, f"{LOOPBACK}:{port}", hold, workers=1, extra_env={"FASHION_WORKER_TIMEOUT": "3"})
    try:
        first = _wait(lambda: worker_pids(server.pid), "no worker was forked", log)
        _wait(lambda: "did not create its app within 3 s" in log.read_text(errors="replace"),
              "the hung worker was never ended", log)
        _wait(lambda: not _alive(first), "the hung worker is still there", log)
        assert server.poll() is None, log_tail(log)  # one hung worker does not stop the server

        hold.unlink()
        _wait(lambda: _get(port) == 200, "the replacement worker never answered", log)
    finally:
        hold.unlink(missing_ok=True)
        stop_gunicorn(server)
    assert "Worker failed to boot" not in log.read_text(errors="replace"), log_tail(log)


def _get(port: int) -> int | None:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()
