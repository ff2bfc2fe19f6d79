"""Messy catalogues: spreadsheet-exported styles.csv files and odd file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.build import build_index
from indexer.catalogue import MAX_LINE_CHARS, load_styles, read_styles
from indexer.search import Searcher

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


def _rows(n: int = 20) -> list[str]:
    genders = ("Men", "Women")
    return [
        f"{10000 + i},{genders[i % 2]},Apparel,Topwear,Tshirts,Blue,Fall,2011,Casual,Nice Tee, with a comma {i}"
        for i in range(n)
    ]


def _write(folder: Path, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "styles.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return folder


def test_a_stray_quote_costs_only_its_own_row(tmp_path):
    """`sed -i '4s/,/,"/' styles.csv` made every build fail with a csv field-limit error."""
    lines = [HEADER, *_rows()]
    lines[3] = lines[3].replace(",", ',"', 1)  # line 4 of the file
    styles = load_styles(_write(tmp_path, "\n".join(lines) + "\n"))
    assert len(styles.rows) == 19
    assert "10002" not in styles.rows
    assert [p.line for p in styles.problems] == [4]
    assert styles.rows["10019"]["productDisplayName"] == "Nice Tee, with a comma 19"


def test_an_unclosed_quote_near_the_end_loses_no_row(tmp_path):
    """An unclosed quote 11 rows from the end silently swallowed those 11 rows."""
    lines = [HEADER, *_rows()]
    lines[-11] = lines[-11].replace("Casual,", 'Casual,"', 1)  # opens the last column, never closed
    styles = load_styles(_write(tmp_path, "\n".join(lines) + "\n"))
    assert len(styles.rows) == 20 and styles.problems == []
    assert styles.rows["10009"]["productDisplayName"] == "Nice Tee, with a comma 9"
    assert styles.rows["10010"]["gender"] == "Men"


@pytest.mark.parametrize(
    "header",
    ["\ufeff" + HEADER, " id" + HEADER[2:], '"id"' + HEADER[2:], "ID" + HEADER[2:], HEADER.replace(",", " , ")],
    ids=["bom", "space-before-id", "quoted-id", "upper-case", "padded-cells"],
)
def test_header_variants_from_spreadsheets_still_give_metadata(tmp_path, header):
    styles = load_styles(_write(tmp_path, "\n".join([header, *_rows(4)]) + "\n"))
    assert styles.problems == []
    assert styles.rows["10001"]["gender"] == "Women"
    assert styles.rows["10000"]["articleType"] == "Tshirts"


def test_a_bom_written_as_bytes_is_ignored(tmp_path):
    """`sed -i '1s/^/\\xef\\xbb\\xbf/'` silently removed all metadata and filters."""
    data = b"\xef\xbb\xbf" + ("\r\n".join([HEADER, *_rows(3)]) + "\r\n").encode()
    assert read_styles(_write(tmp_path, data))["10002"]["gender"] == "Men"


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_separated_exports(tmp_path, delimiter):
    lines = [line.replace(",", delimiter) for line in [HEADER, *_rows(3)]]
    styles = load_styles(_write(tmp_path, "\n".join(lines) + "\n"))
    assert styles.problems == []
    assert styles.rows["10001"]["gender"] == "Women"
    assert styles.rows["10001"]["productDisplayName"].startswith("Nice Tee")


def test_a_huge_line_is_skipped_without_a_field_limit_error(tmp_path):
    lines = [HEADER, *_rows(5)]
    lines[2] = lines[2] + "x" * (MAX_LINE_CHARS + 1)
    lines.insert(4, "10099," + '"' + "y" * 200_000)  # over csv's own 131072 limit too
    styles = load_styles(_write(tmp_path, "\n".join(lines) + "\n"))
    assert sorted(styles.rows) == ["10000", "10002", "10003", "10004"]
    assert [p.line for p in styles.problems] == [3, 5]


def test_bad_bytes_blank_lines_short_rows_and_repeats(tmp_path):
    rows = _rows(4)
    data = "\n".join([HEADER, rows[0], "", "10001,Men", rows[2], rows[2], ",Men,a,b,c,d,e,f,g,h"]).encode()
    data = data.replace(b"Nice Tee", b"Caf\xe9 Tee", 1)  # Latin-1, not UTF-8
    styles = load_styles(_write(tmp_path, data))
    assert styles.rows["10000"]["productDisplayName"].startswith("Caf\ufffd Tee")
    assert sorted(styles.rows) == ["10000", "10002"]
    assert [p.line for p in styles.problems] == [4, 6, 7]


def test_no_id_column_missing_file_or_a_folder_never_raises(tmp_path):
    styles = load_styles(_write(tmp_path / "a", "name,gender\nx,Men\n"))
    assert styles.rows == {} and styles.problems[0].line == 1
    assert load_styles(tmp_path / "nothing-here").rows == {}
    (tmp_path / "b" / "styles.csv").mkdir(parents=True)
    assert load_styles(tmp_path / "b").rows == {}


def test_a_build_with_a_broken_styles_csv_succeeds_and_keeps_the_good_rows(small_settings, embedder):
    path = small_settings.catalogue / "styles.csv"
    lines = path.read_text().splitlines()
    lines[0] = "\ufeff" + lines[0]
    lines[3] = lines[3].replace(",", ',"', 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = build_index(small_settings, embedder)
    assert report.total == 24
    searcher = Searcher.load(small_settings.index_dir)
    with_metadata = sum(1 for meta in searcher.metadata if meta)
    assert with_metadata == 23  # all but the row on line 4
    assert "Men" in searcher.facets()["gender"]
