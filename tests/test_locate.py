"""Finding the product in a shopper's photo: the box, the packshot guard and what the API reports.

Composites are drawn here: a demo product keyed out of its white background
and pasted at a known place on a busy background (blurred coloured noise and
rectangles). The box comes from the pretrained model's activation map, which
is coarse (7 x 7), so it is checked for overlap and for holding the product,
not for pixel accuracy.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from indexer import locate as locate_module
from indexer.images import INPUT_SIZE, load_for_model, load_with_size
from indexer.locate import MAX_COVER, Photo, first_box, locate, map_box, second_box, to_photo_box, to_square_box

ITEMS = (2, 13, 17, 23, 101)  # a shoe, a bag, a T-shirt, ... of the demo catalogue


def _cut(path) -> tuple[Image.Image, Image.Image]:
    """The product of a white-background photo, cropped to it, and its mask."""
    product = Image.open(path).convert("RGB")
    pixels = np.asarray(product)
    alpha = Image.fromarray(np.where(255 - pixels.min(axis=2) > 18, 255, 0).astype(np.uint8))
    return product.crop(alpha.getbbox()), alpha.crop(alpha.getbbox())


def _paste(scene: Image.Image, path, rng, cover: float) -> tuple[bytes, tuple[float, ...]]:
    """``scene`` with the product of ``path`` pasted at a random place, as a JPEG, and the product's true box."""
    product, alpha = _cut(path)
    width, height = scene.size
    scale = cover * min(width / product.width, height / product.height)
    size = (round(product.width * scale), round(product.height * scale))
    left, top = int(rng.integers(0, width - size[0])), int(rng.integers(0, height - size[1]))
    scene.paste(product.resize(size), (left, top), alpha.resize(size))
    out = io.BytesIO()
    scene.save(out, "JPEG", quality=90)
    return out.getvalue(), (left / width, top / height, size[0] / width, size[1] / height)


def composite(path, seed: int, frame=(480, 400), cover: float = 0.6) -> tuple[bytes, tuple[float, ...]]:
    """A JPEG of the product in ``path`` on a busy background, and its true box (fractions of the photo)."""
    rng = np.random.default_rng(seed)
    width, height = frame
    noise = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    scene = Image.fromarray(noise).resize(frame, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(scene)
    for _ in range(10):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.rectangle((x, y, x + rng.uniform(20, 120), y + rng.uniform(20, 120)), fill=colour)
    return _paste(scene.filter(ImageFilter.GaussianBlur(3)), path, rng, cover)


def _iou(a, b) -> float:
    width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    overlap = width * height
    return overlap / (a[2] * a[3] + b[2] * b[3] - overlap)


def _covered(outer, inner) -> float:
    """The share of ``inner``'s area inside ``outer``."""
    width = max(0.0, min(outer[0] + outer[2], inner[0] + inner[2]) - max(outer[0], inner[0]))
    height = max(0.0, min(outer[1] + outer[3], inner[1] + inner[3]) - max(outer[1], inner[1]))
    return width * height / (inner[2] * inner[3])


# ---------------------------------------------------------------- boxes without a model


def test_the_box_bounds_the_hot_part_of_the_map():
    activation = np.zeros((7, 7), np.float32)
    activation[1:3, 4:6] = 1.0  # hot cells: columns 4-5, rows 1-2 of a 32-pixel grid
    left, top, width, height = map_box(activation, margin=0.0)
    assert 4 * 32 - 24 <= left <= 4 * 32 + 8 and 1 * 32 - 24 <= top <= 1 * 32 + 8
    assert left + width <= 6 * 32 + 24 and top + height <= 3 * 32 + 24
    assert 40 <= width <= 100 and 40 <= height <= 100


@pytest.mark.parametrize("cells, size, region", [(7, 224, (0, 0, 224, 224)), (7, 224, (0, 28, 224, 168)),
                                                 (9, 260, (31, 0, 198, 260))])
def test_the_map_is_sampled_as_a_bilinear_resize_would_give_it(cells, size, region):
    activation = np.random.default_rng(cells).random((cells, cells)).astype(np.float32)
    full = np.asarray(Image.fromarray(activation, "F").resize((size, size), Image.Resampling.BILINEAR))
    left, top, width, height = region
    expected = full[top : top + height : locate_module.STEP, left : left + width : locate_module.STEP]
    np.testing.assert_allclose(locate_module._smooth_map(activation, size, region), expected, atol=1e-5)


def test_boxes_convert_between_the_square_and_the_photo():
    size = (640, 480)  # landscape: white bands above and below on the square
    box = (0.25, 0.1, 0.5, 0.6)
    square = to_square_box(box, size)
    assert square[0] == pytest.approx(0.25 * INPUT_SIZE) and square[1] > 0.1 * 168
    back = to_photo_box(square, size)
    assert back == pytest.approx(box, abs=1e-6)
    # a box reaching into the padding is cut at the photo's edge
    assert to_photo_box((0, 0, INPUT_SIZE, INPUT_SIZE), size) == pytest.approx((0, 0, 1, 1))


def test_the_second_box_is_found_inside_the_first_from_its_own_map(monkeypatch):
    outer = (0.2, 0.1, 0.5, 0.6)  # of a 640 x 480 photo: a 320 x 288 crop
    hot_corner = np.zeros((7, 7), np.float32)
    hot_corner[1:3, 1:3] = 1.0  # the product fills the crop's top-left part only
    inner = second_box(outer, hot_corner, (640, 480))
    assert inner is not None and _covered(outer, inner) >= 0.99
    assert inner[2] * inner[3] < 0.5 * outer[2] * outer[3] and inner[0] < 0.35 and inner[1] < 0.3
    # a map that lights the whole crop finds the first box again: not searched twice
    assert second_box(outer, np.ones((7, 7), np.float32), (640, 480)) is None
    monkeypatch.setattr(locate_module, "SECOND_BOX", None)
    assert second_box(outer, hot_corner, (640, 480)) is None


def test_a_peak_gives_a_box_and_an_everywhere_map_none(demo_catalogue):
    packshot = load_for_model(demo_catalogue / "13.jpg")
    hot_centre = np.zeros((7, 7), np.float32)
    hot_centre[3, 3] = 1.0
    # no veto for packshots: their whole photo is searched beside the boxes
    assert first_box(hot_centre, (300, 300), packshot.shape[0]) is not None
    scene = np.random.default_rng(3).integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    assert first_box(hot_centre, (INPUT_SIZE, INPUT_SIZE), scene.shape[0]) is not None
    everywhere = np.ones((7, 7), np.float32)  # no peak: the box would cover it all
    box = first_box(everywhere, (INPUT_SIZE, INPUT_SIZE), scene.shape[0])
    assert box is None or box[2] * box[3] <= MAX_COVER


# ---------------------------------------------------------------- the whole step, with the fast tier's fake model


def on_grainy_ground(path, seed: int, frame=(480, 400), cover: float = 0.5) -> tuple[bytes, tuple[float, ...]]:
    """A JPEG of the product in ``path`` on a grainy grey background, and its true box (fractions of the photo).

    The grain makes the border non-uniform, while the fake model's map
    (distance from the border colour) still finds the product.
    """
    rng = np.random.default_rng(seed)
    width, height = frame
    # coarse grain (8-pixel blocks): it survives the fit onto the model square, which averages finer noise away
    grain = np.clip(190 + rng.normal(0, 30, (height // 8, width // 8, 3)), 0, 255).astype(np.uint8)
    return _paste(Image.fromarray(grain).resize(frame, Image.Resampling.NEAREST), path, rng, cover)


def test_locate_crops_and_embeds_the_found_box_and_keeps_packshots_whole(demo_catalogue, fake_embedder):
    """``locate``'s plumbing: one pass with maps, a box per photo, the boxed region re-decoded and embedded."""
    data, truth = on_grainy_ground(demo_catalogue / "13.jpg", seed=13)
    packshot = (demo_catalogue / "17.jpg").read_bytes()
    photos = [Photo(source, *load_with_size(source)) for source in (data, packshot)]
    scene, packshot_regions = locate(fake_embedder, photos)

    assert scene[0].box is None and len(scene) >= 2  # the whole photo, then the first box, then one inside it
    located = scene[1]
    assert _covered(located.box, truth) >= 0.7 and _iou(scene[-1].box, truth) >= 0.3, (located.box, truth)
    assert _covered(located.box, scene[-1].box) >= 0.99  # the second box was found inside the first
    for region in scene[1:]:
        np.testing.assert_array_equal(region.array, load_for_model(data, crop=region.box))
        np.testing.assert_allclose(region.vector, fake_embedder.embed_one(region.array), atol=1e-6)
    # the photo's own vector is another one: the box is searched as well as the photo
    assert np.linalg.norm(located.vector - fake_embedder.embed_one(photos[0].array)) > 0.05

    whole = packshot_regions[0]  # a catalogue photo is searched whole too, so it finds itself at distance 0
    assert whole.box is None
    np.testing.assert_array_equal(whole.array, photos[1].array)
    np.testing.assert_allclose(whole.vector, fake_embedder.embed_one(photos[1].array), atol=1e-6)


# ---------------------------------------------------------------- with the pretrained model


@pytest.mark.slow
def test_locating_finds_the_pasted_product(demo_catalogue, pretrained_embedder):
    overlaps, held = [], []
    for item in ITEMS:
        data, truth = composite(demo_catalogue / f"{item}.jpg", seed=item)
        array, size = load_with_size(data)
        regions = locate(pretrained_embedder, [Photo(data, array, size)])[0]
        assert regions[0].box is None  # the whole photo is always a candidate
        assert len(regions) >= 2, item
        found = regions[-1]  # the tightest box: the second, or the first when the second repeated it
        overlaps.append(_iou(found.box, truth))
        held.append(_covered(regions[1].box, truth))  # the first box
        # the region embedded is the box, cropped and prepared like a shopper's crop
        np.testing.assert_array_equal(found.array, load_for_model(data, crop=found.box))
        np.testing.assert_allclose(found.vector, pretrained_embedder.embed_one(found.array), atol=1e-5)
    assert min(overlaps) >= 0.3 and np.mean(overlaps) >= 0.4, overlaps
    assert min(held) >= 0.8, held  # the first box holds the product, with some of the scene around it


@pytest.mark.slow
def test_a_catalogue_photo_is_searched_whole_first(demo_catalogue, pretrained_embedder):
    photos = []
    for item in ITEMS:
        data = (demo_catalogue / f"{item}.jpg").read_bytes()
        array, size = load_with_size(data)
        photos.append(Photo(data, array, size))
    for photo, regions in zip(photos, locate(pretrained_embedder, photos)):
        assert regions[0].box is None  # the whole photo first, then any boxes
        np.testing.assert_array_equal(regions[0].array, photo.array)


@pytest.mark.slow
def test_the_api_reports_the_box_it_searched_with(pretrained_app, demo_catalogue):
    client = pretrained_app.test_client()
    data, truth = composite(demo_catalogue / "13.jpg", seed=13)

    def search(**fields):
        form = {"image": (io.BytesIO(data), "street.jpg"), **fields}
        answer = client.post("/api/search", data=form)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_json()

    located = search()
    query = located["queries"][0]
    assert located["locate"] is True and query["located"] is True and query["crop"] is None
    # the region that found the first result: here the tight box, which hugs the product
    assert _covered(query["box"], truth) >= 0.5 and _iou(query["box"], truth) >= 0.3
    whole = search(locate="false")
    assert whole["locate"] is False and whole["queries"][0]["located"] is False
    assert whole["queries"][0]["box"] == [0, 0, 1, 1]
    # a shopper's crop overrides locating, and is the box reported
    cropped = search(crop="0.1,0.2,0.5,0.5")["queries"][0]
    assert cropped["located"] is False and cropped["box"] == [0.1, 0.2, 0.5, 0.5]
    # the boxed product is found; the whole busy photo finds it lower or not at all
    def rank(answer):
        ids = [r["id"] for r in answer["queries"][0]["results"]]
        return ids.index("13") if "13" in ids else len(ids)

    assert rank(located) <= rank(whole)
    # a catalogue photo is searched whole and still finds itself first
    packshot = (demo_catalogue / "13.jpg").read_bytes()
    answer = client.post("/api/search", data={"image": (io.BytesIO(packshot), "13.jpg")}).get_json()
    assert answer["queries"][0]["located"] is False and answer["queries"][0]["results"][0]["id"] == "13"


@pytest.mark.slow
def test_locating_off_for_the_site_still_obeys_the_request(pretrained_index, pretrained_embedder, demo_catalogue):
    """FASHION_LOCATE=off: uploads are searched whole unless a request asks for locate=true."""
    from web import create_app

    settings = pretrained_index.replace(locate=False)
    client = create_app(settings, embedder=pretrained_embedder, autobuild=False, TESTING=True).test_client()
    data, _truth = composite(demo_catalogue / "13.jpg", seed=13)
    off = client.post("/api/search", data={"image": (io.BytesIO(data), "s.jpg")}).get_json()
    assert off["locate"] is False and off["queries"][0]["located"] is False
    on = client.post("/api/search", data={"image": (io.BytesIO(data), "s.jpg"), "locate": "true"}).get_json()
    assert on["locate"] is True and on["queries"][0]["located"] is True
