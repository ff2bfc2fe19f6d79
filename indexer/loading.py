"""Opening a generation for searching: verified against its checksums first, pickles read safely.

Files read into memory (``filenames.pkl``, the metadata values) are hashed
on every open, so no pickle is decoded unhashed, and the unpickler accepts
only numpy arrays and lists. The large files, memory-mapped or not read at
all, are hashed only when their identity no longer matches ``verified.json``.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checksums import sha256_bytes, sha256_file
from .generation import (
    ARTIFACT_FILES,
    COLOURS_FILE,
    LEGACY_FILES,
    METRIC,
    PROJECTION_FILE,
    VECTOR_DTYPES,
    VECTORS_FILE,
    ArtifactError,
    current_generation,
    read_manifest,
    read_verified,
    record_verified,
    still_verified,
)
from .metadata import CODES_FILE, VALUES_FILE, Metadata
from .vector_files import ArrayFile, raw_rows_at

log = logging.getLogger(__name__)


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
    if not raw_rows_at(gen / "embeddings.pkl", offset, shape):
        log.warning("embeddings.pkl in %s has no float32 rows where its manifest says; embedding again", gen.name)
        return None
    return ArrayFile(gen / "embeddings.pkl", offset, shape), ArrayFile(gen / COLOURS_FILE)


def _verify(gen: Path, names: tuple[str, ...], checksums: dict, read: frozenset) -> dict[str, bytes]:
    """Check every file of ``gen`` against the manifest; return the bytes of those in ``read``.

    Files read into memory are hashed on every open (cheap: their bytes are
    read anyway, and a pickle is never decoded unhashed). The large files,
    which are memory-mapped or not read at all, are hashed only when the
    generation's verified record does not match their current size, mtime,
    ctime and inode; a successful hash is then recorded (when the folder is
    writable), so the next worker start reads none of their bytes.
    """
    record = read_verified(gen)
    blobs: dict[str, bytes] = {}
    hashed = []
    for name in names:
        path = gen / name
        if name in read:
            try:
                blobs[name] = path.read_bytes()
            except OSError:
                blobs[name] = b""
            ok = sha256_bytes(blobs[name]) == checksums.get(name)
        elif still_verified(path, checksums.get(name), record.get(name)):
            ok = True
        else:
            ok = path.is_file() and sha256_file(path) == checksums.get(name)
            hashed.append(name)
        if not ok:
            raise ArtifactError(f"{name} in {gen.name} does not match its checksum; refusing to use it")
    if hashed:
        log.info("Verified %s in %s by checksum", ", ".join(hashed), gen.name)
        try:
            record_verified(gen, {name: checksums[name] for name in names})
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
    gen = current_generation(index_dir)
    if gen is None:
        raise ArtifactError(f"no index in {index_dir}")
    return load_generation(gen, read_manifest(gen), expect=expect)


def load_generation(gen: Path, manifest: dict, *, expect: dict | None = None) -> LoadedIndex:
    """Load the generation ``gen`` whose manifest was already read, after verifying it (see ``load_index``).

    A build reads the manifest once and loads the generation with it; only
    the manifest's fixed fields are used here, so its per-item lists may
    already have been dropped.
    """
    from annoy import AnnoyIndex

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

    projection = Projection.load(gen / PROJECTION_FILE, manifest.get("dim"))
    if projection.tuning_id != manifest.get("tuning") or projection.dim != manifest.get("dim"):
        raise ValueError(f"{PROJECTION_FILE} is not the tuning its manifest names")
    return projection
