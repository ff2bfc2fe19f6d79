"""Runtimes: the converted model matches TensorFlow, is cached, falls back, and keeps vector spaces apart.

The OpenVINO conversion (tens of seconds) runs once per session into a
temporary cache; INT8 calibrates on a handful of demo images only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer import runtimes
from indexer.build import build_index, check_freshness
from indexer.config import ConfigError, Settings
from indexer.generation import ArtifactError
from indexer.images import load_for_model
from indexer.loading import load_index
from indexer.model import WeightsChoice, resolve_weights
from indexer.plan import key_for, model_key

PROJECT = Path(__file__).resolve().parent.parent
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_NNCF = HAS_OPENVINO and importlib.util.find_spec("nncf") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
needs_nncf = pytest.mark.skipif(not HAS_NNCF, reason="NNCF is not installed")
TINY_CALIBRATION = 6
# Tests that convert or run a model (TensorFlow, OpenVINO) are marked slow; the cache keys,
# the check's arithmetic and the settings are the fast tier's.


def _demo_batch(catalogue: Path, count: int = 8) -> np.ndarray:
    paths = sorted(catalogue.glob("*.jpg"))[:count]
    return np.stack([load_for_model(path) for path in paths])


@pytest.fixture(scope="session")
def weights_choice():
    return resolve_weights("none", 1234)


@pytest.fixture(scope="session")
def ov_index_dir(tmp_path_factory) -> Path:
    """An index dir whose ``models/`` cache holds the converted models of this session."""
    return tmp_path_factory.mktemp("ov-index")


@pytest.fixture(scope="session")
def ov_fp32(ov_index_dir, weights_choice, embedder):
    """The OpenVINO fp32 embedder, converted from the session's TensorFlow embedder once."""
    if not HAS_OPENVINO:
        pytest.skip("OpenVINO is not installed")
    return runtimes.load_runtime(
        weights_choice, "openvino", cache_dir=runtimes.cache_root(ov_index_dir), threads=2, reference=embedder
    )


@pytest.fixture(scope="session")
def ov_int8(ov_index_dir, weights_choice, embedder, demo_catalogue):
    """The INT8 embedder, calibrated on a few demo images (the product default is 300)."""
    if not HAS_NNCF:
        pytest.skip("NNCF is not installed")
    return runtimes.load_runtime(
        weights_choice,
        "openvino-int8",
        cache_dir=runtimes.cache_root(ov_index_dir),
        threads=2,
        catalogue=demo_catalogue,
        calibration_images=TINY_CALIBRATION,
        reference=embedder,
    )


def _installed_runtimes() -> list:
    found = []
    if HAS_OPENVINO:
        found.append("ov_fp32")
    if HAS_NNCF:
        found.append("ov_int8")
    return found


# ---------------------------------------------------------------- the check, on every installed runtime


@pytest.mark.slow
@pytest.mark.parametrize("fixture", _installed_runtimes())
def test_converted_model_passes_the_tensorflow_check(fixture, request, embedder, demo_catalogue):
    converted = request.getfixturevalue(fixture)
    assert isinstance(converted, runtimes.OpenVinoEmbedder), "the check failed and the runtime fell back"
    batch = _demo_batch(demo_catalogue)
    result = runtimes.compare(converted.embed(batch), embedder.embed(batch), int8=converted.runtime.endswith("int8"))
    assert result.passed, result.describe()
    if fixture == "ov_fp32":
        assert result.max_abs_diff <= 1e-5


@pytest.mark.slow
def test_fp32_embedder_keeps_the_interface(ov_fp32, embedder, demo_catalogue):
    image = _demo_batch(demo_catalogue, 1)[0]
    vector = ov_fp32.embed_one(image)
    assert vector.shape == (embedder.dim,) and vector.dtype == np.float32
    assert ov_fp32.weights_id == embedder.weights_id and ov_fp32.choice == embedder.choice
    assert (ov_fp32.runtime, ov_fp32.vector_space) == ("openvino", "fp32")
    ov_fp32.warm_up()


@pytest.mark.slow
def test_converted_model_gives_the_same_activation_maps(ov_fp32, embedder, demo_catalogue):
    batch = _demo_batch(demo_catalogue, 4)
    vectors, maps = ov_fp32.embed_with_maps(batch)
    tf_vectors, tf_maps = embedder.embed_with_maps(batch)
    assert maps.shape == tf_maps.shape == (4, 7, 7)  # the last layer's mean over channels
    np.testing.assert_allclose(maps, tf_maps, atol=1e-4 * np.abs(tf_maps).max())
    # the whole feature layer too: the catalogue's objectness weighs its channels (indexer.objectness)
    _, features = ov_fp32.embed_with_features(batch)
    _, tf_features = embedder.embed_with_features(batch)
    channels = embedder.dim - embedder.spec.head_channels  # the detail layer's: the vector's last dimensions
    assert features.shape == tf_features.shape == (4, 14, 14, channels)
    np.testing.assert_allclose(features, tf_features, atol=1e-4 * np.abs(tf_features).max())
    np.testing.assert_array_equal(vectors, ov_fp32.embed(batch))
    assert np.abs(vectors - tf_vectors).max() <= 1e-5


@pytest.mark.slow
@needs_openvino
def test_int8_leaves_in_float_exactly_what_follows_the_feature_map(embedder):
    model = runtimes.convert(embedder)
    kinds = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    kept = [kinds[name] for name in runtimes._head_op_names(model)]
    # the global pooling of the last layer and of the detail layer (generalised means: powers around a
    # mean), the join and the L2 steps, and none of the backbone (the feature layer output has no head)
    # and the activation map's mean over channels
    assert sorted(kind for kind in kept if kind in ("ReduceMax", "ReduceMean")) == ["ReduceMean"] * 3
    assert "Concat" in kept
    assert {"ReduceSum", "Power"} <= set(kept)
    assert not {"Convolution", "GroupConvolution", "Clamp"} & set(kept)


@pytest.mark.slow
@needs_openvino
def test_int8_quantises_nothing_between_the_map_layer_and_its_output(embedder, demo_catalogue):
    if not HAS_NNCF:
        pytest.skip("NNCF is not installed")
    # Lite0's map layer is an inner layer too: the graph turns it to the output's layout and back for the
    # next block, and a quantizer between the two would meet the wrong axis
    quantised = runtimes._quantize(runtimes.convert(embedder), list(_demo_batch(demo_catalogue, 4)))
    op = quantised.get_results()[runtimes.FEATURES_OUTPUT].input_value(0).get_node()
    path = []
    while op.get_type_name() != "Clamp":  # up to the layer's own ReLU6
        path.append(op.get_type_name())
        op = op.input_value(0).get_node()
    assert path and "FakeQuantize" not in path, path
    import openvino as ov

    ov.Core().compile_model(quantised, "CPU")  # and it compiles: a quantizer on the wrong axis does not


@pytest.mark.slow
def test_int8_keeps_unit_norms(ov_int8, demo_catalogue):
    vectors = ov_int8.embed(_demo_batch(demo_catalogue, 16))
    assert np.abs(np.linalg.norm(vectors, axis=1) - 1.0).max() < 1e-3
    assert ov_int8.vector_space.startswith("int8-")


@pytest.mark.slow
def test_int8_is_checked_on_catalogue_photos_too(ov_int8):
    entry = Path(ov_int8.resolved.model_dir)
    checked = np.load(entry / runtimes.CHECK_BATCH)
    meta = json.loads((entry / runtimes.META).read_text())
    photos = min(runtimes.INT8_CHECK_PHOTOS, meta["calibration_images"])
    assert photos > 0 and len(checked) == len(runtimes.check_images()) + photos
    assert np.array_equal(checked[: len(runtimes.check_images())], runtimes.check_images())
    assert meta["check"]["passed"] and meta["check"]["median_cosine"] >= runtimes.INT8_MIN_MEDIAN_COSINE


def test_int8_check_refuses_vectors_that_point_elsewhere():
    rng = np.random.default_rng(3)
    reference = rng.random((20, 64)).astype(np.float32) ** 4  # non-negative and peaked, like pooled ReLU6 features
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert runtimes.compare(reference, reference, int8=True).passed
    shuffled = reference[rng.permutation(20)]  # unit vectors of the wrong images
    assert not runtimes.compare(shuffled, reference, int8=True).passed
    partly = reference.copy()
    partly[:3] = reference[[10, 11, 12]]  # three images of twenty answered with others' vectors
    result = runtimes.compare(partly, reference, int8=True)
    assert result.median_cosine == 1.0 and not result.passed


def test_int8_calibration_sample_is_deterministic(demo_catalogue):
    first, first_id = runtimes.calibration_sample(demo_catalogue, 5)
    second, second_id = runtimes.calibration_sample(demo_catalogue, 5)
    assert first_id == second_id and len(first) == 5
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert runtimes.calibration_sample(demo_catalogue, 7)[1] != first_id


# ---------------------------------------------------------------- the cache


def test_cache_key_covers_weights_preprocessing_and_runtime_version(tmp_path, weights_choice, monkeypatch):
    base = runtimes.cache_entry(tmp_path, weights_choice, "fp32", "2026.4.1")
    other_weights = resolve_weights("none", 99)
    assert runtimes.cache_entry(tmp_path, other_weights, "fp32", "2026.4.1") != base
    assert runtimes.cache_entry(tmp_path, weights_choice, "fp32", "2026.5.0") != base
    assert runtimes.cache_entry(tmp_path, weights_choice, "int8", "2026.4.1") != base
    monkeypatch.setattr(runtimes, "PREPROCESS_VERSION", "next")
    assert runtimes.cache_entry(tmp_path, weights_choice, "fp32", "2026.4.1") != base


def test_cache_key_covers_how_the_vector_is_pooled_not_just_the_model_id(tmp_path, weights_choice, monkeypatch):
    # the pooling and the detail layer are in the converted graph: a change must convert again
    from indexer import models

    base = runtimes.cache_entry(tmp_path, weights_choice, "fp32", "2026.4.1")
    spec = weights_choice.spec
    reweighed = dataclasses.replace(spec, detail_weight=spec.detail_weight * 2)
    monkeypatch.setitem(models.MODELS, spec.name, reweighed)
    assert weights_choice.spec.model_id == spec.model_id
    assert runtimes.cache_entry(tmp_path, weights_choice, "fp32", "2026.4.1") != base


@pytest.mark.slow
@needs_openvino
def test_cached_entry_records_the_check(ov_fp32, ov_index_dir, weights_choice):
    entry = runtimes.cache_entry(
        runtimes.cache_root(ov_index_dir), weights_choice, "fp32", runtimes.openvino_version()
    )
    meta = json.loads((entry / runtimes.META).read_text())
    assert meta["weights_id"] == weights_choice.weights_id and meta["check"]["passed"]
    assert meta["check"]["max_abs_diff"] <= 1e-5
    assert Path(ov_fp32.resolved.model_dir) == entry


def _copy_cache(ov_index_dir: Path, target: Path) -> Path:
    source, copy = runtimes.cache_root(ov_index_dir), runtimes.cache_root(target)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.lock"))
    return runtimes.cache_root(target)


@pytest.mark.slow
@needs_openvino
def test_damaged_cached_model_is_converted_again(ov_fp32, ov_index_dir, tmp_path, weights_choice, embedder, caplog):
    cache = _copy_cache(ov_index_dir, tmp_path)
    entry = runtimes.cache_entry(cache, weights_choice, "fp32", runtimes.openvino_version())
    weights = entry / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\x7f" * 4096  # large floats in the middle of the weights
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="indexer.runtimes"):
        again = runtimes.load_runtime(weights_choice, "openvino", cache_dir=cache, threads=2, reference=embedder)
    assert "does not match its meta.json" in caplog.text  # caught by its hash before it is even opened
    assert isinstance(again, runtimes.OpenVinoEmbedder)
    batch = runtimes.check_images()
    assert np.abs(again.embed(batch) - embedder.embed(batch)).max() <= 1e-5


@pytest.mark.slow
@needs_openvino
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda meta: {"check": {}}, id="empty-check"),
        pytest.param(lambda meta: dict(meta, check=dict(meta["check"], passed="yes")), id="passed-not-a-bool"),
        pytest.param(lambda meta: dict(meta, check=dict(meta["check"], surprise=1)), id="unknown-check-field"),
        pytest.param(lambda meta: dict(meta, weights_id="file-0123456789abcdef"), id="other-weights"),
        pytest.param(lambda meta: dict(meta, model="resnet50-notop-gmp-l2"), id="other-model"),
        pytest.param(lambda meta: [meta], id="not-an-object"),
        pytest.param(lambda meta: dict(meta, check="passed"), id="check-not-an-object"),
        pytest.param(lambda meta: dict(meta, check=[1]), id="check-a-list"),
        pytest.param(lambda meta: dict(meta, weights_sha256="0" * 64), id="other-weights-file"),
        pytest.param(lambda meta: {k: v for k, v in meta.items() if k != "files"}, id="no-file-hashes"),
        pytest.param(lambda meta: dict(meta, files={"model.xml": "0" * 64}), id="model-files-unlisted"),
        pytest.param(lambda meta: dict(meta, files=dict(meta["files"], **{"../meta.json": "0"})), id="path-in-files"),
    ],
)
def test_a_damaged_or_foreign_meta_is_converted_again_never_fatal(
    ov_fp32, ov_index_dir, tmp_path, weights_choice, embedder, caplog, damage
):
    cache = _copy_cache(ov_index_dir, tmp_path)
    entry = runtimes.cache_entry(cache, weights_choice, "fp32", runtimes.openvino_version())
    meta_path = entry / runtimes.META
    meta_path.write_text(json.dumps(damage(json.loads(meta_path.read_text()))))
    with caplog.at_level(logging.WARNING, logger="indexer.runtimes"):
        again = runtimes.load_runtime(weights_choice, "openvino", cache_dir=cache, threads=2, reference=embedder)
    assert "damaged or foreign meta.json" in caplog.text
    assert isinstance(again, runtimes.OpenVinoEmbedder)
    restored = json.loads(meta_path.read_text())
    assert restored["check"]["passed"] is True and restored["weights_id"] == weights_choice.weights_id


@pytest.fixture(scope="session")
def other_weights_entry(tmp_path_factory):
    """A cache entry converted from other weights (random, seed 99): what a swapped entry would hold."""
    if not HAS_OPENVINO:
        pytest.skip("OpenVINO is not installed")
    from indexer.model import Embedder

    choice = resolve_weights("none", 99)
    cache = runtimes.cache_root(tmp_path_factory.mktemp("ov-other"))
    runtimes.load_runtime(choice, "openvino", cache_dir=cache, threads=2, reference=Embedder(choice, 99))
    return runtimes.cache_entry(cache, choice, "fp32", runtimes.openvino_version())


@pytest.mark.slow
@needs_openvino
def test_entry_swapped_for_a_conversion_of_other_weights_is_converted_again(
    ov_fp32, ov_index_dir, other_weights_entry, tmp_path, weights_choice, embedder, caplog
):
    """Model and stored vectors both swapped pass the load check against each other; the file hashes do not."""
    cache = _copy_cache(ov_index_dir, tmp_path)
    entry = runtimes.cache_entry(cache, weights_choice, "fp32", runtimes.openvino_version())
    for name in ("model.xml", "model.bin", runtimes.REFERENCE):
        shutil.copy(other_weights_entry / name, entry / name)
    with caplog.at_level(logging.WARNING, logger="indexer.runtimes"):
        again = runtimes.load_runtime(weights_choice, "openvino", cache_dir=cache, threads=2, reference=embedder)
    assert "does not match its meta.json" in caplog.text
    batch = runtimes.check_images()
    assert np.abs(again.embed(batch) - embedder.embed(batch)).max() <= 1e-5  # this model's vectors, not the other's


@pytest.mark.slow
@needs_openvino
def test_whole_entry_of_other_weights_under_this_key_is_converted_again(
    ov_fp32, ov_index_dir, other_weights_entry, tmp_path, weights_choice, embedder, caplog
):
    cache = _copy_cache(ov_index_dir, tmp_path)
    entry = runtimes.cache_entry(cache, weights_choice, "fp32", runtimes.openvino_version())
    shutil.rmtree(entry)
    shutil.copytree(other_weights_entry, entry)
    with caplog.at_level(logging.WARNING, logger="indexer.runtimes"):
        again = runtimes.load_runtime(weights_choice, "openvino", cache_dir=cache, threads=2, reference=embedder)
    assert "damaged or foreign meta.json" in caplog.text
    batch = runtimes.check_images()
    assert np.abs(again.embed(batch) - embedder.embed(batch)).max() <= 1e-5


def test_cache_key_follows_the_weights_file_not_just_its_id(tmp_path):
    """``imagenet`` names whatever file Keras cached; a different file must not reuse the conversion."""
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    first.write_bytes(b"weights 1")
    second.write_bytes(b"weights two")
    def entry_for(path):
        return runtimes.cache_entry(tmp_path, WeightsChoice(str(path), "imagenet", "resnet50"), "fp32", "2026.4.1")

    assert entry_for(first) != entry_for(second)
    first.write_bytes(b"weights two")  # the same path, replaced in place
    assert entry_for(first) == entry_for(second)


@pytest.mark.slow
@needs_openvino
def test_failed_check_falls_back_to_tensorflow_and_is_remembered(
    ov_fp32, ov_index_dir, tmp_path, weights_choice, embedder, monkeypatch, caplog
):
    # A stricter tolerance than any real conversion meets (it differs by ~1e-7):
    # the real check on a real conversion fails.
    monkeypatch.setattr(runtimes, "FP32_TOLERANCE", 0.0)
    cache = runtimes.cache_root(tmp_path)
    with caplog.at_level(logging.WARNING, logger="indexer.runtimes"):
        chosen = runtimes.load_runtime(weights_choice, "auto", cache_dir=cache, threads=2, reference=embedder)
    assert chosen is embedder and chosen.runtime == "tensorflow"
    assert "failed its check" in caplog.text and "using TensorFlow instead" in caplog.text
    entry = runtimes.cache_entry(cache, weights_choice, "fp32", runtimes.openvino_version())
    meta = json.loads((entry / runtimes.META).read_text())
    assert meta["check"]["passed"] is False and not (entry / runtimes.MODEL_XML).exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="indexer.runtimes"):
        runtimes.load_runtime(weights_choice, "openvino", cache_dir=cache, threads=2, reference=embedder)
    assert "Converting" not in caplog.text  # the failed result is cached, not recomputed on every start


@pytest.mark.slow
def test_tensorflow_runtime_is_the_keras_model(weights_choice, embedder, tmp_path):
    chosen = runtimes.load_runtime(weights_choice, "tensorflow", cache_dir=tmp_path, reference=embedder)
    assert chosen is embedder and not (tmp_path / runtimes.CACHE_DIR).exists()


def test_runtime_setting_is_validated():
    assert Settings.from_env({}).runtime == "auto"
    assert Settings.from_env({"FASHION_RUNTIME": " OpenVINO-INT8 "}).runtime == "openvino-int8"
    with pytest.raises(ConfigError, match="FASHION_RUNTIME"):
        Settings.from_env({"FASHION_RUNTIME": "onnx"})


# ---------------------------------------------------------------- manifest and vector spaces


@pytest.mark.slow
@needs_nncf
def test_manifest_records_runtime_and_vector_spaces_stay_apart(tmp_path, tiny_settings, ov_fp32, ov_int8, embedder):
    fp32_settings = tiny_settings
    build_index(fp32_settings, ov_fp32)
    manifest = load_index(fp32_settings.index_dir).manifest
    assert (manifest["runtime"], manifest["vector_space"]) == ("openvino", "fp32")
    # fp32 runtimes are interchangeable: TensorFlow queries the OpenVINO-built index
    assert check_freshness(fp32_settings, key_for(embedder)) == "fresh"
    assert check_freshness(fp32_settings, key_for(ov_int8)) == "incompatible"
    with pytest.raises(ArtifactError, match="vector_space"):
        load_index(fp32_settings.index_dir, expect=key_for(ov_int8))

    int8_settings = fp32_settings.replace(index_dir=tmp_path / "int8-index")
    build_index(int8_settings, ov_int8)
    manifest = load_index(int8_settings.index_dir).manifest
    assert (manifest["runtime"], manifest["vector_space"]) == ("openvino-int8", ov_int8.vector_space)
    assert check_freshness(int8_settings, key_for(embedder)) == "incompatible"
    with pytest.raises(ArtifactError, match="vector_space"):
        load_index(int8_settings.index_dir, expect=model_key(embedder.model_id, embedder.weights_id, "fp32"))


@pytest.mark.slow
@needs_openvino
def test_web_app_with_cached_model_never_imports_tensorflow(ov_fp32, ov_index_dir, tmp_path, tiny_settings):
    index_dir = tmp_path / "served-index"
    _copy_cache(ov_index_dir, index_dir)
    script = (
        "import json, sys, time\n"
        "import app as module\n"
        "client = module.app.test_client()\n"
        "deadline = time.time() + 120\n"
        "while client.get('/healthz').status_code != 200 and time.time() < deadline:\n"
        "    time.sleep(0.2)\n"
        "status = client.get('/api/status').get_json()\n"
        "print(json.dumps({'state': status['state'], 'runtime': status['runtime'],\n"
        "                  'tensorflow': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}))\n"
    )
    env = dict(
        os.environ,
        FASHION_CATALOGUE=str(tiny_settings.catalogue),
        FASHION_INDEX_DIR=str(index_dir),
        FASHION_RUNTIME="auto",
        FASHION_WEIGHTS="none",
        FASHION_TF_THREADS="2",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"state": "ready", "runtime": "openvino", "tensorflow": False, "keras": False}


@pytest.mark.slow
@needs_openvino
def test_runtime_command_reports_the_cached_model(ov_fp32, ov_index_dir, tmp_path):
    index_dir = tmp_path / "index"
    _copy_cache(ov_index_dir, index_dir)
    env = dict(os.environ, FASHION_RUNTIME="auto", FASHION_WEIGHTS="none", FASHION_INDEX_DIR=str(index_dir))
    done = subprocess.run(
        [sys.executable, "-m", "indexer", "runtime"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reported = json.loads(done.stdout)  # the whole of stdout is the JSON report
    assert (reported["requested"], reported["runtime"], reported["vector_space"]) == ("auto", "openvino", "fp32")
    assert Path(reported["model_dir"]).parent == runtimes.cache_root(index_dir)


@pytest.mark.slow
@needs_nncf
def test_ray_actors_run_the_drivers_runtime(tiny_settings, tmp_path, ov_int8, embedder):
    pytest.importorskip("ray", reason="Ray is not installed (requirements-ray.txt)")
    local_settings = tiny_settings.replace(index_dir=tmp_path / "local-int8")
    build_index(local_settings, ov_int8)
    build_index(tiny_settings, ov_int8, engine="ray")
    on_ray, local = load_index(tiny_settings.index_dir), load_index(local_settings.index_dir)
    assert on_ray.filenames == local.filenames
    assert on_ray.manifest["vector_space"] == ov_int8.vector_space
    # INT8 vectors, not TensorFlow's: the actors loaded the driver's quantised model
    assert np.abs(on_ray.embeddings - local.embeddings).max() <= 1e-4
    tf_vectors = embedder.embed(np.stack([load_for_model(tiny_settings.catalogue / f) for f in local.filenames]))
    assert np.abs(on_ray.embeddings - tf_vectors).max() > 1e-3
