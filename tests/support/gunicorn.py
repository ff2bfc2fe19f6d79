"""The one way tests and benchmarks start a real gunicorn: ``gunicorn -c gunicorn.conf.py app:app``.

The server gets a clean ``FASHION_*`` environment (random weights, the given
catalogue and index dir), listens on a free loopback port, logs to a file,
and runs in its own process group so that stopping it also stops its
workers. Callers decide what "ready" means for them.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def load_gunicorn_conf(monkeypatch) -> dict:
    """``gunicorn.conf.py``'s module namespace (its hooks), read under no ``FASHION_`` setting and metrics off."""
    for name in [k for k in os.environ if k.startswith("FASHION_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FASHION_METRICS", "off")
    return runpy.run_path(str(REPO / "gunicorn.conf.py"))


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def gunicorn_env(catalogue: Path, index_dir: Path, bind: str, *, workers: int = 2, extra_env=None) -> dict:
    """The server's environment: ours minus any ``FASHION_*``/bind settings, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_") and k not in ("BIND", "HOST", "PORT")}
    env.update(
        BIND=bind,
        FASHION_WORKERS=str(workers),
        FASHION_WEIGHTS="none",
        FASHION_CATALOGUE=str(catalogue),
        FASHION_INDEX_DIR=str(index_dir),
        # TensorFlow unless a caller asks for another runtime: converting the
        # model anew for every server's fresh index dir would cost each start
        # tens of seconds (tests/test_runtime.py covers the converted path)
        FASHION_RUNTIME="tensorflow",
        # as the session's fixtures build their indexes (tests/conftest.py): a server
        # that disagreed would find them stale and rebuild them
        FASHION_TUNING=os.environ.get("FASHION_TUNING", "off"),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    return env


def spawn_gunicorn(env: dict, log_path: Path, cwd: Path = REPO) -> subprocess.Popen:
    """Start gunicorn from the project root (or another checkout, ``cwd``) with ``env``; output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a SIGKILL reaches the workers too
        )


def stop_gunicorn(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the master (gunicorn stops its workers), SIGKILL the group if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # workers are in the master's own process group; make sure none outlives it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def log_tail(log_path: Path, chars: int = 4000) -> str:
    """The end of a server log, for error messages."""
    try:
        return log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"
