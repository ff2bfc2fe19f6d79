"""Synthetic scenes: catalogue-tuning views (indexer.scenes) and benchmark shopper photos (benchmarks.shopper_scenes).

Fast tier: small drawn packshots, no dataset and no model.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmarks import shopper_scenes
from indexer import scenes

SHIRT = [(70, 40), (154, 40), (196, 80), (176, 104), (156, 90), (156, 200), (68, 200), (68, 90), (48, 104), (28, 80)]


def packshot(colour=(220, 30, 30), size=(224, 224), shape="rectangle") -> np.ndarray:
    """A product of one colour on a white background."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    width, height = size
    box = (0.25 * width, 0.2 * height, 0.75 * width, 0.85 * height)
    if shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.ellipse(box, fill=colour)
    return np.asarray(image)


def white_shirt() -> np.ndarray:
    """A white T-shirt with a dark outline on a white background: its inside is as white as the backdrop."""
    image = Image.new("RGB", (224, 224), (255, 255, 255))
    ImageDraw.Draw(image).polygon(SHIRT, fill=(255, 255, 255), outline=(20, 20, 20), width=3)
    return np.asarray(image)


@pytest.fixture(scope="module")
def clutter() -> list[Image.Image]:
    return [
        scenes.cut_out(packshot(colour, shape="ellipse")) for colour in ((20, 160, 40), (240, 200, 0), (90, 90, 90))
    ]


def changed_box(first: np.ndarray, second: np.ndarray, threshold: int = 60) -> tuple[np.ndarray, tuple]:
    """Where two images differ by more than ``threshold`` in some channel, and the box (x0, y0, x1, y1) of that."""
    differs = np.abs(first.astype(np.int16) - second.astype(np.int16)).max(axis=2) > threshold
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    return differs, (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


# --- cut_out --------------------------------------------------------------------------------------------------


def test_cut_out_keys_the_background_and_keeps_a_white_shirt_opaque():
    cut = scenes.cut_out(white_shirt())
    assert cut.mode == "RGBA"
    alpha = np.asarray(cut.getchannel("A"))
    rgb = np.asarray(cut.convert("RGB"))
    # cropped to the shirt (outline included, a pixel of margin at most)
    assert abs(cut.width - 170) <= 4 and abs(cut.height - 162) <= 4
    for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):  # beside the sleeves and under them: backdrop
        assert alpha[y, x] == 0
    middle = alpha[40:-40, 50:-50]
    assert middle.min() == 255  # the white inside is product, not a hole
    assert rgb[40:-40, 50:-50].min() >= 250


def test_cut_out_sees_through_a_handle_loop():
    image = Image.new("RGB", (224, 224), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 110, 184, 200), fill=(60, 40, 30))  # a bag
    draw.ellipse((70, 30, 154, 140), outline=(60, 40, 30), width=8)  # its handle
    cut = scenes.cut_out(np.asarray(image))
    alpha = np.asarray(cut.getchannel("A"))
    assert alpha[80 - 29, 112 - 39] == 0  # inside the loop: the backdrop shows through
    assert alpha[150 - 29, 112 - 39] == 255  # the bag


def test_cut_out_has_a_soft_edge():
    alpha = np.asarray(scenes.cut_out(packshot(shape="ellipse")).getchannel("A"))
    partial = ((alpha > 0) & (alpha < 255)).sum()
    assert partial > 50  # an anti-aliased rim, not a hard cut


def test_cut_out_of_a_busy_packshot_is_the_whole_image_opaque():
    rng = np.random.default_rng(3)
    busy = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    cut = scenes.cut_out(busy)
    assert cut.mode == "RGBA" and cut.size == (120, 90)
    assert np.asarray(cut.getchannel("A")).min() == 255
    assert np.array_equal(np.asarray(cut.convert("RGB")), busy)


def test_cut_out_of_a_blank_packshot_is_opaque():
    cut = scenes.cut_out(np.full((64, 64, 3), 255, np.uint8))
    assert cut.size == (64, 64) and np.asarray(cut.getchannel("A")).min() == 255


def test_cut_out_takes_grey_and_odd_sizes():
    grey = np.asarray(Image.fromarray(packshot(size=(300, 180))).convert("L"))
    cut = scenes.cut_out(grey)
    assert cut.mode == "RGBA" and cut.width < 300 and cut.height < 180


# --- compose ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", scenes.TUNING_FAMILIES)
def test_compose_shape_and_box_hold_the_product(family, clutter):
    red, blue = scenes.cut_out(packshot((220, 30, 30))), scenes.cut_out(packshot((30, 30, 220)))
    for seed in range(4):
        view, box = scenes.compose(np.random.default_rng(seed), red, family, clutter)
        other, same_box = scenes.compose(np.random.default_rng(seed), blue, family, clutter)
        assert view.shape == (224, 224, 3) and view.dtype == np.uint8
        assert box == same_box
        x, y, w, h = box
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
        # the same seed draws the same scene, so the two views differ exactly where the product is
        differs, (x0, y0, x1, y1) = changed_box(view, other)
        pixels = np.array([x0, y0, x1, y1]) / 224
        assert np.allclose(pixels, [x, y, x + w, y + h], atol=3 / 224), (seed, pixels, box)
        inside = differs[round(y * 224) : round((y + h) * 224), round(x * 224) : round((x + w) * 224)].sum()
        assert inside / differs.sum() > 0.99
        # the longer side covers 30 to 85% of the frame (a little less when clipped or after the soft edge)
        assert 0.2 <= max(w, h) <= 0.86


def test_compose_is_seeded(clutter):
    cut = scenes.cut_out(packshot())
    for family in scenes.TUNING_FAMILIES:
        first, box = scenes.compose(np.random.default_rng(11), cut, family, clutter)
        again, same = scenes.compose(np.random.default_rng(11), cut, family, clutter)
        other, _ = scenes.compose(np.random.default_rng(12), cut, family, clutter)
        assert np.array_equal(first, again) and box == same
        assert not np.array_equal(first, other)


def test_compose_other_sizes_and_big_cut_outs():
    big = scenes.cut_out(packshot(size=(900, 700)))
    view, (x, y, w, h) = scenes.compose(np.random.default_rng(0), big, "wall", (), size=96)
    assert view.shape == (96, 96, 3)
    assert 0.2 <= max(w, h) <= 0.86


def test_compose_rejects_unknown_families():
    with pytest.raises(ValueError):
        scenes.compose(np.random.default_rng(0), scenes.cut_out(packshot()), "fabric", ())


def test_iter_tuning_views_batches_every_product():
    colours = ((200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200))
    shots = [packshot(colour, size=(96, 96)) for colour in colours]
    batches = list(scenes.iter_tuning_views(np.random.default_rng(5), shots, 3, batch=4, size=64, crops_per_product=1))
    assert [len(indices) for indices, _, _, _ in batches] == [4, 4, 4, 3]
    indices = np.concatenate([i for i, _, _, _ in batches])
    assert indices.dtype == np.int64 and indices.tolist() == np.repeat(np.arange(5), 3).tolist()
    views = np.concatenate([v for _, v, _, _ in batches])
    assert views.shape == (15, 64, 64, 3) and views.dtype == np.uint8
    boxes = np.concatenate([b for _, _, b, _ in batches])
    assert boxes.shape == (15, 4) and (boxes >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 1 + 1e-9).all()
    whole = np.concatenate([w for _, _, _, w in batches])
    assert whole.tolist() == [True, True, False] * 5  # each product's last view is a crop of its box
    again = scenes.iter_tuning_views(np.random.default_rng(5), shots, 3, batch=4, size=64, crops_per_product=1)
    assert np.array_equal(views, np.concatenate([v for _, v, _, _ in again]))
    with pytest.raises(ValueError):
        next(scenes.iter_tuning_views(np.random.default_rng(5), shots, 3, crops_per_product=4))


def test_tuning_view_boxes_are_where_the_product_is():
    shots = [packshot((200, 0, 0), size=(96, 96)) for _ in range(3)]
    made = scenes.iter_tuning_views(np.random.default_rng(2), shots, 4, batch=12, size=64, crops_per_product=2)
    for _, views, boxes, whole in made:
        assert whole.sum() == 6  # half of them are crops: their boxes are where the product is in the crop
        for view, (x, y, w, h) in zip(views, boxes):
            pixels = view.astype(int)
            red = (pixels[..., 0] > 120) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
            inside = np.zeros_like(red)
            inside[int(y * 64) : int(np.ceil((y + h) * 64)), int(x * 64) : int(np.ceil((x + w) * 64))] = True
            # scenes may hold some red too, but the red product makes its box far redder than the rest
            assert red[inside].mean() > 2 * red[~inside].mean() if (~inside).any() else red.any()


def test_iter_tuning_views_of_one_product():
    ((indices, views, _, _),) = scenes.iter_tuning_views(np.random.default_rng(0), [packshot()], 4, batch=8, size=48)
    assert indices.tolist() == [0, 0, 0, 0] and views.shape == (4, 48, 48, 3)


def test_a_crop_view_is_the_products_box_as_a_search_crops_it():
    rng = np.random.default_rng(3)
    view, (x, y, w, h) = scenes.crop_view(rng, scenes.cut_out(packshot((200, 0, 0), size=(96, 96))), "wall", (), 64)
    assert view.shape == (64, 64, 3) and view.dtype == np.uint8
    # the crop spans the square's longer side, and the product fills at least 1 / (1 + 2 x margin) of it
    assert max(w, h) >= 1 / 1.5 - 0.02 and 0 <= x <= 1 - w + 1e-9 and 0 <= y <= 1 - h + 1e-9
    pixels = view.astype(int)
    red = (pixels[..., 0] > 120) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    inside = np.zeros_like(red)
    inside[int(y * 64) : int(np.ceil((y + h) * 64)), int(x * 64) : int(np.ceil((x + w) * 64))] = True
    assert red[inside].mean() > 0.5 and red[inside].mean() > 2 * red[~inside].mean()


# --- benchmark shopper photos -------------------------------------------------------------------------------------


def test_families_split_tuned_on_from_held_back():
    tuned = {name for name, spec in shopper_scenes.FAMILIES.items() if spec["tuned_on"]}
    held = {name for name, spec in shopper_scenes.FAMILIES.items() if not spec["tuned_on"]}
    assert tuned == set(scenes.TUNING_FAMILIES)
    assert len(held) >= 4 and {"fabric", "wood", "people", "room"} <= held
    # nothing the product tunes on may know the held-back families
    source = Path(scenes.__file__).read_text()
    assert not any(f'"{name}"' in source for name in held)
    assert "benchmarks" not in source


@pytest.mark.parametrize("family", list(shopper_scenes.FAMILIES))
def test_every_family_makes_a_valid_photo(family):
    others = [packshot((0, 150, 0), shape="ellipse"), packshot((240, 200, 0))]
    red, blue = packshot((220, 30, 30)), packshot((30, 30, 220))
    data, box = shopper_scenes.make_shopper_photo(np.random.default_rng(7), red, family, others)
    photo = Image.open(io.BytesIO(data))
    assert photo.format == "JPEG" and photo.size in shopper_scenes.FRAMES
    x, y, w, h = box
    assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
    width, height = photo.size
    assert 0.2 <= max(w * width, h * height) / max(width, height) <= 0.76
    # same seed, blue product: the photos differ where the product is (blur and JPEG smear it a little)
    other, _ = shopper_scenes.make_shopper_photo(np.random.default_rng(7), blue, family, others)
    differs, _ = changed_box(np.asarray(photo.convert("RGB")), np.asarray(Image.open(io.BytesIO(other)).convert("RGB")))
    x0, y0, x1, y1 = round(x * width), round(y * height), round((x + w) * width), round((y + h) * height)
    inside = differs[y0:y1, x0:x1]
    assert inside.sum() / differs.sum() > 0.9
    assert inside.mean() > 0.4  # and the box is about the product, not much more


@pytest.mark.parametrize("family", ["clutter", "people"])
def test_shopper_photos_are_seeded(family):
    shot, others = packshot(), [packshot((0, 150, 0), shape="ellipse")]
    first = shopper_scenes.make_shopper_photo(np.random.default_rng(1), shot, family, others)
    assert shopper_scenes.make_shopper_photo(np.random.default_rng(1), shot, family, others) == first
    assert shopper_scenes.make_shopper_photo(np.random.default_rng(2), shot, family, others)[0] != first[0]


def test_make_shopper_photo_rejects_unknown_families():
    with pytest.raises(ValueError):
        shopper_scenes.make_shopper_photo(np.random.default_rng(0), packshot(), "beach", [])
