"""A real gunicorn on a unix socket behind a real Debian nginx running ``deploy/nginx.conf``.

gunicorn is started by the one launcher, ``tests/support/gunicorn.py``.

Used by the deployment test and by ``benchmarks/bench_hostile.py``. The
shipped site config is rendered into a temporary folder with only two
changes, both checked: nginx listens on a free loopback port instead of
port 80, and the upstream socket lives in the temporary folder. Clients may
connect from any 127.x.y.z source address, so a test can be several clients
to nginx's per-address limits. The shipped
main config around it (``deploy/nginx-main.conf``) is rendered the same way,
with nginx's pid, logs and buffers moved there too.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.gunicorn import REPO, free_port, gunicorn_env, spawn_gunicorn, stop_gunicorn

SITE_CONF = REPO / "deploy" / "nginx.conf"
SHIPPED_LISTEN = "listen 80 default_server;"
SHIPPED_SOCKET = "unix:/run/fashion-search/gunicorn.sock"

MAIN_CONF = REPO / "deploy" / "nginx-main.conf"
# what the harness changes in the shipped main config, each checked to be there once
_MAIN_CHANGES = (
    # as root, nginx would switch its workers to www-data, who cannot reach a socket in a private tmp folder
    ("user www-data;", "user root;\ndaemon off;"),
    ("pid /run/nginx.pid;", "pid {tmp}/nginx.pid;"),
    ("error_log /var/log/nginx/error.log;", "error_log {tmp}/error.log warn;"),
    (
        "access_log /var/log/nginx/access.log;",
        "access_log off;\n    client_body_temp_path {tmp}/client_body;\n    proxy_temp_path {tmp}/proxy;\n"
        "    fastcgi_temp_path {tmp}/fastcgi;\n    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;",
    ),
    ("include /etc/nginx/conf.d/*.conf;", "include {tmp}/site.conf;"),
)
# Linux routes all of 127.0.0.0/8 to the loopback: a test connects from this
# source address to be a client other than the attacker (127.0.0.1)
OTHER_CLIENT = "127.0.0.2"
_fresh_numbers = itertools.count(1)


def fresh_client() -> str:
    """A loopback source address no other call returned (127.1.x.y): a new client to nginx's per-address limits."""
    number = next(_fresh_numbers)
    return f"127.1.{number // 250 % 250}.{1 + number % 250}"


def multipart_photos(photos: list[bytes]) -> tuple[bytes, dict]:
    """One multipart search body with each of ``photos`` as an ``image`` field, and its Content-Type header."""
    boundary = uuid.uuid4().hex
    parts = [
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p{index}.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n"
        for index, data in enumerate(photos)
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def nginx_binary() -> str | None:
    """Debian's nginx (installed by scripts/install.sh), or None."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def render_site(port: int, socket_path: Path) -> str:
    """``deploy/nginx.conf`` with the loopback port and socket path put in."""
    text = SITE_CONF.read_text()
    for shipped in (SHIPPED_LISTEN, SHIPPED_SOCKET):
        if text.count(shipped) != 1:
            raise ValueError(f"deploy/nginx.conf no longer contains {shipped!r} exactly once")
    text = text.replace(SHIPPED_LISTEN, f"listen 127.0.0.1:{port} default_server;")
    return text.replace(SHIPPED_SOCKET, f"unix:{socket_path}")


def render_main(folder: Path) -> str:
    """``deploy/nginx-main.conf`` with pid, logs and buffers in ``folder`` and the site config from there."""
    text = MAIN_CONF.read_text()
    for shipped, replacement in _MAIN_CHANGES:
        if text.count(shipped) != 1:
            raise ValueError(f"deploy/nginx-main.conf no longer contains {shipped!r} exactly once")
        text = text.replace(shipped, replacement.format(tmp=folder))
    return text


@dataclass
class Deployment:
    """nginx on ``port`` in front of gunicorn on ``socket_path``."""

    port: int
    socket_path: Path
    folder: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60.0, source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
        """One request through nginx, from loopback address ``source``: status, headers (lower-case) and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the gunicorn and nginx logs, for failure messages."""
        parts = []
        for name in ("gunicorn.log", "error.log"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {name}\n" + (self.folder / name).read_text(errors="replace")[-chars:])
        return "\n".join(parts)


def _wait_for(check, timeout: float, what: str, deployment: Deployment) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in deployment.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: a process exited early\n{deployment.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} within {timeout:.0f} s\n{deployment.log_tail()}")


def _stop_nginx(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def socket_path_for_tests() -> Path:
    """A fresh unix socket path short enough for the 107-byte limit."""
    # unix socket paths are limited to 107 bytes; pytest's tmp paths can be long
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"fashion-{os.getpid()}-{free_port()}.sock"


def _start_nginx(result: Deployment) -> None:
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/install.sh installs it)")
    (result.folder / "site.conf").write_text(render_site(result.port, result.socket_path))
    (result.folder / "nginx.conf").write_text(render_main(result.folder))
    with open(result.folder / "nginx.out", "ab") as log:
        result.processes.append(
            subprocess.Popen(
                [binary, "-p", str(result.folder), "-c", str(result.folder / "nginx.conf")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )


@contextlib.contextmanager
def nginx_only(folder: Path, socket_path: Path | None = None) -> Iterator[Deployment]:
    """nginx with the shipped config in front of ``socket_path`` (default: a socket that does not exist)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = Deployment(free_port(), socket_path or socket_path_for_tests(), folder)
    _start_nginx(result)
    try:
        _wait_for(lambda: result.request("GET", "/healthz", timeout=5)[0] > 0, 30, "nginx did not start", result)
        yield result
    finally:
        for process in result.processes:
            _stop_nginx(process)


@contextlib.contextmanager
def deployment(folder: Path, catalogue: Path, index_dir: Path, *, workers: int = 2, extra_env: dict | None = None,
               start_timeout: float = 180.0) -> Iterator[Deployment]:
    """Start gunicorn (``tests/support/gunicorn.py``, bound to a unix socket) and nginx; stop both after.

    Yields once ``/healthz`` answers 200 through nginx.
    """
    folder.mkdir(parents=True, exist_ok=True)
    result = Deployment(free_port(), socket_path_for_tests(), folder)
    env = gunicorn_env(catalogue, index_dir, f"unix:{result.socket_path}", workers=workers, extra_env=extra_env)
    gunicorn = spawn_gunicorn(env, folder / "gunicorn.log")
    result.processes.append(gunicorn)
    try:
        _wait_for(result.socket_path.exists, start_timeout, "gunicorn did not create its socket", result)
        _start_nginx(result)
        _wait_for(lambda: result.request("GET", "/healthz", timeout=5)[0] == 200, start_timeout,
                  "the site did not become healthy through nginx", result)
        yield result
    finally:
        for process in result.processes[1:]:
            _stop_nginx(process)
        stop_gunicorn(gunicorn)
        with contextlib.suppress(OSError):
            result.socket_path.unlink()


class Slowloris:
    """``count`` connections that send a request one piece at a time and never finish.

    By default the pieces are header lines; with ``slow_body`` the headers
    are complete and the body of an upload trickles in a byte at a time.

    A background thread sends the next header line on every connection each
    ``interval`` seconds and reopens any connection the server closed, so
    ``count`` stay open for as long as the attack runs.
    """

    def __init__(self, port: int, count: int = 50, interval: float = 2.0, path: str = "/", *, slow_body: bool = False,
                 source: str = "127.0.0.1"):
        self.port, self.count, self.interval, self.path, self.source = port, count, interval, path, source
        # slow_body: complete headers of an upload, then its body a few bytes at a time
        self.slow_body = slow_body
        self.reopened = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(self.source, 0))
        if self.slow_body:
            sock.sendall(
                b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
        else:
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: x\r\n".encode())
        return sock

    def _run(self) -> None:
        line = 0
        while not self._stop.wait(self.interval):
            line += 1
            for index, sock in enumerate(self._socks):
                try:
                    sock.sendall(b"x" if self.slow_body else f"X-Slow-{line}: {line}\r\n".encode())
                except OSError:  # closed by the server: open another, the attack goes on
                    with contextlib.suppress(OSError):
                        sock.close()
                    with contextlib.suppress(OSError):
                        self._socks[index] = self._open()
                        self.reopened += 1

    def __enter__(self) -> Slowloris:
        self._socks = [self._open() for _ in range(self.count)]
        self._thread.start()
        return self

    def open_connections(self) -> int:
        """How many attack connections the server has not closed (peeked without blocking)."""
        alive = 0
        for sock in self._socks:
            try:
                sock.setblocking(False)
                data = sock.recv(1, socket.MSG_PEEK)
                alive += data != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sock.setblocking(True)
        return alive

    def answered(self, status: int) -> int:
        """How many attack connections the server has answered with ``status`` (peeked, not consumed)."""
        prefix = f"HTTP/1.1 {status} ".encode()
        count = 0
        for sock in self._socks:
            try:
                sock.setblocking(False)
                count += sock.recv(len(prefix), socket.MSG_PEEK) == prefix
            except OSError:  # nothing to read yet, or closed
                pass
            finally:
                with contextlib.suppress(OSError):
                    sock.setblocking(True)
        return count

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
