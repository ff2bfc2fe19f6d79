"""Messy catalogues: spreadsheet-exported styles.csv files and odd file names."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from indexer.build import build_index, check_freshness
from indexer.catalogue import MAX_LINE_CHARS, CatalogueFile, load_styles, read_styles
from indexer.generation import current_generation, read_manifest
from indexer.ids import StoredItems, assign_ids, legacy_ids, previous_ids, recorded_ids
from indexer.plan import key_for, thumb_name
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


def test_a_build_with_a_broken_styles_csv_succeeds_and_keeps_the_good_rows(
    small_settings, fake_embedder, make_fake_app
):
    path = small_settings.catalogue / "styles.csv"
    lines = path.read_text().splitlines()
    lines[0] = "\ufeff" + lines[0]
    lines[3] = lines[3].replace(",", ',"', 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = build_index(small_settings, fake_embedder)
    assert report.total == 24
    searcher = Searcher.load(small_settings.index_dir)
    with_metadata = sum(1 for meta in searcher.metadata if meta)
    assert with_metadata == 23  # all but the row on line 4
    assert "Men" in searcher.facets()["gender"]
    # with the BOM unread, this answered "Unknown gender 'Men'. Choose one of: none in this catalogue."
    client = make_fake_app(small_settings).test_client()
    answer = client.get(f"/api/items/{searcher.ids[0]}/similar?gender=Men")
    assert answer.status_code == 200
    assert all(r["metadata"]["gender"] == "Men" for r in answer.get_json()["results"])


# ---------------------------------------------------------------- stable ids


def test_assign_ids_keeps_old_ids_and_gives_new_collisions_new_ids():
    previous = {"10007.jpg": "10007", "a/x.jpg": "a--x", "gone.jpg": "gone"}
    relpaths = ["10007.jpg", "a/x.jpg", "b/x.jpg", "gone2/gone.jpg", "sub/dir/10007.jpg", "x.png"]
    assert assign_ids(relpaths, previous) == ["10007", "a--x", "x", "gone", "sub--dir--10007", "x-2"]
    assert assign_ids(relpaths, {}) == ["10007", "x", "b--x", "gone", "sub--dir--10007", "x-2"]
    # odd names still give URL-safe, dot-free ids
    odd = assign_ids(["caf\u00e9 #1?.jpg", "..jpg", "new\nline.jpg"], {})
    assert odd == ["caf_1_", "item", "new_line"]


def test_legacy_ids_are_kept_when_an_old_index_is_rebuilt():
    """An index published before ids were recorded keeps the ids it was served with."""
    names = ["a/7.jpg", "b/7.jpg", "8.jpg"]
    legacy = legacy_ids(names)
    assert legacy == ["a--7", "b--7", "8"]
    assert recorded_ids({}, names) == legacy
    assert recorded_ids({"ids": ["x", "x", "y"]}, names) == legacy  # damaged: derived again
    assert assign_ids(names + ["c/8.jpg"], dict(zip(names, legacy))) == ["a--7", "b--7", "8", "c--8"]


def test_stored_items_hold_a_manifests_items_and_ids_and_refuse_malformed_lists():
    manifest = {"items": [["a/7.jpg", 10, 5], ["b/7.jpg", 11, 6], ["8.jpg", 12, 7]], "ids": ["a7", "b7", "8"]}
    stored = StoredItems.from_manifest(manifest)
    assert len(stored) == 3 and list(stored.relpaths) == ["a/7.jpg", "b/7.jpg", "8.jpg"]
    assert stored.row("b/7.jpg") == 1 and [stored.sizes[1], stored.mtimes[1]] == [11, 6]
    assert stored.id_of("8.jpg") == "8"
    assert stored.row("9.jpg") is None and stored.id_of("9.jpg") is None
    # ids that cannot be used are derived from the names, as the site serves them
    damaged = StoredItems.from_manifest(dict(manifest, ids=["x", "x", "y"]))
    assert list(damaged.ids) == legacy_ids(["a/7.jpg", "b/7.jpg", "8.jpg"])
    for items in ([[7, 1, 2]], ["a.jpg"], [None], [[]], {"a.jpg": [1, 2]}):
        assert StoredItems.from_manifest({"items": items}) is None
    # a damaged fingerprint matches no file (it is embedded again), and the ids stay
    odd = [["a.jpg", 1], ["b.jpg", "1", 2], ["c.jpg", True, 2], ["d.jpg", 2**70, 2], ["e.jpg", 1, 2, 3]]
    damaged = StoredItems.from_manifest({"items": odd + [["f.jpg", 4, 5]], "ids": list("abcdef")})
    fingerprints = [[int(damaged.sizes[row]), int(damaged.mtimes[row])] for row in range(6)]
    assert fingerprints == [[-1, -1], [-1, 2], [-1, 2], [-1, 2], [-1, -1], [4, 5]]
    assert [damaged.id_of(f"{name}.jpg") for name in "abcdef"] == list("abcdef")
    assert len(StoredItems.from_manifest({})) == 0


def test_previous_ids_come_from_the_current_generation(tiny_settings, fake_embedder):
    assert previous_ids(tiny_settings.index_dir) == {}
    build_index(tiny_settings, fake_embedder)
    manifest = read_manifest(current_generation(tiny_settings.index_dir))
    expected = {relpath: item_id for (relpath, _size, _mtime), item_id in zip(manifest["items"], manifest["ids"])}
    assert dict(previous_ids(tiny_settings.index_dir)) == expected


def test_adding_a_file_with_the_same_stem_changes_no_public_id(
    tiny_settings, fake_embedder, demo_catalogue, make_fake_app
):
    """Adding sub/dir/10007.jpg turned item 10007 into images--10007 and gave it 10007's metadata."""
    build_index(tiny_settings, fake_embedder)
    before = Searcher.load(tiny_settings.index_dir)
    ids_before = dict(zip(before.filenames, before.ids))
    meta_7 = before.metadata[before.row_of("7")]
    assert meta_7 and ids_before["7.jpg"] == "7"

    (tiny_settings.catalogue / "sub" / "dir").mkdir(parents=True)
    shutil.copy2(demo_catalogue / "40.jpg", tiny_settings.catalogue / "sub" / "dir" / "7.jpg")
    build_index(tiny_settings, fake_embedder)
    after = Searcher.load(tiny_settings.index_dir)
    assert read_manifest(current_generation(tiny_settings.index_dir))["ids"] == after.ids
    ids_after = dict(zip(after.filenames, after.ids))
    assert {name: ids_after[name] for name in ids_before} == ids_before
    assert ids_after["sub/dir/7.jpg"] == "sub--dir--7"
    assert after.filenames[after.row_of("7")] == "7.jpg"
    assert after.metadata[after.row_of("7")] == meta_7
    assert after.metadata[after.row_of("sub--dir--7")] == {}  # the row describes the product 7.jpg
    answer = make_fake_app(tiny_settings).test_client().get("/api/items/7/similar")  # was a 404
    assert answer.status_code == 200 and answer.get_json()["item"]["filename"] == "7.jpg"

    # removing the original frees nothing for the newcomer: its id stays, even across a full rebuild
    (tiny_settings.catalogue / "7.jpg").unlink()
    build_index(tiny_settings, fake_embedder, full=True)
    last = Searcher.load(tiny_settings.index_dir)
    assert dict(zip(last.filenames, last.ids))["sub/dir/7.jpg"] == "sub--dir--7"
    assert {n: i for n, i in zip(last.filenames, last.ids) if n in ids_before} == {
        n: i for n, i in ids_before.items() if n != "7.jpg"
    }


# ---------------------------------------------------------------- file names


def test_thumbnail_names_come_from_the_raw_name_bytes():
    plain = CatalogueFile("a/10.jpg", 5, 7)
    legacy = hashlib.sha1(b"a/10.jpg|5|7", usedforsecurity=False).hexdigest()[:24] + ".jpg"
    assert thumb_name(plain) == legacy  # unchanged for UTF-8 names: no thumbnail churn
    raw = os.fsdecode(b"caf\xe9.jpg")  # what os.walk returns for a Latin-1 name
    assert len(thumb_name(CatalogueFile(raw, 5, 7))) == 28


def test_non_utf8_and_newline_file_names(tiny_settings, fake_embedder, demo_catalogue, caplog):
    """A Latin-1 name raised UnicodeEncodeError in thumb_name() on every build; a newline name is indexed."""
    folder = os.fsencode(tiny_settings.catalogue)
    shutil.copy(os.fsencode(demo_catalogue / "13.jpg"), folder + b"/caf\xe9.jpg")
    shutil.copy(demo_catalogue / "12.jpg", tiny_settings.catalogue / "new\nline.jpg")
    shutil.copy(demo_catalogue / "14.jpg", tiny_settings.catalogue / "sp ace #?%.jpg")
    report = build_index(tiny_settings, fake_embedder)
    assert report.total == 10
    assert [(s.relpath, s.reason) for s in report.skipped] == [("caf\ufffd.jpg", "bad_name")]
    assert "rename" in report.skipped[0].message
    assert "Traceback" not in caplog.text and "UnicodeEncodeError" not in caplog.text
    searcher = Searcher.load(tiny_settings.index_dir)
    assert {"new\nline.jpg", "sp ace #?%.jpg"} <= set(searcher.filenames)
    json.dumps(searcher.manifest)  # the manifest stays plain JSON
    assert check_freshness(tiny_settings, key_for(fake_embedder)) == "fresh"
    again = build_index(tiny_settings, fake_embedder)
    assert (again.indexed, again.total) == (0, 10)


def test_a_failed_build_reports_no_path_or_exception_text(tmp_path, fake_embedder):
    """The status file (shown by /api/status and the error page) said 'Build failed: FileNotFoundError: /srv/...'."""
    from indexer import progress
    from indexer.config import Settings

    settings = Settings.from_env(catalogue=str(tmp_path / "secret-folder"), index_dir=str(tmp_path / "index"))
    with pytest.raises(FileNotFoundError):
        build_index(settings, fake_embedder)
    status = progress.read_status(settings.index_dir)
    assert status["state"] == "error"
    assert status["message"] == "The index could not be built: the catalogue folder is missing."
    text = json.dumps(status)
    assert "secret-folder" not in text and str(tmp_path) not in text and "Error" not in text


def test_colliding_names_get_unique_ids_their_own_rows_and_are_counted(tmp_path, demo_catalogue, fake_embedder, caplog):
    """``a b.jpg`` took id ``a_b`` and ``a_b.jpg``, named exactly as its styles.csv row, lost its details."""
    from indexer.config import Settings

    catalogue = tmp_path / "cat"
    catalogue.mkdir()
    names = ["a b.jpg", "a_b.jpg", "caf\u00e9.jpg", "caf\u00e8.jpg", "plain.jpg"]
    for number, name in enumerate(names, start=10):
        shutil.copy(demo_catalogue / f"{number}.jpg", catalogue / name)
    rows = [("a_b", "Exact"), ("a b", "Spaced"), ("caf\u00e9", "Acute"), ("caf\u00e8", "Grave"), ("plain", "Plain")]
    (catalogue / "styles.csv").write_text(
        "id,productDisplayName\n" + "".join(f"{i},{title}\n" for i, title in rows), encoding="utf-8"
    )
    settings = Settings.from_env(catalogue=str(catalogue), index_dir=str(tmp_path / "index"))
    with caplog.at_level("WARNING", logger="indexer.build"):
        report = build_index(settings, fake_embedder)
    searcher = Searcher.load(settings.index_dir)
    ids = dict(zip(searcher.filenames, searcher.ids))
    assert len(set(ids.values())) == len(names)
    assert ids["a_b.jpg"] == "a_b" and ids["plain.jpg"] == "plain"  # the exactly named file keeps its id
    titles = {name: searcher.metadata[searcher.row_of(ids[name])].get("productDisplayName") for name in names}
    assert titles == {"a b.jpg": "Spaced", "a_b.jpg": "Exact", "caf\u00e9.jpg": "Acute",
                      "caf\u00e8.jpg": "Grave", "plain.jpg": "Plain"}
    assert report.id_collisions == 2 and report.to_dict()["id_collisions"] == 2
    assert "2 id collisions" in report.summary()
    assert sum("Id collision" in r.getMessage() for r in caplog.records) == 2
    assert read_manifest(current_generation(settings.index_dir))["id_collisions"] == 2
    again = build_index(settings, fake_embedder)  # nothing changed: the count is still reported
    assert again.up_to_date and again.id_collisions == 2


def test_a_file_with_only_dots_before_its_extension_is_skipped_and_counted(
    tiny_settings, fake_embedder, demo_catalogue
):
    """``..jpg`` was dropped silently as a hidden file: no count, no reason, no log line."""
    (tiny_settings.catalogue / "sub").mkdir()
    shutil.copy(demo_catalogue / "12.jpg", tiny_settings.catalogue / "..jpg")
    shutil.copy(demo_catalogue / "13.jpg", tiny_settings.catalogue / "sub" / "...PNG")
    shutil.copy(demo_catalogue / "14.jpg", tiny_settings.catalogue / ".hidden.jpg")  # a hidden file: still ignored
    report = build_index(tiny_settings, fake_embedder)
    assert report.total == 8
    assert sorted((s.relpath, s.reason) for s in report.skipped) == [("..jpg", "bad_name"), ("sub/...PNG", "bad_name")]
    assert all("rename" in s.message for s in report.skipped)
    assert report.skipped_by_reason() == {"bad_name": 2}
    assert check_freshness(tiny_settings, key_for(fake_embedder)) == "fresh"
    again = build_index(tiny_settings, fake_embedder)
    assert (again.indexed, again.total, len(again.skipped)) == (0, 8, 2)
