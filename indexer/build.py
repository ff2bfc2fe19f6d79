"""The incremental build: scan, reuse what is still valid, embed the rest, publish.

Stages, each with plain files between them so any stage can be rerun:

1. ``plan.plan_build`` decides, per file of the catalogue's one scan,
   whether its vector can be reused (from the current generation or from
   shards of an interrupted build) or must be embedded. The build scans
   the catalogue once, reads the current manifest once and verifies each
   shard once, and hands them along.
2. An engine from ``indexer.engines`` (``local``, or ``ray`` on a cluster)
   embeds the rest and writes shards into ``work/``.
3. ``publish_plan`` merges everything in catalogue order and publishes a new
   generation atomically, then clears ``work/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from filelock import FileLock, Timeout

from . import calibration, checkpoints, ids, tuning
from .catalogue import CatalogueFile, CatalogueSnapshot
from .checksums import sha256_file
from .cleaning import remove_orphan_generations, remove_stale_thumbs
from .colour import DIM as COLOUR_DIM
from .config import Settings
from .embedder import Embedder
from .engines import get_engine
from .generation import (
    LOCK_FILE,
    PROJECTION_FILE,
    VECTOR_DTYPES,
    ArtifactError,
    CurrentManifest,
    current_generation,
    read_current_manifest,
)
from .images import ImageError, load_for_model
from .loading import load_generation
from .memory import release_free_memory
from .model import WeightsChoice
from .plan import BuildPlan, Skipped, key_for, plan_build, thumb_name, thumb_path
from .progress import ProgressReporter
from .publish import NotEnoughSpace, ensure_free_space, generation_bytes, publish
from .vector_files import ArrayFile

log = logging.getLogger(__name__)


class BuildInProgress(RuntimeError):
    """Another process holds the build lock for this index dir."""


@dataclass
class BuildReport:
    """What a build did, for the summary line and for the web app."""

    total: int = 0
    indexed: int = 0
    reused: int = 0
    removed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    elapsed_s: float = 0.0
    tuning_s: float = 0.0  # of elapsed_s, learning the catalogue tuning (embedding its scenes included); 0 when kept
    up_to_date: bool = False  # nothing new, changed or removed: the current generation was kept
    id_collisions: int = 0  # files whose name gives a public id another file holds (each logged; indexer.ids)

    @property
    def images_per_s(self) -> float:
        """Catalogue images embedded per second of the whole build (tuning included)."""
        return self.indexed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def images_per_s_untuned(self) -> float:
        """Catalogue images embedded per second of the build less its tuning: what the embedding pipeline keeps up."""
        spent = self.elapsed_s - self.tuning_s
        return self.indexed / spent if spent > 0 else 0.0

    def skipped_by_reason(self) -> dict[str, int]:
        """How many files were skipped for each reason code."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return counts

    def summary(self) -> str:
        """One human-readable line."""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_by_reason().items())) or "none"
        if self.up_to_date:
            return (
                f"Index is up to date: {self.total} items, skipped {len(self.skipped)} ({reasons}); "
                f"nothing new, changed or removed (checked in {self.elapsed_s:.1f}s)"
            )
        rate = f" ({self.images_per_s:.1f} images/s)" if self.indexed else ""
        collisions = f", {self.id_collisions} id collisions (see the log)" if self.id_collisions else ""
        tuned = f", tuning {self.tuning_s:.1f}s of it" if self.tuning_s else ""
        return (
            f"{self.total} items in index: indexed {self.indexed}, reused {self.reused}, "
            f"removed {self.removed}, skipped {len(self.skipped)} ({reasons}){collisions} "
            f"in {self.elapsed_s:.1f}s{rate}{tuned}"
        )

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "total": self.total,
            "indexed": self.indexed,
            "reused": self.reused,
            "removed": self.removed,
            "skipped": [vars(s) for s in self.skipped],
            "skipped_by_reason": self.skipped_by_reason(),
            "elapsed_s": round(self.elapsed_s, 3),
            "tuning_s": round(self.tuning_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "up_to_date": self.up_to_date,
            "id_collisions": self.id_collisions,
        }


def build_lock(index_dir: Path) -> FileLock:
    """The lock that makes sure one process builds an index dir at a time."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(index_dir) / LOCK_FILE))


# ---------------------------------------------------------------- publishing


def _keep_reused_vectors(plan: BuildPlan, skipped: list[Skipped]) -> list[Skipped]:
    """Drop failures of files whose stored vector is reused.

    For those the engine only regenerated a thumbnail; the file is unchanged
    since it was embedded, so its vector stays in the index and the missing
    thumbnail is retried by the next build. Every other failure is logged
    and reported as skipped.
    """
    kept = []
    for item in skipped:
        if item.relpath in plan.reuse:
            log.warning("Could not regenerate the thumbnail of %s: %s", item.relpath, item.message)
        else:
            log.warning("Skipping %s: %s", item.relpath, item.message)
            kept.append(item)
    return kept


class _PlanVectors:
    """One array of a publish (vectors or colour descriptors) in catalogue order, read a block of rows at a time.

    Each row is a reference ``(vectors file, colours file, row)`` into the
    previous generation or a shard in ``work/``; a block is gathered when
    ``publish.publish`` asks for it, mapping each file only while its rows
    are copied, so publishing never holds every row at once. ``part`` picks
    the array: 0 for the vectors, 1 for the colour descriptors.
    """

    def __init__(self, sources: list[checkpoints.RowSource], dim: int, part: int = 0):
        self._sources = sources
        self._part = part
        self.shape = (len(sources), dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        picked = self._sources[rows]
        out = np.empty((len(picked), self.shape[1]), np.float32)
        by_file: dict[ArrayFile, tuple[list[int], list[int]]] = {}
        for i, source in enumerate(picked):
            targets, file_rows = by_file.setdefault(source[self._part], ([], []))
            targets.append(i)
            file_rows.append(source[2])
        for array_file, (targets, file_rows) in by_file.items():
            mapped = array_file.open()
            out[targets] = mapped[file_rows]
            del mapped  # unmapped now: a publish keeps no file mapped between blocks
        return out


class _PlanMetadata(Sequence):
    """styles.csv rows of the published files, looked up when read (no list of dicts held)."""

    def __init__(self, relpaths: list[str], item_ids: list[str], styles: dict):
        self._relpaths, self._ids, self._styles = relpaths, item_ids, styles
        self._holders = dict(zip(item_ids, relpaths))

    def __len__(self) -> int:
        return len(self._relpaths)

    def _row(self, row: int) -> dict:
        key = ids.metadata_key(self._relpaths[row], self._ids[row], self._holders)
        return dict(self._styles.get(key, {})) if key else {}

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self._row(i) for i in range(*row.indices(len(self)))]
        return self._row(row)


@dataclass
class PlanRows:
    """Where each item a build publishes reads its vector and colours, reused or new, in catalogue order."""

    sources: list[checkpoints.RowSource]
    kept: list[CatalogueFile]
    indexed: int  # items embedded by this build
    fingerprints: dict[str, list]

    def vectors(self, positions, dim: int) -> np.ndarray:
        """The model's vectors of the items at ``positions`` of ``kept`` (``(n, dim)`` float32)."""
        return _PlanVectors([self.sources[i] for i in positions], dim)[:]


def plan_rows(plan: BuildPlan, settings: Settings, skipped: list[Skipped]) -> PlanRows:
    """Locate every item's vector and colours, reused or just embedded; ``plan.reuse`` is emptied once used.

    Shards are located, not loaded: only shards written since planning are
    verified here (the plan's are in ``plan.reuse`` already).
    """
    fingerprints = {item.relpath: item.fingerprint for item in plan.files}
    fresh = checkpoints.locate_shards(
        checkpoints.work_dir(settings.index_dir),
        model_key=plan.model_key,
        fingerprints=fingerprints,
        skip=plan.verified_shards,
    )
    skipped_paths = {s.relpath for s in skipped}
    sources: list[checkpoints.RowSource] = []
    kept: list[CatalogueFile] = []
    indexed = 0
    for item in plan.files:
        if item.relpath in skipped_paths:
            continue
        stored = fresh.get(item.relpath)
        if stored is not None and list(stored[0]) == item.fingerprint:
            source = stored[1]
            indexed += item.relpath not in plan.reuse
        else:
            source = plan.reuse.get(item.relpath)
        if source is None:
            continue  # vanished between scan and publish
        sources.append(source)
        kept.append(item)
    del fresh
    # Every reused row is now referenced from ``sources``. The map's keys are
    # strings of the previous manifest (about 150 MB at a million items), and
    # dropping them keeps an incremental publish within a full one's memory.
    plan.reuse.clear()
    return PlanRows(sources, kept, indexed, fingerprints)


def publish_plan(
    plan: BuildPlan,
    settings: Settings,
    skipped: list[Skipped],
    dim: int,
    runtime: str = "tensorflow",
    projection: tuning.Projection | None = None,
    rows: PlanRows | None = None,
) -> tuple[int, int]:
    """Merge reused vectors and colours and new shards in catalogue order and publish.

    Rows are read a block at a time while the artifacts are written, so
    memory stays bounded by the block, not by the catalogue (``rows``: where
    they lie, ``plan_rows``; located here when not given). ``plan.reuse`` and
    ``plan.previous_ids`` are emptied once used.
    ``runtime`` (which engine embedded) is recorded in the
    manifest for information; ``plan.model_key`` decides compatibility.
    ``projection`` is the catalogue tuning the vectors are published through (``None``: as the model gave them).
    Returns ``(indexed_now, total)``.
    """
    if rows is None:
        rows = plan_rows(plan, settings, skipped)
    sources, kept, indexed, fingerprints = rows.sources, rows.kept, rows.indexed, rows.fingerprints
    relpaths = [i.relpath for i in kept]
    item_ids = ids.assign_ids(relpaths, plan.previous_ids)
    collisions = ids.id_collisions(relpaths, item_ids)
    for relpath, item_id, wanted, holder in collisions:
        log.warning("Id collision: %s would be %r, which %s holds; its id is %r", relpath, wanted, holder, item_id)
    plan.id_collisions = len(collisions)
    plan.previous_ids = {}  # the previous generation's columns: not needed while the artifacts are written
    manifest = dict(
        plan.model_key,
        runtime=runtime,
        created_at=time.time(),
        catalogue=str(plan.root),
        styles=plan.styles_fingerprint,
        items=[[i.relpath, i.size, i.mtime_ns] for i in kept],
        # public ids, kept from one generation to the next (indexer/ids.py)
        ids=item_ids,
        id_collisions=len(collisions),
        thumbs=[thumb_name(i) for i in kept],
        # the fingerprint lets check_freshness notice when a skipped file is fixed
        skipped=[dict(vars(s), fingerprint=fingerprints.get(s.relpath)) for s in skipped],
    )
    del fingerprints  # one list per item: not needed while the artifacts are written
    release_free_memory()  # what planning and the shards' item lists left in the heap
    publish(
        settings.index_dir,
        embeddings=_PlanVectors(sources, dim),
        colours=_PlanVectors(sources, COLOUR_DIM, part=1),
        filenames=relpaths,
        metadata=_PlanMetadata(relpaths, item_ids, plan.styles),
        manifest=manifest,
        trees=settings.annoy_trees,
        # how close is close in this catalogue, from the vectors as written
        derive=lambda vectors: {"match_scale": calibration.match_scale(vectors)},
        vectors_dtype=settings.vectors,
        projection=projection,
    )
    checkpoints.clear(checkpoints.work_dir(settings.index_dir))
    remove_stale_thumbs(settings.index_dir, set(manifest["thumbs"]))
    return indexed, len(kept)


def model_spec(model: Embedder | WeightsChoice):
    """The ``ModelSpec`` of an embedder or of a bare ``WeightsChoice`` (the Ray engine hands one over)."""
    return getattr(model, "choice", model).spec


def model_input_size(model: Embedder | WeightsChoice) -> int:
    """The side of the square ``model`` takes: an embedder's ``input_size``, or a bare ``WeightsChoice``'s spec's."""
    return model_spec(model).input_size


def _changed_share(plan: BuildPlan) -> float:
    """How much of the catalogue this build embeds or removes, against its size."""
    return (len(plan.to_embed) + plan.removed) / max(1, len(plan.files))


def catalogue_tuning(
    settings: Settings,
    plan: BuildPlan,
    rows: PlanRows,
    model: Embedder | WeightsChoice,
    reporter: ProgressReporter,
    retune: bool = False,
) -> tuple[tuning.Projection | None, float]:
    """The projection this build publishes through (``None``: tuning off), and the seconds spent learning it.

    The current generation's projection is kept when it was learned for the
    same model and still fits (``_still_fits``; ``retune`` relearns it
    anyway): 0 seconds. Otherwise it is learned again from a sample of the
    catalogue's own products (``indexer.tuning``); the seconds count reading
    the sample, embedding its views and solving, not loading a model.
    """
    if not settings.tuning:
        return None, 0.0
    files = rows.kept
    previous = _previous_projection(plan.previous, plan.model_key)
    # a projection learned before tuning also learned where products are is learned again, once
    outdated = previous is not None and previous.objectness is None
    outdated = outdated and (isinstance(model, WeightsChoice) or hasattr(model, "embed_with_features"))
    # and one learned by an older recipe (no crop views, no kinds): once, without embedding the catalogue
    outdated = outdated or (previous is not None and previous.recipe < tuning.RECIPE)
    if previous is not None and not (retune or outdated) and _still_fits(previous, plan, len(files), settings):
        log.info("Keeping the catalogue tuning %s", previous.tuning_id)
        return previous, 0.0
    embedder = model if hasattr(model, "embed") else None
    if embedder is None:  # the Ray engine hands over a WeightsChoice: tune with a local model
        from .runtimes import load_for_settings

        embedder = load_for_settings(settings)
    started = time.time()
    spec = model_spec(model)
    size = spec.input_size
    packshots, positions = [], []
    for row in tuning.sample_rows(len(files), settings.tuning_products):
        try:
            packshots.append(load_for_model(plan.root / files[row].relpath, size))
        except (ImageError, OSError):
            continue  # changed since it was embedded: learn from the others
        positions.append(int(row))
    if len(packshots) < tuning.MIN_PRODUCTS:
        log.info("Catalogue tuning needs %d products, this catalogue has %d: vectors kept as the model gives them",
                 tuning.MIN_PRODUCTS, len(packshots))
        return None, time.time() - started
    total = len(packshots) * tuning.SCENE_VIEWS
    message = (
        f"Tuning to this catalogue: {len(packshots)} products on {tuning.SCENE_VIEWS - tuning.CROP_VIEWS} scenes"
        f" and {tuning.CROP_VIEWS} crop each"
    )

    def progress(done: int, _total: int) -> None:
        reporter.update("tuning", done, total, message=message)

    reporter.update("tuning", 0, total, force=True, message=message)
    projection = tuning.learn_from_catalogue(
        embedder.embed,
        packshots,
        progress=progress,
        size=size,
        embed_features=getattr(embedder, "embed_with_features", None),
        # the packshots' own vectors were just embedded or reused: read, not embedded again
        packshot_vectors=rows.vectors(positions, spec.dim),
        labels=_tuning_labels(plan.styles, [files[row].relpath for row in positions]),
        input_scale=spec.tuning_scale(),
    )
    return dataclasses.replace(projection, learned_from=len(files)), time.time() - started


def _tuning_labels(styles: dict, relpaths: list[str]) -> list[str]:
    """Each sampled product's ``tuning.LABEL_FIELD`` from styles.csv (``""`` for none), by its file name.

    Only for learning: two files of one name (``7.jpg`` and ``sub/7.jpg``) may both get the row's kind.
    """
    return [str(styles.get(PurePosixPath(relpath).stem, {}).get(tuning.LABEL_FIELD) or "") for relpath in relpaths]


def _still_fits(projection: tuning.Projection, plan: BuildPlan, items: int, settings: Settings) -> bool:
    """Whether a kept projection still suits the catalogue: it changed little, since this build and since learning.

    A catalogue that grows by small builds is learned again once it is
    ``RETUNE_SHARE`` larger (or smaller) than when it was learned, and a
    small catalogue's projection, whose dimensions are bounded by its
    products, as soon as more products would give it more.
    """
    if _changed_share(plan) >= tuning.RETUNE_SHARE:
        return False
    learned_from = projection.learned_from or items  # older manifests did not record it
    if abs(items - learned_from) >= tuning.RETUNE_SHARE * learned_from:
        return False
    # the product directions only: the kinds' are bounded by the kinds, not the products
    return projection.dim - projection.kind_dims >= min(tuning.DIMS, min(items, settings.tuning_products) - 1)


def _previous_projection(previous: CurrentManifest, key: dict) -> tuning.Projection | None:
    """The projection of the generation the build replaces (``plan.previous``), when learned for vectors of ``key``."""
    gen, manifest = previous.gen, previous.manifest
    if gen is None or manifest is None:
        return None
    if not manifest.get("tuning") or any(manifest.get(k) != v for k, v in key.items()):
        return None
    try:
        expected = (manifest.get("checksums") or {}).get(PROJECTION_FILE)
        if sha256_file(gen / PROJECTION_FILE) != expected:
            return None
        projection = tuning.Projection.load(gen / PROJECTION_FILE, manifest.get("dim"))
    except (OSError, ValueError):
        return None  # damaged or gone: learn it again
    if projection.tuning_id != manifest.get("tuning"):
        return None
    learned_from, kind_dims, recipe = (manifest.get(f"tuning_{key}") for key in ("items", "kind_dims", "recipe"))
    return dataclasses.replace(
        projection,
        learned_from=learned_from if isinstance(learned_from, int) else None,
        kind_dims=kind_dims if isinstance(kind_dims, int) else 0,
        recipe=recipe if isinstance(recipe, int) else 2,  # manifests before recipes were recorded
    )


# ---------------------------------------------------------------- entry point


def build_index(
    settings: Settings,
    model: Embedder | WeightsChoice,
    *,
    full: bool = False,
    engine: str = "local",
    progress_callback=None,
    lock_timeout: float = 0,
    engine_options: dict | None = None,
    retune: bool = False,
    vectors: str | None = None,
    early: EarlyCheck | None = None,
) -> BuildReport:
    """Bring the index in ``settings.index_dir`` up to date with the catalogue.

    The vectors keep the dtype the current generation stores them in
    (``FASHION_VECTORS`` only for a first build); ``vectors`` (``float16``
    or ``float32``, ``build --vectors``) stores them in that one, publishing
    again when it differs.

    ``model`` is a loaded embedder, or for engines that load their own
    (``ray``) just the ``WeightsChoice``; either has ``weights_id``.
    Incremental by default; ``full=True`` re-embeds everything; ``retune``
    learns the catalogue tuning again (``full`` does too). ``early`` is
    what ``check_before_model`` read, used again unless another process
    published since. Raises ``BuildInProgress`` if another process is
    building the same index dir.
    """
    embed = get_engine(engine)
    started = time.time()
    with holding_build_lock(settings.index_dir, lock_timeout):
        return _build_locked(
            settings, model, embed, started, full=full, progress_callback=progress_callback,
            engine_options=engine_options, retune=retune, vectors=vectors, early=early,
        )


@contextlib.contextmanager
def holding_build_lock(index_dir: Path, timeout: float):
    """Hold the index dir's build lock for the block; ``BuildInProgress`` when another process holds it."""
    lock = build_lock(index_dir)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise BuildInProgress(f"another build is running in {index_dir}") from None
    try:
        yield
    finally:
        lock.release()


def _build_locked(
    settings, model, embed, started, *, full, progress_callback, engine_options, retune, vectors, early
) -> BuildReport:
    """``build_index``'s work, with the build lock held."""
    reporter = ProgressReporter(settings.index_dir, callback=progress_callback)
    report = BuildReport()
    try:
        remove_orphan_generations(settings.index_dir)  # what a killed publish left: never served, never complete
        reporter.update("scanning", 0, 0, force=True, message="Scanning the catalogue")
        # read once, under the lock, and handed to every step below
        if early is not None and current_generation(settings.index_dir) == early.current.gen:
            catalogue, current = early.catalogue, early.current
        else:  # no early check, or another process published since: read afresh
            catalogue = CatalogueSnapshot.take(settings.catalogue)
            current = read_current_manifest(settings.index_dir)
        settings, convert = _vectors_to_store(settings, current, vectors)
        kept = (
            None
            if full or retune or convert
            else _unchanged_index(settings, key_for(model), model_input_size(model), catalogue, current)
        )
        if kept is not None:
            return _kept_report(kept, started, reporter)
        plan = plan_build(settings, key_for(model), full=full, catalogue=catalogue, current=current)
        del catalogue, current  # the plan holds what it needs of them
        log.info(
            "Catalogue %s: %d images, %d to embed, %d reused, %d removed",
            settings.catalogue, len(plan.files), len(plan.to_embed), len(plan.reuse), plan.removed,
        )
        # refuse now, with the sizes, rather than fill the disk half-way through
        dim = model_spec(model).dim
        ensure_free_space(settings.index_dir, build_bytes(settings, plan, dim))
        skipped = embed(plan, settings, model, reporter, **(engine_options or {}))
        skipped = plan.rejected + _keep_reused_vectors(plan, skipped)
        rows = plan_rows(plan, settings, skipped)
        projection, tuning_s = catalogue_tuning(settings, plan, rows, model, reporter, retune=retune or full)
        reporter.update("indexing", len(plan.to_embed), len(plan.to_embed), force=True, message="Building Annoy index")
        indexed, total = publish_plan(
            plan,
            settings,
            skipped,
            dim,
            runtime=getattr(model, "runtime", "tensorflow"),
            projection=projection,
            rows=rows,
        )
        report = BuildReport(
            total=total,
            indexed=indexed,
            reused=total - indexed,
            removed=plan.removed,
            skipped=skipped,
            elapsed_s=time.time() - started,
            tuning_s=tuning_s,
            id_collisions=plan.id_collisions,
        )
        reporter.finish("ready", report.summary(), len(plan.to_embed), len(plan.to_embed))
        log.info("Build finished: %s", report.summary())
        return report
    except BaseException as exc:
        # the status file is shown to shoppers: the kind of failure only; the
        # path and exception text go to the log (and the caller's traceback)
        log.error("Build failed: %s: %s", type(exc).__name__, exc)
        reporter.finish("error", public_failure(exc), 0, 0, reason=failure_reason(exc))
        raise


# what a thumbnail and a shard row take, per item embedded, at most (a 256 px JPEG is 10-20 KB)
_THUMB_BYTES_PER_PIXEL = 0.5
_SHARD_ROW_OVERHEAD = 512


def build_bytes(settings: Settings, plan: BuildPlan, dim: int) -> int:
    """An upper bound on what a build of ``plan`` writes to the index dir's disk.

    The new generation (``publish.generation_bytes``: vectors, pickle, tuned
    vectors, colours, Annoy, metadata) plus, for each item to embed, its
    thumbnail and its shard row in ``work/``. The current and previous
    generations stay on disk until the new one is published.
    """
    tuned = min(dim, tuning.DIMS) + min(dim, tuning.LABEL_DIMS) if settings.tuning else None
    generation = generation_bytes(len(plan.files), dim, settings.annoy_trees, tuned_dim=tuned, colour_dim=COLOUR_DIM)
    per_new = int(settings.thumb_size**2 * _THUMB_BYTES_PER_PIXEL) + (dim + COLOUR_DIM) * 4 + _SHARD_ROW_OVERHEAD
    return generation + len(plan.to_embed) * per_new


def failure_reason(exc: BaseException) -> str:
    """A short label for the kind of failure (status.json ``reason``, ``fashion_build_failures_total{reason}``)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    if isinstance(exc, FileNotFoundError):
        return "catalogue_missing"
    if isinstance(exc, PermissionError):
        return "permission"
    if isinstance(exc, OSError):
        return "io_error"
    return "other"


def _vectors_to_store(settings: Settings, current: CurrentManifest, vectors: str | None) -> tuple[Settings, bool]:
    """``settings`` with the dtype this build stores vectors in, and whether that changes the published one."""
    if vectors is not None and vectors not in VECTOR_DTYPES:
        raise ValueError(f"vectors must be one of {VECTOR_DTYPES}, got {vectors!r}")
    published = published_vectors_dtype(current.manifest) if current.gen is not None else None
    if vectors is None:
        note_vectors_setting(current.manifest if current.gen is not None else None, settings)
        return (settings if published is None else settings.replace(vectors=published)), False
    return settings.replace(vectors=vectors), published is not None and published != vectors


def _kept_report(kept: dict, started: float, reporter: ProgressReporter) -> BuildReport:
    report = BuildReport(
        total=len(kept["items"]),
        reused=len(kept["items"]),
        skipped=[Skipped(s["relpath"], s["reason"], s["message"]) for s in kept.get("skipped", [])],
        elapsed_s=time.time() - started,
        up_to_date=True,
        id_collisions=kept.get("id_collisions", 0) if isinstance(kept.get("id_collisions"), int) else 0,
    )
    reporter.finish("ready", report.summary(), 0, 0)
    log.info("%s", report.summary())
    return report


@dataclass(frozen=True)
class EarlyCheck:
    """What ``check_before_model`` read: the catalogue's scan and the current generation's manifest."""

    catalogue: CatalogueSnapshot
    current: CurrentManifest


def check_before_model(
    settings: Settings, choice: WeightsChoice, *, lock_timeout: float = 0
) -> tuple[BuildReport | None, EarlyCheck | None]:
    """Whether a build would change nothing, decided without loading the model.

    ``choice`` (``model.resolve_weights``) gives the model key of an fp32
    vector space: TensorFlow's and every fp32 runtime's. Returns the
    up-to-date report, or ``None`` and what was read when a build has work
    to do: the caller then loads the model and hands that to ``build_index``,
    which reuses it unless another process published in between. Raises
    ``BuildInProgress`` like ``build_index``.
    """
    started = time.time()
    with holding_build_lock(settings.index_dir, lock_timeout):
        early = EarlyCheck(CatalogueSnapshot.take(settings.catalogue), read_current_manifest(settings.index_dir))
        if early.current.gen is None:
            return None, early
        settings, _ = _vectors_to_store(settings, early.current, None)  # as build_index judges it
        kept = _unchanged_index(settings, key_for(choice), model_input_size(choice), early.catalogue, early.current)
        if kept is None:
            return None, early
        return _kept_report(kept, started, ProgressReporter(settings.index_dir)), None


# What a failed build may tell the public for each kind of failure (``failure_reason``)
_PUBLIC_FAILURES = {
    "interrupted": "The index build was interrupted.",
    "catalogue_missing": "The index could not be built: the catalogue folder is missing.",
    "permission": "The index could not be built: a folder it needs is not readable or writable.",
    "disk_full": "The index could not be built: the disk is full.",
    "out_of_memory": "The index could not be built: the server ran out of memory.",
}


def public_failure(exc: BaseException) -> str:
    """What a failed build may tell the public: the kind of failure, never a path or exception text."""
    if isinstance(exc, NotEnoughSpace):
        return exc.public_message()  # the free and needed sizes, no path
    return _PUBLIC_FAILURES.get(failure_reason(exc), "The index could not be built; the server log has the details.")


def _unchanged_index(
    settings: Settings, key: dict, size: int, catalogue: CatalogueSnapshot, current: CurrentManifest
) -> dict | None:
    """The current manifest when a build would publish the same index again, else ``None``.

    ``size`` is the model's input size, for trying skipped files again;
    ``catalogue`` and ``current`` are the build's scan and the current
    generation's manifest.

    Same vectors (``key``), same catalogue folder, files and labels, a
    generation whose files still match their checksums and every thumbnail
    in place: then rebuilding would only copy it.
    """
    if check_freshness(settings, key, catalogue=catalogue, current=current) != "fresh":
        return None
    try:
        loaded = load_generation(current.gen, current.manifest, expect=key)
    except ArtifactError:
        return None  # damaged: the build repairs it
    loaded.annoy.unload()
    manifest = loaded.manifest
    if manifest.get("catalogue") != str(settings.catalogue) or manifest.get("trees") != settings.annoy_trees:
        return None
    if not all(thumb_path(settings.index_dir, name).is_file() for name in manifest.get("thumbs", [])):
        return None  # lost thumbnails are made again without embedding anything
    if any(_decodes_now(settings.catalogue / skipped["relpath"], size) for skipped in manifest.get("skipped", [])):
        return None  # a file skipped before reads now (a permission fixed, a busy decoder): index it
    return manifest


def _decodes_now(path: Path, size: int) -> bool:
    try:
        load_for_model(path, size)
    except (ImageError, OSError):
        return False
    return True


_NOTED_DTYPES: set[tuple[str, str, str]] = set()  # (index dir, published dtype, setting) already logged


def published_vectors_dtype(manifest: dict | None) -> str | None:
    """The dtype a generation stores its vectors in (manifest ``vectors_dtype``), or None without one."""
    if manifest is None:
        return None
    dtype = manifest.get("vectors_dtype", "float32")
    return dtype if dtype in VECTOR_DTYPES else None


def note_vectors_setting(manifest: dict | None, settings: Settings) -> None:
    """Log, once per process and index, that ``FASHION_VECTORS`` differs from what the generation stores.

    The published generation is served as it is: only ``python -m indexer
    build --vectors <dtype>`` stores the vectors in another dtype.
    """
    published = published_vectors_dtype(manifest)
    key = (str(settings.index_dir), str(published), settings.vectors)
    if published is None or published == settings.vectors or key in _NOTED_DTYPES:
        return
    _NOTED_DTYPES.add(key)
    log.warning(
        "The index stores %s vectors and FASHION_VECTORS is %s; serving them as published. "
        "To store them as %s: python -m indexer build --vectors %s",
        published, settings.vectors, settings.vectors, settings.vectors,
    )


def check_freshness(
    settings: Settings,
    key: dict,
    *,
    catalogue: CatalogueSnapshot | None = None,
    current: CurrentManifest | None = None,
) -> str:
    """``missing``, ``incompatible``, ``stale`` or ``fresh`` for the current index (``key``: ``plan.model_key``).

    ``incompatible`` means the stored vectors cannot be compared with new
    queries (other weights or preprocessing, or damaged files); ``stale``
    means they can, but the catalogue changed since. The dtype the vectors
    are stored in is the generation's (manifest ``vectors_dtype``): a
    ``FASHION_VECTORS`` that differs is logged once and changes nothing
    until a build is told to (``build --vectors``). A build passes the
    ``catalogue`` it scanned and the ``current`` manifest it read; without
    them the manifest is read here, and the catalogue scanned when the
    answer depends on it.
    """
    if current is None:
        current = read_current_manifest(settings.index_dir)
    if current.gen is None:
        return "missing"
    manifest = current.manifest
    if manifest is None:
        return "incompatible"
    if any(manifest.get(k) != v for k, v in key.items()):
        return "incompatible"
    note_vectors_setting(manifest, settings)  # another dtype is no reason to publish again
    if bool(manifest.get("tuning")) != settings.tuning:
        return "stale"  # the model's vectors are kept: publishing again tunes them or not, embedding nothing
    if catalogue is None:
        try:
            catalogue = CatalogueSnapshot.take(settings.catalogue)
        except FileNotFoundError:
            return "stale"
    indexed = {relpath: [size, mtime] for relpath, size, mtime in manifest.get("items", [])}
    # a skipped file is ignored until it changes (older manifests record no fingerprint)
    skipped = {s["relpath"]: s.get("fingerprint") for s in manifest.get("skipped", [])}
    listed = {
        f.relpath: f.fingerprint
        for f in catalogue.files
        if f.relpath not in skipped or skipped[f.relpath] not in (None, f.fingerprint)
    }
    if listed != indexed or manifest.get("styles") != catalogue.styles:
        return "stale"
    return "fresh"
