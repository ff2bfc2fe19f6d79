"""A card's facts never repeat what its title already says."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from flask import Flask

from web.security import shop_link
from web.titles import number, product_title, title_facts

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NIKE = {"productDisplayName": "Nike Men Navy Blue Tshirt", "articleType": "Tshirts", "baseColour": "Navy Blue",
        "gender": "Men"}


def test_a_name_that_states_every_fact_leaves_none_to_list():
    assert title_facts(NIKE) == {"articleType", "baseColour", "gender"}


@pytest.mark.parametrize(
    ("name", "meta", "in_title"),
    [
        # the type is not in the name: only it is listed
        ("Puma Women Black Sneakers", {"articleType": "Casual Shoes", "baseColour": "Black", "gender": "Women"},
         {"baseColour", "gender"}),
        # singular and plural, hyphens and case are the same word
        ("Women Red Solid Dress", {"articleType": "Dresses", "baseColour": "Red", "gender": "Women"},
         {"articleType", "baseColour", "gender"}),
        ("ROADSTER MEN'S T-SHIRT", {"articleType": "Tshirts", "gender": "Men"}, {"articleType", "gender"}),
        ("Titan Watches for Him", {"articleType": "Watch"}, {"articleType"}),
        # a word inside another is not that word: "Men" is not in "Women"
        ("Women Black Top", {"gender": "Men", "baseColour": "Black"}, {"baseColour"}),
        # every word of a fact must be there: "Navy" alone does not state "Navy Blue"
        ("Navy Polo", {"baseColour": "Navy Blue", "articleType": "Tshirts"}, set()),
        # an empty or punctuation-only fact states nothing to hide
        ("Red Cap", {"baseColour": " ", "articleType": "-"}, set()),
    ],
)
def test_only_facts_whose_words_are_all_in_the_name_count_as_shown(name, meta, in_title):
    assert title_facts({"productDisplayName": name, **meta}) == in_title


def test_a_title_made_from_the_facts_still_hides_those_facts():
    assert title_facts({"baseColour": "Red", "articleType": "Bags", "gender": "Women"}) == {
        "baseColour", "articleType", "gender",
    }


def _card(meta: dict) -> str:
    """One card rendered by the real macro, in a bare Flask app with the globals the site gives templates."""
    app = Flask(__name__, template_folder=str(PROJECT_ROOT / "templates"))
    app.add_url_rule("/items/<item_id>", "pages.item")
    app.jinja_env.globals.update(product_title=product_title, title_facts=title_facts, shop_link=shop_link)
    app.jinja_env.filters["number"] = number
    with app.test_request_context():
        macro = app.jinja_env.get_template("_macros.html").module.product_card
        return str(macro({"id": "1", "metadata": meta, "image_url": "/x.jpg"}, show_similarity=False))


def test_a_card_lists_only_the_facts_its_name_leaves_out():
    """The name's facts are gone, the others stay, each as a fact row."""
    card = _card({**NIKE, "articleType": "Casual Shoes"})
    facts = {html.unescape(dt): html.unescape(dd) for dt, dd in re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", card)}
    assert facts == {"Type": "Casual Shoes"}
    whole = _card(NIKE)
    assert "<dd>" not in whole and "<dl" not in whole  # nothing left to list: no empty list either
