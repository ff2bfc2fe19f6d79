"""Removing what the index dir no longer needs: old generations and thumbnails of files gone or changed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .generation import MANIFEST, THUMBS_DIR, current_generation


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
    manifest (a publish that died) is never kept in the previous one's place.
    Only a build holding the build lock publishes, so no other publish is
    half-way through here.
    """
    current = current_generation(index_dir)
    others = [p for p in Path(index_dir).glob("gen-*") if p.is_dir() and p != current]
    stamped = [(_published_ns(p), p) for p in others]
    complete = sorted((item for item in stamped if item[0] is not None), key=lambda item: item[0], reverse=True)
    doomed = [p for stamp, p in stamped if stamp is None] + [p for _, p in complete[keep:]]
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)


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
