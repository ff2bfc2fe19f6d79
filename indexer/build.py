"""The incremental build: scan, reuse what is still valid, embed the rest, publish.

Stages, each with plain files between them so any stage can be rerun:

1. ``plan_build`` scans the catalogue and decides, per file, whether its
   vector can be reused (from the current generation or from shards of an
   interrupted build) or must be embedded.
2. An engine (``embed_local`` here; ``indexer.ray_engine`` on a cluster)
   embeds the rest and writes shards into ``work/``.
3. ``publish_plan`` merges everything in catalogue order and publishes a new
   generation atomically, then clears ``work/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from . import artifacts, checkpoints
from .catalogue import CatalogueFile, metadata_for, read_styles, scan, styles_fingerprint
from .config import Settings
from .images import PREPROCESS_VERSION, ImageError, prepare
from .model import EMBEDDING_DIM, MODEL_ID, Embedder
from .progress import ProgressReporter

log = logging.getLogger(__name__)


class BuildInProgress(RuntimeError):
    """Another process holds the build lock for this index dir."""


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
    reuse: dict[str, np.ndarray]
    to_embed: list[CatalogueFile]
    removed: int
    missing_thumbs: list[CatalogueFile] = field(default_factory=list)


@dataclass
class BuildReport:
    """What a build did, for the summary line and for the web app."""

    total: int = 0
    indexed: int = 0
    reused: int = 0
    removed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    elapsed_s: float = 0.0
    published: bool = False

    @property
    def images_per_s(self) -> float:
        """Embedding throughput of this build."""
        return self.indexed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def skipped_by_reason(self) -> dict[str, int]:
        """How many files were skipped for each reason code."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return counts

    def summary(self) -> str:
        """One human-readable line."""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_by_reason().items())) or "none"
        return (
            f"{self.total} items in index: indexed {self.indexed}, reused {self.reused}, "
            f"removed {self.removed}, skipped {len(self.skipped)} ({reasons}) "
            f"in {self.elapsed_s:.1f}s ({self.images_per_s:.1f} images/s)"
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
            "images_per_s": round(self.images_per_s, 2),
        }


def model_key(weights_id: str) -> dict:
    """The manifest fields that make stored vectors comparable with new ones."""
    return {"model": MODEL_ID, "weights_id": weights_id, "preprocess_version": PREPROCESS_VERSION}


def thumb_name(item: CatalogueFile) -> str:
    """Thumbnail file name: changes whenever the source file changes."""
    key = f"{item.relpath}|{item.size}|{item.mtime_ns}".encode()
    return hashlib.sha1(key, usedforsecurity=False).hexdigest()[:24] + ".jpg"


def thumb_path(index_dir: Path, name: str) -> Path:
    """Where a thumbnail lives: ``thumbs/<2 chars>/<name>``."""
    return Path(index_dir) / artifacts.THUMBS_DIR / name[:2] / name


def build_lock(index_dir: Path) -> FileLock:
    """The lock that makes sure one process builds an index dir at a time."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(index_dir) / artifacts.LOCK_FILE))


# ---------------------------------------------------------------- planning


def _previous_vectors(index_dir: Path, key: dict) -> tuple[dict[str, tuple[list, np.ndarray]], int]:
    """Vectors of the current generation, if it is intact and compatible."""
    try:
        loaded = artifacts.load_index(index_dir, expect=key)
    except artifacts.ArtifactError as exc:
        if artifacts.current_generation(index_dir) is not None:
            log.warning("Not reusing the existing index: %s", exc)
        return {}, 0
    items = loaded.manifest.get("items") or []
    previous = {relpath: ([size, mtime], loaded.embeddings[row]) for row, (relpath, size, mtime) in enumerate(items)}
    loaded.annoy.unload()
    return previous, len(items)


def plan_build(settings: Settings, weights_id: str, *, full: bool = False) -> BuildPlan:
    """Scan the catalogue and decide what to reuse and what to embed."""
    root = settings.catalogue
    files = scan(root)
    key = model_key(weights_id)
    work = checkpoints.work_dir(settings.index_dir)
    checkpoints.remove_temporaries(work)
    if full:
        checkpoints.clear(work)
        previous, previous_count = {}, 0
    else:
        previous, previous_count = _previous_vectors(settings.index_dir, key)
        # shards of an interrupted build are newer than the current generation
        current_fingerprints = {item.relpath: item.fingerprint for item in files}
        previous.update(checkpoints.read_shards(work, model_key=key, fingerprints=current_fingerprints))
    reuse: dict[str, np.ndarray] = {}
    to_embed: list[CatalogueFile] = []
    missing_thumbs: list[CatalogueFile] = []
    for item in files:
        stored = previous.get(item.relpath)
        if stored is not None and list(stored[0]) == item.fingerprint:
            reuse[item.relpath] = stored[1]
            if not thumb_path(settings.index_dir, thumb_name(item)).is_file():
                missing_thumbs.append(item)
        else:
            to_embed.append(item)
    current = {item.relpath for item in files}
    removed = sum(1 for relpath in previous if relpath not in current) if previous_count else 0
    return BuildPlan(root, files, read_styles(root), key, reuse, to_embed, removed, missing_thumbs)


# ---------------------------------------------------------------- local engine

_DONE = object()


def decode_and_thumbnail(root: Path, index_dir: Path, item: CatalogueFile, thumb_size: int):
    """Decode one file and write its thumbnail; returns the model array or an ``ImageError``.

    Shared by every engine, so files are decoded, thumbnailed and skipped alike.
    """
    try:
        array, thumb = prepare(root / item.relpath, thumb_size)
    except ImageError as exc:
        return exc
    except OSError as exc:  # the file vanished or became unreadable mid-build
        return ImageError("unreadable", str(exc))
    try:
        path = thumb_path(index_dir, thumb_name(item))
        path.parent.mkdir(parents=True, exist_ok=True)
        artifacts.atomic_write_bytes(path, thumb)
    except OSError as exc:
        # The vector is still good; the next build sees the thumbnail missing
        # and writes it again. Dropping the item would lose work silently.
        log.error("Could not write the thumbnail of %s: %s", item.relpath, exc)
    return array


def _decode_worker(root: Path, index_dir: Path, jobs: queue.Queue, out: queue.Queue, thumb_size: int, stop):
    """Decode images and write thumbnails until the job queue is drained."""
    try:
        while not stop.is_set():
            try:
                item, needs_vector = jobs.get_nowait()
            except queue.Empty:
                break
            try:
                result = decode_and_thumbnail(root, index_dir, item, thumb_size)
            except Exception as exc:  # noqa: BLE001 - one file must not stall the build
                log.exception("Unexpected error decoding %s", item.relpath)
                result = ImageError("unreadable", f"{type(exc).__name__}: {exc}")
            if not needs_vector and not isinstance(result, ImageError):
                result = None  # thumbnail only: the vector is reused
            while not stop.is_set():
                try:
                    out.put((item, needs_vector, result), timeout=0.2)
                    break
                except queue.Full:
                    continue
    finally:
        # Always tell the consumer this thread is finished, or it would wait forever.
        while True:
            try:
                out.put(_DONE, timeout=0.2)
                break
            except queue.Full:
                if stop.is_set():
                    break


def embed_local(
    plan: BuildPlan,
    settings: Settings,
    embedder: Embedder,
    reporter: ProgressReporter,
    decode_threads: int = 2,
) -> list[Skipped]:
    """Embed ``plan.to_embed`` on this machine, writing shards to ``work/``.

    Decoding runs in threads (Pillow releases the GIL) feeding a bounded
    queue, so the forward pass never waits on JPEG decoding and memory stays
    at a few batches regardless of catalogue size.
    """
    work = checkpoints.work_dir(settings.index_dir)
    jobs: queue.Queue = queue.Queue()
    for item in plan.to_embed:
        jobs.put((item, True))
    for item in plan.missing_thumbs:
        jobs.put((item, False))
    out: queue.Queue = queue.Queue(maxsize=settings.batch_size * 3)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_decode_worker,
            args=(plan.root, settings.index_dir, jobs, out, settings.thumb_size, stop),
            name=f"decode-{n}",
            daemon=True,
        )
        for n in range(max(1, decode_threads))
    ]
    for thread in threads:
        thread.start()

    skipped: list[Skipped] = []
    batch_items: list[CatalogueFile] = []
    batch_arrays: list[np.ndarray] = []
    shard_items: list[list] = []
    shard_vectors: list[np.ndarray] = []
    total = len(plan.to_embed)
    done = 0
    finished_threads = 0

    def run_batch():
        vectors = embedder.embed(np.stack(batch_arrays))
        shard_items.extend([i.relpath, i.size, i.mtime_ns] for i in batch_items)
        shard_vectors.append(vectors)
        batch_items.clear()
        batch_arrays.clear()

    def flush_shard():
        if shard_items:
            checkpoints.write_shard(work, np.concatenate(shard_vectors), list(shard_items), model_key=plan.model_key)
            shard_items.clear()
            shard_vectors.clear()

    reporter.update("embedding", 0, total, force=True)
    try:
        while finished_threads < len(threads):
            message = out.get()
            if message is _DONE:
                finished_threads += 1
            else:
                item, needs_vector, result = message
                if isinstance(result, ImageError):
                    skipped.append(Skipped(item.relpath, result.reason, result.message))
                    done += needs_vector  # thumbnail-only jobs are not in ``total``
                elif result is not None:
                    batch_items.append(item)
                    batch_arrays.append(result)
            if len(batch_arrays) >= settings.batch_size or (finished_threads == len(threads) and batch_arrays):
                done += len(batch_arrays)
                run_batch()
                if len(shard_items) >= settings.checkpoint_every:
                    flush_shard()
                reporter.update("embedding", done, total)
        flush_shard()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    reporter.update("embedding", done, total, force=True)
    return skipped


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


def publish_plan(plan: BuildPlan, settings: Settings, skipped: list[Skipped]) -> tuple[int, int]:
    """Merge reused vectors and new shards in catalogue order and publish.

    Returns ``(indexed_now, total)``.
    """
    fingerprints = {item.relpath: item.fingerprint for item in plan.files}
    fresh = checkpoints.read_shards(
        checkpoints.work_dir(settings.index_dir), model_key=plan.model_key, fingerprints=fingerprints
    )
    skipped_paths = {s.relpath for s in skipped}
    rows: list[np.ndarray] = []
    kept: list[CatalogueFile] = []
    indexed = 0
    for item in plan.files:
        if item.relpath in skipped_paths:
            continue
        stored = fresh.get(item.relpath)
        if stored is not None and list(stored[0]) == item.fingerprint:
            vector = stored[1]
            indexed += item.relpath not in plan.reuse
        else:
            vector = plan.reuse.get(item.relpath)
        if vector is None:
            continue  # vanished between scan and publish
        rows.append(vector)
        kept.append(item)
    # one copy of the vectors: stacked straight into float32, and the shards'
    # arrays let go before the artifacts (and Annoy's own copy) are written
    embeddings = np.stack(rows, dtype=np.float32) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)
    del rows, fresh
    manifest = dict(
        plan.model_key,
        created_at=time.time(),
        catalogue=str(plan.root),
        styles=styles_fingerprint(plan.root),
        items=[[i.relpath, i.size, i.mtime_ns] for i in kept],
        thumbs=[thumb_name(i) for i in kept],
        # the fingerprint lets check_freshness notice when a skipped file is fixed
        skipped=[dict(vars(s), fingerprint=fingerprints.get(s.relpath)) for s in skipped],
    )
    artifacts.publish(
        settings.index_dir,
        embeddings=embeddings,
        filenames=[i.relpath for i in kept],
        metadata=[metadata_for(i.relpath, plan.styles) for i in kept],
        manifest=manifest,
        trees=settings.annoy_trees,
    )
    checkpoints.clear(checkpoints.work_dir(settings.index_dir))
    _remove_stale_thumbs(settings.index_dir, set(manifest["thumbs"]))
    return indexed, len(kept)


def _remove_stale_thumbs(index_dir: Path, keep: set[str]) -> None:
    root = Path(index_dir) / artifacts.THUMBS_DIR
    if not root.is_dir():
        return
    for path in root.glob("*/*.jpg"):
        if path.name not in keep:
            try:
                os.unlink(path)
            except OSError:
                pass


# ---------------------------------------------------------------- entry point


def build_index(
    settings: Settings,
    embedder: Embedder,
    *,
    full: bool = False,
    engine: str = "local",
    progress_callback=None,
    lock_timeout: float = 0,
    engine_options: dict | None = None,
) -> BuildReport:
    """Bring the index in ``settings.index_dir`` up to date with the catalogue.

    Incremental by default; ``full=True`` re-embeds everything. Raises
    ``BuildInProgress`` if another process is building the same index dir.
    """
    started = time.time()
    lock = build_lock(settings.index_dir)
    try:
        lock.acquire(timeout=lock_timeout)
    except Timeout:
        raise BuildInProgress(f"another build is running in {settings.index_dir}") from None
    reporter = ProgressReporter(settings.index_dir, callback=progress_callback)
    report = BuildReport()
    try:
        reporter.update("scanning", 0, 0, force=True, message=f"Scanning {settings.catalogue}")
        plan = plan_build(settings, embedder.weights_id, full=full)
        log.info(
            "Catalogue %s: %d images, %d to embed, %d reused, %d removed",
            settings.catalogue, len(plan.files), len(plan.to_embed), len(plan.reuse), plan.removed,
        )
        if engine == "local":
            skipped = embed_local(plan, settings, embedder, reporter)
        elif engine == "ray":
            from .ray_engine import embed_ray

            skipped = embed_ray(plan, settings, embedder.choice, reporter, **(engine_options or {}))
        else:
            raise ValueError(f"unknown engine {engine!r}")
        skipped = _keep_reused_vectors(plan, skipped)
        reporter.update("indexing", len(plan.to_embed), len(plan.to_embed), force=True, message="Building Annoy index")
        indexed, total = publish_plan(plan, settings, skipped)
        report = BuildReport(
            total=total,
            indexed=indexed,
            reused=total - indexed,
            removed=plan.removed,
            skipped=skipped,
            elapsed_s=time.time() - started,
            published=True,
        )
        reporter.finish("ready", report.summary(), len(plan.to_embed), len(plan.to_embed))
        log.info("Build finished: %s", report.summary())
        return report
    except BaseException as exc:
        reporter.finish("error", f"Build failed: {exc.__class__.__name__}: {exc}", 0, 0)
        raise
    finally:
        lock.release()


def check_freshness(settings: Settings, weights_id: str) -> str:
    """``missing``, ``incompatible``, ``stale`` or ``fresh`` for the current index.

    ``incompatible`` means the stored vectors cannot be compared with new
    queries (other weights or preprocessing, or damaged files); ``stale``
    means they can, but the catalogue changed since.
    """
    gen = artifacts.current_generation(settings.index_dir)
    if gen is None:
        return "missing"
    try:
        manifest = artifacts.read_manifest(gen)
    except artifacts.ArtifactError:
        return "incompatible"
    if any(manifest.get(k) != v for k, v in model_key(weights_id).items()):
        return "incompatible"
    try:
        files = scan(settings.catalogue)
    except FileNotFoundError:
        return "stale"
    indexed = {relpath: [size, mtime] for relpath, size, mtime in manifest.get("items", [])}
    # a skipped file is ignored until it changes (older manifests record no fingerprint)
    skipped = {s["relpath"]: s.get("fingerprint") for s in manifest.get("skipped", [])}
    current = {
        f.relpath: f.fingerprint
        for f in files
        if f.relpath not in skipped or skipped[f.relpath] not in (None, f.fingerprint)
    }
    if current != indexed or manifest.get("styles") != styles_fingerprint(settings.catalogue):
        return "stale"
    return "fresh"
