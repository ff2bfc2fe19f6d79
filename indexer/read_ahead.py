"""Make the next items of an iterator in a background thread while the caller works on the current one.

The catalogue tuning composes scene views in Python and PIL (which release
the GIL for their pixel work) while the model embeds the previous batch
(which releases it too), so the two overlap on a machine's cores instead of
taking turns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.1  # how often a blocked producer checks whether the consumer has gone


def read_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """``items`` in order, made ahead in a daemon thread: up to ``depth`` waiting, and one more being made.

    An exception raised while making an item is raised here, at that item.
    When the caller stops early (``close``, or the generator is dropped),
    the thread stops after the item it is making: close it where an
    exception could keep it suspended (``contextlib.closing``).
    """
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _offer(ready, (item, None), stop):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            _offer(ready, (_DONE, exc), stop)
            return
        _offer(ready, (_DONE, None), stop)

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


def _offer(ready: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Put ``entry`` once there is room; ``False`` if the consumer stopped first."""
    while not stop.is_set():
        try:
            ready.put(entry, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
