"""Serving catalogue originals and thumbnails without leaving their folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

from flask import abort, send_file

_THUMB_NAME = re.compile(r"^[0-9a-f]{24}\.jpg$")
THUMB_MAX_AGE = 365 * 24 * 3600  # thumbnail names change with their content
ORIGINAL_MAX_AGE = 3600


def _inside(root: Path, candidate: Path) -> bool:
    """True when ``candidate``, symlinks resolved, lies inside ``root``."""
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_file() and real.is_relative_to(root.resolve())


def send_catalogue_file(root: Path, relpath: str, indexed: set[str]):
    """Send an original image, but only one the index lists, from inside ``root``."""
    if relpath not in indexed or relpath.startswith("/") or ".." in relpath.split("/"):
        abort(404)
    path = root / relpath
    if not _inside(root, path):
        abort(404)
    response = send_file(os.fspath(path), conditional=True, etag=True, max_age=ORIGINAL_MAX_AGE)
    return response


def send_thumbnail(thumbs_root: Path, name: str):
    """Send a thumbnail by its content-derived name, cacheable for a year."""
    if not _THUMB_NAME.match(name):
        abort(404)
    path = thumbs_root / name[:2] / name
    if not _inside(thumbs_root, path):
        abort(404)
    response = send_file(os.fspath(path), mimetype="image/jpeg", conditional=True, etag=True, max_age=THUMB_MAX_AGE)
    response.cache_control.immutable = True
    response.cache_control.public = True
    return response
