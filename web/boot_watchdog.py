"""A time limit on a gunicorn worker's boot (creating its app), which gunicorn itself does not have.

gunicorn's worker timeout counts from the worker's first heartbeat, which
it sends only once it runs its request loop: a worker that hangs while its
app is created (loading the model, opening the index on a stuck mount) is
never killed, and during a reload the old workers wait for it
(``web/handover.py``). gunicorn.conf.py starts a ``BootWatchdog`` right
after the fork (``post_fork``) and cancels it once the app is created
(``post_worker_init``); if that has not happened within the worker timeout
(``FASHION_WORKER_TIMEOUT``), the worker logs why and exits, and gunicorn
forks a new one, as after its own timeout.

A worker told to stop while it boots (the server stops during a reload)
has nothing to finish: gunicorn would let it load the model and the index
and only then stop it. The watchdog ends it at once instead.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Not gunicorn's "failed to boot" (3), which would stop the whole server:
# gunicorn replaces a worker that exits with this one.
BOOT_TIMEOUT_EXIT = 1
POLL_S = 0.2  # how often the watchdog looks whether the booting worker was told to stop


class BootWatchdog:
    """Watches one boot from a daemon thread until ``cancel()``.

    Calls ``on_stop()`` as soon as ``told_to_stop()`` is true, and
    ``on_overrun()`` once ``limit_s`` have passed since ``start()``.
    """

    def __init__(self, limit_s: float, on_overrun: Callable[[], None],
                 told_to_stop: Callable[[], bool] = lambda: False, on_stop: Callable[[], None] = lambda: None) -> None:
        self.limit_s = limit_s
        self.on_overrun, self.told_to_stop, self.on_stop = on_overrun, told_to_stop, on_stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="boot-watchdog", daemon=True)

    def start(self) -> BootWatchdog:
        """Start counting."""
        self._thread.start()
        return self

    def cancel(self) -> None:
        """The boot finished: call neither."""
        self._done.set()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._done.wait(max(0.0, min(POLL_S, deadline - time.monotonic()))):
            if self.told_to_stop():
                self.on_stop()
                return
            if time.monotonic() >= deadline:
                self.on_overrun()
                return


_this_boot: BootWatchdog | None = None


def watch_this_boot(limit_s: float, told_to_stop: Callable[[], bool]) -> None:
    """From gunicorn's ``post_fork``: end this worker unless ``boot_finished()`` is called within ``limit_s``,
    or as soon as ``told_to_stop()`` (gunicorn's SIGTERM handler has run) while it boots."""
    global _this_boot

    def overrun() -> None:
        log.critical("Worker %d did not create its app within %.0f s (FASHION_WORKER_TIMEOUT): exiting so that "
                     "gunicorn starts another", os.getpid(), limit_s)
        _exit(BOOT_TIMEOUT_EXIT)

    def stop() -> None:
        log.info("Worker %d was told to stop while creating its app: exiting now", os.getpid())
        _exit(0)

    _this_boot = BootWatchdog(limit_s, overrun, told_to_stop, stop).start()


def _exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)  # the main thread is busy creating the app: a normal exit would wait for it


def boot_finished() -> None:
    """Cancel this process's boot watchdog (from gunicorn's ``post_worker_init``, once the app is created)."""
    if _this_boot is not None:
        _this_boot.cancel()
