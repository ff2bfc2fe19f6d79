"""Pages and health checks are not held up by searches: the worker routes each request to a pool by its method.

gunicorn's threaded worker queued every connection for one pool of threads,
so a few searches (each waiting for the worker's one model slot) took all
of them and a ``GET /`` or ``/healthz`` waited up to 17.5 s behind them.
``web.workers.QueueTimedThreadWorker`` peeks at each request's first bytes
before a thread takes it: ``GET`` and ``HEAD`` go to one pool, everything
else (the searches) to another. It also reads what is left of a body the
app answered without reading, so nginx never sees the connection fail.
"""

from __future__ import annotations

import io
import selectors
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from tests.support.proxy import deployment, fresh_client, multipart_photos, nginx_binary
from web.workers import QUICK, SEARCH, QueueTimedThreadWorker, drain_body, request_kind


@pytest.mark.parametrize(
    ("first_bytes", "kind"),
    [
        (b"GET / HTTP/1.1\r\n", QUICK),
        (b"HEAD /healthz HTTP/1.1", QUICK),
        (b"GET", QUICK),  # the rest has not arrived: it can only be GET
        (b"HE", QUICK),
        (b"\r\nGET /api/status HTTP/1.1", QUICK),  # a blank line before the request line is skipped
        (b"", QUICK),  # closed: the handler only finds out and closes it
        (b"POST /api/search HTTP/1.1", SEARCH),
        (b"POST", SEARCH),
        (b"P", SEARCH),
        (b"PUT / HTTP/1.1", SEARCH),
        (b"GETX / HTTP/1.1", SEARCH),  # not GET: no quick thread for what may carry a body
        (b"G" * 16, SEARCH),
    ],
)
def test_request_kind_by_the_first_bytes(first_bytes, kind):
    assert request_kind(first_bytes) == kind


class RecordingPool:
    """Stands in for a thread pool: records what it was given."""

    def __init__(self):
        self.conns = []

    def submit(self, fn, conn):
        self.conns.append(conn)
        return Future()


@pytest.fixture
def worker():
    """A worker with recording pools and a real poller (no gunicorn arbiter needed for its queueing)."""
    worker = object.__new__(QueueTimedThreadWorker)
    worker.cfg = SimpleNamespace(is_ssl=False, keepalive=5)
    worker.alive = True
    worker.tpool, worker.search_pool = RecordingPool(), RecordingPool()
    worker.poller = selectors.DefaultSelector()
    worker.pending_conns = deque()
    worker.method_queue = SimpleNamespace(defer=lambda *args: None)
    yield worker
    worker.poller.close()


@pytest.fixture
def connection():
    """A worker's connection (gunicorn's ``TConn``) and the client's end of it."""
    client, server = socket.socketpair()
    conn = TConn(SimpleNamespace(), server, ("127.0.0.1", 1), ("127.0.0.1", 2))
    yield conn, client
    client.close()
    server.close()


def test_a_get_goes_to_the_quick_pool_and_a_post_to_the_search_pool(worker):
    for request, pool in ((b"GET /healthz HTTP/1.1\r\n\r\n", worker.tpool),
                          (b"POST /api/search HTTP/1.1\r\n", worker.search_pool)):
        client, server = socket.socketpair()
        client.sendall(request)
        conn = TConn(SimpleNamespace(), server, ("127.0.0.1", 1), ("127.0.0.1", 2))
        before = time.monotonic()
        worker.enqueue_req(conn)
        assert pool.conns == [conn]
        assert conn.fashion_queued_at >= before  # the thread's wait is counted from here
        assert conn.data_ready  # so gunicorn's handler does not wait for data again in the thread
        assert server.recv(4, socket.MSG_PEEK) == request[:4]  # peeked, not consumed
        client.close()
        server.close()


def test_a_connection_that_sent_nothing_yet_waits_in_the_poller_not_in_a_thread(worker, connection):
    conn, client = connection
    worker.enqueue_req(conn)
    assert worker.tpool.conns == worker.search_pool.conns == []
    assert list(worker.pending_conns) == [conn]
    client.sendall(b"POST /search HTTP/1.1\r\n")
    [(key, _)] = worker.poller.select(timeout=5)
    key.data(key.fileobj)  # gunicorn's on_pending_socket_readable: queue it again, now with data
    assert worker.search_pool.conns == [conn] and not worker.pending_conns


def test_a_request_already_read_ahead_is_routed_by_what_the_parser_holds(worker, connection):
    """A keep-alive connection whose next request is buffered: the socket itself has nothing to peek."""
    conn, _ = connection
    conn.parser = SimpleNamespace(unreader=SimpleNamespace(buf=io.BytesIO(b"POST /api/search HTTP/1.1\r\n")))
    worker.enqueue_req(conn)
    assert worker.search_pool.conns == [conn]


def _body_over_socket(sent: bytes, length: int):
    """A gunicorn request body of ``length`` bytes, of which the client sends ``sent`` (from a thread: it may
    not fit in the socket's buffer)."""
    client, server = socket.socketpair()
    threading.Thread(target=_send_quietly, args=(client, sent), daemon=True).start()
    return Body(LengthReader(SocketUnreader(server), length)), server, client


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the test closed the socket first
        pass


def test_what_is_left_of_a_body_is_read_before_the_connection_closes(monkeypatch):
    body, server, client = _body_over_socket(b"x" * 300_000, 300_000)
    try:
        body.read(1000)  # the app read a little, then answered
        monkeypatch.setattr(ThreadWorker, "handle_request", lambda self, req, conn: True)
        worker = object.__new__(QueueTimedThreadWorker)
        assert worker.handle_request(SimpleNamespace(body=body), SimpleNamespace(sock=server)) is True
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing left unread on the socket
            server.recv(1)
    finally:
        client.close()
        server.close()


def test_draining_gives_up_on_a_body_over_the_cap_or_a_client_that_stalls():
    body, server, client = _body_over_socket(b"x" * 200_000, 200_000)
    assert drain_body(body, server, max_bytes=100_000) is False
    client.close()
    server.close()
    body, server, client = _body_over_socket(b"x" * 10, 1000)  # promises 1000 bytes, sends 10
    try:
        assert drain_body(body, server, timeout_s=0.2) is False
        assert server.gettimeout() is None  # the socket is left as it was
    finally:
        client.close()
        server.close()
    assert drain_body(None, server) is True  # no body at all


# ---------------------------------------------------------------- through nginx, with gunicorn's real worker


@pytest.mark.slow  # real nginx and gunicorn, the model in a worker
def test_pages_and_health_checks_are_answered_at_once_while_8_four_photo_searches_run(
    built_index, demo_catalogue, tmp_path
):
    """One worker, 8 searches of 4 photos each at all times. With one pool of 4 threads, each quick request
    queued behind the 4 searches waiting for a thread: about 5 searches were answered while it waited. Now it
    finds a free thread at once, so searches are rarely answered meanwhile (0 on average, now and then one).
    """
    if nginx_binary() is None:
        pytest.skip("nginx not installed: run scripts/install.sh")
    photos = [(demo_catalogue / f"{number}.jpg").read_bytes() for number in (3, 40, 77, 101)]
    body, headers = multipart_photos(photos)
    extra = {"FASHION_THREADS": "4", "FASHION_SEARCH_THREADS": "2", "FASHION_RESCAN_SECONDS": "0"}
    stop = threading.Event()
    searches: list[tuple[float, int]] = []  # (when answered, status)

    def search_loop(site) -> None:
        while not stop.is_set():
            status = site.request("POST", "/api/search", body=body, headers=headers, timeout=120,
                                  source=fresh_client())[0]
            searches.append((time.monotonic(), status))

    with deployment(tmp_path / "site", built_index.catalogue, built_index.index_dir, workers=1,
                    extra_env=extra) as site:
        loops = [threading.Thread(target=search_loop, args=(site,), daemon=True) for _ in range(8)]
        for loop in loops:
            loop.start()
        while len(searches) < 8:  # searches are being answered: the worker is busy with them
            time.sleep(0.05)
        probes = []
        for index in range(30):
            path = ("/", "/healthz", "/api/status")[index % 3]
            started = time.monotonic()
            status, _, payload = site.request("GET", path, timeout=60, source=fresh_client())
            probes.append((path, status, started, time.monotonic()))
        stop.set()
        for loop in loops:
            loop.join(timeout=180)
    assert [status for _, status, _, _ in probes] == [200] * 30, probes
    assert {status for _, status in searches} <= {200, 503}, searches
    during = [sum(started < answered < done for answered, _ in searches) for _, _, started, done in probes]
    assert searches[-1][0] > probes[-1][3]  # the searches were still running when the last probe was answered
    assert sum(during) / len(during) < 1.5, during
