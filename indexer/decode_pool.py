"""Shoppers' photos are decoded in a few separate processes, under limits the operating system enforces.

Pricing a photo from its header (``images.decode_cost``) holds only for
what is known about its format; a decoder can still spend far more time or
memory than its header promises (a progressive JPEG decodes once per scan,
over coefficients of its full size). A decode running in the worker could
not be stopped: the request's deadline waits for it, and its memory is the
worker's. So each gunicorn worker hands uploads to a ``DecodePool``:

* ``processes`` decode processes (``indexer.decode_process``), each a fresh
  interpreter started with ``subprocess`` (fork and exec: nothing of the
  worker's model threads is inherited), each with its address space capped
  (``RLIMIT_AS``) at its own baseline plus ``memory_bytes`` (the decode
  budget of one photo) and ``HEADROOM_BYTES``, and its CPU time capped per
  photo (``RLIMIT_CPU``);
* a photo goes to an idle process as bytes; the process answers with its
  price first, the worker reserves that share of its decode budget
  (``images.DECODE_BUDGET``, so the decoded bytes of one worker's photos
  stay within ``FASHION_DECODE_MEMORY_MB`` together), then the process
  decodes and sends back the small model-ready array and the photo's size;
* a photo that takes longer than ``timeout_s`` (or than the request has
  left) has its process killed, and so has a process that answers
  nonsense; a process that dies (its memory cap, a crash in a decoder) is
  noticed at once. Each case is an ``ImageError`` for that photo only, and
  a fresh process takes the place of the lost one, so other shoppers'
  photos keep being decoded.

The processes exit with the worker: ``close_all`` kills them (it runs at
exit), an idle process exits when its input closes, and a busy one checks
every second that its parent is alive.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from contextlib import ExitStack

import numpy as np

from .config import PROJECT_ROOT
from .images import DECODE_BUDGET, Crop, DecodeBudget, ImageError

log = logging.getLogger(__name__)

_PROC_LISTS_PROCESSES = os.path.isdir("/proc/self")

# Beyond the photo's share of memory, each process may map this much: the
# upload's bytes (up to the request limit), the model's array, the
# decoders' working memory beyond the price (the reduction's tiles, up to
# 64 MB of PNG text chunks Pillow accepts).
HEADROOM_BYTES = 96 * 1024 * 1024
# Starting a process (an interpreter, numpy and Pillow) takes about half a
# second; on a loaded machine far more.
STARTUP_TIMEOUT_S = 60.0
# The kernel ends a photo's CPU time this long after the pool's time limit,
# should the worker not be watching.
CPU_GRACE_S = 2.0

_FRAME = struct.Struct(">II")  # the length of the JSON header, the length of the payload after it
MAX_HEADER_BYTES = 64 * 1024


# ---------------------------------------------------------------- messages (both sides)


def write_message(stream, meta: dict, payload: bytes | memoryview = b"") -> None:
    """Send one message on a blocking binary stream: a JSON header and a payload of raw bytes."""
    head = json.dumps(meta).encode("utf-8")
    for part in (_FRAME.pack(len(head), len(payload)) + head, payload):
        view = memoryview(part)
        while view:
            view = view[stream.write(view) :]


def _read_exact(stream, count: int) -> bytes:
    chunks, left = [], count
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the stream ended inside a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream) -> tuple[dict, bytes]:
    """Receive one message from a blocking binary stream; ``EOFError`` when the stream has ended."""
    head_length, payload_length = _FRAME.unpack(_read_exact(stream, _FRAME.size))
    meta = json.loads(_read_exact(stream, head_length))
    return meta, _read_exact(stream, payload_length)


# ---------------------------------------------------------------- one process, seen from the worker


class _Lost(Exception):
    """The process is gone, timed out or broke the protocol; it has been killed."""

    def __init__(self, why: str, returncode: int | None = None):
        super().__init__(why)
        self.why = why  # "timeout", "died" or "protocol"
        self.returncode = returncode


class _Decoder:
    """One decode process and its pipes, from the worker's side."""

    def __init__(self, photo_bytes: int, headroom_bytes: int):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="1")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "indexer.decode_process",
                "--photo-bytes", str(photo_bytes), "--headroom-bytes", str(headroom_bytes),
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=PROJECT_ROOT, env=env, bufsize=0,
        )
        self._to = self.proc.stdin.fileno()
        self._from = self.proc.stdout.fileno()
        os.set_blocking(self._to, False)  # every write waits for room with a deadline
        self.started_at = time.monotonic()
        self.limit_bytes: int | None = None
        self.lost = False

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs and has not been given up.

        A killed process can read as running for a moment: its threads
        still exit while its main thread is already a zombie, and it cannot
        be reaped until they have. Its state in ``/proc`` tells.
        """
        if self.lost or self.proc.poll() is not None:
            return False
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return not _PROC_LISTS_PROCESSES  # reaped meanwhile; without /proc, poll() is all there is
        except (OSError, IndexError):
            return True

    def ready(self, ends: float | None) -> bool:
        """Wait until ``ends`` at most for the process's first message (its imports done, its cap set).

        False when ``ends`` came first: the process goes on starting. A
        process not started within ``STARTUP_TIMEOUT_S`` is given up
        (``_Lost``).
        """
        if self.limit_bytes is not None:
            return True
        give_up = self.started_at + STARTUP_TIMEOUT_S
        poller = select.poll()
        poller.register(self._from, select.POLLIN)
        if ends is not None and ends < give_up and not poller.poll(max(0.0, ends - time.monotonic()) * 1000):
            return False
        meta, _ = self.receive(give_up, 0)
        self.limit_bytes = int(meta["limit_bytes"])
        return True

    def send(self, meta: dict, payload: bytes, deadline: float) -> None:
        """Write one message, giving up (and killing the process) at ``deadline``."""
        head = json.dumps(meta).encode("utf-8")
        for part in (_FRAME.pack(len(head), len(payload)) + head, payload):
            view = memoryview(part)
            while view:
                self._wait(select.POLLOUT, deadline)
                try:
                    view = view[os.write(self._to, view) :]
                except BlockingIOError:
                    continue
                except OSError:  # the pipe is closed: the process is gone
                    raise self._give_up("died") from None

    def receive(self, deadline: float, max_payload: int) -> tuple[dict, bytes]:
        """Read one message, giving up (and killing the process) at ``deadline`` or on nonsense."""
        head_length, payload_length = _FRAME.unpack(self._read(_FRAME.size, deadline))
        if head_length > MAX_HEADER_BYTES or payload_length > max_payload:
            raise self._give_up("protocol")
        try:
            meta = json.loads(self._read(head_length, deadline))
        except ValueError:
            raise self._give_up("protocol") from None
        if not isinstance(meta, dict):
            raise self._give_up("protocol")
        return meta, self._read(payload_length, deadline)

    def _read(self, count: int, deadline: float) -> bytes:
        chunks, left = [], count
        while left:
            self._wait(select.POLLIN, deadline)
            chunk = os.read(self._from, min(left, 1 << 20))
            if not chunk:
                raise self._give_up("died")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _wait(self, events: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(self._to if events == select.POLLOUT else self._from, events)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise self._give_up("timeout")

    def _give_up(self, why: str) -> _Lost:
        return _Lost(why, self.kill())

    def kill(self) -> int | None:
        """Kill the process (if it still runs), reap it and close the pipes; its exit status."""
        self.lost = True
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            returncode = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # unkillable for now (stuck in the kernel): reaped by a later wait
            returncode = None
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()
        return returncode


# ---------------------------------------------------------------- the pool


_BUSY = "The server is busy decoding other photos; please try again in a moment."


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.2g} s"


def _lost_photo(lost: _Lost, limit_s: float, photo_limit_s: float) -> ImageError:
    """What the shopper is told when the photo's process was lost (``limit_s``: the time this photo had)."""
    if lost.why == "timeout" and limit_s < photo_limit_s:
        return ImageError(
            "too_slow", f"This photo could not be decoded in the {_seconds(limit_s)} the search had left."
        )
    if lost.why == "timeout" or lost.returncode == -signal.SIGXCPU:
        return ImageError(
            "too_slow",
            f"This photo takes too long to decode (more than {_seconds(photo_limit_s)}). "
            "Please save it again as an ordinary JPEG or PNG and send that.",
        )
    if lost.returncode == -signal.SIGKILL:  # not ours (we kill on a timeout): the kernel's, out of memory
        return ImageError(
            "too_large", "Decoding this photo was stopped for using too much memory. Please send a smaller photo."
        )
    return ImageError("crashed", "The image could not be decoded: the decoder stopped on it.")


class DecodePool:
    """``processes`` decode processes, each decoding one photo at a time within ``memory_bytes`` and ``timeout_s``.

    ``memory_bytes`` is the decode budget of one photo: a photo priced over
    it is refused from its header, and each process's address space is
    capped at its baseline plus that and ``headroom_bytes``. ``budget`` is
    the worker's decode budget the photos' shares are reserved from
    (default: the process's, ``images.DECODE_BUDGET``). Each process is
    started when first needed and replaced as soon as it is lost.
    """

    def __init__(
        self,
        processes: int,
        memory_bytes: int,
        timeout_s: float,
        budget: DecodeBudget | None = None,
        headroom_bytes: int = HEADROOM_BYTES,
    ):
        self.limits = (processes, memory_bytes, timeout_s)
        self.processes = max(1, processes)
        self.memory_bytes = memory_bytes
        self.headroom_bytes = headroom_bytes
        self.timeout_s = timeout_s
        self.budget = budget or DECODE_BUDGET
        self.owner_pid = os.getpid()  # a forked child must not use (or close) its parent's processes
        self.replaced = 0  # processes started in place of lost ones
        self._lock = threading.Lock()
        self._live: set[_Decoder] = set()
        self._closed = False
        # None: a process not started yet (each starts when first needed, in about half a second)
        self._idle: queue.Queue[_Decoder | None] = queue.Queue()
        for _ in range(self.processes):
            self._idle.put(None)
        _POOLS.add(self)

    def _start(self) -> _Decoder:
        decoder = _Decoder(self.memory_bytes, self.headroom_bytes)
        with self._lock:
            self._live.add(decoder)
        return decoder

    def pids(self) -> list[int]:
        """Process ids of the decode processes running now."""
        with self._lock:
            return sorted(d.pid for d in self._live if d.alive())

    def decode(
        self, data: bytes, size: int, crop: Crop | None = None, wait_s: float | None = None
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """``images.load_with_size(data, size, crop)``, done by one of the processes.

        ``wait_s`` is what the request has left: it caps the wait for a
        process and for a budget share, and the photo's time limit (else
        ``timeout_s``). Raises ``ImageError``: the image's own refusals, and
        ``too_slow``, ``too_large`` or ``crashed`` when its process was lost.
        """
        ends = None if wait_s is None else time.monotonic() + wait_s
        decoder = self._take(ends)
        try:
            return self._decode_with(decoder, data, size, crop, ends)
        finally:
            self._give_back(decoder)

    def _take(self, ends: float | None) -> _Decoder:
        if self._closed:
            raise ImageError("busy", "The server is shutting down; please try again in a moment.")
        try:
            decoder = self._idle.get(timeout=None if ends is None else max(0.0, ends - time.monotonic()))
        except queue.Empty:
            raise ImageError("busy", _BUSY) from None
        if decoder is None:
            decoder = self._start()
        elif not decoder.alive():  # died while idle (killed from outside): a fresh one
            decoder = self._replace(decoder)
        try:
            started = decoder.ready(ends)
        except (_Lost, KeyError, TypeError, ValueError) as exc:
            log.error("A decode process did not start (%s); see its messages above", exc)
            decoder.kill()
            self._give_back(decoder)  # in its place, another one
            raise ImageError("busy", "The server could not start a photo decoder; please try again shortly.") from None
        if not started:  # still starting when the request's time ran out
            self._give_back(decoder)
            raise ImageError("busy", _BUSY)
        return decoder

    def _give_back(self, decoder: _Decoder) -> None:
        if decoder.alive() and not self._closed:
            self._idle.put(decoder)
        elif self._closed:
            decoder.kill()
        else:  # started at once: warm by the time the next photo needs it
            self._idle.put(self._replace(decoder))

    def _replace(self, decoder: _Decoder) -> _Decoder:
        decoder.kill()
        with self._lock:
            self._live.discard(decoder)
            self.replaced += 1
        return self._start()

    def _decode_with(
        self, decoder: _Decoder, data: bytes, size: int, crop: Crop | None, ends: float | None
    ) -> tuple[np.ndarray, tuple[int, int]]:
        started = time.monotonic()
        limit_s = self.timeout_s if ends is None else min(self.timeout_s, ends - started)
        if limit_s <= 0:  # the request's time went in waiting for a process: nothing sent, nothing to stop
            raise ImageError("busy", _BUSY)
        work_ends = started + limit_s  # the photo's own time: reading its header and decoding it
        request = {"size": size, "crop": list(crop) if crop else None, "cpu_s": self.timeout_s + CPU_GRACE_S}
        try:
            decoder.send(request, data, work_ends)
            price, _ = decoder.receive(work_ends, 0)
            if "error" in price:
                raise ImageError(str(price["error"]), str(price.get("message", "The image could not be decoded.")))
            with ExitStack() as held:
                waiting = time.monotonic()
                try:
                    held.enter_context(
                        self.budget.reserve(
                            int(price["cost"]), str(price["describe"]),
                            None if ends is None else max(0.0, ends - waiting),
                        )
                    )
                except ImageError:
                    decoder.send({"op": "drop"}, b"", work_ends)
                    raise
                # the wait for a share is not the photo's time, but the request's end still holds
                work_ends += time.monotonic() - waiting
                if ends is not None:
                    work_ends = min(work_ends, ends)
                decoder.send({"op": "decode"}, b"", work_ends)
                answer, pixels = decoder.receive(work_ends, size * size * 3)
            return self._array(answer, pixels, size)
        except _Lost as lost:
            log.warning(
                "Decode process %d lost on a %d-byte photo (%s, exit status %s); starting another",
                decoder.pid, len(data), lost.why, lost.returncode,
            )
            raise _lost_photo(lost, limit_s, self.timeout_s) from None
        except ImageError:
            raise
        except (KeyError, TypeError, ValueError) as exc:  # a price or answer not as the protocol says
            log.warning("Decode process %d answered out of protocol (%s); starting another", decoder.pid, exc)
            decoder.kill()
            raise ImageError("crashed", "The image could not be decoded: the decoder stopped on it.") from None

    @staticmethod
    def _array(answer: dict, pixels: bytes, size: int) -> tuple[np.ndarray, tuple[int, int]]:
        if "error" in answer:
            raise ImageError(str(answer["error"]), str(answer.get("message", "The image could not be decoded.")))
        if answer["shape"] != [size, size, 3] or len(pixels) != size * size * 3:
            raise ValueError(f"shape {answer['shape']} and {len(pixels)} bytes for a {size} x {size} photo")
        width, height = (int(v) for v in answer["photo_size"])
        return np.frombuffer(pixels, dtype=np.uint8).reshape(size, size, 3).copy(), (width, height)

    def close(self) -> None:
        """Kill every process (a decode in progress fails); the pool decodes nothing more."""
        with self._lock:
            self._closed = True
            decoders = list(self._live)
            self._live.clear()
        for decoder in decoders:
            decoder.kill()


# ---------------------------------------------------------------- this process's pool for uploads

# every pool of this process, closed at exit (a gunicorn worker's exit included)
_POOLS: weakref.WeakSet[DecodePool] = weakref.WeakSet()
_shared: dict[tuple, DecodePool] = {}
_shared_lock = threading.Lock()


def upload_pool(settings) -> DecodePool:
    """This process's pool for shoppers' uploads, with ``settings``' limits.

    The limits are ``FASHION_DECODE_SLOTS`` (processes),
    ``FASHION_DECODE_MEMORY_MB`` and ``FASHION_DECODE_TIMEOUT_S``. A pool is
    made on first use (a gunicorn worker's first upload) and kept for those
    limits; a forked child makes its own.
    """
    limits = (settings.decode_slots, settings.decode_budget_bytes, settings.decode_timeout_s)
    with _shared_lock:
        pool = _shared.get(limits)
        if pool is None or pool.owner_pid != os.getpid():
            pool = _shared[limits] = DecodePool(*limits)
        return pool


@atexit.register
def close_all() -> None:
    """Close every pool this process made, and forget the upload pools; runs when the process exits."""
    with _shared_lock:
        for limits, pool in list(_shared.items()):
            if pool.owner_pid == os.getpid():
                del _shared[limits]
    for pool in list(_POOLS):
        if pool.owner_pid == os.getpid():
            pool.close()
