"""The Ray engine: embed ``plan.to_embed`` with Ray Data batch inference.

Same inputs and outputs as ``engines.local.embed``: it takes a ``BuildPlan``,
writes shards into ``work/`` through ``checkpoints.write_shard`` and returns
the files it had to skip. ``build.publish_plan`` then merges the shards in
catalogue order, so the web app cannot tell which engine built an index.

Pipeline (one Ray Data dataset, streamed)::

    from_items(files)                     relpath, size, mtime_ns, needs_vector
      -> map_batches(decode_batch)        images.prepare: model array + thumbnail
      -> map_batches(EmbedActor, pool)    one embedder per actor (the driver's runtime); one shard per batch
      -> driver                           per-file status only (ok / thumb / skipped)

Both map stages are given the same resources, so Ray Data fuses them into
one actor-pool operator: decoding (about 1 ms a photo here, against about
20 ms of EfficientNet-Lite0, 80 ms of ResNet50, per photo on one core) runs in the actor process and never
competes with the forward pass for a CPU slot. This is what keeps a 2-CPU
machine as fast as the local engine; on a cluster each actor reads its
photos straight from the shared catalogue.

Failures:

* a corrupt image becomes a row with ``reason``/``message`` from
  ``images.ImageError``, turned into ``plan.Skipped`` by the driver,
  exactly like the local engine;
* an actor that dies mid-batch (OOM kill, segfault, lost node) is restarted
  and its batch retried: Ray Data's actor pools run with ``max_restarts=-1``
  and ``max_task_retries=-1`` by default. They are left at that on purpose:
  passing other values needs ``ray_remote_args`` (deprecated in Ray 2.60),
  and a task-stage argument that the actor stage lacks would stop the fusion
  above. Shard names are derived from the rows of the batch, so a retried
  batch overwrites its own shard instead of adding a duplicate;
* an interrupted run leaves its finished shards in ``work/`` and the next
  ``plan_build`` reuses them.

Vectors never travel back to the driver: workers write them to ``work/``,
which therefore has to be on storage that the driver can read (shared
storage on a cluster, like the catalogue).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import checkpoints
from ..catalogue import CatalogueFile
from ..colour import DIM as COLOUR_DIM
from ..colour import colour_descriptor
from ..config import Settings
from ..images import DECODE_BUDGET_BYTES, DECODE_SLOTS, ImageError, configure_decode_budget
from ..model import WeightsChoice
from ..plan import BuildPlan, Skipped, decode_and_thumbnail
from ..progress import ProgressReporter
from ..runtimes import TENSORFLOW_RUNTIME, ResolvedRuntime

log = logging.getLogger(__name__)

STATUS_OK = "ok"  # embedded and written to a shard
STATUS_THUMB = "thumb"  # vector reused; only the thumbnail was (re)written
STATUS_SKIPPED = "skipped"  # ImageError: reason/message say why


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, shipped once to each actor (plain, picklable values)."""

    root: str
    index_dir: str
    thumb_size: int
    choice: WeightsChoice
    seed: int
    tf_threads: int
    model_key: dict
    runtime: ResolvedRuntime = TENSORFLOW_RUNTIME
    decode_budget_bytes: int = DECODE_BUDGET_BYTES
    decode_slots: int = DECODE_SLOTS

    @property
    def input_size(self) -> int:
        """The side of the model's square: every decode of this build is for it."""
        return self.choice.spec.input_size


# ---------------------------------------------------------------- worker side


def _decode_one(cfg: WorkerConfig, item: CatalogueFile) -> tuple[np.ndarray | None, ImageError | None]:
    """Decode one file and write its thumbnail with the local engine's code."""
    result = decode_and_thumbnail(Path(cfg.root), Path(cfg.index_dir), item, cfg.thumb_size, cfg.input_size)
    return (None, result) if isinstance(result, ImageError) else (result, None)


def decode_batch(batch: dict[str, np.ndarray], cfg: WorkerConfig) -> dict[str, np.ndarray]:
    """Ray Data stage 1: decode a batch of files with ``images.prepare``.

    Adds ``image`` (uint8, zeros where decoding failed), ``colour`` (the
    colour descriptor of each decoded image), ``status``, ``reason`` and
    ``message`` columns.
    """
    # a Ray worker is its own process: apply the build's decode budget here
    configure_decode_budget(cfg.decode_budget_bytes, cfg.decode_slots)
    count = len(batch["relpath"])
    size = cfg.input_size
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    colours = np.zeros((count, COLOUR_DIM), dtype=np.float32)
    status, reason, message = [], [], []
    for row in range(count):
        item = CatalogueFile(str(batch["relpath"][row]), int(batch["size"][row]), int(batch["mtime_ns"][row]))
        array, error = _decode_one(cfg, item)
        if error is not None:
            status.append(STATUS_SKIPPED)
            reason.append(error.reason)
            message.append(error.message)
            continue
        images[row] = array
        if batch["needs_vector"][row]:
            colours[row] = colour_descriptor(array)
        status.append(STATUS_OK if batch["needs_vector"][row] else STATUS_THUMB)
        reason.append("")
        message.append("")
    return dict(
        batch, image=images, colour=colours, status=np.array(status), reason=np.array(reason), message=np.array(message)
    )


def shard_name(items: list[list]) -> str:
    """A shard name derived from its rows, so a retried batch overwrites its own shard."""
    digest = hashlib.sha1(usedforsecurity=False)
    for relpath, size, mtime_ns in items:
        digest.update(f"{relpath}\0{size}\0{mtime_ns}\n".encode())
    return f"ray-{digest.hexdigest()[:32]}"


class EmbedActor:
    """Ray Data stage 2: one embedder per actor, on the driver's runtime; one shard per batch."""

    def __init__(self, cfg: WorkerConfig):
        from ..runtimes import open_embedder

        self.cfg = cfg
        # the driver resolved (and, for OpenVINO, converted and checked) the runtime
        self.embedder = open_embedder(cfg.choice, cfg.runtime, cfg.seed, cfg.tf_threads)
        self.work = checkpoints.work_dir(Path(cfg.index_dir))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed the decodable rows that need a vector and write them as one shard."""
        wanted = np.flatnonzero(batch["status"] == STATUS_OK)
        if len(wanted):
            vectors = self.embedder.embed(np.ascontiguousarray(batch["image"][wanted]))
            items = [[str(batch["relpath"][i]), int(batch["size"][i]), int(batch["mtime_ns"][i])] for i in wanted]
            checkpoints.write_shard(
                self.work,
                vectors,
                items,
                colours=batch["colour"][wanted],
                model_key=self.cfg.model_key,
                name=shard_name(items),
            )
        return {key: batch[key] for key in ("relpath", "needs_vector", "status", "reason", "message")}


# ---------------------------------------------------------------- driver side


def _rows(plan: BuildPlan) -> list[dict]:
    rows = [dict(relpath=i.relpath, size=i.size, mtime_ns=i.mtime_ns, needs_vector=True) for i in plan.to_embed]
    rows += [dict(relpath=i.relpath, size=i.size, mtime_ns=i.mtime_ns, needs_vector=False) for i in plan.missing_thumbs]
    return rows


def _cluster_cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _pool_shape(ray, cpus_per_actor: int | None, actors: int | None, tf_threads: int) -> tuple[int, int]:
    """``(cpus_per_actor, actors)``: by default one actor per 2 CPUs (TF scales well to 2 threads)."""
    cpus = _cluster_cpus(ray)
    per_actor = cpus_per_actor or tf_threads or min(2, cpus)
    per_actor = max(1, min(per_actor, cpus))
    return per_actor, actors or max(1, cpus // per_actor)


REACH_TIMEOUT_S = 5.0  # Ray itself retries an unreachable head for minutes


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` with one readable line when the Ray head at ``address`` does not answer.

    ``address`` is what ``ray.init`` takes: ``host:port``, ``ray://host:port``
    or ``auto`` (the local cluster's own record; not checked here).
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"Ray address {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConnectionError(
            f"The Ray cluster at {address} does not answer ({reason}): check --address, or drop it to start a local one"
        ) from None


def _start_ray(address: str | None, runtime_env: dict):
    """Connect to ``address`` or start a local instance; returns ``(ray, started_here)``."""
    import ray

    if ray.is_initialized():
        return ray, False
    if address:
        log.info("Joining the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env)
    else:
        log.info("Starting a local Ray instance with %d CPUs", os.cpu_count())
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env)
    return ray, True


def _runtime_env(address: str | None) -> dict:
    """Worker environment: quiet TensorFlow; on a cluster, ship this package to the workers."""
    env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}}
    if address:
        env["py_modules"] = [str(Path(__file__).resolve().parent.parent)]
    return env


def _write_thumbs_here(plan: BuildPlan, cfg: WorkerConfig) -> list[Skipped]:
    """Only thumbnails are missing: write them in the driver, no cluster needed."""
    skipped = []
    for item in plan.missing_thumbs:
        _, error = _decode_one(cfg, item)
        if error is not None:
            skipped.append(Skipped(item.relpath, error.reason, error.message))
    return skipped


def _dataset(ray, plan: BuildPlan, settings: Settings, cfg: WorkerConfig, per_actor: int, actors: int, actor_class):
    """The lazy Ray Data pipeline; decode and embed get equal resources so Ray Data fuses them."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    rows = _rows(plan)
    blocks = max(1, -(-len(rows) // settings.batch_size))
    remote = dict(num_cpus=per_actor)
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"cfg": cfg}, batch_size=settings.batch_size, **remote)
    return ds.map_batches(
        actor_class,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=settings.batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        **remote,
    )


def _collect(ds, total: int, reporter: ProgressReporter) -> list[Skipped]:
    """Stream per-file statuses back, reporting progress and gathering skipped files."""
    skipped: list[Skipped] = []
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for row in np.flatnonzero(batch["status"] == STATUS_SKIPPED):
            relpath, reason, message = (str(batch[key][row]) for key in ("relpath", "reason", "message"))
            skipped.append(Skipped(relpath, reason, message))
        done += int(np.count_nonzero(batch["needs_vector"]))  # thumbnail-only rows are not in ``total``
        reporter.update("embedding", done, total)
    return skipped


def embed(
    plan: BuildPlan,
    settings: Settings,
    model,
    reporter: ProgressReporter,
    *,
    address: str | None = None,
    cpus_per_actor: int | None = None,
    actors: int | None = None,
    actor_class: type[EmbedActor] = EmbedActor,
) -> list[Skipped]:
    """Embed ``plan.to_embed`` on Ray, writing shards to ``work/``; returns the skipped files.

    ``address`` joins an existing cluster (the catalogue and the index dir
    must be on storage every node sees at the same path); without it a
    local instance with ``os.cpu_count()`` CPUs is started. Ray is shut down
    (or disconnected) afterwards only if this call started or joined it.
    ``cpus_per_actor`` (default ``FASHION_TF_THREADS``, else 2) is both the
    actor's CPU reservation and its TensorFlow thread count; ``actors``
    defaults to the cluster's CPUs divided by it. ``model`` is the
    ``WeightsChoice`` (the actors run TensorFlow) or an embedder carrying one
    as ``.choice``: the actors load their own model on the embedder's
    resolved runtime (a converted model's cache entry lives in the index dir,
    which every node sees). ``actor_class`` is the actor that embeds a batch
    (a subclass of ``EmbedActor`` that changes how a batch is handled).
    """
    weights_choice = model if isinstance(model, WeightsChoice) else model.choice
    cfg = WorkerConfig(
        root=str(plan.root),
        index_dir=str(settings.index_dir),
        thumb_size=settings.thumb_size,
        choice=weights_choice,
        seed=settings.random_seed,
        tf_threads=0,
        model_key=dict(plan.model_key),
        runtime=getattr(model, "resolved", TENSORFLOW_RUNTIME),
        decode_budget_bytes=settings.decode_budget_bytes,
        decode_slots=settings.decode_slots,
    )
    if not plan.to_embed:
        return _write_thumbs_here(plan, cfg)
    total = len(plan.to_embed)
    checkpoints.work_dir(settings.index_dir)
    ray, started = _start_ray(address, _runtime_env(address))
    try:
        per_actor, pool = _pool_shape(ray, cpus_per_actor, actors, settings.tf_threads)
        cfg = dataclasses.replace(cfg, tf_threads=per_actor)
        log.info(
            "Ray engine: %d images to embed, %d thumbnails to write, %d actor(s) x %d CPU(s), batch %d",
            total,
            len(plan.missing_thumbs),
            pool,
            per_actor,
            settings.batch_size,
        )
        reporter.update("embedding", 0, total, force=True)
        skipped = _collect(_dataset(ray, plan, settings, cfg, per_actor, pool, actor_class), total, reporter)
    finally:
        if started:
            ray.shutdown()
    reporter.update("embedding", total, total, force=True)
    return skipped
