"""StringColumn: the compact list of file names and ids a web worker keeps."""

from __future__ import annotations

import os
import pickle
import random
import sys

import pytest

from indexer.strings import StringColumn

NAMES = [
    "1.jpg",
    "sub/dir/7.jpg",
    "ünïcödé/ß.png",
    "名前/写真.webp",
    os.fsdecode(b"latin1-\xe9t\xe9.jpg"),  # not UTF-8 on disk: a surrogate escape
    "\udcc3\udca9.jpg",  # escapes whose bytes would be valid UTF-8 ("é"): kept apart from it
    "\u00e9.jpg",
    "\ud800 lone",
    "",
    "with space.jpeg",
]


def test_behaves_like_the_list_it_was_made_from():
    column = StringColumn(NAMES)
    assert len(column) == len(NAMES)
    assert list(column) == NAMES
    assert [column[i] for i in range(len(NAMES))] == NAMES
    assert column[-1] == NAMES[-1]
    assert column[1:4] == NAMES[1:4]
    assert column == NAMES and column == StringColumn(NAMES)
    assert column != NAMES[:-1] and column != StringColumn(NAMES[::-1])
    with pytest.raises(IndexError):
        column[len(NAMES)]
    with pytest.raises(TypeError):
        column["1"]
    copied = pickle.loads(pickle.dumps(column))  # lookups hash per process: a copy rebuilds them
    assert copied == column and copied.find(NAMES[3]) == 3


def test_lookups_find_every_row_and_nothing_else():
    column = StringColumn(NAMES)
    for row, name in enumerate(NAMES):
        assert column.find(name) == row
        assert column.index(name) == row
        assert name in column
    for absent in ("2.jpg", "sub/dir/7.JPG", "1.jpg ", "\udcff", None, 7):
        assert column.find(absent) is None
        assert absent not in column
    with pytest.raises(ValueError):
        column.index("2.jpg")


def test_duplicates_give_the_first_row():
    column = StringColumn(["a", "b", "a", "c", "b"])
    assert column.index("a") == 0 and column.index("b") == 1
    assert column.index("a", 1) == 2  # a start position falls back to a scan, as list.index does


def test_a_hash_collision_never_returns_the_wrong_row(monkeypatch):
    # every string hashes alike: the lookup must still compare the bytes
    import indexer.strings as strings

    monkeypatch.setattr(strings, "hash", lambda _value: 42, raising=False)
    column = strings.StringColumn(["x", "y", "z"])
    assert [column.find(s) for s in ("z", "y", "x", "w")] == [2, 1, 0, None]


def test_much_smaller_than_python_strings():
    rng = random.Random(3)
    names = [f"catalogue/{rng.randrange(10**9)}/{i}.jpg" for i in range(20_000)]
    column = StringColumn(names)
    # what it replaces: the list of names and the set the lookups used
    as_objects = sys.getsizeof(names) + sum(sys.getsizeof(n) for n in names) + sys.getsizeof(set(names))
    assert column.nbytes < as_objects / 2
    assert all(column.find(names[i]) == i for i in range(0, 20_000, 997))


def test_empty():
    column = StringColumn([])
    assert len(column) == 0 and list(column) == [] and "a" not in column
