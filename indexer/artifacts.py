"""Reading and writing the index artifacts atomically, and verifying them.

Layout of the index dir::

    current -> gen-<id>          symlink, switched atomically by os.replace
    gen-<id>/embeddings.pkl      float32 N x 2048, L2-normalised
    gen-<id>/filenames.pkl       N paths relative to the catalogue
    gen-<id>/metadata.json       N dicts from styles.csv (may be empty)
    gen-<id>/index.ann           Annoy, euclidean, item i = row i
    gen-<id>/manifest.json       written last; checksums of the files above
    embeddings.pkl, filenames.pkl, index.ann, manifest.json, metadata.json
                                 fixed symlinks into current/
    thumbs/                      JPEG thumbnails, shared by generations
    work/                        checkpoints of an unfinished build
    status.json                  progress of the running or last build

A generation is written completely into a fresh folder before ``current``
is switched to it, so a crash at any point leaves either the previous
complete set or the new complete set, never a mix. Every file inside is
itself written to a temporary name and moved into place with ``os.replace``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "current"
ARTIFACT_FILES = ("embeddings.pkl", "filenames.pkl", "metadata.json", "index.ann")
MANIFEST = "manifest.json"
STATUS = "status.json"
WORK_DIR = "work"
THUMBS_DIR = "thumbs"
LOCK_FILE = ".build.lock"
METRIC = "euclidean"


class ArtifactError(RuntimeError):
    """The artifacts are missing, incomplete, tampered with or incompatible."""


# ---------------------------------------------------------------- writing


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


def _atomic_write(path: Path, write) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, then move it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would hide it from a web server user
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_pickle(path: Path, obj) -> None:
    """Pickle ``obj`` straight into ``path``, atomically.

    Protocol 5 writes a numpy array's buffer in-band without copying it, so
    saving the embeddings costs no memory beyond the array itself (``dumps``
    at protocol 4 held two extra copies: the array's bytes and the pickle).
    """
    _atomic_write(path, lambda handle: pickle.dump(obj, handle, protocol=5))


def atomic_write_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as JSON."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode("utf-8"))


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_annoy(embeddings: np.ndarray, trees: int, path: Path, seed: int = 42) -> None:
    """Build an Annoy (euclidean) index over ``embeddings`` and save it atomically."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(embeddings.shape[1], METRIC)
    index.set_seed(seed)
    for row, vector in enumerate(embeddings):
        index.add_item(row, vector)
    index.build(trees, n_jobs=-1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        index.save(str(tmp))
        index.unload()
        _fsync_file(tmp)  # Annoy's save does not; the other artifacts are fsynced too
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def publish(
    index_dir: Path,
    *,
    embeddings: np.ndarray,
    filenames: list[str],
    metadata: list[dict],
    manifest: dict,
    trees: int,
) -> Path:
    """Write a complete generation and switch ``current`` to it.

    ``manifest`` holds the descriptive fields; checksums, count and the
    format version are added here. Returns the new generation folder.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    if len(filenames) != len(embeddings) or len(metadata) != len(filenames):
        raise ValueError("embeddings, filenames and metadata must have the same length")
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    gen = index_dir / f"gen-{time.time_ns()}-{os.getpid()}"
    gen.mkdir()
    atomic_write_pickle(gen / "embeddings.pkl", embeddings)
    atomic_write_pickle(gen / "filenames.pkl", list(filenames))
    atomic_write_json(gen / "metadata.json", metadata)
    build_annoy(embeddings, trees, gen / "index.ann")
    manifest = dict(manifest)
    manifest.update(
        format_version=FORMAT_VERSION,
        count=len(filenames),
        dim=int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
        metric=METRIC,
        trees=trees,
        checksums={name: sha256_file(gen / name) for name in ARTIFACT_FILES},
    )
    atomic_write_json(gen / MANIFEST, manifest)  # last: marks the set complete
    fsync_dir(gen)
    _switch_current(index_dir, gen)
    _ensure_top_level_links(index_dir)
    remove_old_generations(index_dir)
    return gen


def _switch_current(index_dir: Path, gen: Path) -> None:
    tmp = index_dir / f".{CURRENT}.{os.getpid()}.tmp"
    _unlink_quietly(tmp)
    os.symlink(gen.name, tmp)
    os.replace(tmp, index_dir / CURRENT)
    fsync_dir(index_dir)


def _ensure_top_level_links(index_dir: Path) -> None:
    for name in ARTIFACT_FILES + (MANIFEST,):
        link = index_dir / name
        target = f"{CURRENT}/{name}"
        if link.is_symlink() and os.readlink(link) == target:
            continue
        tmp = index_dir / f".{name}.{os.getpid()}.link"
        _unlink_quietly(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)


def current_generation(index_dir: Path) -> Path | None:
    """The folder ``current`` points at, or None when there is none."""
    link = Path(index_dir) / CURRENT
    try:
        target = os.readlink(link)
    except OSError:
        return None
    gen = Path(index_dir) / target
    return gen if gen.is_dir() else None


def remove_old_generations(index_dir: Path, keep: int = 1) -> None:
    """Delete generations other than ``current`` and the ``keep`` newest before it.

    Keeping the previous one lets web workers that still memory-map it finish
    their requests; on Linux an open mapping survives deletion anyway.
    """
    current = current_generation(index_dir)
    gens = sorted(
        (p for p in Path(index_dir).glob("gen-*") if p.is_dir() and p != current),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    for old in gens[keep:]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- reading


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain numpy arrays, lists and strings."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def safe_unpickle(data: bytes):
    """Unpickle bytes that may only hold numpy arrays and builtins."""
    return _ArrayUnpickler(io.BytesIO(data)).load()


@dataclass
class LoadedIndex:
    """A verified generation, ready for searching."""

    gen_dir: Path
    manifest: dict
    embeddings: np.ndarray
    filenames: list[str]
    metadata: list[dict]
    annoy: object = field(repr=False)


def read_manifest(gen_dir: Path) -> dict:
    """Read and minimally check a generation's manifest."""
    try:
        manifest = json.loads((Path(gen_dir) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"manifest unreadable in {gen_dir}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"manifest in {gen_dir} has an unknown format")
    return manifest


def load_index(index_dir: Path, *, expect: dict | None = None) -> LoadedIndex:
    """Load the current generation after verifying every checksum.

    ``expect`` maps manifest keys (e.g. ``weights_id``) to required values;
    a mismatch raises ``ArtifactError`` just like a corrupt file, and no
    pickle is opened before its checksum matched.
    """
    from annoy import AnnoyIndex

    gen = current_generation(index_dir)
    if gen is None:
        raise ArtifactError(f"no index in {index_dir}")
    manifest = read_manifest(gen)
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise ArtifactError(f"index was built with {key}={manifest.get(key)!r}, need {value!r}")
    checksums = manifest.get("checksums") or {}
    blobs: dict[str, bytes] = {}
    for name in ARTIFACT_FILES:
        path = gen / name
        if name == "index.ann":
            ok = path.is_file() and sha256_file(path) == checksums.get(name)
        else:
            try:
                blobs[name] = path.read_bytes()
            except OSError:
                blobs[name] = b""
            ok = hashlib.sha256(blobs[name]).hexdigest() == checksums.get(name)
        if not ok:
            raise ArtifactError(f"{name} in {gen.name} does not match its checksum; refusing to use it")
    try:
        embeddings = safe_unpickle(blobs["embeddings.pkl"])
        filenames = safe_unpickle(blobs["filenames.pkl"])
        metadata = json.loads(blobs["metadata.json"])
    except (pickle.UnpicklingError, ValueError, EOFError) as exc:
        raise ArtifactError(f"artifact in {gen.name} could not be decoded: {exc}") from None
    count, dim = manifest.get("count"), manifest.get("dim")
    if (
        not isinstance(embeddings, np.ndarray)
        or embeddings.dtype != np.float32
        or embeddings.shape != (count, dim)
        or len(filenames) != count
        or len(metadata) != count
    ):
        raise ArtifactError(f"artifacts in {gen.name} disagree in shape or length")
    annoy = AnnoyIndex(dim, METRIC)
    if count:
        annoy.load(str(gen / "index.ann"))  # memory-mapped: shared between workers
        if annoy.get_n_items() != count:
            raise ArtifactError(f"index.ann in {gen.name} holds {annoy.get_n_items()} items, expected {count}")
    return LoadedIndex(gen, manifest, embeddings, list(filenames), metadata, annoy)


# ---------------------------------------------------------------- status


def write_status(index_dir: Path, status: dict) -> None:
    """Publish build progress for the web app (atomically)."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(index_dir) / STATUS, dict(status, updated_at=time.time()))


def read_status(index_dir: Path) -> dict:
    """The last published build status, or ``{}``."""
    try:
        return json.loads((Path(index_dir) / STATUS).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
