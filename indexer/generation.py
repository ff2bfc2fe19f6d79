"""What a generation holds: the index dir's layout, the manifest and the record of verified files.

Layout of the index dir::

    current -> gen-<id>          symlink, switched atomically by os.replace
    gen-<id>/embeddings.pkl      float32 N x D (the model's dimension), L2-normalised
    gen-<id>/filenames.pkl       N paths relative to the catalogue
    gen-<id>/embeddings.npy      the same vectors as a plain .npy, memory-mapped by workers
                                 (float32, or float16 with FASHION_VECTORS=float16)
    gen-<id>/metadata.json       N dicts from styles.csv (may be empty)
    gen-<id>/metadata-codes.npy  the same metadata as category codes (see metadata.py)
    gen-<id>/metadata-values.json
    gen-<id>/index.ann           Annoy, euclidean, item i = row i
    gen-<id>/verified.json       size, mtime, ctime and inode of each file when it was hashed
    gen-<id>/manifest.json       written last; checksums of the files above
    embeddings.pkl, filenames.pkl, index.ann, manifest.json, ...
                                 fixed symlinks into current/
    thumbs/                      JPEG thumbnails, shared by generations
    work/                        checkpoints of an unfinished build
    status.json                  progress of the running or last build

A generation is written completely into a fresh folder before ``current``
is switched to it, so a crash at any point leaves either the previous
complete set or the new complete set, never a mix (``indexer.publish``).
Every file inside is itself written to a temporary name and moved into
place with ``os.replace`` (``indexer.checksums``); ``indexer.loading``
verifies a generation before it is used, ``indexer.cleaning`` removes old
ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .checksums import atomic_write_json
from .metadata import CODES_FILE, VALUES_FILE

FORMAT_VERSION = 1
CURRENT = "current"
VECTORS_FILE = "embeddings.npy"
RAW_VECTORS_FILE = ".model-vectors.npy"  # the model's vectors while a tuned generation is written
PROJECTION_FILE = "projection.npy"  # the catalogue tuning (indexer/tuning.py), in tuned generations
COLOURS_FILE = "colours.npy"  # one colour descriptor per item (indexer/colour.py), memory-mapped like the vectors
LEGACY_FILES = ("embeddings.pkl", "filenames.pkl", "metadata.json", "index.ann")
ARTIFACT_FILES = LEGACY_FILES + (VECTORS_FILE, CODES_FILE, VALUES_FILE)
MANIFEST = "manifest.json"
VERIFIED = "verified.json"
STATUS = "status.json"
WORK_DIR = "work"
THUMBS_DIR = "thumbs"
LOCK_FILE = ".build.lock"
METRIC = "euclidean"
# The dtypes embeddings.npy may have. Re-ranking always computes in float32;
# float16 halves the page cache the workers share, embeddings.pkl stays float32.
VECTOR_DTYPES = ("float32", "float16")
# The manifest's per-item lists, parallel to its rows: about 0.3 KB of parsed
# Python objects an item. Everything else in a manifest is a few fields.
ITEM_LISTS = ("items", "ids", "thumbs", "skipped")


class ArtifactError(RuntimeError):
    """The artifacts are missing, incomplete, tampered with or incompatible."""


# ---------------------------------------------------------------- current and the manifest


def current_generation(index_dir: Path) -> Path | None:
    """The folder ``current`` points at, or None when there is none."""
    link = Path(index_dir) / CURRENT
    try:
        target = os.readlink(link)
    except OSError:
        return None
    gen = Path(index_dir) / target
    return gen if gen.is_dir() else None


def read_manifest(gen_dir: Path) -> dict:
    """Read and minimally check a generation's manifest."""
    try:
        manifest = json.loads((Path(gen_dir) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"manifest unreadable in {gen_dir}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"manifest in {gen_dir} has an unknown format")
    return manifest


def write_manifest(gen_dir: Path, manifest: dict) -> str:
    """Write a generation's manifest (atomically); returns its SHA-256. Written last, it marks the set complete."""
    return atomic_write_json(Path(gen_dir) / MANIFEST, manifest)


@dataclass
class CurrentManifest:
    """The generation ``current`` points at and its parsed manifest, read once and handed along.

    A build reads it once, under the build lock, and every step that asks
    about the current generation (is it fresh, which rows and ids to keep,
    its catalogue tuning) gets this instead of parsing the manifest again.
    ``gen`` is None when there is no generation; ``manifest`` is None when
    its manifest cannot be read, and ``error`` says why.
    """

    gen: Path | None = None
    manifest: dict | None = None
    error: ArtifactError | None = None

    def release_items(self) -> None:
        """Drop the manifest's per-item lists (``ITEM_LISTS``) once they are no longer needed.

        At a million items they are hundreds of MB of Python objects; the
        few other fields (checksums, dimensions, the model key, the tuning)
        stay for the rest of the build.
        """
        if self.manifest is not None:
            self.manifest = {key: value for key, value in self.manifest.items() if key not in ITEM_LISTS}


def read_current_manifest(index_dir: Path) -> CurrentManifest:
    """The current generation and its manifest (see ``CurrentManifest``); never raises ``ArtifactError``."""
    gen = current_generation(index_dir)
    if gen is None:
        return CurrentManifest()
    try:
        return CurrentManifest(gen, read_manifest(gen))
    except ArtifactError as exc:
        return CurrentManifest(gen, None, exc)


# ---------------------------------------------------------------- verified.json


# A file's identity as the kernel reports it. ctime changes on any write,
# truncate, rename or utime, and cannot be set back by a user, so a file
# edited after it was hashed never matches its record.
def _identity(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def record_verified(gen: Path, checksums: dict[str, str]) -> None:
    """Record that the files of ``gen`` hashed to ``checksums`` as they are now."""
    record = {name: {"sha256": digest, "identity": _identity(gen / name)} for name, digest in checksums.items()}
    atomic_write_json(gen / VERIFIED, record)


def read_verified(gen: Path) -> dict:
    """The verified record of ``gen`` (``{name: {"sha256", "identity"}}``), or ``{}`` when there is none."""
    try:
        record = json.loads((gen / VERIFIED).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def still_verified(path: Path, digest: str | None, entry) -> bool:
    """True when ``path`` was hashed to ``digest`` and has not changed since (``entry``: its verified record)."""
    return (
        isinstance(entry, dict)
        and digest is not None
        and entry.get("sha256") == digest
        and entry.get("identity") is not None
        and entry.get("identity") == _identity(path)
    )
