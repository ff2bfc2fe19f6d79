"""Reloads without a gap: a stopping worker serves on while its replacements are still loading.

On HUP (``systemctl reload``) gunicorn forks the new workers and at once
tells the old ones to stop (SIGTERM). A new worker loads the model and the
index before it takes a request (``web/service.py``), which takes seconds
to tens of seconds. Had the old workers stopped at once, nobody would
accept connections meanwhile: requests would pile up in the socket's
backlog, and once it is full nginx's connects fail (502, which the shipped
config answers as 503).

So each worker's SIGTERM handler (installed by gunicorn.conf.py's
``post_worker_init``) first looks at its siblings: while any of them is
still booting (``web/worker_states.py``), it keeps serving, checking again
every ``POLL_S``, and stops the way gunicorn would once they are all up,
gone, or the worker timeout has passed (a worker that has not created its
app by then ends itself: ``web/boot_watchdog.py``). With no sibling
booting, as on an ordinary stop, it stops at once.

It also stops at once when the whole server is stopping (SIGTERM or SIGINT
to the master, ``systemctl stop``), even during a reload: the master then
closes its listening sockets (and removes a unix socket's file) before it
tells the workers to stop, so a waiting worker would get no connection
anyway, and the master would kill it after its ``graceful_timeout``.
``ServerStop`` notices that.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time

from .worker_states import WorkerStates

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a stopping worker looks at its booting siblings
_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


def socket_inodes(pid: int) -> set[int] | None:
    """The inodes of the sockets process ``pid`` has open, or None when its descriptors cannot be read."""
    found = set()
    try:
        with os.scandir(f"/proc/{pid}/fd") as entries:
            for entry in entries:
                try:
                    match = _SOCKET_LINK.fullmatch(os.readlink(entry.path))
                except OSError:
                    continue  # closed while we looked
                if match:
                    found.add(int(match.group(1)))
    except FileNotFoundError:
        return set()  # the process is gone: it holds nothing
    except OSError:
        return None  # not ours to read (a master running as another user)
    return found


class ServerStop:
    """Tells whether the gunicorn master has begun to stop the server.

    gunicorn's ``Arbiter.stop()`` closes the listening sockets in the master
    (and unlinks a unix socket's file) before it signals the workers. A
    reload keeps them open. So the server is stopping when the file of one of
    the worker's unix sockets is gone or replaced, or when the master holds
    none of the listening sockets it held when this worker started (checked
    only when the master's descriptors can be read and it held some: with
    ``reuse_port`` each worker has sockets of its own).
    """

    def __init__(self, master_pid: int, sockets) -> None:
        self.master_pid = master_pid
        self.paths: dict[str, int] = {}
        inodes = set()
        for listener in sockets:
            try:
                inodes.add(os.fstat(listener.fileno()).st_ino)
                name = listener.getsockname()
                if listener.family == socket.AF_UNIX and isinstance(name, str) and name:
                    self.paths[name] = os.stat(name).st_ino
            except OSError:
                continue
        self.held = inodes & (socket_inodes(master_pid) or set())

    def stopping(self) -> bool:
        """True once the master closed the listening sockets (it is stopping, or gone)."""
        for path, inode in self.paths.items():
            try:
                if os.stat(path).st_ino != inode:
                    return True
            except FileNotFoundError:
                return True
            except OSError:
                continue
        if self.held:
            still = socket_inodes(self.master_pid)
            return still is not None and not (still & self.held)
        return False


def serve_until_siblings_boot(worker, states: WorkerStates, limit_s: float) -> None:
    """Make ``worker``'s SIGTERM wait (at most ``limit_s``) for siblings that are still booting.

    ``worker`` is the gunicorn worker; its own ``handle_exit`` stops it, its
    ``ppid`` and ``sockets`` tell when the whole server is stopping. Call from
    the worker's main thread, after gunicorn installed its handlers.
    """
    stop = worker.handle_exit
    server = ServerStop(worker.ppid, worker.sockets)
    waiting = threading.Lock()

    def stop_when_siblings_are_up(sig: int, booting: list[int]) -> None:
        try:
            deadline = time.monotonic() + limit_s
            log.info("Asked to stop while workers %s are loading: serving until they are ready", booting)
            while booting and time.monotonic() < deadline:
                time.sleep(POLL_S)
                if server.stopping():
                    log.info("The server is stopping: not waiting for workers %s any longer", booting)
                    return
                booting = states.booting_siblings()
            if booting:
                log.warning("Stopping although workers %s are still loading after %.0f s", booting, limit_s)
        except Exception:  # noqa: BLE001 - whatever went wrong, the worker must still stop
            log.exception("Could not look at the loading workers: stopping now")
        finally:
            stop(sig, None)

    def on_sigterm(sig, frame) -> None:
        if not waiting.acquire(blocking=False):
            return  # already waiting: gunicorn repeats SIGTERM to workers it wants gone
        booting = [] if server.stopping() else states.booting_siblings()
        if not booting:
            stop(sig, frame)
            return
        threading.Thread(target=stop_when_siblings_are_up, args=(sig, booting), name="handover", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    # signal.signal() installs without SA_RESTART; gunicorn's init_signals had asked for it so
    # that a SIGTERM does not interrupt the system calls of requests in flight
    signal.siginterrupt(signal.SIGTERM, False)
