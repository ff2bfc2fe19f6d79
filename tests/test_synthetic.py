"""benchmarks.synthetic: neighbour-distance medians and the calibrated synthetic catalogue, on toy data."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from benchmarks.synthetic import SyntheticCatalogue, neighbour_distance_medians

DIM = 64
CLUSTERS = 30
PER_CLUSTER = 20


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _toy_real(seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """600 unit vectors in 64 dims: 30 labelled clusters whose spreads range from tight to loose."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((CLUSTERS, DIM)))
    spreads = np.linspace(0.1, 0.5, CLUSTERS)  # norm of a member's offset from its centre
    rows, labels = [], []
    for c in range(CLUSTERS):
        offsets = rng.standard_normal((PER_CLUSTER, DIM)) * spreads[c] / np.sqrt(DIM)
        rows.append(centres[c] + offsets)
        labels += [f"type-{c}"] * PER_CLUSTER
    return _unit(np.concatenate(rows)), labels


def _brute_force(vectors: np.ndarray, k: int) -> float:
    """Median k-th neighbour distance by full float64 distances and a full sort."""
    v = vectors.astype(np.float64)
    dist = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    return float(np.median(np.sort(dist, axis=1)[:, k - 1]))


@pytest.fixture(scope="module")
def toy():
    vectors, labels = _toy_real()
    return vectors, labels, SyntheticCatalogue(vectors, labels, seed=11)


def test_medians_match_brute_force(monkeypatch):
    import benchmarks.synthetic as synthetic

    vectors, _ = _toy_real(seed=3)
    vectors = vectors[::3]  # 200 items
    # small blocks, so the block boundaries (and the self-exclusion inside each) are exercised
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 64)
    got = neighbour_distance_medians(vectors, ks=(1, 3, 10))
    for k in (1, 3, 10):
        assert got[k] == pytest.approx(_brute_force(vectors, k), abs=1e-4)
    assert got[1] < got[3] < got[10]
    with pytest.raises(ValueError):
        neighbour_distance_medians(vectors, ks=(len(vectors),))


def test_medians_count_duplicates_but_not_self():
    vectors = _unit(np.random.default_rng(0).standard_normal((50, 16)))
    doubled = np.concatenate([vectors, vectors])
    assert neighbour_distance_medians(doubled, ks=(1,))[1] == pytest.approx(0.0, abs=1e-3)
    assert neighbour_distance_medians(vectors, ks=(1,))[1] > 0.5


def test_calibrated_distances_match_real(toy):
    vectors, _, catalogue = toy
    report = catalogue.report()
    assert set(report) == {
        "real_nn1_median", "synthetic_nn1_median", "real_nn10_median", "synthetic_nn10_median", "alpha"
    }
    assert report["real_nn1_median"] == pytest.approx(_brute_force(vectors, 1), abs=1e-3)
    assert report["synthetic_nn1_median"] == pytest.approx(report["real_nn1_median"], rel=0.15)
    assert 0 < report["synthetic_nn10_median"] and report["real_nn10_median"] > report["real_nn1_median"]
    assert 0 < catalogue.alpha < 2 and report["alpha"] == round(catalogue.alpha, 4)
    assert catalogue.real_medians[1] == pytest.approx(report["real_nn1_median"], abs=1e-4)
    # another fresh sample: different draws, a similar figure
    other = catalogue.report(sample_seed=2)
    assert other["synthetic_nn1_median"] != report["synthetic_nn1_median"]
    assert other["synthetic_nn1_median"] == pytest.approx(report["real_nn1_median"], rel=0.15)


def _with_alpha(catalogue: SyntheticCatalogue, alpha: float) -> SyntheticCatalogue:
    changed = copy.copy(catalogue)
    changed.alpha = alpha
    return changed


def test_uncalibrated_noise_would_miss(toy):
    """Calibration matters: with no noise, or twice the noise, the toy's NN1 median is far off."""
    _, _, catalogue = toy
    real = catalogue.real_medians[1]
    for alpha in (0.0, 2 * catalogue.alpha):
        assert abs(_with_alpha(catalogue, alpha).report()["synthetic_nn1_median"] - real) > 0.15 * real


def test_rows_are_deterministic_unit_float32(toy):
    vectors, _, catalogue = toy
    rows, sources = catalogue.rows(4096, 4096 + 300)
    again, again_sources = catalogue.rows(4096, 4096 + 300)
    assert rows.dtype == np.float32 and rows.shape == (300, DIM)
    assert sources.dtype == np.int64 and sources.shape == (300,)
    np.testing.assert_array_equal(rows, again)
    np.testing.assert_array_equal(sources, again_sources)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert sources.min() >= 0 and sources.max() < len(vectors)
    other, _ = catalogue.rows(0, 300)
    assert not np.allclose(rows, other)
    # same seed, same catalogue
    twin = SyntheticCatalogue(vectors, toy[1], seed=11)
    np.testing.assert_array_equal(twin.rows(0, 300)[0], other)
    assert catalogue.rows(5, 5)[0].shape == (0, DIM)


def test_synthetic_rows_stay_in_their_source_group(toy):
    vectors, labels, catalogue = toy
    rows, sources = catalogue.rows(0, 1000)
    nearest_real = np.argmax(rows @ vectors.T, axis=1)
    labels = np.array(labels)
    same = np.mean(labels[nearest_real] == labels[sources])
    assert same > 0.8


def test_partners_share_the_source_label():
    """Without noise, a synthetic row lies in the span of its source's label group, never across groups."""
    rng = np.random.default_rng(4)
    blocks, per_label, width = 16, 12, 4  # label c lives on coordinates 4c..4c+3 only
    vectors = np.zeros((blocks * per_label, blocks * width), dtype=np.float32)
    labels = []
    for c in range(blocks):
        rows = slice(c * per_label, (c + 1) * per_label)
        vectors[rows, c * width:(c + 1) * width] = rng.uniform(0.1, 1.0, (per_label, width))
        labels += [f"type-{c}"] * per_label
    vectors = _unit(vectors)
    catalogue = SyntheticCatalogue(vectors, labels, seed=3)
    assert catalogue.alpha > 0
    rows, sources = _with_alpha(catalogue, 0.0).rows(0, 2000)
    home = np.zeros_like(rows, dtype=bool)
    for row, source in enumerate(sources):
        block = source // per_label
        home[row, block * width:(block + 1) * width] = True
    assert np.abs(rows[~home]).max() == 0.0
    # and the rows are mixes, not copies of the source
    assert np.mean(np.abs(rows - vectors[sources]).max(axis=1) > 1e-3) > 0.9


def test_unlabelled_rows_are_only_perturbed():
    vectors, labels = _toy_real(seed=5)
    labels = [None if i % 2 else "" for i in range(len(labels))]
    catalogue = SyntheticCatalogue(vectors, labels, seed=1)
    # each unlabelled row is a group of its own: without noise a synthetic row is its source exactly
    rows, sources = _with_alpha(catalogue, 0.0).rows(0, 500)
    np.testing.assert_allclose(rows, vectors[sources], atol=1e-6)
    rows, sources = catalogue.rows(0, 500)
    assert np.mean(np.argmax(rows @ vectors.T, axis=1) == sources) > 0.8
    assert catalogue.report()["synthetic_nn1_median"] == pytest.approx(catalogue.real_medians[1], rel=0.15)


def test_rejects_mismatched_labels():
    vectors, labels = _toy_real()
    with pytest.raises(ValueError):
        SyntheticCatalogue(vectors, labels[:-1], seed=1)
