"""A read-only list of strings held as a few numpy arrays instead of Python objects.

A web worker keeps every item's file name and id for lookups. As Python
objects (a list of ``str``, a dict from id to row and a set of names) that
costs about 0.3 KB an item, some 300 MB per worker at a million items. A
``StringColumn`` stores the same strings as one UTF-8 buffer with offsets,
and finds a string's row through a sorted array of hashes, about 40 bytes an
item in all.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import numpy as np

# "surrogatepass" encodes any str, lone surrogates included, and decodes it back
# unchanged; the buffer is private, so it need not be valid UTF-8.
_ERRORS = "surrogatepass"


class StringColumn(Sequence):
    """An immutable sequence of strings with ``index`` and ``in`` in O(log n).

    Indexing by row decodes one string; slicing returns a list. Lookups hash
    the string, find the equal hashes by binary search and compare the
    candidates' bytes, so a hash collision can never return a wrong row. A
    string held twice is found at its first row.
    """

    def __init__(self, strings: Iterable[str]):
        encoded = [s.encode("utf-8", _ERRORS) for s in strings]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        total = int(lengths.sum())
        self._offsets = np.zeros(len(encoded) + 1, np.uint32 if total < 2**32 else np.int64)
        np.cumsum(lengths, out=self._offsets[1:])
        self._buffer = b"".join(encoded)
        hashes = np.fromiter(map(hash, encoded), dtype=np.int64, count=len(encoded))
        del encoded
        # the smallest integer type that can hold a row number keeps the order array small
        self._order = np.argsort(hashes, kind="stable").astype(np.uint32 if len(hashes) < 2**32 else np.int64)
        self._sorted_hashes = hashes[self._order]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _bytes(self, row: int) -> bytes:
        return self._buffer[int(self._offsets[row]) : int(self._offsets[row + 1])]

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        row = operator.index(row)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError("StringColumn index out of range")
        return self._bytes(row).decode("utf-8", _ERRORS)

    def __iter__(self):
        return (self._bytes(row).decode("utf-8", _ERRORS) for row in range(len(self)))

    def find(self, value: str) -> int | None:
        """The first row holding ``value``, or None."""
        if not isinstance(value, str):
            return None
        encoded = value.encode("utf-8", _ERRORS)
        key = hash(encoded)
        start = int(np.searchsorted(self._sorted_hashes, key, side="left"))
        stop = int(np.searchsorted(self._sorted_hashes, key, side="right"))
        # equal hashes sit in row order (stable sort), so the first match is the first row
        for position in range(start, stop):
            row = int(self._order[position])
            if self._bytes(row) == encoded:
                return row
        return None

    def index(self, value, start: int = 0, stop: int | None = None) -> int:
        """Row of ``value``; raises ``ValueError`` when absent (like ``list.index``)."""
        if start == 0 and stop is None:
            row = self.find(value)
            if row is not None:
                return row
            raise ValueError(f"{value!r} is not in the column")
        return super().index(value, start, len(self) if stop is None else stop)

    def __contains__(self, value) -> bool:
        return self.find(value) is not None

    def __eq__(self, other) -> bool:
        if isinstance(other, StringColumn):
            return len(self) == len(other) and self._buffer == other._buffer and np.array_equal(
                self._offsets, other._offsets
            )
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # it compares equal to lists, which have no hash

    def __reduce__(self):
        # the lookup hashes are seeded per process: another process rebuilds them
        return StringColumn, (list(self),)

    def __repr__(self) -> str:
        return f"StringColumn({len(self)} strings, {self.nbytes} bytes)"

    @property
    def nbytes(self) -> int:
        """Bytes held by the column's arrays and buffer."""
        return len(self._buffer) + self._offsets.nbytes + self._order.nbytes + self._sorted_hashes.nbytes
