"""Shards of finished embeddings, so an interrupted build loses nothing.

A build writes every few hundred embeddings as a shard into ``work/``: a
``.npy`` array of vectors and one of colour descriptors (no pickle), and a
JSON sidecar, written last, listing the files and fingerprints of its rows
plus the arrays' checksums. The next build
reuses every shard whose sidecar and checksum are intact and whose weights
and preprocessing match. Any engine (local or Ray) writes the same shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .artifacts import WORK_DIR, atomic_write_bytes, atomic_write_json, sha256_file

log = logging.getLogger(__name__)


def work_dir(index_dir: Path) -> Path:
    """The staging folder for shards of the build in progress."""
    path = Path(index_dir) / WORK_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def colours_path(npy: Path) -> Path:
    """The colour descriptors that belong to the shard of vectors ``npy``."""
    return npy.with_name(f"{npy.stem}.colours.npy")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def write_shard(
    folder: Path,
    vectors: np.ndarray,
    items: list[list],
    *,
    colours: np.ndarray,
    model_key: dict,
    name: str | None = None,
) -> Path:
    """Write one shard: ``items`` are ``[relpath, size, mtime_ns]`` per row, ``colours`` their descriptors."""
    if not len(items) == len(vectors) == len(colours):
        raise ValueError("one item and one colour descriptor per vector")
    name = name or f"shard-{uuid.uuid4().hex}"
    data, colour_data = _npy_bytes(vectors), _npy_bytes(colours)
    npy = Path(folder) / f"{name}.npy"
    atomic_write_bytes(npy, data)
    atomic_write_bytes(colours_path(npy), colour_data)
    sidecar = dict(
        model_key,
        items=items,
        sha256=hashlib.sha256(data).hexdigest(),
        colours_sha256=hashlib.sha256(colour_data).hexdigest(),
    )
    atomic_write_json(Path(folder) / f"{name}.json", sidecar)  # last: the shard is complete
    return Path(folder) / f"{name}.json"


def read_shards(
    folder: Path, *, model_key: dict, fingerprints: dict[str, list] | None = None
) -> dict[str, tuple[list, np.ndarray, np.ndarray]]:
    """Every intact, compatible row in ``folder`` as ``{relpath: (fingerprint, vector, colour)}``.

    With ``fingerprints`` (``{relpath: [size, mtime_ns]}`` of the catalogue now),
    rows of files that changed or vanished since they were embedded are dropped.
    Shards are read in name order, which says nothing about age, so without
    this a stale row could shadow the fresh row of the same file.
    """
    found: dict[str, tuple[list, np.ndarray, np.ndarray]] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return found
    for sidecar_path in sorted(folder.glob("*.json")):
        npy = sidecar_path.with_suffix(".npy")
        try:
            sidecar = json.loads(sidecar_path.read_text("utf-8"))
            if any(sidecar.get(key) != value for key, value in model_key.items()):
                continue
            data, colour_data = npy.read_bytes(), colours_path(npy).read_bytes()
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable shard %s: %s", sidecar_path.name, exc)
            continue
        if hashlib.sha256(data).hexdigest() != sidecar.get("sha256") or hashlib.sha256(
            colour_data
        ).hexdigest() != sidecar.get("colours_sha256"):
            log.warning("Ignoring shard %s: checksum mismatch", sidecar_path.name)
            continue
        vectors = np.load(io.BytesIO(data), allow_pickle=False)
        colours = np.load(io.BytesIO(colour_data), allow_pickle=False)
        items = sidecar.get("items") or []
        if not len(items) == len(vectors) == len(colours):
            log.warning("Ignoring shard %s: row count mismatch", sidecar_path.name)
            continue
        for (relpath, size, mtime_ns), vector, colour in zip(items, vectors, colours):
            if fingerprints is not None and list(fingerprints.get(relpath) or ()) != [size, mtime_ns]:
                continue
            found[relpath] = ([size, mtime_ns], vector, colour)
    return found


def locate_shards(
    folder: Path, *, model_key: dict, fingerprints: dict[str, list] | None = None
) -> dict[str, tuple[list, Path, int]]:
    """Like ``read_shards``, but ``{relpath: (fingerprint, shard .npy path, row)}``.

    The row's colour descriptor is the same row of ``colours_path(path)``.
    Checksums are verified by streaming each shard from disk and no vector
    is kept, so a publish can read rows a block at a time instead of
    holding every new vector at once.
    """
    found: dict[str, tuple[list, Path, int]] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return found
    for sidecar_path in sorted(folder.glob("*.json")):
        npy = sidecar_path.with_suffix(".npy")
        try:
            sidecar = json.loads(sidecar_path.read_text("utf-8"))
            if any(sidecar.get(key) != value for key, value in model_key.items()):
                continue
            if sha256_file(npy) != sidecar.get("sha256") or sha256_file(colours_path(npy)) != sidecar.get(
                "colours_sha256"
            ):
                log.warning("Ignoring shard %s: checksum mismatch", sidecar_path.name)
                continue
            rows = np.load(npy, mmap_mode="r", allow_pickle=False).shape[0]
            if np.load(colours_path(npy), mmap_mode="r", allow_pickle=False).shape[0] != rows:
                raise ValueError("colour rows do not match vector rows")
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable shard %s: %s", sidecar_path.name, exc)
            continue
        items = sidecar.get("items") or []
        if len(items) != rows:
            log.warning("Ignoring shard %s: row count mismatch", sidecar_path.name)
            continue
        for row, (relpath, size, mtime_ns) in enumerate(items):
            if fingerprints is not None and list(fingerprints.get(relpath) or ()) != [size, mtime_ns]:
                continue
            found[relpath] = ([size, mtime_ns], npy, row)
    return found


def clear(folder: Path) -> None:
    """Remove the staging folder after its shards were published."""
    shutil.rmtree(folder, ignore_errors=True)


def remove_temporaries(folder: Path) -> None:
    """Delete leftovers of writes that a crash interrupted."""
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            os.unlink(tmp)
        except OSError:
            pass
