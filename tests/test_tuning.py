"""Catalogue tuning: the projection learned at build time, how it is stored, reused and switched off."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from indexer import generation, tuning
from indexer.build import build_index
from indexer.evaluate import compare_indexes
from indexer.options import SearchOptions
from indexer.query import QueryPipeline, decode_photo
from indexer.search import Searcher


def _views(rng, products: int, views: int, dim: int = 64):
    """Unit vectors where a product's identity lives in a faint subspace and each view adds a strong nuisance."""
    identity = rng.normal(size=(products, dim)) * np.r_[np.ones(8), np.zeros(dim - 8)] * 0.3
    nuisance_axes = rng.normal(size=(dim, dim)) * np.r_[np.zeros(8), np.ones(dim - 8)]
    rows, labels = [], []
    for product in range(products):
        for _ in range(views):
            rows.append(identity[product] + rng.normal(size=dim) @ nuisance_axes * 0.05 + rng.normal(size=dim) * 0.01)
            labels.append(product)
    rows = np.asarray(rows)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), np.asarray(labels)


def _recall_at_1(vectors: np.ndarray, labels: np.ndarray) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return float(np.mean(labels[np.argmax(sims, axis=1)] == labels))


def test_learning_pulls_views_of_one_product_together():
    rng = np.random.default_rng(0)
    train, train_labels = _views(rng, 60, 12)
    projection = tuning.learn(train, train_labels, dims=16)
    assert projection.dim == 16 and projection.model_dim == 64
    # more views of the same products (the generator redraws the same identities from seed 0)
    fresh, fresh_labels = _views(np.random.default_rng(0), 60, 16)
    raw, tuned = _recall_at_1(fresh, fresh_labels), _recall_at_1(projection.apply(fresh), fresh_labels)
    assert tuned > raw + 0.3, (raw, tuned)
    np.testing.assert_allclose(np.linalg.norm(projection.apply(fresh), axis=1), 1.0, atol=1e-5)


def test_input_scale_is_folded_into_the_projection():
    vectors, labels = _views(np.random.default_rng(3), 30, 4)
    scale = np.r_[np.ones(40), np.full(24, 8.0)]
    folded = tuning.learn(vectors, labels, dims=8, input_scale=scale)
    # learning from the scaled vectors and applying to them is what the folded projection does to raw ones
    scaled = tuning.learn(vectors * scale, labels, dims=8)
    np.testing.assert_allclose(folded.apply(vectors), scaled.apply(vectors * scale), atol=1e-5)
    assert folded.model_dim == 64
    # and the scale matters: the same vectors unscaled learn another projection
    plain = tuning.learn(vectors, labels, dims=8)
    assert np.abs(plain.apply(vectors) - folded.apply(vectors)).max() > 1e-2


def test_a_projection_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(2)
    vectors, labels = _views(rng, 20, 3)
    projection = tuning.learn(vectors, labels, dims=8)
    projection.save(tmp_path / "p.npy")
    again = tuning.Projection.load(tmp_path / "p.npy")
    assert again.tuning_id == projection.tuning_id
    np.testing.assert_array_equal(again.apply(vectors), projection.apply(vectors))
    with pytest.raises(ValueError):
        tuning.Projection.from_array(np.full((4, 3), np.nan, np.float32))
    with pytest.raises(ValueError):
        tuning.learn(vectors[:4], np.array([0, 0, 1, 1]))  # two products teach nothing


def _read_pickle(path):
    with open(path, "rb") as handle:
        return pickle.load(handle)


def searcher_objectness_shape(settings):
    objectness = Searcher.for_settings(settings).projection.objectness
    return None if objectness is None else objectness.shape


def _article_types(catalogue) -> dict[str, str]:
    header, *rows = (catalogue / "styles.csv").read_text().splitlines()
    column = header.split(",").index("articleType")
    return {row.split(",")[0]: row.split(",")[column] for row in rows}


def test_a_tuned_build_keeps_the_model_vectors_and_searches_the_tuned_ones(small_settings, fake_embedder,
                                                                           monkeypatch):
    learned, scales = [], []
    learn = tuning.learn

    def spy(vectors, products, *args, **kwargs):
        learned.append(kwargs.get("labels"))
        scales.append(kwargs.get("input_scale"))
        return learn(vectors, products, *args, **kwargs)

    monkeypatch.setattr(tuning, "learn", spy)
    settings = small_settings.replace(tuning=True)
    report = build_index(settings, fake_embedder)
    # the tuning's share of the build is reported apart, so embedding throughput can be read without it
    assert 0 < report.tuning_s < report.elapsed_s
    assert report.images_per_s_untuned > report.images_per_s
    assert "tuning" in report.summary() and report.to_dict()["tuning_s"] > 0
    manifest = generation.read_manifest(generation.current_generation(settings.index_dir))
    assert manifest["tuning"].startswith("lda-v2-")  # with the objectness learned from the same views
    # all 24 products were sampled, each with its articleType from styles.csv: products - 1 directions
    # for products, and kinds - 1 beside them
    (labels,) = learned
    kinds = _article_types(settings.catalogue)
    assert sorted(labels) == sorted(kinds[path.stem] for path in settings.catalogue.glob("*.jpg"))
    assert manifest["dim"] == 23 + len(set(labels)) - 1
    assert searcher_objectness_shape(settings) == (fake_embedder.dim,)
    # learned as the model asks: Lite0 weighs its detail part more in the tuning than in its vector
    np.testing.assert_array_equal(scales[0], fake_embedder.choice.spec.tuning_scale())
    assert manifest["model_dim"] == fake_embedder.dim and manifest["dim"] < fake_embedder.dim
    assert generation.PROJECTION_FILE in manifest["checksums"]
    raw = _read_pickle(settings.index_dir / "embeddings.pkl")
    assert raw.shape == (24, fake_embedder.dim)  # the documented artifact: the model's own vectors
    searcher = Searcher.for_settings(settings)
    assert searcher.embeddings.shape == (24, manifest["dim"])
    np.testing.assert_allclose(searcher.embeddings, searcher.projection.apply(raw), atol=1e-5)
    # two builds may learn one projection up to the signs of its axes: comparing indexes compares the model's vectors
    flipped = Searcher.for_settings(settings)
    flipped.embeddings = -np.asarray(flipped.embeddings)  # every axis flipped: the same distances
    compared = compare_indexes(searcher, flipped, k=5)
    assert (compared["top_k_agreement"], compared["identical_lists"], compared["max_abs_diff"]) == (1.0, 1.0, 0.0)
    # a catalogue photo uploaded as a query still finds itself, at distance 0, through the tuning
    pipeline = QueryPipeline(fake_embedder, searcher)
    data = (settings.catalogue / "7.jpg").read_bytes()
    (result,), _ = pipeline.search_photos([decode_photo(data, "7.jpg")], SearchOptions(k=3))
    first = result.results[0]
    assert searcher.filenames[first.row] == "7.jpg" and first.hit.distance < 1e-3
    assert first.match.label == "Same photo"


@pytest.mark.slow  # three tuned builds
def test_comparing_tuned_indexes_matches_items_by_name_and_sees_a_changed_one(small_settings, fake_embedder,
                                                                             tmp_path):
    settings = small_settings.replace(tuning=True)
    build_index(settings, fake_embedder)
    mine = Searcher.for_settings(settings)

    def tuned_copy(name, change):
        catalogue = tmp_path / name
        shutil.copytree(settings.catalogue, catalogue)
        change(catalogue)
        copy = settings.replace(catalogue=catalogue, index_dir=tmp_path / f"{name}-index")
        build_index(copy, fake_embedder)
        return Searcher.for_settings(copy)

    # one more photo, named to come first: every common item sits one row further down
    shifted = tuned_copy("shifted", lambda c: shutil.copy(c / "5.jpg", c / "0000.jpg"))
    assert shifted.filenames[0] == "0000.jpg"
    found = compare_indexes(mine, shifted, k=5)
    assert found["common_items"] == len(mine) and found["max_abs_diff"] == 0.0
    # one photo replaced by another: its vector differs, the others do not
    changed = tuned_copy("changed", lambda c: shutil.copy(c / "5.jpg", c / "3.jpg"))
    assert compare_indexes(mine, changed, k=5)["max_abs_diff"] > 0.01


def test_tuning_off_gives_the_model_vectors_exactly(small_settings, fake_embedder):
    report = build_index(small_settings.replace(tuning=False), fake_embedder)
    assert report.tuning_s == 0 and "tuning" not in report.summary()
    manifest = generation.read_manifest(generation.current_generation(small_settings.index_dir))
    assert manifest["tuning"] is None and manifest["dim"] == manifest["model_dim"] == fake_embedder.dim
    assert generation.PROJECTION_FILE not in manifest["checksums"]
    searcher = Searcher.for_settings(small_settings)
    assert searcher.projection is None
    raw = _read_pickle(small_settings.index_dir / "embeddings.pkl")
    np.testing.assert_array_equal(np.asarray(searcher.embeddings), raw)
    np.testing.assert_array_equal(searcher.tune(raw[:2]), raw[:2])  # queries go through unchanged


@pytest.mark.slow  # several builds, each learning from 64 composed views
def test_switching_tuning_republishes_without_embedding_the_catalogue(small_settings, fake_counting_embedder):
    off = small_settings.replace(tuning=False)
    build_index(off, fake_counting_embedder)
    assert fake_counting_embedder.images == 24
    on = small_settings.replace(tuning=True, tuning_products=16)
    report = build_index(on, fake_counting_embedder)
    # only the tuning views were embedded: 16 products, 3 views each (their packshots are the catalogue's)
    assert fake_counting_embedder.images == 24 + 16 * tuning.SCENE_VIEWS
    assert report.reused == 24
    tuned_id = generation.read_manifest(generation.current_generation(on.index_dir))["tuning"]
    assert tuned_id
    # nothing changed: up to date, the tuning kept
    assert build_index(on, fake_counting_embedder).up_to_date
    # one changed file (under a tenth of the catalogue) keeps the learned projection, and spends no time on it
    photo = on.catalogue / "3.jpg"
    photo.write_bytes(photo.read_bytes() + b"\0")
    before = fake_counting_embedder.images
    kept = build_index(on, fake_counting_embedder)
    assert fake_counting_embedder.images == before + 1
    assert kept.tuning_s == 0 and "tuning" not in kept.summary()
    assert generation.read_manifest(generation.current_generation(on.index_dir))["tuning"] == tuned_id
    # --retune learns it again (the views are embedded again)
    before = fake_counting_embedder.images
    build_index(on, fake_counting_embedder, retune=True)
    assert fake_counting_embedder.images == before + 16 * tuning.SCENE_VIEWS
    # and off again: the model's vectors, exactly, with nothing embedded
    before = fake_counting_embedder.images
    build_index(off, fake_counting_embedder)
    assert fake_counting_embedder.images == before
    raw = _read_pickle(off.index_dir / "embeddings.pkl")
    np.testing.assert_array_equal(np.asarray(Searcher.for_settings(off).embeddings), raw)


@pytest.mark.slow  # several builds, each learning from 64 composed views
def test_a_catalogue_growing_by_small_builds_learns_its_tuning_again(small_settings, fake_counting_embedder,
                                                                     demo_catalogue):
    """Each build adds under a tenth, but once the catalogue is a tenth larger than when it was learned, relearn."""
    settings = small_settings.replace(tuning=True, tuning_products=16)
    build_index(settings, fake_counting_embedder)  # 24 items, learned from them
    views = 16 * tuning.SCENE_VIEWS  # what learning embeds besides the new photos
    learned = []
    for new in ((25, 26), (27, 28)):
        for image_id in new:
            shutil.copy2(demo_catalogue / f"{image_id}.jpg", settings.catalogue / f"{image_id}.jpg")
        before = fake_counting_embedder.images
        build_index(settings, fake_counting_embedder)
        learned.append(fake_counting_embedder.images - before == len(new) + views)
    assert learned == [False, True]  # 26 is within a tenth of 24; 28 is not
    manifest = generation.read_manifest(generation.current_generation(settings.index_dir))
    assert manifest["tuning_items"] == 28


class _VectorsOnly:
    """An embedder without ``embed_with_features``, as one written before objectness existed."""

    def __init__(self, inner):
        self._inner = inner

    def embed(self, batch):
        return self._inner.embed(batch)

    def __getattr__(self, name):
        if name == "embed_with_features":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.slow  # three builds, two of them learning from 64 composed views
def test_a_tuning_learned_without_objectness_is_learned_again_once(small_settings, fake_counting_embedder):
    settings = small_settings.replace(tuning=True, tuning_products=16)
    build_index(settings, _VectorsOnly(fake_counting_embedder))
    old = generation.read_manifest(generation.current_generation(settings.index_dir))["tuning"]
    assert old.startswith("lda-v1-")  # control: learned without objectness
    photo = settings.catalogue / "3.jpg"  # a small change, which would keep an up-to-date tuning
    photo.write_bytes(photo.read_bytes() + b"\0")
    before = fake_counting_embedder.images
    build_index(settings, fake_counting_embedder)
    assert fake_counting_embedder.images == before + 1 + 16 * tuning.SCENE_VIEWS  # learned again
    new = generation.read_manifest(generation.current_generation(settings.index_dir))["tuning"]
    assert new.startswith("lda-v2-") and Searcher.for_settings(settings).projection.objectness is not None
    photo.write_bytes(photo.read_bytes() + b"\0")
    before = fake_counting_embedder.images
    build_index(settings, fake_counting_embedder)
    assert fake_counting_embedder.images == before + 1  # and kept from then on


@pytest.mark.slow  # three builds, two of them learning from composed views
def test_a_tuning_learned_by_an_older_recipe_is_learned_again_once(small_settings, fake_counting_embedder,
                                                                   monkeypatch):
    settings = small_settings.replace(tuning=True, tuning_products=16)
    build_index(settings, fake_counting_embedder)
    current = lambda: generation.read_manifest(generation.current_generation(settings.index_dir))  # noqa: E731
    assert current()["tuning_recipe"] == tuning.RECIPE
    monkeypatch.setattr(tuning, "RECIPE", tuning.RECIPE + 1)  # a newer way of learning it ships
    photo = settings.catalogue / "3.jpg"  # a small change, which would keep an up-to-date tuning
    photo.write_bytes(photo.read_bytes() + b"\0")
    before = fake_counting_embedder.images
    build_index(settings, fake_counting_embedder)
    assert fake_counting_embedder.images == before + 1 + 16 * tuning.SCENE_VIEWS  # learned again
    assert current()["tuning_recipe"] == tuning.RECIPE
    photo.write_bytes(photo.read_bytes() + b"\0")
    before = fake_counting_embedder.images
    build_index(settings, fake_counting_embedder)
    assert fake_counting_embedder.images == before + 1  # and kept from then on


def test_learning_reads_the_packshots_vectors_instead_of_embedding_them(fake_embedder):
    rng = np.random.default_rng(2)
    shots = [np.full((224, 224, 3), 255, np.uint8) for _ in range(4)]
    for shot in shots:
        top, left = rng.integers(20, 120, 2)
        shot[top : top + 80, left : left + 60] = rng.integers(0, 200, 3)
    given = fake_embedder.embed(np.stack(shots))
    counted = []

    def embed(batch):
        counted.append(len(batch))
        return fake_embedder.embed(batch)

    vectors, products = tuning.tuning_views(embed, shots, views=2, packshot_vectors=given)
    assert sum(counted) == 4 * 2  # the scenes only
    np.testing.assert_array_equal(vectors[:4], given)
    assert products.tolist() == [0, 1, 2, 3, 0, 0, 1, 1, 2, 2, 3, 3]
    again, _ = tuning.tuning_views(fake_embedder.embed, shots, views=2)  # embedding them gives the same
    np.testing.assert_allclose(again, vectors, atol=1e-6)


def _kind_axes(rng, kinds: int, dim: int = 64) -> np.ndarray:
    return rng.normal(size=(kinds, dim)) * np.r_[np.zeros(8), np.ones(8), np.zeros(dim - 16)] * 0.15


def _kinds(rng, axes: np.ndarray, per_kind: int, views: int):
    """Views whose product identity is strong in 8 dims and whose kind (``axes``) faint in 8 others, under nuisance."""
    kinds, dim = axes.shape
    rows, products, kind_of = [], [], []
    for product in range(kinds * per_kind):
        kind = product % kinds
        identity = rng.normal(size=dim) * np.r_[np.ones(8), np.zeros(dim - 8)] * 0.3
        identity += rng.normal(size=dim) * np.r_[np.zeros(8), np.ones(8), np.zeros(dim - 16)] * 0.1
        for _ in range(views):
            noise = rng.normal(size=dim) * np.r_[np.zeros(16), np.ones(dim - 16)] * 0.1
            rows.append(identity + axes[kind] + noise)
            products.append(product)
        kind_of.append(f"kind {kind}")
    rows = np.asarray(rows)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), np.asarray(products), kind_of


def _kind_precision(vectors: np.ndarray, kinds: list[str], k: int = 5) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    kinds = np.asarray(kinds)
    return float(np.mean(kinds[top] == kinds[:, None]))


def test_kinds_from_styles_group_products_whose_labels_it_never_saw():
    rng = np.random.default_rng(4)
    axes = _kind_axes(rng, 6)
    views, products, kind_of = _kinds(rng, axes, per_kind=20, views=4)
    instance = tuning.learn(views, products, dims=24)
    with_kinds = tuning.learn(views, products, dims=24, labels=kind_of)
    assert instance.dim == 24 and with_kinds.dim == 24 + 5  # one direction fewer than kinds
    # other products of the same kinds, one view each, as a catalogue's packshots
    unseen, _, unseen_kinds = _kinds(rng, axes, per_kind=20, views=1)
    before = _kind_precision(instance.apply(unseen), unseen_kinds)
    after = _kind_precision(with_kinds.apply(unseen), unseen_kinds)
    assert after > before + 0.1, (before, after)
    # products still find their own views
    assert _recall_at_1(with_kinds.apply(views), products) >= _recall_at_1(instance.apply(views), products) - 0.05


def test_kinds_need_two_products_each_and_most_products_labelled():
    assert tuning.usable_labels(["a", "a", "b", "b", "c", "c", "d"]).tolist() == ["a", "a", "b", "b", "c", "c", ""]
    assert tuning.usable_labels(["a", "a", "b", "b", "c", "c", ""]) is not None
    assert tuning.usable_labels(["a", "a", "b", "b", "c", ""]) is None  # "c" alone: two kinds left
    assert tuning.usable_labels(["a", "a", "b", "b", "c", "c", "", "", "", "", "", "", ""]) is None  # most unlabelled
    rng = np.random.default_rng(5)
    views, products, _ = _kinds(rng, _kind_axes(rng, 2), per_kind=10, views=3)
    two_kinds = tuning.learn(views, products, dims=8, labels=["x", "y"] * 10)
    np.testing.assert_array_equal(two_kinds.matrix, tuning.learn(views, products, dims=8).matrix)


def test_a_small_catalogue_relearns_once_more_products_would_give_it_more_directions(tmp_path):
    from types import SimpleNamespace

    from indexer.build import _still_fits
    from indexer.config import Settings

    settings = Settings.from_env(catalogue=str(tmp_path), index_dir=str(tmp_path / "index"), tuning=True,
                                 tuning_products=800)
    plan = SimpleNamespace(to_embed=[], removed=0, files=list(range(105)))  # a build that embeds nothing
    rng = np.random.default_rng(0)
    # learned from 100 products: 99 product directions, and 19 more for 20 kinds
    projection = tuning.Projection(np.zeros(128, np.float32), rng.normal(size=(128, 118)).astype(np.float32),
                                   learned_from=100, kind_dims=19)
    assert not _still_fits(projection, plan, 105, settings)  # 104 product directions are there to learn
    plan.files = list(range(100))
    assert _still_fits(projection, plan, 100, settings)


def test_objectness_learns_from_whole_scenes_only(fake_embedder):
    shots = [np.full((224, 224, 3), 255, np.uint8) for _ in range(4)]
    for i, shot in enumerate(shots):
        shot[40 + 10 * i : 160, 60:150] = (40 * i, 200 - 30 * i, 90)
    stats = tuning.ObjectnessStats()
    tuning.tuning_views(fake_embedder.embed, shots, views=3, crops=1, batch=5,
                        embed_features=fake_embedder.embed_with_features, objectness=stats)
    assert stats.views == 4 * 2  # two whole scenes of each product; its crop is not a scene to locate in
