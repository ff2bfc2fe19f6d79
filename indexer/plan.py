"""Planning a build: which catalogue files to embed, which vectors to reuse, and thumbnails.

Everything here is shared by every engine (``indexer.engines``): the plan
says what to embed, and ``decode_and_thumbnail`` turns one catalogue file
into the model's input array and its thumbnail, so each engine decodes,
thumbnails and skips files alike.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoints, ids
from .catalogue import CatalogueFile, CatalogueSnapshot, read_styles
from .checksums import atomic_write_bytes
from .colour import COLOUR_VERSION
from .config import Settings
from .generation import THUMBS_DIR, ArtifactError, CurrentManifest, read_current_manifest
from .images import PREPROCESS_VERSION, ImageError, prepare
from .loading import load_generation, stored_rows
from .memory import release_free_memory

log = logging.getLogger(__name__)


@dataclass
class Skipped:
    """A catalogue file that could not be indexed, and why."""

    relpath: str
    reason: str
    message: str


@dataclass
class BuildPlan:
    """What a build will do, decided before any image is decoded."""

    root: Path
    files: list[CatalogueFile]
    styles: dict
    model_key: dict
    reuse: dict[str, checkpoints.RowSource]  # relpath -> where its stored vector and colour descriptor lie
    to_embed: list[CatalogueFile]
    removed: int
    missing_thumbs: list[CatalogueFile] = field(default_factory=list)
    rejected: list[Skipped] = field(default_factory=list)  # found by the scan, never decoded
    styles_fingerprint: list | None = None  # of styles.csv when the catalogue was scanned; the manifest records it
    # the generation this build replaces: its folder and its manifest's fixed fields (the per-item lists dropped)
    previous: CurrentManifest = field(default_factory=CurrentManifest)
    previous_ids: Mapping[str, str] = field(default_factory=dict)  # its public ids by file, which the build keeps
    verified_shards: frozenset[str] = frozenset()  # work/ sidecars planning read; publishing reads only newer ones
    id_collisions: int = 0  # files whose name gives an id another file holds (set when published: indexer.ids)


def model_key(model_id: str, weights_id: str, vector_space: str = "fp32") -> dict:
    """The manifest fields that make stored vectors (and colour descriptors) comparable with new ones.

    ``model_id`` is the model's (``ModelSpec.model_id``), so switching models rebuilds once.
    ``vector_space`` is ``fp32`` for TensorFlow and every fp32 runtime (their
    vectors are interchangeable) and ``int8-<calibration id>`` for an INT8 model.
    """
    return {
        "model": model_id,
        "weights_id": weights_id,
        "preprocess_version": PREPROCESS_VERSION,
        "vector_space": vector_space,
        "colour_version": COLOUR_VERSION,
    }


def key_for(model) -> dict:
    """The model key of a loaded embedder, or of a bare ``WeightsChoice`` (the Ray engine: TensorFlow, fp32)."""
    choice = getattr(model, "choice", model)
    return model_key(choice.spec.model_id, choice.weights_id, getattr(model, "vector_space", "fp32"))


def thumb_name(item: CatalogueFile) -> str:
    """Thumbnail file name: changes whenever the source file changes.

    Hashed from the name's raw bytes (what the filesystem holds), so any
    name the filesystem allows gives a valid, fixed-length thumbnail name.
    """
    key = os.fsencode(item.relpath) + f"|{item.size}|{item.mtime_ns}".encode()
    return hashlib.sha1(key, usedforsecurity=False).hexdigest()[:24] + ".jpg"


def thumb_path(index_dir: Path, name: str) -> Path:
    """Where a thumbnail lives: ``thumbs/<2 chars>/<name>``."""
    return Path(index_dir) / THUMBS_DIR / name[:2] / name


# ---------------------------------------------------------------- planning


class PreviousRows:
    """Where the current generation keeps each file's vector and colour descriptor, looked up by file.

    A reference ``(vectors, colours, row)``, not the row, so reusing a
    generation of any size holds no vectors; and the per-item lists are
    compact columns (``ids.StoredItems``).
    """

    def __init__(self, stored: ids.StoredItems | None = None, files: tuple | None = None):
        self._stored, self._files = stored, files

    def reference(self, item: CatalogueFile) -> checkpoints.RowSource | None:
        """Where the stored vector of ``item`` lies, or None when the file is new or changed since.

        Keeps nothing but the reference it returns (no fingerprint lists):
        a build holds a million of them, and longer-lived objects made
        between them would leave memory the allocator cannot give back.
        """
        row = None if self._stored is None else self._stored.row(item.relpath)
        if row is None or self._stored.sizes[row] != item.size or self._stored.mtimes[row] != item.mtime_ns:
            return None
        vectors, colours = self._files
        return vectors, colours, row

    def relpaths(self):
        """The files the generation holds."""
        return iter(()) if self._stored is None else iter(self._stored.relpaths)


def previous_rows(current: CurrentManifest, stored: ids.StoredItems | None, key: dict) -> PreviousRows:
    """The current generation's rows, if it is intact and compatible with ``key`` (else an empty ``PreviousRows``).

    ``current`` is its manifest and ``stored`` its items (``ids.take_previous_items``),
    as the build read them once; the generation's files are verified here.
    """
    if current.manifest is None:
        if current.error is not None:
            log.warning("Not reusing the existing index: %s", current.error)
        return PreviousRows()
    try:
        loaded = load_generation(current.gen, current.manifest, expect=key)
    except ArtifactError as exc:
        log.warning("Not reusing the existing index: %s", exc)
        return PreviousRows()
    loaded.annoy.unload()
    files = stored_rows(loaded)
    del loaded  # unmaps the vectors (a publish maps them again a block at a time) and drops the file names
    release_free_memory()  # or the unpickled names' leftovers would stay in the heap while the build publishes
    if files is None or stored is None:
        return PreviousRows()
    return PreviousRows(stored, files)


def plan_build(
    settings: Settings,
    key: dict,
    *,
    full: bool = False,
    catalogue: CatalogueSnapshot | None = None,
    current: CurrentManifest | None = None,
) -> BuildPlan:
    """Decide what to reuse and what to embed (``key``: see ``model_key``).

    ``catalogue`` is the build's one scan of the catalogue and ``current``
    the current generation's manifest as the build read it (both are taken
    here when not given), so nothing is scanned or parsed twice. The
    manifest's per-item lists become compact columns and are dropped from
    ``current``, which the plan keeps as ``previous``. Every shard in
    ``work/`` is verified here, once.
    """
    root = settings.catalogue
    if catalogue is None:
        catalogue = CatalogueSnapshot.take(root)
    if current is None:
        current = read_current_manifest(settings.index_dir)
    files = catalogue.files
    items = ids.take_previous_items(current)
    work = checkpoints.work_dir(settings.index_dir)
    checkpoints.remove_temporaries(work)
    verified_shards: set[str] = set()
    if full:
        checkpoints.clear(work)
        previous, shards = PreviousRows(), {}
    else:
        previous = previous_rows(current, items, key)
        current_fingerprints = {item.relpath: item.fingerprint for item in files}
        shards = checkpoints.locate_shards(
            work, model_key=key, fingerprints=current_fingerprints, seen=verified_shards
        )
        del current_fingerprints
    reuse: dict[str, checkpoints.RowSource] = {}
    to_embed: list[CatalogueFile] = []
    missing_thumbs: list[CatalogueFile] = []
    for item in files:
        # shards of an interrupted build are newer than the current generation;
        # locate_shards kept only rows whose fingerprint is the file's now
        stored = shards.get(item.relpath)
        source = stored[1] if stored is not None else previous.reference(item)
        if source is not None:
            reuse[item.relpath] = source
            if not thumb_path(settings.index_dir, thumb_name(item)).is_file():
                missing_thumbs.append(item)
        else:
            to_embed.append(item)
    listed = {item.relpath for item in files}
    removed = sum(1 for relpath in previous.relpaths() if relpath not in listed)
    del listed
    return BuildPlan(
        root,
        files,
        read_styles(root),
        key,
        reuse,
        to_embed,
        removed,
        missing_thumbs,
        [Skipped(*r) for r in catalogue.rejected],
        styles_fingerprint=catalogue.styles,
        previous=current,
        previous_ids=ids.ids_by_relpath(items),
        verified_shards=frozenset(verified_shards),
    )


def decode_and_thumbnail(root: Path, index_dir: Path, item: CatalogueFile, thumb_size: int, size: int):
    """Decode one file and write its thumbnail; returns the model array or an ``ImageError``.

    ``size`` is the model's input size (``ModelSpec.input_size``): the array
    is ``size`` x ``size``. Shared by every engine, so files are decoded,
    thumbnailed and skipped alike; each engine takes the colour descriptor
    from the same array.
    """
    try:
        array, thumb = prepare(root / item.relpath, thumb_size, size)
    except ImageError as exc:
        return exc
    except OSError as exc:  # the file vanished or became unreadable mid-build
        log.warning("Cannot read %s: %s", item.relpath, exc)
        return ImageError("unreadable", "The file could not be read.")
    try:
        path = thumb_path(index_dir, thumb_name(item))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, thumb)
    except OSError as exc:
        # The vector is still good; the next build sees the thumbnail missing
        # and writes it again. Dropping the item would lose work silently.
        log.error("Could not write the thumbnail of %s: %s", item.relpath, exc)
    return array
