"""Giving memory that was freed back to the operating system.

Loading an index parses per-item lists (a manifest, a pickle of file names)
into millions of short-lived objects. Once they are freed, glibc keeps most
of that memory in its heap for reuse, where it still counts as the process's
own (RSS, USS): about 50 MB per 250,000 items. ``malloc_trim`` hands the free
pages back. Other C libraries lack it, and there this does nothing.
"""

from __future__ import annotations

import ctypes


def _load_trim():
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # no C library symbols to look in (Windows cannot open None)
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; True when the C library could."""
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
