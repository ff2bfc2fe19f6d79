"""read_ahead: items in order, errors where they happened, and no thread left behind."""

from __future__ import annotations

import threading
import time

import pytest

from indexer.read_ahead import read_ahead


def test_items_come_in_order_and_are_made_ahead():
    made = []

    def items():
        for i in range(5):
            made.append(i)
            yield i

    reader = read_ahead(items(), depth=2)
    assert next(reader) == 0
    deadline = time.monotonic() + 5
    while len(made) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made[:3] == [0, 1, 2]  # made while the caller held the first
    assert list(reader) == [1, 2, 3, 4]


def test_an_error_is_raised_at_its_item():
    def items():
        yield 1
        raise ValueError("broken view")

    reader = read_ahead(items())
    assert next(reader) == 1
    with pytest.raises(ValueError, match="broken view"):
        next(reader)


def test_stopping_early_ends_the_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = {t for t in threading.enumerate() if t.name == "read-ahead"}
    reader = read_ahead(endless())
    assert next(reader) == 0
    reader.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {t for t in threading.enumerate() if t.name == "read-ahead"} - before
        if not left:
            break
        time.sleep(0.02)
    assert not left
