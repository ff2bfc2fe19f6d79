"""Writing a complete generation and switching ``current`` to it.

Every file is written into a fresh ``gen-<id>`` folder through a temporary
name and hashed on its way to disk; the manifest, with every checksum, is
written last, and only then is ``current`` switched in one ``os.replace``.
A crash at any point leaves the previous complete set or the new one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .checksums import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_npy,
    atomic_write_pickle,
    fsync_dir,
    fsync_file,
    sha256_file,
    unlink_quietly,
)
from .cleaning import remove_old_generations
from .generation import (
    ARTIFACT_FILES,
    COLOURS_FILE,
    CURRENT,
    FORMAT_VERSION,
    MANIFEST,
    METRIC,
    PROJECTION_FILE,
    RAW_VECTORS_FILE,
    VECTOR_DTYPES,
    VECTORS_FILE,
    record_verified,
    write_manifest,
)
from .metadata import CODES_FILE, VALUES_FILE, Metadata
from .vector_files import convert_npy, iter_npy_rows, write_array_pickle, write_vectors_npy


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
    tuned_dim = projection.dim if projection is not None else None
    colour_dim = int(colours.shape[1]) if colours is not None else 0
    # again here, after embedding took its share: a publish that cannot fit does not start
    ensure_free_space(
        index_dir, generation_bytes(shape[0], shape[1], trees, tuned_dim=tuned_dim, colour_dim=colour_dim)
    )
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


# ---------------------------------------------------------------- disk space


class NotEnoughSpace(OSError):
    """The index dir's filesystem has too little free space for what a build would write (errno ``ENOSPC``)."""

    def __init__(self, path: Path, free: int, needed: int):
        self.free, self.needed = free, needed
        super().__init__(
            errno.ENOSPC,
            f"not enough disk space to build the index: {_mb(free)} free, {_mb(needed)} needed "
            f"(with a margin of 10% + 64 MB)",
            str(path),
        )

    def public_message(self) -> str:
        """What the status file may say: the sizes, no path."""
        return (
            f"The index could not be built: the disk is full ({_mb(self.free)} free, "
            f"{_mb(self.needed)} needed). Free some space and build again."
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 2**20:.1f} MB"


SPACE_MARGIN_SHARE = 0.10
SPACE_MARGIN_BYTES = 64 * 2**20
_PAGE = 4096


def annoy_bytes(count: int, dim: int, trees: int) -> int:
    """An upper bound on the size of Annoy's (euclidean) file for ``count`` vectors of ``dim``.

    A node is ``16 + 4 x dim`` bytes; there is one per item, and each tree
    adds split nodes and leaf lists. Measured (annoy 1.17, n 10 to 5,000,
    dim 16 to 256, 1 to 50 trees): each tree adds at most
    ``0.2 x n`` nodes at dim 16, ``0.047 x n`` at 64, ``0.012 x n`` at 256,
    about ``2 x n / (dim + 2)``, and 2 nodes for a tiny catalogue. The bound
    doubles that share and adds 4 nodes a tree.
    """
    if count <= 0:
        return 0
    node = 16 + 4 * dim
    nodes = count + trees * (4 + 4 * count // (dim + 2) + 1) + 2
    return node * nodes + _PAGE


def generation_bytes(count: int, dim: int, trees: int, *, tuned_dim: int | None = None, colour_dim: int = 0) -> int:
    """About what one generation of ``count`` items takes on disk (an upper bound, without metadata text).

    The model's float32 vectors are written twice (``.npy`` then the pickle
    copying it) before the ``.npy`` is dropped for the tuned vectors, so both
    count; the colours and Annoy's file over the vectors it indexes; the
    per-item text (file names, metadata, codes) at a generous 1 KB an item.
    """
    vectors = count * dim * 4
    indexed_dim = tuned_dim if tuned_dim is not None else dim
    tuned = count * tuned_dim * 4 if tuned_dim is not None else 0
    colours = count * colour_dim * 4
    return 2 * vectors + tuned + colours + annoy_bytes(count, indexed_dim, trees) + count * 1024 + 16 * _PAGE


def free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer on ``path``'s filesystem."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def ensure_free_space(index_dir: Path, needed: int) -> None:
    """Raise ``NotEnoughSpace`` unless ``needed`` bytes, plus 10% and 64 MB, are free on ``index_dir``'s disk."""
    wanted = int(needed * (1 + SPACE_MARGIN_SHARE)) + SPACE_MARGIN_BYTES
    free = free_bytes(index_dir)
    if free < wanted:
        raise NotEnoughSpace(Path(index_dir), free, wanted)


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
    checksums[VECTORS_FILE] = write_vectors_npy(model_vectors, embeddings, shape)
    checksums["embeddings.pkl"], pickle_offset = write_array_pickle(gen / "embeddings.pkl", model_vectors, shape)
    model_dim = shape[1]
    if projection is not None:
        # the pickle keeps the model's vectors, so relearning the tuning never embeds again
        shape = (shape[0], projection.dim)
        checksums[VECTORS_FILE] = write_vectors_npy(gen / VECTORS_FILE, _Tuned(model_vectors, projection), shape)
        os.unlink(model_vectors)
        checksums[PROJECTION_FILE] = atomic_write_npy(gen / PROJECTION_FILE, projection.to_array())
    if colours is not None:
        checksums[COLOURS_FILE] = write_vectors_npy(gen / COLOURS_FILE, colours, (shape[0], int(colours.shape[1])))
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
        checksums[VECTORS_FILE] = convert_npy(gen / VECTORS_FILE, vectors_dtype)
    manifest.update(
        format_version=FORMAT_VERSION,
        count=shape[0],
        dim=shape[1],
        model_dim=model_dim,
        tuning=None if projection is None else projection.tuning_id,
        tuning_items=None if projection is None else projection.learned_from,
        tuning_kind_dims=None if projection is None else projection.kind_dims,
        tuning_recipe=None if projection is None else projection.recipe,
        vectors_dtype=vectors_dtype,
        embeddings_pkl_offset=pickle_offset,
        metric=METRIC,
        trees=trees,
        checksums=checksums,
        published_ns=published_ns,
    )
    record_verified(gen, checksums)  # hashed while writing: workers need not hash again
    write_manifest(gen, manifest)  # last: marks the set complete
    fsync_dir(gen)


def _write_json_rows(path: Path, rows) -> str:
    """Write a JSON list one row at a time (no whole-document string in memory)."""

    def write(handle):
        handle.write(b"[")
        for i, row in enumerate(rows):
            handle.write((",\n" if i else "\n").encode() + json.dumps(row, sort_keys=True).encode("utf-8"))
        handle.write(b"\n]\n")

    return atomic_write(path, write)


def build_annoy(vectors_npy: Path, trees: int, path: Path, seed: int = 42) -> str:
    """Build an Annoy (euclidean) index over the vectors in a ``.npy``; save it atomically.

    Annoy builds straight into the file (``on_disk_build``), so the index is
    never held in memory beside a copy of the vectors. Returns its SHA-256.

    Annoy writes that file through a shared memory map, and a write into a
    map the disk has no block for is a SIGBUS: the process dies without a
    word. So the file's blocks are reserved first (``_reserve``: fallocate
    past the end of the file, an upper bound from ``annoy_bytes``), and a
    full disk is an ``OSError`` (ENOSPC) here, before anything is mapped.
    Building in memory and ``save()`` would avoid the map too, but would
    hold the whole index (every vector again, plus the trees: gigabytes for
    a large catalogue) in the build's heap, against bounded publishing;
    the reserved blocks cost no memory.
    """
    from annoy import AnnoyIndex

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    unlink_quietly(tmp)
    index = None
    try:
        for start, chunk in iter_npy_rows(vectors_npy):
            if index is None:
                index = AnnoyIndex(chunk.shape[1], METRIC)
                index.set_seed(seed)
                index.on_disk_build(str(tmp))
                _reserve(tmp, annoy_bytes(_npy_rows(vectors_npy), chunk.shape[1], trees))
            for offset, vector in enumerate(chunk):
                index.add_item(start + offset, vector)
        if index is None:  # no rows: an empty file, as the loader expects nothing from it
            atomic_write_bytes(tmp, b"")
        else:
            index.build(trees, n_jobs=-1)
            index.unload()
        os.chmod(tmp, 0o644)  # Annoy creates it 0600, which would hide it from a web server user
        fsync_file(tmp)  # Annoy does not fsync; the other artifacts are
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return sha256_file(path)


def _npy_rows(path: Path) -> int:
    return len(np.load(path, mmap_mode="r", allow_pickle=False))


_FALLOC_FL_KEEP_SIZE = 1
_libc = None


def _reserve(path: Path, size: int) -> None:
    """Allocate ``size`` bytes of disk blocks for ``path`` without changing its size (Linux ``fallocate``).

    Annoy grows the file with ``ftruncate`` while it builds, which keeps
    blocks reserved past the end; ``O_TRUNC`` (in ``on_disk_build``) would
    drop them, so this runs after it. Raises ``OSError`` (ENOSPC) when the
    disk cannot hold them. Where ``fallocate`` is missing or the filesystem
    does not support it, only the up-front free-space check guards the map.
    """
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    fallocate = getattr(_libc, "fallocate", None) if _libc else None
    if fallocate is None or size <= 0:
        return
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
    fd = os.open(path, os.O_RDWR)
    try:
        if fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size) != 0:
            code = ctypes.get_errno()
            if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return
            raise OSError(code, f"could not reserve {_mb(size)} for the Annoy index: {os.strerror(code)}", str(path))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- switching current


def _switch_current(index_dir: Path, gen: Path) -> None:
    tmp = index_dir / f".{CURRENT}.{os.getpid()}.tmp"
    unlink_quietly(tmp)
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
        unlink_quietly(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
