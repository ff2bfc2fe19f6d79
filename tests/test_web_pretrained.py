"""A fresh install's defaults: real ImageNet features from the shipped EfficientNet-Lite0, no banner."""

from __future__ import annotations

import csv
import io

import pytest

from indexer.evaluate import evaluate
from indexer.search import Searcher

pytestmark = pytest.mark.slow  # EfficientNet-Lite0 with its ImageNet weights


def test_status_names_the_model_and_its_weights(pretrained_app):
    status = pretrained_app.test_client().get("/api/status").get_json()
    assert status["state"] == "ready"
    assert (status["model"], status["weights"]) == ("efficientnet-lite0", "imagenet")


def test_no_random_weights_banner(pretrained_app, client):
    page = pretrained_app.test_client().get("/").get_data(as_text=True)
    assert "random weights" not in page
    assert "random weights" in client.get("/").get_data(as_text=True)  # control: the FASHION_WEIGHTS=none app


def _same_label_shares(client, catalogue, colour_weight: str) -> tuple[float, float]:
    """Shares of results (the photo itself left out) with the query's articleType and baseColour."""
    with open(catalogue / "styles.csv", newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    same_type = same_colour = total = 0
    for item_id in ("3", "40", "77", "101", "130"):
        photo = (catalogue / f"{item_id}.jpg").read_bytes()
        form = {"image": (io.BytesIO(photo), "query.jpg"), "k": "6", "colour_weight": colour_weight}
        results = client.post("/api/search", data=form).get_json()["queries"][0]["results"]
        assert results[0]["id"] == item_id  # the photo itself first
        same_type += sum(rows[r["id"]]["articleType"] == rows[item_id]["articleType"] for r in results[1:])
        same_colour += sum(rows[r["id"]]["baseColour"] == rows[item_id]["baseColour"] for r in results[1:])
        total += len(results) - 1
    return same_type / total, same_colour / total


def test_a_shopper_gets_products_of_the_same_type(pretrained_app, pretrained_index):
    client = pretrained_app.test_client()
    shape_type, shape_colour = _same_label_shares(client, pretrained_index.catalogue, "0")
    assert shape_type >= 0.9
    # the default share of colour trades a little of the type for more of the colour
    joined_type, joined_colour = _same_label_shares(client, pretrained_index.catalogue, "")
    assert joined_type >= 0.8 and joined_colour > shape_colour


def test_precision_on_the_demo_catalogue_is_far_above_random_weights(pretrained_index, built_index):
    pretrained = evaluate(Searcher.for_settings(pretrained_index), label="articleType", k=5)
    random = evaluate(Searcher.for_settings(built_index), label="articleType", k=5)
    assert pretrained["model"] == "efficientnet-lite0-gem3-detail-l2" and pretrained["weights_id"] == "imagenet"
    assert pretrained["precision_at_k"] >= 0.9  # random weights: about 0.35
    assert pretrained["precision_at_k"] > random["precision_at_k"] + 0.3


def test_match_labels_tell_the_best_match_from_the_fiftieth(pretrained_index):
    from indexer.calibration import LABELS, match_label, match_score

    searcher = Searcher.for_settings(pretrained_index)
    scale = searcher.manifest["match_scale"]
    order = {label: rank for rank, (_, label) in enumerate(LABELS)}  # 0 is the best label
    better = 0
    rows = range(0, len(searcher), 3)
    for row in rows:
        hits = searcher.search(searcher.vector(row), 50, exclude=row)
        first, fiftieth = (match_label(match_score(h.similarity, scale)) for h in (hits[0], hits[49]))
        assert match_score(hits[0].similarity, scale) >= match_score(hits[49].similarity, scale)
        better += order[first] < order[fiftieth]
    assert better / len(rows) >= 0.8


def test_banner_and_status_follow_the_loaded_model_not_the_settings(pretrained_index, make_web_app):
    # settings say FASHION_WEIGHTS=auto, but this app was handed the random-weights embedder
    app = make_web_app(pretrained_index.replace(weights="auto"))
    status = app.test_client().get("/api/status").get_json()
    assert (status["model"], status["weights"]) == ("efficientnet-lite0", "random-seed1234")
    assert "random weights" in app.test_client().get("/").get_data(as_text=True)
