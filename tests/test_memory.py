"""Freed heap memory goes back to the system (what a build and a worker do after parsing per-item lists)."""

from __future__ import annotations

import ctypes

import pytest

from indexer.memory import release_free_memory

pytestmark = pytest.mark.skipif(
    getattr(ctypes.CDLL(None), "malloc_trim", None) is None, reason="the C library has no malloc_trim"
)


def _anonymous_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("RssAnon:")) / 1024


def test_free_pages_between_survivors_go_back_to_the_system():
    # 80 MB of C-heap blocks with one survivor every 64 KB: glibc keeps the
    # pages between them, as it kept a parsed manifest's leftovers in a build
    blocks = [bytes(2048) for _ in range(40_000)]
    survivors = blocks[::32]
    del blocks
    before = _anonymous_mb()
    assert release_free_memory() is True
    after = _anonymous_mb()
    assert len(survivors) == 1250
    assert before - after > 40, f"only {before - after:.1f} MB of about 78 MB came back"
