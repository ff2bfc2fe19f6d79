"""Serving catalogue originals and thumbnails without leaving their folders."""

from __future__ import annotations

import os
import re
from collections.abc import Container
from pathlib import Path

from flask import abort, request, send_file
from werkzeug.routing import PathConverter

from indexer.query import is_image_path

_THUMB_NAME = re.compile(r"^[0-9a-f]{24}\.jpg$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
THUMB_MAX_AGE = 365 * 24 * 3600  # thumbnail names change with their content
ORIGINAL_MAX_AGE = 3600


class AnyPathConverter(PathConverter):
    """Like ``path``, but any character at all, newlines included.

    A catalogue file may be named anything the filesystem allows; the index
    decides what is served, not the route's pattern.
    """

    regex = r"[^/](?s:.*?)"


def _servable(root: Path, candidate: Path) -> bool:
    """True when ``candidate``, resolved now, is a file the catalogue scan would index.

    Checked at request time, because a symlink may have been re-pointed since
    the index was built: its target must still lie inside ``root``, in no
    hidden folder, with an image extension (so never ``.env``, ``styles.csv``
    or a ``.git`` file that happens to sit in the catalogue).
    """
    try:
        real = candidate.resolve(strict=True)
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    if not real.is_file() or not real.is_relative_to(real_root):
        return False
    parts = real.relative_to(real_root).parts
    return not any(part.startswith(".") for part in parts) and is_image_path(real)


def _inside(root: Path, candidate: Path) -> bool:
    """True when ``candidate``, symlinks resolved, lies inside ``root``."""
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_file() and real.is_relative_to(root.resolve())


def send_catalogue_file(root: Path, relpath: str, indexed: Container[str]):
    """Send an original image, but only one the index lists, from inside ``root``."""
    if relpath not in indexed or relpath.startswith("/") or ".." in relpath.split("/"):
        abort(404)
    path = root / relpath
    if not _servable(root, path):
        abort(404)
    # the name goes into Content-Disposition, where a newline is not allowed
    download_name = _CONTROL_CHARS.sub("_", path.name)
    _ignore_multiple_ranges()
    response = send_file(
        os.fspath(path), conditional=True, etag=True, max_age=ORIGINAL_MAX_AGE, download_name=download_name
    )
    return response


def _ignore_multiple_ranges() -> None:
    """Answer a request for several byte ranges with the whole file (200), as RFC 9110 allows.

    Werkzeug serves one range and answers several with 416, which tells a
    client that asked for satisfiable ranges that they are not.
    """
    asked = request.range
    if asked is not None and len(asked.ranges) > 1:
        request.environ.pop("HTTP_RANGE", None)


def send_thumbnail(thumbs_root: Path, name: str):
    """Send a thumbnail by its content-derived name, cacheable for a year."""
    if not _THUMB_NAME.match(name):
        abort(404)
    path = thumbs_root / name[:2] / name
    if not _inside(thumbs_root, path):
        abort(404)
    _ignore_multiple_ranges()
    response = send_file(os.fspath(path), mimetype="image/jpeg", conditional=True, etag=True, max_age=THUMB_MAX_AGE)
    response.cache_control.immutable = True
    response.cache_control.public = True
    return response
