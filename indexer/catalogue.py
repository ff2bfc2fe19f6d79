"""Scanning the catalogue folder and reading its optional ``styles.csv``."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .images import is_image_path

log = logging.getLogger(__name__)

STYLES_FILE = "styles.csv"


@dataclass(frozen=True)
class CatalogueFile:
    """One image file, identified by its path relative to the catalogue root."""

    relpath: str
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> list:
        """What decides whether a stored embedding is still valid."""
        return [self.size, self.mtime_ns]


def printable_name(relpath: str) -> str:
    """A relative path fit for a report: undecodable bytes shown as U+FFFD."""
    return os.fsencode(relpath).decode("utf-8", "replace")


def _name_problem(relpath: str) -> str | None:
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        # os.walk hands back undecodable bytes as lone surrogates, which no
        # URL, HTML page or JSON answer can carry faithfully
        return "The file name is not valid UTF-8; rename the file to index it."
    return None


def _nameless(name: str) -> bool:
    """True for an image file with nothing but dots before its extension (``..jpg``, ``.png``).

    Such a name is no hidden file a tool left behind but a photo whose name
    was lost; it gives no id or styles.csv row, so it is skipped and counted.
    """
    stem, dot, extension = name.rpartition(".")
    return bool(dot) and is_image_path(f"x.{extension}") and not stem.strip(".")


def scan(root: Path, rejected: list[tuple[str, str, str]] | None = None) -> list[CatalogueFile]:
    """List image files below ``root``, recursively, sorted by relative path.

    Hidden files and folders are skipped, symlinks are not followed out of
    the folder tree (a file symlink pointing outside is ignored), and non-image extensions are ignored.
    Image files whose name cannot be served (not valid UTF-8) or has nothing
    but dots before its extension (``..jpg``) are left out and, when
    ``rejected`` is given, appended to it as ``(printable relpath, reason, message)``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Catalogue folder {root} does not exist")
    real_root = root.resolve()
    found: list[CatalogueFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if _nameless(name):
                relpath = (Path(dirpath) / name).relative_to(root).as_posix()
                problem = "The file has no name before its extension; rename the file to index it."
                log.warning("Skipping %s: %s", printable_name(relpath), problem)
                if rejected is not None:
                    rejected.append((printable_name(relpath), "bad_name", problem))
                continue
            if name.startswith(".") or not is_image_path(name):
                continue
            path = Path(dirpath) / name
            try:
                stat = path.stat()
            except OSError as exc:
                log.warning("Cannot stat %s: %s", path, exc)
                continue
            if not path.is_file():
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                # a link out of the catalogue would let the site read and serve
                # (as a thumbnail) a file the shop never put in its catalogue
                log.warning("Ignoring %s: it links outside the catalogue", path)
                continue
            relpath = path.relative_to(root).as_posix()
            problem = _name_problem(relpath)
            if problem is not None:
                log.warning("Skipping %s: %s", printable_name(relpath), problem)
                if rejected is not None:
                    rejected.append((printable_name(relpath), "bad_name", problem))
                continue
            found.append(CatalogueFile(relpath, stat.st_size, stat.st_mtime_ns))
    found.sort(key=lambda item: item.relpath)
    return found


def styles_fingerprint(root: Path) -> list | None:
    """Size and mtime of ``styles.csv``, or None when there is none."""
    path = Path(root) / STYLES_FILE
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True)
class CatalogueSnapshot:
    """One scan of the catalogue: taken once by a build and handed to every step that compares with it."""

    root: Path
    files: list[CatalogueFile]  # sorted by relative path, as ``scan`` lists them
    rejected: list[tuple[str, str, str]]  # names that cannot be served: (printable relpath, reason, message)
    styles: list | None  # ``styles_fingerprint`` of the folder when it was scanned

    @classmethod
    def take(cls, root: Path) -> CatalogueSnapshot:
        """Scan ``root`` and fingerprint its ``styles.csv``; raises ``FileNotFoundError`` when the folder is missing."""
        rejected: list[tuple[str, str, str]] = []
        files = scan(root, rejected)
        return cls(Path(root), files, rejected, styles_fingerprint(root))


@dataclass(frozen=True)
class StylesProblem:
    """A ``styles.csv`` line that was skipped, and why (1-based line number)."""

    line: int
    message: str


@dataclass
class Styles:
    """``styles.csv`` rows by id, plus the lines that could not be used."""

    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[StylesProblem] = field(default_factory=list)


# Spreadsheets export with commas, or semicolons/tabs where the comma is the
# decimal separator; the header line tells which.
_DELIMITERS = (",", ";", "\t")
# A row longer than this is not a product description; it is skipped rather
# than handed to the csv module (whose field limit would raise).
MAX_LINE_CHARS = 64 * 1024


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts.values())
    return next(d for d in _DELIMITERS if counts[d] == best) if best else ","


def _cells(line: str, delimiter: str) -> list[str]:
    # One physical line at a time: a stray quote can then spoil only its own
    # row, not swallow the rest of the file into one field.
    return next(csv.reader([line], delimiter=delimiter, strict=False), [])


def _clean_header(cells: list[str]) -> list[str]:
    # BOMs and padding around names come from spreadsheet exports; " id" and
    # "\ufeffid" both mean "id"
    header = [cell.strip().strip("\ufeff").strip() for cell in cells]
    return ["id" if name.lower() == "id" else name for name in header]


def load_styles(root: Path) -> Styles:
    """Read ``styles.csv`` (Kaggle format) as ``{id: {column: value}}``, row by row.

    Tolerant by design, because a shop's spreadsheet export must never stop
    a build: UTF-8 with or without a byte-order mark (other bytes are
    replaced), comma, semicolon or tab separated, header cells stripped.
    A line that cannot be read (wrong number of fields, a stray quote, an
    absurd length, no id) is skipped and recorded with its line number;
    every other row is kept. A missing or unreadable file gives no rows.
    """
    path = Path(root) / STYLES_FILE
    styles = Styles()
    try:
        handle = open(path, encoding="utf-8-sig", errors="replace", newline=None)
    except FileNotFoundError:
        return styles
    except OSError as exc:
        log.warning("Cannot read %s: %s", path, exc)
        styles.problems.append(StylesProblem(0, "the file could not be read"))
        return styles
    with handle:
        try:
            _read_rows(handle, styles)
        except (OSError, UnicodeError) as exc:  # e.g. the file vanished or the disk failed mid-read
            log.warning("Stopped reading %s: %s", path, exc)
            styles.problems.append(StylesProblem(0, "the file could not be read to the end"))
    for problem in styles.problems[:20]:
        log.warning("%s line %d skipped: %s", path, problem.line, problem.message)
    if len(styles.problems) > 20:
        log.warning("%s: %d more lines skipped", path, len(styles.problems) - 20)
    return styles


def _read_rows(handle, styles: Styles) -> None:
    header: list[str] | None = None
    delimiter = ","
    for lineno, raw in enumerate(handle, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            styles.problems.append(StylesProblem(lineno, f"longer than {MAX_LINE_CHARS} characters"))
            if header is None:
                return
            continue
        if header is None:
            delimiter = _delimiter(line)
            header = _clean_header(_cells(line, delimiter))
            if "id" not in header:
                styles.problems.append(StylesProblem(lineno, "the header has no 'id' column; no metadata is used"))
                return
            continue
        try:
            row = _cells(line, delimiter)
        except csv.Error as exc:
            styles.problems.append(StylesProblem(lineno, f"not valid CSV ({exc})"))
            continue
        if len(row) < len(header):
            styles.problems.append(StylesProblem(lineno, f"{len(row)} fields where the header has {len(header)}"))
            continue
        # Kaggle's file has commas inside the last column (the display
        # name); fold any extra fields back into it.
        if len(row) > len(header):
            row = row[: len(header) - 1] + [delimiter.join(row[len(header) - 1 :])]
        record = {key: value.strip() for key, value in zip(header, row) if key and value.strip()}
        item_id = record.pop("id", None)
        if not item_id:
            styles.problems.append(StylesProblem(lineno, "no id"))
            continue
        if item_id in styles.rows:
            message = f"id {item_id!r} repeats an earlier line; this later one is used"
            styles.problems.append(StylesProblem(lineno, message))
        styles.rows[item_id] = record


def read_styles(root: Path) -> dict[str, dict[str, str]]:
    """The usable rows of ``styles.csv`` as ``{id: {column: value}}`` (see ``load_styles``)."""
    return load_styles(root).rows
