"""What each gunicorn worker of one server is doing, shared through one small file per worker.

``/healthz`` must answer for the whole site, not for whichever worker the
request reached. gunicorn.conf.py makes one folder per server (``when_ready``)
and calls ``enable(folder)`` in every new worker (``post_fork``). From then
on the worker keeps ``<folder>/<pid>.json`` current: ``booting`` until its
app is created, then its state, the generation it serves, its item count and
the published generation it refused, if any (a ``StateKeeper`` thread
rewrites it when any of these changes, atomically, so a reader never sees
half a file).

Readers count only files whose worker is alive and a child of the same
gunicorn master: the file of a worker that died, or of an earlier server
whose pid was reused, is ignored. A worker that exits marks its file
``exiting`` (``worker_exit``: it takes no more requests but is still a
child of the master for a moment) and the master removes the file of every
worker it reaps (``child_exit``), killed ones included.

A state file that cannot be written (a full ``/tmp``, a folder the worker
may not write to) is logged and tried again by the keeper; it never stops
the worker. When the master runs as root and the workers as another user,
the folder belongs to that user (``when_ready``) and every file takes the
folder's owner, so that the workers can replace and read each other's files.

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
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BOOTING = "booting"  # forked, still creating its app (loading the model and index): takes no requests yet
EXITING = "exiting"  # left its request loop (gunicorn's worker_exit): takes no more requests
KEEP_INTERVAL_S = 0.5  # how often a worker looks for a newly published generation and rewrites its file
# A child of the master with no state file yet counts as a booting worker
# only this long after it started: a worker writes its file right after the
# fork (post_fork), so an older child without one is something else, such as
# the new master of a binary upgrade (USR2) or a process the master ran.
NEW_PROCESS_S = 2.0


def state_file(folder: Path, pid: int) -> Path:
    """The file worker ``pid`` keeps in ``folder``."""
    return Path(folder) / f"{pid}.json"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state, ppid, ...), or None when the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (command) state ppid ...": the command may hold spaces and parentheses
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields


def parent_of(pid: int) -> int | None:
    """The parent pid of a running process, or None when it is gone (or a zombie waiting to be reaped)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def process_age_s(pid: int) -> float | None:
    """Seconds since process ``pid`` started, or None when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # field 22, starttime: clock ticks after boot, on the clock CLOCK_BOOTTIME reads
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)


@dataclass(frozen=True)
class WorkerStates:
    """The state files of one gunicorn master's workers, seen from worker ``pid``."""

    folder: Path
    master_pid: int
    pid: int
    # one write at a time, and none after the worker said it is exiting
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _exiting: threading.Event = field(default_factory=threading.Event, init=False, repr=False, compare=False)

    def write(self, state: dict) -> None:
        """Replace this worker's file with ``state`` (plus its pid) in one ``os.replace``.

        Raises ``OSError`` when it cannot. Does nothing once ``mark_exiting()``
        has run, so that a late keeper round cannot bring an exiting worker back.
        """
        with self._lock:
            if not self._exiting.is_set():
                self._replace(state)

    def mark_exiting(self) -> None:
        """Say that this worker takes no more requests (it is exiting); its file is not rewritten after this."""
        with self._lock:
            self._exiting.set()
            self._replace({"state": EXITING, "generation": None, "items": 0})

    def _replace(self, state: dict) -> None:
        target = state_file(self.folder, self.pid)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.pid}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                if os.geteuid() == 0:
                    # written before gunicorn drops to its --user: the workers must be able to read it
                    owner = os.stat(self.folder)
                    os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
                json.dump(dict(state, pid=self.pid), handle)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def booting_siblings(self) -> list[int]:
        """The master's other workers that are still creating their app.

        Those whose file says ``booting``, and children of the master so new
        (under ``NEW_PROCESS_S``) that they may not have written their file
        yet: read from the master's list of children, so a worker forked a
        moment ago counts before its first write.
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
                age = process_age_s(pid)
                state = BOOTING if age is not None and age < NEW_PROCESS_S else None
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
    """Share this worker's state in ``folder`` from now on (called by gunicorn.conf.py's ``post_fork``).

    Never raises for a file it cannot write: the worker boots anyway, and
    its ``StateKeeper`` tries again.
    """
    global _this_worker
    _this_worker = WorkerStates(Path(folder), master_pid=os.getppid(), pid=os.getpid())
    try:
        _this_worker.write({"state": BOOTING, "generation": None, "items": 0})
    except OSError:
        log.exception("Could not write this worker's state file in %s; trying again once its app is created", folder)
    return _this_worker


def this_worker() -> WorkerStates | None:
    """This process's ``WorkerStates`` when it is a gunicorn worker with sharing enabled, else None."""
    return _this_worker


def mark_this_worker_exiting() -> None:
    """Mark this worker's file ``exiting`` (called by gunicorn.conf.py's ``worker_exit``); the master removes it."""
    if _this_worker is None:
        return
    try:
        _this_worker.mark_exiting()
    except OSError:
        log.warning("Could not mark this worker's state file as exiting", exc_info=True)


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
        self._failing = False  # the last write failed (logged once)
        self._thread = threading.Thread(target=self._run, name="worker-state", daemon=True)

    def write_if_changed(self) -> None:
        """Write the worker's state when it differs from what its file says (raises ``OSError`` when it cannot)."""
        state = self.read_state()
        if state != self._written:
            self.states.write(state)
            self._written = state

    def start(self) -> None:
        """Write the state now, then keep it current in the background."""
        self._write()
        self._thread.start()

    def keep(self) -> None:
        """One round: pick up a newly published generation, then write the state if it changed.

        A file that cannot be written (a full ``/tmp``) is logged, once until
        it can be written again, and tried again on the next round: it must
        never stop the worker.
        """
        self.pick_up()
        self._write()

    def _write(self) -> None:
        try:
            self.write_if_changed()
        except OSError:
            if not self._failing:
                log.exception("Could not write this worker's state file; trying again every %.1f s", KEEP_INTERVAL_S)
            self._failing = True
            return
        if self._failing:
            log.info("This worker's state file is written again")
        self._failing = False

    def _run(self) -> None:
        while True:  # as long as the worker lives (a daemon thread)
            time.sleep(KEEP_INTERVAL_S)
            try:
                self.keep()
            except Exception:  # noqa: BLE001 - the keeper must outlive one bad round; the next one retries
                log.exception("Could not update this worker's state")
