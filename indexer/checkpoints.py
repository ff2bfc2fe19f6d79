"""Shards of finished embeddings, so an interrupted build loses nothing.

A build writes every few hundred embeddings as a shard into ``work/``: a
``.npy`` array of vectors and one of colour descriptors (no pickle), and a
JSON sidecar, written last, listing the files and fingerprints of its rows
plus the arrays' checksums. The next build reuses every shard whose sidecar
and checksum are intact and whose weights and preprocessing match, by
reference: rows are read when they are published. Any engine (local or Ray)
writes the same shards.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path

import numpy as np

from .checksums import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from .generation import WORK_DIR
from .vector_files import ArrayFile

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
        sha256=sha256_bytes(data),
        colours_sha256=sha256_bytes(colour_data),
    )
    atomic_write_json(Path(folder) / f"{name}.json", sidecar)  # last: the shard is complete
    return Path(folder) / f"{name}.json"


RowSource = tuple[ArrayFile, ArrayFile, int]  # where a build reads one item: (vectors, colours, row)


def locate_shards(
    folder: Path,
    *,
    model_key: dict,
    fingerprints: dict[str, list] | None = None,
    skip: Collection[str] = (),
    seen: set[str] | None = None,
) -> dict[str, tuple[list, RowSource]]:
    """Every intact, compatible row in ``folder`` as ``{relpath: (fingerprint, (vectors, colours, row))}``.

    With ``fingerprints`` (``{relpath: [size, mtime_ns]}`` of the catalogue now),
    rows of files that changed or vanished since they were embedded are dropped.
    Shards are read in name order, which says nothing about age, so without
    this a stale row could shadow the fresh row of the same file.

    Checksums are verified by streaming each shard from disk and no vector
    is kept: a build refers to rows and reads them a block at a time when
    it publishes, so resuming from many shards holds no more memory than a
    build from a few.

    Sidecars named in ``skip`` are passed over (a build's publish skips the
    shards its plan already verified, so no shard is hashed twice); the
    name of every other sidecar looked at is added to ``seen`` when given.
    """
    found: dict[str, tuple[list, RowSource]] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return found
    for sidecar_path in sorted(folder.glob("*.json")):
        if sidecar_path.name in skip:
            continue
        if seen is not None:
            seen.add(sidecar_path.name)
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
        vectors, colours = ArrayFile(npy), ArrayFile(colours_path(npy))  # shared by the shard's rows
        for row, (relpath, size, mtime_ns) in enumerate(items):
            if fingerprints is not None and list(fingerprints.get(relpath) or ()) != [size, mtime_ns]:
                continue
            found[relpath] = ([size, mtime_ns], (vectors, colours, row))
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
