"""One decode process of a ``DecodePool``: decodes shoppers' photos under limits the kernel enforces.

Started by ``indexer.decode_pool`` as ``python -m indexer.decode_process``
(a fresh interpreter: nothing of the worker's model, threads or index is
inherited). Once its imports are done it caps its own address space at
what it holds then, plus the decode budget of one photo, plus a headroom
(``RLIMIT_AS``, soft and hard, so nothing it runs can raise it again), and
answers requests on its standard input and output, one at a time:

1. ``price``: the photo's bytes, the model's square and the crop. The
   answer is what decoding will hold (``images.decode_price``), so that
   the worker reserves that share of its decode budget first. The CPU time
   the photo may use is set here (``RLIMIT_CPU``): a decode past it is
   ended by the kernel even if the worker is not watching.
2. ``decode`` (or ``drop``): the model-ready array and the photo's size
   (``images.load_with_size``), or the refusal.

It runs ``NICENESS`` below the worker's CPU priority, so that photos being
decoded yield the CPU to the model and the searches in progress. It exits
when its input closes, and when its parent is gone. Memory it
cannot get is a ``MemoryError``, answered as a refusal; whatever kills the
process instead (the limits, a crash in a decoder) is seen by the worker,
which answers for the photo and starts a replacement.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import resource
import signal
import sys
import threading
import time

from . import images
from .decode_pool import read_message, write_message

log = logging.getLogger("indexer.decode_process")

PARENT_CHECK_S = 1.0
NICENESS = 10  # added to the worker's: decoding runs at a lower CPU priority than searching


def address_space_bytes() -> int:
    """This process's mapped address space (``VmSize``), what ``RLIMIT_AS`` counts."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _warm_up() -> None:
    """Load every decoder the uploads may reach now, so that their libraries are mapped before the cap is set."""
    from PIL import Image

    Image.init()
    for fmt in images.ALLOWED_FORMATS:
        sample = io.BytesIO()
        Image.new("RGB", (images.MIN_SIDE, images.MIN_SIDE), images.WHITE).save(sample, fmt)
        images.load_with_size(sample.getvalue())


def _cap_memory(allowed_bytes: int) -> int:
    limit = address_space_bytes() + allowed_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def _watch_parent(parent: int) -> None:
    # a decode in progress does not read its input, so it would not see the worker go
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _allow_cpu(seconds: float) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (int(spent + seconds) + 1, hard))


def _refusal(exc: images.ImageError) -> dict:
    return {"error": exc.reason, "message": exc.message}


def _answering_refusals(out, step, *args):
    """``step(*args)``, or ``None`` once its refusal (the image's own, or out of memory) was written to ``out``."""
    try:
        return step(*args)
    except images.ImageError as exc:
        write_message(out, _refusal(exc))
    except MemoryError:
        write_message(out, {"error": "too_large", "message": _NO_MEMORY})
    return None


def serve(inp, out) -> None:
    """Answer price and decode requests from ``inp`` on ``out`` until ``inp`` closes."""
    while True:
        try:
            request, data = read_message(inp)
        except EOFError:
            return
        size = int(request["size"])
        crop = tuple(request["crop"]) if request.get("crop") is not None else None
        _allow_cpu(float(request["cpu_s"]))
        priced = _answering_refusals(out, images.decode_price, data, size, crop)
        if priced is None:
            continue
        cost, describe = priced
        write_message(out, {"cost": cost, "describe": describe})
        try:
            go, _ = read_message(inp)
        except EOFError:
            return
        if go.get("op") != "decode":
            continue
        decoded = _answering_refusals(out, images.load_with_size, data, size, crop)
        if decoded is None:
            continue
        array, photo_size = decoded
        del data
        write_message(out, {"shape": list(array.shape), "photo_size": list(photo_size)}, array.tobytes())


_NO_MEMORY = "Decoding this image needed more memory than a photo may use. Please send a smaller photo."


def main(argv: list[str] | None = None) -> int:
    """Set the limits, say ready with the pid and the cap, then serve until the input closes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo-bytes", type=int, required=True, help="the decode budget of one photo")
    parser.add_argument("--headroom-bytes", type=int, required=True, help="address space allowed beyond that")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="decode process %(process)d: %(message)s")
    # Ctrl-C in a terminal reaches the whole process group: the worker decides when this process ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a decoder that crashes on a photo leaves no core file of hundreds of megabytes behind
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # an expensive photo yields the CPU to the worker's model and to searches in progress
    os.nice(NICENESS)
    # the answers go on a private copy of stdout; anything printed by a library goes to stderr
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    # a photo priced over the budget is refused from its header, as in the worker, with the same message
    images.configure_decode_budget(args.photo_bytes, 1)
    _warm_up()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    limit = _cap_memory(args.photo_bytes + args.headroom_bytes)
    try:
        write_message(out, {"pid": os.getpid(), "limit_bytes": limit})
        serve(inp, out)
    except BrokenPipeError:  # the worker has exited
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
