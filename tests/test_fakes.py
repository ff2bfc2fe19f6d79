"""The fast tier's fake embedder (``tests/fakes.py``): the production interface, and features worth testing with."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import time

import numpy as np
import pytest
from PIL import Image

from indexer import models
from indexer.config import PROJECT_ROOT
from indexer.images import load_for_model
from indexer.model import Embedder, resolve_weights
from indexer.plan import key_for
from indexer.runtimes import OpenVinoEmbedder
from tests.fakes import FAKE_WEIGHTS_ID, FakeEmbedder


def _public_methods(cls) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}


@pytest.mark.parametrize("production", [Embedder, OpenVinoEmbedder], ids=lambda cls: cls.__name__)
def test_the_fake_has_every_method_of_the_production_embedders(production):
    missing = _public_methods(production) - _public_methods(FakeEmbedder)
    assert missing == set(), f"tests/fakes.py lacks {sorted(missing)}: add them so the fast tier keeps up"
    for name in _public_methods(production):
        fake, real = inspect.signature(getattr(FakeEmbedder, name)), inspect.signature(getattr(production, name))
        assert list(fake.parameters) == list(real.parameters), name


def test_the_fake_is_an_embedder_of_the_production_interface(fake_embedder):
    from indexer.embedder import Embedder as Interface

    assert isinstance(fake_embedder, Interface)  # every member of the protocol is there
    for name in Interface.__annotations__:
        assert getattr(fake_embedder, name) is not None, name


def test_the_fake_has_the_attributes_the_build_and_the_service_read(fake_embedder):
    assert fake_embedder.choice.random  # no weights file, as FASHION_WEIGHTS=none: the banner shows
    assert fake_embedder.choice.model == models.DEFAULT_MODEL
    assert fake_embedder.spec == models.get_spec(models.DEFAULT_MODEL)
    assert (fake_embedder.model_id, fake_embedder.dim) == (fake_embedder.spec.model_id, fake_embedder.spec.dim)
    assert fake_embedder.weights_id == FAKE_WEIGHTS_ID
    assert (fake_embedder.runtime, fake_embedder.vector_space) == ("fake", "fp32")
    key = key_for(fake_embedder)
    assert key["weights_id"] == FAKE_WEIGHTS_ID and key["model"] == fake_embedder.model_id
    # never mistaken for the real random weights: an index of one is incompatible with the other
    assert key != key_for(resolve_weights("none"))


def test_vectors_and_maps_have_the_real_shapes_and_are_deterministic(fake_embedder, demo_catalogue):
    batch = np.stack([load_for_model(demo_catalogue / f"{i}.jpg") for i in (1, 2, 3)])
    vectors, maps = fake_embedder.embed_with_maps(batch)
    assert vectors.shape == (3, fake_embedder.dim) and vectors.dtype == np.float32
    assert maps.shape == (3, 7, 7) and maps.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors, FakeEmbedder().embed(batch))  # another instance, the same vectors
    np.testing.assert_array_equal(fake_embedder.embed_one(batch[1]), vectors[1])
    assert fake_embedder.embed(batch[:0]).shape == (0, fake_embedder.dim)
    fake_embedder.warm_up()  # a blank white image: still a finite unit vector
    white = fake_embedder.embed_one(np.full_like(batch[0], 255))
    assert np.isfinite(white).all() and abs(np.linalg.norm(white) - 1) < 1e-5


@pytest.mark.parametrize(
    "bad", [np.zeros((1, 224, 224, 3), np.float32), np.zeros((1, 200, 224, 3), np.uint8), np.zeros((224, 224))]
)
def test_only_model_ready_images_are_taken(fake_embedder, bad):
    with pytest.raises(ValueError, match="uint8"):
        fake_embedder.embed(bad)


@pytest.mark.parametrize(("size", "cells"), [(260, 9), (320, 10)])
def test_the_input_size_and_dimension_come_from_the_model_spec(monkeypatch, size, cells):
    other = dataclasses.replace(models.get_spec("resnet50"), name="other-test", input_size=size)
    monkeypatch.setitem(models.MODELS, "other-test", other)
    fake = FakeEmbedder(model="other-test")
    assert (fake.name, fake.input_size, fake.dim) == ("other-test", size, 2048)
    vectors, maps = fake.embed_with_maps(np.zeros((2, size, size, 3), np.uint8))
    assert vectors.shape == (2, 2048) and maps.shape == (2, cells, cells)  # a stride-32 backbone's map
    with pytest.raises(ValueError):
        fake.embed(np.zeros((1, 224, 224, 3), np.uint8))  # the default model's size is not this one's


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_it_behaves_like_a_weak_real_model(fake_embedder, demo_catalogue):
    """A re-encoded photo stays near itself, other products are far, and neighbours tend to share a type."""
    with open(demo_catalogue / "styles.csv", newline="") as handle:
        types = {row["id"]: row["articleType"] for row in csv.DictReader(handle)}
    ids = sorted(types, key=int)
    vectors = fake_embedder.embed(np.stack([load_for_model(demo_catalogue / f"{i}.jpg") for i in ids]))
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest_other = np.sqrt(np.maximum(2 - 2 * similarity.max(axis=1), 0))
    for item_id in ("5", "77"):
        again = fake_embedder.embed_one(load_for_model(_jpeg(Image.open(demo_catalogue / f"{item_id}.jpg"), 85)))
        assert np.linalg.norm(again - vectors[ids.index(item_id)]) < 0.5 * nearest_other.min()
    top5 = np.argsort(-similarity, axis=1)[:, :5]
    precision = np.mean([[types[ids[j]] == types[ids[i]] for j in top5[i]] for i in range(len(ids))])
    assert precision > 0.5  # eight equally common types: chance is about 0.12


def test_the_map_lights_up_the_product_on_a_plain_background(fake_embedder, demo_catalogue):
    _, maps = fake_embedder.embed_with_maps(load_for_model(demo_catalogue / "13.jpg"))
    amap = maps[0]
    border = np.concatenate([amap[0], amap[-1], amap[:, 0], amap[:, -1]])
    assert amap[2:5, 2:5].mean() > 5 * border.mean() + 0.05


def test_a_batch_of_32_is_fast(fake_embedder, demo_catalogue):
    batch = np.stack([load_for_model(demo_catalogue / f"{i}.jpg") for i in range(1, 33)])
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        fake_embedder.embed_with_maps(batch)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.5, timings  # tens of ms on a small machine: far below the real model


def test_production_code_never_uses_the_fake():
    sources = [PROJECT_ROOT / "app.py", *sorted((PROJECT_ROOT / "indexer").rglob("*.py")),
               *sorted((PROJECT_ROOT / "web").rglob("*.py"))]
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in sources
        if any(word in path.read_text(encoding="utf-8") for word in ("tests.fakes", "FakeEmbedder"))
    ]
    assert offenders == []
    assert any(path.name == "service.py" for path in sources)  # control: production files were read
