"""Browsing and narrowing the catalogue: facet counts, /browse, show more, product details,
unknown fields, and the empty catalogue page."""

from __future__ import annotations

import collections
import csv
import html
import io
import re
import shutil

import pytest

from indexer.build import build_index
from indexer.search import Searcher
from web import facets

CARD_LINK = re.compile(r'<a class="card-image" href="/items/([^"]+)"')


def _styles(catalogue) -> list[dict]:
    with open(catalogue / "styles.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _upload(client, url, demo_catalogue, item_id, **fields):
    data = dict(fields, image=(io.BytesIO((demo_catalogue / f"{item_id}.jpg").read_bytes()), f"{item_id}.jpg"))
    return client.post(url, data=data, content_type="multipart/form-data")


# ---------------------------------------------------------------- facet counts


def test_facet_counts_list_only_values_matching_the_other_filters(fake_index):
    searcher = Searcher.load(fake_index.index_dir)
    rows = _styles(fake_index.catalogue)
    chosen = {"gender": "Men", "baseColour": "Red"}
    counts = facets.facet_counts(searcher, chosen)
    for name, listed in counts.items():
        others = {k: v for k, v in chosen.items() if k != name}
        expected = collections.Counter(r[name] for r in rows if all(r[k] == v for k, v in others.items()) and r[name])
        assert dict(listed) == dict(expected), name
        assert [v for v, _ in listed] == sorted(expected)
    # a type with no red men's item is not offered while both filters are chosen
    assert all(count > 0 for _, count in counts["articleType"])
    assert len(counts["articleType"]) < len(facets.facet_values(searcher)["articleType"])
    assert int(facets.matching_rows(searcher, chosen).sum()) == sum(n for _, n in counts["articleType"])


def test_forms_show_counts_and_the_api_gives_them(client, fake_index):
    rows = _styles(fake_index.catalogue)
    women = sum(r["gender"] == "Women" for r in rows)
    page = client.get("/").get_data(as_text=True)
    assert f'<option value="Women">Women ({women})</option>' in page
    body = client.get("/api/facets?gender=Women").get_json()
    assert body["filters"] == {"gender": "Women"} and body["matched"] == women
    types = collections.Counter(r["articleType"] for r in rows if r["gender"] == "Women")
    assert {e["value"]: e["count"] for e in body["facets"]["articleType"]} == dict(types)
    assert client.get("/api/facets?gender=Nobody").status_code == 400


# ---------------------------------------------------------------- unknown fields


@pytest.mark.parametrize(
    "method, url",
    [
        ("post", "/api/search"),
        ("post", "/search"),
        ("get", "/api/items/1/similar?brand=Nike"),
        ("get", "/items/1?brand=Nike"),
        ("get", "/browse?brand=Nike"),
        ("get", "/api/facets?brand=Nike"),
    ],
)
def test_unknown_fields_are_a_400_that_names_them(client, demo_catalogue, method, url):
    if method == "post":
        response = _upload(client, url, demo_catalogue, 1, brand="Nike")
    else:
        response = client.get(url)
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "Unknown field" in body and "brand" in body


def test_a_long_list_of_choices_says_it_is_cut(client):
    error = client.get("/api/items/1/similar?articleType=Nosuch").get_json()["error"]
    assert "Choose one of:" in error["message"]
    colours = client.get("/api/facets").get_json()["facets"]["baseColour"]
    if len(colours) > 20:
        assert "more)" in client.get("/api/items/1/similar?baseColour=Nosuch").get_json()["error"]["message"]


# ---------------------------------------------------------------- browse


def test_browse_pages_through_the_catalogue_with_filters(client, fake_index):
    # catalogue order: the index's file order
    rows = sorted(_styles(fake_index.catalogue), key=lambda r: Searcher.load(fake_index.index_dir).filenames.index(
        f"{r['id']}.jpg"))
    first = client.get("/browse").get_data(as_text=True)
    ids = CARD_LINK.findall(first)
    assert ids == [r["id"] for r in rows][:24]
    pages = -(-len(rows) // 24)
    assert f"page 1 of {pages}" in first and 'id="page-next" href="/browse?page=2"' in first
    assert 'id="page-prev"' not in first
    last = client.get(f"/browse?page={pages}").get_data(as_text=True)
    assert CARD_LINK.findall(last) == [r["id"] for r in rows][24 * (pages - 1) :]
    assert 'id="page-next"' not in last
    assert client.get(f"/browse?page={pages + 1}").status_code == 400
    assert client.get("/browse?page=zero").status_code == 400

    shoes = [r["id"] for r in rows if r["articleType"] == "Casual Shoes"]
    page = client.get("/browse?articleType=Casual+Shoes").get_data(as_text=True)
    assert CARD_LINK.findall(page) == shoes[:24]
    assert f"{len(shoes)} products match these filters" in page


# ---------------------------------------------------------------- show more


def test_show_more_asks_for_the_next_results(client, demo_catalogue):
    first = _upload(client, "/search", demo_catalogue, 17).get_data(as_text=True)
    ids = CARD_LINK.findall(first)
    form = re.search(r'<form class="show-more".*?</form>', first, re.S).group(0)
    fields = [(html.unescape(n), html.unescape(v)) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', form)]
    assert ("k", "10") in fields
    data = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    more = client.post("/search/more", data=data).get_data(as_text=True)
    more_ids = CARD_LINK.findall(more)
    assert len(more_ids) == 10 and more_ids[:5] == ids
    assert 'src="data:image/jpeg;base64,' in more  # the query photo is still shown

    data["query"] = ["AAAA"]
    assert client.post("/search/more", data=data).status_code == 400
    data["query"], data["colour"] = [fields[0][1]], ["Red"]
    assert client.post("/search/more", data=data).status_code == 400  # unknown field


def test_more_like_this_has_show_more_and_human_labels(client):
    page = client.get("/items/17").get_data(as_text=True)
    assert 'id="show-more" href="/items/17?k=10"' in page
    assert "<dt>Product type</dt>" in page and "<dt>Colour</dt>" in page
    assert "articleType</dt>" not in page and "baseColour</dt>" not in page
    assert len(CARD_LINK.findall(client.get("/items/17?k=10").get_data(as_text=True))) == 10


# ---------------------------------------------------------------- product details and empty catalogue


def test_product_names_prices_and_safe_shop_links(small_settings, fake_embedder, make_fake_app):
    styles = small_settings.catalogue / "styles.csv"
    lines = styles.read_text().splitlines()
    out = [lines[0] + ",price,url"]
    for line in lines[1:]:
        item_id = line.split(",")[0]
        url = {"1": "javascript:alert(1)", "2": "ftp://shop.example/2"}.get(item_id, f"https://shop.example/p/{item_id}")
        out.append(f"{line},€{item_id}9.95,{url}")
    styles.write_text("\n".join(out) + "\n")
    build_index(small_settings, fake_embedder)
    client = make_fake_app(small_settings).test_client()
    page = client.get("/browse").get_data(as_text=True)
    assert '<p class="card-title"><span class="card-name">Unisex Red Solid Tshirt</span></p>' in page
    assert '<p class="price">€39.95</p>' in page
    assert '<a class="shop-link" href="https://shop.example/p/3" rel="noopener" target="_blank">' in page
    assert "javascript:" not in page and "ftp://" not in page
    item = client.get("/items/3").get_data(as_text=True)
    assert 'href="https://shop.example/p/3" rel="noopener"' in item


def test_an_empty_catalogue_says_what_to_do(tmp_path, fake_embedder, make_fake_app):
    from indexer.config import Settings

    empty = tmp_path / "shop"
    empty.mkdir()
    settings = Settings.from_env(catalogue=str(empty), index_dir=str(tmp_path / "index"))
    build_index(settings, fake_embedder)
    client = make_fake_app(settings).test_client()
    page = client.get("/")
    body = page.get_data(as_text=True)
    assert "The catalogue is empty" in body and "python -m indexer build" in body and "<code>shop</code>" in body
    assert str(empty) not in body and str(tmp_path) not in body  # no server path on a public page
    assert '<input id="image"' not in body
    assert "The catalogue is empty" in client.get("/browse").get_data(as_text=True)
    api = client.post(
        "/api/search", data={"image": (io.BytesIO(b"x"), "a.jpg")}, content_type="multipart/form-data"
    )
    assert api.status_code == 503 and "no products yet" in api.get_json()["error"]["message"]


def test_an_index_of_another_catalogue_is_never_served(tiny_settings, fake_embedder, make_fake_app, tmp_path):
    build_index(tiny_settings, fake_embedder)  # the demo's products, say
    other = tmp_path / "real-shop"
    shutil.copytree(tiny_settings.catalogue, other)  # same file names: the old index would even "work"
    app = make_fake_app(tiny_settings.replace(catalogue=other.resolve()))
    client = app.test_client()
    status = client.get("/api/status").get_json()
    assert status["state"] != "ready" and status["items"] == 0
    assert client.get("/healthz").status_code == 503
    assert client.get("/catalogue/3.jpg").status_code != 200
    page = client.get("/").get_data(as_text=True)
    assert '<input id="image"' not in page  # the building page, not a search over someone else's products
    same = make_fake_app(tiny_settings).test_client()  # control: the catalogue it was built from is served
    assert same.get("/api/status").get_json()["state"] == "ready"


def test_cards_without_product_names_are_named_from_their_facts(small_settings, fake_embedder, make_fake_app):
    """Without productDisplayName a card read "13" (its file name) with the product type twice below it."""
    styles = small_settings.catalogue / "styles.csv"
    rows = list(csv.reader(styles.read_text().splitlines()))
    drop = rows[0].index("productDisplayName")
    styles.write_text("\n".join(",".join(cell for i, cell in enumerate(row) if i != drop) for row in rows) + "\n")
    build_index(small_settings, fake_embedder)
    page = make_fake_app(small_settings).test_client().get("/browse").get_data(as_text=True)
    by_id = {row["id"]: row for row in _styles(small_settings.catalogue)}
    cards = re.findall(r'<li class="card">(.*?)</li>', page, re.S)
    assert cards
    for card in cards:
        meta = by_id[CARD_LINK.search(card).group(1)]
        name = html.unescape(re.search(r'<span class="card-name">([^<]*)</span>', card).group(1))
        assert name == f"{meta['baseColour']} {meta['articleType']}, {meta['gender']}"  # "Navy Blue Tshirt, Men"
        assert not name.isdigit()
        assert "card-subtitle" not in card
        facts = [html.unescape(v) for v in re.findall(r"<dd>([^<]*)</dd>", card)]
        assert not {meta["articleType"], meta["baseColour"], meta["gender"]} & set(facts)  # each fact once


def test_a_product_title_never_falls_back_to_a_file_name():
    from web.titles import number, product_title, title_facts

    assert product_title({"productDisplayName": " Puma Men Blue Tee ", "articleType": "Tshirts"}) == "Puma Men Blue Tee"
    assert product_title({"baseColour": "Navy Blue", "articleType": "Tshirts", "gender": "Men"}) == (
        "Navy Blue Tshirts, Men"
    )
    assert product_title({"subCategory": "Bags"}) == "Bags"
    assert product_title({}) == product_title(None) == "Product"
    assert title_facts({"baseColour": "Red", "articleType": "Bags", "subCategory": "Bags"}) == {
        "baseColour", "articleType",
    }
    assert title_facts({"productDisplayName": "X", "baseColour": "Red"}) == set()
    assert number(3000) == "3,000" and number(7) == "7" and number(1234567) == "1,234,567"


def test_a_filter_without_matches_says_so_once(client, demo_catalogue):
    response = _upload(client, "/search", demo_catalogue, 17, gender="Men", articleType="Dresses", k="5")
    page = response.get_data(as_text=True)
    matches = page.count("No product matches these filters") + page.count("Only 0 products")
    assert response.status_code == 200 and matches == 1


def _noise_jpeg(seed: int, side: int = 1000, block: int = 8) -> bytes:
    """A detailed photo: random colour blocks about one preview pixel wide (~20 KB of preview each)."""
    import numpy as np
    from PIL import Image

    cells = side // block + 1
    pixels = np.random.default_rng(seed).integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((cells * block,) * 2, Image.Resampling.NEAREST).crop((0, 0, side, side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_show_more_after_four_detailed_photos_is_answered(client):
    """The show-more form carries each photo's preview: with four detailed photos it passed 64 KB and got 413."""
    photos = [(io.BytesIO(_noise_jpeg(seed)), f"noise{seed}.jpg") for seed in range(4)]
    page = client.post("/search", data={"image": photos}, content_type="multipart/form-data")
    assert page.status_code == 200
    form = re.search(r'<form class="show-more"[^>]*>.*?</form>', page.get_data(as_text=True), re.S).group(0)
    opening = form[: form.index(">") + 1]
    enctype = re.search(r'enctype="([^"]+)"', opening)
    data: dict[str, list[str]] = {}
    for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', form):
        data.setdefault(html.unescape(name), []).append(html.unescape(value))
    assert len(data["preview"]) == 4 and sum(map(len, data["preview"])) > 64 * 1024
    # as a browser sends the form: in its declared encoding (urlencoded when it declares none)
    if enctype and enctype.group(1) == "multipart/form-data":
        more = client.post("/search/more", data=data, content_type="multipart/form-data")
    else:
        more = client.post("/search/more", data=data)
    assert more.status_code == 200, more.get_data(as_text=True)[:300]
    assert more.get_data(as_text=True).count('src="data:image/jpeg;base64,') >= 4


def test_healthz_on_an_empty_catalogue_is_503_with_the_reason(tmp_path, fake_embedder, make_fake_app):
    """An index of an empty catalogue answered /healthz 200: a balancer sent shoppers to nothing to find."""
    from indexer.config import Settings

    empty = tmp_path / "shop"
    empty.mkdir()
    settings = Settings.from_env(catalogue=str(empty), index_dir=str(tmp_path / "index"))
    build_index(settings, fake_embedder)
    health = make_fake_app(settings).test_client().get("/healthz")
    assert health.status_code == 503 and health.headers.get("Retry-After")
    body = health.get_json()
    assert body["reason"] == "empty_catalogue" and body["items"] == 0 and body["message"]
