"""gunicorn.conf.py's memory hooks and the unit's MALLOC_ARENA_MAX (benchmarks/bench_memory.py measures them)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from tests.support.gunicorn import REPO, load_gunicorn_conf


@pytest.fixture
def conf(monkeypatch):
    return load_gunicorn_conf(monkeypatch)


def test_trim_after_a_large_request_only(conf, monkeypatch):
    import indexer.memory

    calls = []
    monkeypatch.setattr(indexer.memory, "release_free_memory", lambda: calls.append(1) or True)
    big = conf["TRIM_AFTER_BYTES"]
    conf["post_request"](None, None, {"CONTENT_LENGTH": str(big)}, None)
    assert calls == [1]
    for environ in ({"CONTENT_LENGTH": str(big - 1)}, {}, {"CONTENT_LENGTH": "junk"}):
        conf["post_request"](None, None, environ, None)
    assert calls == [1]


def test_post_fork_bounds_the_arenas_unless_the_environment_did(conf, monkeypatch):
    calls = []

    class FakeMallopt:
        def __call__(self, *args):
            calls.append(args)
            return 1

    class FakeLibc:
        mallopt = FakeMallopt()

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    conf["post_fork"](None, None)
    assert calls == []
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    conf["post_fork"](None, None)
    assert calls == [(-8, 2)]  # M_ARENA_MAX


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_mallopt_is_accepted_by_this_c_library(tmp_path):
    """The real call, in a fresh process: glibc answers 1 (done)."""
    code = (
        "import ctypes; libc = ctypes.CDLL(None); "
        "print(libc.mallopt(-8, 2) if hasattr(libc, 'mallopt') else 'none')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out in {"1", "none"}


def test_the_unit_bounds_the_arenas_before_python_starts():
    unit = (REPO / "deploy" / "fashion-search.service").read_text().splitlines()
    assert "Environment=MALLOC_ARENA_MAX=2" in unit
