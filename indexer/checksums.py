"""SHA-256 of files and bytes, and atomic writes that return the checksum of what they wrote.

Every file the index keeps (a generation's files, shards in ``work/``,
thumbnails, ``status.json``) is written to a temporary name beside its
place, flushed, and moved into place with ``os.replace``: a reader sees the
old file or the new one, never part of one. The bytes are hashed on their
way to disk, so whoever records a checksum never reads the file again.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename survives power loss."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file written by someone else (e.g. Annoy, which does not fsync) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path) -> None:
    """Remove a file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _HashingWriter:
    """A file wrapper that hashes every byte on its way to disk."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)


def atomic_write(path: Path, write) -> str:
    """Call ``write(handle)`` on a temporary file next to ``path``, then move it into place.

    Returns the SHA-256 of what was written, so publishing never re-reads a
    file to checksum it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would hide it from a web server user
            hashing = _HashingWriter(handle)
            write(hashing)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return hashing.digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``; returns its SHA-256."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_pickle(path: Path, obj) -> str:
    """Pickle ``obj`` straight into ``path``, atomically.

    Protocol 5 writes a numpy array's buffer in-band without copying it, so
    saving the embeddings costs no memory beyond the array itself (``dumps``
    at protocol 4 held two extra copies: the array's bytes and the pickle).
    """
    return atomic_write(path, lambda handle: pickle.dump(obj, handle, protocol=5))


def atomic_write_npy(path: Path, array: np.ndarray) -> str:
    """Atomically write ``array`` as ``.npy`` (no pickle); returns its SHA-256."""
    return atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def atomic_write_json(path: Path, obj) -> str:
    """Atomically write ``obj`` as JSON; returns its SHA-256."""
    return atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode("utf-8"))
