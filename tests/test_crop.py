"""Crop: one garment out of a photo that shows several.

A query made of two different catalogue products side by side, cropped to
one of them, finds that product first at distance ~0, through the shared
loader (``load_for_model(..., crop=...)``) and through ``POST /api/search``
and ``POST /search``. Crops are validated with 400s that say what to send.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from indexer.images import ImageError, load_for_model

LEFT, RIGHT = "4", "13"  # casual shoes (red) and a handbag (navy blue), both 300x300


def side_by_side(demo_catalogue, fmt: str = "PNG") -> bytes:
    """The two products' decoded pixels next to each other, losslessly."""
    left = Image.open(demo_catalogue / f"{LEFT}.jpg").convert("RGB")
    right = Image.open(demo_catalogue / f"{RIGHT}.jpg").convert("RGB")
    assert left.size == right.size == (300, 300)
    both = Image.new("RGB", (600, 300), "white")
    both.paste(left, (0, 0))
    both.paste(right, (300, 0))
    out = io.BytesIO()
    both.save(out, fmt)
    return out.getvalue()


def post(client, data: bytes, url: str = "/api/search", **fields):
    form = dict(fields, image=(io.BytesIO(data), "two-products.png"))
    return client.post(url, data=form, content_type="multipart/form-data")


def test_the_loader_crops_the_upright_photo_before_normalising(demo_catalogue):
    both = side_by_side(demo_catalogue)
    right = load_for_model(both, crop=(0.5, 0.0, 0.5, 1.0))
    assert np.array_equal(right, load_for_model(demo_catalogue / f"{RIGHT}.jpg"))
    whole = load_for_model(both)
    assert not np.array_equal(whole, right)
    with pytest.raises(ImageError) as info:
        load_for_model(both, crop=(0.0, 0.0, 0.01, 1.0))  # 6 pixels wide
    assert info.value.reason == "bad_crop"


def test_a_crop_follows_the_exif_orientation(demo_catalogue):
    # stored sideways with "rotate 90" in EXIF: the crop applies to what the shopper sees
    upright = Image.open(io.BytesIO(side_by_side(demo_catalogue)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(out, "PNG", exif=exif)
    cropped = load_for_model(out.getvalue(), crop=(0.0, 0.0, 0.5, 1.0))
    assert np.array_equal(cropped, load_for_model(demo_catalogue / f"{LEFT}.jpg"))


@pytest.mark.parametrize("crop, expected", [("0,0,0.5,1", LEFT), ("0.5,0,0.5,1", RIGHT)])
def test_api_crop_finds_the_cropped_product_first(client, demo_catalogue, crop, expected):
    response = post(client, side_by_side(demo_catalogue), crop=crop)
    assert response.status_code == 200, response.get_json()
    query = response.get_json()["queries"][0]
    assert query["crop"] == [float(v) for v in crop.split(",")]
    first = query["results"][0]
    assert first["id"] == expected
    assert first["distance"] < 1e-3


def test_without_a_crop_the_photo_matches_neither_product_exactly(client, demo_catalogue):
    query = post(client, side_by_side(demo_catalogue)).get_json()["queries"][0]
    assert query["crop"] is None
    assert query["results"][0]["distance"] > 0.05


def test_jpeg_upload_cropped_is_still_near(client, demo_catalogue):
    query = post(client, side_by_side(demo_catalogue, "JPEG"), crop="0.5,0,0.5,1").get_json()["queries"][0]
    assert query["results"][0]["id"] == RIGHT
    assert query["results"][0]["distance"] < 0.1


def test_the_results_page_shows_the_cropped_query(client, demo_catalogue):
    response = post(client, side_by_side(demo_catalogue), url="/search", crop="0,0,0.5,1")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "(cropped)" in body
    first_card = body.split('<li class="card', 1)[1]
    assert f'href="/items/{LEFT}"' in first_card.split("</li>", 1)[0]


def test_an_empty_crop_means_the_whole_photo(client, demo_catalogue):
    query = post(client, side_by_side(demo_catalogue), crop="").get_json()["queries"][0]
    assert query["crop"] is None


@pytest.mark.parametrize(
    "crop, words",
    [
        ("half", "not understood"),
        ("0,0,1", "not understood"),
        ("0,0,nan,1", "not understood"),
        ("0.6,0,0.5,1", "inside the photo"),
        ("-0.1,0,0.5,1", "not understood"),  # ASCII digits and one point only: no signs
        ("-0,0,0.5,1", "not understood"),
        ("0_5,0,0.5,1", "not understood"),
        ("\u0660\u066b\u0665,0,0.5,1", "not understood"),  # Arabic-Indic digits that float() takes
        ("1e-1,0,0.5,1", "not understood"),
        ("0,0,0,1", "inside the photo"),
        ("0,0,0.01,1", "at least 32 pixels"),
    ],
)
def test_bad_crops_are_400_with_a_message(client, demo_catalogue, crop, words):
    response = post(client, side_by_side(demo_catalogue), crop=crop)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert words in error["message"]


def test_more_crops_than_photos_is_400(client, demo_catalogue):
    data = {"image": (io.BytesIO(side_by_side(demo_catalogue)), "a.png"), "crop": ["0,0,0.5,1", "0.5,0,0.5,1"]}
    response = client.post("/api/search", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "one crop per photo" in response.get_json()["error"]["message"]
