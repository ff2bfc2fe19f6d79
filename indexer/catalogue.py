"""Scanning the catalogue folder and reading its optional ``styles.csv``."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
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


def scan(root: Path) -> list[CatalogueFile]:
    """List image files below ``root``, recursively, sorted by relative path.

    Hidden files and folders are skipped, symlinks are not followed out of
    the folder tree (a file symlink pointing outside is ignored), and non-image extensions are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Catalogue folder {root} does not exist")
    real_root = root.resolve()
    found: list[CatalogueFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
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


def read_styles(root: Path) -> dict[str, dict[str, str]]:
    """Read ``styles.csv`` (Kaggle format) as ``{id: {column: value}}``.

    Malformed rows are skipped with a warning; a missing file gives ``{}``.
    """
    path = Path(root) / STYLES_FILE
    if not path.is_file():
        return {}
    styles: dict[str, dict[str, str]] = {}
    skipped = 0
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or "id" not in header:
            log.warning("%s has no 'id' column; ignoring it", path)
            return {}
        header = [column.strip() for column in header]
        for row in reader:
            if len(row) < len(header):
                skipped += 1
                continue
            # Kaggle's file has commas inside the last column (the display
            # name); fold any extra fields back into it.
            if len(row) > len(header):
                row = row[: len(header) - 1] + [",".join(row[len(header) - 1 :])]
            record = {key: value.strip() for key, value in zip(header, row) if value.strip()}
            item_id = record.pop("id", None)
            if item_id:
                styles[item_id] = record
    if skipped:
        log.warning("Skipped %d malformed rows in %s", skipped, path)
    return styles


def metadata_for(relpath: str, styles: dict[str, dict[str, str]]) -> dict[str, str]:
    """Metadata for one file: its styles.csv row, matched by file stem."""
    return dict(styles.get(Path(relpath).stem, {}))
