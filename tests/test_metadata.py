"""Compact metadata: code arrays give the same rows and the same filter results as per-row dicts."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from indexer.loading import load_index
from indexer.metadata import Metadata
from indexer.search import FILTER_FIELDS


def _per_row_mask(rows: list[dict], filters: dict[str, str]) -> np.ndarray:
    """The filter as it was before code arrays: every row's dict compared field by field."""
    return np.array([all(row.get(name) == value for name, value in filters.items()) for row in rows], dtype=bool)


@pytest.fixture(scope="module")
def demo(fake_index):
    loaded = load_index(fake_index.index_dir)
    rows = json.loads((fake_index.index_dir / "metadata.json").read_text())
    yield loaded.metadata, rows
    loaded.annoy.unload()


def test_rows_read_back_equal_metadata_json(demo):
    metadata, rows = demo
    assert len(metadata) == len(rows) == 144
    assert [metadata[i] for i in range(len(rows))] == rows
    assert metadata[-1] == rows[-1] and metadata[2:5] == rows[2:5]
    assert isinstance(metadata.codes, np.memmap) or isinstance(metadata.codes.base, np.memmap)


def test_every_filter_of_one_and_two_fields_equals_the_per_row_result(demo):
    metadata, rows = demo
    values = {name: sorted({row[name] for row in rows if name in row}) for name in FILTER_FIELDS}
    checked = 0
    for name in FILTER_FIELDS:
        for value in values[name]:
            filters = {name: value}
            np.testing.assert_array_equal(metadata.mask(filters), _per_row_mask(rows, filters))
            checked += 1
    for first, second in itertools.combinations(FILTER_FIELDS, 2):
        for a, b in itertools.product(values[first], values[second]):
            filters = {first: a, second: b}
            np.testing.assert_array_equal(metadata.mask(filters), _per_row_mask(rows, filters))
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    "filters",
    [{"articleType": "Spacesuits"}, {"noSuchField": "x"}, {"gender": "Women", "articleType": "Spacesuits"}],
)
def test_unknown_values_and_fields_match_nothing(demo, filters):
    metadata, rows = demo
    assert not metadata.mask(filters).any()
    assert not _per_row_mask(rows, filters).any()


def test_missing_values_never_match_a_filter():
    rows = [{"gender": "Men"}, {}, {"gender": "Women", "baseColour": "Red"}, {"baseColour": ""}]
    metadata = Metadata.from_rows(rows, count=len(rows))
    assert [metadata[i] for i in range(4)] == [{"gender": "Men"}, {}, {"gender": "Women", "baseColour": "Red"}, {}]
    for filters in ({"gender": "Men"}, {"baseColour": "Red"}, {"gender": "Women", "baseColour": "Red"}):
        np.testing.assert_array_equal(metadata.mask(filters), _per_row_mask(rows, filters))
    assert metadata.distinct("gender") == ["Men", "Women"]


def test_codes_pointing_outside_the_values_are_refused():
    metadata = Metadata.from_rows([{"gender": "Men"}, {"gender": "Women"}], count=2)
    bad = metadata.codes.copy()
    bad[0, 1] = 7
    with pytest.raises(ValueError, match="outside"):
        Metadata.load(bad, metadata.values_json())
