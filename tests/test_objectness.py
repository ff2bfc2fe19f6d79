"""The objectness weights: learned from views with known product boxes, they find the product, not the busiest thing."""

import io

import numpy as np
import pytest
from PIL import Image

from indexer import locate, objectness, tuning
from indexer.images import load_with_size
from tests.fakes import FakeEmbedder


def test_cell_labels_take_the_cells_whose_centre_is_in_the_box():
    labels = objectness.cell_labels(np.array([[0.0, 0.0, 0.5, 1.0], [0.6, 0.6, 0.4, 0.4]]), 4, 4)
    assert labels[0].tolist() == [[True, True, False, False]] * 4
    assert labels[1].sum() == 4 and labels[1][2:, 2:].all()  # cell centres 0.625 and 0.875 are inside
    assert not objectness.cell_labels(np.array([[0.3, 0.3, 0.1, 0.1]]), 2, 2).any()


def _views(rng, count, channels, product, clutter):
    """Feature layers where product cells carry ``product`` and scene cells a stronger ``clutter`` half the time."""
    features = rng.normal(0, 0.3, (count, 6, 6, channels))
    boxes = []
    for view in range(count):
        x, y = rng.integers(0, 3, 2)
        boxes.append(((x + 0.01) / 6, (y + 0.01) / 6, 2.98 / 6, 2.98 / 6))
        features[view, y : y + 3, x : x + 3] += product
        busy = rng.random((6, 6)) < 0.5
        busy[y : y + 3, x : x + 3] = False
        features[view][busy] += clutter
    return features.astype(np.float32), np.array(boxes)


def test_learned_weights_light_up_the_product_where_the_channel_mean_lights_up_clutter():
    rng = np.random.default_rng(0)
    channels = 24
    product = np.zeros(channels)
    product[:4] = 1.0
    clutter = np.zeros(channels)
    clutter[4:12] = 1.5  # fires more, on more channels: the channel mean prefers it
    stats = objectness.ObjectnessStats()
    for _ in range(4):
        stats.add(*_views(rng, 50, channels, product, clutter))
    weights = stats.solve()
    assert weights.shape == (channels,) and abs(np.linalg.norm(weights) - 1) < 1e-5
    features, boxes = _views(np.random.default_rng(1), 100, channels, product, clutter)
    inside = objectness.cell_labels(boxes, 6, 6)
    learned = objectness.product_maps(features, weights)
    mean = features.mean(axis=3)
    assert learned[inside].mean() > learned[~inside].mean() + 0.5
    assert mean[inside].mean() < mean[~inside].max()  # control: the mean alone is fooled by clutter
    # each view's peak cell: in the product's box with the learned weights
    peaks = learned.reshape(100, -1).argmax(axis=1)
    assert inside.reshape(100, -1)[np.arange(100), peaks].mean() > 0.95


def test_too_few_cells_of_either_kind_teach_nothing():
    stats = objectness.ObjectnessStats()
    assert stats.solve() is None
    stats.add(np.ones((1, 2, 2, 3), np.float32), np.array([[0, 0, 1, 1]]))  # every cell inside
    assert stats.solve() is None


def test_the_projection_carries_its_objectness_in_its_file(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(60, 12)).astype(np.float32)
    plain = tuning.learn(vectors, np.repeat(np.arange(20), 3), dims=5)
    weights = rng.normal(size=12).astype(np.float32)
    carried = tuning.Projection(plain.mean, plain.matrix, objectness=weights)
    carried.save(tmp_path / "p.npy")
    again = tuning.Projection.load(tmp_path / "p.npy", dim=5)
    np.testing.assert_array_equal(again.objectness, weights)
    np.testing.assert_array_equal(again.matrix, plain.matrix)
    assert again.tuning_id == carried.tuning_id != plain.tuning_id
    assert carried.tuning_id.startswith("lda-v2-") and plain.tuning_id.startswith("lda-v1-")
    plain.save(tmp_path / "old.npy")  # a projection learned before objectness still loads, without it
    assert tuning.Projection.load(tmp_path / "old.npy", dim=5).objectness is None
    with pytest.raises(ValueError):
        tuning.Projection.load(tmp_path / "p.npy", dim=3)


def test_a_map_layer_narrower_than_the_vector_is_weighed_by_the_vectors_last_dimensions():
    # Lite0's map layer is its detail layer: 672 channels, the last 672 of the vector's 1280
    rng = np.random.default_rng(5)
    features = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    weights = np.array([0.0, 0.0, 1.0, -1.0, 0.5], np.float32)  # two leading dimensions the map does not have
    np.testing.assert_allclose(objectness.product_maps(features, weights), features @ weights[2:], atol=1e-6)


def test_objectness_of_a_narrower_map_layer_is_stored_aligned_with_the_vectors_last_dimensions():
    fake = FakeEmbedder()
    channels, dim = 100, fake.dim

    def features(batch):
        vectors, layer = fake.embed_with_features(batch)
        return vectors, np.ascontiguousarray(layer[..., -channels:])  # a map layer of the last channels only

    rng = np.random.default_rng(6)
    packshots = [np.asarray(_scene(rng)[0]) for _ in range(6)]
    projection = tuning.learn_from_catalogue(fake.embed, packshots, embed_features=features)
    assert projection.objectness is not None and projection.objectness.shape == (dim,)
    assert not projection.objectness[: dim - channels].any() and projection.objectness[dim - channels :].any()


def _scene(rng, size: int = 224) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A light background, a small red product somewhere, a large dark slab somewhere else; and the product's box."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(215, 250, 3)))
    side = int(rng.integers(40, 70))
    left = int(rng.integers(0, size // 2 - side))
    top = int(rng.integers(0, size - side))
    image.paste((int(rng.integers(170, 230)), 20, 20), (left, top, left + side, top + side))
    slab = int(rng.integers(size // 2 + 5, size - 60))
    image.paste(tuple(int(v) for v in rng.integers(10, 40, 3)), (slab, 20, min(size, slab + 100), size - 20))
    return np.asarray(image), (left / size, top / size, side / size, side / size)


def test_locate_forms_its_boxes_on_the_product_map_learned_from_views():
    fake = FakeEmbedder()
    rng = np.random.default_rng(4)
    views, boxes = zip(*(_scene(rng) for _ in range(24)))
    stats = objectness.ObjectnessStats()
    stats.add(fake.embed_with_features(np.stack(views))[1], np.array(boxes))
    weights = stats.solve()

    image, true_box = _scene(np.random.default_rng(99))
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    data = out.getvalue()
    array, size = load_with_size(data, fake.input_size)
    photo = locate.Photo(data, array, size)

    def first_box_centre_x(regions):
        box = regions[1].box
        return box[0] + box[2] / 2

    (plain,) = locate.locate(fake, [photo])
    (learned,) = locate.locate(fake, [photo], objectness=weights)
    assert plain[0].box is None and learned[0].box is None  # the whole photo always comes first
    assert first_box_centre_x(plain) > 0.5  # the channel mean found the dark slab
    assert abs(first_box_centre_x(learned) - (true_box[0] + true_box[2] / 2)) < 0.1  # the product map: the product
