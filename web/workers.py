"""The gunicorn worker class: gthread, plus how long each request waited for a thread.

gunicorn's threaded worker accepts every connection at once and queues it
until one of its threads is free. The app only sees a request once a thread
picks it up, so a queue timeout measured inside the app (``ModelGate``)
misses the real wait: under overload, requests would pile up in that hidden
queue and time out on the client instead of getting a quick 503. This worker
notes how long each request waited for a thread; ``pool_wait_s()`` tells
the thread that handles it, and ``run_query`` counts that wait against the
gate's timeout. (Reading a slow client's upload happens after the wait, in
the thread, and does not count.)

Under the Flask test client or any other server, ``pool_wait_s()`` is 0.0
and only the time spent waiting at the gate counts.
"""

from __future__ import annotations

import threading
import time

from gunicorn.workers.gthread import ThreadWorker

_current = threading.local()


def pool_wait_s() -> float:
    """Seconds this thread's request waited in the worker's queue for a thread (0.0 when unknown)."""
    return getattr(_current, "pool_wait_s", 0.0)


class QueueTimedThreadWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker that records how long each request waited for a thread."""

    def enqueue_req(self, conn):
        """Note the time, then queue the connection for a thread as usual."""
        conn.fashion_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):
        """Handle one request in a pool thread, exposing its wait for the thread to the app."""
        queued = getattr(conn, "fashion_queued_at", None)
        _current.pool_wait_s = max(0.0, time.monotonic() - queued) if queued is not None else 0.0
        try:
            return super().handle(conn)
        finally:
            _current.pool_wait_s = 0.0
