"""indexer.colour: the product's colour, from its own pixels, comparable by a dot product."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.colour import DIM, colour_descriptor, colour_descriptors, foreground_mask
from tests.corpus import make_image


def _drawn(colour, background=(255, 255, 255)) -> np.ndarray:
    """The same drawn product (``tests.corpus.make_image``'s shape) in ``colour`` on a plain ``background``."""
    image = np.asarray(make_image((224, 224), colour).convert("RGB"), dtype=np.uint8).copy()
    image[(image >= 250).all(axis=2)] = background
    return image


def test_descriptors_are_unit_vectors_of_fixed_size():
    vectors = colour_descriptors(np.stack([_drawn((200, 30, 30)), _drawn((30, 40, 200))]))
    assert vectors.shape == (2, DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_red_and_a_blue_version_of_one_product_differ():
    red, blue = colour_descriptor(_drawn((200, 30, 30))), colour_descriptor(_drawn((30, 40, 200)))
    assert red @ blue < 0.2


@pytest.mark.parametrize("background", [(255, 255, 255), (128, 128, 128), (240, 230, 200), (20, 20, 20)])
def test_the_same_colour_on_another_plain_background_agrees(background):
    reference = colour_descriptor(_drawn((200, 30, 30)))
    assert reference @ colour_descriptor(_drawn((200, 30, 30), background)) > 0.95


def test_black_grey_and_white_products_are_told_apart():
    shades = [(15, 15, 15), (128, 128, 128), (245, 245, 245)]
    black, grey, white = (colour_descriptor(_drawn(shade, (128, 160, 200))) for shade in shades)
    assert black @ grey < 0.3 and grey @ white < 0.3 and black @ white < 0.1


def test_a_scene_without_a_plain_background_uses_every_pixel():
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert foreground_mask(scene).all()
    packshot = _drawn((200, 30, 30))
    mask = foreground_mask(packshot)
    assert 0.05 < mask.mean() < 0.9  # the product, not its white surroundings
