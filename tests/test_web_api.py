"""The JSON API: ``POST /api/search``, ``GET /api/items/<id>/similar``,
``GET /api/status``, ``GET /healthz``, and JSON errors under ``/api``.

Checks the documented shapes exactly, that an uploaded catalogue photo
finds itself first at distance ~0, one result list per photo in upload
order, k and filter handling, and that every image URL in a result is
fetchable. Runs against the session demo index built with the fake embedder
(``tests/fakes.py``): the API's shapes and checks do not depend on real features.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from indexer.query import BOX_HANDICAP

RESULT_KEYS = {"id", "filename", "distance", "similarity", "image_url", "thumb_url", "metadata", "match"}
JOINED_KEYS = {"colour_similarity", "score"}  # when the search weighed colour
ITEM_KEYS = {"id", "filename", "image_url", "thumb_url", "metadata"}


def post_photos(client, photos, url="/api/search", **fields):
    data = dict(fields)
    data["image"] = [(io.BytesIO(content), name) for content, name in photos]
    return client.post(url, data=data, content_type="multipart/form-data")


def photo(demo_catalogue, item_id) -> tuple[bytes, str]:
    return (demo_catalogue / f"{item_id}.jpg").read_bytes(), f"{item_id}.jpg"


@pytest.fixture(scope="module")
def meta_by_id(demo_catalogue) -> dict[str, dict]:
    with open(demo_catalogue / "styles.csv", newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def assert_error(response, status: int, *, contains: str | None = None) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip()
    if contains:
        assert contains in body["error"]["message"]
    return body["error"]


def assert_result_shape(result: dict) -> None:
    assert set(result) in (RESULT_KEYS, RESULT_KEYS | JOINED_KEYS)
    assert isinstance(result["id"], str) and result["id"]
    assert isinstance(result["distance"], float | int) and result["distance"] >= 0
    assert 0.0 <= result["similarity"] <= 1.0
    assert result["image_url"] == f"/catalogue/{result['filename']}"
    assert result["thumb_url"].startswith("/thumbs/")
    assert isinstance(result["metadata"], dict)
    assert set(result["match"]) == {"score", "label"}


# ---------------------------------------------------------------- POST /api/search


def test_api_search_shape_and_self_match(client, demo_catalogue, meta_by_id):
    response = post_photos(client, [photo(demo_catalogue, 23)])
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert {"queries", "timing_ms"} <= set(body)
    assert len(body["queries"]) == 1
    query = body["queries"][0]
    assert set(query) == {"filename", "crop", "box", "located", "results"}
    assert query["crop"] is None
    assert query["filename"] == "23.jpg"
    assert body["colour_weight"] == 0.2 and body["locate"] is True  # the site's defaults
    results = query["results"]
    assert len(results) == 5
    for result in results:
        assert_result_shape(result)
    first = results[0]
    assert first["id"] == "23" and first["filename"] == "23.jpg"
    assert first["distance"] == pytest.approx(0.0, abs=1e-3)
    assert first["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert first["metadata"]["productDisplayName"] == meta_by_id["23"]["productDisplayName"]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert r["similarity"] == pytest.approx(1 - r["distance"] ** 2 / 2, abs=1e-4)
        # the score the list is ranked by: the joined score, less the handicap where a located box found it
        joined = 0.8 * r["similarity"] + 0.2 * r["colour_similarity"]
        assert min(abs(r["score"] - joined), abs(r["score"] - (joined - BOX_HANDICAP))) < 1e-4
    timing = body["timing_ms"]
    for key in ("decode", "embed", "search", "total"):
        assert timing[key] >= 0
    assert timing["total"] >= timing["embed"]


def test_api_search_by_shape_alone_orders_by_distance(client, demo_catalogue):
    response = post_photos(client, [photo(demo_catalogue, 23)], colour_weight="0")
    assert response.status_code == 200
    body = response.get_json()
    assert body["colour_weight"] == 0
    results = body["queries"][0]["results"]
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)
    assert not any("score" in r or "colour_similarity" in r for r in results)


@pytest.mark.parametrize("weight", ["-0.1", "1.5", "abc", "nan", "inf", "0x1", "1e-1", "²", "0.5.5"])
def test_api_search_invalid_colour_weight(client, demo_catalogue, weight):
    response = post_photos(client, [photo(demo_catalogue, 5)], colour_weight=weight)
    error = assert_error(response, 400, contains="colour_weight must be a number from 0")
    assert error.get("field") == "colour_weight"


@pytest.mark.parametrize("value", ["maybe", "2", "tru"])
def test_api_search_invalid_locate(client, demo_catalogue, value):
    error = assert_error(post_photos(client, [photo(demo_catalogue, 5)], locate=value), 400, contains="locate")
    assert error.get("field") == "locate"


def test_api_search_several_photos_in_upload_order(client, demo_catalogue):
    order = [99, 8, 131]
    response = post_photos(client, [photo(demo_catalogue, i) for i in order])
    assert response.status_code == 200
    queries = response.get_json()["queries"]
    assert [q["filename"] for q in queries] == [f"{i}.jpg" for i in order]
    for query, item_id in zip(queries, order):
        assert len(query["results"]) == 5
        assert query["results"][0]["id"] == str(item_id)


def test_api_search_more_photos_than_allowed(client, demo_catalogue):
    response = post_photos(client, [photo(demo_catalogue, i) for i in range(1, 6)])
    assert_error(response, 400, contains="At most 4 photos")


@pytest.mark.parametrize("k", ["1", "20", "50"])
def test_api_search_k(client, demo_catalogue, k):
    response = post_photos(client, [photo(demo_catalogue, 5)], k=k)
    assert response.status_code == 200
    body = response.get_json()
    results = body["queries"][0]["results"]
    assert len(results) == int(k)
    assert len({r["id"] for r in results}) == int(k)


@pytest.mark.parametrize("k", ["abc", "-1", "0", "51", "99999999999"])
def test_api_search_invalid_k(client, demo_catalogue, k):
    error = assert_error(post_photos(client, [photo(demo_catalogue, 5)], k=k), 400, contains="number of results")
    assert error.get("field") == "k"


def test_api_search_filters(client, demo_catalogue, meta_by_id):
    filters = {"gender": "Unisex", "masterCategory": "Accessories"}
    matching = {i for i, row in meta_by_id.items() if all(row[f] == v for f, v in filters.items())}
    assert len(matching) >= 5
    response = post_photos(client, [photo(demo_catalogue, 7)], **filters)
    assert response.status_code == 200
    results = response.get_json()["queries"][0]["results"]
    assert len(results) == 5
    assert {r["id"] for r in results} <= matching
    for r in results:
        for name, value in filters.items():
            assert r["metadata"][name] == value


def test_api_search_unknown_filter(client, demo_catalogue):
    response = post_photos(client, [photo(demo_catalogue, 7)], baseColour="Ultraviolet")
    error = assert_error(response, 400, contains="Unknown")
    assert error.get("field") == "baseColour"


# ---------------------------------------------------------------- GET /api/items/<id>/similar


def test_api_similar_shape_and_excludes_item(client, fake_app, meta_by_id):
    response = client.get("/api/items/50/similar")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"item", "colour_weight", "results"}
    assert set(body["item"]) == ITEM_KEYS
    assert body["item"]["id"] == "50"
    assert body["item"]["metadata"]["articleType"] == meta_by_id["50"]["articleType"]
    results = body["results"]
    assert len(results) == 5
    for result in results:
        assert_result_shape(result)
    assert "50" not in {r["id"] for r in results}
    # from the stored vector and colour: the best joined scores for row 50, itself excluded
    searcher = fake_app.extensions["fashion.service"].searcher
    row = searcher.row_of("50")
    for weight in (0.0, 0.2, 0.7):
        scores = (1 - weight) * (searcher.embeddings @ searcher.embeddings[row])
        scores += weight * (searcher.colours @ searcher.colours[row])
        scores[row] = -np.inf
        best = [searcher.ids[i] for i in np.argsort(-scores, kind="stable")[:5]]
        answer = client.get(f"/api/items/50/similar?colour_weight={weight}").get_json()
        assert answer["colour_weight"] == weight
        assert [r["id"] for r in answer["results"]] == best, weight
    default = client.get("/api/items/50/similar?colour_weight=0.2").get_json()["results"]
    assert [r["id"] for r in results] == [r["id"] for r in default]


def test_api_similar_every_filter_value_is_exact(client, fake_app, meta_by_id):
    """Each single facet value: all results match, and min(k, matches) of them are shown."""
    facets = fake_app.extensions["fashion.service"].searcher.facets()
    assert facets, "styles.csv facets expected"
    checked = 0
    for name, values in facets.items():
        for value in values:
            matching = {i for i, row in meta_by_id.items() if row[name] == value and i != "61"}
            response = client.get("/api/items/61/similar", query_string={name: value, "k": 10})
            assert response.status_code == 200, (name, value)
            ids = [r["id"] for r in response.get_json()["results"]]
            assert len(ids) == min(10, len(matching)), (name, value)
            assert set(ids) <= matching, (name, value)
            checked += 1
    assert checked >= 10


def test_api_similar_k(client):
    response = client.get("/api/items/61/similar?k=50")
    assert len(response.get_json()["results"]) == 50


@pytest.mark.parametrize("item_id", ["99999", "nope", "61.jpg"])
def test_api_similar_unknown_item_is_404_json(client, item_id):
    assert_error(client.get(f"/api/items/{item_id}/similar"), 404, contains="no product with that id")


@pytest.mark.parametrize("query", ["k=x", "k=-3", "k=51", "gender=Nobody", "colour_weight=2", "locate=false"])
def test_api_similar_bad_parameters(client, query):
    assert_error(client.get(f"/api/items/61/similar?{query}"), 400)


# ---------------------------------------------------------------- status and health


def test_api_status_ready(client, fake_index):
    response = client.get("/api/status")
    assert response.status_code == 200
    body = response.get_json()
    assert body["state"] == "ready"
    assert body["items"] == 144
    assert isinstance(body["done"], int) and isinstance(body["total"], int)
    assert body["catalogue"] == fake_index.catalogue.name
    assert body["rebuilding"] is False


def test_healthz_ready(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["state"], body["items"]) == ("ready", 144)
    # one process outside gunicorn: it answers for itself (tests/test_site_health.py has the whole site)
    assert body["workers"] == {"live": 1, "ready": 1, "booting": 0, "generations": {body["generation"]: 1}}


# ---------------------------------------------------------------- URLs in results


def test_api_result_urls_fetch_with_cache_headers(client, demo_catalogue):
    item = client.get("/api/items/12/similar").get_json()["item"]
    results = post_photos(client, [photo(demo_catalogue, 12)]).get_json()["queries"][0]["results"]
    for entry in [item, *results]:
        image = client.get(entry["image_url"])
        assert image.status_code == 200
        assert image.headers.get("ETag")
        assert image.cache_control.max_age > 0
        thumb = client.get(entry["thumb_url"])
        assert thumb.status_code == 200
        assert thumb.headers.get("ETag")
        assert thumb.cache_control.max_age >= 30 * 24 * 3600


# ---------------------------------------------------------------- JSON errors under /api


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/api/nope", 404),
        ("get", "/api/items/1", 404),
        ("get", "/api/search", 405),
        ("put", "/api/search", 405),
        ("post", "/api/status", 405),
        ("post", "/api/items/1/similar", 405),
        ("post", "/healthz", 405),
    ],
)
def test_api_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path)
    assert_error(response, status)
    if status == 405:
        assert "GET" in response.headers["Allow"] or "POST" in response.headers["Allow"]


@pytest.mark.parametrize("colour_weight", ["0", "0.2", "0.7"])
def test_match_labels_never_get_stronger_down_the_list(client, demo_catalogue, colour_weight):
    """The label comes from the number the list is ranked by, so order and label agree."""
    from indexer.calibration import LABELS

    strength = {label: -n for n, (_, label) in enumerate(LABELS)} | {"Same photo": 1}
    data, name = photo(demo_catalogue, 40)
    body = client.post(
        "/api/search", data={"image": (io.BytesIO(data), name), "k": "30", "colour_weight": colour_weight},
        content_type="multipart/form-data",
    ).get_json()
    results = body["queries"][0]["results"]
    scores = [r["match"]["score"] for r in results]
    assert None not in scores and scores == sorted(scores, reverse=True)
    labels = [strength[r["match"]["label"]] for r in results]
    assert labels == sorted(labels, reverse=True)
    assert results[0]["match"]["label"] == "Same photo"
