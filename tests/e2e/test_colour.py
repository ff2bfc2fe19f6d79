"""The "Match" choice in a real browser: how much colour counts changes the results, and it is kept.

The demo catalogue draws each kind of product in several colours, so asking
for "Colour first" brings products of the photo's colour forward, and
"Shape" alone does not.
"""

from __future__ import annotations

import csv

import pytest

from .browser import By, card_item_id, cards, new_results_page, open_page, save_screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _styles(catalogue) -> list[dict[str, str]]:
    with open(catalogue / "styles.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _search_with_match(driver, base_url: str, image, label: str) -> list[str]:
    open_page(driver, base_url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(image))
    choice = driver.find_element(By.XPATH, f"//label[contains(@class, 'match-step')][normalize-space()='{label}']")
    choice.click()
    assert choice.find_element(By.TAG_NAME, "input").is_selected()
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()
    return [card.find_element(By.CSS_SELECTOR, ".card-image").get_attribute("href") for card in cards(driver)]


def _checked_label(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, ".match-step:has(input:checked)").text.strip()


def test_the_match_choice_changes_the_results_and_is_kept(live_server, driver, demo_image):
    by_shape = _search_with_match(driver, live_server.url, demo_image, "Shape")
    assert _checked_label(driver) == "Shape"  # the form below the results keeps the choice
    colours = {row["id"]: row["baseColour"] for row in _styles(live_server.catalogue)}
    shape_colours = [colours[card_item_id(card)] for card in cards(driver)]

    by_colour = _search_with_match(driver, live_server.url, demo_image, "Colour first")
    assert _checked_label(driver) == "Colour first"
    colour_colours = [colours[card_item_id(card)] for card in cards(driver)]
    save_screenshot(driver, "colour-01-colour-first")

    def ids(hrefs):
        return [href.split("?")[0].rsplit("/", 1)[-1] for href in hrefs]

    assert ids(by_shape)[0] == ids(by_colour)[0] == demo_image.stem  # the photo itself first either way
    assert ids(by_shape) != ids(by_colour)
    query_colour = colour_colours[0]
    assert colour_colours.count(query_colour) > shape_colours.count(query_colour)
    # "more like this" and "show more" carry the choice
    assert all("colour_weight=0.7" in href for href in by_colour)
    carried = driver.find_element(By.CSS_SELECTOR, "form.show-more input[name=colour_weight]")
    assert carried.get_attribute("value") == "0.7"
    with new_results_page(driver):
        driver.find_element(By.ID, "show-more").click()
    more = [card.find_element(By.CSS_SELECTOR, ".card-image").get_attribute("href") for card in cards(driver)]
    assert more[: len(by_colour)] == by_colour
    assert _checked_label(driver) == "Colour first"
