"""The gunicorn worker class: gthread with searches in a thread pool of their own.

Three changes to gunicorn's threaded worker, each for one problem:

- **Quick requests never wait behind searches.** gunicorn's worker accepts
  every connection at once and queues it for one pool of threads. A search
  holds its thread for as long as it takes, most of it waiting for the
  worker's one model slot, so a few searches took every thread and a
  ``GET /`` or ``/healthz`` waited for them, even with another worker idle
  (BENCHMARKS.md, "Quick requests during searches"). Here a connection
  goes to one of two pools by the first bytes of its request line, peeked
  before any thread takes it: ``GET`` and ``HEAD`` to the quick pool
  (``FASHION_THREADS``), every other method, the searches, to the search
  pool (``FASHION_SEARCH_THREADS``). Searches beyond the search pool's
  threads queue as connections, which hold no thread.
- **The app sees how long a request queued.** The app only sees a request
  once a thread picks it up, so a timeout measured inside the app
  (``ModelGate``) would miss that wait: under overload, requests would time
  out on the client instead of getting a quick 503. ``pool_wait_s()`` tells
  the thread that handles a request how long it waited for that thread, and
  ``web/searching.py`` counts it against the gate's timeout and the
  request's deadline. (Reading a slow client's upload happens after the
  wait, in the thread, and does not count.)
- **A refused body is read before the connection closes.** The app answers
  some requests without reading their body (a 413 for one over the limit, a
  405, a 503 while starting). Closing a socket with the body still unread
  makes the peer's writes fail: nginx, still sending the body it buffered,
  reported a failed upstream and the shopper got 503 instead of 413. After
  the answer, the worker reads what is left of the body and drops it
  (at most ``DRAIN_MAX_BYTES`` within ``DRAIN_TIMEOUT_S``; nginx sends at
  most 10 MB, over a local socket, in milliseconds).

Under the Flask test client or any other server, ``pool_wait_s()`` is 0.0
and only the time spent waiting at the gate counts.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from concurrent import futures
from functools import partial

from gunicorn.http.errors import ParseException
from gunicorn.workers.gthread import ThreadWorker

from indexer.config import FIELDS

_current = threading.local()

QUICK, SEARCH = "quick", "search"
_QUICK_METHODS = (b"GET", b"HEAD")
_PEEK_BYTES = 16  # longer than any method this site answers, plus its space

DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_TIMEOUT_S = 5.0
_DRAIN_CHUNK = 64 * 1024


def pool_wait_s() -> float:
    """Seconds this thread's request waited in the worker's queue for a thread (0.0 when unknown)."""
    return getattr(_current, "pool_wait_s", 0.0)


def request_kind(first_bytes: bytes) -> str:
    """Which pool a request belongs to, from the first bytes of its request line.

    ``GET`` and ``HEAD`` (and the beginnings of those words, while the rest
    has not arrived) are quick; any other method may carry a body and is a
    search. Blank lines before the request line are skipped, as gunicorn
    skips them. Nothing at all (a closed connection) is quick: the handler
    only notices that it is gone.
    """
    data = first_bytes.lstrip(b"\r\n")
    method, space, _ = data.partition(b" ")
    if space:
        return QUICK if method in _QUICK_METHODS else SEARCH
    if len(data) < _PEEK_BYTES and any(quick.startswith(method) for quick in _QUICK_METHODS):
        return QUICK
    return SEARCH


def drain_body(body, sock, max_bytes: int = DRAIN_MAX_BYTES, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
    """Read and drop what is left of a request ``body``; True once it is all read.

    False when more than ``max_bytes`` remain, the client sends nothing for
    ``timeout_s`` in all, or the body is broken: the connection must then be
    closed as it is.
    """
    if body is None:
        return True
    deadline = time.monotonic() + timeout_s
    previous = sock.gettimeout()
    drained = 0
    try:
        while drained <= max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sock.settimeout(remaining)
            chunk = body.read(_DRAIN_CHUNK)
            if not chunk:
                return True
            drained += len(chunk)
        return False
    except (OSError, ParseException):  # a timeout, a reset, a malformed chunked body
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def search_threads() -> int:
    """Threads per worker for searches: ``FASHION_SEARCH_THREADS`` (gunicorn.conf.py has validated it)."""
    return FIELDS["search_threads"].read(os.environ)


class QueueTimedThreadWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker with a second pool for searches, queue times and drained bodies."""

    search_pool: futures.ThreadPoolExecutor | None = None

    def init_process(self):
        """Start the search pool beside gunicorn's own pool (which serves the quick requests)."""
        self.search_pool = futures.ThreadPoolExecutor(max_workers=search_threads(), thread_name_prefix="search")
        super().init_process()

    def run(self):
        """gunicorn's event loop; the search pool stops with it."""
        try:
            super().run()
        finally:
            self.search_pool.shutdown(wait=False)

    def handle_quit(self, sig, frame):
        """Immediate shutdown: drop the queued searches too."""
        if self.search_pool is not None:
            self.search_pool.shutdown(wait=False, cancel_futures=True)
        super().handle_quit(sig, frame)

    def enqueue_req(self, conn):
        """Hand the connection to the pool its request belongs to, once its first bytes have arrived.

        Runs in the worker's main loop. A new connection with nothing to
        read yet waits in the poller, as gunicorn's own deferred
        connections do, instead of in a thread.
        """
        if self.cfg.is_ssl:  # the first bytes are TLS, not a request line
            self._submit(self.tpool, conn)
            return
        first = self._first_bytes(conn)
        if first is None:
            if self.alive:
                self._wait_for_data(conn)
                return
            first = b""
        conn.data_ready = True  # gunicorn's handler need not wait for data in the thread
        self._submit(self.search_pool if request_kind(first) == SEARCH else self.tpool, conn)

    def _first_bytes(self, conn) -> bytes | None:
        """The start of the next request: already read by the parser, or peeked on the socket; None before any."""
        parser = getattr(conn, "parser", None)
        if parser is not None:
            buffered = parser.unreader.buf.getvalue()
            if buffered:
                return buffered[:_PEEK_BYTES]
        try:
            return conn.sock.recv(_PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:  # reset or closed: the handler finds out and closes it
            return b""

    def _wait_for_data(self, conn) -> None:
        # as gunicorn's finish_request() defers a connection that sent nothing
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def _submit(self, pool: futures.ThreadPoolExecutor, conn) -> None:
        conn.fashion_queued_at = time.monotonic()
        done = pool.submit(self.handle, conn)
        done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def handle(self, conn):
        """Handle one request in a pool thread, exposing its wait for the thread to the app."""
        queued = getattr(conn, "fashion_queued_at", None)
        _current.pool_wait_s = max(0.0, time.monotonic() - queued) if queued is not None else 0.0
        try:
            return super().handle(conn)
        finally:
            _current.pool_wait_s = 0.0

    def handle_request(self, req, conn):
        """gunicorn's request handling, then what is left of the request's body read and dropped."""
        keepalive = super().handle_request(req, conn)
        if not drain_body(req.body, conn.sock):
            return False
        return keepalive
