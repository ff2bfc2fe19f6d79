"""float16 re-ranking vectors, and builds that refer to stored rows instead of holding them."""

from __future__ import annotations

import json
import pickle
import tracemalloc

import numpy as np
import pytest

from indexer import checkpoints, generation, loading
from indexer.build import build_index, check_freshness, publish_plan
from indexer.colour import DIM as COLOUR_DIM
from indexer.config import ConfigError, Settings
from indexer.plan import key_for, model_key, plan_build
from indexer.publish import publish
from indexer.search import Searcher


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _clustered(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Unit vectors in tight clusters, so that near ties in distance are common."""
    centres = _unit(rng, max(1, n // 10), dim)
    rows = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.05, (n, dim)).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _publish(index_dir, vectors, colours, dtype: str):
    n = len(vectors)
    return publish(
        index_dir,
        embeddings=vectors,
        colours=colours,
        filenames=[f"{i}.jpg" for i in range(n)],
        metadata=[{} for _ in range(n)],
        manifest={"model": "test"},
        trees=5,
        vectors_dtype=dtype,
    )


@pytest.fixture
def twin_indexes(tmp_path):
    """The same 400 clustered vectors published as float32 and as float16."""
    rng = np.random.default_rng(7)
    vectors = _clustered(rng, 400, 96)
    colours = _unit(rng, 400, COLOUR_DIM)
    _publish(tmp_path / "f32", vectors, colours, "float32")
    _publish(tmp_path / "f16", vectors, colours, "float16")
    wide, compact = Searcher.load(tmp_path / "f32"), Searcher.load(tmp_path / "f16")
    yield vectors, wide, compact
    wide.index.annoy.unload()
    compact.index.annoy.unload()


def test_float16_store_halves_the_mapped_vectors_and_keeps_the_pickle_float32(tmp_path, twin_indexes):
    vectors, wide, compact = twin_indexes
    assert wide.embeddings.dtype == np.float32 and compact.embeddings.dtype == np.float16
    assert compact.manifest["vectors_dtype"] == "float16"
    size = {name: (tmp_path / name / "embeddings.npy").stat().st_size for name in ("f32", "f16")}
    assert size["f16"] - 128 == (size["f32"] - 128) // 2  # one .npy header each
    # the documented artifact is unchanged: the exact float32 vectors
    stored = pickle.loads((tmp_path / "f16" / "embeddings.pkl").read_bytes())
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, vectors)
    assert compact.vector(3).dtype == np.float32


def _same_order_up_to_ties(exact: np.ndarray, got_rows: list[int], want_rows: list[int], tie: float) -> None:
    """``got_rows`` ranks like ``want_rows`` where their exact distances differ by more than ``tie``."""
    assert len(got_rows) == len(want_rows)
    for position, (got, want) in enumerate(zip(got_rows, want_rows)):
        if got != want:
            assert abs(exact[got] - exact[want]) <= tie, f"rank {position}: {got} vs {want}"


def test_float16_reranking_equals_float32_order_up_to_ties(twin_indexes):
    vectors, wide, compact = twin_indexes
    rng = np.random.default_rng(11)
    all_rows = np.arange(len(vectors))
    # float16 keeps ~11 bits: a unit vector's distances move by at most ~1e-3
    tie = 2e-3
    swaps = 0
    for query in np.vstack([vectors[:20] + rng.normal(0, 0.05, (20, vectors.shape[1])), _unit(rng, 10, 96)]):
        query = (query / np.linalg.norm(query)).astype(np.float32)
        exact = np.linalg.norm(vectors.astype(np.float64) - query, axis=1)
        want = [hit.row for hit in wide.rank(query, all_rows, 20)]
        got_hits = compact.rank(query, all_rows, 20)
        got = [hit.row for hit in got_hits]
        _same_order_up_to_ties(exact, got, want, tie)
        swaps += got != want
        # the distances are computed in float32 from the stored rows
        np.testing.assert_allclose([hit.distance for hit in got_hits], exact[got], atol=1e-3)
        # whole searches through Annoy and exact search agree the same way
        _same_order_up_to_ties(
            exact, [h.row for h in compact.search(query, 5)], [h.row for h in wide.search(query, 5)], tie
        )
        _same_order_up_to_ties(
            exact, [h.row for h in compact.exact(query, 5)], [h.row for h in wide.exact(query, 5)], tie
        )
    assert swaps < 30  # most orders are identical; ties are the exception


def test_a_float16_generation_is_reused_with_its_exact_float32_vectors(tmp_path):
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 50, 32)
    _publish(tmp_path / "f16", vectors, _unit(rng, 50, COLOUR_DIM), "float16")
    loaded = loading.load_index(tmp_path / "f16")
    loaded.annoy.unload()
    stored, _colours = loading.stored_rows(loaded)
    assert stored.path.name == "embeddings.pkl"
    np.testing.assert_array_equal(stored.open()[[0, 17, 49]], vectors[[0, 17, 49]])
    # a float32 generation is re-read from the file the workers already keep in the page cache
    _publish(tmp_path / "f32", vectors, _unit(rng, 50, COLOUR_DIM), "float32")
    loaded = loading.load_index(tmp_path / "f32")
    loaded.annoy.unload()
    assert loading.stored_rows(loaded)[0].path.name == "embeddings.npy"


@pytest.mark.parametrize("offset", [12, -3, True, "50", 10**9, None])
def test_a_wrong_pickle_offset_is_not_trusted(tmp_path, offset):
    rng = np.random.default_rng(4)
    _publish(tmp_path, _unit(rng, 20, 16), _unit(rng, 20, COLOUR_DIM), "float16")
    loaded = loading.load_index(tmp_path)
    loaded.annoy.unload()
    assert loading.stored_rows(loaded) is not None
    loaded.manifest["embeddings_pkl_offset"] = offset
    assert loading.stored_rows(loaded) is None  # its items are embedded again, never read as garbage


def test_an_unknown_vectors_dtype_is_an_artifact_error(tmp_path):
    rng = np.random.default_rng(5)
    gen = _publish(tmp_path, _unit(rng, 10, 16), _unit(rng, 10, COLOUR_DIM), "float16")
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["vectors_dtype"] = "bfloat7"
    (gen / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(generation.ArtifactError):
        loading.load_index(tmp_path)


def test_fashion_vectors_setting_is_validated():
    assert Settings.from_env({}).vectors == "float32"
    assert Settings.from_env({"FASHION_VECTORS": "float16"}).vectors == "float16"
    with pytest.raises(ConfigError, match="FASHION_VECTORS"):
        Settings.from_env({"FASHION_VECTORS": "int8"})


def test_switching_to_float16_republishes_only_when_told_and_without_embedding(
    tiny_settings, fake_counting_embedder, caplog
):
    """A FASHION_VECTORS that differed made the generation "stale": the CLI and the site republished back and forth."""
    build_index(tiny_settings, fake_counting_embedder)
    before = loading.load_index(tiny_settings.index_dir)
    before.annoy.unload()
    float32_vectors = np.array(before.embeddings)
    embedded = fake_counting_embedder.images
    float16_settings = tiny_settings.replace(vectors="float16")

    # another setting: what is published is served as it is, and the difference logged once
    with caplog.at_level("WARNING", logger="indexer.build"):
        assert check_freshness(float16_settings, key_for(fake_counting_embedder)) == "fresh"
        assert check_freshness(float16_settings, key_for(fake_counting_embedder)) == "fresh"
        assert build_index(float16_settings, fake_counting_embedder).up_to_date
    assert sum("FASHION_VECTORS is float16" in r.getMessage() for r in caplog.records) == 1
    assert loading.load_index(tiny_settings.index_dir).manifest["vectors_dtype"] == "float32"

    # told to: published again in float16, nothing embedded
    report = build_index(tiny_settings, fake_counting_embedder, vectors="float16")
    assert not report.up_to_date and report.indexed == 0 and report.reused == len(float32_vectors)
    assert fake_counting_embedder.images == embedded
    compact = loading.load_index(tiny_settings.index_dir)
    compact.annoy.unload()
    assert compact.embeddings.dtype == np.float16
    np.testing.assert_allclose(compact.embeddings, float32_vectors, atol=1e-3)
    # a process still set to float32 keeps it: fresh, and a build with other work keeps float16 too
    assert check_freshness(tiny_settings, key_for(fake_counting_embedder)) == "fresh"
    assert build_index(tiny_settings, fake_counting_embedder, full=True).indexed > 0
    assert loading.load_index(tiny_settings.index_dir).manifest["vectors_dtype"] == "float16"

    # and back when told: the float32 vectors come back exactly (from embeddings.pkl), not rounded
    embedded = fake_counting_embedder.images
    report = build_index(float16_settings, fake_counting_embedder, vectors="float32")
    assert report.indexed == 0 and fake_counting_embedder.images == embedded
    restored = loading.load_index(tiny_settings.index_dir)
    restored.annoy.unload()
    assert restored.embeddings.dtype == np.float32
    np.testing.assert_array_equal(restored.embeddings, float32_vectors)
    assert build_index(tiny_settings, fake_counting_embedder).up_to_date
    assert build_index(tiny_settings, fake_counting_embedder, vectors="float32").up_to_date


def test_build_takes_a_vectors_flag():
    """``python -m indexer build --vectors float16|float32`` (and ``rebuild``); nothing else."""
    from indexer.__main__ import make_parser as build_parser

    assert build_parser().parse_args(["build", "--vectors", "float16"]).vectors == "float16"
    assert build_parser().parse_args(["rebuild", "--vectors", "float32"]).vectors == "float32"
    assert build_parser().parse_args(["build"]).vectors is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--vectors", "int8"])


# ---------------------------------------------------------------- resuming from shards


ITEMS = 6144
DIM = 1280
SHARD_ROWS = 256
KEY = model_key("test-model", "test-weights")


def _resume_peak_bytes(tmp_path, name: str, in_shards: int) -> int:
    """Peak traced memory of planning and publishing ``ITEMS`` items, ``in_shards`` of them from shards.

    The rest come from the previous generation. The items are the same in
    every case; only how many rows the build resumes from shards differs.
    """
    rng = np.random.default_rng(5)
    catalogue = tmp_path / name / "catalogue"
    catalogue.mkdir(parents=True)
    for i in range(ITEMS):
        (catalogue / f"{i:05d}.jpg").write_bytes(b"x")
    settings = Settings.from_env(
        {}, catalogue=str(catalogue), index_dir=str(tmp_path / name / "index"), annoy_trees=1
    )
    files = plan_build(settings, KEY).files
    kept = files[: ITEMS - in_shards]
    publish(
        settings.index_dir,
        embeddings=_unit(rng, len(kept), DIM),
        colours=_unit(rng, len(kept), COLOUR_DIM),
        filenames=[f.relpath for f in kept],
        metadata=[{} for _ in kept],
        manifest=dict(KEY, items=[[f.relpath, f.size, f.mtime_ns] for f in kept]),
        trees=1,
    )
    work = checkpoints.work_dir(settings.index_dir)
    for start in range(ITEMS - in_shards, ITEMS, SHARD_ROWS):
        part = files[start : start + SHARD_ROWS]
        checkpoints.write_shard(
            work,
            _unit(rng, len(part), DIM),
            [[f.relpath, f.size, f.mtime_ns] for f in part],
            colours=_unit(rng, len(part), COLOUR_DIM),
            model_key=KEY,
        )
    tracemalloc.start()
    try:
        plan = plan_build(settings, KEY)
        assert not plan.to_embed and len(plan.reuse) == ITEMS
        indexed, total = publish_plan(plan, settings, [], DIM)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (indexed, total) == (0, ITEMS)
    return peak


@pytest.mark.slow  # plans and publishes 6,144 items twice under tracemalloc: half a minute
def test_resuming_from_many_shards_holds_no_more_memory_than_from_one(tmp_path):
    one_shard = _resume_peak_bytes(tmp_path, "one", SHARD_ROWS)
    many_shards = _resume_peak_bytes(tmp_path, "many", 20 * SHARD_ROWS)
    # holding the 19 extra shards' rows would take 25 MB more
    extra_rows = 19 * SHARD_ROWS * (DIM + COLOUR_DIM) * 4
    assert many_shards - one_shard < extra_rows / 4, (one_shard, many_shards)

