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
gone, or the worker timeout has passed (by then gunicorn kills a worker
that has not booted anyway). With no sibling booting, as on an ordinary
stop, it stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from .worker_states import WorkerStates

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a stopping worker looks at its booting siblings


def serve_until_siblings_boot(worker, states: WorkerStates, limit_s: float) -> None:
    """Make ``worker``'s SIGTERM wait (at most ``limit_s``) for siblings that are still booting.

    ``worker`` is the gunicorn worker; its own ``handle_exit`` stops it. Call
    from the worker's main thread, after gunicorn installed its handlers.
    """
    stop = worker.handle_exit
    waiting = threading.Lock()

    def stop_when_siblings_are_up(sig: int) -> None:
        deadline = time.monotonic() + limit_s
        booting = states.booting_siblings()
        log.info("Asked to stop while workers %s are loading: serving until they are ready", booting)
        while booting and time.monotonic() < deadline:
            time.sleep(POLL_S)
            booting = states.booting_siblings()
        if booting:
            log.warning("Stopping although workers %s are still loading after %.0f s", booting, limit_s)
        stop(sig, None)

    def on_sigterm(sig, frame) -> None:
        if not waiting.acquire(blocking=False):
            return  # already waiting: gunicorn repeats SIGTERM to workers it wants gone
        if not states.booting_siblings():
            stop(sig, frame)
            return
        threading.Thread(target=stop_when_siblings_are_up, args=(sig,), name="handover", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
