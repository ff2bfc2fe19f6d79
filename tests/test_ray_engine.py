"""The Ray engine (``--engine ray``) on a local Ray instance: same index as the local engine.

Skipped, with the reason, when Ray is not installed (the core install has no
Ray; ``pip install -r requirements-ray.txt`` adds it), unless
``FASHION_REQUIRE_RAY=1`` (set by .ci/run), where that is an error instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer import checkpoints
from indexer.build import build_index
from indexer.catalogue import scan
from indexer.loading import load_index
from indexer.plan import key_for, plan_build
from indexer.progress import ProgressReporter
from tests.corpus import build_corpus, make_png

pytestmark = [
    pytest.mark.ray,
    # Ray Data's own DataContext set-up warns about its renamed settings
    pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning:ray"),
]

try:
    import ray
except ImportError as exc:  # the core install does not include Ray
    _problem = f"Ray is not installed ({exc}); install it with `pip install -r requirements-ray.txt`"
    if os.environ.get("FASHION_REQUIRE_RAY") == "1":
        raise RuntimeError(_problem + " (FASHION_REQUIRE_RAY=1, so this is an error, not a skip)") from None
    pytest.skip(_problem, allow_module_level=True)

from indexer.engines.ray_data import embed as embed_ray  # noqa: E402 - after the import check above
from indexer.engines.ray_data import shard_name  # noqa: E402
from tests.support.faults import crash_once_actor  # noqa: E402

CORPUS = {upload.name: upload for upload in build_corpus()}


@pytest.fixture(scope="module")
def shared_ray():
    """One local 2-CPU Ray instance for the tests that do not test starting and stopping it."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    yield ray
    if started:
        ray.shutdown()


def _index(index_dir: Path) -> tuple[list[str], np.ndarray]:
    loaded = load_index(index_dir)
    try:
        return list(loaded.filenames), np.array(loaded.embeddings)
    finally:
        loaded.annoy.unload()


def _as_tuples(skipped) -> list[tuple[str, str, str]]:
    return sorted((s.relpath, s.reason, s.message) for s in skipped)


def _shards(index_dir: Path) -> list[Path]:
    return sorted(checkpoints.work_dir(index_dir).glob("*.json"))


@pytest.mark.slow  # a local Ray instance whose actors load the real model
def test_ray_engine_builds_the_same_index_as_the_local_engine(small_settings, embedder, tmp_path):
    assert not ray.is_initialized()
    local_settings = small_settings.replace(index_dir=tmp_path / "local-index")
    local = build_index(local_settings, embedder)
    progress = []
    on_ray = build_index(small_settings, embedder, engine="ray", progress_callback=progress.append)

    assert not ray.is_initialized(), "the engine shuts down the Ray instance it started"
    assert (on_ray.total, on_ray.indexed, on_ray.reused, on_ray.skipped) == (24, 24, 0, [])
    local_names, local_vectors = _index(local_settings.index_dir)
    ray_names, ray_vectors = _index(small_settings.index_dir)
    assert ray_names == local_names
    assert float(np.abs(ray_vectors - local_vectors).max()) <= 1e-5
    assert local.total == on_ray.total
    thumbs = sorted(p.name for p in (small_settings.index_dir / "thumbs").glob("*/*.jpg"))
    assert thumbs == sorted(p.name for p in (local_settings.index_dir / "thumbs").glob("*/*.jpg"))
    assert not _shards(small_settings.index_dir), "publishing clears work/"
    embedding = [p for p in progress if p.phase == "embedding"]
    assert embedding and embedding[-1].done == embedding[-1].total == 24


@pytest.mark.slow  # a local Ray instance whose actors load the real model
def test_incremental_add_embeds_only_the_new_images(small_settings, embedder, demo_catalogue, shared_ray):
    first = build_index(small_settings, embedder)  # either engine's index is the other's starting point
    assert first.indexed == 24
    for image_id in (25, 26, 27):
        shutil.copy2(demo_catalogue / f"{image_id}.jpg", small_settings.catalogue / f"{image_id}.jpg")

    report = build_index(small_settings, embedder, engine="ray")
    assert (report.indexed, report.reused, report.removed, report.total) == (3, 24, 0, 27)
    names, vectors = _index(small_settings.index_dir)
    assert names == [f.relpath for f in scan(small_settings.catalogue)]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # the engine itself receives only the three new files
    again = plan_build(small_settings, key_for(embedder))
    assert again.to_embed == [] and len(again.reuse) == 27


@pytest.mark.slow  # a local Ray instance whose actors load the real model
def test_killed_worker_is_retried_and_corrupt_images_are_skipped(small_settings, embedder, tmp_path, shared_ray):
    catalogue = small_settings.catalogue
    (catalogue / "notes.jpg").write_bytes(b"Shopping list:\n- red dress\n")
    (catalogue / "truncated.jpg").write_bytes(CORPUS["truncated_jpeg"].data)
    (catalogue / "pixel.png").write_bytes(CORPUS["one_by_one"].data)
    marker = tmp_path / "actor-crashed"

    crashing = {"actor_class": crash_once_actor(str(marker))}
    report = build_index(small_settings, embedder, engine="ray", engine_options=crashing)
    assert marker.exists(), "the fault injection killed the first actor"
    assert (report.total, report.indexed) == (24, 24)
    local = build_index(small_settings.replace(index_dir=tmp_path / "local-index"), embedder)
    assert _as_tuples(report.skipped) == _as_tuples(local.skipped), "reported exactly as on the local engine"
    assert {s.relpath: s.reason for s in report.skipped} == {
        "notes.jpg": "not_an_image",
        "truncated.jpg": "unreadable",
        "pixel.png": "too_small",
    }
    names, _ = _index(small_settings.index_dir)
    assert len(names) == 24 and "notes.jpg" not in names


@pytest.mark.slow  # a local Ray instance whose actors load the real model
def test_an_interrupted_run_resumes_from_its_shards(small_settings, embedder, shared_ray):
    settings = small_settings.replace(batch_size=8)
    plan = plan_build(settings, key_for(embedder))
    reporter = ProgressReporter(settings.index_dir)
    assert embed_ray(plan, settings, embedder.choice, reporter) == []  # embedded, never published
    shards = _shards(settings.index_dir)
    assert len(shards) == 3, "one shard per batch of 8"
    shards[0].unlink()  # as if the run had stopped before that batch finished

    resumed = plan_build(settings, key_for(embedder))
    assert len(resumed.to_embed) == 8 and len(resumed.reuse) == 16
    report = build_index(settings, embedder, engine="ray")
    assert (report.indexed, report.reused, report.total) == (8, 16, 24)


def test_shard_names_depend_only_on_their_rows():
    rows = [["a.jpg", 10, 1], ["b.jpg", 20, 2]]
    assert shard_name(rows) == shard_name([list(r) for r in rows])
    assert shard_name(rows) != shard_name(rows[:1])
    assert shard_name(rows) != shard_name([["a.jpg", 10, 1], ["b.jpg", 20, 3]])


def test_decode_workers_apply_the_builds_decode_budget(tmp_path, demo_catalogue):
    """A Ray decode worker is its own process: the build's FASHION_DECODE_MEMORY_MB must reach it."""
    from indexer import images
    from indexer.engines.ray_data import STATUS_OK, STATUS_SKIPPED, WorkerConfig, decode_batch
    from indexer.model import resolve_weights

    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    (catalogue / "big.png").write_bytes(make_png((3000, 2000)))  # about 23 MB decoded
    shutil.copy(demo_catalogue / "42.jpg", catalogue / "small.jpg")
    files = ["big.png", "small.jpg"]
    stats = [(catalogue / name).stat() for name in files]
    cfg = WorkerConfig(
        root=str(catalogue),
        index_dir=str(tmp_path / "index"),
        thumb_size=64,
        choice=resolve_weights("none"),
        seed=1234,
        tf_threads=0,
        model_key={},
        decode_budget_bytes=16 * 1024 * 1024,
        decode_slots=1,
    )
    batch = {
        "relpath": np.array(files),
        "size": np.array([s.st_size for s in stats]),
        "mtime_ns": np.array([s.st_mtime_ns for s in stats]),
        "needs_vector": np.array([True, True]),
    }
    out = decode_batch(batch, cfg)
    assert list(out["status"]) == [STATUS_SKIPPED, STATUS_OK]
    assert out["reason"][0] == "too_large" and "the limit is 16 MB" in out["message"][0]
    assert (images.DECODE_BUDGET.limit_bytes, images.DECODE_BUDGET.slots) == (16 * 1024 * 1024, 1)
