"""HTML pages of the web app, driven through pytest-flask's ``client``.

Covers ``GET /`` (form, filters from styles.csv, catalogue name and count),
``POST /search`` (k default/override/invalid, several photos in upload order,
too many photos, exact filters including the exact-search fallback, unknown
filter values), ``GET /items/<id>`` (more like this, itself excluded, 404,
bad k/filters), the catalogue image and thumbnail routes with their cache
headers, and HTML (not JSON) errors outside ``/api``.

Everything runs against the session demo index (144 images) built with the
fake embedder (``tests/fakes.py``) and the real Annoy index: what a page
shows for a query does not depend on real features here.
"""

from __future__ import annotations

import csv
import html
import io
import re

import numpy as np
import pytest

from indexer.colour import colour_descriptor
from indexer.images import load_for_model
from indexer.search import FILTER_FIELDS

CARD_LINK = re.compile(r'<a class="card-image" href="/items/([^"]+)">')
ROW = re.compile(r'<section class="query-row".*?</section>', re.S)


def post_photos(client, url, photos, **fields):
    """POST ``photos`` (a list of ``(bytes, filename)``) as ``image`` fields plus form ``fields``."""
    data = dict(fields)
    data["image"] = [(io.BytesIO(content), name) for content, name in photos]
    return client.post(url, data=data, content_type="multipart/form-data")


def card_ids(page: str) -> list[str]:
    """Item ids of the product cards on a page, in order."""
    return CARD_LINK.findall(page)


def rows(page: str) -> list[str]:
    """The result rows (one per query photo) of a results page."""
    return ROW.findall(page)


@pytest.fixture(scope="module")
def styles(demo_catalogue) -> list[dict]:
    with open(demo_catalogue / "styles.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def meta_by_id(styles) -> dict[str, dict]:
    return {row["id"]: row for row in styles}


def photo(demo_catalogue, item_id) -> tuple[bytes, str]:
    return (demo_catalogue / f"{item_id}.jpg").read_bytes(), f"{item_id}.jpg"


def text(response) -> str:
    return response.get_data(as_text=True)


# ---------------------------------------------------------------- GET /


def test_home_shows_form_filters_and_catalogue(client, styles, fake_index):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = text(response)
    assert 'enctype="multipart/form-data"' in page
    assert 'action="/search"' in page
    assert re.search(r'<input id="image" name="image" type="file"[^>]*multiple', page)
    assert f"<strong>{len(styles)}</strong> products" in page
    assert fake_index.catalogue.name not in page  # the shop's name heads the page, not its folder's
    for name in FILTER_FIELDS:
        expected = sorted({row[name] for row in styles if row[name]})
        select = re.search(rf'<select id="filter-{name}" name="{name}"[^>]*>(.*?)</select>', page, re.S)
        assert select, f"no filter for {name}"
        offered = re.findall(r'<option value="([^"]*)"', select.group(1))
        assert offered == [""] + [html.escape(value) for value in expected]
    assert 'name="k"' in page and 'value="5"' in page


# ---------------------------------------------------------------- POST /search


def test_search_one_photo_gives_five_results_with_itself_first(client, demo_catalogue, meta_by_id):
    response = post_photos(client, "/search", [photo(demo_catalogue, 17)])
    assert response.status_code == 200
    page = text(response)
    assert len(rows(page)) == 1
    ids = card_ids(page)
    assert len(ids) == 5
    assert ids[0] == "17"
    assert 'src="data:image/jpeg;base64,' in page  # the upload is shown inline, not stored
    assert "Same photo" in page  # the photo itself, at distance 0
    title = meta_by_id["17"]["productDisplayName"]
    assert html.escape(title) in page


@pytest.mark.parametrize("k", ["1", "12", "50", " 7 "])
def test_search_k_override(client, demo_catalogue, k):
    response = post_photos(client, "/search", [photo(demo_catalogue, 40)], k=k)
    assert response.status_code == 200
    ids = card_ids(text(response))
    assert len(ids) == int(k)
    assert len(set(ids)) == int(k)


@pytest.mark.parametrize("k", ["abc", "-1", "0", "51", "99999999999", "2.5", "1e3"])
def test_search_invalid_k_is_400_with_message(client, demo_catalogue, k):
    response = post_photos(client, "/search", [photo(demo_catalogue, 40)], k=k)
    assert response.status_code == 400
    page = text(response)
    assert 'role="alert"' in page
    assert "number of results" in page
    assert not card_ids(page)
    assert 'name="image"' in page  # the form is shown again


def test_search_several_photos_one_row_each_in_upload_order(client, demo_catalogue):
    order = [77, 3, 120, 45]  # FASHION_MAX_FILES = 4
    response = post_photos(client, "/search", [photo(demo_catalogue, i) for i in order])
    assert response.status_code == 200
    found = rows(text(response))
    assert len(found) == len(order)
    for row, item_id in zip(found, order):
        assert f"{item_id}.jpg" in row
        ids = card_ids(row)
        assert len(ids) == 5
        assert ids[0] == str(item_id)


def test_search_more_photos_than_allowed_is_400(client, demo_catalogue):
    response = post_photos(client, "/search", [photo(demo_catalogue, i) for i in (1, 2, 3, 4, 5)])
    assert response.status_code == 400
    page = text(response)
    assert "At most 4 photos" in page
    assert not card_ids(page)


def _api_ids(client, photos, **fields):
    response = post_photos(client, "/api/search", photos, **fields)
    assert response.status_code == 200
    return [[hit["id"] for hit in q["results"]] for q in response.get_json()["queries"]]


FILTER_CASES = [
    pytest.param({"gender": "Women"}, id="common-annoy-path"),
    pytest.param({"masterCategory": "Footwear", "baseColour": "Red"}, id="two-fields"),
    pytest.param({"gender": "Men", "articleType": "Casual Shoes"}, id="rare-exact-fallback"),
    pytest.param({"gender": "Men", "articleType": "Tshirts"}, id="fewer-than-k"),
]


@pytest.mark.parametrize("filters", FILTER_CASES)
def test_search_filters_are_honoured_exactly(client, demo_catalogue, meta_by_id, filters):
    matching = [i for i, row in meta_by_id.items() if all(row[f] == v for f, v in filters.items())]
    assert matching, "the demo catalogue should have items for every case"
    response = post_photos(client, "/search", [photo(demo_catalogue, 2)], **filters)
    assert response.status_code == 200
    page = text(response)
    ids = card_ids(page)
    assert len(ids) == min(5, len(matching))
    for item_id in ids:
        for name, value in filters.items():
            assert meta_by_id[item_id][name] == value
    labels = {"gender": "Gender", "masterCategory": "Category", "articleType": "Product type", "baseColour": "Colour"}
    for name, value in filters.items():
        assert f'<span class="pill">{labels[name]}: {html.escape(value)}</span>' in page
    if len(matching) < 5:
        assert f"Only {len(matching)} product" in page and "fewer than the 5 you asked for" in page
    else:
        assert "fewer than the" not in page
    # the HTML page and the JSON API give the same answer
    assert _api_ids(client, [photo(demo_catalogue, 2)], **filters) == [ids]


def test_rare_filter_uses_exact_search_over_the_subset(client, fake_app, fake_embedder, demo_catalogue, meta_by_id):
    """Too few Annoy candidates pass a rare filter: the answer is the exact top k of the subset."""
    filters = {"gender": "Men", "articleType": "Casual Shoes"}
    searcher = fake_app.extensions["fashion.service"].searcher
    mask = np.array([all(m.get(f) == v for f, v in filters.items()) for m in searcher.metadata])
    k = 5
    assert mask.sum() >= k and mask.sum() / len(mask) < 0.1, "premise: a rare combination with at least k items"
    data, name = photo(demo_catalogue, 100)
    array = load_for_model(data)
    vector, colour = fake_embedder.embed_one(array), colour_descriptor(array)
    rows_ = np.flatnonzero(mask)
    for weight in (0.0, 0.2):  # shape alone, and the site's default share of colour
        scores = (1 - weight) * (searcher.embeddings[rows_] @ vector) + weight * (searcher.colours[rows_] @ colour)
        order = np.argsort(-scores, kind="stable")[:k]
        # the whole photo only: the exact search of one vector, which located boxes would join
        response = post_photos(
            client, "/api/search", [(data, name)], k=str(k), colour_weight=str(weight), locate="false", **filters
        )
        results = response.get_json()["queries"][0]["results"]
        assert [r["id"] for r in results] == [searcher.ids[r] for r in rows_[order]]
        distances = np.linalg.norm(searcher.embeddings[rows_[order]] - vector, axis=1)
        assert [r["distance"] for r in results] == pytest.approx(list(distances), abs=1e-4)


def test_filters_with_k_larger_than_matches_shows_all_matches(client, demo_catalogue, meta_by_id):
    men = sorted(i for i, row in meta_by_id.items() if row["gender"] == "Men")
    response = post_photos(client, "/search", [photo(demo_catalogue, 9)], k="50", gender="Men")
    assert response.status_code == 200
    assert sorted(card_ids(text(response))) == men


@pytest.mark.parametrize(
    "filters", [{"gender": "Martian"}, {"baseColour": "<b>Red</b>"}, {"articleType": "tshirts"}], ids=str
)
def test_search_unknown_filter_value_is_400(client, demo_catalogue, filters):
    response = post_photos(client, "/search", [photo(demo_catalogue, 1)], **filters)
    assert response.status_code == 400
    page = text(response)
    assert "Unknown" in page
    assert "<b>Red</b>" not in page  # echoed escaped, never as markup
    assert not card_ids(page)


# ---------------------------------------------------------------- GET /items/<id>


def test_item_page_shows_neighbours_without_the_item(client, meta_by_id):
    response = client.get("/items/30")
    assert response.status_code == 200
    page = text(response)
    assert "More like this" in page
    assert html.escape(meta_by_id["30"]["productDisplayName"]) in page
    ids = card_ids(page)
    assert len(ids) == 5
    assert "30" not in ids
    assert len(set(ids)) == 5


def test_item_page_k_and_filters(client, meta_by_id):
    response = client.get("/items/30?k=12&masterCategory=Apparel")
    assert response.status_code == 200
    ids = card_ids(text(response))
    assert len(ids) == 12
    assert "30" not in ids
    assert all(meta_by_id[i]["masterCategory"] == "Apparel" for i in ids)


@pytest.mark.parametrize("item_id", ["99999", "0", "abc", "1.jpg", "1 "])
def test_item_page_unknown_id_is_404(client, item_id):
    response = client.get(f"/items/{item_id}")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "no product with that id" in text(response)


@pytest.mark.parametrize("query", ["k=abc", "k=0", "k=51", "gender=Martian"])
def test_item_page_bad_parameters_are_400(client, query):
    response = client.get(f"/items/30?{query}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert 'role="alert"' in text(response)


# ---------------------------------------------------------------- images


def test_result_images_and_thumbnails_are_served_with_cache_headers(client, demo_catalogue):
    response = post_photos(client, "/api/search", [photo(demo_catalogue, 64)])
    results = response.get_json()["queries"][0]["results"]
    assert len(results) == 5
    for result in results:
        original = client.get(result["image_url"])
        assert original.status_code == 200
        assert original.mimetype == "image/jpeg"
        assert original.data == (demo_catalogue / result["filename"]).read_bytes()
        assert original.headers["ETag"]
        assert original.cache_control.max_age and original.cache_control.max_age > 0
        again = client.get(result["image_url"], headers={"If-None-Match": original.headers["ETag"]})
        assert again.status_code == 304

        thumb = client.get(result["thumb_url"])
        assert thumb.status_code == 200
        assert thumb.mimetype == "image/jpeg"
        assert thumb.data[:3] == b"\xff\xd8\xff"
        assert thumb.headers["ETag"]
        assert thumb.cache_control.max_age >= 30 * 24 * 3600
        again = client.get(result["thumb_url"], headers={"If-None-Match": thumb.headers["ETag"]})
        assert again.status_code == 304


def test_pages_reference_local_static_assets(client):
    page = text(client.get("/"))
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', page):
        assert client.get(asset).status_code == 200
    assert "//cdn" not in page and "https://" not in page


# ---------------------------------------------------------------- errors outside /api are HTML


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/nope", 404),
        ("get", "/items", 404),
        ("get", "/search", 405),
        ("post", "/", 405),
        ("delete", "/items/1", 405),
    ],
)
def test_html_errors_outside_api(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    page = text(response)
    assert 'role="alert"' in page
    assert "Back to search" in page
    if status == 405:
        assert response.headers.get("Allow")


# Digits that str.isdigit() or int() accept but a plain number field must not: superscripts and
# circled digits (isdigit yes, int no), other scripts' digits, signs, underscores, spaces inside.
NOT_PLAIN_NUMBERS = ["²", "①", "¹", "٥", "५", "+5", "5_0", "0x5", "5 5", "1e1", "9" * 12]


@pytest.mark.parametrize("value", NOT_PLAIN_NUMBERS)
def test_number_fields_take_only_ascii_digits(client, value):
    from urllib.parse import quote

    encoded = quote(value)
    for url in (f"/browse?page={encoded}", f"/items/30?k={encoded}", f"/api/items/30/similar?k={encoded}"):
        response = client.get(url)
        assert response.status_code == 400, url
    assert client.get("/browse?page=2").status_code == 200
    assert client.get("/items/30?k=7").status_code == 200


def test_strict_numbers_are_exactly_ascii_digits():
    from indexer.options import whole_number

    assert [whole_number(v) for v in ("0", "7", "007", "123456789")] == [0, 7, 7, 123456789]
    assert all(whole_number(v) is None for v in NOT_PLAIN_NUMBERS + ["", "-1", "1.5"])
