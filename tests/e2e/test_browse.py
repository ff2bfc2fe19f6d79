"""Narrowing and browsing in a real browser: faceted counts, show more, /browse paging."""

from __future__ import annotations

import collections
import csv

import pytest

from .browser import By, Select, open_page, page_complete, save_screenshot, submit_search, wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _styles(catalogue) -> list[dict]:
    with open(catalogue / "styles.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _options(driver, name) -> dict[str, str]:
    select = Select(driver.find_element(By.ID, f"filter-{name}"))
    return {o.get_attribute("value"): o.text for o in select.options if o.get_attribute("value")}


def test_choosing_a_filter_updates_the_other_lists_and_counts(live_server, driver):
    rows = _styles(live_server.catalogue)
    open_page(driver, live_server.url + "/", "#search-form")
    everything = _options(driver, "articleType")
    assert everything["Tshirts"] == f"Tshirts ({sum(r['articleType'] == 'Tshirts' for r in rows)})"
    Select(driver.find_element(By.ID, "filter-gender")).select_by_value("Men")
    men = collections.Counter(r["articleType"] for r in rows if r["gender"] == "Men")
    expected = {value: f"{value} ({count})" for value, count in men.items()}
    wait(driver).until(lambda d: _options(d, "articleType") == expected)
    assert len(expected) < len(everything)  # types without men's items are gone
    save_screenshot(driver, "07-facet-counts")


def test_show_more_gives_the_next_results(live_server, driver, demo_image):
    submit_search(driver, live_server.url, demo_image)
    first = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "ol.results .card-image")]
    assert len(first) == 5
    driver.find_element(By.ID, "show-more").click()
    # the old page already has results: wait for the new one, fully parsed
    wait(driver).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "ol.results .rank")) == 10 and page_complete(d)
    )
    more = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "ol.results .card-image")]
    assert more[:5] == first
    ranks = [el.text for el in driver.find_elements(By.CSS_SELECTOR, "ol.results .rank")]
    assert ranks == [f"#{n}" for n in range(1, 11)]
    save_screenshot(driver, "08-show-more")


def test_browse_pages_and_filters(live_server, driver):
    rows = _styles(live_server.catalogue)
    open_page(driver, live_server.url + "/", "#search-form")
    driver.find_element(By.LINK_TEXT, "Browse").click()
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".browse-grid") and page_complete(d))
    assert len(driver.find_elements(By.CSS_SELECTOR, ".browse-grid > li.card")) == 24
    pages = -(-len(rows) // 24)
    assert f"page 1 of {pages}" in driver.find_element(By.CSS_SELECTOR, ".browse-count").text
    save_screenshot(driver, "09-browse")
    first_page = driver.find_element(By.CSS_SELECTOR, ".browse-grid .card-image").get_attribute("href")
    driver.find_element(By.ID, "page-next").click()
    wait(driver).until(lambda d: "page 2 of" in d.find_element(By.CSS_SELECTOR, ".browse-count").text)
    assert driver.find_element(By.CSS_SELECTOR, ".browse-grid .card-image").get_attribute("href") != first_page

    Select(driver.find_element(By.ID, "filter-articleType")).select_by_value("Caps")
    driver.find_element(By.CSS_SELECTOR, "#browse-form button[type=submit]").click()
    caps = sum(r["articleType"] == "Caps" for r in rows)
    wait(driver).until(lambda d: f"{caps} products match" in d.find_element(By.CSS_SELECTOR, ".browse-count").text)
    cards = driver.find_elements(By.CSS_SELECTOR, ".browse-grid > li.card")
    assert len(cards) == min(caps, 24)
    cards[0].find_element(By.CSS_SELECTOR, ".more-link").click()
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".item-hero"))
    assert "More like this" in driver.find_element(By.TAG_NAME, "h1").text
