"""pytest plugin that holds the fast tier to its promise: no TensorFlow, Keras or OpenVINO.

``python -m pytest -m "not slow"`` is the quick feedback loop; a test that
needs a real model (or starts gunicorn, nginx or a browser) is marked
``slow``. Loading TensorFlow alone costs seconds, so a fast test that pulls
it in, directly or through a fixture or production code, defeats the tier.
This plugin (loaded by ``tests/conftest.py``) fails such a run:

* each test *not* marked ``slow`` fails when its setup, call or teardown
  loaded one of ``HEAVY`` (the first such test is named, with what it
  loaded); this holds in every run, the whole suite included, until a slow
  test has loaded them legitimately;
* a run that selected no ``slow`` test fails at the end when any of
  ``HEAVY`` is loaded at all: loaded while importing the test modules
  (every run imports them all, the fast tier too) or by a thread a fast
  test started.

It checks ``sys.modules`` only, so ``tests/test_fast_tier.py`` can prove it
works with a stand-in package named ``tensorflow``.
"""

from __future__ import annotations

import sys

import pytest

HEAVY = ("tensorflow", "keras", "openvino", "nncf")
HINT = (
    "Fast tests must not load a real model: use the fake_embedder / fake_index / fake_app fixtures "
    "(tests/conftest.py), import heavy modules only inside slow tests, or mark the test "
    "@pytest.mark.slow."
)
_ONLY_FAST = pytest.StashKey[bool]()
_AT_COLLECTION = pytest.StashKey[list]()


def heavy_modules() -> list[str]:
    """The modules of ``HEAVY`` that this process has imported."""
    return [name for name in HEAVY if name in sys.modules]


def is_slow(item: pytest.Item) -> bool:
    """True when ``item`` is marked ``slow`` (on the test, its class or its module)."""
    return item.get_closest_marker("slow") is not None


def pytest_collection_finish(session: pytest.Session) -> None:
    # after -m/-k deselection: session.items is what this run executes
    session.config.stash[_ONLY_FAST] = not any(is_slow(item) for item in session.items)
    session.config.stash[_AT_COLLECTION] = heavy_modules()


def _guard(item: pytest.Item, when: str):
    """Run one phase of ``item`` (the ``yield``), then fail it if it was fast and loaded a heavy module."""
    before = set(heavy_modules())
    try:
        return (yield)
    finally:
        loaded = [name for name in heavy_modules() if name not in before]
        if loaded and not is_slow(item):
            pytest.fail(f"{item.nodeid} is not marked slow but its {when} imported {', '.join(loaded)}. {HINT}",
                        pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _guard(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _guard(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    return (yield from _guard(item, "teardown"))


def _violation(config: pytest.Config) -> str | None:
    if not config.stash.get(_ONLY_FAST, False):
        return None  # slow tests ran: they load TensorFlow on purpose
    loaded = heavy_modules()
    if not loaded:
        return None
    when = (
        "while the test modules were imported (collection)"
        if config.stash.get(_AT_COLLECTION, [])
        else "by the tests or a thread they started"
    )
    return f"This run selected no slow test, yet {', '.join(loaded)} got imported {when}. {HINT}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _violation(session.config):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    message = _violation(config)
    if message:
        terminalreporter.write_sep("=", "fast tier broken: a heavy module was imported", red=True, bold=True)
        terminalreporter.write_line(message, red=True)
