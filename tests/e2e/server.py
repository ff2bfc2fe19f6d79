"""Starting and stopping a real gunicorn for the browser tests (also used by ``readme_screenshot``)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.gunicorn import REPO, free_port, gunicorn_env, log_tail, spawn_gunicorn, stop_gunicorn

__all__ = ["REPO", "Server", "http_get", "start_server"]


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
    workers: int = 2

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server log."""
        return log_tail(self.log_path, chars)

    def status(self) -> dict:
        """The ``/api/status`` payload (or the HTTP code when it is not JSON)."""
        code, body = http_get(self.url + "/api/status")
        try:
            return json.loads(body)
        except ValueError:
            return {"http": code}

    def wait_until_up(self, timeout: float) -> None:
        """Wait until any HTTP answer comes back (200 or 503 while building)."""
        self._wait(timeout, lambda code: code in (200, 503), "answer HTTP")

    def wait_until_ready(self, timeout: float) -> None:
        """Wait until /healthz answers 200 and every worker logged that it serves an index.

        Workers answer at once and load the model in the background, so one
        may be ready while another still shows the starting page.
        """
        self._wait(timeout, lambda code: code == 200, "report healthy on /healthz")
        deadline = time.monotonic() + timeout
        while self.log_tail(10**7).count("Serving index") < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every worker served the index within {timeout:.0f} s:\n{self.log_tail()}")
            try:  # a worker picks up a newly built index when a request reaches it
                http_get(self.url + "/healthz", timeout=2)
            except OSError:
                pass
            time.sleep(0.1)

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
        """Stop the server and its workers."""
        stop_gunicorn(self.process)


def start_server(catalogue: Path, index_dir: Path, log_path: Path, *, workers: int = 2, extra_env=None) -> Server:
    """Start ``gunicorn -c gunicorn.conf.py app:app`` on a free loopback port (does not wait)."""
    port = free_port()
    extra = {"FASHION_TF_THREADS": "1"} | (extra_env or {})
    env = gunicorn_env(catalogue, index_dir, f"127.0.0.1:{port}", workers=workers, extra_env=extra)
    process = spawn_gunicorn(env, log_path)
    return Server(process, f"http://127.0.0.1:{port}", log_path, Path(catalogue), Path(index_dir), workers)
