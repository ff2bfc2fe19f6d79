"""The calibrated match scale: stored at publish time, read by the pages, raw values kept in the API."""

from __future__ import annotations

import io

import numpy as np

from indexer import generation
from indexer.calibration import match_label, match_scale, match_score


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_scale_quantiles_follow_neighbour_ranks():
    vectors = _unit(np.random.default_rng(3).normal(size=(300, 16)))
    scale = match_scale(vectors, sample=100)
    sims = scale["similarity"]
    assert set(sims) == {"1", "10", "50"} and scale["sample"] == 100
    medians = [sims[rank][1] for rank in ("50", "10", "1")]
    assert medians == sorted(medians) and medians[0] < medians[2]
    # check one value by brute force: the median similarity of the nearest other item
    exact = vectors @ vectors.T
    np.fill_diagonal(exact, -np.inf)
    full = match_scale(vectors, sample=300)
    assert full["similarity"]["1"][1] == round(float(np.median(exact.max(axis=1))), 6)


def test_scores_and_labels_order_matches():
    vectors = _unit(np.random.default_rng(4).normal(size=(200, 16)))
    scale = match_scale(vectors)
    sims = scale["similarity"]
    typical_first, typical_fiftieth = sims["1"][1], sims["50"][1]
    assert match_score(typical_first, scale) == 75.0
    assert match_score(typical_fiftieth, scale) == 20.0
    assert match_score(1.0, scale) == 100.0 and match_score(-1.0, scale) == 0.0
    assert match_label(match_score(typical_first, scale)) == "Very close match"
    assert match_label(match_score(typical_fiftieth, scale)) == "Related"
    assert match_label(match_score(-1.0, scale)) == "Loosely related"
    assert match_label(None, same_photo=True) == "Same photo"
    assert match_score(0.5, None) is None and match_label(None) is None


def test_tiny_catalogues_get_a_clipped_or_no_scale():
    assert match_scale(_unit(np.eye(2, 8))) is None
    scale = match_scale(_unit(np.random.default_rng(5).normal(size=(5, 8))))
    assert set(scale["similarity"]) == {"1", "4"}
    assert 0.0 <= match_score(0.2, scale) <= 100.0


def test_the_published_manifest_carries_the_scale(fake_index):
    manifest = generation.read_manifest(generation.current_generation(fake_index.index_dir))
    scale = manifest["match_scale"]
    assert scale["version"] == 1 and scale["sample"] == 144


def test_pages_show_rank_and_label_while_the_api_keeps_raw_values(client, demo_catalogue):
    photo = (demo_catalogue / "23.jpg").read_bytes()
    page = client.post("/search", data={"image": (io.BytesIO(photo), "23.jpg"), "k": "8"},
                       content_type="multipart/form-data")
    body = page.get_data(as_text=True)
    assert '<span class="rank" aria-label="Rank 1">#1</span>' in body
    assert '<span class="rank" aria-label="Rank 8">#8</span>' in body
    assert "Same photo" in body  # the photo itself, at distance 0
    assert "% similar" not in body
    api = client.post("/api/search", data={"image": (io.BytesIO(photo), "23.jpg")}, content_type="multipart/form-data")
    result = api.get_json()["queries"][0]["results"][0]
    assert "match_label" not in result and "rank" not in result
    assert result["match"]["label"] == "Same photo"
    assert result["distance"] < 1e-3 and result["similarity"] > 0.999
