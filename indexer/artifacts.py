"""Reading and writing the index artifacts atomically, and verifying them.

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
import pickletools
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metadata import CODES_FILE, VALUES_FILE, Metadata

log = logging.getLogger(__name__)

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


class _HashingWriter:
    """A file wrapper that hashes every byte on its way to disk."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)


def _atomic_write(path: Path, write) -> str:
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
        _unlink_quietly(tmp)
        raise
    return hashing.digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``; returns its SHA-256."""
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_pickle(path: Path, obj) -> str:
    """Pickle ``obj`` straight into ``path``, atomically.

    Protocol 5 writes a numpy array's buffer in-band without copying it, so
    saving the embeddings costs no memory beyond the array itself (``dumps``
    at protocol 4 held two extra copies: the array's bytes and the pickle).
    """
    return _atomic_write(path, lambda handle: pickle.dump(obj, handle, protocol=5))


def atomic_write_npy(path: Path, array: np.ndarray) -> str:
    """Atomically write ``array`` as ``.npy`` (no pickle); returns its SHA-256."""
    return _atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def atomic_write_json(path: Path, obj) -> str:
    """Atomically write ``obj`` as JSON; returns its SHA-256."""
    return atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode("utf-8"))


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


CHUNK_ROWS = 4096  # rows per read or write while streaming vectors (32 MB at 2048 dims)


def _npy_header(handle, shape: tuple[int, int], dtype=np.float32) -> None:
    np.lib.format.write_array_header_1_0(
        handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )


def _write_vectors_npy(path: Path, embeddings, shape: tuple[int, int], dtype=np.float32) -> str:
    """Stream ``embeddings`` (anything sliceable by row ranges) into a ``.npy`` of ``dtype``."""
    count, dim = shape

    def write(handle):
        _npy_header(handle, shape, dtype)
        for start in range(0, count, CHUNK_ROWS):
            chunk = np.ascontiguousarray(embeddings[start : start + CHUNK_ROWS], dtype=dtype)
            if chunk.shape != (min(CHUNK_ROWS, count - start), dim):
                raise ValueError(f"embedding rows {start}.. have shape {chunk.shape}, expected {dim} columns")
            handle.write(memoryview(chunk).cast("B"))

    return _atomic_write(path, write)


def iter_npy_rows(path: Path, chunk_rows: int = CHUNK_ROWS):
    """Yield ``(first_row, float32 chunk)`` from a 2-D float32 or float16 ``.npy`` with plain reads.

    Reads rather than memory-maps so that a pass over gigabytes of vectors
    does not leave them all mapped (and counted) in this process.
    """
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if fortran or dtype.name not in VECTOR_DTYPES or len(shape) != 2:
            raise ArtifactError(f"{path.name} is not a C-ordered float32 or float16 matrix")
        count, dim = shape
        row_bytes = dim * dtype.itemsize
        for start in range(0, count, chunk_rows):
            rows = min(chunk_rows, count - start)
            data = handle.read(rows * row_bytes)
            if len(data) != rows * row_bytes:
                raise ArtifactError(f"{path.name} is shorter than its header says")
            yield start, np.frombuffer(data, dtype=dtype).reshape(rows, dim).astype(np.float32, copy=False)


def _write_array_pickle(path: Path, npy_path: Path, shape: tuple[int, int]) -> tuple[str, int | None]:
    """Write ``embeddings.pkl`` (a pickled float32 array) from the float32 ``.npy`` without loading it.

    The pickle is what ``pickle.dump(array, protocol=5)`` writes, except that
    the data is streamed from the ``.npy`` in chunks: the opcodes around the
    data come from pickling the array with its buffer out of band (which
    reads no data), and the single out-of-band buffer is replaced by an
    in-band ``BYTEARRAY8`` holding the bytes. Frames are optional for
    unpicklers and are left out. Returns the SHA-256 and the byte offset of
    the raw float32 rows inside the pickle (``None`` when empty), which lets
    a later build reuse the exact float32 vectors without unpickling them.
    """
    if shape[0] == 0:
        return atomic_write_pickle(path, np.zeros(shape, np.float32)), None
    mapped = np.load(npy_path, mmap_mode="r").view(np.ndarray)  # no page is read by pickling it out of band
    skeleton = pickle.dumps(mapped, protocol=5, buffer_callback=lambda buffer: None)  # None: out of band
    del mapped
    parts, data_at = [], None
    ops = list(pickletools.genops(skeleton))
    for index, (op, _arg, pos) in enumerate(ops):
        end = ops[index + 1][2] if index + 1 < len(ops) else len(skeleton)
        if op.name == "FRAME" or op.name == "READONLY_BUFFER":
            continue
        if op.name == "NEXT_BUFFER":
            data_at = len(parts)
            parts.append(None)
            continue
        parts.append(skeleton[pos:end])
    if data_at is None or parts.count(None) != 1:
        raise RuntimeError("unexpected pickle layout for a numpy array")
    nbytes = shape[0] * shape[1] * 4
    data_offset = sum(len(part) for part in parts[:data_at]) + 1 + 8  # after the opcode and its length

    def write(handle):
        for part in parts:
            if part is not None:
                handle.write(part)
                continue
            handle.write(pickle.BYTEARRAY8 + struct.pack("<Q", nbytes))
            for _start, chunk in iter_npy_rows(npy_path):
                handle.write(memoryview(chunk).cast("B"))

    return _atomic_write(path, write), data_offset


def _convert_npy(path: Path, dtype: str) -> str:
    """Rewrite a float32 ``.npy`` as ``dtype`` in place (atomically, streamed); returns its SHA-256."""
    shape = np.load(path, mmap_mode="r", allow_pickle=False).shape

    def write(handle):
        _npy_header(handle, shape, dtype)
        # the open handle keeps reading the float32 file until os.replace swaps it
        for _start, chunk in iter_npy_rows(path):
            handle.write(memoryview(np.ascontiguousarray(chunk, dtype=dtype)).cast("B"))

    return _atomic_write(path, write)


def _write_json_rows(path: Path, rows) -> str:
    """Write a JSON list one row at a time (no whole-document string in memory)."""

    def write(handle):
        handle.write(b"[")
        for i, row in enumerate(rows):
            handle.write((",\n" if i else "\n").encode() + json.dumps(row, sort_keys=True).encode("utf-8"))
        handle.write(b"\n]\n")

    return _atomic_write(path, write)


def build_annoy(vectors_npy: Path, trees: int, path: Path, seed: int = 42) -> str:
    """Build an Annoy (euclidean) index over the vectors in a ``.npy``; save it atomically.

    Annoy builds straight into the file (``on_disk_build``), so the index is
    never held in memory beside a copy of the vectors. Returns its SHA-256.
    """
    from annoy import AnnoyIndex

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _unlink_quietly(tmp)
    index = None
    try:
        for start, chunk in iter_npy_rows(vectors_npy):
            if index is None:
                index = AnnoyIndex(chunk.shape[1], METRIC)
                index.set_seed(seed)
                index.on_disk_build(str(tmp))
            for offset, vector in enumerate(chunk):
                index.add_item(start + offset, vector)
        if index is None:  # no rows: an empty file, as the loader expects nothing from it
            atomic_write_bytes(tmp, b"")
        else:
            index.build(trees, n_jobs=-1)
            index.unload()
        os.chmod(tmp, 0o644)  # Annoy creates it 0600, which would hide it from a web server user
        _fsync_file(tmp)  # Annoy does not fsync; the other artifacts are
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return sha256_file(path)


def publish(
    index_dir: Path,
    *,
    embeddings,
    filenames: list[str],
    metadata,
    manifest: dict,
    trees: int,
    derive=None,
    colours=None,
    vectors_dtype: str = "float32",
    projection=None,
) -> Path:
    """Write a complete generation and switch ``current`` to it.

    ``embeddings`` is an N x dim float array or anything with ``shape`` that
    slices by row ranges (rows are read a chunk at a time, so a lazy source
    keeps publishing in bounded memory); ``colours``, if given, is the same
    kind of source for the N colour descriptors; ``metadata`` is a sequence of N
    dicts. ``manifest`` holds the descriptive fields; checksums, count and
    the format version are added here. ``derive(vectors)``, if given, gets
    the written vectors memory-mapped and returns more manifest fields
    computed from them. ``vectors_dtype`` is what ``embeddings.npy`` (the
    re-ranking vectors workers map) is stored as: ``float32`` or ``float16``;
    Annoy, ``derive`` and ``embeddings.pkl`` always get float32. With a
    ``projection`` (``indexer.tuning``), ``embeddings.pkl`` keeps the model's
    vectors while ``embeddings.npy``, Annoy and ``derive`` get the tuned
    ones, and the projection is written beside them. Returns the new
    generation folder.
    """
    if vectors_dtype not in VECTOR_DTYPES:
        raise ValueError(f"vectors_dtype must be one of {VECTOR_DTYPES}, got {vectors_dtype!r}")
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    shape = tuple(getattr(embeddings, "shape", ()))
    if len(shape) != 2 or shape[0] != len(filenames) or len(metadata) != len(filenames):
        raise ValueError("embeddings, filenames and metadata must have the same length")
    shape = (int(shape[0]), int(shape[1]))
    if colours is not None and (len(colours.shape) != 2 or colours.shape[0] != shape[0]):
        raise ValueError("colours must have one row per embedding")
    published_ns = time.time_ns()
    gen = index_dir / f"gen-{published_ns}-{os.getpid()}"
    gen.mkdir()
    try:
        _write_generation(
            gen, embeddings, shape, filenames, metadata, manifest, trees, derive, published_ns, colours, vectors_dtype,
            projection,
        )
    except BaseException:
        # a full disk or a crash must not leave a half-written generation for the next build to keep
        shutil.rmtree(gen, ignore_errors=True)
        raise
    _switch_current(index_dir, gen)
    _ensure_top_level_links(index_dir)
    remove_old_generations(index_dir)
    return gen


class _Tuned:
    """Rows of a mapped ``.npy`` of model vectors, tuned by a projection as they are read."""

    def __init__(self, path: Path, projection):
        self._raw = np.load(path, mmap_mode="r", allow_pickle=False)
        self._projection = projection
        self.shape = (len(self._raw), projection.dim)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self._projection.apply(self._raw[rows])


def _write_generation(
    gen: Path, embeddings, shape, filenames, metadata, manifest, trees, derive, published_ns, colours, vectors_dtype,
    projection=None,
):
    """Write every file of one generation, the manifest last.

    The vectors are written once as a float32 ``.npy``; the pickle, Annoy and
    ``derive`` read that file, and only then is it converted to
    ``vectors_dtype`` if that is not float32.
    """
    checksums = {}
    model_vectors = gen / (RAW_VECTORS_FILE if projection is not None else VECTORS_FILE)
    checksums[VECTORS_FILE] = _write_vectors_npy(model_vectors, embeddings, shape)
    checksums["embeddings.pkl"], pickle_offset = _write_array_pickle(gen / "embeddings.pkl", model_vectors, shape)
    model_dim = shape[1]
    if projection is not None:
        # the pickle keeps the model's vectors, so relearning the tuning never embeds again
        shape = (shape[0], projection.dim)
        checksums[VECTORS_FILE] = _write_vectors_npy(gen / VECTORS_FILE, _Tuned(model_vectors, projection), shape)
        os.unlink(model_vectors)
        checksums[PROJECTION_FILE] = atomic_write_npy(gen / PROJECTION_FILE, projection.to_array())
    if colours is not None:
        checksums[COLOURS_FILE] = _write_vectors_npy(gen / COLOURS_FILE, colours, (shape[0], int(colours.shape[1])))
    checksums["filenames.pkl"] = atomic_write_pickle(gen / "filenames.pkl", list(filenames))
    checksums["metadata.json"] = _write_json_rows(gen / "metadata.json", metadata)
    compact = Metadata.from_rows(metadata, count=shape[0])
    checksums[CODES_FILE] = atomic_write_npy(gen / CODES_FILE, compact.codes)
    checksums[VALUES_FILE] = atomic_write_bytes(gen / VALUES_FILE, compact.values_json())
    del compact
    checksums["index.ann"] = build_annoy(gen / VECTORS_FILE, trees, gen / "index.ann")
    manifest = dict(manifest)
    if derive is not None:
        manifest.update(derive(np.load(gen / VECTORS_FILE, mmap_mode="r", allow_pickle=False)))
    if vectors_dtype != "float32":
        checksums[VECTORS_FILE] = _convert_npy(gen / VECTORS_FILE, vectors_dtype)
    manifest.update(
        format_version=FORMAT_VERSION,
        count=shape[0],
        dim=shape[1],
        model_dim=model_dim,
        tuning=None if projection is None else projection.tuning_id,
        vectors_dtype=vectors_dtype,
        embeddings_pkl_offset=pickle_offset,
        metric=METRIC,
        trees=trees,
        checksums=checksums,
        published_ns=published_ns,
    )
    _record_verified(gen, checksums)  # hashed while writing: workers need not hash again
    atomic_write_json(gen / MANIFEST, manifest)  # last: marks the set complete
    fsync_dir(gen)


def _switch_current(index_dir: Path, gen: Path) -> None:
    tmp = index_dir / f".{CURRENT}.{os.getpid()}.tmp"
    _unlink_quietly(tmp)
    os.symlink(gen.name, tmp)
    os.replace(tmp, index_dir / CURRENT)
    fsync_dir(index_dir)


def _ensure_top_level_links(index_dir: Path) -> None:
    for name in ARTIFACT_FILES + (COLOURS_FILE, MANIFEST):
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
    """A verified generation, ready for searching.

    ``embeddings`` is memory-mapped from ``embeddings.npy`` (read-only,
    shared by every process on the host through the page cache);
    ``metadata`` is a ``Metadata`` of code arrays, memory-mapped likewise.
    """

    gen_dir: Path
    manifest: dict
    embeddings: np.ndarray
    filenames: Sequence[str]  # a list as loaded; a Searcher swaps in a compact StringColumn
    metadata: Metadata
    annoy: object = field(repr=False)
    colours: np.ndarray | None = None  # N x colour.DIM; None for a generation written before colours existed
    projection: object = None  # the catalogue tuning (indexer.tuning.Projection); None: the model's own vectors


@dataclass(frozen=True)
class ArrayFile:
    """A 2-D float array in a file, memory-mapped only while a block of its rows is read.

    Builds refer to stored rows through these instead of holding the rows,
    so a publish reads each row once, a block at a time, and keeps nothing
    mapped for long.
    """

    path: Path
    offset: int | None = None  # raw float32 rows start here (inside embeddings.pkl); None: a .npy file
    shape: tuple[int, int] | None = None

    def open(self) -> np.ndarray:
        """The array, memory-mapped read-only (unmapped when the caller drops it)."""
        if self.offset is None:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        return np.memmap(self.path, dtype=np.float32, mode="r", offset=self.offset, shape=self.shape)


def stored_rows(loaded: LoadedIndex) -> tuple[ArrayFile, ArrayFile] | None:
    """Where a build can re-read a verified generation's exact float32 vectors and its colour descriptors.

    The vectors come from the raw rows inside ``embeddings.pkl`` when the
    manifest records their offset (it always does when ``embeddings.npy`` is
    float16), else from a float32 ``embeddings.npy``. ``None`` for a
    generation without colour descriptors: its items are embedded again.
    """
    manifest, gen = loaded.manifest, loaded.gen_dir
    if loaded.colours is None or VECTORS_FILE not in (manifest.get("checksums") or {}):
        return None
    tuned = bool(manifest.get("tuning"))
    if loaded.embeddings.dtype == np.float32 and not tuned:
        # the file workers keep in the page cache: reading it costs no extra disk
        return ArrayFile(gen / VECTORS_FILE), ArrayFile(gen / COLOURS_FILE)
    # a tuned generation's embeddings.npy holds tuned vectors: the model's are in the pickle
    shape = (int(manifest["count"]), int(manifest.get("model_dim") or manifest["dim"]))
    offset = manifest.get("embeddings_pkl_offset")
    if not _raw_rows_at(gen / "embeddings.pkl", offset, shape):
        log.warning("embeddings.pkl in %s has no float32 rows where its manifest says; embedding again", gen.name)
        return None
    return ArrayFile(gen / "embeddings.pkl", offset, shape), ArrayFile(gen / COLOURS_FILE)


def _raw_rows_at(path: Path, offset, shape: tuple[int, int]) -> bool:
    """True when ``path`` holds ``shape`` raw float32 rows at ``offset``, announced by the pickle opcode before them."""
    nbytes = shape[0] * shape[1] * 4
    if type(offset) is not int or offset < 9:
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(offset - 9)
            announced = handle.read(9)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    return announced == pickle.BYTEARRAY8 + struct.pack("<Q", nbytes) and offset + nbytes <= size


def read_manifest(gen_dir: Path) -> dict:
    """Read and minimally check a generation's manifest."""
    try:
        manifest = json.loads((Path(gen_dir) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"manifest unreadable in {gen_dir}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"manifest in {gen_dir} has an unknown format")
    return manifest


# ---------------------------------------------------------------- verify once


# A file's identity as the kernel reports it. ctime changes on any write,
# truncate, rename or utime, and cannot be set back by a user, so a file
# edited after it was hashed never matches its record.
def _identity(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _record_verified(gen: Path, checksums: dict[str, str]) -> None:
    """Record that the files of ``gen`` hashed to ``checksums`` as they are now."""
    record = {name: {"sha256": digest, "identity": _identity(gen / name)} for name, digest in checksums.items()}
    atomic_write_json(gen / VERIFIED, record)


def _read_verified(gen: Path) -> dict:
    try:
        record = json.loads((gen / VERIFIED).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _still_verified(path: Path, digest: str | None, entry) -> bool:
    """True when ``path`` was hashed to ``digest`` and has not changed since."""
    return (
        isinstance(entry, dict)
        and digest is not None
        and entry.get("sha256") == digest
        and entry.get("identity") is not None
        and entry.get("identity") == _identity(path)
    )


def _verify(gen: Path, names: tuple[str, ...], checksums: dict, read: frozenset) -> dict[str, bytes]:
    """Check every file of ``gen`` against the manifest; return the bytes of those in ``read``.

    Files read into memory are hashed on every open (cheap: their bytes are
    read anyway, and a pickle is never decoded unhashed). The large files,
    which are memory-mapped or not read at all, are hashed only when the
    generation's verified record does not match their current size, mtime,
    ctime and inode; a successful hash is then recorded (when the folder is
    writable), so the next worker start reads none of their bytes.
    """
    record = _read_verified(gen)
    blobs: dict[str, bytes] = {}
    hashed = []
    for name in names:
        path = gen / name
        if name in read:
            try:
                blobs[name] = path.read_bytes()
            except OSError:
                blobs[name] = b""
            ok = hashlib.sha256(blobs[name]).hexdigest() == checksums.get(name)
        elif _still_verified(path, checksums.get(name), record.get(name)):
            ok = True
        else:
            ok = path.is_file() and sha256_file(path) == checksums.get(name)
            hashed.append(name)
        if not ok:
            raise ArtifactError(f"{name} in {gen.name} does not match its checksum; refusing to use it")
    if hashed:
        log.info("Verified %s in %s by checksum", ", ".join(hashed), gen.name)
        try:
            _record_verified(gen, {name: checksums[name] for name in names})
        except OSError as exc:  # a read-only index dir: verify again next time
            log.info("Could not record the verification of %s: %s", gen.name, exc)
    return blobs


def _load_npy(path: Path, count: int) -> np.ndarray:
    # an empty file cannot be memory-mapped; the view drops np.memmap's subclass
    # (so arithmetic gives plain arrays) and keeps the mapping alive as its base
    return np.load(path, mmap_mode="r" if count else None, allow_pickle=False).view(np.ndarray)


def load_index(index_dir: Path, *, expect: dict | None = None) -> LoadedIndex:
    """Load the current generation after verifying it against its manifest.

    ``expect`` maps manifest keys (e.g. ``weights_id``) to required values;
    a mismatch raises ``ArtifactError`` just like a corrupt file, and no
    pickle is opened before its checksum matched. Generations written
    before ``embeddings.npy`` existed are verified in full and loaded into
    memory, as they always were.
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
    count, dim = manifest.get("count"), manifest.get("dim")
    legacy = VECTORS_FILE not in checksums
    names = LEGACY_FILES if legacy else ARTIFACT_FILES
    if COLOURS_FILE in checksums:
        names += (COLOURS_FILE,)
    if manifest.get("tuning"):
        names += (PROJECTION_FILE,)
    read = frozenset(LEGACY_FILES if legacy else ("filenames.pkl", VALUES_FILE))
    blobs = _verify(gen, names, checksums, read)
    colours = None
    try:
        filenames = safe_unpickle(blobs["filenames.pkl"])
        if legacy:
            embeddings = safe_unpickle(blobs["embeddings.pkl"])
            rows = json.loads(blobs["metadata.json"])
            metadata = Metadata.from_rows(rows, count=len(rows))
        else:
            embeddings = _load_npy(gen / VECTORS_FILE, count)
            metadata = Metadata.load(_load_npy(gen / CODES_FILE, count), blobs[VALUES_FILE])
        colours = _load_npy(gen / COLOURS_FILE, count) if COLOURS_FILE in checksums else None
        projection = _load_projection(gen, manifest) if manifest.get("tuning") else None
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"artifact in {gen.name} could not be decoded: {exc}") from None
    if (
        not isinstance(embeddings, np.ndarray)
        or manifest.get("vectors_dtype", "float32") not in VECTOR_DTYPES
        or embeddings.dtype.name != manifest.get("vectors_dtype", "float32")
        or not embeddings.flags.c_contiguous
        or embeddings.shape != (count, dim)
        or not isinstance(filenames, list)
        or len(filenames) != count
        or len(metadata) != count
        or (colours is not None and (colours.dtype != np.float32 or colours.ndim != 2 or len(colours) != count))
    ):
        raise ArtifactError(f"artifacts in {gen.name} disagree in shape or length")
    annoy = AnnoyIndex(dim, METRIC)
    if count:
        annoy.load(str(gen / "index.ann"))  # memory-mapped: shared between workers
        if annoy.get_n_items() != count:
            raise ArtifactError(f"index.ann in {gen.name} holds {annoy.get_n_items()} items, expected {count}")
    return LoadedIndex(gen, manifest, embeddings, list(filenames), metadata, annoy, colours, projection)


def _load_projection(gen: Path, manifest: dict):
    """The verified generation's catalogue tuning, checked against the manifest's id and dimensions."""
    from .tuning import Projection

    projection = Projection.load(gen / PROJECTION_FILE)
    if projection.tuning_id != manifest.get("tuning") or projection.dim != manifest.get("dim"):
        raise ValueError(f"{PROJECTION_FILE} is not the tuning its manifest names")
    return projection


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
