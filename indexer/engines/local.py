"""The local engine: embed a build plan on this machine.

Decode threads feed a bounded queue; the main thread runs the model in
batches and checkpoints finished vectors as shards in ``work/``.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import numpy as np

from .. import checkpoints
from ..catalogue import CatalogueFile
from ..colour import colour_descriptor
from ..config import Settings
from ..embedder import Embedder
from ..images import ImageError
from ..model import Embedder as TensorFlowEmbedder
from ..model import WeightsChoice, configure_threads
from ..plan import BuildPlan, Skipped, decode_and_thumbnail
from ..progress import ProgressReporter

log = logging.getLogger(__name__)

_DONE = object()


def _decode_worker(
    root: Path, index_dir: Path, jobs: queue.Queue, out: queue.Queue, thumb_size: int, size: int, stop
):
    """Decode images, write thumbnails and describe colours until the job queue is drained.

    Arrays are ``size`` x ``size``: the input size of the model that
    embeds them. The colour descriptor is computed here, beside the decode,
    so it runs in parallel with the forward pass instead of before it.
    """
    try:
        while not stop.is_set():
            try:
                item, needs_vector = jobs.get_nowait()
            except queue.Empty:
                break
            try:
                result = decode_and_thumbnail(root, index_dir, item, thumb_size, size)
            except Exception:  # noqa: BLE001 - one file must not stall the build
                log.exception("Unexpected error decoding %s", item.relpath)
                result = ImageError("unreadable", "The image could not be decoded.")
            if not isinstance(result, ImageError):
                # thumbnail only (None): the vector and colour are reused
                result = (result, colour_descriptor(result)) if needs_vector else None
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


def embed(
    plan: BuildPlan,
    settings: Settings,
    model: Embedder | WeightsChoice,
    reporter: ProgressReporter,
    *,
    decode_threads: int = 2,
) -> list[Skipped]:
    """Embed ``plan.to_embed`` on this machine, writing shards to ``work/``.

    Decoding runs in threads (Pillow releases the GIL) feeding a bounded
    queue, so the forward pass never waits on JPEG decoding and memory stays
    at a few batches regardless of catalogue size. ``model`` is a loaded
    ``Embedder``, or the weights to load one from.
    """
    if isinstance(model, WeightsChoice):
        configure_threads(settings.tf_threads)
        embedder: Embedder = TensorFlowEmbedder(model, settings.random_seed)
    else:
        embedder = model
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
            args=(plan.root, settings.index_dir, jobs, out, settings.thumb_size, embedder.input_size, stop),
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
    batch_colours: list[np.ndarray] = []
    shard_items: list[list] = []
    shard_vectors: list[np.ndarray] = []
    shard_colours: list[np.ndarray] = []
    total = len(plan.to_embed)
    done = 0
    finished_threads = 0

    def run_batch():
        vectors = embedder.embed(np.stack(batch_arrays))
        shard_items.extend([i.relpath, i.size, i.mtime_ns] for i in batch_items)
        shard_vectors.append(vectors)
        shard_colours.append(np.stack(batch_colours))
        batch_items.clear()
        batch_arrays.clear()
        batch_colours.clear()

    def flush_shard():
        if shard_items:
            checkpoints.write_shard(
                work,
                np.concatenate(shard_vectors),
                list(shard_items),
                colours=np.concatenate(shard_colours),
                model_key=plan.model_key,
            )
            shard_items.clear()
            shard_vectors.clear()
            shard_colours.clear()

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
                    batch_arrays.append(result[0])
                    batch_colours.append(result[1])
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
