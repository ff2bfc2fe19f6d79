"""Removing what the index dir no longer needs: old generations and thumbnails of files gone or changed."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .generation import MANIFEST, THUMBS_DIR, current_generation

log = logging.getLogger(__name__)


def _published_ns(gen: Path) -> int | None:
    """When a complete generation was published (its manifest says; older ones by their name), else ``None``."""
    try:
        manifest = json.loads((gen / MANIFEST).read_text())
    except (OSError, ValueError):
        return None  # no manifest: never completed
    stamp = manifest.get("published_ns") if isinstance(manifest, dict) else None
    if isinstance(stamp, int):
        return stamp
    parts = gen.name.split("-")
    return int(parts[1]) if len(parts) == 3 and parts[1].isascii() and parts[1].isdigit() else 0


def remove_old_generations(index_dir: Path, keep: int = 1) -> None:
    """Delete generations other than ``current`` and the ``keep`` newest complete ones before it.

    Keeping the previous one lets web workers that still memory-map it finish
    their requests; on Linux an open mapping survives deletion anyway. Order
    comes from the manifests, not from folder times, and a folder without a
    manifest (a publish that died) is never kept in the previous one's place;
    it is removed unless its name's pid is another live process (then it may
    be a publish under way; ``remove_orphan_generations`` gets it later).
    Only a build holding the build lock publishes, so no other publish is
    half-way through here.
    """
    current = current_generation(index_dir)
    others = [p for p in Path(index_dir).glob("gen-*") if p.is_dir() and p != current]
    stamped = [(_published_ns(p), p) for p in others]
    complete = sorted((item for item in stamped if item[0] is not None), key=lambda item: item[0], reverse=True)
    doomed = [p for stamp, p in stamped if stamp is None and not _being_written(p)] + [p for _, p in complete[keep:]]
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)


def remove_orphan_generations(index_dir: Path) -> list[Path]:
    """Delete generation folders a publish left half-written (no manifest), before a build writes a new one.

    A publish that fails removes its folder itself; one killed (SIGKILL, a
    power cut) cannot, and without this each later build would leave one
    more beside it. Never touched: ``current``, any folder with a manifest
    (complete: ``remove_old_generations`` decides about those), and a
    folder whose name's pid is a live process other than this one (it may be
    writing it now; the build lock serialises builds, so this is for a
    process publishing without it). Call it holding the build lock.
    Returns what was removed.
    """
    current = current_generation(index_dir)
    removed = []
    for gen in Path(index_dir).glob("gen-*"):
        if not gen.is_dir() or gen.is_symlink() or gen == current or (gen / MANIFEST).exists():
            continue
        if _being_written(gen):
            continue
        log.warning("Removing %s, a generation a build left half-written", gen.name)
        shutil.rmtree(gen, ignore_errors=True)
        removed.append(gen)
    return removed


def _being_written(gen: Path) -> bool:
    """Whether the pid in a ``gen-<ns>-<pid>`` folder's name is a live process other than this one."""
    parts = gen.name.split("-")
    if len(parts) != 3 or not (parts[2].isascii() and parts[2].isdigit()):
        return False
    pid = int(parts[2])
    return pid != os.getpid() and pid > 0 and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_thumbs(index_dir: Path, keep: set[str]) -> None:
    """Delete every thumbnail in ``thumbs/`` whose name is not in ``keep`` (the published generation's)."""
    root = Path(index_dir) / THUMBS_DIR
    if not root.is_dir():
        return
    for path in root.glob("*/*.jpg"):
        if path.name not in keep:
            try:
                os.unlink(path)
            except OSError:
                pass
