"""Build progress: a bar on a terminal, log lines otherwise, and status.json."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checksums import atomic_write_json
from .generation import STATUS

log = logging.getLogger(__name__)


INTERRUPTED = "interrupted"
INTERRUPTED_MESSAGE = "The index build was interrupted; the next build goes on from where it stopped."


def write_status(index_dir: Path, status: dict) -> None:
    """Publish build progress for the web app (atomically), with the writing process's pid and host."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    record = dict(status, updated_at=time.time(), pid=os.getpid(), host=socket.gethostname())
    atomic_write_json(Path(index_dir) / STATUS, record)


def read_status(index_dir: Path) -> dict:
    """The last published build status, or ``{}``.

    A ``building`` status whose process is gone (killed, the machine
    restarted) reads as ``interrupted``, not as a build that is still going.
    """
    try:
        status = json.loads((Path(index_dir) / STATUS).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(status, dict):
        return {}
    if status.get("state") == "building" and _writer_is_gone(status):
        status.update(state=INTERRUPTED, message=INTERRUPTED_MESSAGE, rate=0.0, eta_s=None)
    return status


def _failure_counts(status: dict) -> dict[str, int]:
    """The failed-build counts a status records (``{}`` when it has none or they are malformed)."""
    counts = status.get("failures")
    if not isinstance(counts, dict):
        return {}
    return {str(k)[:40]: v for k, v in counts.items() if type(v) is int and v >= 0}


def _writer_is_gone(status: dict) -> bool:
    """True when the status names a process on this host that no longer runs (unknown: False)."""
    pid = status.get("pid")
    if type(pid) is not int or pid <= 0 or status.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by someone else
        return False
    try:  # killed but not yet reaped by its parent: a zombie runs no build
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Progress:
    """A snapshot of a running build."""

    state: str  # "building", "ready" or "error"
    phase: str  # "scanning", "embedding", "indexing", "done"
    done: int
    total: int
    started_at: float
    rate: float = 0.0  # images per second
    eta_s: float | None = None
    message: str = ""
    reason: str | None = None  # with "error": the kind of failure (``indexer.build.failure_reason``), e.g. disk_full
    # failed builds of this index dir so far, by reason: carried from one status.json to the next (for /metrics)
    failures: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form, as served by ``/api/status``."""
        return asdict(self)


class ProgressReporter:
    """Fans one progress stream out to a terminal or log, status.json and a callback.

    Updates are throttled so that writing status.json costs nothing next to
    the forward pass.
    """

    def __init__(self, index_dir, callback=None, interval_s: float = 0.5, log_every_s: float = 10.0, stream=None):
        self.index_dir = index_dir
        self.callback = callback
        self.interval_s = interval_s
        self.log_every_s = log_every_s
        self.stream = stream if stream is not None else sys.stderr
        self.started_at = time.time()
        self._last_write = 0.0
        self._last_log = 0.0
        self._bar = None
        self._embedding_started = None
        self._embedding_base = 0
        self.failures = _failure_counts(read_status(index_dir))

    def _tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, phase: str, done: int, total: int, *, force: bool = False, message: str = "") -> Progress:
        """Report that ``done`` of ``total`` images are finished."""
        now = time.time()
        if phase == "embedding" and self._embedding_started is None:
            self._embedding_started, self._embedding_base = now, done
        rate, eta = 0.0, None
        if self._embedding_started is not None and now > self._embedding_started:
            rate = (done - self._embedding_base) / (now - self._embedding_started)
            if rate > 0:
                eta = max(0.0, (total - done) / rate)
        snapshot = Progress(
            "building", phase, done, total, self.started_at, round(rate, 2), eta, message, failures=dict(self.failures)
        )
        if force or now - self._last_write >= self.interval_s:
            self._last_write = now
            self._publish(snapshot)
            self._show(snapshot, now)
        return snapshot

    def finish(self, state: str, message: str, done: int, total: int, *, reason: str | None = None) -> None:
        """Publish the final state (``ready`` or ``error``; an error counted under ``reason``, ``other`` by default)."""
        if self._bar is not None:
            self._bar.n = done
            self._bar.close()
            self._bar = None
        if state == "error":
            reason = reason or "other"
            self.failures[reason] = self.failures.get(reason, 0) + 1
        else:
            reason = None
        final = Progress(
            state, "done", done, total, self.started_at, message=message, reason=reason, failures=dict(self.failures)
        )
        self._publish(final)

    def _publish(self, snapshot: Progress) -> None:
        try:
            write_status(self.index_dir, snapshot.to_dict())
        except OSError as exc:
            log.warning("Could not write build status: %s", exc)
        if self.callback is not None:
            self.callback(snapshot)

    def _show(self, snapshot: Progress, now: float) -> None:
        if snapshot.phase != "embedding" or snapshot.total == 0:
            return
        if self._tty():
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=snapshot.total, initial=snapshot.done, unit="img", file=self.stream)
            self._bar.update(snapshot.done - self._bar.n)
        elif now - self._last_log >= self.log_every_s:
            self._last_log = now
            eta = f"{snapshot.eta_s:.0f}s" if snapshot.eta_s is not None else "?"
            log.info(
                "Embedded %d/%d images (%.1f images/s, ETA %s)", snapshot.done, snapshot.total, snapshot.rate, eta
            )
