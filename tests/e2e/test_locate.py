"""Locating in a real browser: the found box is drawn on the photo, and the form offers it to adjust.

A drawn street-style photo (a demo handbag on a busy background) is
searched on a server with the real pretrained model. The results page
draws the box the product was found in; the "search again" form below it
holds the same photo with that box in the crop tool, and a shopper who
moves it searches with their own box instead.
"""

from __future__ import annotations

import pytest

from tests.test_locate import composite

from .browser import By, Keys, cards, new_results_page, open_page, save_screenshot, wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def street_photo(pretrained_server, tmp_path):
    data, truth = composite(pretrained_server.catalogue / "13.jpg", seed=13)
    path = tmp_path / "street.jpg"
    path.write_bytes(data)
    return path, truth


def _crop_value(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#crop-fields input[name=crop]").get_attribute("value")


def test_the_found_box_is_drawn_and_can_be_adjusted(pretrained_server, driver, street_photo):
    path, truth = street_photo
    open_page(driver, pretrained_server.url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(path))
    wait(driver).until(lambda d: d.find_element(By.ID, "crop-box-1"))
    assert _crop_value(driver) == ""  # the shopper drew nothing: the server finds the product
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()

    found = driver.find_element(By.CSS_SELECTOR, ".query-photo img.found-box")
    assert found.is_displayed() and "product found in it boxed" in found.get_attribute("alt")
    assert "product found" in driver.find_element(By.CSS_SELECTOR, ".query-name").text
    assert any(card.find_element(By.CSS_SELECTOR, ".card-image").get_attribute("href").endswith("/items/13")
               for card in cards(driver))
    save_screenshot(driver, "locate-01-found")

    # the form below holds the same photo, its crop tool opened on the found box
    wait(driver).until(lambda d: _crop_value(d) != "")
    x, y, w, h = (float(v) for v in _crop_value(driver).split(","))
    holder = driver.find_element(By.ID, "found-boxes").get_attribute("data-boxes")
    assert _crop_value(driver).split(",")[0] in holder
    assert x <= truth[0] + 0.05 and y <= truth[1] + 0.05 and w * h < 0.8
    crop_box = driver.find_element(By.ID, "crop-box-1")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", crop_box)
    save_screenshot(driver, "locate-02-adjust", full_page=False)
    crop_box.click()
    crop_box.send_keys(Keys.ARROW_LEFT)  # the shopper moves the box: their box is searched now
    adjusted = _crop_value(driver)
    assert adjusted != "" and float(adjusted.split(",")[0]) == pytest.approx(max(0.0, x - 0.05), abs=1e-3)
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()
    assert "cropped" in driver.find_element(By.CSS_SELECTOR, ".query-name").text
    assert not driver.find_elements(By.CSS_SELECTOR, ".found-box")
