"""Public item ids: short, URL-safe, and stable for as long as the file stays.

Shoppers bookmark and share ``/items/<id>``, so an id must not move to
another file when files are added or removed elsewhere. Each generation's
manifest records the ids (``"ids"``, parallel to ``"items"``); a build
keeps every id of a file that is still there and gives only new files new
ids. A new file gets its file stem (the Kaggle id) when no other item holds
it, else its path, else the path with a number.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np

from .generation import CurrentManifest, read_current_manifest
from .memory import release_free_memory
from .strings import StringColumn

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _safe(raw: str) -> str:
    # no leading or trailing dots: "/items/.." would be rewritten by clients
    return _UNSAFE.sub("_", raw).strip(".") or "item"


def _stem_id(relpath: str) -> str:
    return _safe(PurePosixPath(relpath).stem)


def _path_id(relpath: str) -> str:
    return _safe(str(PurePosixPath(relpath).with_suffix("")).replace("/", "--"))


def legacy_ids(filenames: list[str]) -> list[str]:
    """The ids an index without recorded ids was served with (computed from all names at once)."""
    stems = [Path(f).stem for f in filenames]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    ids = []
    for filename, stem in zip(filenames, stems):
        raw = stem if counts[stem] == 1 else str(Path(filename).with_suffix("")).replace("/", "--")
        ids.append(_UNSAFE.sub("_", raw))
    seen: set[str] = set()
    for row, item_id in enumerate(ids):  # the rare collision after escaping
        if item_id in seen:
            ids[row] = f"{item_id}-{row}"
        seen.add(ids[row])
    return ids


def recorded_ids(manifest: dict, filenames: list[str]) -> list[str]:
    """The ids of a generation: as recorded, or (older or damaged manifests) as they used to be computed."""
    ids = manifest.get("ids")
    if (
        isinstance(ids, list)
        and len(ids) == len(filenames)
        and all(isinstance(i, str) and i and _UNSAFE.search(i) is None for i in ids)
        and len(set(ids)) == len(ids)
    ):
        return list(ids)
    if ids is not None:
        log.warning("The manifest's ids are unusable; deriving them from the file names")
    return legacy_ids(filenames)


class StoredItems:
    """A generation's per-item lists (file, size, mtime and public id) held as compact columns.

    A manifest parsed by ``json`` holds about 0.3 KB of Python objects per
    item. A build that keeps some of them while it publishes scatters the
    survivors over memory the allocator can then not give back, so the
    lists are turned into columns at once and the parsed manifest dropped.
    """

    def __init__(self, relpaths: list[str], sizes: list[int], mtimes: list[int], item_ids: list[str]):
        self.relpaths = StringColumn(relpaths)
        self.ids = StringColumn(item_ids)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.mtimes = np.asarray(mtimes, dtype=np.int64)

    @classmethod
    def from_manifest(cls, manifest: dict) -> StoredItems | None:
        """The manifest's items and ids; None when an item has no file name.

        A fingerprint that is not a pair of 64-bit integers becomes -1, which
        no file matches: that file is embedded again, and the ids are kept.
        """
        items = manifest.get("items") or []
        if not isinstance(items, list) or not all(
            isinstance(item, list) and item and isinstance(item[0], str) for item in items
        ):
            return None
        relpaths = [item[0] for item in items]
        sizes = [_fingerprint_part(item, 1) for item in items]
        mtimes = [_fingerprint_part(item, 2) for item in items]
        return cls(relpaths, sizes, mtimes, recorded_ids(manifest, relpaths))

    def __len__(self) -> int:
        return len(self.relpaths)

    def row(self, relpath: str) -> int | None:
        """Row of a file, or None when the generation does not hold it."""
        return self.relpaths.find(relpath)

    def id_of(self, relpath: str) -> str | None:
        """The public id a file had, or None."""
        row = self.row(relpath)
        return None if row is None else self.ids[row]


def _fingerprint_part(item: list, index: int) -> int:
    value = item[index] if len(item) == 3 else None
    return value if type(value) is int and -(2**63) <= value < 2**63 else -1


def stored_items(manifest: dict) -> StoredItems | None:
    """``StoredItems.from_manifest``, logging a malformed manifest."""
    stored = StoredItems.from_manifest(manifest)
    if stored is None:
        log.warning("The manifest's item list is malformed; its items are not reused")
    return stored


def take_previous_items(current: CurrentManifest) -> StoredItems | None:
    """The current generation's items and ids as columns, taken out of its manifest as already read; None when none.

    The manifest's per-item lists are then dropped from ``current`` and the
    heap they leave is handed back, before the build goes on. Taken even
    when the stored vectors cannot be reused (other weights, a full
    rebuild): ids belong to the files, not to the model.
    """
    if current.error is not None:
        log.warning("Cannot read the previous ids: %s", current.error)
    stored = None if current.manifest is None else stored_items(current.manifest)
    current.release_items()
    release_free_memory()  # the parsed lists' leftovers
    return stored


def ids_by_relpath(stored: StoredItems | None) -> Mapping[str, str]:
    """``{relpath: id}`` of ``stored`` (a compact mapping for ``assign_ids``), or ``{}``."""
    return {} if stored is None else _StoredIds(stored)


def previous_ids(index_dir: Path) -> Mapping[str, str]:
    """``{relpath: id}`` of the current generation (a compact mapping), or ``{}`` when there is none.

    Reads the manifest; a build takes the ids from the manifest it read
    once (``take_previous_items``).
    """
    return ids_by_relpath(take_previous_items(read_current_manifest(index_dir)))


class _StoredIds(Mapping):
    """The ``{relpath: id}`` view of ``StoredItems`` that ``assign_ids`` reads."""

    def __init__(self, stored: StoredItems):
        self._stored = stored

    def __getitem__(self, relpath: str) -> str:
        item_id = self._stored.id_of(relpath)
        if item_id is None:
            raise KeyError(relpath)
        return item_id

    def __len__(self) -> int:
        return len(self._stored)

    def __iter__(self):
        return iter(self._stored.relpaths)


def _exact(relpath: str) -> bool:
    """True when the file's name (without extension) is a public id as it stands: its styles.csv row's id."""
    stem = PurePosixPath(relpath).stem
    return _stem_id(relpath) == stem


def assign_ids(relpaths: list[str], previous: Mapping[str, str]) -> list[str]:
    """Ids for ``relpaths`` (in catalogue order): previous ids kept, new ones unused.

    Among new files, those whose name is already a valid id (``a_b.jpg``,
    ``10007.jpg``) choose first, so ``a b.jpg`` or ``café.jpg`` never takes
    the id a file named exactly so (and its styles.csv row) would have.
    """
    ids: list[str | None] = [None] * len(relpaths)
    taken: set[str] = set()
    for row, relpath in enumerate(relpaths):
        old = previous.get(relpath)
        if old and old not in taken and _UNSAFE.search(old) is None:
            ids[row] = old
            taken.add(old)
    new_rows = [row for row in range(len(relpaths)) if ids[row] is None]
    for row in sorted(new_rows, key=lambda row: not _exact(relpaths[row])):  # stable: catalogue order otherwise
        relpath = relpaths[row]
        candidate = next((c for c in (_stem_id(relpath), _path_id(relpath)) if c not in taken), None)
        number = 2
        while candidate is None or candidate in taken:
            candidate = f"{_path_id(relpath)}-{number}"
            number += 1
        ids[row] = candidate
        taken.add(candidate)
    return [item_id for item_id in ids if item_id is not None]


def id_collisions(relpaths: list[str], item_ids: list[str]) -> list[tuple[str, str, str, str]]:
    """``(file, its id, the id its name gives, the file holding that one)`` for each file whose id another holds.

    ``a b.jpg`` and ``a_b.jpg`` (or ``café.jpg`` and ``cafè.jpg``) give one
    id; ``assign_ids`` keeps ids unique, and this names every file that
    had to take another, so a build can log and count them.
    """
    holder = {item_id: relpath for relpath, item_id in zip(relpaths, item_ids)}
    found = []
    for relpath, item_id in zip(relpaths, item_ids):
        wanted = _stem_id(relpath)
        if item_id != wanted and wanted in holder:
            found.append((relpath, item_id, wanted, holder[wanted]))
    return found


def metadata_key(relpath: str, item_id: str, holders: Mapping[str, str]) -> str | None:
    """The styles.csv id whose row describes this file, or None.

    ``holders`` maps each public id to the file holding it. A row describes
    the file whose name (without extension) is exactly the row's id; when
    several are (``7.jpg`` and ``sub/dir/7.jpg``), the one whose public id
    is the row's id is the product, and the others get no row.
    """
    stem = PurePosixPath(relpath).stem
    if item_id == stem:
        return stem
    holder = holders.get(stem)
    if holder is not None and PurePosixPath(holder).stem == stem:
        return None
    return stem
