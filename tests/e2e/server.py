"""Starting and stopping a real gunicorn for the browser tests (also used by ``readme_screenshot``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """One gunicorn process and where it logs."""

    process: subprocess.Popen
    url: str
    log_path: Path
    catalogue: Path
    index_dir: Path
    _log: object = field(repr=False, default=None)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def status(self) -> dict:
        code, body = http_get(self.url + "/api/status")
        try:
            return json.loads(body)
        except ValueError:
            return {"http": code}

    def wait_until_up(self, timeout: float) -> None:
        """Wait until any HTTP answer comes back (200 or 503 while building)."""
        self._wait(timeout, lambda code: code in (200, 503), "answer HTTP")

    def wait_until_ready(self, timeout: float) -> None:
        """Wait until /healthz answers 200."""
        self._wait(timeout, lambda code: code == 200, "report healthy on /healthz")

    def _wait(self, timeout: float, done, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                code, _ = http_get(self.url + "/healthz", timeout=2)
                last = f"HTTP {code}"
                if done(code):
                    return
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.25)
        raise RuntimeError(f"gunicorn did not {what} within {timeout:.0f} s (last: {last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the master (it stops its workers), then SIGKILL the group if needed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()


def start_server(catalogue: Path, index_dir: Path, log_path: Path, *, workers: int = 2, extra_env=None) -> Server:
    """Start ``gunicorn -c gunicorn.conf.py app:app`` on a free loopback port (does not wait)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
    env.update(
        BIND=f"127.0.0.1:{port}",
        FASHION_WORKERS=str(workers),
        FASHION_WEIGHTS="none",
        FASHION_CATALOGUE=str(catalogue),
        FASHION_INDEX_DIR=str(index_dir),
        FASHION_TF_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # closed by Server.stop
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return Server(process, f"http://127.0.0.1:{port}", log_path, Path(catalogue), Path(index_dir), log)
