"""Compact per-item metadata: one array of category codes per field.

A catalogue's metadata (the ``styles.csv`` columns) repeats a few hundred
distinct strings across every row. Holding one dict per item costs about a
kilobyte each in every web worker; holding one ``int32`` code per field and
item, plus each field's list of distinct values, costs a few bytes, and the
code arrays are memory-mapped, so workers on one host share them. A filter
becomes a comparison of one code array with one code.

On disk, beside ``metadata.json`` (the readable list of dicts)::

    metadata-codes.npy    int32, fields x items, -1 where a row has no value
    metadata-values.json  {"fields": [...], "values": {field: [value, ...]}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

CODES_FILE = "metadata-codes.npy"
VALUES_FILE = "metadata-values.json"
MISSING = -1


class Metadata(Sequence):
    """Read-only metadata of every row; ``metadata[row]`` is a fresh dict."""

    def __init__(self, fields: list[str], values: dict[str, list[str]], codes: np.ndarray):
        if codes.shape[0] != len(fields):
            raise ValueError("one code row per field")
        self.fields = list(fields)
        self.values = {name: list(values[name]) for name in self.fields}
        self.codes = codes  # fields x items
        self._field_row = {name: i for i, name in enumerate(self.fields)}
        self._code_of = {name: {v: c for c, v in enumerate(self.values[name])} for name in self.fields}

    # ------------------------------------------------------------ building

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, str]], count: int) -> Metadata:
        """Encode ``count`` dict rows (e.g. ``metadata.json``) into code arrays, in one pass."""
        fields: list[str] = []
        values: dict[str, list[str]] = {}
        code_of: dict[str, dict[str, int]] = {}
        columns: dict[str, np.ndarray] = {}
        seen = 0
        for row_index, row in enumerate(rows):
            if row_index >= count:
                raise ValueError(f"more than {count} metadata rows")
            seen = row_index + 1
            for name, value in row.items():
                if value is None or value == "":
                    continue
                value = str(value)
                if name not in code_of:
                    fields.append(name)
                    values[name], code_of[name] = [], {}
                    columns[name] = np.full(count, MISSING, dtype=np.int32)
                codes = code_of[name]
                code = codes.get(value)
                if code is None:
                    code = codes[value] = len(values[name])
                    values[name].append(value)
                columns[name][row_index] = code
        if seen != count:
            raise ValueError(f"expected {count} metadata rows, got {seen}")
        array = np.stack([columns[name] for name in fields]) if fields else np.zeros((0, count), np.int32)
        return cls(fields, values, array)

    def values_json(self) -> bytes:
        """The contents of ``metadata-values.json``."""
        return json.dumps({"fields": self.fields, "values": self.values}, sort_keys=True).encode("utf-8")

    @classmethod
    def load(cls, codes: np.ndarray, values_json: bytes) -> Metadata:
        """Rebuild from a (memory-mapped) code array and the values file's bytes."""
        payload = json.loads(values_json)
        fields, values = payload.get("fields"), payload.get("values")
        if not isinstance(fields, list) or not isinstance(values, dict) or set(fields) != set(values):
            raise ValueError("metadata values file is malformed")
        if codes.dtype != np.int32 or codes.ndim != 2:
            raise ValueError("metadata codes have the wrong type or shape")
        metadata = cls(fields, values, codes)
        for i, name in enumerate(fields):
            column = codes[i]
            if len(column) and (int(column.max()) >= len(values[name]) or int(column.min()) < MISSING):
                raise ValueError(f"metadata codes of {name} point outside its values")
        return metadata

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return int(self.codes.shape[1])

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        row = int(row)
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        out = {}
        for i, name in enumerate(self.fields):
            code = int(self.codes[i, row])
            if code != MISSING:
                out[name] = self.values[name][code]
        return out

    def column(self, name: str) -> np.ndarray | None:
        """The code array of a field (None when no row has it)."""
        index = self._field_row.get(name)
        return None if index is None else self.codes[index]

    def mask(self, filters: dict[str, str]) -> np.ndarray:
        """Rows whose value equals ``filters[field]`` for every field."""
        mask = np.ones(len(self), dtype=bool)
        for name, wanted in filters.items():
            code = self._code_of.get(name, {}).get(wanted)
            if code is None:  # a field or value no row has: nothing matches
                return np.zeros(len(self), dtype=bool)
            mask &= self.codes[self._field_row[name]] == code
        return mask

    def distinct(self, name: str) -> list[str]:
        """Values of ``name`` that some row has, sorted."""
        return sorted(self.values.get(name, ()))
