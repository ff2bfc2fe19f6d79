"""What each gunicorn worker of one server is doing, shared through one small file per worker.

``/healthz`` must answer for the whole site, not for whichever worker the
request reached. gunicorn.conf.py makes one folder per server (``when_ready``)
and calls ``enable(folder)`` in every new worker (``post_fork``). From then
on the worker keeps ``<folder>/<pid>.json`` current: ``booting`` until its
app is created, then its state, the generation it serves and its item count
(a ``StateKeeper`` thread rewrites it when any of these changes, atomically,
so a reader never sees half a file).

Readers count only files whose worker is alive and a child of the same
gunicorn master: the file of a worker that died, or of an earlier server
whose pid was reused, is ignored. A worker removes its own file when it
exits (``worker_exit``) and the master removes the file of a worker it reaps
(``child_exit``), for workers that were killed.

Outside gunicorn (``flask run``, the Flask test client) nothing is enabled
and ``/healthz`` answers for its own process.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BOOTING = "booting"  # forked, still creating its app (loading the model and index): takes no requests yet
KEEP_INTERVAL_S = 0.5  # how often a worker looks for a newly published generation and rewrites its file


def state_file(folder: Path, pid: int) -> Path:
    """The file worker ``pid`` keeps in ``folder``."""
    return Path(folder) / f"{pid}.json"


def parent_of(pid: int) -> int | None:
    """The parent pid of a running process, or None when it is gone (or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (command) state ppid ...": the command may hold spaces and parentheses
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 2 or fields[0] in ("Z", "X"):
        return None
    return int(fields[1])


@dataclass(frozen=True)
class WorkerStates:
    """The state files of one gunicorn master's workers, seen from worker ``pid``."""

    folder: Path
    master_pid: int
    pid: int

    def write(self, state: dict) -> None:
        """Replace this worker's file with ``state`` (plus its pid) in one ``os.replace``."""
        target = state_file(self.folder, self.pid)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.pid}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(dict(state, pid=self.pid), handle)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        """Remove this worker's file (it is exiting)."""
        state_file(self.folder, self.pid).unlink(missing_ok=True)

    def booting_siblings(self) -> list[int]:
        """The master's other workers that are still creating their app (no file yet, or ``booting``).

        Read from the master's list of children, so a worker forked a moment
        ago counts even before it has written its file.
        """
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        try:
            pids = [int(pid) for pid in children.read_text().split()]
        except OSError:  # a kernel without that list: the files alone
            pids = [int(path.stem) for path in self.folder.glob("*.json") if path.stem.isdigit()]
        booting = []
        for pid in pids:
            if pid == self.pid or parent_of(pid) != self.master_pid:
                continue
            try:
                state = json.loads(state_file(self.folder, pid).read_text(encoding="utf-8")).get("state")
            except FileNotFoundError:
                state = BOOTING  # forked, not yet past post_fork
            except (OSError, ValueError, AttributeError):
                continue
            if state == BOOTING:
                booting.append(pid)
        return booting

    def others(self) -> list[dict]:
        """The states of this master's other live workers, read from their files."""
        found = []
        try:
            paths = sorted(self.folder.glob("*.json"))
        except OSError:
            return found
        for path in paths:
            if not path.stem.isdigit() or int(path.stem) == self.pid:
                continue
            if parent_of(int(path.stem)) != self.master_pid:
                continue  # dead, or not one of ours
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # removed while we looked
            if isinstance(state, dict):
                found.append(state)
        return found


_this_worker: WorkerStates | None = None


def enable(folder: str | os.PathLike) -> WorkerStates:
    """Share this worker's state in ``folder`` from now on (called by gunicorn.conf.py's ``post_fork``)."""
    global _this_worker
    _this_worker = WorkerStates(Path(folder), master_pid=os.getppid(), pid=os.getpid())
    _this_worker.write({"state": BOOTING, "generation": None, "items": 0})
    return _this_worker


def this_worker() -> WorkerStates | None:
    """This process's ``WorkerStates`` when it is a gunicorn worker with sharing enabled, else None."""
    return _this_worker


def forget_this_worker() -> None:
    """Remove this worker's file (called by gunicorn.conf.py's ``worker_exit``)."""
    if _this_worker is not None:
        _this_worker.remove()


class StateKeeper:
    """A daemon thread that keeps one worker's file current.

    ``read_state()`` returns the worker's state as a dict; ``pick_up()``
    switches the worker to a newly published generation. Both run every
    ``KEEP_INTERVAL_S``, so a worker that gets no requests still follows a
    new build and says so, and ``/healthz`` is not held at 503 by an idle worker.
    """

    def __init__(self, states: WorkerStates, read_state, pick_up):
        self.states, self.read_state, self.pick_up = states, read_state, pick_up
        self._written: dict | None = None
        self._thread = threading.Thread(target=self._run, name="worker-state", daemon=True)

    def write_if_changed(self) -> None:
        """Write the worker's state when it differs from what its file says."""
        state = self.read_state()
        if state != self._written:
            self.states.write(state)
            self._written = state

    def start(self) -> None:
        """Write the state now, then keep it current in the background."""
        self.write_if_changed()
        self._thread.start()

    def _run(self) -> None:
        while True:  # as long as the worker lives (a daemon thread)
            time.sleep(KEEP_INTERVAL_S)
            try:
                self.pick_up()
                self.write_if_changed()
            except Exception:  # noqa: BLE001 - a full /tmp must not stop the keeper; the next round retries
                log.exception("Could not update this worker's state file")
