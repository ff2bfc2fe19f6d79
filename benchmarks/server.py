"""Helpers for the web benchmarks: a real gunicorn server on loopback, and a tiny HTTP client.

``gunicorn_server()`` starts ``python -m gunicorn -c gunicorn.conf.py app:app``
from the project root on a free ``127.0.0.1`` port, waits (bounded) for
``/healthz`` to answer 200, and always stops the server again (SIGTERM, then
SIGKILL). The client side uses only the standard library (``http.client``),
so the benchmarks need nothing beyond the runtime requirements.

Everything here talks to loopback only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchmarks.common import DEFAULT_DATASET, load_average, rss_mb
from benchmarks.common import REPO_ROOT as ROOT
from tests.support.gunicorn import LOOPBACK, free_port, gunicorn_env, spawn_gunicorn, stop_gunicorn

__all__ = [
    "DEFAULT_DATASET",
    "OUT_DIR",
    "ROOT",
    "FilePart",
    "Response",
    "Server",
    "build_index_cli",
    "gunicorn_server",
    "index_is_fresh",
    "load_average",
    "post_search",
    "request",
    "summary_ms",
]

OUT_DIR = ROOT / "benchmarks" / "out"

# ---------------------------------------------------------------- processes and memory


def worker_rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (``common.rss_mb``); 0.0 when it is gone."""
    try:
        return rss_mb(pid)
    except (FileNotFoundError, ProcessLookupError, KeyError):
        return 0.0


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, found through ``/proc/<pid>/stat``."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # the command name is in parentheses and may contain spaces
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry))
    return sorted(children)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def summary_ms(values: Sequence[float]) -> dict:
    """p50, p95, mean and max of a list of milliseconds, rounded."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "mean": round(statistics.fmean(values), 2),
        "max": round(max(values), 2),
    }


# ---------------------------------------------------------------- HTTP client


@dataclass
class Response:
    """What a request got back; ``status`` is 0 when the connection failed."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: float
    error: str | None = None

    def json(self):
        """The body parsed as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class FilePart:
    """One file field of a multipart upload."""

    field: str
    filename: str
    data: bytes
    content_type: str = "image/jpeg"


def encode_multipart(files: Sequence[FilePart], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its Content-Type header value."""
    boundary = "bench-" + uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in (fields or {}).items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for part in files:
        filename = part.filename.replace('"', "%22").replace("\r", "").replace("\n", "")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{part.field}"; filename="{filename}"\r\n'
            f"Content-Type: {part.content_type}\r\n\r\n"
        )
        chunks.extend([head.encode("utf-8"), part.data, b"\r\n"])
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Response:
    """One HTTP request on a fresh loopback connection; never raises for network errors."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}, Connection="close"))
        reply = conn.getresponse()
        data = reply.read()
        return Response(
            reply.status,
            {k.lower(): v for k, v in reply.getheaders()},
            data,
            (time.perf_counter() - started) * 1000,
        )
    except (OSError, http.client.HTTPException) as exc:
        return Response(0, {}, b"", (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def post_search(port: int, files: Sequence[FilePart], fields: dict[str, str] | None = None, timeout: float = 60.0):
    """POST /api/search with the given file parts and form fields."""
    body, content_type = encode_multipart(files, fields)
    return request(port, "POST", "/api/search", body, {"Content-Type": content_type}, timeout)


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    """A running gunicorn master on loopback."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    workers: int
    spawned_at: float  # time.monotonic() when the process was spawned
    spawned_wall: float  # time.time() at the same moment, to read log timestamps against
    ready_s: float = float("nan")  # spawn -> first /healthz 200
    all_ready_s: float = float("nan")  # spawn -> every worker has loaded its index
    env: dict = field(default_factory=dict, repr=False)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.port}"

    def worker_pids(self) -> list[int]:
        """PIDs of the gunicorn workers (children of the master)."""
        return child_pids(self.proc.pid)

    def worker_rss_mb(self) -> dict[int, float]:
        """Resident memory of every worker, MiB by PID."""
        return {pid: round(worker_rss_mb(pid), 1) for pid in self.worker_pids()}

    def log_count(self, needle: str) -> int:
        """How many lines of the server log contain ``needle``."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if needle in line)

    def startup_phases(self) -> dict:
        """Seconds from spawn to each worker's "Loading <model> embedder" and "Serving index" log lines.

        The first mark comes after Python, gunicorn, Flask and TensorFlow are
        imported; the second after the model is built, warmed up and the index
        loaded.
        """
        marks = {"model_loading_s": "indexer.model: Loading ", "index_served_s": "web.service: Serving index"}
        found: dict[str, list[float]] = {key: [] for key in marks}
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return found
        for line in lines:
            for key, needle in marks.items():
                if needle in line:
                    try:
                        stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    except ValueError:
                        continue
                    found[key].append(round(stamp - self.spawned_wall, 2))
        return found

    def requests_per_worker(self, needle: str = "POST /api/search") -> dict[int, int]:
        """Access-log lines containing ``needle``, counted by the worker PID that served them."""
        counts: dict[int, int] = {}
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return counts
        for line in lines:
            match = _ACCESS_PID.match(line)
            if match and needle in line:
                pid = int(match.group(1))
                counts[pid] = counts.get(pid, 0) + 1
        return counts

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log, for error reports."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# The access log names the worker that served each request (gunicorn's %(p)s is "<pid>").
ACCESS_LOG_FORMAT = '%(p)s %(h)s "%(r)s" %(s)s %(M)sms'
_ACCESS_PID = re.compile(r"^<(\d+)> ")


class ServerError(RuntimeError):
    """The server did not come up in time, or died."""


def _wait_ready(server: Server, timeout_s: float) -> None:
    """Poll /healthz until 200, then until every worker logged that it serves an index."""
    deadline = server.spawned_at + timeout_s
    while True:
        if server.proc.poll() is not None:
            raise ServerError(f"gunicorn exited with {server.proc.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise ServerError(f"/healthz not 200 within {timeout_s:.0f} s:\n{server.log_tail()}")
        reply = request(server.port, "GET", "/healthz", timeout=2.0)
        if reply.status == 200:
            server.ready_s = time.monotonic() - server.spawned_at
            break
        time.sleep(0.05)
    # Each worker logs "Serving index ..." once its IndexService has loaded the
    # artifacts; only then is the load spread over all workers.
    while server.log_count("Serving index") < server.workers:
        if server.proc.poll() is not None:
            raise ServerError(f"gunicorn exited with {server.proc.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise ServerError(f"not every worker was ready within {timeout_s:.0f} s:\n{server.log_tail()}")
        time.sleep(0.05)
    server.all_ready_s = time.monotonic() - server.spawned_at


def stop_server(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the master (gunicorn stops its workers), SIGKILL the group if it lingers."""
    stop_gunicorn(proc, grace_s)


@contextlib.contextmanager
def gunicorn_server(
    catalogue: Path,
    index_dir: Path,
    *,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    startup_timeout_s: float = 120.0,
    log_name: str = "gunicorn",
    cmd_args: str = "",
) -> Iterator[Server]:
    """Run a real gunicorn (``gunicorn.conf.py``) on a free loopback port for the ``with`` block.

    The server uses ``FASHION_WEIGHTS=none``; its combined output goes to
    ``benchmarks/out/<log_name>.log``. ``cmd_args`` are extra gunicorn options
    (through ``GUNICORN_CMD_ARGS``). It is stopped on exit whatever happens.
    """
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = OUT_DIR / f"{log_name}.log"
    args = {"GUNICORN_CMD_ARGS": f"--access-logformat={shlex.quote(ACCESS_LOG_FORMAT)} {cmd_args}".strip()}
    env = gunicorn_env(catalogue, index_dir, f"{LOOPBACK}:{port}", workers=workers, extra_env=args | (extra_env or {}))
    spawned_at, spawned_wall = time.monotonic(), time.time()
    proc = spawn_gunicorn(env, log_path)
    server = Server(proc, port, log_path, workers, spawned_at, spawned_wall, env=env)
    try:
        _wait_ready(server, startup_timeout_s)
        yield server
    finally:
        stop_server(proc)


def build_index_cli(catalogue: Path, index_dir: Path, timeout_s: float = 1800.0, log_name: str = "build") -> float:
    """``python -m indexer build`` with random weights; returns the seconds it took.

    Its output goes to ``benchmarks/out/<log_name>.log``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
    env.update(FASHION_WEIGHTS="none", TF_CPP_MIN_LOG_LEVEL="2")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(OUT_DIR / f"{log_name}.log", "wb") as log_file:
        subprocess.run(
            [sys.executable, "-m", "indexer", "build", "--catalogue", str(catalogue), "--index-dir", str(index_dir)],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return time.monotonic() - started


def index_is_fresh(catalogue: Path, index_dir: Path) -> bool:
    """True when ``index_dir`` holds a current index of ``catalogue`` for random weights."""
    from indexer.build import check_freshness
    from indexer.config import Settings
    from indexer.model import resolve_weights
    from indexer.plan import key_for

    settings = Settings.from_env(env={}, catalogue=str(catalogue), index_dir=str(index_dir))
    return check_freshness(settings, key_for(resolve_weights("none", settings.random_seed, settings.model))) == "fresh"
