"""Index folders: one per catalogue under ``instance/index``, listed and removed by ``python -m indexer status``.

With FASHION_INDEX_DIR unset, each catalogue is indexed into a folder of its
own, ``instance/index/<catalogue folder name>-<short hash of its path>``
(``config.index_dir_for``), so switching catalogues never replaces another
catalogue's index. ``status`` says, for each folder, which catalogue its
manifest names, how many items and how much disk it holds, when it was
built, whether its catalogue still exists and whether the current settings
use it. A folder is removed only on request, and never the one in use, one
a build holds, one outside ``instance/index`` or one that is not an index
folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from .generation import (
    CURRENT,
    LOCK_FILE,
    STATUS,
    THUMBS_DIR,
    WORK_DIR,
    ArtifactError,
    current_generation,
    read_manifest,
)

# The manifest is written with sorted keys and indent 1 (checksums.atomic_write_json): its few
# top-level fields starting with "c" come before the per-item lists, so a short head holds them.
_HEAD_BYTES = 64 * 1024
_HEAD_FIELDS = {
    "catalogue": re.compile(r'^ "catalogue": ("(?:[^"\\]|\\.)*")', re.MULTILINE),
    "count": re.compile(r'^ "count": (\d+)', re.MULTILINE),
    "created_at": re.compile(r'^ "created_at": ([-+0-9.eE]+)', re.MULTILINE),
}


# folders an index keeps inside itself, never an index folder of their own
_ARTIFACT_DIRS = (CURRENT, THUMBS_DIR, WORK_DIR, "models")


class IndexDirError(ValueError):
    """An index folder that may not be removed; the message says why, in one line."""


def manifest_fields(index_dir: Path) -> dict | None:
    """``catalogue``, ``count`` and ``created_at`` of the current generation's manifest; None without one.

    Read from the manifest's first 64 KiB (the fields sort before the
    per-item lists), so a large catalogue's manifest is not parsed whole;
    falls back to the whole manifest. ``ArtifactError`` when it is unreadable.
    """
    gen = current_generation(index_dir)
    if gen is None:
        return None
    try:
        with open(gen / "manifest.json", "rb") as handle:
            head = handle.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError as exc:
        raise ArtifactError(f"manifest unreadable in {gen}: {exc}") from None
    found = {name: pattern.search(head) for name, pattern in _HEAD_FIELDS.items()}
    if all(found.values()):
        try:
            return {name: json.loads(match.group(1)) for name, match in found.items()}
        except ValueError:
            pass
    manifest = read_manifest(gen)
    return {name: manifest.get(name) for name in _HEAD_FIELDS}


def index_catalogue(index_dir: Path) -> str | None:
    """The catalogue the index in ``index_dir`` was built from (its manifest says), or None."""
    try:
        fields = manifest_fields(index_dir)
    except ArtifactError:
        return None
    return None if fields is None else fields.get("catalogue")


def is_index_folder(path: Path, root: Path | None = None) -> bool:
    """True when ``path`` is a folder a build or the site made: a published index, a build's work or status.

    ``root``: ``instance/index``, whose own generations, thumbnails and work
    (an index published straight into it by an older install) are not index
    folders of their own.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir() or (root is not None and _inside_legacy_index(path, Path(root))):
        return False
    if (path / CURRENT).is_symlink() or any(p.is_dir() for p in path.glob("gen-*")):
        return True
    return any((path / name).exists() for name in (WORK_DIR, STATUS, LOCK_FILE, THUMBS_DIR))


def _inside_legacy_index(path: Path, root: Path) -> bool:
    """True for the parts of an index published straight into ``root`` (its generations, thumbs...)."""
    return path.parent == root and (path.name.startswith("gen-") or path.name in _ARTIFACT_DIRS)


def disk_usage(path: Path) -> int:
    """Bytes of the files under ``path`` (symbolic links are not followed)."""
    total = 0
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def describe(folder: Path, in_use: Path) -> dict:
    """What ``status`` reports of one index folder (``in_use``: the folder the current settings use)."""
    folder = Path(folder)
    entry = {
        "folder": str(folder),
        "in_use": folder.resolve() == Path(in_use).resolve(),
        "exists": folder.is_dir(),
        "state": "missing",
        "catalogue": None,
        "catalogue_exists": None,
        "items": None,
        "size_bytes": 0,
        "built_at": None,
    }
    if not entry["exists"]:
        return entry
    entry["size_bytes"] = disk_usage(folder)
    try:
        fields = manifest_fields(folder)
    except ArtifactError as exc:
        entry.update(state="unreadable", error=str(exc))
        return entry
    if fields is None:
        entry["state"] = "not built"  # a build that has not published yet, or never ran
        return entry
    catalogue = fields.get("catalogue")
    created = fields.get("created_at")
    entry.update(
        state="ready",
        catalogue=catalogue,
        catalogue_exists=bool(catalogue) and Path(catalogue).is_dir(),
        items=fields.get("count"),
        built_at=(
            datetime.fromtimestamp(created, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            if isinstance(created, int | float) else None
        ),
    )
    return entry


def index_folders(root: Path, in_use: Path) -> list[Path]:
    """The index folders in ``root`` (itself too when an older install indexed into it), and ``in_use``."""
    root = Path(root)
    found = [root] if is_index_folder(root) else []
    if root.is_dir():
        found += sorted(p for p in root.iterdir() if is_index_folder(p, root))
    in_use = Path(in_use)
    if all(in_use.resolve() != p.resolve() for p in found):
        found.append(in_use)
    return found


def status(settings, root: Path) -> dict:
    """``python -m indexer status``: every index folder in ``root`` (``instance/index``), and which one is in use."""
    return {
        "index_root": str(root),
        "in_use": str(settings.index_dir),
        "catalogue": str(settings.catalogue),
        "indexes": [describe(folder, settings.index_dir) for folder in index_folders(root, settings.index_dir)],
    }


def remove(folder: Path, settings, root: Path) -> dict:
    """Remove ``folder``, which must be an unused index folder inside ``root`` (``instance/index``).

    ``IndexDirError`` (nothing removed) for the folder the current settings
    use, a folder a build holds, anything but a direct subfolder of
    ``instance/index`` and a folder that is not an index folder.
    """
    root = Path(root).resolve()
    given = Path(folder).expanduser()
    if not given.is_absolute() and not given.exists() and (root / given).exists():
        given = root / given  # a bare name from the status listing
    if given.is_symlink():
        raise IndexDirError(f"{given} is a symbolic link, not an index folder: nothing removed.")
    target = given.resolve()
    if target.parent != root:
        raise IndexDirError(f"{target} is not a folder inside {root}, where index folders live: nothing removed.")
    if not target.is_dir():
        raise IndexDirError(f"{target} does not exist: nothing removed (python -m indexer status lists the folders).")
    if target == Path(settings.index_dir).resolve():
        raise IndexDirError(
            f"{target} is the index the current settings use (catalogue {settings.catalogue}): nothing removed."
        )
    if not is_index_folder(target, root):
        raise IndexDirError(f"{target} is not an index folder (no index, build or status in it): nothing removed.")
    lock = FileLock(str(target / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise IndexDirError(f"{target} is being built right now (its build lock is held): nothing removed.") from None
    try:
        entry = describe(target, settings.index_dir)
        shutil.rmtree(target)
    finally:
        lock.release()
    return {"removed": str(target), "catalogue": entry["catalogue"], "items": entry["items"],
            "freed_bytes": entry["size_bytes"]}
